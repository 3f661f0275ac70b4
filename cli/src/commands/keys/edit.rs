//! `gwctl keys edit KEY`: flags → a validated `UpdateKey` holding only what changes.
//!
//! Optional limits take `none` to clear them (`Patch::Clear`, sent as JSON `null`); lists
//! take `''` for "no restriction", because for a list `none` would be read as a model glob
//! or refused as a provider, and guessing would be worse than refusing. `--expires` is
//! accepted only to be refused here with the daemon's own `field_not_editable`, so the
//! operator learns why rather than seeing "unexpected argument".

use anyhow::Context;
use clap::Args;
use gateway_shared::api::{Patch, UpdateKey};
use gateway_shared::validate::{self, FieldError};

use super::{KEY_HELP, parse_list, parse_rpm, parse_spend_limit, resolve_id};
use crate::Refusal;
use crate::client::ApiClient;
use crate::output::{self, Output};

/// The value that clears an optional limit.
const NONE: &str = "none";

#[derive(Debug, Args)]
pub struct Cmd {
    #[arg(value_name = "KEY", help = KEY_HELP)]
    key: String,
    /// A new name, 1–64 characters.
    #[arg(long)]
    name: Option<String>,
    /// Providers the key may use, comma-separated; '' allows all.
    #[arg(long, value_name = "LIST")]
    providers: Option<String>,
    /// Model globs the key may use, comma-separated; '' allows all.
    #[arg(long, value_name = "GLOBS")]
    models: Option<String>,
    /// Client addresses or CIDR ranges, comma-separated; '' allows any.
    #[arg(long, value_name = "LIST")]
    ips: Option<String>,
    /// Requests per rolling minute, or none for no rate limit.
    #[arg(long, value_name = "N|none")]
    rpm: Option<String>,
    /// Spend limit in US dollars, or none for no spend limit.
    #[arg(long, value_name = "USD|none")]
    spend_limit: Option<String>,
    /// When the spend limit starts over, or none to make it a lifetime cap.
    #[arg(long, value_name = "PERIOD", value_parser = ["daily", "weekly", "monthly", NONE])]
    reset: Option<String>,
    /// Not editable: a key's expiry is fixed when it is created. Refused.
    #[arg(long, value_name = "WHEN")]
    expires: Option<String>,
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let update = self.to_update()?;
        let key_id = resolve_id(client, &self.key).await?;
        let key = client
            .update_key(&key_id, &update)
            .await
            .with_context(|| format!("editing key {key_id}"))?;
        output.print(&key, output::key_details)
    }

    /// The change, checked with the daemon's own rules; refused if it changes nothing.
    pub fn to_update(&self) -> Result<UpdateKey, Refusal> {
        if self.expires.is_some() {
            return Err(FieldError::not_editable("expires_at").into());
        }
        let update = UpdateKey {
            name: self.name.as_deref().map(validate::name).transpose()?,
            allowed_providers: list(
                self.providers.as_deref(),
                "allowed_providers",
                validate::providers,
            )?,
            allowed_models: list(
                self.models.as_deref(),
                "allowed_models",
                validate::model_globs,
            )?,
            allowed_ips: list(self.ips.as_deref(), "allowed_ips", validate::ips)?,
            rate_limit_rpm: patch(self.rpm.as_deref(), parse_rpm)?,
            spend_limit_usd: patch(self.spend_limit.as_deref(), parse_spend_limit)?,
            spend_reset: patch(self.reset.as_deref(), |text| {
                text.parse()
                    .map_err(|reason| FieldError::invalid("spend_reset", reason))
            })?,
        };
        if update.is_empty() {
            return Err(Refusal::invalid(
                "Nothing to change: pass at least one of --name, --providers, --models, --ips, --rpm, \
                 --spend-limit, --reset.",
            ));
        }
        Ok(update)
    }
}

