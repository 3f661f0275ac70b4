//! The store's behaviour, written once and run on both backends (`on_both_backends!`): a
//! SQLite file in a temp dir, and a fresh PostgreSQL database per test (`test_database`),
//! dropped at the end whether the test passed or not. PostgreSQL absent: the PostgreSQL
//! half fails, saying so; it never skips.
//!
//! Records written here carry spend states consistent with their costs, so that SQLite's
//! persisted spend (the ledger's state) and PostgreSQL's derived spend (the sum of the rows)
//! must agree.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use gateway_shared::{KeyHash, Nanodollars, Provider, SpendReset};
use jiff::Timestamp;

use super::*;
use crate::admin_tokens::TokenRecord;
use crate::store::postgres::test_database::TestDatabase;

mod stale_writes;
mod usage_records;

use stale_writes::*;
use usage_records::*;
pub(crate) use usage_records::{usage, with_running_spend, write};

/// A store for one test and what must outlive it.
pub(crate) struct TestStore {
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    // Dropped after the store field above (fields drop in order): the pool first, then
    // the database.
    pub database: Option<TestDatabase>,
}

impl TestStore {
    pub async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("gateway.db")).expect("open");
        TestStore {
            store,
            _dir: Some(dir),
            database: None,
        }
    }

    pub async fn postgres(tag: &str) -> TestStore {
        let database = TestDatabase::create(tag).await;
        let store = Store::connect_postgres(&database.url)
            .await
            .expect("connect");
        TestStore {
            store,
            _dir: None,
            database: Some(database),
        }
    }
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let test = super::TestStore::sqlite().await;
                    super::$test(&test.store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let test = super::TestStore::postgres(stringify!($test)).await;
                    super::$test(&test.store).await;
                }
            )*
        }
    };
}

on_both_backends!(
    keys_read_back_as_written,
    an_update_and_its_audit_row_commit_together,
    a_rotation_links_the_two_keys,
    the_audit_log_pages_newest_first,
    admin_tokens_are_saved_and_revoked,
    usage_is_reported_by_utc_day_and_model,
    period_spend_sums_a_pairs_days_from_the_period_start,
    the_usage_writer_assigns_ids_and_commits,
    heartbeats_list_the_replicas_seen_recently,
    a_constraint_violation_is_not_unavailability,
    a_stale_update_is_refused_and_rolls_back_with_its_audit_row,
    a_stale_rotation_is_refused_and_creates_nothing,
    a_stale_admin_token_write_never_undoes_a_revocation_or_a_later_use,
);

pub(crate) fn at(text: &str) -> Timestamp {
    text.parse().expect("time")
}

pub(crate) fn key(id: &str) -> KeyRecord {
    KeyRecord {
        prefix: format!("gw-{id}"),
        name: format!("the {id} key"),
        allowed_providers: vec![Provider::Openai, Provider::Anthropic],
        allowed_models: vec!["gpt-*".into()],
        allowed_ips: vec!["10.0.0.0/8".into()],
        spend_limit: Some(Nanodollars(5_000_000_000)),
        spend_reset: Some(SpendReset::Monthly),
        expires_at: Some(at("2027-01-01T00:00:00.123456789Z")),
        ..KeyRecord::plain(id, at("2026-11-27T08:00:00.5Z"))
    }
}

pub(crate) fn audit(action: &'static str, key_id: &str) -> AuditRecord {
    AuditRecord {
        at: at("2026-11-27T08:00:00Z"),
        actor: "uid:0".into(),
        action,
        key_id: Some(key_id.into()),
        details: serde_json::json!({"name": key_id}),
    }
}

pub(crate) async fn all_keys(store: &Store) -> Vec<KeyRecord> {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&keys);
    store
        .load_keys(move |record| sink.lock().expect("lock").push(record))
        .await
        .expect("load");
    let mut keys = keys.lock().expect("lock").clone();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    keys
}

