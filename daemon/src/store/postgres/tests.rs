//! What only the PostgreSQL backend does: connecting (unreachable, no password in errors),
//! exactly-once usage from many replicas, the change feed and its listener.

use std::time::Duration;

use gateway_shared::Nanodollars;

use super::*;
use crate::spend::holds::{HoldId, JournaledHold};
use crate::store::Store as AnyStore;
use crate::store::postgres::test_database::TestDatabase;
use crate::store::tests::{TestStore, at, audit, key, usage, write};

const PASSWORD: &str = "s3cr3t-hunter2-do-not-print";

/// A port on this machine where nothing listens.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_its_password() {
    let port = closed_port();
    let url = format!("postgres://gateway:{PASSWORD}@127.0.0.1:{port}/gw?sslmode=disable");
    let err = AnyStore::connect_postgres(&url)
        .await
        .expect_err("nothing listens there");
    let (shown, debug) = (format!("{err:#}"), format!("{err:?}"));
    assert!(
        shown.contains(&format!("PostgreSQL at 127.0.0.1:{port}/gw is unreachable")),
        "{shown}"
    );
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(!debug.contains(PASSWORD), "{debug}");
    assert!(crate::store::is_unavailable(&err), "{shown}");
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_echoing_it() {
    let db = TestDatabase::create("wrong_password").await;
    // The local server trusts every local user; ask for a role that does not exist, with a
    // password, which PostgreSQL refuses either way.
    let target = connect::parse(&db.url).expect("parse");
    let url = format!("postgres://nobody_here:{PASSWORD}@{}", target.described);
    let err = AnyStore::connect_postgres(&url).await.expect_err("refused");
    let (shown, debug) = (format!("{err:#}"), format!("{err:?}"));
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(!debug.contains(PASSWORD), "{debug}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_written_twice_counts_once() {
    let test = TestStore::postgres("twice").await;
    let store = &test.store;
    let batch = vec![
        usage("key_a", "2026-11-27T10:00:00Z", "gpt-4o", 100, 0),
        usage("key_a", "2026-11-27T11:00:00Z", "gpt-4o", 50, 1),
    ];
    write(store, batch.clone()).await.expect("first");
    write(store, batch.clone())
        .await
        .expect("again: nothing new");
    // A batch that overlaps: only its new record counts.
    let mut overlapping = batch;
    overlapping.push(usage("key_a", "2026-11-27T12:00:00Z", "gpt-4o", 7, 2));
    // Two records of one id in one batch (a hold's settlement and its sweep's estimate):
    // one row, the first, counted once.
    overlapping.push(usage("key_a", "2026-11-27T12:00:00Z", "gpt-4o", 900, 2));
    write(store, overlapping).await.expect("overlap");
    let day = "2026-11-27".parse().expect("date");
    let report = store
        .usage_report("key_a".into(), day, day)
        .await
        .expect("report");
    assert_eq!(
        (report.total.requests, report.total.cost_usd),
        (3, Nanodollars(157))
    );
    let counted = store
        .counted_spend("key_a".into(), day)
        .await
        .expect("spend");
    assert_eq!(counted.total, Nanodollars(157));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_writing_the_same_rows_sum_exactly_and_never_deadlock() {
    let db = TestDatabase::create("two_replicas").await;
    let a = AnyStore::connect_postgres(&db.url).await.expect("a");
    let b = AnyStore::connect_postgres(&db.url).await.expect("b");
    const WRITERS: u64 = 8;
    const BATCHES: u64 = 10;
    const PER_BATCH: u64 = 20;
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = if writer % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        };
        tasks.push(tokio::spawn(async move {
            for batch in 0..BATCHES {
                // Every batch touches the same keys, days and models, in a different order.
                let records: Vec<_> = (0..PER_BATCH)
                    .map(|i| {
                        let seq = batch * PER_BATCH + i;
                        let key_id = ["key_x", "key_y"][((i + writer) % 2) as usize];
                        let when = ["2026-11-27T10:00:00Z", "2026-11-28T10:00:00Z"]
                            [((i / 2 + writer) % 2) as usize];
                        let mut record = usage(key_id, when, "gpt-4o", 1 + seq % 5, seq);
                        record.id.instance = 1000 + writer;
                        record
                    })
                    .collect();
                write(&store, records).await.expect("batch");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let client = db.client().await;
    let sums = |sql: &str| {
        let sql = sql.to_owned();
        let client = &client;
        async move {
            let row = client.query_one(&sql, &[]).await.expect(&sql);
            (row.get::<_, i64>(0), row.get::<_, i64>(1))
        }
    };
    let log = sums("SELECT count(*), sum(cost_nanos)::bigint FROM usage").await;
    let rollup =
        sums("SELECT sum(requests)::bigint, sum(cost_nanos)::bigint FROM usage_daily").await;
    let keys =
        sums("SELECT sum(request_count)::bigint, sum(spend_total_nanos)::bigint FROM key_spend")
            .await;
    assert_eq!(log.0, (WRITERS * BATCHES * PER_BATCH) as i64);
    assert_eq!(rollup, log, "the rollup is the sum of the log");
    assert_eq!(keys, log, "so are the keys' totals");
    let per_group = client
        .query(
            "SELECT d.key_id, d.day, d.requests, d.cost_nanos, l.n, l.cost FROM usage_daily d \
             JOIN (SELECT key_id, to_char(to_timestamp(at_ms / 1000.0) AT TIME ZONE 'UTC', \
             'YYYY-MM-DD') AS day, count(*) AS n, sum(cost_nanos)::bigint AS cost \
             FROM usage GROUP BY 1, 2) l USING (key_id, day)",
            &[],
        )
        .await
        .expect("groups");
    assert_eq!(per_group.len(), 4);
    for row in per_group {
        assert_eq!(
            (row.get::<_, i64>(2), row.get::<_, i64>(3)),
            (row.get::<_, i64>(4), row.get::<_, i64>(5)),
            "{}/{}",
            row.get::<_, String>(0),
            row.get::<_, String>(1)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_write_from_a_runtime_thread_is_an_error_not_a_hang() {
    let test = TestStore::postgres("blocking").await;
    let err = test
        .store
        .write_usage(&[], crate::store::JournalChanges::default(), false)
        .expect_err("refused on a runtime thread");
    assert!(format!("{err:#}").contains("usage writer"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_are_journaled_per_writer_and_deleted_with_their_usage() {
    let test = TestStore::postgres("holds").await;
    let hold = |id: u64| JournaledHold {
        id: HoldId::new(id).expect("not 0"),
        key_id: "key_h".into(),
        provider: gateway_shared::Provider::Openai,
        model: "gpt-4o".into(),
        input_tokens: 10,
        output_tokens: 100,
        cost: Nanodollars(99),
        unpriced: false,
        at: at("2026-11-27T10:00:00Z"),
    };
    let opened = [hold(1), hold(2)];
    let journal = |instance: u64, opened: &'static [JournaledHold], settled: &'static [HoldId]| {
        crate::store::JournalChanges {
            instance,
            opened,
            settled,
        }
    };
    let opened: &'static [JournaledHold] = Box::leak(Box::new(opened));
    let store = test.store.clone();
    std::thread::spawn(move || {
        store.write_usage(&[], journal(7, opened, &[]), false)?;
        // The same ids from another writer are other holds.
        store.write_usage(&[], journal(8, opened, &[]), false)?;
        // Re-sent: nothing twice.
        store.write_usage(&[], journal(7, opened, &[]), false)?;
        let settled: &'static [HoldId] = Box::leak(Box::new([HoldId::new(1).expect("1")]));
        let mut record = usage("key_h", "2026-11-27T10:05:00Z", "gpt-4o", 80, 0);
        record.journaled_hold = settled.first().copied();
        store.write_usage(&[record], journal(7, &[], settled), false)
    })
    .join()
    .expect("thread")
    .expect("writes");
    let client = test.database.as_ref().expect("db").client().await;
    let rows: Vec<(i64, i64)> = client
        .query("SELECT instance, id FROM holds ORDER BY instance, id", &[])
        .await
        .expect("holds")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(rows, [(7, 2), (8, 1), (8, 2)]);
    // Charging needs part 2's leases: nothing is charged (so nothing twice), nothing dropped.
    assert_eq!(
        test.store.charge_journaled_holds().await.expect("charge"),
        crate::store::CrashCharges::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_in_the_feed_in_commit_order() {
    let test = TestStore::postgres("feed").await;
    let store = &test.store;
    assert_eq!(store.max_change_seq().await.expect("max"), 0);
    store
        .insert_key(key("key_a"), audit("key.create", "key_a"))
        .await
        .expect("insert");
    let mut edited = key("key_a");
    edited.name = "edited".into();
    store
        .update_key(edited.clone(), audit("key.update", "key_a"))
        .await
        .expect("update")
        .expect("at the version read");
    // A stale write (refused) leaves no change row.
    store
        .update_key(key("key_a"), audit("key.update", "key_a"))
        .await
        .expect("answered")
        .expect_err("read at version 1, stored at 2");
    store
        .rotate_key(
            KeyRecord {
                version: 2,
                ..edited
            },
            key("key_b"),
            vec![audit("key.rotate", "key_a")],
        )
        .await
        .expect("rotate")
        .expect("at the version read");
    store
        .save_admin_token(
            crate::admin_tokens::TokenRecord {
                id: "tok_1".into(),
                hash: gateway_shared::KeyHash::of("tok_1"),
                prefix: "gwadm-x".into(),
                name: "t".into(),
                created_at: at("2026-11-27T08:00:00Z"),
                revoked_at: None,
                last_used_at: None,
            },
            None,
        )
        .await
        .expect("token");
    // A failed change leaves no row.
    store
        .update_key(key("key_ghost"), audit("key.update", "key_ghost"))
        .await
        .expect_err("unknown key");
    let changes = store.changes_since(0).await.expect("changes");
    let seen: Vec<(ChangeKind, &str)> = changes.iter().map(|c| (c.kind, c.id.as_str())).collect();
    assert_eq!(
        seen,
        [
            (ChangeKind::Key, "key_a"),
            (ChangeKind::Key, "key_a"),
            (ChangeKind::Key, "key_a"),
            (ChangeKind::Key, "key_b"),
            (ChangeKind::Rotation, "key_b"),
            (ChangeKind::AdminToken, "tok_1"),
        ]
    );
    let versions: Vec<Option<u64>> = changes.iter().map(|c| c.version).collect();
    assert_eq!(
        versions,
        [Some(1), Some(2), Some(3), Some(1), None, None],
        "each key change names the version it committed"
    );
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    let newest = store.max_change_seq().await.expect("max");
    assert_eq!(newest, changes.last().expect("some").seq);
    assert_eq!(
        store.changes_since(changes[3].seq).await.expect("tail"),
        changes[4..]
    );
    assert!(store.changes_since(newest).await.expect("none").is_empty());
}

/// The next event, within `wait`.
async fn next(events: &mut tokio::sync::mpsc::Receiver<Event>, wait: Duration) -> Event {
    tokio::time::timeout(wait, events.recv())
        .await
        .expect("an event in time")
        .expect("the listener runs")
}

/// Events until a `Changes`, returning its ids (and whether a disconnect came first).
async fn next_changes(events: &mut tokio::sync::mpsc::Receiver<Event>) -> (Vec<String>, bool) {
    let mut disconnected = false;
    loop {
        match next(events, Duration::from_secs(10)).await {
            Event::Changes(changes) => {
                return (changes.into_iter().map(|c| c.id).collect(), disconnected);
            }
            Event::Disconnected(_) => disconnected = true,
            Event::Connected | Event::CaughtUp => {}
            Event::Reset { seq } => panic!("unexpected reset to {seq}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_sees_other_replicas_changes_and_what_it_missed_while_down() {
    let db = TestDatabase::create("listener").await;
    let replica_a = AnyStore::connect_postgres(&db.url).await.expect("a");
    replica_a
        .insert_key(key("key_before"), audit("key.create", "key_before"))
        .await
        .expect("before");
    let from = replica_a.max_change_seq().await.expect("max");
    let mut events = listen(&db.url, from).expect("listen");
    assert_eq!(
        next(&mut events, Duration::from_secs(10)).await,
        Event::Connected
    );
    assert_eq!(
        next(&mut events, Duration::from_secs(10)).await,
        Event::CaughtUp,
        "once the first read succeeded"
    );

    let started = std::time::Instant::now();
    replica_a
        .insert_key(key("key_new"), audit("key.create", "key_new"))
        .await
        .expect("insert");
    let (ids, _) = next_changes(&mut events).await;
    let lag = started.elapsed();
    assert_eq!(ids, ["key_new"], "only what came after `from`");
    eprintln!("create on one replica → change delivered to another's listener: {lag:?}");
    assert!(lag < Duration::from_secs(2), "took {lag:?}");

    // The listener's connection is killed; a change lands while it is down.
    let client = db.client().await;
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'gatewayd listener' AND datname = current_database()",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(killed, 1);
    replica_a
        .insert_key(key("key_missed"), audit("key.create", "key_missed"))
        .await
        .expect("insert while down");
    let (ids, disconnected) = next_changes(&mut events).await;
    assert!(disconnected, "the loss was reported");
    assert_eq!(ids, ["key_missed"], "delivered after the reconnect, once");

    replica_a
        .insert_key(key("key_after"), audit("key.create", "key_after"))
        .await
        .expect("insert after");
    let (ids, _) = next_changes(&mut events).await;
    assert_eq!(ids, ["key_after"]);
}

/// Rolls the feed back as a restore from a backup taken at `seq` does: later rows gone, the
/// sequence back at `seq`.
async fn restore_changes_to(client: &tokio_postgres::Client, seq: i64) {
    client
        .execute("DELETE FROM changes WHERE seq > $1", &[&seq])
        .await
        .expect("delete");
    client
        .execute("SELECT setval('changes_seq_seq', $1)", &[&seq])
        .await
        .expect("setval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_goes_backwards_is_reset_not_skipped() {
    let db = TestDatabase::create("listener_reset").await;
    let replica_a = AnyStore::connect_postgres(&db.url).await.expect("a");
    let mut events = listen(&db.url, 0).expect("listen");
    for id in ["k1", "k2", "k3", "k4"] {
        replica_a
            .insert_key(key(id), audit("key.create", id))
            .await
            .expect("insert");
    }
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.extend(next_changes(&mut events).await.0);
    }
    let client = db.client().await;
    let restored_at = replica_a.max_change_seq().await.expect("max") - 2;
    restore_changes_to(&client, restored_at).await;
    // Its seq is one the listener has passed: only a reset can bring it.
    replica_a
        .insert_key(key("k_new"), audit("key.create", "k_new"))
        .await
        .expect("insert after the restore");
    let newest = replica_a.max_change_seq().await.expect("max");
    assert_eq!(newest, restored_at + 1);
    let reset = loop {
        match next(&mut events, Duration::from_secs(40)).await {
            Event::Reset { seq } => break seq,
            Event::Changes(changes) => panic!("changes before the reset: {changes:?}"),
            _ => {}
        }
    };
    assert_eq!(reset, newest, "resumes from the newest change");
    replica_a
        .insert_key(key("k_later"), audit("key.create", "k_later"))
        .await
        .expect("insert after the reset");
    let (ids, _) = next_changes(&mut events).await;
    assert_eq!(ids, ["k_later"], "the feed goes on after the reset point");

    // A restore to the same length with a different change at the last seq is caught too.
    let last = replica_a.max_change_seq().await.expect("max");
    client
        .execute(
            "UPDATE changes SET id = 'someone_else' WHERE seq = $1",
            &[&last],
        )
        .await
        .expect("rewrite");
    replica_a
        .insert_key(key("k_wake"), audit("key.create", "k_wake"))
        .await
        .expect("wake");
    loop {
        match next(&mut events, Duration::from_secs(40)).await {
            Event::Reset { seq } => {
                assert_eq!(seq, last + 1);
                break;
            }
            Event::Changes(changes) => panic!("changes before the reset: {changes:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_unavailable_and_the_pool_recovers() {
    let test = TestStore::postgres("lost").await;
    let db = test.database.as_ref().expect("db");
    let admin = db.client().await;
    let terminate = |application: &'static str| {
        let admin = &admin;
        async move {
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND datname = current_database() \
                     AND pid <> pg_backend_pid()",
                    &[&application],
                )
                .await
                .expect("terminate")
        }
    };
    // A connection the server ended: its next query fails as unavailable.
    let doomed = {
        let target = connect::parse(&db.url).expect("parse");
        let mut config = target.config.clone();
        config.application_name("doomed");
        let (client, connection) = config.connect(target.tls.clone()).await.expect("connect");
        tokio::spawn(connection);
        client
    };
    assert_eq!(terminate("doomed").await, 1);
    let err = doomed
        .query_one("SELECT 1", &[])
        .await
        .map_err(anyhow::Error::from)
        .expect_err("the connection is gone");
    assert!(crate::store::is_unavailable(&err), "{err:#}");

    // The pool's connections are ended (and gone: termination is asynchronous). A call may
    // still be handed one of them (each fails once, as unavailable); then the pool connects
    // anew.
    test.store.count_keys().await.expect("warm the pool");
    assert!(terminate("gatewayd").await >= 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gatewayd' \
                 AND datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backends never went"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut failures = 0;
    let count = loop {
        match test.store.count_keys().await {
            Ok(count) => break count,
            Err(err) => {
                assert!(crate::store::is_unavailable(&err), "{err:#}");
                failures += 1;
                assert!(failures <= 2, "the pool kept handing out dead connections");
            }
        }
    };
    assert_eq!(count, 0);

    // A statement the database refuses is not unavailability.
    let err = refused_statement(&admin).await;
    assert!(!crate::store::is_unavailable(&err), "{err:#}");
}

async fn refused_statement(client: &tokio_postgres::Client) -> anyhow::Error {
    client
        .query_one("SELECT 1/0", &[])
        .await
        .map_err(anyhow::Error::from)
        .expect_err("division by zero")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_but_cannot_serve_us_is_unavailable_not_a_refused_statement() {
    let db = TestDatabase::create("not_serving").await;
    let client = db.client().await;
    let refused = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .batch_execute(sql)
                .await
                .map_err(anyhow::Error::from)
                .expect_err(sql)
        }
    };
    for (why, sql) in [
        (
            "statement timeout (a lock held elsewhere)",
            "SET statement_timeout = 10; SELECT pg_sleep(1)",
        ),
        (
            "read-only (a standby after failover)",
            "BEGIN READ ONLY; CREATE TABLE t (x INT)",
        ),
        (
            "our table is not there (an empty database)",
            "ROLLBACK; SELECT * FROM usage",
        ),
    ] {
        let err = refused(sql).await;
        assert!(crate::store::is_unavailable(&err), "{why}: {err:#}");
    }
    let err = refused_statement(&client).await;
    assert!(!crate::store::is_unavailable(&err), "{err:#}");
}
