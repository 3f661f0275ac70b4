//! Configuration: an embedded `default.toml`, overridden field by field by an optional file.
//!
//! The daemon must start with no file at all, and a typo in a file must stop it with a
//! message naming the line, never be silently ignored. So the file is parsed on its own into
//! [`FileConfig`] (every field optional, unknown fields refused, toml's errors carry the
//! line), the embedded defaults are parsed into the same type, and [`Config::resolve`] merges
//! the two and validates the result into runtime types (socket addresses, CIDRs, URIs).
//! `[cluster]` (SPEC §9) has a module of its own (`cluster`), its URLs a type that never
//! prints their passwords (`secret_url`); so has `[providers.NAME]` (SPEC §10, `providers`).

mod cluster;
mod providers;
mod secret_url;
mod toml_error;

pub use cluster::{ClusterConfig, ClusterFile, DEFAULT_HOLD_LEASE, MAX_HOLD_LEASE, MIN_HOLD_LEASE};
pub use providers::{CredentialSource, Kind, ProviderConfig, ProviderFile, ProvidersFile};
pub use secret_url::{SecretUrl, UrlError};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use gateway_shared::Provider;
use ipnet::IpNet;
use serde::Deserialize;

use crate::spend::price::{FallbackEntry, PriceEntry, PriceTable};

const DEFAULT_TOML: &str = include_str!("default.toml");

/// The validated configuration the daemon runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Proxy event loops (threads); `None`: one per CPU core. See [`Config::event_loops`].
    pub worker_threads: Option<usize>,
    /// Pin each event loop to a core of its own and the usage writer beside the last one
    /// (see `cpu_affinity`).
    pub cpu_affinity: bool,
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub providers: Vec<ProviderConfig>,
    /// The operator's `[[prices]]`, searched before the shipped table.
    pub prices: Vec<PriceEntry>,
    pub spend: SpendConfig,
    /// `[cluster]`: shared PostgreSQL and Redis; `None` (no section) is one server.
    pub cluster: Option<ClusterConfig>,
}

#[derive(Clone, Debug)]
pub struct SpendConfig {
    /// Near a cap, lower the request's output limit to fit instead of refusing it.
    pub clamp_output: bool,
    /// Clamp only when the headroom pays for at least this many output tokens.
    pub min_output_tokens: u64,
    pub fallback_price: Option<FallbackEntry>,
}

#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body (408 `request_timeout`). Not a total
    /// deadline: a slow but steady upload of a large body is never cut.
    pub body_read_timeout: Duration,
    pub drain_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    /// Longest silence from a provider, before its headers or between body frames. Not a
    /// total deadline: a long healthy stream is never cut.
    pub upstream_idle_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub listen: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Connections the HTTPS listener holds at once; beyond, closed before any TLS.
    pub max_connections: usize,
    /// Connections the Unix socket holds at once; beyond, closed at once.
    pub socket_max_connections: usize,
    /// Longest an HTTPS connection may take to finish TLS and its first request's headers.
    pub auth_timeout: Duration,
}

/// The file format. Every field is optional; see `default.toml` for the defaults.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub worker_threads: Option<u64>,
    pub cpu_affinity: Option<bool>,
    pub proxy: Option<ProxyFile>,
    pub admin: Option<AdminFile>,
    pub providers: Option<ProvidersFile>,
    pub prices: Option<Vec<PriceEntry>>,
    pub spend: Option<SpendFile>,
    pub cluster: Option<ClusterFile>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendFile {
    pub clamp_output: Option<bool>,
    pub min_output_tokens: Option<u64>,
    pub fallback_price: Option<FallbackEntry>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub listen: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_body_bytes: Option<u64>,
    pub max_connections: Option<u64>,
    pub header_read_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    pub upstream_connect_timeout: Option<String>,
    pub upstream_idle_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub socket: Option<PathBuf>,
    pub socket_mode: Option<String>,
    pub listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_connections: Option<u64>,
    pub socket_max_connections: Option<u64>,
    pub auth_timeout: Option<String>,
}

