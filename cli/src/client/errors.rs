//! How a call fails: the daemon answered with its error body ([`ApiError`]), or it could not
//! be asked or understood ([`TransportError`]). Both carry what gwctl shows and what a script
//! branches on (the SPEC code, or gwctl's own for a transport failure).

use std::fmt;

use gateway_shared::{ErrorBody, ErrorCode};

/// The daemon answered, with an error body (SPEC §3 shape).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    /// `None` when the code is newer than this build, or the body was not an error body.
    pub code: Option<ErrorCode>,
    pub message: String,
    /// As received, for `--output json`.
    pub body: ErrorBody,
}

impl ApiError {
    pub fn from_body(status: u16, body: ErrorBody) -> Self {
        Self {
            status,
            code: body.code(),
            message: body.error.message.clone(),
            body,
        }
    }

    /// Reads an error response; anything that is not an error body still becomes an error
    /// that says what came back, never a JSON decoding complaint.
    pub fn from_response(status: u16, bytes: &[u8]) -> Self {
        if let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) {
            return Self::from_body(status, body);
        }
        let text = String::from_utf8_lossy(bytes);
        let snippet: String = text.chars().take(200).collect();
        let mut body = ErrorBody::new(
            ErrorCode::InternalError,
            format!("gatewayd answered {status}: {snippet}"),
        );
        body.error.code = "unexpected_response".to_owned();
        Self {
            status,
            code: None,
            message: body.error.message.clone(),
            body,
        }
    }
}

impl ApiError {
    /// Replaces every occurrence of `secret` in the messages: a daemon (or something posing
    /// as one) that echoes the admin token must not get it printed.
    pub(super) fn redact(mut self, secret: &str) -> Self {
        if !secret.is_empty() {
            self.message = self.message.replace(secret, REDACTED);
            self.body.error.message = self.body.error.message.replace(secret, REDACTED);
        }
        self
    }
}

/// What a secret becomes in any text gwctl shows.
pub const REDACTED: &str = "***";

impl fmt::Display for ApiError {
    /// The daemon's message, control characters escaped: it is shown to people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::sanitize::text(&self.message))
    }
}

impl std::error::Error for ApiError {}

/// The daemon could not be asked, or its answer could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// No socket, or nothing listening on it.
    Unreachable,
    /// The socket exists but this user may not connect to it.
    PermissionDenied,
    /// Connected, but no complete answer in time.
    TimedOut,
    /// Connected, but the exchange broke or made no sense.
    Protocol,
    /// The TLS handshake failed: most often a certificate gwctl does not trust.
    Tls,
}

impl TransportErrorKind {
    /// The `code` of the JSON error gwctl prints for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "daemon_unreachable",
            Self::PermissionDenied => "permission_denied",
            Self::TimedOut => "daemon_timeout",
            Self::Protocol => "transport_error",
            Self::Tls => "tls_error",
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {}
