//! The management API's request bodies as clients send them: known fields read, unknown
//! ones refused with the field named, patches that set, clear or leave a value.

use super::*;
use crate::error::ErrorCode;
use serde_json::json;

fn create_err(body: Value) -> (ErrorCode, String) {
    let err = CreateKey::from_json(&body).expect_err("should fail");
    (err.code, err.field)
}

fn update_err(body: Value) -> (ErrorCode, String) {
    let err = UpdateKey::from_json(&body).expect_err("should fail");
    (err.code, err.field)
}

#[test]
fn create_accepts_every_field() {
    let body = json!({
        "name": "backend-prod", "allowed_providers": ["openai"], "allowed_models": ["gpt-4o*"],
        "allowed_ips": ["10.0.0.0/8"], "rate_limit_rpm": 60, "spend_limit_usd": 12.5,
        "spend_reset": "daily", "expires_at": "2027-01-31T00:00:00Z"
    });
    let create = CreateKey::from_json(&body).expect("valid");
    assert_eq!(create.spend_limit_usd, Some(Nanodollars(12_500_000_000)));
    assert_eq!(create.rate_limit_rpm, Some(60));
    // What gwctl serialises is what the daemon parses.
    let again = CreateKey::from_json(&serde_json::to_value(&create).expect("ser")).expect("valid");
    assert_eq!(again, create);
}

#[test]
fn create_names_the_bad_field() {
    let cases = [
        (json!({}), "name"),
        (json!({"name": 3}), "name"),
        (
            json!({"name": "a", "allowed_models": ["gpt-[4"]}),
            "allowed_models",
        ),
        (
            json!({"name": "a", "allowed_ips": ["10.0.0.0/33"]}),
            "allowed_ips",
        ),
        (json!({"name": "a", "rate_limit_rpm": 0}), "rate_limit_rpm"),
        (
            json!({"name": "a", "rate_limit_rpm": 1.5}),
            "rate_limit_rpm",
        ),
        (json!({"name": "a", "rate_limit_rpm": -4}), "rate_limit_rpm"),
        (
            json!({"name": "a", "spend_limit_usd": 0}),
            "spend_limit_usd",
        ),
        (
            json!({"name": "a", "spend_limit_usd": -1}),
            "spend_limit_usd",
        ),
        (
            json!({"name": "a", "spend_limit_usd": 1, "spend_reset": "hourly"}),
            "spend_reset",
        ),
        (json!({"name": "a", "spend_reset": "daily"}), "spend_reset"),
        (json!({"name": "a", "expires_at": "soon"}), "expires_at"),
        (json!({"name": "a", "colour": "red"}), "colour"),
        (json!([1]), "body"),
    ];
    for (body, field) in cases {
        assert_eq!(
            create_err(body.clone()),
            (ErrorCode::InvalidArgument, field.to_owned()),
            "{body}"
        );
    }
}

#[test]
fn update_distinguishes_keep_clear_and_set() {
    let update = UpdateKey::from_json(&json!({"rate_limit_rpm": null, "spend_limit_usd": 5}))
        .expect("valid");
    assert_eq!(update.rate_limit_rpm, Patch::Clear);
    assert_eq!(
        update.spend_limit_usd,
        Patch::Set(Nanodollars(5_000_000_000))
    );
    assert_eq!(update.spend_reset, Patch::Keep);
    assert_eq!(
        UpdateKey::from_json(&update.to_json()).expect("round trip"),
        update
    );
    assert!(UpdateKey::from_json(&json!({})).expect("empty").is_empty());
}

#[test]
fn update_refuses_fields_that_are_not_editable() {
    assert_eq!(
        update_err(json!({"expires_at": "2030-01-01T00:00:00Z"})),
        (ErrorCode::FieldNotEditable, "expires_at".to_owned())
    );
    assert_eq!(
        update_err(json!({"id": "key_x"})),
        (ErrorCode::FieldNotEditable, "id".to_owned())
    );
    assert_eq!(
        update_err(json!({"bogus": 1})),
        (ErrorCode::InvalidArgument, "bogus".to_owned())
    );
    assert_eq!(
        update_err(json!({"allowed_ips": null})),
        (ErrorCode::InvalidArgument, "allowed_ips".to_owned())
    );
}

#[test]
fn created_debug_hides_the_secret() {
    let view: KeyView = serde_json::from_value(json!({
        "id": "key_1", "name": "n", "prefix": "sk-proxy-abcd", "state": "active",
        "allowed_providers": [], "allowed_models": [], "allowed_ips": [], "rate_limit_rpm": null,
        "spend_limit_usd": null, "spend_reset": null, "expires_at": null,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "revoked_at": null, "last_used_at": null, "spend_period_usd": 0, "spend_total_usd": 0,
        "period_resets_at": null, "request_count": 0
    }))
    .expect("view");
    let created = KeyCreated {
        key: view,
        secret: "sk-proxy-SECRET".into(),
    };
    assert!(!format!("{created:?}").contains("SECRET"));
}
