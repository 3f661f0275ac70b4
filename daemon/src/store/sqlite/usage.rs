//! The usage log (a row per proxied request), the per-day rollup kept beside it, and the
//! per-day and per-model reports read from the rollup, on SQLite.

use anyhow::Context;
use gateway_shared::Nanodollars;
use gateway_shared::api::UsageReport;
use jiff::civil::Date;
use rusqlite::{Connection, Transaction, params};

use super::keys::nanos_to_sql;
use crate::store::usage::{self as shared, ROLLUP_SUMS, TOTALS, UsageRecord, sql_count};

/// Rows per multi-row `INSERT`, largest first: a batch is written in statements of these
/// sizes (a batch of 45 rows: 32 + 8 + 4 + 1), so a run of the statement, which opens its
/// cursors, checks its transaction and halts (about 2,500 instructions, as much as binding
/// and inserting a row), is paid a few times a batch, not once a row. Batches are small when
/// the gateway is quiet (a lone request waits `writer::GATHER` for company), so the small
/// sizes matter: callgrind counted 6.6k instructions a row for batches of ~15 one-row runs.
const ROWS_PER_INSERT: [usize; 6] = [32, 16, 8, 4, 2, 1];
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

/// The log: one row per request, in statements of [`ROWS_PER_INSERT`] rows.
///
/// With `yielding`, the thread yields its core between statements of the largest size: this
/// runs on the usage writer's thread, which shares a core with the last event loop
/// (`cpu_affinity`), and a batch of a thousand rows is a millisecond of work that would
/// otherwise hold that loop's connections. With yields, JSON p99 at c16 stayed at or below
/// the unyielding writer's, and throughput rose (see `writer::GATHER`). A yield with nothing
/// else to run returns at once; with a busy loop beside it, it is a wait, which is why the
/// writer yields only while it keeps up (`writer::YIELDING_BATCH_MAX`).
fn append_to_log(
    tx: &Transaction<'_>,
    records: &[UsageRecord],
    yielding: bool,
) -> anyhow::Result<()> {
    static SQL: std::sync::LazyLock<[String; ROWS_PER_INSERT.len()]> =
        std::sync::LazyLock::new(|| ROWS_PER_INSERT.map(insert_sql));
    let mut rest = records;
    for (size, sql) in ROWS_PER_INSERT.into_iter().zip(SQL.iter()) {
        if rest.len() < size {
            continue;
        }
        // Each statement is taken from the cache once per batch: a cache look-up hashes the
        // SQL text (over a kilobyte for the 32-row one).
        let mut statement = tx.prepare_cached(sql)?;
        let mut chunks = rest.chunks_exact(size);
        for chunk in &mut chunks {
            insert_rows(&mut statement, chunk)?;
            if yielding && size == ROWS_PER_INSERT[0] {
                std::thread::yield_now();
            }
        }
        rest = chunks.remainder();
    }
    debug_assert!(rest.is_empty(), "the last size is one row");
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
