//! Per-key limits on the request path: steps 8 and 9 of the pipeline (rate, then the spend
//! reservation) behind one value, [`Limits`], so that the pipeline reads the same for one
//! server and for a cluster (docs/cluster-design.md, "Limits").
//!
//! `Limits` is an enum, not a trait object: two engines, and the `match` puts each
//! operation's two implementations side by side without boxing anything on the hot path.
//!
//! - [`Limits::Memory`] (one server): the exact rolling window (`rate`) and the key's spend
//!   ledger, in the key table's memory. This is the code that was in `proxy/mod.rs`, moved
//!   as it was: the one-server path costs one `match` more, nothing else.
//! - [`Limits::Cluster`] (`[cluster]` configured): limits shared by every replica, counted
//!   in Redis (`cluster`, `redis`): one round trip to admit, a batched one to settle.
//!
//! An admission is refused with the SPEC's error ([`Denied::Refused`]) or, in a cluster, sent
//! back because the key changed on another replica ([`Denied::Reloaded`]): the pipeline then
//! checks the fresh entry and admits again.

pub mod cluster;
pub mod memory;
pub mod rate;
pub mod redis;

use std::sync::Arc;

use gateway_shared::{ErrorCode, Nanodollars, Provider};
use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;

use crate::error::GatewayError;
use crate::health::LimitsStatus;
use crate::keys::KeyEntry;
use crate::spend::ledger::{Ask, Reservation, SpendRefusal};
use crate::spend::price::Price;
use crate::store::usage::RecordId;
pub use cluster::Standing;
use rate::RateDecision;

/// The engine that admits requests against their key's limits.
pub enum Limits {
    /// One server: windows and ledgers in memory.
    Memory(memory::MemoryLimits),
    /// A replica of a cluster: limits shared through Redis.
    Cluster(Arc<cluster::ClusterLimits>),
}

/// Why a request was not admitted.
pub enum Denied {
    /// Refused: the SPEC's answer.
    Refused(GatewayError),
    /// The key changed on another replica: this is it now, to check and admit again.
    Reloaded(Arc<KeyEntry>),
}

impl From<GatewayError> for Denied {
    fn from(err: GatewayError) -> Denied {
        Denied::Refused(err)
    }
}

/// What step 9 asks of the key's ledger: the request's price (`None`: unpriced, counted as
/// such) and its worst case.
#[derive(Clone, Copy, Debug)]
pub struct SpendAsk {
    pub price: Option<Price>,
    pub ask: Ask,
}

/// A request admitted by every limit of its key.
#[must_use = "the reservation settles the request; dropping it settles the estimate"]
pub struct Admitted {
    /// The window's answer, for the `x-ratelimit-*` headers; `None` without a rate limit.
    pub rate: Option<RateDecision>,
    pub price: Option<Price>,
    /// The request's worst case, held until it settles (it may carry a clamp).
    pub reservation: Reservation,
    /// Its usage record's id, drawn at admission in a cluster (its hold in Redis is named
    /// by it); unassigned on one server (the usage writer numbers the record).
    pub record_id: RecordId,
}

impl Limits {
    /// Steps 8 and 9 in one call, all or nothing: the rate window (429
    /// `rate_limit_exceeded`), then `spend` prices the request (403 `model_not_priced`, after
    /// the rate check as SPEC §3 orders them) and the ledger reserves its worst case (402
    /// `spend_limit_exceeded`). A refusal after the window admitted the request takes the
    /// admission back: refused requests do not count (SPEC §4).
    ///
    /// `async` for the shared engine, whose admission is a round trip to Redis; the memory
    /// engine's future is ready at once and never yields. `label` (provider, model) goes
    /// with a shared hold, for the usage record a sweep may have to write.
    pub async fn admit(
        &self,
        key: &KeyEntry,
        now: Timestamp,
        label: (Provider, &str),
        spend: impl FnOnce() -> Result<SpendAsk, GatewayError>,
    ) -> Result<Admitted, Denied> {
        match self {
            Limits::Memory(memory) => memory.admit(key, now, spend).map_err(Denied::Refused),
            Limits::Cluster(cluster) => cluster.admit(key, now, label, spend).await,
        }
    }

