//! The key lifecycle over the management API (SPEC §1, §2, §6).

use gateway_tests::Gateway;
use gateway_tests::admin::assert_error_shape;
use serde_json::json;

#[tokio::test]
async fn create_then_list_and_show_report_active() {
    let gateway = Gateway::start().await;
    let admin = gateway.admin();
    let (id, secret, created) = admin
        .create_key(
            json!({"name": "backend-prod", "allowed_models": ["gpt-4o*"], "rate_limit_rpm": 60}),
        )
        .await;
    assert!(id.starts_with("key_"));
    assert!(secret.starts_with("sk-proxy-") && secret.len() >= 9 + 32);
    assert_eq!(created["prefix"], secret[..13]);
    assert_eq!(created["state"], "active");

    let shown = admin.get(&format!("/v1/keys/{id}")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["state"], "active");
    assert!(
        shown.body.get("secret").is_none(),
        "the secret is shown only once"
    );
    assert_eq!(shown.body["allowed_models"], json!(["gpt-4o*"]));

    let listed = admin.get("/v1/keys").await;
    assert_eq!(listed.status, 200);
    let keys = listed.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["id"], id.as_str());
    assert_eq!(keys[0]["state"], "active");
    assert!(
        !listed.body.to_string().contains(&secret[9..]),
        "list never carries the secret"
    );
}

#[tokio::test]
async fn every_editable_field_is_seen_at_once() {
    let gateway = Gateway::start().await;
    let admin = gateway.admin();
    let (id, _, _) = admin.create_key(json!({"name": "svc"})).await;
    let path = format!("/v1/keys/{id}");
    let edits = [
        json!({"name": "svc-renamed"}),
        json!({"allowed_providers": ["openai", "anthropic"]}),
        json!({"allowed_models": ["claude-*", "gpt-4o*"]}),
        json!({"allowed_ips": ["10.0.0.0/8", "2001:db8::/32"]}),
        json!({"rate_limit_rpm": 120}),
        json!({"spend_limit_usd": 25.5}),
        json!({"spend_limit_usd": 25.5, "spend_reset": "weekly"}),
    ];
    for edit in edits {
        let response = admin.patch(&path, edit.clone()).await;
        assert_eq!(response.status, 200, "{edit}: {}", response.body);
        let shown = admin.get(&path).await.body;
        for (field, value) in edit.as_object().expect("object") {
            assert_eq!(&shown[field], value, "{field} after {edit}");
            assert_eq!(&response.body[field], value, "{field} in the PATCH answer");
        }
    }
    // `null` clears an optional field; clearing the limit clears its reset period.
    let cleared = admin
        .patch(
            &path,
            json!({"rate_limit_rpm": null, "spend_limit_usd": null}),
        )
        .await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    assert_eq!(cleared.body["rate_limit_rpm"], json!(null));
    assert_eq!(cleared.body["spend_limit_usd"], json!(null));
    assert_eq!(cleared.body["spend_reset"], json!(null));
    assert_eq!(cleared.body["period_resets_at"], json!(null));
    assert_eq!(cleared.body["state"], "active");
}

#[tokio::test]
async fn fields_that_are_not_editable_are_refused() {
    let gateway = Gateway::start().await;
    let admin = gateway.admin();
    let (id, _, _) = admin
        .create_key(json!({"name": "svc", "expires_at": "2099-01-01T00:00:00Z"}))
        .await;
    for body in [
        json!({"expires_at": "2100-01-01T00:00:00Z"}),
        json!({"id": "key_other"}),
        json!({"prefix": "sk-proxy-zzzz"}),
        json!({"created_at": "2020-01-01T00:00:00Z"}),
    ] {
        let response = admin.patch(&format!("/v1/keys/{id}"), body.clone()).await;
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.error_code(), "field_not_editable", "{body}");
        let field = body
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .expect("field");
        assert!(
            response.error_message().contains(&field),
            "message names {field}"
        );
    }
    let shown = admin.get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(shown["expires_at"], "2099-01-01T00:00:00Z");
}

