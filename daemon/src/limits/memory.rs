//! One server's limits: the key's exact rolling window and its spend ledger, both in the
//! key table's memory (`KeyRuntime`), behind std mutexes held for a few comparisons.
//!
//! This is the code of the pipeline's steps 8 and 9 as it was in `proxy/mod.rs`, moved
//! behind [`super::Limits`] without change: the single-server benchmark must not move. In a
//! cluster it is not used: the shared engine decides, and the key's ledger only meters.

use std::sync::Arc;

use jiff::Timestamp;

use super::rate::RateDecision;
use super::{Admitted, SpendAsk, rate_refused, spend_refused};
use crate::clock::Clock;
use crate::error::GatewayError;
use crate::keys::KeyEntry;
use crate::spend::ledger::Reserve;
use crate::store::usage::RecordId;

pub struct MemoryLimits {
    /// The monotonic clock the windows run on (a wall-clock step can neither open nor close
    /// a window).
    clock: Arc<dyn Clock>,
}

impl MemoryLimits {
    pub fn new(clock: Arc<dyn Clock>) -> MemoryLimits {
        MemoryLimits { clock }
    }

    /// Steps 8 and 9: the window, then the price and the reservation.
    pub fn admit(
        &self,
        key: &KeyEntry,
        now: Timestamp,
        spend: impl FnOnce() -> Result<SpendAsk, GatewayError>,
    ) -> Result<Admitted, GatewayError> {
        let rate = self.admit_rate(key)?;
        let reserved = spend().and_then(|spend| {
            key.runtime
                .reserve_at(now, key.spend_limit, key.spend_reset, &spend.ask)
                .map(|reservation| (spend.price, reservation))
                .map_err(|refusal| spend_refused(refusal, key.spend_limit))
        });
        match reserved {
            Ok((price, reservation)) => Ok(Admitted {
                rate,
                price,
                reservation,
                record_id: RecordId::UNASSIGNED,
            }),
            Err(err) => {
                // Refused after the rate step admitted it: refused requests do not count.
                self.revert(key, rate.as_ref());
                Err(err)
            }
        }
    }

    /// Gives back the rate window's slot of a request refused after it was admitted there:
    /// refused requests do not count (SPEC §4).
    pub fn revert(&self, key: &KeyEntry, decision: Option<&RateDecision>) {
        if let Some(decision) = decision {
            key.runtime
                .rate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .revert(decision.at);
        }
    }

    /// The window as it stands, without admitting anything.
    pub fn rate_headroom(&self, key: &KeyEntry) -> Option<RateDecision> {
        key.rate_limit_rpm.map(|limit| {
            key.runtime
                .rate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .peek(self.clock.monotonic(), limit)
        })
    }

    /// Step 8: SPEC §4's exact window. Only admitted requests count.
    fn admit_rate(&self, key: &KeyEntry) -> Result<Option<RateDecision>, GatewayError> {
        let Some(limit) = key.rate_limit_rpm else {
            return Ok(None);
        };
        let decision = key
            .runtime
            .rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(self.clock.monotonic(), limit);
        if decision.admitted {
            return Ok(Some(decision));
        }
        Err(rate_refused(&decision))
    }
}
