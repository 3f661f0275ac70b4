//! Metering and settlement: costs per provider computed by hand, and every way a request
//! ends (a client gone mid-stream, errors, timeouts, a stream cut at its reservation) leaves
//! the right charge and no reservation open (SPEC §5).

use std::time::{Duration, Instant};

use gateway_tests::requests::{BUDGET_PRICES, anthropic_messages, chat};
use gateway_tests::{Gateway, GatewayOptions, MockProvider};
use serde_json::{Value, json};

use crate::spend::{dollars, gateway, settled, wait_for_usage};

#[tokio::test]
async fn costs_per_provider_match_hand_computed_values() {
    let (gateway, _mock) = gateway("").await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "fixtures"}))
        .await;
    let base = gateway.proxy_url();
    let client = reqwest::Client::new();
    // (path, auth header, body, mock headers, expected nano-dollars)
    type Case = (
        &'static str,
        &'static str,
        Value,
        Vec<(&'static str, &'static str)>,
        u64,
    );
    let cases: Vec<Case> = vec![
        // gpt-4o-mini: 1000 prompt of which 400 cached, 200 out:
        // 600 × 0.15 + 400 × 0.075 + 200 × 0.60 = 90 + 30 + 120 = $0.000240
        (
            "/openai/v1/chat/completions",
            "authorization",
            json!({"model": "gpt-4o-mini", "messages": []}),
            vec![
                ("x-mock-input-tokens", "1000"),
                ("x-mock-cached-tokens", "400"),
                ("x-mock-output-tokens", "200"),
            ],
            240_000,
        ),
        // The same, streamed (usage chunk injected by the gateway).
        (
            "/openai/v1/chat/completions",
            "authorization",
            json!({"model": "gpt-4o-mini", "stream": true, "messages": []}),
            vec![
                ("x-mock-input-tokens", "1000"),
                ("x-mock-cached-tokens", "400"),
                ("x-mock-output-tokens", "200"),
            ],
            240_000,
        ),
        // claude-sonnet-4-5: 100 in, 1000 cache read, 200 cache write, 50 out:
        // 100 × 3 + 1000 × 0.30 + 200 × 3.75 + 50 × 15 = 300 + 300 + 750 + 750 = $0.002100
        (
            "/anthropic/v1/messages",
            "x-api-key",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": []}),
            vec![
                ("x-mock-input-tokens", "100"),
                ("x-mock-cached-tokens", "1000"),
                ("x-mock-cache-write-tokens", "200"),
                ("x-mock-output-tokens", "50"),
            ],
            2_100_000,
        ),
        (
            "/anthropic/v1/messages",
            "x-api-key",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true, "messages": []}),
            vec![
                ("x-mock-input-tokens", "100"),
                ("x-mock-cached-tokens", "1000"),
                ("x-mock-cache-write-tokens", "200"),
                ("x-mock-output-tokens", "50"),
            ],
            2_100_000,
        ),
        // gemini-2.5-flash: 1000 prompt of which 200 cached, 100 out + 300 thoughts:
        // 800 × 0.30 + 200 × 0.075 + 400 × 2.50 = 240 + 15 + 1000 = $0.001255
        (
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
            "x-goog-api-key",
            json!({"contents": []}),
            vec![
                ("x-mock-input-tokens", "1000"),
                ("x-mock-cached-tokens", "200"),
                ("x-mock-output-tokens", "100"),
                ("x-mock-thoughts-tokens", "300"),
            ],
            1_255_000,
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            "x-goog-api-key",
            json!({"contents": []}),
            vec![
                ("x-mock-input-tokens", "1000"),
                ("x-mock-cached-tokens", "200"),
                ("x-mock-output-tokens", "100"),
                ("x-mock-thoughts-tokens", "300"),
            ],
            1_255_000,
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            "x-goog-api-key",
            json!({"contents": []}),
            vec![
                ("x-mock-input-tokens", "1000"),
                ("x-mock-cached-tokens", "200"),
                ("x-mock-output-tokens", "100"),
                ("x-mock-thoughts-tokens", "300"),
            ],
            1_255_000,
        ),
    ];
    let mut expected_total = 0u64;
    for (n, (path, auth, body, mock_headers, nanos)) in cases.into_iter().enumerate() {
        let value = if auth == "authorization" {
            format!("Bearer {key}")
        } else {
            key.clone()
        };
        let mut request = client
            .post(format!("{base}{path}"))
            .header(auth, value)
            .json(&body);
        for (name, value) in mock_headers {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().await.expect("body");
        if path.contains("chat/completions") && body["stream"] == true {
            assert!(
                !text.contains("\"usage\""),
                "the injected usage chunk is not shown to the client"
            );
        }
        expected_total += nanos;
        let view = settled(&base, &key).await;
        let total = (dollars(&view["spend_total_usd"]) * 1e9).round() as u64;
        assert_eq!(total, expected_total, "case {n} {path}");
    }
    let report = wait_for_usage(&gateway, &id, 7).await;
    assert_eq!(
        (dollars(&report["total"]["cost_usd"]) * 1e9).round() as u64,
        expected_total
    );
    assert_eq!(report["total"]["estimated_requests"], 0);
}

