//! `gatewayd --check-config [FILE]`: the whole configuration checked as start-up would check
//! it, every error with its line, and nothing else done (as `nginx -t` does): no listener
//! bound, no socket, no data directory created, no store opened or locked, so it runs beside
//! the daemon it is about to restart (`install.sh --systemd` does exactly that).
//!
//! [`Config::from_text`] stops at the first error, which names its line. To find the next
//! ones, the offending setting is blanked out (its lines turned into spaces, so every other
//! line keeps its number) and the text checked again, until it passes: a bad value or an
//! unknown field is one key/value; an error on a `[table]` header is the whole table; one
//! inside a `[[prices]]` entry is the whole entry (half an entry would only raise "missing
//! field" errors of our own making). Recovery never invents errors: one that lands on the
//! header of a table a setting was already taken out of may be that removal's consequence
//! (`[cluster] needs postgres_url_env` once a bad `postgres_url_env` is gone), so it is not
//! reported and the table is dropped. A syntax error ends the check: past it toml cannot say
//! what the text means.
//!
//! The check runs in another environment than the daemon's (an installer's shell, not the
//! unit's `Environment=`), so a `[cluster]` URL variable that is not set *here* is a warning,
//! not an error: what the daemon's environment will hold cannot be known. The rest of the
//! file is still checked as though it held a URL; a variable that is set is read and its URL
//! checked as at start-up.
//!
//! What the file is accepted with is then checked as start-up uses it: a configured admin
//! certificate and key are loaded (readable, matching, the key private), the data directory
//! must be a directory if it exists. A provider credential that cannot be read is a warning,
//! not an error, as at start-up: the daemon serves the other providers and answers 502 for
//! that one (a fresh install rarely has all three keys).

use std::cell::RefCell;
use std::env::VarError;
use std::ops::RangeInclusive;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use crate::config::{Config, CredentialSource};
use crate::tls::CertSource;

/// One problem, with the line of the file it is about when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub line: Option<usize>,
    /// The whole message, its `line N` included.
    pub message: String,
}

/// What the check found; the configuration is valid when `errors` is empty.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// The check stopped at [`MAX_ERRORS`]: the rest of the file was not checked.
    pub stopped_early: bool,
}

/// The most errors one check reports. Each is found by checking the whole text again, so a
/// file of thousands of bad lines (a wrong file given, a generated one gone wrong) would take
/// minutes, quadratically, and the check must end (`install.sh` waits for it); a compiler
/// stops in the same way.
pub const MAX_ERRORS: usize = 20;

/// Checks the file at `path`, or the embedded defaults alone when there is none.
pub fn check_file(path: Option<&Path>) -> Report {
    let Some(path) = path else {
        return check_text("");
    };
    // Opening a FIFO would wait for a writer: the check must end.
    match std::fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => {
            return Report::error(format!("{} is not a regular file", path.display()));
        }
        Ok(_) => {}
        Err(err) => {
            return Report::error(format!("reading config file {}: {err}", path.display()));
        }
    }
    match std::fs::read_to_string(path) {
        Ok(text) => check_text(&text),
        Err(err) => Report::error(format!("reading config file {}: {err}", path.display())),
    }
}

/// Checks a config file's text. Errors and warnings come in the file's order.
pub fn check_text(text: &str) -> Report {
    check_text_in(text, &|name: &str| std::env::var(name))
}

/// [`check_text`] reading `[cluster]`'s variables through `env`.
fn check_text_in(text: &str, env: &dyn Fn(&str) -> Result<String, VarError>) -> Report {
    // The variables `[cluster]` names: (setting, variable, a URL its client accepts).
    let table = text.parse::<toml::Table>().ok();
    let stand_ins: Vec<(&str, String, &str)> = [
        ("postgres_url_env", "postgres://localhost/gatewayd"),
        ("redis_url_env", "redis://localhost/"),
    ]
    .into_iter()
    .filter_map(|(field, url)| {
        let name = table.as_ref()?.get("cluster")?.get(field)?.as_str()?;
        Some((field, name.to_owned(), url))
    })
    .collect();
    let unset: RefCell<Vec<(&str, String)>> = RefCell::new(Vec::new());
    let environment = |name: &str| match env(name) {
        Err(VarError::NotPresent) => {
            let (field, _, url) = stand_ins
                .iter()
                .find(|(_, variable, _)| variable == name)
                .ok_or(VarError::NotPresent)?;
            unset.borrow_mut().push((field, name.to_owned()));
            Ok((*url).to_owned())
        }
        other => other,
    };
    let mut report = recover(text, &environment);
    let mut unset = unset.into_inner();
    unset.sort();
    unset.dedup();
    let document = DeTable::parse(text).ok();
    for (field, name) in unset {
        let line = document
            .as_ref()
            .and_then(|d| line_of_key(d.get_ref(), text, &format!("cluster.{field}")));
        let message = format!(
            "cluster.{field}: the environment variable {name} is not set here; the daemon's \
             environment must set it (its URL is not checked)"
        );
        report.warnings.push(Finding {
            line,
            message: match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            },
        });
    }
    report.errors.sort_by_key(|finding| finding.line);
    report.warnings.sort_by_key(|finding| finding.line);
    report
}

