//! The PostgreSQL backend (cluster mode, SPEC §9): every replica's durable store, shared.
//!
//! A deadpool of tokio-postgres connections (TLS and timeouts in `connect`), migrated under
//! an advisory lock at connect (`migrations`). The operations are SQLite's, with what sharing
//! changes:
//!
//! - **Key and admin-token changes** also append to `changes` and `NOTIFY gatewayd_changes`
//!   in their transaction (`changes`), and `listen` follows them on a connection of its own.
//!   A write of an existing key is conditional on the version it was read at (`keys::update`,
//!   `store::Conflict`): replicas each edit from their own copy, and the one whose copy is
//!   stale is refused rather than overwriting the other's change. Admin tokens are merged
//!   instead (`keys::upsert_admin_token`): their only changes are a revocation and a last use.
//! - **Usage** rows carry the record id the usage writer assigned; a batch is inserted with
//!   `ON CONFLICT DO NOTHING` and the rollups are added to only from the rows actually
//!   inserted, in the same transaction, so a batch delivered twice counts once (`usage`).
//! - **Spend** is derived from the usage rows, never written as an absolute per-key state:
//!   replicas would overwrite each other's. A key loads with its cluster-wide lifetime spend,
//!   requests and last use (`key_spend`), and its period spend starts at zero: in part 1 a
//!   key with a spend or rate limit is refused in cluster mode (`limits_unavailable`), and
//!   part 2's ledgers rebuild a period from the rollup (`counted_spend`). So
//!   `persist_spend` writes nothing here.
//! - **Rate windows** saved at shutdown: none. In part 1 rate-limited keys are refused in
//!   cluster mode, and part 2 keeps windows in Redis, shared, which outlive a replica.
//! - **The holds journal**: each writer journals its open holds under its instance id, and a
//!   request's usage row deletes its hold in the same transaction, as on SQLite, so a crash
//!   loses none. But a replica cannot tell at start-up which other instances are dead
//!   (charging a live replica's hold would bill its request twice), so nothing charges the
//!   journal here: the rows wait for part 2's lease sweeper (SPEC §9.4: charged when the
//!   lease expires). Never dropped, never charged twice.
//! - **Replica heartbeats**: one row per replica, upserted.
//!
//! Times are stored as SQLite stores them (see the first migration), so a record reads back
//! exactly as written on every replica.
//!
//! The usage writer is a std thread: [`Store::write_usage_blocking`] runs the async write on
//! the runtime whose handle the store took at connect.

mod changes;
mod connect;
mod import;
mod keys;
mod listen;
mod migrations;
mod usage;

#[cfg(test)]
pub(crate) mod test_database;
#[cfg(test)]
mod tests;

use gateway_shared::KeyHash;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Object, Pool, PoolError};
use gateway_shared::api::AuditEntry;
use jiff::Timestamp;

pub use changes::{Change, ChangeKind};
pub use import::{Import, ImportConnection};
pub use listen::{Event, listen};

use super::usage::{UsageRecord, sql_count};
use super::{AuditQuery, AuditRecord, JournalChanges, KeyTotals, ReplicaRecord, Versioned};
use crate::admin_tokens::TokenRecord;
use crate::keys::record::KeyRecord;
use crate::spend::ledger::CountedSpend;

