//! The settler: batches, one round trip each; a settlement from `Drop` on a thread with no
//! runtime; renewals that outlive the lease; retries while Redis does not answer; a
//! shutdown that drains, then leaves the rest to the sweeper; renewals that settlements
//! arriving without pause do not starve.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::*;
use crate::limits::cluster::settler::{Leftover, Settler, SettlerConfig};

const LIMIT: u64 = 1_000_000_000_000;

/// A request's guard as the wiring will have it: settles when dropped.
struct Guard {
    settler: Settler,
    owner: Arc<str>,
    hold: HoldId,
    actual: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.settler
            .settle(self.owner.clone(), self.hold, self.actual, 0);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn settlements_queued_together_go_in_one_round_trip_a_batch() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    seeded(&limits, "k").await;
    let lease = Duration::from_secs(60);
    for seq in 0..1000 {
        admitted(
            &limits,
            &spending("k", hold(seq), LIMIT, 1_000, 1_000, lease),
        )
        .await;
    }
    let stop = CancellationToken::new();
    let (settler, task) = Settler::spawn(limits.clone(), SettlerConfig::new(lease), stop.clone());
    let owner: Arc<str> = "k".into();
    let guards: Vec<Guard> = (0..1000)
        .map(|seq| {
            settler.open(owner.clone(), hold(seq), 1_000);
            Guard {
                settler: settler.clone(),
                owner: owner.clone(),
                hold: hold(seq),
                actual: seq % 7 + 1,
            }
        })
        .collect();
    // Dropped on a thread with no runtime, as a request's guard may be; the settler's task
    // (this runtime has one thread) runs only once they are all queued.
    std::thread::spawn(move || drop(guards))
        .join()
        .expect("the dropping thread");
    // One settled twice: billed once.
    settler.settle(owner.clone(), hold(0), 1, 0);
    let started = Instant::now();
    assert!(eventually(Duration::from_secs(10), || settler.stats().settled == 1001).await);
    eprintln!(
        "1001 settlements in 2 round trips: {:?} (polled every 10 ms)",
        started.elapsed()
    );
    let stats = settler.stats();
    assert_eq!(stats.batches, 2, "1001 settlements, 512 a batch: {stats:?}");
    assert_eq!(stats.failures, 0);
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    let billed: u64 = (0..1000).map(|seq| seq % 7 + 1).sum();
    assert_eq!((peek.spent, peek.held, peek.open_holds), (billed, 0, 0));
    stop.cancel();
    assert_eq!(task.await.expect("task"), Leftover::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_holds_outlive_their_lease_and_a_stopped_settler_leaves_them_to_the_sweeper() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    let other_replica = harness.limits().await;
    seeded(&limits, "k").await;
    let lease = Duration::from_millis(900);
    for seq in [1, 2] {
        admitted(&limits, &spending("k", hold(seq), LIMIT, 500, 100, lease)).await;
    }
    let stop = CancellationToken::new();
    let (settler, task) = Settler::spawn(limits.clone(), SettlerConfig::new(lease), stop.clone());
    let owner: Arc<str> = "k".into();
    settler.open(owner.clone(), hold(1), 100);
    settler.open(owner.clone(), hold(2), 100);
    // A stream that has cost more than its estimate so far.
    settler.raise_estimate(hold(2), 250);
    // Well past two leases: another replica's sweeper finds nothing to charge.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(other_replica.sweep(100).await.expect("sweep"), vec![]);
    let stats = settler.stats();
    assert!(stats.renewals >= 5, "every lease / 3: {stats:?}");
    assert_eq!(stats.failures, 0);

    // One settles; then the replica stops with the other still open.
    settler.settle(owner.clone(), hold(1), 40, 0);
    stop.cancel();
    let leftover = task.await.expect("task");
    assert_eq!(leftover, Leftover { unsent: 0, open: 1 });
    // Nobody renews it now: past its lease it is charged its raised estimate, once.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let swept = other_replica.sweep(100).await.expect("sweep");
    assert_eq!(
        swept
            .iter()
            .map(|s| (s.hold, s.estimate))
            .collect::<Vec<_>>(),
        [(hold(2), 250)]
    );
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (290, 0, 0));
    // A settlement after the settler stopped is not lost silently: it is logged, and the
    // sweep already charged the hold.
    settler.settle(owner, hold(2), 1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_is_retried_until_redis_answers_and_a_shutdown_drains_in_time() {
    let redis = PrivateRedis::start().await;
    let timeout = Duration::from_millis(300);
    let limits = redis.limits(timeout).await;
    seeded(&limits, "k").await;
    let lease = Duration::from_secs(60);
    for seq in 0..4 {
        admitted(&limits, &spending("k", hold(seq), LIMIT, 500, 100, lease)).await;
    }
    let stop = CancellationToken::new();
    let config = SettlerConfig {
        drain: Duration::from_millis(500),
        ..SettlerConfig::new(lease)
    };
    let (settler, task) = Settler::spawn(limits.clone(), config, stop.clone());
    let owner: Arc<str> = "k".into();
    for seq in 0..4 {
        settler.open(owner.clone(), hold(seq), 100);
    }

    redis.pause(true);
    for seq in 0..3 {
        settler.settle(owner.clone(), hold(seq), 10 + seq, 0);
    }
    assert!(
        eventually(Duration::from_secs(5), || settler.stats().failures >= 3).await,
        "{:?}",
        settler.stats()
    );
    assert_eq!(settler.stats().settled, 0);
    redis.pause(false);
    assert!(eventually(Duration::from_secs(10), || settler.stats().settled == 3).await);
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (33, 500, 1));

    // Stopping while Redis does not answer: the drain gives up at its deadline and says
    // what it left.
    redis.pause(true);
    settler.settle(owner, hold(3), 7, 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = Instant::now();
    stop.cancel();
    let leftover = task.await.expect("task");
    let took = stopping.elapsed();
    assert_eq!(leftover, Leftover { unsent: 1, open: 0 });
    assert!(took < Duration::from_millis(900), "drained for {took:?}");
    redis.pause(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_lost_its_data_settlements_are_answered_and_open_holds_forgotten() {
    let mut redis = PrivateRedis::start().await;
    let limits = redis.limits(Duration::from_millis(300)).await;
    seeded(&limits, "k").await;
    for seq in [1, 2] {
        admitted(
            &limits,
            &spending("k", hold(seq), LIMIT, 500, 100, Duration::from_secs(60)),
        )
        .await;
    }
    let stop = CancellationToken::new();
    let config = SettlerConfig::new(Duration::from_millis(600));
    let (settler, task) = Settler::spawn(limits.clone(), config, stop.clone());
    let owner: Arc<str> = "k".into();
    settler.open(owner.clone(), hold(1), 100);
    settler.open(owner.clone(), hold(2), 100);
    assert!(eventually(Duration::from_secs(3), || settler.stats().renewals >= 1).await);

    redis.restart_empty().await;
    // The settlement of a hold Redis no longer knows is answered (Unknown: its usage
    // record is the durable truth), not retried for ever.
    settler.settle(owner, hold(1), 40, 0);
    assert!(eventually(Duration::from_secs(10), || settler.stats().settled == 1).await);
    // A renewal after the restart (every 200 ms) finds hold 2 gone: it is not renewed
    // any more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let renewals = settler.stats().renewals;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = settler.stats();
    assert_eq!(stats.renewals, renewals, "{stats:?}");
    stop.cancel();
    // Nothing left: hold 2 was forgotten, not kept open.
    assert_eq!(task.await.expect("task"), Leftover::default());
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert!(!peek.seeded, "nothing was written back: {peek:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_holds_are_renewed_while_settlements_never_stop_coming() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    let other_replica = harness.limits().await;
    seeded(&limits, "k").await;
    let lease = Duration::from_millis(600);
    admitted(&limits, &spending("k", hold(1), LIMIT, 500, 100, lease)).await;
    let stop = CancellationToken::new();
    // The backlog left at the end is of holds Redis does not know: no need to drain it.
    let config = SettlerConfig {
        drain: Duration::from_millis(100),
        ..SettlerConfig::new(lease)
    };
    let (settler, task) = Settler::spawn(limits.clone(), config, stop.clone());
    let owner: Arc<str> = "k".into();
    settler.open(owner.clone(), hold(1), 100);
    // Another thread settles (holds Redis does not know: answered `Unknown`) 100 every
    // millisecond, so every settle round trip finds more queued.
    let feeding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = {
        let (settler, owner, feeding) = (settler.clone(), owner.clone(), Arc::clone(&feeding));
        std::thread::spawn(move || {
            let mut seq = 1_000;
            while feeding.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..100 {
                    seq += 1;
                    settler.settle(owner.clone(), hold(seq), 1, 0);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // Well past two leases: the open hold was renewed all along, not swept.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let swept = other_replica.sweep(100).await.expect("sweep");
    feeding.store(false, std::sync::atomic::Ordering::Relaxed);
    feeder.join().expect("the feeder");
    let stats = settler.stats();
    assert_eq!(
        swept,
        vec![],
        "a live replica's open hold was swept: {stats:?}"
    );
    assert!(
        stats.renewals >= 3,
        "every lease / 3, under load too: {stats:?}"
    );
    assert!(stats.batches > 10, "the settlements kept coming: {stats:?}");
    stop.cancel();
    task.await.expect("task");
}

/// The key views' read-your-writes: a flush sends what is queued at once, not after the
/// gather window, and answers once Redis confirmed it; while Redis does not answer, it
/// waits (its callers bound it) and answers once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_sends_what_is_queued_at_once_and_answers_once_redis_confirmed_it() {
    let redis = PrivateRedis::start().await;
    let limits = redis.limits(Duration::from_millis(300)).await;
    seeded(&limits, "k").await;
    let lease = Duration::from_secs(60);
    for seq in 0..2 {
        admitted(&limits, &spending("k", hold(seq), LIMIT, 500, 100, lease)).await;
    }
    let stop = CancellationToken::new();
    // A window far longer than the test: only a flush sends before it ends.
    let config = SettlerConfig {
        gather: Duration::from_secs(60),
        drain: Duration::from_millis(200),
        ..SettlerConfig::new(lease)
    };
    let (settler, task) = Settler::spawn(limits.clone(), config, stop.clone());
    let owner: Arc<str> = "k".into();
    tokio::time::timeout(Duration::from_secs(1), settler.flush())
        .await
        .expect("with nothing queued, a flush answers at once");

    settler.open(owner.clone(), hold(0), 100);
    settler.settle(owner.clone(), hold(0), 42, 0);
    tokio::time::timeout(Duration::from_secs(2), settler.flush())
        .await
        .expect("the flush sent the settlement without waiting out the window");
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (42, 500, 1));

    redis.pause(true);
    settler.open(owner.clone(), hold(1), 100);
    settler.settle(owner.clone(), hold(1), 8, 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(700), settler.flush())
            .await
            .is_err(),
        "answered before Redis confirmed"
    );
    redis.pause(false);
    tokio::time::timeout(Duration::from_secs(10), settler.flush())
        .await
        .expect("answered once Redis is back");
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (50, 0, 0));
    stop.cancel();
    assert_eq!(task.await.expect("task"), Leftover::default());
}
