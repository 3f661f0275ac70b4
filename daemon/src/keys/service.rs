//! Business rules of the management API for keys: ids, timestamps from the `Clock`, what may
//! change, the audit row in the same transaction, and the in-memory table updated only after
//! the commit succeeds.
//!
//! Changes are serialised by one async mutex: management traffic is light, and a
//! read-modify-write of a key must not interleave with another, or one PATCH could silently
//! undo a concurrent one. Reads never take it.
//!
//! In a cluster the mutex only orders this replica's changes: another replica may commit a
//! change to the same key between this one reading its entry and writing. So every write of
//! an existing key is conditional on the version it was built from (`Store::update_key`);
//! when the store refuses it (`store::Conflict`), the key is reloaded from the store into
//! the table and the operator's request is decided again from the fresh row: an edit is
//! re-applied to it (its fields only, so the other replica's change stands), an edit or a
//! rotation of a key revoked meanwhile is refused as on one server (409 `key_revoked`), a
//! revocation of a key revoked meanwhile answers as revoking a revoked key does. SPEC §6 has
//! no code for a conflict, so a key that keeps changing under [`ATTEMPTS`] tries in a row
//! is answered 503 `store_unavailable`, saying so, with nothing changed. One server has one
//! writer and never conflicts: the path is the same and costs nothing more.

use gateway_shared::key::redact_secrets;
use std::sync::Arc;

use gateway_shared::api::{
    AuditList, CreateKey, KeyCreated, KeyList, KeyRotated, KeyView, ROTATE_GRACE_MAX_SECONDS,
    RotateKey, UpdateKey,
};
use gateway_shared::key::new_key_id;
use gateway_shared::validate::FieldError;
use gateway_shared::{ErrorCode, KeyState, ProxyKey, SpendReset};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use super::cache::KeyCache;
use super::cache::KeyEntry;
use super::record::{FIRST_VERSION, KeyRecord};
use plan::{audit, diff, edited, rotation, settings_json};

mod plan;
#[cfg(test)]
mod tests;
use crate::clock::Clock;
use crate::error::{GatewayError, Result};
use crate::limits::cluster::ClusterLimits;
use crate::store::writer::UsageWriter;
use crate::store::{AuditQuery, AuditRecord, Conflict, Store};

/// How many times a change is decided and written against a key that other replicas keep
/// changing in between (see the module docs): the first try and three from fresh rows.
const ATTEMPTS: u32 = 4;

/// How long an edit waits for queued usage to be committed before recounting spend.
const USAGE_SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Who made a change, as the audit log names them: `uid:1000` on the Unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(pub String);

pub struct KeyService {
    store: Store,
    cache: Arc<KeyCache>,
    clock: Arc<dyn Clock>,
    /// Synced before spend is recounted from the database (a new reset period).
    usage: UsageWriter,
    writes: tokio::sync::Mutex<()>,
    /// A cluster's shared limits: each committed change's version is published there
    /// before the answer, so no replica admits under the old settings.
    shared: Option<Arc<ClusterLimits>>,
}

impl KeyService {
    pub fn new(
        store: Store,
        cache: Arc<KeyCache>,
        clock: Arc<dyn Clock>,
        usage: UsageWriter,
        shared: Option<Arc<ClusterLimits>>,
    ) -> Self {
        Self {
            store,
            cache,
            clock,
            usage,
            writes: tokio::sync::Mutex::new(()),
            shared,
        }
    }

    /// Publishes a committed change of `entry` to the cluster's shared limits (nothing on
    /// one server).
    async fn publish(&self, entry: &KeyEntry) {
        if let Some(shared) = &self.shared {
            shared.publish_version(entry).await;
        }
    }

