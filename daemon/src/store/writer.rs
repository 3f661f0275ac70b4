//! The usage writer: the one thread that turns usage records into rows, in batches.
//!
//! The request path only sends a record down a channel (never waits on SQLite). This thread
//! takes whatever has queued since its last commit and writes it in one transaction, group
//! commit style: under load, batches grow and commits stay few; idle, a lone record is on disk
//! within milliseconds. The same transaction persists each key's spend counters, coalesced to
//! the latest state per key.
//!
//! A batch that fails to commit is kept and retried while the failure can heal, else written
//! row by row (`retry`).
//!
//! Each batch also keeps the holds journal (`spend::holds`, `store::holds`): in the same
//! transaction it journals the holds that were open at this batch and the one before, and
//! deletes the journal rows of the holds whose usage records it writes. When holds wait to be
//! journaled the thread comes back within [`GATHER`] even if no record arrives; idle, it
//! blocks on the channel and the first hold opened wakes it.
//!
//! Each record gets its id here, as the writer takes it (`usage::RecordId`): this writer's
//! random instance and a count from 0 ([`RecordIds`]), unless it already has one. On
//! PostgreSQL the id makes a batch delivered twice count once; the instance also tags the
//! holds this writer journals. In a cluster a request's id is drawn at its admission
//! ([`UsageWriter::next_id`]) and is also its hold's id in Redis: the settled record and the
//! record a sweeper writes for the same hold (another replica's writer, the same id) are one
//! row, whichever reaches PostgreSQL first.
//!
//! A thread of its own, not a task plus the blocking pool: a batch then costs no hand-over
//! between runtime threads. (It runs at the default CPU priority: a lower one, nice 10,
//! measured no better in the benchmark, and an unprivileged thread could never raise it again
//! if the writer fell behind on a busy many-core machine.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;

use super::delivery::Delivery;
use super::retry::{RETRY, Retry, commit_with_retry};
use super::spool::Spool;
use super::usage::{RecordId, UsageRecord};
use super::{JournalChanges, Store};
use crate::clock::Clock;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::spend::holds::{HoldCharge, HoldId, HoldSlot, Holds};

const MAX_BATCH: usize = 4000;
/// After the first record of a batch, how long to gather more: under load this turns
/// thousands of fsyncs a second into a hundred; idle, a record waits this long. Longer windows
/// make bigger batches that cost less per row (the commit, its fsync and the rollup are per
/// batch: the writer's CPU per record fell from 1.0 to 0.7 µs from 5 to 20 ms at c16), and
/// the writer wakes, and unsettles the cores it shares with the loops, less often. Each batch
/// is a longer burst of work, which is why the log insert yields between statements
/// (`usage::append_to_log`); without the yields 20 ms took JSON p99 at c16 from ~1.0 ms to
/// ~1.6 ms. Measured in nine runs each, taking turns with 5 ms and no yields: JSON throughput
/// at c16 0.82× the bare proxy's on average (0.78× before), at c64 0.90× (0.85×), p99 at c16
/// 0.59–0.70 ms (0.64–0.79); 20 ms with yields and 10 ms without did worse than this. With
/// yields limited to batches that keep up ([`YIELDING_BATCH_MAX`], which the peak RSS at c64
/// needed), three more pairs: c16 0.80× against 0.77×, c64 0.89× against 0.87×.
const GATHER: Duration = Duration::from_millis(10);

/// The largest batch written with yields between statements (`usage::append_to_log`): ~3×
/// what a 10 ms window gathers at 60k requests a second. A bigger batch means the writer fell
/// behind (a yield beside a loop that always has work is a wait: at c64 the backlog grew to
/// ~16 MiB of queued records before this limit), so it is written straight through.
const YIELDING_BATCH_MAX: usize = 2000;

#[expect(
    clippy::large_enum_variant,
    reason = "records go unboxed: a box per request would be an allocation on a loop and a \
              free on this thread (`UsageRecord`)"
)]
enum Message {
    Record(UsageRecord),
    Flush(oneshot::Sender<()>),
    /// A hold opened while the writer was idle: it has one to journal.
    Wake,
}

