//! The verbs, one module each, dispatched from one `match`.
//!
//! Each verb is a clap `Args` struct with an `async fn run(self, client, output)`: parse the
//! flags into a `gateway_shared::api` value, make the call, hand the answer to `output`.
//! Nothing here knows about sockets, HTTPS or exit codes; [`confirm`] is the one shared
//! question before a step that cannot be undone. [`completions`] and [`man`] describe gwctl
//! itself and need no daemon: [`run_local`] runs them before one is chosen.

pub mod admin_tokens;
pub mod audit;
pub mod cluster;
pub mod completions;
pub mod confirm;
pub mod keys;
pub mod man;
pub mod tui;

use clap::Subcommand;

use crate::client::ApiClient;
use crate::output::Output;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect, edit, rotate and revoke proxy keys.
    Keys(keys::Cmd),
    /// Create, list and revoke the admin tokens of the HTTPS listener (on the daemon's host,
    /// over the socket).
    AdminTokens(admin_tokens::Cmd),
    /// Show who changed what, newest first.
    Audit(audit::Cmd),
    /// The replicas serving this gateway and the health of the backends they share.
    Cluster(cluster::Cmd),
    /// A live dashboard: keys, spend, detail with charts; create, edit and revoke.
    Tui(tui::Cmd),
    /// Print the completion script for bash, zsh or fish (or elvish, powershell).
    Completions(completions::Cmd),
    /// Print the manual page, or write every page into a directory (for packagers).
    #[command(hide = true)]
    Man(man::Cmd),
}

/// Runs a verb that needs no daemon; `None` for the others, which need a client.
pub fn run_local(command: &Command) -> Option<anyhow::Result<()>> {
    match command {
        Command::Completions(cmd) => Some(cmd.run()),
        Command::Man(cmd) => Some(cmd.run()),
        Command::Keys(_)
        | Command::AdminTokens(_)
        | Command::Audit(_)
        | Command::Cluster(_)
        | Command::Tui(_) => None,
    }
}

pub async fn run(command: Command, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
    match command {
        Command::Keys(cmd) => cmd.run(client, output).await,
        Command::AdminTokens(cmd) => cmd.run(client, output).await,
        Command::Audit(cmd) => cmd.run(client, output).await,
        Command::Cluster(cmd) => cmd.run(client, output).await,
        Command::Tui(cmd) => cmd.run(client).await,
        Command::Completions(cmd) => cmd.run(),
        Command::Man(cmd) => cmd.run(),
    }
}
