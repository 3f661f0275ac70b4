//! A rolling restart under steady load (SPEC §9.7, issue #17): three replicas, each in turn
//! taken out of the load balancer, stopped with SIGTERM (it drains what it has open),
//! started again and put back. Clients of a key with a rate and a spend limit see no failed
//! request; the store has exactly one usage record per answered request; and every replica
//! reports the same spend afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_tests::Cluster;
use gateway_tests::requests::chat;
use serde_json::json;

use crate::cluster_limits::{
    dollars, key_view, lag_until, same_view_everywhere, usage_rows, wait_for_rows,
};

/// What the clients send: a short stream of `gpt-4o-mini` (so some are open when a replica
/// is told to stop).
async fn request(base: &str, secret: &str) -> Result<(), String> {
    let response = chat(
        base,
        secret,
        json!({"model": "gpt-4o-mini", "stream": true, "messages": []}),
        &[("x-mock-delay-ms", "10")],
    )
    .await;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| format!("(body: {e})"));
    if status == 200 && body.ends_with("data: [DONE]\n\n") {
        Ok(())
    } else {
        Err(format!("{status} from {base}: {body}"))
    }
}

/// A client of the load balancer: round-robin over the replicas it lists, until `stop`.
/// Returns how many requests were answered whole, and every failure.
async fn client(
    balancer: Arc<Mutex<Vec<String>>>,
    secret: String,
    stop: Arc<AtomicBool>,
    start: usize,
) -> (usize, Vec<String>) {
    let mut answered = 0;
    let mut failures = Vec::new();
    let mut turn = start;
    while !stop.load(Ordering::Relaxed) {
        let base = {
            let live = balancer.lock().expect("balancer");
            turn += 1;
            live[turn % live.len()].clone()
        };
        match request(&base, &secret).await {
            Ok(()) => answered += 1,
            Err(failure) => failures.push(failure),
        }
    }
    (answered, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_request_and_records_each_once() {
    let mut cluster = Cluster::start(3).await;
    let (id, secret, _) = cluster.replicas[0]
        .admin()
        .create_key(json!({"name": "steady", "rate_limit_rpm": 100_000, "spend_limit_usd": 100}))
        .await;
    // Served everywhere before the load starts (how soon is `cluster_limits`' concern).
    let warm = std::sync::atomic::AtomicUsize::new(0);
    for replica in &cluster.replicas {
        lag_until(
            "the key served by every replica",
            Duration::from_secs(10),
            || async {
                let ok = request(&replica.proxy_url(), &secret).await.is_ok();
                warm.fetch_add(usize::from(ok), Ordering::Relaxed);
                ok
            },
        )
        .await;
    }
    let mut answered = warm.into_inner();
    let balancer = Arc::new(Mutex::new(
        cluster
            .replicas
            .iter()
            .map(|r| r.proxy_url())
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|n| tokio::spawn(client(balancer.clone(), secret.clone(), stop.clone(), n)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    for n in 0..3 {
        // Out of the balancer first; then, once no client can still be about to pick it,
        // SIGTERM with one long stream open on it, which the drain lets finish.
        let old = cluster.replicas[n].proxy_url();
        balancer.lock().expect("balancer").retain(|url| *url != old);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let draining = {
            let (base, secret) = (old.clone(), secret.clone());
            tokio::spawn(async move {
                let response = chat(
                    &base,
                    &secret,
                    json!({"model": "gpt-4o-mini", "stream": true, "messages": []}),
                    &[("x-mock-delay-ms", "300"), ("x-mock-events", "4")],
                )
                .await;
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopping = Instant::now();
        let status = cluster.replicas[n].stop().await;
        assert!(status.success(), "replica {n} stopped cleanly: {status:?}");
        let (drained_status, body) = draining.await.expect("draining stream");
        assert_eq!(drained_status, 200, "{body}");
        assert!(body.ends_with("data: [DONE]\n\n"), "drained whole: {body}");
        cluster.replicas[n].start_again().await;
        eprintln!(
            "cluster limits: replica {n} stopped and started again in {:.0} ms",
            stopping.elapsed().as_secs_f64() * 1000.0
        );
        balancer
            .lock()
            .expect("balancer")
            .push(cluster.replicas[n].proxy_url());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    answered += 3; // the drained streams
    let mut failures = Vec::new();
    for client in clients {
        let (ok, failed) = client.await.expect("client");
        answered += ok;
        failures.extend(failed);
    }
    eprintln!(
        "cluster limits: rolling restart: {answered} answered, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(answered > 30, "the load ran: {answered}");

    // One record per answered request: none lost in a restart, none written twice.
    let rows = wait_for_rows(&cluster, &id, answered).await;
    assert_eq!(rows.len(), answered, "records == answered requests");
    assert!(
        rows.iter().all(|row| row.2 == 200 && row.1 == "reported"),
        "{rows:?}"
    );
    let daily = cluster
        .store()
        .await
        .query_one(
            "SELECT COALESCE(sum(requests), 0)::bigint FROM usage_daily WHERE key_id = $1",
            &[&id],
        )
        .await
        .expect("rollup");
    assert_eq!(
        usize::try_from(daily.get::<_, i64>(0)).expect("sum"),
        answered,
        "the rollup counts each record once"
    );

    // Every replica (all restarted) reports the spend the records add up to.
    let total: i64 = usage_rows(&cluster, &id)
        .await
        .iter()
        .map(|row| row.0)
        .sum();
    let replicas: Vec<_> = cluster.replicas.iter().collect();
    lag_until("settled everywhere", Duration::from_secs(10), || async {
        same_view_everywhere(&replicas, &secret).await["requests_in_flight"] == 0
    })
    .await;
    let view = same_view_everywhere(&replicas, &secret).await;
    assert_eq!(
        (dollars(&view["spend_period_usd"]) * 1e9).round() as i64,
        total,
        "{view}"
    );
    assert_eq!(view["reserved_usd"], 0.0, "{view}");
    for replica in &replicas {
        let shown = key_view(replica, &id).await;
        assert_eq!(shown["request_count"], answered, "{shown}");
    }
}
