//! `gwctl keys revoke KEY`: permanent (SPEC §1), so it asks first.
//!
//! The question goes to a person or not at all: without `--yes` and without a terminal on
//! stdin gwctl refuses instead of reading stdin, so a script that forgot `--yes` fails loudly
//! rather than consuming its own input as an answer.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use clap::Args;
use gateway_shared::KeyState;
use gateway_shared::api::KeyView;

use super::{KEY_HELP, resolve};
use crate::Refusal;
use crate::client::ApiClient;
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
        let key = resolve(client, &self.key).await?;
        // Revoking twice is harmless, so an already revoked key needs no question.
        if !self.yes && key.state != KeyState::Revoked {
            let stdin = std::io::stdin();
            if !stdin.is_terminal() {
                return Err(Refusal::invalid(format!(
                    "Refusing to revoke key {} ({}) without confirmation: stdin is not a terminal. \
                     Pass --yes.",
                    key.name, key.id
                ))
                .into());
            }
            let confirmed = confirm(
                &prompt(&key),
                &mut stdin.lock(),
                &mut std::io::stderr().lock(),
            )
            .context("asking for confirmation")?;
            if !confirmed {
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

/// Asks once; only `y` or `yes` (any case) confirms. End of input declines.
fn confirm(prompt: &str, input: &mut impl BufRead, out: &mut impl Write) -> std::io::Result<bool> {
    out.write_all(prompt.as_bytes())?;
    out.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    let answer = answer.trim().to_ascii_lowercase();
    Ok(answer == "y" || answer == "yes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample_key;

    fn check(answer: &str, expected: bool) {
        let mut shown = Vec::new();
        let confirmed = confirm("Sure? ", &mut answer.as_bytes(), &mut shown).expect("io");
        assert_eq!(confirmed, expected, "{answer:?}");
        assert_eq!(shown, b"Sure? ");
    }

    #[test]
    fn only_yes_confirms() {
        check("y\n", true);
        check("YES\n", true);
        check(" yes \n", true);
        check("\n", false);
        check("n\n", false);
        check("yep\n", false);
        check("", false);
    }

    #[test]
    fn prompt_names_the_key() {
        assert_eq!(
            prompt(&sample_key()),
            "Revoke key backend-prod (key_0123456789abcdefghij)? This cannot be undone. [y/N] "
        );
    }
}
