//! Cluster mode: what any replica changes reaches every replica's memory (SPEC §9, issue #16).
//!
//! [`follow`] consumes the change feed (`store::postgres::listen`) and applies each change to
//! this replica's key table and admin-token list, in feed order:
//!
//! - `Key(id)`: the key's current row (`Store::load_key`) replaces the entry, keeping its
//!   live state as a local edit does. When the same batch also carries `Rotation(id)`, the
//!   key is put in already sharing its predecessor's live state, so that no request is ever
//!   counted in a state of its own in between. A change that names the version it committed
//!   is not read at all when the table holds that version already (this replica's own
//!   changes come back that way).
//! - `Rotation(id)`: the successor `id` and its predecessor (`Store::predecessor_of`) share
//!   the predecessor's live state and the predecessor's view names its replacement, as
//!   after a local rotation (`KeyCache::insert_successor`).
//! - `AdminToken(id)`: the token's current row is merged into the list
//!   (`AdminTokens::apply_stored`): created, or revoked, and then refused here at once.
//!
//! **Never older after newer.** A change is applied by reading the row as it is *now*, never
//! as it was at the change: the store commits every change of a key before notifying it,
//! and reads go to the same primary, so a read after a notification sees that change or a
//! newer one. Applying changes in seq order therefore only ever moves an entry forward,
//! and applying one twice (a change committed while this replica loaded its keys is
//! delivered again, see `Store::max_change_seq`) puts the same row back. The one writer
//! that could race a read is this replica's own `KeyService`, which updates the table
//! right after its commit: a row read just before that commit, applied just after the
//! update, would roll the table back. Rows carry their key's version, and the table
//! ignores a row older than its entry (`KeyCache::apply_stored`), so that case changes
//! nothing; the same rule keeps the service's own late update from undoing a newer row
//! this follower applied first.
//!
//! **A restored database.** When the feed goes backwards (`Event::Reset`: the database was
//! restored from a backup, its seqs and versions restarted lower), versions no longer say
//! which row is newer and changes may have been skipped: every key, rotation and admin
//! token is read again and put in as the store has it (`KeyCache::replace_stored`, keeping
//! live state), retried like a change until it succeeds. The feed's later changes wait
//! meanwhile and follow. The store is the truth with one exception: a revocation is never
//! undone (SPEC §2: revoked is terminal). A key or admin token revoked here but active in
//! the restored rows stays revoked and the revocation is written back to the store, audited
//! as [`RESTORE_ACTOR`]; keys and tokens the store lacks (made after the backup) are taken
//! out, as a replica started now would not know them.
//!
//! **Missing rows.** Keys and admin tokens are never deleted today, so a change whose row is
//! not found cannot happen short of someone deleting rows by hand: it is logged and
//! skipped (there is nothing to apply).
//!
//! **Failures.** A read that fails because PostgreSQL cannot be reached (it went away
//! between the notification and the read) is retried with backoff, forever, without moving
//! on: skipping it could leave a revoked key admitted here. Meanwhile the feed waits (the
//! listener's queue is bounded and it loses nothing), and the stop token ends the wait at
//! once. Any other error (a row this binary cannot decode, e.g. during a rolling upgrade
//! that added a setting) is retried [`DECODE_ATTEMPTS`] times and then skipped, logged as
//! an error: one key this replica cannot represent must not stop every later change.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::cache::{KeyCache, Link};
use crate::admin_tokens::{AdminTokens, TokenApplied};
use crate::keys::record::KeyRecord;
use crate::store::postgres::Event;
use crate::store::{AuditRecord, Change, ChangeKind, Store};

/// The first pause after a failed read; doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest one change's reads may take before they count as failed (and are retried).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a reload of every key may take before it counts as failed (and is retried).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// The audit actor of a revocation written back after a restore.
const RESTORE_ACTOR: &str = "gatewayd (revocation kept across a restore)";
/// How many times a change whose reads fail for a reason other than the connection is
/// tried before it is skipped.
const DECODE_ATTEMPTS: u32 = 3;
/// How many conflicting writes one revocation's write-back reads the row again after, within
/// one reload attempt (the reload as a whole is retried after that).
const WRITE_BACK_ATTEMPTS: u32 = 5;

