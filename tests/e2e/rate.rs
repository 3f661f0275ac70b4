//! The exact rolling-window rate limit, its headers and `Retry-After` (SPEC §4), with the
//! clock injected so minutes pass without sleeping.

use gateway_tests::in_process::InProcessGateway;
use gateway_tests::{Gateway, MockProvider};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

async fn send(base: &str, key: &str) -> reqwest::Response {
    gateway_tests::requests::chat_gpt4o(base, key).await
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    let values: Vec<_> = response.headers().get_all(name).iter().collect();
    assert!(values.len() <= 1, "{name} appears {} times", values.len());
    values
        .first()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn at_most_n_in_any_rolling_minute_and_retry_after_is_honest() {
    let mock = MockProvider::start().await;
    let start: Timestamp = "2026-11-26T12:00:00Z".parse().expect("ts");
    for limit in [1u64, 10, 60] {
        let gateway = InProcessGateway::start_with(start, Some(&mock)).await;
        let (_, key, _) = gateway
            .admin
            .create_key(json!({"name": "rl", "rate_limit_rpm": limit}))
            .await;
        let base = gateway.proxy_url.clone();
        // A client polling every 700 ms for three minutes of injected time.
        let mut admitted_at = Vec::new();
        let mut elapsed_ms = 0i64;
        while elapsed_ms < 180_000 {
            let response = send(&base, &key).await;
            match response.status().as_u16() {
                200 => {
                    admitted_at.push(elapsed_ms);
                    assert_eq!(
                        header(&response, "x-ratelimit-limit-requests"),
                        Some(limit.to_string())
                    );
                }
                429 => {
                    let retry: i64 = header(&response, "retry-after")
                        .expect("Retry-After")
                        .parse()
                        .expect("seconds");
                    assert!((1..=60).contains(&retry), "{retry}");
                    let body: Value = response.json().await.expect("json");
                    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
                }
                other => panic!("status {other}"),
            }
            gateway.clock.advance(SignedDuration::from_millis(700));
            elapsed_ms += 700;
        }
        let most = admitted_at
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                admitted_at[i..]
                    .iter()
                    .take_while(|&&u| u < t + 60_000)
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert_eq!(
            most as u64, limit,
            "the most admitted in any 60 s window is N={limit}"
        );

        // After a 429, waiting exactly Retry-After admits the next request.
        let mut refused = send(&base, &key).await;
        while refused.status() == 200 {
            refused = send(&base, &key).await;
        }
        let retry: i64 = header(&refused, "retry-after")
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        gateway.clock.advance(SignedDuration::from_secs(retry));
        assert_eq!(
            send(&base, &key).await.status(),
            200,
            "N={limit}: Retry-After {retry}s was enough"
        );
        gateway.stop().await;
    }
}

#[tokio::test]
async fn gateway_rate_headers_replace_the_providers_and_edits_apply_at_once() {
    let (gateway, mock) = Gateway::with_mock("", "").await;
    let admin = gateway.admin();
    let (id, key, _) = admin
        .create_key(json!({"name": "h", "rate_limit_rpm": 3}))
        .await;
    let base = gateway.proxy_url();
    let first = send(&base, &key).await;
    assert_eq!(first.status(), 200);
    // The mock sends its own x-ratelimit-limit-requests: 10000; only ours reaches the client.
    assert_eq!(
        header(&first, "x-ratelimit-limit-requests").as_deref(),
        Some("3")
    );
    assert_eq!(
        header(&first, "x-ratelimit-remaining-requests").as_deref(),
        Some("2")
    );
    assert!(header(&first, "x-ratelimit-reset-requests").is_some_and(|v| v.ends_with('s')));
    send(&base, &key).await;
    send(&base, &key).await;
    let refused = send(&base, &key).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        header(&refused, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    assert_eq!(
        mock.hits(),
        3,
        "the refused request never reached the provider"
    );

    // Raising the limit applies to the very next request; rejected requests did not count.
    admin
        .patch(&format!("/v1/keys/{id}"), json!({"rate_limit_rpm": 4}))
        .await;
    assert_eq!(send(&base, &key).await.status(), 200);
    assert_eq!(send(&base, &key).await.status(), 429);
    admin
        .patch(&format!("/v1/keys/{id}"), json!({"rate_limit_rpm": null}))
        .await;
    let unlimited = send(&base, &key).await;
    assert_eq!(unlimited.status(), 200);
    assert_eq!(
        header(&unlimited, "x-ratelimit-limit-requests").as_deref(),
        Some("10000"),
        "without a key limit the provider's header passes"
    );
}

#[tokio::test]
async fn a_key_reads_its_own_budget_and_headroom() {
    let (gateway, mock) = Gateway::with_mock("", "").await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "me", "rate_limit_rpm": 10, "spend_limit_usd": 5, "spend_reset": "daily"}))
        .await;
    let base = gateway.proxy_url();
    let r = send(&base, &key).await;
    let _ = r.bytes().await;
    let client = reqwest::Client::new();
    for (header_name, value) in [
        ("authorization", format!("Bearer {key}")),
        ("x-api-key", key.clone()),
        ("x-goog-api-key", key.clone()),
    ] {
        let view: Value = client
            .get(format!("{base}/gateway/v1/key"))
            .header(header_name, value)
            .send()
            .await
            .expect("self-service")
            .json()
            .await
            .expect("json");
        assert_eq!(view["name"], "me");
        assert_eq!(view["state"], "active");
        assert_eq!(view["spend_limit_usd"], 5.0);
        assert_eq!(view["rate_limit_rpm"], 10);
        assert_eq!(view["rate_limit_remaining"], 9);
        assert!(view["period_resets_at"].is_string());
        // gpt-4o: 11 × $2.50/M + 7 × $10/M = $0.0000975
        assert_eq!(view["spend_period_usd"], 0.0000975);
        assert_eq!(view["remaining_usd"], 5.0 - 0.0000975);
        assert!(view.get("secret").is_none());
    }
    let anonymous = client
        .get(format!("{base}/gateway/v1/key"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(mock.hits(), 1, "self-service never reaches a provider");
}

#[tokio::test]
async fn a_request_refused_after_the_rate_step_does_not_use_a_slot() {
    let (gateway, _mock) = Gateway::with_mock("", "").await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "r", "rate_limit_rpm": 1, "spend_limit_usd": 1}))
        .await;
    let base = gateway.proxy_url();
    for _ in 0..3 {
        let refused = reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "no-such-price", "messages": []}))
            .send()
            .await
            .expect("request");
        assert_eq!(refused.status(), 403, "model_not_priced, at the spend step");
    }
    assert_eq!(
        send(&base, &key).await.status(),
        200,
        "the refused requests used no slot"
    );
    assert_eq!(send(&base, &key).await.status(), 429);
}

