//! `gwctl keys revoke KEY`: permanent (SPEC §1), so it asks first (see
//! [`crate::commands::confirm`] for how, and why never from a pipe).

use anyhow::Context;
use clap::Args;
use gateway_shared::KeyState;
use gateway_shared::api::KeyView;

use super::{KEY_HELP, resolve_to_revoke};
use crate::client::ApiClient;
use crate::commands::confirm;
use crate::output::{self, Output};

#[derive(Debug, Args)]
pub struct Cmd {
    #[arg(value_name = "KEY", help = KEY_HELP)]
    key: String,
    /// Revoke without asking (required when stdin is not a terminal).
    #[arg(short = 'y', long)]
    yes: bool,
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let key = resolve_to_revoke(client, &self.key).await?;
        // Revoking twice is harmless, so an already revoked key needs no question.
        if !self.yes && key.state != KeyState::Revoked {
            let not_done = format!("revoke key {} ({})", key.name, key.id);
            if !confirm::ask(&prompt(&key), &not_done)? {
                anyhow::bail!("key {} was not revoked", key.id);
            }
        }
        let revoked = client
            .revoke_key(&key.id)
            .await
            .with_context(|| format!("revoking key {}", key.id))?;
        output.print(&revoked, output::key_details)
    }
}

fn prompt(key: &KeyView) -> String {
    format!(
        "Revoke key {} ({})? This cannot be undone. [y/N] ",
        key.name, key.id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample_key;

    #[test]
    fn prompt_names_the_key() {
        assert_eq!(
            prompt(&sample_key()),
            "Revoke key backend-prod (key_0123456789abcdefghij)? This cannot be undone. [y/N] "
        );
    }
}
