//! Configured providers (SPEC §10) through a real gatewayd to the mock: an OpenAI-compatible
//! one without a credential and one with, an Anthropic-compatible one, Azure OpenAI with a
//! deployment map, and a server that never reports usage. Each is checked in SPEC §3 order
//! (allowed_providers, globs on the mapped model), priced (a `[[prices]]` entry naming the
//! provider, 0 included), capped (402), metered (usage rows as stored, `estimated` where no
//! usage came); and a provider removed from the config leaves its keys working elsewhere.
//! The official SDKs against these routes are in `sdk`.

use std::time::{Duration, Instant};

use gateway_tests::mock::{COMPLETION_TOKENS, PROMPT_TOKENS};
use gateway_tests::requests::{BUDGET_PRICES, chat};
use gateway_tests::{Gateway, GatewayOptions, MockProvider};
use serde_json::{Value, json};

use crate::sdk::{Language, World, holds_secret, run_checks};

/// The configured providers' credentials, as the mock must see them.
pub const GROQ_SECRET: &str = "gsk-upstream-groq-Hq3Vn8LxT2mW5rZk";
pub const CLAUDE_SECRET: &str = "sk-ant-upstream-proxy-Pz4Ks7Nd1Qb9";
pub const AZURE_SECRET: &str = "azure-upstream-Yt6Rw2Jm8Gc3Fv5B";

/// The `[providers.NAME]` sections (and prices) for `mock`, credentials in files under `dir`.
pub fn providers_config(mock: &MockProvider, dir: &std::path::Path) -> String {
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, value).expect("secret file");
        path.display().to_string()
    };
    format!(
        r#"
[providers.local-llama]
kind = "openai"
base_url = {local:?}

[providers.groq]
kind = "openai"
base_url = {local:?}
api_key_file = {groq:?}

[providers.claude-proxy]
kind = "anthropic"
base_url = {claude:?}
api_key_file = {claude_key:?}

[providers.azure]
kind = "azure-openai"
base_url = {azure:?}
api_key_file = {azure_key:?}
api_version = "2024-10-21"
deployments = {{ prod-4o = "gpt-4o", prod-mini = "gpt-4o-mini", budget = "budget-model" }}

[providers.selfhosted]
kind = "openai"
base_url = {nousage:?}

[[prices]]
model = "llama-*"
provider = "local-llama"
input = 0
output = 0
max_output_tokens = 8192
{BUDGET_PRICES}
"#,
        local = mock.base_url("compat"),
        claude = mock.base_url("claude"),
        azure = mock.base_url("azure"),
        nousage = mock.base_url("nousage"),
        groq = secret("groq", GROQ_SECRET),
        claude_key = secret("claude", CLAUDE_SECRET),
        azure_key = secret("azure", AZURE_SECRET),
    )
}

pub async fn gateway_with_providers() -> (Gateway, MockProvider, tempfile::TempDir) {
    let mock = MockProvider::start().await;
    let secrets = tempfile::tempdir().expect("secrets dir");
    let gateway = Gateway::start_with(GatewayOptions {
        mock: Some(mock.clone()),
        extra_config: providers_config(&mock, secrets.path()),
        ..Default::default()
    })
    .await;
    (gateway, mock, secrets)
}

#[derive(Clone, Debug)]
struct Row {
    provider: String,
    model: String,
    status: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_nanos: i64,
    source: String,
}

/// The key's usage rows, once there are `count` (the writer commits in batches).
async fn rows(gateway: &Gateway, key_id: &str, count: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let conn = rusqlite::Connection::open_with_flags(
            gateway.data_dir.join("gateway.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open database");
        let mut statement = conn
            .prepare(
                "SELECT provider, model, status, input_tokens, output_tokens, cost_nanos, source \
                 FROM usage WHERE key_id = ?1 ORDER BY id",
            )
            .expect("prepare");
        let rows: Vec<Row> = statement
            .query_map([key_id], |row| {
                Ok(Row {
                    provider: row.get(0)?,
                    model: row.get(1)?,
                    status: row.get(2)?,
                    input_tokens: row.get(3)?,
                    output_tokens: row.get(4)?,
                    cost_nanos: row.get(5)?,
                    source: row.get(6)?,
                })
            })
            .expect("query")
            .map(|r| r.expect("row"))
            .collect();
        if rows.len() >= count {
            return rows;
        }
        assert!(Instant::now() < deadline, "{rows:?}: fewer than {count}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json error");
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// An Azure OpenAI call as the `AzureOpenAI` SDK makes it: the key in `api-key`.
async fn azure_chat(
    base: &str,
    key: &str,
    deployment: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!(
            "{base}/azure/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21"
        ))
        .header("api-key", key)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}]})
}

