//! Rows of the `keys` table ⇄ `KeyRecord` (and the rotations and saved rate windows beside
//! them), on SQLite.

use anyhow::Context;
use gateway_shared::{KeyHash, Nanodollars};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use crate::keys::record::KeyRecord;
use crate::spend::ledger::SpendState;
use crate::store::{Conflict, SavedWindow, Versioned};

const COLUMNS: &str = "id, hash, prefix, name, allowed_providers, allowed_models, allowed_ips, \
    rate_limit_rpm, spend_limit_nanos, spend_reset, expires_at, created_at, updated_at, \
    revoked_at, last_used_at, spend_total_nanos, spend_period_nanos, period_resets_at, request_count, version";

pub fn count(conn: &Connection) -> anyhow::Result<usize> {
    let count: i64 = conn.query_row("SELECT count(*) FROM keys", [], |row| row.get(0))?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// Hands every key to `each` as its row is read. Unordered: `ORDER BY` would make SQLite
/// sort (and so hold) every row before returning the first.
pub fn load_all(conn: &Connection, mut each: impl FnMut(KeyRecord)) -> anyhow::Result<()> {
    let mut statement = conn.prepare(&format!("SELECT {COLUMNS} FROM keys"))?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        each(from_row(row)?);
    }
    Ok(())
}

/// The key `id`, if there is one.
pub fn load_one(conn: &Connection, id: &str) -> anyhow::Result<Option<KeyRecord>> {
    let mut statement =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM keys WHERE id = ?1"))?;
    let mut rows = statement.query([id])?;
    rows.next()?.map(from_row).transpose()
}

/// The key `successor_id` was rotated from, if it was.
pub fn predecessor_of(conn: &Connection, successor_id: &str) -> anyhow::Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT predecessor_id FROM key_rotations WHERE successor_id = ?1",
            [successor_id],
            |row| row.get(0),
        )
        .optional()?)
}

/// Every rotation as (successor id, predecessor id).
pub fn load_rotations(conn: &Connection) -> anyhow::Result<Vec<(String, String)>> {
    let mut statement = conn.prepare("SELECT successor_id, predecessor_id FROM key_rotations")?;
    let pairs = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pairs)
}

pub fn insert_rotation(
    tx: &Transaction<'_>,
    successor_id: &str,
    predecessor_id: &str,
) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO key_rotations (successor_id, predecessor_id) VALUES (?1, ?2)",
        [successor_id, predecessor_id],
    )
    .context("recording the rotation")?;
    Ok(())
}

/// Replaces the saved rate windows with `windows`, saved at `saved_at_ms`.
pub fn save_rate_windows(
    tx: &Transaction<'_>,
    saved_at_ms: i64,
    windows: &[(String, Vec<(u64, u32)>)],
) -> anyhow::Result<()> {
    tx.execute("DELETE FROM rate_windows", [])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO rate_windows (key_id, saved_at_ms, runs) VALUES (?1, ?2, ?3)",
    )?;
    for (key_id, runs) in windows {
        insert.execute(rusqlite::params![
            key_id,
            saved_at_ms,
            serde_json::to_string(runs)?
        ])?;
    }
    Ok(())
}

/// The saved rate windows, removed from the table (they are read once, at start-up). A row
/// that does not read is skipped: a window is worth less than starting.
pub fn take_rate_windows(tx: &Transaction<'_>) -> anyhow::Result<Vec<SavedWindow>> {
    let mut select = tx.prepare("SELECT key_id, saved_at_ms, runs FROM rate_windows")?;
    let rows = select
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    drop(select);
    tx.execute("DELETE FROM rate_windows", [])?;
    Ok(rows
        .into_iter()
        .filter_map(|(key_id, at, runs)| Some((key_id, at, serde_json::from_str(&runs).ok()?)))
        .collect())
}

pub fn insert(tx: &Transaction<'_>, record: &KeyRecord) -> anyhow::Result<()> {
    let sql = format!(
        "INSERT INTO keys ({COLUMNS}) VALUES (:id, :hash, :prefix, :name, :allowed_providers, \
         :allowed_models, :allowed_ips, :rate_limit_rpm, :spend_limit_nanos, :spend_reset, \
         :expires_at, :created_at, :updated_at, :revoked_at, :last_used_at, \
         :spend_total_nanos, :spend_period_nanos, :period_resets_at, :request_count, :version)"
    );
    let owned = params(record)?;
    tx.execute(&sql, borrow(&owned).as_slice())
        .context("inserting key")?;
    Ok(())
}

