//! The SQLite backend (one server): the one connection, its pragmas, and the typed
//! operations on it.
//!
//! SQLite allows one writer at a time, so the store holds exactly one connection behind a
//! mutex and every operation runs on tokio's blocking pool (or, for usage, on the usage
//! writer's own thread): there is never a second writer to get `SQLITE_BUSY`. WAL mode lets
//! the file be read (backups, `sqlite3`) while we write; `synchronous = FULL` because these
//! rows are money and revocations, and batching keeps it affordable.

mod admin_tokens;
mod audit;
mod export;
pub(super) mod holds;
pub(super) mod keys;
pub(super) mod migrations;
mod replicas;
pub(super) mod usage;

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use gateway_shared::api::AuditEntry;
use rusqlite::{Connection, TransactionBehavior};

use super::usage::UsageRecord;
use super::{
    AuditQuery, AuditRecord, CrashCharges, JournalChanges, ReplicaRecord, SavedWindow, Versioned,
};
use crate::keys::record::KeyRecord;
use crate::spend::ledger::{CountedSpend, SpendState};

#[derive(Clone, Debug)]
pub struct Store {
    // Std mutex: only locked inside `spawn_blocking`, never across `.await`.
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        owner_only(path)?;
        let mut conn = Connection::open(path)
            .with_context(|| format!("opening database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!(
                "database {} could not be put in WAL mode (got {mode})",
                path.display()
            );
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // SQLite's page cache is resident memory: its default 2 MB was a tenth of an idle
        // daemon's. Start-up reads the keys table once and the usage writer touches a few
        // pages per batch, so 512 KiB loses nothing; the OS page cache keeps the file warm.
        conn.pragma_update(None, "cache_size", -512)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::migrate(&mut conn)
            .with_context(|| format!("migrating database {}", path.display()))?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub async fn count_keys(&self) -> anyhow::Result<usize> {
        self.call(|conn| keys::count(conn)).await
    }

    /// Every key, handed to `each` as its row is read (in no particular order), so that
    /// start-up never holds all the rows at once.
    pub async fn load_keys(
        &self,
        each: impl FnMut(KeyRecord) + Send + 'static,
    ) -> anyhow::Result<()> {
        self.call(move |conn| keys::load_all(conn, each)).await
    }

    /// Saves the rate windows at shutdown (replacing any saved before).
    pub async fn save_rate_windows(
        &self,
        saved_at_ms: i64,
        windows: Vec<(String, Vec<(u64, u32)>)>,
    ) -> anyhow::Result<()> {
        self.write(move |tx| keys::save_rate_windows(tx, saved_at_ms, &windows))
            .await
    }

    /// The rate windows the last shutdown saved, taken out of the database.
    pub async fn take_rate_windows(&self) -> anyhow::Result<Vec<SavedWindow>> {
        self.write(keys::take_rate_windows).await
    }

    /// Every rotation as (successor id, predecessor id).
    pub async fn load_rotations(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.call(|conn| keys::load_rotations(conn)).await
    }

    /// Inserts a new key and its audit row in one transaction.
    pub async fn insert_key(&self, record: KeyRecord, audit: AuditRecord) -> anyhow::Result<()> {
        self.write(move |tx| {
            keys::insert(tx, &record)?;
            audit::insert(tx, &audit)
        })
        .await
    }

    /// Replaces a key's row, if it is still at `record.version`, and appends its audit row in
    /// one transaction (see `Store::update_key`).
    pub async fn update_key(
        &self,
        record: KeyRecord,
        audit: AuditRecord,
    ) -> anyhow::Result<Versioned> {
        self.write_versioned(move |tx| {
            let written = keys::update(tx, &record)?;
            if written.is_ok() {
                audit::insert(tx, &audit)?;
            }
            Ok(written)
        })
        .await
    }

    /// Appends usage rows (and their daily rollup), persists each key's latest spend and
    /// applies `journal` to the holds journal, in one transaction. Blocking: only the usage
    /// writer's own thread calls it.
    pub fn write_usage(
        &self,
        records: &[UsageRecord],
        journal: JournalChanges<'_>,
        yielding: bool,
    ) -> anyhow::Result<()> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        in_write_transaction(&mut conn, |tx| {
            usage::insert_all(tx, records, yielding)?;
            for (key_id, state) in super::usage::newest_spend(records) {
                keys::persist_spend(tx, key_id, state)?;
            }
            holds::journal(tx, journal.opened, journal.settled)
        })
    }

    /// Charges the holds a crash left in the journal (requests in flight when the daemon
    /// died) as estimated usage, adds them to their keys' spend and empties the journal, in
    /// one transaction. Start-up calls it before loading the keys.
    pub async fn charge_journaled_holds(&self) -> anyhow::Result<CrashCharges> {
        self.write(holds::charge_all).await
    }

    /// What the database has counted of `key_id`'s spend: on the UTC days from `from` on (the
    /// rollup) and in all (the total the usage writer persisted with those same rows). Read
    /// under the one connection, so no usage batch commits between the two.
    pub async fn counted_spend(
        &self,
        key_id: String,
        from: jiff::civil::Date,
    ) -> anyhow::Result<CountedSpend> {
        self.call(move |conn| {
            Ok(CountedSpend {
                since: usage::spend_since(conn, &key_id, from)?,
                total: keys::persisted_total(conn, &key_id)?,
            })
        })
        .await
    }