    pub async fn create(&self, actor: &Actor, request: CreateKey) -> Result<KeyCreated> {
        let _serialised = self.writes.lock().await;
        let now = self.clock.now();
        if request.expires_at.is_some_and(|at| at <= now) {
            return Err(FieldError::invalid(
                "expires_at",
                format!("must be in the future (now is {now})"),
            )
            .into());
        }
        let secret = ProxyKey::generate()
            .map_err(|e| GatewayError::internal(anyhow::anyhow!("OS random source: {e}")))?;
        let id = new_key_id()
            .map_err(|e| GatewayError::internal(anyhow::anyhow!("OS random source: {e}")))?;
        let record = KeyRecord {
            id,
            hash: secret.hash(),
            prefix: secret.display_prefix(),
            name: request.name,
            allowed_providers: request.allowed_providers,
            allowed_models: request.allowed_models,
            allowed_ips: request.allowed_ips,
            rate_limit_rpm: request.rate_limit_rpm,
            spend_limit: request.spend_limit_usd,
            spend_reset: request.spend_reset,
            expires_at: request.expires_at,
            created_at: now,
            updated_at: now,
            revoked_at: None,
            last_used_at: None,
            spend_total: Default::default(),
            spend_period: Default::default(),
            period_resets_at: request.spend_reset.map(|reset| reset.next_reset(now)),
            request_count: 0,
            version: FIRST_VERSION,
        };
        let audit = audit(
            now,
            actor,
            "key.create",
            record.id.clone(),
            settings_json(&record),
        );
        self.store
            .insert_key(record.clone(), audit)
            .await
            .map_err(GatewayError::internal)?;
        let record = self.cache.upsert(record);
        tracing::info!(key_id = %record.id, prefix = %record.prefix, actor = %actor.0, "key created");
        Ok(KeyCreated {
            key: self.cache.view(&record, now),
            secret: secret.expose().to_owned(),
        })
    }

    pub async fn update(&self, actor: &Actor, id: &str, update: UpdateKey) -> Result<KeyView> {
        let _serialised = self.writes.lock().await;
        let now = self.clock.now();
        let mut attempt = 1;
        let (entry, new_reset, limits_changed) = loop {
            let old = self.find(id)?;
            if old.is_revoked_at(now) {
                return Err(GatewayError::new(
                    ErrorCode::KeyRevoked,
                    format!("Key {id} is revoked and can no longer be edited."),
                ));
            }
            let old_record = old.record();
            let mut new = edited(&old_record, update.clone())?;
            let changes = diff(&old_record, &new);
            if changes.is_empty() {
                return Ok(self.cache.view(&old, now));
            }
            new.updated_at = now;
            let audit = audit(
                now,
                actor,
                "key.update",
                new.id.clone(),
                Value::Object(changes),
            );
            match self.write_key(new.clone(), audit, attempt).await? {
                Some(version) => {
                    new.version = version;
                    let new_reset = new
                        .spend_reset
                        .filter(|_| old.spend_reset != new.spend_reset);
                    // The shared period is recounted when its meaning changes: a new reset,
                    // or a limit on a key that had none (its ledger counted a lifetime). A
                    // new amount for the same period keeps what Redis counted, which is
                    // ahead of PostgreSQL's sums (usage still on its way).
                    let limits_changed = old.spend_reset != new.spend_reset
                        || (old.spend_limit.is_none() && new.spend_limit.is_some());
                    break (self.cache.upsert(new), new_reset, limits_changed);
                }
                None => attempt += 1,
            }
        };
        tracing::info!(key_id = %entry.id, actor = %actor.0, "key updated");
        if let Some(shared) = &self.shared {
            // The shared ledger's period first, then the version that makes every replica
            // decide with the new limit.
            if limits_changed {
                let _ = self.sync_usage().await;
                if let Err(err) = shared.restart_period(&entry, now).await {
                    tracing::warn!(
                        key_id = %entry.id,
                        error = format!("{err:#}"),
                        "could not recount the key's shared spend for its new limit"
                    );
                }
            }
            shared.publish_version(&entry).await;
        } else if let Some(reset) = new_reset
            && let Err(err) = self.restart_period(&entry, reset, now).await
        {
            // The edit stands; the period carries the old one's spend (never less than
            // was spent in it) until its next reset.
            tracing::warn!(
                key_id = %entry.id,
                error = format!("{err:#}"),
                "could not recount the key's spend for its new reset period"
            );
        }
        Ok(self.cache.view(&entry, now))
    }

