//! `migrate-store` at the store level: a SQLite store with every kind of row is copied into a
//! fresh PostgreSQL database, which then answers every read as SQLite did; a store that is
//! not empty, a running daemon and a failure midway change nothing.

use gateway_shared::{KeyHash, Nanodollars, Provider};
use jiff::Timestamp;
use jiff::civil::Date;

use super::*;
use crate::admin_tokens::TokenRecord;
use crate::keys::record::KeyRecord;
use crate::spend::holds::JournaledHold;
use crate::store::postgres::test_database::TestDatabase;
use crate::store::tests::{all_keys, at, audit, key, usage, with_running_spend, write};
use crate::store::{AuditQuery, JournalChanges};

/// A stopped single server's data directory.
struct Source {
    dir: tempfile::TempDir,
    store: Store,
}

impl Source {
    fn open() -> Source {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("gateway.db")).expect("open");
        Source { dir, store }
    }

    async fn migrate_to(&self, url: &str) -> anyhow::Result<Summary> {
        run(&MigrateOptions {
            data_dir: self.dir.path().to_path_buf(),
            postgres_url: url,
        })
        .await
    }
}

fn token(id: &str, created: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: KeyHash::of(id),
        prefix: format!("gwadm-{id}"),
        name: format!("token {id}"),
        created_at: at(created),
        revoked_at: None,
        last_used_at: None,
    }
}

/// Keys (one revoked, one expired, one rotated into another), two admin tokens (one revoked
/// and used), their audit rows, usage over three UTC days in more than two batches' worth of
/// rows, and a hold a crash left in the journal.
async fn fill(store: &Store) {
    store
        .insert_key(key("key_a"), audit("key.create", "key_a"))
        .await
        .expect("key_a");
    let mut expired = key("key_expired");
    expired.expires_at = Some(at("2026-11-28T00:00:00Z"));
    expired.rate_limit_rpm = Some(60);
    store
        .insert_key(expired, audit("key.create", "key_expired"))
        .await
        .expect("key_expired");
    store
        .insert_key(key("key_revoked"), audit("key.create", "key_revoked"))
        .await
        .expect("key_revoked");
    let mut revoked = key("key_revoked");
    revoked.revoked_at = Some(at("2026-11-28T12:00:00Z"));
    revoked.updated_at = at("2026-11-28T12:00:00Z");
    store
        .update_key(revoked, audit("key.revoke", "key_revoked"))
        .await
        .expect("revoke")
        .expect("no other writer");
    store
        .insert_key(key("key_old"), audit("key.create", "key_old"))
        .await
        .expect("key_old");
    let mut old = key("key_old");
    old.revoked_at = Some(at("2026-11-30T00:00:00Z"));
    let mut rotate_audit = audit("key.rotate", "key_old");
    rotate_audit.actor = "token:tok_1".into();
    store
        .rotate_key(
            old,
            key("key_new"),
            vec![rotate_audit, audit("key.create", "key_new")],
        )
        .await
        .expect("rotate")
        .expect("no other writer");
    store
        .save_admin_token(
            token("tok_1", "2026-11-27T08:00:00Z"),
            Some(audit("admin_token.create", "tok_1")),
        )
        .await
        .expect("tok_1");
    let mut used = token("tok_2", "2026-11-27T09:00:00Z");
    used.revoked_at = Some(at("2026-11-29T00:00:00Z"));
    used.last_used_at = Some(at("2026-11-28T23:00:00.25Z"));
    store.save_admin_token(used, None).await.expect("tok_2");

    let mut records = Vec::new();
    let days = [
        "2026-11-27T23:59:59.999Z",
        "2026-11-28T00:00:00Z",
        "2026-11-29T10:00:00Z",
    ];
    for seq in 0..(2 * BATCH_ROWS as u64 + 7) {
        let when = days[(seq % 3) as usize];
        let model = if seq % 2 == 0 {
            "gpt-4o"
        } else {
            "gpt-4o-mini"
        };
        records.push(usage("key_a", when, model, 100 + seq, seq));
    }
    for (i, id) in ["key_old", "key_new", "key_revoked"].iter().enumerate() {
        records.push(usage(
            id,
            days[i],
            "gpt-4o",
            7_000 + i as u64,
            100_000 + i as u64,
        ));
    }
    let mut records = with_running_spend(records);
    records[3].source = crate::store::usage::CostSource::Unpriced;
    records[5].over_allowed = true;
    write(store, records).await.expect("usage");
    journal_a_hold(store, "key_new", 123_456).await;
}

