//! Cluster mode, part 2 (SPEC §9.1, §9.3, issue #17): limits that hold across three real
//! `gatewayd` replicas sharing one PostgreSQL and one Redis. A key's rate limit admits exactly
//! N across all replicas, however the clients spread; an edit or a revocation answered by one
//! replica is enforced by the very next request on every other one (no sleep, no poll); every
//! replica answers a key's self-service view with the same numbers, and shows a key spent
//! on several replicas exhausted with the same total; a new key is usable on every replica
//! once create answered; the cluster's live counters live under its own prefix in Redis.
//!
//! The helpers at the top are shared by the other `cluster_limits_*` modules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_tests::requests::{chat, chat_gpt4o, self_view};
use gateway_tests::{Cluster, Gateway};
use serde_json::{Value, json};

/// How long something that has no zero-lag guarantee (a usage record reaching PostgreSQL, a
/// restarted Redis being used again) may take before the test fails; the lag is printed.
pub(crate) const EVENTUALLY: Duration = Duration::from_secs(20);

/// Polls `check` until it holds, for at most `bound`; returns how long that took (printed
/// as `what`). The cluster tests' own.
pub(crate) use crate::cluster::lag_within as lag_until;

/// Status and SPEC error code (empty when none) of a response, consuming it.
pub(crate) async fn status_and_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

/// A `gpt-4o` chat request through `replica`: its status and error code.
pub(crate) async fn outcome(replica: &Gateway, secret: &str) -> (u16, String) {
    status_and_code(chat_gpt4o(&replica.proxy_url(), secret).await).await
}

/// A response header, asserting it is sent at most once.
pub(crate) fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    let values: Vec<_> = response.headers().get_all(name).iter().collect();
    assert!(values.len() <= 1, "{name} appears {} times", values.len());
    values
        .first()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
}

