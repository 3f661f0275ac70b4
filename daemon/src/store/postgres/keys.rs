//! Rows of `keys` ⇄ `KeyRecord`, of `admin_tokens` ⇄ `TokenRecord`, and the audit log, on
//! PostgreSQL. Values are stored as SQLite stores them (see the first migration).

use std::future::poll_fn;

use anyhow::Context;
use futures_core::Stream;
use gateway_shared::api::AuditEntry;
use gateway_shared::{KeyHash, Nanodollars};
use jiff::Timestamp;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Transaction};

use crate::admin_tokens::TokenRecord;
use crate::keys::record::KeyRecord;
use crate::store::usage::sql_count;
use crate::store::{AuditQuery, AuditRecord, Conflict, Versioned};

/// A key's columns, with its cluster-wide spend from `key_spend` (see the module docs of
/// `postgres`).
const SELECT_KEYS: &str = "SELECT k.id, k.hash, k.prefix, k.name, k.allowed_providers, \
    k.allowed_models, k.allowed_ips, k.rate_limit_rpm, k.spend_limit_nanos, k.spend_reset, \
    k.expires_at, k.created_at, k.updated_at, k.revoked_at, \
    s.spend_total_nanos, s.request_count, s.last_used_ms, k.version \
    FROM keys k LEFT JOIN key_spend s ON s.key_id = k.id";

/// Hands every key to `each` as its row arrives, never holding them all.
pub async fn load_all(client: &Client, mut each: impl FnMut(KeyRecord)) -> anyhow::Result<()> {
    let rows = client
        .query_raw(SELECT_KEYS, std::iter::empty::<i32>())
        .await
        .context("reading the keys")?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = poll_fn(|cx| rows.as_mut().poll_next(cx)).await {
        each(from_row(&row.context("reading the keys")?)?);
    }
    Ok(())
}

pub async fn load_one(client: &Client, id: &str) -> anyhow::Result<Option<KeyRecord>> {
    let row = client
        .query_opt(&format!("{SELECT_KEYS} WHERE k.id = $1"), &[&id])
        .await
        .context("reading the key")?;
    row.as_ref().map(from_row).transpose()
}

/// The key whose secret hashes to `hash` (the column is unique).
pub async fn load_by_hash(client: &Client, hash: &KeyHash) -> anyhow::Result<Option<KeyRecord>> {
    let row = client
        .query_opt(
            &format!("{SELECT_KEYS} WHERE k.hash = $1"),
            &[&hash.to_hex()],
        )
        .await
        .context("reading the key by its hash")?;
    row.as_ref().map(from_row).transpose()
}

pub async fn insert(tx: &Transaction<'_>, r: &KeyRecord) -> anyhow::Result<()> {
    let settings = Settings::of(r)?;
    tx.execute(
        "INSERT INTO keys (id, hash, prefix, name, allowed_providers, allowed_models, \
         allowed_ips, rate_limit_rpm, spend_limit_nanos, spend_reset, expires_at, created_at, \
         updated_at, revoked_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &settings.params(r),
    )
    .await
    .context("inserting key")?;
    Ok(())
}

/// Writes a key's settings and lifecycle if the key is still at `r.version`, and counts the
/// change in its version: the new version, or a [`Conflict`] with nothing written (the
/// caller drops the transaction, rolling back whatever it wrote before).
pub async fn update(tx: &Transaction<'_>, r: &KeyRecord) -> anyhow::Result<Versioned> {
    let settings = Settings::of(r)?;
    let written = tx
        .query_opt(
            "UPDATE keys SET hash = $2, prefix = $3, name = $4, allowed_providers = $5, \
             allowed_models = $6, allowed_ips = $7, rate_limit_rpm = $8, \
             spend_limit_nanos = $9, spend_reset = $10, expires_at = $11, created_at = $12, \
             updated_at = $13, revoked_at = $14, version = version + 1 \
             WHERE id = $1 AND version = $15 RETURNING version",
            &settings.params(r),
        )
        .await
        .context("updating key")?;
    if let Some(row) = written {
        return Ok(Ok(version_from_sql(row.try_get(0)?)));
    }
    let stored = tx
        .query_opt("SELECT version FROM keys WHERE id = $1", &[&r.id])
        .await
        .context("reading the key's version")?
        .with_context(|| format!("key {} is not in the database", r.id))?;
    Ok(Err(Conflict {
        key_id: r.id.clone(),
        read: r.version,
        stored: version_from_sql(stored.try_get(0)?),
    }))
}

fn version_from_sql(version: i64) -> u64 {
    u64::try_from(version).unwrap_or(0)
}

