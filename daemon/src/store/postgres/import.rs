//! The PostgreSQL side of `gatewayd migrate-store` (`store::migrate`): one transaction that
//! locks the store, refuses one that is not empty, takes the copied rows batch by batch (one
//! multi-row insert per batch, arrays unnested, as usage batches are written), and counts
//! what it holds before the caller commits.
//!
//! Locks, taken first: the change feed's advisory lock (`changes`: the copy appends to the
//! feed, and feed writers must commit in order) and every table the copy fills, in `SHARE
//! ROW EXCLUSIVE` mode: readers go on, writers (a replica already started, a second
//! migrate-store) wait for the commit, after which a second copy finds the store not empty.
//! A lock that does not come within `LOCK_TIMEOUT` fails the copy instead of hanging it.

use std::collections::BTreeMap;

use anyhow::Context;
use deadpool_postgres::{Object, Transaction};

use super::{Store, changes};
use crate::store::migrate::{Batch, KeyTally, Tally, counted};

/// The tables the copy fills, with what one row of each is called in a refusal.
const TABLES: [(&str, &str); 8] = [
    ("keys", "key"),
    ("key_rotations", "rotation"),
    ("admin_tokens", "admin token"),
    ("audit", "audit row"),
    ("usage", "usage row"),
    ("usage_daily", "daily rollup row"),
    ("key_spend", "key total"),
    ("holds", "open hold"),
];

/// How long the copy waits for another session's lock on a table it fills.
const LOCK_TIMEOUT: &str = "10s";

/// A connection of its own for the copy's one long transaction.
pub struct ImportConnection {
    client: Object,
    described: std::sync::Arc<str>,
}

/// The copy's transaction: rolled back if dropped before [`Import::commit`].
pub struct Import<'a> {
    tx: Transaction<'a>,
    described: std::sync::Arc<str>,
}

impl Store {
    pub async fn import_connection(&self) -> anyhow::Result<ImportConnection> {
        Ok(ImportConnection {
            client: self.client().await?,
            described: self.described.clone(),
        })
    }
}

