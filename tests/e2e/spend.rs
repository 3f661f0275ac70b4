//! Spend limits that hold: hard caps under concurrency, clamping near the cap, metering of
//! every provider's streams, settlement on every way a request ends (SPEC §5).

use std::time::{Duration, Instant};

use gateway_tests::in_process::InProcessGateway;
use gateway_tests::requests::{BUDGET_PRICES, anthropic_messages, chat, self_view};
use gateway_tests::{Gateway, GatewayOptions, MockProvider};
use serde_json::{Value, json};

async fn gateway(extra: &str) -> (Gateway, MockProvider) {
    Gateway::with_mock("", extra).await
}

fn dollars(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// Waits until the key has no request in flight (settlement happens when bodies end).
async fn settled(base: &str, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = self_view(base, key).await;
        if view["requests_in_flight"] == 0 {
            return view;
        }
        assert!(Instant::now() < deadline, "reservations still open: {view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn fifty_concurrent_dimes_against_a_dollar_admit_exactly_ten() {
    let (gateway, mock) = gateway(BUDGET_PRICES).await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "cap", "spend_limit_usd": 1.0}))
        .await;
    let base = gateway.proxy_url();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (base, key, barrier) = (base.clone(), key.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let body = json!({"model": "budget-model", "max_tokens": 1000, "messages": []});
            let response = chat(&base, &key, body, &[("x-mock-output-tokens", "1000")]).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            200 => ok += 1,
            402 => {
                assert_eq!(body["error"]["code"], "spend_limit_exceeded", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, refused), (10, 40));
    assert_eq!(
        mock.hits(),
        10,
        "refused requests never reached the provider"
    );
    let view = settled(&base, &key).await;
    assert_eq!(view["spend_period_usd"], 1.0);
    let shown = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(
        shown["spend_total_usd"], 1.0,
        "exactly $1.00 in integer nano-dollars"
    );
    assert_eq!(shown["state"], "exhausted");
    assert_eq!(shown["request_count"], 10);
    let (status, body) = {
        let r = chat(
            &base,
            &key,
            json!({"model": "budget-model", "max_tokens": 1, "messages": []}),
            &[],
        )
        .await;
        (r.status().as_u16(), r.json::<Value>().await.expect("json"))
    };
    assert_eq!(status, 402);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("lifetime")),
        "{body}"
    );
}

#[tokio::test]
async fn fifty_concurrent_streams_stay_under_the_cap() {
    let (gateway, _mock) = gateway(BUDGET_PRICES).await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "streams", "spend_limit_usd": 1.0}))
        .await;
    let base = gateway.proxy_url();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (base, key) = (base.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "budget-model", "max_tokens": 1000, "stream": true, "messages": []});
            let response = chat(&base, &key, body, &[("x-mock-output-tokens", "600"), ("x-mock-delay-ms", "50")]).await;
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            status
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        if task.await.expect("task") == 200 {
            admitted += 1;
        }
    }
    let view = settled(&base, &key).await;
    let spent = dollars(&view["spend_period_usd"]);
    assert!(spent <= 1.0, "spent {spent} over the $1.00 cap");
    assert!(
        (spent - 0.06 * admitted as f64).abs() < 1e-9,
        "each admitted stream billed $0.06: {spent} for {admitted}"
    );
    assert!(
        admitted >= 10,
        "at least the ten that fit at once: {admitted}"
    );
}

