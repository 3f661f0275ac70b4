//! The usage log (a row per proxied request), the per-day rollup kept beside it, and the
//! per-day and per-model reports read from the rollup.

use std::collections::HashMap;

use anyhow::Context;
use compact_str::CompactString;
use gateway_shared::api::{DailyUsage, ModelUsage, UsageReport, UsageTotals};
use gateway_shared::{Nanodollars, Provider};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use rusqlite::{Connection, Transaction, params};

use super::keys::nanos_to_sql;
use crate::spend::holds::HoldId;
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

/// One proxied request, as the usage writer persists it. The strings are inline (a key id
/// and most model names fit in 24 bytes): a record allocates nothing of its own, and the
/// writer thread frees nothing the event loops allocated.
#[derive(Clone, Debug)]
pub struct UsageRecord {
    pub key_id: CompactString,
    pub at: Timestamp,
    pub provider: Provider,
    pub model: CompactString,
    pub status: u16,
    pub tokens: Tokens,
    pub cost: Nanodollars,
    pub latency_ms: u64,
    pub source: CostSource,
    /// The provider reported more output than the request allowed (see `meter`).
    pub over_allowed: bool,
    /// The key's spend right after this request settled.
    pub spend: SpendState,
    /// The journal row of its hold, when the usage writer journaled one: deleted in the
    /// transaction that writes this record.
    pub journaled_hold: Option<HoldId>,
}

/// Rows per multi-row `INSERT`: one statement run per this many rows instead of one per row
/// (each run opens its cursors and checks its transaction again).
const ROWS_PER_INSERT: usize = 32;
const COLUMNS: usize = 13;
const MS_PER_DAY: i64 = 86_400_000;

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

/// One (key, UTC day, provider, model) group of a batch.
type Group<'a> = (&'a str, i64, Provider, &'a str);

/// What a batch adds to one group of the rollup.
#[derive(Default)]
struct Sums {
    day: Option<Date>,
    requests: u64,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    cost: Nanodollars,
    estimated: u64,
    unpriced: u64,
}

/// The batch summed per group in memory, then one upsert per group: under load a batch of
/// hundreds of rows is a handful of upserts.
fn add_to_rollup(tx: &Transaction<'_>, records: &[UsageRecord]) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut groups: HashMap<Group<'_>, Sums> = HashMap::new();
    for record in records {
        let day = record.at.as_millisecond().div_euclid(MS_PER_DAY);
        let group = (
            record.key_id.as_str(),
            day,
            record.provider,
            record.model.as_str(),
        );
        let sums = groups.entry(group).or_default();
        if sums.day.is_none() {
            sums.day = Some(TimeZone::UTC.to_datetime(record.at).date());
        }
        sums.requests += 1;
        sums.input = sums.input.saturating_add(record.tokens.input);
        sums.output = sums.output.saturating_add(record.tokens.output);
        sums.cache_read = sums.cache_read.saturating_add(record.tokens.cache_read);
        sums.cache_write = sums.cache_write.saturating_add(record.tokens.cache_write);
        sums.cost = sums.cost.saturating_add(record.cost);
        sums.estimated += u64::from(record.source == CostSource::Estimated);
        sums.unpriced += u64::from(record.source == CostSource::Unpriced);
    }
    static UPSERT: std::sync::LazyLock<String> = std::sync::LazyLock::new(rollup_upsert_sql);
    let mut statement = tx.prepare_cached(&UPSERT)?;
    for ((key_id, _, provider, model), sums) in groups {
        let day = sums.day.map(|d| d.to_string()).unwrap_or_default();
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

/// The rollup's columns that sum what a batch adds.
const ROLLUP_SUMS: [&str; 8] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_nanos",
    "estimated_requests",
    "unpriced_requests",
];

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

/// Each key's spend as of its newest record in `records`. Every record carries its key's spend
/// right after it settled, but two event loops can queue theirs in the other order, so the
/// newest is the one with the most requests counted, not the last in the batch.
pub fn newest_spend(records: &[UsageRecord]) -> HashMap<&str, &SpendState> {
    let mut newest: HashMap<&str, &SpendState> = HashMap::new();
    for record in records {
        let state = newest
            .entry(record.key_id.as_str())
            .or_insert(&record.spend);
        if record.spend.request_count > state.request_count {
            *state = &record.spend;
        }
    }
    newest
}

fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The rollup columns a report reads, in the order [`totals`] takes them.
const TOTALS: &str = "requests, input_tokens, cache_read_tokens, cache_write_tokens, \
    output_tokens, cost_nanos, estimated_requests, unpriced_requests";

/// One rollup row's totals. Rows are summed in Rust, saturating, not with SQL `SUM`: a sum
/// over rows that a provider's absurd numbers pushed to the bound would make `SUM` fail
/// with an integer overflow, and the report with it.
fn totals(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<UsageTotals> {
    let n = |i: usize| -> rusqlite::Result<u64> {
        Ok(u64::try_from(row.get::<_, Option<i64>>(first + i)?.unwrap_or(0)).unwrap_or(0))
    };
    Ok(UsageTotals {
        requests: n(0)?,
        input_tokens: n(1)?.saturating_add(n(2)?).saturating_add(n(3)?),
        output_tokens: n(4)?,
        cost_usd: Nanodollars(n(5)?),
        estimated_requests: n(6)?,
        unpriced_requests: n(7)?,
    })
}

/// `total += more`, saturating.
fn add_totals(total: &mut UsageTotals, more: &UsageTotals) {
    total.requests = total.requests.saturating_add(more.requests);
    total.input_tokens = total.input_tokens.saturating_add(more.input_tokens);
    total.output_tokens = total.output_tokens.saturating_add(more.output_tokens);
    total.cost_usd = total.cost_usd.saturating_add(more.cost_usd);
    total.estimated_requests = total
        .estimated_requests
        .saturating_add(more.estimated_requests);
    total.unpriced_requests = total
        .unpriced_requests
        .saturating_add(more.unpriced_requests);
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
    let (from_text, to_text) = (from.to_string(), to.to_string());
    let mut by_day_rows: HashMap<String, UsageTotals> = HashMap::new();
    let mut by_model_rows: HashMap<(String, String), UsageTotals> = HashMap::new();
    let mut statement = conn.prepare(&format!(
        "SELECT day, provider, model, {TOTALS} FROM usage_daily \
         WHERE key_id = ?1 AND day BETWEEN ?2 AND ?3"
    ))?;
    let rows = statement.query_map(params![key_id, from_text, to_text], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            totals(row, 3)?,
        ))
    })?;
    for row in rows {
        let (day, provider, model, totals) = row?;
        add_totals(by_day_rows.entry(day).or_default(), &totals);
        add_totals(by_model_rows.entry((provider, model)).or_default(), &totals);
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

    let mut by_model = Vec::new();
    for ((provider, model), totals) in by_model_rows {
        let provider = provider
            .parse()
            .map_err(|e: String| anyhow::anyhow!("usage row: {e}"))?;
        by_model.push(ModelUsage {
            provider,
            model,
            totals,
        });
    }
    // Dearest first, then busiest, then by name.
    by_model.sort_by(|a, b| {
        b.totals
            .cost_usd
            .cmp(&a.totals.cost_usd)
            .then(b.totals.requests.cmp(&a.totals.requests))
            .then_with(|| a.model.cmp(&b.model))
            .then_with(|| a.provider.as_str().cmp(b.provider.as_str()))
    });

    let mut total = UsageTotals::default();
    for day in &by_day {
        add_totals(&mut total, &day.totals);
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

#[cfg(test)]
mod tests;
