//! `gwctl audit`: the newest entries of the management audit log, who changed what, when.
//!
//! `--limit` counts entries, not pages: gwctl pages through the daemon's cursor until it has
//! them. In JSON the `next_cursor` of the `AuditList` is kept, so a script can tell whether
//! older entries remain.

use anyhow::Context;
use clap::Args;

use crate::client::ApiClient;
use crate::commands::keys::{self, KEY_HELP};
use crate::output::{self, Output};

#[derive(Debug, Args)]
pub struct Cmd {
    /// Only entries about this key: its id, or its exact name or display prefix.
    #[arg(long, value_name = "KEY", long_help = KEY_HELP)]
    key: Option<String>,
    /// How many entries to show, newest first.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let key_id = match &self.key {
            Some(wanted) => Some(keys::resolve_id(client, wanted).await?),
            None => None,
        };
        let n_entries = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let list = client
            .audit(key_id.as_deref(), n_entries)
            .await
            .context("reading the audit log")?;
        output.print(&list, |list, now| output::audit_table(&list.entries, now))
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
    fn limit_must_be_positive() {
        let parse = |argv: &[&str]| Harness::try_parse_from(argv).map(|h| h.cmd.limit);
        assert_eq!(parse(&["audit"]).expect("default"), 50);
        assert_eq!(parse(&["audit", "--limit", "2000"]).expect("ok"), 2000);
        assert!(parse(&["audit", "--limit", "0"]).is_err());
    }
}
