//! The management API (SPEC §6) as typed async methods, over a pluggable transport.
//!
//! Commands call `client.get_key(id)` and get a [`KeyView`] or an error that already carries
//! its meaning: an [`ApiError`] when the daemon answered with its error body, a
//! [`TransportError`] when it could not be asked at all. Only [`exchange`] knows how bytes
//! travel, over one `reqwest::Client`: the local Unix socket, or HTTPS to a remote daemon with
//! an admin token (`--url`, `--token`), so no command knows which one it is using.
//!
//! Over HTTPS the token travels only in the `Authorization` header, marked sensitive; no
//! message built here contains it, and an error body that echoes it back is redacted before
//! anyone sees it. TLS is rustls with the `ring` provider, trusting either exactly the
//! certificates of `--ca-cert` (as curl's `--cacert` does: the daemon's self-signed
//! certificate is not a web PKI root) or the system's roots; the URL and the trust are
//! [`https`], the two kinds of failure [`errors`].
//!
//! What the daemon sends is text gwctl did not write: an [`ApiError`] shows its message
//! escaped (see [`crate::sanitize`]), and a client made [`ApiClient::escaping_text`] (the
//! dashboard's) escapes every string of every answer. Lists come a page at a time
//! ([`ApiClient::key_pages`]) so that a command can work in memory that does not grow with
//! the number of keys.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use gateway_shared::KeyState;
use gateway_shared::api::{
    AdminTokenCreated, AdminTokenList, AdminTokenView, AuditList, ClusterStatus, CreateAdminToken,
    CreateKey, KeyCreated, KeyList, KeyRotated, KeyView, PAGE_MAX, RotateKey, UpdateKey,
    UsageReport,
};
use gateway_shared::key::AdminToken;
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;

mod errors;
mod exchange;
mod https;

pub use errors::{ApiError, REDACTED, TransportError, TransportErrorKind};
pub use https::{HttpsUrl, load_ca_certs};

/// How to reach the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The local management socket; access is the socket file's ownership and mode.
    Unix(PathBuf),
    /// The HTTPS management listener of a (usually remote) daemon.
    Https {
        url: HttpsUrl,
        /// Sent as `Authorization: Bearer`; its `Debug` prints `***`.
        token: AdminToken,
        /// Trust exactly these PEM certificates instead of the system's roots.
        ca_cert: Option<PathBuf>,
    },
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "{}", path.display()),
            Self::Https { url, .. } => write!(f, "{url}"),
        }
    }
}

/// Long enough for a list of many thousand keys, short enough that a wedged daemon does not
/// hang a script forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting and the TLS handshake may take, within the request's own timeout: an
/// address that drops packets fails in seconds rather than at the end of the request timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers larger than this are refused rather than buffered (a page of 1000 keys is ~1 MiB).
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Cheap to clone: the TUI's worker hands a clone to each request it runs concurrently.
#[derive(Clone, Debug)]
pub struct ApiClient {
    transport: Transport,
    timeout: Duration,
    connect_timeout: Duration,
    /// The HTTP client, built on first use and shared by clones: reading the system's roots
    /// once, not once per page of a list.
    http: Arc<OnceLock<Result<reqwest::Client, TransportError>>>,
    /// Whether every string of an answer is escaped for the terminal before it is read into
    /// its type ([`ApiClient::escaping_text`]).
    escape_text: bool,
}

