//! Stale writes on both backends: a replica that read a row before another changed it can
//! never write its old copy back (keys, rotations, admin tokens).

use super::*;

pub(super) async fn audit_actions(store: &Store) -> Vec<String> {
    store
        .list_audit(AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .into_iter()
        .map(|entry| entry.action)
        .collect()
}

/// Two replicas read key_a at version 1; the first revokes it, the second then writes a
/// rename built from its stale copy (which would un-revoke the key).
pub(super) async fn a_stale_update_is_refused_and_rolls_back_with_its_audit_row(store: &Store) {
    store
        .insert_key(key("key_a"), audit("key.create", "key_a"))
        .await
        .expect("insert");
    let mut revoked = key("key_a");
    revoked.revoked_at = Some(at("2026-11-28T00:00:00Z"));
    assert_eq!(
        store
            .update_key(revoked.clone(), audit("key.revoke", "key_a"))
            .await
            .expect("revoke"),
        Ok(2)
    );
    let mut stale = key("key_a");
    stale.name = "renamed from a stale copy".into();
    assert_eq!(
        store
            .update_key(stale, audit("key.update", "key_a"))
            .await
            .expect("a conflict is an answer, not an error"),
        Err(Conflict {
            key_id: "key_a".into(),
            read: 1,
            stored: 2
        })
    );
    let loaded = store
        .load_key("key_a".into())
        .await
        .expect("load")
        .expect("there");
    assert_eq!(
        loaded,
        KeyRecord {
            version: 2,
            ..revoked
        },
        "still revoked, not renamed"
    );
    assert_eq!(
        audit_actions(store).await,
        ["key.revoke", "key.create"],
        "the refused update's audit row went with it"
    );

    // Built again from the fresh row, the edit commits.
    let mut fresh = loaded;
    fresh.name = "renamed".into();
    assert_eq!(
        store
            .update_key(fresh, audit("key.update", "key_a"))
            .await
            .expect("update"),
        Ok(3)
    );
    let loaded = store.load_key("key_a".into()).await.expect("load");
    let loaded = loaded.expect("there");
    assert_eq!(
        (loaded.name.as_str(), loaded.revoked_at, loaded.version),
        ("renamed", Some(at("2026-11-28T00:00:00Z")), 3)
    );
}

pub(super) async fn a_stale_rotation_is_refused_and_creates_nothing(store: &Store) {
    store
        .insert_key(key("key_old"), audit("key.create", "key_old"))
        .await
        .expect("insert");
    let mut renamed = key("key_old");
    renamed.name = "renamed elsewhere".into();
    assert_eq!(
        store
            .update_key(renamed, audit("key.update", "key_old"))
            .await
            .expect("update"),
        Ok(2)
    );
    let mut old = key("key_old");
    old.revoked_at = Some(at("2026-11-29T00:00:00Z"));
    let written = store
        .rotate_key(
            old,
            key("key_new"),
            vec![
                audit("key.rotate", "key_old"),
                audit("key.create", "key_new"),
            ],
        )
        .await
        .expect("a conflict is an answer");
    assert_eq!(
        written,
        Err(Conflict {
            key_id: "key_old".into(),
            read: 1,
            stored: 2
        })
    );
    assert_eq!(store.load_key("key_new".into()).await.expect("load"), None);
    assert!(store.load_rotations().await.expect("rotations").is_empty());
    let old = store
        .load_key("key_old".into())
        .await
        .expect("load")
        .expect("there");
    assert_eq!(
        (old.name.as_str(), old.revoked_at, old.version),
        ("renamed elsewhere", None, 2)
    );
    assert_eq!(audit_actions(store).await, ["key.update", "key.create"]);
}

pub(super) async fn a_stale_admin_token_write_never_undoes_a_revocation_or_a_later_use(
    store: &Store,
) {
    let live = TokenRecord {
        id: "tok_1".into(),
        hash: KeyHash::of("tok_1"),
        prefix: "gwadm-tok_1".into(),
        name: "ci".into(),
        created_at: at("2026-11-27T08:00:00Z"),
        revoked_at: None,
        last_used_at: None,
    };
    store
        .save_admin_token(live.clone(), Some(audit("admin_token.create", "tok_1")))
        .await
        .expect("create");
    // Replica A revokes the token; replica B then records a use from its copy taken before.
    let revoked_at = at("2026-11-27T10:00:00Z");
    store
        .save_admin_token(
            TokenRecord {
                revoked_at: Some(revoked_at),
                ..live.clone()
            },
            Some(audit("admin_token.revoke", "tok_1")),
        )
        .await
        .expect("revoke");
    let used_at = at("2026-11-27T10:00:00.25Z");
    store
        .save_admin_token(
            TokenRecord {
                last_used_at: Some(used_at),
                ..live.clone()
            },
            None,
        )
        .await
        .expect("stale use");
    let stored = || async {
        let token = store
            .load_admin_token("tok_1".into())
            .await
            .expect("load")
            .expect("there");
        (token.revoked_at, token.last_used_at)
    };
    assert_eq!(
        stored().await,
        (Some(revoked_at), Some(used_at)),
        "still revoked; the use recorded"
    );
    // An older use written late (the same second, earlier: its text sorts after) does not
    // move the last use back; nor does a write without one.
    for last_used_at in [Some(at("2026-11-27T10:00:00Z")), None] {
        store
            .save_admin_token(
                TokenRecord {
                    last_used_at,
                    ..live.clone()
                },
                None,
            )
            .await
            .expect("older use");
        assert_eq!(stored().await, (Some(revoked_at), Some(used_at)));
    }
}
