//! Spend limits that hold: hard caps under concurrency, clamping near the cap, metering of
//! every provider's streams, settlement on every way a request ends (SPEC §5). Periods and
//! restarts are in `spend_periods`, metering and settlement in `spend_settlement`.

use std::time::{Duration, Instant};

use gateway_tests::requests::{BUDGET_PRICES, chat, self_view};
use gateway_tests::{Gateway, MockProvider};
use serde_json::{Value, json};

pub(crate) async fn gateway(extra: &str) -> (Gateway, MockProvider) {
    Gateway::with_mock("", extra).await
}

pub(crate) fn dollars(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// Waits until the key has no request in flight (settlement happens when bodies end).
pub(crate) async fn settled(base: &str, key: &str) -> Value {
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
pub(crate) async fn wait_for_usage(gateway: &Gateway, id: &str, requests: u64) -> Value {
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
