//! `gwctl`: the operator's CLI for gatewayd's management API (SPEC §7).
//!
//! Modules in reading order: [`args`] (the command line), [`endpoint`] (flags, environment and
//! [`profiles`] → which daemon, over which transport), [`commands`] (one module per verb),
//! [`client`] (the typed management API over a transport), [`output`] (tables and JSON),
//! [`sanitize`] (daemon text made safe for the terminal), [`tui`] (the `gwctl tui` dashboard).
//! This file owns the one decision every command shares: how a failure becomes a message and
//! an exit code. Scripts branch on those codes, so they are constants, mapped from the
//! daemon's [`ErrorCode`] by one exhaustive `match` that a new code cannot slip past.

pub mod args;
pub mod client;
pub mod commands;
pub mod endpoint;
pub mod output;
pub mod profiles;
pub mod sanitize;
pub mod tui;

use std::fmt;
use std::io::Write;
use std::process::ExitCode;

use gateway_shared::error::{ErrorDetail, GATEWAY_ERROR_TYPE};
use gateway_shared::validate::FieldError;
use gateway_shared::{ErrorBody, ErrorCode};

pub use args::{Cli, OutputFormat};

use client::{ApiClient, ApiError, TransportError, TransportErrorKind};
use output::Output;

/// Exit codes. Clap itself exits with [`USAGE`] for a malformed command line.
pub mod exit_code {
    pub const OK: u8 = 0;
    /// Anything not covered below, including the daemon's `internal_error` and a TLS
    /// handshake that failed (usually an untrusted certificate).
    pub const FAILURE: u8 = 1;
    /// A malformed command line or an invalid value (`invalid_argument`).
    pub const USAGE: u8 = 2;
    /// No such key (`key_not_found`).
    pub const NOT_FOUND: u8 = 3;
    /// The key's state forbids the change (`key_revoked`, `field_not_editable`).
    pub const CONFLICT: u8 = 4;
    /// Not allowed (`unauthorized`: a missing, malformed or revoked admin token over HTTPS, or
    /// admin tokens managed over HTTPS; or no permission on the socket).
    pub const AUTH: u8 = 5;
    /// The daemon cannot be reached or is shutting down (sysexits `EX_UNAVAILABLE`).
    pub const UNAVAILABLE: u8 = 69;
}

/// Shown at the end of `gwctl --help`; a test keeps it in step with [`exit_code`].
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   success
  1   other failure, including the daemon's internal_error and a failed TLS handshake
  2   usage error or invalid value (invalid_argument)
  3   key or admin token not found (key_not_found)
  4   the key's state forbids it (key_revoked, key_expired, field_not_editable)
  5   not allowed (unauthorized: bad or missing admin token over HTTPS; or no permission
      on the socket)
  69  daemon unreachable: no socket, nothing listening, no answer, or shutting down

