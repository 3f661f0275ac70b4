//! The verbs, one module each, dispatched from one `match`.
//!
//! Each verb is a clap `Args` struct with an `async fn run(self, client, output)`: parse the
//! flags into a `gateway_shared::api` value, make the call, hand the answer to `output`.
//! Nothing here knows about sockets, HTTPS or exit codes; [`confirm`] is the one shared
//! question before a step that cannot be undone.

pub mod admin_tokens;
pub mod audit;
pub mod cluster;
pub mod confirm;
pub mod keys;
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
}

pub async fn run(command: Command, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
    match command {
        Command::Keys(cmd) => cmd.run(client, output).await,
        Command::AdminTokens(cmd) => cmd.run(client, output).await,
        Command::Audit(cmd) => cmd.run(client, output).await,
        Command::Cluster(cmd) => cmd.run(client, output).await,
        Command::Tui(cmd) => cmd.run(client).await,
    }
}
