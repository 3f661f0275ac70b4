//! `gwctl keys rotate KEY [--grace DURATION]`: a new secret with the same settings (SPEC §6),
//! the old key revoked now or when the grace period ends.
//!
//! With no grace period the old key stops working at once, which is as final as `keys
//! revoke`, so it asks first the same way (unless `--yes`). With a grace period nothing
//! breaks yet, so it does not ask. The new secret is printed once, like `keys create`, with
//! the same warning; and, since that is what the operator plans around, when the old key
//! stops working.

use anyhow::Context;
use clap::Args;
use gateway_shared::KeyState;
use gateway_shared::api::{KeyView, ROTATE_GRACE_MAX_SECONDS, RotateKey};
use gateway_shared::validate::FieldError;

use super::{KEY_HELP, resolve};
use crate::client::ApiClient;
use crate::commands::confirm;
use crate::output::{self, Output, SECRET_WARNING};
use crate::{OutputFormat, Refusal};

#[derive(Debug, Args)]
pub struct Cmd {
    #[arg(value_name = "KEY", help = KEY_HELP)]
    key: String,
    /// How long the old key keeps working: 0 (revoke it now), or seconds, minutes, hours,
    /// days or weeks (90s, 30m, 12h, 7d, 2w); at most 90 days.
    #[arg(long, value_name = "DURATION", default_value = "0")]
    grace: String,
    /// Rotate without asking (needed with --grace 0 when stdin is not a terminal).
    #[arg(short = 'y', long)]
    yes: bool,
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let grace_period_seconds = parse_grace(&self.grace).map_err(Refusal::from)?;
        let key = resolve(client, &self.key).await?;
        if grace_period_seconds == 0 && !self.yes && key.state != KeyState::Revoked {
            let not_done = format!("rotate key {} ({}) with no grace period", key.name, key.id);
            if !confirm::ask(&prompt(&key), &not_done)? {
                anyhow::bail!("key {} was not rotated", key.id);
            }
        }
        let rotated = client
            .rotate_key(
                &key.id,
                &RotateKey {
                    grace_period_seconds,
                },
            )
            .await
            .with_context(|| format!("rotating key {}", key.id))?;
        let printed = match output.format {
            OutputFormat::Json => output.json(&rotated),
            OutputFormat::Table => output
                .stdout(&output::rotated_details(&rotated, output.shown_now()))
                .and_then(|()| output.stderr(SECRET_WARNING)),
        };
        printed.with_context(|| {
            format!(
                "key {} replaced {} but its secret may not have been shown; revoke it with \
                 `gwctl keys revoke {} --yes` and rotate {} again",
                rotated.created.key.id, key.id, rotated.created.key.id, key.id
            )
        })
    }
}

/// `--grace`: `0`, or a whole number of `s`, `m`, `h`, `d` or `w`, at most
/// [`ROTATE_GRACE_MAX_SECONDS`] (the daemon's limit, checked here to save a round trip).
pub fn parse_grace(text: &str) -> Result<u64, FieldError> {
    const FIELD: &str = "grace_period_seconds";
    let text = text.trim();
    let forms = "0, or a number with a unit: 90s, 30m, 12h, 7d, 2w";
    let invalid = || FieldError::invalid(FIELD, format!("--grace {text:?} is not {forms}"));
    let seconds = if text == "0" {
        0
    } else {
        let unit_at = text.len().checked_sub(1).ok_or_else(invalid)?;
        let (digits, unit) = text.split_at_checked(unit_at).ok_or_else(invalid)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let seconds_per_unit: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(invalid()),
        };
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        n.saturating_mul(seconds_per_unit)
    };
    if seconds > ROTATE_GRACE_MAX_SECONDS {
        return Err(FieldError::invalid(
            FIELD,
            format!(
                "--grace {text} is longer than the longest grace period, 90 days \
                 ({ROTATE_GRACE_MAX_SECONDS} seconds)"
            ),
        ));
    }
    Ok(seconds)
}

fn prompt(key: &KeyView) -> String {
    format!(
        "Rotate key {} ({}) with no grace period? The old secret stops working now; this \
         cannot be undone. [y/N] ",
        key.name, key.id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample_key;

    fn check_grace(text: &str, expected: Result<u64, &str>) {
        let got = parse_grace(text).map_err(|e| {
            assert_eq!(e.field, "grace_period_seconds", "{text}");
            e.reason
        });
        match expected {
            Ok(seconds) => assert_eq!(got, Ok(seconds), "{text}"),
            Err(fragment) => {
                let reason = got.expect_err(text);
                assert!(reason.contains(fragment), "{text}: {reason}");
            }
        }
    }

    #[test]
    fn grace_forms() {
        check_grace("0", Ok(0));
        check_grace("0s", Ok(0));
        check_grace("90s", Ok(90));
        check_grace("30m", Ok(1_800));
        check_grace("12h", Ok(43_200));
        check_grace(" 7d ", Ok(604_800));
        check_grace("2w", Ok(1_209_600));
        check_grace("90d", Ok(ROTATE_GRACE_MAX_SECONDS));
        check_grace("91d", Err("90 days"));
        check_grace("99999999999999999999w", Err("is not"));
        check_grace("18446744073709551615w", Err("90 days"));
        for bad in ["", "90", "1.5h", "-1d", "d", "3y", "soon", "1h30m"] {
            check_grace(bad, Err("is not"));
        }
    }

    #[test]
    fn prompt_names_the_key_and_the_consequence() {
        let text = prompt(&sample_key());
        assert!(
            text.starts_with(
                "Rotate key backend-prod (key_0123456789abcdefghij) with no grace period?"
            ),
            "{text}"
        );
        assert!(text.contains("stops working now"), "{text}");
    }
}
