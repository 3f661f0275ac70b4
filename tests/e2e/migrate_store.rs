//! `gatewayd migrate-store` (SPEC §9, issue #16): a real single server's data (keys, one
//! rotated and one revoked, usage from proxied requests, an admin token, the audit log) is
//! copied into a fresh PostgreSQL database by the real binary, which refuses while the
//! daemon runs and when the target is not empty, and never prints the database password.
//! Every key then loads from PostgreSQL under its old secret's hash, and two replicas started
//! on the migrated database serve each old secret, the revoked one still refused.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use gateway_shared::{KeyHash, KeyState, Nanodollars};
use gateway_tests::gateway::assert_no_secrets;
use gateway_tests::requests::chat_gpt4o;
use gateway_tests::{Cluster, Gateway, PgDatabase, shared_postgres_database};
use gatewayd::keys::KeyCache;
use gatewayd::store::Store;
use serde_json::json;

/// A fresh database owned by a login role with a password, so the command's URL carries a
/// password that any server (trust or password authentication) accepts. On drop the
/// database goes, then the role.
struct OwnedDatabase {
    database: Option<PgDatabase>,
    role: String,
    password: String,
}

impl OwnedDatabase {
    async fn create() -> OwnedDatabase {
        let database = shared_postgres_database().await;
        let role = gateway_tests::backends::unique_name();
        let password = format!("pw-{}", gateway_tests::backends::unique_name());
        database
            .connect()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD '{password}'; \
                 ALTER DATABASE \"{}\" OWNER TO {role}",
                database.name()
            ))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "creating a role with a password (GATEWAY_TEST_POSTGRES_URL's role must be \
                     allowed to CREATE ROLE): {e}"
                )
            });
        OwnedDatabase {
            database: Some(database),
            role,
            password,
        }
    }

    fn database(&self) -> &PgDatabase {
        self.database.as_ref().expect("dropped only on drop")
    }

    /// The database's URL as its owner, password included.
    fn url(&self) -> String {
        let url = self.database().url();
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let host_and_path = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
        format!("{scheme}://{}:{}@{host_and_path}", self.role, self.password)
    }
}

impl Drop for OwnedDatabase {
    fn drop(&mut self) {
        drop(self.database.take());
        // A thread with a runtime of its own: drop may run on the test's runtime.
        let role = self.role.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(
                    &gateway_tests::backends::shared_postgres_url(),
                    tokio_postgres::NoTls,
                )
                .await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
                    .await
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("could not drop the test role {}: {err}", self.role);
        }
    }
}

/// Runs `gatewayd migrate-store --config CONFIG --to URL`.
async fn migrate_store(gateway: &Gateway, url: &str) -> Output {
    migrate_store_with(&gateway.config_path, &["--to", url], &[]).await
}

/// Runs `gatewayd migrate-store --config CONFIG ARGS…` with `envs` set.
async fn migrate_store_with(config: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(gateway_tests::binaries::gatewayd())
        .args(["migrate-store", "--config"])
        .arg(config)
        .args(args)
        .envs(envs.iter().copied())
        .env("GATEWAYD_LOG", "trace")
        .kill_on_drop(true)
        .output()
        .await
        .expect("running gatewayd migrate-store")
}

/// stdout and stderr, checked for the password and for secrets.
fn text_of(output: &Output, password: &str) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains(password),
            "migrate-store's {what} shows the database password:\n{text}"
        );
        assert_no_secrets(what, text);
    }
    (stdout, stderr)
}

