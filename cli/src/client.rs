//! The management API (SPEC §6) as typed async methods, over a pluggable transport.
//!
//! Commands call `client.get_key(id)` and get a [`KeyView`] or an error that already carries
//! its meaning: an [`ApiError`] when the daemon answered with its error body, a
//! [`TransportError`] when it could not be asked at all. Only [`ApiClient::exchange`] knows
//! how bytes travel: the local Unix socket, or HTTPS to a remote daemon with an admin token
//! (`--url`, `--token`), so no command knows which one it is using.
//!
//! Over HTTPS the token travels only in the `Authorization` header, marked sensitive; no
//! message built here contains it, and an error body that echoes it back is redacted before
//! anyone sees it. What the daemon sends is text gwctl did not write: an [`ApiError`] shows
//! its message escaped (see [`crate::sanitize`]), and a client made
//! [`ApiClient::escaping_text`] (the dashboard's) escapes every string of every answer. TLS is rustls with the `ring` provider, trusting either exactly the
//! certificates of `--ca-cert` (as curl's `--cacert` does: the daemon's self-signed
//! certificate is not a web PKI root) or the system's roots.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use gateway_shared::api::{
    AdminTokenCreated, AdminTokenList, AdminTokenView, AuditList, CreateAdminToken, CreateKey,
    KeyCreated, KeyList, KeyRotated, KeyView, PAGE_MAX, RotateKey, UpdateKey, UsageReport,
};
use gateway_shared::key::AdminToken;
use gateway_shared::{ErrorBody, ErrorCode, KeyState};
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::de::DeserializeOwned;
use tokio::net::{TcpStream, UnixStream};

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

/// `https://host[:port]`: the address of a management listener, checked once so that every
/// later use (TCP address, TLS server name, `Host` header, messages) agrees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpsUrl {
    /// Without the brackets of an IPv6 literal.
    host: String,
    port: u16,
}

/// The port of an `https://` URL that names none.
const HTTPS_DEFAULT_PORT: u16 = 443;

impl HttpsUrl {
    /// Accepts `https://host`, `https://host:port` and a trailing `/`; refuses other schemes,
    /// user info (a password in a URL ends up in shell history and error messages), paths and
    /// queries, with a reason that fits after "--url ".
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("{text:?} is not a URL ({e}); expected https://host:port"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") => {
                return Err(format!(
                    "{text:?} is plain HTTP; gatewayd's management listener speaks only HTTPS \
                     (https://host:port)"
                ));
            }
            _ => return Err(format!("{text:?} must start with https://")),
        }
        let Some(authority) = uri.authority() else {
            return Err(format!(
                "{text:?} names no host; expected https://host:port"
            ));
        };
        if authority.as_str().contains('@') {
            return Err(
                "must not contain user info (user:password@); pass the admin token \
                        with --token-file"
                    .to_owned(),
            );
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{text:?} has a path or query; expected just https://host:port"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if ServerName::try_from(host.clone()).is_err() {
            return Err(format!(
                "{text:?}: {host:?} is not a valid host name or address"
            ));
        }
        Ok(Self {
            host,
            port: authority.port_u16().unwrap_or(HTTPS_DEFAULT_PORT),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, with brackets around an IPv6 literal: the `Host` header's value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

/// The certificates of a `--ca-cert` PEM file; at least one, or the reason why not.
pub fn load_ca_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            rustls_pki_types::pem::Error::Io(io) => io.to_string(),
            other => format!("not a PEM certificate file ({other})"),
        })?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certs)
}

/// The daemon answered, with an error body (SPEC §3 shape).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: u16,
    /// `None` when the code is newer than this build, or the body was not an error body.
    pub code: Option<ErrorCode>,
    pub message: String,
    /// As received, for `--output json`.
    pub body: ErrorBody,
}

impl ApiError {
    pub fn from_body(status: u16, body: ErrorBody) -> Self {
        Self {
            status,
            code: body.code(),
            message: body.error.message.clone(),
            body,
        }
    }

    /// Reads an error response; anything that is not an error body still becomes an error
    /// that says what came back, never a JSON decoding complaint.
    pub fn from_response(status: u16, bytes: &[u8]) -> Self {
        if let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) {
            return Self::from_body(status, body);
        }
        let text = String::from_utf8_lossy(bytes);
        let snippet: String = text.chars().take(200).collect();
        let mut body = ErrorBody::new(
            ErrorCode::InternalError,
            format!("gatewayd answered {status}: {snippet}"),
        );
        body.error.code = "unexpected_response".to_owned();
        Self {
            status,
            code: None,
            message: body.error.message.clone(),
            body,
        }
    }
}