    /// Takes back the admission of a request refused after [`Limits::admit`] (a body that
    /// could not be rewritten): refused requests do not count. `reservation`: the
    /// admission's, not settled yet.
    pub async fn revert(
        &self,
        key: &KeyEntry,
        rate: Option<&RateDecision>,
        reservation: Option<&Reservation>,
    ) {
        match self {
            Limits::Memory(memory) => memory.revert(key, rate),
            Limits::Cluster(cluster) => {
                cluster
                    .revert(reservation.and_then(Reservation::shared))
                    .await;
            }
        }
    }

    /// The key's standing for self-service, without admitting anything. In a cluster, the
    /// shared numbers; a key with limits is refused 503 while they cannot be read.
    pub async fn standing(&self, key: &KeyEntry) -> Result<Standing, GatewayError> {
        match self {
            Limits::Memory(memory) => Ok(Standing {
                rate: memory.rate_headroom(key),
                shared: None,
            }),
            Limits::Cluster(cluster) => cluster.standing(key).await,
        }
    }

    /// What `/healthz` reports for this engine when it starts.
    pub fn status(&self) -> LimitsStatus {
        match self {
            Limits::Memory(_) => LimitsStatus::Ok,
            Limits::Cluster(cluster) => cluster.status(),
        }
    }
}

/// Whether `key` has a limit a shared engine must enforce.
pub fn is_limited(key: &KeyEntry) -> bool {
    key.rate_limit_rpm.is_some() || key.spend_limit.is_some()
}

/// 429 `rate_limit_exceeded` for a full window, with `Retry-After` and SPEC §4's headers.
pub fn rate_refused(decision: &RateDecision) -> GatewayError {
    let retry_after = rate::retry_after_secs(decision.reset_after);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
    set_rate_headers(&mut headers, decision);
    GatewayError::new(
        ErrorCode::RateLimitExceeded,
        format!(
            "This key allows {} requests per minute; retry in {retry_after} s.",
            decision.limit
        ),
    )
    .with_headers(headers)
}

/// 402 `spend_limit_exceeded`.
pub fn spend_refused(refusal: SpendRefusal, limit: Option<Nanodollars>) -> GatewayError {
    let limit = limit.unwrap_or_default();
    let reset = |at: Option<Timestamp>| match at {
        Some(at) => format!("it resets at {at}"),
        None => "it is a lifetime limit and does not reset".to_owned(),
    };
    let message = match refusal {
        SpendRefusal::Exhausted { resets_at } => {
            format!(
                "This key has reached its spend limit of {limit}; {}.",
                reset(resets_at)
            )
        }
        SpendRefusal::WouldExceed {
            resets_at,
            headroom,
        } => format!(
            "This request could cost more than the {headroom} left of this key's spend limit of {limit}; \
             lower max_tokens or wait: {}.",
            reset(resets_at)
        ),
    };
    GatewayError::new(ErrorCode::SpendLimitExceeded, message)
}

/// 503 `limits_unavailable` (SPEC §9.5).
pub fn unavailable() -> GatewayError {
    GatewayError::new(
        ErrorCode::LimitsUnavailable,
        "This key has a rate or spend limit, and the gateway cannot reach the store that \
         counts limits across its replicas; retry shortly. Keys without limits are not \
         affected.",
    )
}

// Static names: a `&str` name is parsed and validated again on every insert or remove.
pub const RATE_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
pub const RATE_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
pub const RATE_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
/// SPEC §4's headers: the gateway's own limit replaces a provider's account-wide one.
pub const RATE_HEADERS: [HeaderName; 3] = [RATE_LIMIT, RATE_REMAINING, RATE_RESET];

/// Writes SPEC §4's `x-ratelimit-*` headers for `decision`.
pub fn set_rate_headers(headers: &mut HeaderMap, decision: &RateDecision) {
    headers.insert(RATE_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(RATE_REMAINING, HeaderValue::from(decision.remaining));
    if let Ok(reset) = HeaderValue::from_bytes(rate::format_reset(decision.reset_after).as_bytes())
    {
        headers.insert(RATE_RESET, reset);
    }
}

#[cfg(test)]
mod tests;