#[tokio::test]
async fn a_single_servers_data_moves_to_postgresql_and_every_key_keeps_its_secret() {
    let (mut gateway, _mock) = Gateway::with_mock("", "").await;
    let admin = gateway.admin();
    let (plain_id, plain, _) = admin.create_key(json!({"name": "plain"})).await;
    let (old_id, old, _) = admin.create_key(json!({"name": "rotated"})).await;
    let (revoked_id, revoked, _) = admin.create_key(json!({"name": "revoked"})).await;
    for key in [&plain, &plain, &old, &revoked] {
        let response = chat_gpt4o(&gateway.proxy_url(), key).await;
        assert_eq!(response.status(), 200);
    }
    let (new_id, new, _) = admin.rotate_key(&old_id, 3_600).await;
    assert_eq!(chat_gpt4o(&gateway.proxy_url(), &new).await.status(), 200);
    assert_eq!(
        admin.delete(&format!("/v1/keys/{revoked_id}")).await.status,
        200
    );
    let (token_id, token) = admin.create_admin_token("ops").await;
    let ids = [&plain_id, &old_id, &new_id, &revoked_id];
    // Around today, UTC: the requests above were made now.
    let today = jiff::tz::TimeZone::UTC
        .to_datetime(jiff::Timestamp::now())
        .date();
    let (from, to) = (
        today.yesterday().expect("date"),
        today.tomorrow().expect("date"),
    );

    let owned = OwnedDatabase::create().await;
    let url = owned.url();
    let password = owned.password.as_str();

    let running = migrate_store(&gateway, &url).await;
    let (_, stderr) = text_of(&running, password);
    assert!(!running.status.success());
    assert!(
        stderr.contains("a gatewayd is running on the data directory"),
        "{stderr}"
    );
    let tables: i64 = owned
        .database()
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(tables, 0, "nothing was written while the daemon ran");

    assert!(gateway.stop().await.success());
    let (audit_rows, usage_rows, usage_cost) = {
        let conn = rusqlite::Connection::open(gateway.data_dir.join("gateway.db")).expect("db");
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        (
            count("SELECT count(*) FROM audit"),
            count("SELECT count(*) FROM usage"),
            count("SELECT sum(cost_nanos) FROM usage"),
        )
    };
    assert_eq!(usage_rows, 5);
    assert!(usage_cost > 0);

    // The way an operator would: the URL from the config's [cluster] section (here from the
    // environment), not on the command line.
    let cluster_config = gateway.root.join("cluster.toml");
    std::fs::write(
        &cluster_config,
        format!(
            "{}\n[cluster]\npostgres_url_env = \"GW_TEST_MIGRATE_POSTGRES\"\n\
             redis_url_env = \"GW_TEST_MIGRATE_REDIS\"\n",
            std::fs::read_to_string(&gateway.config_path).expect("config")
        ),
    )
    .expect("writing the cluster config");
    let redis = gateway_tests::backends::shared_redis_url();
    let copied = migrate_store_with(
        &cluster_config,
        &[],
        &[
            ("GW_TEST_MIGRATE_POSTGRES", &url),
            ("GW_TEST_MIGRATE_REDIS", &redis),
        ],
    )
    .await;
    let (stdout, stderr) = text_of(&copied, password);
    assert!(copied.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "copied 4 keys, 1 rotation, 1 admin token, {audit_rows} audit rows, 5 usage records \
             ({})\n",
            Nanodollars(u64::try_from(usage_cost).expect("cost"))
        )
    );

    // What a replica loads from the migrated store: each old secret finds its key, in the
    // state the single server had it in.
    let store = Store::connect_postgres(&url).await.expect("connect");
    let cache = KeyCache::load(&store, Arc::new(gatewayd::SystemClock::new()))
        .await
        .expect("load");
    let now = jiff::Timestamp::now();
    for (secret, id, state) in [
        (&plain, &plain_id, KeyState::Active),
        (&old, &old_id, KeyState::Active),
        (&new, &new_id, KeyState::Active),
        (&revoked, &revoked_id, KeyState::Revoked),
    ] {
        let entry = cache
            .by_hash(&KeyHash::of(secret))
            .unwrap_or_else(|| panic!("{id} is not found by its secret"));
        assert_eq!(&entry.record().id, id);
        assert_eq!(entry.state_at(now), state, "{id}");
    }
    assert!(
        cache
            .by_hash(&KeyHash::of(&gateway_tests::admin::typo(&plain)))
            .is_none()
    );
    let tokens = store.load_admin_tokens().await.expect("tokens");
    assert_eq!(tokens.len(), 1);
    assert_eq!(
        (&tokens[0].id, tokens[0].hash),
        (&token_id, KeyHash::of(&token))
    );
    // The reports read the same as the single server's (from its database: the usage
    // writer's last batch lands at the stop).
    let single = Store::open(&gateway.data_dir.join("gateway.db")).expect("the SQLite store");
    for id in ids {
        let on_postgres = store
            .usage_report(id.clone(), from, to)
            .await
            .expect("report");
        let on_sqlite = single
            .usage_report(id.clone(), from, to)
            .await
            .expect("report");
        assert_eq!(on_postgres, on_sqlite, "{id}'s usage report");
        assert!(on_sqlite.total.requests > 0, "{id} was used");
    }
    drop(store);

    // Two replicas on the migrated store: every old secret authenticates through each, the
    // revoked key is still refused, and the usage they meter adds to the copied totals.
    let cluster = Cluster::start_together_on(2, &url).await;
    for replica in &cluster.replicas {
        for (secret, id) in [(&plain, &plain_id), (&old, &old_id), (&new, &new_id)] {
            let response = chat_gpt4o(&replica.proxy_url(), secret).await;
            assert_eq!(response.status(), 200, "{id} through a replica");
        }
        let refused = chat_gpt4o(&replica.proxy_url(), &revoked).await;
        assert_eq!(refused.status(), 403);
        let body: serde_json::Value = refused.json().await.expect("an error body");
        assert_eq!(body["error"]["code"], "key_revoked", "{body}");
    }
    let single_plain = single
        .usage_report(plain_id.clone(), from, to)
        .await
        .expect("report")
        .total
        .requests;
    let admin = cluster.replicas[0].admin();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let report = admin
            .get(&format!("/v1/keys/{plain_id}/usage?from={from}&to={to}"))
            .await;
        assert_eq!(report.status, 200, "{}", report.body);
        if report.body["total"]["requests"] == json!(single_plain + 2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replicas' usage never joined the copied usage: {}",
            report.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for replica in &cluster.replicas {
        assert!(
            !replica.logs().contains(password),
            "a replica logged the database password"
        );
    }
    drop(cluster);

    let again = migrate_store(&gateway, &url).await;
    let (_, stderr) = text_of(&again, password);
    assert!(!again.status.success());
    assert!(
        stderr.contains(&format!(
            "already has 4 keys, 1 rotation, 1 admin token, {audit_rows} audit rows, "
        )) && stderr.contains("migrate-store copies into an empty store only"),
        "{stderr}"
    );

    // A server that cannot be reached is named by host, port and database, never the password.
    let unreachable = url.replace(
        url.rsplit_once('@').expect("@").1,
        "127.0.0.1:1/gateway?connect_timeout=2",
    );
    let failed = migrate_store(&gateway, &unreachable).await;
    let (_, stderr) = text_of(&failed, password);
    assert!(!failed.status.success());
    assert!(stderr.contains("127.0.0.1:1/gateway"), "{stderr}");
}