    /// Writes an existing key's change (`record.version` is the version it was built from):
    /// its new version, or `None` when another replica changed the key meanwhile and the
    /// table now holds the fresh row, to decide again from (attempt `attempt` of
    /// [`ATTEMPTS`]; after the last, the answer is 503).
    async fn write_key(
        &self,
        record: KeyRecord,
        audit: AuditRecord,
        attempt: u32,
    ) -> Result<Option<u64>> {
        let written = self
            .store
            .update_key(record, audit)
            .await
            .map_err(GatewayError::internal)?;
        match written {
            Ok(version) => Ok(Some(version)),
            Err(conflict) => self.reload(conflict, attempt).await.map(|()| None),
        }
    }

    /// After a [`Conflict`]: puts the key's current row in the table (keeping its live
    /// state; never older than what the table holds), or answers 503 after the last attempt.
    async fn reload(&self, conflict: Conflict, attempt: u32) -> Result<()> {
        let Conflict {
            key_id,
            read,
            stored,
        } = &conflict;
        if attempt >= ATTEMPTS {
            tracing::warn!(
                key_id = %key_id,
                read,
                stored,
                attempts = ATTEMPTS,
                "a key kept changing on other replicas during a change; refused"
            );
            return Err(GatewayError::new(
                ErrorCode::StoreUnavailable,
                format!(
                    "Key {key_id} kept changing on other gatewayd replicas while this change \
                     was being made ({ATTEMPTS} attempts): nothing was changed. Retry the \
                     request."
                ),
            ));
        }
        tracing::info!(
            key_id = %key_id,
            read,
            stored,
            "the key changed on another replica meanwhile; deciding again from its current row"
        );
        let record = self
            .store
            .load_key(key_id.clone())
            .await
            .map_err(GatewayError::internal)?
            .ok_or_else(|| {
                GatewayError::internal(anyhow::anyhow!(
                    "key {key_id} conflicted but is not in the store"
                ))
            })?;
        // Memory ahead of the store means the store went back (restored from a backup) and
        // this replica's feed has not reset yet: the stored row is the truth, whatever its
        // version, or every retry would conflict again. (Should a newer change land between
        // the read and this, the next attempt conflicts and reads it.)
        let store_went_back = self
            .cache
            .get(&record.id)
            .is_some_and(|entry| entry.version > record.version);
        if store_went_back {
            // A revocation the restored row lost is kept here; the feed's reset writes it
            // back (`keys::sync`).
            let _ = self.cache.put_stored(record);
        } else {
            self.cache.upsert(record);
        }
        Ok(())
    }

    /// Starts the key's new reset period at what it spent in it, from the usage rollup (see
    /// `Ledger::restart_period`). Syncing the usage writer first puts every request settled
    /// before the edit in the rollup; syncing again before persisting lets the states queued
    /// with those requests land first, so they cannot overwrite the restarted one.
    async fn restart_period(
        &self,
        entry: &KeyEntry,
        reset: SpendReset,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        self.sync_usage().await?;
        let first_day = TimeZone::UTC.to_datetime(reset.period_start(now)).date();
        let counted = self
            .store
            .counted_spend(entry.id.to_string(), first_day)
            .await?;
        let state = entry.runtime.ledger.restart_period(reset, now, counted);
        self.sync_usage().await?;
        self.store.persist_spend(entry.id.to_string(), state).await
    }

