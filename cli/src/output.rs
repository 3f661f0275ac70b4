//! Everything gwctl prints on success: JSON for scripts, tables and labelled lines for people.
//!
//! JSON mode writes the management API's own shapes and nothing else on stdout, so
//! `gwctl -o json … | jq` sees exactly what the daemon sent. Table mode is for reading: times
//! in UTC to the second with a relative hint, money as `$12.50`, and advice such as the
//! secret-once warning on stderr so that stdout stays clean. Renderers are pure functions of
//! the data and an injected `now`, so tests can assert on their text.

use std::io::Write;

use anyhow::Context;
use comfy_table::{ContentArrangement, Table, presets};
use gateway_shared::api::{AuditEntry, KeyCreated, KeyView};
use jiff::Timestamp;
use serde::Serialize;

use crate::OutputFormat;

/// Printed on stderr under a newly created key in table mode.
pub const SECRET_WARNING: &str = "warning: this is the only time the secret is shown. gatewayd keeps \
only a hash of it and cannot show it again: store it now.";

/// Where and how a command prints; `now` is read once per run so every relative time in one
/// output agrees.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub format: OutputFormat,
    pub now: Timestamp,
}

impl Output {
    pub fn new(format: OutputFormat, now: Timestamp) -> Self {
        Self { format, now }
    }

    /// `value` as JSON in JSON mode, else the text `table` renders from it.
    pub fn print<T: Serialize + ?Sized>(
        &self,
        value: &T,
        table: impl FnOnce(&T, Timestamp) -> String,
    ) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(value),
            OutputFormat::Table => self.stdout(&table(value, self.now)),
        }
    }

    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value).context("encoding json output")?;
        self.stdout(&text)
    }

    /// Writes `text` and a newline to stdout.
    pub fn stdout(&self, text: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .context("writing to stdout")
    }

    /// Writes `text` and a newline to stderr: warnings and prompts, never results.
    pub fn stderr(&self, text: &str) -> anyhow::Result<()> {
        let mut stderr = std::io::stderr().lock();
        writeln!(stderr, "{text}")
            .and_then(|()| stderr.flush())
            .context("writing to stderr")
    }
}

/// `ID NAME PREFIX STATE SPEND RPM EXPIRES LAST USED`, one key a row.
pub fn key_table(keys: &[KeyView], now: Timestamp) -> String {
    let mut table = plain_table([
        "ID",
        "NAME",
        "PREFIX",
        "STATE",
        "SPEND",
        "RPM",
        "EXPIRES",
        "LAST USED",
    ]);
    for key in keys {
        table.add_row([
            key.id.clone(),
            key.name.clone(),
            key.prefix.clone(),
            key.state.to_string(),
            spend_summary(key),
            key.rate_limit_rpm
                .map_or_else(|| "-".to_owned(), |rpm| rpm.to_string()),
            when_or(key.expires_at, now, "never"),
            when_or(key.last_used_at, now, "never"),
        ]);
    }
    finish(&mut table)
}

/// Every field of a key, one labelled line each.
pub fn key_details(key: &KeyView, now: Timestamp) -> String {
    labelled(&key_lines(key, now))
}

/// A new key: what identifies and restricts it, then the secret on the last line.
pub fn created_details(created: &KeyCreated, now: Timestamp) -> String {
    const SHOWN: &[&str] = &[
        "id",
        "name",
        "prefix",
        "state",
        "providers",
        "models",
        "ips",
        "rate limit",
        "spend limit",
        "expires",
    ];
    let mut lines: Vec<(&str, String)> = key_lines(&created.key, now)
        .into_iter()
        .filter(|(label, _)| SHOWN.contains(label))
        .collect();
    lines.push(("secret", created.secret.clone()));
    labelled(&lines)
}

/// `AT ACTOR ACTION KEY DETAILS`, newest first as the daemon sends them.
pub fn audit_table(entries: &[AuditEntry], now: Timestamp) -> String {
    let mut table = plain_table(["AT", "ACTOR", "ACTION", "KEY", "DETAILS"]);
    for entry in entries {
        let details = match &entry.details {
            serde_json::Value::Null => "-".to_owned(),
            serde_json::Value::Object(map) if map.is_empty() => "-".to_owned(),
            other => other.to_string(),
        };
        table.add_row([
            when(entry.at, now),
            entry.actor.clone(),
            entry.action.clone(),
            entry.key_id.clone().unwrap_or_else(|| "-".to_owned()),
            details,
        ]);
    }
    finish(&mut table)
}

