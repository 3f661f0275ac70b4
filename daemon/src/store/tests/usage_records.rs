//! Usage batches on both backends: records, their ids, the per-day report and a pair's
//! period spend.

use super::super::usage::{CostSource, RecordId, UsageRecord};
use super::*;
use crate::spend::price::Tokens;

/// A usage record: `seq` in writer instance 7, whose spend state says `count` requests and
/// `total` spent so far.
pub(crate) fn usage(key_id: &str, when: &str, model: &str, cost: u64, seq: u64) -> UsageRecord {
    UsageRecord {
        id: RecordId { instance: 7, seq },
        key_id: key_id.into(),
        at: at(when),
        provider: Provider::Openai,
        model: model.into(),
        status: 200,
        tokens: Tokens {
            input: 10,
            output: 20,
            cache_read: 1,
            cache_write: 2,
        },
        cost: Nanodollars(cost),
        latency_ms: 5,
        source: if seq.is_multiple_of(3) {
            CostSource::Estimated
        } else {
            CostSource::Reported
        },
        over_allowed: false,
        spend: SpendState::default(),
        journaled_hold: None,
    }
}

/// Gives each record its key's running spend, as the ledger would (records in order).
pub(crate) fn with_running_spend(mut records: Vec<UsageRecord>) -> Vec<UsageRecord> {
    let mut totals: std::collections::HashMap<String, (u64, u64)> = Default::default();
    for record in &mut records {
        let (count, total) = totals.entry(record.key_id.to_string()).or_default();
        *count += 1;
        *total += record.cost.0;
        record.spend.request_count = *count;
        record.spend.total = Nanodollars(*total);
        record.spend.last_used_at = Some(record.at);
    }
    records
}

/// Writes a batch from a thread outside the runtime, as the usage writer does.
pub(crate) async fn write(store: &Store, records: Vec<UsageRecord>) -> anyhow::Result<()> {
    let store = store.clone();
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(store.write_usage(&records, JournalChanges::default(), false));
    });
    result.await.expect("the writing thread answers")
}

pub(super) async fn usage_is_reported_by_utc_day_and_model(store: &Store) {
    for id in ["key_a", "key_b"] {
        store
            .insert_key(key(id), audit("key.create", id))
            .await
            .expect("insert");
    }
    let records = with_running_spend(vec![
        usage("key_a", "2026-11-27T23:59:59.999Z", "gpt-4o", 100, 0),
        usage("key_a", "2026-11-28T00:00:00Z", "gpt-4o", 200, 1),
        usage("key_a", "2026-11-28T10:00:00Z", "gpt-4o-mini", 5, 2),
        usage("key_b", "2026-11-28T10:00:00Z", "gpt-4o", 7, 3),
    ]);
    write(store, records[..2].to_vec()).await.expect("batch 1");
    write(store, records[2..].to_vec()).await.expect("batch 2");

    let day = |d: &str| d.parse::<jiff::civil::Date>().expect("date");
    let report = store
        .usage_report("key_a".into(), day("2026-11-27"), day("2026-11-29"))
        .await
        .expect("report");
    assert_eq!(report.total.requests, 3);
    assert_eq!(report.total.cost_usd, Nanodollars(305));
    assert_eq!(
        report.total.input_tokens,
        3 * 13,
        "input + cache read + cache write"
    );
    assert_eq!(report.total.estimated_requests, 1);
    let by_day: Vec<(String, u64)> = report
        .by_day
        .iter()
        .map(|d| (d.date.to_string(), d.totals.cost_usd.0))
        .collect();
    assert_eq!(
        by_day,
        [
            ("2026-11-27".into(), 100),
            ("2026-11-28".into(), 205),
            ("2026-11-29".into(), 0)
        ]
    );
    let by_model: Vec<(&str, u64)> = report
        .by_model
        .iter()
        .map(|m| (m.model.as_str(), m.totals.requests))
        .collect();
    assert_eq!(by_model, [("gpt-4o", 2), ("gpt-4o-mini", 1)]);

    let counted = store
        .counted_spend("key_a".into(), day("2026-11-28"))
        .await
        .expect("counted");
    assert_eq!(
        (counted.since, counted.total),
        (Nanodollars(205), Nanodollars(305))
    );
    let loaded = store
        .load_key("key_a".into())
        .await
        .expect("load")
        .expect("key");
    assert_eq!(
        (
            loaded.spend_total,
            loaded.request_count,
            loaded.last_used_at
        ),
        (Nanodollars(305), 3, Some(at("2026-11-28T10:00:00Z")))
    );
    let nothing = store
        .counted_spend("key_none".into(), day("2026-11-01"))
        .await
        .expect("counted");
    assert_eq!(
        (nothing.since, nothing.total),
        (Nanodollars::ZERO, Nanodollars::ZERO)
    );
}

