//! The proxy listener's defences: header-read and body-read timeouts, the connection cap,
//! paths another hop could rewrite, and secrets pasted into paths.
//!
//! Raw sockets, because HTTP clients normalise what these tests must send as is (reqwest
//! resolves `..` and `%2e%2e` before sending).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway_tests::admin::assert_error_shape;
use gateway_tests::{Gateway, GatewayOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes; returns what was read and how long it took.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, started.elapsed()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was not closed within {limit:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let gateway = Gateway::start_with(GatewayOptions {
        proxy_config: "header_read_timeout = \"1s\"".into(),
        ..Default::default()
    })
    .await;
    let mut slow = TcpStream::connect(gateway.proxy_addr)
        .await
        .expect("connect");
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (_, took) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );

    // Silent from the start: the same.
    let mut silent = TcpStream::connect(gateway.proxy_addr)
        .await
        .expect("connect");
    let (_, took) = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
}

#[tokio::test]
async fn connections_beyond_the_cap_get_a_fast_503() {
    let gateway = Gateway::start_with(GatewayOptions {
        proxy_config: "max_connections = 2".into(),
        ..Default::default()
    })
    .await;
    // Two connections that hold their slot (headers never finished).
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gateway.proxy_addr)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .expect("write");
        holders.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let response = reqwest::get(format!("{}/healthz", gateway.proxy_url()))
        .await
        .expect("third connection");
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(started.elapsed() < Duration::from_secs(1), "refused fast");

    drop(holders);
    let mut recovered = false;
    for _ in 0..50 {
        let response = reqwest::get(format!("{}/healthz", gateway.proxy_url()))
            .await
            .expect("request");
        if response.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recovered, "slots are released when connections close");
}

/// Sends `head` (request line and headers, without the blank line; `Connection: close` is
/// added) and `body` on a fresh connection and reads the answer until the gateway closes:
/// (status, the body as JSON or `Null`, the whole answer as text).
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Value, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{head}\r\nHost: gateway\r\nConnection: close\r\n").into_bytes();
    if !body.is_empty() {
        request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    stream.write_all(&request).await.expect("write");
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    parse_answer(&answer)
}

fn parse_answer(answer: &[u8]) -> (u16, Value, String) {
    let text = String::from_utf8_lossy(answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, body, text)
}

