//! `gatewayd migrate-store` (SPEC §9, issue #16): one server's SQLite store copied into an
//! empty PostgreSQL store, so that an install grows into a cluster without re-issuing a key.
//!
//! What is copied: keys (hashes and prefixes, never secrets: the store has none; every
//! column, revoked and expired keys too), rotations, admin tokens (hashes), the audit log
//! (every row with its id, so its order, actors and the API's page cursors stay), the usage
//! log, the per-day rollup the reports read, and each key's lifetime spend, request count and
//! last use. Values are copied as SQLite stores them (PostgreSQL's schema stores them the same
//! way, see its first migration), so nothing is re-formatted on the way.
//!
//! Not copied, on purpose: a key's spend in its current period and saved rate windows (part
//! 1 of cluster mode refuses keys with limits; part 2 rebuilds periods from the rollup and
//! keeps windows in Redis), replica heartbeats (each replica writes its own) and the holds
//! journal, which is charged first, as start-up does ([`Store::charge_journaled_holds`]):
//! the requests a crash left in flight are billed, never lost.
//!
//! **Usage record ids.** PostgreSQL keys a usage row by (writer instance, sequence). Copied
//! rows take instance 0 and their SQLite rowid as sequence: unique among themselves (rowids
//! are), and never a live writer's, because a writer draws a random non-zero instance
//! (`writer::new_instance` redraws a 0; 0 is also `RecordId::UNASSIGNED`).
//!
//! **All or nothing.** The copy is one PostgreSQL transaction: the target is locked against
//! writers and checked empty first, then filled in batches streamed from one SQLite read
//! transaction on a blocking thread (a bounded channel between the two: 100k keys and
//! millions of usage rows never sit in memory at once), then counted again on both sides
//! (keys, rotations, admin tokens, audit rows, usage rows, rollup rows, and per key: usage
//! rows and their cost, the rollup's requests and cost, the lifetime totals). Only when every
//! count agrees is it committed; any failure or difference rolls it all back.
//!
//! The copy also appends every copied key, rotation and admin token to the change feed and
//! notifies it, in the same transaction: a replica already running on the empty store loads
//! them as it would any other change.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gateway_shared::Nanodollars;

use super::{CrashCharges, Store, postgres, sqlite};

/// Rows per batch, on both sides: one statement on PostgreSQL per this many rows.
pub const BATCH_ROWS: usize = 5_000;

/// What the command needs: where the single server's data is, and the target store.
pub struct MigrateOptions<'a> {
    /// The stopped server's data directory (its `gateway.db` and `gatewayd.lock`).
    pub data_dir: PathBuf,
    /// `postgres://…` with its password: never printed (errors name host, port, database).
    pub postgres_url: &'a str,
}

/// What a finished copy did (its `Display` is the line the command prints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub keys: u64,
    pub rotations: u64,
    pub admin_tokens: u64,
    pub audit_rows: u64,
    pub usage_rows: u64,
    /// The cost of every usage row copied (saturating).
    pub usage_cost: Nanodollars,
    /// The requests a crash had left in flight, charged before copying.
    pub charged: CrashCharges,
}

/// One key's row, its columns as SQLite stores them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub hash: String,
    pub prefix: String,
    pub name: String,
    pub allowed_providers: String,
    pub allowed_models: String,
    pub allowed_ips: String,
    pub rate_limit_rpm: Option<i64>,
    pub spend_limit_nanos: Option<i64>,
    pub spend_reset: Option<String>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub revoked_at: Option<String>,
    /// The key's version (its edits so far): kept, so the copy reads as the same history.
    pub version: i64,
    /// PostgreSQL's `key_spend` row: `None` for a key never used.
    pub totals: Option<KeyTotals>,
}

/// A key's lifetime totals, as the usage writer persisted them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyTotals {
    pub spend_total_nanos: i64,
    pub request_count: i64,
    /// Unix milliseconds, UTC.
    pub last_used_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminTokenRow {
    pub id: String,
    pub hash: String,
    pub prefix: String,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub key_id: Option<String>,
    pub details: String,
}