#[tokio::test]
async fn a_client_that_drops_mid_stream_is_still_billed_every_time() {
    let (gateway, _mock) = gateway("").await;
    let (id, key, _) = gateway.admin().create_key(json!({"name": "dropper"})).await;
    let base = gateway.proxy_url();
    for _ in 0..100 {
        let mut response = chat(
            &base,
            &key,
            json!({"model": "gpt-4o-mini", "stream": true, "messages": []}),
            &[("x-mock-events", "20"), ("x-mock-delay-ms", "20")],
        )
        .await;
        // Read the role chunk and a content chunk, then hang up.
        let mut got = 0;
        while got < 2 {
            match response.chunk().await.expect("chunk") {
                Some(chunk) if String::from_utf8_lossy(&chunk).contains("part") => got = 2,
                Some(_) => got += 1,
                None => break,
            }
        }
        drop(response);
    }
    settled(&base, &key).await;
    let report = wait_for_usage(&gateway, &id, 100).await;
    assert_eq!(report["total"]["estimated_requests"], 100, "{report}");
    let rows = usage_rows(&gateway, &id);
    assert_eq!(rows.len(), 100);
    for (cost, output_tokens, source) in rows {
        assert_eq!(source, "estimated");
        assert!(
            output_tokens > 0 && cost > 0,
            "a dropped stream that produced tokens is never free"
        );
    }
}

/// (cost_nanos, output_tokens, source) of every usage row of a key, read from the database.
fn usage_rows(gateway: &Gateway, key_id: &str) -> Vec<(i64, i64, String)> {
    let conn = rusqlite::Connection::open_with_flags(
        gateway.data_dir.join("gateway.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open database");
    let mut statement = conn
        .prepare("SELECT cost_nanos, output_tokens, source FROM usage WHERE key_id = ?1")
        .expect("prepare");
    statement
        .query_map([key_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .expect("query")
        .map(|row| row.expect("row"))
        .collect()
}

#[tokio::test]
async fn a_thousand_requests_ending_every_way_leave_no_reservation_open() {
    let mock = MockProvider::start().await;
    let gateway = Gateway::start_with(GatewayOptions {
        mock: Some(mock.clone()),
        extra_config: BUDGET_PRICES.to_owned(),
        proxy_config: "upstream_idle_timeout = \"300ms\"".into(),
        log_filter: "info".into(),
        ..Default::default()
    })
    .await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "chaos", "spend_limit_usd": 1000}))
        .await;
    let base = gateway.proxy_url();
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let (base, key) = (base.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let way = i % 6;
            let streaming = way != 1 || i % 12 == 1;
            let body = json!({"model": "budget-model", "max_tokens": 100, "stream": streaming, "messages": []});
            let headers: &[(&str, &str)] = match way {
                0 | 1 => &[],                                            // ok, streaming or not
                2 => &[("x-mock-status", "500")],                        // provider error
                3 => &[("x-mock-events", "30"), ("x-mock-delay-ms", "5")], // client drops
                4 => &[("x-mock-stall", "1")],                           // stalls mid-stream
                _ => &[("x-mock-headers-delay-ms", "1000")],             // no headers: 504
            };
            let mut response = chat(&base, &key, body, headers).await;
            let status = response.status().as_u16();
            if way == 3 {
                let _ = response.chunk().await;
                drop(response);
            } else {
                let _ = tokio::time::timeout(Duration::from_secs(10), response.bytes()).await.expect("ends by itself");
            }
            status
        }));
        if tasks.len() >= 64 {
            for task in tasks.drain(..) {
                *statuses.entry(task.await.expect("task")).or_default() += 1;
            }
        }
    }
    for task in tasks {
        *statuses.entry(task.await.expect("task")).or_default() += 1;
    }
    assert_eq!(statuses.get(&504).copied(), Some(166), "{statuses:?}");
    assert_eq!(statuses.get(&500).copied(), Some(167), "{statuses:?}");
    let view = settled(&base, &key).await;
    assert_eq!(view["reserved_usd"], 0.0, "{view}");
    assert_eq!(view["requests_in_flight"], 0);
}