#[tokio::test]
async fn paths_that_could_be_resolved_to_another_model_or_route_are_refused() {
    let (gateway, mock) = Gateway::with_mock("", "").await;
    let (_, key, _) = gateway
        .admin()
        .create_key(
            json!({"name": "flash", "allowed_models": ["gemini-2.0-flash*", "gpt-4o-mini"]}),
        )
        .await;
    let gemini =
        |path: &str| format!("POST /gemini/v1beta/models/{path} HTTP/1.1\r\nx-goog-api-key: {key}");
    let bearer = |path: &str| format!("POST {path} HTTP/1.1\r\nAuthorization: Bearer {key}");
    let chat = br#"{"model": "gpt-4o-mini", "messages": []}"#;
    let cases = [
        // The review's four: gemini-2.0-flash in the model check, gemini-2.5-pro after a hop
        // that resolves dot-segments.
        gemini("gemini-2.0-flash/../gemini-2.5-pro:generateContent"),
        gemini("gemini-2.0-flash/%2e%2e/gemini-2.5-pro:generateContent"),
        gemini(
            "gemini-2.0-flash:generateContent/../../models/gemini-2.5-pro:streamGenerateContent?alt=sse",
        ),
        gemini("gemini-2.0-flash-x%2F..%2Fgemini-2.5-pro:generateContent"),
        // The same on the other routes, and the other shapes.
        gemini("gemini-2.0-flash/%2E%2E/gemini-2.5-pro:generateContent"),
        gemini("gemini-2.0-flash/./x/..;/gemini-2.5-pro:generateContent"),
        gemini("/gemini-2.5-pro:generateContent"),
        gemini("gemini-2.0-flash%2d:generateContent"),
        bearer("/openai/v1/../v1/chat/completions"),
        bearer("/v1/%2e/chat/completions"),
        bearer("/openai/v1/chat%2Fcompletions"),
        bearer("/openai//v1/chat/completions"),
        format!("POST /anthropic/v1/x/%2E%2E/messages HTTP/1.1\r\nx-api-key: {key}"),
        format!("POST /anthropic/v1%5cmessages HTTP/1.1\r\nx-api-key: {key}"),
        // Found by fuzzing: escapes that decode to escapes, and a `;` encoded.
        bearer("/openai/v1/%%32e%%32e/v1/chat/completions"),
        bearer("/openai/v1/..%3B/v1/chat/completions"),
    ];
    for head in &cases {
        let (status, body, text) = raw(gateway.proxy_addr, head, chat).await;
        assert_eq!(status, 400, "{head}: {text}");
        assert_error_shape(&body);
        assert_eq!(body["error"]["code"], "invalid_request", "{head}: {body}");
    }
    // A raw backslash, if the HTTP parser lets it through at all, is refused the same way.
    let (status, body, text) = raw(
        gateway.proxy_addr,
        &bearer("/openai/v1\\chat/completions"),
        chat,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert_eq!(mock.hits(), 0, "no refused path reached the provider");

    // The plain paths work, and the forbidden model is refused as itself.
    let (status, _, text) = raw(
        gateway.proxy_addr,
        &gemini("gemini-2.0-flash:generateContent"),
        b"{}",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, body, _) = raw(
        gateway.proxy_addr,
        &gemini("gemini-2.5-pro:generateContent"),
        b"{}",
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("model_not_allowed"))
    );
    let (status, _, text) = raw(
        gateway.proxy_addr,
        &bearer("/openai/v1/chat/completions"),
        chat,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(mock.hits(), 2);
    assert_eq!(
        mock.last().uri,
        "/openai/v1/chat/completions",
        "forwarded as sent"
    );
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_408_and_the_connection_closed() {
    let (gateway, mock) = Gateway::with_mock("body_read_timeout = \"1s\"", "").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "k"})).await;
    let mut stalled = TcpStream::connect(gateway.proxy_addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    stalled.write_all(head.as_bytes()).await.expect("write");
    let (answer, took) = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    let (status, body, text) = parse_answer(&answer);
    assert_eq!(status, 408, "{text}");
    assert_error_shape(&body);
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "answered and closed after {took:?}"
    );
    assert_eq!(mock.hits(), 0);

    // Slow but steady: pieces 400 ms apart, 2.4 s in all (more than the limit), get through.
    let body = br#"{"model": "gpt-4o", "messages": [], "pad": "0123456789"}"#;
    let mut steady = TcpStream::connect(gateway.proxy_addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    steady.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    for piece in body.chunks(body.len().div_ceil(6)) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        steady.write_all(piece).await.expect("write");
    }
    let (answer, _) = read_until_closed(&mut steady, Duration::from_secs(10)).await;
    let (status, _, text) = parse_answer(&answer);
    assert_eq!(status, 200, "{text}");
    assert!(started.elapsed() > Duration::from_secs(2));
    assert_eq!(mock.last().body.as_ref(), body);
}

