//! `LimitsError`: why the engine could not answer, in the two kinds a caller acts on.
//!
//! - `Unavailable`: Redis refused the connection, reset it, or did not answer within the
//!   timeout. Limited keys are answered 503 `limits_unavailable` (SPEC §9.5). The outcome
//!   of an admission or a settle that timed out is unknown: the caller retries it with the
//!   same hold id, which the scripts recognise (never counted twice).
//! - `Script`: Redis answered something the scripts never send, or refused a command: a
//!   bug, logged, and answered as `Unavailable` would be.
//!
//! The text never holds the Redis URL's password: redis-rs's messages do not quote the
//! URL, and [`Redactor`] replaces the password wherever it would appear anyway.

use gateway_shared::ErrorCode;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    #[error("the limits engine's script failed: {0}")]
    Script(String),
    #[error("{0} must not be empty nor contain '{{' or '}}' (Redis hash tags)")]
    InvalidName(&'static str),
}

impl LimitsError {
    /// The SPEC code a request answered with this error gets (SPEC §9.5).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::LimitsUnavailable
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, LimitsError::Unavailable(_))
    }
}

/// Turns redis-rs errors into [`LimitsError`]s without the URL's password.
#[derive(Clone)]
pub(super) struct Redactor {
    password: Option<String>,
}

impl Redactor {
    pub(super) fn new(password: Option<&str>) -> Redactor {
        Redactor {
            password: password.filter(|p| !p.is_empty()).map(str::to_owned),
        }
    }

    fn clean(&self, text: String) -> String {
        match &self.password {
            Some(password) => text.replace(password.as_str(), "***"),
            None => text,
        }
    }

    pub(super) fn error(&self, e: &redis::RedisError) -> LimitsError {
        let text = self.clean(e.to_string());
        if e.is_timeout()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_io_error()
            || e.is_unrecoverable_error()
        {
            LimitsError::Unavailable(text)
        } else {
            match e.kind() {
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::ClusterDown
                    | redis::ServerErrorKind::MasterDown
                    | redis::ServerErrorKind::ReadOnly,
                ) => LimitsError::Unavailable(text),
                _ => LimitsError::Script(text),
            }
        }
    }

    pub(super) fn timed_out(&self) -> LimitsError {
        LimitsError::Unavailable("no answer within the timeout".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_reaches_the_text() {
        let redactor = Redactor::new(Some("hunter2secret"));
        let e = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused by hunter2secret",
        ));
        let error = redactor.error(&e);
        assert!(error.is_unavailable(), "{error:?}");
        assert!(!error.to_string().contains("hunter2secret"), "{error}");
    }
}
