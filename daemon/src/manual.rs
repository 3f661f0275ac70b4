//! `gatewayd man`: the manual pages, in roff, from the clap definition gatewayd parses with.
//! Part of the `gatewayd` binary (declared in `main.rs`), not of the library: it needs the
//! binary's flags.
//!
//! Without `--out-dir`, `gatewayd.1` on stdout (`gatewayd man | man -l -`); with it, that
//! page and one per command (`gatewayd-migrate-store.1`) in the directory, where `install.sh`
//! puts them (`$prefix/share/man/man1`). A packager runs the built binary once to produce them
//! (as with `rg --generate man`), so they always match the flags; the command is hidden since
//! it is for packaging. The pages carry no date: a rebuild of the same source writes the same
//! bytes. clap_mangen's sections are completed with what a daemon's manual says and clap does
//! not know: exit status, environment, files, signals.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};

use crate::Args;

const EXIT_STATUS: &str = "\
0   stopped cleanly (SIGTERM or SIGINT: in-flight requests drained, usage flushed);
    --check-config: the configuration is valid
1   could not start or stopped on an error (said on stderr and in the log);
    --check-config: the configuration is invalid (every error on stderr, with its line)
2   a malformed command line
64  migrate-store: no PostgreSQL store to copy into, or a malformed --to (EX_USAGE)
78  the configuration is invalid; start-up stops before binding anything (EX_CONFIG)";

const ENVIRONMENT: &str = "\
GATEWAYD_CONFIG      the config file, when --config is not given
GATEWAYD_LOG         the log filter (tracing's EnvFilter syntax), default info
GATEWAYD_LOG_FORMAT  text (default) or json, one object a line
OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY
                     the providers' keys, as named by each [providers.NAME]
                     api_key_env (or read from its api_key_file instead)
NOTIFY_SOCKET        systemd readiness (Type=notify): READY=1, STOPPING=1
RUNTIME_DIRECTORY, STATE_DIRECTORY
                     under systemd, the default admin socket's and data directory's
                     places (before /run/gatewayd and /var/lib/gatewayd, or the XDG
                     directories for a user other than root)";

const FILES: &str = "\
/etc/gatewayd/gatewayd.toml   the config install.sh writes (as root); every field is
                              optional, unknown fields are refused with their line
DATA_DIR/gateway.db           keys (hashed), usage and audit (SQLite, one server)
DATA_DIR/tls/                 the self-signed admin certificate, when none is configured
DATA_DIR/spool/               usage batches waiting for PostgreSQL (cluster mode)
/run/gatewayd/admin.sock      the management socket gwctl uses (mode 0660)";

const SIGNALS: &str = "\
SIGTERM, SIGINT  stop accepting, drain in-flight requests (streams included), flush usage
SIGHUP           re-read the admin TLS certificate and key; a bad file keeps the old one";

pub fn run(out_dir: Option<&Path>) -> ExitCode {
    let result = match out_dir {
        Some(dir) => write_pages(dir),
        None => page().and_then(|page| {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&page)
                .and_then(|()| stdout.flush())
                .context("writing the manual page to stdout")
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gatewayd man: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// gatewayd's command as the pages show it: the help command left out (the pages are the
/// help), named as it is invoked.
fn command() -> clap::Command {
    let mut command = Args::command()
        .name("gatewayd")
        .bin_name("gatewayd")
        .disable_help_subcommand(true);
    command.build();
    command
}

/// `gatewayd.1`, in roff.
fn page() -> anyhow::Result<Vec<u8>> {
    render(
        &command(),
        &[
            ("EXIT STATUS", EXIT_STATUS),
            ("ENVIRONMENT", ENVIRONMENT),
            ("FILES", FILES),
            ("SIGNALS", SIGNALS),
            (
                "SEE ALSO",
                "gwctl(1), gatewayd-migrate-store(1), systemd.service(5)",
            ),
        ],
    )
}

/// `gatewayd.1` and one page per visible command, written into `dir`.
fn write_pages(dir: &Path) -> anyhow::Result<()> {
    let command = command();
    let mut pages = vec![("gatewayd.1".to_owned(), page()?)];
    for verb in command.get_subcommands().filter(|verb| !verb.is_hide_set()) {
        let name = verb.get_display_name().unwrap_or(verb.get_name());
        pages.push((
            format!("{name}.1"),
            render(verb, &[("SEE ALSO", "gatewayd(1)")])?,
        ));
    }
    for (name, page) in pages {
        let path = dir.join(&name);
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// One page: clap_mangen's sections, then `sections`, preformatted (lines kept as written).
fn render(command: &clap::Command, sections: &[(&str, &str)]) -> anyhow::Result<Vec<u8>> {
    // Every page's footer names the program and its version, a command's page included.
    let man = Man::new(command.clone()).source(format!("gatewayd {}", env!("CARGO_PKG_VERSION")));
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
    for (title, text) in sections {
        extra.control("SH", [*title]);
        extra.control("nf", []);
        for line in text.lines() {
            extra.text([roman(line)]);
        }
        extra.control("fi", []);
    }
    extra.to_writer(&mut page)?;
    if command.get_version().is_some() {
        man.render_version_section(&mut page)?;
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_documents_flags_commands_and_what_clap_does_not_know() {
        let page = String::from_utf8(page().expect("page")).expect("utf-8");
        assert!(page.contains(".TH gatewayd 1"), "{page:.400}");
        for word in [
            "\\-\\-check\\-config",
            "\\-\\-config",
            "migrate\\-store",
            ".SH \"EXIT STATUS\"",
            ".SH ENVIRONMENT",
            "GATEWAYD_LOG",
            ".SH SIGNALS",
        ] {
            assert!(page.contains(word), "{word} missing from the page:\n{page}");
        }
        assert!(
            !page.contains("gatewayd\\-man"),
            "the hidden command is listed"
        );
    }

    #[test]
    fn out_dir_writes_the_command_pages() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_pages(dir.path()).expect("pages");
        for name in ["gatewayd.1", "gatewayd-migrate-store.1"] {
            let page = std::fs::read_to_string(dir.path().join(name)).expect(name);
            assert!(page.contains(".TH "), "{name}");
        }
        assert!(!dir.path().join("gatewayd-man.1").exists());
        assert!(!dir.path().join("gatewayd-help.1").exists());
    }
}