async fn keys_read_back_as_written(store: &Store) {
    let mut limited = key("key_a");
    limited.rate_limit_rpm = Some(60);
    let plain = KeyRecord {
        spend_limit: None,
        spend_reset: None,
        expires_at: None,
        allowed_providers: Vec::new(),
        ..key("key_b")
    };
    for record in [limited.clone(), plain.clone()] {
        let id = record.id.clone();
        store
            .insert_key(record, audit("key.create", &id))
            .await
            .expect("insert");
    }
    assert_eq!(store.count_keys().await.expect("count"), 2);
    assert_eq!(all_keys(store).await, [limited.clone(), plain]);
    assert_eq!(
        store.load_key("key_a".into()).await.expect("load"),
        Some(limited)
    );
    assert_eq!(store.load_key("key_zz".into()).await.expect("load"), None);
}

async fn an_update_and_its_audit_row_commit_together(store: &Store) {
    store
        .insert_key(key("key_a"), audit("key.create", "key_a"))
        .await
        .expect("insert");
    let mut revoked = key("key_a");
    revoked.revoked_at = Some(at("2026-11-28T00:00:00Z"));
    revoked.updated_at = at("2026-11-28T00:00:00Z");
    revoked.name = "renamed".into();
    assert_eq!(
        store
            .update_key(revoked.clone(), audit("key.revoke", "key_a"))
            .await
            .expect("update"),
        Ok(2),
        "one more than the version it was read at"
    );
    assert_eq!(
        store.load_key("key_a".into()).await.expect("load"),
        Some(KeyRecord {
            version: 2,
            ..revoked
        })
    );
    let err = store
        .update_key(key("key_ghost"), audit("key.update", "key_ghost"))
        .await
        .expect_err("no such key");
    assert!(format!("{err:#}").contains("key_ghost"), "{err:#}");
    let actions: Vec<String> = store
        .list_audit(AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|entry| entry.action)
        .collect();
    assert_eq!(
        actions,
        ["key.revoke", "key.create"],
        "the failed update left no audit row"
    );
}

