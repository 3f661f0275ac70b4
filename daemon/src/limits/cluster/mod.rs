//! A cluster replica's limits (SPEC §9, issue #17): what every replica admits together,
//! counted in Redis (`limits::redis`), so that N replicas enforce one limit, not N × it.
//!
//! One admission is one round trip: the key's version, its rate window and its spend hold,
//! all or nothing, on Redis's clock ([`ClusterLimits::admit`]). The replica's own ledger
//! limits nothing here: it meters (the usage record, in-flight counts) and holds what Redis
//! decided. What Redis answers, and what the replica does with it (`decide`):
//! - admitted (or clamped to the shared headroom): the reservation carries a [`SharedHold`],
//!   which the settler (`settler`) settles in a batch when the request ends and renews
//!   while it runs; its id is the request's usage record id, so a sweep's record for the
//!   same hold and the settled one are one row;
//! - refused: 429 or 402 from the shared window and ledger, as on one server;
//! - `Stale`: another replica committed a newer version of the key; it is reloaded from
//!   PostgreSQL and the pipeline checks the fresh entry before admitting again
//!   ([`Denied::Reloaded`]): an edit or revocation applies to the very next request;
//! - `NeedRebuild`: Redis lost the ledger (restart, FLUSHALL): its period spend is summed
//!   from PostgreSQL (`rebuild`) before the key is admitted again.
//!
//! Redis unreachable (or its answer late): a key with a rate or spend limit is refused 503
//! `limits_unavailable`, never enforced from one replica's memory; a key without limits is
//! served, its version compared with PostgreSQL's first (only while Redis is away), so a
//! revoked key stays refused. An admission whose answer was lost may have taken a hold:
//! it is reverted by id in the background (`background`), so it is neither counted twice
//! nor charged. Redis is reached again without a restart: the connection reconnects, and a
//! replica that started while Redis was away connects as soon as it answers.

mod background;
pub mod backoff;
mod decide;
pub mod rebuild;
pub mod settler;
pub mod sweeper;
mod views;

#[cfg(test)]
pub(crate) mod tests;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gateway_shared::{Nanodollars, Provider};
use jiff::Timestamp;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::rate::RateDecision;
use super::{Admitted, Denied, SpendAsk, is_limited, unavailable};
use crate::clock::Clock;
use crate::error::GatewayError;
use crate::health::{Health, LimitsStatus};
use crate::keys::{KeyCache, KeyEntry};
use crate::limits::redis::{self, Admission, HoldId, LimitsError, RedisLimits};
use crate::metrics::Metrics;
use crate::spend::ledger::Reserve;
use crate::store::Store;
use crate::store::usage::RecordId;
use crate::store::writer::UsageWriter;
use settler::{Leftover, Settler};
pub use views::Standing;

/// How long one call to Redis may take before it counts as unavailable: an admission
/// waits at most this (its request then answered 503, or served if its key has no limit).
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Tries to publish a committed change's version before answering without it.
const PUBLISH_ATTEMPTS: u32 = 3;

/// A request's hold in the shared ledger: settled (once) with its reservation.
#[derive(Clone)]
pub struct SharedHold {
    owner: Arc<str>,
    hold: HoldId,
    /// When Redis admitted it (its clock, ms).
    admitted_ms: u64,
    settler: Settler,
}

impl SharedHold {
    /// Queues the settlement of `actual`; never waits.
    pub fn settle(self, actual: Nanodollars) {
        self.settler
            .settle(self.owner, self.hold, actual.0, self.admitted_ms);
    }
}

impl std::fmt::Debug for SharedHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHold")
            .field("owner", &self.owner)
            .field("hold", &self.hold)
            .finish()
    }
}

/// What a replica's limits need from the rest of the daemon.
pub struct ClusterParts {
    pub redis_url: crate::config::SecretUrl,
    /// Where this cluster's keys live in Redis (`gw:<cluster id>`).
    pub prefix: String,
    pub lease: Duration,
    pub store: Store,
    pub cache: Arc<KeyCache>,
    pub usage: UsageWriter,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
}

/// The engine, once Redis answered.
#[derive(Clone)]
struct Engine {
    redis: RedisLimits,
    settler: Settler,
}

pub struct ClusterLimits {
    parts: ClusterParts,
    engine: OnceLock<Engine>,
    /// Versions committed while Redis was away: published when it answers again.
    unpublished: Mutex<Vec<(Arc<str>, String, u64)>>,
    /// Stops the settler: after the proxy drained, so late settlements are still sent.
    settler_stop: CancellationToken,
    settler_task: Mutex<Option<JoinHandle<Leftover>>>,
    newcomer_budget: Budget,
}

