//! `gwctl admin-tokens list`: every admin token, revoked ones included, as one table or the
//! API's `AdminTokenList`.

use anyhow::Context;
use clap::Args;

use crate::client::ApiClient;
use crate::output::{self, Output};

#[derive(Debug, Args)]
pub struct Cmd {}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let list = client
            .list_admin_tokens()
            .await
            .context("listing admin tokens")?;
        output.print(&list, |list, now| {
            output::admin_token_table(&list.tokens, now)
        })
    }
}