pub(super) async fn period_spend_sums_a_pairs_days_from_the_period_start(store: &Store) {
    for id in ["key_old", "key_new", "key_other"] {
        store
            .insert_key(key(id), audit("key.create", id))
            .await
            .expect("insert");
    }
    // A rotated pair (old, new) over several UTC days, and another key on the same days.
    let records = with_running_spend(vec![
        usage("key_old", "2026-10-31T23:59:59.999Z", "gpt-4o", 1_000, 0),
        usage("key_old", "2026-11-01T00:00:00Z", "gpt-4o", 200, 1),
        usage("key_old", "2026-11-15T12:00:00Z", "gpt-4o-mini", 30, 2),
        usage("key_new", "2026-11-15T13:00:00Z", "gpt-4o", 4, 3),
        usage("key_new", "2026-11-30T23:59:59Z", "gpt-4o", 50_000, 4),
        usage("key_new", "2026-12-01T00:00:00Z", "gpt-4o", 600_000, 5),
        usage("key_other", "2026-11-15T12:00:00Z", "gpt-4o", 7_000_000, 6),
        usage("key_other", "2026-12-01T00:00:01Z", "gpt-4o", 80_000_000, 7),
    ]);
    write(store, records[..3].to_vec()).await.expect("batch 1");
    write(store, records[3..].to_vec()).await.expect("batch 2");

    let pair = ["key_old".to_owned(), "key_new".to_owned()];
    let spent = |ids: &[String], since: Option<&str>| {
        let ids = ids.to_vec();
        let since = since.map(at);
        async move {
            store
                .period_spend(&ids, since)
                .await
                .expect("period spend")
                .0
        }
    };
    // Monthly periods: November, then December.
    assert_eq!(
        spent(&pair, Some("2026-11-01T00:00:00Z")).await,
        200 + 30 + 4 + 50_000 + 600_000
    );
    assert_eq!(spent(&pair, Some("2026-12-01T00:00:00Z")).await, 600_000);
    // A daily period, and one with nothing spent yet.
    assert_eq!(
        spent(&pair, Some("2026-11-15T00:00:00Z")).await,
        30 + 4 + 50_000 + 600_000
    );
    assert_eq!(spent(&pair, Some("2026-12-02T00:00:00Z")).await, 0);
    // A start that is not a midnight counts its whole day: never less than was spent.
    assert_eq!(
        spent(&pair, Some("2026-11-30T18:00:00Z")).await,
        50_000 + 600_000
    );
    // No reset: the lifetime totals.
    assert_eq!(
        spent(&pair, None).await,
        1_000 + 200 + 30 + 4 + 50_000 + 600_000
    );
    // One key alone, the other key, an unknown key, no key.
    assert_eq!(
        spent(&pair[1..], Some("2026-11-01T00:00:00Z")).await,
        650_004
    );
    assert_eq!(
        spent(&["key_other".to_owned()], Some("2026-12-01T00:00:00Z")).await,
        80_000_000
    );
    assert_eq!(spent(&["key_other".to_owned()], None).await, 87_000_000);
    assert_eq!(spent(&["key_none".to_owned()], None).await, 0);
    assert_eq!(spent(&[], Some("2026-11-01T00:00:00Z")).await, 0);
}

pub(super) async fn the_usage_writer_assigns_ids_and_commits(store: &Store) {
    let clock: Arc<dyn crate::clock::Clock> =
        Arc::new(crate::clock::ManualClock::new(at("2026-11-27T12:00:00Z")));
    let (writer, _thread) = writer::UsageWriter::spawn(store.clone(), None, clock).expect("writer");
    for i in 0..50 {
        let mut record = usage("key_w", "2026-11-27T12:00:00Z", "gpt-4o", 10, 0);
        record.id = RecordId::UNASSIGNED;
        record.tokens.output = i;
        writer.record(record);
    }
    writer.flush().await;
    let day = "2026-11-27".parse().expect("date");
    let report = store
        .usage_report("key_w".into(), day, day)
        .await
        .expect("report");
    assert_eq!(
        report.total.requests, 50,
        "each record its own id: none taken for a repeat"
    );
    assert_eq!(report.total.output_tokens, (0..50).sum::<u64>());
}
