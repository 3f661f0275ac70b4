//! Delivering usage batches to a shared store that may be unreachable (cluster mode, SPEC
//! §9.6): the usage writer's commit step when the store is PostgreSQL.
//!
//! One server's SQLite file is local: a failing commit is retried in place (`retry`), because
//! waiting is all that can help. A shared PostgreSQL can be away for minutes while the proxy
//! keeps serving from memory, so waiting in place would hold every record of the outage in
//! memory, and lose them all if the replica were restarted or killed meanwhile. Instead a
//! batch the store refuses for **unavailability** goes to the on-disk [`Spool`] at once, and
//! so does every batch after it while the spool is not empty (the store is known to be away;
//! each batch need not find out again). The writer comes back every [`FIRST_WAIT`] to
//! [`LONGEST_WAIT`] to deliver the spool, oldest batch first, deleting each file after its
//! commit; then new batches go straight to the store again. A batch the store refuses for
//! any other reason takes the one-server path (`retry`): retried while that can heal, else
//! row by row.
//!
//! Exactly once: a record's id is assigned before it is first sent and travels with it into
//! the spool, and the store ignores ids it already has, so a batch committed whose answer was
//! lost, or delivered again after a crash between its commit and its file's removal, adds
//! nothing. A replica restarted during the outage finds its spool at start and delivers it.
//!
//! The spooled form keeps what the shared store writes: the record's id, key, instant,
//! provider, model, status, tokens, cost, latency, source, the over-allowed flag and its hold.
//! Not the key's spend state after the request (`UsageRecord::spend`): that is one replica's
//! view, which PostgreSQL never stores (it sums the rows themselves).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use compact_str::CompactString;
use gateway_shared::{Nanodollars, Provider};
use serde::{Deserialize, Serialize};

use super::retry::{Retry, commit_with_retry};
use super::spool::{ReadError, Spool};
use super::usage::{CostSource, RecordId, UsageRecord};
use super::{JournalChanges, Store};
use crate::health::{Health, StoreStatus};
use crate::metrics::{Metrics, StoreErrorLabels};
use crate::spend::holds::HoldId;
use crate::spend::price::Tokens;

/// The first wait before delivering the spool again after the store was found away.
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest: how late, at most, a returning store gets the spool.
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// The writer's commit step for a shared store: direct while it answers, spooled while not.
pub struct Delivery {
    store: Store,
    spool: Spool,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// The spool holds batches not yet delivered.
    backlog: bool,
    /// When to try delivering the spool next, and the wait after that one.
    next_try: Instant,
    wait: Duration,
}

