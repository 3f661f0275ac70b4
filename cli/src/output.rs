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
use gateway_shared::api::{
    AdminTokenCreated, AdminTokenView, AuditEntry, KeyCreated, KeyRotated, KeyView,
};
use jiff::Timestamp;
use serde::Serialize;

use crate::OutputFormat;

/// Printed on stderr under a newly created key in table mode.
pub const SECRET_WARNING: &str = "warning: this is the only time the secret is shown. gatewayd keeps \
only a hash of it and cannot show it again: store it now.";

/// Where and how a command prints. `now` is when the command started (what `--expires 30d`
/// and usage ranges count from); times in what is printed are shown against [`Output::shown_now`],
/// read once when printing, after the daemon answered: read before the request, a key just
/// edited read `updated … (in 1s)`.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub format: OutputFormat,
    pub now: Timestamp,
    /// Whether [`Output::shown_now`] reads the clock (a real run) or is `now` (tests).
    live: bool,
}

impl Output {
    /// A fixed clock: every time is shown against `now`.
    pub fn new(format: OutputFormat, now: Timestamp) -> Self {
        Self {
            format,
            now,
            live: false,
        }
    }

    /// The system clock: `now` is read here, and again by [`Output::shown_now`].
    pub fn live(format: OutputFormat) -> Self {
        Self {
            live: true,
            ..Self::new(format, Timestamp::now())
        }
    }

    /// The instant printed times are relative to: the clock as it is now, after the answer
    /// being printed arrived (never before the command started).
    pub fn shown_now(&self) -> Timestamp {
        if self.live {
            Timestamp::now().max(self.now)
        } else {
            self.now
        }
    }

    /// `value` as JSON in JSON mode, else the text `table` renders from it.
    pub fn print<T: Serialize + ?Sized>(
        &self,
        value: &T,
        table: impl FnOnce(&T, Timestamp) -> String,
    ) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Json => self.json(value),
            OutputFormat::Table => self.stdout(&table(value, self.shown_now())),
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
            state_text(key, now),
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
    let mut lines = new_key_lines(&created.key, now);
    lines.push(("secret", created.secret.clone()));
    labelled(&lines)
}

/// The new key of a rotation as `keys create` shows it, then which key it replaces and when
/// that one stops working (what the operator plans the switch around); the secret stays on
/// the last line.
pub fn rotated_details(rotated: &KeyRotated, now: Timestamp) -> String {
    let previous = &rotated.previous;
    let old_key = match previous.revoked_at {
        Some(at) if at <= now => format!("revoked {}", when(at, now)),
        Some(at) => format!("works until {}", when(at, now)),
        // A daemon that did not schedule the revocation: say so rather than guess.
        None => "not scheduled for revocation".to_owned(),
    };
    let mut lines = new_key_lines(&rotated.created.key, now);
    lines.push(("replaces", format!("{} ({})", previous.id, previous.prefix)));
    lines.push(("old key", old_key));
    lines.push(("secret", rotated.created.secret.clone()));
    labelled(&lines)
}

/// `ID NAME PREFIX STATE CREATED LAST USED`, one admin token a row (never a secret).
pub fn admin_token_table(tokens: &[AdminTokenView], now: Timestamp) -> String {
    let mut table = plain_table(["ID", "NAME", "PREFIX", "STATE", "CREATED", "LAST USED"]);
    for token in tokens {
        table.add_row([
            token.id.clone(),
            token.name.clone(),
            token.prefix.clone(),
            admin_token_state(token, now).to_owned(),
            when(token.created_at, now),
            when_or(token.last_used_at, now, "never"),
        ]);
    }
    finish(&mut table)
}

/// Every field of an admin token, one labelled line each.
pub fn admin_token_details(token: &AdminTokenView, now: Timestamp) -> String {
    labelled(&admin_token_lines(token, now))
}

/// A new admin token, its secret on the last line.
pub fn admin_token_created_details(created: &AdminTokenCreated, now: Timestamp) -> String {
    let mut lines = admin_token_lines(&created.token, now);
    lines.retain(|(label, _)| !matches!(*label, "last used" | "revoked"));
    lines.push(("secret", created.secret.clone()));
    labelled(&lines)
}