/// Journals one open hold, as the usage writer does for a request in flight at a crash.
async fn journal_a_hold(store: &Store, key_id: &str, cost: u64) {
    let hold = JournaledHold {
        id: std::num::NonZeroU64::new(1).expect("non-zero"),
        key_id: key_id.into(),
        provider: Provider::Openai,
        model: "gpt-4o".into(),
        input_tokens: 10,
        output_tokens: 20,
        cost: Nanodollars(cost),
        unpriced: false,
        at: at("2026-11-29T11:00:00Z"),
    };
    let store = store.clone();
    std::thread::spawn(move || {
        store.write_usage(
            &[],
            JournalChanges {
                instance: 9,
                opened: std::slice::from_ref(&hold),
                settled: &[],
            },
            false,
        )
    })
    .join()
    .expect("thread")
    .expect("journal");
}

/// A key as a cluster loads it: periods are the limits engine's (not stored in PostgreSQL),
/// and the last use is kept to the millisecond.
fn as_cluster_loads_it(mut key: KeyRecord) -> KeyRecord {
    key.spend_period = Nanodollars::ZERO;
    key.period_resets_at = None;
    key.last_used_at = key
        .last_used_at
        .map(|t| Timestamp::from_millisecond(t.as_millisecond()).expect("time"));
    key
}

