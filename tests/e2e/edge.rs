//! The proxy listener's defences: header-read timeout and the connection cap.

use std::time::{Duration, Instant};

use gateway_tests::{Gateway, GatewayOptions};
use serde_json::Value;
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
