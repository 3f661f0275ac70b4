//! The HTTPS transport against a fake daemon: a rustls server with an rcgen self-signed
//! certificate that records the request it gets and answers with a canned response. Covers
//! what the operator sees when the certificate, the address or the token is wrong, and that
//! the token is in the `Authorization` header and in no error.

use std::net::SocketAddr;

use gateway_shared::api::AdminTokenList;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::{error_body, error_line, exit_code, exit_code_of};
use gateway_shared::ErrorCode;
use rustls_pki_types::CertificateDer;

/// A self-signed certificate for localhost and 127.0.0.1, and its PEM in a temp file.
struct Certificate {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pem_file: tempfile::NamedTempFile,
}

fn certificate() -> Certificate {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    let pem_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(pem_file.path(), generated.cert.pem()).expect("write pem");
    Certificate {
        der: generated.cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        )),
        pem_file,
    }
}

/// Serves one TLS connection with `response`, returning the request head it read (or the
/// handshake error, when the client gave up).
async fn fake_daemon(
    cert: &Certificate,
    response: String,
) -> (SocketAddr, tokio::task::JoinHandle<String>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der.clone()], cert.key.clone_key())
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut stream = match acceptor.accept(tcp).await {
            Ok(stream) => stream,
            Err(err) => return format!("handshake failed: {err}"),
        };
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
        stream.shutdown().await.ok();
        String::from_utf8_lossy(&request).into_owned()
    });
    (addr, server)
}

fn json_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn https(addr: SocketAddr, token: &AdminToken, ca_cert: Option<&Path>) -> ApiClient {
    ApiClient::new(Transport::Https {
        url: HttpsUrl::parse(&format!("https://{addr}")).expect("url"),
        token: token.clone(),
        ca_cert: ca_cert.map(Path::to_path_buf),
    })
}

fn new_token() -> AdminToken {
    AdminToken::generate().expect("rng")
}

/// Every way the failure could reach the operator, none of which may hold the token.
#[track_caller]
fn assert_token_absent(err: &anyhow::Error, token: &AdminToken) {
    let secret = token.expose();
    let random_part = &secret[gateway_shared::key::ADMIN_TOKEN_PREFIX.len()..];
    for text in [
        format!("{err}"),
        format!("{err:#}"),
        format!("{err:?}"),
        error_line(err),
        error_body(err).to_json(),
    ] {
        assert!(!text.contains(random_part), "the token leaked into: {text}");
    }
}