/// The sending side, cheap to clone into every request.
#[derive(Clone)]
pub struct UsageWriter {
    tx: mpsc::Sender<Message>,
    depth: Arc<AtomicUsize>,
    /// Set by [`UsageWriter::flush`], which only the shutdown path calls.
    stopping: Arc<AtomicBool>,
    /// The open holds this writer journals.
    holds: Arc<Holds>,
    ids: Arc<RecordIds>,
}

/// Record ids of one writer: its random instance (never 0) and a sequence, shared by the
/// writer thread and the request path (which draws a request's id at its admission).
#[derive(Debug)]
pub struct RecordIds {
    instance: u64,
    next: AtomicU64,
}

impl RecordIds {
    fn new(instance: u64) -> RecordIds {
        RecordIds {
            instance,
            next: AtomicU64::new(0),
        }
    }

    /// A new id, never handed out before by this writer.
    pub fn next(&self) -> RecordId {
        RecordId {
            instance: self.instance,
            seq: self.next.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl UsageWriter {
    /// Starts the writer thread, pinned to `cpu` when given (see `cpu_affinity`); `clock`
    /// stamps the holds it journals. It runs until every `UsageWriter` is dropped.
    pub fn spawn(
        store: Store,
        cpu: Option<usize>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<(UsageWriter, std::thread::JoinHandle<()>)> {
        Self::spawn_with(Sink::Direct(store), cpu, clock, RETRY)
    }

    /// Starts the writer for a shared store that may be unreachable: batches it cannot take
    /// wait in `spool` (see `delivery`), and `health` tells `/healthz` whether it answers.
    pub fn spawn_shared(
        store: Store,
        spool: Spool,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        cpu: Option<usize>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<(UsageWriter, std::thread::JoinHandle<()>)> {
        let delivery = Delivery::new(store, spool, health, metrics)?;
        Self::spawn_with(Sink::Shared(Box::new(delivery)), cpu, clock, RETRY)
    }

    fn spawn_with(
        mut sink: Sink,
        cpu: Option<usize>,
        clock: Arc<dyn Clock>,
        retry: Retry,
    ) -> anyhow::Result<(UsageWriter, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let writer = UsageWriter {
            tx,
            depth: Arc::new(AtomicUsize::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
            holds: Arc::new(Holds::new()),
            ids: Arc::new(RecordIds::new(new_instance()?)),
        };
        let depth = Arc::clone(&writer.depth);
        let stopping = Arc::clone(&writer.stopping);
        let holds = Arc::clone(&writer.holds);
        let ids = Arc::clone(&writer.ids);
        let thread = std::thread::Builder::new()
            .name("gatewayd-usage".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    crate::cpu_affinity::pin_current_thread(cpu, "usage writer");
                }
                run(&rx, &depth, &holds, &*clock, &ids, |records, journal| {
                    sink.commit(records, journal, &stopping, retry)
                });
            })
            .context("starting the usage writer thread")?;
        Ok((writer, thread))
    }

    /// Opens a hold for a request the provider may now have (see `spend::holds`), waking the
    /// writer if it is idle so the hold gets journaled.
    pub fn open_hold(&self, charge: &HoldCharge<'_>) -> HoldSlot {
        let (slot, wake) = self.holds.open(charge);
        if wake {
            let _ = self.tx.send(Message::Wake);
        }
        slot
    }

    /// Closes a hold, before its settlement's record is sent: the id of its journal row, if
    /// it has one, goes in that record.
    pub fn close_hold(&self, slot: HoldSlot) -> Option<HoldId> {
        self.holds.close(slot)
    }

    /// A record id for a request admitted now: its record will carry it (and, in a cluster,
    /// its hold in Redis is named by it).
    pub fn next_id(&self) -> RecordId {
        self.ids.next()
    }

    /// Holds open now.
    pub fn open_holds(&self) -> usize {
        self.holds.open_count()
    }

    /// Queues a record. Never blocks; if the writer is gone (shutdown), the record is logged.
    pub fn record(&self, record: UsageRecord) {
        self.depth.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = self.tx.send(Message::Record(record)) {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            if let Message::Record(record) = err.0 {
                tracing::error!(key_id = %record.key_id, cost = %record.cost, "usage writer stopped; record lost");
            }
        }
    }

    /// Waits until everything queued before this call is committed (or, with the database
    /// failing, given up after a few more tries: this is the shutdown path).
    pub async fn flush(&self) {
        self.stopping.store(true, Ordering::Release);
        self.sync().await;
    }

    /// Waits until everything queued before this call is committed, retrying as usual: the
    /// management API's way to read the database only after the records it knows of.
    pub async fn sync(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Records queued and not yet committed.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
impl UsageWriter {
    /// A writer without a thread or a database, and what it was sent so far: for tests of
    /// the code that records usage.
    pub(crate) fn detached() -> (UsageWriter, impl Fn() -> Vec<UsageRecord>) {
        let (tx, rx) = mpsc::channel();
        let writer = UsageWriter {
            tx,
            depth: Arc::new(AtomicUsize::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
            holds: Arc::new(Holds::new()),
            ids: Arc::new(RecordIds::new(7)),
        };
        let sent = move || {
            rx.try_iter()
                .filter_map(|message| match message {
                    Message::Record(record) => Some(record),
                    Message::Flush(_) | Message::Wake => None,
                })
                .collect()
        };
        (writer, sent)
    }

    /// The registry of open holds, to journal them by hand.
    pub(crate) fn holds(&self) -> &Holds {
        &self.holds
    }
}

/// Every sender is gone: the writer stops.
struct Closed;

/// A random writer instance, never 0: [`RecordId::UNASSIGNED`] uses it, and so do the usage
/// rows `gatewayd migrate-store` copied into PostgreSQL (`store::migrate`).
fn new_instance() -> anyhow::Result<u64> {
    loop {
        let instance = getrandom::u64().context("drawing the usage writer's instance id")?;
        if instance != 0 {
            return Ok(instance);
        }
    }
}

fn run(
    rx: &mpsc::Receiver<Message>,
    depth: &AtomicUsize,
    holds: &Holds,
    clock: &dyn Clock,
    ids: &RecordIds,
    mut commit: impl FnMut(&[UsageRecord], JournalChanges<'_>) -> Option<Duration>,
) {
    let instance = ids.instance;
    // Some open hold is not journaled yet: come back within a batch interval.
    let mut holds_waiting = false;
    // The sink has work of its own (a spool to deliver): come back within this.
    let mut backlog: Option<Duration> = commit(
        &[],
        JournalChanges {
            instance,
            opened: &[],
            settled: &[],
        },
    );
    let mut opened = Vec::new();
    loop {
        let Ok(first) = next(rx, holds, holds_waiting, backlog) else {
            return;
        };
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        if let Some(first) = first {
            let is_flush = matches!(first, Message::Flush(_));
            take(first, &mut records, &mut flushes, ids);
            if !is_flush {
                // Let a batch gather without waking this thread once per record: sleep
                // through the window, then take everything that queued.
                std::thread::sleep(GATHER);
            }
        }
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(message) => take(message, &mut records, &mut flushes, ids),
                Err(_) => break,
            }
        }
        // After the records: a hold closes before its record is sent, so a hold still open
        // now has its record in a later batch, never in this one.
        opened.clear();
        holds_waiting = holds.take_to_journal(clock.now(), &mut opened);
        let settled: Vec<HoldId> = records.iter().filter_map(|r| r.journaled_hold).collect();
        if !records.is_empty() || !opened.is_empty() || backlog.is_some() {
            let n = records.len();
            backlog = commit(
                &records,
                JournalChanges {
                    instance,
                    opened: &opened,
                    settled: &settled,
                },
            );
            depth.fetch_sub(n, Ordering::Relaxed);
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Blocks for the next message; with holds waiting to be journaled, for a batch interval at
/// most, and with a `backlog` of the sink's, for that long at most (then `None`).
fn next(
    rx: &mpsc::Receiver<Message>,
    holds: &Holds,
    holds_waiting: bool,
    backlog: Option<Duration>,
) -> Result<Option<Message>, Closed> {
    let wait = match (holds_waiting, backlog) {
        (false, None) if holds.writer_going_idle() => {
            let message = rx.recv();
            holds.writer_awake();
            return message.map(Some).map_err(|_| Closed);
        }
        (false, None) => GATHER,
        (true, None) => GATHER,
        (false, Some(backlog)) => backlog,
        (true, Some(backlog)) => backlog.min(GATHER),
    };
    match rx.recv_timeout(wait) {
        Ok(message) => Ok(Some(message)),
        Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Closed),
    }
}

/// Where the writer's batches go.
enum Sink {
    /// A local store (SQLite): retried in place while a failure can heal.
    Direct(Store),
    /// A shared store that may be away: spooled meanwhile (`delivery`).
    Shared(Box<Delivery>),
}

impl Sink {
    /// Commits a batch (possibly empty: then only the sink's own backlog) and says how soon
    /// the writer must come back even with nothing new.
    fn commit(
        &mut self,
        records: &[UsageRecord],
        journal: JournalChanges<'_>,
        stopping: &AtomicBool,
        retry: Retry,
    ) -> Option<Duration> {
        match self {
            Sink::Direct(store) => {
                if !records.is_empty() || !journal.opened.is_empty() {
                    // Yield between statements only while keeping up: a batch this big means
                    // records waited, and the loops come second until the backlog is gone.
                    let yielding = records.len() <= YIELDING_BATCH_MAX;
                    commit_with_retry(records, journal, stopping, retry, |rows, journal| {
                        store.write_usage(rows, journal, yielding)
                    });
                }
                None
            }
            Sink::Shared(delivery) => {
                delivery.commit(records, journal, stopping, retry);
                delivery.come_back_within()
            }
        }
    }
}

fn take(
    message: Message,
    records: &mut Vec<UsageRecord>,
    flushes: &mut Vec<oneshot::Sender<()>>,
    ids: &RecordIds,
) {
    match message {
        Message::Record(mut record) => {
            if record.id == RecordId::UNASSIGNED {
                record.id = ids.next();
            }
            records.push(record);
        }
        Message::Flush(done) => flushes.push(done),
        Message::Wake => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spend::ledger::SpendState;
    use crate::spend::price::Tokens;
    use crate::store::usage::CostSource;
    use gateway_shared::{Nanodollars, Provider};

    /// A usage record of key `key_w` whose output (and cost) grows with `i`; the retry
    /// policy's tests use it too.
    pub(crate) fn record(i: u64) -> UsageRecord {
        UsageRecord {
            id: RecordId {
                instance: 7,
                seq: i,
            },
            key_id: "key_w".into(),
            at: "2026-11-27T12:00:00Z".parse().expect("time"),
            provider: Provider::Openai,
            model: "gpt-4o".into(),
            status: 200,
            tokens: Tokens {
                input: 10,
                output: i,
                ..Tokens::default()
            },
            cost: Nanodollars(100 + i),
            latency_ms: 3,
            source: CostSource::Reported,
            over_allowed: false,
            spend: SpendState::default(),
            journaled_hold: None,
        }
    }

    const NO_HOLDS: JournalChanges<'static> = JournalChanges {
        instance: 7,
        opened: &[],
        settled: &[],
    };

    fn clock() -> Arc<dyn Clock> {
        Arc::new(crate::clock::ManualClock::new(
            "2026-11-27T12:00:00Z".parse().expect("time"),
        ))
    }

    #[tokio::test]
    async fn a_batch_with_an_older_spend_state_does_not_roll_the_stored_one_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gateway.db");
        let store = Store::open(&path).expect("store");
        rusqlite::Connection::open(&path)
            .expect("second connection")
            .execute_batch(
                "INSERT INTO keys (id, hash, prefix, name, allowed_providers, allowed_models, \
                 allowed_ips, created_at, updated_at) VALUES ('key_w', 'h', 'p', 'n', '[]', '[]', \
                 '[]', '2026-11-27T00:00:00Z', '2026-11-27T00:00:00Z')",
            )
            .expect("key row");
        let with_count = |count: u64| {
            let mut r = record(count);
            r.spend.request_count = count;
            r.spend.total = Nanodollars(count * 100);
            r
        };
        // Two loops settled requests 11 and 10; 11 was queued first and the batches split
        // between them.
        store
            .write_usage(&[with_count(11)], NO_HOLDS, false)
            .expect("batch");
        store
            .write_usage(&[with_count(10)], NO_HOLDS, false)
            .expect("batch");
        let counted = store
            .counted_spend("key_w".into(), "2026-11-27".parse().expect("date"))
            .await
            .expect("counted");
        assert_eq!(
            counted.total,
            Nanodollars(1100),
            "request 10 did not roll it back"
        );
        assert_eq!(
            counted.since,
            Nanodollars(100 + 11 + 100 + 10),
            "both rows counted"
        );
        let mut same_count = with_count(11).spend;
        same_count.period = Nanodollars(5);
        store
            .persist_spend("key_w".into(), same_count)
            .await
            .expect("persist");
        let period: i64 = rusqlite::Connection::open(&path)
            .expect("connection")
            .query_row("SELECT spend_period_nanos FROM keys", [], |row| row.get(0))
            .expect("read");
        assert_eq!(period, 5, "the same count, restarted, is written");
    }

    #[tokio::test]
    async fn records_are_committed_by_the_writer_thread_and_flush_waits_for_them() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("gateway.db")).expect("store");
        let (writer, _thread) = UsageWriter::spawn(store.clone(), None, clock()).expect("writer");
        for i in 0..5 {
            writer.record(record(i));
        }
        writer.flush().await;
        assert_eq!(writer.queue_depth(), 0);
        let day = "2026-11-27".parse().expect("date");
        let report = store
            .usage_report("key_w".into(), day, day)
            .await
            .expect("report");
        assert_eq!(report.total.requests, 5);
        assert_eq!(report.total.cost_usd, Nanodollars(5 * 100 + 10));
    }

    #[tokio::test]
    async fn a_lone_long_request_is_journaled_and_its_record_deletes_the_row() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gateway.db");
        let store = Store::open(&path).expect("store");
        let (writer, _thread) = UsageWriter::spawn(store.clone(), None, clock()).expect("writer");
        let conn = rusqlite::Connection::open(&path).expect("second connection");
        let journaled = || -> Vec<(i64, String, i64)> {
            conn.prepare("SELECT id, key_id, cost_nanos FROM holds")
                .expect("prepare")
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        };
        // No record arrives: the idle writer is woken by the hold and comes back for it.
        let slot = writer.open_hold(&HoldCharge {
            key_id: "key_w",
            provider: Provider::Openai,
            model: "gpt-4o",
            input_tokens: 10,
            output_tokens: 100,
            cost: Nanodollars(4321),
            unpriced: false,
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while journaled().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the open hold was never journaled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let id = i64::try_from(slot.id().get()).expect("id");
        assert_eq!(journaled(), [(id, "key_w".to_owned(), 4321)]);

        // It settles: the batch with its usage row deletes the journal row.
        let journaled_hold = writer.close_hold(slot);
        assert_eq!(journaled_hold, Some(slot.id()));
        writer.record(UsageRecord {
            journaled_hold,
            ..record(1)
        });
        writer.flush().await;
        assert!(journaled().is_empty());
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM usage", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 1);
    }
}