impl ApiClient {
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            timeout: REQUEST_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            http: Arc::default(),
            escape_text: false,
        }
    }

    /// A client whose answers hold no control character: every string in them (names, globs,
    /// ids, secrets, error messages) escaped with [`crate::sanitize::text`]. For the
    /// dashboard, which shows what it gets and never prints JSON; ids and secrets the daemon
    /// made have nothing to escape, so they still work as sent.
    pub fn escaping_text(mut self) -> Self {
        self.escape_text = true;
        self
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.connect_timeout = self.connect_timeout.min(timeout);
        // The client holds the connect timeout: a new one is built with the new value.
        self.http = Arc::default();
        self
    }

    pub async fn create_key(&self, create: &CreateKey) -> anyhow::Result<KeyCreated> {
        let body = serde_json::to_vec(create).context("encoding the new key")?;
        self.call(Method::POST, "/v1/keys".to_owned(), Some(body))
            .await
    }

    pub async fn get_key(&self, key_id: &str) -> anyhow::Result<KeyView> {
        self.call(Method::GET, key_path(key_id), None).await
    }

    pub async fn update_key(&self, key_id: &str, update: &UpdateKey) -> anyhow::Result<KeyView> {
        let body = serde_json::to_vec(&update.to_json()).context("encoding the change")?;
        self.call(Method::PATCH, key_path(key_id), Some(body)).await
    }

    pub async fn revoke_key(&self, key_id: &str) -> anyhow::Result<KeyView> {
        self.call(Method::DELETE, key_path(key_id), None).await
    }

    /// A new key with the old one's settings; the old one is revoked after the grace period.
    pub async fn rotate_key(&self, key_id: &str, rotate: &RotateKey) -> anyhow::Result<KeyRotated> {
        let body = serde_json::to_vec(rotate).context("encoding the rotation")?;
        let path = format!("{}/rotate", key_path(key_id));
        self.call(Method::POST, path, Some(body)).await
    }

    /// Admin tokens are managed over the Unix socket only; over HTTPS the daemon answers 401.
    pub async fn create_admin_token(
        &self,
        create: &CreateAdminToken,
    ) -> anyhow::Result<AdminTokenCreated> {
        let body = serde_json::to_vec(create).context("encoding the new admin token")?;
        self.call(Method::POST, ADMIN_TOKENS_PATH.to_owned(), Some(body))
            .await
    }

    pub async fn list_admin_tokens(&self) -> anyhow::Result<AdminTokenList> {
        self.call(Method::GET, ADMIN_TOKENS_PATH.to_owned(), None)
            .await
    }

    pub async fn revoke_admin_token(&self, token_id: &str) -> anyhow::Result<AdminTokenView> {
        let path = format!("{ADMIN_TOKENS_PATH}/{}", percent_encode(token_id));
        self.call(Method::DELETE, path, None).await
    }

    /// Spend and requests by day and by model over `from..=to` (UTC days); the daemon picks
    /// the last 30 days up to today for an end left out.
    pub async fn key_usage(
        &self,
        key_id: &str,
        from: Option<jiff::civil::Date>,
        to: Option<jiff::civil::Date>,
    ) -> anyhow::Result<UsageReport> {
        let mut query = Vec::new();
        if let Some(from) = from {
            query.push(("from", from.to_string()));
        }
        if let Some(to) = to {
            query.push(("to", to.to_string()));
        }
        let path = format!("{}/usage", key_path(key_id));
        let path = if query.is_empty() {
            path
        } else {
            with_query(&path, &query)
        };
        self.call(Method::GET, path, None).await
    }

    /// One page of keys, oldest first.
    pub async fn list_keys(
        &self,
        state: Option<KeyState>,
        limit: usize,
        cursor: Option<&str>,
    ) -> anyhow::Result<KeyList> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(state) = state {
            query.push(("state", state.as_str().to_owned()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        self.call(Method::GET, with_query("/v1/keys", &query), None)
            .await
    }

    /// Every key, following `next_cursor` to the last page. Holds them all: commands that
    /// can work a page at a time use [`ApiClient::key_pages`].
    pub async fn list_all_keys(&self, state: Option<KeyState>) -> anyhow::Result<Vec<KeyView>> {
        let mut keys = Vec::new();
        let mut pages = self.key_pages(state);
        while let Some(page) = pages.next().await? {
            keys.extend(page);
        }
        Ok(keys)
    }

    /// Every key, a page ([`PAGE_MAX`] keys) at a time, oldest first.
    pub fn key_pages(&self, state: Option<KeyState>) -> KeyPages<'_> {
        KeyPages {
            client: self,
            state,
            cursor: None,
            done: false,
        }
    }

    /// The providers the daemon runs, built-in and configured (SPEC §10).
    pub async fn list_providers(&self) -> anyhow::Result<gateway_shared::api::ProviderList> {
        self.call(Method::GET, "/v1/providers".to_owned(), None)
            .await
    }

    /// The replicas seen recently and the backends' health (SPEC §9).
    pub async fn cluster_status(&self) -> anyhow::Result<ClusterStatus> {
        self.call(Method::GET, "/v1/cluster".to_owned(), None).await
    }

    /// One page of the audit log, newest first.
    pub async fn audit_page(
        &self,
        key_id: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> anyhow::Result<AuditList> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(key_id) = key_id {
            query.push(("key_id", key_id.to_owned()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        self.call(Method::GET, with_query("/v1/audit", &query), None)
            .await
    }

    /// The newest `n_entries` audit entries, across pages; `next_cursor` is set when older
    /// entries remain.
    pub async fn audit(&self, key_id: Option<&str>, n_entries: usize) -> anyhow::Result<AuditList> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let want = n_entries.saturating_sub(entries.len()).clamp(1, PAGE_MAX);
            let page = self.audit_page(key_id, want, cursor.as_deref()).await?;
            entries.extend(page.entries);
            match page.next_cursor {
                Some(next)
                    if entries.len() < n_entries && cursor.as_deref() != Some(next.as_str()) =>
                {
                    cursor = Some(next);
                }
                next_cursor => {
                    entries.truncate(n_entries);
                    return Ok(AuditList {
                        entries,
                        next_cursor,
                    });
                }
            }
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: String,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let what = format!("{method} {path_and_query}");
        if has_dot_segment(&path_and_query) {
            return Err(crate::Refusal::invalid(format!(
                "{what} cannot be sent: a URL drops a path segment of \".\" or \"..\", and no id \
                 gatewayd makes is one."
            ))
            .into());
        }
        let (status, bytes) = self.exchange(method, &path_and_query, body).await?;
        if !status.is_success() {
            let err = ApiError::from_response(status.as_u16(), &bytes);
            let mut err = match &self.transport {
                Transport::Https { token, .. } => err.redact(token.expose()),
                Transport::Unix(_) => err,
            };
            if self.escape_text {
                err.message = crate::sanitize::text(&err.message).into_owned();
            }
            return Err(err.into());
        }
        let read = |bytes: &[u8]| -> serde_json::Result<T> {
            if !self.escape_text {
                return serde_json::from_slice(bytes);
            }
            let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
            crate::sanitize::escape_json_strings(&mut value);
            serde_json::from_value(value)
        };
        read(&bytes).with_context(|| format!("reading gatewayd's answer to {what}"))
    }

    /// Sends one request and returns the status and whole body, within the request timeout.
    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), TransportError> {
        let http = self
            .http
            .get_or_init(|| exchange::build(&self.transport, self.connect_timeout))
            .clone()?;
        let exchange = exchange::send(
            &http,
            &self.transport,
            self.connect_timeout,
            method,
            path_and_query,
            body,
        );
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(TransportError {
                kind: TransportErrorKind::TimedOut,
                message: format!(
                    "gatewayd at {} did not answer within {}s",
                    self.transport,
                    self.timeout.as_secs()
                ),
            }),
        }
    }
}

