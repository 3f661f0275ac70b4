//! The `[cluster]` section (SPEC §9): where a replica finds the shared PostgreSQL and Redis,
//! and how long a vanished replica's holds stay open.
//!
//! Absent, the daemon is one server exactly as before (`Config::cluster` is `None`). Present,
//! every rule is checked while the config is read, so a replica with a wrong setting refuses
//! to start, naming the line, instead of joining a cluster half-configured.
//!
//! The URLs carry database passwords, so, like provider keys, they are never written in the
//! config itself: each comes from an environment variable (`*_url_env`) or a file
//! (`*_url_file`), exactly one of the two. A file must be a regular file (a FIFO would hang
//! start-up) that other users cannot open (mode `0600`, or `0640` for a group of its own),
//! the rule `admin.tls_key` follows. The text is read here, at start-up, and kept in a
//! [`SecretUrl`], which never prints the password; errors name the variable or the file,
//! never any of its content.
//!
//! Only the operator's file can turn cluster mode on: the embedded `default.toml` documents
//! the section commented out, and `hold_lease` defaults to [`DEFAULT_HOLD_LEASE`] here.

use std::env::VarError;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::secret_url::{SecretUrl, UrlError};

/// The validated `[cluster]` section.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The shared durable store.
    pub postgres_url: SecretUrl,
    /// The shared live counters (rate windows, spend ledgers, holds).
    pub redis_url: SecretUrl,
    /// An open hold of a replica that stopped renewing it is charged its estimate after this.
    pub hold_lease: Duration,
}

/// `[cluster]` as written in the file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub postgres_url_env: Option<String>,
    pub postgres_url_file: Option<PathBuf>,
    pub redis_url_env: Option<String>,
    pub redis_url_file: Option<PathBuf>,
    pub hold_lease: Option<String>,
}

/// `hold_lease` when unset: long enough that no live replica loses a hold to a slow network
/// or a long stream's pause, short enough that a dead replica's holds (which count against
/// their keys' caps until charged) free the budget within a quarter of an hour.
pub const DEFAULT_HOLD_LEASE: Duration = Duration::from_secs(15 * 60);

/// Bounds of `hold_lease`. Below 10 s a live replica would renew its holds (every lease / 3)
/// every few seconds, and a pause of a few seconds (a GC'd Redis, a network blip) would let
/// another replica charge holds whose requests are still running: billing them twice over
/// their estimate. Above 24 h a replica that died would keep its holds' money out of its
/// keys' budgets for more than a day: longer than a daily spend period, so such a key could
/// be refused for a whole period for requests that ended long ago.
pub const MIN_HOLD_LEASE: Duration = Duration::from_secs(10);
pub const MAX_HOLD_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// A secret file larger than this is not a URL, and is not read whole.
const URL_FILE_MAX_BYTES: u64 = 64 * 1024;

/// How the environment is read: the process's own in the daemon, a map in tests (setting
/// the process's environment is unsafe while other threads read it).
pub type Environment<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// The process's environment.
pub fn process_environment(name: &str) -> Result<String, VarError> {
    std::env::var(name)
}

/// The `[cluster]` section checked and its URLs read; `None` when the file has none.
pub fn resolve(
    file: Option<ClusterFile>,
    env: Environment<'_>,
) -> anyhow::Result<Option<ClusterConfig>> {
    let Some(file) = file else {
        return Ok(None);
    };
    let postgres = Backend {
        name: "postgres_url",
        what: "PostgreSQL",
        env_name: file.postgres_url_env,
        file: file.postgres_url_file,
    };
    let redis = Backend {
        name: "redis_url",
        what: "Redis",
        env_name: file.redis_url_env,
        file: file.redis_url_file,
    };
    let postgres_url = postgres.read(env, SecretUrl::postgres)?;
    let redis_url = redis.read(env, SecretUrl::redis)?;
    let hold_lease = match file.hold_lease {
        None => DEFAULT_HOLD_LEASE,
        Some(text) => hold_lease(&text)?,
    };
    Ok(Some(ClusterConfig {
        postgres_url,
        redis_url,
        hold_lease,
    }))
}

/// One backend's pair of settings.
struct Backend {
    /// `postgres_url` or `redis_url`: the settings are this plus `_env` or `_file`.
    name: &'static str,
    what: &'static str,
    env_name: Option<String>,
    file: Option<PathBuf>,
}

