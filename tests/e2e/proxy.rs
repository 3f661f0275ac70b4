//! The data plane's checks, in SPEC §3 order, and what reaches the provider (a key's own
//! rules in `proxy_key_rules`).

use gateway_tests::gateway::provider_key;
use gateway_tests::in_process::InProcessGateway;
use gateway_tests::{Gateway, GatewayOptions, MockProvider};
use serde_json::{Value, json};

pub(crate) async fn gateway_with_mock(proxy_config: &str) -> (Gateway, MockProvider) {
    Gateway::with_mock(proxy_config, "").await
}

pub(crate) fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// (status, body as JSON, headers) of an OpenAI chat request with `key`.
pub(crate) async fn openai(
    base: &str,
    key: Option<&str>,
    body: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let authorization = key.map(|key| format!("Bearer {key}"));
    authorized(
        base,
        "/openai/v1/chat/completions",
        authorization.as_deref(),
        body,
    )
    .await
}

/// (status, body as JSON, headers) of a POST to `path` with this `Authorization` header.
pub(crate) async fn authorized(
    base: &str,
    path: &str,
    authorization: Option<&str>,
    body: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

#[track_caller]
pub(crate) fn assert_gateway_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    gateway_tests::admin::assert_error_shape(body);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (expected_status, Some(code)),
        "{body}"
    );
}

#[tokio::test]
async fn every_check_answers_in_spec_order_and_refusals_never_reach_the_provider() {
    let (gateway, mock) = gateway_with_mock("").await;
    let admin = gateway.admin();
    let base = gateway.proxy_url();
    let (_, good, _) = admin.create_key(json!({"name": "good"})).await;
    let (revoked_id, revoked, _) = admin.create_key(json!({"name": "revoked"})).await;
    admin.delete(&format!("/v1/keys/{revoked_id}")).await;
    let (_, far_away, _) = admin
        .create_key(json!({"name": "ip", "allowed_ips": ["10.0.0.0/8"]}))
        .await;
    let (_, anthropic_only, _) = admin
        .create_key(json!({"name": "p", "allowed_providers": ["anthropic"]}))
        .await;
    let (_, gpt4o_only, _) = admin
        .create_key(json!({"name": "m", "allowed_models": ["gpt-4o*"]}))
        .await;
    // A revoked key that is also restricted: revoked answers first.
    let (both_id, both, _) = admin
        .create_key(json!({"name": "both", "allowed_ips": ["10.0.0.0/8"], "allowed_models": ["x"]}))
        .await;
    admin.delete(&format!("/v1/keys/{both_id}")).await;

    let mut bad_checksum = good.clone();
    let last = bad_checksum.pop().expect("char");
    bad_checksum.push(if last == 'a' { 'b' } else { 'a' });
    // Well formed with a valid checksum, but never issued by this gateway.
    let never_issued = gateway_shared::ProxyKey::generate().expect("rng");
    let unknown = never_issued.expose().to_owned();

    let cases: Vec<(Option<&str>, Value, u16, &str)> = vec![
        (None, chat("gpt-4o"), 401, "missing_key"),
        (Some("not-a-key"), chat("gpt-4o"), 401, "invalid_key"),
        (Some(&bad_checksum), chat("gpt-4o"), 401, "invalid_key"),
        (Some(&unknown), chat("gpt-4o"), 401, "invalid_key"),
        (Some(&revoked), chat("gpt-4o"), 403, "key_revoked"),
        (Some(&both), chat("gpt-4o"), 403, "key_revoked"),
        (Some(&far_away), chat("gpt-4o"), 403, "ip_not_allowed"),
        (
            Some(&anthropic_only),
            chat("gpt-4o"),
            403,
            "provider_not_allowed",
        ),
        (Some(&gpt4o_only), chat("o3-mini"), 403, "model_not_allowed"),
        (
            Some(&gpt4o_only),
            json!({"messages": []}),
            403,
            "model_not_allowed",
        ),
    ];
    for (key, body, status, code) in cases {
        let (got_status, got_body, _) = openai(&base, key, body).await;
        assert_gateway_error(got_status, &got_body, status, code);
    }
    // "Revoked keys return 403 key_revoked on any request": a path that is no route too.
    let bearer = format!("Bearer {revoked}");
    let (status, body, _) = authorized(&base, "/azure/deployments", Some(&bearer), json!({})).await;
    assert_gateway_error(status, &body, 403, "key_revoked");
    let bearer = format!("Bearer {good}");
    let (status, body, _) = authorized(&base, "/azure/deployments", Some(&bearer), json!({})).await;
    assert_gateway_error(status, &body, 404, "unknown_route");
    assert_eq!(mock.hits(), 0, "no refused request reached the provider");

    let (status, body, _) = openai(&base, Some(&gpt4o_only), chat("gpt-4o-mini")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = openai(&base, Some(&good), chat("o3-mini")).await;
    assert_eq!(status, 200);
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn the_bearer_scheme_is_read_in_any_case() {
    let (gateway, mock) = gateway_with_mock("").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "k"})).await;
    let base = gateway.proxy_url();
    let anthropic = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []});
    for scheme in ["BEARER", "bearer", "Bearer", "bEaReR"] {
        let with_scheme = format!("{scheme}  {key}");
        let (status, body, _) = authorized(
            &base,
            "/openai/v1/chat/completions",
            Some(&with_scheme),
            chat("gpt-4o"),
        )
        .await;
        assert_eq!(status, 200, "{scheme}: {body}");
        let (status, body, _) = authorized(
            &base,
            "/anthropic/v1/messages",
            Some(&with_scheme),
            anthropic.clone(),
        )
        .await;
        assert_eq!(status, 200, "{scheme} on anthropic: {body}");
    }
    assert_eq!(mock.hits(), 8);
    // Two credentials in one header are not a key.
    let (status, body, _) = authorized(
        &base,
        "/openai/v1/chat/completions",
        Some(&format!("BEARER {key}, Bearer {key}")),
        chat("gpt-4o"),
    )
    .await;
    assert_gateway_error(status, &body, 401, "invalid_key");
    assert_eq!(mock.hits(), 8);
}