/// A key's settings as bound: the columns that are not plain strings.
struct Settings {
    hash: String,
    providers: String,
    models: String,
    ips: String,
    rpm: Option<i64>,
    spend_limit: Option<i64>,
    spend_reset: Option<&'static str>,
    expires_at: Option<String>,
    created_at: String,
    updated_at: String,
    revoked_at: Option<String>,
    version: i64,
}

impl Settings {
    /// The key's columns in the order `insert` and `update` bind them: `$1` id, `$2` hash,
    /// … `$14` revoked_at, `$15` version.
    fn params<'a>(&'a self, r: &'a KeyRecord) -> [&'a (dyn ToSql + Sync); 15] {
        [
            &r.id,
            &self.hash,
            &r.prefix,
            &r.name,
            &self.providers,
            &self.models,
            &self.ips,
            &self.rpm,
            &self.spend_limit,
            &self.spend_reset,
            &self.expires_at,
            &self.created_at,
            &self.updated_at,
            &self.revoked_at,
            &self.version,
        ]
    }

    fn of(r: &KeyRecord) -> anyhow::Result<Settings> {
        let time = |t: Option<Timestamp>| t.map(|t| t.to_string());
        Ok(Settings {
            hash: r.hash.to_hex(),
            providers: serde_json::to_string(&r.allowed_providers)?,
            models: serde_json::to_string(&r.allowed_models)?,
            ips: serde_json::to_string(&r.allowed_ips)?,
            rpm: r.rate_limit_rpm.map(i64::from),
            spend_limit: r.spend_limit.map(|n| sql_count(n.0)),
            spend_reset: r.spend_reset.map(|p| p.as_str()),
            expires_at: time(r.expires_at),
            created_at: r.created_at.to_string(),
            updated_at: r.updated_at.to_string(),
            revoked_at: time(r.revoked_at),
            version: i64::try_from(r.version).unwrap_or(i64::MAX),
        })
    }
}

fn from_row(row: &Row) -> anyhow::Result<KeyRecord> {
    let id: String = row.try_get(0)?;
    let context = |column: &str| format!("key {id} has a malformed column: {column}");
    let time = |index: usize, column: &str| -> anyhow::Result<Option<Timestamp>> {
        let text: Option<String> = row.try_get(index)?;
        text.map(|t| t.parse::<Timestamp>())
            .transpose()
            .with_context(|| context(column))
    };
    let json = |index: usize, column: &str| -> anyhow::Result<Vec<String>> {
        let text: String = row.try_get(index)?;
        serde_json::from_str(&text).with_context(|| context(column))
    };
    let providers: String = row.try_get(4)?;
    let reset: Option<String> = row.try_get(9)?;
    let nanos = |n: Option<i64>| Nanodollars(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0));
    Ok(KeyRecord {
        hash: KeyHash::from_hex(&row.try_get::<_, String>(1)?).with_context(|| context("hash"))?,
        prefix: row.try_get(2)?,
        name: row.try_get(3)?,
        allowed_providers: serde_json::from_str(&providers)
            .with_context(|| context("allowed_providers"))?,
        allowed_models: json(5, "allowed_models")?,
        allowed_ips: json(6, "allowed_ips")?,
        rate_limit_rpm: row
            .try_get::<_, Option<i64>>(7)?
            .map(|n| u32::try_from(n).with_context(|| context("rate_limit_rpm")))
            .transpose()?,
        spend_limit: row.try_get::<_, Option<i64>>(8)?.map(|n| nanos(Some(n))),
        spend_reset: reset
            .map(|r| r.parse())
            .transpose()
            .map_err(|e: String| anyhow::anyhow!("{}: {e}", context("spend_reset")))?,
        expires_at: time(10, "expires_at")?,
        created_at: time(11, "created_at")?.with_context(|| context("created_at"))?,
        updated_at: time(12, "updated_at")?.with_context(|| context("updated_at"))?,
        revoked_at: time(13, "revoked_at")?,
        spend_total: nanos(row.try_get(14)?),
        request_count: row
            .try_get::<_, Option<i64>>(15)?
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        last_used_at: row
            .try_get::<_, Option<i64>>(16)?
            .map(Timestamp::from_millisecond)
            .transpose()
            .with_context(|| context("last_used_ms"))?,
        // Periods are the limits engine's (see the module docs of `postgres`).
        spend_period: Nanodollars::ZERO,
        period_resets_at: None,
        version: version_from_sql(row.try_get(17)?),
        id,
    })
}

