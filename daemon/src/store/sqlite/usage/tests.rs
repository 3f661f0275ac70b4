//! The usage log and rollup's tests.

use super::*;
use crate::spend::price::Tokens;
use crate::store::tests::usage;
use crate::store::usage::{CostSource, newest_spend};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Record `i`: one of three keys, an hour after the one before, its own token counts and
/// cost, every tenth estimated (the shared fixture, `store::tests::usage`, otherwise).
fn record(i: u64) -> UsageRecord {
    let at = Timestamp::from_second(1_795_000_000 + i as i64 * 3_600).expect("time");
    UsageRecord {
        tokens: Tokens {
            input: i,
            output: 2 * i,
            cache_read: 0,
            cache_write: 0,
        },
        latency_ms: i,
        source: if i.is_multiple_of(10) {
            CostSource::Estimated
        } else {
            CostSource::Reported
        },
        ..usage(
            &format!("key_{}", i % 3),
            &at.to_string(),
            "gpt-4o",
            1_000 + i,
            i,
        )
    }
}

fn insert(conn: &mut Connection, records: &[UsageRecord]) {
    let tx = conn.transaction().expect("tx");
    insert_all(&tx, records, true).expect("insert");
    tx.commit().expect("commit");
}

fn migrated() -> Connection {
    let mut conn = Connection::open_in_memory().expect("open");
    super::super::migrations::migrate(&mut conn).expect("migrate");
    conn
}

#[test]
fn the_rollup_groups_by_utc_day_key_and_model_across_batches() {
    let mut conn = migrated();
    let at = |text: &str| text.parse::<Timestamp>().expect("time");
    let mut late = record(1);
    late.key_id = "key_a".into();
    late.at = at("2026-11-27T23:59:59.999Z");
    let mut early = late.clone();
    early.at = at("2026-11-28T00:00:00Z");
    let mut other_model = early.clone();
    other_model.model = "gpt-4o-mini".into();
    let mut before_1970 = late.clone();
    before_1970.at = at("1969-12-31T23:00:00Z");
    insert(&mut conn, &[late.clone(), early.clone(), other_model]);
    insert(&mut conn, &[early.clone(), before_1970]);
    let rows: Vec<(String, String, i64, i64, i64)> = conn
        .prepare(
            "SELECT day, model, requests, cost_nanos, estimated_requests FROM usage_daily \
             WHERE key_id = 'key_a' ORDER BY day, model",
        )
        .expect("prepare")
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let cost = late.cost.0 as i64;
    assert_eq!(
        rows,
        [
            ("1969-12-31".into(), "gpt-4o".into(), 1, cost, 0),
            ("2026-11-27".into(), "gpt-4o".into(), 1, cost, 0),
            ("2026-11-28".into(), "gpt-4o".into(), 2, 2 * cost, 0),
            ("2026-11-28".into(), "gpt-4o-mini".into(), 1, cost, 0),
        ]
    );
    let report = report(
        &conn,
        "key_a",
        "2026-11-27".parse().expect("date"),
        "2026-11-28".parse().expect("date"),
    )
    .expect("report");
    assert_eq!(
        report.total.requests, 4,
        "the 1969 row is outside the range"
    );
    assert_eq!(report.by_day[1].totals.requests, 3);
    assert_eq!(report.by_model[0].model, "gpt-4o");
    assert_eq!(report.by_model[0].totals.requests, 3);
    let since = |day: &str| {
        spend_since(&conn, "key_a", day.parse().expect("date"))
            .expect("spend")
            .0
    };
    assert_eq!(
        since("2026-11-28"),
        3 * late.cost.0,
        "the 28th's three rows"
    );
    assert_eq!(since("2026-11-27"), 4 * late.cost.0);
    assert_eq!(since("2026-11-29"), 0);
    assert_eq!(since("1969-01-01"), 5 * late.cost.0);
}

#[test]
fn the_newest_spend_of_a_key_wins_whatever_order_it_was_queued_in() {
    let with_count = |key: &str, count: u64| {
        let mut r = record(count);
        r.key_id = key.into();
        r.spend.request_count = count;
        r.spend.total = Nanodollars(count * 10);
        r
    };
    let records = [
        with_count("key_a", 7),
        with_count("key_b", 1),
        with_count("key_a", 9),
        with_count("key_a", 8),
    ];
    let newest = newest_spend(&records);
    assert_eq!(newest.len(), 2);
    assert_eq!(newest["key_a"].total, Nanodollars(90));
    assert_eq!(newest["key_b"].total, Nanodollars(10));
}