/// Applies the changes `events` delivers (from `store::postgres::listen`) to `cache` and
/// `tokens`, reading rows through `store`, until `stop` is cancelled or the feed ends.
///
/// Spawn it right after loading the key table and the admin tokens, with the feed started
/// from the `Store::max_change_seq` read *before* loading them: a change committed during
/// the load is then applied again (harmless), never missed.
pub async fn follow(
    store: Store,
    mut events: mpsc::Receiver<Event>,
    cache: Arc<KeyCache>,
    tokens: Arc<AdminTokens>,
    stop: CancellationToken,
) {
    let mut follower = Follower {
        store,
        cache,
        tokens,
        stop,
        outage: None,
        catch_up: None,
        last_seq: 0,
    };
    loop {
        let event = tokio::select! {
            biased;
            () = follower.stop.cancelled() => return,
            event = events.recv() => event,
        };
        let Some(event) = event else {
            tracing::warn!(
                "the change feed ended: changes made on other replicas no longer reach this one"
            );
            return;
        };
        let stopped = match event {
            Event::Connected => follower.connected().await,
            Event::Disconnected(why) => {
                follower.disconnected(why);
                false
            }
            Event::CaughtUp => false,
            Event::Changes(changes) => follower.apply_batch(&changes).await,
            Event::Reset { seq } => follower.reset(seq).await,
        };
        if stopped {
            return;
        }
    }
}

struct Follower {
    store: Store,
    cache: Arc<KeyCache>,
    tokens: Arc<AdminTokens>,
    stop: CancellationToken,
    /// Since when the feed has been down, while it is.
    outage: Option<Instant>,
    /// After a reconnect: the changes to apply before the feed counts as resumed.
    catch_up: Option<CatchUp>,
    /// The newest change applied (or skipped) or loaded at start, for the resume log.
    last_seq: i64,
}

struct CatchUp {
    /// The newest change committed when the feed came back (`None`: could not tell).
    target: Option<i64>,
    applied: usize,
    down_for: Duration,
}

/// How a change ended, for its log line.
enum Applied {
    Key,
    /// A key change whose version the table holds already: nothing to read.
    Known,
    Rotation(Link),
    Token(TokenApplied),
    /// The row is not in the store (see the module docs).
    Missing,
}

impl Follower {
    fn disconnected(&mut self, why: String) {
        // The listener retries with backoff and reports each failed attempt: one warning
        // per outage, the retries at debug.
        if self.outage.is_some() {
            tracing::debug!(error = %why, "change feed still down");
            return;
        }
        self.outage = Some(Instant::now());
        self.catch_up = None;
        tracing::warn!(
            error = %why,
            "change feed lost: changes made on other replicas apply here once it is back"
        );
    }

    /// `true` when stopped.
    async fn connected(&mut self) -> bool {
        // The listener reads what it missed right after this; the feed has resumed once
        // everything committed by now is applied.
        let Some(newest) = self.newest_seq().await else {
            return true;
        };
        let Some(since) = self.outage.take() else {
            // The first connection: what was committed by now is loaded or on its way.
            tracing::debug!("change feed connected");
            self.last_seq = self.last_seq.max(newest.unwrap_or(0));
            return false;
        };
        self.catch_up = Some(CatchUp {
            target: newest,
            applied: 0,
            down_for: since.elapsed(),
        });
        self.check_caught_up();
        false
    }

    /// The newest change committed (`Some(None)`: could not tell); `None` when stopped.
    async fn newest_seq(&self) -> Option<Option<i64>> {
        tokio::select! {
            () = self.stop.cancelled() => None,
            seq = tokio::time::timeout(READ_TIMEOUT, self.store.max_change_seq()) => {
                Some(seq.ok().and_then(Result::ok))
            }
        }
    }

    /// Logs the resume once the catch-up after a reconnect is applied.
    fn check_caught_up(&mut self) {
        let Some(catch_up) = &self.catch_up else {
            return;
        };
        let down_ms = u64::try_from(catch_up.down_for.as_millis()).unwrap_or(u64::MAX);
        match catch_up.target {
            Some(target) if self.last_seq < target => return,
            Some(_) => tracing::info!(
                changes_applied = catch_up.applied,
                down_ms,
                "change feed resumed: {} changes applied",
                catch_up.applied
            ),
            None => tracing::info!(
                down_ms,
                "change feed resumed (what was missed is applied as it arrives)"
            ),
        }
        self.catch_up = None;
    }

