//! Versioned SQLite schema migrations keyed on `PRAGMA user_version`.
//!
//! Hand-written rather than `rusqlite_migration`: that crate pins an older rusqlite (only one
//! `libsqlite3-sys` can link), and all it would do for us is these few lines. Each migration
//! runs in its own transaction together with the version bump, so a crash leaves the schema
//! at a whole version. **Invariant:** migrations are only ever appended, never edited.

use anyhow::{Context, bail};
use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_keys_and_audit.sql"),
    include_str!("../../../migrations/0002_usage.sql"),
    include_str!("../../../migrations/0003_admin_tokens.sql"),
    include_str!("../../../migrations/0004_usage_plain_rowid.sql"),
    include_str!("../../../migrations/0005_usage_check_without_in_list.sql"),
    include_str!("../../../migrations/0006_usage_log_and_daily_rollup.sql"),
    include_str!("../../../migrations/0007_key_rotations.sql"),
    include_str!("../../../migrations/0008_rate_windows.sql"),
    include_str!("../../../migrations/0009_usage_over_allowed.sql"),
    include_str!("../../../migrations/0010_holds.sql"),
    include_str!("../../../migrations/0011_replicas.sql"),
    include_str!("../../../migrations/0012_key_version.sql"),
];

/// Brings the schema to the latest version. Refuses a database from a newer gatewayd.
pub fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Applies the migrations up to `target` (tests stop at an older version on purpose).
fn migrate_to(conn: &mut Connection, target: usize) -> anyhow::Result<()> {
    let current: usize = conn
        .query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
        .context("reading schema version")?
        .try_into()
        .unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        bail!(
            "database schema version {current} is newer than this gatewayd supports ({}); \
             run a newer gatewayd",
            MIGRATIONS.len()
        );
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let version = index + 1;
        let tx = conn.transaction().context("starting migration")?;
        tx.execute_batch(sql)
            .with_context(|| format!("applying migration {version}"))?;
        tx.pragma_update(None, "user_version", version as i64)?;
        tx.commit()
            .with_context(|| format!("committing migration {version}"))?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("first");
        migrate(&mut conn).expect("second is a no-op");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version as usize, MIGRATIONS.len());
    }

    #[test]
    fn dropping_autoincrement_keeps_every_usage_row() {
        let mut conn = at_version(3);
        conn.execute_batch(
            "INSERT INTO usage (key_id, at, day, provider, model, status, input_tokens, \
             output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, latency_ms, source) \
             VALUES ('key_a', '2026-11-27T00:00:00Z', '2026-11-27', 'openai', 'gpt-4o', 200, \
             1, 2, 3, 4, 5, 6, 'reported'), ('key_b', '2026-11-27T00:00:01Z', '2026-11-27', \
             'anthropic', 'claude', 500, 0, 0, 0, 0, 0, 7, 'estimated');",
        )
        .expect("rows");
        migrate_to(&mut conn, 4).expect("migrate");
        let rows: Vec<(i64, String, i64)> = conn
            .prepare("SELECT id, key_id, cost_nanos FROM usage ORDER BY id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(rows, [(1, "key_a".into(), 5), (2, "key_b".into(), 0)]);
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'usage'",
                [],
                |r| r.get(0),
            )
            .expect("schema");
        assert!(!sql.contains("AUTOINCREMENT"), "{sql}");
        assert!(has_usage_index(&conn));
    }

    #[test]
    fn inserting_usage_builds_no_temporary_index_and_still_checks_the_source() {
        let mut conn = at_version(4);
        const ROW: &str = "INSERT INTO usage (key_id, at, day, provider, model, status, \
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, \
             latency_ms, source) VALUES ('key_a', '2026-11-27T00:00:00Z', '2026-11-27', \
             'openai', 'gpt-4o', 200, 1, 2, 3, 4, 5, 6, 'reported')";
        let opcodes = |conn: &Connection| -> Vec<String> {
            conn.prepare(&format!("EXPLAIN {ROW}"))
                .expect("explain")
                .query_map([], |r| r.get::<_, String>(1))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("opcodes")
        };
        assert!(
            opcodes(&conn).iter().any(|op| op == "OpenEphemeral"),
            "the old table's IN-list check builds a temporary index per row"
        );
        conn.execute_batch(ROW).expect("old row");
        migrate_to(&mut conn, 5).expect("migrate");
        assert!(!opcodes(&conn).iter().any(|op| op == "OpenEphemeral"));
        conn.execute_batch(ROW).expect("new row");
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM usage", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 2, "the row from before the migration is kept");
        let bad = conn.execute_batch(&ROW.replace("'reported'", "'free'"));
        assert!(bad.is_err(), "an unknown source is still refused");
        assert!(has_usage_index(&conn));
    }

    #[test]
    fn the_usage_log_gets_integer_times_and_its_rollup_every_old_row() {
        let mut conn = at_version(5);
        conn.execute_batch(
            "INSERT INTO usage (key_id, at, day, provider, model, status, input_tokens, \
             output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, latency_ms, source) \
             VALUES ('key_a', '2026-11-27T23:59:59.123456789Z', '2026-11-27', 'openai', \
             'gpt-4o', 200, 10, 20, 1, 2, 500, 6, 'reported'), \
             ('key_a', '2026-11-27T08:00:00Z', '2026-11-27', 'openai', 'gpt-4o', 200, 5, 5, 0, \
             0, 100, 7, 'estimated'), \
             ('key_a', '2026-11-28T00:00:00.5Z', '2026-11-28', 'openai', 'gpt-4o', 500, 0, 0, \
             0, 0, 0, 8, 'unpriced');",
        )
        .expect("rows");
        migrate(&mut conn).expect("migrate");
        let times: Vec<i64> = conn
            .prepare("SELECT at_ms FROM usage ORDER BY id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let ms = |t: &str| t.parse::<jiff::Timestamp>().expect("time").as_millisecond();
        assert_eq!(
            times,
            [
                ms("2026-11-27T23:59:59.123Z"),
                ms("2026-11-27T08:00:00Z"),
                ms("2026-11-28T00:00:00.5Z")
            ]
        );
        let days: Vec<(String, i64, i64, i64, i64, i64, i64)> = conn
            .prepare(
                "SELECT day, requests, input_tokens, cache_write_tokens, cost_nanos, \
                 estimated_requests, unpriced_requests FROM usage_daily ORDER BY day",
            )
            .expect("prepare")
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            days,
            [
                ("2026-11-27".into(), 2, 15, 2, 600, 1, 0),
                ("2026-11-28".into(), 1, 0, 0, 0, 0, 1)
            ]
        );
        assert!(!has_usage_index(&conn), "the log keeps no index");
    }

    #[test]
    fn rotations_made_before_the_table_are_read_back_from_the_audit_log() {
        let mut conn = at_version(6);
        conn.execute_batch(
            "INSERT INTO audit (at, actor, action, key_id, details) VALUES \
             ('2026-11-27T08:00:00Z', 'uid:0', 'key.create', 'key_old', '{}'), \
             ('2026-11-27T09:00:00Z', 'uid:0', 'key.rotate', 'key_old', '{\"new_key_id\":\"key_new\"}'), \
             ('2026-11-27T09:00:00Z', 'uid:0', 'key.create', 'key_new', '{\"rotated_from\":\"key_old\"}'), \
             ('2026-11-27T10:00:00Z', 'uid:0', 'key.create', 'key_odd', '{\"rotated_from\":7}'), \
             ('2026-11-27T10:00:00Z', 'uid:0', 'key.create', 'key_bad', 'not json');",
        )
        .expect("audit rows");
        migrate(&mut conn).expect("migrate");
        let pairs = crate::store::sqlite::keys::load_rotations(&conn).expect("rotations");
        assert_eq!(pairs, [("key_new".to_owned(), "key_old".to_owned())]);
    }

    #[test]
    fn keys_from_before_versions_start_at_the_first_version() {
        let mut conn = at_version(11);
        conn.execute_batch(
            "INSERT INTO keys (id, hash, prefix, name, allowed_providers, allowed_models, \
             allowed_ips, created_at, updated_at) VALUES ('key_old', 'ab', 'gw-', 'old', \
             '[]', '[]', '[]', '2026-11-27T08:00:00Z', '2026-11-27T08:00:00Z');",
        )
        .expect("a key");
        migrate(&mut conn).expect("migrate");
        let version: i64 = conn
            .query_row("SELECT version FROM keys WHERE id = 'key_old'", [], |r| {
                r.get(0)
            })
            .expect("version");
        assert_eq!(version as u64, crate::keys::record::FIRST_VERSION);
        let err = conn
            .execute("UPDATE keys SET version = 0", [])
            .expect_err("versions start at 1");
        assert!(format!("{err}").contains("CHECK"), "{err}");
    }

    /// A database as an older gatewayd left it: migrations up to `version` applied.
    fn at_version(version: usize) -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        for (index, sql) in MIGRATIONS.iter().enumerate().take(version) {
            conn.execute_batch(sql).expect("old migration");
            conn.pragma_update(None, "user_version", index as i64 + 1)
                .expect("version");
        }
        conn
    }

    fn has_usage_index(conn: &Connection) -> bool {
        let indexed: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'usage_by_key_day'",
                [],
                |r| r.get(0),
            )
            .expect("index");
        indexed == 1
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "user_version", 999).expect("set");
        let err = migrate(&mut conn).expect_err("newer");
        assert!(format!("{err:#}").contains("newer"));
    }
}