impl ApiError {
    /// Replaces every occurrence of `secret` in the messages: a daemon (or something posing
    /// as one) that echoes the admin token must not get it printed.
    fn redact(mut self, secret: &str) -> Self {
        if !secret.is_empty() {
            self.message = self.message.replace(secret, REDACTED);
            self.body.error.message = self.body.error.message.replace(secret, REDACTED);
        }
        self
    }
}

/// What a secret becomes in any text gwctl shows.
pub const REDACTED: &str = "***";

impl fmt::Display for ApiError {
    /// The daemon's message, control characters escaped: it is shown to people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::sanitize::text(&self.message))
    }
}

impl std::error::Error for ApiError {}

/// The daemon could not be asked, or its answer could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// No socket, or nothing listening on it.
    Unreachable,
    /// The socket exists but this user may not connect to it.
    PermissionDenied,
    /// Connected, but no complete answer in time.
    TimedOut,
    /// Connected, but the exchange broke or made no sense.
    Protocol,
    /// The TLS handshake failed: most often a certificate gwctl does not trust.
    Tls,
}

impl TransportErrorKind {
    /// The `code` of the JSON error gwctl prints for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "daemon_unreachable",
            Self::PermissionDenied => "permission_denied",
            Self::TimedOut => "daemon_timeout",
            Self::Protocol => "transport_error",
            Self::Tls => "tls_error",
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {}

/// Long enough for a list of many thousand keys, short enough that a wedged daemon does not
/// hang a script forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting and the TLS handshake may take, within the request's own timeout: an
/// address that drops packets fails in seconds rather than at the end of the request timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers larger than this are refused rather than buffered (a page of 1000 keys is ~1 MiB).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Cheap to clone: the TUI's worker hands a clone to each request it runs concurrently.
#[derive(Clone, Debug)]
pub struct ApiClient {
    transport: Transport,
    timeout: Duration,
    connect_timeout: Duration,
    /// The rustls configuration, built on first HTTPS use and shared by clones: reading the
    /// system's roots once, not once per page of a list.
    tls: Arc<OnceLock<Result<Arc<rustls::ClientConfig>, TransportError>>>,
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
            tls: Arc::default(),
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

    /// Sends one request and returns the status and whole body. The only transport-aware code.
    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), TransportError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let body = Full::new(Bytes::from(body.unwrap_or_default()));
        match &self.transport {
            Transport::Unix(socket) => {
                let request = request
                    // HTTP/1.1 needs a Host; over a socket any name will do.
                    .header(header::HOST, "localhost")
                    .body(body)
                    .map_err(|e| protocol(format!("building the request: {e}")))?;
                match tokio::time::timeout(self.timeout, unix_exchange(socket, request)).await {
                    Ok(result) => result,
                    Err(_elapsed) => Err(TransportError {
                        kind: TransportErrorKind::TimedOut,
                        message: format!(
                            "gatewayd at {} did not answer within {}s",
                            socket.display(),
                            self.timeout.as_secs()
                        ),
                    }),
                }
            }
            Transport::Https {
                url,
                token,
                ca_cert,
            } => {
                // The error says nothing of the value: it is the secret.
                let mut authorization = HeaderValue::try_from(format!("Bearer {}", token.expose()))
                    .map_err(|_| {
                        protocol("the admin token cannot be sent as a header".to_owned())
                    })?;
                authorization.set_sensitive(true);
                let request = request
                    .header(header::HOST, url.authority())
                    .header(header::AUTHORIZATION, authorization)
                    .body(body)
                    .map_err(|e| protocol(format!("building the request: {e}")))?;
                let tls = self
                    .tls
                    .get_or_init(|| tls_config(ca_cert.as_deref()))
                    .clone()?;
                let exchange =
                    https_exchange(url, ca_cert.as_deref(), tls, self.connect_timeout, request);
                match tokio::time::timeout(self.timeout, exchange).await {
                    Ok(result) => result,
                    Err(_elapsed) => Err(TransportError {
                        kind: TransportErrorKind::TimedOut,
                        message: format!(
                            "gatewayd at {url} did not answer within {}s",
                            self.timeout.as_secs()
                        ),
                    }),
                }
            }
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

async fn unix_exchange(
    socket: &Path,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), TransportError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| connect_error(socket, &e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| protocol(format!("talking to gatewayd at {}: {e}", socket.display())))?;
    // The connection task ends once `sender` is dropped; its errors also fail `send_request`.
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| protocol(format!("talking to gatewayd at {}: {e}", socket.display())))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| protocol(format!("reading gatewayd's answer: {e}")))?
        .to_bytes();
    Ok((status, bytes))
}