Errors go to stderr as `error: <message> (<code>)`; with --output json, as the API's
error body {\"error\":{\"type\":\"gateway_error\",\"code\",\"message\"}}, whether the daemon or
gwctl refused. Codes are the API's, plus gwctl's own when the daemon could not be asked or
answered nonsense: daemon_unreachable, permission_denied, daemon_timeout, transport_error,
tls_error, unexpected_response; and failed for anything else.";

/// A refusal gwctl makes itself, without a round trip, carrying the code the daemon would
/// have answered with so the exit code and JSON error are the same either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidArgument,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

impl From<FieldError> for Refusal {
    /// Worded as the daemon words it (`daemon/src/error.rs`), so a value refused here reads
    /// the same as one refused there.
    fn from(err: FieldError) -> Self {
        let reason = err.reason.trim_end_matches('.');
        let message = match err.code {
            ErrorCode::FieldNotEditable => format!("Field {} {reason}.", err.field),
            _ => format!("Invalid {}: {reason}.", err.field),
        };
        Self {
            code: err.code,
            message,
        }
    }
}

/// Runs one command line to completion and reports any failure on stderr.
pub fn run(cli: Cli) -> ExitCode {
    let output = Output::live(cli.global.output);
    // Completions and man pages need no daemon: run before one is chosen, so a bad
    // GWCTL_URL or profile cannot stop a packager's build.
    let result = match commands::run_local(&cli.command) {
        Some(result) => result,
        None => endpoint::resolve(&cli.global, &endpoint::process_env)
            .map_err(anyhow::Error::from)
            .and_then(|resolved| {
                for warning in &resolved.warnings {
                    output.stderr(warning)?;
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let client = ApiClient::new(resolved.transport);
                runtime.block_on(commands::run(cli.command, &client, &output))
            }),
    };
    match result {
        Ok(()) => ExitCode::from(exit_code::OK),
        Err(err) => {
            // Like a process the signal killed: no message, 128 + the signal's number.
            if let Some(signal) = signalled(&err) {
                return ExitCode::from(signal.exit_code());
            }
            report(&err, output.format);
            ExitCode::from(exit_code_of(&err))
        }
    }
}

/// The signal that stopped the dashboard, if that is what this failure is.
fn signalled(err: &anyhow::Error) -> Option<tui::Signalled> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<tui::Signalled>())
        .copied()
}

/// The exit code for a failure, from the first cause in its chain that carries a code.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return match api.code {
                Some(code) => exit_code_for(code),
                None => exit_code_for_status(api.status),
            };
        }
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return exit_code_for(refusal.code);
        }
        if let Some(transport) = cause.downcast_ref::<TransportError>() {
            return match transport.kind {
                TransportErrorKind::Unreachable | TransportErrorKind::TimedOut => {
                    exit_code::UNAVAILABLE
                }
                TransportErrorKind::PermissionDenied => exit_code::AUTH,
                // Not "unreachable": retrying will not make an untrusted certificate trusted.
                TransportErrorKind::Protocol | TransportErrorKind::Tls => exit_code::FAILURE,
            };
        }
    }
    exit_code::FAILURE
}

/// Exhaustive on purpose: a code added to `shared` does not compile until it has an exit code.
pub fn exit_code_for(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::InvalidArgument | ErrorCode::InvalidRequest | ErrorCode::BodyTooLarge => {
            exit_code::USAGE
        }
        ErrorCode::KeyNotFound => exit_code::NOT_FOUND,
        // `key_expired`: rotating an expired key.
        ErrorCode::KeyRevoked | ErrorCode::KeyExpired | ErrorCode::FieldNotEditable => {
            exit_code::CONFLICT
        }
        ErrorCode::Unauthorized | ErrorCode::MissingKey | ErrorCode::InvalidKey => exit_code::AUTH,
        ErrorCode::ShuttingDown
        | ErrorCode::Overloaded
        | ErrorCode::StoreUnavailable
        | ErrorCode::LimitsUnavailable => exit_code::UNAVAILABLE,
        // The management API does not answer with these data-plane codes; if one ever
        // arrives it is a failure, not something a script should branch on.
        ErrorCode::IpNotAllowed
        | ErrorCode::ProviderNotAllowed
        | ErrorCode::ModelNotAllowed
        | ErrorCode::RateLimitExceeded
        | ErrorCode::SpendLimitExceeded
        | ErrorCode::ModelNotPriced
        | ErrorCode::UnknownRoute
        | ErrorCode::MethodNotAllowed
        | ErrorCode::UpstreamUnreachable
        | ErrorCode::UpstreamTimeout
        | ErrorCode::RequestTimeout
        | ErrorCode::InternalError => exit_code::FAILURE,
    }
}

/// For an error body whose code this build does not know (a newer daemon).
fn exit_code_for_status(status: u16) -> u8 {
    match status {
        400 | 413 | 422 => exit_code::USAGE,
        401 | 403 => exit_code::AUTH,
        404 => exit_code::NOT_FOUND,
        409 => exit_code::CONFLICT,
        503 => exit_code::UNAVAILABLE,
        _ => exit_code::FAILURE,
    }
}