/// One usage log row; `rowid` becomes its sequence under instance 0 (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub rowid: i64,
    pub key_id: String,
    pub at_ms: i64,
    pub provider: String,
    pub model: String,
    pub status: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_nanos: i64,
    pub latency_ms: i64,
    pub source: String,
    pub over_allowed: bool,
}

/// One rollup row: key, UTC day, provider, model, and its sums in `ROLLUP_SUMS` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyRow {
    pub key_id: String,
    pub day: String,
    pub provider: String,
    pub model: String,
    pub sums: [i64; 8],
}

/// A batch of rows of one table, in the order the source sends them.
#[derive(Clone, Debug)]
pub enum Batch {
    Keys(Vec<KeyRow>),
    /// (successor id, predecessor id).
    Rotations(Vec<(String, String)>),
    AdminTokens(Vec<AdminTokenRow>),
    Audit(Vec<AuditRow>),
    Usage(Vec<UsageRow>),
    Daily(Vec<DailyRow>),
}

/// What one side holds, counted independently of the copy (each side's own queries), to be
/// compared before committing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub keys: u64,
    pub rotations: u64,
    pub admin_tokens: u64,
    pub audit_rows: u64,
    /// The highest audit id (0 with none): ids are copied, not renumbered.
    pub audit_last_id: i64,
    pub usage_rows: u64,
    pub daily_rows: u64,
    /// Per key id (of any table that names one).
    pub per_key: BTreeMap<String, KeyTally>,
}

/// One key's usage and totals as one side counts them. Sums are wide: they never overflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyTally {
    pub usage_rows: u64,
    pub usage_cost: i128,
    pub daily_requests: i128,
    pub daily_cost: i128,
    pub spend_total: i64,
    pub request_count: i64,
}

impl Tally {
    /// The total cost of the usage rows.
    pub fn usage_cost(&self) -> i128 {
        self.per_key.values().map(|k| k.usage_cost).sum()
    }
}

/// Takes the data directory's lock, opens its database, connects to the target, charges the
/// holds a crash left and copies (see the module docs). The lock is held to the end: a
/// gatewayd started meanwhile refuses to start, as one running refuses this.
pub async fn run(options: &MigrateOptions<'_>) -> anyhow::Result<Summary> {
    let database = options.data_dir.join("gateway.db");
    // Opening would create an empty database: a wrong directory must say so instead.
    anyhow::ensure!(
        database.is_file(),
        "there is no gatewayd database at {} (is --data-dir, or the config's data_dir, the \
         single server's?)",
        database.display()
    );
    let _lock = lock_data_dir(&options.data_dir)?;
    let source = sqlite::Store::open(&database)?;
    let target = postgres::Store::connect(options.postgres_url).await?;
    let charged = Store::Sqlite(source.clone())
        .charge_journaled_holds()
        .await
        .context("charging the requests in flight when gatewayd last stopped")?;
    let mut summary = copy(&source, &target).await?;
    summary.charged = charged;
    Ok(summary)
}

/// Copies `source` into `target`, which must be empty, in one transaction, checked before it
/// commits (see the module docs). The journal of open holds must be empty (charged).
pub async fn copy(source: &sqlite::Store, target: &postgres::Store) -> anyhow::Result<Summary> {
    let mut connection = target.import_connection().await?;
    let mut import = connection.begin().await?;
    // Two batches in flight at most: reading SQLite overlaps writing PostgreSQL, and memory
    // stays bounded whatever the store's size.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Batch>(2);
    let exporter = source.clone();
    let export = tokio::task::spawn_blocking(move || {
        exporter.export(&mut |batch| {
            sender
                .blocking_send(batch)
                .map_err(|_| anyhow::anyhow!("the PostgreSQL side of the copy stopped"))
        })
    });
    let mut written = Ok(());
    while let Some(batch) = receiver.recv().await {
        written = import.write(&batch).await;
        if written.is_err() {
            break;
        }
    }
    // Closing the channel stops the export at its next batch if the import failed.
    drop(receiver);
    let exported = export.await.context("the SQLite export panicked")?;
    written?;
    let source_tally = exported.context("reading the SQLite store")?;
    import.finish().await?;
    let target_tally = import.tally().await?;
    compare(&source_tally, &target_tally)?;
    import.commit().await?;
    Ok(Summary {
        keys: source_tally.keys,
        rotations: source_tally.rotations,
        admin_tokens: source_tally.admin_tokens,
        audit_rows: source_tally.audit_rows,
        usage_rows: source_tally.usage_rows,
        usage_cost: Nanodollars(
            u64::try_from(source_tally.usage_cost().max(0)).unwrap_or(u64::MAX),
        ),
        charged: CrashCharges::default(),
    })
}

