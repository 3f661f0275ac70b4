//! The database restored from a backup under a running cluster: the feed's seqs and the keys'
//! versions restart lower than what B has seen, and B must still apply what A changes next.

use super::*;
use crate::keys::record::KeyRecord;

fn rename(name: &str) -> UpdateKey {
    UpdateKey {
        name: Some(name.into()),
        ..UpdateKey::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_after_a_restore_from_backup_reaches_the_follower() {
    let db = TestDatabase::create("sync_restore").await;
    let clock = clock();
    let a = writer(&db.url, clock.clone()).await;
    let b = follower(&db.url, clock.clone()).await;
    let id = a
        .keys
        .create(&actor(), create("restored"))
        .await
        .expect("create")
        .key
        .id;
    a.keys
        .update(&actor(), &id, rename("v2"))
        .await
        .expect("v2");
    // The backup is taken here: the feed ends at `backup_seq`, the key is at version 2.
    let backup_seq = a.store.max_change_seq().await.expect("max");
    for name in ["v3", "v4"] {
        a.keys
            .update(&actor(), &id, rename(name))
            .await
            .expect("edit");
    }
    until("v4 on B", Instant::now(), || {
        b.cache.get(&id).is_some_and(|e| e.version == 4)
    })
    .await;
    let runtime = Arc::clone(&b.cache.get(&id).expect("on B").runtime);

    // The restore: later changes gone, the sequence back, the key's row as it was.
    let client = db.client().await;
    client
        .execute("DELETE FROM changes WHERE seq > $1", &[&backup_seq])
        .await
        .expect("delete");
    client
        .execute("SELECT setval('changes_seq_seq', $1)", &[&backup_seq])
        .await
        .expect("setval");
    client
        .execute(
            "UPDATE keys SET version = 2, name = 'v2' WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row back");

    // Revoked through a replica that loaded the restored database (A started again; a
    // replica that had followed would first reset like B): version 3 commits at a seq B has
    // passed, a version below B's.
    let stale_a = a;
    let a = writer(&db.url, clock.clone()).await;
    a.keys.revoke(&actor(), &id).await.expect("revoke");
    assert_eq!(a.store.max_change_seq().await.expect("max"), backup_seq + 1);
    let answered = Instant::now();
    let lag = until("revoked after the restore", answered, || {
        b.state(&id, clock.now()) == Some(KeyState::Revoked)
    })
    .await;
    assert!(lag < BOUND, "took {lag:?}");
    let entry = b.cache.get(&id).expect("on B");
    assert_eq!(
        (entry.version, entry.name.as_str()),
        (3, "v2"),
        "the store's row"
    );
    assert!(
        Arc::ptr_eq(&entry.runtime, &runtime),
        "the live state is kept"
    );

    // The feed goes on from the restored database's seqs.
    let later = a
        .keys
        .create(&actor(), create("later"))
        .await
        .expect("create after the restore")
        .key
        .id;
    until("a key created after the restore", Instant::now(), || {
        b.cache.get(&later).is_some()
    })
    .await;

    // A replica whose memory is ahead of the restored store (version 4; it follows no feed
    // here) still decides from the store's row: refused as revoked, not "kept changing".
    let stale = stale_a
        .keys
        .update(&actor(), &id, rename("stale"))
        .await
        .expect_err("the key is revoked in the store");
    assert_eq!(
        stale.code,
        gateway_shared::ErrorCode::KeyRevoked,
        "{}",
        stale.message
    );
    b.stop().await;
}

/// A replica that held a revocation the restored store lost writes it back; meanwhile the
/// key was edited through a replica that never held it (a rename: active, one version on).
/// The write-back conflicts, and that must not count as "another replica wrote it": the
/// store must end revoked, and so must this replica's table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_back_that_conflicts_with_an_unrelated_edit_still_revokes_the_key() {
    let db = TestDatabase::create("sync_restore_conflict").await;
    let clock = clock();
    let a = writer(&db.url, clock.clone()).await;
    let id = a
        .keys
        .create(&actor(), create("kept-revoked"))
        .await
        .expect("create")
        .key
        .id;
    // This replica's table: the key revoked (after the backup the store was restored from).
    let store = Store::connect_postgres(&db.url).await.expect("replica C");
    let cache = KeyCache::load(&store, clock.clone())
        .await
        .expect("C's keys");
    let tokens = Arc::new(
        AdminTokens::load(store.clone(), clock.clone())
            .await
            .expect("C's tokens"),
    );
    let stored = store
        .load_key(id.clone())
        .await
        .expect("read")
        .expect("row");
    assert!(stored.revoked_at.is_none());
    let revoked_at = clock.now();
    cache.upsert(KeyRecord {
        revoked_at: Some(revoked_at),
        ..stored.clone()
    });
    // The reload read the active row; the revocation to write back is built from it.
    let restored = cache.replace_stored(vec![stored], &[]);
    assert_eq!(restored.revocations.len(), 1, "{restored:?}");
    // Before the write-back: an edit through A, which never held the revocation.
    a.keys
        .update(&actor(), &id, rename("renamed"))
        .await
        .expect("rename");

    let follower = super::super::Follower {
        store: store.clone(),
        cache: Arc::clone(&cache),
        tokens,
        stop: CancellationToken::new(),
        outage: None,
        catch_up: None,
        last_seq: 0,
    };
    for record in restored.revocations {
        follower.revoke_again(record).await.expect("write back");
    }
    let row = store
        .load_key(id.clone())
        .await
        .expect("read")
        .expect("row");
    assert_eq!(
        row.revoked_at,
        Some(revoked_at),
        "the store holds the revocation"
    );
    assert_eq!(
        row.name, "renamed",
        "written over the edit, not over the old row"
    );
    let entry = cache.get(&id).expect("in C's table");
    assert_eq!(entry.state_at(clock.now()), KeyState::Revoked);
    assert_eq!(
        entry.version, row.version,
        "the table holds the written row"
    );
}