impl Config {
    /// How many proxy event loops to run: `worker_threads`, or one per CPU core.
    pub fn event_loops(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Embedded defaults, overridden by `path` when given.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                Self::from_text(&text).with_context(|| format!("in config file {}", path.display()))
            }
            None => Self::resolve(FileConfig::default()),
        }
    }

    /// The data directory a config file names (else the default), read without resolving the
    /// rest: `--print-data-dir` answers it to `install.sh`, whose shell lacks the unit's
    /// environment and so the `[cluster]` variables that `load` would need.
    pub fn data_dir_in(path: Option<&Path>) -> anyhow::Result<PathBuf> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                parse_file(&text).with_context(|| format!("in config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let defaults = parse_file(DEFAULT_TOML).context("embedded default.toml")?;
        Ok(file
            .data_dir
            .or(defaults.data_dir)
            .unwrap_or_else(gateway_shared::paths::default_data_dir))
    }

    /// A config file's text, parsed and validated. toml names the line of a syntax error or
    /// unknown field itself; a value refused later (an address, a duration) is found in the
    /// text by the field its error names, so that every error names its line (SPEC §8).
    pub fn from_text(text: &str) -> anyhow::Result<Config> {
        Self::from_text_in(text, &cluster::process_environment)
    }

    /// [`Config::from_text`] reading `[cluster]`'s variables from `env`.
    pub(crate) fn from_text_in(
        text: &str,
        env: cluster::Environment<'_>,
    ) -> anyhow::Result<Config> {
        Self::resolve_in(parse_file(text)?, env).map_err(|err| {
            match line_of_named_field(text, &err) {
                Some(line) => err.context(format!("line {line}")),
                None => err,
            }
        })
    }

    /// Merges a parsed file over the embedded defaults and validates the result.
    pub fn resolve(file: FileConfig) -> anyhow::Result<Config> {
        Self::resolve_in(file, &cluster::process_environment)
    }

    fn resolve_in(file: FileConfig, env: cluster::Environment<'_>) -> anyhow::Result<Config> {
        let defaults = parse_file(DEFAULT_TOML).context("embedded default.toml")?;
        let proxy = merge_proxy(
            file.proxy.unwrap_or_default(),
            defaults.proxy.unwrap_or_default(),
        );
        let admin = merge_admin(
            file.admin.unwrap_or_default(),
            defaults.admin.unwrap_or_default(),
        );
        let user_providers = file.providers.unwrap_or_default();
        let default_providers = defaults.providers.unwrap_or_default();

        let providers = providers::resolve(user_providers, &default_providers)?;

        let spend_user = file.spend.unwrap_or_default();
        let spend_default = defaults.spend.unwrap_or_default();
        let spend = SpendConfig {
            clamp_output: spend_user
                .clamp_output
                .or(spend_default.clamp_output)
                .unwrap_or(true),
            min_output_tokens: spend_user
                .min_output_tokens
                .or(spend_default.min_output_tokens)
                .unwrap_or(256),
            fallback_price: spend_user.fallback_price.or(spend_default.fallback_price),
        };
        let prices = file.prices.unwrap_or_default();
        if let Some(entry) = prices.iter().find(|e| {
            e.provider
                .is_some_and(|named| !providers.iter().any(|p| p.provider == named))
        }) {
            bail!(
                "prices: the entry for {:?} names a provider this config does not have (the \
                 built-in openai, anthropic, gemini, or a [providers.NAME] section)",
                entry.model
            );
        }
        // Built here only to validate: a bad glob or price stops start-up with its name.
        PriceTable::new(&prices, spend.fallback_price.as_ref())?;
        if admin.tls_cert.is_some() != admin.tls_key.is_some() {
            anyhow::bail!(
                "admin.tls_cert and admin.tls_key go together: set both (your certificate and \
                 its private key) or neither (a self-signed certificate is generated)"
            );
        }

        let worker_threads = match file.worker_threads.or(defaults.worker_threads) {
            None | Some(0) => None,
            Some(n) => Some(
                usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= 1024)
                    .context("worker_threads must be at most 1024")?,
            ),
        };

        // Only the operator's file turns cluster mode on; the defaults' section is ignored.
        let cluster = cluster::resolve(file.cluster, env)?;

        Ok(Config {
            cluster,
            worker_threads,
            cpu_affinity: file.cpu_affinity.or(defaults.cpu_affinity).unwrap_or(true),
            prices,
            spend,
            data_dir: file
                .data_dir
                .or(defaults.data_dir)
                .unwrap_or_else(gateway_shared::paths::default_data_dir),
            proxy: ProxyConfig {
                listen: parse_addr("proxy.listen", proxy.listen.as_deref())?,
                trusted_proxies: proxy
                    .trusted_proxies
                    .unwrap_or_default()
                    .iter()
                    .map(|text| {
                        gateway_shared::validate::parse_ip_rule(text.trim()).with_context(|| {
                            format!(
                                "proxy.trusted_proxies: {text:?} is not an IP address or CIDR range"
                            )
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
                max_body_bytes: positive("proxy.max_body_bytes", proxy.max_body_bytes)?,
                max_connections: positive("proxy.max_connections", proxy.max_connections)?,
                header_read_timeout: duration(
                    "proxy.header_read_timeout",
                    proxy.header_read_timeout,
                )?,
                body_read_timeout: duration("proxy.body_read_timeout", proxy.body_read_timeout)?,
                drain_timeout: duration("proxy.drain_timeout", proxy.drain_timeout)?,
                upstream_connect_timeout: duration(
                    "proxy.upstream_connect_timeout",
                    proxy.upstream_connect_timeout,
                )?,
                upstream_idle_timeout: duration(
                    "proxy.upstream_idle_timeout",
                    proxy.upstream_idle_timeout,
                )?,
            },
            admin: AdminConfig {
                socket: admin
                    .socket
                    .unwrap_or_else(gateway_shared::paths::default_socket_path),
                socket_mode: parse_mode(admin.socket_mode.as_deref().unwrap_or("0660"))?,
                listen: parse_addr("admin.listen", admin.listen.as_deref())?,
                tls_cert: admin.tls_cert,
                tls_key: admin.tls_key,
                max_connections: positive("admin.max_connections", admin.max_connections)?,
                socket_max_connections: positive(
                    "admin.socket_max_connections",
                    admin.socket_max_connections,
                )?,
                auth_timeout: duration("admin.auth_timeout", admin.auth_timeout)?,
            },
            providers,
        })
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("gateway.db")
    }

    pub fn provider(&self, provider: Provider) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.provider == provider)
    }

    /// What `GET /v1/providers` lists.
    pub fn provider_list(&self) -> gateway_shared::api::ProviderList {
        gateway_shared::api::ProviderList {
            providers: self
                .providers
                .iter()
                .map(|p| gateway_shared::api::ProviderView {
                    name: p.provider,
                    kind: p.kind,
                    builtin: p.provider.is_builtin(),
                })
                .collect(),
        }
    }

    /// Every provider this daemon runs: the built-in ones, then the configured ones.
    pub fn provider_names(&self) -> Vec<Provider> {
        self.providers.iter().map(|p| p.provider).collect()
    }
}

/// The line of the first field an error names (`proxy.listen`, `worker_threads`,
/// `[providers.openai]`) that the text sets; in an array of tables (`[[prices]] for "x"`),
/// the entry whose `model` the message quotes.
fn line_of_named_field(text: &str, err: &anyhow::Error) -> Option<usize> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let message = format!("{err:#}");
    let line_at = |start: usize| Some(text.get(..start)?.matches('\n').count() + 1);
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
        .map(|token| token.trim_matches('.'))
        .filter(|token| {
            token
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
        })
        .find_map(|path| {
            let mut table = document.get_ref();
            let mut segments = path.split('.').peekable();
            while let Some(segment) = segments.next() {
                let (key, value) = table.iter().find(|(k, _)| k.get_ref() == segment)?;
                if segments.peek().is_none() {
                    if let toml::de::DeValue::Array(entries) = value.get_ref() {
                        let quoted = entries.iter().find_map(|entry| {
                            let toml::de::DeValue::Table(entry) = entry.get_ref() else {
                                return None;
                            };
                            let (model_key, model) =
                                entry.iter().find(|(k, _)| k.get_ref() == "model")?;
                            let toml::de::DeValue::String(model) = model.get_ref() else {
                                return None;
                            };
                            message
                                .contains(&format!("{:?}", model.as_ref()))
                                .then(|| model_key.span().start)
                        });
                        if let Some(start) = quoted {
                            return line_at(start);
                        }
                    }
                    return line_at(key.span().start);
                }
                match value.get_ref() {
                    toml::de::DeValue::Table(inner) => table = inner,
                    _ => return None,
                }
            }
            None
        })
}

