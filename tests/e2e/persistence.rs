//! What survives a restart, and what never reaches the disk.

use gateway_shared::KeyHash;
use gateway_tests::Gateway;
use serde_json::json;

/// Every byte of every file under `dir` (database, WAL, shared memory, anything else).
fn all_bytes_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_raw_key_never_reaches_the_data_directory_or_the_log() {
    let mut gateway = Gateway::start().await;
    let admin = gateway.admin();
    let (id, secret, created) = admin
        .create_key(json!({"name": "secretive", "rate_limit_rpm": 10}))
        .await;
    let (other_id, other_secret, _) = admin.create_key(json!({"name": "other"})).await;
    admin
        .patch(
            &format!("/v1/keys/{id}"),
            json!({"name": "secretive-2", "allowed_ips": ["127.0.0.1"]}),
        )
        .await;
    admin.delete(&format!("/v1/keys/{other_id}")).await;

    let check = |when: &str, gateway: &Gateway| {
        let files = all_bytes_under(&gateway.root);
        assert!(
            files.iter().any(|(name, _)| name.ends_with("gateway.db")),
            "{when}: database exists"
        );
        for (name, bytes) in &files {
            for secret in [&secret, &other_secret] {
                // The random part alone is enough to rebuild the key: look for that.
                assert!(
                    !contains(bytes, &secret.as_bytes()[9..]),
                    "{when}: a raw key is in {name}"
                );
            }
        }
        let logs = gateway.logs();
        assert!(!logs.is_empty());
        for secret in [&secret, &other_secret] {
            assert!(
                !logs.contains(&secret[9..]),
                "{when}: a raw key is in the log"
            );
        }
    };
    check("while running", &gateway);
    gateway.restart().await;
    check("after restart", &gateway);

    // What is stored instead: the SHA-256 and the display prefix.
    let stopped = gateway.stop().await;
    assert!(stopped.success());
    let files = all_bytes_under(&gateway.data_dir);
    let everything: Vec<u8> = files.into_iter().flat_map(|(_, b)| b).collect();
    assert!(
        contains(&everything, KeyHash::of(&secret).to_hex().as_bytes()),
        "hash stored"
    );
    let prefix = created["prefix"].as_str().expect("prefix");
    assert!(contains(&everything, prefix.as_bytes()), "prefix stored");
}

#[tokio::test]
async fn a_restart_keeps_keys_states_and_audit_rows() {
    let mut gateway = Gateway::start().await;
    let admin = gateway.admin();
    let (kept, _, _) = admin
        .create_key(json!({
            "name": "kept", "allowed_providers": ["openai"], "allowed_models": ["gpt-4o*"],
            "allowed_ips": ["10.0.0.0/8"], "rate_limit_rpm": 60, "spend_limit_usd": 50,
            "spend_reset": "monthly", "expires_at": "2099-12-31T00:00:00Z"
        }))
        .await;
    let (gone, _, _) = admin.create_key(json!({"name": "gone"})).await;
    admin
        .patch(&format!("/v1/keys/{kept}"), json!({"name": "kept-renamed"}))
        .await;
    admin.delete(&format!("/v1/keys/{gone}")).await;
    let before_keys = admin.get("/v1/keys").await.body;
    let before_audit = admin.get("/v1/audit").await.body;
    assert_eq!(before_audit["entries"].as_array().map(Vec::len), Some(4));

    gateway.restart().await;
    let admin = gateway.admin();
    assert_eq!(admin.get("/v1/keys").await.body, before_keys);
    assert_eq!(admin.get("/v1/audit").await.body, before_audit);
    assert_eq!(
        admin.get(&format!("/v1/keys/{gone}")).await.body["state"],
        "revoked"
    );
    assert_eq!(
        admin.get(&format!("/v1/keys/{kept}")).await.body["state"],
        "active"
    );
}

#[tokio::test]
async fn a_crash_loses_no_acknowledged_change() {
    let mut gateway = Gateway::start().await;
    let admin = gateway.admin();
    let mut ids = Vec::new();
    for n in 0..20 {
        let (id, _, _) = admin.create_key(json!({"name": format!("k{n}")})).await;
        ids.push(id);
    }
    admin.delete(&format!("/v1/keys/{}", ids[0])).await;
    admin
        .patch(
            &format!("/v1/keys/{}", ids[1]),
            json!({"rate_limit_rpm": 7}),
        )
        .await;
    gateway.kill9().await;
    // The socket file is left behind by the crash; the next start replaces it.
    assert!(gateway.socket.exists());
    gateway.start_again().await;
    let admin = gateway.admin();
    let keys = admin.get("/v1/keys").await.body;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(20));
    assert_eq!(
        admin.get(&format!("/v1/keys/{}", ids[0])).await.body["state"],
        "revoked"
    );
    assert_eq!(
        admin.get(&format!("/v1/keys/{}", ids[1])).await.body["rate_limit_rpm"],
        7
    );
    assert_eq!(
        admin.get("/v1/audit?limit=1000").await.body["entries"]
            .as_array()
            .map(Vec::len),
        Some(22)
    );
}
