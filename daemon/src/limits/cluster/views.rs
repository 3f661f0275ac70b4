//! What self-service (`GET /gateway/v1/key`) and the management key views show of a key's
//! limits in a cluster: the shared window and ledger as Redis has them (`peek`, nothing
//! changed), so every replica answers the same numbers.

use gateway_shared::Nanodollars;
use jiff::Timestamp;

use super::ClusterLimits;
use crate::error::GatewayError;
use crate::keys::KeyEntry;
use crate::limits::rate::RateDecision;
use crate::limits::redis::Peek;
use crate::limits::unavailable;

/// A key's standing against its limits, as self-service shows it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Standing {
    /// The window's headroom; `None` without a rate limit.
    pub rate: Option<RateDecision>,
    /// The whole cluster's spend; `None`: the replica's own ledger is the truth (one server).
    pub shared: Option<SharedSpend>,
}

/// A ledger's state across the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedSpend {
    /// Spent in the current period (the key's lifetime without a reset).
    pub period: Nanodollars,
    /// Held by requests in flight on any replica.
    pub held: Nanodollars,
    pub open_holds: u64,
    /// The key's lifetime spend across the cluster (PostgreSQL's totals); `None` when the
    /// store cannot say.
    pub total: Option<Nanodollars>,
}

impl ClusterLimits {
    /// The key's standing, from Redis. A key with limits is refused 503 while Redis is away
    /// (its requests are, too); one without is shown as this replica has it.
    pub async fn standing(&self, key: &KeyEntry) -> Result<Standing, GatewayError> {
        self.flush_settlements().await;
        match self.peek(key).await {
            Ok(Some(peek)) => Ok(Standing {
                rate: peek.rate.map(|rate| RateDecision {
                    admitted: true,
                    limit: rate.limit,
                    remaining: rate.remaining,
                    reset_after: rate.reset_after,
                    at: std::time::Duration::ZERO,
                }),
                shared: Some(SharedSpend {
                    period: Nanodollars(peek.spent),
                    held: Nanodollars(peek.held),
                    open_holds: peek.open_holds,
                    total: self.total(key).await,
                }),
            }),
            Ok(None) | Err(_) if super::is_limited(key) => Err(unavailable()),
            Ok(None) | Err(_) => Ok(Standing::default()),
        }
    }

    /// The lifetime spend of `key` as PostgreSQL sums it, after this replica's queued usage
    /// (bounded: a store that does not answer leaves it out).
    async fn total(&self, key: &KeyEntry) -> Option<Nanodollars> {
        let read = async {
            self.parts.usage.sync().await;
            self.parts
                .store
                .shared_totals(vec![key.id.to_string()])
                .await
        };
        match tokio::time::timeout(super::REDIS_TIMEOUT, read).await {
            Ok(Ok(Some(totals))) => Some(
                totals
                    .get(key.id.as_str())
                    .map_or(Nanodollars::ZERO, |t| t.spend_total),
            ),
            _ => None,
        }
    }

    /// Sends this replica's queued settlements to Redis and waits until it confirmed them,
    /// bounded by [`super::REDIS_TIMEOUT`], so a view read next counts every request this
    /// replica has finished, as one server's does (another replica's view may trail it by
    /// the settler's gather window). Once per view, or per page of views: a settler that
    /// keeps failing costs a page one timeout, not one a key. Returns whether it answered
    /// (true at once without Redis: there is nothing to wait for).
    pub async fn flush_settlements(&self) -> bool {
        let Some(engine) = self.engine_up() else {
            return true;
        };
        tokio::time::timeout(super::REDIS_TIMEOUT, engine.settler.flush())
            .await
            .is_ok()
    }

    /// The period's spend across the cluster, for the management views (after
    /// [`ClusterLimits::flush_settlements`]); `None` when Redis cannot say (the view keeps
    /// this replica's figure).
    pub async fn shared_period(&self, key: &KeyEntry) -> Option<Nanodollars> {
        self.peek(key)
            .await
            .ok()
            .flatten()
            .map(|peek| Nanodollars(peek.spent))
    }

    /// The owner's shared state; a ledger Redis lost is rebuilt first. `None` without Redis
    /// (not connected, or known to be away: no view waits for it).
    async fn peek(&self, key: &KeyEntry) -> Result<Option<Peek>, GatewayError> {
        let Some(engine) = self.engine_up() else {
            return Ok(None);
        };
        for _ in 0..2 {
            let peek = engine
                .redis
                .peek(key.owner(), &key.id, key.rate_limit_rpm, key.spend_reset)
                .await
                .map_err(|error| {
                    self.redis_failed(&error);
                    unavailable()
                })?;
            if peek.seeded {
                return Ok(Some(peek));
            }
            let now = i64::try_from(peek.now_ms)
                .ok()
                .and_then(|ms| Timestamp::from_millisecond(ms).ok())
                .unwrap_or_else(|| self.parts.clock.now());
            let period_start_ms = key
                .spend_limit
                .and(key.spend_reset)
                .map(|reset| u64::try_from(reset.period_start(now).as_millisecond()).unwrap_or(0));
            self.rebuild(engine, key, period_start_ms).await?;
        }
        Err(unavailable())
    }
}
