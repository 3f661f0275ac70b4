//! `gwctl tui`: hands the client to the dashboard in [`crate::tui`].
//!
//! A verb module like the others so the dashboard is reached the same way and over the same
//! transport (`--socket`, or `--url` and a token: any [`crate::client::Transport`]) as every
//! command; everything it does lives under `tui/`.

use clap::Args;

use crate::client::ApiClient;

#[derive(Debug, Args)]
pub struct Cmd {}

impl Cmd {
    pub async fn run(self, client: &ApiClient) -> anyhow::Result<()> {
        crate::tui::run(client.clone()).await
    }
}
