//! Rows of the `replicas` table (migration 0011): each replica's heartbeat, on SQLite.

use anyhow::Context;
use jiff::Timestamp;
use rusqlite::{Connection, Transaction, params};

use crate::store::ReplicaRecord;
use crate::store::usage::sql_count;

pub fn upsert(tx: &Transaction<'_>, replica: &ReplicaRecord) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO replicas (id, host, version, started_at_ms, last_seen_ms, requests) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (id) DO UPDATE SET host = excluded.host, version = excluded.version, \
         started_at_ms = excluded.started_at_ms, last_seen_ms = excluded.last_seen_ms, \
         requests = excluded.requests",
        params![
            replica.id,
            replica.host,
            replica.version,
            replica.started_at.as_millisecond(),
            replica.last_seen.as_millisecond(),
            sql_count(replica.requests),
        ],
    )
    .context("writing the replica's heartbeat")?;
    Ok(())
}

/// The replicas whose last heartbeat is at or after `since`, by id.
pub fn seen_since(conn: &Connection, since: Timestamp) -> anyhow::Result<Vec<ReplicaRecord>> {
    let mut statement = conn.prepare(
        "SELECT id, host, version, started_at_ms, last_seen_ms, requests FROM replicas \
         WHERE last_seen_ms >= ?1 ORDER BY id",
    )?;
    let rows = statement
        .query_map([since.as_millisecond()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, host, version, started, seen, requests)| {
            ReplicaRecord::from_columns(id, host, version, started, seen, requests)
        })
        .collect()
}
