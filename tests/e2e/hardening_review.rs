//! What the adversarial review of the data-plane hardening (issue #20, points 1–4) found,
//! each reproduced with the real daemon: a body the gateway and a provider could read
//! differently (a member given twice), and a proxy key forwarded in a header the gateway does
//! not read.

use gateway_tests::Gateway;
use gateway_tests::requests::{BUDGET_PRICES, chat};
use serde_json::{Value, json};

/// (1) `"max_tokens":100000,"max_tokens":10` on a key with $0.01 left: the gateway read the
/// last (10 tokens, $0.001: admitted, no clamp) and forwarded the body as sent, so a provider
/// that reads the first member could write 100,000 tokens ($10) on a $0.01 cap. A member the
/// gateway reads, given twice at the top or in a generation config, is now refused before
/// anything is forwarded.
#[tokio::test]
async fn a_limit_given_twice_is_refused_not_forwarded_unclamped() {
    let (gateway, mock) = Gateway::with_mock("", BUDGET_PRICES).await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "twice", "spend_limit_usd": 0.01}))
        .await;
    let base = gateway.proxy_url();
    for (path, body) in [
        (
            "/v1/chat/completions",
            r#"{"model":"budget-model","max_tokens":100000,"max\u005ftokens":10,"messages":[]}"#,
        ),
        (
            "/gemini/v1beta/models/budget-model:generateContent",
            r#"{"contents":[],"generationConfig":{"maxOutputTokens":100000,"maxOutputTokens":10}}"#,
        ),
    ] {
        let response = crate::hardening::post(format!("{base}{path}"), &key, body).await;
        let status = response.status();
        let error: Value = response.json().await.unwrap_or_default();
        assert_eq!(status, 400, "{path}: {error}");
        assert_eq!(error["error"]["code"], "invalid_request", "{error}");
        assert_eq!(error["error"]["type"], "gateway_error", "{error}");
    }
    assert_eq!(mock.hits(), 0, "nothing reached the provider");

    // Once, it is admitted as before.
    let ok = chat(
        &base,
        &key,
        json!({"model": "budget-model", "max_tokens": 10, "messages": []}),
        &[],
    )
    .await;
    assert_eq!(ok.status(), 200);
    let _ = ok.bytes().await;
}

/// (2) The gateway drops only the credential headers it knows (`Authorization`, `x-api-key`,
/// `x-goog-api-key`) and forwarded every other header as sent: a proxy key in an Azure-style
/// `api-key`, a cookie or any custom header reached the provider (its logs, its dashboards).
/// Now refused like a key in the path or query, cut to its prefix, before anything is
/// forwarded; the credential headers themselves still work and are still dropped.
#[tokio::test]
async fn a_proxy_key_in_a_forwarded_header_is_refused() {
    let (gateway, mock) = Gateway::with_mock("", "").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "headers"})).await;
    let base = gateway.proxy_url();
    let body = json!({"model": "gpt-4o", "messages": []});
    let cookie = format!("session=1; token={key}");
    let admin_token = "gwadm-0123456789abcdefghijklmnopqrstuvwxyzABCD";
    for (name, value) in [
        ("api-key", key.as_str()),
        ("cookie", cookie.as_str()),
        ("x-custom-auth", admin_token),
    ] {
        let response = chat(&base, &key, body.clone(), &[(name, value)]).await;
        let status = response.status();
        let error: Value = response.json().await.expect("JSON error");
        assert_eq!(status, 400, "{name}: {error}");
        assert_eq!(error["error"]["code"], "invalid_request", "{error}");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(message.contains(name), "names the header: {message}");
        assert!(
            !message.contains(&key[13..]),
            "cut to its prefix: {message}"
        );
        assert!(!message.contains(&admin_token[10..]), "cut: {message}");
    }
    assert_eq!(mock.hits(), 0, "nothing reached the provider");

    // Where the key belongs (also twice, on the OpenAI route in x-api-key) it is dropped.
    let ok = chat(&base, &key, body, &[("x-api-key", key.as_str())]).await;
    assert_eq!(ok.status(), 200);
    let _ = ok.bytes().await;
    let forwarded = mock.last();
    assert_eq!(forwarded.header("x-api-key"), None);
    assert!(
        forwarded
            .header("authorization")
            .is_some_and(|v| !v.contains("sk-proxy-")),
        "the provider's own credential"
    );
}