impl ImportConnection {
    /// Starts the copy's transaction: takes the locks (see the module docs) and refuses a
    /// store that holds anything, naming what.
    pub async fn begin(&mut self) -> anyhow::Result<Import<'_>> {
        let described = self.described.clone();
        let tx = changes::begin(&mut self.client).await?;
        // The copy's statements (a count over millions of rows) may take longer than a
        // management write's limit; a lock held elsewhere fails it instead of hanging it.
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"
        ))
        .await?;
        let tables: Vec<&str> = TABLES.iter().map(|(table, _)| *table).collect();
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
            tables.join(", ")
        ))
        .await
        .with_context(|| format!("locking the PostgreSQL store at {described}"))?;
        let counts = tx
            .query_one(
                &format!(
                    "SELECT {}",
                    tables
                        .iter()
                        .map(|t| format!("(SELECT count(*) FROM {t})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[],
            )
            .await
            .context("counting the PostgreSQL store's rows")?;
        let mut held = Vec::new();
        for (i, (_, what)) in TABLES.iter().enumerate() {
            let n: i64 = counts.try_get(i)?;
            if n > 0 {
                held.push(counted(u64::try_from(n).unwrap_or(0), what));
            }
        }
        anyhow::ensure!(
            held.is_empty(),
            "the PostgreSQL store at {described} already has {}: migrate-store copies into an \
             empty store only",
            held.join(", ")
        );
        Ok(Import { tx, described })
    }
}

impl Import<'_> {
    /// Inserts one batch of rows.
    pub async fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let tx = &self.tx;
        match batch {
            Batch::Keys(rows) => {
                let text = |f: fn(&_) -> &String| rows.iter().map(f).collect::<Vec<&String>>();
                let opt_text = |f: fn(&_) -> &Option<String>| {
                    rows.iter().map(f).collect::<Vec<&Option<String>>>()
                };
                let opt_int = |f: fn(&_) -> Option<i64>| rows.iter().map(f).collect::<Vec<_>>();
                tx.execute(
                    "INSERT INTO keys (id, hash, prefix, name, allowed_providers, \
                     allowed_models, allowed_ips, rate_limit_rpm, spend_limit_nanos, \
                     spend_reset, expires_at, created_at, updated_at, revoked_at, version) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                     $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], \
                     $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
                     $15::bigint[])",
                    &[
                        &text(|r| &r.id),
                        &text(|r| &r.hash),
                        &text(|r| &r.prefix),
                        &text(|r| &r.name),
                        &text(|r| &r.allowed_providers),
                        &text(|r| &r.allowed_models),
                        &text(|r| &r.allowed_ips),
                        &opt_int(|r| r.rate_limit_rpm),
                        &opt_int(|r| r.spend_limit_nanos),
                        &opt_text(|r| &r.spend_reset),
                        &opt_text(|r| &r.expires_at),
                        &text(|r| &r.created_at),
                        &text(|r| &r.updated_at),
                        &opt_text(|r| &r.revoked_at),
                        &rows.iter().map(|r| r.version).collect::<Vec<i64>>(),
                    ],
                )
                .await
                .context("copying keys")?;
                let used: Vec<_> = rows
                    .iter()
                    .filter_map(|r| r.totals.map(|t| (&r.id, t)))
                    .collect();
                if !used.is_empty() {
                    tx.execute(
                        "INSERT INTO key_spend (key_id, spend_total_nanos, request_count, \
                         last_used_ms) SELECT * FROM unnest($1::text[], $2::bigint[], \
                         $3::bigint[], $4::bigint[])",
                        &[
                            &used.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
                            &used
                                .iter()
                                .map(|(_, t)| t.spend_total_nanos)
                                .collect::<Vec<_>>(),
                            &used
                                .iter()
                                .map(|(_, t)| t.request_count)
                                .collect::<Vec<_>>(),
                            &used.iter().map(|(_, t)| t.last_used_ms).collect::<Vec<_>>(),
                        ],
                    )
                    .await
                    .context("copying the keys' totals")?;
                }
            }
            Batch::Rotations(pairs) => {
                let successors: Vec<&String> = pairs.iter().map(|(s, _)| s).collect();
                let predecessors: Vec<&String> = pairs.iter().map(|(_, p)| p).collect();
                tx.execute(
                    "INSERT INTO key_rotations (successor_id, predecessor_id) \
                     SELECT * FROM unnest($1::text[], $2::text[])",
                    &[&successors, &predecessors],
                )
                .await
                .context("copying rotations")?;
            }
            Batch::AdminTokens(rows) => {
                let text = |f: fn(&_) -> &String| rows.iter().map(f).collect::<Vec<&String>>();
                let opt_text = |f: fn(&_) -> &Option<String>| {
                    rows.iter().map(f).collect::<Vec<&Option<String>>>()
                };
                tx.execute(
                    "INSERT INTO admin_tokens (id, hash, prefix, name, created_at, revoked_at, \
                     last_used_at) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], \
                     $4::text[], $5::text[], $6::text[], $7::text[])",
                    &[
                        &text(|r| &r.id),
                        &text(|r| &r.hash),
                        &text(|r| &r.prefix),
                        &text(|r| &r.name),
                        &text(|r| &r.created_at),
                        &opt_text(|r| &r.revoked_at),
                        &opt_text(|r| &r.last_used_at),
                    ],
                )
                .await
                .context("copying admin tokens")?;
            }
            Batch::Audit(rows) => {
                let text = |f: fn(&_) -> &String| rows.iter().map(f).collect::<Vec<&String>>();
                tx.execute(
                    "INSERT INTO audit (id, at, actor, action, key_id, details) \
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], \
                     $5::text[], $6::text[])",
                    &[
                        &rows.iter().map(|r| r.id).collect::<Vec<i64>>(),
                        &text(|r| &r.at),
                        &text(|r| &r.actor),
                        &text(|r| &r.action),
                        &rows.iter().map(|r| &r.key_id).collect::<Vec<_>>(),
                        &text(|r| &r.details),
                    ],
                )
                .await
                .context("copying audit rows")?;
            }
            Batch::Usage(rows) => {
                let text = |f: fn(&_) -> &String| rows.iter().map(f).collect::<Vec<&String>>();
                let int = |f: fn(&_) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
                // Instance 0: reserved for copied rows (see `store::migrate`).
                tx.execute(
                    "INSERT INTO usage (instance, seq, key_id, at_ms, provider, model, status, \
                     input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, \
                     cost_nanos, latency_ms, source, over_allowed) \
                     SELECT 0, * FROM unnest($1::bigint[], $2::text[], $3::bigint[], \
                     $4::text[], $5::text[], $6::integer[], $7::bigint[], $8::bigint[], \
                     $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[], \
                     $14::boolean[])",
                    &[
                        &int(|r| r.rowid),
                        &text(|r| &r.key_id),
                        &int(|r| r.at_ms),
                        &text(|r| &r.provider),
                        &text(|r| &r.model),
                        &rows.iter().map(|r| r.status).collect::<Vec<i32>>(),
                        &int(|r| r.input_tokens),
                        &int(|r| r.output_tokens),
                        &int(|r| r.cache_read_tokens),
                        &int(|r| r.cache_write_tokens),
                        &int(|r| r.cost_nanos),
                        &int(|r| r.latency_ms),
                        &text(|r| &r.source),
                        &rows.iter().map(|r| r.over_allowed).collect::<Vec<bool>>(),
                    ],
                )
                .await
                .context("copying usage rows")?;
            }
            Batch::Daily(rows) => {
                let text = |f: fn(&_) -> &String| rows.iter().map(f).collect::<Vec<&String>>();
                let sum = |i: usize| rows.iter().map(|r| r.sums[i]).collect::<Vec<i64>>();
                tx.execute(
                    "INSERT INTO usage_daily (key_id, day, provider, model, requests, \
                     input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, \
                     cost_nanos, estimated_requests, unpriced_requests) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                     $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], \
                     $10::bigint[], $11::bigint[], $12::bigint[])",
                    &[
                        &text(|r| &r.key_id),
                        &text(|r| &r.day),
                        &text(|r| &r.provider),
                        &text(|r| &r.model),
                        &sum(0),
                        &sum(1),
                        &sum(2),
                        &sum(3),
                        &sum(4),
                        &sum(5),
                        &sum(6),
                        &sum(7),
                    ],
                )
                .await
                .context("copying the daily rollup")?;
            }
        }
        Ok(())
    }

    /// After the last batch: the audit id sequence continues after the copied ids, and every
    /// copied key, rotation and admin token joins the change feed (notified at commit), so a
    /// replica already running loads them.
    pub async fn finish(&mut self) -> anyhow::Result<()> {
        self.tx
            .batch_execute(
                "SELECT setval(pg_get_serial_sequence('audit', 'id'), \
                 COALESCE(max(id), 1), max(id) IS NOT NULL) FROM audit; \
                 INSERT INTO changes (kind, id) SELECT 'key', id FROM keys ORDER BY id; \
                 INSERT INTO changes (kind, id) \
                     SELECT 'rotation', successor_id FROM key_rotations ORDER BY successor_id; \
                 INSERT INTO changes (kind, id) SELECT 'admin_token', id FROM admin_tokens \
                     ORDER BY id; \
                 SELECT pg_notify('gatewayd_changes', COALESCE(max(seq), 0)::text) FROM changes",
            )
            .await
            .context("recording the copied rows in the change feed")?;
        Ok(())
    }

    /// What the store now holds, counted with queries of its own (see `store::migrate`).
    pub async fn tally(&self) -> anyhow::Result<Tally> {
        let tx = &self.tx;
        let counts = tx
            .query_one(
                "SELECT (SELECT count(*) FROM keys), (SELECT count(*) FROM key_rotations), \
                 (SELECT count(*) FROM admin_tokens), (SELECT count(*) FROM audit), \
                 (SELECT COALESCE(max(id), 0) FROM audit), (SELECT count(*) FROM usage), \
                 (SELECT count(*) FROM usage_daily)",
                &[],
            )
            .await
            .context("counting the copy")?;
        let count = |i: usize| -> anyhow::Result<u64> {
            Ok(u64::try_from(counts.try_get::<_, i64>(i)?).unwrap_or(0))
        };
        let mut per_key: BTreeMap<String, KeyTally> = BTreeMap::new();
        // Sums as text: PostgreSQL's `numeric` sum never overflows, and text reads it whole.
        let wide = |text: Option<String>| -> anyhow::Result<i128> {
            text.map_or(Ok(0), |t| t.parse().context("a sum that is not an integer"))
        };
        for row in tx
            .query(
                "SELECT key_id, count(*), sum(cost_nanos)::text FROM usage GROUP BY key_id",
                &[],
            )
            .await
            .context("summing the copied usage")?
        {
            let key = per_key.entry(row.try_get(0)?).or_default();
            key.usage_rows = u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0);
            key.usage_cost = wide(row.try_get(2)?)?;
        }
        for row in tx
            .query(
                "SELECT key_id, sum(requests)::text, sum(cost_nanos)::text FROM usage_daily \
                 GROUP BY key_id",
                &[],
            )
            .await
            .context("summing the copied rollup")?
        {
            let key = per_key.entry(row.try_get(0)?).or_default();
            key.daily_requests = wide(row.try_get(1)?)?;
            key.daily_cost = wide(row.try_get(2)?)?;
        }
        for row in tx
            .query(
                "SELECT key_id, spend_total_nanos, request_count FROM key_spend",
                &[],
            )
            .await
            .context("reading the copied totals")?
        {
            let key = per_key.entry(row.try_get(0)?).or_default();
            key.spend_total = row.try_get(1)?;
            key.request_count = row.try_get(2)?;
        }
        Ok(Tally {
            keys: count(0)?,
            rotations: count(1)?,
            admin_tokens: count(2)?,
            audit_rows: count(3)?,
            audit_last_id: counts.try_get(4)?,
            usage_rows: count(5)?,
            daily_rows: count(6)?,
            per_key,
        })
    }

    pub async fn commit(self) -> anyhow::Result<()> {
        self.tx.commit().await.with_context(|| {
            format!(
                "committing the copy into the PostgreSQL store at {}",
                self.described
            )
        })
    }
}