    /// The usage writer's sync, bounded: a database that started failing after the edit
    /// committed keeps the writer retrying, and an edit must not wait on it.
    async fn sync_usage(&self) -> anyhow::Result<()> {
        tokio::time::timeout(USAGE_SYNC_TIMEOUT, self.usage.sync())
            .await
            .map_err(|_| {
                anyhow::anyhow!("the usage writer did not catch up within {USAGE_SYNC_TIMEOUT:?}")
            })
    }

    /// Revokes a key now. Revoking a revoked key changes nothing and is not an error.
    pub async fn revoke(&self, actor: &Actor, id: &str) -> Result<KeyView> {
        let _serialised = self.writes.lock().await;
        let now = self.clock.now();
        let mut attempt = 1;
        let entry = loop {
            let old = self.find(id)?;
            if old.is_revoked_at(now) {
                return Ok(self.cache.view(&old, now));
            }
            let mut new = old.record();
            new.revoked_at = Some(now);
            new.updated_at = now;
            let audit = audit(
                now,
                actor,
                "key.revoke",
                new.id.clone(),
                json!({"name": new.name, "prefix": new.prefix}),
            );
            match self.write_key(new.clone(), audit, attempt).await? {
                Some(version) => {
                    new.version = version;
                    break self.cache.upsert(new);
                }
                None => attempt += 1,
            }
        };
        tracing::info!(key_id = %entry.id, actor = %actor.0, "key revoked");
        self.publish(&entry).await;
        Ok(self.cache.view(&entry, now))
    }

    /// A new secret with the same settings; the old key keeps working for the grace period,
    /// then is revoked (0: now). Both steps are audited, in one transaction.
    pub async fn rotate(&self, actor: &Actor, id: &str, request: RotateKey) -> Result<KeyRotated> {
        if request.grace_period_seconds > ROTATE_GRACE_MAX_SECONDS {
            return Err(FieldError::invalid(
                "grace_period_seconds",
                format!("must be at most {ROTATE_GRACE_MAX_SECONDS} (90 days)"),
            )
            .into());
        }
        let _serialised = self.writes.lock().await;
        let now = self.clock.now();
        let secret = ProxyKey::generate().map_err(random_failed)?;
        let new_id = new_key_id().map_err(random_failed)?;
        let mut attempt = 1;
        let (previous, new) = loop {
            let old = self.find(id)?;
            let (mut previous, new, audits) =
                rotation(&old, &secret, &new_id, actor, &request, now)?;
            let written = self
                .store
                .rotate_key(previous.clone(), new.clone(), audits)
                .await
                .map_err(GatewayError::internal)?;
            match written {
                Ok(version) => {
                    previous.version = version;
                    break (previous, new);
                }
                Err(conflict) => self.reload(conflict, attempt).await?,
            }
            attempt += 1;
        };
        let previous = self.cache.upsert(previous);
        let created = self.cache.insert_successor(new, &previous);
        self.publish(&previous).await;
        tracing::info!(key_id = %previous.id, new_key_id = %created.id, actor = %actor.0, "key rotated");
        Ok(KeyRotated {
            created: KeyCreated {
                key: self.cache.view(&created, now),
                secret: secret.expose().to_owned(),
            },
            previous: self.cache.view(&previous, now),
        })
    }

    pub async fn get(&self, id: &str) -> Result<KeyView> {
        let key = self.find(id)?;
        let mut views = [self.cache.view(&key, self.clock.now())];
        self.with_shared_totals(&mut views).await?;
        let [view] = views;
        Ok(view)
    }