/// Whether the target holds what the source held; the differences (the first few) if not.
pub fn compare(source: &Tally, target: &Tally) -> anyhow::Result<()> {
    const SHOWN: usize = 5;
    let mut differences = Vec::new();
    let counts = [
        ("keys", source.keys, target.keys),
        ("rotations", source.rotations, target.rotations),
        ("admin tokens", source.admin_tokens, target.admin_tokens),
        ("audit rows", source.audit_rows, target.audit_rows),
        ("usage rows", source.usage_rows, target.usage_rows),
        ("daily rollup rows", source.daily_rows, target.daily_rows),
    ];
    for (what, from, to) in counts {
        if from != to {
            differences.push(format!("{what}: {from} in SQLite, {to} in PostgreSQL"));
        }
    }
    if source.audit_last_id != target.audit_last_id {
        differences.push(format!(
            "last audit id: {} in SQLite, {} in PostgreSQL",
            source.audit_last_id, target.audit_last_id
        ));
    }
    let ids: BTreeSet<&String> = source.per_key.keys().chain(target.per_key.keys()).collect();
    for id in ids {
        let from = source.per_key.get(id).copied().unwrap_or_default();
        let to = target.per_key.get(id).copied().unwrap_or_default();
        if from != to {
            differences.push(format!("key {id}: {}", key_differences(&from, &to)));
        }
    }
    if differences.is_empty() {
        return Ok(());
    }
    let more = differences.len().saturating_sub(SHOWN);
    differences.truncate(SHOWN);
    let mut message = format!(
        "the copy does not match its source, so nothing was committed: {}",
        differences.join("; ")
    );
    if more > 0 {
        message.push_str(&format!(" (and {more} more)"));
    }
    anyhow::bail!(message)
}

/// What differs between one key's two tallies, field by field.
fn key_differences(from: &KeyTally, to: &KeyTally) -> String {
    let fields = [
        (
            "usage rows",
            i128::from(from.usage_rows),
            i128::from(to.usage_rows),
        ),
        ("usage cost (nanodollars)", from.usage_cost, to.usage_cost),
        ("rollup requests", from.daily_requests, to.daily_requests),
        ("rollup cost (nanodollars)", from.daily_cost, to.daily_cost),
        (
            "lifetime requests",
            i128::from(from.request_count),
            i128::from(to.request_count),
        ),
        (
            "lifetime spend (nanodollars)",
            i128::from(from.spend_total),
            i128::from(to.spend_total),
        ),
    ];
    fields
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(what, a, b)| format!("{what} {a} in SQLite, {b} in PostgreSQL"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Summary {
    /// `copied 12 keys, 3 rotations, 2 admin tokens, 40 audit rows, 1,234 usage records
    /// ($12.34)`, after what was charged first, if anything was.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.charged.requests > 0 {
            write!(
                f,
                "charged {} left in flight by a crash ({}), then ",
                counted(self.charged.requests as u64, "request"),
                self.charged.cost
            )?;
        }
        write!(
            f,
            "copied {}, {}, {}, {}, {} ({})",
            counted(self.keys, "key"),
            counted(self.rotations, "rotation"),
            counted(self.admin_tokens, "admin token"),
            counted(self.audit_rows, "audit row"),
            counted(self.usage_rows, "usage record"),
            self.usage_cost
        )
    }
}

/// `1 key`, `1,234 keys`: `n` with thousands separators and `what`, plural unless one.
pub fn counted(n: u64, what: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {what}{s}", thousands(n))
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The lock a running gatewayd holds on its data directory (`crate::lock_data_dir`):
/// copying a store that a daemon is still writing would miss what it writes after the read.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    crate::lock_data_dir(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "a gatewayd is running on the data directory {}: stop it first (migrate-store \
             copies a stopped server's data)",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests;