async fn a_rotation_links_the_two_keys(store: &Store) {
    store
        .insert_key(key("key_old"), audit("key.create", "key_old"))
        .await
        .expect("insert");
    let mut old = key("key_old");
    old.revoked_at = Some(at("2026-11-29T00:00:00Z"));
    let new = key("key_new");
    assert_eq!(
        store
            .rotate_key(
                old.clone(),
                new.clone(),
                vec![
                    audit("key.rotate", "key_old"),
                    audit("key.create", "key_new"),
                ],
            )
            .await
            .expect("rotate"),
        Ok(2),
        "the old key's new version"
    );
    old.version = 2;
    assert_eq!(
        store.load_rotations().await.expect("rotations"),
        [("key_new".to_owned(), "key_old".to_owned())]
    );
    assert_eq!(
        store
            .predecessor_of("key_new".into())
            .await
            .expect("predecessor"),
        Some("key_old".into())
    );
    assert_eq!(
        store
            .predecessor_of("key_old".into())
            .await
            .expect("predecessor"),
        None
    );
    assert_eq!(all_keys(store).await, [new, old]);
    assert_eq!(
        store
            .list_audit(AuditQuery {
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .expect("audit")
            .len(),
        3
    );
}

async fn the_audit_log_pages_newest_first(store: &Store) {
    for id in ["key_a", "key_b", "key_c"] {
        store
            .insert_key(key(id), audit("key.create", id))
            .await
            .expect("insert");
    }
    let page = |key_id: Option<&str>, before_id: Option<i64>, limit: usize| {
        let query = AuditQuery {
            key_id: key_id.map(Into::into),
            before_id,
            limit,
        };
        async move {
            store
                .list_audit(query)
                .await
                .expect("audit")
                .into_iter()
                .map(|e| (e.id, e.key_id.unwrap_or_default()))
                .collect::<Vec<_>>()
        }
    };
    let first = page(None, None, 2).await;
    assert_eq!(
        first.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(),
        ["key_c", "key_b"]
    );
    let rest = page(None, Some(first[1].0), 10).await;
    assert_eq!(
        rest.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(),
        ["key_a"]
    );
    assert_eq!(page(Some("key_b"), None, 10).await, [first[1].clone()]);
    let entry = store
        .list_audit(AuditQuery {
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .remove(0);
    assert_eq!(
        (entry.at, entry.actor.as_str(), entry.details),
        (
            at("2026-11-27T08:00:00Z"),
            "uid:0",
            serde_json::json!({"name": "key_c"})
        )
    );
}

async fn admin_tokens_are_saved_and_revoked(store: &Store) {
    let token = |id: &str, created: &str| TokenRecord {
        id: id.into(),
        hash: KeyHash::of(id),
        prefix: format!("gwadm-{id}"),
        name: format!("token {id}"),
        created_at: at(created),
        revoked_at: None,
        last_used_at: None,
    };
    let first = token("tok_1", "2026-11-27T08:00:00Z");
    let second = token("tok_2", "2026-11-27T09:00:00Z");
    store
        .save_admin_token(second.clone(), Some(audit("admin_token.create", "tok_2")))
        .await
        .expect("save");
    store
        .save_admin_token(first.clone(), None)
        .await
        .expect("save");
    assert_eq!(
        store.load_admin_tokens().await.expect("load"),
        [first.clone(), second.clone()],
        "by creation"
    );
    let mut revoked = first.clone();
    revoked.revoked_at = Some(at("2026-11-28T00:00:00Z"));
    revoked.last_used_at = Some(at("2026-11-27T23:00:00.25Z"));
    // Only the lifecycle columns change on a save of a known token.
    revoked.name = "ignored".into();
    store
        .save_admin_token(revoked.clone(), None)
        .await
        .expect("revoke");
    let loaded = store
        .load_admin_token("tok_1".into())
        .await
        .expect("load")
        .expect("there");
    assert_eq!(
        (loaded.revoked_at, loaded.last_used_at, loaded.name.as_str()),
        (revoked.revoked_at, revoked.last_used_at, "token tok_1")
    );
    assert_eq!(
        store.load_admin_token("tok_9".into()).await.expect("load"),
        None
    );
    let audited = store
        .list_audit(AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(
        audited.len(),
        1,
        "only the save that came with an audit row"
    );
}

async fn heartbeats_list_the_replicas_seen_recently(store: &Store) {
    let replica = |id: &str, seen: &str, requests: u64| ReplicaRecord {
        id: id.into(),
        host: format!("{id}.example"),
        version: "0.1.0".into(),
        started_at: at("2026-11-27T08:00:00.250Z"),
        last_seen: at(seen),
        requests,
    };
    store
        .heartbeat(replica("r1", "2026-11-27T09:00:00Z", 5))
        .await
        .expect("beat");
    store
        .heartbeat(replica("r2", "2026-11-27T09:00:10Z", 0))
        .await
        .expect("beat");
    store
        .heartbeat(replica("r1", "2026-11-27T09:00:20Z", 9))
        .await
        .expect("beat again");
    assert_eq!(
        store
            .list_replicas(at("2026-11-27T09:00:00Z"))
            .await
            .expect("list"),
        [
            replica("r1", "2026-11-27T09:00:20Z", 9),
            replica("r2", "2026-11-27T09:00:10Z", 0)
        ]
    );
    assert_eq!(
        store
            .list_replicas(at("2026-11-27T09:00:15Z"))
            .await
            .expect("list"),
        [replica("r1", "2026-11-27T09:00:20Z", 9)],
        "r2 was not seen since"
    );
}

async fn a_constraint_violation_is_not_unavailability(store: &Store) {
    store
        .insert_key(key("key_a"), audit("key.create", "key_a"))
        .await
        .expect("insert");
    let err = store
        .insert_key(key("key_a"), audit("key.create", "key_a"))
        .await
        .expect_err("the same id twice");
    assert!(!is_unavailable(&err), "{err:#}");
    let ids: HashSet<String> = all_keys(store).await.into_iter().map(|k| k.id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        store
            .list_audit(AuditQuery {
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .expect("audit")
            .len(),
        1,
        "the refused insert's audit row went with it"
    );
}
