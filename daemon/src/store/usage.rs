//! Rows of the `usage` table, and the per-day and per-model reports read from them.

use std::collections::HashMap;

use anyhow::Context;
use gateway_shared::api::{DailyUsage, ModelUsage, UsageReport, UsageTotals};
use gateway_shared::{Nanodollars, Provider};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use rusqlite::{Connection, Transaction, params};

use super::keys::nanos_to_sql;
use crate::spend::ledger::SpendState;
use crate::spend::price::Tokens;

/// How a usage row's cost was arrived at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostSource {
    /// From the provider's own token counts.
    Reported,
    /// Usage never arrived (client disconnect, stream cut, stall): from what was sent and
    /// streamed.
    Estimated,
    /// The model has no price: counted, never recorded as free.
    Unpriced,
}

impl CostSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Estimated => "estimated",
            Self::Unpriced => "unpriced",
        }
    }
}

/// One proxied request, as the usage writer persists it.
#[derive(Clone, Debug)]
pub struct UsageRecord {
    pub key_id: String,
    pub at: Timestamp,
    pub provider: Provider,
    pub model: String,
    pub status: u16,
    pub tokens: Tokens,
    pub cost: Nanodollars,
    pub latency_ms: u64,
    pub source: CostSource,
    /// The key's spend right after this request settled.
    pub spend: SpendState,
}

pub fn insert(tx: &Transaction<'_>, record: &UsageRecord) -> anyhow::Result<()> {
    let day = TimeZone::UTC.to_datetime(record.at).date().to_string();
    // Cached: the writer inserts thousands of rows a second with the same statement.
    let mut statement = tx.prepare_cached(
        "INSERT INTO usage (key_id, at, day, provider, model, status, input_tokens, output_tokens, \
         cache_read_tokens, cache_write_tokens, cost_nanos, latency_ms, source) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    statement
        .execute(params![
            record.key_id,
            record.at.to_string(),
            day,
            record.provider.as_str(),
            record.model,
            record.status,
            sql_count(record.tokens.input),
            sql_count(record.tokens.output),
            sql_count(record.tokens.cache_read),
            sql_count(record.tokens.cache_write),
            nanos_to_sql(record.cost),
            sql_count(record.latency_ms),
            record.source.as_str(),
        ])
        .context("inserting usage")?;
    Ok(())
}

fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const TOTALS: &str = "COUNT(*), SUM(input_tokens + cache_read_tokens + cache_write_tokens), \
    SUM(output_tokens), SUM(cost_nanos), SUM(source = 'estimated'), SUM(source = 'unpriced')";

fn totals(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<UsageTotals> {
    let n = |i: usize| -> rusqlite::Result<u64> {
        Ok(u64::try_from(row.get::<_, Option<i64>>(first + i)?.unwrap_or(0)).unwrap_or(0))
    };
    Ok(UsageTotals {
        requests: n(0)?,
        input_tokens: n(1)?,
        output_tokens: n(2)?,
        cost_usd: Nanodollars(n(3)?),
        estimated_requests: n(4)?,
        unpriced_requests: n(5)?,
    })
}

/// Usage of `key_id` on the UTC days `from..=to`: totals, every day, every model.
pub fn report(
    conn: &Connection,
    key_id: &str,
    from: Date,
    to: Date,
) -> anyhow::Result<UsageReport> {
    let (from_text, to_text) = (from.to_string(), to.to_string());
    let mut by_day_rows: HashMap<String, UsageTotals> = HashMap::new();
    let mut statement = conn.prepare(&format!(
        "SELECT day, {TOTALS} FROM usage WHERE key_id = ?1 AND day BETWEEN ?2 AND ?3 GROUP BY day"
    ))?;
    let rows = statement.query_map(params![key_id, from_text, to_text], |row| {
        Ok((row.get::<_, String>(0)?, totals(row, 1)?))
    })?;
    for row in rows {
        let (day, totals) = row?;
        by_day_rows.insert(day, totals);
    }

    let mut by_day = Vec::new();
    let mut day = from;
    while day <= to {
        let totals = by_day_rows.remove(&day.to_string()).unwrap_or_default();
        by_day.push(DailyUsage { date: day, totals });
        match day.tomorrow() {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }

    let mut statement = conn.prepare(&format!(
        "SELECT provider, model, {TOTALS} FROM usage WHERE key_id = ?1 AND day BETWEEN ?2 AND ?3 \
         GROUP BY provider, model ORDER BY SUM(cost_nanos) DESC, COUNT(*) DESC, model"
    ))?;
    let rows = statement.query_map(params![key_id, from_text, to_text], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            totals(row, 2)?,
        ))
    })?;
    let mut by_model = Vec::new();
    for row in rows {
        let (provider, model, totals) = row?;
        let provider = provider
            .parse()
            .map_err(|e: String| anyhow::anyhow!("usage row: {e}"))?;
        by_model.push(ModelUsage {
            provider,
            model,
            totals,
        });
    }

    let mut total = UsageTotals::default();
    for day in &by_day {
        total.requests += day.totals.requests;
        total.input_tokens += day.totals.input_tokens;
        total.output_tokens += day.totals.output_tokens;
        total.cost_usd = total.cost_usd.saturating_add(day.totals.cost_usd);
        total.estimated_requests += day.totals.estimated_requests;
        total.unpriced_requests += day.totals.unpriced_requests;
    }
    Ok(UsageReport {
        key_id: key_id.to_owned(),
        from,
        to,
        total,
        by_day,
        by_model,
    })
}

/// Rows of a key (tests and diagnostics).
pub fn count_for_key(conn: &Connection, key_id: &str) -> anyhow::Result<u64> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM usage WHERE key_id = ?1",
        [key_id],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}