#[tokio::test]
async fn malformed_requests_and_unknown_routes() {
    let (gateway, mock) = gateway_with_mock("max_body_bytes = 2048").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "k"})).await;
    let base = gateway.proxy_url();
    let client = reqwest::Client::new();

    let not_json = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{this is not json")
        .send()
        .await
        .expect("request");
    let status = not_json.status().as_u16();
    assert_gateway_error(
        status,
        &not_json.json().await.expect("json"),
        400,
        "invalid_request",
    );

    let unknown = client
        .get(format!("{base}/azure/deployments"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("request");
    let status = unknown.status().as_u16();
    assert_gateway_error(
        status,
        &unknown.json().await.expect("json"),
        404,
        "unknown_route",
    );

    let big = "x".repeat(4096);
    let declared = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o", "pad": big}))
        .send()
        .await
        .expect("request");
    let status = declared.status().as_u16();
    assert_gateway_error(
        status,
        &declared.json().await.expect("json"),
        413,
        "body_too_large",
    );

    // Chunked, without Content-Length: judged while reading.
    let chat = format!("{base}/v1/chat/completions");
    let spaces = vec![b' '; 1024];
    let chunked = post_chunked(&client, &chat, &key, &[spaces.as_slice(); 8]).await;
    let status = chunked.status().as_u16();
    assert_gateway_error(
        status,
        &chunked.json().await.expect("json"),
        413,
        "body_too_large",
    );
    assert_eq!(mock.hits(), 0);

    // Chunked within the limit: the pieces reach the provider joined, byte for byte.
    let pieces = [
        r#"{"model": "gpt-4o", "#,
        r#""messages": [{"role": "user", "#,
        r#""content": "split across frames"}]}"#,
    ];
    let pieces = pieces.map(str::as_bytes);
    // A fresh client: the connection of the 413 above is closed by the gateway, and a pooled
    // client could pick it for this request.
    let joined = post_chunked(&reqwest::Client::new(), &chat, &key, &pieces).await;
    assert_eq!(joined.status().as_u16(), 200);
    assert_eq!(mock.hits(), 1);
    assert_eq!(mock.last().body, pieces.concat());
}

/// POSTs a JSON body as chunked transfer encoding, one chunk per piece, no Content-Length.
async fn post_chunked(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    pieces: &[&[u8]],
) -> reqwest::Response {
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = pieces
        .iter()
        .map(|piece| Ok(bytes::Bytes::copy_from_slice(piece)))
        .collect();
    client
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_stream(chunks)))
        .send()
        .await
        .expect("request")
}

fn futures_stream<T: Send + Unpin + 'static>(
    items: Vec<T>,
) -> impl futures_core::Stream<Item = T> + Send + 'static {
    gateway_tests::mock::IterStream(items.into_iter())
}

#[tokio::test]
async fn an_expired_key_is_refused_from_its_instant() {
    let mock = MockProvider::start().await;
    let now: jiff::Timestamp = "2026-11-26T12:00:00Z".parse().expect("ts");
    let gateway = InProcessGateway::start_with(now, Some(&mock)).await;
    let (_, key, _) = gateway
        .admin
        .create_key(json!({"name": "t", "expires_at": "2026-11-26T13:00:00Z"}))
        .await;
    let (status, _, _) = openai(&gateway.proxy_url, Some(&key), chat("gpt-4o")).await;
    assert_eq!(status, 200);
    gateway
        .clock
        .set("2026-11-26T13:00:00Z".parse().expect("ts"));
    let (status, body, _) = openai(&gateway.proxy_url, Some(&key), chat("gpt-4o")).await;
    assert_gateway_error(status, &body, 403, "key_expired");
    assert_eq!(mock.hits(), 1);
    gateway.stop().await;
}

