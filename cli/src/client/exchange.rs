//! The only code that knows how bytes travel: one `reqwest::Client` per [`Transport`] (the
//! socket through `ClientBuilder::unix_socket`, or HTTPS with rustls and `ring` trusting the
//! roots of [`https::tls_config`]), one request and its whole answer, and reqwest's errors read
//! back into the [`TransportError`]s gwctl has always shown.
//!
//! reqwest's defaults are narrowed to what gwctl promises: no redirect is followed (a 3xx is
//! an answer like any other, and the token never goes to a second address), no proxy from
//! `HTTPS_PROXY` and friends (the management API is reached directly, as before), HTTP/1.1
//! only, and a fresh connection for every request: the CLI makes few requests, and a
//! connection that cannot go stale cannot fail a `POST` half-sent. Answers larger than
//! [`MAX_RESPONSE_BYTES`] are refused as they arrive, never buffered.
//!
//! reqwest reports the cause a few layers down (hyper-util's connect error, hyper-rustls'
//! `io::Error` around tokio-rustls' around rustls'), so [`send_error`] walks the chain to the
//! `io::Error` or `hyper::Error` underneath and words it as before, per transport. A
//! connection cut during the handshake is told from a refused TCP connect by that wrapping:
//! hyper-rustls wraps every handshake error, never a TCP one.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use gateway_shared::key::AdminToken;
use http::{HeaderValue, Method, StatusCode, header};

use super::https::{self, tls_config};
use super::{MAX_RESPONSE_BYTES, Transport, TransportError, protocol};

/// The client for `transport`. The HTTPS one reads its roots here, so it is built once and
/// shared (see `ApiClient`); `connect_timeout` bounds TCP and the TLS handshake together.
pub(super) fn build(
    transport: &Transport,
    connect_timeout: Duration,
) -> Result<reqwest::Client, TransportError> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(0);
    let builder = match transport {
        // reqwest wants a TLS backend even for plain HTTP over the socket; this one trusts
        // nothing and is never used (the socket's URLs are `http://`).
        Transport::Unix(socket) => builder
            .unix_socket(socket.as_path())
            .tls_backend_preconfigured(trusting_nothing()?),
        Transport::Https { ca_cert, .. } => builder
            .connect_timeout(connect_timeout)
            .tls_backend_preconfigured(tls_config(ca_cert.as_deref())?),
    };
    builder
        .build()
        .map_err(|e| protocol(format!("setting up the HTTP client: {}", cause(&e))))
}

fn trusting_nothing() -> Result<rustls::ClientConfig, TransportError> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| protocol(format!("setting up TLS: {e}")))?;
    Ok(builder
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// Sends one request and returns the status and whole body (no total deadline here: the
/// caller puts one around this).
pub(super) async fn send(
    client: &reqwest::Client,
    transport: &Transport,
    connect_timeout: Duration,
    method: Method,
    path_and_query: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Vec<u8>), TransportError> {
    let mut request = match transport {
        // HTTP/1.1 needs a Host; over a socket any name will do: `localhost`.
        Transport::Unix(_) => client.request(method, format!("http://localhost{path_and_query}")),
        Transport::Https { url, token, .. } => client
            .request(method, format!("{url}{path_and_query}"))
            // `host:port` even for 443, as it always was.
            .header(header::HOST, url.authority())
            .header(header::AUTHORIZATION, authorization(token)?),
    }
    .header(header::ACCEPT, "application/json");
    if let Some(body) = body {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| send_error(&e, transport, connect_timeout))?;
    let status = response.status();
    let too_large = || protocol("reading gatewayd's answer: length limit exceeded".to_owned());
    let announced = response.content_length().unwrap_or(0);
    if announced > MAX_RESPONSE_BYTES as u64 {
        return Err(too_large());
    }
    // Sized from the announced length (checked above), so a large page is not copied as it
    // grows.
    let mut bytes = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| protocol(format!("reading gatewayd's answer: {}", cause(&e))))?
    {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, bytes))
}

/// `Bearer <token>`, marked sensitive. The error says nothing of the value: it is the secret.
fn authorization(token: &AdminToken) -> Result<HeaderValue, TransportError> {
    let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
        .map_err(|_| protocol("the admin token cannot be sent as a header".to_owned()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// What went wrong before an answer came, worded for the transport.
fn send_error(
    err: &reqwest::Error,
    transport: &Transport,
    connect_timeout: Duration,
) -> TransportError {
    if err.is_connect() {
        match (transport, first_io_error(err)) {
            (Transport::Unix(socket), Some(io)) => return super::connect_error(socket, io),
            (Transport::Https { url, ca_cert, .. }, Some(io)) => {
                return match handshake_error(io) {
                    Some(handshake) => https::tls_error(url, ca_cert.as_deref(), handshake),
                    None => https::tcp_connect_error(url, io),
                };
            }
            // reqwest's own connect timeout carries no io::Error.
            (Transport::Https { url, .. }, None) if err.is_timeout() => {
                return https::connect_timed_out(url, connect_timeout);
            }
            _ => {}
        }
    }
    protocol(format!(
        "talking to gatewayd at {transport}: {}",
        cause(err)
    ))
}

/// The TLS handshake's own `io::Error` (the one tokio-rustls returned, holding the rustls
/// error), when `io` came from the handshake rather than from the TCP connect.
fn handshake_error(io: &io::Error) -> Option<&io::Error> {
    let holds_rustls = |e: &io::Error| e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
    match io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<io::Error>())
    {
        // hyper-rustls wraps the handshake's error in an `io::Error` of its own.
        Some(wrapped) => Some(wrapped),
        None if holds_rustls(io) => Some(io),
        None => None,
    }
}

/// The errors under `err`, outermost first.
fn chain(err: &reqwest::Error) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    std::iter::successors(err.source(), |&e| e.source())
}

fn first_io_error(err: &reqwest::Error) -> Option<&io::Error> {
    chain(err).find_map(|e| e.downcast_ref::<io::Error>())
}

/// The text that says what failed: hyper's error where there is one (as the hand-written
/// client showed it), else the innermost cause, never reqwest's wrapper (which names the URL
/// and says only "error sending request").
fn cause(err: &reqwest::Error) -> String {
    if let Some(hyper) = chain(err).find_map(|e| e.downcast_ref::<hyper::Error>()) {
        return hyper.to_string();
    }
    match chain(err).last() {
        Some(innermost) => innermost.to_string(),
        None => err.to_string(),
    }
}