#[tokio::test]
async fn a_key_pasted_into_a_path_is_neither_echoed_nor_logged() {
    let (gateway, _mock) = Gateway::with_mock("", "").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "k"})).await;
    let (status, body, text) = raw(
        gateway.proxy_addr,
        &format!("GET /nothing/{key} HTTP/1.1"),
        b"",
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert_error_shape(&body);
    assert_eq!(body["error"]["code"], "unknown_route");
    assert!(!text.contains(&key), "the 404 echoes the key: {text}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("/nothing/{}…", &key[..13])),
        "the path is still shown, the key cut to its display prefix: {message}"
    );
    // The debug line of the refusal is written before the answer; the harness reads the log
    // on a task of its own, so wait for it to arrive.
    let mut logged = String::new();
    for _ in 0..100 {
        logged = gateway.logs();
        if logged.contains("unknown_route") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = logged
        .lines()
        .find(|l| l.contains("request refused") && l.contains("unknown_route"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{logged}"));
    assert!(!line.contains(&key), "the log has the key: {line}");
    assert!(line.contains(&key[..13]), "{line}");
}

/// Sends `request` as is on a fresh connection (the proxy's, or the admin socket's when
/// `unix` is given) and reads the answer until the gateway closes.
async fn send_as_is(gateway: &Gateway, request: &[u8], unix: bool) -> String {
    let answer = if unix {
        let mut stream = tokio::net::UnixStream::connect(&gateway.socket)
            .await
            .expect("connect");
        stream.write_all(request).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
            .await
            .expect("closed in time")
            .expect("read");
        out
    } else {
        let mut stream = TcpStream::connect(gateway.proxy_addr)
            .await
            .expect("connect");
        stream.write_all(request).await.expect("write");
        read_until_closed(&mut stream, Duration::from_secs(10))
            .await
            .0
    };
    String::from_utf8_lossy(&answer).into_owned()
}

/// What the HTTP parser refuses before any of our code runs gets the SPEC's error shape too
/// (hyper answers these itself, with an empty body).
#[tokio::test]
async fn malformed_http_is_answered_in_the_error_shape_too() {
    let gateway = Gateway::start().await;
    let many_headers: String = (0..120).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("garbage", b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "two content lengths",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
            400,
        ),
        ("a NUL in the path", b"GET /v1/mo\0dels HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (
            "120 headers",
            format!("GET /v1/models HTTP/1.1\r\n{many_headers}\r\n").into_bytes(),
            431,
        ),
        (
            "a 70 kB path",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
        ),
    ];
    for unix in [false, true] {
        for (what, request, status) in &cases {
            let answer = send_as_is(&gateway, request, unix).await;
            let (code, body, text) = parse_answer(answer.as_bytes());
            assert_eq!(code, *status, "{what} (admin socket: {unix}): {text}");
            assert_error_shape(&body);
            assert_eq!(body["error"]["code"], "invalid_request", "{what}: {text}");
            assert!(
                text.to_ascii_lowercase().contains("connection: close"),
                "{what}: {text}"
            );
        }
    }
    // After a served request on the same connection, what goes out may be a provider's
    // answer, so nothing is rewritten any more: our answer whole, then hyper's bare 400.
    let answer = send_as_is(
        &gateway,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n",
        false,
    )
    .await;
    let (first, rest) = answer
        .split_once("}}")
        .unwrap_or_else(|| panic!("two answers: {answer}"));
    let (status, body, _) = parse_answer(format!("{first}}}}}").as_bytes());
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("missing_key"))
    );
    assert!(rest.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{rest}");
}

/// A refusal before the request body was read (no key, a bad key, a forbidden IP or provider)
/// leaves the body unread: hyper closes such a connection after answering, so the answer says
/// `Connection: close` and the client's next request does not meet a broken pipe. A refusal
/// of a request without a body keeps the connection.
#[tokio::test]
async fn a_refusal_that_leaves_the_body_unread_says_the_connection_closes() {
    let gateway = Gateway::start().await;
    let body = format!(
        r#"{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(4000)
    );
    let head_of = |answer: &[u8]| {
        let text = String::from_utf8_lossy(answer).to_ascii_lowercase();
        text.split_once("\r\n\r\n")
            .map_or(text.clone(), |(head, _)| head.to_owned())
    };
    let mut stream = TcpStream::connect(gateway.proxy_addr)
        .await
        .expect("connect");
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer sk-proxy-nope\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let head = head_of(&answer);
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("connection: close"), "{head}");

    // Without a body the connection stays: a second request on it is answered.
    let mut stream = TcpStream::connect(gateway.proxy_addr)
        .await
        .expect("connect");
    let request = b"GET /v1/models HTTP/1.1\r\nHost: gateway\r\n\r\n";
    stream.write_all(request).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("read");
    let head = head_of(&buf[..n]);
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    stream
        .write_all(request)
        .await
        .expect("second request on the same connection");
    let n = stream.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401"));
}

