//! Redis away or emptied under running replicas (SPEC §9.5, issue #17), on a private Redis of
//! the test's own. Stopped: keys with limits are refused 503 `limits_unavailable` (fail
//! closed, never one replica's memory), keys without limits are served, revocations hold
//! (checked against PostgreSQL), `/healthz` says 503 `limits: unavailable` so a load
//! balancer routes around, and `/metrics` shows Redis down. Started again (empty) or
//! flushed: every replica serves again without a restart, each ledger's spend rebuilt from
//! PostgreSQL's usage records, so a spent cap stays spent.

use std::time::Duration;

use gateway_tests::requests::{BUDGET_PRICES, chat};
use gateway_tests::{Cluster, Gateway, PrivateRedis};
use serde_json::{Value, json};

use crate::cluster_limits::{
    EVENTUALLY, known_everywhere, lag_until, outcome, same_view_everywhere, status_and_code,
    wait_for_rows,
};

/// A dime of `budget-model` through `replica`: status and error code.
async fn dime(replica: &Gateway, secret: &str) -> (u16, String) {
    let response = chat(
        &replica.proxy_url(),
        secret,
        json!({"model": "budget-model", "max_tokens": 1000, "messages": []}),
        &[("x-mock-output-tokens", "1000")],
    )
    .await;
    status_and_code(response).await
}

/// `/healthz` on the management socket: (HTTP status, body).
async fn health(replica: &Gateway) -> (u16, Value) {
    let response = replica.admin().get("/healthz").await;
    (response.status, response.body)
}

