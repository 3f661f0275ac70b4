//! Versioned PostgreSQL schema migrations: hand-written, append-only
//! `daemon/migrations/postgres/NNNN_*.sql`, embedded in the binary.
//!
//! Replicas may start together (a rolling deploy, a whole cluster rebooted): each runs the
//! migrations in one transaction that first takes `pg_advisory_xact_lock`, so the first
//! applies what is missing while the others wait on the lock, then find nothing left to do
//! (SPEC §9.7). A crash mid-way rolls the whole transaction back. `schema_migrations` holds
//! one row per applied version. refinery and friends take no such lock, and all they would
//! add is these few lines. **Invariant:** migrations are only ever appended, never edited.

use anyhow::Context;
use tokio_postgres::Client;

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_cluster_store.sql"),
    include_str!("../../../migrations/postgres/0002_key_version.sql"),
    include_str!("../../../migrations/postgres/0003_cluster_id.sql"),
];

/// The advisory lock the migrations run under ("gatewy" and 1).
const MIGRATION_LOCK: i64 = 0x6761_7465_7779_0001;

/// Brings the schema to the latest version; refuses a database from a newer gatewayd.
pub async fn migrate(client: &mut Client) -> anyhow::Result<()> {
    migrate_with(client, MIGRATIONS).await
}

async fn migrate_with(client: &mut Client, migrations: &[&str]) -> anyhow::Result<()> {
    let tx = client.transaction().await.context("starting migrations")?;
    // Waiting for another replica's migrations is not a stuck statement.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .context("starting migrations")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("waiting for the migration lock")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version    INTEGER PRIMARY KEY, \
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .context("creating schema_migrations")?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .context("reading the schema version")?
        .get(0);
    let known = i32::try_from(migrations.len()).unwrap_or(i32::MAX);
    anyhow::ensure!(
        current <= known,
        "this gatewayd knows schema up to {known}; the database is at {current}: upgrade gatewayd"
    );
    for (index, sql) in migrations.iter().enumerate().skip(current as usize) {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying migration {version}"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .with_context(|| format!("recording migration {version}"))?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    tx.commit().await.context("committing migrations")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::test_database::TestDatabase;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_starting_together_apply_each_migration_once() {
        let db = TestDatabase::create("migrate_race").await;
        let connects = (0..3).map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { crate::store::Store::connect_postgres(&url).await })
        });
        for connect in connects.collect::<Vec<_>>() {
            connect.await.expect("task").expect("every replica starts");
        }
        let client = db.client().await;
        let versions: Vec<i32> = client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .expect("versions")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let expected: Vec<i32> = (1..=MIGRATIONS.len() as i32).collect();
        assert_eq!(versions, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_from_a_newer_gatewayd_is_refused_naming_both_versions() {
        let db = TestDatabase::create("migrate_newer").await;
        crate::store::Store::connect_postgres(&db.url)
            .await
            .expect("first start");
        let client = db.client().await;
        let newer = MIGRATIONS.len() as i32 + 1;
        client
            .execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&newer],
            )
            .await
            .expect("a newer version");
        let err = crate::store::Store::connect_postgres(&db.url)
            .await
            .expect_err("refused");
        let message = format!("{err:#}");
        assert!(
            message.contains(&format!(
                "this gatewayd knows schema up to {}; the database is at {newer}: upgrade gatewayd",
                MIGRATIONS.len()
            )),
            "{message}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_migration_is_applied_on_top_and_a_failing_one_leaves_nothing() {
        let db = TestDatabase::create("migrate_append").await;
        let mut client = db.client().await;
        migrate_with(&mut client, MIGRATIONS)
            .await
            .expect("current");
        let with = |extra: &'static str| {
            let mut list = MIGRATIONS.to_vec();
            list.push(extra);
            list
        };
        let failing = with("CREATE TABLE extra (x INT); SELECT 1/0;");
        migrate_with(&mut client, &failing)
            .await
            .expect_err("division by zero");
        let extra: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'extra'",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(extra, 0, "rolled back with its transaction");
        let later = with("CREATE TABLE extra (x INT);");
        migrate_with(&mut client, &later).await.expect("appended");
        migrate_with(&mut client, &later).await.expect("idempotent");
        let version: i32 = client
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .await
            .expect("version")
            .get(0);
        assert_eq!(version as usize, MIGRATIONS.len() + 1);
    }
}
