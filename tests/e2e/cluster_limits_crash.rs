//! A replica that vanishes (SPEC §9.4, issue #17): `kill -9` of one of three replicas while
//! it has requests open. Their holds are charged their estimate once the lease passes (never
//! released free: the provider may have billed them), by a live replica's sweeper, with one
//! usage record each; the requests it admitted stay counted in the rate window; a live
//! replica's request longer than the lease is renewed, not swept; afterwards nothing is held
//! and every replica reports the same spend as the store's records.

use std::time::{Duration, Instant};

use gateway_tests::requests::{BUDGET_PRICES, chat, self_view};
use gateway_tests::{Cluster, Gateway};
use serde_json::{Value, json};

use crate::cluster_limits::{
    dollars, key_view, known_everywhere, lag_until, outcome, same_view_everywhere, usage_rows,
    wait_for_rows,
};

/// What one request of [`dime`] holds.
const DIME_NANOS: i64 = 100_000_000;

/// The lease the replicas run with (the least allowed), and how often they sweep.
const LEASE: Duration = Duration::from_secs(10);
const SWEEP_PERIOD: Duration = Duration::from_millis(2500);

/// A dime: `budget-model` with 1000 output tokens at most holds $0.10.
fn dime(stream: bool) -> Value {
    json!({"model": "budget-model", "max_tokens": 1000, "stream": stream, "messages": []})
}

/// Opens on `replica` two requests the mock holds before answering and three streams that
/// stall after their first event; returns what keeps them open.
async fn open_on(
    replica: &Gateway,
    secret: &str,
) -> (Vec<tokio::task::JoinHandle<()>>, Vec<reqwest::Response>) {
    let base = replica.proxy_url();
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let (base, secret) = (base.clone(), secret.to_owned());
        // Not `chat`, which panics when the kill cuts the connection.
        waiting.push(tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&secret)
                .header("x-mock-headers-delay-ms", "60000")
                .json(&dime(false))
                .send()
                .await;
        }));
    }
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = chat(&base, secret, dime(true), &[("x-mock-stall", "1")]).await;
        assert_eq!(stream.status(), 200);
        let first = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("the first event arrives")
            .expect("chunk");
        assert!(first.is_some(), "the stream is open");
        streams.push(stream);
    }
    (waiting, streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holds_of_a_killed_replica_are_charged_after_their_lease_and_nothing_stays_held() {
    let mut cluster =
        Cluster::start_with(3, &format!("hold_lease = \"10s\"\n{BUDGET_PRICES}")).await;
    let (id, secret, _) = cluster.replicas[0]
        .admin()
        .create_key(json!({"name": "crash", "spend_limit_usd": 1.0, "rate_limit_rpm": 7}))
        .await;
    {
        let all: Vec<&Gateway> = cluster.replicas.iter().collect();
        known_everywhere(&all, &id, &secret).await;
    }

    // On A, a stream longer than the lease: A renews its hold, so it is settled as it ends.
    let slow = {
        let (base, secret) = (cluster.replicas[0].proxy_url(), secret.clone());
        tokio::spawn(async move {
            let response = chat(
                &base,
                &secret,
                dime(true),
                &[
                    ("x-mock-delay-ms", "1000"),
                    ("x-mock-events", "14"),
                    ("x-mock-output-tokens", "600"),
                ],
            )
            .await;
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        })
    };
    // On C, five requests open.
    let (waiting, streams) = open_on(&cluster.replicas[2], &secret).await;
    lag_until(
        "six requests reached the provider",
        Duration::from_secs(10),
        || async { cluster.mock.hits() == 6 },
    )
    .await;
    let all: Vec<&Gateway> = cluster.replicas.iter().collect();
    let view = same_view_everywhere(&all, &secret).await;
    assert_eq!(view["requests_in_flight"], 6, "{view}");
    assert_eq!(view["reserved_usd"], 0.6, "{view}");
    // The seventh admission of the minute, on B: $0.001.
    let quick = chat(
        &cluster.replicas[1].proxy_url(),
        &secret,
        json!({"model": "budget-model", "max_tokens": 10, "messages": []}),
        &[("x-mock-output-tokens", "10")],
    )
    .await;
    assert_eq!(quick.status(), 200);
    let _ = quick.bytes().await;

    let killed = Instant::now();
    cluster.kill9(2).await;
    for task in &waiting {
        task.abort();
    }
    drop(streams);

    // What C admitted stays in the window.
    assert_eq!(
        outcome(&cluster.replicas[1], &secret).await,
        (429, "rate_limit_exceeded".into()),
        "the killed replica's admissions still count"
    );

    // Its five holds are charged once their lease passed: by a live replica's sweeper.
    let estimated = || async {
        usage_rows(&cluster, &id)
            .await
            .into_iter()
            .filter(|row| row.1 == "estimated")
            .collect::<Vec<_>>()
    };
    lag_until(
        "kill -9 → the dead replica's holds charged",
        LEASE + SWEEP_PERIOD + Duration::from_secs(8),
        || async { estimated().await.len() >= 5 },
    )
    .await;
    let charged_after = killed.elapsed();
    assert!(
        charged_after >= LEASE / 2,
        "charged {charged_after:?} after the kill: before their lease could have passed"
    );
    let swept = estimated().await;
    eprintln!("cluster limits: swept holds charged (nano-dollars): {swept:?}");
    assert_eq!(swept.len(), 5, "each charged once: {swept:?}");
    assert!(
        swept.iter().all(|row| row.0 == DIME_NANOS),
        "never released free: each charged what it held, as one server charges a crash's \
         holds: {swept:?}"
    );

    // A's stream outlived the lease and ended whole, billed what it reported.
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), slow)
        .await
        .expect("A's slow stream ends")
        .expect("task");
    assert_eq!(status, 200);
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");

    let rows = wait_for_rows(&cluster, &id, 7).await;
    assert_eq!(rows.len(), 7, "{rows:?}");
    let mut reported: Vec<i64> = rows
        .iter()
        .filter(|row| row.1 == "reported")
        .map(|row| row.0)
        .collect();
    reported.sort_unstable();
    assert_eq!(reported, [1_000_000, 60_000_000], "{rows:?}");

    // Nothing stays held; both live replicas say what the store says.
    let live = [&cluster.replicas[0], &cluster.replicas[1]];
    lag_until("nothing in flight", Duration::from_secs(10), || async {
        self_view(&live[0].proxy_url(), &secret).await["requests_in_flight"] == 0
    })
    .await;
    let view = same_view_everywhere(&live, &secret).await;
    assert_eq!(view["reserved_usd"], 0.0, "{view}");
    let total: i64 = rows.iter().map(|row| row.0).sum();
    assert_eq!(
        (dollars(&view["spend_period_usd"]) * 1e9).round() as i64,
        total,
        "{view}"
    );
    for replica in live {
        let shown = key_view(replica, &id).await;
        assert_eq!(
            (dollars(&shown["spend_period_usd"]) * 1e9).round() as i64,
            total,
            "{shown}"
        );
    }
}