impl Delivery {
    /// Opens the spool: batches a previous run left there are delivered first.
    pub fn new(
        store: Store,
        spool: Spool,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Delivery> {
        let backlog = !spool.pending()?.is_empty();
        if backlog {
            tracing::info!(spool = %spool.dir().display(), "usage batches spooled by an earlier run wait for delivery");
        }
        Ok(Delivery {
            store,
            spool,
            health,
            metrics,
            backlog,
            next_try: Instant::now(),
            wait: FIRST_WAIT,
        })
    }

    /// How soon the writer must come back, even with nothing new, to deliver the spool.
    pub fn come_back_within(&self) -> Option<Duration> {
        self.backlog
            .then(|| self.next_try.saturating_duration_since(Instant::now()))
    }

    /// Delivers what the spool holds when it is time, then `records` (possibly none).
    pub fn commit(
        &mut self,
        records: &[UsageRecord],
        journal: JournalChanges<'_>,
        stopping: &AtomicBool,
        retry: Retry,
    ) {
        if self.backlog && Instant::now() >= self.next_try {
            self.deliver_spool(journal.instance, stopping, retry);
        }
        if records.is_empty() && journal.opened.is_empty() && journal.settled.is_empty() {
            return;
        }
        if !self.backlog {
            match self.write(records, journal) {
                Ok(()) => return self.health.set_store(StoreStatus::Ok),
                Err(err) if super::is_unavailable(&err) => {
                    tracing::warn!(
                        records = records.len(),
                        error = format!("{err:#}"),
                        "the store is unreachable; spooling usage to local disk until it returns"
                    );
                    self.found_away();
                }
                Err(err) => {
                    tracing::error!(error = format!("{err:#}"), "usage batch failed");
                    return self.commit_in_place(records, journal, stopping, retry);
                }
            }
        }
        if records.is_empty() {
            // Only holds to journal: the journal is best effort while the store is away
            // (`postgres`: a replica's holds are charged by part 2's lease sweep).
            return;
        }
        match self.spool.append(
            records
                .iter()
                .map(encode)
                .collect::<Vec<_>>()
                .iter()
                .map(Vec::as_slice),
        ) {
            Ok(_) => {}
            Err(err) => {
                // The local disk failed too: keep the batch in memory, retrying the store in
                // place, rather than drop it.
                tracing::error!(
                    records = records.len(),
                    error = format!("{err:#}"),
                    "cannot spool usage; retrying the store with the batch in memory"
                );
                self.commit_in_place(records, journal, stopping, retry);
            }
        }
    }

    /// The one-server path: retried while the failure can heal, else row by row.
    fn commit_in_place(
        &self,
        records: &[UsageRecord],
        journal: JournalChanges<'_>,
        stopping: &AtomicBool,
        retry: Retry,
    ) {
        commit_with_retry(records, journal, stopping, retry, |rows, journal| {
            self.write(rows, journal)
        });
    }

    /// One commit to the store, timed and its failures counted (`/metrics`).
    fn write(&self, records: &[UsageRecord], journal: JournalChanges<'_>) -> anyhow::Result<()> {
        let started = Instant::now();
        let written = self.store.write_usage(records, journal, false);
        match &written {
            Ok(()) => self
                .metrics
                .store_write_seconds
                .observe(started.elapsed().as_secs_f64()),
            Err(err) => {
                let kind = if super::is_unavailable(err) {
                    "unavailable"
                } else {
                    "refused"
                };
                self.metrics
                    .store_errors
                    .get_or_create(&StoreErrorLabels {
                        operation: "usage_write",
                        kind,
                    })
                    .inc();
            }
        }
        written
    }

    fn found_away(&mut self) {
        self.health.set_store(StoreStatus::Unavailable);
        if !self.backlog {
            self.wait = FIRST_WAIT;
        }
        self.backlog = true;
        self.next_try = Instant::now() + self.wait;
        self.wait = (self.wait * 2).min(LONGEST_WAIT);
    }

    /// Delivers the spooled batches, oldest first, until done or the store is away again.
    fn deliver_spool(&mut self, instance: u64, stopping: &AtomicBool, retry: Retry) {
        let files = match self.spool.pending() {
            Ok(files) => files,
            Err(err) => {
                tracing::error!(error = format!("{err:#}"), "cannot list the usage spool");
                self.next_try = Instant::now() + LONGEST_WAIT;
                return;
            }
        };
        let mut delivered = 0usize;
        for file in files {
            let records = match self.spool.read(&file) {
                Ok(payloads) => match payloads.iter().map(|p| decode(p)).collect() {
                    Ok(records) => records,
                    Err(err) => {
                        // Whole on disk, but not this binary's to read (written by another
                        // version of gatewayd): set aside for the operator like a damaged
                        // file. Left in place it would stop every later batch for good.
                        let why = format!("{err:#}");
                        match self.spool.set_aside(&file, why) {
                            ReadError::Corrupt { set_aside, why, .. } => tracing::error!(
                                file = %file.path().display(),
                                set_aside = %set_aside.display(),
                                error = %why,
                                "usage records in a spooled batch this gatewayd cannot decode \
                                 were not delivered"
                            ),
                            ReadError::Io { .. } => {}
                        }
                        continue;
                    }
                },
                Err(err @ ReadError::Corrupt { .. }) => {
                    tracing::error!(error = %err, "usage records in a damaged spool file were not delivered");
                    continue;
                }
                Err(err) => {
                    tracing::error!(
                        error = format!("{:#}", anyhow::Error::from(err)),
                        "cannot read the usage spool"
                    );
                    self.next_try = Instant::now() + LONGEST_WAIT;
                    return;
                }
            };
            let records: Vec<UsageRecord> = records;
            // A batch spooled by an earlier run of this replica carries that run's writer
            // instance: its holds were journaled under it, and only that instance deletes
            // them (else they stay open, to be charged a second time).
            for group in records.chunk_by(|a, b| a.id.instance == b.id.instance) {
                let settled: Vec<HoldId> = group.iter().filter_map(|r| r.journaled_hold).collect();
                let journal = JournalChanges {
                    instance: group.first().map_or(instance, |r| r.id.instance),
                    opened: &[],
                    settled: &settled,
                };
                match self.write(group, journal) {
                    Ok(()) => {}
                    Err(err) if super::is_unavailable(&err) => {
                        if delivered > 0 {
                            tracing::info!(
                                records = delivered,
                                "spooled usage delivered before the store went away again"
                            );
                        }
                        self.found_away();
                        return;
                    }
                    Err(err) => {
                        tracing::error!(
                            error = format!("{err:#}"),
                            "a spooled usage batch was refused"
                        );
                        self.commit_in_place(group, journal, stopping, retry);
                    }
                }
                delivered += group.len();
            }
            if let Err(err) = self.spool.remove(&file) {
                // Delivered again next time: a no-op for the store (record ids).
                tracing::warn!(error = format!("{err:#}"), "a delivered spool file stays");
            }
        }
        self.backlog = false;
        self.wait = FIRST_WAIT;
        self.health.set_store(StoreStatus::Ok);
        tracing::info!(
            records = delivered,
            "the store is back; spooled usage delivered"
        );
    }
}

/// A usage record as the spool keeps it (see the module docs for what it leaves out).
#[derive(Serialize, Deserialize)]
struct Spooled<'a> {
    instance: u64,
    seq: u64,
    key_id: &'a str,
    at_ms: i64,
    provider: &'a str,
    model: &'a str,
    status: u16,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    cost_nanos: u64,
    latency_ms: u64,
    source: &'a str,
    over_allowed: bool,
    hold: Option<u64>,
}

