//! The `gwctl` binary: parse flags, hand them to [`gwctl::run`], exit with its code.
//!
//! Kept to a few lines so that everything worth testing lives in the library, where unit tests
//! and the e2e harness can reach it.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    gwctl::run(gwctl::Cli::parse())
}
