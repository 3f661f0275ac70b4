//! A key's rules on the data plane: its IP allowlist against the client address the
//! gateway trusts, edits and revocations at the very next request, the model listings it
//! may see, and endpoints billed later refused on spend-limited keys.

use gateway_tests::mock::LISTED_MODELS;
use serde_json::{Value, json};

use crate::proxy::{assert_gateway_error, authorized, chat, gateway_with_mock, openai};

#[tokio::test]
async fn untrusted_forwarded_for_is_ignored_and_trusted_is_walked_right_to_left() {
    let (gateway, mock) = gateway_with_mock("").await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "k", "allowed_ips": ["203.0.113.5"]}))
        .await;
    let send = |xff: &'static str, base: String, key: String| async move {
        reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-forwarded-for", xff)
            .header("x-real-ip", "203.0.113.5")
            .json(&chat("gpt-4o"))
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    };
    // The peer (127.0.0.1) is not a trusted proxy: its headers mean nothing.
    assert_eq!(
        send("203.0.113.5", gateway.proxy_url(), key.clone()).await,
        403
    );
    assert_eq!(mock.hits(), 0);

    let (trusting, mock) = gateway_with_mock("trusted_proxies = [\"127.0.0.0/8\"]").await;
    let (_, key, _) = trusting
        .admin()
        .create_key(json!({"name": "k", "allowed_ips": ["203.0.113.5"]}))
        .await;
    assert_eq!(
        send("203.0.113.5", trusting.proxy_url(), key.clone()).await,
        200
    );
    assert_eq!(
        send(
            "198.51.100.1, 203.0.113.5",
            trusting.proxy_url(),
            key.clone()
        )
        .await,
        200
    );
    // The client appended a spoofed hop; the rightmost untrusted entry is the real client.
    assert_eq!(
        send(
            "203.0.113.5, 198.51.100.1",
            trusting.proxy_url(),
            key.clone()
        )
        .await,
        403
    );
    assert_eq!(
        send("203.0.113.5, 127.0.0.9", trusting.proxy_url(), key).await,
        200
    );
    assert_eq!(mock.hits(), 3);
}

