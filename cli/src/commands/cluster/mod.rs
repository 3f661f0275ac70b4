//! `gwctl cluster …`: the replicas that serve this gateway and the backends they share
//! (SPEC §9). One server answers as a cluster of one, in `single` mode.

pub mod status;

use clap::{Args, Subcommand};

use crate::client::ApiClient;
use crate::output::Output;

#[derive(Debug, Args)]
pub struct Cmd {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// List the replicas seen recently (id, host, version, started, last heartbeat, requests
    /// served) and the backends' health.
    Status(status::Cmd),
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        match self.verb {
            Verb::Status(cmd) => cmd.run(client, output).await,
        }
    }
}
