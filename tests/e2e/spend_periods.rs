//! Spend over time: periods that reset exactly at their UTC boundary, a new reset period
//! that counts only its own spend, and spend that survives restarts, rotations and
//! `kill -9` (SPEC §5).

use std::time::{Duration, Instant};

use gateway_tests::MockProvider;
use gateway_tests::in_process::InProcessGateway;
use gateway_tests::requests::{BUDGET_PRICES, chat};
use serde_json::{Value, json};

use crate::spend::{dollars, gateway, settled};

#[tokio::test]
async fn periods_reset_exactly_at_midnight_monday_and_month_end() {
    let mock = MockProvider::start().await;
    for (reset, before, boundary) in [
        ("daily", "2026-11-26T23:59:59.999Z", "2026-11-27T00:00:00Z"),
        ("weekly", "2026-11-29T23:59:59.999Z", "2026-11-30T00:00:00Z"),
        (
            "monthly",
            "2026-12-31T23:59:59.999Z",
            "2027-01-01T00:00:00Z",
        ),
    ] {
        let start: jiff::Timestamp = before.parse().expect("ts");
        let gateway = InProcessGateway::start_configured(start, Some(&mock), BUDGET_PRICES).await;
        let (id, key, _) = gateway
            .admin
            .create_key(json!({"name": reset, "spend_limit_usd": 0.1, "spend_reset": reset}))
            .await;
        let base = gateway.proxy_url.clone();
        let dime = json!({"model": "budget-model", "max_tokens": 1000, "messages": []});
        let first = chat(
            &base,
            &key,
            dime.clone(),
            &[("x-mock-output-tokens", "1000")],
        )
        .await;
        assert_eq!(first.status(), 200, "{reset}");
        let _ = first.bytes().await;
        settled(&base, &key).await;
        let refused = chat(&base, &key, dime.clone(), &[]).await;
        assert_eq!(refused.status(), 402, "{reset}");
        let body: Value = refused.json().await.expect("json");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(boundary)),
            "names the reset: {body}"
        );
        let view = gateway.admin.get(&format!("/v1/keys/{id}")).await.body;
        assert_eq!(
            (view["state"].as_str(), view["period_resets_at"].as_str()),
            (Some("exhausted"), Some(boundary))
        );

        gateway.clock.set(boundary.parse().expect("ts"));
        let view = gateway.admin.get(&format!("/v1/keys/{id}")).await.body;
        assert_eq!(
            view["state"], "active",
            "{reset} resets exactly at {boundary}"
        );
        assert_eq!(view["spend_period_usd"], 0.0);
        assert_eq!(view["spend_total_usd"], 0.1);
        let again = chat(&base, &key, dime, &[("x-mock-output-tokens", "1000")]).await;
        assert_eq!(again.status(), 200, "{reset}");
        let _ = again.bytes().await;
        gateway.stop().await;
    }
}

#[tokio::test]
async fn a_new_reset_period_counts_only_what_was_spent_in_it() {
    let mock = MockProvider::start().await;
    let mut gateway =
        InProcessGateway::start_configured(ts("2026-11-20T12:00:00Z"), Some(&mock), BUDGET_PRICES)
            .await;
    // A key without a limit spends $0.20 in November and $0.10 on Wednesday 2 December.
    let (id, key, _) = gateway.admin.create_key(json!({"name": "grown"})).await;
    spend_a_dime(&gateway.proxy_url, &key).await;
    spend_a_dime(&gateway.proxy_url, &key).await;
    settled(&gateway.proxy_url, &key).await;
    gateway.clock.set(ts("2026-12-02T10:00:00Z"));
    spend_a_dime(&gateway.proxy_url, &key).await;
    settled(&gateway.proxy_url, &key).await;

    let path = format!("/v1/keys/{id}");
    let edit = |change: Value| {
        let (admin, path) = (&gateway.admin, &path);
        async move {
            let response = admin.patch(path, change.clone()).await;
            assert_eq!(response.status, 200, "{change}: {}", response.body);
            let view = response.body;
            (
                dollars(&view["spend_period_usd"]),
                view["state"].as_str().unwrap_or_default().to_owned(),
                view["period_resets_at"].clone(),
            )
        }
    };
    let monthly = edit(json!({"spend_limit_usd": 0.25, "spend_reset": "monthly"})).await;
    assert_eq!(
        monthly,
        (0.1, "active".into(), json!("2027-01-01T00:00:00Z")),
        "a monthly limit added on the 2nd counts December, not all the key ever spent"
    );
    let daily = edit(json!({"spend_reset": "daily"})).await;
    assert_eq!(daily, (0.1, "active".into(), json!("2026-12-03T00:00:00Z")));
    let lifetime = edit(json!({"spend_reset": null})).await;
    assert_eq!(lifetime, (0.3, "exhausted".into(), Value::Null));
    let weekly = edit(json!({"spend_reset": "weekly"})).await;
    assert_eq!(
        weekly,
        (0.1, "active".into(), json!("2026-12-07T00:00:00Z"))
    );
    let total = gateway.admin.get(&path).await.body["spend_total_usd"].clone();
    assert_eq!(total, 0.3);

    // The restarted period is what the database keeps, not the old period's spend.
    gateway.restart().await;
    let after = gateway.admin.get(&path).await.body;
    assert_eq!(
        (dollars(&after["spend_period_usd"]), &after["state"]),
        (0.1, &json!("active")),
        "{after}"
    );
    assert_eq!(after["period_resets_at"], "2026-12-07T00:00:00Z");
    assert_eq!(after["spend_total_usd"], 0.3);
    gateway.stop().await;
}

