//! gwctl end to end against a real daemon (SPEC §7).

use gateway_tests::Gateway;

#[tokio::test]
async fn create_prints_the_secret_once_with_a_warning() {
    let gateway = Gateway::start().await;
    let created = gateway
        .gwctl(&[
            "keys",
            "create",
            "--name",
            "backend-prod",
            "--providers",
            "openai,anthropic",
            "--models",
            "gpt-4o*,claude-*",
            "--ips",
            "10.0.0.0/8,127.0.0.1",
            "--rpm",
            "60",
            "--spend-limit",
            "50",
            "--reset",
            "daily",
            "--expires",
            "30d",
        ])
        .await;
    created.assert_success();
    let secret_line = created
        .stdout
        .lines()
        .find(|l| l.contains("sk-proxy-") && l.starts_with("secret"))
        .expect("secret line");
    let secret = secret_line
        .split_whitespace()
        .last()
        .expect("secret")
        .to_owned();
    assert!(
        secret.starts_with("sk-proxy-") && secret.len() == 47,
        "{secret}"
    );
    assert!(
        created.stderr.contains("cannot show it again") || created.stderr.contains("only time"),
        "{}",
        created.stderr
    );

    // The daemon stored what the flags said.
    let list = gateway.admin().get("/v1/keys").await.body;
    let key = &list["keys"][0];
    assert_eq!(key["name"], "backend-prod");
    assert_eq!(
        key["allowed_providers"],
        serde_json::json!(["openai", "anthropic"])
    );
    assert_eq!(
        key["allowed_models"],
        serde_json::json!(["gpt-4o*", "claude-*"])
    );
    assert_eq!(
        key["allowed_ips"],
        serde_json::json!(["10.0.0.0/8", "127.0.0.1"])
    );
    assert_eq!(key["rate_limit_rpm"], 60);
    assert_eq!(key["spend_limit_usd"], 50.0);
    assert_eq!(key["spend_reset"], "daily");
    assert!(key["expires_at"].is_string());
    assert_eq!(key["prefix"], secret[..13]);

    // Never again: not in list, show or their JSON.
    for args in [
        &["keys", "list"][..],
        &["keys", "show", "backend-prod"],
        &["-o", "json", "keys", "list"],
    ] {
        let out = gateway.gwctl(args).await;
        out.assert_success();
        assert!(
            !out.stdout.contains(&secret[9..]),
            "{args:?} shows the secret"
        );
        assert!(
            out.stdout.contains("sk-proxy-") && out.stdout.contains("backend-prod"),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn json_output_is_the_api_shape() {
    let gateway = Gateway::start().await;
    let created = gateway
        .gwctl(&["-o", "json", "keys", "create", "--name", "j", "--rpm", "5"])
        .await;
    created.assert_success();
    let body = created.json();
    let id = body["id"].as_str().expect("id").to_owned();
    assert!(
        body["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("sk-proxy-"))
    );
    assert_eq!(body["state"], "active");

    let shown = gateway
        .gwctl(&["keys", "show", &id, "--output", "json"])
        .await;
    shown.assert_success();
    assert_eq!(
        shown.json(),
        gateway.admin().get(&format!("/v1/keys/{id}")).await.body
    );

    let listed = gateway.gwctl(&["-o", "json", "keys", "list"]).await;
    listed.assert_success();
    assert_eq!(listed.json()["keys"][0]["id"], id.as_str());
}

#[tokio::test]
async fn edit_changes_fields_and_none_clears_them() {
    let gateway = Gateway::start().await;
    let created = gateway
        .gwctl(&[
            "-o",
            "json",
            "keys",
            "create",
            "--name",
            "e",
            "--rpm",
            "5",
            "--spend-limit",
            "10",
        ])
        .await;
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let edited = gateway
        .gwctl(&[
            "-o",
            "json",
            "keys",
            "edit",
            &id,
            "--name",
            "e2",
            "--models",
            "gpt-4o*",
            "--rpm",
            "none",
            "--spend-limit",
            "12.50",
            "--reset",
            "weekly",
        ])
        .await;
    edited.assert_success();
    let view = edited.json();
    assert_eq!(view["name"], "e2");
    assert_eq!(view["allowed_models"], serde_json::json!(["gpt-4o*"]));
    assert_eq!(view["rate_limit_rpm"], serde_json::Value::Null);
    assert_eq!(view["spend_limit_usd"], 12.5);
    assert_eq!(view["spend_reset"], "weekly");
    let cleared = gateway
        .gwctl(&["-o", "json", "keys", "edit", "e2", "--models", ""])
        .await;
    cleared.assert_success();
    assert_eq!(cleared.json()["allowed_models"], serde_json::json!([]));
}

#[tokio::test]
async fn errors_have_distinct_exit_codes() {
    let gateway = Gateway::start().await;
    let unknown = gateway
        .gwctl(&["keys", "show", "key_AAAAAAAAAAAAAAAAAAAA"])
        .await;
    assert_eq!(unknown.code, 3, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("key_not_found"),
        "{}",
        unknown.stderr
    );
    // A secret pasted where an id belongs is not echoed back, by gwctl or the API.
    let (_, secret, _) = gateway
        .admin()
        .create_key(serde_json::json!({"name": "pasted"}))
        .await;
    let pasted = gateway.gwctl(&["keys", "show", &secret]).await;
    assert_eq!(pasted.code, 3, "{}", pasted.stderr);
    let flag = gateway.gwctl(&["keys", "list", "--state", &secret]).await;
    assert_eq!(flag.code, 2, "{}", flag.stderr);
    assert!(
        !flag.stderr.contains(&secret[13..]),
        "clap echoed: {}",
        flag.stderr
    );
    let glued = gateway
        .admin()
        .get(&format!("/v1/keys?state=x{secret}"))
        .await;
    assert_eq!(glued.status, 400);
    assert!(
        !glued.body.to_string().contains(&secret[13..]),
        "{}",
        glued.body
    );
    let api = gateway.admin().get(&format!("/v1/keys/{secret}")).await;
    assert_eq!(api.status, 404);
    let body = api.body.to_string();
    for echoed in [&pasted.stderr, &pasted.stdout, &body] {
        assert!(!echoed.contains(&secret[13..]), "secret echoed: {echoed}");
    }
    for told in [&pasted.stderr, &body] {
        assert!(told.contains(&format!("{}…", &secret[..13])), "{told}");
    }
    let unknown_revoke = gateway
        .gwctl(&["keys", "revoke", "no-such-key", "--yes"])
        .await;
    assert_eq!(unknown_revoke.code, 3, "{}", unknown_revoke.stderr);

    let bad_glob = gateway
        .gwctl(&["keys", "create", "--name", "x", "--models", "gpt-[4"])
        .await;
    assert_eq!(bad_glob.code, 2, "{}", bad_glob.stderr);
    assert!(
        bad_glob.stderr.contains("allowed_models"),
        "{}",
        bad_glob.stderr
    );
    let bad_rpm = gateway
        .gwctl(&["keys", "create", "--name", "x", "--rpm", "0"])
        .await;
    assert_eq!(bad_rpm.code, 2);

    let id = gateway
        .gwctl(&["-o", "json", "keys", "create", "--name", "r"])
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let not_editable = gateway
        .gwctl(&["keys", "edit", &id, "--expires", "2030-01-01"])
        .await;
    assert_eq!(not_editable.code, 4, "{}", not_editable.stderr);
    assert!(
        not_editable.stderr.contains("field_not_editable"),
        "{}",
        not_editable.stderr
    );

    gateway
        .gwctl(&["keys", "revoke", &id, "--yes"])
        .await
        .assert_success();
    let edit_revoked = gateway
        .gwctl(&["keys", "edit", &id, "--name", "again"])
        .await;
    assert_eq!(edit_revoked.code, 4, "{}", edit_revoked.stderr);
    assert!(
        edit_revoked.stderr.contains("key_revoked"),
        "{}",
        edit_revoked.stderr
    );

    let json_error = gateway
        .gwctl(&["-o", "json", "keys", "show", "key_AAAAAAAAAAAAAAAAAAAA"])
        .await;
    assert_eq!(json_error.code, 3);
    let body: serde_json::Value =
        serde_json::from_str(json_error.stderr.trim()).expect("JSON error on stderr");
    gateway_tests::admin::assert_error_shape(&body);
    // gwctl's own refusals (here: no key has that name) have the same shape, a SPEC code
    // and the same exit code as the daemon's.
    let by_name = gateway
        .gwctl(&["-o", "json", "keys", "show", "no-such-key"])
        .await;
    assert_eq!(by_name.code, 3, "{}", by_name.stderr);
    let body: serde_json::Value =
        serde_json::from_str(by_name.stderr.trim()).expect("JSON error on stderr");
    gateway_tests::admin::assert_error_shape(&body);
    assert_eq!(body["error"]["code"], "key_not_found", "{body}");
    let invalid = gateway
        .gwctl(&["-o", "json", "keys", "create", "--name", "x", "--rpm", "0"])
        .await;
    assert_eq!(invalid.code, 2, "{}", invalid.stderr);
    let body: serde_json::Value =
        serde_json::from_str(invalid.stderr.trim()).expect("JSON error on stderr");
    gateway_tests::admin::assert_error_shape(&body);
    assert_eq!(body["error"]["code"], "invalid_argument", "{body}");
}

#[tokio::test]
async fn revoke_needs_confirmation_and_refuses_without_a_terminal() {
    let gateway = Gateway::start().await;
    let id = gateway
        .gwctl(&["-o", "json", "keys", "create", "--name", "victim"])
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let refused = gateway.gwctl(&["keys", "revoke", &id]).await;
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(
        gateway.admin().get(&format!("/v1/keys/{id}")).await.body["state"],
        "active",
        "not revoked"
    );

    let revoked = gateway.gwctl(&["keys", "revoke", "victim", "--yes"]).await;
    revoked.assert_success();
    assert_eq!(
        gateway.admin().get(&format!("/v1/keys/{id}")).await.body["state"],
        "revoked"
    );
    // Twice is harmless.
    gateway
        .gwctl(&["keys", "revoke", &id, "--yes"])
        .await
        .assert_success();

    let listed = gateway.gwctl(&["keys", "list", "--state", "revoked"]).await;
    listed.assert_success();
    assert!(
        listed.stdout.contains("victim") && listed.stdout.contains("revoked"),
        "{}",
        listed.stdout
    );
}

#[tokio::test]
async fn an_absent_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("nobody.sock");
    let out = gateway_tests::gwctl::run(&socket, &["keys", "list"]).await;
    assert_eq!(out.code, 69, "{}", out.stderr);
    assert!(
        out.stderr.contains(&socket.display().to_string()),
        "names the socket: {}",
        out.stderr
    );
}

#[tokio::test]
async fn audit_lists_changes_with_their_actor() {
    let gateway = Gateway::start().await;
    gateway
        .gwctl(&["keys", "create", "--name", "a1"])
        .await
        .assert_success();
    gateway
        .gwctl(&["keys", "edit", "a1", "--rpm", "9"])
        .await
        .assert_success();
    let audit = gateway.gwctl(&["-o", "json", "audit"]).await;
    audit.assert_success();
    let entries = audit.json()["entries"].as_array().expect("entries").clone();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["action"], "key.update");
    let uid = rustix::process::geteuid().as_raw();
    assert_eq!(entries[0]["actor"], format!("uid:{uid}"));
}

/// The API writes amounts under a hundred-thousandth of a dollar the way JSON writers do,
/// `5.85e-6`; gwctl and the API read that form (and `1e-6` as input) exactly, so one cheap
/// request cannot stop gwctl from listing, showing or revoking keys.
#[tokio::test]
async fn tiny_amounts_in_exponent_form_read_everywhere() {
    let (gateway, _mock) = Gateway::with_mock("", "").await;
    let (id, key, _) = gateway
        .admin()
        .create_key(serde_json::json!({"name": "cheap"}))
        .await;
    let answered = gateway_tests::requests::chat(
        &gateway.proxy_url(),
        &key,
        serde_json::json!({"model": "gpt-4o-mini", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(answered.status(), 200);
    let _ = answered.bytes().await;
    let view = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    let total = view["spend_total_usd"].to_string();
    assert!(
        total.contains('e'),
        "a tiny amount in exponent form: {total}"
    );

    for args in [
        &["keys", "list"][..],
        &["-o", "json", "keys", "list"],
        &["keys", "show", "cheap"],
        &["keys", "usage", &id],
    ] {
        gateway.gwctl(args).await.assert_success();
    }
    let shown = gateway.gwctl(&["keys", "show", &id]).await;
    assert!(shown.stdout.contains("$0.00000585"), "{}", shown.stdout);
    let tiny = gateway
        .gwctl(&[
            "-o",
            "json",
            "keys",
            "create",
            "--name",
            "tiny",
            "--spend-limit",
            "0.000001",
        ])
        .await;
    tiny.assert_success();
    assert_eq!(tiny.json()["spend_limit_usd"], serde_json::json!(1e-6));
    let by_api = gateway
        .admin()
        .post(
            "/v1/keys",
            serde_json::json!({"name": "tinier", "spend_limit_usd": 1e-7}),
        )
        .await;
    assert_eq!(by_api.status, 201, "{}", by_api.body);
    gateway
        .gwctl(&["keys", "revoke", "cheap", "--yes"])
        .await
        .assert_success();
    let view = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(view["state"], "revoked");
}

/// During a rotation's grace period both keys carry the name and both work; the name means
/// the new key (what the operator keeps), the retiring one stays reachable by its prefix, and
/// the list says which one is retiring.
#[tokio::test]
async fn during_a_grace_period_the_name_means_the_new_key() {
    let gateway = Gateway::start().await;
    let old_id = gateway
        .gwctl(&[
            "-o", "json", "keys", "create", "--name", "pg3", "--rpm", "5",
        ])
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let rotated = gateway
        .gwctl(&["-o", "json", "keys", "rotate", "pg3", "--grace", "1h"])
        .await;
    rotated.assert_success();
    let rotated = rotated.json();
    let new_id = rotated["id"].as_str().expect("new id").to_owned();
    let old_prefix = rotated["previous"]["prefix"]
        .as_str()
        .expect("old prefix")
        .to_owned();
    assert_ne!(new_id, old_id);
    assert_eq!(rotated["previous"]["state"], "active", "{rotated}");

    let shown = gateway.gwctl(&["-o", "json", "keys", "show", "pg3"]).await;
    shown.assert_success();
    assert_eq!(shown.json()["id"], new_id.as_str(), "show by name");
    let by_prefix = gateway
        .gwctl(&["-o", "json", "keys", "show", &old_prefix])
        .await;
    by_prefix.assert_success();
    assert_eq!(by_prefix.json()["id"], old_id.as_str(), "show by prefix");
    gateway
        .gwctl(&["keys", "usage", "pg3"])
        .await
        .assert_success();

    let listed = gateway.gwctl(&["keys", "list"]).await;
    listed.assert_success();
    let old_row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&old_id))
        .unwrap_or_else(|| panic!("old key listed:\n{}", listed.stdout));
    assert!(old_row.contains("active (retires in "), "{old_row}");
    let new_row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&new_id))
        .unwrap_or_else(|| panic!("new key listed:\n{}", listed.stdout));
    assert!(!new_row.contains("retires"), "{new_row}");

    let edited = gateway
        .gwctl(&["-o", "json", "keys", "edit", "pg3", "--rpm", "9"])
        .await;
    edited.assert_success();
    assert_eq!(edited.json()["id"], new_id.as_str(), "edit by name");
    let old = gateway
        .admin()
        .get(&format!("/v1/keys/{old_id}"))
        .await
        .body;
    assert_eq!(
        old["rate_limit_rpm"], 5,
        "the retiring key was not edited: {old}"
    );

    // Revoking by the shared name is refused: the operator most likely means the leaked old
    // key, and revoking the new one would leave the old working. Each id is named.
    let refused = gateway
        .gwctl(&["-o", "json", "keys", "revoke", "pg3", "--yes"])
        .await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("Revoke by id"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains(&old_id), "{}", refused.stderr);
    for id in [&old_id, &new_id] {
        let view = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
        assert_eq!(view["state"], "active", "nothing revoked: {view}");
    }
    // By id, the old key's grace ends now; the name is the new key's alone again.
    gateway
        .gwctl(&["keys", "revoke", &old_id, "--yes"])
        .await
        .assert_success();
    let shown = gateway.gwctl(&["-o", "json", "keys", "show", "pg3"]).await;
    shown.assert_success();
    assert_eq!(shown.json()["id"], new_id.as_str());
}
