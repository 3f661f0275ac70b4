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

/// Inserts a new token, or merges `token` into the stored one by the tokens' one rule
/// (`TokenRecord::merge_lifecycle`): only the lifecycle columns change, a revocation is never
/// undone and the last use only moves forward. The merge is done here rather than in SQL
/// (`COALESCE`, `MAX`) because times are RFC 3339 text, whose order is not the text's
/// (`…:00Z` sorts after `…:00.25Z`). The caller's write transaction makes the read and the
/// write one step.
pub fn upsert(tx: &Transaction<'_>, token: &TokenRecord) -> anyhow::Result<()> {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string());
    let Some(mut stored) = load_one(tx, &token.id)? else {
        tx.execute(
            "INSERT INTO admin_tokens (id, hash, prefix, name, created_at, revoked_at, \
             last_used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                token.id,
                token.hash.to_hex(),
                token.prefix,
                token.name,
                token.created_at.to_string(),
                time(token.revoked_at),
                time(token.last_used_at),
            ],
        )
        .context("writing admin token")?;
        return Ok(());
    };
    stored.merge_lifecycle(token);
    tx.execute(
        "UPDATE admin_tokens SET revoked_at = ?2, last_used_at = ?3 WHERE id = ?1",
        params![
            stored.id,
            time(stored.revoked_at),
            time(stored.last_used_at)
        ],
    )
    .context("writing admin token")?;
    Ok(())
}