/// The `code` of a failure that carries none: a local I/O error, say.
const UNCODED: &str = "failed";

/// The error body printed in JSON mode: the daemon's own when it sent one, otherwise the same
/// shape (SPEC §3 has one), with the code the daemon would have answered with when gwctl
/// refused on its behalf, so a script reads both the same way.
pub fn error_body(err: &anyhow::Error) -> ErrorBody {
    let local = |code: &str| ErrorBody {
        error: ErrorDetail {
            kind: GATEWAY_ERROR_TYPE.to_owned(),
            code: code.to_owned(),
            message: format!("{err:#}"),
        },
    };
    for cause in err.chain() {
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return api.body.clone();
        }
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return local(refusal.code.as_str());
        }
        if let Some(transport) = cause.downcast_ref::<TransportError>() {
            return local(transport.kind.as_str());
        }
    }
    local(UNCODED)
}

/// `error: <message> (<code>)`, the code being the one scripts and docs refer to; the whole
/// context chain is the message, so "editing key key_…: Key … is revoked" reads as one line.
pub fn error_line(err: &anyhow::Error) -> String {
    match error_body(err).error.code.as_str() {
        UNCODED => format!("error: {err:#}"),
        code => format!("error: {err:#} ({code})"),
    }
}

/// Writes the failure on stderr. Messages carry the daemon's text (its error messages, the
/// names and ids it sent), so the line is escaped for the terminal, and the JSON body written
/// with the escaping formatter.
fn report(err: &anyhow::Error, format: OutputFormat) {
    let text = report_text(err, format);
    let mut stderr = std::io::stderr().lock();
    // Nothing is left to tell if stderr itself is gone.
    let _ = writeln!(stderr, "{text}");
}

