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
//! - [`Limits::Cluster`] (`[cluster]` configured): limits shared by every replica. Until the
//!   shared engine (Redis, issue #17) is built, a key with a rate or a spend limit is refused
//!   503 `limits_unavailable` (SPEC §9.5): enforcing it from one replica's memory would let
//!   each replica admit the whole limit. Keys without limits are served as on one server
//!   (their ledger only meters; it limits nothing).
//!
//! Self-service (`GET /gateway/v1/key`, [`Limits::rate_headroom`]) follows the same rule: in
//! cluster mode a key with limits answers the same 503 its requests get, rather than this
//! replica's window and reservations shown as if they were the cluster's; a key without
//! limits has no headroom to show, and its `reserved_usd`/`requests_in_flight` are the
//! requests in flight on the replica that answers.

pub mod cluster;
pub mod memory;
pub mod rate;
pub mod redis;

use std::sync::Arc;

use gateway_shared::ErrorCode;
use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::GatewayError;
use crate::health::LimitsStatus;
use crate::keys::KeyEntry;
use crate::spend::ledger::{Ask, Reservation};
use crate::spend::price::Price;
use rate::RateDecision;

/// The engine that admits requests against their key's limits.
pub enum Limits {
    /// One server: windows and ledgers in memory.
    Memory(memory::MemoryLimits),
    /// A replica of a cluster: limits shared through the cluster's engine.
    Cluster(cluster::ClusterLimits),
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
}

impl Limits {
    /// The engine `config` asks for: memory for one server, the cluster's for `[cluster]`.
    pub fn for_config(config: &Config, clock: Arc<dyn Clock>) -> Limits {
        match config.cluster {
            None => Limits::Memory(memory::MemoryLimits::new(clock)),
            Some(_) => Limits::Cluster(cluster::ClusterLimits::without_engine(clock)),
        }
    }

    /// Steps 8 and 9 in one call, all or nothing: the rate window (429
    /// `rate_limit_exceeded`), then `spend` prices the request (403 `model_not_priced`, after
    /// the rate check as SPEC §3 orders them) and the ledger reserves its worst case (402
    /// `spend_limit_exceeded`). A refusal after the window admitted the request takes the
    /// admission back: refused requests do not count (SPEC §4).
    ///
    /// `async` for the shared engine, whose admission is a round trip to Redis (issue #17);
    /// the memory engine's future is ready at once and never yields.
    pub async fn admit(
        &self,
        key: &KeyEntry,
        now: Timestamp,
        spend: impl FnOnce() -> Result<SpendAsk, GatewayError>,
    ) -> Result<Admitted, GatewayError> {
        match self {
            Limits::Memory(memory) => memory.admit(key, now, spend),
            Limits::Cluster(cluster) => cluster.admit(key, now, spend).await,
        }
    }

    /// Takes back the rate admission of a request refused after [`Limits::admit`] (a body
    /// that could not be rewritten): refused requests do not count.
    pub fn revert(&self, key: &KeyEntry, rate: Option<&RateDecision>) {
        match self {
            Limits::Memory(memory) => memory.revert(key, rate),
            Limits::Cluster(cluster) => cluster.revert(key, rate),
        }
    }

    /// The key's rate headroom for self-service, without admitting anything; `None` without
    /// a rate limit. Refused where the numbers could not be the cluster's (see the module
    /// doc).
    pub fn rate_headroom(&self, key: &KeyEntry) -> Result<Option<RateDecision>, GatewayError> {
        match self {
            Limits::Memory(memory) => Ok(memory.rate_headroom(key)),
            Limits::Cluster(cluster) => cluster.rate_headroom(key),
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
