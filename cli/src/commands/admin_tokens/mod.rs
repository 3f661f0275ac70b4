//! `gwctl admin-tokens …`: the tokens that authenticate the HTTPS management listener.
//!
//! The daemon serves these routes on the Unix socket only (a token must not be able to mint
//! or revoke tokens), so these verbs run on the daemon's host; over `--url` the daemon answers
//! `unauthorized` and gwctl exits 5 with its message. Besides the verbs, this module owns
//! finding the token an operator means by id, name or display prefix.

pub mod create;
pub mod list;
pub mod revoke;

use anyhow::Context;
use clap::{Args, Subcommand};
use gateway_shared::ErrorCode;
use gateway_shared::api::AdminTokenView;
use gateway_shared::key::redact_secrets;

use crate::Refusal;
use crate::client::ApiClient;
use crate::output::Output;

/// The help text of every `TOKEN` argument.
pub const TOKEN_HELP: &str = "The admin token: its id (tok_…), or its exact name or display \
prefix (gwadm-AbCd). Never the secret itself.";

#[derive(Debug, Args)]
pub struct Cmd {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Create an admin token and print its secret, the only time it is shown.
    Create(create::Cmd),
    /// List admin tokens, revoked ones included.
    List(list::Cmd),
    /// Revoke an admin token for good; asks first unless --yes.
    Revoke(revoke::Cmd),
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        match self.verb {
            Verb::Create(cmd) => cmd.run(client, output).await,
            Verb::List(cmd) => cmd.run(client, output).await,
            Verb::Revoke(cmd) => cmd.run(client, output).await,
        }
    }
}

/// The token an operator named, from the full list (there is no single-token route, and
/// tokens are few).
pub async fn resolve(client: &ApiClient, wanted: &str) -> anyhow::Result<AdminTokenView> {
    let list = client
        .list_admin_tokens()
        .await
        .with_context(|| format!("listing admin tokens to find {wanted:?}"))?;
    Ok(pick(&list.tokens, wanted)?.clone())
}

/// Exact id, then exact name, then exact display prefix. Several matches are ambiguous, unless
/// only one of them is still live.
fn pick<'a>(tokens: &'a [AdminTokenView], wanted: &str) -> Result<&'a AdminTokenView, Refusal> {
    let wanted = wanted.trim();
    let by = |field: fn(&AdminTokenView) -> &str| -> Vec<&'a AdminTokenView> {
        tokens.iter().filter(|t| field(t) == wanted).collect()
    };
    let mut matches = by(|t| &t.id);
    if matches.is_empty() {
        matches = by(|t| &t.name);
    }
    if matches.is_empty() {
        matches = by(|t| &t.prefix);
    }
    if matches.len() > 1 {
        let live: Vec<&AdminTokenView> = matches
            .iter()
            .copied()
            .filter(|t| t.revoked_at.is_none())
            .collect();
        if live.len() == 1 {
            matches = live;
        }
    }
    match matches.as_slice() {
        [] => Err(Refusal {
            code: ErrorCode::KeyNotFound,
            message: format!(
                "No admin token has the id, name or prefix {:?}.",
                redact_secrets(wanted)
            ),
        }),
        [one] => Ok(one),
        many => {
            let ids: Vec<&str> = many.iter().map(|t| t.id.as_str()).collect();
            Err(Refusal::invalid(format!(
                "{wanted:?} names {} admin tokens: {}. Use an id.",
                many.len(),
                ids.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, name: &str, prefix: &str, revoked: bool) -> AdminTokenView {
        AdminTokenView {
            id: id.into(),
            name: name.into(),
            prefix: prefix.into(),
            created_at: "2027-01-01T00:00:00Z".parse().expect("ts"),
            revoked_at: revoked.then(|| "2027-01-02T00:00:00Z".parse().expect("ts")),
            last_used_at: None,
        }
    }

    #[test]
    fn ids_names_and_prefixes_resolve() {
        let tokens = [
            token("tok_a", "ci", "gwadm-aaaa", false),
            token("tok_b", "ci", "gwadm-bbbb", true),
            token("tok_c", "deploy", "gwadm-cccc", false),
            token("tok_d", "deploy", "gwadm-dddd", false),
        ];
        let check = |wanted: &str, expected: Result<&str, ErrorCode>| {
            let got = pick(&tokens, wanted)
                .map(|t| t.id.as_str())
                .map_err(|e| e.code);
            assert_eq!(got, expected, "{wanted}");
        };
        check("tok_b", Ok("tok_b"));
        check("ci", Ok("tok_a")); // the revoked namesake does not make it ambiguous
        check("gwadm-cccc", Ok("tok_c"));
        check("deploy", Err(ErrorCode::InvalidArgument));
        check("nope", Err(ErrorCode::KeyNotFound));
    }
}