/// Spend against the limit: `$1.20 / $50.00 daily`, `$3.00 / $10.00 lifetime` (a cap on total
/// spend), or just the total spend when there is no limit.
pub fn spend_summary(key: &KeyView) -> String {
    match (key.spend_limit_usd, key.spend_reset) {
        (Some(limit), Some(reset)) => format!("{} / {limit} {reset}", key.spend_period_usd),
        (Some(limit), None) => format!("{} / {limit} lifetime", key.spend_total_usd),
        (None, _) => key.spend_total_usd.to_string(),
    }
}

/// `2027-01-31T00:00:00Z (in 29d)`: UTC to the second, then how far from now.
pub fn when(at: Timestamp, now: Timestamp) -> String {
    format!(
        "{} ({})",
        at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        relative(at, now)
    )
}

fn when_or(at: Option<Timestamp>, now: Timestamp, missing: &str) -> String {
    at.map_or_else(|| missing.to_owned(), |at| when(at, now))
}

/// `in 29d`, `3h ago`, `now`: one unit, rounded down, coarse enough to read at a glance.
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    let seconds = at.as_second() - now.as_second();
    let magnitude = seconds.unsigned_abs();
    let amount = match magnitude {
        0 => return "now".to_owned(),
        1..60 => format!("{magnitude}s"),
        60..3_600 => format!("{}m", magnitude / 60),
        3_600..172_800 => format!("{}h", magnitude / 3_600),
        172_800..63_072_000 => format!("{}d", magnitude / 86_400),
        _ => format!("{}y", magnitude / 31_536_000),
    };
    if seconds > 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

fn key_lines(key: &KeyView, now: Timestamp) -> Vec<(&'static str, String)> {
    let list_or_any = |items: Vec<String>| {
        if items.is_empty() {
            "any".to_owned()
        } else {
            items.join(", ")
        }
    };
    let spend_limit = match (key.spend_limit_usd, key.spend_reset) {
        (Some(limit), Some(reset)) => format!("{limit} {reset}"),
        (Some(limit), None) => format!("{limit} lifetime"),
        (None, _) => "none".to_owned(),
    };
    vec![
        ("id", key.id.clone()),
        ("name", key.name.clone()),
        ("prefix", key.prefix.clone()),
        ("state", key.state.to_string()),
        (
            "providers",
            list_or_any(
                key.allowed_providers
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            ),
        ),
        ("models", list_or_any(key.allowed_models.clone())),
        ("ips", list_or_any(key.allowed_ips.clone())),
        (
            "rate limit",
            key.rate_limit_rpm
                .map_or_else(|| "none".to_owned(), |rpm| format!("{rpm} rpm")),
        ),
        ("spend limit", spend_limit),
        ("period spend", key.spend_period_usd.to_string()),
        ("period resets", when_or(key.period_resets_at, now, "-")),
        ("total spend", key.spend_total_usd.to_string()),
        ("requests", key.request_count.to_string()),
        ("expires", when_or(key.expires_at, now, "never")),
        ("created", when(key.created_at, now)),
        ("updated", when(key.updated_at, now)),
        ("last used", when_or(key.last_used_at, now, "never")),
        ("revoked", when_or(key.revoked_at, now, "-")),
    ]
}

