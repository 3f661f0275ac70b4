//! `gwctl keys list`: every key, all pages, as one table or one `KeyList`.
//!
//! Pagination is the daemon's concern, not the operator's: gwctl follows `next_cursor` to the
//! end, so the JSON is a single `{"keys": [...], "next_cursor": null}` a script can trust to be
//! complete.

use anyhow::Context;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use gateway_shared::KeyState;
use gateway_shared::api::KeyList;

use crate::client::ApiClient;
use crate::output::{self, Output};

#[derive(Debug, Args)]
pub struct Cmd {
    /// Only keys in this state.
    #[arg(
        long,
        value_name = "STATE",
        value_parser = PossibleValuesParser::new(KeyState::ALL.map(KeyState::as_str))
            .try_map(|text| text.parse::<KeyState>()),
    )]
    state: Option<KeyState>,
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let keys = client
            .list_all_keys(self.state)
            .await
            .context("listing keys")?;
        let list = KeyList {
            keys,
            next_cursor: None,
        };
        output.print(&list, |list, now| output::key_table(&list.keys, now))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        cmd: Cmd,
    }

    #[test]
    fn state_filter_parses_known_states_only() {
        let parse = |argv: &[&str]| Harness::try_parse_from(argv).map(|h| h.cmd.state);
        assert_eq!(parse(&["list"]).expect("ok"), None);
        assert_eq!(
            parse(&["list", "--state", "revoked"]).expect("ok"),
            Some(KeyState::Revoked)
        );
        assert!(parse(&["list", "--state", "gone"]).is_err());
    }
}
