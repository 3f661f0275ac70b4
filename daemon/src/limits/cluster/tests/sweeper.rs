//! The sweeper: lapsed holds charged their estimate and handed over once, even with two
//! replicas sweeping; backing off while Redis does not answer, sweeping once it does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::limits::cluster::sweeper::{self, period};
use crate::limits::redis::Swept;

#[test]
fn the_period_is_a_quarter_lease_and_at_most_five_seconds() {
    assert_eq!(period(Duration::from_secs(900)), Duration::from_secs(5));
    assert_eq!(period(Duration::from_secs(8)), Duration::from_secs(2));
    assert_eq!(
        period(Duration::from_millis(200)),
        Duration::from_millis(50)
    );
}

fn collector() -> (Arc<Mutex<Vec<Swept>>>, impl FnMut(Swept) + Send + 'static) {
    let swept = Arc::new(Mutex::new(Vec::new()));
    let sink = swept.clone();
    (swept, move |hold| sink.lock().expect("lock").push(hold))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sweep_each_lapsed_hold_once() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "a").await;
    seeded(&limits, "b").await;
    let short = Duration::from_millis(200);
    admitted(&limits, &spending("a", hold(1), 10_000, 500, 10, short)).await;
    admitted(&limits, &spending("a", hold(2), 10_000, 500, 20, short)).await;
    admitted(&limits, &spending("b", hold(3), 10_000, 500, 30, short)).await;
    // Still running on a live replica: never swept.
    admitted(
        &limits,
        &spending("a", hold(4), 10_000, 500, 40, Duration::from_secs(60)),
    )
    .await;

    let stop = CancellationToken::new();
    let (swept, sink) = collector();
    let (swept_too, sink_too) = collector();
    let one = tokio::spawn(sweeper::run(limits.clone(), short, stop.clone(), sink));
    let two = tokio::spawn(sweeper::run(
        harness.limits().await,
        short,
        stop.clone(),
        sink_too,
    ));
    let total = || swept.lock().expect("lock").len() + swept_too.lock().expect("lock").len();
    assert!(eventually(Duration::from_secs(5), || total() >= 3).await);
    // A few more periods: nothing is handed over twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let (one, two) = (one.await.expect("one"), two.await.expect("two"));
    assert_eq!((one.failures, two.failures), (0, 0));
    assert!(one.sweeps >= 5 && two.sweeps >= 5, "{one:?} {two:?}");
    assert_eq!(one.swept + two.swept, 3);
    let mut all: Vec<(String, HoldId, u64)> = swept
        .lock()
        .expect("lock")
        .iter()
        .chain(swept_too.lock().expect("lock").iter())
        .map(|s| (s.key_id.clone(), s.hold, s.estimate))
        .collect();
    all.sort();
    assert_eq!(
        all,
        [
            ("a".to_owned(), hold(1), 10),
            ("a".to_owned(), hold(2), 20),
            ("b".to_owned(), hold(3), 30)
        ]
    );
    let a = limits.peek("a", "a", None, None).await.expect("peek");
    assert_eq!((a.spent, a.held, a.open_holds), (30, 500, 1));
    let b = limits.peek("b", "b", None, None).await.expect("peek");
    assert_eq!((b.spent, b.held, b.open_holds), (30, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweeper_backs_off_while_redis_is_away_and_sweeps_when_it_is_back() {
    let redis = PrivateRedis::start().await;
    let limits = redis.limits(Duration::from_millis(200)).await;
    seeded(&limits, "k").await;
    let lease = Duration::from_secs(2);
    admitted(
        &limits,
        &spending("k", hold(1), 10_000, 500, 70, Duration::from_millis(300)),
    )
    .await;

    redis.pause(true);
    let stop = CancellationToken::new();
    let (swept, sink) = collector();
    let task = tokio::spawn(sweeper::run(limits.clone(), lease, stop.clone(), sink));
    // The hold lapses while Redis does not answer.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(swept.lock().expect("lock").is_empty());
    redis.pause(false);
    let back = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || swept.lock().expect("lock").len()
            == 1)
        .await
    );
    // Backing off never waits longer than a period (lease / 4) plus a timed-out call.
    assert!(
        back.elapsed() < period(lease) + Duration::from_millis(300),
        "{:?}",
        back.elapsed()
    );
    stop.cancel();
    let stats = task.await.expect("sweeper");
    assert!(stats.failures >= 2, "{stats:?}");
    assert_eq!(stats.swept, 1);
    assert_eq!(swept.lock().expect("lock")[0].estimate, 70);
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (70, 0, 0));
}
