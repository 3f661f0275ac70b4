//! What a replica's shared limits do off the request path: connect to Redis (at start-up,
//! and for as long as it does not answer), then run the settler, the sweeper and a probe
//! that notices Redis answering again (health, and the versions committed while it was
//! away); and revert admissions whose answers were lost.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use gateway_shared::{Nanodollars, Provider};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::settler::{Settler, SettlerConfig};
use super::{ClusterLimits, Engine, REDIS_TIMEOUT, record_of, sweeper};
use crate::health::LimitsStatus;
use crate::limits::redis::{HoldId, RedisLimits, Swept};
use crate::spend::ledger::SpendState;
use crate::spend::price::Tokens;
use crate::store::usage::{CostSource, UsageRecord};

/// How often the probe asks Redis while it is away (and publishes what waits): admissions
/// do not ask it meanwhile, so this is how soon service resumes once it answers.
pub(super) const PROBE_AWAY: Duration = Duration::from_millis(250);

/// Connects, then runs the sweeper and the probe, until `stop`.
pub(super) async fn run(limits: Arc<ClusterLimits>, stop: CancellationToken) {
    let Some(redis) = connect(&limits, &stop).await else {
        return;
    };
    let (settler, task) = Settler::spawn(
        redis.clone(),
        SettlerConfig::new(limits.parts.lease),
        limits.settler_stop.clone(),
    );
    *limits
        .settler_task
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(task);
    let engine = Engine {
        redis: redis.clone(),
        settler,
    };
    if limits.engine.set(engine).is_err() {
        return;
    }
    limits.redis_answered();
    let writer = limits.parts.usage.clone();
    let clock = Arc::clone(&limits.parts.clock);
    tokio::spawn(sweeper::run(
        redis.clone(),
        limits.parts.lease,
        stop.clone(),
        move |swept| writer.record(swept_record(swept, clock.now())),
    ));
    probe(&limits, &redis, &stop).await;
}

/// Connects to Redis, retrying (doubling up to 5 s) until it answers or `stop`.
async fn connect(limits: &ClusterLimits, stop: &CancellationToken) -> Option<RedisLimits> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut logged = false;
    loop {
        match RedisLimits::connect(&limits.parts.redis_url, &limits.parts.prefix, REDIS_TIMEOUT)
            .await
        {
            Ok(redis) => {
                tracing::info!(redis = %limits.parts.redis_url, "connected to Redis: shared limits enforced");
                return Some(redis);
            }
            Err(error) => {
                if !logged {
                    tracing::warn!(%error, "cannot reach Redis: keys with limits are refused 503 until it answers; retrying");
                    logged = true;
                }
                limits.parts.health.set_limits(LimitsStatus::Unavailable);
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(backoff.failed()) => {}
        }
    }
}

/// While Redis is away (or versions wait to be published): asks it every second.
async fn probe(limits: &ClusterLimits, redis: &RedisLimits, stop: &CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PROBE_AWAY) => {}
        }
        let waiting = !limits
            .unpublished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if limits.parts.health.limits() == LimitsStatus::Ok && !waiting {
            continue;
        }
        match redis.ping().await {
            Ok(()) => {
                publish_waiting(limits, redis).await;
                limits.redis_answered();
            }
            Err(error) => limits.redis_failed(&error),
        }
    }
}

/// Publishes the versions committed while Redis was away.
async fn publish_waiting(limits: &ClusterLimits, redis: &RedisLimits) {
    let waiting =
        std::mem::take(&mut *limits.unpublished.lock().unwrap_or_else(|p| p.into_inner()));
    for (i, (owner, key_id, version)) in waiting.iter().enumerate() {
        if let Err(error) = redis.publish_version(owner, key_id, *version).await {
            limits.redis_failed(&error);
            limits
                .unpublished
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(waiting[i..].iter().cloned());
            return;
        }
    }
}

/// An admission whose answer was lost may have taken a window slot and a hold: reverted by
/// its id, retried until Redis answers (for as long as a lease: after that, the hold would
/// have been swept anyway). The id is marked finished, so the admission, should it arrive
/// late, is not admitted.
pub(super) fn revert_lost(redis: &RedisLimits, owner: Arc<str>, hold: HoldId, lease: Duration) {
    let redis = redis.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + lease;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            match redis.revert(&owner, hold, lease).await {
                Ok(_) => return,
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(%hold, %error, "could not take back an admission whose answer was lost: swept at its lease");
                    return;
                }
                Err(_) => tokio::time::sleep(backoff.failed()).await,
            }
        }
    });
}

/// An admission out in Redis: if its future is dropped before the answer (the client went
/// away, a drain's deadline), the hold it may have taken is reverted by id.
pub(super) struct Pending<'a> {
    redis: &'a RedisLimits,
    owner: &'a str,
    hold: HoldId,
    lease: Duration,
    armed: bool,
}

impl<'a> Pending<'a> {
    pub(super) fn new(
        redis: &'a RedisLimits,
        owner: &'a str,
        hold: HoldId,
        lease: Duration,
    ) -> Pending<'a> {
        Pending {
            redis,
            owner,
            hold,
            lease,
            armed: true,
        }
    }

    /// The answer arrived: whatever it was, the caller decides from here.
    pub(super) fn answered(mut self) {
        self.armed = false;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            revert_lost(self.redis, Arc::from(self.owner), self.hold, self.lease);
        }
    }
}

/// The usage record of a hold the sweeper charged: its estimate, `estimated`, under the
/// hold's own id (a settlement that reached the store first wins).
fn swept_record(swept: Swept, at: jiff::Timestamp) -> UsageRecord {
    let (provider, model) = swept.what.split_once('\t').unwrap_or(("", ""));
    let provider = Provider::from_str(provider).unwrap_or(Provider::Openai);
    tracing::info!(key_id = %swept.key_id, hold = %swept.hold, estimate = swept.estimate, "a hold outlived its lease (its replica is gone): charged its estimate");
    UsageRecord {
        id: record_of(swept.hold),
        key_id: swept.key_id.into(),
        at,
        provider,
        model: model.into(),
        status: 0,
        tokens: Tokens::default(),
        cost: Nanodollars(swept.estimate),
        latency_ms: 0,
        source: CostSource::Estimated,
        over_allowed: false,
        spend: SpendState::default(),
        journaled_hold: None,
    }
}
