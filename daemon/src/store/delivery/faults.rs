//! Delivery against a real PostgreSQL under the failures an operator meets: a replica
//! restarted while batches were spooled, a spooled batch this binary cannot read, a database
//! that came back empty.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::spend::holds::JournaledHold;
use crate::store::postgres::test_database::TestDatabase;
use crate::store::retry::RETRY;
use crate::store::writer::tests::record;

fn hold(id: u64) -> JournaledHold {
    JournaledHold {
        id: HoldId::new(id).expect("not 0"),
        key_id: "key_w".into(),
        provider: Provider::Openai,
        model: "gpt-4o".into(),
        input_tokens: 10,
        output_tokens: 100,
        cost: Nanodollars(500),
        unpriced: false,
        at: "2026-11-27T12:00:00Z".parse().expect("time"),
    }
}

fn with_instance(instance: u64, seq: u64) -> UsageRecord {
    let mut r = record(seq);
    r.id = RecordId { instance, seq };
    r
}

/// Runs `f` on a thread of its own: the PostgreSQL usage write blocks, as on the writer's.
async fn on_writer_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(move || std::thread::spawn(f).join().expect("writer thread"))
        .await
        .expect("join")
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    db.client()
        .await
        .query_one(sql, &[])
        .await
        .expect(sql)
        .get(0)
}

fn journal(instance: u64) -> JournalChanges<'static> {
    JournalChanges {
        instance,
        opened: &[],
        settled: &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_record_delivered_after_a_restart_deletes_its_hold_of_the_earlier_run() {
    let db = TestDatabase::create("spool_hold_restart").await;
    let store = Store::connect_postgres(&db.url).await.expect("connect");
    let dir = tempfile::tempdir().expect("dir");
    let spool_dir = dir.path().join("spool");
    let (first_run, second_run) = (100u64, 200u64);
    let store2 = store.clone();
    on_writer_thread(move || {
        // The first run journals an open hold while PostgreSQL answers…
        let mut delivery = Delivery::new(
            store2,
            Spool::open(&spool_dir).expect("spool"),
            Arc::new(Health::new()),
            Arc::new(Metrics::new()),
        )
        .expect("delivery");
        let opened = [hold(5)];
        delivery.commit(
            &[],
            JournalChanges {
                instance: first_run,
                opened: &opened,
                settled: &[],
            },
            &AtomicBool::new(false),
            RETRY,
        );
        // …then its request settles while PostgreSQL is away: the record is spooled, and
        // the replica is restarted before the spool is delivered.
        let mut settled = with_instance(first_run, 0);
        settled.journaled_hold = HoldId::new(5);
        Spool::open(&spool_dir)
            .expect("spool")
            .append([encode(&settled).as_slice()])
            .expect("spooled");
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM holds").await, 1);

    let spool_dir = dir.path().join("spool");
    on_writer_thread(move || {
        let mut delivery = Delivery::new(
            store,
            Spool::open(&spool_dir).expect("spool"),
            Arc::new(Health::new()),
            Arc::new(Metrics::new()),
        )
        .expect("delivery");
        delivery.commit(&[], journal(second_run), &AtomicBool::new(false), RETRY);
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM usage").await, 1);
    assert_eq!(
        count(&db, "SELECT count(*) FROM holds").await,
        0,
        "the request's usage is in; its hold must not stay open to be charged again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_batch_this_binary_cannot_read_is_set_aside_and_the_rest_delivered() {
    let db = TestDatabase::create("spool_undecodable").await;
    let store = Store::connect_postgres(&db.url).await.expect("connect");
    let dir = tempfile::tempdir().expect("dir");
    let spool_dir = dir.path().join("spool");
    let health = Arc::new(Health::new());
    let health2 = Arc::clone(&health);
    let left = on_writer_thread(move || {
        let mut spool = Spool::open(&spool_dir).expect("spool");
        // Written by another gatewayd (a provider this one does not know: a downgrade): the
        // file is whole, its records cannot be decoded here.
        let mut foreign: serde_json::Value =
            serde_json::from_slice(&encode(&with_instance(9, 0))).expect("json");
        foreign["provider"] = "Some Day!".into();
        let foreign = serde_json::to_vec(&foreign).expect("json");
        spool.append([foreign.as_slice()]).expect("spooled");
        spool
            .append([encode(&with_instance(9, 1)).as_slice()])
            .expect("spooled");
        let mut delivery =
            Delivery::new(store, spool, health2, Arc::new(Metrics::new())).expect("delivery");
        delivery.commit(&[], journal(10), &AtomicBool::new(false), RETRY);
        // New usage goes straight to the store again.
        delivery.commit(
            &[with_instance(10, 0)],
            journal(10),
            &AtomicBool::new(false),
            RETRY,
        );
        let names: Vec<String> = std::fs::read_dir(&spool_dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        (delivery.come_back_within(), names)
    })
    .await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM usage").await,
        2,
        "the readable batch and the new one"
    );
    let (backlog, names) = left;
    assert_eq!(backlog, None, "nothing left to deliver");
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].ends_with(".corrupt"),
        "kept for the operator: {names:?}"
    );
    assert_eq!(health.store(), StoreStatus::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_written_while_the_database_came_back_empty_is_spooled_not_dropped() {
    let db = TestDatabase::create("spool_empty_db").await;
    let store = Store::connect_postgres(&db.url).await.expect("connect");
    // PostgreSQL restarted on a fresh data directory (or restored without our schema): the
    // server answers, our tables are not there.
    db.client()
        .await
        .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        .await
        .expect("empty the database");
    let dir = tempfile::tempdir().expect("dir");
    let spool_dir = dir.path().join("spool");
    let health = Arc::new(Health::new());
    let metrics = Arc::new(Metrics::new());
    let (store2, health2, spool_dir2) = (store.clone(), Arc::clone(&health), spool_dir.clone());
    let metrics2 = Arc::clone(&metrics);
    on_writer_thread(move || {
        let mut delivery = Delivery::new(
            store2,
            Spool::open(&spool_dir2).expect("spool"),
            health2,
            metrics2,
        )
        .expect("delivery");
        let records: Vec<UsageRecord> = (0..3).map(|i| with_instance(11, i)).collect();
        delivery.commit(&records, journal(11), &AtomicBool::new(false), RETRY);
    })
    .await;
    assert_eq!(health.store(), StoreStatus::Unavailable);
    let unavailable = StoreErrorLabels {
        operation: "usage_write",
        kind: "unavailable",
    };
    assert_eq!(
        metrics.store_errors.get_or_create(&unavailable).get(),
        1,
        "counted in /metrics"
    );
    let spooled = Spool::open(&spool_dir)
        .expect("spool")
        .pending()
        .expect("pending");
    assert_eq!(spooled.len(), 1, "the batch waits on disk");

    // The schema is back (an operator restored it, or a replica migrated it): delivered.
    Store::connect_postgres(&db.url)
        .await
        .expect("migrated again");
    let (health2, metrics2) = (Arc::clone(&health), Arc::clone(&metrics));
    on_writer_thread(move || {
        let mut delivery = Delivery::new(
            store,
            Spool::open(&spool_dir).expect("spool"),
            health2,
            metrics2,
        )
        .expect("delivery");
        delivery.commit(&[], journal(12), &AtomicBool::new(false), RETRY);
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM usage").await, 3);
    assert_eq!(health.store(), StoreStatus::Ok);
    let rendered = metrics.render();
    assert!(
        rendered.contains("gateway_store_write_seconds_count 1"),
        "the delivered batch's commit is timed: {rendered}"
    );
}
