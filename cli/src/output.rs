//! Everything gwctl prints on success: JSON for scripts, tables and labelled lines for people.
//!
//! JSON mode writes the management API's own shapes and nothing else on stdout, so
//! `gwctl -o json … | jq` sees exactly what the daemon sent. Table mode is for reading: times
//! in UTC to the second with a relative hint, money as `$12.50`, and advice such as the
//! secret-once warning on stderr so that stdout stays clean. Renderers are pure functions of
//! the data and an injected `now`, so tests can assert on their text.
//!
//! Nothing the daemon sent reaches the terminal raw (see [`crate::sanitize`]): every table
//! cell and labelled value is escaped where it is put in ([`row`], [`labelled`]), JSON is
//! written with the escaping formatter, and [`Output::stdout`] and [`Output::stderr`] pass
//! whatever they are given through [`sanitize::lines`] as well. [`key_list`] prints a key list
//! page by page, so that listing 100,000 keys holds one page, not all of them.

mod cluster;
pub mod key_list;

use std::io::Write;

use anyhow::Context;
use comfy_table::{ContentArrangement, Table, presets};
use gateway_shared::api::{
    AdminTokenCreated, AdminTokenView, AuditEntry, KeyCreated, KeyRotated, KeyView,
};
use jiff::Timestamp;
use serde::Serialize;

use crate::OutputFormat;
use crate::sanitize;

pub use cluster::cluster_table;

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

    /// `value` as pretty JSON: serde_json's layout, with DEL, C1 and bidi controls escaped
    /// as well (`\u009b`), which reads back to the same value.
    pub fn json<T: Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        let text = sanitize::to_json_pretty(value).context("encoding json output")?;
        self.stdout(&text)
    }

    /// Writes `text` and a newline to stdout, any control character but its line breaks
    /// escaped.
    pub fn stdout(&self, text: &str) -> anyhow::Result<()> {
        self.stdout_styled(&sanitize::lines(text))
    }

    /// Writes `text` to stdout, as [`Output::stdout`] does but without adding a line break:
    /// a part of a longer output printed as it comes (`keys list`, a page at a time).
    pub fn stdout_part(&self, text: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(sanitize::lines(text).as_bytes())
            .and_then(|()| stdout.flush())
            .context("writing to stdout")
    }

    /// Writes `text` and a newline to stdout as it is: only for text whose escape codes are
    /// gwctl's own colours and whose every value from the daemon was escaped with
    /// [`sanitize::text`] (the usage chart).
    pub fn stdout_styled(&self, text: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .context("writing to stdout")
    }

    /// Writes `text` and a newline to stderr: warnings and prompts, never results. Escaped
    /// as [`Output::stdout`] is.
    pub fn stderr(&self, text: &str) -> anyhow::Result<()> {
        let mut stderr = std::io::stderr().lock();
        writeln!(stderr, "{}", sanitize::lines(text))
            .and_then(|()| stderr.flush())
            .context("writing to stderr")
    }
}

/// `ID NAME PREFIX STATE SPEND RPM EXPIRES LAST USED`, one key a row: the whole table at once
/// (`keys list` prints it a page at a time with [`key_list::KeyTable`], the same layout).
pub fn key_table(keys: &[KeyView], now: Timestamp) -> String {
    let mut table = key_list::KeyTable::default();
    let mut text = table.page(keys, now);
    text.push_str(&table.finish());
    text.truncate(text.trim_end_matches('\n').len());
    text
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
        table.add_row(row([
            token.id.clone(),
            token.name.clone(),
            token.prefix.clone(),
            admin_token_state(token, now).to_owned(),
            when(token.created_at, now),
            when_or(token.last_used_at, now, "never"),
        ]));
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
            // As JSON, escaped as JSON: `\u001b`, not `\u{1b}`, inside a JSON value.
            other => sanitize::to_json_compact(other).unwrap_or_else(|_| other.to_string()),
        };
        table.add_row(row([
            when(entry.at, now),
            entry.actor.clone(),
            entry.action.clone(),
            entry.key_id.clone().unwrap_or_else(|| "-".to_owned()),
            details,
        ]));
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

/// `label: value` lines, values aligned; every value escaped with [`sanitize::text`], so a
/// value from the daemon stays on its line and shows its control characters.
fn labelled(lines: &[(&str, String)]) -> String {
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        + 1;
    lines
        .iter()
        .map(|(label, value)| format!("{:<width$} {}", format!("{label}:"), sanitize::text(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A table row with every cell escaped with [`sanitize::text`]: a cell holding a line break
/// would otherwise split its row, and one holding `ESC` would reach the terminal.
pub fn row<const N: usize>(cells: [String; N]) -> [String; N] {
    cells.map(|cell| sanitize::text(&cell).into_owned())
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
pub(crate) mod tests;