/// A key's management view through `replica`.
pub(crate) async fn key_view(replica: &Gateway, id: &str) -> Value {
    let response = replica.admin().get(&format!("/v1/keys/{id}")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// (cost in nano-dollars, source, status, at_ms) of each usage row of `key_id` in the store.
pub(crate) async fn usage_rows(cluster: &Cluster, key_id: &str) -> Vec<(i64, String, i32, i64)> {
    cluster
        .store()
        .await
        .query(
            "SELECT cost_nanos, source, status, at_ms FROM usage WHERE key_id = $1 ORDER BY at_ms",
            &[&key_id],
        )
        .await
        .expect("reading usage rows")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
}

/// Waits until the store holds `n` usage rows of `key_id` (the writers commit in batches);
/// then returns them, after a pause that would let a duplicate land too.
pub(crate) async fn wait_for_rows(
    cluster: &Cluster,
    key_id: &str,
    n: usize,
) -> Vec<(i64, String, i32, i64)> {
    lag_until(
        &format!("{n} usage rows in the store"),
        EVENTUALLY,
        || async { usage_rows(cluster, key_id).await.len() >= n },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    usage_rows(cluster, key_id).await
}

/// Dollars from a JSON number.
pub(crate) fn dollars(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

/// Waits until every replica knows the key `id` (its self-service view answers; nothing is
/// spent). A new key is known at once everywhere only if SPEC §9.3 holds for creation, which
/// [`a_key_made_on_one_replica_is_usable_on_the_others_at_once`] tests on its own; the other
/// tests are about what comes after.
pub(crate) async fn known_everywhere(replicas: &[&Gateway], id: &str, secret: &str) {
    for (n, replica) in replicas.iter().enumerate() {
        lag_until(
            &format!("new key known to replica {n}"),
            EVENTUALLY,
            || async { self_view(&replica.proxy_url(), secret).await["id"] == id },
        )
        .await;
    }
}

/// The live numbers of a self-service view: what every replica must answer alike (the
/// seconds until a window slot frees move with the clock, so they are left out).
/// (The key's `state` and lifetime `spend_total_usd` have a test of their own:
/// [`every_replica_shows_the_same_state_and_totals`].)
const LIVE_FIELDS: [&str; 6] = [
    "spend_period_usd",
    "remaining_usd",
    "reserved_usd",
    "requests_in_flight",
    "rate_limit_rpm",
    "rate_limit_remaining",
];

/// The key's self-service view on every replica: asserts their live numbers are the same
/// and returns the first replica's view.
pub(crate) async fn same_view_everywhere(replicas: &[&Gateway], secret: &str) -> Value {
    let first = self_view(&replicas[0].proxy_url(), secret).await;
    let live =
        |view: &Value| -> Vec<Value> { LIVE_FIELDS.iter().map(|f| view[f].clone()).collect() };
    for (n, replica) in replicas.iter().enumerate().skip(1) {
        let view = self_view(&replica.proxy_url(), secret).await;
        assert_eq!(
            live(&view),
            live(&first),
            "replica {n} answers the self-service view differently ({LIVE_FIELDS:?}):\n{view}\n{first}"
        );
    }
    first
}

/// The most elements of the sorted `times` (ms) within any `window` ms.
pub(crate) fn most_in_any_window(times: &[i64], window: i64) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|&&t| t < times[i] + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_admits_exactly_n_across_three_replicas() {
    const N: usize = 30;
    let cluster = Cluster::start(3).await;
    let replicas: Vec<&Gateway> = cluster.replicas.iter().collect();
    let (id, secret, _) = replicas[0]
        .admin()
        .create_key(json!({"name": "rpm", "rate_limit_rpm": N}))
        .await;
    known_everywhere(&replicas, &id, &secret).await;

    // Fifteen clients on each replica, started together, each sending four requests.
    let barrier = Arc::new(tokio::sync::Barrier::new(45));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..45 {
        let (base, secret, barrier) = (
            replicas[client % 3].proxy_url(),
            secret.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut answers = Vec::new();
            for _ in 0..4 {
                let response = chat_gpt4o(&base, &secret).await;
                let limit = header(&response, "x-ratelimit-limit-requests");
                let remaining = header(&response, "x-ratelimit-remaining-requests");
                let reset = header(&response, "x-ratelimit-reset-requests");
                let retry = header(&response, "retry-after");
                let (status, code) = status_and_code(response).await;
                answers.push((status, code, limit, remaining, reset, retry));
            }
            answers
        }));
    }
    let mut admitted_remaining = Vec::new();
    let mut refused = 0;
    for task in tasks {
        for (status, code, limit, remaining, reset, retry) in task.await.expect("client") {
            assert_eq!(limit.as_deref(), Some("30"), "{status} {code}");
            assert!(reset.is_some_and(|r| r.ends_with('s')), "{status} {code}");
            let remaining: usize = remaining
                .and_then(|r| r.parse().ok())
                .expect("x-ratelimit-remaining-requests");
            match status {
                200 => admitted_remaining.push(remaining),
                429 => {
                    assert_eq!(code, "rate_limit_exceeded");
                    assert_eq!(remaining, 0);
                    let retry: u64 = retry.and_then(|r| r.parse().ok()).expect("Retry-After");
                    assert!((1..=60).contains(&retry), "Retry-After {retry}");
                    refused += 1;
                }
                other => panic!("{other} {code}"),
            }
        }
    }
    eprintln!(
        "cluster limits: rpm {N}: {} admitted, {refused} refused of 180 in {:.0} ms",
        admitted_remaining.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(admitted_remaining.len(), N, "exactly N admitted");
    // One window: each admission saw the count the one before it left.
    admitted_remaining.sort_unstable();
    assert_eq!(admitted_remaining, (0..N).collect::<Vec<_>>());
    assert_eq!(
        cluster.mock.hits(),
        N,
        "refused requests never reached the provider"
    );

    // Refused requests were not counted, and are not now: every replica still refuses, and
    // reports the same window.
    for replica in &replicas {
        assert_eq!(
            outcome(replica, &secret).await,
            (429, "rate_limit_exceeded".into())
        );
    }
    let view = same_view_everywhere(&replicas, &secret).await;
    assert_eq!(view["rate_limit_remaining"], 0, "{view}");
    assert_eq!(view["rate_limit_rpm"], N, "{view}");

    // The store has one usage row per admitted request, never more than N in any 60 s.
    let rows = wait_for_rows(&cluster, &id, N).await;
    assert_eq!(rows.len(), N, "one record per admitted request");
    let times: Vec<i64> = rows.iter().map(|row| row.3).collect();
    assert!(most_in_any_window(&times, 60_000) <= N);
    assert!(rows.iter().all(|row| row.2 == 200), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edits_and_revocations_on_one_replica_hold_on_the_others_at_once() {
    let cluster = Cluster::start(3).await;
    let [a, b, c] = &cluster.replicas[..] else {
        panic!("three replicas");
    };
    for round in 0..5 {
        // Keys with limits and without: both are checked against their version in Redis.
        let limits = if round % 2 == 0 {
            json!({"name": format!("limited-{round}"), "rate_limit_rpm": 100_000, "spend_limit_usd": 100})
        } else {
            json!({"name": format!("open-{round}")})
        };
        let (id, secret, _) = a.admin().create_key(limits).await;
        // B and C have the key in memory (and its version) before it changes.
        for replica in [b, c] {
            lag_until(
                &format!("round {round}: key made on A served by another replica"),
                EVENTUALLY,
                || async { outcome(replica, &secret).await.0 == 200 },
            )
            .await;
        }

        let edited = a
            .admin()
            .patch(
                &format!("/v1/keys/{id}"),
                json!({"allowed_models": ["gpt-4o-mini"]}),
            )
            .await;
        assert_eq!(edited.status, 200, "{}", edited.body);
        assert_eq!(
            outcome(b, &secret).await,
            (403, "model_not_allowed".into()),
            "round {round}: the very next request on B after the edit on A"
        );
        assert_eq!(
            outcome(c, &secret).await,
            (403, "model_not_allowed".into()),
            "round {round}: C"
        );
        let allowed = chat(
            &c.proxy_url(),
            &secret,
            json!({"model": "gpt-4o-mini", "messages": []}),
            &[],
        )
        .await;
        assert_eq!(
            allowed.status(),
            200,
            "round {round}: the model still allowed"
        );

        let revoked = a.admin().delete(&format!("/v1/keys/{id}")).await;
        assert_eq!(revoked.status, 200, "{}", revoked.body);
        let mut requests = Vec::new();
        for replica in [b, c] {
            for _ in 0..100 {
                let (base, secret) = (replica.proxy_url(), secret.clone());
                requests.push(tokio::spawn(async move {
                    let response = chat(
                        &base,
                        &secret,
                        json!({"model": "gpt-4o-mini", "messages": []}),
                        &[],
                    )
                    .await;
                    status_and_code(response).await
                }));
            }
        }
        for request in requests {
            assert_eq!(
                request.await.expect("request"),
                (403, "key_revoked".into()),
                "round {round}: a request on B or C right after the revocation on A"
            );
        }
    }
}

/// SPEC §9.3 for a new key: usable on every replica as soon as create answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_made_on_one_replica_is_usable_on_the_others_at_once() {
    let cluster = Cluster::start(3).await;
    let [a, b, c] = &cluster.replicas[..] else {
        panic!("three replicas");
    };
    for round in 0..5 {
        let body = if round % 2 == 0 {
            json!({"name": format!("new-{round}"), "rate_limit_rpm": 1000})
        } else {
            json!({"name": format!("new-{round}")})
        };
        let (_, secret, _) = a.admin().create_key(body).await;
        let (on_a, on_b, on_c) = tokio::join!(
            outcome(a, &secret),
            outcome(b, &secret),
            outcome(c, &secret)
        );
        let ok = (200, String::new());
        assert_eq!(
            (on_a, on_b, on_c),
            (ok.clone(), ok.clone(), ok),
            "round {round}: the first requests on A, B and C after create answered on A"
        );
    }
}

/// The cluster's counters live under `gw:<cluster id>:` in Redis (so clusters sharing a
/// Redis never meet), and the harness deletes them with the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clusters_counters_live_under_its_own_prefix_in_redis() {
    let cluster = Cluster::start(2).await;
    let (id, secret, _) = cluster.replicas[0]
        .admin()
        .create_key(json!({"name": "counted", "rate_limit_rpm": 10, "spend_limit_usd": 1}))
        .await;
    let replicas: Vec<&Gateway> = cluster.replicas.iter().collect();
    known_everywhere(&replicas, &id, &secret).await;
    assert_eq!(outcome(&cluster.replicas[1], &secret).await.0, 200);
    let keys = cluster.redis_keys();
    let prefix = cluster.redis_prefix();
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&prefix) && k.contains(&id)),
        "the key's ledger under {prefix}: {keys:?}"
    );
    let pattern = format!("{prefix}*");
    let url = gateway_tests::backends::shared_redis_url();
    drop(cluster);
    let left = gateway_tests::backends::redis_keys_matching(&url, &pattern).expect("SCAN");
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A key spent to its cap by requests on three replicas: every replica shows it exhausted,
/// with the same lifetime total, in its self-service and management views (the live numbers
/// come from Redis; the state and the total must agree with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_replica_shows_the_same_state_and_totals() {
    let cluster = Cluster::start_with(3, gateway_tests::requests::BUDGET_PRICES).await;
    let replicas: Vec<&Gateway> = cluster.replicas.iter().collect();
    let (id, secret, _) = replicas[0]
        .admin()
        .create_key(json!({"name": "spent-everywhere", "spend_limit_usd": 0.3}))
        .await;
    known_everywhere(&replicas, &id, &secret).await;
    for replica in &replicas {
        let response = chat(
            &replica.proxy_url(),
            &secret,
            json!({"model": "budget-model", "max_tokens": 1000, "messages": []}),
            &[("x-mock-output-tokens", "1000")],
        )
        .await;
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await;
    }
    wait_for_rows(&cluster, &id, 3).await;
    let shown = |view: &Value| (view["state"].clone(), view["spend_total_usd"].clone());
    let expected = (json!("exhausted"), json!(0.3));
    for (n, replica) in replicas.iter().enumerate() {
        lag_until(
            &format!("replica {n} shows the key exhausted, $0.30 in all"),
            Duration::from_secs(5),
            || async {
                let own = self_view(&replica.proxy_url(), &secret).await;
                let managed = key_view(replica, &id).await;
                let ok = shown(&own) == expected && shown(&managed) == expected;
                if !ok {
                    eprintln!(
                        "replica {n}: self-service {:?}, management {:?}",
                        shown(&own),
                        shown(&managed)
                    );
                }
                ok
            },
        )
        .await;
    }
}