#[tokio::test]
async fn configured_providers_are_routed_checked_and_metered_in_their_wire_format() {
    let (gateway, mock, _secrets) = gateway_with_providers().await;
    let base = gateway.proxy_url();
    let admin = gateway.admin();

    // gwctl's way to learn the names: built-in first, then configured by name.
    let listed = admin.get("/v1/providers").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let names: Vec<(&str, &str)> = listed.body["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or(""),
                p["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("openai", "openai"),
            ("anthropic", "anthropic"),
            ("gemini", "gemini"),
            ("azure", "azure-openai"),
            ("claude-proxy", "anthropic"),
            ("groq", "openai"),
            ("local-llama", "openai"),
            ("selfhosted", "openai"),
        ]
    );

    // An unknown name is 400 invalid_argument listing the configured ones, on create and edit.
    let refused = admin
        .post(
            "/v1/keys",
            json!({"name": "x", "allowed_providers": ["nowhere"]}),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.error_code(), "invalid_argument");
    let message = refused.error_message();
    assert!(
        message.contains("nowhere") && message.contains("local-llama, selfhosted"),
        "{message}"
    );

    // gwctl takes a configured name, and shows the daemon's refusal of an unknown one.
    let created = gateway
        .gwctl(&[
            "-o",
            "json",
            "keys",
            "create",
            "--name",
            "g",
            "--providers",
            "local-llama,azure",
        ])
        .await;
    assert_eq!(created.code, 0, "{}{}", created.stdout, created.stderr);
    assert_eq!(
        created.json()["allowed_providers"],
        json!(["azure", "local-llama"])
    );
    let refused = gateway
        .gwctl(&["keys", "create", "--name", "g", "--providers", "nowhere"])
        .await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("nowhere") && refused.stderr.contains("local-llama"),
        "{}",
        refused.stderr
    );

    let (local_id, local_key, _) = admin
        .create_key(json!({"name": "local", "allowed_providers": ["local-llama"]}))
        .await;
    let edit = admin
        .patch(
            &format!("/v1/keys/{local_id}"),
            json!({"allowed_providers": ["local-llama", "nowhere"]}),
        )
        .await;
    assert_eq!(edit.status, 400, "{}", edit.body);
    assert_eq!(edit.error_code(), "invalid_argument");

    // A configured OpenAI-compatible server without a credential: nothing in its place.
    let response = chat(
        &format!("{base}/local-llama"),
        &local_key,
        hello("llama-3.1-8b"),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    let seen = mock.last();
    assert_eq!(seen.uri, "/compat/v1/chat/completions");
    assert!(
        seen.header("authorization").is_none(),
        "no credential configured"
    );
    // The key is for local-llama only: another provider is refused before anything is read.
    for path in ["/groq", "/openai", ""] {
        let response = chat(&format!("{base}{path}"), &local_key, hello("gpt-4o"), &[]).await;
        assert_eq!(
            error_code(response).await,
            (403, "provider_not_allowed".into()),
            "{path}"
        );
    }

    // With a credential: its own, in OpenAI's header.
    let (groq_id, groq_key, _) = admin
        .create_key(
            json!({"name": "groq", "allowed_providers": ["groq"], "allowed_models": ["llama-*"]}),
        )
        .await;
    let response = chat(
        &format!("{base}/groq"),
        &groq_key,
        hello("llama-3.3-70b"),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        mock.last().header("authorization"),
        Some(format!("Bearer {GROQ_SECRET}").as_str())
    );
    let response = chat(&format!("{base}/groq"), &groq_key, hello("gpt-4o"), &[]).await;
    assert_eq!(
        error_code(response).await,
        (403, "model_not_allowed".into())
    );

    // Anthropic-compatible: its credential in x-api-key, usage read in Anthropic's format.
    let (claude_id, claude_key, _) = admin
        .create_key(json!({"name": "claude", "allowed_providers": ["claude-proxy"]}))
        .await;
    let response = reqwest::Client::new()
        .post(format!("{base}/claude-proxy/v1/messages"))
        .header("x-api-key", &claude_key)
        .json(
            &json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("stream");
    assert!(text.contains("message_delta"), "{text}");
    let seen = mock.last();
    assert_eq!(seen.header("x-api-key"), Some(CLAUDE_SECRET));
    assert!(!String::from_utf8_lossy(&seen.body).contains("sk-proxy-"));

    // The metering, as stored: the provider's name, the model, reported usage; the local
    // model priced 0 is still metered in tokens.
    let local_rows = rows(&gateway, &local_id, 1).await;
    let row = &local_rows[0];
    assert_eq!(
        (row.provider.as_str(), row.model.as_str()),
        ("local-llama", "llama-3.1-8b")
    );
    assert_eq!(
        (row.input_tokens, row.output_tokens),
        (PROMPT_TOKENS as i64, COMPLETION_TOKENS as i64)
    );
    assert_eq!(
        (row.cost_nanos, row.source.as_str()),
        (0, "reported"),
        "{row:?}"
    );
    let groq_rows = rows(&gateway, &groq_id, 1).await;
    assert_eq!(groq_rows[0].provider, "groq");
    let claude_rows = rows(&gateway, &claude_id, 1).await;
    let row = &claude_rows[0];
    assert_eq!(row.provider, "claude-proxy");
    assert_eq!(
        (row.input_tokens, row.output_tokens),
        (PROMPT_TOKENS as i64, COMPLETION_TOKENS as i64)
    );
    assert!(row.cost_nanos > 0 && row.source == "reported", "{row:?}");
    // The configured credentials never reach the (trace-level) log.
    assert_no_configured_secrets(&gateway);
}

/// The harness checks the built-in providers' credentials; these are the configured ones'.
fn assert_no_configured_secrets(gateway: &Gateway) {
    let logs = gateway.logs();
    for secret in [GROQ_SECRET, CLAUDE_SECRET, AZURE_SECRET] {
        assert!(!logs.contains(secret), "a configured credential in the log");
        assert!(
            !logs.contains(&secret[secret.len() - 12..]),
            "part of one in the log"
        );
    }
}

#[tokio::test]
async fn azure_deployments_are_checked_and_priced_as_their_models_and_capped() {
    let (gateway, mock, _secrets) = gateway_with_providers().await;
    let base = gateway.proxy_url();
    let admin = gateway.admin();
    let (id, key, _) = admin
        .create_key(json!({"name": "azure", "allowed_providers": ["azure"], "allowed_models": ["gpt-4o-mini"]}))
        .await;

    // The deployment serves gpt-4o-mini: allowed; the key in api-key, the real one upstream.
    let response = azure_chat(&base, &key, "prod-mini", hello("prod-mini"), &[]).await;
    assert_eq!(response.status(), 200);
    let seen = mock.last();
    assert_eq!(
        seen.uri,
        "/azure/openai/deployments/prod-mini/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.header("api-key"), Some(AZURE_SECRET));
    assert!(seen.header("authorization").is_none());
    // prod-4o serves gpt-4o, which the key's glob does not allow: refused before the mock.
    let hits = mock.hits();
    let response = azure_chat(&base, &key, "prod-4o", hello("prod-4o"), &[]).await;
    assert_eq!(
        error_code(response).await,
        (403, "model_not_allowed".into())
    );
    assert_eq!(
        mock.hits(),
        hits,
        "a refused request never reaches the provider"
    );
    // The newer /openai/v1 paths name the deployment in the body, mapped the same way.
    let response = reqwest::Client::new()
        .post(format!("{base}/azure/openai/v1/chat/completions"))
        .header("api-key", &key)
        .json(&json!({"model": "prod-mini", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("stream");
    assert!(
        !text.contains("\"usage\""),
        "the injected usage chunk is not shown: {text}"
    );
    assert!(mock.last().json()["stream_options"]["include_usage"] == true);
    // The v1 paths take no dated api-version (Azure refuses one): none is added.
    assert!(
        !mock.last().uri.contains("api-version"),
        "{}",
        mock.last().uri
    );

    // Priced as gpt-4o-mini (the shipped price), with the reported usage.
    let rows_now = rows(&gateway, &id, 2).await;
    for row in &rows_now {
        assert_eq!(
            (row.provider.as_str(), row.model.as_str()),
            ("azure", "gpt-4o-mini")
        );
        assert_eq!(row.source, "reported", "{row:?}");
        assert_eq!(row.output_tokens, COMPLETION_TOKENS as i64);
        assert!(row.cost_nanos > 0, "{row:?}");
    }

    // Capped: $0.10 buys 1000 output tokens of budget-model ($100/M output, free input).
    let (capped_id, capped, _) = admin
        .create_key(
            json!({"name": "capped", "allowed_providers": ["azure"], "spend_limit_usd": 0.10}),
        )
        .await;
    let spend = [("x-mock-output-tokens", "max")];
    let body = json!({"model": "budget", "max_tokens": 600, "messages": [{"role": "user", "content": "hi"}]});
    let response = azure_chat(&base, &capped, "budget", body.clone(), &spend).await;
    assert_eq!(response.status(), 200);
    // 600 spent, 400 left: a second 600 is clamped to what is left, a third refused.
    let response = azure_chat(&base, &capped, "budget", body.clone(), &spend).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-gateway-output-clamped")
            .and_then(|v| v.to_str().ok()),
        Some("400")
    );
    let response = azure_chat(&base, &capped, "budget", body, &spend).await;
    assert_eq!(
        error_code(response).await,
        (402, "spend_limit_exceeded".into())
    );
    let capped_rows = rows(&gateway, &capped_id, 2).await;
    let total: i64 = capped_rows.iter().map(|r| r.cost_nanos).sum();
    assert_eq!(total, 100_000_000, "{capped_rows:?}");
    assert!(capped_rows.iter().all(|r| r.model == "budget-model"));
    assert_no_configured_secrets(&gateway);
}

#[tokio::test]
async fn a_server_that_reports_no_usage_is_billed_an_estimate() {
    let (gateway, _mock, _secrets) = gateway_with_providers().await;
    let base = gateway.proxy_url();
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "selfhosted", "allowed_providers": ["selfhosted"]}))
        .await;
    let site = format!("{base}/selfhosted");
    let response = chat(&site, &key, hello("gpt-4o-mini"), &[]).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert!(
        answer.get("usage").is_none(),
        "the server sent none: {answer}"
    );
    let mut stream = hello("gpt-4o-mini");
    stream["stream"] = json!(true);
    let response = chat(&site, &key, stream, &[]).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("stream");
    assert!(text.contains("part2"), "{text}");

    let rows = rows(&gateway, &id, 2).await;
    for row in &rows {
        assert_eq!((row.provider.as_str(), row.status), ("selfhosted", 200));
        assert_eq!(row.source, "estimated", "{row:?}");
        assert!(row.input_tokens > 0, "{row:?}");
        assert!(row.output_tokens > 0, "tokens flowed: {row:?}");
        assert!(row.cost_nanos > 0, "never $0 when tokens flowed: {row:?}");
    }
    // "Hello from the mock." is 20 characters; three "partN " deltas are three events.
    assert_eq!(rows[0].output_tokens, 5, "{:?}", rows[0]);
    assert_eq!(rows[1].output_tokens, 5, "{:?}", rows[1]);
}

#[tokio::test]
async fn a_provider_removed_from_the_config_leaves_its_keys_working_elsewhere() {
    let (mut gateway, mock, _secrets) = gateway_with_providers().await;
    let base = gateway.proxy_url();
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "both", "allowed_providers": ["openai", "local-llama"]}))
        .await;
    let response = chat(
        &format!("{base}/local-llama"),
        &key,
        hello("llama-3.1-8b"),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);

    // The operator drops local-llama (and its price) and restarts.
    let config = std::fs::read_to_string(&gateway.config_path).expect("config");
    let without = config
        .replace(
            &format!(
                "[providers.local-llama]\nkind = \"openai\"\nbase_url = {:?}\n",
                mock.base_url("compat")
            ),
            "",
        )
        .replace(
            "[[prices]]\nmodel = \"llama-*\"\nprovider = \"local-llama\"\ninput = 0\noutput = 0\nmax_output_tokens = 8192\n",
            "",
        );
    assert_ne!(without, config);
    std::fs::write(&gateway.config_path, without).expect("config");
    gateway.restart().await;

    let logs = gateway.logs();
    let warning = logs
        .lines()
        .find(|line| line.contains("provider this config does not have"))
        .unwrap_or_else(|| panic!("no start-up warning:\n{logs}"));
    assert!(
        warning.contains("local-llama") && warning.contains(&id),
        "{warning}"
    );

    let base = gateway.proxy_url();
    let response = chat(
        &format!("{base}/local-llama"),
        &key,
        hello("llama-3.1-8b"),
        &[],
    )
    .await;
    assert_eq!(error_code(response).await, (404, "unknown_route".into()));
    let response = chat(&base, &key, hello("gpt-4o"), &[]).await;
    assert_eq!(response.status(), 200, "its other provider still works");
    let view = gateway.admin().get(&format!("/v1/keys/{id}")).await;
    assert_eq!(
        view.body["allowed_providers"],
        json!(["openai", "local-llama"])
    );
}