/// Look-ups of unknown keys allowed per second, on each replica.
pub const NEWCOMER_LOOKUPS_PER_SECOND: u32 = 50;

/// A per-second allowance.
struct Budget {
    per_second: u32,
    spent: Mutex<(Option<std::time::Instant>, u32)>,
}

impl Budget {
    fn new(per_second: u32) -> Budget {
        Budget {
            per_second,
            spent: Mutex::new((None, 0)),
        }
    }

    /// One more, if this second's allowance is not spent.
    fn take(&self, now: std::time::Instant) -> bool {
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = spent
            .0
            .is_none_or(|since| now.duration_since(since) >= Duration::from_secs(1));
        if fresh {
            *spent = (Some(now), 0);
        }
        if spent.1 >= self.per_second {
            return false;
        }
        spent.1 += 1;
        true
    }
}

/// Ids and labels of one admission.
struct Request<'a> {
    key: &'a KeyEntry,
    hold: HoldId,
    what: &'a str,
}

impl ClusterLimits {
    /// The replica's limits; connects to Redis in the background (at once if it answers,
    /// and keeps trying while it does not) and runs the sweeper and the health probe
    /// until `stop`.
    pub fn start(parts: ClusterParts, stop: CancellationToken) -> Arc<ClusterLimits> {
        parts.health.set_limits(LimitsStatus::Unavailable);
        let limits = Arc::new(ClusterLimits {
            parts,
            engine: OnceLock::new(),
            unpublished: Mutex::new(Vec::new()),
            settler_stop: CancellationToken::new(),
            settler_task: Mutex::new(None),
            newcomer_budget: Budget::new(NEWCOMER_LOOKUPS_PER_SECOND),
        });
        tokio::spawn(background::run(Arc::clone(&limits), stop));
        limits
    }

    /// Steps 8 and 9 against the shared limits. See the module docs.
    pub async fn admit(
        &self,
        key: &KeyEntry,
        now: Timestamp,
        (provider, model): (Provider, &str),
        spend: impl FnOnce() -> Result<SpendAsk, GatewayError>,
    ) -> Result<Admitted, Denied> {
        let spend = match spend() {
            Ok(spend) => spend,
            // SPEC §3 checks the rate before the price: a full window answers 429 first.
            Err(err) => return Err(self.rate_first(key, err).await.into()),
        };
        // Not connected yet, or known to be away (the probe brings it back within
        // `background::PROBE_AWAY`): no request waits for a Redis that does not answer.
        let Some(engine) = self.engine_up() else {
            return self.without_redis(key, now, &spend).await;
        };
        let hold = hold_of(self.parts.usage.next_id());
        let what = format!("{provider}\t{model}");
        let request = Request {
            key,
            hold,
            what: &what,
        };
        for _ in 0..3 {
            let started = std::time::Instant::now();
            // Should this future be dropped while Redis decides (the client went away), the
            // hold the script may take is given back by its id.
            let pending =
                background::Pending::new(&engine.redis, key.owner(), hold, self.parts.lease);
            let answer = engine.redis.admit(&self.admission(&request, &spend)).await;
            pending.answered();
            self.parts
                .metrics
                .limits_admission
                .observe(started.elapsed().as_secs_f64());
            let outcome = match answer {
                Ok(outcome) => {
                    self.redis_answered();
                    outcome
                }
                Err(error) => {
                    self.redis_failed(&error);
                    background::revert_lost(
                        &engine.redis,
                        Arc::from(key.owner()),
                        hold,
                        self.parts.lease,
                    );
                    return self.without_redis(key, now, &spend).await;
                }
            };
            match self.decide(engine, &request, now, &spend, outcome).await? {
                Some(admitted) => return Ok(admitted),
                None => continue, // rebuilt: admit again
            }
        }
        tracing::warn!(key_id = %key.id, "the key's shared ledger kept needing a rebuild");
        Err(unavailable().into())
    }