#[tokio::test]
async fn revoked_keys_cannot_be_edited_and_revoking_twice_is_harmless() {
    let gateway = Gateway::start().await;
    let admin = gateway.admin();
    let (id, _, _) = admin.create_key(json!({"name": "svc"})).await;
    let path = format!("/v1/keys/{id}");

    let first = admin.delete(&path).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["state"], "revoked");
    let revoked_at = first.body["revoked_at"].clone();
    assert!(revoked_at.is_string());

    let second = admin.delete(&path).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["state"], "revoked");
    assert_eq!(
        second.body["revoked_at"], revoked_at,
        "the first revocation stands"
    );

    let edit = admin.patch(&path, json!({"name": "again"})).await;
    assert_eq!(edit.status, 409);
    assert_eq!(edit.error_code(), "key_revoked");
    assert_eq!(admin.get(&path).await.body["name"], "svc");

    let listed = admin.get("/v1/keys?state=revoked").await.body;
    assert_eq!(listed["keys"].as_array().map(Vec::len), Some(1));
    let active = admin.get("/v1/keys?state=active").await.body;
    assert_eq!(active["keys"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn unknown_ids_are_404_on_every_verb() {
    let gateway = Gateway::start().await;
    let admin = gateway.admin();
    for response in [
        admin.get("/v1/keys/key_doesnotexist").await,
        admin
            .patch("/v1/keys/key_doesnotexist", json!({"name": "x"}))
            .await,
        admin.delete("/v1/keys/key_doesnotexist").await,
    ] {
        assert_eq!(response.status, 404);
        assert_eq!(response.error_code(), "key_not_found");
    }
}

#[tokio::test]
async fn bad_input_is_400_invalid_argument_naming_the_field() {
    let gateway = Gateway::start().await;
    let admin = gateway.admin();
    let cases = [
        (
            json!({"name": "a", "allowed_models": ["gpt-[4"]}),
            "allowed_models",
        ),
        (
            json!({"name": "a", "allowed_ips": ["10.0.0.0/33"]}),
            "allowed_ips",
        ),
        (
            json!({"name": "a", "allowed_ips": ["not-an-ip"]}),
            "allowed_ips",
        ),
        (json!({"name": "a", "rate_limit_rpm": 0}), "rate_limit_rpm"),
        (
            json!({"name": "a", "rate_limit_rpm": "fast"}),
            "rate_limit_rpm",
        ),
        (
            json!({"name": "a", "spend_limit_usd": 0}),
            "spend_limit_usd",
        ),
        (
            json!({"name": "a", "spend_limit_usd": -5}),
            "spend_limit_usd",
        ),
        (
            json!({"name": "a", "spend_limit_usd": 5, "spend_reset": "yearly"}),
            "spend_reset",
        ),
        (
            json!({"name": "a", "allowed_providers": ["azure"]}),
            "allowed_providers",
        ),
        (
            json!({"name": "a", "expires_at": "next week"}),
            "expires_at",
        ),
        (
            json!({"name": "a", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(65)}), "name"),
        // Shaped like another key's display prefix or id: `revoke <prefix>` must not reach it.
        (json!({"name": "sk-proxy-a1b2"}), "name"),
        (json!({"name": "key_0123456789abcdefghij"}), "name"),
        (json!({"allowed_models": []}), "name"),
        (json!({"name": "a", "shoe_size": 9}), "shoe_size"),
    ];
    for (body, field) in cases {
        let response = admin.post("/v1/keys", body.clone()).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        assert_eq!(response.error_code(), "invalid_argument", "{body}");
        assert!(
            response.error_message().contains(field),
            "{body}: {}",
            response.error_message()
        );
    }

    let (id, _, _) = admin.create_key(json!({"name": "ok"})).await;
    for (body, field) in [
        (json!({"allowed_models": ["[z-a]"]}), "allowed_models"),
        (json!({"allowed_ips": ["1.2.3.4/40"]}), "allowed_ips"),
        (json!({"rate_limit_rpm": -1}), "rate_limit_rpm"),
        (json!({"spend_limit_usd": "lots"}), "spend_limit_usd"),
        (json!({"spend_reset": "daily"}), "spend_reset"),
    ] {
        let response = admin.patch(&format!("/v1/keys/{id}"), body.clone()).await;
        assert_eq!(response.status, 400, "{body}");
        assert_eq!(response.error_code(), "invalid_argument", "{body}");
        assert!(
            response.error_message().contains(field),
            "{body}: {}",
            response.error_message()
        );
    }
    assert_eq!(
        admin.get("/v1/keys").await.body["keys"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn every_error_has_the_spec_shape() {
    let gateway = Gateway::start().await;
    let admin = gateway.admin();
    let responses = [
        admin
            .send("POST", "/v1/keys", Some("{not json".into()))
            .await,
        admin
            .send("POST", "/v1/keys", Some("x".repeat(70 * 1024)))
            .await,
        // A field given twice would mean whichever a reader kept: refused.
        admin
            .send(
                "POST",
                "/v1/keys",
                Some(r#"{"name": "twice", "spend_limit_usd": 1, "spend_limit_usd": 1000}"#.into()),
            )
            .await,
        admin.get("/v1/nothing-here").await,
        admin.send("PUT", "/v1/keys", None).await,
        admin.get("/v1/keys/key_0123456789abcdefghij/rotate").await,
        admin.get("/v1/keys?limit=0").await,
        admin.get("/v1/keys?state=sleepy").await,
        admin.get("/v1/keys?cursor=key_unknown").await,
        admin.get("/v1/keys?colour=red").await,
        admin.get("/v1/audit?cursor=abc").await,
    ];
    let expected = [
        (400, "invalid_argument"),
        (413, "body_too_large"),
        (400, "invalid_argument"),
        (404, "unknown_route"),
        (405, "method_not_allowed"),
        (405, "method_not_allowed"),
        (400, "invalid_argument"),
        (400, "invalid_argument"),
        (400, "invalid_argument"),
        (400, "invalid_argument"),
        (400, "invalid_argument"),
    ];
    for (response, (status, code)) in responses.iter().zip(expected) {
        assert_error_shape(&response.body);
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (status, code),
            "{}",
            response.body
        );
        assert_eq!(
            response
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
    }
    assert!(
        responses[2]
            .error_message()
            .contains("\"spend_limit_usd\" is given twice"),
        "{}",
        responses[2].body
    );
    assert_eq!(
        admin.get("/v1/keys").await.body["keys"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "nothing was created"
    );
    // A 405 says which methods the route answers.
    let allow = |response: &gateway_tests::admin::ApiResponse| {
        response
            .headers
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(allow(&responses[4]).as_deref(), Some("GET, POST"));
    assert_eq!(allow(&responses[5]).as_deref(), Some("POST"));
}

#[tokio::test]
async fn list_paginates_and_filters() {
    let gateway = Gateway::start().await;
    let admin = gateway.admin();
    let mut ids = Vec::new();
    for n in 0..7 {
        let (id, _, _) = admin.create_key(json!({"name": format!("k{n}")})).await;
        ids.push(id);
    }
    admin.delete(&format!("/v1/keys/{}", ids[3])).await;
    let mut seen = Vec::new();
    let mut path = "/v1/keys?limit=3".to_owned();
    loop {
        let page = admin.get(&path).await.body;
        for key in page["keys"].as_array().expect("keys") {
            seen.push(key["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/keys?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every key once, in creation order");
    let active = admin.get("/v1/keys?state=active&limit=1000").await.body;
    assert_eq!(active["keys"].as_array().map(Vec::len), Some(6));
}

#[tokio::test]
async fn the_audit_log_names_each_change_and_its_actor() {
    let gateway = Gateway::start().await;
    let admin = gateway.admin();
    let (id, secret, _) = admin.create_key(json!({"name": "audited"})).await;
    admin
        .patch(&format!("/v1/keys/{id}"), json!({"rate_limit_rpm": 5}))
        .await;
    admin.delete(&format!("/v1/keys/{id}")).await;
    admin.delete(&format!("/v1/keys/{id}")).await; // a no-op, not audited twice

    let audit = admin.get(&format!("/v1/audit?key_id={id}")).await;
    assert_eq!(audit.status, 200);
    let entries = audit.body["entries"].as_array().expect("entries");
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        ["key.revoke", "key.update", "key.create"],
        "newest first"
    );
    let uid = rustix::process::geteuid().as_raw();
    for entry in entries {
        assert_eq!(entry["actor"], format!("uid:{uid}"));
        assert_eq!(entry["key_id"], id.as_str());
    }
    assert_eq!(
        entries[1]["details"]["rate_limit_rpm"],
        json!({"from": null, "to": 5})
    );
    assert!(!audit.body.to_string().contains(&secret[9..]));
}
