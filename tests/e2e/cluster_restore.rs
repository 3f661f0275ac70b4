//! The shared store restored from a backup while replicas run (SPEC §9, issue #16): the
//! replicas' memory follows the restored database, not the history they had followed. A key
//! or admin token made after the backup stops working on every replica, without a restart;
//! one thing the restore does not undo is a revocation (SPEC §2: revoked is terminal): a key
//! revoked after the backup stays revoked, and the revocation is written back to the store,
//! so a replica started after the restore refuses it too.
//!
//! The change feed's sequence goes back with the restore; each replica's listener finds the
//! change it last applied gone and reloads everything (`store/postgres/listen.rs`).

use std::time::{Duration, Instant};

use gateway_tests::requests::chat_gpt4o;
use gateway_tests::{Cluster, Gateway, https};
use serde_json::json;

/// Generous: the machine is shared with the rest of the suite; the time taken is printed.
const CONVERGE_BOUND: Duration = Duration::from_secs(30);

async fn status_of(replica: &Gateway, secret: &str) -> u16 {
    chat_gpt4o(&replica.proxy_url(), secret)
        .await
        .status()
        .as_u16()
}

/// Waits until every replica answers `expected` for each `(secret, status)`.
async fn until_all(what: &str, replicas: &[Gateway], expected: &[(&str, u16)]) {
    let start = Instant::now();
    loop {
        let mut all = true;
        let mut seen = Vec::new();
        for replica in replicas {
            for (secret, status) in expected {
                let got = status_of(replica, secret).await;
                seen.push(got);
                all &= got == *status;
            }
        }
        if all {
            eprintln!(
                "cluster restore: {what}: {:.0} ms",
                start.elapsed().as_millis()
            );
            return;
        }
        if start.elapsed() > CONVERGE_BOUND {
            let logs: Vec<String> = replicas.iter().map(Gateway::logs).collect();
            panic!(
                "{what}: replicas did not converge within {CONVERGE_BOUND:?}: statuses \
                 {seen:?} (replica by replica, in the order of {expected:?})\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_restored_from_a_backup_is_what_every_replica_serves() {
    let cluster = Cluster::start(2).await;
    let database = cluster.database().expect("the cluster's own database");
    let [a, b] = &cluster.replicas[..] else {
        panic!("two replicas");
    };

    let (kept_id, kept, _) = a.admin().create_key(json!({"name": "in-the-backup"})).await;
    until_all("kept key served", &cluster.replicas, &[(&kept, 200)]).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let backup = dir.path().join("store.dump");
    database.backup(&backup).await;

    // After the backup: a new key, and the backed-up key revoked, through different replicas.
    let (_, later, _) = b
        .admin()
        .create_key(json!({"name": "after-the-backup"}))
        .await;
    let revoked = b.admin().delete(&format!("/v1/keys/{kept_id}")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    until_all(
        "changes after the backup served",
        &cluster.replicas,
        &[(&later, 200), (&kept, 403)],
    )
    .await;

    // An admin token made after the backup, usable before the restore.
    let (_, token) = a.admin().create_admin_token("after-the-backup").await;
    let pem = std::fs::read(b.admin_cert()).expect("B's certificate");
    let client = https::client_trusting(&pem);
    let list_on_b = || {
        let request = client
            .get(format!("{}/v1/keys", b.admin_url()))
            .bearer_auth(token.clone())
            .send();
        async move { request.await.expect("HTTPS request").status().as_u16() }
    };
    let start = Instant::now();
    while list_on_b().await != 200 {
        assert!(
            start.elapsed() < CONVERGE_BOUND,
            "the token never reached B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    database.restore(&backup).await;

    // The restored store is the truth, but for the revocation: the key made after the
    // backup is gone, the revoked one stays revoked.
    until_all(
        "restored store served",
        &cluster.replicas,
        &[(&kept, 403), (&later, 401)],
    )
    .await;
    let start = Instant::now();
    while list_on_b().await != 401 {
        assert!(
            start.elapsed() < CONVERGE_BOUND,
            "an admin token the restored store lacks still works on B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for replica in [a, b] {
        let listed = replica.admin().get("/v1/keys").await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        let text = listed.body.to_string();
        assert!(text.contains(&kept_id), "{text}");
        assert!(!text.contains("after-the-backup"), "{text}");
        let logs = replica.logs();
        assert!(
            logs.contains("the change feed went backwards"),
            "the replica says why it reloaded:\n{logs}"
        );
    }

    // The revocation was written back to the store, audited: a replica started now, which
    // knows only the store, refuses the key too.
    let audit = a.admin().get(&format!("/v1/audit?key_id={kept_id}")).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert!(
        audit
            .body
            .to_string()
            .contains("revocation kept across a restore"),
        "{}",
        audit.body
    );
    let mut cluster = cluster;
    let c = cluster.add("").await;
    assert_eq!(status_of(c, &kept).await, 403);
    assert_eq!(status_of(c, &later).await, 401);

    // And the feed goes on from the restored history: a change made now reaches every one.
    let (_, fresh, _) = cluster.replicas[0]
        .admin()
        .create_key(json!({"name": "after-the-restore"}))
        .await;
    until_all(
        "a change after the restore",
        &cluster.replicas,
        &[(&fresh, 200)],
    )
    .await;
}
