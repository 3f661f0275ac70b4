//! The operator's surface of cluster mode under review (issue #16): secrets written in the
//! wrong place never echoed by a real `gatewayd`, and what the management API shows on one
//! replica about requests another replica served.

use std::path::Path;
use std::time::{Duration, Instant};

use gateway_tests::gateway::gatewayd_command;
use gateway_tests::requests::chat_gpt4o;
use gateway_tests::{Cluster, Gateway};
use serde_json::{Value, json};

/// In every secret below; stderr must never contain it.
const PASSWORD: &str = "Rv8-batterystaple-W2";

/// Starts gatewayd on `tail` (lines after a one-server config that binds nothing fixed)
/// with `vars` set; its exit code and stderr, which must not hold [`PASSWORD`].
async fn start(dir: &Path, tail: &str, vars: &[(&str, &str)]) -> (i32, String) {
    let config = dir.join("gatewayd.toml");
    let text = format!(
        "data_dir = {:?}\n[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nsocket = {:?}\n{tail}",
        dir.join("data").display().to_string(),
        dir.join("admin.sock").display().to_string(),
    );
    std::fs::write(&config, text).expect("write config");
    let mut command = gatewayd_command(&config, "trace");
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().await.expect("run gatewayd");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains(PASSWORD) && !stderr.contains("batterystaple"),
        "a secret reached stderr:\n{stderr}"
    );
    (output.status.code().unwrap_or(-1), stderr)
}

/// The URL (or a provider key) written where the file takes only where to find it: under a
/// name the section does not have, as a variable's name, as a file's path. Each stops
/// start-up naming the line, and none shows the secret (toml's own error quoted the line).
#[tokio::test]
async fn a_secret_written_in_the_wrong_setting_stops_start_up_without_being_shown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = format!("postgres://gw:{PASSWORD}@db.internal:5432/gateway");
    let redis = format!("redis://:{PASSWORD}@cache.internal:6379");
    let vars = [("GW_E2E_PG", pg.as_str()), ("GW_E2E_REDIS", redis.as_str())];
    for (tail, line, needle) in [
        (
            format!("[cluster]\npostgres_url = {pg:?}\nredis_url_env = \"GW_E2E_REDIS\"\n"),
            "line 8",
            "unknown field `postgres_url`",
        ),
        (
            format!("[cluster]\npostgres_url_env = {pg:?}\nredis_url_env = \"GW_E2E_REDIS\"\n"),
            "line 8",
            "must name an environment variable",
        ),
        (
            format!("[cluster]\npostgres_url_env = \"GW_E2E_PG\"\nredis_url_file = {redis:?}\n"),
            "line 9",
            "must be the path of a file",
        ),
        (
            format!("[providers.openai]\napi_key = \"sk-live-{PASSWORD}\"\n"),
            "line 8",
            "unknown field `api_key`",
        ),
        (
            format!("[providers.anthropic]\napi_key_env = \"sk-ant-{PASSWORD}\"\n"),
            "line 7",
            "must name the environment variable",
        ),
    ] {
        let (code, stderr) = start(dir.path(), &tail, &vars).await;
        assert_eq!(code, 78, "{tail}\n{stderr}");
        assert!(stderr.contains(line), "{tail}\n{stderr}");
        assert!(stderr.contains(needle), "{tail}\n{stderr}");
    }
}

async fn key_view(replica: &Gateway, id: &str) -> Value {
    let response = replica.admin().get(&format!("/v1/keys/{id}")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

/// SPEC §9: gwctl "may talk to any of them and sees the whole cluster", and §6's
/// `GET /v1/keys/{id}` is "one key with its current spend". A key used only through
/// replica B must show those requests when read through replica A, as its usage report on
/// A already does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_read_through_any_replica_shows_the_requests_every_replica_served() {
    let cluster = Cluster::start(2).await;
    let [a, b] = &cluster.replicas[..] else {
        panic!("two replicas");
    };
    let (id, secret, _) = a
        .admin()
        .create_key(json!({"name": "seen-everywhere"}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = chat_gpt4o(&b.proxy_url(), &secret).await.status().as_u16();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never served the key: {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..2 {
        assert_eq!(
            chat_gpt4o(&b.proxy_url(), &secret).await.status().as_u16(),
            200
        );
    }
    // The usage report through A counts B's three requests once they are committed...
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = a.admin().get(&format!("/v1/keys/{id}/usage")).await;
        if report.status == 200 && report.body["total"]["requests"] == json!(3) {
            break;
        }
        assert!(Instant::now() < deadline, "usage on A: {}", report.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and so must the key itself, on A as on B.
    let on_b = key_view(b, &id).await;
    assert_eq!(on_b["request_count"], json!(3), "{on_b}");
    let on_a = key_view(a, &id).await;
    assert_eq!(on_a["request_count"], json!(3), "on A: {on_a}");
    assert_eq!(
        on_a["spend_total_usd"], on_b["spend_total_usd"],
        "{on_a}\n{on_b}"
    );
    assert_eq!(on_a["last_used_at"], on_b["last_used_at"], "{on_a}\n{on_b}");
    // The listing too.
    let listed = a.admin().get("/v1/keys").await;
    let row = listed.body["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["id"] == json!(id)))
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["request_count"], json!(3), "{}", listed.body);
}