    /// Applies one delivered batch in order; `true` when stopped.
    async fn apply_batch(&mut self, changes: &[Change]) -> bool {
        // A rotation commits its successor's `Key` and its `Rotation` in one transaction,
        // hence in one batch: the successor goes in already sharing its predecessor's state.
        let rotated: HashSet<&str> = changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Rotation)
            .map(|c| c.id.as_str())
            .collect();
        for change in changes {
            let successor = rotated.contains(change.id.as_str());
            if !self.apply_with_retries(change, successor).await {
                return true;
            }
            self.last_seq = self.last_seq.max(change.seq);
            if let Some(catch_up) = &mut self.catch_up {
                catch_up.applied += 1;
            }
        }
        self.check_caught_up();
        false
    }

    /// Reloads everything after the feed went backwards (see the module docs); `true` when
    /// stopped.
    async fn reset(&mut self, seq: i64) -> bool {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = tokio::select! {
                () = self.stop.cancelled() => return true,
                attempt = tokio::time::timeout(RELOAD_TIMEOUT, self.reload()) => attempt,
            };
            let err = match attempt {
                Ok(Ok(())) => break,
                Ok(Err(err)) => err,
                Err(elapsed) => anyhow::Error::new(elapsed).context("reloading timed out"),
            };
            tracing::warn!(
                error = format!("{err:#}"),
                retry_in_ms = backoff.as_millis() as u64,
                "cannot reload the keys after the change feed went backwards; retrying"
            );
            tokio::select! {
                () = self.stop.cancelled() => return true,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        // The feed goes on after `seq`: the resume log's position moves there, also down.
        self.last_seq = seq;
        self.check_caught_up();
        false
    }

    async fn reload(&self) -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.store
            .load_keys(move |record| {
                let _ = tx.send(record);
            })
            .await?;
        let records: Vec<_> = rx.try_iter().collect();
        let rotations = self.store.load_rotations().await?;
        let tokens = self.store.load_admin_tokens().await?;
        let keys = records.len();
        let restored = self.cache.replace_stored(records, &rotations);
        let (tokens_dropped, tokens_revoked) =
            self.tokens.replace_stored(tokens, RESTORE_ACTOR).await?;
        if !tokens_dropped.is_empty() || !tokens_revoked.is_empty() {
            tracing::warn!(
                dropped = ?tokens_dropped,
                revoked_again = ?tokens_revoked,
                "admin tokens after the restore: those the database lacks are dropped, \
                 revocations it lost are written back"
            );
        }
        if !restored.removed.is_empty() {
            tracing::warn!(
                key_ids = ?restored.removed,
                "keys this replica held are not in the restored database: taken out here too"
            );
        }
        for record in restored.revocations {
            self.revoke_again(record).await?;
        }
        tracing::warn!(keys, "reloaded every key and admin token from the store");
        Ok(())
    }

    /// Writes back a revocation the restored store lost (SPEC §2: revoked is terminal), as
    /// an audited change of its own. Every replica that held the revocation tries; the first
    /// commits and the others find the row changed (a conflict). A conflict is not proof
    /// that the revocation is stored: the row may have changed for another reason (an edit
    /// through a replica that never held the revocation), and that newer, active row would
    /// then reach every table through the feed and undo the revocation. So on a conflict the
    /// row is read again: revoked, there is nothing to do; active, the revocation is written
    /// over the fresh row. Once written, the revoked row goes into this table at its new
    /// version, so that an older active row still in the feed cannot replace it.
    async fn revoke_again(&self, mut record: KeyRecord) -> anyhow::Result<()> {
        let key_id = record.id.clone();
        let revoked_at = record.revoked_at;
        for _ in 0..WRITE_BACK_ATTEMPTS {
            let audit = AuditRecord {
                at: revoked_at.unwrap_or(record.updated_at),
                actor: RESTORE_ACTOR.to_owned(),
                action: "key.revoke",
                key_id: Some(key_id.clone()),
                details: serde_json::json!({
                    "name": record.name,
                    "prefix": record.prefix,
                    "reason": "revoked before the store was restored from a backup that predates the revocation",
                }),
            };
            let conflict = match self.store.update_key(record.clone(), audit).await? {
                Ok(version) => {
                    record.version = version;
                    self.cache.apply_stored(record, None);
                    tracing::warn!(
                        key_id = %key_id,
                        "the restored database had this revoked key active: revoked again"
                    );
                    return Ok(());
                }
                Err(conflict) => conflict,
            };
            let Some(fresh) = self.store.load_key(key_id.clone()).await? else {
                tracing::warn!(key_id = %key_id, "a key to revoke again is no longer stored");
                return Ok(());
            };
            if let Some(stored) = fresh.revoked_at
                && revoked_at.is_none_or(|held| stored <= held)
            {
                tracing::info!(
                    key_id = %key_id,
                    stored = conflict.stored,
                    "a revocation lost by the restore was written back by another replica"
                );
                return Ok(());
            }
            record = KeyRecord {
                revoked_at,
                ..fresh
            };
        }
        anyhow::bail!(
            "key {key_id}: the revocation to write back kept conflicting with other changes"
        )
    }

    /// Applies `change`, retrying failed reads (see the module docs); `false` when stopped.
    async fn apply_with_retries(&self, change: &Change, successor: bool) -> bool {
        let mut backoff = FIRST_BACKOFF;
        let mut other_failures = 0;
        loop {
            let attempt = tokio::select! {
                () = self.stop.cancelled() => return false,
                attempt = tokio::time::timeout(READ_TIMEOUT, self.apply(change, successor)) => attempt,
            };
            let err = match attempt {
                Ok(Ok(applied)) => {
                    log_applied(change, &applied);
                    return true;
                }
                Ok(Err(err)) => err,
                Err(elapsed) => anyhow::Error::new(elapsed).context("reading the change timed out"),
            };
            let why = format!("{err:#}");
            if crate::store::is_unavailable(&err) {
                tracing::warn!(
                    seq = change.seq,
                    kind = change.kind.as_str(),
                    error = %why,
                    retry_in_ms = backoff.as_millis() as u64,
                    "cannot read a change from PostgreSQL; retrying (later changes wait)"
                );
            } else {
                other_failures += 1;
                if other_failures >= DECODE_ATTEMPTS {
                    tracing::error!(
                        seq = change.seq,
                        kind = change.kind.as_str(),
                        id = %change.id,
                        error = %why,
                        "cannot apply a change after {DECODE_ATTEMPTS} attempts; skipping it"
                    );
                    return true;
                }
                tracing::warn!(
                    seq = change.seq,
                    kind = change.kind.as_str(),
                    error = %why,
                    retry_in_ms = backoff.as_millis() as u64,
                    "cannot apply a change; retrying"
                );
            }
            tokio::select! {
                () = self.stop.cancelled() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn apply(&self, change: &Change, successor: bool) -> anyhow::Result<Applied> {
        match change.kind {
            ChangeKind::Key => {
                if let Some(version) = change.version
                    && self
                        .cache
                        .get(&change.id)
                        .is_some_and(|entry| entry.version >= version)
                {
                    // The table holds this change or a newer one (see the module docs).
                    return Ok(Applied::Known);
                }
                let predecessor = if successor {
                    self.store.predecessor_of(change.id.clone()).await?
                } else {
                    None
                };
                let Some(record) = self.store.load_key(change.id.clone()).await? else {
                    return Ok(Applied::Missing);
                };
                self.cache.apply_stored(record, predecessor.as_deref());
                Ok(Applied::Key)
            }
            ChangeKind::Rotation => {
                let Some(predecessor) = self.store.predecessor_of(change.id.clone()).await? else {
                    return Ok(Applied::Missing);
                };
                Ok(Applied::Rotation(
                    self.cache.link_successor(&change.id, &predecessor),
                ))
            }
            ChangeKind::AdminToken => {
                let Some(token) = self.store.load_admin_token(change.id.clone()).await? else {
                    return Ok(Applied::Missing);
                };
                Ok(Applied::Token(self.tokens.apply_stored(token)))
            }
        }
    }
}

fn log_applied(change: &Change, applied: &Applied) {
    let (seq, kind, id) = (change.seq, change.kind.as_str(), change.id.as_str());
    match applied {
        Applied::Key => tracing::debug!(seq, key_id = id, "key change applied"),
        Applied::Known => tracing::debug!(seq, key_id = id, "key change already applied"),
        Applied::Rotation(Link::Missing) => tracing::warn!(
            seq,
            key_id = id,
            "a rotation names a key this replica does not have; skipped"
        ),
        Applied::Rotation(_) => tracing::debug!(seq, key_id = id, "rotation applied"),
        Applied::Token(TokenApplied::Revoked) => {
            tracing::info!(seq, token_id = id, "admin token revoked on another replica")
        }
        Applied::Token(_) => tracing::debug!(seq, token_id = id, "admin token change applied"),
        Applied::Missing => tracing::warn!(
            seq,
            kind,
            id,
            "a change names a row that is not in the store (rows are never deleted); skipped"
        ),
    }
}

#[cfg(test)]
mod tests;
