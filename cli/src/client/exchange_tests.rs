//! What the reqwest client must do as the hand-written one did: exact error messages for
//! each way a socket or an HTTPS daemon fails, no redirect followed, answers over the size
//! limit refused, the path sent as written.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use super::*;

/// Reads one request head from `stream`.
async fn read_head(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&request).into_owned()
}

/// A socket in a temp dir whose one connection gets `response` (raw bytes, then close);
/// returns the request head.
fn unix_daemon(response: Vec<u8>) -> (tempfile::TempDir, PathBuf, tokio::task::JoinHandle<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("admin.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let head = read_head(&mut stream).await;
        let _ = stream.write_all(&response).await;
        let _ = stream.shutdown().await;
        head
    });
    (dir, socket, server)
}

fn transport_error(err: &anyhow::Error) -> &TransportError {
    err.downcast_ref::<TransportError>()
        .expect("a TransportError")
}

#[tokio::test]
async fn a_redirect_is_an_answer_not_followed() {
    let response = b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://localhost/v1/other\r\n\
        content-length: 5\r\n\r\nmoved"
        .to_vec();
    let (_dir, socket, server) = unix_daemon(response);
    let err = ApiClient::new(Transport::Unix(socket))
        .get_key("key_x")
        .await
        .expect_err("307");
    let api = err.downcast_ref::<ApiError>().expect("an ApiError");
    assert_eq!(api.status, 307);
    assert_eq!(api.message, "gatewayd answered 307: moved");
    assert!(
        server
            .await
            .expect("server")
            .starts_with("GET /v1/keys/key_x ")
    );
}

#[tokio::test]
async fn an_answer_announced_over_the_limit_is_refused() {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{{",
        MAX_RESPONSE_BYTES + 1
    );
    let (_dir, socket, _server) = unix_daemon(response.into_bytes());
    let err = ApiClient::new(Transport::Unix(socket))
        .list_admin_tokens()
        .await
        .expect_err("too large");
    let transport = transport_error(&err);
    assert_eq!(transport.kind, TransportErrorKind::Protocol);
    assert_eq!(
        transport.message,
        "reading gatewayd's answer: length limit exceeded"
    );
}

#[tokio::test]
async fn a_chunked_answer_over_the_limit_is_refused_as_it_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("admin.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let _server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_head(&mut stream).await;
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        stream.write_all(head).await.expect("head");
        let chunk = vec![b' '; 1 << 20];
        // One chunk more than the limit allows; the client stops reading at the limit.
        for _ in 0..=MAX_RESPONSE_BYTES >> 20 {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
    });
    let err = ApiClient::new(Transport::Unix(socket))
        .list_admin_tokens()
        .await
        .expect_err("too large");
    assert_eq!(
        transport_error(&err).message,
        "reading gatewayd's answer: length limit exceeded"
    );
}

#[tokio::test]
async fn a_chunked_answer_is_read_whole() {
    let response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        5\r\n{\"tok\r\n9\r\nens\":[]}\n\r\n0\r\n\r\n"
        .to_vec();
    let (_dir, socket, _server) = unix_daemon(response);
    let list = ApiClient::new(Transport::Unix(socket))
        .list_admin_tokens()
        .await
        .expect("a list");
    assert!(list.tokens.is_empty());
}

#[tokio::test]
async fn a_daemon_hanging_up_without_an_answer_is_a_transport_error() {
    let (_dir, socket, _server) = unix_daemon(Vec::new());
    let err = ApiClient::new(Transport::Unix(socket.clone()))
        .list_admin_tokens()
        .await
        .expect_err("no answer");
    let transport = transport_error(&err);
    assert_eq!(transport.kind, TransportErrorKind::Protocol);
    assert_eq!(
        transport.message,
        format!(
            "talking to gatewayd at {}: connection closed before message completed",
            socket.display()
        )
    );
}

#[tokio::test]
async fn a_socket_nothing_listens_on_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("admin.sock");
    drop(UnixListener::bind(&socket).expect("bind"));
    let err = ApiClient::new(Transport::Unix(socket.clone()))
        .list_admin_tokens()
        .await
        .expect_err("stale socket");
    let transport = transport_error(&err);
    assert_eq!(transport.kind, TransportErrorKind::Unreachable);
    assert_eq!(
        transport.message,
        format!(
            "cannot reach gatewayd at {} (nothing is listening): is gatewayd running? Use \
             --socket or GWCTL_SOCKET if it listens elsewhere",
            socket.display()
        )
    );
}