/// One request on a fresh TLS connection, like the socket's one connection per request: the
/// CLI makes few requests, and a connection that cannot go stale needs no retry logic.
async fn https_exchange(
    url: &HttpsUrl,
    ca_cert: Option<&Path>,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), TransportError> {
    let connect = async {
        let tcp = TcpStream::connect((url.host(), url.port()))
            .await
            .map_err(|e| tcp_connect_error(url, &e))?;
        // Checked when the URL was parsed; this only converts it.
        let server_name = ServerName::try_from(url.host().to_owned())
            .map_err(|_| protocol(format!("{url}: not a valid TLS server name")))?;
        tokio_rustls::TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await
            .map_err(|e| tls_error(url, ca_cert, &e))
    };
    let stream = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(stream) => stream?,
        Err(_elapsed) => {
            return Err(TransportError {
                kind: TransportErrorKind::TimedOut,
                message: format!(
                    "cannot reach gatewayd at {url}: no connection within {}s; check the \
                     address and that [admin] listen is reachable from here",
                    connect_timeout.as_secs()
                ),
            });
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| protocol(format!("talking to gatewayd at {url}: {e}")))?;
    // The connection task ends once `sender` is dropped; its errors also fail `send_request`.
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| protocol(format!("talking to gatewayd at {url}: {e}")))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| protocol(format!("reading gatewayd's answer: {e}")))?
        .to_bytes();
    Ok((status, bytes))
}

/// rustls with `ring`, trusting `ca_cert`'s certificates, or else the system's roots (the
/// bundled web PKI roots when the system has none).
fn tls_config(ca_cert: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    use hyper_rustls::ConfigBuilderExt;

    let tls_setup = |message: String| TransportError {
        kind: TransportErrorKind::Tls,
        message,
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_setup(format!("setting up TLS: {e}")))?;
    let builder = match ca_cert {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = load_ca_certs(path)
                .map_err(|why| tls_setup(format!("--ca-cert {}: {why}", path.display())))?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    tls_setup(format!(
                        "--ca-cert {}: not a usable certificate ({e})",
                        path.display()
                    ))
                })?;
            }
            builder.with_root_certificates(roots)
        }
        None => match builder.clone().with_native_roots() {
            Ok(builder) => builder,
            Err(_no_system_roots) => builder.with_webpki_roots(),
        },
    };
    let mut config = builder.with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn tcp_connect_error(url: &HttpsUrl, err: &io::Error) -> TransportError {
    let why = match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        _ => err.to_string(),
    };
    TransportError {
        kind: TransportErrorKind::Unreachable,
        message: format!(
            "cannot reach gatewayd at {url} ({why}): is gatewayd running, and is its [admin] \
             listen this address?"
        ),
    }
}

/// A failed handshake names the URL and says what to do; a certificate problem is by far the
/// likeliest (the daemon's self-signed certificate is in no system store).
fn tls_error(url: &HttpsUrl, ca_cert: Option<&Path>, err: &io::Error) -> TransportError {
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let message = match rustls_error {
        Some(cert_error @ rustls::Error::InvalidCertificate(_)) => match ca_cert {
            None => format!(
                "gatewayd at {url} presented a certificate gwctl does not trust \
                 ({cert_error}); pass the daemon's certificate with --ca-cert FILE (gatewayd's \
                 self-signed one is <data_dir>/tls/cert.pem on its host)"
            ),
            Some(path) => format!(
                "gatewayd at {url} presented a certificate that --ca-cert {} does not vouch \
                 for ({cert_error}); is it the certificate of this daemon, for this host name?",
                path.display()
            ),
        },
        Some(not_tls @ rustls::Error::InvalidMessage(_)) => format!(
            "{url} did not answer with TLS ({not_tls}): is it gatewayd's HTTPS management \
             listener ([admin] listen), not the proxy port?"
        ),
        Some(other) => match ca_cert {
            None => format!(
                "TLS handshake with gatewayd at {url} failed: {other}; if it uses a \
                 self-signed certificate, pass it with --ca-cert FILE"
            ),
            Some(_) => format!("TLS handshake with gatewayd at {url} failed: {other}"),
        },
        None => format!(
            "TLS handshake with {url} failed ({err}): is this gatewayd's HTTPS management \
             listener?"
        ),
    };
    TransportError {
        kind: TransportErrorKind::Tls,
        message,
    }
}

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

