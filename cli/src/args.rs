//! The command line as a whole: the subcommand plus the flags every subcommand shares.
//!
//! Global flags are `global = true` so an operator can write them before or after the verb
//! (`gwctl -o json keys list` and `gwctl keys list -o json`). How to reach the daemon is decided
//! here, once, as a [`Transport`], so commands never learn whether they talk to a socket or
//! (later) to HTTPS.

use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

use crate::client::Transport;
use crate::commands::Command;

/// Operate a Gateway AI daemon (gatewayd): manage proxy keys, read the audit log.
#[derive(Debug, Parser)]
#[command(name = "gwctl", version, after_help = crate::EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Kept apart from each verb's own flags in `--help`.
const GLOBAL: &str = "Global options";

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The daemon's management socket (gatewayd's `admin.socket`).
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "GWCTL_SOCKET",
        value_name = "PATH",
        default_value_os_t = gateway_shared::paths::default_socket_path()
    )]
    pub socket: PathBuf,

    /// How to print results: aligned text for people, or the management API's own JSON.
    #[arg(
        short = 'o',
        long,
        global = true,
        help_heading = GLOBAL,
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns and labelled lines; warnings on stderr.
    Table,
    /// Exactly the API's JSON shapes on stdout; errors as the API's error body on stderr.
    Json,
}

impl GlobalArgs {
    pub fn transport(&self) -> Transport {
        Transport::Unix(self.socket.clone())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_verb() {
        for argv in [
            &["gwctl", "-o", "json", "--socket", "/tmp/s", "keys", "list"][..],
            &[
                "gwctl", "keys", "list", "--output", "json", "--socket", "/tmp/s",
            ][..],
        ] {
            let cli = Cli::try_parse_from(argv).expect("parses");
            assert_eq!(cli.global.output, OutputFormat::Json, "{argv:?}");
            assert_eq!(cli.global.socket, PathBuf::from("/tmp/s"), "{argv:?}");
        }
    }

    #[test]
    fn exit_codes_are_in_the_help() {
        let help = Cli::command().render_long_help().to_string();
        for needle in ["Exit codes", "69", "key_not_found"] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }
}