/// Parses a config file's text (every field optional, unknown fields refused).
pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    toml::from_str(text).map_err(|e| toml_error::parse_error(text, &e))
}

fn merge_proxy(user: ProxyFile, default: ProxyFile) -> ProxyFile {
    ProxyFile {
        listen: user.listen.or(default.listen),
        trusted_proxies: user.trusted_proxies.or(default.trusted_proxies),
        max_body_bytes: user.max_body_bytes.or(default.max_body_bytes),
        max_connections: user.max_connections.or(default.max_connections),
        header_read_timeout: user.header_read_timeout.or(default.header_read_timeout),
        body_read_timeout: user.body_read_timeout.or(default.body_read_timeout),
        drain_timeout: user.drain_timeout.or(default.drain_timeout),
        upstream_connect_timeout: user
            .upstream_connect_timeout
            .or(default.upstream_connect_timeout),
        upstream_idle_timeout: user.upstream_idle_timeout.or(default.upstream_idle_timeout),
    }
}

fn merge_admin(user: AdminFile, default: AdminFile) -> AdminFile {
    AdminFile {
        socket: user.socket.or(default.socket),
        socket_mode: user.socket_mode.or(default.socket_mode),
        listen: user.listen.or(default.listen),
        tls_cert: user.tls_cert.or(default.tls_cert),
        tls_key: user.tls_key.or(default.tls_key),
        max_connections: user.max_connections.or(default.max_connections),
        socket_max_connections: user
            .socket_max_connections
            .or(default.socket_max_connections),
        auth_timeout: user.auth_timeout.or(default.auth_timeout),
    }
}

