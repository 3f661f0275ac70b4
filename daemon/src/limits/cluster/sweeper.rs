//! The sweeper: charges the holds whose lease has passed their estimate, and hands each to
//! the caller, which writes its usage record (record id: the hold id, so a settlement that
//! reached the durable store first wins). Why every replica runs one: the holds to sweep
//! are those of a replica that vanished (killed, partitioned), so no replica can be the
//! one to count on; the scripts run one at a time, so two sweepers charge a hold once.
//!
//! It sweeps every min(lease / 4, 5 s): a hold is charged at most that long after its lease
//! passed. While Redis is unavailable it backs off (doubling, up to the same period) and
//! sweeps as soon as Redis answers again. A sweep charges at most `batch` holds; a full
//! one is followed by another at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use crate::limits::redis::{RedisLimits, Swept};

/// Holds charged in one `sweep` call at most.
pub const BATCH: usize = 512;

/// How often a cluster with `lease` sweeps.
pub fn period(lease: Duration) -> Duration {
    (lease / 4)
        .min(Duration::from_secs(5))
        .max(Duration::from_millis(1))
}

/// What a sweeper did, returned when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// `sweep` calls that answered, and the holds they charged.
    pub sweeps: u64,
    pub swept: u64,
    /// Calls that failed (Redis unavailable, or a script error).
    pub failures: u64,
}

/// Sweeps until `stop` is cancelled, handing every charged hold to `on_swept`.
pub async fn run(
    redis: RedisLimits,
    lease: Duration,
    stop: CancellationToken,
    mut on_swept: impl FnMut(Swept) + Send,
) -> SweepStats {
    let every = period(lease);
    let mut backoff = Backoff::new(Duration::from_millis(50).min(every), every);
    let mut stats = SweepStats::default();
    let mut was_failing = false;
    loop {
        let wait = match redis.sweep(BATCH).await {
            Ok(swept) => {
                stats.sweeps += 1;
                stats.swept += swept.len() as u64;
                if was_failing {
                    tracing::info!("Redis answers again: sweeping resumed");
                    was_failing = false;
                }
                backoff.succeeded();
                let full = swept.len() >= BATCH;
                for hold in swept {
                    on_swept(hold);
                }
                if full { Duration::ZERO } else { every }
            }
            Err(error) => {
                stats.failures += 1;
                let wait = backoff.failed();
                if !was_failing {
                    tracing::warn!(%error, "sweeping lapsed holds failed; retrying");
                    was_failing = true;
                }
                wait
            }
        };
        tokio::select! {
            () = stop.cancelled() => return stats,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
