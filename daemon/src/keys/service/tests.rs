//! Two replicas' key services on one PostgreSQL database (two stores, two key tables), the
//! way two `gatewayd`s change the same key through their management APIs. Without a
//! follower, B's table is as stale as it can be: every change of A's is news to B only when
//! B's own write is refused. With followers, the tables must never show an older version of
//! a key after a newer one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gateway_shared::api::{CreateKey, Patch, RotateKey, UpdateKey};
use gateway_shared::{ErrorCode, KeyState};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::admin_tokens::AdminTokens;
use crate::clock::ManualClock;
use crate::store::postgres::listen;
use crate::store::postgres::test_database::TestDatabase;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        "2026-03-01T12:00:00Z".parse().expect("time"),
    ))
}

fn actor(name: &str) -> Actor {
    Actor(name.into())
}

/// One replica: its store, its key table and the service its management API calls.
struct Replica {
    store: Store,
    cache: Arc<KeyCache>,
    keys: KeyService,
    /// The change feed follower, when running.
    follower: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Replica {
    async fn start(url: &str, clock: Arc<ManualClock>) -> Replica {
        let store = Store::connect_postgres(url).await.expect("connect");
        let cache = KeyCache::load(&store, clock.clone()).await.expect("keys");
        let (usage, _thread) =
            UsageWriter::spawn(store.clone(), None, clock.clone()).expect("usage writer");
        Replica {
            keys: KeyService::new(store.clone(), Arc::clone(&cache), clock, usage, None),
            store,
            cache,
            follower: None,
        }
    }

    /// Starts following the change feed, as the daemon does (seq read before loading).
    async fn follow(url: &str, clock: Arc<ManualClock>) -> Replica {
        let from = Store::connect_postgres(url)
            .await
            .expect("connect")
            .max_change_seq()
            .await
            .expect("seq");
        let mut replica = Replica::start(url, clock.clone()).await;
        let tokens = AdminTokens::load(replica.store.clone(), clock)
            .await
            .expect("tokens");
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::keys::sync::follow(
            replica.store.clone(),
            listen(url, from).expect("listen"),
            Arc::clone(&replica.cache),
            Arc::new(tokens),
            stop.clone(),
        ));
        replica.follower = Some((stop, task));
        replica
    }

    async fn stored(&self, id: &str) -> KeyRecord {
        self.store
            .load_key(id.into())
            .await
            .expect("load")
            .expect("stored")
    }

    async fn audit_actions(&self, id: &str) -> Vec<String> {
        self.store
            .list_audit(AuditQuery {
                key_id: Some(id.into()),
                before_id: None,
                limit: 100,
            })
            .await
            .expect("audit")
            .into_iter()
            .rev()
            .map(|entry| entry.action)
            .collect()
    }

    async fn stop(self) {
        if let Some((stop, task)) = self.follower {
            stop.cancel();
            task.await.expect("the follower did not panic");
        }
    }
}

fn rename(name: &str) -> UpdateKey {
    UpdateKey {
        name: Some(name.into()),
        ..UpdateKey::default()
    }
}