fn labelled(lines: &[(&str, String)]) -> String {
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        + 1;
    lines
        .iter()
        .map(|(label, value)| format!("{:<width$} {value}", format!("{label}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Borderless, never wrapped (a wrapped id cannot be copied), columns two spaces apart.
fn plain_table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header(header);
    table
}

fn finish(table: &mut Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

#[cfg(test)]
pub(crate) mod tests {
    use gateway_shared::{KeyState, Nanodollars, Provider, SpendReset};

    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    const NOW: &str = "2027-01-02T00:00:00Z";

    pub(crate) fn sample_key() -> KeyView {
        KeyView {
            id: "key_0123456789abcdefghij".into(),
            name: "backend-prod".into(),
            prefix: "sk-proxy-a1b2".into(),
            state: KeyState::Active,
            allowed_providers: vec![Provider::Openai, Provider::Anthropic],
            allowed_models: vec!["gpt-4o*".into(), "claude-*".into()],
            allowed_ips: vec![],
            rate_limit_rpm: Some(60),
            spend_limit_usd: Some(Nanodollars(50_000_000_000)),
            spend_reset: Some(SpendReset::Daily),
            expires_at: Some(ts("2027-01-31T00:00:00Z")),
            created_at: ts("2026-12-01T10:00:00Z"),
            updated_at: ts("2026-12-01T10:00:00.250Z"),
            revoked_at: None,
            last_used_at: Some(ts("2027-01-01T21:00:00Z")),
            spend_period_usd: Nanodollars(1_200_000_000),
            spend_total_usd: Nanodollars(34_500_000_000),
            period_resets_at: Some(ts("2027-01-03T00:00:00Z")),
            request_count: 1234,
        }
    }

    fn check_relative(at: &str, expected: &str) {
        assert_eq!(relative(ts(at), ts(NOW)), expected, "{at}");
    }

    #[test]
    fn relative_hints() {
        check_relative(NOW, "now");
        check_relative("2027-01-02T00:00:30Z", "in 30s");
        check_relative("2027-01-01T23:55:00Z", "5m ago");
        check_relative("2027-01-01T21:00:00Z", "3h ago");
        check_relative("2027-01-31T00:00:00Z", "in 29d");
        check_relative("2030-01-02T00:00:00Z", "in 3y");
    }

    #[test]
    fn details_show_every_field() {
        let text = key_details(&sample_key(), ts(NOW));
        for needle in [
            "id:            key_0123456789abcdefghij",
            "name:          backend-prod",
            "prefix:        sk-proxy-a1b2",
            "state:         active",
            "providers:     openai, anthropic",
            "models:        gpt-4o*, claude-*",
            "ips:           any",
            "rate limit:    60 rpm",
            "spend limit:   $50.00 daily",
            "period spend:  $1.20",
            "period resets: 2027-01-03T00:00:00Z (in 24h)",
            "total spend:   $34.50",
            "requests:      1234",
            "expires:       2027-01-31T00:00:00Z (in 29d)",
            "created:       2026-12-01T10:00:00Z (31d ago)",
            "updated:       2026-12-01T10:00:00Z (31d ago)",
            "last used:     2027-01-01T21:00:00Z (3h ago)",
            "revoked:       -",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        assert_eq!(text.lines().count(), 18);
    }

    #[test]
    fn table_has_the_documented_columns() {
        let mut unlimited = sample_key();
        unlimited.id = "key_zzzzzzzzzzzzzzzzzzzz".into();
        unlimited.name = "batch".into();
        unlimited.rate_limit_rpm = None;
        unlimited.spend_limit_usd = None;
        unlimited.spend_reset = None;
        unlimited.expires_at = None;
        unlimited.last_used_at = None;
        let text = key_table(&[sample_key(), unlimited], ts(NOW));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let header: Vec<&str> = lines[0]
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect();
        assert_eq!(
            header,
            [
                "ID",
                "NAME",
                "PREFIX",
                "STATE",
                "SPEND",
                "RPM",
                "EXPIRES",
                "LAST USED"
            ]
        );
        assert!(
            lines[1].starts_with("key_0123456789abcdefghij  backend-prod"),
            "{text}"
        );
        assert!(lines[1].contains("$1.20 / $50.00 daily"), "{text}");
        assert!(lines[1].contains("2027-01-31T00:00:00Z (in 29d)"), "{text}");
        assert!(lines[2].contains("$34.50"), "{text}");
        assert!(lines[2].ends_with("never"), "{text}");
        assert!(
            !text.lines().any(|l| l.ends_with(' ')),
            "trailing spaces:\n{text}"
        );
    }

    #[test]
    fn spend_summaries() {
        let mut key = sample_key();
        assert_eq!(spend_summary(&key), "$1.20 / $50.00 daily");
        key.spend_reset = None;
        assert_eq!(spend_summary(&key), "$34.50 / $50.00 lifetime");
        key.spend_limit_usd = None;
        assert_eq!(spend_summary(&key), "$34.50");
    }

    #[test]
    fn created_key_ends_with_its_secret() {
        let created = KeyCreated {
            key: sample_key(),
            secret: "sk-proxy-a1b2SECRET".into(),
        };
        let text = created_details(&created, ts(NOW));
        assert!(text.starts_with("id:"), "{text}");
        assert!(
            text.lines()
                .last()
                .is_some_and(|l| l.ends_with("sk-proxy-a1b2SECRET")),
            "{text}"
        );
        assert!(text.contains("spend limit:"));
        assert!(!text.contains("total spend"));
    }

    #[test]
    fn audit_rows() {
        let entry = AuditEntry {
            id: 7,
            at: ts("2027-01-01T23:00:00Z"),
            actor: "uid:1000".into(),
            action: "key.update".into(),
            key_id: Some("key_0123456789abcdefghij".into()),
            details: serde_json::json!({"rate_limit_rpm": 60}),
        };
        let text = audit_table(&[entry], ts(NOW));
        let row = text.lines().nth(1).expect("a row");
        assert!(
            row.starts_with("2027-01-01T23:00:00Z (1h ago)  uid:1000  key.update"),
            "{text}"
        );
        assert!(row.ends_with(r#"{"rate_limit_rpm":60}"#), "{text}");
    }
}
