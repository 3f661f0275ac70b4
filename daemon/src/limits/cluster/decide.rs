//! What a replica does with Redis's answer to an admission: the reservation for an
//! admitted request, SPEC §4/§5's refusals for a refused one, a reload for a stale key, a
//! rebuild for a lost ledger. One place, so the request path reads one `match`.

use std::sync::Arc;
use std::time::Duration;

use gateway_shared::{ErrorCode, Nanodollars};
use jiff::Timestamp;

use super::rebuild::rebuild;
use super::{ClusterLimits, Engine, Request, SharedHold, record_of};
use crate::error::GatewayError;
use crate::limits::rate::RateDecision;
use crate::limits::redis::{Outcome, RateInfo};
use crate::limits::{Admitted, Denied, SpendAsk, rate_refused, spend_refused, unavailable};
use crate::spend::ledger::Reserve;
use crate::spend::ledger::SpendRefusal;

impl ClusterLimits {
    /// The admission's answer, decided: `Ok(None)` when the ledger was rebuilt and the
    /// admission is to be sent again.
    pub(super) async fn decide(
        &self,
        engine: &Engine,
        request: &Request<'_>,
        now: Timestamp,
        spend: &SpendAsk,
        outcome: Outcome,
    ) -> Result<Option<Admitted>, Denied> {
        let key = request.key;
        let (amount, clamped, rate, lease_expires_ms) = match outcome {
            Outcome::Admitted {
                held,
                rate,
                lease_expires_ms,
                repeated: _,
            } => {
                // A key without a spend limit holds nothing in Redis (only its estimate,
                // for a sweep): its reservation meters the worst case, as on one server.
                let amount = if key.spend_limit.is_some() {
                    Nanodollars(held)
                } else {
                    spend.ask.worst()
                };
                (amount, None, rate, lease_expires_ms)
            }
            Outcome::Clamped {
                headroom,
                rate,
                lease_expires_ms,
                repeated: _,
            } => {
                let (amount, tokens) = spend.ask.clamped_to(Nanodollars(headroom));
                (amount, Some(tokens), rate, lease_expires_ms)
            }
            Outcome::RateLimited { limit, retry_after } => {
                return Err(rate_refused(&RateDecision {
                    admitted: false,
                    limit,
                    remaining: 0,
                    reset_after: retry_after,
                    at: Duration::ZERO,
                })
                .into());
            }
            Outcome::SpendExhausted { resets_at_ms } => {
                let resets_at = instant(resets_at_ms);
                return Err(
                    spend_refused(SpendRefusal::Exhausted { resets_at }, key.spend_limit).into(),
                );
            }
            Outcome::SpendWouldExceed {
                headroom,
                resets_at_ms,
            } => {
                let refusal = SpendRefusal::WouldExceed {
                    resets_at: instant(resets_at_ms),
                    headroom: Nanodollars(headroom),
                };
                return Err(spend_refused(refusal, key.spend_limit).into());
            }
            Outcome::Stale { version } => {
                tracing::debug!(key_id = %key.id, ours = key.version, shared = version, "the key changed on another replica: reloading it");
                let fresh = self.reload(key).await?;
                if fresh.version >= version {
                    return Err(Denied::Reloaded(fresh));
                }
                // The store is behind Redis: restored from a backup older than a change
                // Redis saw. The store is the truth; its version is published over Redis's
                // is not possible (versions only grow), so the key waits for an operator.
                tracing::warn!(
                    key_id = %key.id,
                    stored = fresh.version,
                    shared = version,
                    "Redis holds a newer version of this key than PostgreSQL (restored from a \
                     backup?): its requests are refused until the cluster's Redis keys are \
                     cleared (see the README)"
                );
                return Err(unavailable().into());
            }
            Outcome::NeedRebuild {
                now_ms: _,
                period_start_ms,
            } => {
                self.rebuild(engine, key, period_start_ms).await?;
                return Ok(None);
            }
            Outcome::AlreadyFinished => {
                tracing::error!(key_id = %key.id, hold = %request.hold, "a new hold id was already finished in Redis");
                return Err(GatewayError::new(
                    ErrorCode::LimitsUnavailable,
                    "The gateway could not admit this request; retry it.",
                )
                .into());
            }
        };
        let shared = (lease_expires_ms > 0).then(|| {
            let owner: Arc<str> = Arc::from(key.owner());
            engine
                .settler
                .open(Arc::clone(&owner), request.hold, spend.ask.worst().0);
            let lease_ms = u64::try_from(self.parts.lease.as_millis()).unwrap_or(u64::MAX);
            SharedHold {
                owner,
                hold: request.hold,
                admitted_ms: lease_expires_ms.saturating_sub(lease_ms),
                settler: engine.settler.clone(),
            }
        });
        let reservation =
            key.runtime
                .reserve_decided(now, key.spend_reset, &spend.ask, amount, clamped, shared);
        Ok(Some(Admitted {
            rate: rate.map(decision),
            price: spend.price,
            reservation,
            record_id: record_of(request.hold),
        }))
    }

    /// Rebuilds the ledger of `key`'s owner from PostgreSQL: the keys sharing it, at their
    /// stored versions (a key this replica holds older is reloaded), and the period's spend.
    pub(super) async fn rebuild(
        &self,
        engine: &Engine,
        key: &crate::keys::KeyEntry,
        period_start_ms: Option<u64>,
    ) -> Result<(), GatewayError> {
        let ids = self.parts.cache.ledger_keys(key);
        let mut versions = Vec::with_capacity(ids.len());
        for id in ids {
            let stored = self.parts.store.load_key(id.clone()).await.map_err(|error| {
                tracing::warn!(key_id = %id, error = format!("{error:#}"), "cannot rebuild a key's shared ledger");
                unavailable()
            })?;
            if let Some(record) = stored {
                versions.push((id, record.version));
                self.parts.cache.apply_stored(record, None);
            }
        }
        let versions: Vec<(&str, u64)> = versions.iter().map(|(id, v)| (id.as_str(), *v)).collect();
        match rebuild(
            &engine.redis,
            &self.parts.store,
            key.owner(),
            &versions,
            // A key without a spend limit counts its lifetime (no period to roll).
            key.spend_limit.and(key.spend_reset),
            period_start_ms,
        )
        .await
        {
            Ok(seeded) => {
                tracing::info!(key_id = %key.id, seeded, "the key's shared ledger was rebuilt from PostgreSQL");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(key_id = %key.id, %error, "cannot rebuild a key's shared ledger");
                Err(unavailable())
            }
        }
    }
}

/// A Redis instant (ms) as a timestamp.
fn instant(ms: Option<u64>) -> Option<Timestamp> {
    ms.and_then(|ms| i64::try_from(ms).ok())
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
}

/// The shared window's answer as the headers want it.
fn decision(rate: RateInfo) -> RateDecision {
    RateDecision {
        admitted: true,
        limit: rate.limit,
        remaining: rate.remaining,
        reset_after: rate.reset_after,
        at: Duration::ZERO,
    }
}
