//! The client against fake daemons on a Unix socket: requests as sent, answers as read, and
//! the errors a missing, silent or hostile daemon becomes.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

use super::*;
use gateway_shared::ErrorCode;

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
    let body =
        br#"{"error":{"type":"gateway_error","code":"key_not_found","message":"No key key_x."}}"#;
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
    let body =
        r#"{"error":{"type":"gateway_error","code":"key_not_found","message":"No key key_x."}}"#;
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
    let client = ApiClient::new(Transport::Unix(socket)).with_timeout(Duration::from_millis(50));
    let err = client.get_key("key_x").await.expect_err("timeout");
    let transport = err
        .downcast_ref::<TransportError>()
        .expect("a TransportError");
    assert_eq!(transport.kind, TransportErrorKind::TimedOut);
}
