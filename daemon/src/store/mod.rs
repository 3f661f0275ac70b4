//! The durable store: keys, admin tokens, rotations, audit, usage and its rollup, replica
//! heartbeats. One server keeps them in SQLite (`sqlite`); a cluster shares them in
//! PostgreSQL (`postgres`, SPEC §9).
//!
//! [`Store`] is the seam between the two: an enum, not a trait object, so each operation is
//! one `match` with its two implementations side by side, and no future is boxed (see
//! `docs/cluster-design.md`, "The two seams"). Every operation keeps one signature for both
//! backends; the few that only mean something in a cluster (the change feed) answer
//! "nothing" on SQLite, and the few that only mean something on one server (rate windows
//! saved at shutdown, the holds journal charged at start-up) answer "nothing" on
//! PostgreSQL: `postgres`'s module docs say why each is safe.
//!
//! **Invariant:** no SQL outside this module, and nothing on the proxy's request path calls
//! it (usage goes through the usage writer's channel).

mod audit;
pub mod cluster_id;
mod delivery;
pub mod migrate;
pub mod postgres;
mod retry;
pub mod spool;
pub mod sqlite;
pub mod usage;
pub mod writer;

#[cfg(test)]
pub(crate) mod tests;

use gateway_shared::KeyHash;
use std::path::Path;

use gateway_shared::Nanodollars;
use gateway_shared::api::AuditEntry;
use jiff::Timestamp;

pub use audit::{AuditQuery, AuditRecord};
pub use postgres::{Change, ChangeKind};

use crate::admin_tokens::TokenRecord;
use crate::keys::record::KeyRecord;
use crate::spend::holds::{HoldId, JournaledHold};
use crate::spend::ledger::{CountedSpend, SpendState};

/// A conditional write of a key found it changed since it was read: the key's version in the
/// store is no longer the one the write was built from (another replica committed a change
/// in between). Nothing was written: the whole transaction, audit rows included, was rolled
/// back. The caller reloads the key (`Store::load_key`) and decides again from the fresh row.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("key {key_id} changed since it was read (read at version {read}, now at {stored})")]
pub struct Conflict {
    pub key_id: String,
    /// The version the write was built from.
    pub read: u64,
    /// The version the store holds.
    pub stored: u64,
}

/// What a conditional key write did: committed, with the key's new version, or refused.
pub type Versioned = Result<u64, Conflict>;

/// A rate window as saved at shutdown: key id, when (Unix ms), runs of (age ms, count).
pub type SavedWindow = (String, i64, Vec<(u64, u32)>);

/// What the start-up charged for the requests a crash left in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashCharges {
    pub requests: usize,
    pub cost: Nanodollars,
}

/// What a usage batch changes in the holds journal, beside its rows.
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalChanges<'a> {
    /// The usage writer whose holds these are (its [`usage::RecordId::instance`]): hold ids
    /// are unique within one writer only.
    pub instance: u64,
    /// Holds to journal: open at this batch and at the one before.
    pub opened: &'a [JournaledHold],
    /// Journaled holds whose usage rows are in this batch.
    pub settled: &'a [HoldId],
}

/// One replica's heartbeat (`gwctl cluster status`). Times are kept to the millisecond.
/// A key's lifetime totals in a shared store: what its views show in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyTotals {
    pub spend_total: gateway_shared::Nanodollars,
    pub request_count: u64,
    pub last_used_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub id: String,
    pub host: String,
    pub version: String,
    pub started_at: Timestamp,
    pub last_seen: Timestamp,
    /// Requests this replica served since it started.
    pub requests: u64,
}

impl ReplicaRecord {
    /// A row as both backends store it: times in Unix milliseconds, the count an integer.
    fn from_columns(
        id: String,
        host: String,
        version: String,
        started_at_ms: i64,
        last_seen_ms: i64,
        requests: i64,
    ) -> anyhow::Result<ReplicaRecord> {
        let time = |ms: i64| {
            Timestamp::from_millisecond(ms)
                .map_err(|e| anyhow::anyhow!("replica {id} has a malformed time: {e}"))
        };
        Ok(ReplicaRecord {
            started_at: time(started_at_ms)?,
            last_seen: time(last_seen_ms)?,
            requests: u64::try_from(requests).unwrap_or(0),
            id,
            host,
            version,
        })
    }
}