    /// In a cluster, each key's request count, total spend and last use are the whole
    /// cluster's (SPEC §9: any replica "sees the whole cluster"), from the store's totals
    /// after this replica's own queued usage is written; this replica's memory counts only
    /// the requests it served itself since it loaded the key. One server: nothing to do.
    async fn with_shared_totals(&self, views: &mut [KeyView]) -> Result<()> {
        if self.store.backend() != "postgres" || views.is_empty() {
            return Ok(());
        }
        self.usage.sync().await;
        let ids = views.iter().map(|view| view.id.clone()).collect();
        let Some(totals) = self
            .store
            .shared_totals(ids)
            .await
            .map_err(GatewayError::internal)?
        else {
            return Ok(());
        };
        for view in views.iter_mut() {
            if let Some(shared) = totals.get(&view.id) {
                view.request_count = shared.request_count;
                view.spend_total_usd = shared.spend_total;
                view.last_used_at = Some(shared.last_used_at);
            }
        }
        // The period's spend as the shared ledger counts it (Redis), the same on every
        // replica; this replica's ledger counts only what it served.
        if let Some(shared) = &self.shared {
            if views.iter().any(|v| v.spend_limit_usd.is_some()) {
                // Once for the page: what this replica served is counted.
                shared.flush_settlements().await;
            }
            for view in views.iter_mut().filter(|v| v.spend_limit_usd.is_some()) {
                let Some(entry) = self.cache.get(&view.id) else {
                    continue;
                };
                match shared.shared_period(&entry).await {
                    Some(period) => {
                        view.spend_period_usd = period;
                        view.state = entry.state_with_period(self.clock.now(), period);
                    }
                    // Redis away: the rest of the page keeps this replica's figures rather
                    // than waiting a timeout per key.
                    None => break,
                }
            }
        }
        Ok(())
    }

    pub async fn list(
        &self,
        state: Option<KeyState>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<KeyList> {
        let now = self.clock.now();
        let (records, next_cursor) = self
            .cache
            .page(cursor, limit, |record| {
                state.is_none_or(|s| record.state_at(now) == s)
            })
            .ok_or_else(|| {
                FieldError::invalid(
                    "cursor",
                    "does not name a key; pass the next_cursor of a previous page",
                )
            })?;
        let mut keys: Vec<KeyView> = records.iter().map(|r| self.cache.view(r, now)).collect();
        self.with_shared_totals(&mut keys).await?;
        Ok(KeyList { keys, next_cursor })
    }

    pub async fn audit(
        &self,
        key_id: Option<String>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<AuditList> {
        let before_id = match cursor {
            None => None,
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                GatewayError::from(FieldError::invalid(
                    "cursor",
                    "is not a cursor from a previous page",
                ))
            })?),
        };
        let query = AuditQuery {
            key_id,
            before_id,
            limit: limit + 1,
        };
        let mut entries = self
            .store
            .list_audit(query)
            .await
            .map_err(GatewayError::internal)?;
        let next_cursor = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(AuditList {
            entries,
            next_cursor,
        })
    }

    /// Spend and requests of a key over UTC days `from..=to` (default: the last 30 days).
    pub async fn usage(
        &self,
        id: &str,
        from: Option<jiff::civil::Date>,
        to: Option<jiff::civil::Date>,
    ) -> Result<gateway_shared::api::UsageReport> {
        self.find(id)?;
        let today = jiff::tz::TimeZone::UTC.to_datetime(self.clock.now()).date();
        let to = to.unwrap_or(today);
        let from = match from {
            Some(from) => from,
            None => to.checked_sub(jiff::ToSpan::days(29)).unwrap_or(to),
        };
        if from > to {
            return Err(FieldError::invalid("from", "must not be after to").into());
        }
        if to
            .since(from)
            .map_or(true, |span| span.get_days() > 366 * 2)
        {
            return Err(FieldError::invalid("from", "the range may span at most two years").into());
        }
        self.store
            .usage_report(id.to_owned(), from, to)
            .await
            .map_err(GatewayError::internal)
    }

    fn find(&self, id: &str) -> Result<Arc<KeyEntry>> {
        self.cache.get(id).ok_or_else(|| {
            GatewayError::new(
                ErrorCode::KeyNotFound,
                format!("No key has the id {:?}.", redact_secrets(id)),
            )
        })
    }
}

fn random_failed(err: impl std::fmt::Display) -> GatewayError {
    GatewayError::internal(anyhow::anyhow!("OS random source: {err}"))
}
