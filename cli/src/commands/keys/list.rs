//! `gwctl keys list`: every key, all pages, as one table or one `KeyList`.
//!
//! Pagination is the daemon's concern, not the operator's: gwctl follows `next_cursor` to the
//! end, so the JSON is a single `{"keys": [...], "next_cursor": null}` a script can trust to be
//! complete. Each page is printed as it arrives and then dropped
//! ([`crate::output::key_list`]), so memory stays flat however many keys there are. Nothing
//! is printed before the first page arrived; a failure on a later page leaves what was
//! printed (for JSON, a document without its end, which no parser takes for a whole one) and
//! exits with the failure's code.

use anyhow::Context;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use gateway_shared::KeyState;

use crate::client::ApiClient;
use crate::output::Output;
use crate::output::key_list::KeyListPrinter;

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
        let mut printer = KeyListPrinter::new(output.format);
        let mut pages = client.key_pages(self.state);
        while let Some(keys) = pages.next().await.context("listing keys")? {
            output.stdout_part(&printer.page(&keys, output.shown_now())?)?;
        }
        output.stdout_part(&printer.finish())
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
