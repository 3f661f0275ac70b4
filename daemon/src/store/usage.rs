//! Usage as both backends see it: the record the usage writer persists (a row per proxied
//! request), its id, the per-day rollup groups a batch adds to, and the report assembled
//! from rollup rows. The SQL is each backend's (`sqlite::usage`, `postgres::usage`); what
//! a batch adds and what a report says are written once, here, so the two cannot drift.

use std::collections::HashMap;

/// The usage writer's per-batch maps: keyed by key ids and model names it got from this
/// process's own records, so foldhash (seeded per process) in place of SipHash, which cost
/// ~250 instructions a record for hashing two short strings (callgrind, issue #19).
type BatchMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use compact_str::CompactString;
use gateway_shared::api::{DailyUsage, ModelUsage, UsageReport, UsageTotals};
use gateway_shared::{Nanodollars, Provider};
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::spend::holds::HoldId;
use crate::spend::ledger::SpendState;
use crate::spend::price::Tokens;

/// How a usage row's cost was arrived at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostSource {
    /// From the provider's own token counts.
    Reported,
    /// Usage never arrived (client disconnect, stream cut, stall): from what was sent and
    /// streamed.
    Estimated,
    /// The model has no price: counted, never recorded as free.
    Unpriced,
}

impl CostSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Estimated => "estimated",
            Self::Unpriced => "unpriced",
        }
    }

    pub fn parse(text: &str) -> Option<CostSource> {
        match text {
            "reported" => Some(Self::Reported),
            "estimated" => Some(Self::Estimated),
            "unpriced" => Some(Self::Unpriced),
            _ => None,
        }
    }
}

/// A usage record's identity across replicas and restarts: the usage writer that took it (a
/// random 64-bit id drawn when that writer started) and its place in that writer's sequence
/// (from 0). Nothing needs persisting: a restarted writer draws a new instance, and two
/// draws colliding is a 2^-64 event. PostgreSQL's usage table has the pair as its primary
/// key, so a batch delivered twice (a retry after a commit whose answer was lost, a spooled
/// batch re-sent) adds nothing the second time. SQLite keeps its rowid (one writer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub instance: u64,
    pub seq: u64,
}

impl RecordId {
    /// What a record carries until the usage writer takes it.
    pub const UNASSIGNED: RecordId = RecordId {
        instance: 0,
        seq: 0,
    };
}

/// One proxied request, as the usage writer persists it. The strings are inline (a key id
/// and most model names fit in 24 bytes): a record allocates nothing of its own, and the
/// writer thread frees nothing the event loops allocated.
#[derive(Clone, Debug)]
pub struct UsageRecord {
    /// Assigned by the usage writer when it takes the record ([`RecordId::UNASSIGNED`]
    /// before).
    pub id: RecordId,
    pub key_id: CompactString,
    pub at: Timestamp,
    pub provider: Provider,
    pub model: CompactString,
    pub status: u16,
    pub tokens: Tokens,
    pub cost: Nanodollars,
    pub latency_ms: u64,
    pub source: CostSource,
    /// The provider reported more output than the request allowed (see `meter`).
    pub over_allowed: bool,
    /// The key's spend right after this request settled.
    pub spend: SpendState,
    /// The journal row of its hold, when the usage writer journaled one: deleted in the
    /// transaction that writes this record.
    pub journaled_hold: Option<HoldId>,
}

pub(super) const MS_PER_DAY: i64 = 86_400_000;

/// One (key, UTC day, provider, model) group of a batch; the day as days since 1970.
pub(super) type Group<'a> = (&'a str, i64, Provider, &'a str);

/// What a batch adds to one group of the rollup.
#[derive(Default)]
pub(super) struct Sums {
    pub day: Option<Date>,
    pub requests: u64,
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub cost: Nanodollars,
    pub estimated: u64,
    pub unpriced: u64,
}

impl Sums {
    /// The group's UTC date as the rollup stores it (`YYYY-MM-DD`).
    pub fn day_text(&self) -> String {
        self.day.map(|d| d.to_string()).unwrap_or_default()
    }
}

/// `records` summed per rollup group, saturating, in a fixed order (key, day, provider,
/// model): PostgreSQL replicas upserting the same groups take their row locks in the same
/// order, so two of them never deadlock.
pub(super) fn rollup_groups<'a>(
    records: impl IntoIterator<Item = &'a UsageRecord>,
) -> Vec<(Group<'a>, Sums)> {
    let mut groups: BatchMap<Group<'a>, Sums> = BatchMap::default();
    for record in records {
        let day = record.at.as_millisecond().div_euclid(MS_PER_DAY);
        let group = (
            record.key_id.as_str(),
            day,
            record.provider,
            record.model.as_str(),
        );
        let sums = groups.entry(group).or_default();
        if sums.day.is_none() {
            sums.day = Some(TimeZone::UTC.to_datetime(record.at).date());
        }
        sums.requests += 1;
        sums.input = sums.input.saturating_add(record.tokens.input);
        sums.output = sums.output.saturating_add(record.tokens.output);
        sums.cache_read = sums.cache_read.saturating_add(record.tokens.cache_read);
        sums.cache_write = sums.cache_write.saturating_add(record.tokens.cache_write);
        sums.cost = sums.cost.saturating_add(record.cost);
        sums.estimated += u64::from(record.source == CostSource::Estimated);
        sums.unpriced += u64::from(record.source == CostSource::Unpriced);
    }
    let mut sorted: Vec<_> = groups.into_iter().collect();
    sorted.sort_by(|((ka, da, pa, ma), _), ((kb, db, pb, mb), _)| {
        (ka, da, pa.as_str(), ma).cmp(&(kb, db, pb.as_str(), mb))
    });
    sorted
}

