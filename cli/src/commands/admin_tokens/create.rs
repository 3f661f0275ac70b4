//! `gwctl admin-tokens create --name N`: a new token for the HTTPS listener, shown once.
//!
//! As with `keys create`, this is the only moment the secret exists outside the daemon's
//! hash: JSON mode prints the API's `AdminTokenCreated` and nothing else on stdout; table mode
//! ends with the secret and warns on stderr, with a hint of how to use it safely.

use anyhow::Context;
use clap::Args;
use gateway_shared::api::CreateAdminToken;
use gateway_shared::validate;

use crate::client::ApiClient;
use crate::output::{self, Output, SECRET_WARNING};
use crate::{OutputFormat, Refusal};

/// Printed on stderr after the secret in table mode.
pub const USE_HINT: &str = "Save it to a file only you can read (chmod 600) and use it with \
`gwctl --url https://HOST:PORT --token-file FILE --ca-cert CERT …`.";

#[derive(Debug, Args)]
pub struct Cmd {
    /// A name for people (who or what uses it, e.g. ci or alice-laptop), 1–64 characters.
    #[arg(long)]
    name: String,
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let create = CreateAdminToken {
            name: validate::name(&self.name).map_err(Refusal::from)?,
        };
        let created = client
            .create_admin_token(&create)
            .await
            .context("creating the admin token")?;
        let printed = match output.format {
            OutputFormat::Json => output.json(&created),
            OutputFormat::Table => output
                .stdout(&output::admin_token_created_details(
                    &created,
                    output.shown_now(),
                ))
                .and_then(|()| output.stderr(SECRET_WARNING))
                .and_then(|()| output.stderr(USE_HINT)),
        };
        printed.with_context(|| {
            format!(
                "admin token {} was created but its secret may not have been shown; revoke it \
                 with `gwctl admin-tokens revoke {} --yes` and create another",
                created.token.id, created.token.id
            )
        })
    }
}