/// Creates a key on A and starts B after it, so that B's table holds it at version 1.
async fn key_known_to_both(db: &TestDatabase) -> (Replica, Replica, String, Arc<ManualClock>) {
    let clock = clock();
    let a = Replica::start(&db.url, clock.clone()).await;
    let created = a
        .keys
        .create(
            &actor("uid:1"),
            CreateKey {
                name: "shared".into(),
                ..CreateKey::default()
            },
        )
        .await
        .expect("create");
    let b = Replica::start(&db.url, clock.clone()).await;
    let id = created.key.id;
    assert_eq!(b.cache.get(&id).expect("B loaded it").version, 1);
    (a, b, id, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_from_a_stale_copy_never_un_revokes_a_key() {
    let db = TestDatabase::create("service_stale_edit").await;
    let (a, b, id, clock) = key_known_to_both(&db).await;
    let revoked = a.keys.revoke(&actor("uid:1"), &id).await.expect("revoke");
    assert_eq!(revoked.state, KeyState::Revoked);
    assert_eq!(b.cache.get(&id).expect("B").version, 1, "B has not heard");

    let err = b
        .keys
        .update(&actor("uid:2"), &id, rename("renamed on B"))
        .await
        .expect_err("the key is revoked now");
    assert_eq!(err.code, ErrorCode::KeyRevoked, "{}", err.message);
    assert!(err.message.contains("revoked"), "{}", err.message);

    let stored = b.stored(&id).await;
    assert_eq!(
        (stored.name.as_str(), stored.revoked_at, stored.version),
        ("shared", Some(clock.now()), 2),
        "revoked and not renamed"
    );
    assert_eq!(
        b.audit_actions(&id).await,
        ["key.create", "key.revoke"],
        "no audit row for the refused edit"
    );
    for (replica, table) in [("A", &a.cache), ("B", &b.cache)] {
        let entry = table.get(&id).expect("in the table");
        assert!(entry.is_revoked_at(clock.now()), "revoked on {replica}");
        assert_eq!(entry.version, 2, "{replica}");
    }

    // A revocation and a rotation from B's side of things answer as on one server.
    let again = b.keys.revoke(&actor("uid:2"), &id).await.expect("revoke");
    assert_eq!(again.revoked_at, Some(clock.now()));
    let err = b
        .keys
        .rotate(
            &actor("uid:2"),
            &id,
            RotateKey {
                grace_period_seconds: 0,
            },
        )
        .await
        .expect_err("revoked");
    assert_eq!(err.code, ErrorCode::KeyRevoked);
    assert_eq!(b.audit_actions(&id).await, ["key.create", "key.revoke"]);
    assert!(
        b.store
            .load_rotations()
            .await
            .expect("rotations")
            .is_empty()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_revocation_and_rotation_are_decided_again_from_the_fresh_row() {
    let db = TestDatabase::create("service_stale_revoke").await;
    let (a, b, id, clock) = key_known_to_both(&db).await;
    // A rotates the key with a grace period: B's copy (version 1) does not know it retires.
    let rotated = a
        .keys
        .rotate(
            &actor("uid:1"),
            &id,
            RotateKey {
                grace_period_seconds: 3600,
            },
        )
        .await
        .expect("rotate");
    let err = b
        .keys
        .rotate(
            &actor("uid:2"),
            &id,
            RotateKey {
                grace_period_seconds: 0,
            },
        )
        .await
        .expect_err("a second rotation would fork the key");
    assert_eq!(err.code, ErrorCode::KeyRevoked);
    assert!(err.message.contains("already rotated"), "{}", err.message);
    assert_eq!(b.store.load_rotations().await.expect("rotations").len(), 1);

    // B revokes it now: written on top of A's rotation, not instead of it.
    let revoked = b.keys.revoke(&actor("uid:2"), &id).await.expect("revoke");
    assert_eq!(revoked.revoked_at, Some(clock.now()));
    let stored = b.stored(&id).await;
    assert_eq!((stored.revoked_at, stored.version), (Some(clock.now()), 3));
    assert_eq!(
        b.audit_actions(&id).await,
        ["key.create", "key.rotate", "key.revoke"]
    );
    assert_eq!(rotated.previous.id, id);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_edit_is_re_applied_to_the_fresh_row_keeping_the_other_replicas_change() {
    let db = TestDatabase::create("service_reapply").await;
    let (a, b, id, _clock) = key_known_to_both(&db).await;
    let models = UpdateKey {
        allowed_models: Some(vec!["gpt-4o*".into()]),
        ..UpdateKey::default()
    };
    a.keys
        .update(&actor("uid:1"), &id, models)
        .await
        .expect("A edits the models");

    let view = b
        .keys
        .update(&actor("uid:2"), &id, rename("renamed on B"))
        .await
        .expect("B's edit applies to the fresh row");
    assert_eq!(view.name, "renamed on B");
    assert_eq!(view.allowed_models, ["gpt-4o*"], "A's edit stands");
    let stored = b.stored(&id).await;
    assert_eq!(
        (
            stored.name.as_str(),
            stored.allowed_models.as_slice(),
            stored.version
        ),
        ("renamed on B", ["gpt-4o*".to_owned()].as_slice(), 3)
    );
    assert_eq!(b.cache.get(&id).expect("B").version, 3);
    let audits = b
        .store
        .list_audit(AuditQuery {
            key_id: Some(id.clone()),
            before_id: None,
            limit: 1,
        })
        .await
        .expect("audit");
    assert_eq!(
        audits[0].details,
        serde_json::json!({"name": {"from": "shared", "to": "renamed on B"}}),
        "B's audit row records B's edit only"
    );

    // An edit that the fresh row already has changes nothing and writes nothing.
    let before = b.audit_actions(&id).await.len();
    let a_view = a
        .keys
        .update(&actor("uid:1"), &id, rename("renamed on B"))
        .await
        .expect("nothing to change");
    assert_eq!(a_view.name, "renamed on B");
    assert_eq!(b.audit_actions(&id).await.len(), before);
    assert_eq!(b.stored(&id).await.version, 3);
    a.stop().await;
    b.stop().await;
}

/// Records the highest version each table showed for each key, and whether one ever showed
/// an older version after a newer one.
fn watch_versions(
    tables: Vec<Arc<KeyCache>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        let went_back = AtomicBool::new(false);
        let mut highest: Vec<HashMap<String, u64>> = vec![HashMap::new(); tables.len()];
        while !stop.is_cancelled() {
            for (table, seen) in tables.iter().zip(highest.iter_mut()) {
                for entry in table.all() {
                    let high = seen.entry(entry.id.to_string()).or_default();
                    if entry.version < *high {
                        eprintln!(
                            "key {} went back from version {high} to {}",
                            entry.id, entry.version
                        );
                        went_back.store(true, Ordering::Relaxed);
                    }
                    *high = (*high).max(entry.version);
                }
            }
            tokio::task::yield_now().await;
        }
        went_back.load(Ordering::Relaxed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_never_lose_a_revocation_and_no_table_goes_back_a_version() {
    let db = TestDatabase::create("service_race").await;
    let clock = clock();
    let a = Replica::follow(&db.url, clock.clone()).await;
    let b = Replica::follow(&db.url, clock.clone()).await;
    let stop = CancellationToken::new();
    let watcher = watch_versions(
        vec![Arc::clone(&a.cache), Arc::clone(&b.cache)],
        stop.clone(),
    );
    let mut ids = Vec::new();
    let (mut edits_applied, mut edits_refused) = (0, 0);
    for round in 0..15 {
        let created = a
            .keys
            .create(
                &actor("uid:1"),
                CreateKey {
                    name: format!("key {round}"),
                    ..CreateKey::default()
                },
            )
            .await
            .expect("create");
        let id = created.key.id;
        let since = Instant::now();
        while b.cache.get(&id).is_none() {
            assert!(
                since.elapsed() < Duration::from_secs(15),
                "B never saw {id}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A revokes while B edits, each from its own table.
        let limit = UpdateKey {
            name: Some(format!("key {round}, edited on B")),
            rate_limit_rpm: Patch::Set(60),
            ..UpdateKey::default()
        };
        let (on_a, on_b) = (actor("uid:1"), actor("uid:2"));
        let (revoked, edited) =
            tokio::join!(a.keys.revoke(&on_a, &id), b.keys.update(&on_b, &id, limit));
        revoked.expect("the revocation always commits");
        match edited {
            Ok(_) => edits_applied += 1,
            Err(err) => {
                assert_eq!(err.code, ErrorCode::KeyRevoked, "{}", err.message);
                edits_refused += 1;
            }
        }
        ids.push(id);
    }
    eprintln!("B's edits: {edits_applied} applied before the revocation, {edits_refused} refused");

    // Both tables converge on the store's rows, every key revoked.
    let now = clock.now();
    for id in &ids {
        let stored = a.stored(id).await;
        assert_eq!(stored.revoked_at, Some(now), "{id} stays revoked");
        let since = Instant::now();
        loop {
            let versions = [&a.cache, &b.cache].map(|t| t.get(id).map(|e| e.version));
            if versions == [Some(stored.version); 2] {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(15),
                "{id}: tables at {versions:?}, store at {}",
                stored.version
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for table in [&a.cache, &b.cache] {
            let entry = table.get(id).expect("there");
            assert_eq!(entry.state_at(now), KeyState::Revoked);
            assert_eq!(entry.name, stored.name);
            assert_eq!(entry.rate_limit_rpm, stored.rate_limit_rpm);
        }
    }
    stop.cancel();
    assert!(
        !watcher.await.expect("watcher"),
        "a table showed an older version of a key after a newer one"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_key_that_keeps_changing_under_every_attempt_is_refused_503_with_nothing_written() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("gateway.db");
    let store = Store::open(&path).expect("store");
    let clock = clock();
    let cache = KeyCache::load(&store, clock.clone()).await.expect("keys");
    let (usage, _thread) =
        UsageWriter::spawn(store.clone(), None, clock.clone()).expect("usage writer");
    let keys = KeyService::new(store.clone(), Arc::clone(&cache), clock, usage, None);
    let created = keys
        .create(
            &actor("uid:1"),
            CreateKey {
                name: "contended".into(),
                ..CreateKey::default()
            },
        )
        .await
        .expect("create");
    // Behind the store's back: every write that would rename the key matches no row, as if
    // another replica had changed it each time just before (SQLite's `RAISE(IGNORE)` skips
    // the row; the conditional write then finds the key but not at the version it expects).
    rusqlite::Connection::open(&path)
        .expect("open")
        .execute_batch(
            "CREATE TRIGGER always_changed BEFORE UPDATE ON keys \
             WHEN NEW.name = 'never' BEGIN SELECT RAISE(IGNORE); END;",
        )
        .expect("trigger");

    let err = keys
        .update(&actor("uid:1"), &created.key.id, rename("never"))
        .await
        .expect_err("refused");
    assert_eq!(err.code, ErrorCode::StoreUnavailable);
    assert_eq!(err.code.management_status(), 503);
    assert!(
        err.message.contains(&format!("{ATTEMPTS} attempts")) && err.message.contains("Retry"),
        "{}",
        err.message
    );
    let stored = store
        .load_key(created.key.id.clone())
        .await
        .expect("load")
        .expect("there");
    assert_eq!((stored.name.as_str(), stored.version), ("contended", 1));
    let audits = store
        .list_audit(AuditQuery {
            key_id: None,
            before_id: None,
            limit: 10,
        })
        .await
        .expect("audit");
    assert_eq!(audits.len(), 1, "the create's row only");

    // Any other edit still goes through.
    let view = keys
        .update(&actor("uid:1"), &created.key.id, rename("fine"))
        .await
        .expect("edit");
    assert_eq!(view.name, "fine");
    assert_eq!(cache.get(&created.key.id).expect("there").version, 2);
}
