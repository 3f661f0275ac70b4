//! Every error code of the SPEC, its HTTP status, and the one JSON shape all errors share.
//!
//! `status()` is an exhaustive `match` with no `_` arm: a new code does not compile until it
//! has a status. The daemon turns an `ErrorCode` into a response in exactly one place; gwctl
//! turns an error body back into an `ErrorCode` to choose its exit code.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A gateway error code (SPEC §3, §5, §6). The wire form is the snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // Data plane checks, in the order SPEC §3 applies them.
    MissingKey,
    InvalidKey,
    KeyRevoked,
    KeyExpired,
    IpNotAllowed,
    ProviderNotAllowed,
    ModelNotAllowed,
    RateLimitExceeded,
    SpendLimitExceeded,
    ModelNotPriced,
    // Other data plane errors.
    InvalidRequest,
    UnknownRoute,
    MethodNotAllowed,
    BodyTooLarge,
    UpstreamUnreachable,
    UpstreamTimeout,
    ShuttingDown,
    Overloaded,
    /// Cluster mode (SPEC §9.5): the shared limits engine (Redis) cannot be reached, or is
    /// not built yet, and the key has a rate or spend limit. Refused rather than counted in
    /// one replica's memory, which would let each replica admit the whole limit (N × the
    /// limit). Keys without limits keep working. 503 on both planes.
    LimitsUnavailable,
    /// Cluster mode (SPEC §9.6): the shared durable store (PostgreSQL) cannot be reached.
    /// The management API answers it (503) rather than change keys it cannot make durable
    /// and visible to every replica; the proxy keeps serving from the keys in memory.
    StoreUnavailable,
    /// The request body stalled: nothing arrived within `proxy.body_read_timeout`.
    RequestTimeout,
    // Management API.
    InvalidArgument,
    KeyNotFound,
    FieldNotEditable,
    Unauthorized,
    InternalError,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: &'static [ErrorCode] = &[
        Self::MissingKey,
        Self::InvalidKey,
        Self::KeyRevoked,
        Self::KeyExpired,
        Self::IpNotAllowed,
        Self::ProviderNotAllowed,
        Self::ModelNotAllowed,
        Self::RateLimitExceeded,
        Self::SpendLimitExceeded,
        Self::ModelNotPriced,
        Self::InvalidRequest,
        Self::UnknownRoute,
        Self::MethodNotAllowed,
        Self::BodyTooLarge,
        Self::UpstreamUnreachable,
        Self::UpstreamTimeout,
        Self::ShuttingDown,
        Self::Overloaded,
        Self::LimitsUnavailable,
        Self::StoreUnavailable,
        Self::RequestTimeout,
        Self::InvalidArgument,
        Self::KeyNotFound,
        Self::FieldNotEditable,
        Self::Unauthorized,
        Self::InternalError,
    ];

    /// The HTTP status this code is answered with.
    pub fn status(self) -> u16 {
        match self {
            Self::MissingKey => 401,
            Self::InvalidKey => 401,
            Self::KeyRevoked => 403,
            Self::KeyExpired => 403,
            Self::IpNotAllowed => 403,
            Self::ProviderNotAllowed => 403,
            Self::ModelNotAllowed => 403,
            Self::RateLimitExceeded => 429,
            Self::SpendLimitExceeded => 402,
            Self::ModelNotPriced => 403,
            Self::InvalidRequest => 400,
            Self::UnknownRoute => 404,
            Self::MethodNotAllowed => 405,
            Self::BodyTooLarge => 413,
            Self::UpstreamUnreachable => 502,
            Self::UpstreamTimeout => 504,
            Self::ShuttingDown => 503,
            Self::Overloaded => 503,
            Self::LimitsUnavailable => 503,
            Self::StoreUnavailable => 503,
            Self::RequestTimeout => 408,
            Self::InvalidArgument => 400,
            Self::KeyNotFound => 404,
            Self::FieldNotEditable => 400,
            Self::Unauthorized => 401,
            Self::InternalError => 500,
        }
    }

    /// The status on the management API, where the same code can mean something else: there
    /// `key_revoked` answers an attempt to edit a revoked key, and `key_expired` to rotate an
    /// expired one, a conflict with its state (SPEC §6), while on the data plane they refuse a
    /// request (SPEC §3).
    pub fn management_status(self) -> u16 {
        match self {
            Self::KeyRevoked | Self::KeyExpired => 409,
            other => other.status(),
        }
    }

    /// The wire name, e.g. `key_revoked`. Low cardinality: safe as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::InvalidKey => "invalid_key",
            Self::KeyRevoked => "key_revoked",
            Self::KeyExpired => "key_expired",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::ProviderNotAllowed => "provider_not_allowed",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::RateLimitExceeded => "rate_limit_exceeded",
            Self::SpendLimitExceeded => "spend_limit_exceeded",
            Self::ModelNotPriced => "model_not_priced",
            Self::InvalidRequest => "invalid_request",
            Self::UnknownRoute => "unknown_route",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTooLarge => "body_too_large",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::ShuttingDown => "shutting_down",
            Self::Overloaded => "overloaded",
            Self::LimitsUnavailable => "limits_unavailable",
            Self::StoreUnavailable => "store_unavailable",
            Self::RequestTimeout => "request_timeout",
            Self::InvalidArgument => "invalid_argument",
            Self::KeyNotFound => "key_not_found",
            Self::FieldNotEditable => "field_not_editable",
            Self::Unauthorized => "unauthorized",
            Self::InternalError => "internal_error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error": {"type": "gateway_error", "code": "...", "message": "..."}}` — the one shape of
/// every gateway error on every route and transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
    pub message: String,
}

/// The only value of `error.type` the gateway itself produces; provider errors that pass
/// through carry the provider's own types.
pub const GATEWAY_ERROR_TYPE: &str = "gateway_error";

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                kind: GATEWAY_ERROR_TYPE.to_owned(),
                code: code.as_str().to_owned(),
                message: message.into(),
            },
        }
    }

    /// The code, when it is one this build knows.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == self.error.code)
    }

    pub fn to_json(&self) -> String {
        // Serialising two strings into a fixed struct cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_name() {
        for &code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serialise");
            assert_eq!(json, format!("\"{}\"", code.as_str()), "{code:?}");
            let body = ErrorBody::new(code, "m");
            assert_eq!(body.code(), Some(code));
            assert!((400..600).contains(&code.status()));
        }
    }

    #[test]
    fn a_stalled_body_is_a_408() {
        assert_eq!(ErrorCode::RequestTimeout.status(), 408);
        assert_eq!(ErrorCode::RequestTimeout.as_str(), "request_timeout");
        assert!(ErrorCode::ALL.contains(&ErrorCode::RequestTimeout));
    }

    #[test]
    fn an_unreachable_cluster_backend_is_a_503_on_both_planes() {
        for (code, name) in [
            (ErrorCode::LimitsUnavailable, "limits_unavailable"),
            (ErrorCode::StoreUnavailable, "store_unavailable"),
        ] {
            assert_eq!(code.status(), 503);
            assert_eq!(code.management_status(), 503);
            assert_eq!(code.as_str(), name);
            assert!(ErrorCode::ALL.contains(&code));
        }
    }

    #[test]
    fn body_has_the_spec_shape() {
        let body = ErrorBody::new(ErrorCode::KeyRevoked, "This key was revoked.");
        let value: serde_json::Value = serde_json::from_str(&body.to_json()).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"error": {"type": "gateway_error", "code": "key_revoked",
                "message": "This key was revoked."}})
        );
    }
}
