//! The holds journal (`holds`, migration 0010): the open holds the usage writer journaled
//! (`spend::holds`), and, at start-up, the charge of those a crash left behind.
//!
//! Rows are written and deleted only inside usage batches (`Store::write_usage`), so a row
//! and the usage row of its request are never both on disk, and one of them always is once
//! the hold is journaled. At start-up every row left is a request that was in flight when the
//! daemon died: it becomes an `estimated` usage row charged the hold's cost (SPEC §9.4), its
//! key's spend counts it, and the row goes, all in one transaction, so a crash during the
//! start repeats nothing.

use anyhow::Context;
use gateway_shared::{Nanodollars, SpendReset};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, Transaction, params};

use super::keys::{nanos_from_sql, nanos_to_sql, persist_spend};
use super::usage;
use crate::spend::holds::{HoldId, JournaledHold};
use crate::spend::ledger::SpendState;
use crate::spend::price::Tokens;
use crate::store::CrashCharges;
use crate::store::usage::{CostSource, RecordId, UsageRecord};

/// Inserts the holds `opened` and deletes the rows of the holds `settled` (their usage rows
/// are in the same transaction).
pub fn journal(
    tx: &Transaction<'_>,
    opened: &[JournaledHold],
    settled: &[HoldId],
) -> anyhow::Result<()> {
    if !opened.is_empty() {
        let mut insert = tx.prepare_cached(
            "INSERT INTO holds (id, key_id, at_ms, provider, model, input_tokens, \
             output_tokens, cost_nanos, unpriced) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for hold in opened {
            insert
                .execute(params![
                    sql_id(hold.id),
                    hold.key_id.as_str(),
                    hold.at.as_millisecond(),
                    hold.provider.as_str(),
                    hold.model.as_str(),
                    sql_count(hold.input_tokens),
                    sql_count(hold.output_tokens),
                    nanos_to_sql(hold.cost),
                    hold.unpriced,
                ])
                .context("journaling an open hold")?;
        }
    }
    if !settled.is_empty() {
        let mut delete = tx.prepare_cached("DELETE FROM holds WHERE id = ?1")?;
        for id in settled {
            delete
                .execute([sql_id(*id)])
                .context("deleting a settled hold")?;
        }
    }
    Ok(())
}

/// Charges every journaled hold (see the module docs) and empties the journal.
pub fn charge_all(tx: &Transaction<'_>) -> anyhow::Result<CrashCharges> {
    let records = journaled_as_usage(tx)?;
    if records.is_empty() {
        return Ok(CrashCharges::default());
    }
    usage::insert_all(tx, &records, false)?;
    for record in &records {
        let Some(mut spend) = latest_spend(tx, &record.key_id)? else {
            // Keys are revoked, never deleted; a row for an unknown key still leaves its
            // usage row.
            continue;
        };
        spend.charge_at(record.cost, record.at);
        persist_spend(tx, &record.key_id, &spend)?;
    }
    tx.execute("DELETE FROM holds", [])
        .context("emptying the holds journal")?;
    Ok(CrashCharges {
        requests: records.len(),
        cost: records
            .iter()
            .fold(Nanodollars::ZERO, |sum, r| sum.saturating_add(r.cost)),
    })
}

/// The journal's rows as the usage rows they become, oldest first.
fn journaled_as_usage(tx: &Transaction<'_>) -> anyhow::Result<Vec<UsageRecord>> {
    let mut select = tx.prepare(
        "SELECT key_id, at_ms, provider, model, input_tokens, output_tokens, cost_nanos, \
         unpriced FROM holds ORDER BY at_ms, id",
    )?;
    let rows = select.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, i64>(4)?,
            row.get::<_, i64>(5)?,
            row.get::<_, i64>(6)?,
            row.get::<_, bool>(7)?,
        ))
    })?;
    let mut records = Vec::new();
    for row in rows {
        let (key_id, at_ms, provider, model, input, output, cost, unpriced) = row?;
        let provider = provider
            .parse()
            .map_err(|e: String| anyhow::anyhow!("holds journal: {e}"))?;
        records.push(UsageRecord {
            id: RecordId::UNASSIGNED,
            key_id: key_id.into(),
            at: Timestamp::from_millisecond(at_ms).context("holds journal: at_ms")?,
            provider,
            model: model.into(),
            // No response is known.
            status: 0,
            tokens: Tokens {
                input: u64::try_from(input).unwrap_or(0),
                output: u64::try_from(output).unwrap_or(0),
                ..Tokens::default()
            },
            cost: nanos_from_sql(cost),
            latency_ms: 0,
            source: if unpriced {
                CostSource::Unpriced
            } else {
                CostSource::Estimated
            },
            over_allowed: false,
            spend: SpendState::default(),
            journaled_hold: None,
        });
    }
    Ok(records)
}

