//! The whole SQLite store read out for `gatewayd migrate-store` (`store::migrate`): every
//! table a cluster shares, as the column values SQLite holds, in batches, and counted.
//!
//! Everything is read in one read transaction, so the batches and the counts describe one
//! snapshot (the command also holds the data directory's lock: no daemon writes meanwhile).
//! Each table is read by one statement, streamed: a batch of [`BATCH_ROWS`] rows is handed on
//! before the next is read, never the whole table.

use std::collections::BTreeMap;

use anyhow::Context;
use jiff::Timestamp;
use rusqlite::{Connection, Row};

use super::Store;
use crate::store::migrate::{
    AdminTokenRow, AuditRow, BATCH_ROWS, Batch, DailyRow, KeyRow, KeyTally, KeyTotals, Tally,
    UsageRow,
};

impl Store {
    /// Hands every row to `send`, batch after batch (keys, rotations, admin tokens, audit,
    /// usage, rollup), then counts the store, all in one read transaction. Blocking: run it
    /// on a blocking thread. Refuses a store with open holds in its journal: charge them
    /// first (`charge_journaled_holds`), or their requests would be lost.
    pub fn export(
        &self,
        send: &mut dyn FnMut(Batch) -> anyhow::Result<()>,
    ) -> anyhow::Result<Tally> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction().context("starting the read")?;
        let holds: i64 = tx.query_row("SELECT count(*) FROM holds", [], |row| row.get(0))?;
        anyhow::ensure!(
            holds == 0,
            "the holds journal has {holds} requests a crash left in flight; they must be \
             charged before copying"
        );
        export_table(&tx, KEYS, key_row, Batch::Keys, send).context("reading the keys")?;
        export_table(
            &tx,
            "SELECT successor_id, predecessor_id FROM key_rotations ORDER BY successor_id",
            |row| Ok((row.get(0)?, row.get(1)?)),
            Batch::Rotations,
            send,
        )
        .context("reading the rotations")?;
        export_table(
            &tx,
            "SELECT id, hash, prefix, name, created_at, revoked_at, last_used_at \
             FROM admin_tokens ORDER BY id",
            |row| {
                Ok(AdminTokenRow {
                    id: row.get(0)?,
                    hash: row.get(1)?,
                    prefix: row.get(2)?,
                    name: row.get(3)?,
                    created_at: row.get(4)?,
                    revoked_at: row.get(5)?,
                    last_used_at: row.get(6)?,
                })
            },
            Batch::AdminTokens,
            send,
        )
        .context("reading the admin tokens")?;
        export_table(
            &tx,
            "SELECT id, at, actor, action, key_id, details FROM audit ORDER BY id",
            |row| {
                Ok(AuditRow {
                    id: row.get(0)?,
                    at: row.get(1)?,
                    actor: row.get(2)?,
                    action: row.get(3)?,
                    key_id: row.get(4)?,
                    details: row.get(5)?,
                })
            },
            Batch::Audit,
            send,
        )
        .context("reading the audit log")?;
        export_table(&tx, USAGE, usage_row, Batch::Usage, send).context("reading the usage log")?;
        export_table(
            &tx,
            "SELECT key_id, day, provider, model, requests, input_tokens, output_tokens, \
             cache_read_tokens, cache_write_tokens, cost_nanos, estimated_requests, \
             unpriced_requests FROM usage_daily",
            |row| {
                let mut sums = [0i64; 8];
                for (i, sum) in sums.iter_mut().enumerate() {
                    *sum = row.get(4 + i)?;
                }
                Ok(DailyRow {
                    key_id: row.get(0)?,
                    day: row.get(1)?,
                    provider: row.get(2)?,
                    model: row.get(3)?,
                    sums,
                })
            },
            Batch::Daily,
            send,
        )
        .context("reading the daily rollup")?;
        let tally = tally(&tx).context("counting the SQLite store")?;
        tx.commit()?;
        Ok(tally)
    }
}

const KEYS: &str = "SELECT id, hash, prefix, name, allowed_providers, allowed_models, \
    allowed_ips, rate_limit_rpm, spend_limit_nanos, spend_reset, expires_at, created_at, \
    updated_at, revoked_at, spend_total_nanos, request_count, last_used_at, version FROM keys \
    ORDER BY id";

const USAGE: &str = "SELECT rowid, key_id, at_ms, provider, model, status, input_tokens, \
    output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, latency_ms, source, \
    over_allowed FROM usage ORDER BY rowid";