#[tokio::test]
async fn ipv4_rules_match_ipv4_mapped_clients() {
    // A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1.
    let (gateway, mock) = gateway_with_mock("listen = \"[::]:0\"").await;
    let base = format!("http://127.0.0.1:{}", gateway.proxy_addr.port());
    let admin = gateway.admin();
    let (_, v4_rule, _) = admin
        .create_key(json!({"name": "v4", "allowed_ips": ["127.0.0.0/8"]}))
        .await;
    let (_, mapped_rule, view) = admin
        .create_key(json!({"name": "mapped", "allowed_ips": ["::ffff:127.0.0.0/104"]}))
        .await;
    assert_eq!(
        view["allowed_ips"],
        json!(["127.0.0.0/8"]),
        "stored as the IPv4 network"
    );
    let (_, elsewhere, _) = admin
        .create_key(json!({"name": "no", "allowed_ips": ["10.0.0.0/8"]}))
        .await;
    for key in [&v4_rule, &mapped_rule] {
        let (status, body, _) = openai(&base, Some(key), chat("gpt-4o")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body, _) = openai(&base, Some(&elsewhere), chat("gpt-4o")).await;
    assert_gateway_error(status, &body, 403, "ip_not_allowed");
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn edits_and_revocations_apply_to_the_very_next_request() {
    let (gateway, mock) = gateway_with_mock("").await;
    let admin = gateway.admin();
    let base = gateway.proxy_url();
    let (id, key, _) = admin.create_key(json!({"name": "k"})).await;
    let path = format!("/v1/keys/{id}");
    for round in 0..100 {
        admin
            .patch(&path, json!({"allowed_models": ["claude-*"]}))
            .await;
        let (status, body, _) = openai(&base, Some(&key), chat("gpt-4o")).await;
        assert_gateway_error(status, &body, 403, "model_not_allowed");
        admin
            .patch(
                &path,
                json!({"allowed_models": [], "allowed_ips": ["10.0.0.0/8"]}),
            )
            .await;
        let (status, body, _) = openai(&base, Some(&key), chat("gpt-4o")).await;
        assert_gateway_error(status, &body, 403, "ip_not_allowed");
        admin.patch(&path, json!({"allowed_ips": []})).await;
        let (status, _, _) = openai(&base, Some(&key), chat("gpt-4o")).await;
        assert_eq!(status, 200, "round {round}");
    }
    assert_eq!(mock.hits(), 100);
    admin.delete(&path).await;
    let (status, body, _) = openai(&base, Some(&key), chat("gpt-4o")).await;
    assert_gateway_error(status, &body, 403, "key_revoked");
    assert_eq!(mock.hits(), 100);

    // Revoking many keys, each checked immediately.
    for n in 0..50 {
        let (id, key, _) = admin.create_key(json!({"name": format!("r{n}")})).await;
        admin.delete(&format!("/v1/keys/{id}")).await;
        let (status, body, _) = openai(&base, Some(&key), chat("gpt-4o")).await;
        assert_gateway_error(status, &body, 403, "key_revoked");
    }
    assert_eq!(mock.hits(), 100);
}

#[tokio::test]
async fn model_listings_need_no_model_and_show_only_allowed_models() {
    let (gateway, _mock) = gateway_with_mock("").await;
    let admin = gateway.admin();
    let (_, open, _) = admin.create_key(json!({"name": "open"})).await;
    let (_, narrow, _) = admin
        .create_key(json!({"name": "narrow", "allowed_models": ["gpt-4o*", "gemini-2.5*"]}))
        .await;
    let client = reqwest::Client::new();
    let ids = |body: &Value, field: &str, key: &str| -> Vec<String> {
        body[field]
            .as_array()
            .expect("list")
            .iter()
            .map(|m| m[key].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let list = |key: String, path: &'static str| {
        let client = client.clone();
        let base = gateway.proxy_url();
        async move {
            let response = client
                .get(format!("{base}{path}"))
                .bearer_auth(&key)
                .header("x-api-key", &key)
                .header("x-goog-api-key", &key)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("json")
        }
    };
    assert_eq!(
        ids(&list(open.clone(), "/v1/models").await, "data", "id"),
        LISTED_MODELS
    );
    assert_eq!(
        ids(&list(narrow.clone(), "/v1/models").await, "data", "id"),
        ["gpt-4o", "gpt-4o-mini"]
    );
    assert_eq!(
        ids(
            &list(narrow.clone(), "/anthropic/v1/models").await,
            "data",
            "id"
        ),
        ["gpt-4o", "gpt-4o-mini"]
    );
    assert_eq!(
        ids(
            &list(narrow.clone(), "/gemini/v1beta/models").await,
            "models",
            "name"
        ),
        ["models/gemini-2.5-pro"]
    );
    assert_eq!(
        ids(&list(open, "/gemini/v1beta/models").await, "models", "name").len(),
        2
    );
}

/// A spend-limited key may use only endpoints whose cost the gateway can bound and read:
/// batches, background responses, fine-tuning jobs and long-running operations are billed by
/// the provider after an answer without usage, in any spelling (403 `model_not_priced`); a
/// key without a limit forwards them, and a capped key still reads a model's description.
#[tokio::test]
async fn requests_billed_later_are_refused_on_spend_limited_keys() {
    let (gateway, mock) = gateway_with_mock("").await;
    let admin = gateway.admin();
    let base = gateway.proxy_url();
    let (_, capped, _) = admin
        .create_key(json!({"name": "capped", "spend_limit_usd": 5}))
        .await;
    let (_, open, _) = admin.create_key(json!({"name": "open"})).await;
    let background = json!({"model": "gpt-4o", "input": "hi", "background": true});
    let batch = json!({"batch": {"input_config": {}}});
    let cases = [
        ("/openai/v1/responses", background.clone()),
        (
            "/openai/v1/responses",
            json!({"model": "gpt-4o", "input": "hi", "background": "true"}),
        ),
        (
            "/openai/v1/fine_tuning/jobs",
            json!({"model": "gpt-4o-mini", "training_file": "file-abc"}),
        ),
        (
            "/openai/v1/batches",
            json!({"model": "gpt-4o", "input_file_id": "file-abc", "endpoint": "/v1/chat/completions"}),
        ),
        (
            "/anthropic/v1/messages/batches",
            json!({"model": "claude-sonnet-4-5", "requests": []}),
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:batchGenerateContent",
            batch.clone(),
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:BatchGenerateContent",
            batch.clone(),
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:predictLongRunning",
            json!({}),
        ),
    ];
    for (path, body) in cases {
        let request = reqwest::Client::new()
            .post(format!("{base}{path}"))
            .header("x-goog-api-key", &capped)
            .header("x-api-key", &capped)
            .bearer_auth(&capped)
            .json(&body);
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        assert_gateway_error(status, &body, 403, "model_not_priced");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot be bounded")),
            "{path}: {body}"
        );
    }
    assert_eq!(mock.hits(), 0);
    let bearer = format!("Bearer {open}");
    let (status, _, _) = authorized(&base, "/openai/v1/responses", Some(&bearer), background).await;
    assert_ne!(status, 403, "a key without a limit forwards it");
    assert_eq!(mock.hits(), 1);
    let described = reqwest::Client::new()
        .get(format!("{base}/openai/v1/models/gpt-4o"))
        .bearer_auth(&capped)
        .send()
        .await
        .expect("request");
    assert_ne!(described.status(), 403, "a model's description is free");
}