    /// What `key_ids` spent on the UTC days from `from` on (`None`: their persisted
    /// lifetime totals), read under the one connection.
    pub async fn period_spend(
        &self,
        key_ids: Vec<String>,
        from: Option<jiff::civil::Date>,
    ) -> anyhow::Result<gateway_shared::Nanodollars> {
        self.call(move |conn| {
            let mut spent = gateway_shared::Nanodollars::ZERO;
            for key_id in &key_ids {
                let one = match from {
                    Some(from) => usage::spend_since(conn, key_id, from)?,
                    None => keys::persisted_total(conn, key_id)?,
                };
                spent = spent.saturating_add(one);
            }
            Ok(spent)
        })
        .await
    }

    /// Persists a key's spend outside a usage batch (a restarted period), unless the stored
    /// state already counts more requests.
    pub async fn persist_spend(&self, key_id: String, state: SpendState) -> anyhow::Result<()> {
        self.write(move |tx| keys::persist_spend(tx, &key_id, &state))
            .await
    }

    pub async fn usage_report(
        &self,
        key_id: String,
        from: jiff::civil::Date,
        to: jiff::civil::Date,
    ) -> anyhow::Result<gateway_shared::api::UsageReport> {
        self.call(move |conn| usage::report(conn, &key_id, from, to))
            .await
    }

    pub async fn load_admin_tokens(&self) -> anyhow::Result<Vec<crate::admin_tokens::TokenRecord>> {
        self.call(|conn| admin_tokens::load_all(conn)).await
    }

    /// Writes an admin token (and, for a change an operator made, its audit row).
    pub async fn save_admin_token(
        &self,
        token: crate::admin_tokens::TokenRecord,
        audit: Option<AuditRecord>,
    ) -> anyhow::Result<()> {
        self.write(move |tx| {
            admin_tokens::upsert(tx, &token)?;
            if let Some(audit) = &audit {
                audit::insert(tx, audit)?;
            }
            Ok(())
        })
        .await
    }

    /// A rotation: the old key's row (now with its revocation instant) and the new key, with
    /// both audit rows, in one transaction.
    pub async fn rotate_key(
        &self,
        old: KeyRecord,
        new: KeyRecord,
        audits: Vec<AuditRecord>,
    ) -> anyhow::Result<Versioned> {
        self.write_versioned(move |tx| {
            let written = keys::update(tx, &old)?;
            if written.is_err() {
                return Ok(written);
            }
            keys::insert(tx, &new)?;
            keys::insert_rotation(tx, &new.id, &old.id)?;
            for audit in &audits {
                audit::insert(tx, audit)?;
            }
            Ok(written)
        })
        .await
    }

    pub async fn list_audit(&self, query: AuditQuery) -> anyhow::Result<Vec<AuditEntry>> {
        self.call(move |conn| audit::list(conn, &query)).await
    }

    /// The key `id`, if there is one (cluster replicas reload changed keys by id).
    pub async fn load_key(&self, id: String) -> anyhow::Result<Option<KeyRecord>> {
        self.call(move |conn| keys::load_one(conn, &id)).await
    }

    pub async fn load_admin_token(
        &self,
        id: String,
    ) -> anyhow::Result<Option<crate::admin_tokens::TokenRecord>> {
        self.call(move |conn| admin_tokens::load_one(conn, &id))
            .await
    }

    /// The predecessor `successor_id` was rotated from, if it was.
    pub async fn predecessor_of(&self, successor_id: String) -> anyhow::Result<Option<String>> {
        self.call(move |conn| keys::predecessor_of(conn, &successor_id))
            .await
    }

    pub async fn heartbeat(&self, replica: ReplicaRecord) -> anyhow::Result<()> {
        self.write(move |tx| replicas::upsert(tx, &replica)).await
    }

    pub async fn list_replicas(
        &self,
        seen_since: jiff::Timestamp,
    ) -> anyhow::Result<Vec<ReplicaRecord>> {
        self.call(move |conn| replicas::seen_since(conn, seen_since))
            .await
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits it.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.call(move |conn| in_write_transaction(conn, f)).await
    }

    /// [`Store::write`] for a conditional key write: a [`super::Conflict`] rolls the
    /// transaction back, so that nothing the closure did before finding it stays.
    async fn write_versioned(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> anyhow::Result<Versioned> + Send + 'static,
    ) -> anyhow::Result<Versioned> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let written = f(&tx)?;
            if written.is_ok() {
                tx.commit()?;
            }
            // Dropped uncommitted: rolled back.
            Ok(written)
        })
        .await
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .context("database task panicked")?
    }
}

fn in_write_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    // IMMEDIATE takes the write lock up front; a deferred transaction that upgrades later gets
    // SQLITE_BUSY without honouring busy_timeout.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// The database holds key hashes, names and every request's usage: readable by the daemon's
/// user only. A data directory made by gatewayd or install.sh is 0700 already, but an
/// operator's own (0755, say) let SQLite create the file 0644 under the usual umask. The file
/// is created 0600, an existing one is narrowed to it, and SQLite gives its WAL and
/// shared-memory files the database file's mode.
fn owner_only(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening database {}", path.display()))?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(database = %path.display(), mode = format!("{:o}", mode & 0o777), "the database was readable by others; narrowing it to its owner (0600)");
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("narrowing the mode of {}", path.display()))?;
    }
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = std::path::PathBuf::from(side);
        if let Ok(meta) = std::fs::metadata(&side)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("narrowing the mode of {}", side.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn the_database_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let path = dir.path().join("gateway.db");
        let store = Store::open(&path).expect("open");
        drop(store);
        assert_eq!(
            mode(&path),
            0o600,
            "created owner-only in an open directory"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let _store = Store::open(&path).expect("reopen");
        assert_eq!(mode(&path), 0o600, "an existing open file is narrowed");
        let wal = dir.path().join("gateway.db-wal");
        if wal.exists() {
            assert_eq!(mode(&wal), 0o600, "SQLite's side files follow the database");
        }
    }
}
