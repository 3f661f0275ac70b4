//! Two replicas on one PostgreSQL database: A changes keys and admin tokens through its
//! services (exactly what its management API calls), B follows the change feed. The tests
//! measure how long B's memory takes to show each change (the lag of SPEC §9.3 in part 1),
//! print it, and hold it to a generous bound so that a slow machine does not fail them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_shared::KeyState;
use gateway_shared::api::{CreateAdminToken, CreateKey, Patch, RotateKey, UpdateKey};
use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::follow;
use crate::admin_tokens::{AdminTokens, AuthFailure};
use crate::clock::{Clock, ManualClock};
use crate::keys::{Actor, KeyCache, KeyService};
use crate::store::postgres::test_database::TestDatabase;
use crate::store::postgres::{Event, listen};
use crate::store::writer::UsageWriter;
use crate::store::{Change, ChangeKind, Store};
use relay::{Relay, server_of, through};

/// The lag the tests accept: generous, so that they are not flaky on a loaded machine; the
/// measured lags are printed (a few milliseconds).
const BOUND: Duration = Duration::from_secs(2);
mod relay;
mod restore;

/// How long a test waits for a change before it fails.
const GIVE_UP: Duration = Duration::from_secs(15);

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        "2026-03-01T12:00:00Z".parse().expect("time"),
    ))
}

fn actor() -> Actor {
    Actor("uid:0".into())
}

/// Replica A: changes keys and tokens as its management API does.
struct Writer {
    store: Store,
    keys: KeyService,
    tokens: AdminTokens,
}

async fn writer(url: &str, clock: Arc<ManualClock>) -> Writer {
    let store = Store::connect_postgres(url).await.expect("replica A");
    let cache = KeyCache::load(&store, clock.clone())
        .await
        .expect("A's keys");
    let (usage, _thread) = UsageWriter::spawn(store.clone(), None, clock.clone()).expect("usage");
    Writer {
        keys: KeyService::new(store.clone(), cache, clock.clone(), usage, None),
        tokens: AdminTokens::load(store.clone(), clock)
            .await
            .expect("A's tokens"),
        store,
    }
}

/// Replica B: its key table and admin tokens, kept up to date by [`follow`].
struct Follower {
    cache: Arc<KeyCache>,
    tokens: Arc<AdminTokens>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts B as the daemon does: the feed's start read before loading.
async fn follower(url: &str, clock: Arc<ManualClock>) -> Follower {
    let store = Store::connect_postgres(url).await.expect("replica B");
    let from = store.max_change_seq().await.expect("max seq");
    let cache = KeyCache::load(&store, clock.clone())
        .await
        .expect("B's keys");
    let tokens = Arc::new(
        AdminTokens::load(store.clone(), clock)
            .await
            .expect("B's tokens"),
    );
    let events = listen(url, from).expect("listen");
    follower_on(store, events, cache, tokens)
}

fn follower_on(
    store: Store,
    events: mpsc::Receiver<Event>,
    cache: Arc<KeyCache>,
    tokens: Arc<AdminTokens>,
) -> Follower {
    let stop = CancellationToken::new();
    let task = tokio::spawn(follow(
        store,
        events,
        Arc::clone(&cache),
        Arc::clone(&tokens),
        stop.clone(),
    ));
    Follower {
        cache,
        tokens,
        stop,
        task,
    }
}

impl Follower {
    /// Stops B, which must end promptly whatever it was doing.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), self.task)
            .await
            .expect("follow ends within 1 s of the stop")
            .expect("follow did not panic");
    }

    fn state(&self, key_id: &str, now: Timestamp) -> Option<KeyState> {
        self.cache.get(key_id).map(|entry| entry.state_at(now))
    }
}

