//! `gwctl keys create`: flags → a validated `CreateKey` → the new key and its secret.
//!
//! This is the one moment the raw secret exists outside the caller's hands (SPEC §1), so the
//! output is careful: JSON mode prints the API's `KeyCreated` and nothing else on stdout;
//! table mode ends with the secret and warns on stderr that it cannot be shown again. If the
//! secret cannot be printed, the error says which key to revoke.

use anyhow::Context;
use clap::Args;
use gateway_shared::api::CreateKey;
use gateway_shared::validate::{self, FieldError};
use jiff::Timestamp;

use super::{parse_expires, parse_list, parse_rpm, parse_spend_limit};
use crate::client::ApiClient;
use crate::output::{self, Output, SECRET_WARNING};
use crate::{OutputFormat, Refusal};

#[derive(Debug, Args)]
pub struct Cmd {
    /// A name for people, 1–64 characters.
    #[arg(long)]
    name: String,
    /// Providers the key may use, comma-separated: openai, anthropic, gemini or a configured
    /// provider's name (the daemon checks it; `GET /v1/providers` lists them) [default: all].
    #[arg(long, value_name = "LIST")]
    providers: Option<String>,
    /// Model globs the key may use, comma-separated, e.g. 'gpt-4o*,claude-*' [default: all].
    #[arg(long, value_name = "GLOBS")]
    models: Option<String>,
    /// Client addresses or CIDR ranges, comma-separated, e.g. 10.0.0.0/8,2001:db8::1
    /// [default: any].
    #[arg(long, value_name = "LIST")]
    ips: Option<String>,
    /// Requests per rolling minute [default: unlimited].
    #[arg(long, value_name = "N")]
    rpm: Option<String>,
    /// Spend limit in US dollars, e.g. 50 or 12.50 [default: unlimited].
    #[arg(long, value_name = "USD")]
    spend_limit: Option<String>,
    /// When the spend limit starts over (UTC calendar); without it the limit is for life.
    #[arg(long, value_name = "PERIOD", value_parser = ["daily", "weekly", "monthly"])]
    reset: Option<String>,
    /// When the key stops working: an RFC 3339 instant (2027-01-31T00:00:00Z), a date meaning
    /// 00:00 UTC at the start of that day (2027-01-31), or a duration from now (90m, 12h, 30d,
    /// 2w) [default: never].
    #[arg(long, value_name = "WHEN")]
    expires: Option<String>,
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let create = self.to_request(output.now).map_err(Refusal::from)?;
        let created = client
            .create_key(&create)
            .await
            .context("creating the key")?;
        let printed = match output.format {
            OutputFormat::Json => output.json(&created),
            OutputFormat::Table => output
                .stdout(&output::created_details(&created, output.shown_now()))
                .and_then(|()| output.stderr(SECRET_WARNING)),
        };
        printed.with_context(|| {
            format!(
                "key {} was created but its secret may not have been shown; revoke it with \
                 `gwctl keys revoke {} --yes` and create another",
                created.key.id, created.key.id
            )
        })
    }

    /// The request, checked with the daemon's own rules.
    pub fn to_request(&self, now: Timestamp) -> Result<CreateKey, FieldError> {
        let spend_limit_usd = self
            .spend_limit
            .as_deref()
            .map(parse_spend_limit)
            .transpose()?;
        let spend_reset = match self.reset.as_deref() {
            None => None,
            Some(_) if spend_limit_usd.is_none() => {
                return Err(FieldError::invalid(
                    "spend_reset",
                    "needs a spend_limit_usd to reset (add --spend-limit)",
                ));
            }
            Some(text) => Some(
                text.parse()
                    .map_err(|reason| FieldError::invalid("spend_reset", reason))?,
            ),
        };
        Ok(CreateKey {
            name: validate::name(&self.name)?,
            allowed_providers: validate::providers(&parse_list(
                self.providers.as_deref().unwrap_or(""),
            ))?,
            allowed_models: validate::model_globs(&parse_list(
                self.models.as_deref().unwrap_or(""),
            ))?,
            allowed_ips: validate::ips(&parse_list(self.ips.as_deref().unwrap_or("")))?,
            rate_limit_rpm: self.rpm.as_deref().map(parse_rpm).transpose()?,
            spend_limit_usd,
            spend_reset,
            expires_at: self
                .expires
                .as_deref()
                .map(|text| parse_expires(text, now))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use gateway_shared::{Nanodollars, Provider, SpendReset};

    use super::*;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        cmd: Cmd,
    }

    const NOW: &str = "2027-01-02T00:00:00Z";

    fn request(args: &[&str]) -> Result<CreateKey, FieldError> {
        let argv = std::iter::once("create").chain(args.iter().copied());
        let harness = Harness::try_parse_from(argv).expect("flags parse");
        harness.cmd.to_request(NOW.parse().expect("now"))
    }

    #[test]
    fn every_flag_maps_to_its_field() {
        let create = request(&[
            "--name",
            " backend-prod ",
            "--providers",
            "openai,anthropic",
            "--models",
            "gpt-4o*,claude-*",
            "--ips",
            "10.0.0.7/8,1.2.3.4",
            "--rpm",
            "60",
            "--spend-limit",
            "50",
            "--reset",
            "daily",
            "--expires",
            "30d",
        ])
        .expect("valid");
        assert_eq!(
            create,
            CreateKey {
                name: "backend-prod".into(),
                allowed_providers: vec![Provider::Openai, Provider::Anthropic],
                allowed_models: vec!["gpt-4o*".into(), "claude-*".into()],
                allowed_ips: vec!["10.0.0.0/8".into(), "1.2.3.4".into()],
                rate_limit_rpm: Some(60),
                spend_limit_usd: Some(Nanodollars(50_000_000_000)),
                spend_reset: Some(SpendReset::Daily),
                expires_at: Some("2027-02-01T00:00:00Z".parse().expect("ts")),
            }
        );
        assert_eq!(
            request(&["--name", "x"]),
            Ok(CreateKey {
                name: "x".into(),
                ..CreateKey::default()
            })
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let check = |args: &[&str], field: &str| {
            let err = request(args).expect_err("invalid");
            assert_eq!(err.field, field, "{args:?}");
        };
        check(&["--name", ""], "name");
        check(
            &["--name", "x", "--providers", "Azure"],
            "allowed_providers",
        );
        check(&["--name", "x", "--models", "gpt-[4"], "allowed_models");
        check(&["--name", "x", "--ips", "10.0.0.0/33"], "allowed_ips");
        check(&["--name", "x", "--rpm", "0"], "rate_limit_rpm");
        check(&["--name", "x", "--spend-limit", "0"], "spend_limit_usd");
        check(&["--name", "x", "--reset", "daily"], "spend_reset");
        check(&["--name", "x", "--expires", "yesterday"], "expires_at");
    }

    #[test]
    fn reset_takes_only_known_periods() {
        let argv = [
            "create",
            "--name",
            "x",
            "--spend-limit",
            "5",
            "--reset",
            "hourly",
        ];
        assert!(Harness::try_parse_from(argv).is_err());
    }
}