/// The durable store, on one of its two backends (see the module docs). Cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        sqlite::Store::open(path).map(Store::Sqlite)
    }

    /// Connects to the PostgreSQL at `url` (`postgres://…`, TLS per its `sslmode`) and
    /// migrates it; an error if it cannot be reached (saying why, never with the password).
    /// Must be called inside a tokio runtime, which the store then uses for good.
    pub async fn connect_postgres(url: &str) -> anyhow::Result<Store> {
        postgres::Store::connect(url).await.map(Store::Postgres)
    }

    /// `"sqlite"` or `"postgres"`: for logs, metrics and `/healthz`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn count_keys(&self) -> anyhow::Result<usize> {
        match self {
            Store::Sqlite(s) => s.count_keys().await,
            Store::Postgres(s) => s.count_keys().await,
        }
    }

    /// Every key, handed to `each` as its row is read (in no particular order), so that
    /// start-up never holds all the rows at once.
    pub async fn load_keys(
        &self,
        each: impl FnMut(KeyRecord) + Send + 'static,
    ) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(s) => s.load_keys(each).await,
            Store::Postgres(s) => s.load_keys(each).await,
        }
    }

    /// The lifetime totals of `key_ids` that every replica's usage has added to, when the
    /// store is shared (PostgreSQL); `None` on one server, whose memory counts every request
    /// itself. A key never used is absent from the map.
    pub async fn shared_totals(
        &self,
        key_ids: Vec<String>,
    ) -> anyhow::Result<Option<std::collections::HashMap<String, KeyTotals>>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.key_totals(key_ids).await.map(Some),
        }
    }

    /// The key `id`, if there is one (a replica reloads a changed key by id).
    pub async fn load_key(&self, id: String) -> anyhow::Result<Option<KeyRecord>> {
        match self {
            Store::Sqlite(s) => s.load_key(id).await,
            Store::Postgres(s) => s.load_key(id).await,
        }
    }

    /// The key whose secret hashes to `hash`, for a cluster replica that does not know it
    /// yet (created on another replica a moment ago). One server's memory holds every key:
    /// there, nothing is looked up.
    pub async fn load_key_by_hash(&self, hash: KeyHash) -> anyhow::Result<Option<KeyRecord>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.load_key_by_hash(hash).await,
        }
    }

    /// Saves the rate windows at shutdown (replacing any saved before). PostgreSQL: nothing
    /// (see `postgres`).
    pub async fn save_rate_windows(
        &self,
        saved_at_ms: i64,
        windows: Vec<(String, Vec<(u64, u32)>)>,
    ) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(s) => s.save_rate_windows(saved_at_ms, windows).await,
            Store::Postgres(_) => Ok(()),
        }
    }

    /// The rate windows the last shutdown saved, taken out of the database.
    pub async fn take_rate_windows(&self) -> anyhow::Result<Vec<SavedWindow>> {
        match self {
            Store::Sqlite(s) => s.take_rate_windows().await,
            Store::Postgres(_) => Ok(Vec::new()),
        }
    }

    /// Every rotation as (successor id, predecessor id).
    pub async fn load_rotations(&self) -> anyhow::Result<Vec<(String, String)>> {
        match self {
            Store::Sqlite(s) => s.load_rotations().await,
            Store::Postgres(s) => s.load_rotations().await,
        }
    }

    /// The key `successor_id` was rotated from, if it was.
    pub async fn predecessor_of(&self, successor_id: String) -> anyhow::Result<Option<String>> {
        match self {
            Store::Sqlite(s) => s.predecessor_of(successor_id).await,
            Store::Postgres(s) => s.predecessor_of(successor_id).await,
        }
    }

    /// Inserts a new key (at its record's version, [`crate::keys::record::FIRST_VERSION`] for
    /// a key just created) and its audit row in one transaction.
    pub async fn insert_key(&self, record: KeyRecord, audit: AuditRecord) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(s) => s.insert_key(record, audit).await,
            Store::Postgres(s) => s.insert_key(record, audit).await,
        }
    }

    /// Replaces a key's settings and appends its audit row in one transaction, if the key is
    /// still at `record.version` (the version the change was built from); answers its new
    /// version, or a [`Conflict`] with nothing written. A key that is not in the store is an
    /// error.
    pub async fn update_key(
        &self,
        record: KeyRecord,
        audit: AuditRecord,
    ) -> anyhow::Result<Versioned> {
        match self {
            Store::Sqlite(s) => s.update_key(record, audit).await,
            Store::Postgres(s) => s.update_key(record, audit).await,
        }
    }

    /// A rotation: the old key's row (now with its revocation instant) and the new key, with
    /// the audit rows, in one transaction. The old key's write is conditional as in
    /// [`Store::update_key`]: answers the old key's new version, or a [`Conflict`] with
    /// nothing written (no new key either).
    pub async fn rotate_key(
        &self,
        old: KeyRecord,
        new: KeyRecord,
        audits: Vec<AuditRecord>,
    ) -> anyhow::Result<Versioned> {
        match self {
            Store::Sqlite(s) => s.rotate_key(old, new, audits).await,
            Store::Postgres(s) => s.rotate_key(old, new, audits).await,
        }
    }

    /// Appends usage rows (and their daily rollup), persists each key's latest spend and
    /// applies `journal` to the holds journal, in one transaction. Blocking: only the usage
    /// writer's own thread calls it (on PostgreSQL, a thread of a tokio runtime gets an
    /// error instead of a deadlock).
    pub fn write_usage(
        &self,
        records: &[usage::UsageRecord],
        journal: JournalChanges<'_>,
        yielding: bool,
    ) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(s) => s.write_usage(records, journal, yielding),
            Store::Postgres(s) => s.write_usage_blocking(records, journal),
        }
    }

    /// Charges the holds a crash left in the journal as estimated usage (SQLite; see
    /// `postgres` for a cluster). Start-up calls it before loading the keys.
    pub async fn charge_journaled_holds(&self) -> anyhow::Result<CrashCharges> {
        match self {
            Store::Sqlite(s) => s.charge_journaled_holds().await,
            Store::Postgres(_) => Ok(CrashCharges::default()),
        }
    }

    /// What the database has counted of `key_id`'s spend: on the UTC days from `from` on (the
    /// rollup) and in all, read in one snapshot.
    pub async fn counted_spend(
        &self,
        key_id: String,
        from: jiff::civil::Date,
    ) -> anyhow::Result<CountedSpend> {
        match self {
            Store::Sqlite(s) => s.counted_spend(key_id, from).await,
            Store::Postgres(s) => s.counted_spend(key_id, from).await,
        }
    }

    /// What `key_ids` (a key, or a rotated pair: they share one ledger) spent since
    /// `since`, the start of a spend period (`None`: in all, the lifetime totals), as the
    /// store has counted it: the cluster engine's ledger rebuilt after Redis lost it
    /// (`NeedRebuild` → `seed`). Periods start at a UTC midnight and the rollup is per UTC
    /// day, so the sum is of the days from `since`'s UTC date on; a `since` that is not a
    /// midnight counts its whole day (never less than was spent). Saturating.
    pub async fn period_spend(
        &self,
        key_ids: &[String],
        since: Option<Timestamp>,
    ) -> anyhow::Result<Nanodollars> {
        let from = since.map(|t| jiff::tz::TimeZone::UTC.to_datetime(t).date());
        match self {
            Store::Sqlite(s) => s.period_spend(key_ids.to_vec(), from).await,
            Store::Postgres(s) => s.period_spend(key_ids.to_vec(), from).await,
        }
    }

    /// Persists a key's spend outside a usage batch (a restarted period). PostgreSQL derives
    /// spend from the usage rows, so there is nothing to persist (see `postgres`).
    pub async fn persist_spend(&self, key_id: String, state: SpendState) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(s) => s.persist_spend(key_id, state).await,
            Store::Postgres(_) => Ok(()),
        }
    }

    pub async fn usage_report(
        &self,
        key_id: String,
        from: jiff::civil::Date,
        to: jiff::civil::Date,
    ) -> anyhow::Result<gateway_shared::api::UsageReport> {
        match self {
            Store::Sqlite(s) => s.usage_report(key_id, from, to).await,
            Store::Postgres(s) => s.usage_report(key_id, from, to).await,
        }
    }

    pub async fn load_admin_tokens(&self) -> anyhow::Result<Vec<TokenRecord>> {
        match self {
            Store::Sqlite(s) => s.load_admin_tokens().await,
            Store::Postgres(s) => s.load_admin_tokens().await,
        }
    }

    /// The admin token `id`, if there is one.
    pub async fn load_admin_token(&self, id: String) -> anyhow::Result<Option<TokenRecord>> {
        match self {
            Store::Sqlite(s) => s.load_admin_token(id).await,
            Store::Postgres(s) => s.load_admin_token(id).await,
        }
    }

    /// Writes an admin token (and, for a change an operator made, its audit row). A token
    /// already stored is merged, never overwritten (`TokenRecord::merge_lifecycle`): a
    /// revocation is never undone and the last use only moves forward, so a write built from
    /// a copy read before another replica's revocation cannot bring the token back.
    pub async fn save_admin_token(
        &self,
        token: TokenRecord,
        audit: Option<AuditRecord>,
    ) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(s) => s.save_admin_token(token, audit).await,
            Store::Postgres(s) => s.save_admin_token(token, audit).await,
        }
    }

    pub async fn list_audit(&self, query: AuditQuery) -> anyhow::Result<Vec<AuditEntry>> {
        match self {
            Store::Sqlite(s) => s.list_audit(query).await,
            Store::Postgres(s) => s.list_audit(query).await,
        }
    }

    /// The changes committed after `seq`, oldest first (PostgreSQL; one server has no other
    /// replica to tell, so SQLite has none).
    pub async fn changes_since(&self, seq: i64) -> anyhow::Result<Vec<Change>> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(s) => s.changes_since(seq).await,
        }
    }

    /// The shared store's cluster id (`cluster_id`), made when its schema was created;
    /// `None` on one server (SQLite).
    pub async fn cluster_id(&self) -> anyhow::Result<Option<String>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.cluster_id().await.map(Some),
        }
    }

    /// The newest change's sequence (0 when there is none): where a replica that just loaded
    /// everything starts listening from. Read it before loading, so that a change committed
    /// during the load is delivered again rather than missed.
    pub async fn max_change_seq(&self) -> anyhow::Result<i64> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(s) => s.max_change_seq().await,
        }
    }

    /// Records a replica's heartbeat (insert or replace its row).
    pub async fn heartbeat(&self, replica: ReplicaRecord) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(s) => s.heartbeat(replica).await,
            Store::Postgres(s) => s.heartbeat(replica).await,
        }
    }

    /// The replicas whose last heartbeat is at or after `seen_since`, by id.
    pub async fn list_replicas(&self, seen_since: Timestamp) -> anyhow::Result<Vec<ReplicaRecord>> {
        match self {
            Store::Sqlite(s) => s.list_replicas(seen_since).await,
            Store::Postgres(s) => s.list_replicas(seen_since).await,
        }
    }
}

/// Whether `err` says the database cannot be reached (refused or lost connection, a pool
/// that found no connection in time, a server shutting down), as opposed to the database
/// refusing the operation (a constraint, a malformed row). The management API answers the
/// first 503 `store_unavailable`; the usage writer keeps (or spools) a batch that failed so.
/// SQLite is a local file: it is never "unavailable" in this sense.
pub fn is_unavailable(err: &anyhow::Error) -> bool {
    postgres::is_unavailable(err)
}