/// Streams `sql`'s rows through `read` into batches of [`BATCH_ROWS`], each handed to `send`
/// wrapped by `wrap`.
fn export_table<T>(
    conn: &Connection,
    sql: &str,
    read: impl Fn(&Row<'_>) -> anyhow::Result<T>,
    wrap: fn(Vec<T>) -> Batch,
    send: &mut dyn FnMut(Batch) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut statement = conn.prepare(sql)?;
    let mut rows = statement.query([])?;
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    while let Some(row) = rows.next()? {
        batch.push(read(row)?);
        if batch.len() == BATCH_ROWS {
            send(wrap(std::mem::replace(
                &mut batch,
                Vec::with_capacity(BATCH_ROWS),
            )))?;
        }
    }
    if !batch.is_empty() {
        send(wrap(batch))?;
    }
    Ok(())
}

fn key_row(row: &Row<'_>) -> anyhow::Result<KeyRow> {
    let id: String = row.get(0)?;
    let created_at: String = row.get(11)?;
    let spend_total_nanos: i64 = row.get(14)?;
    let request_count: i64 = row.get(15)?;
    let last_used_at: Option<String> = row.get(16)?;
    let millis = |text: &str, column: &str| {
        text.parse::<Timestamp>()
            .map(|t| t.as_millisecond())
            .with_context(|| format!("key {id} has a malformed column: {column}"))
    };
    let last_used_ms = last_used_at
        .as_deref()
        .map(|t| millis(t, "last_used_at"))
        .transpose()?;
    let used = spend_total_nanos != 0 || request_count != 0 || last_used_ms.is_some();
    let totals = if used {
        Some(KeyTotals {
            spend_total_nanos,
            request_count,
            // A gatewayd writes the last use with every count; a row without one (edited
            // by hand) gets the key's creation, the earliest it could have been used.
            last_used_ms: match last_used_ms {
                Some(ms) => ms,
                None => millis(&created_at, "created_at")?,
            },
        })
    } else {
        None
    };
    Ok(KeyRow {
        hash: row.get(1)?,
        prefix: row.get(2)?,
        name: row.get(3)?,
        allowed_providers: row.get(4)?,
        allowed_models: row.get(5)?,
        allowed_ips: row.get(6)?,
        rate_limit_rpm: row.get(7)?,
        spend_limit_nanos: row.get(8)?,
        spend_reset: row.get(9)?,
        expires_at: row.get(10)?,
        created_at,
        updated_at: row.get(12)?,
        revoked_at: row.get(13)?,
        version: row.get(17)?,
        totals,
        id,
    })
}

fn usage_row(row: &Row<'_>) -> anyhow::Result<UsageRow> {
    let rowid: i64 = row.get(0)?;
    Ok(UsageRow {
        key_id: row.get(1)?,
        at_ms: row.get(2)?,
        provider: row.get(3)?,
        model: row.get(4)?,
        status: i32::try_from(row.get::<_, i64>(5)?)
            .with_context(|| format!("usage row {rowid} has a malformed status"))?,
        input_tokens: row.get(6)?,
        output_tokens: row.get(7)?,
        cache_read_tokens: row.get(8)?,
        cache_write_tokens: row.get(9)?,
        cost_nanos: row.get(10)?,
        latency_ms: row.get(11)?,
        source: row.get(12)?,
        over_allowed: row.get::<_, i64>(13)? != 0,
        rowid,
    })
}

/// The store counted with queries of its own, not from the batches: what the copy is
/// checked against. Sums are taken in Rust, wide, so no total can overflow.
fn tally(conn: &Connection) -> anyhow::Result<Tally> {
    let count = |table: &str| -> anyhow::Result<u64> {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let mut tally = Tally {
        keys: count("keys")?,
        rotations: count("key_rotations")?,
        admin_tokens: count("admin_tokens")?,
        audit_rows: count("audit")?,
        audit_last_id: conn.query_row("SELECT COALESCE(max(id), 0) FROM audit", [], |row| {
            row.get(0)
        })?,
        usage_rows: count("usage")?,
        daily_rows: count("usage_daily")?,
        per_key: BTreeMap::new(),
    };
    let per_key = &mut tally.per_key;
    for_each(
        conn,
        "SELECT key_id, cost_nanos FROM usage",
        |key_id, row| {
            let key = per_key.entry(key_id).or_default();
            key.usage_rows += 1;
            key.usage_cost += i128::from(row.get::<_, i64>(1)?);
            Ok(())
        },
    )?;
    for_each(
        conn,
        "SELECT key_id, requests, cost_nanos FROM usage_daily",
        |key_id, row| {
            let key = per_key.entry(key_id).or_default();
            key.daily_requests += i128::from(row.get::<_, i64>(1)?);
            key.daily_cost += i128::from(row.get::<_, i64>(2)?);
            Ok(())
        },
    )?;
    for_each(
        conn,
        "SELECT id, spend_total_nanos, request_count FROM keys",
        |key_id, row| {
            let key: &mut KeyTally = per_key.entry(key_id).or_default();
            key.spend_total = row.get(1)?;
            key.request_count = row.get(2)?;
            Ok(())
        },
    )?;
    Ok(tally)
}

/// Runs `sql` (whose first column is a key id) and hands each row to `each`.
fn for_each(
    conn: &Connection,
    sql: &str,
    mut each: impl FnMut(String, &Row<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut statement = conn.prepare(sql)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        each(row.get(0)?, row)?;
    }
    Ok(())
}
