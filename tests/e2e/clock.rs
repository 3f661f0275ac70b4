//! Lifecycle states that depend on time, with the clock injected (SPEC §2).

use gateway_tests::in_process::InProcessGateway;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

fn ts(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

#[tokio::test]
async fn a_key_expires_exactly_at_its_instant() {
    let gateway = InProcessGateway::start(ts("2026-11-26T12:00:00Z")).await;
    let admin = &gateway.admin;
    let (id, _, created) = admin
        .create_key(json!({"name": "temp", "expires_at": "2026-11-30T00:00:00Z"}))
        .await;
    assert_eq!(created["state"], "active");
    assert_eq!(
        created["created_at"], "2026-11-26T12:00:00Z",
        "timestamps come from the injected clock"
    );

    gateway.clock.set(ts("2026-11-29T23:59:59.999Z"));
    assert_eq!(
        admin.get(&format!("/v1/keys/{id}")).await.body["state"],
        "active"
    );
    gateway.clock.advance(SignedDuration::from_millis(1));
    assert_eq!(
        admin.get(&format!("/v1/keys/{id}")).await.body["state"],
        "expired"
    );
    assert_eq!(
        admin.get("/v1/keys?state=expired").await.body["keys"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // An expired key can still be revoked, and revoked wins over expired.
    let revoked = admin.delete(&format!("/v1/keys/{id}")).await;
    assert_eq!(revoked.body["state"], "revoked");
    gateway.stop().await;
}

/// Rotating an expired key would mint a successor already expired (expiry is not editable)
/// and revoke the old one: refused, 409 `key_expired`, and nothing changes.
#[tokio::test]
async fn an_expired_key_cannot_be_rotated() {
    let gateway = InProcessGateway::start(ts("2026-11-26T12:00:00Z")).await;
    let admin = &gateway.admin;
    let (id, _, _) = admin
        .create_key(json!({"name": "short", "expires_at": "2026-11-26T13:00:00Z"}))
        .await;
    gateway.clock.set(ts("2026-11-26T13:00:00Z"));
    let rotated = admin
        .post(&format!("/v1/keys/{id}/rotate"), json!({}))
        .await;
    assert_eq!(rotated.status, 409, "{:?}", rotated.body);
    assert_eq!(rotated.error_code(), "key_expired");
    assert!(rotated.error_message().contains("Create a new key"));
    let keys = admin.get("/v1/keys").await.body;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    assert_eq!(keys["keys"][0]["state"], "expired");
    gateway.stop().await;
}

#[tokio::test]
async fn expiry_in_the_past_is_refused_at_creation() {
    let gateway = InProcessGateway::start(ts("2030-01-01T00:00:00Z")).await;
    let response = gateway
        .admin
        .post(
            "/v1/keys",
            json!({"name": "late", "expires_at": "2029-12-31T23:59:59Z"}),
        )
        .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_code(), "invalid_argument");
    assert!(response.error_message().contains("expires_at"));
    gateway.stop().await;
}

#[tokio::test]
async fn the_period_reset_instant_follows_the_clock() {
    let gateway = InProcessGateway::start(ts("2026-11-26T12:00:00Z")).await; // a Thursday
    let admin = &gateway.admin;
    let (id, _, created) = admin
        .create_key(json!({"name": "budget", "spend_limit_usd": 10, "spend_reset": "weekly"}))
        .await;
    assert_eq!(created["period_resets_at"], "2026-11-30T00:00:00Z");
    gateway.clock.set(ts("2026-11-30T00:00:00Z"));
    assert_eq!(
        admin.get(&format!("/v1/keys/{id}")).await.body["period_resets_at"],
        "2026-12-07T00:00:00Z"
    );
    let monthly = admin
        .patch(&format!("/v1/keys/{id}"), json!({"spend_reset": "monthly"}))
        .await;
    assert_eq!(monthly.body["period_resets_at"], "2026-12-01T00:00:00Z");
    gateway.stop().await;
}
