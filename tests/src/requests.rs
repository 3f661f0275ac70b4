//! Requests to the proxy listener that many tests send: an OpenAI chat completion or an
//! Anthropic message with a proxy key, optionally steering the mock with `x-mock-*` headers,
//! and the key's own self-service view.

use serde_json::{Value, json};

/// `[[prices]]` for `budget-model`: output at $100 per million tokens, free input, so 1000
/// output tokens cost exactly $0.10 and the worst case the gateway reserves equals the actual
/// cost.
pub const BUDGET_PRICES: &str = r#"
[[prices]]
model = "budget-model"
input = 0
output = 100
max_output_tokens = 100000
"#;

/// `POST {base}/v1/chat/completions` with `key` as the bearer token.
pub async fn chat(
    base: &str,
    key: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let request = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key);
    send(request, body, headers).await
}

/// `POST {base}/anthropic/v1/messages` with `key` in `x-api-key`, as Anthropic's SDKs send it.
pub async fn anthropic_messages(
    base: &str,
    key: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let request = reqwest::Client::new()
        .post(format!("{base}/anthropic/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01");
    send(request, body, headers).await
}

async fn send(
    mut request: reqwest::RequestBuilder,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .json(&body)
        .send()
        .await
        .expect("request to the proxy")
}

/// The smallest chat request for `gpt-4o`.
pub async fn chat_gpt4o(base: &str, key: &str) -> reqwest::Response {
    chat(base, key, json!({"model": "gpt-4o", "messages": []}), &[]).await
}

/// The key's self-service view, `GET {base}/gateway/v1/key`.
pub async fn self_view(base: &str, key: &str) -> Value {
    self_view_with(&reqwest::Client::new(), base, key).await
}

/// [`self_view`] through `client` (its keep-alive connections).
pub async fn self_view_with(client: &reqwest::Client, base: &str, key: &str) -> Value {
    client
        .get(format!("{base}/gateway/v1/key"))
        .bearer_auth(key)
        .send()
        .await
        .expect("self-service")
        .json()
        .await
        .expect("json")
}
