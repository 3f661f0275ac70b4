//! Cluster mode, part 1 (SPEC §9, issue #16): real `gatewayd` replicas sharing one real
//! PostgreSQL store. A key or admin token changed through any replica reaches every replica's
//! memory (the lag is measured and printed), audit shows the whole cluster, replicas started
//! together migrate once, and nothing secret reaches a log.

use std::future::Future;
use std::time::{Duration, Instant};

use gateway_tests::requests::chat_gpt4o;
use gateway_tests::{Cluster, Gateway, PrivatePostgres, https};
use serde_json::{Value, json};

/// How long a change may take to reach another replica before the test fails: generous,
/// because the machine is shared with the rest of the suite; the measured lag is printed.
const PROPAGATION_BOUND: Duration = Duration::from_secs(10);

/// Polls `check` until it holds; returns how long that took.
async fn lag_until<F, Fut>(what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    lag_within(what, PROPAGATION_BOUND, check).await
}

/// [`lag_until`] with a bound of its own.
pub(crate) async fn lag_within<F, Fut>(what: &str, bound: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            let lag = start.elapsed();
            eprintln!("cluster lag: {what}: {:.1} ms", lag.as_secs_f64() * 1000.0);
            return lag;
        }
        assert!(start.elapsed() < bound, "{what}: not seen within {bound:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn key_view(replica: &Gateway, id: &str) -> Option<Value> {
    let response = replica.admin().get(&format!("/v1/keys/{id}")).await;
    (response.status == 200).then_some(response.body)
}

async fn status_of(replica: &Gateway, secret: &str) -> u16 {
    chat_gpt4o(&replica.proxy_url(), secret)
        .await
        .status()
        .as_u16()
}