    fn admission<'a>(&self, request: &Request<'a>, spend: &SpendAsk) -> Admission<'a> {
        let key = request.key;
        let worst = spend.ask.worst();
        Admission {
            owner: key.owner(),
            key_id: &key.id,
            version: key.version,
            hold: request.hold,
            rate_limit: key.rate_limit_rpm,
            spend: key.spend_limit.map(|limit| redis::SpendAsk {
                limit: limit.0,
                reset: key.spend_reset,
                worst: worst.0,
                min: spend.ask.clamp_floor().map(|floor| floor.0),
            }),
            estimate: worst.0,
            lease: self.parts.lease,
            what: request.what,
        }
    }

    /// Redis cannot be asked (unreachable, late, or not connected yet): limited keys are
    /// refused; a key without limits is served once PostgreSQL confirms its version.
    async fn without_redis(
        &self,
        key: &KeyEntry,
        now: Timestamp,
        spend: &SpendAsk,
    ) -> Result<Admitted, Denied> {
        if is_limited(key) {
            return Err(unavailable().into());
        }
        if let Some(fresh) = self.newer_in_store(key).await {
            return Err(Denied::Reloaded(fresh));
        }
        let reservation = key.runtime.reserve_decided(
            now,
            key.spend_reset,
            &spend.ask,
            spend.ask.worst(),
            None,
            None,
        );
        Ok(Admitted {
            rate: None,
            price: spend.price,
            reservation,
            record_id: RecordId::UNASSIGNED,
        })
    }

    /// The key as PostgreSQL has it when that is newer than `key` (put in the table); `None`
    /// when it is not, or when PostgreSQL cannot tell (the change feed then is the only
    /// news of an edit).
    async fn newer_in_store(&self, key: &KeyEntry) -> Option<Arc<KeyEntry>> {
        match self.parts.store.load_key(key.id.to_string()).await {
            Ok(Some(record)) if record.version > key.version => {
                Some(self.parts.cache.apply_stored(record, None))
            }
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(key_id = %key.id, error = format!("{error:#}"), "cannot read the key's version either");
                None
            }
        }
    }

    /// The key's row from PostgreSQL, put in the table: Redis holds a newer version than
    /// this replica decided with. 401 when the store no longer has the key (restored from
    /// a backup made before it).
    async fn reload(&self, key: &KeyEntry) -> Result<Arc<KeyEntry>, GatewayError> {
        let record = self
            .parts
            .store
            .load_key(key.id.to_string())
            .await
            .map_err(|error| {
                tracing::warn!(key_id = %key.id, error = format!("{error:#}"), "cannot reload a key that changed on another replica");
                unavailable()
            })?;
        match record {
            Some(record) => Ok(self.parts.cache.apply_stored(record, None)),
            None => Err(GatewayError::new(
                gateway_shared::ErrorCode::InvalidKey,
                "The API key is not a valid gateway key.",
            )),
        }
    }

    /// Takes back the admission of a request refused after it (its body could not be
    /// rewritten): its window slot and hold are released, free. Waited for, so that the
    /// reservation's settlement (queued when the meter drops) finds the hold finished.
    pub async fn revert(&self, hold: Option<&SharedHold>) {
        let (Some(engine), Some(hold)) = (self.engine.get(), hold) else {
            return;
        };
        if let Err(error) = engine
            .redis
            .revert(&hold.owner, hold.hold, self.parts.lease)
            .await
        {
            self.redis_failed(&error);
            background::revert_lost(
                &engine.redis,
                hold.owner.clone(),
                hold.hold,
                self.parts.lease,
            );
        }
    }

    /// Publishes a committed change's version before the management API answers, so no
    /// replica admits under the old settings. Redis away: kept, and published when it
    /// answers (meanwhile limited keys are refused and the others check PostgreSQL).
    pub async fn publish_version(&self, key: &KeyEntry) {
        let owner: Arc<str> = Arc::from(key.owner());
        if let Some(engine) = self.engine.get() {
            // A moment's trouble (a timeout, a reconnection) is worth a few tries: until the
            // version is published, replicas whose own calls succeed admit under the old
            // settings until the change feed brings the edit.
            for attempt in 0..PUBLISH_ATTEMPTS {
                match engine
                    .redis
                    .publish_version(&owner, &key.id, key.version)
                    .await
                {
                    Ok(_) => {
                        self.redis_answered();
                        return;
                    }
                    Err(error) if attempt + 1 == PUBLISH_ATTEMPTS => self.redis_failed(&error),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            tracing::warn!(key_id = %key.id, version = key.version, "could not publish a key's new version to Redis: published when it answers; replicas apply the change from PostgreSQL's feed meanwhile");
        }
        self.unpublished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((owner, key.id.to_string(), key.version));
    }

    /// After an edit that set a new spend limit or reset period: the shared ledger's period
    /// starts at what the key's ledger keys really spent in it (PostgreSQL's usage), as the
    /// memory engine's `Ledger::restart_period` does. Holds stay held. Redis away: nothing
    /// to restart (a lost ledger is rebuilt from the same sums when it is back).
    pub async fn restart_period(&self, key: &KeyEntry, now: Timestamp) -> anyhow::Result<()> {
        let Some(engine) = self.engine.get() else {
            return Ok(());
        };
        let ids = self.parts.cache.ledger_keys(key);
        let reset = key.spend_reset;
        let since = reset.map(|reset| reset.period_start(now));
        let spent = self.parts.store.period_spend(&ids, since).await?;
        let period_start_ms = since.map(|at| u64::try_from(at.as_millisecond()).unwrap_or(0));
        engine
            .redis
            .restart_period(key.owner(), reset, period_start_ms, spent.0)
            .await?;
        Ok(())
    }

    /// A key this replica does not hold, by the hash of a secret whose checksum is right:
    /// created on another replica a moment ago, before the change feed brought it here
    /// (SPEC §9.3: usable everywhere once create answered). Read from PostgreSQL and put in
    /// the table. Misses are bounded ([`NEWCOMER_LOOKUPS_PER_SECOND`]): a checksum is no
    /// secret, so a flood of made-up keys must not become a flood of queries; beyond the
    /// budget an unknown key is simply unknown.
    pub async fn newcomer(&self, hash: &gateway_shared::KeyHash) -> Option<Arc<KeyEntry>> {
        if !self.newcomer_budget.take(std::time::Instant::now()) {
            return None;
        }
        let record = match self.parts.store.load_key_by_hash(*hash).await {
            Ok(record) => record?,
            Err(error) => {
                tracing::debug!(
                    error = format!("{error:#}"),
                    "cannot look up an unknown key"
                );
                return None;
            }
        };
        let predecessor = self
            .parts
            .store
            .predecessor_of(record.id.clone())
            .await
            .ok()
            .flatten();
        Some(
            self.parts
                .cache
                .apply_stored(record, predecessor.as_deref()),
        )
    }

    /// What `/healthz` reports until the first answer: unavailable.
    pub fn status(&self) -> LimitsStatus {
        self.parts.health.limits()
    }

    /// Stops the settler once no request can settle any more, sending what is queued
    /// (bounded by its drain); what it leaves is swept at the lease, charged its estimate.
    pub async fn shutdown(&self) {
        self.settler_stop.cancel();
        let task = self
            .settler_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task
            && let Ok(leftover) = task.await
            && (leftover.unsent > 0 || leftover.open > 0)
        {
            tracing::warn!(
                unsent = leftover.unsent,
                open = leftover.open,
                "holds left open in Redis at exit: swept at their lease, charged their estimate"
            );
        }
    }

    fn redis_answered(&self) {
        if self.parts.health.limits() != LimitsStatus::Ok {
            tracing::info!("Redis answers: shared limits are enforced again");
            self.parts.health.set_limits(LimitsStatus::Ok);
        }
    }

    /// A call failed: Redis is marked away when it did not answer. A script's error (a bug,
    /// or a window or ledger it cannot read) fails only that call: marking the whole
    /// replica away for it would refuse every limited key for nothing.
    fn redis_failed(&self, error: &LimitsError) {
        if !matches!(error, LimitsError::Unavailable(_)) {
            tracing::error!(%error, "a limits script failed: this call is refused");
            return;
        }
        if self.parts.health.limits() == LimitsStatus::Ok {
            tracing::warn!(%error, "Redis does not answer: keys with limits are refused 503 until it does");
        }
        self.parts.health.set_limits(LimitsStatus::Unavailable);
    }

    /// The engine, when connected and not known to be away: a call to a Redis that does
    /// not answer would wait for the whole timeout (the probe brings it back within
    /// `background::PROBE_AWAY` of its return).
    fn engine_up(&self) -> Option<&Engine> {
        self.engine
            .get()
            .filter(|_| self.parts.health.limits() == LimitsStatus::Ok)
    }

    /// A request refused before its admission (unpriced): 429 instead when the key's window
    /// is full, as SPEC §3 orders the checks. Redis away: the refusal as it is.
    async fn rate_first(&self, key: &KeyEntry, refusal: GatewayError) -> GatewayError {
        let (Some(limit), Some(engine)) = (key.rate_limit_rpm, self.engine_up()) else {
            return refusal;
        };
        match engine
            .redis
            .peek(key.owner(), &key.id, Some(limit), key.spend_reset)
            .await
        {
            Ok(peek) => match peek.rate {
                Some(rate) if rate.remaining == 0 => super::rate_refused(&RateDecision {
                    admitted: false,
                    limit,
                    remaining: 0,
                    reset_after: rate.reset_after,
                    at: Duration::ZERO,
                }),
                _ => refusal,
            },
            Err(_) => refusal,
        }
    }
}

/// A usage record id as a hold id: the same two numbers.
fn hold_of(id: RecordId) -> HoldId {
    HoldId {
        instance: id.instance,
        seq: id.seq,
    }
}

/// The record id a hold names.
fn record_of(hold: HoldId) -> RecordId {
    RecordId {
        instance: hold.instance,
        seq: hold.seq,
    }
}
