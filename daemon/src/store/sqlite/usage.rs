//! The usage log (a row per proxied request), the per-day rollup kept beside it, and the
//! per-day and per-model reports read from the rollup, on SQLite.

use anyhow::Context;
use gateway_shared::Nanodollars;
use gateway_shared::api::UsageReport;
use jiff::civil::Date;
use rusqlite::{Connection, Transaction, params};

use super::keys::nanos_to_sql;
use crate::store::usage::{self as shared, ROLLUP_SUMS, TOTALS, UsageRecord, sql_count};

/// Rows per multi-row `INSERT`: one statement run per this many rows instead of one per row
/// (each run opens its cursors and checks its transaction again). The rest go one by one:
/// statements of 16, 8, 4 and 2 rows for them were tried (issue #19) and cost as much as
/// they saved: callgrind counted ~2.4k instructions a statement for handing it back to
/// rusqlite's cache alone, and the usage rows' cost stayed at ~9k instructions a row.
const ROWS_PER_INSERT: usize = 32;
const COLUMNS: usize = 13;

/// Appends `records` to the usage log and adds them to the per-day rollup the reports read.
/// With `yielding`, the thread yields its core between log statements (see
/// [`append_to_log`]).
pub fn insert_all(
    tx: &Transaction<'_>,
    records: &[UsageRecord],
    yielding: bool,
) -> anyhow::Result<()> {
    append_to_log(tx, records, yielding)?;
    add_to_rollup(tx, records)
}

/// The log: one row per request, in statements of [`ROWS_PER_INSERT`] rows, the rest one by
/// one.
///
/// With `yielding`, the thread yields its core between statements: this runs on the usage
/// writer's thread, which shares a core with the last event loop (`cpu_affinity`), and a batch
/// of a thousand rows is a millisecond of work that would otherwise hold that loop's
/// connections. With yields, JSON p99 at c16 stayed at or below the unyielding writer's, and
/// throughput rose (see `writer::GATHER`). A yield with nothing else to run returns at once;
/// with a busy loop beside it, it is a wait, which is why the writer yields only while it
/// keeps up (`writer::YIELDING_BATCH_MAX`).
fn append_to_log(
    tx: &Transaction<'_>,
    records: &[UsageRecord],
    yielding: bool,
) -> anyhow::Result<()> {
    static MANY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| insert_sql(ROWS_PER_INSERT));
    static ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_sql(1));
    // Each statement is taken from the cache once per batch: a cache look-up hashes the SQL
    // text (over a kilobyte for the many-row one).
    let mut chunks = records.chunks_exact(ROWS_PER_INSERT);
    if chunks.len() > 0 {
        let mut many = tx.prepare_cached(&MANY)?;
        for chunk in &mut chunks {
            insert_rows(&mut many, chunk)?;
            if yielding {
                std::thread::yield_now();
            }
        }
    }
    if !chunks.remainder().is_empty() {
        let mut one = tx.prepare_cached(&ONE)?;
        for record in chunks.remainder() {
            insert_rows(&mut one, std::slice::from_ref(record))?;
        }
    }
    Ok(())
}

fn insert_sql(rows: usize) -> String {
    let row = format!("({})", ["?"; COLUMNS].join(", "));
    format!(
        "INSERT INTO usage (key_id, at_ms, provider, model, status, input_tokens, \
         output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, latency_ms, source, \
         over_allowed) \
         VALUES {}",
        vec![row; rows].join(", ")
    )
}

/// Binds `records` to `statement` (one row's parameters after another) and runs it.
fn insert_rows(
    statement: &mut rusqlite::Statement<'_>,
    records: &[UsageRecord],
) -> anyhow::Result<()> {
    for (i, record) in records.iter().enumerate() {
        let values: [&dyn rusqlite::ToSql; COLUMNS] = [
            &record.key_id.as_str(),
            &record.at.as_millisecond(),
            &record.provider.as_str(),
            &record.model.as_str(),
            &record.status,
            &sql_count(record.tokens.input),
            &sql_count(record.tokens.output),
            &sql_count(record.tokens.cache_read),
            &sql_count(record.tokens.cache_write),
            &nanos_to_sql(record.cost),
            &sql_count(record.latency_ms),
            &record.source.as_str(),
            &record.over_allowed,
        ];
        for (column, value) in values.into_iter().enumerate() {
            statement.raw_bind_parameter(i * COLUMNS + column + 1, value)?;
        }
    }
    statement.raw_execute().context("inserting usage")?;
    Ok(())
}

