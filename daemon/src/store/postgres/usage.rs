//! Usage on PostgreSQL: the log, the per-day rollup and the per-key totals, written by many
//! replicas at once.
//!
//! A batch is exactly-once by record id: its rows go in with one multi-row insert (arrays
//! unnested) that skips ids already there, `RETURNING` the ids it did insert, and only those
//! records are added to `usage_daily` and `key_spend`, in the same transaction. So a batch
//! re-sent after a commit whose answer was lost (or from the spool) adds nothing.
//!
//! Replicas writing the same key, day and model contend on the same rollup rows. Each batch
//! upserts its rollup rows, then its key rows, each sorted (`usage::rollup_groups`, the keys
//! by id): every transaction takes those row locks in one global order, so two never wait on
//! each other in a cycle (no deadlock), they only queue.

use std::collections::{BTreeMap, HashSet};

use anyhow::Context;
use gateway_shared::Nanodollars;
use gateway_shared::api::UsageReport;
use jiff::civil::Date;
use tokio_postgres::{Client, Transaction};

use crate::spend::ledger::CountedSpend;
use crate::store::usage::{self as shared, ROLLUP_SUMS, TOTALS, UsageRecord, sql_count};
use crate::store::{JournalChanges, KeyTotals};

/// An id's bits as PostgreSQL's signed BIGINT: ids are compared, never ordered or summed.
fn id_to_sql(n: u64) -> i64 {
    i64::from_ne_bytes(n.to_ne_bytes())
}

pub async fn write(
    tx: &Transaction<'_>,
    records: &[UsageRecord],
    journal: JournalChanges<'_>,
) -> anyhow::Result<()> {
    if !records.is_empty() {
        let mut inserted = insert_log(tx, records).await?;
        // `remove`, not `contains`: two records of one id in a batch (a hold's settlement and
        // its sweep's record, met in one writer batch) are one row, counted once.
        let fresh: Vec<&UsageRecord> = records
            .iter()
            .filter(|r| inserted.remove(&(id_to_sql(r.id.instance), id_to_sql(r.id.seq))))
            .collect();
        add_to_rollup(tx, &fresh).await?;
        add_to_key_totals(tx, &fresh).await?;
    }
    apply_journal(tx, journal).await
}