/// A client still sending a large body when it is refused (here a bad key, a 16 MiB prompt)
/// can send all of it and then reads the answer: the gateway reads and drops the rest rather
/// than closing on it, which reset the connection mid-send (the official Node SDK reported a
/// connection error instead of the 401). A client waiting for `100 Continue` is answered at
/// once and never asked for its body.
#[tokio::test]
async fn a_refused_large_body_can_be_sent_whole_and_the_answer_read() {
    let gateway = Gateway::start().await;
    let body = format!(
        r#"{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(16 << 20)
    );
    let mut stream = TcpStream::connect(gateway.proxy_addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer sk-proxy-nope\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream
        .write_all(body.as_bytes())
        .await
        .expect("the whole body can be sent after the refusal");
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains(r#""code":"invalid_key""#), "{text}");

    let mut stream = TcpStream::connect(gateway.proxy_addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer sk-proxy-nope\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    let (answer, took) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 401"),
        "no 100 Continue first: {text}"
    );
    assert!(
        took < Duration::from_secs(3),
        "closed at once, not lingering: {took:?}"
    );
}

/// The unread body of a refused request is read for no longer than the header-read timeout
/// allows a connection to be held anyway: a keyless client trickling a body cannot keep its
/// connection slot past it (with `header_read_timeout = "2s"`, the default linger of 30 s
/// held it that long).
#[tokio::test]
async fn a_trickled_body_after_a_refusal_holds_the_connection_no_longer_than_a_slow_header() {
    let gateway = Gateway::start_with(GatewayOptions {
        proxy_config: "header_read_timeout = \"2s\"".into(),
        ..Default::default()
    })
    .await;
    let stream = TcpStream::connect(gateway.proxy_addr)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(
            b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Length: 1000000\r\n\r\n{",
        )
        .await
        .expect("write head");
    let trickle = tokio::spawn(async move {
        while write.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(15), read.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was still open after 15 s"),
        }
    }
    trickle.abort();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed after {:?}",
        started.elapsed()
    );
}

/// Answers shaped exactly like the HTTP parser's own refusal pass through untouched: a
/// provider body holding one (a downloaded transcript) and a provider's bare 400 (SPEC §3:
/// provider errors pass through). Only a malformed first request is rewritten.
#[tokio::test]
async fn provider_answers_shaped_like_a_parser_refusal_pass_untouched() {
    let (gateway, _mock) = Gateway::with_mock("", "").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "files"})).await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!(
                "{}/openai/v1/files/{path}/content",
                gateway.proxy_url()
            ))
            .bearer_auth(&key)
            .send()
    };
    for _ in 0..2 {
        let file = get("transcript").await.expect("transcript");
        assert_eq!(file.status(), 200);
        let bytes = file.bytes().await.expect("body");
        assert_eq!(
            &bytes[..],
            gateway_tests::mock::HYPER_LIKE_400,
            "the file as stored"
        );
        let bare = get("bare-400").await.expect("bare 400");
        assert_eq!(bare.status(), 400);
        assert!(
            bare.headers().get("content-type").is_none(),
            "{:?}",
            bare.headers()
        );
        assert!(
            bare.bytes().await.expect("body").is_empty(),
            "the provider's empty body"
        );
    }
}

/// The management API does the same on its socket: an error answer to a request with a body
/// (here refused before the body was read) says the connection closes.
#[tokio::test]
async fn management_errors_to_requests_with_a_body_say_the_connection_closes() {
    let gateway = Gateway::start().await;
    // Small enough to be in hyper's buffer already: a large unread body makes the close a
    // reset, which can swallow the answer before the client reads it.
    let body = "x".repeat(2 * 1024);
    let request = format!(
        "POST /v1/nope HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = send_as_is(&gateway, request.as_bytes(), true).await;
    let (status, body, text) = parse_answer(answer.as_bytes());
    assert_eq!(status, 404, "{text}");
    assert_eq!(body["error"]["code"], "unknown_route", "{text}");
    let head = text
        .split_once("\r\n\r\n")
        .map_or(text.as_str(), |(h, _)| h);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
}