/// The `gateway_backend_up{backend="redis"}` line of `/metrics`.
async fn redis_up(replica: &Gateway) -> String {
    let metrics = replica.admin().get("/metrics").await.body;
    let text = metrics.as_str().unwrap_or_default();
    text.lines()
        .find(|line| line.starts_with(r#"gateway_backend_up{backend="redis"}"#))
        .unwrap_or_else(|| panic!("no gateway_backend_up for redis in /metrics:\n{text}"))
        .to_owned()
}

/// Every replica healthy, as before any outage.
async fn assert_all_healthy(replicas: &[Gateway]) {
    for replica in replicas {
        assert_eq!(
            health(replica).await,
            (200, json!({"status": "ok", "store": "ok", "limits": "ok"}))
        );
        assert_eq!(
            redis_up(replica).await,
            r#"gateway_backend_up{backend="redis"} 1"#
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_fails_limited_keys_closed_and_service_resumes_when_it_is_back() {
    let mut redis = PrivateRedis::start().await;
    let cluster = Cluster::start_on_redis(3, &redis.url(), BUDGET_PRICES).await;
    let replicas = &cluster.replicas[..];
    let [a, b, c] = replicas else {
        panic!("three replicas");
    };
    let create = |body: Value| async move {
        let (id, secret, view) = a.admin().create_key(body).await;
        known_everywhere(&[a, b, c], &id, &secret).await;
        (id, secret, view)
    };
    let (_, rpm, _) = create(json!({"name": "rpm", "rate_limit_rpm": 1000})).await;
    let (capped_id, capped, _) = create(json!({"name": "capped", "spend_limit_usd": 0.3})).await;
    let (_, free, _) = create(json!({"name": "free"})).await;
    let (early_id, revoked_early, _) = create(json!({"name": "revoked-early"})).await;
    let (late_id, revoked_late, _) = create(json!({"name": "revoked-late"})).await;
    let (edited_id, edited, _) = create(json!({"name": "edited-late"})).await;

    // The cap spent, a dime on each replica; every key known to every replica.
    for replica in [a, b, c] {
        assert_eq!(dime(replica, &capped).await.0, 200);
    }
    for replica in [a, b, c] {
        assert_eq!(
            dime(replica, &capped).await,
            (402, "spend_limit_exceeded".into())
        );
        for secret in [&rpm, &free, &revoked_early, &revoked_late, &edited] {
            assert_eq!(outcome(replica, secret).await.0, 200);
        }
    }
    assert_eq!(
        a.admin()
            .delete(&format!("/v1/keys/{early_id}"))
            .await
            .status,
        200
    );
    assert_all_healthy(replicas).await;
    wait_for_rows(&cluster, &capped_id, 3).await;

    redis.stop().await;
    for (n, replica) in [a, b, c].into_iter().enumerate() {
        lag_until(
            &format!("Redis stopped → replica {n} refuses limited keys"),
            Duration::from_secs(10),
            || async { outcome(replica, &rpm).await == (503, "limits_unavailable".into()) },
        )
        .await;
        assert_eq!(
            outcome(replica, &capped).await,
            (503, "limits_unavailable".into())
        );
        assert_eq!(outcome(replica, &free).await, (200, String::new()));
        assert_eq!(
            outcome(replica, &revoked_early).await,
            (403, "key_revoked".into())
        );
        lag_until(
            &format!("Redis stopped → replica {n}'s /healthz says so"),
            Duration::from_secs(10),
            || async {
                health(replica).await
                    == (
                        503,
                        json!({"status": "unavailable", "store": "ok", "limits": "unavailable"}),
                    )
            },
        )
        .await;
        assert_eq!(
            redis_up(replica).await,
            r#"gateway_backend_up{backend="redis"} 0"#
        );
    }
    // A revocation while Redis is away: the management API answers (PostgreSQL is up), and
    // the very next request on B and C is refused.
    let revoked = a.admin().delete(&format!("/v1/keys/{late_id}")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let narrowed = a
        .admin()
        .patch(
            &format!("/v1/keys/{edited_id}"),
            json!({"allowed_models": ["gpt-4o-mini"]}),
        )
        .await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.body);
    for replica in [b, c] {
        assert_eq!(
            outcome(replica, &revoked_late).await,
            (403, "key_revoked".into()),
            "revoked during the outage"
        );
        assert_eq!(
            outcome(replica, &edited).await,
            (403, "model_not_allowed".into()),
            "edited during the outage"
        );
    }

    // Back, empty (it keeps nothing): served again without restarting a replica, the spent
    // cap rebuilt from the store's records.
    redis.start_again().await;
    for (n, replica) in [a, b, c].into_iter().enumerate() {
        lag_until(
            &format!("Redis back → replica {n} serves limited keys"),
            EVENTUALLY,
            || async { outcome(replica, &rpm).await.0 == 200 },
        )
        .await;
        assert_eq!(
            dime(replica, &capped).await,
            (402, "spend_limit_exceeded".into()),
            "replica {n}: the cap stays spent"
        );
        assert_eq!(outcome(replica, &free).await.0, 200);
        for secret in [&revoked_early, &revoked_late] {
            assert_eq!(outcome(replica, secret).await, (403, "key_revoked".into()));
        }
        // The edit made while Redis was away still holds once it is back.
        assert_eq!(
            outcome(replica, &edited).await,
            (403, "model_not_allowed".into())
        );
    }
    for (n, replica) in [a, b, c].into_iter().enumerate() {
        lag_until(
            &format!("Redis back → replica {n}'s /healthz ok"),
            EVENTUALLY,
            || async { health(replica).await.0 == 200 },
        )
        .await;
    }
    assert_all_healthy(replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_flushall_spend_is_rebuilt_from_the_store_and_every_cap_holds() {
    let redis = PrivateRedis::start().await;
    let cluster = Cluster::start_on_redis(3, &redis.url(), BUDGET_PRICES).await;
    let replicas: Vec<&Gateway> = cluster.replicas.iter().collect();
    let admin = replicas[0].admin();
    let (spent_id, spent, _) = admin
        .create_key(json!({"name": "spent", "spend_limit_usd": 0.3}))
        .await;
    let (partial_id, partial, _) = admin
        .create_key(json!({"name": "partial", "spend_limit_usd": 0.3}))
        .await;
    known_everywhere(&replicas, &spent_id, &spent).await;
    known_everywhere(&replicas, &partial_id, &partial).await;
    for replica in &replicas {
        assert_eq!(dime(replica, &spent).await.0, 200);
    }
    assert_eq!(dime(replicas[1], &partial).await.0, 200);
    // The records are in the store before Redis loses its copy (a record still in a
    // replica's batch when Redis is flushed is the documented window).
    wait_for_rows(&cluster, &spent_id, 3).await;
    wait_for_rows(&cluster, &partial_id, 1).await;

    redis.flushall().await;
    for (n, replica) in replicas.iter().enumerate() {
        assert_eq!(
            dime(replica, &spent).await,
            (402, "spend_limit_exceeded".into()),
            "replica {n}: a spent cap stays spent after FLUSHALL"
        );
    }
    // $0.20 left of `partial`: six dimes at once over the three replicas, each replica
    // rebuilding the ledger at the same time, admit two.
    let view = same_view_everywhere(&replicas, &partial).await;
    assert_eq!(view["spend_period_usd"], 0.1, "{view}");
    let mut tasks = Vec::new();
    for n in 0..6 {
        let (base, secret) = (replicas[n % 3].proxy_url(), partial.clone());
        tasks.push(tokio::spawn(async move {
            let response = chat(
                &base,
                &secret,
                json!({"model": "budget-model", "max_tokens": 1000, "messages": []}),
                &[("x-mock-output-tokens", "1000")],
            )
            .await;
            status_and_code(response).await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("request"));
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [
            (200, String::new()),
            (200, String::new()),
            (402, "spend_limit_exceeded".into()),
            (402, "spend_limit_exceeded".into()),
            (402, "spend_limit_exceeded".into()),
            (402, "spend_limit_exceeded".into()),
        ]
    );
    let view = same_view_everywhere(&replicas, &partial).await;
    assert_eq!(view["spend_period_usd"], 0.3, "{view}");
    assert_all_healthy(&cluster.replicas).await;
}