/// Inserts the log rows not there yet; the ids of those it inserted.
async fn insert_log(
    tx: &Transaction<'_>,
    records: &[UsageRecord],
) -> anyhow::Result<HashSet<(i64, i64)>> {
    let column = |f: fn(&UsageRecord) -> i64| records.iter().map(f).collect::<Vec<i64>>();
    let instances = column(|r| id_to_sql(r.id.instance));
    let seqs = column(|r| id_to_sql(r.id.seq));
    let key_ids: Vec<&str> = records.iter().map(|r| r.key_id.as_str()).collect();
    let at_ms = column(|r| r.at.as_millisecond());
    let providers: Vec<&str> = records.iter().map(|r| r.provider.as_str()).collect();
    let models: Vec<&str> = records.iter().map(|r| r.model.as_str()).collect();
    let statuses: Vec<i32> = records.iter().map(|r| i32::from(r.status)).collect();
    let input = column(|r| sql_count(r.tokens.input));
    let output = column(|r| sql_count(r.tokens.output));
    let cache_read = column(|r| sql_count(r.tokens.cache_read));
    let cache_write = column(|r| sql_count(r.tokens.cache_write));
    let cost = column(|r| sql_count(r.cost.0));
    let latency = column(|r| sql_count(r.latency_ms));
    let sources: Vec<&str> = records.iter().map(|r| r.source.as_str()).collect();
    let over: Vec<bool> = records.iter().map(|r| r.over_allowed).collect();
    let rows = tx
        .query(
            "INSERT INTO usage (instance, seq, key_id, at_ms, provider, model, status, \
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, \
             latency_ms, source, over_allowed) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], \
             $5::text[], $6::text[], $7::integer[], $8::bigint[], $9::bigint[], $10::bigint[], \
             $11::bigint[], $12::bigint[], $13::bigint[], $14::text[], $15::boolean[]) \
             ON CONFLICT (instance, seq) DO NOTHING RETURNING instance, seq",
            &[
                &instances,
                &seqs,
                &key_ids,
                &at_ms,
                &providers,
                &models,
                &statuses,
                &input,
                &output,
                &cache_read,
                &cache_write,
                &cost,
                &latency,
                &sources,
                &over,
            ],
        )
        .await
        .context("inserting usage")?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// The rollup upsert. Like SQLite's, each sum saturates at `i64::MAX` instead of failing the
/// batch on an absurd provider number.
fn rollup_upsert_sql() -> String {
    let updates: Vec<String> = ROLLUP_SUMS
        .iter()
        .map(|c| {
            format!(
                "{c} = CASE WHEN excluded.{c} > {max} - usage_daily.{c} THEN {max} \
                 ELSE usage_daily.{c} + excluded.{c} END",
                max = i64::MAX
            )
        })
        .collect();
    format!(
        "INSERT INTO usage_daily (key_id, day, provider, model, {}) \
         SELECT key_id, day, provider, model, {} FROM unnest($1::text[], $2::text[], \
         $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], \
         $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[]) WITH ORDINALITY \
         AS t(key_id, day, provider, model, {}, ord) ORDER BY ord \
         ON CONFLICT (key_id, day, provider, model) DO UPDATE SET {}",
        ROLLUP_SUMS.join(", "),
        ROLLUP_SUMS.join(", "),
        ROLLUP_SUMS.join(", "),
        updates.join(", ")
    )
}

async fn add_to_rollup(tx: &Transaction<'_>, records: &[&UsageRecord]) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    // Sorted (see the module docs); `WITH ORDINALITY … ORDER BY ord` keeps that order.
    let groups = shared::rollup_groups(records.iter().copied());
    let days: Vec<String> = groups.iter().map(|(_, sums)| sums.day_text()).collect();
    let key_ids: Vec<&str> = groups.iter().map(|((key, ..), _)| *key).collect();
    let providers: Vec<&str> = groups.iter().map(|((_, _, p, _), _)| p.as_str()).collect();
    let models: Vec<&str> = groups.iter().map(|((.., m), _)| *m).collect();
    let sum = |f: fn(&shared::Sums) -> u64| -> Vec<i64> {
        groups.iter().map(|(_, s)| sql_count(f(s))).collect()
    };
    tx.execute(
        &rollup_upsert_sql(),
        &[
            &key_ids,
            &days,
            &providers,
            &models,
            &sum(|s| s.requests),
            &sum(|s| s.input),
            &sum(|s| s.output),
            &sum(|s| s.cache_read),
            &sum(|s| s.cache_write),
            &sum(|s| s.cost.0),
            &sum(|s| s.estimated),
            &sum(|s| s.unpriced),
        ],
    )
    .await
    .context("adding usage to the daily rollup")?;
    Ok(())
}

/// Adds the records to their keys' lifetime totals, keys in id order (see the module docs).
async fn add_to_key_totals(tx: &Transaction<'_>, records: &[&UsageRecord]) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut per_key: BTreeMap<&str, (Nanodollars, u64, i64)> = BTreeMap::new();
    for record in records {
        let entry =
            per_key
                .entry(record.key_id.as_str())
                .or_insert((Nanodollars::ZERO, 0, i64::MIN));
        entry.0 = entry.0.saturating_add(record.cost);
        entry.1 += 1;
        entry.2 = entry.2.max(record.at.as_millisecond());
    }
    let key_ids: Vec<&str> = per_key.keys().copied().collect();
    let costs: Vec<i64> = per_key.values().map(|v| sql_count(v.0.0)).collect();
    let counts: Vec<i64> = per_key.values().map(|v| sql_count(v.1)).collect();
    let last_used: Vec<i64> = per_key.values().map(|v| v.2).collect();
    let max = i64::MAX;
    tx.execute(
        &format!(
            "INSERT INTO key_spend (key_id, spend_total_nanos, request_count, last_used_ms) \
             SELECT key_id, spend, requests, last_used \
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) \
             WITH ORDINALITY AS t(key_id, spend, requests, last_used, ord) ORDER BY ord \
             ON CONFLICT (key_id) DO UPDATE SET \
             spend_total_nanos = CASE WHEN excluded.spend_total_nanos > \
                 {max} - key_spend.spend_total_nanos THEN {max} \
                 ELSE key_spend.spend_total_nanos + excluded.spend_total_nanos END, \
             request_count = CASE WHEN excluded.request_count > \
                 {max} - key_spend.request_count THEN {max} \
                 ELSE key_spend.request_count + excluded.request_count END, \
             last_used_ms = GREATEST(key_spend.last_used_ms, excluded.last_used_ms)"
        ),
        &[&key_ids, &costs, &counts, &last_used],
    )
    .await
    .context("adding usage to the keys' totals")?;
    Ok(())
}

/// Journals `opened` and deletes `settled` (see `postgres`'s module docs on holds). Both
/// are idempotent: a re-sent batch journals and deletes nothing twice.
async fn apply_journal(tx: &Transaction<'_>, journal: JournalChanges<'_>) -> anyhow::Result<()> {
    let instance = id_to_sql(journal.instance);
    if !journal.opened.is_empty() {
        let opened = journal.opened;
        let ids: Vec<i64> = opened.iter().map(|h| id_to_sql(h.id.get())).collect();
        let key_ids: Vec<&str> = opened.iter().map(|h| h.key_id.as_str()).collect();
        let at_ms: Vec<i64> = opened.iter().map(|h| h.at.as_millisecond()).collect();
        let providers: Vec<&str> = opened.iter().map(|h| h.provider.as_str()).collect();
        let models: Vec<&str> = opened.iter().map(|h| h.model.as_str()).collect();
        let input: Vec<i64> = opened.iter().map(|h| sql_count(h.input_tokens)).collect();
        let output: Vec<i64> = opened.iter().map(|h| sql_count(h.output_tokens)).collect();
        let cost: Vec<i64> = opened.iter().map(|h| sql_count(h.cost.0)).collect();
        let unpriced: Vec<bool> = opened.iter().map(|h| h.unpriced).collect();
        tx.execute(
            "INSERT INTO holds (instance, id, key_id, at_ms, provider, model, input_tokens, \
             output_tokens, cost_nanos, unpriced) \
             SELECT $1::bigint, * FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::text[], \
             $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::boolean[]) \
             ON CONFLICT (instance, id) DO NOTHING",
            &[
                &instance, &ids, &key_ids, &at_ms, &providers, &models, &input, &output, &cost,
                &unpriced,
            ],
        )
        .await
        .context("journaling open holds")?;
    }
    if !journal.settled.is_empty() {
        let ids: Vec<i64> = journal
            .settled
            .iter()
            .map(|id| id_to_sql(id.get()))
            .collect();
        tx.execute(
            "DELETE FROM holds WHERE instance = $1 AND id = ANY($2::bigint[])",
            &[&instance, &ids],
        )
        .await
        .context("deleting settled holds")?;
    }
    Ok(())
}

/// Spend on the days from `from` on and in all, in one statement (one snapshot).
/// Each of `key_ids`' lifetime totals as every replica's usage has added to them (keys never
/// used are absent).
pub async fn key_totals(
    client: &Client,
    key_ids: &[String],
) -> anyhow::Result<std::collections::HashMap<String, KeyTotals>> {
    let rows = client
        .query(
            "SELECT key_id, spend_total_nanos, request_count, last_used_ms FROM key_spend \
             WHERE key_id = ANY($1)",
            &[&key_ids],
        )
        .await
        .context("reading the keys' totals")?;
    rows.iter()
        .map(|row| {
            let key_id: String = row.get(0);
            let totals = KeyTotals {
                spend_total: Nanodollars(u64::try_from(row.get::<_, i64>(1)).unwrap_or(0)),
                request_count: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
                last_used_at: jiff::Timestamp::from_millisecond(row.get(3))
                    .context("a key's last use")?,
            };
            Ok((key_id, totals))
        })
        .collect()
}

pub async fn counted_spend(
    client: &Client,
    key_id: &str,
    from: Date,
) -> anyhow::Result<CountedSpend> {
    let max = i64::MAX;
    let row = client
        .query_one(
            &format!(
                "SELECT LEAST(COALESCE((SELECT sum(cost_nanos) FROM usage_daily \
                 WHERE key_id = $1 AND day >= $2), 0), {max})::bigint, \
                 COALESCE((SELECT spend_total_nanos FROM key_spend WHERE key_id = $1), 0)"
            ),
            &[&key_id, &from.to_string()],
        )
        .await
        .context("reading the key's spend")?;
    let nanos = |n: i64| Nanodollars(u64::try_from(n).unwrap_or(0));
    Ok(CountedSpend {
        since: nanos(row.get(0)),
        total: nanos(row.get(1)),
    })
}

/// The sum of `key_ids`' rollup from `from` on, or of their lifetime totals (`None`),
/// saturated at `i64::MAX` (the sum is NUMERIC, so it cannot overflow on the way).
pub async fn period_spend(
    client: &Client,
    key_ids: &[String],
    from: Option<Date>,
) -> anyhow::Result<Nanodollars> {
    let max = i64::MAX;
    let row = match from {
        Some(from) => {
            client
                .query_one(
                    &format!(
                        "SELECT LEAST(COALESCE(sum(cost_nanos), 0), {max})::bigint \
                         FROM usage_daily WHERE key_id = ANY($1) AND day >= $2"
                    ),
                    &[&key_ids, &from.to_string()],
                )
                .await
        }
        None => {
            client
                .query_one(
                    &format!(
                        "SELECT LEAST(COALESCE(sum(spend_total_nanos), 0), {max})::bigint \
                         FROM key_spend WHERE key_id = ANY($1)"
                    ),
                    &[&key_ids],
                )
                .await
        }
    }
    .context("reading the keys' period spend")?;
    Ok(Nanodollars(
        u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
    ))
}

pub async fn report(
    client: &Client,
    key_id: &str,
    from: Date,
    to: Date,
) -> anyhow::Result<UsageReport> {
    let rows = client
        .query(
            &format!(
                "SELECT day, provider, model, {TOTALS} FROM usage_daily \
                 WHERE key_id = $1 AND day BETWEEN $2 AND $3"
            ),
            &[&key_id, &from.to_string(), &to.to_string()],
        )
        .await
        .context("reading the usage rollup")?;
    let rows = rows
        .iter()
        .map(|row| {
            let mut columns = [0i64; 8];
            for (i, column) in columns.iter_mut().enumerate() {
                *column = row.try_get(3 + i)?;
            }
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                shared::totals(columns),
            ))
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    shared::report(key_id, from, to, rows)
}