#[tokio::test]
async fn a_request_carries_the_token_in_its_authorization_header() {
    let cert = certificate();
    let token = new_token();
    let body = r#"{"tokens":[]}"#;
    let (addr, server) = fake_daemon(&cert, json_response("200 OK", body)).await;
    let client = https(addr, &token, Some(cert.pem_file.path()));
    let list: AdminTokenList = client.list_admin_tokens().await.expect("list");
    assert!(list.tokens.is_empty());
    let head = server.await.expect("server");
    assert!(
        head.starts_with("GET /v1/admin-tokens HTTP/1.1\r\n"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains(&format!("host: {addr}\r\n")), "{head}");
    assert!(
        head.contains(&format!("Bearer {}\r\n", token.expose())),
        "no bearer token in: {head}"
    );
    assert_eq!(format!("{client:?}").matches(token.expose()).count(), 0);
}

#[tokio::test]
async fn localhost_is_a_valid_name_for_the_generated_certificate() {
    let cert = certificate();
    let (addr, server) = fake_daemon(&cert, json_response("200 OK", r#"{"tokens":[]}"#)).await;
    let client = ApiClient::new(Transport::Https {
        url: HttpsUrl::parse(&format!("https://localhost:{}/", addr.port())).expect("url"),
        token: new_token(),
        ca_cert: Some(cert.pem_file.path().to_path_buf()),
    });
    client.list_admin_tokens().await.expect("trusted by name");
    let head = server.await.expect("server");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("host: localhost:{}\r\n", addr.port())),
        "{head}"
    );
}

#[tokio::test]
async fn unauthorized_exits_5_and_an_echoed_token_is_masked() {
    let cert = certificate();
    let token = new_token();
    // A daemon (or impostor) quoting the token back in its error message.
    let body = format!(
        r#"{{"error":{{"type":"gateway_error","code":"unauthorized","message":"Token {} is not live."}}}}"#,
        token.expose()
    );
    let (addr, _server) = fake_daemon(&cert, json_response("401 Unauthorized", &body)).await;
    let err = https(addr, &token, Some(cert.pem_file.path()))
        .list_keys(None, 10, None)
        .await
        .expect_err("401");
    assert_eq!(exit_code_of(&err), exit_code::AUTH);
    let api = err.downcast_ref::<ApiError>().expect("an ApiError");
    assert_eq!(api.code, Some(ErrorCode::Unauthorized));
    assert_eq!(api.message, "Token *** is not live.");
    assert_token_absent(&err, &token);
}

#[tokio::test]
async fn an_untrusted_certificate_names_the_url_and_suggests_ca_cert() {
    let cert = certificate();
    let token = new_token();
    let (addr, server) = fake_daemon(&cert, json_response("200 OK", "{}")).await;
    // No --ca-cert: the system roots do not know a fresh self-signed certificate.
    let err = https(addr, &token, None)
        .list_admin_tokens()
        .await
        .expect_err("untrusted");
    let transport = err
        .downcast_ref::<TransportError>()
        .expect("a TransportError");
    assert_eq!(transport.kind, TransportErrorKind::Tls);
    assert!(
        transport.message.contains(&format!("https://{addr}")),
        "{}",
        transport.message
    );
    assert!(
        transport.message.contains("--ca-cert"),
        "{}",
        transport.message
    );
    assert_eq!(exit_code_of(&err), exit_code::FAILURE);
    assert_eq!(error_body(&err).error.code, "tls_error");
    assert_token_absent(&err, &token);
    // The server saw the handshake fail: the request, and so the token, never left.
    assert!(
        server
            .await
            .expect("server")
            .starts_with("handshake failed")
    );

    // With another certificate as --ca-cert, the message names that file.
    let other = certificate();
    let (addr, _server) = fake_daemon(&cert, json_response("200 OK", "{}")).await;
    let err = https(addr, &token, Some(other.pem_file.path()))
        .list_admin_tokens()
        .await
        .expect_err("wrong CA");
    let message = format!("{err:#}");
    assert!(
        message.contains(&other.pem_file.path().display().to_string()),
        "{message}"
    );
    assert_token_absent(&err, &token);
}

#[tokio::test]
async fn nothing_listening_exits_69_naming_the_url() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let token = new_token();
    let err = https(addr, &token, None)
        .list_admin_tokens()
        .await
        .expect_err("refused");
    let transport = err
        .downcast_ref::<TransportError>()
        .expect("a TransportError");
    assert_eq!(transport.kind, TransportErrorKind::Unreachable);
    assert!(
        transport.message.contains(&format!("https://{addr}"))
            && transport.message.contains("connection refused"),
        "{}",
        transport.message
    );
    assert_eq!(exit_code_of(&err), exit_code::UNAVAILABLE);
    assert_token_absent(&err, &token);
}

#[tokio::test]
async fn a_silent_listener_times_out() {
    // Accepts TCP but never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _held = tokio::spawn(async move {
        let connection = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(connection);
    });
    let token = new_token();
    let err = https(addr, &token, None)
        .with_timeout(Duration::from_millis(200))
        .list_admin_tokens()
        .await
        .expect_err("timeout");
    let transport = err
        .downcast_ref::<TransportError>()
        .expect("a TransportError");
    assert_eq!(transport.kind, TransportErrorKind::TimedOut);
    assert!(
        transport.message.contains(&format!("https://{addr}")),
        "{}",
        transport.message
    );
    assert_eq!(exit_code_of(&err), exit_code::UNAVAILABLE);
    assert_token_absent(&err, &token);
}

#[tokio::test]
async fn plain_http_on_the_port_is_a_tls_error_not_a_hang() {
    // A plain HTTP server answering the ClientHello with HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
    });
    let token = new_token();
    let err = https(addr, &token, None)
        .list_admin_tokens()
        .await
        .expect_err("not TLS");
    let transport = err
        .downcast_ref::<TransportError>()
        .expect("a TransportError");
    assert_eq!(
        transport.kind,
        TransportErrorKind::Tls,
        "{}",
        transport.message
    );
    assert!(
        transport.message.contains(&format!("https://{addr}")),
        "{}",
        transport.message
    );
    assert_token_absent(&err, &token);
}

#[tokio::test]
async fn rotate_posts_the_grace_period() {
    let cert = certificate();
    let token = new_token();
    let (addr, server) = fake_daemon(
        &cert,
        json_response(
            "409 Conflict",
            r#"{"error":{"type":"gateway_error","code":"key_revoked","message":"Key key_x is revoked and cannot be rotated."}}"#,
        ),
    )
    .await;
    let err = https(addr, &token, Some(cert.pem_file.path()))
        .rotate_key(
            "key_x",
            &RotateKey {
                grace_period_seconds: 3600,
            },
        )
        .await
        .expect_err("409");
    assert_eq!(exit_code_of(&err), exit_code::CONFLICT);
    let head = server.await.expect("server");
    assert!(
        head.starts_with("POST /v1/keys/key_x/rotate HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
}
