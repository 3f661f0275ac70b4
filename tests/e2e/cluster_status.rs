//! `gwctl cluster status` and `GET /v1/cluster` (SPEC §9, issue #16): a real daemon lists
//! itself with the id kept in its data directory, that id survives a restart, a damaged id
//! file stops start-up naming it, and requests through the proxy raise `requests`.

use std::os::unix::fs::PermissionsExt;

use gateway_tests::Gateway;
use gateway_tests::gateway::gatewayd_command;
use gateway_tests::requests::chat_gpt4o;
use jiff::Timestamp;
use serde_json::Value;

/// The id in the data directory's `replica-id` file, which must be private.
fn replica_id_file(gateway: &Gateway) -> String {
    let path = gateway.data_dir.join("replica-id");
    let mode = std::fs::metadata(&path)
        .expect("replica-id exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let text = std::fs::read_to_string(&path).expect("replica-id");
    let id = text.trim_end().to_owned();
    assert_eq!(text, format!("{id}\n"));
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    id
}

async fn status_json(gateway: &Gateway) -> Value {
    let out = gateway.gwctl(&["cluster", "status", "-o", "json"]).await;
    out.assert_success();
    out.json()
}

fn timestamp(value: &Value) -> Timestamp {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("not an RFC 3339 instant: {value}"))
}

fn requests_of(status: &Value) -> u64 {
    status["replicas"][0]["requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("no request count: {status}"))
}

#[tokio::test]
async fn gwctl_shows_this_replica_and_the_requests_it_served() {
    let (gateway, _mock) = Gateway::with_mock("", "").await;
    let id = replica_id_file(&gateway);

    let status = status_json(&gateway).await;
    assert_eq!(status["mode"], "single", "{status}");
    assert_eq!(status["replica"], id.as_str(), "{status}");
    let replicas = status["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 1, "{status}");
    let replica = &replicas[0];
    assert_eq!(replica["id"], id.as_str());
    assert!(
        replica["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{replica}"
    );
    assert_eq!(replica["version"], env!("CARGO_PKG_VERSION"));
    let started = timestamp(&replica["started_at"]);
    let last_seen = timestamp(&replica["last_seen"]);
    assert!(started <= last_seen, "{replica}");
    assert!(last_seen <= Timestamp::now(), "{replica}");
    assert_eq!(
        status["backends"],
        serde_json::json!({
            "store": {"kind": "sqlite", "status": "ok"},
            "limits": {"kind": "memory", "status": "ok"}
        })
    );
    // gwctl prints the API's own JSON.
    let api = gateway.admin().get("/v1/cluster").await;
    assert_eq!(api.status, 200, "{}", api.body);
    assert_eq!(api.body["replica"], status["replica"]);
    assert_eq!(api.body["replicas"][0]["started_at"], replica["started_at"]);

    // One answered request, one refused: both were served.
    let before = requests_of(&status);
    let (_, secret, _) = gateway
        .admin()
        .create_key(serde_json::json!({"name": "counted"}))
        .await;
    let answered = chat_gpt4o(&gateway.proxy_url(), &secret).await;
    assert_eq!(answered.status(), 200);
    let refused = chat_gpt4o(&gateway.proxy_url(), "sk-proxy-nope").await;
    assert_eq!(refused.status(), 401);
    let after = requests_of(&status_json(&gateway).await);
    assert_eq!(after, before + 2);

    // The table: this replica's row with its heartbeat's age, then the backends.
    let table = gateway.gwctl(&["cluster", "status"]).await;
    table.assert_success();
    let text = &table.stdout;
    assert!(text.contains("mode:    single"), "{text}");
    assert!(text.contains(&format!("replica: {id}")), "{text}");
    assert!(text.contains("LAST HEARTBEAT"), "{text}");
    let row = text
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id}:\n{text}"));
    assert!(
        row.contains(env!("CARGO_PKG_VERSION")) && row.ends_with(&after.to_string()),
        "{row}"
    );
    assert!(row.contains(" now ") || row.contains("s ago"), "{row}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["store", "sqlite", "ok"])),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["limits", "memory", "ok"])),
        "{text}"
    );
}

/// Admin auth and the router's rules hold for the new route as for the others.
#[tokio::test]
async fn the_route_needs_an_admin_token_over_https_and_answers_get_only() {
    let gateway = Gateway::start().await;
    let id = replica_id_file(&gateway);
    let client = gateway_tests::https::client_trusting_file(&gateway.admin_cert());
    let url = format!("{}/v1/cluster", gateway.admin_url());
    let refused = client.get(&url).send().await.expect("request");
    assert_eq!(refused.status(), 401);
    let (_, token) = gateway.admin().create_admin_token("status").await;
    let answered = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_eq!(answered.status(), 200);
    let body: Value = answered.json().await.expect("json");
    assert_eq!(body["replica"], id.as_str());

    let post = gateway.admin().send("POST", "/v1/cluster", None).await;
    assert_eq!(post.status, 405, "{}", post.body);
    assert_eq!(post.error_code(), "method_not_allowed");
    assert_eq!(
        post.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET")
    );
}

#[tokio::test]
async fn the_replica_id_survives_a_restart_and_a_damaged_one_stops_start_up() {
    let mut gateway = Gateway::start().await;
    let id = replica_id_file(&gateway);
    let first = status_json(&gateway).await;
    assert_eq!(first["replica"], id.as_str());

    gateway.restart().await;
    assert_eq!(replica_id_file(&gateway), id);
    let second = status_json(&gateway).await;
    assert_eq!(second["replica"], id.as_str(), "{second}");
    assert_eq!(second["replicas"][0]["id"], id.as_str());
    assert!(
        timestamp(&second["replicas"][0]["started_at"])
            >= timestamp(&first["replicas"][0]["started_at"])
    );
    assert_eq!(requests_of(&second), 0, "a new process has served nothing");

    // A damaged id is never replaced silently by a new one.
    gateway.stop().await;
    let path = gateway.data_dir.join("replica-id");
    std::fs::write(&path, "not an id\n").expect("damage");
    let output = gatewayd_command(&gateway.config_path, "info")
        .output()
        .await
        .expect("run gatewayd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("left as it was"),
        "not an id\n"
    );
}

/// `gwctl cluster status` against no daemon exits 69 like every other verb.
#[tokio::test]
async fn no_daemon_is_unavailable() {
    let dir = tempfile::tempdir().expect("dir");
    let out =
        gateway_tests::gwctl::run(&dir.path().join("none.sock"), &["cluster", "status"]).await;
    assert_eq!(out.code, 69, "{}", out.stderr);
}