/// The longest a usage batch may take, pool wait and commit included, before the writer
/// counts it failed (and retries it: the record ids make that safe).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// The runtime the pool's connections live on, for the usage writer's thread.
    runtime: tokio::runtime::Handle,
    /// `host:port/database`: for messages, never the password.
    described: Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("postgres::Store")
            .field("server", &self.described)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects (see `connect` for TLS), migrates, and keeps the current runtime's handle.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        let target = connect::parse(url)?;
        let pool = connect::pool(&target)?;
        let described: Arc<str> = target.described.into();
        let mut client = pool.get().await.map_err(|err| {
            anyhow::Error::new(err).context(format!("PostgreSQL at {described} is unreachable"))
        })?;
        migrations::migrate(&mut client)
            .await
            .with_context(|| format!("migrating PostgreSQL at {described}"))?;
        drop(client);
        Ok(Store {
            pool,
            runtime: tokio::runtime::Handle::current(),
            described,
        })
    }

    /// A pooled connection; failing to get one is the store being unavailable.
    async fn client(&self) -> anyhow::Result<Object> {
        self.pool.get().await.map_err(|err| {
            anyhow::Error::new(err)
                .context(format!("PostgreSQL at {} is unreachable", self.described))
        })
    }

    pub async fn count_keys(&self) -> anyhow::Result<usize> {
        let client = self.client().await?;
        let count: i64 = client
            .query_one("SELECT count(*) FROM keys", &[])
            .await?
            .get(0);
        Ok(usize::try_from(count).unwrap_or(0))
    }

    pub async fn load_keys(
        &self,
        each: impl FnMut(KeyRecord) + Send + 'static,
    ) -> anyhow::Result<()> {
        let client = self.client().await?;
        keys::load_all(&client, each).await
    }

    pub async fn load_key(&self, id: String) -> anyhow::Result<Option<KeyRecord>> {
        let client = self.client().await?;
        keys::load_one(&client, &id).await
    }

    pub async fn load_key_by_hash(&self, hash: KeyHash) -> anyhow::Result<Option<KeyRecord>> {
        let client = self.client().await?;
        keys::load_by_hash(&client, &hash).await
    }

    pub async fn load_rotations(&self) -> anyhow::Result<Vec<(String, String)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT successor_id, predecessor_id FROM key_rotations",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    pub async fn predecessor_of(&self, successor_id: String) -> anyhow::Result<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT predecessor_id FROM key_rotations WHERE successor_id = $1",
                &[&successor_id],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    pub async fn insert_key(&self, record: KeyRecord, audit: AuditRecord) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        let tx = changes::begin(&mut client).await?;
        keys::insert(&tx, &record).await?;
        keys::insert_audit(&tx, &audit).await?;
        changes::append(&tx, &[(ChangeKind::Key, &record.id, Some(record.version))]).await?;
        tx.commit().await.context("committing the new key")?;
        Ok(())
    }

    /// See `store::Store::update_key`. On a conflict the transaction is dropped uncommitted:
    /// rolled back, audit row and change row with it.
    pub async fn update_key(
        &self,
        record: KeyRecord,
        audit: AuditRecord,
    ) -> anyhow::Result<Versioned> {
        let mut client = self.client().await?;
        let tx = changes::begin(&mut client).await?;
        let version = match keys::update(&tx, &record).await? {
            Ok(version) => version,
            Err(conflict) => return Ok(Err(conflict)),
        };
        keys::insert_audit(&tx, &audit).await?;
        changes::append(&tx, &[(ChangeKind::Key, &record.id, Some(version))]).await?;
        tx.commit().await.context("committing the key's change")?;
        Ok(Ok(version))
    }

    pub async fn rotate_key(
        &self,
        old: KeyRecord,
        new: KeyRecord,
        audits: Vec<AuditRecord>,
    ) -> anyhow::Result<Versioned> {
        let mut client = self.client().await?;
        let tx = changes::begin(&mut client).await?;
        let version = match keys::update(&tx, &old).await? {
            Ok(version) => version,
            Err(conflict) => return Ok(Err(conflict)),
        };
        keys::insert(&tx, &new).await?;
        tx.execute(
            "INSERT INTO key_rotations (successor_id, predecessor_id) VALUES ($1, $2)",
            &[&new.id, &old.id],
        )
        .await
        .context("recording the rotation")?;
        for audit in &audits {
            keys::insert_audit(&tx, audit).await?;
        }
        changes::append(
            &tx,
            &[
                (ChangeKind::Key, &old.id, Some(version)),
                (ChangeKind::Key, &new.id, Some(new.version)),
                (ChangeKind::Rotation, &new.id, None),
            ],
        )
        .await?;
        tx.commit().await.context("committing the rotation")?;
        Ok(Ok(version))
    }

    pub async fn load_admin_tokens(&self) -> anyhow::Result<Vec<TokenRecord>> {
        let client = self.client().await?;
        keys::load_admin_tokens(&client, None).await
    }

    pub async fn load_admin_token(&self, id: String) -> anyhow::Result<Option<TokenRecord>> {
        let client = self.client().await?;
        Ok(keys::load_admin_tokens(&client, Some(&id)).await?.pop())
    }

    pub async fn save_admin_token(
        &self,
        token: TokenRecord,
        audit: Option<AuditRecord>,
    ) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        let tx = changes::begin(&mut client).await?;
        keys::upsert_admin_token(&tx, &token).await?;
        if let Some(audit) = &audit {
            keys::insert_audit(&tx, audit).await?;
        }
        changes::append(&tx, &[(ChangeKind::AdminToken, &token.id, None)]).await?;
        tx.commit().await.context("committing the admin token")?;
        Ok(())
    }

    pub async fn list_audit(&self, query: AuditQuery) -> anyhow::Result<Vec<AuditEntry>> {
        let client = self.client().await?;
        keys::list_audit(&client, &query).await
    }

    /// [`Store::write_usage`] for the usage writer's std thread: blocks on the store's
    /// runtime. On any thread of a runtime (a task, `spawn_blocking`) it refuses: an error,
    /// not a deadlock or a panic.
    pub fn write_usage_blocking(
        &self,
        records: &[UsageRecord],
        journal: JournalChanges<'_>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            tokio::runtime::Handle::try_current().is_err(),
            "a PostgreSQL usage batch was written from an async task; only the usage writer's \
             thread may block on it"
        );
        self.runtime.block_on(async {
            tokio::time::timeout(WRITE_TIMEOUT, self.write_usage(records, journal))
                .await
                .map_err(|elapsed| {
                    anyhow::Error::new(elapsed).context(format!(
                        "writing usage to PostgreSQL at {} timed out",
                        self.described
                    ))
                })?
        })
    }

    /// Inserts the records not inserted before, adds those to the rollups, and applies the
    /// holds journal, in one transaction.
    pub async fn write_usage(
        &self,
        records: &[UsageRecord],
        journal: JournalChanges<'_>,
    ) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        usage::write(&tx, records, journal).await?;
        tx.commit().await.context("committing usage")?;
        Ok(())
    }

    pub async fn key_totals(
        &self,
        key_ids: Vec<String>,
    ) -> anyhow::Result<std::collections::HashMap<String, KeyTotals>> {
        let client = self.client().await?;
        usage::key_totals(&client, &key_ids).await
    }

    pub async fn counted_spend(
        &self,
        key_id: String,
        from: jiff::civil::Date,
    ) -> anyhow::Result<CountedSpend> {
        let client = self.client().await?;
        usage::counted_spend(&client, &key_id, from).await
    }

    /// What `key_ids` spent on the UTC days from `from` on (`None`: their lifetime totals).
    pub async fn period_spend(
        &self,
        key_ids: Vec<String>,
        from: Option<jiff::civil::Date>,
    ) -> anyhow::Result<gateway_shared::Nanodollars> {
        let client = self.client().await?;
        usage::period_spend(&client, &key_ids, from).await
    }

    pub async fn usage_report(
        &self,
        key_id: String,
        from: jiff::civil::Date,
        to: jiff::civil::Date,
    ) -> anyhow::Result<gateway_shared::api::UsageReport> {
        let client = self.client().await?;
        usage::report(&client, &key_id, from, to).await
    }

    pub async fn changes_since(&self, seq: i64) -> anyhow::Result<Vec<Change>> {
        let client = self.client().await?;
        changes::since(&client, seq).await
    }

    pub async fn cluster_id(&self) -> anyhow::Result<String> {
        let client = self.client().await?;
        let id: String = client
            .query_one("SELECT id FROM cluster", &[])
            .await
            .context("reading the cluster id")?
            .get(0);
        Ok(id)
    }

    pub async fn max_change_seq(&self) -> anyhow::Result<i64> {
        let client = self.client().await?;
        let seq: i64 = client
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM changes", &[])
            .await?
            .get(0);
        Ok(seq)
    }

    pub async fn heartbeat(&self, replica: ReplicaRecord) -> anyhow::Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO replicas (id, host, version, started_at_ms, last_seen_ms, requests) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (id) DO UPDATE SET host = excluded.host, \
                 version = excluded.version, started_at_ms = excluded.started_at_ms, \
                 last_seen_ms = excluded.last_seen_ms, requests = excluded.requests",
                &[
                    &replica.id,
                    &replica.host,
                    &replica.version,
                    &replica.started_at.as_millisecond(),
                    &replica.last_seen.as_millisecond(),
                    &sql_count(replica.requests),
                ],
            )
            .await
            .context("writing the replica's heartbeat")?;
        Ok(())
    }

    pub async fn list_replicas(&self, seen_since: Timestamp) -> anyhow::Result<Vec<ReplicaRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, host, version, started_at_ms, last_seen_ms, requests FROM replicas \
                 WHERE last_seen_ms >= $1 ORDER BY id",
                &[&seen_since.as_millisecond()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                ReplicaRecord::from_columns(
                    row.get(0),
                    row.get(1),
                    row.get(2),
                    row.get(3),
                    row.get(4),
                    row.get(5),
                )
            })
            .collect()
    }
}