/// One request that costs exactly $0.10 (1000 output tokens of `budget-model`), read to the
/// end.
async fn spend_a_dime(base: &str, key: &str) {
    let r = chat(
        base,
        key,
        json!({"model": "budget-model", "max_tokens": 1000, "messages": []}),
        &[("x-mock-output-tokens", "1000")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
}

fn ts(text: &str) -> jiff::Timestamp {
    text.parse().expect("timestamp")
}

#[tokio::test]
async fn a_restart_keeps_period_spend() {
    let (mut gateway, _mock) = gateway(BUDGET_PRICES).await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "durable", "spend_limit_usd": 0.3, "spend_reset": "monthly"}))
        .await;
    let base = gateway.proxy_url();
    for _ in 0..3 {
        spend_a_dime(&base, &key).await;
    }
    settled(&base, &key).await;
    let before = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(before["state"], "exhausted");
    gateway.restart().await;
    let after = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    for field in [
        "spend_period_usd",
        "spend_total_usd",
        "period_resets_at",
        "request_count",
        "state",
        "last_used_at",
    ] {
        assert_eq!(after[field], before[field], "{field} after restart");
    }
    let r = chat(
        &gateway.proxy_url(),
        &key,
        json!({"model": "budget-model", "max_tokens": 1, "messages": []}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 402);
}

/// A rotated key's two secrets are one budget during the grace period, also once the daemon
/// has restarted: each secret's usage persisted the shared spend under its own key id, and
/// loading them as two keys would give each the headroom left.
#[tokio::test]
async fn a_restart_during_a_rotation_grace_period_keeps_one_budget() {
    let (mut gateway, _mock) = gateway(BUDGET_PRICES).await;
    let (id, old, _) = gateway
        .admin()
        .create_key(json!({"name": "rotating", "spend_limit_usd": 0.3, "spend_reset": "monthly"}))
        .await;
    spend_a_dime(&gateway.proxy_url(), &old).await;
    let (new_id, new, _) = gateway.admin().rotate_key(&id, 3600).await;
    spend_a_dime(&gateway.proxy_url(), &new).await;
    settled(&gateway.proxy_url(), &new).await;

    let replaced_by = |view: &Value| view["replaced_by"].clone();
    let old_view = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(replaced_by(&old_view), json!(new_id), "{old_view}");

    gateway.restart().await;
    // The rotation is known after the restart too, and only the old key was replaced.
    let old_view = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(replaced_by(&old_view), json!(new_id), "{old_view}");
    let new_view = gateway
        .admin()
        .get(&format!("/v1/keys/{new_id}"))
        .await
        .body;
    assert_eq!(replaced_by(&new_view), Value::Null, "{new_view}");
    let base = gateway.proxy_url();
    // $0.20 of $0.30 spent, whichever secret asks: the old one spends the last dime.
    spend_a_dime(&base, &old).await;
    settled(&base, &old).await;
    for (secret, which) in [(&old, "old"), (&new, "new")] {
        let r = chat(
            &base,
            secret,
            json!({"model": "budget-model", "max_tokens": 1, "messages": []}),
            &[],
        )
        .await;
        assert_eq!(
            r.status(),
            402,
            "the {which} secret after the budget is spent"
        );
    }
    let view = gateway
        .admin()
        .get(&format!("/v1/keys/{new_id}"))
        .await
        .body;
    assert_eq!(
        (
            dollars(&view["spend_period_usd"]),
            &view["request_count"],
            &view["state"]
        ),
        (0.3, &json!(3), &json!("exhausted")),
        "{view}"
    );

    // Again after a second restart: the later state (the old secret's) is the one loaded.
    gateway.restart().await;
    let r = chat(
        &gateway.proxy_url(),
        &new,
        json!({"model": "budget-model", "max_tokens": 1, "messages": []}),
        &[],
    )
    .await;
    assert_eq!(r.status(), 402, "the new secret after a second restart");
}

#[tokio::test]
async fn kill_dash_nine_under_load_loses_no_answered_request() {
    let (mut gateway, _mock) = gateway(BUDGET_PRICES).await;
    let (id, key, _) = gateway.admin().create_key(json!({"name": "crash"})).await;
    let base = gateway.proxy_url();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (base, key, answered, stop) =
            (base.clone(), key.clone(), answered.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let result = client
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&json!({"model": "budget-model", "max_tokens": 10, "messages": []}))
                    .send()
                    .await;
                let Ok(response) = result else { break };
                if response.status() == 200 && response.bytes().await.is_ok() {
                    answered.lock().expect("lock").push(Instant::now());
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed_at = Instant::now();
    gateway.kill9().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let answered = answered.lock().expect("lock").clone();
    let old_enough = answered
        .iter()
        .filter(|at| killed_at.duration_since(**at) > Duration::from_secs(1))
        .count();
    assert!(old_enough > 50, "enough load before the kill: {old_enough}");

    gateway.start_again().await;
    let conn = rusqlite::Connection::open(gateway.data_dir.join("gateway.db")).expect("open");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity");
    assert_eq!(integrity, "ok");
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM usage WHERE key_id = ?1", [&id], |r| {
            r.get(0)
        })
        .expect("count");
    assert!(
        rows as usize >= old_enough,
        "{rows} rows on disk, {old_enough} requests answered over a second before the kill"
    );
    assert!(rows as usize <= answered.len() + 8, "no phantom rows");
}