/// The spend a key loads with, and its reset period; `None` for an unknown key. A rotated
/// key and its successor share one ledger, persisted under each of their ids, and start-up
/// loads the row that counted the most requests (`KeyCache::share_rotated`): the charge
/// starts from that row, so that the row it writes is again the one loaded.
fn latest_spend(tx: &Transaction<'_>, key_id: &str) -> anyhow::Result<Option<SpendState>> {
    let mut select = tx.prepare_cached(
        "WITH RECURSIVE chain(id) AS ( \
             SELECT ?1 \
             UNION SELECT predecessor_id FROM key_rotations JOIN chain ON successor_id = chain.id \
             UNION SELECT successor_id FROM key_rotations JOIN chain ON predecessor_id = chain.id) \
         SELECT spend_total_nanos, spend_period_nanos, period_resets_at, spend_reset, \
         request_count, last_used_at FROM keys WHERE id IN chain \
         ORDER BY request_count DESC, spend_total_nanos DESC LIMIT 1",
    )?;
    let row = select
        .query_row([key_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Option<String>>(5)?,
            ))
        })
        .optional()?;
    let Some((total, period, resets_at, reset, count, last_used)) = row else {
        return Ok(None);
    };
    let time = |text: Option<String>| -> anyhow::Result<Option<Timestamp>> {
        text.map(|t| t.parse::<Timestamp>())
            .transpose()
            .with_context(|| format!("key {key_id} has a malformed timestamp"))
    };
    let kind = reset
        .map(|r| r.parse::<SpendReset>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("key {key_id}: spend_reset: {e}"))?;
    Ok(Some(SpendState {
        total: nanos_from_sql(total),
        period: nanos_from_sql(period),
        period_resets_at: time(resets_at)?,
        period_kind: kind,
        request_count: u64::try_from(count).unwrap_or(0),
        last_used_at: time(last_used)?,
        ..SpendState::default()
    }))
}

fn sql_id(id: HoldId) -> i64 {
    i64::try_from(id.get()).unwrap_or(i64::MAX)
}

fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JournalChanges, Store};
    use gateway_shared::Provider;

    fn hold(id: u64, key_id: &str, at: &str, cost: u64) -> JournaledHold {
        JournaledHold {
            id: HoldId::new(id).expect("not 0"),
            key_id: key_id.into(),
            provider: Provider::Openai,
            model: "gpt-4o".into(),
            input_tokens: 400,
            output_tokens: 1000,
            cost: Nanodollars(cost),
            unpriced: false,
            at: at.parse().expect("time"),
        }
    }

    /// A store with a daily key `key_d` that has spent 500 on the 27th (2000 in all, 9
    /// requests), and an unlimited key `key_u`.
    fn store() -> (tempfile::TempDir, Store, rusqlite::Connection) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gateway.db");
        let store = Store::open(&path).expect("store");
        let conn = rusqlite::Connection::open(&path).expect("second connection");
        conn.execute_batch(
            "INSERT INTO keys (id, hash, prefix, name, allowed_providers, allowed_models, \
             allowed_ips, spend_limit_nanos, spend_reset, created_at, updated_at, \
             spend_total_nanos, spend_period_nanos, period_resets_at, request_count) VALUES \
             ('key_d', 'h1', 'p', 'n', '[]', '[]', '[]', 100000, 'daily', \
              '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z', 2000, 500, \
              '2026-11-28T00:00:00Z', 9), \
             ('key_u', 'h2', 'p', 'n', '[]', '[]', '[]', NULL, NULL, \
              '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z', 0, 0, NULL, 0)",
        )
        .expect("key rows");
        (dir, store, conn)
    }

    fn journal(store: &Store, opened: &[JournaledHold], settled: &[HoldId]) {
        store
            .write_usage(
                &[],
                JournalChanges {
                    instance: 7,
                    opened,
                    settled,
                },
                false,
            )
            .expect("journal");
    }

    fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).expect(sql)
    }

    #[tokio::test]
    async fn journaled_holds_become_estimated_usage_and_spend_once() {
        let (_dir, store, conn) = store();
        journal(
            &store,
            &[
                hold(1, "key_d", "2026-11-27T20:00:00Z", 100),
                hold(2, "key_d", "2026-11-26T23:00:00Z", 30),
                hold(3, "key_u", "2026-11-27T20:00:00Z", 7),
                hold(4, "key_u", "2026-11-27T20:00:01Z", 1_000_000),
            ],
            &[],
        );
        // Hold 4 settled: its usage row was written and its journal row deleted with it.
        journal(&store, &[], &[HoldId::new(4).expect("not 0")]);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM holds"), 3);

        let charged = store.charge_journaled_holds().await.expect("charge");
        assert_eq!(
            charged,
            CrashCharges {
                requests: 3,
                cost: Nanodollars(137)
            }
        );
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM holds"), 0, "emptied");
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM usage WHERE source = 'estimated' AND status = 0 \
                 AND input_tokens = 400 AND output_tokens = 1000"
            ),
            3
        );
        let spend = |key: &str| -> (i64, i64, i64, Option<String>) {
            conn.query_row(
                "SELECT spend_total_nanos, spend_period_nanos, request_count, last_used_at \
                 FROM keys WHERE id = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("spend")
        };
        // The 27th's hold counts in the 27th's period; the 26th's in the total only.
        assert_eq!(
            spend("key_d"),
            (2130, 600, 11, Some("2026-11-27T20:00:00Z".into()))
        );
        assert_eq!(spend("key_u").0, 7);
        // Each in its own day's rollup.
        let day_26: i64 = conn
            .query_row(
                "SELECT cost_nanos FROM usage_daily WHERE key_id = 'key_d' AND day = '2026-11-26'",
                [],
                |r| r.get(0),
            )
            .expect("the 26th");
        assert_eq!(day_26, 30);
        assert_eq!(
            count(
                &conn,
                "SELECT estimated_requests FROM usage_daily WHERE key_id = 'key_d' \
                 AND day = '2026-11-27'"
            ),
            1
        );

        // A second start charges nothing again.
        assert_eq!(
            store.charge_journaled_holds().await.expect("again"),
            CrashCharges::default()
        );
        assert_eq!(spend("key_d").0, 2130);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM usage"), 3);
    }

    #[tokio::test]
    async fn an_unpriced_hold_is_recorded_as_unpriced_and_an_unknown_key_still_leaves_its_row() {
        let (_dir, store, conn) = store();
        let mut unpriced = hold(1, "key_u", "2026-11-27T20:00:00Z", 0);
        unpriced.unpriced = true;
        journal(
            &store,
            &[unpriced, hold(2, "key_gone", "2026-11-27T20:00:00Z", 5)],
            &[],
        );
        let charged = store.charge_journaled_holds().await.expect("charge");
        assert_eq!(charged.requests, 2);
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM usage WHERE source = 'unpriced'"
            ),
            1
        );
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM usage WHERE key_id = 'key_gone'"
            ),
            1
        );
        assert_eq!(
            count(&conn, "SELECT request_count FROM keys WHERE id = 'key_u'"),
            1
        );
    }

    #[tokio::test]
    async fn a_rotated_keys_hold_is_charged_on_the_state_the_pair_loads() {
        let (_dir, store, conn) = store();
        // key_d was rotated to key_s, which has counted more since (the pair shares one
        // ledger, persisted under each id).
        conn.execute_batch(
            "INSERT INTO keys (id, hash, prefix, name, allowed_providers, allowed_models, \
             allowed_ips, spend_limit_nanos, spend_reset, created_at, updated_at, \
             spend_total_nanos, spend_period_nanos, period_resets_at, request_count) VALUES \
             ('key_s', 'h3', 'p', 'n', '[]', '[]', '[]', 100000, 'daily', \
              '2026-11-02T00:00:00Z', '2026-11-02T00:00:00Z', 2400, 900, \
              '2026-11-28T00:00:00Z', 12); \
             INSERT INTO key_rotations (successor_id, predecessor_id) VALUES ('key_s', 'key_d');",
        )
        .expect("rotation");
        journal(
            &store,
            &[hold(1, "key_d", "2026-11-27T20:00:00Z", 100)],
            &[],
        );
        store.charge_journaled_holds().await.expect("charge");
        let row: (i64, i64, i64) = conn
            .query_row(
                "SELECT spend_total_nanos, spend_period_nanos, request_count FROM keys \
                 WHERE id = 'key_d'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("row");
        assert_eq!(row, (2500, 1000, 13), "the pair's latest state, charged");
    }
}
