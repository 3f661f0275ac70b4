//! The management API (SPEC §6) as typed async methods, over a pluggable transport.
//!
//! Commands call `client.get_key(id)` and get a [`KeyView`] or an error that already carries
//! its meaning: an [`ApiError`] when the daemon answered with its error body, a
//! [`TransportError`] when it could not be asked at all. Only [`ApiClient::exchange`] knows
//! how bytes travel, so the HTTPS transport (`--url`, `--token`) is one more [`Transport`]
//! variant and one more arm there, with no command touched.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use gateway_shared::api::{
    AuditList, CreateKey, KeyCreated, KeyList, KeyView, PAGE_MAX, UpdateKey, UsageReport,
};
use gateway_shared::{ErrorBody, ErrorCode, KeyState};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// How to reach the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The local management socket; access is the socket file's ownership and mode.
    Unix(PathBuf),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "{}", path.display()),
        }
    }
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
        body.error.kind = "gwctl_error".to_owned();
        body.error.code = "unexpected_response".to_owned();
        Self {
            status,
            code: None,
            message: body.error.message.clone(),
            body,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
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
}

impl TransportErrorKind {
    /// The `code` of the JSON error gwctl prints for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "daemon_unreachable",
            Self::PermissionDenied => "permission_denied",
            Self::TimedOut => "daemon_timeout",
            Self::Protocol => "transport_error",
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

/// Answers larger than this are refused rather than buffered (a page of 1000 keys is ~1 MiB).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Cheap to clone: the TUI's worker hands a clone to each request it runs concurrently.
#[derive(Clone, Debug)]
pub struct ApiClient {
    transport: Transport,
    timeout: Duration,
}

impl ApiClient {
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            timeout: REQUEST_TIMEOUT,
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
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

    /// Every key, following `next_cursor` to the last page.
    pub async fn list_all_keys(&self, state: Option<KeyState>) -> anyhow::Result<Vec<KeyView>> {
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list_keys(state, PAGE_MAX, cursor.as_deref()).await?;
            keys.extend(page.keys);
            match page.next_cursor {
                None => return Ok(keys),
                // A daemon bug must not turn into an endless loop here.
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    anyhow::bail!("gatewayd returned the same page cursor twice ({next})")
                }
                Some(next) => cursor = Some(next),
            }
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
            return Err(ApiError::from_response(status.as_u16(), &bytes).into());
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("reading gatewayd's answer to {what}"))
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
        match &self.transport {
            Transport::Unix(socket) => {
                let request = request
                    // HTTP/1.1 needs a Host; over a socket any name will do.
                    .header(header::HOST, "localhost")
                    .body(Full::new(Bytes::from(body.unwrap_or_default())))
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
        }
    }
}

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

    #[test]
    fn error_bodies_become_api_errors() {
        let body = br#"{"error":{"type":"gateway_error","code":"key_not_found","message":"No key key_x."}}"#;
        let err = ApiError::from_response(404, body);
        assert_eq!(err.code, Some(ErrorCode::KeyNotFound));
        assert_eq!(err.message, "No key key_x.");
        let err = ApiError::from_response(502, b"<html>bad gateway</html>");
        assert_eq!(err.code, None);
        assert!(err.message.contains("502") && err.message.contains("bad gateway"));
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
