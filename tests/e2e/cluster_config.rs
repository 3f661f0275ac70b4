//! `[cluster]` at start-up (SPEC §9): each kind of wrong setting stops a real `gatewayd`
//! with the config exit code and a message naming the line, and no password from the URLs
//! ever reaches stderr. A valid section stops start-up too, saying why, until the PostgreSQL
//! store is built in (the URL shown with its password hidden).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gateway_tests::gateway::gatewayd_command;

/// In every URL below; stderr must never contain it.
const PASSWORD: &str = "Kx4-correcthorse-M9";

fn postgres_url() -> String {
    format!("postgres://gw:{PASSWORD}@db.internal:5432/gateway?sslmode=require")
}

fn redis_url() -> String {
    format!("redis://gw:{PASSWORD}@cache.internal:6379/0")
}

/// Starts gatewayd on `cluster` (the section's lines after a one-server config that binds
/// nothing fixed) with `vars` set; its exit code and stderr.
async fn start(dir: &Path, cluster: &str, vars: &[(&str, &str)]) -> (i32, String) {
    let config = dir.join("gatewayd.toml");
    let text = format!(
        "data_dir = {:?}\n[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nsocket = {:?}\n{cluster}",
        dir.join("data").display().to_string(),
        dir.join("admin.sock").display().to_string(),
    );
    std::fs::write(&config, text).expect("write config");
    let mut command = gatewayd_command(&config, "info");
    command
        .env_remove("GATEWAYD_POSTGRES_URL")
        .env_remove("GATEWAYD_REDIS_URL");
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().await.expect("run gatewayd");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains(PASSWORD) && !stderr.contains("correcthorse"),
        "a password reached stderr:\n{stderr}"
    );
    (output.status.code().unwrap_or(-1), stderr)
}

/// A `[cluster]` section, the environment it starts with, and the line and words the refusal
/// must name.
type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str, &'a str);

const ENV_LINES: &str =
    "[cluster]\npostgres_url_env = \"GW_E2E_PG\"\nredis_url_env = \"GW_E2E_REDIS\"\n";

#[tokio::test]
async fn each_wrong_cluster_setting_stops_start_up_naming_its_line_and_no_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = postgres_url();
    let redis = redis_url();
    let open_file = dir.path().join("postgres-url");
    std::fs::write(&open_file, &pg).expect("write");
    std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let bad_scheme = format!("mysql://gw:{PASSWORD}@db/gw");
    let bad_sslmode = format!("postgres://gw:{PASSWORD}@db/gw?sslmode=always");
    let bad_port = format!("postgres://gw:{PASSWORD}@db:54x32/gw");
    let bad_redis = format!("memcache://gw:{PASSWORD}@cache");
    // The [cluster] header is on line 7 of the written config.
    let cases: Vec<Case<'_>> = vec![
        (
            ENV_LINES.to_owned(),
            vec![("GW_E2E_REDIS", &redis)],
            "line 8",
            "the environment variable GW_E2E_PG is not set",
        ),
        (
            ENV_LINES.to_owned(),
            vec![("GW_E2E_PG", &pg), ("GW_E2E_REDIS", "  ")],
            "line 9",
            "the environment variable GW_E2E_REDIS is empty",
        ),
        (
            format!("{ENV_LINES}postgres_url_file = \"/etc/x\"\n"),
            vec![("GW_E2E_PG", &pg), ("GW_E2E_REDIS", &redis)],
            "line 8",
            "set one of them, not both",
        ),
        (
            "[cluster]\npostgres_url_env = \"GW_E2E_PG\"\n".to_owned(),
            vec![("GW_E2E_PG", &pg)],
            "line 7",
            "[cluster] needs redis_url_env or redis_url_file",
        ),
        (
            ENV_LINES.to_owned(),
            vec![("GW_E2E_PG", &bad_scheme), ("GW_E2E_REDIS", &redis)],
            "line 8",
            "holds no usable PostgreSQL URL: it is a mysql:// URL",
        ),
        (
            ENV_LINES.to_owned(),
            vec![("GW_E2E_PG", &bad_sslmode), ("GW_E2E_REDIS", &redis)],
            "line 8",
            "sslmode must be one of disable, prefer, require, verify-ca, verify-full",
        ),
        (
            ENV_LINES.to_owned(),
            vec![("GW_E2E_PG", &bad_port), ("GW_E2E_REDIS", &redis)],
            "line 8",
            "a port is not a number",
        ),
        (
            ENV_LINES.to_owned(),
            vec![("GW_E2E_PG", &pg), ("GW_E2E_REDIS", &bad_redis)],
            "line 9",
            "holds no usable Redis URL: it is a memcache:// URL",
        ),
        (
            format!(
                "[cluster]\npostgres_url_file = {:?}\nredis_url_env = \"GW_E2E_REDIS\"\n",
                open_file.display().to_string()
            ),
            vec![("GW_E2E_REDIS", &redis)],
            "line 8",
            "is open to every user (mode 644)",
        ),
        (
            format!("{ENV_LINES}hold_lease = \"2d\"\n"),
            vec![("GW_E2E_PG", &pg), ("GW_E2E_REDIS", &redis)],
            "line 10",
            "cluster.hold_lease: \"2d\" is outside 10s to 24h",
        ),
        (
            format!("{ENV_LINES}postgres_url = \"postgres://db\"\n"),
            vec![("GW_E2E_PG", &pg), ("GW_E2E_REDIS", &redis)],
            "line 10",
            "unknown field `postgres_url`",
        ),
    ];
    for (cluster, vars, line, needle) in cases {
        let (code, stderr) = start(dir.path(), &cluster, &vars).await;
        assert_eq!(code, 78, "{cluster}\n{stderr}");
        assert!(stderr.contains(line), "{cluster}\n{stderr}");
        assert!(stderr.contains(needle), "{cluster}\n{stderr}");
    }
}

/// A valid section whose PostgreSQL cannot be reached stops start-up (SPEC §9.6: a replica
/// that starts while the store is down refuses, saying why), naming the database with its
/// password hidden, and opens no SQLite store beside it.
#[tokio::test]
async fn a_valid_cluster_section_with_the_store_unreachable_stops_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("redis-url");
    std::fs::write(&secret, format!("{}\n", redis_url())).expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let cluster = format!(
        "[cluster]\npostgres_url_env = \"GW_E2E_PG\"\nredis_url_file = {:?}\nhold_lease = \"5m\"\n",
        secret.display().to_string()
    );
    let (code, stderr) = start(dir.path(), &cluster, &[("GW_E2E_PG", &postgres_url())]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cluster mode: opening the shared store at"),
        "{stderr}"
    );
    assert!(
        stderr.contains("postgres://gw:***@db.internal:5432/gateway?sslmode=require"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data/gateway.db").exists(),
        "no SQLite store was opened"
    );
}