fn protocol(message: String) -> TransportError {
    TransportError {
        kind: TransportErrorKind::Protocol,
        message,
    }
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
mod https_tests;

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    use super::*;

    #[test]
    fn paths_and_queries_are_escaped() {
        assert_eq!(key_path("key_abc"), "/v1/keys/key_abc");
        assert_eq!(key_path("../x y"), "/v1/keys/..%2Fx%20y");
        let query = [("limit", "10".to_owned()), ("cursor", "a+b/c=".to_owned())];
        assert_eq!(
            with_query("/v1/keys", &query),
            "/v1/keys?limit=10&cursor=a%2Bb%2Fc%3D"
        );
    }

    fn check_url(text: &str, expected: Result<(&str, u16, &str), &str>) {
        let got = HttpsUrl::parse(text);
        match expected {
            Ok((host, port, shown)) => {
                let url = got.unwrap_or_else(|why| panic!("{text}: {why}"));
                assert_eq!((url.host(), url.port()), (host, port), "{text}");
                assert_eq!(url.to_string(), shown, "{text}");
            }
            Err(fragment) => {
                let why = got.expect_err(text);
                assert!(why.contains(fragment), "{text}: {why}");
            }
        }
    }

    #[test]
    fn https_urls() {
        check_url(
            "https://127.0.0.1:8443",
            Ok(("127.0.0.1", 8443, "https://127.0.0.1:8443")),
        );
        check_url(
            " https://gw.example:8443/ ",
            Ok(("gw.example", 8443, "https://gw.example:8443")),
        );
        check_url(
            "https://gw.example",
            Ok(("gw.example", 443, "https://gw.example:443")),
        );
        check_url(
            "https://[::1]:8443",
            Ok(("::1", 8443, "https://[::1]:8443")),
        );
        check_url("http://gw:8443", Err("only HTTPS"));
        check_url("ftp://gw", Err("https://"));
        check_url("gw.example:8443", Err("https://"));
        check_url("https://gw/v1/keys", Err("path"));
        check_url("https://gw?x=1", Err("path or query"));
        check_url("https://u:p@gw", Err("user info"));
        check_url("https://", Err("URL"));
        check_url("https://gw ex", Err("not a URL"));
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let body = br#"{"error":{"type":"gateway_error","code":"key_not_found","message":"No key key_x."}}"#;
        let err = ApiError::from_response(404, body);
        assert_eq!(err.code, Some(ErrorCode::KeyNotFound));
        assert_eq!(err.message, "No key key_x.");
        let err = ApiError::from_response(502, b"<html>bad gateway</html>");
        assert_eq!(err.code, None);
        assert!(err.message.contains("502") && err.message.contains("bad gateway"));
        // Still the one error shape, saying what gwctl met.
        assert_eq!(err.body.error.kind, "gateway_error");
        assert_eq!(err.body.error.code, "unexpected_response");
    }

    fn ok_response(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// The CLI reads answers as sent (its renderers escape them, its JSON stays exact); the
    /// dashboard's client escapes every string on arrival. Either way an error's message is
    /// shown escaped.
    #[tokio::test]
    async fn an_escaping_client_escapes_every_string_of_an_answer() {
        let mut key = serde_json::to_value(crate::output::tests::sample_key()).expect("json");
        key["name"] = "evil\u{1b}]0;t\u{7}".into();
        key["allowed_models"] = serde_json::json!(["gpt-\u{9b}2J*"]);
        let body = key.to_string();
        for (escaping, name, models) in [
            (false, "evil\u{1b}]0;t\u{7}", "gpt-\u{9b}2J*"),
            (true, r"evil\u{1b}]0;t\u{7}", r"gpt-\u{9b}2J*"),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let socket = dir.path().join("admin.sock");
            let listener = UnixListener::bind(&socket).expect("bind");
            let server = tokio::spawn(serve_once(listener, ok_response(&body)));
            let client = ApiClient::new(Transport::Unix(socket));
            let client = if escaping {
                client.escaping_text()
            } else {
                client
            };
            let view = client.get_key("key_x").await.expect("a key");
            server.await.expect("server");
            assert_eq!(
                (view.name.as_str(), view.allowed_models[0].as_str()),
                (name, models)
            );
            assert_eq!(
                view.spend_limit_usd,
                crate::output::tests::sample_key().spend_limit_usd
            );
        }
        let err = ApiError::from_response(502, b"<html>\x1b]0;pwned\x07</html>");
        assert!(
            err.to_string()
                .ends_with(r"<html>\u{1b}]0;pwned\u{7}</html>"),
            "{err}"
        );
    }

    /// A one-shot HTTP/1.1 server on a Unix socket: answers every connection with `response`
    /// and hands back the request head it read.
    async fn serve_once(listener: UnixListener, response: String) -> String {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        stream.write_all(response.as_bytes()).await.expect("write");
        String::from_utf8_lossy(&request).into_owned()
    }

    #[tokio::test]
    async fn a_request_round_trips_over_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let body = r#"{"error":{"type":"gateway_error","code":"key_revoked","message":"Key key_x is revoked."}}"#;
        let response = format!(
            "HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let server = tokio::spawn(serve_once(listener, response));
        let client = ApiClient::new(Transport::Unix(socket));
        let err = client.get_key("key_x").await.expect_err("409");
        let api = err.downcast_ref::<ApiError>().expect("an ApiError");
        assert_eq!((api.status, api.code), (409, Some(ErrorCode::KeyRevoked)));
        let head = server.await.expect("server");
        assert!(
            head.starts_with("GET /v1/keys/key_x HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase().contains("host: localhost"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn usage_asks_for_the_range_and_reads_the_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let body = r#"{"key_id":"key_x","from":"2027-01-01","to":"2027-01-02",
            "total":{"requests":3,"input_tokens":10,"output_tokens":20,"cost_usd":0.5,
                "estimated_requests":1,"unpriced_requests":0},
            "by_day":[
                {"date":"2027-01-01","requests":0,"input_tokens":0,"output_tokens":0,
                    "cost_usd":0,"estimated_requests":0,"unpriced_requests":0},
                {"date":"2027-01-02","requests":3,"input_tokens":10,"output_tokens":20,
                    "cost_usd":0.5,"estimated_requests":1,"unpriced_requests":0}],
            "by_model":[{"provider":"openai","model":"gpt-4o","requests":3,"input_tokens":10,
                "output_tokens":20,"cost_usd":0.5,"estimated_requests":1,"unpriced_requests":0}]}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let server = tokio::spawn(serve_once(listener, response));
        let client = ApiClient::new(Transport::Unix(socket));
        let from = "2027-01-01".parse().expect("date");
        let to = "2027-01-02".parse().expect("date");
        let report = client
            .key_usage("key_x", Some(from), Some(to))
            .await
            .expect("report");
        assert_eq!(report.by_day.len(), 2);
        assert_eq!(
            report.total.cost_usd,
            gateway_shared::Nanodollars(500_000_000)
        );
        assert_eq!(report.by_model[0].model, "gpt-4o");
        let head = server.await.expect("server");
        assert!(
            head.starts_with("GET /v1/keys/key_x/usage?from=2027-01-01&to=2027-01-02 HTTP/1.1\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn usage_without_a_range_sends_no_query() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let body = r#"{"error":{"type":"gateway_error","code":"key_not_found","message":"No key key_x."}}"#;
        let response = format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let server = tokio::spawn(serve_once(listener, response));
        let client = ApiClient::new(Transport::Unix(socket));
        let err = client
            .key_usage("key_x", None, None)
            .await
            .expect_err("404");
        let api = err.downcast_ref::<ApiError>().expect("an ApiError");
        assert_eq!(api.code, Some(ErrorCode::KeyNotFound));
        let head = server.await.expect("server");
        assert!(
            head.starts_with("GET /v1/keys/key_x/usage HTTP/1.1\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable_and_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("nope.sock");
        let client = ApiClient::new(Transport::Unix(socket.clone()));
        let err = client.get_key("key_x").await.expect_err("no daemon");
        let transport = err
            .downcast_ref::<TransportError>()
            .expect("a TransportError");
        assert_eq!(transport.kind, TransportErrorKind::Unreachable);
        assert!(transport.message.contains(&socket.display().to_string()));
        assert!(transport.message.contains("--socket"));
    }

    #[tokio::test]
    async fn a_silent_daemon_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let _listener = UnixListener::bind(&socket).expect("bind");
        let client =
            ApiClient::new(Transport::Unix(socket)).with_timeout(Duration::from_millis(50));
        let err = client.get_key("key_x").await.expect_err("timeout");
        let transport = err
            .downcast_ref::<TransportError>()
            .expect("a TransportError");
        assert_eq!(transport.kind, TransportErrorKind::TimedOut);
    }
}