fn list<T>(
    text: Option<&str>,
    field: &str,
    validate: impl Fn(&[String]) -> Result<Vec<T>, FieldError>,
) -> Result<Option<Vec<T>>, FieldError> {
    let Some(text) = text else { return Ok(None) };
    if text.trim() == NONE {
        return Err(FieldError::invalid(
            field,
            "takes '' (an empty list) for no restriction, not none",
        ));
    }
    validate(&parse_list(text)).map(Some)
}

fn patch<T>(
    text: Option<&str>,
    parse: impl Fn(&str) -> Result<T, FieldError>,
) -> Result<Patch<T>, FieldError> {
    match text {
        None => Ok(Patch::Keep),
        Some(text) if text.trim() == NONE => Ok(Patch::Clear),
        Some(text) => parse(text).map(Patch::Set),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use gateway_shared::{ErrorCode, Nanodollars, Provider, SpendReset};

    use super::*;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        cmd: Cmd,
    }

    fn update(args: &[&str]) -> Result<UpdateKey, Refusal> {
        let argv = ["edit", "key_0123456789abcdefghij"]
            .into_iter()
            .chain(args.iter().copied());
        Harness::try_parse_from(argv)
            .expect("flags parse")
            .cmd
            .to_update()
    }

    fn check(args: &[&str], expected: UpdateKey) {
        assert_eq!(update(args), Ok(expected), "{args:?}");
    }

    #[test]
    fn flags_map_to_patches() {
        check(
            &["--rpm", "none"],
            UpdateKey {
                rate_limit_rpm: Patch::Clear,
                ..UpdateKey::default()
            },
        );
        check(
            &["--rpm", "120"],
            UpdateKey {
                rate_limit_rpm: Patch::Set(120),
                ..UpdateKey::default()
            },
        );
        check(
            &["--spend-limit", "none", "--reset", "none"],
            UpdateKey {
                spend_limit_usd: Patch::Clear,
                spend_reset: Patch::Clear,
                ..UpdateKey::default()
            },
        );
        check(
            &["--spend-limit", "12.50", "--reset", "weekly"],
            UpdateKey {
                spend_limit_usd: Patch::Set(Nanodollars(12_500_000_000)),
                spend_reset: Patch::Set(SpendReset::Weekly),
                ..UpdateKey::default()
            },
        );
        check(
            &["--models", ""],
            UpdateKey {
                allowed_models: Some(vec![]),
                ..UpdateKey::default()
            },
        );
        check(
            &[
                "--name",
                "renamed",
                "--providers",
                "gemini,openai",
                "--ips",
                "::1",
            ],
            UpdateKey {
                name: Some("renamed".into()),
                allowed_providers: Some(vec![Provider::Openai, Provider::Gemini]),
                allowed_ips: Some(vec!["::1".into()]),
                ..UpdateKey::default()
            },
        );
    }

    #[test]
    fn the_json_sent_holds_only_the_changes() {
        let update = update(&["--rpm", "none", "--models", ""]).expect("valid");
        assert_eq!(
            update.to_json(),
            serde_json::json!({"rate_limit_rpm": null, "allowed_models": []})
        );
    }

    #[test]
    fn refusals_carry_the_daemons_codes() {
        let code = |args: &[&str]| update(args).map_err(|r| r.code);
        assert_eq!(code(&[]), Err(ErrorCode::InvalidArgument));
        assert_eq!(
            code(&["--expires", "30d"]),
            Err(ErrorCode::FieldNotEditable)
        );
        assert_eq!(code(&["--rpm", "0"]), Err(ErrorCode::InvalidArgument));
        assert_eq!(code(&["--models", "none"]), Err(ErrorCode::InvalidArgument));
        assert_eq!(code(&["--name", ""]), Err(ErrorCode::InvalidArgument));
        let refusal = update(&["--expires", "30d"]).expect_err("not editable");
        assert!(
            refusal
                .message
                .starts_with("Field expires_at cannot be changed"),
            "{}",
            refusal.message
        );
        let refusal = update(&[]).expect_err("nothing");
        assert!(
            refusal.message.starts_with("Nothing to change"),
            "{}",
            refusal.message
        );
    }
}
