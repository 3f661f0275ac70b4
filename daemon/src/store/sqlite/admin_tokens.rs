//! Rows of the `admin_tokens` table, on SQLite.

use anyhow::Context;
use gateway_shared::KeyHash;
use jiff::Timestamp;
use rusqlite::{Connection, Transaction, params};

use crate::admin_tokens::TokenRecord;

pub fn load_all(conn: &Connection) -> anyhow::Result<Vec<TokenRecord>> {
    load(conn, "ORDER BY created_at, id", [])
}

/// The token `id`, if there is one.
pub fn load_one(conn: &Connection, id: &str) -> anyhow::Result<Option<TokenRecord>> {
    Ok(load(conn, "WHERE id = ?1", [id])?.pop())
}

fn load(
    conn: &Connection,
    clause: &str,
    params: impl rusqlite::Params,
) -> anyhow::Result<Vec<TokenRecord>> {
    let mut statement = conn.prepare(&format!(
        "SELECT id, hash, prefix, name, created_at, revoked_at, last_used_at FROM admin_tokens \
         {clause}"
    ))?;
    let rows = statement.query_map(params, |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, Option<String>>(5)?,
            row.get::<_, Option<String>>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, hash, prefix, name, created_at, revoked_at, last_used_at) = row?;
        let time = |t: &str| {
            t.parse::<Timestamp>()
                .with_context(|| format!("admin token {id}: bad time"))
        };
        out.push(TokenRecord {
            hash: KeyHash::from_hex(&hash)
                .with_context(|| format!("admin token {id}: bad hash"))?,
            prefix,
            name,
            created_at: time(&created_at)?,
            revoked_at: revoked_at.as_deref().map(time).transpose()?,
            last_used_at: last_used_at.as_deref().map(time).transpose()?,
            id,
        });
    }
    Ok(out)
}

pub fn upsert(tx: &Transaction<'_>, token: &TokenRecord) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO admin_tokens (id, hash, prefix, name, created_at, revoked_at, last_used_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (id) DO UPDATE SET revoked_at = excluded.revoked_at, last_used_at = excluded.last_used_at",
        params![
            token.id,
            token.hash.to_hex(),
            token.prefix,
            token.name,
            token.created_at.to_string(),
            token.revoked_at.map(|t| t.to_string()),
            token.last_used_at.map(|t| t.to_string()),
        ],
    )
    .context("writing admin token")?;
    Ok(())
}