/// A variable name as shells write them (`[A-Za-z_][A-Za-z0-9_]*`).
pub(crate) fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_addr(field: &str, value: Option<&str>) -> anyhow::Result<SocketAddr> {
    let value = value.with_context(|| format!("{field} is required"))?;
    value
        .parse()
        .with_context(|| format!("{field}: {value:?} is not an address like 127.0.0.1:8080"))
}

fn positive(field: &str, value: Option<u64>) -> anyhow::Result<usize> {
    match value.map(usize::try_from) {
        Some(Ok(n)) if n > 0 => Ok(n),
        Some(_) => bail!("{field} must be a positive whole number"),
        None => bail!("{field} is required"),
    }
}

fn duration(field: &str, value: Option<String>) -> anyhow::Result<Duration> {
    let text = value.with_context(|| format!("{field} is required"))?;
    let parsed = humantime::parse_duration(&text)
        .with_context(|| format!("{field}: {text:?} is not a duration like \"30s\" or \"5m\""))?;
    if parsed.is_zero() {
        bail!("{field} must be longer than zero");
    }
    Ok(parsed)
}

/// The admin socket's mode. Whoever may connect to the socket is an administrator, so a
/// mode that lets in users outside the socket's owner and group is refused, not served.
fn parse_mode(text: &str) -> anyhow::Result<u32> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode & 0o007 != 0 && mode <= 0o777 => bail!(
            "admin.socket_mode: {text:?} would let every local user manage keys (its last \
             digit, for others, must be 0); use \"0660\" and add operators to the socket's group"
        ),
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => bail!("admin.socket_mode: {text:?} is not an octal file mode like \"0660\""),
    }
}

#[cfg(test)]
mod tests;