/// Every error, found one at a time by taking out what the last one was about, up to
/// [`MAX_ERRORS`].
fn recover(text: &str, env: &dyn Fn(&str) -> Result<String, VarError>) -> Report {
    let mut report = Report::default();
    let mut text = text.to_owned();
    // Tables a setting was taken out of, by header line.
    let mut touched: Vec<usize> = Vec::new();
    // Each round removes at least one line, so this bounds the rounds.
    for _ in 0..=text.lines().count() {
        if report.errors.len() >= MAX_ERRORS {
            report.stopped_early = true;
            return report;
        }
        let err = match Config::from_text_in(&text, env) {
            Ok(config) => {
                check_use(&config, &text, &mut report);
                return report;
            }
            Err(err) => err,
        };
        let message = format!("{err:#}");
        let line = leading_line(&message);
        let Ok(document) = DeTable::parse(&text) else {
            // A syntax error: nothing after it can be read reliably.
            report.errors.push(Finding { line, message });
            return report;
        };
        let layout = Layout::of(document.get_ref(), &text);
        let Some(line) = line else {
            report.errors.push(Finding { line, message });
            return report;
        };
        // Its lines were taken out already: the text no longer says what the error is about.
        if report.errors.iter().any(|found| found.line == Some(line)) {
            return report;
        }
        match layout.removal(line) {
            Some(Removal::Section(section)) if touched.contains(&section.header) => {
                // Possibly caused by the setting taken out before: not reported.
                blank(&mut text, &section.lines);
            }
            Some(Removal::Section(section)) => {
                report.errors.push(Finding {
                    line: Some(line),
                    message,
                });
                blank(&mut text, &section.lines);
            }
            Some(Removal::Leaf { lines, section }) => {
                report.errors.push(Finding {
                    line: Some(line),
                    message,
                });
                blank(&mut text, &[lines]);
                touched.extend(section);
            }
            None => {
                report.errors.push(Finding {
                    line: Some(line),
                    message,
                });
                return report;
            }
        }
    }
    report
}

impl Report {
    fn error(message: String) -> Report {
        Report {
            errors: vec![Finding {
                line: None,
                message,
            }],
            ..Report::default()
        }
    }
}

/// What start-up does with an accepted config, done without its side effects.
fn check_use(config: &Config, text: &str, report: &mut Report) {
    let document = DeTable::parse(text).ok();
    let line_of = |path: &str| {
        document
            .as_ref()
            .and_then(|d| line_of_key(d.get_ref(), text, path))
    };
    let at = |line: Option<usize>, message: String| Finding {
        line,
        message: match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        },
    };

    if let (Some(cert), Some(key)) = (&config.admin.tls_cert, &config.admin.tls_key) {
        let source = CertSource {
            cert: cert.clone(),
            key: key.clone(),
            generated: false,
        };
        if let Err(err) = source.load() {
            let message = format!("{err:#}");
            let field = if message.contains(&key.display().to_string()) {
                "admin.tls_key"
            } else {
                "admin.tls_cert"
            };
            report
                .errors
                .push(at(line_of(field), format!("{field}: {message}")));
        }
    }

    if let Ok(metadata) = std::fs::metadata(&config.data_dir)
        && !metadata.is_dir()
    {
        report.errors.push(at(
            line_of("data_dir"),
            format!(
                "data_dir: {} exists and is not a directory",
                config.data_dir.display()
            ),
        ));
    }

    for provider in &config.providers {
        let name = provider.provider;
        // A provider without a credential (a local server) needs none.
        let Some(credential) = &provider.credential else {
            continue;
        };
        let (field, problem) = match credential {
            CredentialSource::Env(variable) => match std::env::var_os(variable) {
                Some(value) if !value.to_string_lossy().trim().is_empty() => continue,
                Some(_) => (
                    "api_key_env",
                    format!("the environment variable {variable} is empty"),
                ),
                None => (
                    "api_key_env",
                    format!("the environment variable {variable} is not set"),
                ),
            },
            CredentialSource::File(path) => match credential_file_problem(path) {
                None => continue,
                Some(problem) => ("api_key_file", problem),
            },
        };
        let line = line_of(&format!("providers.{name}.{field}"))
            .or_else(|| line_of(&format!("providers.{name}")));
        report.warnings.push(at(
            line,
            format!(
                "[providers.{name}] {field}: {problem}; requests to {name} will fail with 502 \
                 until it is"
            ),
        ));
    }
}

