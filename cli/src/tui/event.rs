//! What can happen to the dashboard: a key press, a mouse click or wheel turn, a clock tick,
//! or an answer from the worker.
//!
//! Answers carry a [`Failure`] rather than an `anyhow::Error` so that events are plain data:
//! cloneable, comparable and easy to script in tests. The split that matters to the screen is
//! made here, once: could the daemon be reached at all (banner and retry) or did it refuse
//! (a message where the operator is working)?

use crossterm::event::{KeyEvent, MouseEvent};
use gateway_shared::ErrorCode;
use gateway_shared::api::{KeyCreated, KeyView, ProviderList, UsageReport};
use jiff::Timestamp;

use crate::client::{ApiError, TransportError};

#[derive(Debug)]
pub enum Event {
    Key(KeyEvent),
    /// A left-button press or a wheel turn (the input thread drops moves, drags and releases),
    /// resolved against where the last frame drew what (see [`super::hits`]).
    Mouse(MouseEvent),
    /// The terminal changed size; the next draw lays out for it.
    Resize,
    /// The keyboard can no longer be read: nobody could quit, so the dashboard does.
    InputClosed,
    /// SIGTERM, SIGHUP or SIGINT (its number): the dashboard stops and gives the terminal
    /// back, then gwctl exits as the signal would have made it (see [`super::Signalled`]).
    Signal(i32),
    /// The refresh clock: the current instant, for relative times and for live refresh.
    Tick(Timestamp),
    Keys(Result<Vec<KeyView>, Failure>),
    Usage {
        key_id: String,
        result: Result<UsageReport, Failure>,
    },
    Created(Result<KeyCreated, Failure>),
    Updated(Result<KeyView, Failure>),
    Revoked(Result<KeyView, Failure>),
    /// The daemon's providers (SPEC §10), asked once at start: what the forms offer.
    Providers(Result<ProviderList, Failure>),
}

/// Why a call failed, reduced to what the screen shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// The daemon could not be asked (no socket, refused, timed out, shutting down): the
    /// dashboard shows the banner and keeps retrying instead of blaming the operator's input.
    pub unreachable: bool,
}

impl Failure {
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unreachable: false,
        }
    }

    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unreachable: true,
        }
    }

    /// The message is escaped for the terminal ([`crate::sanitize::text`]): it holds what
    /// the daemon said.
    pub fn from_error(err: &anyhow::Error) -> Self {
        let shown = |text: String| crate::sanitize::text(&text).into_owned();
        for cause in err.chain() {
            if cause.downcast_ref::<TransportError>().is_some() {
                return Self::unreachable(shown(cause.to_string()));
            }
            if let Some(api) = cause.downcast_ref::<ApiError>() {
                let code = api.body.error.code.as_str();
                return Self {
                    message: shown(format!("{} ({code})", api.message)),
                    unreachable: api.code == Some(ErrorCode::ShuttingDown),
                };
            }
        }
        Self::refused(shown(format!("{err:#}")))
    }
}

#[cfg(test)]
mod tests {
    use gateway_shared::ErrorBody;

    use super::*;
    use crate::client::TransportErrorKind;

    #[test]
    fn transport_errors_are_unreachable_and_api_errors_are_not() {
        let err = anyhow::Error::from(TransportError {
            kind: TransportErrorKind::Unreachable,
            message: "cannot reach gatewayd at /x".into(),
        });
        assert_eq!(
            Failure::from_error(&err.context("listing keys")),
            Failure::unreachable("cannot reach gatewayd at /x")
        );
        let body = ErrorBody::new(
            ErrorCode::InvalidArgument,
            "Invalid name: must not be empty.",
        );
        let err = anyhow::Error::from(ApiError::from_body(400, body));
        assert_eq!(
            Failure::from_error(&err),
            Failure::refused("Invalid name: must not be empty. (invalid_argument)")
        );
        let body = ErrorBody::new(ErrorCode::ShuttingDown, "Shutting down.");
        let err = anyhow::Error::from(ApiError::from_body(503, body));
        assert!(Failure::from_error(&err).unreachable);
        // What the daemon said is escaped for the screen.
        let body = ErrorBody::new(ErrorCode::InvalidArgument, "No \u{1b}[2J\u{202e}.");
        let err = anyhow::Error::from(ApiError::from_body(400, body));
        assert_eq!(
            Failure::from_error(&err),
            Failure::refused(r"No \u{1b}[2J\u{202e}. (invalid_argument)")
        );
    }
}