async fn every_audit_row(store: &Store) -> Vec<gateway_shared::api::AuditEntry> {
    store
        .list_audit(AuditQuery {
            limit: 10_000,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
}

fn day(text: &str) -> Date {
    text.parse().expect("date")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_answers_on_postgresql_as_it_did_on_sqlite() {
    let source = Source::open();
    fill(&source.store).await;
    let database = TestDatabase::create("migrate_all").await;

    let summary = source.migrate_to(&database.url).await.expect("migrate");

    // What SQLite says once the hold is charged (the copy charged it first, on the source).
    let keys = all_keys(&source.store).await;
    assert_eq!(keys.len(), 5);
    let key_new = keys.iter().find(|k| k.id == "key_new").expect("key_new");
    assert_eq!(
        (key_new.request_count, key_new.spend_total),
        (2, Nanodollars(7_001 + 123_456)),
        "the journaled hold was charged to its key before the copy"
    );
    let usage_rows = 2 * BATCH_ROWS as u64 + 7 + 3 + 1;
    let usage_cost: u64 = (0..2 * BATCH_ROWS as u64 + 7).map(|s| 100 + s).sum::<u64>()
        + 7_000
        + 7_001
        + 7_002
        + 123_456;
    assert_eq!(
        summary,
        Summary {
            keys: 5,
            rotations: 1,
            admin_tokens: 2,
            audit_rows: 8,
            usage_rows,
            usage_cost: Nanodollars(usage_cost),
            charged: CrashCharges {
                requests: 1,
                cost: Nanodollars(123_456)
            },
        }
    );
    assert_eq!(
        summary.to_string(),
        format!(
            "charged 1 request left in flight by a crash ($0.000123456), then copied 5 keys, \
             1 rotation, 2 admin tokens, 8 audit rows, 10,011 usage records ({})",
            Nanodollars(usage_cost)
        )
    );

    let target = Store::connect_postgres(&database.url)
        .await
        .expect("connect");
    let expected: Vec<KeyRecord> = keys.iter().cloned().map(as_cluster_loads_it).collect();
    assert_eq!(all_keys(&target).await, expected, "every key, every column");
    assert_eq!(
        target.load_rotations().await.expect("rotations"),
        source.store.load_rotations().await.expect("rotations")
    );
    assert_eq!(
        target.load_admin_tokens().await.expect("tokens"),
        source.store.load_admin_tokens().await.expect("tokens")
    );
    let audit_rows = every_audit_row(&source.store).await;
    assert_eq!(audit_rows.len(), 8);
    assert_eq!(
        every_audit_row(&target).await,
        audit_rows,
        "ids, order, actors"
    );
    for key in &keys {
        let (from, to) = (day("2026-11-26"), day("2026-11-30"));
        assert_eq!(
            target
                .usage_report(key.id.clone(), from, to)
                .await
                .expect("report"),
            source
                .store
                .usage_report(key.id.clone(), from, to)
                .await
                .expect("report"),
            "{}'s report",
            key.id
        );
        let since = day("2026-11-28");
        let on_target = target
            .counted_spend(key.id.clone(), since)
            .await
            .expect("spend");
        let on_source = source
            .store
            .counted_spend(key.id.clone(), since)
            .await
            .expect("spend");
        assert_eq!(
            (on_target.since, on_target.total),
            (on_source.since, on_source.total),
            "{}'s counted spend",
            key.id
        );
    }

    // The cluster goes on from there: a new audit row follows the copied ones, and a usage
    // writer's rows (a random non-zero instance) add to the copied totals.
    target
        .insert_key(key("key_later"), audit("key.create", "key_later"))
        .await
        .expect("a key after the copy");
    let newest = target
        .list_audit(AuditQuery {
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(newest[0].id, audit_rows[0].id + 1);
    let mut later = usage("key_a", "2026-11-29T12:00:00Z", "gpt-4o", 1_000, 0);
    later.spend.request_count = u64::MAX;
    write(&target, vec![later]).await.expect("a later batch");
    let key_a = target
        .load_key("key_a".into())
        .await
        .expect("load")
        .expect("key_a");
    let before = keys.iter().find(|k| k.id == "key_a").expect("key_a");
    assert_eq!(
        (key_a.request_count, key_a.spend_total),
        (
            before.request_count + 1,
            before.spend_total.saturating_add(Nanodollars(1_000))
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_not_empty_is_refused_and_left_as_it_was() {
    let source = Source::open();
    fill(&source.store).await;
    let database = TestDatabase::create("migrate_not_empty").await;
    let target = Store::connect_postgres(&database.url)
        .await
        .expect("connect");
    target
        .insert_key(key("key_there"), audit("key.create", "key_there"))
        .await
        .expect("a key already there");

    let err = source.migrate_to(&database.url).await.expect_err("refused");
    let message = format!("{err:#}");
    assert!(
        message.contains(
            "already has 1 key, 1 audit row: migrate-store copies into an empty store only"
        ),
        "{message}"
    );
    assert!(
        message.contains("127.0.0.1") || message.contains("localhost"),
        "{message}"
    );
    assert_eq!(
        all_keys(&target)
            .await
            .into_iter()
            .map(|k| k.id)
            .collect::<Vec<_>>(),
        ["key_there"]
    );
    assert_eq!(every_audit_row(&target).await.len(), 1);
    assert!(target.load_admin_tokens().await.expect("tokens").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_midway_leaves_the_target_empty() {
    let source = Source::open();
    fill(&source.store).await;
    // SQLite keeps a NUL in text; PostgreSQL refuses it. The usage log is copied after the
    // keys, tokens and audit rows, so this fails the copy well into its transaction.
    let mut odd = usage("key_a", "2026-11-29T12:00:00Z", "gpt\u{0}4o", 5, 0);
    odd.spend.request_count = u64::MAX;
    write(&source.store, vec![odd]).await.expect("a usage row");
    let database = TestDatabase::create("migrate_midway").await;

    let err = source
        .migrate_to(&database.url)
        .await
        .expect_err("PostgreSQL refuses the row");
    assert!(format!("{err:#}").contains("copying usage rows"), "{err:#}");

    let target = Store::connect_postgres(&database.url)
        .await
        .expect("connect");
    assert_eq!(target.count_keys().await.expect("count"), 0);
    assert!(every_audit_row(&target).await.is_empty());
    assert!(target.load_admin_tokens().await.expect("tokens").is_empty());
    assert!(target.load_rotations().await.expect("rotations").is_empty());
    let client = database.client().await;
    for table in ["usage", "usage_daily", "key_spend", "changes"] {
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(rows, 0, "{table}");
    }
    // The source is still whole and usable.
    assert_eq!(all_keys(&source.store).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_or_a_missing_database_is_refused() {
    let source = Source::open();
    let database = TestDatabase::create("migrate_locked").await;
    let lock = std::fs::File::create(source.dir.path().join("gatewayd.lock")).expect("lock file");
    lock.try_lock().expect("the daemon's lock");
    let err = source
        .migrate_to(&database.url)
        .await
        .expect_err("a daemon runs");
    assert!(
        format!("{err:#}").contains("a gatewayd is running on the data directory"),
        "{err:#}"
    );
    drop(lock);

    let empty = tempfile::tempdir().expect("dir");
    let err = run(&MigrateOptions {
        data_dir: empty.path().to_path_buf(),
        postgres_url: &database.url,
    })
    .await
    .expect_err("no database");
    assert!(
        format!("{err:#}").contains("there is no gatewayd database at"),
        "{err:#}"
    );
    assert!(
        !empty.path().join("gateway.db").exists(),
        "no empty database was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_password_is_never_in_an_error() {
    let source = Source::open();
    let err = source
        .migrate_to("postgres://gw:s3cret-pw@127.0.0.1:1/gateway?connect_timeout=1")
        .await
        .expect_err("nothing listens on port 1");
    let message = format!("{err:#} {err:?}");
    assert!(!message.contains("s3cret-pw"), "{message}");
    assert!(message.contains("127.0.0.1:1/gateway"), "{message}");
}

#[test]
fn counts_that_differ_are_named_and_roll_the_copy_back() {
    let mut source = Tally {
        keys: 3,
        audit_rows: 4,
        audit_last_id: 9,
        ..Tally::default()
    };
    source.per_key.insert(
        "key_a".into(),
        KeyTally {
            usage_rows: 2,
            usage_cost: 300,
            ..KeyTally::default()
        },
    );
    let mut target = source.clone();
    compare(&source, &target).expect("the same");

    // A key only one side has, with nothing counted, is the same as no entry.
    target
        .per_key
        .insert("key_idle".into(), KeyTally::default());
    compare(&source, &target).expect("still the same");

    target.keys = 2;
    target.per_key.get_mut("key_a").expect("key_a").usage_cost = 299;
    let message = format!("{:#}", compare(&source, &target).expect_err("differs"));
    assert_eq!(
        message,
        "the copy does not match its source, so nothing was committed: keys: 3 in SQLite, 2 \
         in PostgreSQL; key key_a: usage cost (nanodollars) 300 in SQLite, 299 in PostgreSQL"
    );

    for i in 0..7 {
        target.per_key.insert(
            format!("key_{i}"),
            KeyTally {
                usage_rows: 1,
                ..KeyTally::default()
            },
        );
    }
    let message = format!("{:#}", compare(&source, &target).expect_err("differs"));
    assert!(message.ends_with(" (and 4 more)"), "{message}");
}

#[test]
fn counts_read_with_thousands_separators() {
    let check = |n: u64, what: &str, expected: &str| assert_eq!(counted(n, what), expected);
    check(0, "key", "0 keys");
    check(1, "key", "1 key");
    check(999, "audit row", "999 audit rows");
    check(1_000, "usage record", "1,000 usage records");
    check(1_234_567, "usage record", "1,234,567 usage records");
}
