//! `gwctl keys show KEY`: one key, every field, fetched fresh so spend and state are current.

use clap::Args;

use super::{KEY_HELP, resolve};
use crate::client::ApiClient;
use crate::output::{self, Output};

#[derive(Debug, Args)]
pub struct Cmd {
    #[arg(value_name = "KEY", help = KEY_HELP)]
    key: String,
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let key = resolve(client, &self.key).await?;
        output.print(&key, output::key_details)
    }
}
