//! What an outside adversarial pass found on the data plane (issue #20, points 1–4): a body
//! the gateway could not rewrite (a 500 that charged a request that never left), proxy keys
//! forwarded from places the gateway does not read them, control characters in names, globs
//! and models, and providers that report more output than a request allowed. Ends with the
//! property that ties them together: whatever fails where, a key's spend is its settled usage
//! plus its open holds.

use std::time::{Duration, Instant};

use gateway_tests::requests::{BUDGET_PRICES, chat, self_view};
use gateway_tests::{Gateway, GatewayOptions, MockProvider};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// A chat body whose messages nest `depth` arrays deep (serde_json's tree parse stops at 128).
fn deep_chat(depth: usize) -> (String, String) {
    let deep = format!("{}\"hi\"{}", "[".repeat(depth), "]".repeat(depth));
    let body =
        format!(r#"{{"model":"budget-model","messages":[{{"role":"user","content":{deep}}}]}}"#);
    (body, deep)
}

/// `POST url` with `key` where the OpenAI and Gemini SDKs put it, `body` as JSON.
pub async fn post(url: String, key: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .header("x-goog-api-key", key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request to the proxy")
}

/// Waits until the key has no request in flight, then checks that its spend equals the sum
/// of its usage rows in the database (the writer commits in batches: waited for) and that no
/// hold is left open.
async fn assert_spend_is_usage(gateway: &Gateway, id: &str, key: &str) -> Result<(), String> {
    let base = gateway.proxy_url();
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let view = self_view(&base, key).await;
        if view["requests_in_flight"] == 0 {
            break view;
        }
        if Instant::now() > deadline {
            return Err(format!("requests still in flight: {view}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if view["reserved_usd"] != 0.0 {
        return Err(format!("a hold is open with nothing in flight: {view}"));
    }
    let spend = nanos(&view["spend_period_usd"]);
    loop {
        let usage = usage_cost_nanos(gateway, id);
        if usage == spend {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "spend {spend} n$ but the usage rows sum to {usage} n$: {view}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nanos(dollars: &Value) -> i64 {
    let dollars = dollars
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {dollars}"));
    #[expect(clippy::cast_possible_truncation, reason = "test amounts are small")]
    let nanos = (dollars * 1e9).round() as i64;
    nanos
}

fn usage_cost_nanos(gateway: &Gateway, key_id: &str) -> i64 {
    database(gateway)
        .query_row(
            "SELECT COALESCE(SUM(cost_nanos), 0) FROM usage WHERE key_id = ?1",
            [key_id],
            |row| row.get(0),
        )
        .expect("sum usage")
}

fn database(gateway: &Gateway) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        gateway.data_dir.join("gateway.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open database")
}

/// (1) A body nested past serde_json's recursion limit on a key whose request must be clamped:
/// it was a 500 `internal_error` that charged the key almost all its budget with no usage row.
/// Now the clamp is written into the body as sent, at any depth, and forwarded.
#[tokio::test]
async fn a_deeply_nested_body_is_clamped_and_forwarded_not_charged_for_nothing() {
    let (gateway, mock) = Gateway::with_mock("", BUDGET_PRICES).await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "deep", "spend_limit_usd": 1.0}))
        .await;
    let base = gateway.proxy_url();
    let (body, deep) = deep_chat(3_000);
    // Without max_tokens the worst case is 100,000 tokens ($10): clamped to $1's 10,000.
    let response = post(format!("{base}/v1/chat/completions"), &key, body).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(response.headers()["x-gateway-output-clamped"], "10000");
    let _ = response.bytes().await;
    let sent = String::from_utf8(mock.last().body.to_vec()).expect("utf-8");
    assert!(
        sent.contains(&deep),
        "the nested content reaches the provider as sent"
    );
    let sent: Value = serde_json::from_str(&sent.replace(&deep, "0")).expect("JSON");
    assert_eq!(sent["max_completion_tokens"], 10000, "{sent}");

    // Gemini alike, its limit inside generationConfig.
    let gemini = format!(
        r#"{{"contents":[{{"parts":[{{"text":{deep}}}]}}],"generationConfig":{{"temperature":0.5}}}}"#
    );
    let response = post(
        format!("{base}/gemini/v1beta/models/budget-model:generateContent"),
        &key,
        gemini,
    )
    .await;
    assert_eq!(response.status(), 200);
    let clamp: u64 = response.headers()["x-gateway-output-clamped"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number");
    let _ = response.bytes().await;
    let sent = String::from_utf8(mock.last().body.to_vec()).expect("utf-8");
    let sent: Value = serde_json::from_str(&sent.replace(&deep, "0")).expect("JSON");
    assert_eq!(
        sent["generationConfig"],
        json!({"temperature": 0.5, "maxOutputTokens": clamp}),
        "the client's own setting kept, the limit added"
    );
    assert_spend_is_usage(&gateway, &id, &key)
        .await
        .expect("spend equals usage");
}

/// (2) A proxy key where the gateway does not read it is refused before anything is
/// forwarded or recorded: in the query, in the path, as the model. The usage table is also
/// scanned for keys when the gateway is dropped.
#[tokio::test]
async fn a_proxy_key_in_the_query_path_or_model_never_leaves_nor_is_stored() {
    let (gateway, mock) = Gateway::with_mock("", "").await;
    let (id, key, _) = gateway.admin().create_key(json!({"name": "paste"})).await;
    let base = gateway.proxy_url();
    let chat_body = json!({"model": "gpt-4o", "messages": []}).to_string();
    let encoded = format!("%73k-proxy-{}", &key["sk-proxy-".len()..]);
    for url in [
        format!("{base}/v1/chat/completions?api_key={key}"),
        format!("{base}/v1/chat/completions?x=1&token={encoded}"),
        format!("{base}/openai/{key}/v1/chat/completions"),
        format!("{base}/anthropic/v1/{encoded}/messages"),
        format!("{base}/gemini/v1beta/models/{key}:generateContent"),
    ] {
        let response = post(url.clone(), &key, chat_body.clone()).await;
        assert_eq!(response.status(), 400, "{url}");
        let error: Value = response.json().await.expect("JSON error");
        assert_eq!(error["error"]["code"], "invalid_request", "{url}");
        let message = error["error"]["message"].as_str().expect("message");
        assert!(message.contains(&key[..13]), "says which key: {message}");
        assert!(
            !message.contains(&key[13..]),
            "cut to its prefix: {message}"
        );
    }
    let as_model = chat(&base, &key, json!({"model": key, "messages": []}), &[]).await;
    assert_eq!(as_model.status(), 400);
    assert_eq!(mock.hits(), 0, "nothing reached the provider");

    // The key still works where it belongs, and nothing of it was stored.
    let ok = chat(&base, &key, json!({"model": "gpt-4o", "messages": []}), &[]).await;
    assert_eq!(ok.status(), 200);
    let _ = ok.bytes().await;
    let models: Vec<String> = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let db = database(&gateway);
            let mut statement = db
                .prepare("SELECT model FROM usage WHERE key_id = ?1")
                .expect("prepare");
            let models: Vec<String> = statement
                .query_map([&id], |row| row.get(0))
                .expect("query")
                .map(|row| row.expect("row"))
                .collect();
            if !models.is_empty() || Instant::now() > deadline {
                break models;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(
        models,
        ["gpt-4o"],
        "one usage row, the request that was forwarded"
    );
}

/// (3) Control characters: refused in globs by the management API, and in a model by the
/// proxy (it was priced as the model without them and forwarded on an unrestricted key).
#[tokio::test]
async fn control_characters_are_refused_in_globs_names_and_models() {
    let (gateway, mock) = Gateway::with_mock("", "").await;
    let admin = gateway.admin();
    for body in [
        json!({"name": "nul", "allowed_models": ["\u{0}"]}),
        json!({"name": "title", "allowed_models": ["gpt-4o\u{1b}]0;owned\u{7}"]}),
        json!({"name": "tab\tname"}),
    ] {
        let response = admin.post("/v1/keys", body.clone()).await;
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.error_code(), "invalid_argument", "{body}");
    }
    let (id, key, _) = admin.create_key(json!({"name": "open"})).await;
    let patched = admin
        .patch(
            &format!("/v1/keys/{id}"),
            json!({"allowed_models": ["gpt-\u{7f}"]}),
        )
        .await;
    assert_eq!(patched.status, 400);
    let base = gateway.proxy_url();
    for model in ["gpt-4o-mini\u{0}", "gpt-4o\u{1b}[2J", "gpt-4o\u{9b}"] {
        let response = chat(&base, &key, json!({"model": model, "messages": []}), &[]).await;
        assert_eq!(response.status(), 400, "{model:?}");
        let error: Value = response.json().await.expect("JSON error");
        assert_eq!(error["error"]["code"], "invalid_request");
    }
    assert_eq!(mock.hits(), 0);
}

/// (4) A provider that reports more output than the request allowed is billed as reported,
/// and it is said: the usage row is marked, a warning names the provider and model (never
/// the key), a metric counts it.
#[tokio::test]
async fn output_reported_past_what_the_request_allowed_is_billed_marked_and_warned() {
    let (gateway, _mock) = Gateway::with_mock("", BUDGET_PRICES).await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "over", "spend_limit_usd": 0.01}))
        .await;
    let base = gateway.proxy_url();
    let response = chat(
        &base,
        &key,
        json!({"model": "budget-model", "max_tokens": 10, "messages": []}),
        &[("x-mock-output-tokens", "6000")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await;
    assert_spend_is_usage(&gateway, &id, &key)
        .await
        .expect("billed as reported");
    let view = self_view(&base, &key).await;
    assert_eq!(
        view["spend_period_usd"], 0.6,
        "$0.60 on a $0.01 cap: {view}"
    );
    let marked: i64 = database(&gateway)
        .query_row(
            "SELECT over_allowed FROM usage WHERE key_id = ?1",
            [&id],
            |row| row.get(0),
        )
        .expect("the usage row");
    assert_eq!(marked, 1);
    let metrics = gateway.admin().send("GET", "/metrics", None).await;
    let text = metrics.body.as_str().expect("Prometheus text").to_owned();
    let line = text
        .lines()
        .find(|l| l.contains("usage_over_allowed") && l.contains("openai"))
        .unwrap_or_else(|| panic!("no usage_over_allowed series:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");
    let logs = gateway.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("more output than the request allowed"))
        .unwrap_or_else(|| panic!("no warning:\n{logs}"));
    assert!(
        warning.contains("openai") && warning.contains("budget-model"),
        "{warning}"
    );
    assert!(
        !warning.contains(&key[9..13]) && !warning.contains(&id),
        "{warning}"
    );
    // The next request is refused: the key is past its cap.
    let next = chat(
        &base,
        &key,
        json!({"model": "budget-model", "max_tokens": 10, "messages": []}),
        &[],
    )
    .await;
    assert_eq!(next.status(), 402);
}

/// Where a request can end, in pipeline order.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// 400 before admission: the body is not JSON.
    NotJson,
    /// 403: a model the key may not use.
    ModelNotAllowed,
    /// 400 before admission: the key pasted into the query.
    KeyInQuery,
    /// 402: asks for more answers than the budget could pay.
    SpendRefused,
    /// Admitted, clamped, rewritten at a depth a tree parse refuses, forwarded.
    DeepClamped,
    /// The provider answers an error.
    ProviderError,
    /// The provider never sends its headers: 504, billed the input estimate.
    NoHeaders,
    /// The client leaves mid-stream (checked while the hold is open).
    ClientGone,
    /// The stream stalls: cut by the idle timeout, estimated.
    Stalled,
    /// A complete stream, usage reported.
    Streamed,
    /// A complete JSON answer.
    Answered,
    /// The provider reports more output than allowed.
    OverReported,
}

const ENDINGS: [Ending; 12] = [
    Ending::NotJson,
    Ending::ModelNotAllowed,
    Ending::KeyInQuery,
    Ending::SpendRefused,
    Ending::DeepClamped,
    Ending::ProviderError,
    Ending::NoHeaders,
    Ending::ClientGone,
    Ending::Stalled,
    Ending::Streamed,
    Ending::Answered,
    Ending::OverReported,
];

async fn end_as(gateway: &Gateway, id: &str, key: &str, ending: Ending) -> Result<(), String> {
    let base = gateway.proxy_url();
    let url = format!("{base}/v1/chat/completions");
    let chat_of = |body: Value| body.to_string();
    let plain = json!({"model": "budget-model", "max_tokens": 50, "messages": []});
    let streaming =
        json!({"model": "budget-model", "max_tokens": 50, "stream": true, "messages": []});
    let with = |body: String, headers: &[(&'static str, &'static str)]| {
        let mut request = reqwest::Client::new()
            .post(url.clone())
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let response = match ending {
        Ending::NotJson => with("{not json".to_owned(), &[]).await,
        Ending::ModelNotAllowed => with(chat_of(json!({"model": "gpt-4o"})), &[]).await,
        Ending::KeyInQuery => {
            reqwest::Client::new()
                .post(format!("{url}?api_key={key}"))
                .bearer_auth(key)
                .json(&plain)
                .send()
                .await
        }
        Ending::SpendRefused => {
            let body = json!({"model": "budget-model", "n": 100_000, "messages": []});
            with(chat_of(body), &[]).await
        }
        Ending::DeepClamped => with(deep_chat(1_000).0, &[]).await,
        Ending::ProviderError => with(chat_of(plain), &[("x-mock-status", "500")]).await,
        Ending::NoHeaders => with(chat_of(plain), &[("x-mock-headers-delay-ms", "1000")]).await,
        Ending::ClientGone => {
            let headers = [("x-mock-events", "40"), ("x-mock-delay-ms", "5")];
            let mut response = with(chat_of(streaming), &headers)
                .await
                .map_err(|e| e.to_string())?;
            let _ = response.chunk().await;
            // A hold is open now: spend is still exactly the settled usage.
            let view = self_view(&base, key).await;
            let usage = usage_cost_nanos(gateway, id);
            if view["requests_in_flight"] == 1 && nanos(&view["reserved_usd"]) <= 0 {
                return Err(format!("a request in flight holds nothing: {view}"));
            }
            if nanos(&view["spend_period_usd"]) < usage {
                return Err(format!("usage rows exceed the spend: {view} vs {usage}"));
            }
            drop(response);
            return Ok(());
        }
        Ending::Stalled => with(chat_of(streaming), &[("x-mock-stall", "1")]).await,
        Ending::Streamed => with(chat_of(streaming), &[]).await,
        Ending::Answered => with(chat_of(plain), &[]).await,
        Ending::OverReported => with(chat_of(plain), &[("x-mock-output-tokens", "3000")]).await,
    }
    .map_err(|e| e.to_string())?;
    let status = response.status();
    let _ = tokio::time::timeout(Duration::from_secs(10), response.bytes()).await;
    let expected = match ending {
        Ending::NotJson | Ending::KeyInQuery => Some(400),
        Ending::ModelNotAllowed => Some(403),
        Ending::ProviderError => Some(500),
        Ending::NoHeaders => Some(504),
        // Refused (402) once an over-reported answer has spent the budget.
        _ => None,
    };
    match expected {
        Some(expected) if status.as_u16() != expected => {
            Err(format!("{ending:?} answered {status}, not {expected}"))
        }
        _ if status.as_u16() == 500 && !matches!(ending, Ending::ProviderError) => {
            Err(format!("{ending:?} answered 500"))
        }
        _ => Ok(()),
    }
}

/// The invariant behind every spend guarantee: at every instant a key's spend is the sum of
/// its settled usage plus its open holds. Random sequences of requests, each ending at a
/// different step of the pipeline (refused before admission, refused at the spend step,
/// rewritten, provider error, timeout, client gone, stall, over-reported), and after each
/// one the key's spend equals its usage rows with no hold left open (mid-stream, while the
/// hold is open, the settled part still equals the rows).
#[test]
fn spend_is_settled_usage_plus_open_holds_whatever_fails_where() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let gateway = runtime.block_on(async {
        Gateway::start_with(GatewayOptions {
            mock: Some(MockProvider::start().await),
            extra_config: BUDGET_PRICES.to_owned(),
            proxy_config: "upstream_idle_timeout = \"300ms\"".into(),
            log_filter: "info".into(),
            ..GatewayOptions::default()
        })
        .await
    });
    let mut runner = TestRunner::new(Config {
        cases: 10,
        failure_persistence: None,
        ..Config::default()
    });
    let endings = proptest::collection::vec(proptest::sample::select(ENDINGS.to_vec()), 1..10);
    let result = runner.run(&endings, |endings| {
        runtime.block_on(async {
            let (id, key, _) = gateway
                .admin()
                .create_key(json!({
                    "name": "invariant",
                    "spend_limit_usd": 1.0,
                    "allowed_models": ["budget-model"]
                }))
                .await;
            for ending in endings {
                end_as(&gateway, &id, &key, ending)
                    .await
                    .map_err(TestCaseError::fail)?;
                assert_spend_is_usage(&gateway, &id, &key)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("after {ending:?}: {e}")))?;
            }
            Ok(())
        })
    });
    runtime.block_on(async move { drop(gateway) });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