#[tokio::test]
async fn the_provider_sees_its_own_credential_and_the_request_as_sent() {
    let (gateway, mock) = gateway_with_mock("").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "k"})).await;
    let base = gateway.proxy_url();
    let client = reqwest::Client::new();

    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5});
    let response = client
        .post(format!("{base}/openai/v1/chat/completions?trace=1"))
        .bearer_auth(&key)
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "hop")
        .header("proxy-authorization", "Basic abc")
        .header("openai-organization", "org-123")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let seen = mock.last();
    assert_eq!(seen.uri, "/openai/v1/chat/completions?trace=1");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", provider_key("openai")).as_str())
    );
    assert_eq!(seen.header("openai-organization"), Some("org-123"));
    assert!(seen.header("x-hop-secret").is_none() && seen.header("proxy-authorization").is_none());
    assert_eq!(seen.json(), body, "the body is forwarded as sent");

    let anthropic = client
        .post(format!("{base}/anthropic/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []}))
        .send()
        .await
        .expect("request");
    assert_eq!(anthropic.status(), 200);
    let seen = mock.last();
    assert_eq!(seen.header("x-api-key"), Some(provider_key("anthropic")));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert!(seen.header("authorization").is_none());

    let gemini = client
        .post(format!(
            "{base}/gemini/v1beta/models/gemini-2.0-flash:generateContent?key={key}&fields=x"
        ))
        .json(&json!({"contents": []}))
        .send()
        .await
        .expect("request");
    assert_eq!(gemini.status(), 200);
    let seen = mock.last();
    assert_eq!(
        seen.uri,
        "/gemini/v1beta/models/gemini-2.0-flash:generateContent?fields=x"
    );
    assert_eq!(seen.header("x-goog-api-key"), Some(provider_key("gemini")));

    for request in mock.received() {
        assert!(
            !request.uri.contains(&key[9..]),
            "proxy key in a provider URI"
        );
        for (name, value) in &request.headers {
            assert!(
                !value
                    .as_bytes()
                    .windows(20)
                    .any(|w| w == &key.as_bytes()[9..29]),
                "proxy key in {name}"
            );
        }
    }
}

#[tokio::test]
async fn provider_errors_pass_through_untouched() {
    let (gateway, mock) = gateway_with_mock("").await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "k"})).await;
    for (status, path, auth) in [
        (500, "/openai/v1/chat/completions", "authorization"),
        (429, "/anthropic/v1/messages", "x-api-key"),
        (
            503,
            "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
            "x-goog-api-key",
        ),
    ] {
        let value = if auth == "authorization" {
            format!("Bearer {key}")
        } else {
            key.clone()
        };
        let response = reqwest::Client::new()
            .post(format!("{}{path}", gateway.proxy_url()))
            .header(auth, value)
            .header("x-mock-status", status.to_string())
            .json(&chat("gpt-4o"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.headers().get("x-mock-error").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body: Value = response.json().await.expect("json");
        assert_ne!(
            body["error"]["type"], "gateway_error",
            "the provider's own body: {body}"
        );
        assert!(body.to_string().contains("mock provider failure"));
    }
    assert_eq!(mock.hits(), 3);
}

#[tokio::test]
async fn unreachable_and_silent_providers() {
    // A port nothing listens on: bind one, learn it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mock = MockProvider::start().await;
    let gateway = Gateway::start_with(GatewayOptions {
        proxy_config: "upstream_idle_timeout = \"400ms\"\nupstream_connect_timeout = \"2s\"".into(),
        extra_config: format!(
            "[providers.openai]\nbase_url = \"http://{closed}\"\napi_key_env = \"GW_TEST_OPENAI_KEY\"\n\
             [providers.anthropic]\nbase_url = {:?}\napi_key_env = \"GW_TEST_ANTHROPIC_KEY\"\n",
            mock.base_url("anthropic")
        ),
        ..Default::default()
    })
    .await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "k"})).await;
    let (status, body, _) = openai(&gateway.proxy_url(), Some(&key), chat("gpt-4o")).await;
    assert_gateway_error(status, &body, 502, "upstream_unreachable");

    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/anthropic/v1/messages", gateway.proxy_url()))
        .header("x-api-key", &key)
        .header("x-mock-headers-delay-ms", "3000")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    assert_gateway_error(
        status,
        &response.json().await.expect("json"),
        504,
        "upstream_timeout",
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "answered at the idle limit"
    );
}