/// See [`crate::store::is_unavailable`]: any error in `err`'s chain that says the server
/// could not be reached or went away.
pub fn is_unavailable(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(pool) = cause.downcast_ref::<PoolError>() {
            return match pool {
                PoolError::Timeout(_) | PoolError::Closed => true,
                PoolError::Backend(err) => connection_lost(err) || not_serving_us(err),
                PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => false,
            };
        }
        if let Some(err) = cause.downcast_ref::<tokio_postgres::Error>() {
            return connection_lost(err) || not_serving_us(err);
        }
        cause.is::<tokio::time::error::Elapsed>()
    })
}

/// Whether the server answered but cannot serve this replica for now, which only waiting (or
/// an operator) mends: our database or tables are not there (PostgreSQL restarted on a fresh
/// data directory, a restore under way), it is read-only (a standby after a failover), or
/// the statement ran out of time (a lock held by another session). Taken for a failed
/// statement instead, a usage batch would be dropped row by row, and a change to a key
/// skipped by the follower.
fn not_serving_us(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|code| {
        matches!(
            code.code(),
            // invalid_catalog_name, undefined_table, read_only_sql_transaction,
            // query_canceled (statement_timeout), lock_not_available
            "3D000" | "42P01" | "25006" | "57014" | "55P03"
        )
    })
}

/// Whether a tokio-postgres error is about the connection, not the statement.
fn connection_lost(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        let code = code.code();
        // Class 08: connection exceptions; 57P01-03: the server is shutting down, crashed or
        // not yet accepting connections; 53300: too many connections.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300");
    }
    // Without a SQLSTATE: an I/O error, a connect failure or a timeout are the connection's;
    // tokio-postgres exposes its error kinds only through their text.
    let text = err.to_string();
    [
        "error communicating with the server",
        "error connecting to server",
        "timeout waiting for server",
        "connection closed",
    ]
    .iter()
    .any(|kind| text.starts_with(kind))
}
