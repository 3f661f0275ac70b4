//! `GatewayError`: a SPEC error code, a sentence for the client, and (for internal failures) a
//! cause that is logged but never sent.
//!
//! [`GatewayError::into_response`] is the only place a gateway error becomes HTTP, so the JSON
//! shape, the status and the logging of internal causes cannot drift between routes.

use gateway_shared::validate::FieldError;
use gateway_shared::{ErrorBody, ErrorCode};

use crate::http_util::{self, Response};

/// Which listener answers: the same code can carry a different status on each (SPEC §3, §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plane {
    Data,
    Management,
}

#[derive(Debug)]
pub struct GatewayError {
    pub code: ErrorCode,
    pub message: String,
    /// Headers the answer carries (`Retry-After` and `x-ratelimit-*` on a 429). Boxed: rare,
    /// and it keeps every `Result<_, GatewayError>` small.
    pub headers: Option<Box<http::HeaderMap>>,
    /// What went wrong inside, for the log only.
    internal: Option<anyhow::Error>,
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

impl GatewayError {
    /// Every message passes through `redact_secrets`: messages quote what the client sent (an
    /// id, a path, a model, a query value), and a secret pasted there must not come back.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match gateway_shared::key::redact_secrets(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(redacted) => redacted,
        };
        Self {
            code,
            message,
            headers: None,
            internal: None,
        }
    }

    pub fn with_headers(mut self, headers: http::HeaderMap) -> Self {
        self.headers = Some(Box::new(headers));
        self
    }

    /// A failure of ours (database, I/O): the client gets a generic sentence, the log the cause.
    /// A shared store that cannot be reached is not ours to fix: 503 `store_unavailable`
    /// (SPEC §9.6), so a client knows to retry and an operator where to look.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let cause = cause.into();
        if crate::store::is_unavailable(&cause) {
            tracing::warn!(error = format!("{cause:#}"), "the store is unreachable");
            return Self::store_unavailable();
        }
        Self {
            code: ErrorCode::InternalError,
            message: "The gateway hit an internal error; the operator can find it in the log."
                .into(),
            headers: None,
            internal: Some(cause),
        }
    }

    /// 503 `store_unavailable`: the shared store cannot be reached (SPEC §9.6).
    pub fn store_unavailable() -> Self {
        Self::new(
            ErrorCode::StoreUnavailable,
            "The gateway's shared store (PostgreSQL) cannot be reached: keys cannot be created, \
             changed or listed until it returns. Proxied requests are still served.",
        )
    }

    pub fn into_response(self, plane: Plane) -> Response {
        let status = match plane {
            Plane::Data => self.code.status(),
            Plane::Management => self.code.management_status(),
        };
        if let Some(cause) = &self.internal {
            tracing::error!(code = %self.code, error = format!("{cause:#}"), "internal error");
        }
        let body = ErrorBody::new(self.code, self.message).to_json();
        let mut response = http_util::json_response(status, body);
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        response
    }
}

impl From<FieldError> for GatewayError {
    fn from(err: FieldError) -> Self {
        let reason = err.reason.trim_end_matches('.');
        let message = match err.code {
            ErrorCode::FieldNotEditable => format!("Field {} {reason}.", err.field),
            _ => format!("Invalid {}: {reason}.", err.field),
        };
        Self::new(err.code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_message_carries_a_secret_the_client_sent() {
        let secret = format!("sk-proxy-{}", "A1b2C3d4".repeat(5));
        let err = GatewayError::new(
            ErrorCode::InvalidArgument,
            format!("Invalid state: unknown state \"x{secret}\""),
        );
        assert!(!err.message.contains(&secret[13..]), "{}", err.message);
        assert!(err.message.contains("sk-proxy-A1b2…"), "{}", err.message);
    }
}