#[test]
fn batches_of_every_size_insert_every_row_once() {
    for n in [0, 1, 2, 3, 7, 15, 31, 32, 33, 63, 70] {
        let mut conn = migrated();
        let records: Vec<UsageRecord> = (0..n).map(record).collect();
        insert(&mut conn, &records);
        let in_order: Vec<i64> = conn
            .prepare("SELECT cost_nanos FROM usage ORDER BY rowid")
            .expect("select")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(
            in_order,
            (0..n as i64).map(|i| 1_000 + i).collect::<Vec<_>>(),
            "each row once, in the batch's order"
        );
        let (rows, cost, output, estimated): (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(cost_nanos), 0), COALESCE(SUM(output_tokens), 0), \
                 COALESCE(SUM(source = 'estimated'), 0) FROM usage",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("sums");
        let n = n as i64;
        assert_eq!(rows, n);
        assert_eq!(cost, (0..n).map(|i| 1_000 + i).sum::<i64>());
        assert_eq!(output, (0..n).map(|i| 2 * i).sum::<i64>());
        assert_eq!(estimated, (0..n).filter(|i| i % 10 == 0).count() as i64);
        let rolled: (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(cost_nanos), 0), \
                 COALESCE(SUM(output_tokens), 0), COALESCE(SUM(estimated_requests), 0) \
                 FROM usage_daily",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("rollup");
        assert_eq!(
            rolled,
            (rows, cost, output, estimated),
            "the rollup sums the log"
        );
        let last: Option<(String, i64)> = conn
            .query_row(
                "SELECT key_id, at_ms FROM usage ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        if n > 0 {
            let expected = record(n as u64 - 1);
            assert_eq!(
                last,
                Some((expected.key_id.into(), expected.at.as_millisecond()))
            );
        }
    }
}

/// A provider's absurd numbers saturate the rollup; the rows after them are still stored
/// (an overflowing SQL sum would become a REAL the STRICT table refuses), and the reports
/// still read.
#[test]
fn the_rollup_saturates_instead_of_refusing_what_follows() {
    let mut conn = migrated();
    let mut huge = record(1);
    huge.key_id = "key_h".into();
    huge.tokens = Tokens {
        input: u64::MAX,
        output: 9_000_000_000_000_000_000,
        cache_read: u64::MAX,
        cache_write: u64::MAX,
    };
    huge.cost = Nanodollars(u64::MAX);
    insert(&mut conn, std::slice::from_ref(&huge));
    for _ in 0..3 {
        let mut normal = huge.clone();
        normal.tokens = Tokens {
            input: 10,
            output: 7,
            ..Default::default()
        };
        normal.cost = Nanodollars(500);
        let tx = conn.transaction().expect("tx");
        insert_all(&tx, &[normal], false).expect("a normal row after a saturated one");
        tx.commit().expect("commit");
    }
    let max = i64::MAX;
    let row: (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT requests, input_tokens, output_tokens, cost_nanos FROM usage_daily \
             WHERE key_id = 'key_h'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("the rollup row");
    // 9e18 output tokens plus 3 × 7 still fit; the saturated cost stays at the bound.
    assert_eq!(row, (4, max, 9_000_000_000_000_000_021, max));
    let logged: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM usage WHERE key_id = 'key_h'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(logged, 4);

    // Another model the same day, also saturated: the report sums rows without overflow.
    let mut other = huge.clone();
    other.model = "gpt-4o-mini".into();
    insert(&mut conn, &[other]);
    let day = TimeZone::UTC.to_datetime(huge.at).date();
    let report = report(&conn, "key_h", day, day).expect("report");
    assert_eq!(report.total.requests, 5);
    assert_eq!(report.total.input_tokens, u64::MAX);
    assert_eq!(report.total.output_tokens, 18_000_000_000_000_000_021);
    let twice = 2 * max.unsigned_abs();
    assert_eq!(report.by_model.len(), 2);
    assert_eq!(
        spend_since(&conn, "key_h", day).expect("spend"),
        Nanodollars(twice)
    );
}

#[test]
fn the_rollup_upsert_clamps_every_sum() {
    let sql = rollup_upsert_sql();
    for column in ROLLUP_SUMS {
        assert!(
            sql.contains(&format!(
                "{column} = CASE WHEN excluded.{column} > {max} - {column}",
                max = i64::MAX
            )),
            "{column}: {sql}"
        );
    }
}
