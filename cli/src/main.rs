//! The `gwctl` binary: parse flags, hand them to [`gwctl::run`], exit with its code.
//!
//! Kept to a few lines so that everything worth testing lives in the library, where unit tests
//! and the e2e harness can reach it.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match gwctl::Cli::try_parse() {
        Ok(cli) => gwctl::run(cli),
        Err(err) => {
            // clap quotes a rejected value back (`invalid value '…'`); a secret pasted into
            // the wrong flag must not be printed back in full.
            let text = err.render().to_string();
            let redacted = gateway_shared::key::redact_secrets(&text);
            let written = if err.use_stderr() {
                std::io::stderr().write_all(redacted.as_bytes())
            } else {
                std::io::stdout().write_all(redacted.as_bytes())
            };
            drop(written);
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
        }
    }
}
