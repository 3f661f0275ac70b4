//! `gwctl cluster status`: the daemon's `ClusterStatus`, as tables or as the API's JSON.
//!
//! Any replica answers for the whole cluster (they share the store their heartbeats are in),
//! so this works the same against whichever one `--url` or the socket reaches.

use anyhow::Context;
use clap::Args;

use crate::client::ApiClient;
use crate::output::{self, Output};

#[derive(Debug, Args)]
pub struct Cmd {}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let status = client
            .cluster_status()
            .await
            .context("reading the cluster status")?;
        output.print(&status, output::cluster_table)
    }
}
