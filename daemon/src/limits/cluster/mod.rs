//! A cluster replica's limits (SPEC §9): what every replica admits together.
//!
//! The shared engine (Redis: rate windows, spend ledgers and holds counted across
//! replicas, issue #17) is not built yet. Until it is, this engine never enforces a limit
//! from the replica's own memory: that would let each of N replicas admit the whole limit
//! (N × the rate, N × the cap), the failure SPEC §9.5 forbids. So a key with a rate or a
//! spend limit is refused 503 `limits_unavailable`, on its requests and on self-service,
//! while a key without limits is served exactly as on one server: its ledger in memory only
//! meters its requests (the usage records are what every replica shares), it limits nothing.
//!
//! `/healthz` reports the limits engine as `none` meanwhile: every replica would refuse the
//! same keys, so taking this one out of a load balancer would help no request.

pub mod backoff;
pub mod rebuild;
pub mod settler;
pub mod sweeper;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use jiff::Timestamp;

use super::memory::MemoryLimits;
use super::rate::RateDecision;
use super::{Admitted, SpendAsk, is_limited, unavailable};
use crate::clock::Clock;
use crate::error::GatewayError;
use crate::health::LimitsStatus;
use crate::keys::KeyEntry;

pub struct ClusterLimits {
    /// Meters the keys without limits; never consulted for a key with one.
    unlimited: MemoryLimits,
}

impl ClusterLimits {
    /// A replica with no shared limits engine: keys with limits are refused.
    pub fn without_engine(clock: Arc<dyn Clock>) -> ClusterLimits {
        ClusterLimits {
            unlimited: MemoryLimits::new(clock),
        }
    }

    pub async fn admit(
        &self,
        key: &KeyEntry,
        now: Timestamp,
        spend: impl FnOnce() -> Result<SpendAsk, GatewayError>,
    ) -> Result<Admitted, GatewayError> {
        if is_limited(key) {
            return Err(unavailable());
        }
        // No rate limit (no window is touched) and no spend limit (the reservation cannot
        // be refused): the memory engine only meters this key.
        self.unlimited.admit(key, now, spend)
    }

    pub fn revert(&self, key: &KeyEntry, rate: Option<&RateDecision>) {
        // Only keys without a rate limit are admitted, so there is no admission to take back;
        // passed on so that a decision, if there ever is one, is never leaked.
        self.unlimited.revert(key, rate);
    }

    pub fn rate_headroom(&self, key: &KeyEntry) -> Result<Option<RateDecision>, GatewayError> {
        if is_limited(key) {
            return Err(unavailable());
        }
        Ok(None)
    }

    pub fn status(&self) -> LimitsStatus {
        LimitsStatus::None
    }
}