/// Why a provider's key file cannot be used, if it cannot. Never says what it holds.
fn credential_file_problem(path: &Path) -> Option<String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(err) => return Some(format!("cannot read {shown} ({})", err.kind())),
        // Reading a FIFO would wait for a writer.
        Ok(metadata) if !metadata.is_file() => {
            return Some(format!("{shown} is not a regular file"));
        }
        Ok(_) => {}
    }
    match std::fs::read_to_string(path) {
        Err(err) => Some(format!("cannot read {shown} ({})", err.kind())),
        Ok(secret) if secret.trim().is_empty() => Some(format!("{shown} is empty")),
        Ok(_) => None,
    }
}

/// The line number an error message starts with (`line 3: …`, `line 3, column 5 …`).
fn leading_line(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("line ")?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// The line of a dotted key (`admin.tls_key`) the text sets, if it does.
fn line_of_key(document: &DeTable<'_>, text: &str, path: &str) -> Option<usize> {
    let mut table = document;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let (key, value) = table.iter().find(|(key, _)| key.get_ref() == segment)?;
        if segments.peek().is_none() {
            return Some(line_at(text, key.span().start));
        }
        match value.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    None
}

fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// Turns the given lines (1-based, inclusive ranges) into spaces, keeping every line break.
fn blank(text: &mut String, ranges: &[RangeInclusive<usize>]) {
    let blanked: String = text
        .split_inclusive('\n')
        .enumerate()
        .map(|(index, line)| {
            if ranges.iter().any(|range| range.contains(&(index + 1))) {
                line.chars()
                    .map(|c| if c == '\n' || c == '\r' { c } else { ' ' })
                    .collect()
            } else {
                line.to_owned()
            }
        })
        .collect();
    *text = blanked;
}

/// Where the settings of a document are, by line.
#[derive(Debug, Default)]
struct Layout {
    /// Where each line break is, to turn offsets into line numbers without counting again
    /// from the start for every setting (quadratic on a long file).
    newlines: Vec<usize>,
    /// `[table]` headers and `[[array]]` entries, each with its own settings.
    sections: Vec<Section>,
    leaves: Vec<Leaf>,
}

#[derive(Clone, Debug)]
struct Section {
    header: usize,
    /// The header's line and its own settings' (not those of tables under it).
    lines: Vec<RangeInclusive<usize>>,
    /// An `[[array]]` entry: its settings go together.
    entry: bool,
}

#[derive(Debug)]
struct Leaf {
    lines: RangeInclusive<usize>,
    /// The index of the section it is in; `None` at the top level.
    section: Option<usize>,
}

/// What to take out for an error on a line.
enum Removal {
    Section(Section),
    Leaf {
        lines: RangeInclusive<usize>,
        /// The header line of the table it was in.
        section: Option<usize>,
    },
}

impl Layout {
    fn of(document: &DeTable<'_>, text: &str) -> Layout {
        let mut layout = Layout {
            newlines: text.match_indices('\n').map(|(at, _)| at).collect(),
            ..Layout::default()
        };
        layout.walk(document, text, None);
        layout
    }

    fn walk(&mut self, table: &DeTable<'_>, text: &str, section: Option<usize>) {
        for (key, value) in table {
            let value_start = text.get(value.span().start..).unwrap_or_default();
            match value.get_ref() {
                DeValue::Table(inner) if value_start.starts_with('[') => {
                    let index = self.open(self.line_at(value.span().start), false);
                    self.walk(inner, text, Some(index));
                }
                // A dotted key or a table only named in a header below it.
                DeValue::Table(inner) if !value_start.starts_with('{') => {
                    self.walk(inner, text, section);
                }
                DeValue::Array(entries)
                    if text
                        .get(value.span().start..)
                        .is_some_and(|rest| rest.starts_with("[[")) =>
                {
                    for entry in entries {
                        if let DeValue::Table(inner) = entry.get_ref() {
                            let index = self.open(self.line_at(entry.span().start), true);
                            self.walk(inner, text, Some(index));
                        }
                    }
                }
                _ => {
                    let lines = self.line_at(key.span().start)..=self.line_at(value.span().end);
                    if let Some(index) = section {
                        self.sections[index].lines.push(lines.clone());
                    }
                    self.leaves.push(Leaf { lines, section });
                }
            }
        }
    }

    /// The line (1-based) of a byte offset, as [`line_at`] counts it.
    fn line_at(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&at| at < offset) + 1
    }

    fn open(&mut self, header: usize, entry: bool) -> usize {
        self.sections.push(Section {
            header,
            lines: vec![header..=header],
            entry,
        });
        self.sections.len() - 1
    }

    fn removal(&self, line: usize) -> Option<Removal> {
        if let Some(section) = self.sections.iter().find(|s| s.header == line) {
            return Some(Removal::Section(section.clone()));
        }
        let leaf = self
            .leaves
            .iter()
            .filter(|leaf| leaf.lines.contains(&line))
            .min_by_key(|leaf| leaf.lines.end() - leaf.lines.start())?;
        let section = leaf.section.map(|index| &self.sections[index]);
        match section {
            Some(section) if section.entry => Some(Removal::Section(section.clone())),
            _ => Some(Removal::Leaf {
                lines: leaf.lines.clone(),
                section: section.map(|s| s.header),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