/// The rollup's columns that sum what a batch adds.
pub(super) const ROLLUP_SUMS: [&str; 8] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_nanos",
    "estimated_requests",
    "unpriced_requests",
];

/// Each key's spend as of its newest record in `records`. Every record carries its key's spend
/// right after it settled, but two event loops can queue theirs in the other order, so the
/// newest is the one with the most requests counted, not the last in the batch.
pub fn newest_spend(records: &[UsageRecord]) -> BatchMap<&str, &SpendState> {
    let mut newest: BatchMap<&str, &SpendState> = BatchMap::default();
    for record in records {
        let state = newest
            .entry(record.key_id.as_str())
            .or_insert(&record.spend);
        if record.spend.request_count > state.request_count {
            *state = &record.spend;
        }
    }
    newest
}

/// A count or an amount as a database integer (i64), saturating: realistic sums never come
/// near the bound (see `sqlite::usage::rollup_upsert_sql`).
pub(super) fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The rollup columns a report reads, in the order [`totals`] takes them.
pub(super) const TOTALS: &str = "requests, input_tokens, cache_read_tokens, \
    cache_write_tokens, output_tokens, cost_nanos, estimated_requests, unpriced_requests";

/// One rollup row's totals from its [`TOTALS`] columns. Rows are summed in Rust, saturating,
/// not with SQL `SUM`: a sum over rows that a provider's absurd numbers pushed to the bound
/// would make `SUM` fail with an integer overflow, and the report with it.
pub(super) fn totals(columns: [i64; 8]) -> UsageTotals {
    let n = |i: usize| u64::try_from(columns[i]).unwrap_or(0);
    UsageTotals {
        requests: n(0),
        input_tokens: n(1).saturating_add(n(2)).saturating_add(n(3)),
        output_tokens: n(4),
        cost_usd: Nanodollars(n(5)),
        estimated_requests: n(6),
        unpriced_requests: n(7),
    }
}

/// `total += more`, saturating.
fn add_totals(total: &mut UsageTotals, more: &UsageTotals) {
    total.requests = total.requests.saturating_add(more.requests);
    total.input_tokens = total.input_tokens.saturating_add(more.input_tokens);
    total.output_tokens = total.output_tokens.saturating_add(more.output_tokens);
    total.cost_usd = total.cost_usd.saturating_add(more.cost_usd);
    total.estimated_requests = total
        .estimated_requests
        .saturating_add(more.estimated_requests);
    total.unpriced_requests = total
        .unpriced_requests
        .saturating_add(more.unpriced_requests);
}

/// One rollup row as a report reads it: day (`YYYY-MM-DD`), provider, model, totals.
pub(super) type ReportRow = (String, String, String, UsageTotals);

/// Usage of `key_id` on the UTC days `from..=to`, from its rollup rows on those days: totals,
/// every day (zero where nothing was used), every model (dearest first).
pub(super) fn report(
    key_id: &str,
    from: Date,
    to: Date,
    rows: impl IntoIterator<Item = ReportRow>,
) -> anyhow::Result<UsageReport> {
    let mut by_day_rows: HashMap<String, UsageTotals> = HashMap::new();
    let mut by_model_rows: HashMap<(String, String), UsageTotals> = HashMap::new();
    for (day, provider, model, totals) in rows {
        add_totals(by_day_rows.entry(day).or_default(), &totals);
        add_totals(by_model_rows.entry((provider, model)).or_default(), &totals);
    }

    let mut by_day = Vec::new();
    let mut day = from;
    while day <= to {
        let totals = by_day_rows.remove(&day.to_string()).unwrap_or_default();
        by_day.push(DailyUsage { date: day, totals });
        match day.tomorrow() {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }

    let mut by_model = Vec::new();
    for ((provider, model), totals) in by_model_rows {
        let provider = provider
            .parse()
            .map_err(|e: String| anyhow::anyhow!("usage row: {e}"))?;
        by_model.push(ModelUsage {
            provider,
            model,
            totals,
        });
    }
    // Dearest first, then busiest, then by name.
    by_model.sort_by(|a, b| {
        b.totals
            .cost_usd
            .cmp(&a.totals.cost_usd)
            .then(b.totals.requests.cmp(&a.totals.requests))
            .then_with(|| a.model.cmp(&b.model))
            .then_with(|| a.provider.as_str().cmp(b.provider.as_str()))
    });

    let mut total = UsageTotals::default();
    for day in &by_day {
        add_totals(&mut total, &day.totals);
    }
    Ok(UsageReport {
        key_id: key_id.to_owned(),
        from,
        to,
        total,
        by_day,
        by_model,
    })
}