/// The batch summed per group in memory, then one upsert per group: under load a batch of
/// hundreds of rows is a handful of upserts.
fn add_to_rollup(tx: &Transaction<'_>, records: &[UsageRecord]) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let groups = shared::rollup_groups(records);
    static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(rollup_upsert_sql);
    let mut statement = tx.prepare_cached(&UPSERT)?;
    for ((key_id, _, provider, model), sums) in groups {
        let day = sums.day_text();
        statement
            .execute(params![
                key_id,
                day,
                provider.as_str(),
                model,
                sql_count(sums.requests),
                sql_count(sums.input),
                sql_count(sums.output),
                sql_count(sums.cache_read),
                sql_count(sums.cache_write),
                nanos_to_sql(sums.cost),
                sql_count(sums.estimated),
                sql_count(sums.unpriced),
            ])
            .context("adding usage to the daily rollup")?;
    }
    Ok(())
}

/// The rollup upsert. Each sum saturates at `i64::MAX` instead of overflowing: SQLite turns an
/// overflowing integer sum into a REAL, which the STRICT table refuses, and the writer would
/// then drop every later record of the same key, day and model. Realistic sums never come
/// near the bound (a request's tokens are at most `MAX_TOKENS_PER_REQUEST` = 10^9 of each
/// kind, so a day's row would need billions of requests); the clamp is for a provider's
/// absurd numbers or an absurd operator price. Both sides are non-negative, so
/// `i64::MAX - old` cannot overflow.
fn rollup_upsert_sql() -> String {
    let updates: Vec<String> = ROLLUP_SUMS
        .iter()
        .map(|c| {
            format!(
                "{c} = CASE WHEN excluded.{c} > {max} - {c} THEN {max} ELSE {c} + excluded.{c} END",
                max = i64::MAX
            )
        })
        .collect();
    format!(
        "INSERT INTO usage_daily (key_id, day, provider, model, {}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (key_id, day, provider, model) DO UPDATE SET {}",
        ROLLUP_SUMS.join(", "),
        updates.join(", ")
    )
}

/// What `key_id` spent on the UTC days from `from` on, by the daily rollup.
pub fn spend_since(conn: &Connection, key_id: &str, from: Date) -> anyhow::Result<Nanodollars> {
    let mut statement =
        conn.prepare("SELECT cost_nanos FROM usage_daily WHERE key_id = ?1 AND day >= ?2")?;
    let rows = statement.query_map(params![key_id, from.to_string()], |row| {
        row.get::<_, i64>(0)
    })?;
    let mut spent = Nanodollars::ZERO;
    for nanos in rows {
        spent = spent.saturating_add(super::keys::nanos_from_sql(nanos?));
    }
    Ok(spent)
}

/// Usage of `key_id` on the UTC days `from..=to`: totals, every day, every model.
pub fn report(
    conn: &Connection,
    key_id: &str,
    from: Date,
    to: Date,
) -> anyhow::Result<UsageReport> {
    let mut statement = conn.prepare(&format!(
        "SELECT day, provider, model, {TOTALS} FROM usage_daily \
         WHERE key_id = ?1 AND day BETWEEN ?2 AND ?3"
    ))?;
    let rows = statement
        .query_map(params![key_id, from.to_string(), to.to_string()], |row| {
            let mut columns = [0i64; 8];
            for (i, column) in columns.iter_mut().enumerate() {
                *column = row.get::<_, Option<i64>>(3 + i)?.unwrap_or(0);
            }
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                shared::totals(columns),
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    shared::report(key_id, from, to, rows)
}

#[cfg(test)]
mod tests;