/// Waits until `ready` and returns how long it took from `since`, printed as `what`.
async fn until(what: &str, since: Instant, mut ready: impl FnMut() -> bool) -> Duration {
    loop {
        if ready() {
            let lag = since.elapsed();
            eprintln!("lag, {what}: {:.1} ms", lag.as_secs_f64() * 1000.0);
            return lag;
        }
        assert!(
            since.elapsed() < GIVE_UP,
            "{what}: not seen after {GIVE_UP:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn create(name: &str) -> CreateKey {
    CreateKey {
        name: name.into(),
        ..CreateKey::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_on_one_replica_reaches_the_others_memory_within_the_bound() {
    let db = TestDatabase::create("sync_lag").await;
    let clock = clock();
    let a = writer(&db.url, clock.clone()).await;
    let b = follower(&db.url, clock.clone()).await;
    let now = clock.now();
    let mut lags = Vec::new();

    // Created on A: usable on B, under the same secret.
    let created = a
        .keys
        .create(&actor(), create("first"))
        .await
        .expect("create");
    let id = created.key.id.clone();
    let answered = Instant::now();
    lags.push(until("key created", answered, || b.cache.get(&id).is_some()).await);
    let a_entry = a.keys.get(&id).await.expect("on A");
    let b_entry = b.cache.get(&id).expect("on B");
    assert!(b.cache.by_hash(&b_entry.hash).is_some());
    assert_eq!(b.cache.view(&b_entry, now), a_entry);

    // Edited on A.
    let update = UpdateKey {
        name: Some("renamed".into()),
        allowed_models: Some(vec!["gpt-4o*".into()]),
        rate_limit_rpm: Patch::Keep,
        ..UpdateKey::default()
    };
    let edited = a.keys.update(&actor(), &id, update).await.expect("update");
    let answered = Instant::now();
    lags.push(
        until("key edited", answered, || {
            b.cache.get(&id).is_some_and(|e| e.name == "renamed")
        })
        .await,
    );
    let b_entry = b.cache.get(&id).expect("on B");
    assert_eq!(b_entry.policy.models(), ["gpt-4o*".to_owned()]);
    assert_eq!(b.cache.view(&b_entry, now), edited);

    // Rotated on A: the successor shares its predecessor's live state on B too.
    let rotated = a
        .keys
        .rotate(
            &actor(),
            &id,
            RotateKey {
                grace_period_seconds: 3600,
            },
        )
        .await
        .expect("rotate");
    let new_id = rotated.created.key.id.clone();
    let answered = Instant::now();
    lags.push(
        until("key rotated", answered, || {
            b.cache.get(&new_id).is_some()
                && b.cache
                    .get(&id)
                    .is_some_and(|old| b.cache.view(&old, now).replaced_by == Some(new_id.clone()))
        })
        .await,
    );
    let (old, new) = (
        b.cache.get(&id).expect("old"),
        b.cache.get(&new_id).expect("new"),
    );
    assert!(
        Arc::ptr_eq(&old.runtime, &new.runtime),
        "one live state, as after a local rotation"
    );
    assert_eq!(b.cache.view(&old, now), rotated.previous);
    assert_eq!(
        b.state(&id, now),
        Some(KeyState::Active),
        "in its grace period"
    );

    // Revoked on A: refused on B.
    a.keys.revoke(&actor(), &new_id).await.expect("revoke");
    let answered = Instant::now();
    lags.push(
        until("key revoked", answered, || {
            b.state(&new_id, clock.now()) == Some(KeyState::Revoked)
        })
        .await,
    );
    assert!(b.cache.get(&new_id).expect("new").is_revoked_at(now));

    // An admin token created on A authenticates on B; revoked on A, it stops at once.
    let token = a
        .tokens
        .create(&actor(), CreateAdminToken { name: "ci".into() })
        .await
        .expect("token");
    let answered = Instant::now();
    lags.push(
        until("admin token created", answered, || {
            b.tokens.authenticate(&token.secret).is_ok()
        })
        .await,
    );
    // B recorded that use in the store (in a task of its own). Wait for that write before
    // revoking, so that the revocation is the last change B applies (a use written after a
    // revocation is merged into it and cannot undo it: see the store's tests).
    let token_id = token.token.id.clone();
    let since = Instant::now();
    loop {
        let stored = a
            .store
            .load_admin_token(token_id.clone())
            .await
            .expect("read")
            .expect("stored");
        if stored.last_used_at.is_some() {
            break;
        }
        assert!(since.elapsed() < GIVE_UP, "B's use was never written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.tokens.revoke(&actor(), &token_id).await.expect("revoke");
    let answered = Instant::now();
    lags.push(
        until("admin token revoked", answered, || {
            b.tokens.authenticate(&token.secret) == Err(AuthFailure::Revoked)
        })
        .await,
    );

    let worst = lags.iter().max().copied().unwrap_or_default();
    eprintln!("worst lag A → B: {:.1} ms", worst.as_secs_f64() * 1000.0);
    assert!(worst < BOUND, "a change took {worst:?} to reach B");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_feed_is_cut_all_arrive_after_the_reconnect() {
    let db = TestDatabase::create("sync_cut").await;
    let clock = clock();
    let a = writer(&db.url, clock.clone()).await;
    let b = follower(&db.url, clock.clone()).await;
    let now = clock.now();
    let first = a
        .keys
        .create(&actor(), create("first"))
        .await
        .expect("create");
    let first_id = first.key.id.clone();
    until("before the cut", Instant::now(), || {
        b.cache.get(&first_id).is_some()
    })
    .await;

    // The listener's connection is killed; changes land while it is down.
    let admin = db.client().await;
    let listener_pid = |rows: Vec<tokio_postgres::Row>| -> Vec<i32> {
        rows.iter().map(|row| row.get(0)).collect()
    };
    let listeners = "SELECT pid FROM pg_stat_activity \
         WHERE application_name = 'gatewayd listener' AND datname = current_database()";
    let before = listener_pid(admin.query(listeners, &[]).await.expect("listeners"));
    assert_eq!(before.len(), 1, "B's listener: {before:?}");
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&before[0]])
        .await
        .expect("terminate")
        .get(0);
    assert!(killed);
    let cut = Instant::now();

    let second = a
        .keys
        .create(&actor(), create("second"))
        .await
        .expect("create");
    let second_id = second.key.id.clone();
    let update = UpdateKey {
        name: Some("first, renamed".into()),
        ..UpdateKey::default()
    };
    a.keys
        .update(&actor(), &first_id, update)
        .await
        .expect("edit");
    a.keys.revoke(&actor(), &first_id).await.expect("revoke");
    let rotated = a
        .keys
        .rotate(
            &actor(),
            &second_id,
            RotateKey {
                grace_period_seconds: 0,
            },
        )
        .await
        .expect("rotate");
    let third_id = rotated.created.key.id.clone();
    let token = a
        .tokens
        .create(&actor(), CreateAdminToken { name: "ci".into() })
        .await
        .expect("token");
    a.tokens
        .revoke(&actor(), &token.token.id)
        .await
        .expect("revoke token");

    until("everything made during the cut", cut, || {
        b.state(&first_id, now) == Some(KeyState::Revoked)
            && b.state(&second_id, now) == Some(KeyState::Revoked)
            && b.state(&third_id, now) == Some(KeyState::Active)
            && b.tokens.authenticate(&token.secret) == Err(AuthFailure::Revoked)
    })
    .await;
    assert_eq!(
        b.cache.get(&first_id).expect("first").name,
        "first, renamed"
    );
    let (second, third) = (
        b.cache.get(&second_id).expect("second"),
        b.cache.get(&third_id).expect("third"),
    );
    assert!(Arc::ptr_eq(&second.runtime, &third.runtime));
    assert_eq!(
        b.cache.view(&second, now).replaced_by.as_deref(),
        Some(third_id.as_str())
    );
    assert_eq!(b.cache.len(), 3);
    let after = listener_pid(admin.query(listeners, &[]).await.expect("listeners"));
    assert!(
        after.len() == 1 && after != before,
        "a new listener connection: {before:?} → {after:?}"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_committed_while_a_replica_loads_are_applied_again_harmlessly() {
    let db = TestDatabase::create("sync_overlap").await;
    let clock = clock();
    let a = writer(&db.url, clock.clone()).await;
    // B reads where its feed starts, then A changes things, then B loads: the feed
    // delivers those changes again on top of a table that already has them.
    let b_store = Store::connect_postgres(&db.url).await.expect("replica B");
    let from = b_store.max_change_seq().await.expect("max seq");
    let created = a.keys.create(&actor(), create("k")).await.expect("create");
    let rotated = a
        .keys
        .rotate(
            &actor(),
            &created.key.id,
            RotateKey {
                grace_period_seconds: 60,
            },
        )
        .await
        .expect("rotate");
    let token = a
        .tokens
        .create(&actor(), CreateAdminToken { name: "ci".into() })
        .await
        .expect("token");
    let cache = KeyCache::load(&b_store, clock.clone()).await.expect("load");
    let tokens = Arc::new(
        AdminTokens::load(b_store.clone(), clock.clone())
            .await
            .expect("tokens"),
    );
    let (old_id, new_id) = (created.key.id.clone(), rotated.created.key.id.clone());
    let loaded = cache.get(&old_id).expect("loaded").runtime.clone();
    let b = follower_on(
        b_store,
        listen(&db.url, from).expect("listen"),
        cache,
        tokens,
    );
    // Changes apply in order: once a later one is in, the repeated ones were applied.
    let marker = a
        .keys
        .create(&actor(), create("marker"))
        .await
        .expect("create");
    until("the change after the repeated ones", Instant::now(), || {
        b.cache.get(&marker.key.id).is_some()
    })
    .await;

    let now = clock.now();
    assert_eq!(b.cache.len(), 3, "nothing added twice");
    let (old, new) = (
        b.cache.get(&old_id).expect("old"),
        b.cache.get(&new_id).expect("new"),
    );
    assert!(Arc::ptr_eq(&old.runtime, &loaded), "the live state is kept");
    assert!(Arc::ptr_eq(&new.runtime, &loaded), "and still shared");
    assert_eq!(
        b.cache.view(&old, now),
        a.keys.get(&old_id).await.expect("on A")
    );
    assert_eq!(b.tokens.list().tokens.len(), 1);
    assert!(b.tokens.authenticate(&token.secret).is_ok());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_read_fails_is_retried_until_postgres_is_back_and_stop_ends_the_wait() {
    let db = TestDatabase::create("sync_retry").await;
    let clock = clock();
    let a = writer(&db.url, clock.clone()).await;
    // B reaches PostgreSQL through a relay the test can cut; its feed is fed by hand, so
    // that the change arrives exactly while the store is unreachable.
    let mut relay = Relay::start(server_of(&db.url)).await;
    let b_store = Store::connect_postgres(&through(&db.url, relay.addr))
        .await
        .expect("B through the relay");
    let (events, feed) = mpsc::channel(8);
    let b = follower_on(
        b_store,
        feed,
        Arc::new(KeyCache::new([], clock.clone())),
        Arc::new(
            AdminTokens::load(a.store.clone(), clock.clone())
                .await
                .expect("tokens"),
        ),
    );

    let created = a
        .keys
        .create(&actor(), create("later"))
        .await
        .expect("create");
    let id = created.key.id.clone();
    let changes = a.store.changes_since(0).await.expect("changes");
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.kind, c.id.as_str()))
            .collect::<Vec<_>>(),
        [(ChangeKind::Key, id.as_str())]
    );

    relay.cut();
    events
        .send(Event::Changes(changes))
        .await
        .expect("B follows");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(b.cache.get(&id).is_none(), "cannot be read yet");

    relay.restore().await;
    let restored = Instant::now();
    until(
        "the change read again once PostgreSQL is back",
        restored,
        || b.cache.get(&id).is_some(),
    )
    .await;

    // Cut again with a revocation pending: the stop token ends the wait at once.
    a.keys.revoke(&actor(), &id).await.expect("revoke");
    let pending = a.store.changes_since(1).await.expect("changes");
    relay.cut();
    events
        .send(Event::Changes(pending))
        .await
        .expect("B follows");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        b.state(&id, clock.now()),
        Some(KeyState::Active),
        "not read, not skipped"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_whose_version_the_table_holds_is_not_read_again() {
    let db = TestDatabase::create("sync_known").await;
    let clock = clock();
    let a = writer(&db.url, clock.clone()).await;
    let created = a.keys.create(&actor(), create("k")).await.expect("create");
    let id = created.key.id.clone();
    // B's feed is fed by hand, and B's table holds the key at version 1.
    let (events, feed) = mpsc::channel(8);
    let b = follower_on(
        a.store.clone(),
        feed,
        KeyCache::load(&a.store, clock.clone()).await.expect("load"),
        Arc::new(
            AdminTokens::load(a.store.clone(), clock.clone())
                .await
                .expect("tokens"),
        ),
    );
    // Behind the store's back, the row changes without a new version: only a read shows it.
    db.client()
        .await
        .execute("UPDATE keys SET name = 'read' WHERE id = $1", &[&id])
        .await
        .expect("rename");
    let marker = a
        .keys
        .create(&actor(), create("marker"))
        .await
        .expect("create");
    let change = |seq: i64, id: &str, version: Option<u64>| Change {
        seq,
        kind: ChangeKind::Key,
        id: id.to_owned(),
        version,
    };
    // The change of version 1 (the key's creation, echoed) is known: not read. The marker
    // is new to B: read. Changes apply in order, so once the marker shows, the first change
    // was applied, without a read.
    events
        .send(Event::Changes(vec![
            change(100, &id, Some(1)),
            change(101, &marker.key.id, Some(1)),
        ]))
        .await
        .expect("B follows");
    until("the marker", Instant::now(), || {
        b.cache.get(&marker.key.id).is_some()
    })
    .await;
    assert_eq!(b.cache.get(&id).expect("there").name, "k", "not read");

    // A change from a gatewayd that did not record versions is read.
    events
        .send(Event::Changes(vec![change(102, &id, None)]))
        .await
        .expect("B follows");
    until("the unversioned change", Instant::now(), || {
        b.cache.get(&id).is_some_and(|e| e.name == "read")
    })
    .await;
    b.stop().await;
}
