//! Requests to the proxy listener that many tests send: an OpenAI chat completion with a
//! proxy key, optionally steering the mock with `x-mock-*` headers.

use serde_json::{Value, json};

/// `POST {base}/v1/chat/completions` with `key` as the bearer token.
pub async fn chat(
    base: &str,
    key: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request to the proxy")
}

/// The smallest chat request for `gpt-4o`.
pub async fn chat_gpt4o(base: &str, key: &str) -> reqwest::Response {
    chat(base, key, json!({"model": "gpt-4o", "messages": []}), &[]).await
}
