//! `gwctl admin-tokens revoke TOKEN`: locks the token out of the HTTPS listener at once and
//! for good, so it asks first like `keys revoke` (see [`crate::commands::confirm`]).

use anyhow::Context;
use clap::Args;
use gateway_shared::api::AdminTokenView;

use super::{TOKEN_HELP, resolve};
use crate::client::ApiClient;
use crate::commands::confirm;
use crate::output::{self, Output};

#[derive(Debug, Args)]
pub struct Cmd {
    // Not named `token`: clap arg ids are shared with the global `--token` flag.
    #[arg(value_name = "TOKEN", help = TOKEN_HELP)]
    admin_token: String,
    /// Revoke without asking (required when stdin is not a terminal).
    #[arg(short = 'y', long)]
    yes: bool,
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let token = resolve(client, &self.admin_token).await?;
        // Revoking twice is harmless, so an already revoked token needs no question.
        if !self.yes && token.revoked_at.is_none() {
            let not_done = format!("revoke admin token {} ({})", token.name, token.id);
            if !confirm::ask(&prompt(&token), &not_done)? {
                anyhow::bail!("admin token {} was not revoked", token.id);
            }
        }
        let revoked = client
            .revoke_admin_token(&token.id)
            .await
            .with_context(|| format!("revoking admin token {}", token.id))?;
        // Against the clock after the answer, and never before the daemon's `revoked_at`
        // (its clock may run ahead of ours): the token it just revoked must not read as
        // still active.
        let now = output.shown_now();
        let after = Output::new(
            output.format,
            revoked.revoked_at.map_or(now, |at| at.max(now)),
        );
        after.print(&revoked, output::admin_token_details)
    }
}

fn prompt(token: &AdminTokenView) -> String {
    format!(
        "Revoke admin token {} ({})? Whatever uses it loses access now; this cannot be \
         undone. [y/N] ",
        token.name, token.id
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::Cli;

    #[test]
    fn the_token_argument_does_not_collide_with_the_global_flag() {
        for argv in [
            &["gwctl", "admin-tokens", "revoke", "ci"][..],
            &[
                "gwctl",
                "--token",
                "t",
                "admin-tokens",
                "revoke",
                "ci",
                "--yes",
            ],
        ] {
            let cli = Cli::try_parse_from(argv).expect("parses");
            assert_eq!(
                cli.global.token.is_some(),
                argv.contains(&"--token"),
                "{argv:?}"
            );
        }
    }
}