/// Anthropic's `message_start` reports `output_tokens: 1` before any output; a client that
/// leaves after the content, before `message_delta` brings the real count, is billed for the
/// deltas it received, not for that placeholder (SPEC §5: input plus the tokens streamed so
/// far).
#[tokio::test]
async fn an_anthropic_stream_left_before_its_message_delta_bills_what_streamed() {
    let (gateway, _mock) = gateway("").await;
    let (id, key, _) = gateway.admin().create_key(json!({"name": "leaver"})).await;
    let base = gateway.proxy_url();
    let mut response = anthropic_messages(
        &base,
        &key,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]}),
        &[
            ("x-mock-events", "200"),
            ("x-mock-input-tokens", "10"),
            ("x-mock-output-tokens", "201"),
            ("x-mock-usage-delay-ms", "5000"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    while !seen.contains("content_block_stop") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("the content arrives before the pause")
            .expect("chunk")
            .expect("the stream is still open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(seen.matches("event: content_block_delta").count(), 200);
    assert!(
        !seen.contains("message_delta"),
        "left before the final usage"
    );
    let left = Instant::now();
    drop(response);

    wait_for_usage(&gateway, &id, 1).await;
    assert!(
        left.elapsed() < Duration::from_secs(4),
        "settled on the disconnect, before the mock's message_delta could be read"
    );
    let rows = usage_rows(&gateway, &id);
    assert_eq!(rows.len(), 1);
    let (cost, output_tokens, source) = rows[0].clone();
    assert_eq!(source, "estimated");
    assert!(
        output_tokens >= 200,
        "200 deltas streamed, {output_tokens} output tokens billed"
    );
    // claude-sonnet-4-5: $3 in, $15 out per million: 10 in + 200 out at least.
    let floor = (10 * 3_000 + 200 * 15_000) as i64;
    assert!(cost >= floor, "cost {cost} nanodollars < {floor}");
}

/// A stream that runs past its output limit is cut once what it streamed costs its
/// reservation, even though Anthropic's only usage so far is `message_start`'s placeholder.
#[tokio::test]
async fn an_anthropic_stream_past_its_reservation_is_cut() {
    let (gateway, _mock) = gateway(BUDGET_PRICES).await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "runaway", "spend_limit_usd": 10.0}))
        .await;
    let base = gateway.proxy_url();
    let response = anthropic_messages(
        &base,
        &key,
        json!({"model": "budget-model", "max_tokens": 100, "stream": true, "messages": []}),
        &[("x-mock-events", "5000"), ("x-mock-output-tokens", "5000")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the stream ends")
        .expect("body");
    let deltas = body.matches("event: content_block_delta").count();
    assert!(
        deltas >= 100,
        "cut no earlier than its reservation: {deltas}"
    );
    assert!(deltas < 5000, "cut: {deltas} of 5000 deltas streamed");
    assert!(!body.contains("message_stop"), "cut before its end");
    // The cut is said, in Anthropic's error event (its SDKs raise on it), not a silent end.
    let last = body.trim_end().rsplit("\n\n").next().unwrap_or_default();
    assert!(last.starts_with("event: error\ndata: "), "{last}");
    let error: Value =
        serde_json::from_str(last.trim_start_matches("event: error\ndata: ")).expect("json");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["code"], "spend_limit_exceeded", "{error}");

    settled(&base, &key).await;
    wait_for_usage(&gateway, &id, 1).await;
    let rows = usage_rows(&gateway, &id);
    assert_eq!(rows.len(), 1);
    let (cost, output_tokens, source) = rows[0].clone();
    assert_eq!(source, "estimated");
    assert!(
        output_tokens >= 100 && output_tokens as usize >= deltas,
        "billed {output_tokens} for {deltas} deltas"
    );
    // $100 per million output tokens, input free: at least the $0.01 reserved.
    assert!(cost >= 10_000_000, "cost {cost}");
}

/// A Gemini stream without `alt=sse` is one JSON array: no event can be added to it, so a cut
/// ends the body with an error, and the client sees the answer cut short, not complete.
#[tokio::test]
async fn a_cut_json_array_stream_ends_as_an_error() {
    let (gateway, _mock) = gateway(BUDGET_PRICES).await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "array", "spend_limit_usd": 10.0}))
        .await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/gemini/v1beta/models/budget-model:streamGenerateContent",
            gateway.proxy_url()
        ))
        .header("x-goog-api-key", &key)
        .header("x-mock-events", "5000")
        .header("x-mock-output-tokens", "5000")
        .json(&json!({"contents": [], "generationConfig": {"maxOutputTokens": 100}}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(20), response.bytes())
        .await
        .expect("the stream ends");
    assert!(
        body.is_err(),
        "the body ends in an error, not as a whole array"
    );
}
