//! A ledger Redis lost (its keys deleted, as FLUSHALL would) is rebuilt from PostgreSQL's
//! usage before the key is admitted again: the cap still holds.

use std::time::Duration;

use gateway_shared::SpendReset;
use jiff::Timestamp;

use super::*;
use crate::limits::cluster::rebuild::rebuild;
use crate::store::Store;
use crate::store::postgres::test_database::TestDatabase;
use crate::store::tests::{audit, key, usage, write};

/// An admission of the pair's key `key_id` under a daily spend limit of 1,000.
fn daily<'a>(key_id: &'a str, seq: u64, worst: u64) -> Admission<'a> {
    Admission {
        what: "",
        owner: "kr_a",
        key_id,
        version: 1,
        hold: hold(seq),
        rate_limit: None,
        spend: Some(SpendAsk {
            limit: 1_000,
            reset: Some(SpendReset::Daily),
            worst,
            min: None,
        }),
        estimate: worst,
        lease: Duration::from_secs(60),
    }
}

async fn admit_after_rebuild(
    limits: &RedisLimits,
    store: &Store,
    admission: &Admission<'_>,
) -> Outcome {
    let outcome = limits.admit(admission).await.expect("admit");
    let Outcome::NeedRebuild {
        period_start_ms, ..
    } = outcome
    else {
        panic!("a lost ledger must need a rebuild: {outcome:?}");
    };
    let keys = [("kr_a", 1), ("kr_b", 1)];
    let reset = Some(SpendReset::Daily);
    assert!(
        rebuild(limits, store, "kr_a", &keys, reset, period_start_ms)
            .await
            .expect("rebuild")
    );
    // Set only if absent: a second rebuild (another replica's) changes nothing.
    assert!(
        !rebuild(limits, store, "kr_a", &keys, reset, period_start_ms)
            .await
            .expect("rebuild again")
    );
    limits
        .admit(admission)
        .await
        .expect("admit after the rebuild")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ledger_is_rebuilt_from_the_store_and_the_cap_still_holds() {
    let database = TestDatabase::create("cluster_rebuild").await;
    let store = Store::connect_postgres(&database.url)
        .await
        .expect("connect");
    for id in ["kr_a", "kr_b"] {
        store
            .insert_key(key(id), audit("key.create", id))
            .await
            .expect("insert");
    }
    // Today (UTC, Redis's clock and this one agree to the second) the rotated pair spent
    // 300 + 400; yesterday's 5,000 belongs to another period.
    let now = crate::clock::Clock::now(&crate::clock::SystemClock::new());
    let midnight = Timestamp::from_second(now.as_second() - now.as_second().rem_euclid(86_400))
        .expect("midnight");
    let yesterday = (midnight - jiff::SignedDuration::from_millis(1)).to_string();
    let today = midnight.to_string();
    write(
        &store,
        vec![
            usage("kr_a", &yesterday, "gpt-4o", 5_000, 1),
            usage("kr_a", &today, "gpt-4o", 300, 2),
            usage("kr_b", &today, "gpt-4o", 400, 3),
        ],
    )
    .await
    .expect("usage");

    let harness = Harness::new();
    let limits = harness.limits().await;
    let outcome = admit_after_rebuild(&limits, &store, &daily("kr_b", 1, 200)).await;
    assert!(
        matches!(outcome, Outcome::Admitted { held: 200, .. }),
        "{outcome:?}"
    );
    let peek = limits
        .peek("kr_a", "kr_b", None, Some(SpendReset::Daily))
        .await
        .expect("peek");
    assert_eq!((peek.spent, peek.held), (700, 200));
    // It settles at 200: in Redis, and its usage record in the store.
    limits
        .settle(&[crate::limits::redis::Settlement {
            admitted_ms: 0,
            owner: "kr_a",
            hold: hold(1),
            actual: 200,
        }])
        .await
        .expect("settle");
    write(
        &store,
        vec![usage("kr_b", &now.to_string(), "gpt-4o", 200, 4)],
    )
    .await
    .expect("usage");

    // Redis loses everything under the prefix.
    harness.forget_all();
    let outcome = admit_after_rebuild(&limits, &store, &daily("kr_a", 2, 200)).await;
    assert_eq!(
        outcome,
        Outcome::SpendWouldExceed {
            headroom: 100,
            resets_at_ms: Some(u64::try_from(midnight.as_millisecond()).expect("ms") + 86_400_000),
        }
    );
    let peek = limits
        .peek("kr_a", "kr_a", None, Some(SpendReset::Daily))
        .await
        .expect("peek");
    assert_eq!((peek.spent, peek.held, peek.open_holds), (900, 0, 0));
    let outcome = limits.admit(&daily("kr_a", 3, 100)).await.expect("admit");
    assert!(
        matches!(outcome, Outcome::Admitted { held: 100, .. }),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_running_when_redis_lost_its_data_is_charged_to_the_rebuilt_ledger() {
    let harness = Harness::new();
    let limits = harness.limits().await;
    let lease = Duration::from_secs(60);
    seeded(&limits, "lost").await;
    let outcome = limits
        .admit(&spending("lost", hold(1), 1_000, 600, 600, lease))
        .await
        .expect("admit");
    let Outcome::Admitted {
        lease_expires_ms, ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    let admitted_ms = lease_expires_ms - 60_000;
    // Redis loses everything of the owner (a restart without persistence, FLUSHALL) while
    // the request runs; the ledger is rebuilt from a store that has no record of it yet.
    harness.forget("lost");
    tokio::time::sleep(Duration::from_millis(5)).await;
    seeded(&limits, "lost").await;
    let limits = &limits;
    let settle = |hold, actual, admitted_ms| async move {
        limits
            .settle(&[crate::limits::redis::Settlement {
                owner: "lost",
                hold,
                actual,
                admitted_ms,
            }])
            .await
            .expect("settle")
    };
    // Its settlement reaches the rebuilt ledger: the cap counts it.
    assert_eq!(
        settle(hold(1), 500, admitted_ms).await,
        [SettleResult::Settled]
    );
    let spent = || async {
        limits
            .peek("lost", "lost", None, None)
            .await
            .expect("peek")
            .spent
    };
    assert_eq!(spent().await, 500);
    // Once: a retry is recognised.
    assert_eq!(
        settle(hold(1), 500, admitted_ms).await,
        [SettleResult::AlreadyFinished(Finished::Settled)]
    );
    // A hold unknown for another reason (admitted after the rebuild, or of no known
    // instant) is not charged: nothing says the ledger lacks it.
    let later = admitted_ms + 3_600_000;
    assert_eq!(settle(hold(2), 70, later).await, [SettleResult::Unknown]);
    assert_eq!(settle(hold(3), 70, 0).await, [SettleResult::Unknown]);
    assert_eq!(spent().await, 500);
}