impl Backend {
    fn read(
        &self,
        env: Environment<'_>,
        parse: fn(&str) -> Result<SecretUrl, UrlError>,
    ) -> anyhow::Result<SecretUrl> {
        let name = self.name;
        let (field, source, text) = match (&self.env_name, &self.file) {
            (Some(_), Some(_)) => {
                bail!("cluster.{name}_env and cluster.{name}_file: set one of them, not both")
            }
            (Some(variable), None) => {
                let field = format!("cluster.{name}_env");
                let text = read_env(&field, variable, env)?;
                (field, format!("the environment variable {variable}"), text)
            }
            (None, Some(path)) => {
                let field = format!("cluster.{name}_file");
                // The URL itself where its file's path belongs: never echoed (a path is
                // shown in every other error), it holds the password.
                if path.to_str().is_none_or(|text| text.contains("://")) {
                    bail!(
                        "{field} must be the path of a file that holds the URL (like \
                         /etc/gatewayd/{name}), not the URL itself"
                    );
                }
                let text = read_secret_file(&field, path)?;
                (field, format!("the file {}", path.display()), text)
            }
            (None, None) => bail!(
                "[cluster] needs {name}_env or {name}_file: a cluster keeps its store in \
                 PostgreSQL and its live counters in Redis, and needs both URLs"
            ),
        };
        parse(&text).map_err(|reason| {
            anyhow::anyhow!(
                "{field}: {source} holds no usable {what} URL: {reason}",
                what = self.what
            )
        })
    }
}

fn read_env(field: &str, variable: &str, env: Environment<'_>) -> anyhow::Result<String> {
    // A name as shells write them. Anything else is not echoed: it is most likely the URL
    // itself, password included, written where its variable's name belongs.
    if !super::is_env_name(variable) {
        bail!(
            "{field} must name an environment variable (letters, digits and _, like \
             GATEWAYD_POSTGRES_URL) that holds the URL, not the URL itself"
        );
    }
    match env(variable) {
        Ok(value) if value.trim().is_empty() => {
            bail!("{field}: the environment variable {variable} is empty")
        }
        Ok(value) => Ok(value.trim().to_owned()),
        Err(VarError::NotPresent) => {
            bail!("{field}: the environment variable {variable} is not set")
        }
        Err(VarError::NotUnicode(_)) => {
            bail!("{field}: the environment variable {variable} is not valid UTF-8")
        }
    }
}

/// A secret file's text, trimmed: a regular file, not open to other users, small.
fn read_secret_file(field: &str, path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    // Opening a FIFO (or a device) waits for a writer: start-up would hang. The type is
    // checked again on the opened file, so it is the file that is read.
    let metadata = std::fs::metadata(path).with_context(|| format!("{field}: reading {shown}"))?;
    if !metadata.is_file() {
        bail!("{field}: {shown} is not a regular file");
    }
    let file = std::fs::File::open(path).with_context(|| format!("{field}: reading {shown}"))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("{field}: reading {shown}"))?;
    if !metadata.is_file() {
        bail!("{field}: {shown} is not a regular file");
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        bail!(
            "{field}: {shown} is open to every user (mode {mode:03o}), and it holds a database \
             password; make it private to the user gatewayd runs as (chmod 600 {shown}), or to \
             a group of its own (chmod 640)"
        );
    }
    let mut bytes = Vec::new();
    file.take(URL_FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{field}: reading {shown}"))?;
    if bytes.len() as u64 > URL_FILE_MAX_BYTES {
        bail!("{field}: {shown} is larger than {URL_FILE_MAX_BYTES} bytes: not a URL");
    }
    let Ok(text) = String::from_utf8(bytes) else {
        bail!("{field}: {shown} is not UTF-8 text");
    };
    let text = text.trim();
    if text.is_empty() {
        bail!("{field}: {shown} is empty");
    }
    Ok(text.to_owned())
}

fn hold_lease(text: &str) -> anyhow::Result<Duration> {
    let lease = humantime::parse_duration(text)
        .with_context(|| format!("cluster.hold_lease: {text:?} is not a duration like \"15m\""))?;
    if !(MIN_HOLD_LEASE..=MAX_HOLD_LEASE).contains(&lease) {
        bail!(
            "cluster.hold_lease: {text:?} is outside 10s to 24h (a shorter lease charges live \
             requests' holds after a brief pause; a longer one keeps a vanished replica's \
             holds out of their keys' budgets for more than a day)"
        );
    }
    Ok(lease)
}

#[cfg(test)]
mod tests;