/// Writes a key's settings and lifecycle columns if the key is still at `record.version`,
/// and counts the change in its version: the new version, or a [`Conflict`] with nothing
/// written. Spend and usage columns belong to the usage writer (`persist_spend`), so a
/// management edit can never roll spend back.
pub fn update(tx: &Transaction<'_>, record: &KeyRecord) -> anyhow::Result<Versioned> {
    let owned = params(record)?;
    let settings: Vec<_> = borrow(&owned)
        .into_iter()
        .filter(|(name, _)| !SPEND_COLUMNS.contains(name))
        .collect();
    let written: Option<i64> = tx
        .query_row(
            "UPDATE keys SET hash = :hash, prefix = :prefix, name = :name, \
             allowed_providers = :allowed_providers, allowed_models = :allowed_models, \
             allowed_ips = :allowed_ips, rate_limit_rpm = :rate_limit_rpm, \
             spend_limit_nanos = :spend_limit_nanos, spend_reset = :spend_reset, \
             expires_at = :expires_at, created_at = :created_at, updated_at = :updated_at, \
             revoked_at = :revoked_at, version = version + 1 \
             WHERE id = :id AND version = :version RETURNING version",
            settings.as_slice(),
            |row| row.get(0),
        )
        .optional()
        .context("updating key")?;
    if let Some(version) = written {
        return Ok(Ok(version_from_sql(version)));
    }
    let stored: Option<i64> = tx
        .query_row(
            "SELECT version FROM keys WHERE id = ?1",
            [&record.id],
            |row| row.get(0),
        )
        .optional()
        .context("reading the key's version")?;
    let stored = stored.with_context(|| format!("key {} is not in the database", record.id))?;
    Ok(Err(Conflict {
        key_id: record.id.clone(),
        read: record.version,
        stored: version_from_sql(stored),
    }))
}

fn version_from_sql(version: i64) -> u64 {
    u64::try_from(version).unwrap_or(0)
}

const SPEND_COLUMNS: &[&str] = &[
    ":last_used_at",
    ":spend_total_nanos",
    ":spend_period_nanos",
    ":period_resets_at",
    ":request_count",
];

/// The ledger's view of a key's spend, as the usage writer persists it.
///
/// A state that counts fewer requests than the stored one is older and is not written: two
/// event loops can queue their records in the other order, and a batch boundary between them
/// must not roll the stored spend back. An equal count is written: that is the same spend
/// with its period restarted (`Store::restart_spend_period`).
pub fn persist_spend(tx: &Transaction<'_>, key_id: &str, spend: &SpendState) -> anyhow::Result<()> {
    let mut statement = tx.prepare_cached(
        "UPDATE keys SET spend_total_nanos = ?2, spend_period_nanos = ?3, period_resets_at = ?4, \
         request_count = ?5, last_used_at = ?6 WHERE id = ?1 AND request_count <= ?5",
    )?;
    statement
        .execute(rusqlite::params![
            key_id,
            nanos_to_sql(spend.total),
            nanos_to_sql(spend.period),
            spend.period_resets_at.map(|t| t.to_string()),
            i64::try_from(spend.request_count).unwrap_or(i64::MAX),
            spend.last_used_at.map(|t| t.to_string()),
        ])
        .context("persisting key spend")?;
    Ok(())
}