#[tokio::test]
async fn near_the_cap_a_request_without_max_tokens_is_clamped_not_refused() {
    let (gateway, mock) = gateway(BUDGET_PRICES).await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "clamp", "spend_limit_usd": 1.0}))
        .await;
    let base = gateway.proxy_url();
    spend_down_to_five_cents(&base, &key).await;
    // Without max_tokens the worst case is 100000 tokens ($10).
    let clamped = chat(
        &base,
        &key,
        json!({"model": "budget-model", "messages": []}),
        &[("x-mock-output-tokens", "max")],
    )
    .await;
    assert_clamped_to(&clamped, "500");
    let _ = clamped.bytes().await;
    assert_eq!(
        mock.last().json()["max_completion_tokens"],
        500,
        "the provider was asked for what the budget pays"
    );
    let shown = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert!(dollars(&shown["spend_total_usd"]) <= 1.0, "{shown}");
    assert_eq!(shown["spend_total_usd"], 1.0);

    // Operators can choose refusal instead.
    let (strict, _) = gateway_pair("[spend]\nclamp_output = false\n").await;
    let (_, key, _) = strict
        .admin()
        .create_key(json!({"name": "strict", "spend_limit_usd": 1.0}))
        .await;
    let response = chat(
        &strict.proxy_url(),
        &key,
        json!({"model": "budget-model", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 402);
}

/// A request for several answers (OpenAI `n`) may cost that many times its output limit: the
/// reservation and the clamp count every answer. Before, `n: 20` with `max_tokens: 1000` was
/// reserved as one answer ($0.10 of a $1.00 cap) and spent $2.00.
#[tokio::test]
async fn every_answer_a_request_asks_for_counts_against_the_cap() {
    let (gateway, mock) = gateway(BUDGET_PRICES).await;
    let base = gateway.proxy_url();
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "answers", "spend_limit_usd": 1.0}))
        .await;
    // 20 answers of 1000 tokens are $2.00: lowered to 500 each, $1.00 in all.
    let clamped = chat(
        &base,
        &key,
        json!({"model": "budget-model", "messages": [], "max_tokens": 1000, "n": 20}),
        &[("x-mock-output-tokens", "10000")],
    )
    .await;
    assert_clamped_to(&clamped, "500");
    let _ = clamped.bytes().await;
    let sent = mock.last().json();
    assert_eq!((&sent["max_tokens"], &sent["n"]), (&json!(500), &json!(20)));
    let shown = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(shown["spend_total_usd"], 1.0, "{shown}");

    // Fifty answers cannot each get the minimum output of 256 tokens within $1.00: refused.
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "many", "spend_limit_usd": 1.0}))
        .await;
    let refused = chat(
        &base,
        &key,
        json!({"model": "budget-model", "messages": [], "max_tokens": 1000, "n": 50}),
        &[],
    )
    .await;
    assert_eq!(refused.status(), 402);
}

/// The output limit is read and lowered wherever the client put it: a Gemini body sent as
/// `text/plain` with the proto's snake_case names was announced as clamped but forwarded
/// with its own 60000 tokens.
#[tokio::test]
async fn a_clamp_reaches_the_provider_whatever_the_bodys_type_and_spelling() {
    let (gateway, mock) = gateway(BUDGET_PRICES).await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "snake", "spend_limit_usd": 1.0}))
        .await;
    let body = json!({
        "contents": [{"parts": [{"text": "hi"}]}],
        "generation_config": {"max_output_tokens": 60000}
    });
    let response = reqwest::Client::new()
        .post(format!(
            "{}/gemini/v1beta/models/budget-model:generateContent",
            gateway.proxy_url()
        ))
        .header("x-goog-api-key", &key)
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    assert_clamped_to(&response, "10000");
    let sent = mock.last().json();
    assert_eq!(
        sent["generation_config"]["max_output_tokens"], 10000,
        "{sent}"
    );
    assert!(sent.get("generationConfig").is_none(), "{sent}");
}

#[tokio::test]
async fn a_gemini_request_near_the_cap_is_clamped_in_its_generation_config() {
    // Gemini names the model in the path; the output limit still lives in the body.
    let (gateway, mock) = gateway(BUDGET_PRICES).await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "gemini-clamp", "spend_limit_usd": 1.0}))
        .await;
    let base = gateway.proxy_url();
    spend_down_to_five_cents(&base, &key).await;
    let clamped = reqwest::Client::new()
        .post(format!(
            "{base}/gemini/v1beta/models/budget-model:generateContent"
        ))
        .header("x-goog-api-key", &key)
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .expect("request to the proxy");
    assert_clamped_to(&clamped, "500");
    let _ = clamped.bytes().await;
    let sent = mock.last().json();
    assert_eq!(
        sent["generationConfig"]["maxOutputTokens"], 500,
        "the provider was asked for what the budget pays: {sent}"
    );
    assert_eq!(sent["contents"][0]["parts"][0]["text"], "hi");

    // A Gemini body that is not JSON cannot be bounded: refused before the provider.
    let hits = mock.hits();
    let broken = reqwest::Client::new()
        .post(format!(
            "{base}/gemini/v1beta/models/budget-model:generateContent"
        ))
        .header("x-goog-api-key", &key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request to the proxy");
    assert_eq!(broken.status(), 400);
    assert_eq!(mock.hits(), hits);
}

