//! The command line as a whole: the subcommand plus the flags every subcommand shares.
//!
//! Global flags are `global = true` so an operator can write them before or after the verb
//! (`gwctl -o json keys list` and `gwctl keys list -o json`). The flags that say which daemon
//! to talk to (`--socket`, `--url`, `--token`, `--token-file`, `--ca-cert`, `--profile`) are
//! only collected here; [`crate::endpoint`] weighs them against the environment and the
//! profile file and turns them into one [`crate::client::Transport`], so commands never
//! learn whether they talk to a socket or to HTTPS.
//!
//! Those flags deliberately have no clap `env =`: whether a value came from the command line
//! or from the environment decides precedence and conflicts, and clap would hide that. The
//! variables are read in `endpoint`, and named in the help by hand.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

use crate::commands::Command;

/// Operate a Gateway AI daemon (gatewayd): manage proxy keys and admin tokens, read the audit
/// log, see the cluster's replicas; over the local socket, or over HTTPS with an admin token.
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
/// The flags that choose and authenticate a remote daemon.
const REMOTE: &str = "Remote daemon (HTTPS)";

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The daemon's management socket (gatewayd's `admin.socket`) [env: GWCTL_SOCKET]
    /// [default: the first of $RUNTIME_DIRECTORY/admin.sock, your own daemon's
    /// ($XDG_RUNTIME_DIR/gatewayd/admin.sock; /run/gatewayd/admin.sock as root), and the
    /// system daemon's /run/gatewayd/admin.sock that a daemon answers on].
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_name = "PATH",
        conflicts_with_all = ["url", "profile"],
    )]
    pub socket: Option<PathBuf>,

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

    /// A remote daemon's HTTPS management listener, e.g. https://gw.example:8443
    /// [env: GWCTL_URL]. Needs an admin token.
    #[arg(long, global = true, help_heading = REMOTE, value_name = "URL")]
    pub url: Option<String>,

    /// The admin token (gwadm-…) [env: GWCTL_TOKEN]. Prefer --token-file: a command line is
    /// visible to other users of the machine.
    #[arg(
        long,
        global = true,
        help_heading = REMOTE,
        value_name = "TOKEN",
        value_parser = SecretArg::parse,
        conflicts_with = "token_file",
    )]
    pub token: Option<SecretArg>,

    /// A file holding the admin token, surrounding whitespace ignored; keep it mode 0600
    /// [env: GWCTL_TOKEN_FILE].
    #[arg(long, global = true, help_heading = REMOTE, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Trust exactly the PEM certificate(s) in FILE for --url instead of the system's roots,
    /// e.g. a copy of the daemon's self-signed <data_dir>/tls/cert.pem [env: GWCTL_CA_CERT].
    #[arg(long, global = true, help_heading = REMOTE, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// A profile from ~/.config/gwctl/config.toml (url, token or token_file, ca_cert)
    /// [env: GWCTL_PROFILE]. The file's path: $GWCTL_CONFIG, else
    /// $XDG_CONFIG_HOME/gwctl/config.toml.
    #[arg(long, global = true, help_heading = REMOTE, value_name = "NAME")]
    pub profile: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns and labelled lines; warnings on stderr.
    Table,
    /// Exactly the API's JSON shapes on stdout; errors as the API's error body on stderr.
    Json,
}

/// A secret given as a flag or in a file: `Debug` prints `***`, so neither `{:?}` of the
/// parsed command line nor of a profile can show it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretArg(String);

impl SecretArg {
    fn parse(text: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self(text.to_owned()))
    }

    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The raw value, for parsing into an `AdminToken` and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
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
            assert_eq!(cli.global.socket, Some(PathBuf::from("/tmp/s")), "{argv:?}");
        }
        let cli = Cli::try_parse_from([
            "gwctl",
            "keys",
            "list",
            "--url",
            "https://gw:8443",
            "--token-file",
            "/t",
        ])
        .expect("parses");
        assert_eq!(cli.global.url.as_deref(), Some("https://gw:8443"));
        assert_eq!(cli.global.token_file, Some(PathBuf::from("/t")));
    }

    #[test]
    fn contradictory_flags_are_usage_errors() {
        for argv in [
            &[
                "gwctl",
                "--socket",
                "/s",
                "--url",
                "https://gw",
                "keys",
                "list",
            ][..],
            &[
                "gwctl",
                "--socket",
                "/s",
                "--profile",
                "prod",
                "keys",
                "list",
            ][..],
            &[
                "gwctl",
                "--token",
                "t",
                "--token-file",
                "/t",
                "keys",
                "list",
            ][..],
        ] {
            let err = Cli::try_parse_from(argv).expect_err("conflict");
            assert_eq!(err.exit_code(), 2, "{argv:?}");
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        }
    }

    #[test]
    fn a_token_flag_never_shows_in_debug() {
        let cli = Cli::try_parse_from(["gwctl", "--token", "gwadm-SECRET", "keys", "list"])
            .expect("parses");
        let debug = format!("{cli:?}");
        assert!(!debug.contains("gwadm-SECRET"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    }

    #[test]
    fn exit_codes_are_in_the_help() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "Exit codes",
            "69",
            "key_not_found",
            "GWCTL_URL",
            "--ca-cert",
        ] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }
}