type Params = Vec<(&'static str, Box<dyn rusqlite::ToSql>)>;

fn params(r: &KeyRecord) -> anyhow::Result<Params> {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string());
    Ok(vec![
        (":id", Box::new(r.id.clone())),
        (":hash", Box::new(r.hash.to_hex())),
        (":prefix", Box::new(r.prefix.clone())),
        (":name", Box::new(r.name.clone())),
        (
            ":allowed_providers",
            Box::new(serde_json::to_string(&r.allowed_providers)?),
        ),
        (
            ":allowed_models",
            Box::new(serde_json::to_string(&r.allowed_models)?),
        ),
        (
            ":allowed_ips",
            Box::new(serde_json::to_string(&r.allowed_ips)?),
        ),
        (":rate_limit_rpm", Box::new(r.rate_limit_rpm)),
        (
            ":spend_limit_nanos",
            Box::new(r.spend_limit.map(nanos_to_sql)),
        ),
        (":spend_reset", Box::new(r.spend_reset.map(|p| p.as_str()))),
        (":expires_at", Box::new(time(r.expires_at))),
        (":created_at", Box::new(r.created_at.to_string())),
        (":updated_at", Box::new(r.updated_at.to_string())),
        (":revoked_at", Box::new(time(r.revoked_at))),
        (":last_used_at", Box::new(time(r.last_used_at))),
        (":spend_total_nanos", Box::new(nanos_to_sql(r.spend_total))),
        (
            ":spend_period_nanos",
            Box::new(nanos_to_sql(r.spend_period)),
        ),
        (":period_resets_at", Box::new(time(r.period_resets_at))),
        (
            ":request_count",
            Box::new(i64::try_from(r.request_count).unwrap_or(i64::MAX)),
        ),
        (
            ":version",
            Box::new(i64::try_from(r.version).unwrap_or(i64::MAX)),
        ),
    ])
}

fn borrow(owned: &Params) -> Vec<(&str, &dyn rusqlite::ToSql)> {
    owned
        .iter()
        .map(|(name, value)| (*name, value.as_ref()))
        .collect()
}

/// SQLite integers are i64; amounts beyond $9.2 billion saturate (limits are capped far lower).
pub(super) fn nanos_to_sql(n: Nanodollars) -> i64 {
    i64::try_from(n.0).unwrap_or(i64::MAX)
}

/// The lifetime spend last persisted for `key_id` (zero for an unknown key).
pub fn persisted_total(conn: &Connection, key_id: &str) -> anyhow::Result<Nanodollars> {
    let total: Option<i64> = conn
        .query_row(
            "SELECT spend_total_nanos FROM keys WHERE id = ?1",
            [key_id],
            |row| row.get(0),
        )
        .optional()?;
    Ok(total.map_or(Nanodollars::ZERO, nanos_from_sql))
}

pub(super) fn nanos_from_sql(n: i64) -> Nanodollars {
    Nanodollars(u64::try_from(n).unwrap_or(0))
}

fn from_row(row: &Row<'_>) -> anyhow::Result<KeyRecord> {
    let id: String = row.get("id")?;
    let context = || format!("key {id} has a malformed column");
    let time = |column: &str| -> anyhow::Result<Option<Timestamp>> {
        let text: Option<String> = row.get(column)?;
        text.map(|t| t.parse::<Timestamp>())
            .transpose()
            .with_context(|| format!("{}: {column}", context()))
    };
    let json_list = |column: &str| -> anyhow::Result<Vec<String>> {
        let text: String = row.get(column)?;
        serde_json::from_str(&text).with_context(|| format!("{}: {column}", context()))
    };
    let hash: String = row.get("hash")?;
    let providers: String = row.get("allowed_providers")?;
    let reset: Option<String> = row.get("spend_reset")?;
    Ok(KeyRecord {
        hash: KeyHash::from_hex(&hash).with_context(|| format!("{}: hash", context()))?,
        prefix: row.get("prefix")?,
        name: row.get("name")?,
        allowed_providers: serde_json::from_str(&providers)
            .with_context(|| format!("{}: allowed_providers", context()))?,
        allowed_models: json_list("allowed_models")?,
        allowed_ips: json_list("allowed_ips")?,
        rate_limit_rpm: row.get("rate_limit_rpm")?,
        spend_limit: row
            .get::<_, Option<i64>>("spend_limit_nanos")?
            .map(nanos_from_sql),
        spend_reset: reset
            .map(|r| r.parse())
            .transpose()
            .map_err(|e: String| anyhow::anyhow!("{}: spend_reset: {e}", context()))?,
        expires_at: time("expires_at")?,
        created_at: time("created_at")?.with_context(context)?,
        updated_at: time("updated_at")?.with_context(context)?,
        revoked_at: time("revoked_at")?,
        last_used_at: time("last_used_at")?,
        spend_total: nanos_from_sql(row.get("spend_total_nanos")?),
        spend_period: nanos_from_sql(row.get("spend_period_nanos")?),
        period_resets_at: time("period_resets_at")?,
        request_count: u64::try_from(row.get::<_, i64>("request_count")?).unwrap_or(0),
        version: version_from_sql(row.get("version")?),
        id,
    })
}