/// A 200 whose output limit the gateway lowered to `tokens`.
fn assert_clamped_to(response: &reqwest::Response, tokens: &str) {
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-gateway-output-clamped")
            .map(|v| v.to_str().unwrap_or("")),
        Some(tokens)
    );
}

/// Spends $0.95 of a $1.00 budget: 9,500 output tokens of `budget-model`.
async fn spend_down_to_five_cents(base: &str, key: &str) {
    let first = chat(
        base,
        key,
        json!({"model": "budget-model", "max_tokens": 9500, "messages": []}),
        &[("x-mock-output-tokens", "9500")],
    )
    .await;
    assert_eq!(first.status(), 200);
    let _ = first.bytes().await;
}

async fn gateway_pair(extra: &str) -> (Gateway, MockProvider) {
    gateway(&format!("{BUDGET_PRICES}{extra}")).await
}

#[tokio::test]
async fn unpriced_models_are_refused_on_spend_limited_keys_and_counted_elsewhere() {
    let (gateway, _mock) = gateway("").await;
    let (_, limited, _) = gateway
        .admin()
        .create_key(json!({"name": "l", "spend_limit_usd": 5}))
        .await;
    let (open_id, open, _) = gateway.admin().create_key(json!({"name": "o"})).await;
    let base = gateway.proxy_url();
    let response = chat(
        &base,
        &limited,
        json!({"model": "llama-local", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "model_not_priced");
    let response = chat(
        &base,
        &open,
        json!({"model": "llama-local", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await;
    settled(&base, &open).await;
    let report = wait_for_usage(&gateway, &open_id, 1).await;
    assert_eq!(
        report["total"]["unpriced_requests"], 1,
        "counted as unpriced, not as free: {report}"
    );

    let (fallback, _) = gateway_pair(
        "[spend]\nfallback_price = { input = 1, output = 2, max_output_tokens = 1000 }\n",
    )
    .await;
    let (_, limited, _) = fallback
        .admin()
        .create_key(json!({"name": "l", "spend_limit_usd": 5}))
        .await;
    let response = chat(
        &fallback.proxy_url(),
        &limited,
        json!({"model": "llama-local", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200, "priced by the fallback");
}

/// Polls the usage report until it counts `requests` (the writer commits in batches).
async fn wait_for_usage(gateway: &Gateway, id: &str, requests: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = gateway
            .admin()
            .get(&format!("/v1/keys/{id}/usage"))
            .await
            .body;
        if report["total"]["requests"].as_u64() == Some(requests) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "usage never reached {requests}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

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

#[tokio::test]
async fn periods_reset_exactly_at_midnight_monday_and_month_end() {
    let mock = MockProvider::start().await;
    for (reset, before, boundary) in [
        ("daily", "2026-11-26T23:59:59.999Z", "2026-11-27T00:00:00Z"),
        ("weekly", "2026-11-29T23:59:59.999Z", "2026-11-30T00:00:00Z"),
        (
            "monthly",
            "2026-12-31T23:59:59.999Z",
            "2027-01-01T00:00:00Z",
        ),
    ] {
        let start: jiff::Timestamp = before.parse().expect("ts");
        let gateway = InProcessGateway::start_configured(start, Some(&mock), BUDGET_PRICES).await;
        let (id, key, _) = gateway
            .admin
            .create_key(json!({"name": reset, "spend_limit_usd": 0.1, "spend_reset": reset}))
            .await;
        let base = gateway.proxy_url.clone();
        let dime = json!({"model": "budget-model", "max_tokens": 1000, "messages": []});
        let first = chat(
            &base,
            &key,
            dime.clone(),
            &[("x-mock-output-tokens", "1000")],
        )
        .await;
        assert_eq!(first.status(), 200, "{reset}");
        let _ = first.bytes().await;
        settled(&base, &key).await;
        let refused = chat(&base, &key, dime.clone(), &[]).await;
        assert_eq!(refused.status(), 402, "{reset}");
        let body: Value = refused.json().await.expect("json");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(boundary)),
            "names the reset: {body}"
        );
        let view = gateway.admin.get(&format!("/v1/keys/{id}")).await.body;
        assert_eq!(
            (view["state"].as_str(), view["period_resets_at"].as_str()),
            (Some("exhausted"), Some(boundary))
        );

        gateway.clock.set(boundary.parse().expect("ts"));
        let view = gateway.admin.get(&format!("/v1/keys/{id}")).await.body;
        assert_eq!(
            view["state"], "active",
            "{reset} resets exactly at {boundary}"
        );
        assert_eq!(view["spend_period_usd"], 0.0);
        assert_eq!(view["spend_total_usd"], 0.1);
        let again = chat(&base, &key, dime, &[("x-mock-output-tokens", "1000")]).await;
        assert_eq!(again.status(), 200, "{reset}");
        let _ = again.bytes().await;
        gateway.stop().await;
    }
}

#[tokio::test]
async fn a_new_reset_period_counts_only_what_was_spent_in_it() {
    let mock = MockProvider::start().await;
    let mut gateway =
        InProcessGateway::start_configured(ts("2026-11-20T12:00:00Z"), Some(&mock), BUDGET_PRICES)
            .await;
    // A key without a limit spends $0.20 in November and $0.10 on Wednesday 2 December.
    let (id, key, _) = gateway.admin.create_key(json!({"name": "grown"})).await;
    spend_a_dime(&gateway.proxy_url, &key).await;
    spend_a_dime(&gateway.proxy_url, &key).await;
    settled(&gateway.proxy_url, &key).await;
    gateway.clock.set(ts("2026-12-02T10:00:00Z"));
    spend_a_dime(&gateway.proxy_url, &key).await;
    settled(&gateway.proxy_url, &key).await;

    let path = format!("/v1/keys/{id}");
    let edit = |change: Value| {
        let (admin, path) = (&gateway.admin, &path);
        async move {
            let response = admin.patch(path, change.clone()).await;
            assert_eq!(response.status, 200, "{change}: {}", response.body);
            let view = response.body;
            (
                dollars(&view["spend_period_usd"]),
                view["state"].as_str().unwrap_or_default().to_owned(),
                view["period_resets_at"].clone(),
            )
        }
    };
    let monthly = edit(json!({"spend_limit_usd": 0.25, "spend_reset": "monthly"})).await;
    assert_eq!(
        monthly,
        (0.1, "active".into(), json!("2027-01-01T00:00:00Z")),
        "a monthly limit added on the 2nd counts December, not all the key ever spent"
    );
    let daily = edit(json!({"spend_reset": "daily"})).await;
    assert_eq!(daily, (0.1, "active".into(), json!("2026-12-03T00:00:00Z")));
    let lifetime = edit(json!({"spend_reset": null})).await;
    assert_eq!(lifetime, (0.3, "exhausted".into(), Value::Null));
    let weekly = edit(json!({"spend_reset": "weekly"})).await;
    assert_eq!(
        weekly,
        (0.1, "active".into(), json!("2026-12-07T00:00:00Z"))
    );
    let total = gateway.admin.get(&path).await.body["spend_total_usd"].clone();
    assert_eq!(total, 0.3);

    // The restarted period is what the database keeps, not the old period's spend.
    gateway.restart().await;
    let after = gateway.admin.get(&path).await.body;
    assert_eq!(
        (dollars(&after["spend_period_usd"]), &after["state"]),
        (0.1, &json!("active")),
        "{after}"
    );
    assert_eq!(after["period_resets_at"], "2026-12-07T00:00:00Z");
    assert_eq!(after["spend_total_usd"], 0.3);
    gateway.stop().await;
}

/// One request that costs exactly $0.10 (1000 output tokens of `budget-model`), read to the
/// end.
async fn spend_a_dime(base: &str, key: &str) {
    let r = chat(
        base,
        key,
        json!({"model": "budget-model", "max_tokens": 1000, "messages": []}),
        &[("x-mock-output-tokens", "1000")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
}

fn ts(text: &str) -> jiff::Timestamp {
    text.parse().expect("timestamp")
}

#[tokio::test]
async fn a_restart_keeps_period_spend() {
    let (mut gateway, _mock) = gateway(BUDGET_PRICES).await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "durable", "spend_limit_usd": 0.3, "spend_reset": "monthly"}))
        .await;
    let base = gateway.proxy_url();
    for _ in 0..3 {
        spend_a_dime(&base, &key).await;
    }
    settled(&base, &key).await;
    let before = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(before["state"], "exhausted");
    gateway.restart().await;
    let after = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    for field in [
        "spend_period_usd",
        "spend_total_usd",
        "period_resets_at",
        "request_count",
        "state",
        "last_used_at",
    ] {
        assert_eq!(after[field], before[field], "{field} after restart");
    }
    let r = chat(
        &gateway.proxy_url(),
        &key,
        json!({"model": "budget-model", "max_tokens": 1, "messages": []}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 402);
}

/// A rotated key's two secrets are one budget during the grace period, also once the daemon
/// has restarted: each secret's usage persisted the shared spend under its own key id, and
/// loading them as two keys would give each the headroom left.
#[tokio::test]
async fn a_restart_during_a_rotation_grace_period_keeps_one_budget() {
    let (mut gateway, _mock) = gateway(BUDGET_PRICES).await;
    let (id, old, _) = gateway
        .admin()
        .create_key(json!({"name": "rotating", "spend_limit_usd": 0.3, "spend_reset": "monthly"}))
        .await;
    spend_a_dime(&gateway.proxy_url(), &old).await;
    let (new_id, new, _) = gateway.admin().rotate_key(&id, 3600).await;
    spend_a_dime(&gateway.proxy_url(), &new).await;
    settled(&gateway.proxy_url(), &new).await;

    let replaced_by = |view: &Value| view["replaced_by"].clone();
    let old_view = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(replaced_by(&old_view), json!(new_id), "{old_view}");

    gateway.restart().await;
    // The rotation is known after the restart too, and only the old key was replaced.
    let old_view = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(replaced_by(&old_view), json!(new_id), "{old_view}");
    let new_view = gateway
        .admin()
        .get(&format!("/v1/keys/{new_id}"))
        .await
        .body;
    assert_eq!(replaced_by(&new_view), Value::Null, "{new_view}");
    let base = gateway.proxy_url();
    // $0.20 of $0.30 spent, whichever secret asks: the old one spends the last dime.
    spend_a_dime(&base, &old).await;
    settled(&base, &old).await;
    for (secret, which) in [(&old, "old"), (&new, "new")] {
        let r = chat(
            &base,
            secret,
            json!({"model": "budget-model", "max_tokens": 1, "messages": []}),
            &[],
        )
        .await;
        assert_eq!(
            r.status(),
            402,
            "the {which} secret after the budget is spent"
        );
    }
    let view = gateway
        .admin()
        .get(&format!("/v1/keys/{new_id}"))
        .await
        .body;
    assert_eq!(
        (
            dollars(&view["spend_period_usd"]),
            &view["request_count"],
            &view["state"]
        ),
        (0.3, &json!(3), &json!("exhausted")),
        "{view}"
    );

    // Again after a second restart: the later state (the old secret's) is the one loaded.
    gateway.restart().await;
    let r = chat(
        &gateway.proxy_url(),
        &new,
        json!({"model": "budget-model", "max_tokens": 1, "messages": []}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 402, "the new secret after a second restart");
}

#[tokio::test]
async fn kill_dash_nine_under_load_loses_no_answered_request() {
    let (mut gateway, _mock) = gateway(BUDGET_PRICES).await;
    let (id, key, _) = gateway.admin().create_key(json!({"name": "crash"})).await;
    let base = gateway.proxy_url();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (base, key, answered, stop) =
            (base.clone(), key.clone(), answered.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let result = client
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&json!({"model": "budget-model", "max_tokens": 10, "messages": []}))
                    .send()
                    .await;
                let Ok(response) = result else { break };
                if response.status() == 200 && response.bytes().await.is_ok() {
                    answered.lock().expect("lock").push(Instant::now());
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = Instant::now();
    gateway.kill9().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let answered = answered.lock().expect("lock").clone();
    let old_enough = answered
        .iter()
        .filter(|at| killed_at.duration_since(**at) > Duration::from_secs(1))
        .count();
    assert!(old_enough > 50, "enough load before the kill: {old_enough}");

    gateway.start_again().await;
    let conn = rusqlite::Connection::open(gateway.data_dir.join("gateway.db")).expect("open");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity");
    assert_eq!(integrity, "ok");
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM usage WHERE key_id = ?1", [&id], |r| {
            r.get(0)
        })
        .expect("count");
    assert!(
        rows as usize >= old_enough,
        "{rows} rows on disk, {old_enough} requests answered over a second before the kill"
    );
    assert!(rows as usize <= answered.len() + 8, "no phantom rows");
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
