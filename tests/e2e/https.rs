//! The HTTPS management listener: admin tokens, certificate reload, rotation, metrics
//! (SPEC §6, §8).

use gateway_tests::gateway::{assert_no_secrets, signal};
use gateway_tests::https::{client_trusting, client_trusting_file, self_signed};
use gateway_tests::in_process::InProcessGateway;
use gateway_tests::{Gateway, GatewayOptions, MockProvider};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

#[tokio::test]
async fn https_needs_a_live_admin_token_and_the_socket_needs_none() {
    let gateway = Gateway::start().await;
    let (token_id, token) = gateway.admin().create_admin_token("ci").await;
    let (_, other) = gateway.admin().create_admin_token("other").await;
    let client = client_trusting_file(&gateway.admin_cert());
    let url = format!("{}/v1/keys", gateway.admin_url());

    let created = client
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"name": "remote"}))
        .send()
        .await
        .expect("HTTPS create");
    assert_eq!(created.status(), 201);
    let listed: Value = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["keys"][0]["name"], "remote");

    // The audit actor is the token's id.
    let audit = gateway.admin().get("/v1/audit").await.body;
    assert_eq!(audit["entries"][0]["actor"], format!("token:{token_id}"));

    let refused = [
        client.get(&url).send().await.expect("no token"),
        client
            .get(&url)
            .bearer_auth("gwadm-not-a-token")
            .send()
            .await
            .expect("bad token"),
        client
            .get(&url)
            .bearer_auth(gateway_tests::admin::typo(&token))
            .send()
            .await
            .expect("typo"),
    ];
    for response in refused {
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.expect("json");
        gateway_tests::admin::assert_error_shape(&body);
        assert_eq!(body["error"]["code"], "unauthorized");
    }

    // Revoking a token (socket only) locks it out at once; others keep working.
    let revoked = gateway
        .admin()
        .delete(&format!("/v1/admin-tokens/{token_id}"))
        .await;
    assert_eq!(revoked.status, 200);
    assert!(revoked.body["revoked_at"].is_string());
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("revoked")
            .status(),
        401
    );
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(&other)
            .send()
            .await
            .expect("other")
            .status(),
        200
    );

    // Tokens cannot be managed over HTTPS, even with a valid one.
    let minted = client
        .post(format!("{}/v1/admin-tokens", gateway.admin_url()))
        .bearer_auth(&other)
        .json(&json!({"name": "escalate"}))
        .send()
        .await
        .expect("request");
    assert_eq!(minted.status(), 401);
    assert_eq!(
        gateway.admin().get("/v1/admin-tokens").await.body["tokens"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // The socket needs no token.
    assert_eq!(gateway.admin().get("/v1/keys").await.status, 200);
    // A client that does not trust the certificate cannot connect at all.
    let (stranger, _) = self_signed();
    assert!(
        client_trusting(stranger.as_bytes())
            .get(&url)
            .bearer_auth(&other)
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_a_corrupt_one_keeps_the_old() {
    let mut gateway = Gateway::start_with(GatewayOptions {
        log_filter: "info".into(),
        ..Default::default()
    })
    .await;
    let (_, token) = gateway.admin().create_admin_token("reload").await;
    let url = format!("{}/v1/keys", gateway.admin_url());
    let original = std::fs::read(gateway.admin_cert()).expect("generated cert");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(gateway.data_dir.join("tls/key.pem"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    assert_eq!(
        client_trusting(&original)
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("ok")
            .status(),
        200
    );

    let (cert, key) = self_signed();
    std::fs::write(gateway.data_dir.join("tls/key.pem"), &key).expect("key");
    std::fs::write(gateway.admin_cert(), &cert).expect("cert");
    let pid = gateway.pid().expect("pid");
    signal(pid, rustix::process::Signal::HUP);
    let fresh = client_trusting(cert.as_bytes());
    let mut served_new = false;
    for _ in 0..100 {
        if fresh
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            served_new = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served_new, "the new certificate is served after SIGHUP");
    assert!(
        client_trusting(&original)
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .is_err(),
        "the old one is gone"
    );

    std::fs::write(
        gateway.admin_cert(),
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .expect("corrupt");
    signal(pid, rustix::process::Signal::HUP);
    let mut logged = false;
    for _ in 0..100 {
        if gateway.logs().contains("certificate reload failed") {
            logged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(logged, "the failed reload is logged:\n{}", gateway.logs());
    assert_eq!(
        fresh
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("still served")
            .status(),
        200
    );
    let status = gateway.stop().await;
    assert!(
        status.success(),
        "a bad certificate file does not change the exit code"
    );
}

async fn proxied(base: &str, key: &str) -> u16 {
    gateway_tests::requests::chat_gpt4o(base, key)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_rotated_key_keeps_its_budget_and_rate_window_and_cannot_fork() {
    let mock = MockProvider::start().await;
    let now: Timestamp = "2026-11-26T12:00:00Z".parse().expect("ts");
    let mut gateway = InProcessGateway::start_with(now, Some(&mock)).await;
    let (id, old_secret, _) = gateway
        .admin
        .create_key(json!({"name": "svc", "rate_limit_rpm": 2, "spend_limit_usd": 5, "spend_reset": "monthly"}))
        .await;
    assert_eq!(proxied(&gateway.proxy_url, &old_secret).await, 200);
    let before = gateway.admin.get(&format!("/v1/keys/{id}")).await.body;
    assert!(
        before["spend_period_usd"].as_f64().is_some_and(|d| d > 0.0),
        "{before}"
    );

    let (new_id, new_secret, rotated) = gateway.admin.rotate_key(&id, 3600).await;
    for field in [
        "spend_period_usd",
        "spend_total_usd",
        "request_count",
        "period_resets_at",
    ] {
        assert_eq!(
            rotated[field], before[field],
            "the successor carries {field}"
        );
    }
    // One rate window for both secrets: the old one used 1 of 2 requests this minute.
    assert_eq!(proxied(&gateway.proxy_url, &new_secret).await, 200);
    assert_eq!(proxied(&gateway.proxy_url, &new_secret).await, 429);
    assert_eq!(proxied(&gateway.proxy_url, &old_secret).await, 429);

    // Rotating the old key again would fork it into two live successors.
    let again = gateway
        .admin
        .post(&format!("/v1/keys/{id}/rotate"), json!({}))
        .await;
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "key_revoked"),
        "{}",
        again.body
    );
    assert!(
        again.error_message().contains("already rotated"),
        "{}",
        again.body
    );

    let carried = gateway.admin.get(&format!("/v1/keys/{new_id}")).await.body;
    gateway.restart().await;
    let after = gateway.admin.get(&format!("/v1/keys/{new_id}")).await.body;
    for field in ["spend_period_usd", "spend_total_usd", "request_count"] {
        assert_eq!(after[field], carried[field], "{field} after a restart");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn rotation_with_and_without_a_grace_period() {
    let mock = MockProvider::start().await;
    let now: Timestamp = "2026-11-26T12:00:00Z".parse().expect("ts");
    let gateway = InProcessGateway::start_with(now, Some(&mock)).await;
    let admin = &gateway.admin;
    let base = gateway.proxy_url.clone();
    let (id, old_secret, _) = admin
        .create_key(json!({"name": "svc", "allowed_models": ["gpt-4o*"], "rate_limit_rpm": 100, "spend_limit_usd": 5}))
        .await;

    // Grace of one hour: both keys work until it ends, then the old one is revoked.
    let (new_id, new_secret, rotated) = admin.rotate_key(&id, 3600).await;
    assert_ne!(new_id, id);
    assert_eq!(
        rotated["allowed_models"],
        json!(["gpt-4o*"]),
        "same settings"
    );
    assert_eq!(rotated["rate_limit_rpm"], 100);
    assert_eq!(rotated["previous"]["revoked_at"], "2026-11-26T13:00:00Z");
    assert_eq!(rotated["previous"]["state"], "active");
    assert_eq!(proxied(&base, &old_secret).await, 200);
    assert_eq!(proxied(&base, &new_secret).await, 200);
    gateway
        .clock
        .set("2026-11-26T12:59:59Z".parse().expect("ts"));
    assert_eq!(
        proxied(&base, &old_secret).await,
        200,
        "still inside the grace period"
    );
    gateway.clock.advance(SignedDuration::from_secs(1));
    assert_eq!(
        proxied(&base, &old_secret).await,
        403,
        "revoked when the grace ends"
    );
    assert_eq!(proxied(&base, &new_secret).await, 200);
    assert_eq!(
        admin.get(&format!("/v1/keys/{id}")).await.body["state"],
        "revoked"
    );
    let again = admin
        .post(&format!("/v1/keys/{id}/rotate"), json!({}))
        .await;
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "key_revoked")
    );

    // Grace 0 (the default): the old key stops at once.
    let rotated = admin
        .post(&format!("/v1/keys/{new_id}/rotate"), json!({}))
        .await;
    assert_eq!(rotated.status, 201);
    let newest = rotated.body["secret"].as_str().expect("secret").to_owned();
    assert_eq!(proxied(&base, &new_secret).await, 403);
    assert_eq!(proxied(&base, &newest).await, 200);

    // Both steps are in the audit log.
    let audit = admin.get(&format!("/v1/audit?key_id={id}")).await.body;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["key.rotate", "key.create"]);
    let newest_id = rotated.body["id"].as_str().expect("id");
    let bad = admin
        .post(
            &format!("/v1/keys/{newest_id}/rotate"),
            json!({"grace_period_seconds": "soon"}),
        )
        .await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "invalid_argument")
    );
    assert!(bad.error_message().contains("grace_period_seconds"));
    gateway.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_hold_no_secrets() {
    let (gateway, _mock) = Gateway::with_mock("", "").await;
    let (_, token) = gateway.admin().create_admin_token("scraper").await;
    let (_, key, _) = gateway
        .admin()
        .create_key(json!({"name": "m", "spend_limit_usd": 10}))
        .await;
    let base = gateway.proxy_url();
    assert_eq!(proxied(&base, &key).await, 200);
    assert_eq!(proxied(&base, "sk-proxy-garbage").await, 401);
    let client = client_trusting_file(&gateway.admin_cert());
    let scrape = client
        .get(format!("{}/metrics", gateway.admin_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("scrape");
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.expect("text");
    // Every line is a comment, the EOF marker, or `name{labels} value`.
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed line {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.starts_with("gateway_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line:?}"
        );
    }
    assert!(
        text.contains("gateway_requests_total{provider=\"openai\",code=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gateway_auth_failures_total{reason=\"invalid_key\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gateway_spend_nanodollars_total{provider=\"openai\"} 97500"),
        "{text}"
    );
    assert!(text.contains("gateway_open_reservations 0"), "{text}");
    assert!(
        text.contains("gateway_upstream_ttfb_seconds_count{provider=\"openai\"} 1"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    assert_no_secrets("the metrics", &text);
    assert!(
        !text.contains(&key[9..]) && !text.contains(&token[6..]),
        "no key material"
    );
    // Also on the socket, and not without a token over HTTPS.
    assert_eq!(
        gateway.admin().send("GET", "/metrics", None).await.status,
        200
    );
    let anonymous = client
        .get(format!("{}/metrics", gateway.admin_url()))
        .send()
        .await
        .expect("scrape");
    assert_eq!(anonymous.status(), 401);
}