#[tokio::test]
async fn a_body_is_sent_with_its_type_and_length() {
    let body = r#"{"error":{"type":"gateway_error","code":"invalid_request","message":"No."}}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("admin.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = read_head(&mut stream).await;
        while !request.ends_with('}') {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            request.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        stream.write_all(response.as_bytes()).await.expect("write");
        request
    });
    let create = CreateAdminToken {
        name: "ci".to_owned(),
    };
    let err = ApiClient::new(Transport::Unix(socket))
        .create_admin_token(&create)
        .await
        .expect_err("400");
    assert_eq!(err.downcast_ref::<ApiError>().expect("api").message, "No.");
    let request = server.await.expect("server");
    let lower = request.to_ascii_lowercase();
    let sent = serde_json::to_string(&create).expect("json");
    assert!(
        request.starts_with("POST /v1/admin-tokens HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        lower.contains("content-type: application/json\r\n"),
        "{request}"
    );
    assert!(lower.contains("accept: application/json\r\n"), "{request}");
    assert!(
        lower.contains(&format!("content-length: {}\r\n", sent.len())),
        "{request}"
    );
    assert!(request.ends_with(&format!("\r\n\r\n{sent}")), "{request}");
}

#[tokio::test]
async fn nothing_listening_over_https_says_exactly_what_it_said() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    drop(listener);
    let err = https_client(addr)
        .list_admin_tokens()
        .await
        .expect_err("refused");
    assert_eq!(
        transport_error(&err).message,
        format!(
            "cannot reach gatewayd at https://{addr} (connection refused): is gatewayd \
             running, and is its [admin] listen this address?"
        )
    );
}

#[tokio::test]
async fn a_listener_hanging_up_in_the_handshake_is_a_tls_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf).await;
        drop(tcp);
    });
    let err = https_client(addr)
        .list_admin_tokens()
        .await
        .expect_err("hung up");
    let transport = transport_error(&err);
    assert_eq!(
        transport.kind,
        TransportErrorKind::Tls,
        "{}",
        transport.message
    );
    assert!(
        transport
            .message
            .starts_with(&format!("TLS handshake with https://{addr} failed (")),
        "{}",
        transport.message
    );
}

#[tokio::test]
async fn a_silent_listener_runs_out_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _held = tokio::spawn(async move {
        let connection = listener.accept().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(connection);
    });
    let mut client = https_client(addr);
    // A connect timeout shorter than the request's, as by default (10 s of 30 s).
    client.connect_timeout = Duration::from_millis(100);
    client.timeout = Duration::from_secs(3);
    let err = client.list_admin_tokens().await.expect_err("timeout");
    let transport = transport_error(&err);
    assert_eq!(transport.kind, TransportErrorKind::TimedOut);
    assert_eq!(
        transport.message,
        format!(
            "cannot reach gatewayd at https://{addr}: no connection within 0s; check the \
             address and that [admin] listen is reachable from here"
        )
    );
}

fn https_client(addr: SocketAddr) -> ApiClient {
    ApiClient::new(Transport::Https {
        url: HttpsUrl::parse(&format!("https://{addr}")).expect("url"),
        token: AdminToken::generate().expect("rng"),
        ca_cert: None,
    })
}

/// A URL resolves `.` and `..` segments away, so an id of `..` would ask `/v1/keys/..` for
/// `/v1/`: such a request is refused before anything is sent (no id gatewayd makes is one).
#[tokio::test]
async fn a_dot_segment_id_is_refused_before_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("admin.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let client = ApiClient::new(Transport::Unix(socket));
    for id in [".", ".."] {
        let err = client.get_key(id).await.expect_err("refused");
        let refusal = err.downcast_ref::<crate::Refusal>().expect("a Refusal");
        assert!(
            refusal.message.contains(&format!("GET /v1/keys/{id} ")),
            "{refusal}"
        );
        let err = client.key_usage(id, None, None).await.expect_err("refused");
        assert!(err.downcast_ref::<crate::Refusal>().is_some(), "{err}");
    }
    // `..x` and a dotted cursor are not dot segments.
    assert!(!has_dot_segment("/v1/keys/..x?cursor=.."));
    let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
    assert!(accepted.is_err(), "nothing was sent");
}
