//! The audit log on SQLite: append-only rows, each written in the transaction of the change
//! it records.

use anyhow::Context;
use gateway_shared::api::AuditEntry;
use rusqlite::{Connection, Transaction, params};

use crate::store::{AuditQuery, AuditRecord};

pub fn insert(tx: &Transaction<'_>, record: &AuditRecord) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, key_id, details) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            record.at.to_string(),
            record.actor,
            record.action,
            record.key_id,
            record.details.to_string()
        ],
    )
    .context("writing audit row")?;
    Ok(())
}

pub fn list(conn: &Connection, query: &AuditQuery) -> anyhow::Result<Vec<AuditEntry>> {
    let mut statement = conn.prepare(
        "SELECT id, at, actor, action, key_id, details FROM audit \
         WHERE (?1 IS NULL OR key_id = ?1) AND (?2 IS NULL OR id < ?2) \
         ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = statement.query_map(
        params![
            query.key_id,
            query.before_id,
            i64::try_from(query.limit).unwrap_or(i64::MAX)
        ],
        |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Option<String>>(4)?,
                row.get::<_, String>(5)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (id, at, actor, action, key_id, details) = row?;
        out.push(AuditEntry {
            id,
            at: at
                .parse()
                .with_context(|| format!("audit row {id} has a malformed time"))?,
            actor,
            action,
            key_id,
            details: serde_json::from_str(&details)
                .with_context(|| format!("audit row {id} has malformed details"))?,
        });
    }
    Ok(out)
}