/// The official SDKs, Python and Node, against the configured providers: the openai SDK at
/// `/local-llama/v1` (no credential) and `/groq/v1`, the anthropic SDK at `/claude-proxy`,
/// and openai's `AzureOpenAI` with its endpoint at `/azure` (deployment `prod-mini`). The mock
/// sees each provider's own credential where its format puts it, never a proxy key.
async fn sdks_work_against_configured_providers(language: Language) {
    let (gateway, mock, _secrets) = gateway_with_providers().await;
    let admin = gateway.admin();
    let (_, key, _) = admin.create_key(json!({"name": "sdk"})).await;
    let (revoked_id, revoked, _) = admin.create_key(json!({"name": "sdk-revoked"})).await;
    let response = admin.delete(&format!("/v1/keys/{revoked_id}")).await;
    assert!((200..300).contains(&response.status), "{}", response.body);
    let world = World {
        gateway,
        mock,
        key,
        revoked,
    };
    for suite in ["configured-openai", "configured-anthropic", "azure"] {
        run_checks(&world, language, suite).await;
    }
    let received = world.mock.received();
    let paths: Vec<&str> = received
        .iter()
        .map(|r| r.uri.split_once('?').map_or(r.uri.as_str(), |(p, _)| p))
        .collect();
    for (prefix, count) in [
        ("/compat/v1/chat/completions", 6),
        ("/claude/v1/messages", 2),
    ] {
        assert_eq!(
            paths.iter().filter(|p| **p == prefix).count(),
            count,
            "{paths:?}"
        );
    }
    assert_eq!(
        paths
            .iter()
            .filter(|p| **p == "/azure/openai/deployments/prod-mini/chat/completions")
            .count(),
        2,
        "{paths:?}"
    );
    for request in &received {
        let what = format!("{} {}", request.method, request.uri);
        if request.uri.starts_with("/azure/") {
            assert_eq!(request.header("api-key"), Some(AZURE_SECRET), "{what}");
            assert!(request.uri.contains("api-version=2024-10-21"), "{what}");
        } else if request.uri.starts_with("/claude/") {
            assert_eq!(request.header("x-api-key"), Some(CLAUDE_SECRET), "{what}");
        }
        for secret in [&world.key, &world.revoked] {
            assert!(!holds_secret(request.uri.as_bytes(), secret), "{what}");
            assert!(!holds_secret(&request.body, secret), "{what}");
            for (name, value) in &request.headers {
                assert!(!holds_secret(value.as_bytes(), secret), "{what}: {name}");
            }
        }
    }
    // Requests with no credential (local-llama) and with groq's, in OpenAI's header.
    let bearers: Vec<Option<&str>> = received
        .iter()
        .filter(|r| r.uri.starts_with("/compat/"))
        .map(|r| r.header("authorization"))
        .collect();
    let groq = format!("Bearer {GROQ_SECRET}");
    assert!(bearers.contains(&None), "{bearers:?}");
    assert!(
        bearers
            .iter()
            .all(|b| b.is_none() || *b == Some(groq.as_str())),
        "{bearers:?}"
    );
}

#[tokio::test]
async fn the_python_sdks_work_against_configured_providers() {
    sdks_work_against_configured_providers(Language::Python).await;
}

#[tokio::test]
async fn the_node_sdks_work_against_configured_providers() {
    sdks_work_against_configured_providers(Language::Node).await;
}