/// A graceful restart saves the windows and the next start reads them back: the minute goes
/// on (SPEC §4, any rolling 60 s), with the real daemon and its real clock.
#[tokio::test]
async fn a_restart_keeps_the_rolling_window() {
    let (mut gateway, _mock) = Gateway::with_mock("", "").await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "steady", "rate_limit_rpm": 3}))
        .await;
    for _ in 0..3 {
        assert_eq!(send(&gateway.proxy_url(), &key).await.status(), 200);
    }
    gateway.restart().await;
    assert!(
        gateway.logs().contains("rate windows saved"),
        "{}",
        gateway.logs()
    );
    let refused = send(&gateway.proxy_url(), &key).await;
    assert_eq!(
        refused.status(),
        429,
        "the minute goes on after the restart"
    );
    let retry_after: u64 = header(&refused, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        header(&refused, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
}

/// A crash (`kill -9`) keeps the window too, as it stood a few seconds before: the running
/// daemon saves changed windows every 5 s. Before, it started empty and the key got its rpm
/// again within the same minute.
#[tokio::test]
async fn a_crash_keeps_the_rolling_window_as_last_saved() {
    let (mut gateway, _mock) = Gateway::with_mock("", "").await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "crashy", "rate_limit_rpm": 3}))
        .await;
    for _ in 0..3 {
        assert_eq!(send(&gateway.proxy_url(), &key).await.status(), 200);
    }
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    gateway.kill9().await;
    gateway.start_again().await;
    assert_eq!(
        send(&gateway.proxy_url(), &key).await.status(),
        429,
        "the minute goes on after the crash"
    );
}
