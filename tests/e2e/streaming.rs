//! Streams pass through as they arrive, byte for byte (SPEC §3).

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::{Gateway, MockProvider};
use serde_json::{Value, json};

async fn gateway_with_mock(proxy_config: &str) -> (Gateway, MockProvider) {
    Gateway::with_mock(proxy_config, "").await
}

/// The chunks of a response body with the instant each arrived, or the error that ended it.
async fn read_chunks(
    mut response: reqwest::Response,
) -> (Vec<(Instant, Bytes)>, Option<reqwest::Error>) {
    let mut chunks = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => chunks.push((Instant::now(), chunk)),
            Ok(None) => return (chunks, None),
            Err(err) => return (chunks, Some(err)),
        }
    }
}

fn concat(chunks: &[(Instant, Bytes)]) -> Vec<u8> {
    chunks.iter().flat_map(|(_, c)| c.to_vec()).collect()
}

/// A streaming request of each kind: (name, path after the provider base, auth header, body).
fn stream_requests() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Value,
)> {
    vec![
        (
            "openai sse",
            "openai",
            "/v1/chat/completions",
            "authorization",
            json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "anthropic sse",
            "anthropic",
            "/v1/messages",
            "x-api-key",
            json!({"model": "claude-sonnet-4-5", "stream": true, "max_tokens": 50, "messages": []}),
        ),
        (
            "gemini sse",
            "gemini",
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            "x-goog-api-key",
            json!({"contents": [{"parts": [{"text": "hi"}]}]}),
        ),
        (
            "gemini json array",
            "gemini",
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            "x-goog-api-key",
            json!({"contents": [{"parts": [{"text": "hi"}]}]}),
        ),
    ]
}

fn auth_value(header: &str, key: &str) -> String {
    if header == "authorization" {
        format!("Bearer {key}")
    } else {
        key.to_owned()
    }
}

#[tokio::test]
async fn streams_are_byte_exact_for_every_provider() {
    let (gateway, mock) = gateway_with_mock("").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "s"})).await;
    let client = reqwest::Client::new();
    for (name, provider, path, auth, body) in stream_requests() {
        let through_gateway = client
            .post(format!("{}/{provider}{path}", gateway.proxy_url()))
            .header(auth, auth_value(auth, &key))
            .header("x-mock-events", "5")
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(through_gateway.status(), 200, "{name}");
        let content_type = through_gateway.headers().get("content-type").cloned();
        let (chunks, error) = read_chunks(through_gateway).await;
        assert!(error.is_none(), "{name}: {error:?}");

        // The same request straight to the mock: the bytes the provider sent.
        let direct = client
            .post(format!("{}{path}", mock.base_url(provider)))
            .header("x-mock-events", "5")
            .json(&body)
            .send()
            .await
            .expect("direct request");
        assert_eq!(
            direct.headers().get("content-type").cloned(),
            content_type,
            "{name}"
        );
        let (direct_chunks, _) = read_chunks(direct).await;
        assert_eq!(
            String::from_utf8_lossy(&concat(&chunks)),
            String::from_utf8_lossy(&concat(&direct_chunks)),
            "{name}: bytes out equal bytes in"
        );
        assert!(!chunks.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn a_stream_the_provider_cuts_delivers_every_byte_it_sent_then_fails() {
    let (gateway, mock) = gateway_with_mock("").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "s"})).await;
    let client = reqwest::Client::new();
    for (name, provider, path, auth, body) in stream_requests() {
        let send = |url: String, with_key: bool| {
            let mut request = client
                .post(url)
                .header("x-mock-events", "5")
                .header("x-mock-cut-after", "3")
                .json(&body);
            if with_key {
                request = request.header(auth, auth_value(auth, &key));
            }
            request.send()
        };
        let direct = send(format!("{}{path}", mock.base_url(provider)), false)
            .await
            .expect("direct request");
        let (sent, direct_error) = read_chunks(direct).await;
        assert!(direct_error.is_some(), "{name}: the mock cut its stream");
        for _ in 0..2 {
            let through = send(format!("{}/{provider}{path}", gateway.proxy_url()), true)
                .await
                .expect("request");
            assert_eq!(through.status(), 200, "{name}");
            let (received, error) = read_chunks(through).await;
            assert!(
                error.is_some(),
                "{name}: the cut reaches the client as an error"
            );
            assert_eq!(
                String::from_utf8_lossy(&concat(&received)),
                String::from_utf8_lossy(&concat(&sent)),
                "{name}: every byte the provider sent before the cut arrives"
            );
        }
    }
}

#[tokio::test]
async fn the_first_event_is_not_held_back_for_the_next() {
    let (gateway, _mock) = gateway_with_mock("").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "s"})).await;
    for (name, provider, path, auth, body) in stream_requests() {
        let sent = Instant::now();
        let response = reqwest::Client::new()
            .post(format!("{}/{provider}{path}", gateway.proxy_url()))
            .header(auth, auth_value(auth, &key))
            .header("x-mock-events", "2")
            .header("x-mock-delay-ms", "1000")
            .json(&body)
            .send()
            .await
            .expect("request");
        let (chunks, error) = read_chunks(response).await;
        assert!(error.is_none(), "{name}: {error:?}");
        assert!(
            chunks.len() >= 2,
            "{name}: events arrive separately, got {}",
            chunks.len()
        );
        let first = chunks[0].0.duration_since(sent);
        let second = chunks[1].0.duration_since(sent);
        assert!(
            first < Duration::from_millis(600),
            "{name}: first event after {first:?}"
        );
        assert!(
            second >= Duration::from_millis(900),
            "{name}: second event after {second:?}"
        );
    }
}

#[tokio::test]
async fn a_long_healthy_stream_is_never_cut_but_a_stalled_one_is() {
    let (gateway, _mock) = gateway_with_mock("upstream_idle_timeout = \"600ms\"").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "s"})).await;
    let client = reqwest::Client::new();
    let body = json!({"model": "gpt-4o", "stream": true, "messages": []});

    // Eight events 300 ms apart: longer in total than the idle limit, never silent that long.
    let started = Instant::now();
    let healthy = client
        .post(format!("{}/v1/chat/completions", gateway.proxy_url()))
        .bearer_auth(&key)
        .header("x-mock-events", "8")
        .header("x-mock-delay-ms", "300")
        .json(&body)
        .send()
        .await
        .expect("request");
    let (chunks, error) = read_chunks(healthy).await;
    assert!(error.is_none(), "healthy stream cut: {error:?}");
    assert!(started.elapsed() > Duration::from_millis(1200));
    assert!(String::from_utf8_lossy(&concat(&chunks)).ends_with("data: [DONE]\n\n"));

    let stalled = client
        .post(format!("{}/v1/chat/completions", gateway.proxy_url()))
        .bearer_auth(&key)
        .header("x-mock-stall", "1")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(stalled.status(), 200);
    let started = Instant::now();
    let (chunks, error) = read_chunks(stalled).await;
    assert!(!chunks.is_empty(), "the first event arrived");
    assert!(
        error.is_some(),
        "a stalled stream ends in an error, not a clean end"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut at the idle limit"
    );
}