async fn error_code_of(replica: &Gateway, secret: &str) -> (u16, String) {
    let response = chat_gpt4o(&replica.proxy_url(), secret).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_made_on_one_replica_is_served_by_every_replica_and_its_changes_follow() {
    let cluster = Cluster::start(3).await;
    let [a, b, c] = &cluster.replicas[..] else {
        panic!("three replicas");
    };

    let (id, secret, _) = a.admin().create_key(json!({"name": "shared"})).await;
    lag_until("create on A → listed on B", || async {
        key_view(b, &id).await.is_some()
    })
    .await;
    lag_until("create on A → served by C", || async {
        status_of(c, &secret).await == 200
    })
    .await;
    let listed = c.admin().get("/v1/keys").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(
        listed.body.to_string().contains(&id),
        "C lists the key made on A: {}",
        listed.body
    );

    // Usage from every replica, in one report read through any of them: the one request C
    // answered above and two more on each replica.
    for replica in [a, b, c] {
        for _ in 0..2 {
            assert_eq!(status_of(replica, &secret).await, 200);
        }
    }
    lag_until("usage on A, B and C → one report on B", || async {
        let report = b.admin().get(&format!("/v1/keys/{id}/usage")).await;
        report.status == 200 && report.body["total"]["requests"] == json!(7)
    })
    .await;

    // Every replica sees the others' heartbeats (one every 10 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = c.gwctl(&["cluster", "status", "-o", "json"]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let status: Value = serde_json::from_str(&out.stdout).expect("cluster status JSON");
        if status["replicas"].as_array().map(Vec::len) == Some(3) || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["mode"], "cluster", "{status}");
    assert_eq!(status["backends"]["store"]["kind"], "postgres", "{status}");
    assert_eq!(status["backends"]["store"]["status"], "ok", "{status}");
    let mut ids: Vec<String> = status["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = [a, b, c]
        .iter()
        .map(|r| {
            std::fs::read_to_string(r.data_dir.join("replica-id"))
                .expect("replica-id")
                .trim()
                .to_owned()
        })
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "{status}");

    // An edit on A that removes the model: B refuses it as soon as it has the change.
    let edited = a
        .admin()
        .patch(
            &format!("/v1/keys/{id}"),
            json!({"allowed_models": ["gpt-4o-mini"]}),
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    lag_until("edit on A → enforced on B", || async {
        error_code_of(b, &secret).await == (403, "model_not_allowed".into())
    })
    .await;

    // A revocation on A: C refuses the key as revoked.
    let revoked = a.admin().delete(&format!("/v1/keys/{id}")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    lag_until("revoke on A → enforced on C", || async {
        error_code_of(c, &secret).await == (403, "key_revoked".into())
    })
    .await;
    lag_until("revoke on A → enforced on B", || async {
        error_code_of(b, &secret).await == (403, "key_revoked".into())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_tokens_and_rotations_reach_every_replica_and_audit_shows_the_whole_cluster() {
    let cluster = Cluster::start(3).await;
    let [a, b, c] = &cluster.replicas[..] else {
        panic!("three replicas");
    };

    // An admin token made on A authenticates on B's HTTPS listener.
    let (token_id, token) = a.admin().create_admin_token("ops").await;
    let pem = std::fs::read(b.admin_cert()).expect("B's certificate");
    let client = https::client_trusting(&pem);
    let edit_on_b = |name: &'static str, key: String| {
        let client = client.clone();
        let url = format!("{}/v1/keys/{key}", b.admin_url());
        let token = token.clone();
        async move {
            client
                .patch(url)
                .bearer_auth(token)
                .json(&json!({ "name": name }))
                .send()
                .await
                .expect("HTTPS request")
                .status()
                .as_u16()
        }
    };
    let (id, secret, _) = a.admin().create_key(json!({"name": "audited"})).await;
    lag_until("admin token and key made on A → usable on B", || {
        let edit = edit_on_b("renamed-on-b", id.clone());
        async move { edit.await == 200 }
    })
    .await;
    assert_eq!(edit_on_b("renamed-on-b", id.clone()).await, 200);

    // Audit on C: the creation by A's socket actor and the edit by the token on B.
    let audit = c.admin().get(&format!("/v1/audit?key_id={id}")).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let entries = audit.body["entries"].as_array().expect("entries");
    let by = |action: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|entry| entry["action"] == action)
            .map(|entry| entry["actor"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let socket_actor = format!("uid:{}", rustix::process::getuid().as_raw());
    assert_eq!(by("key.create"), [socket_actor], "{}", audit.body);
    assert_eq!(
        by("key.update"),
        [format!("token:{token_id}")],
        "C's audit names the token that edited on B: {}",
        audit.body
    );

    // Rotating on B: the new secret works on A and C, the old one for its grace period.
    let (new_id, new_secret, _) = b.admin().rotate_key(&id, 600).await;
    lag_until("rotate on B → new secret served by A", || async {
        status_of(a, &new_secret).await == 200
    })
    .await;
    lag_until("rotate on B → replaced_by shown on C", || async {
        key_view(c, &id)
            .await
            .is_some_and(|view| view["replaced_by"] == json!(new_id))
    })
    .await;
    assert_eq!(status_of(c, &secret).await, 200, "old secret in its grace");

    // Revoking the token on C: B stops accepting it.
    let revoked = c
        .admin()
        .delete(&format!("/v1/admin-tokens/{token_id}"))
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    lag_until("admin token revoked on C → refused on B", || {
        let edit = edit_on_b("after-revoke", id.clone());
        async move { edit.await == 401 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_started_together_on_an_empty_database_migrate_it_once() {
    let database = gateway_tests::shared_postgres_database().await;
    let cluster = Cluster::start_together_on(3, database.url()).await;
    assert_eq!(cluster.replicas.len(), 3);
    let client = database.connect().await;
    let rows = client
        .query(
            "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version",
            &[],
        )
        .await
        .expect("schema_migrations");
    assert!(!rows.is_empty(), "migrations were applied");
    for row in &rows {
        let count: i64 = row.get(1);
        assert_eq!(count, 1, "migration {} applied once", row.get::<_, i64>(0));
    }
    // And they all serve one store: a key made on the last is served by the first.
    let (_, secret, _) = cluster.replicas[2]
        .admin()
        .create_key(json!({"name": "together"}))
        .await;
    lag_until("key on replica 3 → served by replica 1", || async {
        status_of(&cluster.replicas[0], &secret).await == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_with_limits_share_one_window_and_one_ledger_across_replicas() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (&cluster.replicas[0], &cluster.replicas[1]);
    let (_, limited, _) = a
        .admin()
        .create_key(json!({"name": "rpm", "rate_limit_rpm": 3}))
        .await;
    let (capped_id, capped, _) = a
        .admin()
        .create_key(json!({"name": "cap", "spend_limit_usd": 5.0}))
        .await;
    // Three admitted in all, whichever replica answers; the fourth is refused on both.
    assert_eq!(status_of(a, &limited).await, 200);
    assert_eq!(status_of(b, &limited).await, 200);
    assert_eq!(status_of(a, &limited).await, 200);
    for replica in [a, b] {
        let response = chat_gpt4o(&replica.proxy_url(), &limited).await;
        assert_eq!(response.status().as_u16(), 429);
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(response.headers()["x-ratelimit-remaining-requests"], "0");
    }
    // A spend-limited key is served on B. Its settlement is queued before B writes the
    // answer (the meter sees the upstream body end first), and a view flushes its replica's
    // queued settlements before it reads Redis: so B's view, asked at once on the same
    // keep-alive connection (well within the settler's 2 ms gather window, where it read 0
    // before the flush), counts the request, as one server's does; A's, read after it,
    // shows the same. In a loop: a window missed once in a while would show.
    let client = reqwest::Client::new();
    let mut served = Value::Null;
    let mut spent_before = 0.0;
    for _ in 0..20 {
        let response = client
            .post(format!("{}/v1/chat/completions", b.proxy_url()))
            .bearer_auth(&capped)
            .json(&json!({"model": "gpt-4o", "messages": []}))
            .send()
            .await
            .expect("chat");
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.expect("the whole answer");
        served = gateway_tests::requests::self_view_with(&client, &b.proxy_url(), &capped).await;
        assert_eq!(
            served["requests_in_flight"], 0,
            "a finished request still held: {served}"
        );
        assert_eq!(served["reserved_usd"], 0.0, "{served}");
        let spent = served["spend_period_usd"].as_f64().expect("spend");
        assert!(spent > spent_before, "its spend not counted yet: {served}");
        spent_before = spent;
    }
    let other = gateway_tests::requests::self_view(&a.proxy_url(), &capped).await;
    let views = [other, served];
    assert_eq!(views[0]["spend_period_usd"], views[1]["spend_period_usd"]);
    assert_eq!(views[0]["remaining_usd"], views[1]["remaining_usd"]);
    let spent = &views[0]["spend_period_usd"];
    let spent = spent
        .as_f64()
        .or_else(|| spent.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0.0);
    assert!(spent > 0.0, "{views:?}");
    let view = key_view(a, &capped_id).await.expect("view");
    assert_eq!(view["spend_period_usd"], views[0]["spend_period_usd"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_refuses_to_start_when_the_store_is_unreachable_and_says_why() {
    let mut server = PrivatePostgres::start().await;
    let url = server.url();
    server.stop().await;
    let cluster = Cluster::prepare(&url, None).await;
    let options = cluster.options("");
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("gatewayd.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[admin]\nsocket = {:?}\nlisten = \"127.0.0.1:0\"\n[proxy]\nlisten = \"127.0.0.1:0\"\n{}",
            dir.path().join("data").display().to_string(),
            dir.path().join("admin.sock").display().to_string(),
            options.extra_config
        ),
    )
    .expect("config");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        gateway_tests::gateway::gatewayd_command(&config, "info").output(),
    )
    .await
    .expect("gatewayd exits")
    .expect("run gatewayd");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("shared store") && stderr.contains(&server.port().to_string()),
        "{stderr}"
    );
    assert!(
        !stderr.contains(gateway_tests::cluster::STORE_PASSWORD),
        "the password reached stderr: {stderr}"
    );
}

/// Requests through the proxy `urls`, in turn, until `stop`: the answered count and every
/// failure.
async fn load(
    urls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    secret: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u64, Vec<String>) {
    let mut answered = 0;
    let mut failures = Vec::new();
    let mut turn = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let url = {
            let urls = urls.lock().expect("urls");
            turn += 1;
            urls[turn % urls.len()].clone()
        };
        let response = chat_gpt4o(&url, &secret).await;
        let status = response.status().as_u16();
        if status == 200 {
            answered += 1;
        } else {
            failures.push(format!(
                "{status} from {url}: {}",
                response.text().await.unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (answered, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_for_30_s_under_load_fails_no_request_and_every_record_lands_once() {
    let mut server = PrivatePostgres::start().await;
    let mut cluster = Cluster::prepare(&server.url(), None).await;
    cluster.add("").await;
    cluster.add("").await;
    let (id, secret, _) = cluster.replicas[0]
        .admin()
        .create_key(json!({"name": "through-the-outage"}))
        .await;
    // Answered requests before the load, counted with it.
    let answered_before = std::sync::atomic::AtomicU64::new(0);
    lag_until("key on A → served by B", || async {
        let ok = status_of(&cluster.replicas[1], &secret).await == 200;
        answered_before.fetch_add(u64::from(ok), std::sync::atomic::Ordering::Relaxed);
        ok
    })
    .await;

    let urls = std::sync::Arc::new(std::sync::Mutex::new(
        cluster
            .replicas
            .iter()
            .map(Gateway::proxy_url)
            .collect::<Vec<_>>(),
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = tokio::spawn(load(
        std::sync::Arc::clone(&urls),
        secret.clone(),
        std::sync::Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outage = Instant::now();
    server.stop().await;

    // Management refuses while the store is away; health says degraded but serving.
    let a = cluster.replicas[0].admin();
    let a_proxy = cluster.replicas[0].proxy_url();
    lag_until(
        "store stopped → management 503 store_unavailable on A",
        || async {
            let response = a.get("/v1/keys").await;
            response.status == 503 && response.error_code() == "store_unavailable"
        },
    )
    .await;
    let health = a.get("/healthz").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.body["store"], "unavailable", "{}", health.body);
    let metrics = a
        .get("/metrics")
        .await
        .body
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        metrics.contains(r#"gateway_backend_up{backend="store"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"gateway_store_errors_total{operation="change_feed",kind="unavailable"}"#),
        "{metrics}"
    );
    let proxy_health = reqwest::get(format!("{a_proxy}/healthz"))
        .await
        .expect("proxy healthz");
    assert_eq!(proxy_health.status().as_u16(), 200);

    // B restarts during the outage: its spooled records survive on disk. (A replica cannot
    // *start* while the store is away, SPEC §9.6: it comes back once the store does.)
    urls.lock().expect("urls").truncate(1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = cluster.replicas[1].stop().await;
    assert!(status.success(), "B stopped cleanly during the outage");
    let spool = cluster.replicas[1].data_dir.join("spool");
    assert!(
        std::fs::read_dir(&spool).expect("B's spool").count() > 0,
        "B spooled what it served"
    );

    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    server.start_again().await;
    cluster.replicas[1].start_again().await;
    let b_url = cluster.replicas[1].proxy_url();
    urls.lock().expect("urls").push(b_url);
    lag_until("store back → management answers on A", || async {
        a.get("/v1/keys").await.status == 200
    })
    .await;
    let metrics = a
        .get("/metrics")
        .await
        .body
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        metrics.contains(r#"gateway_backend_up{backend="store"} 1"#),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, failures) = traffic.await.expect("load task");
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(answered > 100, "load ran: {answered}");
    let answered = answered + answered_before.into_inner();

    // Every answered request's record, exactly once (record ids are the primary key, so a
    // duplicate cannot hide: count them all).
    let client = server.connect().await;
    let counted = || async {
        let row = client
            .query_one("SELECT count(*) FROM usage WHERE key_id = $1", &[&id])
            .await
            .expect("count usage");
        u64::try_from(row.get::<_, i64>(0)).expect("count")
    };
    // Delivery is no latency path (a spool waits for a quiet writer, and the whole suite
    // shares two cores): a generous bound; a lost record fails the count below whatever
    // the wait.
    lag_within(
        "spools delivered → usage rows equal answered requests",
        Duration::from_secs(45),
        || async { counted().await >= answered },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        counted().await,
        answered,
        "no lost and no duplicated record"
    );
    for replica in &cluster.replicas {
        let left = std::fs::read_dir(replica.data_dir.join("spool"))
            .expect("spool")
            .count();
        assert_eq!(left, 0, "spool delivered and emptied");
    }
    let daily = client
        .query_one(
            "SELECT COALESCE(sum(requests), 0)::bigint FROM usage_daily WHERE key_id = $1",
            &[&id],
        )
        .await
        .expect("rollup");
    assert_eq!(
        u64::try_from(daily.get::<_, i64>(0)).expect("sum"),
        answered,
        "the rollup counts each record once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_pointed_at_another_database_refuses_to_start_until_told_to_join_it() {
    let mut cluster = Cluster::start(1).await;
    let (_, secret, _) = cluster.replicas[0]
        .admin()
        .create_key(json!({"name": "in-the-first-cluster"}))
        .await;
    let status = cluster.replicas[0].stop().await;
    assert!(status.success());

    // Restarted on an empty database (a wrong URL, a server restored empty): it would serve no
    // keys while claiming to be healthy, so it refuses, naming both clusters.
    let fresh = gateway_tests::shared_postgres_database().await;
    cluster.point_at(fresh.url());
    let replica = &cluster.replicas[0];
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        gateway_tests::gateway::gatewayd_command(&replica.config_path, "info").output(),
    )
    .await
    .expect("gatewayd exits")
    .expect("run gatewayd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let id_file = replica.data_dir.join("cluster-id");
    assert!(
        stderr.contains(&id_file.display().to_string()),
        "names the file to remove: {stderr}"
    );
    assert!(
        !stderr.contains(gateway_tests::cluster::STORE_PASSWORD),
        "{stderr}"
    );

    // Joining the new cluster on purpose: remove the file.
    std::fs::remove_file(&id_file).expect("remove cluster-id");
    cluster.replicas[0].start_again().await;
    assert_eq!(
        error_code_of(&cluster.replicas[0], &secret).await,
        (401, "invalid_key".into()),
        "the new cluster does not know the old one's keys"
    );
}