fn report_text(err: &anyhow::Error, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => sanitize::lines(&error_line(err)).into_owned(),
        OutputFormat::Json => {
            let body = error_body(err);
            sanitize::to_json_compact(&body).unwrap_or_else(|_| body.to_json())
        }
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    fn api_error(code: ErrorCode) -> anyhow::Error {
        let body = ErrorBody::new(code, "The daemon said no.");
        ApiError::from_body(code.management_status(), body).into()
    }

    #[test]
    fn every_error_code_has_the_documented_exit_code() {
        for &code in ErrorCode::ALL {
            let expected = match code {
                ErrorCode::InvalidArgument
                | ErrorCode::InvalidRequest
                | ErrorCode::BodyTooLarge => 2,
                ErrorCode::KeyNotFound => 3,
                ErrorCode::KeyRevoked | ErrorCode::KeyExpired | ErrorCode::FieldNotEditable => 4,
                ErrorCode::Unauthorized | ErrorCode::MissingKey | ErrorCode::InvalidKey => 5,
                ErrorCode::ShuttingDown
                | ErrorCode::Overloaded
                | ErrorCode::StoreUnavailable
                | ErrorCode::LimitsUnavailable => 69,
                _ => 1,
            };
            assert_eq!(exit_code_for(code), expected, "{code}");
            // The same code through an API error, and wrapped in context, maps the same way.
            let err = api_error(code).context("doing something");
            assert_eq!(exit_code_of(&err), expected, "{code} via ApiError");
            let refusal = anyhow::Error::from(Refusal {
                code,
                message: "no".into(),
            });
            assert_eq!(exit_code_of(&refusal), expected, "{code} via Refusal");
        }
    }

    #[test]
    fn unknown_codes_fall_back_to_the_status() {
        let body = ErrorBody::new(ErrorCode::InternalError, "m");
        let mut body = body;
        body.error.code = "something_new".into();
        for (status, expected) in [(404, 3), (409, 4), (401, 5), (400, 2), (503, 69), (500, 1)] {
            let err = anyhow::Error::from(ApiError::from_body(status, body.clone()));
            assert_eq!(exit_code_of(&err), expected, "{status}");
        }
    }

    #[test]
    fn transport_failures_and_plain_errors() {
        let check = |kind, expected| {
            let err = anyhow::Error::from(TransportError {
                kind,
                message: "m".into(),
            });
            assert_eq!(exit_code_of(&err), expected, "{kind:?}");
        };
        check(TransportErrorKind::Unreachable, 69);
        check(TransportErrorKind::TimedOut, 69);
        check(TransportErrorKind::PermissionDenied, 5);
        check(TransportErrorKind::Protocol, 1);
        check(TransportErrorKind::Tls, 1);
        let plain: anyhow::Result<()> = Err(anyhow::anyhow!("disk on fire")).context("writing");
        let plain = plain.expect_err("error");
        assert_eq!(exit_code_of(&plain), 1);
        assert_eq!(error_line(&plain), "error: writing: disk on fire");
    }

    #[test]
    fn error_lines_and_json_bodies() {
        let err = api_error(ErrorCode::KeyNotFound);
        assert_eq!(
            error_line(&err),
            "error: The daemon said no. (key_not_found)"
        );
        let json: serde_json::Value =
            serde_json::from_str(&error_body(&err).to_json()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"error": {"type": "gateway_error", "code": "key_not_found",
                "message": "The daemon said no."}})
        );
        let refusal: anyhow::Error = Refusal::from(FieldError::not_editable("expires_at")).into();
        // gwctl's own refusals have the API's shape and type too, with a SPEC code.
        let json: serde_json::Value =
            serde_json::from_str(&error_body(&refusal).to_json()).expect("json");
        assert_eq!(json["error"]["type"], "gateway_error", "{json}");
        assert_eq!(json["error"]["code"], "field_not_editable", "{json}");
        let transport = anyhow::Error::from(TransportError {
            kind: TransportErrorKind::Unreachable,
            message: "no socket".into(),
        });
        let body = error_body(&transport).error;
        assert_eq!(
            (body.kind.as_str(), body.code.as_str()),
            ("gateway_error", "daemon_unreachable")
        );
        assert!(error_line(&refusal).starts_with("error: Field expires_at cannot be changed"));
        assert!(error_line(&refusal).ends_with("(field_not_editable)"));
        assert_eq!(error_body(&refusal).error.code, "field_not_editable");
        assert_eq!(exit_code_of(&refusal), exit_code::CONFLICT);
    }

    /// A daemon (or whatever answers in its place) that puts escape codes in its message:
    /// the error line shows them escaped, the JSON body escapes them as JSON, and the code and
    /// exit code are unchanged.
    #[test]
    fn a_daemons_message_is_escaped_where_it_is_reported() {
        let body = ErrorBody::new(
            ErrorCode::KeyNotFound,
            "No key \u{1b}]0;pwned\u{7}\u{9b}2J.",
        );
        let err = anyhow::Error::from(ApiError::from_body(404, body)).context("showing key k");
        assert_eq!(
            report_text(&err, OutputFormat::Table),
            r"error: showing key k: No key \u{1b}]0;pwned\u{7}\u{9b}2J. (key_not_found)"
        );
        let json = report_text(&err, OutputFormat::Json);
        assert_eq!(
            json,
            r#"{"error":{"type":"gateway_error","code":"key_not_found","message":"No key \u001b]0;pwned\u0007\u009b2J."}}"#
        );
        assert_eq!(exit_code_of(&err), exit_code::NOT_FOUND);
    }

    #[test]
    fn exit_code_help_matches_the_constants() {
        use exit_code::*;
        for code in [OK, FAILURE, USAGE, NOT_FOUND, CONFLICT, AUTH, UNAVAILABLE] {
            assert!(
                EXIT_CODES_HELP.contains(&format!("\n  {code} ")),
                "{code} undocumented"
            );
        }
    }
}
