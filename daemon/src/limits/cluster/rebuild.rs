//! Rebuilding a ledger Redis does not have (first use, a Redis restarted empty, FLUSHALL):
//! the admission answered `NeedRebuild { period_start }`, so the period's spend is summed
//! from the durable store (`Store::period_spend`, every key of the owner: a rotated pair
//! shares one ledger) and seeded with the keys' versions, before the admission is retried.
//! Why from the store: it holds every settled request's usage record, so the cap still
//! holds after Redis lost its data; what was held by requests in flight is lost with it
//! (their records still reach the store when they finish).
//!
//! `seed` is set-if-absent: two replicas rebuilding at once write one ledger, and a
//! rebuild that lost the race returns `false` (the other's sum is as good).

use gateway_shared::{ErrorCode, SpendReset};
use jiff::Timestamp;

use crate::limits::redis::{LimitsError, RedisLimits};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("reading the period's spend from the store: {0:#}")]
    Store(anyhow::Error),
    #[error(transparent)]
    Limits(#[from] LimitsError),
    #[error("Redis named a period start {0} ms that is not a time")]
    Period(u64),
}

impl RebuildError {
    /// The SPEC code of a request whose ledger could not be rebuilt (SPEC §9.5).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::LimitsUnavailable
    }
}

/// Sums what `keys` (the owner's key ids with their versions) spent in the period starting
/// at `period_start_ms` (as `NeedRebuild` named it; `None`: no reset, their lifetime) and
/// seeds `owner`'s ledger with it under `reset`. `true` when this call seeded it.
pub async fn rebuild(
    redis: &RedisLimits,
    store: &Store,
    owner: &str,
    keys: &[(&str, u64)],
    reset: Option<SpendReset>,
    period_start_ms: Option<u64>,
) -> Result<bool, RebuildError> {
    let since = period_start_ms
        .map(|ms| {
            i64::try_from(ms)
                .ok()
                .and_then(|ms| Timestamp::from_millisecond(ms).ok())
                .ok_or(RebuildError::Period(ms))
        })
        .transpose()?;
    let ids: Vec<String> = keys.iter().map(|(id, _)| (*id).to_owned()).collect();
    let spent = store
        .period_spend(&ids, since)
        .await
        .map_err(RebuildError::Store)?;
    Ok(redis
        .seed(owner, reset, period_start_ms, spent.0, keys)
        .await?)
}