const SELECT_ADMIN_TOKENS: &str =
    "SELECT id, hash, prefix, name, created_at, revoked_at, last_used_at FROM admin_tokens";

/// Every admin token (by creation), or the one with `id`.
pub async fn load_admin_tokens(
    client: &Client,
    id: Option<&str>,
) -> anyhow::Result<Vec<TokenRecord>> {
    let rows = client
        .query(
            &format!(
                "{SELECT_ADMIN_TOKENS} WHERE $1::text IS NULL OR id = $1 ORDER BY created_at, id"
            ),
            &[&id],
        )
        .await
        .context("reading the admin tokens")?;
    rows.iter().map(token_from_row).collect()
}

fn token_from_row(row: &Row) -> anyhow::Result<TokenRecord> {
    let id: String = row.try_get(0)?;
    let time = |text: String| {
        text.parse::<Timestamp>()
            .with_context(|| format!("admin token {id}: bad time"))
    };
    Ok(TokenRecord {
        hash: KeyHash::from_hex(&row.try_get::<_, String>(1)?)
            .with_context(|| format!("admin token {id}: bad hash"))?,
        prefix: row.try_get(2)?,
        name: row.try_get(3)?,
        created_at: time(row.try_get(4)?)?,
        revoked_at: row.try_get::<_, Option<String>>(5)?.map(time).transpose()?,
        last_used_at: row.try_get::<_, Option<String>>(6)?.map(time).transpose()?,
        id,
    })
}

/// Inserts a new token, or merges `token` into the stored one by the tokens' one rule
/// (`TokenRecord::merge_lifecycle`): only the lifecycle columns change, a revocation is never
/// undone and the last use only moves forward, whichever replica wrote last from whatever
/// copy. Merged here rather than with `COALESCE`/`GREATEST` in SQL because times are RFC 3339
/// text, whose order is not the text's (`…:00Z` sorts after `…:00.25Z`); the row is locked
/// (`FOR UPDATE`) from the read to the commit.
pub async fn upsert_admin_token(tx: &Transaction<'_>, token: &TokenRecord) -> anyhow::Result<()> {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string());
    let stored = tx
        .query_opt(
            &format!("{SELECT_ADMIN_TOKENS} WHERE id = $1 FOR UPDATE"),
            &[&token.id],
        )
        .await
        .context("reading the admin token")?;
    let Some(stored) = stored else {
        tx.execute(
            "INSERT INTO admin_tokens (id, hash, prefix, name, created_at, revoked_at, \
             last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &token.id,
                &token.hash.to_hex(),
                &token.prefix,
                &token.name,
                &token.created_at.to_string(),
                &time(token.revoked_at),
                &time(token.last_used_at),
            ],
        )
        .await
        .context("writing admin token")?;
        return Ok(());
    };
    let mut stored = token_from_row(&stored)?;
    stored.merge_lifecycle(token);
    tx.execute(
        "UPDATE admin_tokens SET revoked_at = $2, last_used_at = $3 WHERE id = $1",
        &[
            &stored.id,
            &time(stored.revoked_at),
            &time(stored.last_used_at),
        ],
    )
    .await
    .context("writing admin token")?;
    Ok(())
}

pub async fn insert_audit(tx: &Transaction<'_>, record: &AuditRecord) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, key_id, details) VALUES ($1, $2, $3, $4, $5)",
        &[
            &record.at.to_string(),
            &record.actor,
            &record.action,
            &record.key_id,
            &record.details.to_string(),
        ],
    )
    .await
    .context("writing audit row")?;
    Ok(())
}

pub async fn list_audit(client: &Client, query: &AuditQuery) -> anyhow::Result<Vec<AuditEntry>> {
    let rows = client
        .query(
            "SELECT id, at, actor, action, key_id, details FROM audit \
             WHERE ($1::text IS NULL OR key_id = $1) AND ($2::bigint IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
            &[
                &query.key_id,
                &query.before_id,
                &i64::try_from(query.limit).unwrap_or(i64::MAX),
            ],
        )
        .await
        .context("reading the audit log")?;
    rows.iter()
        .map(|row| {
            let id: i64 = row.try_get(0)?;
            Ok(AuditEntry {
                id,
                at: row
                    .try_get::<_, String>(1)?
                    .parse()
                    .with_context(|| format!("audit row {id} has a malformed time"))?,
                actor: row.try_get(2)?,
                action: row.try_get(3)?,
                key_id: row.try_get(4)?,
                details: serde_json::from_str(&row.try_get::<_, String>(5)?)
                    .with_context(|| format!("audit row {id} has malformed details"))?,
            })
        })
        .collect()
}