/// Tokens have no state field: revoked once `revoked_at` has passed, else active.
fn admin_token_state(token: &AdminTokenView, now: Timestamp) -> &'static str {
    match token.revoked_at {
        Some(at) if at <= now => "revoked",
        _ => "active",
    }
}

fn admin_token_lines(token: &AdminTokenView, now: Timestamp) -> Vec<(&'static str, String)> {
    vec![
        ("id", token.id.clone()),
        ("name", token.name.clone()),
        ("prefix", token.prefix.clone()),
        ("state", admin_token_state(token, now).to_owned()),
        ("created", when(token.created_at, now)),
        ("last used", when_or(token.last_used_at, now, "never")),
        ("revoked", when_or(token.revoked_at, now, "-")),
    ]
}

/// What identifies and restricts a new key, without usage (it has none yet).
fn new_key_lines(key: &KeyView, now: Timestamp) -> Vec<(&'static str, String)> {
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
    key_lines(key, now)
        .into_iter()
        .filter(|(label, _)| SHOWN.contains(label))
        .collect()
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

/// When a key that still works stops working because it was rotated with a grace period: its
/// revocation is scheduled (`revoked_at` set) but the daemon does not count it as revoked yet.
/// A revocation by an operator takes effect at once, so only a rotation leaves a key like this.
pub fn retires_at(key: &KeyView) -> Option<Timestamp> {
    match key.state {
        gateway_shared::KeyState::Revoked => None,
        _ => key.revoked_at,
    }
}

/// The key's state, and for a rotated key in its grace period when it retires:
/// `active (retires in 23h)`.
pub fn state_text(key: &KeyView, now: Timestamp) -> String {
    match retires_at(key) {
        Some(at) => format!("{} (retires {})", key.state, relative(at, now)),
        None => key.state.to_string(),
    }
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

/// `in 30d`, `3h ago`, `now`: one unit, coarse enough to read at a glance. The future is
/// rounded to the nearest unit (a key created with `--expires 30d` and looked at a moment
/// later expires "in 30d", not "in 29d"); the past is rounded down, as "3h ago" is usually
/// read ("3 hours and some").
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    /// Seconds in the unit, its suffix, and the magnitude from which the next unit is used.
    const UNITS: [(u64, &str, u64); 5] = [
        (1, "s", 60),
        (60, "m", 3_600),
        (3_600, "h", 172_800),
        (86_400, "d", 63_072_000),
        (31_536_000, "y", u64::MAX),
    ];
    let seconds = at.as_second() - now.as_second();
    let magnitude = seconds.unsigned_abs();
    if magnitude == 0 {
        return "now".to_owned();
    }
    let future = seconds > 0;
    let amount = UNITS
        .iter()
        .find_map(|&(size, suffix, next)| {
            let n = if future {
                magnitude.saturating_add(size / 2) / size
            } else {
                magnitude / size
            };
            (n.saturating_mul(size) < next).then(|| format!("{n}{suffix}"))
        })
        .unwrap_or_default();
    if future {
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
        ("state", state_text(key, now)),
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
            replaced_by: None,
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
        // The future to the nearest unit, the past rounded down.
        check_relative("2027-01-31T23:59:58Z", "in 30d"); // `--expires 30d`, 2 s later
        check_relative("2027-01-01T21:59:00Z", "2h ago");
        check_relative("2027-01-02T00:59:31Z", "in 1h");
        check_relative("2027-01-02T00:00:29.900Z", "in 29s");
        check_relative("2027-01-02T00:45:00Z", "in 45m");
        check_relative("2027-01-03T23:59:00Z", "in 2d"); // not "in 48h"
    }

    /// Times in printed answers are shown against the clock as it is after the answer came:
    /// read when the command started, a key just edited read `updated … (in 1s)`.
    #[test]
    fn printed_times_are_relative_to_after_the_answer() {
        let output = Output::live(OutputFormat::Table);
        std::thread::sleep(std::time::Duration::from_millis(10));
        let answered_at = Timestamp::now();
        assert!(output.shown_now() >= answered_at);
        assert!(
            output.now < answered_at,
            "the start stays what --expires counts from"
        );
        let mut key = sample_key();
        key.updated_at = answered_at;
        let text = key_details(&key, output.shown_now());
        let updated = text
            .lines()
            .find(|l| l.starts_with("updated:"))
            .expect("updated line");
        assert!(!updated.contains("(in "), "{updated}");
        let fixed = Output::new(OutputFormat::Table, ts(NOW));
        assert_eq!(fixed.shown_now(), ts(NOW));
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
    fn a_rotated_key_in_its_grace_period_says_when_it_retires() {
        let mut retiring = sample_key();
        retiring.revoked_at = Some(ts("2027-01-02T23:00:00Z"));
        assert_eq!(retires_at(&retiring), Some(ts("2027-01-02T23:00:00Z")));
        assert_eq!(state_text(&retiring, ts(NOW)), "active (retires in 23h)");
        let table = key_table(std::slice::from_ref(&retiring), ts(NOW));
        assert!(table.contains("active (retires in 23h)"), "{table}");
        let details = key_details(&retiring, ts(NOW));
        assert!(
            details.contains("state:         active (retires in 23h)"),
            "{details}"
        );
        retiring.state = KeyState::Revoked;
        assert_eq!(retires_at(&retiring), None);
        assert_eq!(state_text(&retiring, ts(NOW)), "revoked");
        assert_eq!(state_text(&sample_key(), ts(NOW)), "active");
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

    fn rotated(revoked_at: Option<&str>) -> KeyRotated {
        let mut new_key = sample_key();
        new_key.id = "key_NEWNEWNEWNEWNEWNEW1".into();
        new_key.prefix = "sk-proxy-wxyz".into();
        let mut previous = sample_key();
        previous.revoked_at = revoked_at.map(ts);
        KeyRotated {
            created: KeyCreated {
                key: new_key,
                secret: "sk-proxy-wxyzSECRET".into(),
            },
            previous,
        }
    }

    #[test]
    fn details_say_when_the_old_key_stops() {
        let text = rotated_details(&rotated(Some("2027-01-03T00:00:00Z")), ts(NOW));
        assert!(text.starts_with("id:"), "{text}");
        assert!(
            text.contains("replaces:    key_0123456789abcdefghij (sk-proxy-a1b2)"),
            "{text}"
        );
        assert!(
            text.contains("old key:     works until 2027-01-03T00:00:00Z (in 24h)"),
            "{text}"
        );
        assert!(
            text.lines()
                .last()
                .is_some_and(|l| l == "secret:      sk-proxy-wxyzSECRET"),
            "{text}"
        );
        let now = rotated_details(&rotated(Some(NOW)), ts(NOW));
        assert!(
            now.contains("old key:     revoked 2027-01-02T00:00:00Z (now)"),
            "{now}"
        );
    }

    fn admin_token(revoked_at: Option<&str>) -> AdminTokenView {
        AdminTokenView {
            id: "tok_0123456789abcdefghij".into(),
            name: "ci".into(),
            prefix: "gwadm-AbCd".into(),
            created_at: ts("2027-01-01T00:00:00Z"),
            revoked_at: revoked_at.map(ts),
            last_used_at: None,
        }
    }

    #[test]
    fn admin_tokens_render_without_secrets() {
        let text = admin_token_table(
            &[admin_token(None), admin_token(Some("2027-01-01T12:00:00Z"))],
            ts(NOW),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(
            lines[1].starts_with("tok_0123456789abcdefghij  ci    gwadm-AbCd  active"),
            "{text}"
        );
        assert!(lines[2].contains("revoked"), "{text}");
        assert!(lines[1].ends_with("never"), "{text}");

        let created = AdminTokenCreated {
            token: admin_token(None),
            secret: "gwadm-AbCdSECRET".into(),
        };
        let text = admin_token_created_details(&created, ts(NOW));
        assert!(text.starts_with("id:"), "{text}");
        assert!(
            text.lines()
                .last()
                .is_some_and(|l| l == "secret:  gwadm-AbCdSECRET"),
            "{text}"
        );
        let details = admin_token_details(&admin_token(Some(NOW)), ts(NOW));
        assert!(details.contains("state:     revoked"), "{details}");
        assert!(
            details.contains("revoked:   2027-01-02T00:00:00Z (now)"),
            "{details}"
        );
    }
}