fn encode(record: &UsageRecord) -> Vec<u8> {
    let spooled = Spooled {
        instance: record.id.instance,
        seq: record.id.seq,
        key_id: &record.key_id,
        at_ms: record.at.as_millisecond(),
        provider: record.provider.as_str(),
        model: &record.model,
        status: record.status,
        input: record.tokens.input,
        output: record.tokens.output,
        cache_read: record.tokens.cache_read,
        cache_write: record.tokens.cache_write,
        cost_nanos: record.cost.0,
        latency_ms: record.latency_ms,
        source: record.source.as_str(),
        over_allowed: record.over_allowed,
        hold: record.journaled_hold.map(HoldId::get),
    };
    // Serializing plain fields into a Vec cannot fail.
    serde_json::to_vec(&spooled).unwrap_or_default()
}

fn decode(bytes: &[u8]) -> anyhow::Result<UsageRecord> {
    let s: Spooled<'_> = serde_json::from_slice(bytes).context("a spooled usage record")?;
    Ok(UsageRecord {
        id: RecordId {
            instance: s.instance,
            seq: s.seq,
        },
        key_id: CompactString::from(s.key_id),
        at: jiff::Timestamp::from_millisecond(s.at_ms).context("its instant")?,
        provider: s
            .provider
            .parse::<Provider>()
            .map_err(|e| anyhow::anyhow!("its provider: {e}"))?,
        model: CompactString::from(s.model),
        status: s.status,
        tokens: Tokens {
            input: s.input,
            output: s.output,
            cache_read: s.cache_read,
            cache_write: s.cache_write,
        },
        cost: Nanodollars(s.cost_nanos),
        latency_ms: s.latency_ms,
        source: CostSource::parse(s.source).context("its cost source")?,
        over_allowed: s.over_allowed,
        spend: Default::default(),
        journaled_hold: s.hold.and_then(HoldId::new),
    })
}

#[cfg(test)]
mod faults;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::tests::record;

    #[test]
    fn a_record_comes_back_from_the_spool_as_it_went_in() {
        let mut original = record(42);
        original.journaled_hold = HoldId::new(9);
        original.over_allowed = true;
        original.source = CostSource::Estimated;
        original.tokens.cache_read = 3;
        original.tokens.cache_write = 4;
        let back = decode(&encode(&original)).expect("decode");
        assert_eq!(back.id, original.id);
        assert_eq!(back.key_id, original.key_id);
        assert_eq!(back.at, original.at);
        assert_eq!(back.provider, original.provider);
        assert_eq!(back.model, original.model);
        assert_eq!(back.status, original.status);
        assert_eq!(back.tokens, original.tokens);
        assert_eq!(back.cost, original.cost);
        assert_eq!(back.latency_ms, original.latency_ms);
        assert_eq!(back.source, original.source);
        assert_eq!(back.over_allowed, original.over_allowed);
        assert_eq!(back.journaled_hold, original.journaled_hold);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"{}", b"{\"instance\":1}", b"\xff\xfe"] {
            assert!(decode(bytes).is_err());
        }
    }
}
