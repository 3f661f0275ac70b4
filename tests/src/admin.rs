//! A minimal HTTP/1 client for the management API over the daemon's Unix socket.
//!
//! Deliberately not gwctl's client: the tests check the wire contract itself (statuses,
//! JSON shapes), so they speak raw HTTP and look at exactly what the daemon sent.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct Admin {
    pub socket: PathBuf,
}

#[derive(Clone, Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

impl ApiResponse {
    /// The SPEC error code, asserting the whole error shape on the way.
    pub fn error_code(&self) -> String {
        assert_error_shape(&self.body);
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn error_message(&self) -> String {
        assert_error_shape(&self.body);
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// `{"error": {"type": "gateway_error", "code": "...", "message": "..."}}` and nothing else.
pub fn assert_error_shape(body: &Value) {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(object.len(), 1, "error body has extra fields: {body}");
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error object: {body}"));
    assert_eq!(error.len(), 3, "error object has extra fields: {body}");
    assert_eq!(error["type"], "gateway_error", "{body}");
    assert!(
        error["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{body}"
    );
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

impl Admin {
    pub async fn get(&self, path: &str) -> ApiResponse {
        self.send("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> ApiResponse {
        self.send("POST", path, Some(body.to_string())).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> ApiResponse {
        self.send("PATCH", path, Some(body.to_string())).await
    }

    pub async fn delete(&self, path: &str) -> ApiResponse {
        self.send("DELETE", path, None).await
    }

    /// Sends a raw body (possibly not JSON).
    pub async fn send(&self, method: &str, path: &str, body: Option<String>) -> ApiResponse {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.socket.display()));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake over the admin socket");
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("valid request");
        let response = sender.send_request(request).await.expect("admin response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("admin body")
            .to_bytes();
        // Every management answer is JSON except `/metrics` (Prometheus text), kept as a string.
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        ApiResponse {
            status,
            headers,
            body,
        }
    }

    /// Creates an admin token named `name`, asserting 201; returns (id, secret).
    pub async fn create_admin_token(&self, name: &str) -> (String, String) {
        let response = self
            .post("/v1/admin-tokens", serde_json::json!({"name": name}))
            .await;
        assert_eq!(response.status, 201, "{}", response.body);
        let secret = response.body["secret"].as_str().expect("secret").to_owned();
        assert!(secret.starts_with("gwadm-"));
        (response.body["id"].as_str().expect("id").to_owned(), secret)
    }

    /// Creates a key from a JSON body, asserting 201; returns (id, secret, view).
    pub async fn create_key(&self, body: Value) -> (String, String, Value) {
        let response = self.post("/v1/keys", body).await;
        assert_eq!(response.status, 201, "create failed: {}", response.body);
        let id = response.body["id"].as_str().expect("id").to_owned();
        let secret = response.body["secret"].as_str().expect("secret").to_owned();
        (id, secret, response.body)
    }

    /// Rotates key `id` with a grace period; returns the successor's id, secret and view.
    pub async fn rotate_key(&self, id: &str, grace_seconds: u64) -> (String, String, Value) {
        let response = self
            .post(
                &format!("/v1/keys/{id}/rotate"),
                serde_json::json!({"grace_period_seconds": grace_seconds}),
            )
            .await;
        assert_eq!(response.status, 201, "rotate failed: {}", response.body);
        let id = response.body["id"].as_str().expect("id").to_owned();
        let secret = response.body["secret"].as_str().expect("secret").to_owned();
        (id, secret, response.body)
    }
}

/// `secret` with its last character changed, to one it is not (a fixed replacement is the
/// secret itself whenever the secret already ends with it: a 1-in-62 flaky test).
pub fn typo(secret: &str) -> String {
    let (head, last) = secret.split_at(secret.len() - 1);
    let other = if last == "x" { "y" } else { "x" };
    format!("{head}{other}")
}
