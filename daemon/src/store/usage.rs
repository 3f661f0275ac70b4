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

/// Rows per multi-row `INSERT`: one statement run per this many rows instead of one per row
/// (each run opens its cursors and checks its transaction again).
const ROWS_PER_INSERT: usize = 32;
const COLUMNS: usize = 13;

/// Inserts `records` in statements of [`ROWS_PER_INSERT`] rows, the rest one by one.
pub fn insert_all(tx: &Transaction<'_>, records: &[UsageRecord]) -> anyhow::Result<()> {
    static MANY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| insert_sql(ROWS_PER_INSERT));
    static ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_sql(1));
    let mut chunks = records.chunks_exact(ROWS_PER_INSERT);
    for chunk in &mut chunks {
        insert_rows(tx, &MANY, chunk)?;
    }
    for record in chunks.remainder() {
        insert_rows(tx, &ONE, std::slice::from_ref(record))?;
    }
    Ok(())
}

fn insert_sql(rows: usize) -> String {
    let row = format!("({})", vec!["?"; COLUMNS].join(", "));
    format!(
        "INSERT INTO usage (key_id, at, day, provider, model, status, input_tokens, \
         output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, latency_ms, source) \
         VALUES {}",
        vec![row; rows].join(", ")
    )
}

fn insert_rows(tx: &Transaction<'_>, sql: &str, records: &[UsageRecord]) -> anyhow::Result<()> {
    // Cached: the writer runs these thousands of times a second.
    let mut statement = tx.prepare_cached(sql)?;
    for (i, record) in records.iter().enumerate() {
        let at = record.at.to_string();
        let values: [&dyn rusqlite::ToSql; COLUMNS] = [
            &record.key_id,
            &at,
            &utc_day(&at, record.at),
            &record.provider.as_str(),
            &record.model,
            &record.status,
            &sql_count(record.tokens.input),
            &sql_count(record.tokens.output),
            &sql_count(record.tokens.cache_read),
            &sql_count(record.tokens.cache_write),
            &nanos_to_sql(record.cost),
            &sql_count(record.latency_ms),
            &record.source.as_str(),
        ];
        for (column, value) in values.into_iter().enumerate() {
            statement.raw_bind_parameter(i * COLUMNS + column + 1, value)?;
        }
    }
    statement.raw_execute().context("inserting usage")?;
    Ok(())
}

/// The UTC day of `at`: the first ten bytes of its RFC 3339 text ("2026-11-27T…Z"), which is
/// how `Timestamp` displays years 0000–9999; computed otherwise for any other year.
fn utc_day(text: &str, at: Timestamp) -> String {
    match text.as_bytes().get(10) {
        Some(b'T') => text[..10].to_owned(),
        _ => TimeZone::UTC.to_datetime(at).date().to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> UsageRecord {
        UsageRecord {
            key_id: format!("key_{}", i % 3),
            at: Timestamp::from_second(1_795_000_000 + i as i64 * 3_600).expect("time"),
            provider: Provider::Openai,
            model: "gpt-4o".into(),
            status: 200,
            tokens: Tokens {
                input: i,
                output: 2 * i,
                cache_read: 0,
                cache_write: 0,
            },
            cost: Nanodollars(1_000 + i),
            latency_ms: i,
            source: if i.is_multiple_of(10) {
                CostSource::Estimated
            } else {
                CostSource::Reported
            },
            spend: SpendState::default(),
        }
    }

    #[test]
    fn the_day_is_the_utc_date() {
        for text in [
            "2026-11-27T23:59:59.999Z",
            "2026-02-28T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "9999-12-30T12:00:00Z",
        ] {
            let at: Timestamp = text.parse().expect("time");
            let expected = TimeZone::UTC.to_datetime(at).date().to_string();
            assert_eq!(utc_day(&at.to_string(), at), expected, "{text}");
        }
        let far = Timestamp::MIN;
        assert_eq!(
            utc_day(&far.to_string(), far),
            TimeZone::UTC.to_datetime(far).date().to_string()
        );
    }

    #[test]
    fn batches_of_every_size_insert_every_row_once() {
        for n in [0, 1, 31, 32, 33, 70] {
            let mut conn = Connection::open_in_memory().expect("open");
            super::super::migrations::migrate(&mut conn).expect("migrate");
            let records: Vec<UsageRecord> = (0..n).map(record).collect();
            let tx = conn.transaction().expect("tx");
            insert_all(&tx, &records).expect("insert");
            tx.commit().expect("commit");
            let (rows, cost, output, estimated): (i64, i64, i64, i64) = conn
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(cost_nanos), 0), COALESCE(SUM(output_tokens), 0), \
                     COALESCE(SUM(source = 'estimated'), 0) FROM usage",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .expect("sums");
            let n = n as i64;
            assert_eq!(rows, n);
            assert_eq!(cost, (0..n).map(|i| 1_000 + i).sum::<i64>());
            assert_eq!(output, (0..n).map(|i| 2 * i).sum::<i64>());
            assert_eq!(estimated, (0..n).filter(|i| i % 10 == 0).count() as i64);
            let last: Option<(String, String)> = conn
                .query_row(
                    "SELECT key_id, day FROM usage ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .ok();
            if n > 0 {
                let expected = record(n as u64 - 1);
                let day = TimeZone::UTC.to_datetime(expected.at).date().to_string();
                assert_eq!(last, Some((expected.key_id, day)));
            }
        }
    }
}