/// The pages of `GET /v1/keys`, fetched one at a time as [`KeyPages::next`] is called.
pub struct KeyPages<'a> {
    client: &'a ApiClient,
    state: Option<KeyState>,
    cursor: Option<String>,
    done: bool,
}

impl KeyPages<'_> {
    /// The next page's keys (possibly none), or `None` after the last page.
    pub async fn next(&mut self) -> anyhow::Result<Option<Vec<KeyView>>> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .client
            .list_keys(self.state, PAGE_MAX, self.cursor.as_deref())
            .await?;
        match page.next_cursor {
            None => self.done = true,
            // A daemon bug must not turn into an endless loop here.
            Some(next) if self.cursor.as_deref() == Some(next.as_str()) => {
                self.done = true;
                anyhow::bail!("gatewayd returned the same page cursor twice ({next})")
            }
            Some(next) => self.cursor = Some(next),
        }
        Ok(Some(page.keys))
    }
}

const ADMIN_TOKENS_PATH: &str = "/v1/admin-tokens";

fn connect_error(socket: &Path, err: &io::Error) -> TransportError {
    let path = socket.display();
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            let why = match err.kind() {
                io::ErrorKind::NotFound => "no socket there",
                _ => "nothing is listening",
            };
            TransportError {
                kind: TransportErrorKind::Unreachable,
                message: format!(
                    "cannot reach gatewayd at {path} ({why}): is gatewayd running? \
                     Use --socket or GWCTL_SOCKET if it listens elsewhere"
                ),
            }
        }
        io::ErrorKind::PermissionDenied => TransportError {
            kind: TransportErrorKind::PermissionDenied,
            message: format!(
                "no permission to use gatewayd's socket {path}; run gwctl as a user in the \
                 socket's group, or as its owner"
            ),
        },
        _ => protocol(format!("cannot connect to gatewayd at {path}: {err}")),
    }
}

pub(crate) fn protocol(message: String) -> TransportError {
    TransportError {
        kind: TransportErrorKind::Protocol,
        message,
    }
}

/// Whether the path holds a `.` or `..` segment, which URL parsing would resolve away and so
/// send the request to another route (an id of `..` on `/v1/keys/..` would ask for `/v1/`).
fn has_dot_segment(path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or_default();
    path.split('/').any(|segment| matches!(segment, "." | ".."))
}

fn key_path(key_id: &str) -> String {
    format!("/v1/keys/{}", percent_encode(key_id))
}

fn with_query(path: &str, pairs: &[(&str, String)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", percent_encode(value)))
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// Escapes everything but RFC 3986 unreserved characters, so a cursor or an id can never
/// change the shape of the path or query it is put into.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod exchange_tests;

#[cfg(test)]
mod https_tests;

#[cfg(test)]
mod tests;
