//! `gwctl man`: the manual pages, in roff, from the clap definition gwctl parses with.
//!
//! Without `--out-dir`, `gwctl.1` on stdout (`gwctl man | man -l -`). With it, one file per
//! page in that directory: `gwctl.1` and a page for every verb (`gwctl-keys.1`,
//! `gwctl-keys-create.1`, …), the git layout, which `install.sh` puts in
//! `$prefix/share/man/man1`. A packager runs the built binary once to produce them (as with
//! `rg --generate man`), so the pages always match the flags; the verb is hidden from
//! `--help` since it is for packaging, not for operating a daemon. The pages carry no date,
//! so a rebuild of the same source writes the same bytes. Needs no daemon.
//!
//! clap_mangen's own `render` titles the after-help text "EXTRA"; a manual says "EXIT
//! STATUS" and "SEE ALSO", so the page is assembled from its sections here.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};

use crate::Cli;

#[derive(Debug, Args)]
pub struct Cmd {
    /// Write every page (gwctl.1 and one per verb) into DIR instead of gwctl.1 to stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

impl Cmd {
    pub fn run(&self) -> anyhow::Result<()> {
        match &self.out_dir {
            Some(dir) => write_pages(dir),
            None => {
                let page = page()?;
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(&page)
                    .and_then(|()| stdout.flush())
                    .context("writing the manual page to stdout")
            }
        }
    }
}

/// `gwctl.1`, in roff.
pub fn page() -> anyhow::Result<Vec<u8>> {
    let command = command();
    render(
        &command,
        // Its after-help is the exit codes, given as the EXIT STATUS section.
        None,
        &[
            ("EXIT STATUS", crate::EXIT_CODES_HELP),
            (
                "SEE ALSO",
                "gatewayd(1), gwctl-keys(1), gwctl-completions(1)",
            ),
        ],
    )
}

/// gwctl's command as the pages show it: the help verb left out (the pages are the help).
fn command() -> clap::Command {
    let mut command = Cli::command()
        .bin_name("gwctl")
        .disable_help_subcommand(true);
    command.build();
    command
}

/// `gwctl.1` and a page per visible verb, at every depth, written into `dir`.
fn write_pages(dir: &Path) -> anyhow::Result<()> {
    let command = command();
    let mut pages = vec![("gwctl.1".to_owned(), page()?)];
    let mut verbs: Vec<clap::Command> = visible_subcommands(&command);
    while let Some(verb) = verbs.pop() {
        let name = verb
            .get_display_name()
            .unwrap_or(verb.get_name())
            .to_owned();
        pages.push((
            format!("{name}.1"),
            render(&verb, Some("EXAMPLES"), &[("SEE ALSO", "gwctl(1)")])?,
        ));
        verbs.extend(visible_subcommands(&verb));
    }
    for (name, page) in pages {
        let path = dir.join(&name);
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn visible_subcommands(command: &clap::Command) -> Vec<clap::Command> {
    command
        .get_subcommands()
        .filter(|verb| !verb.is_hide_set())
        .cloned()
        .collect()
}

/// One page: clap_mangen's sections, the command's after-help titled `after_help_as` (left
/// out when `None`), then `sections`, both preformatted (the lines are kept as written).
fn render(
    command: &clap::Command,
    after_help_as: Option<&str>,
    sections: &[(&str, &str)],
) -> anyhow::Result<Vec<u8>> {
    // Every page's footer names the program and its version, a verb's page included.
    let man = Man::new(command.clone()).source(format!("gwctl {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if command.get_subcommands().any(|verb| !verb.is_hide_set()) {
        man.render_subcommands_section(&mut page)?;
    }
    let mut extra = Roff::new();
    if let (Some(title), Some(text)) = (after_help_as, command.get_after_help()) {
        preformatted(&mut extra, title, &text.to_string());
    }
    for (title, text) in sections {
        preformatted(&mut extra, title, text);
    }
    extra.to_writer(&mut page)?;
    if command.get_version().is_some() {
        man.render_version_section(&mut page)?;
    }
    Ok(page)
}

/// A section whose lines are shown as written (roff's no-fill mode), escaped by roff.
fn preformatted(roff: &mut Roff, title: &str, text: &str) {
    roff.control("SH", [title]);
    roff.control("nf", []);
    for line in text.lines() {
        roff.text([roman(line)]);
    }
    roff.control("fi", []);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_documents_the_verbs_flags_and_exit_codes() {
        let page = String::from_utf8(page().expect("page")).expect("utf-8");
        assert!(page.contains(".TH gwctl 1"), "{page:.400}");
        for word in [
            "keys",
            "admin\\-tokens",
            "completions",
            "\\-\\-ca\\-cert",
            ".SH \"EXIT STATUS\"",
            "daemon_unreachable",
            "gatewayd(1)",
        ] {
            assert!(page.contains(word), "{word} missing from the page:\n{page}");
        }
        // Packaging helpers and clap's help verb stay out of the operator's manual.
        for word in ["gwctl\\-man", "gwctl\\-help", "EXTRA"] {
            assert!(!page.contains(word), "{word} in the page:\n{page}");
        }
    }

    #[test]
    fn out_dir_writes_a_page_per_verb() {
        let dir = tempfile::tempdir().expect("temp dir");
        Cmd {
            out_dir: Some(dir.path().to_owned()),
        }
        .run()
        .expect("pages written");
        for name in [
            "gwctl.1",
            "gwctl-keys.1",
            "gwctl-keys-create.1",
            "gwctl-admin-tokens-revoke.1",
            "gwctl-completions.1",
        ] {
            let page = std::fs::read_to_string(dir.path().join(name)).expect(name);
            assert!(page.contains(".TH "), "{name}");
        }
        let completions =
            std::fs::read_to_string(dir.path().join("gwctl-completions.1")).expect("page");
        assert!(completions.contains(".SH EXAMPLES"), "{completions}");
        for hidden in ["gwctl-man.1", "gwctl-help.1", "gwctl-keys-help.1"] {
            assert!(!dir.path().join(hidden).exists(), "{hidden}");
        }
    }
}
