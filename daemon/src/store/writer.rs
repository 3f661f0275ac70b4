//! The usage writer: the one thread that turns usage records into rows, in batches.
//!
//! The request path only sends a record down a channel (never waits on SQLite). This thread
//! takes whatever has queued since its last commit and writes it in one transaction, group
//! commit style: under load, batches grow and commits stay few; idle, a lone record is on disk
//! within milliseconds. The same transaction persists each key's spend counters, coalesced to
//! the latest state per key.
//!
//! A batch that fails to commit is kept and tried again, with growing waits, for as long as the
//! daemon runs, when the failure can heal (a locked, full or unwritable database: an operator
//! fixes it and the usage still lands); when it cannot (the database refuses the rows
//! themselves), the batch is written row by row and only the rows still refused are dropped,
//! each logged. Once shutdown has begun a failing batch gets a few more tries, then is dropped
//! with its size logged, so a broken disk cannot hang the exit.
//!
//! Each batch also keeps the holds journal (`spend::holds`, `store::holds`): in the same
//! transaction it journals the holds that were open at this batch and the one before, and
//! deletes the journal rows of the holds whose usage records it writes. When holds wait to be
//! journaled the thread comes back within [`GATHER`] even if no record arrives; idle, it
//! blocks on the channel and the first hold opened wakes it.
//!
//! A thread of its own, not a task plus the blocking pool: a batch then costs no hand-over
//! between runtime threads. (It runs at the default CPU priority: a lower one, nice 10,
//! measured no better in the benchmark, and an unprivileged thread could never raise it again
//! if the writer fell behind on a busy many-core machine.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;

use super::usage::UsageRecord;
use super::{JournalChanges, Store};
use crate::clock::Clock;
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

enum Message {
    Record(UsageRecord),
    Flush(oneshot::Sender<()>),
    /// A hold opened while the writer was idle: it has one to journal.
    Wake,
}

/// How failed commits are retried (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Retry {
    /// The first wait; each next one twice as long, up to `longest`.
    first: Duration,
    longest: Duration,
    /// Tries a failing batch still gets once shutdown has begun.
    when_stopping: u32,
}

const RETRY: Retry = Retry {
    first: Duration::from_millis(200),
    longest: Duration::from_secs(5),
    when_stopping: 3,
};

/// The sending side, cheap to clone into every request.
#[derive(Clone)]
pub struct UsageWriter {
    tx: mpsc::Sender<Message>,
    depth: Arc<AtomicUsize>,
    /// Set by [`UsageWriter::flush`], which only the shutdown path calls.
    stopping: Arc<AtomicBool>,
    /// The open holds this writer journals.
    holds: Arc<Holds>,
}

impl UsageWriter {
    /// Starts the writer thread, pinned to `cpu` when given (see `cpu_affinity`); `clock`
    /// stamps the holds it journals. It runs until every `UsageWriter` is dropped.
    pub fn spawn(
        store: Store,
        cpu: Option<usize>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<(UsageWriter, std::thread::JoinHandle<()>)> {
        Self::spawn_with(store, cpu, clock, RETRY)
    }

    fn spawn_with(
        store: Store,
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
        };
        let depth = Arc::clone(&writer.depth);
        let stopping = Arc::clone(&writer.stopping);
        let holds = Arc::clone(&writer.holds);
        let thread = std::thread::Builder::new()
            .name("gatewayd-usage".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    crate::cpu_affinity::pin_current_thread(cpu, "usage writer");
                }
                run(&rx, &depth, &holds, &*clock, |records, journal| {
                    // Yield between statements only while keeping up: a batch this big means
                    // records waited, and the loops come second until the backlog is gone.
                    let yielding = records.len() <= YIELDING_BATCH_MAX;
                    commit_with_retry(records, journal, &stopping, retry, |rows, journal| {
                        store.write_usage(rows, journal, yielding)
                    });
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

/// What the writer waits for next.
enum Next {
    Message(Message),
    /// A batch interval passed with holds waiting to be journaled.
    Interval,
    /// Every sender is gone.
    Closed,
}

fn run(
    rx: &mpsc::Receiver<Message>,
    depth: &AtomicUsize,
    holds: &Holds,
    clock: &dyn Clock,
    mut commit: impl FnMut(&[UsageRecord], JournalChanges<'_>),
) {
    // Some open hold is not journaled yet: come back within a batch interval.
    let mut holds_waiting = false;
    let mut opened = Vec::new();
    loop {
        let first = match next(rx, holds, holds_waiting) {
            Next::Message(message) => Some(message),
            Next::Interval => None,
            Next::Closed => return,
        };
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        if let Some(first) = first {
            let is_flush = matches!(first, Message::Flush(_));
            take(first, &mut records, &mut flushes);
            if !is_flush {
                // Let a batch gather without waking this thread once per record: sleep
                // through the window, then take everything that queued.
                std::thread::sleep(GATHER);
            }
        }
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(message) => take(message, &mut records, &mut flushes),
                Err(_) => break,
            }
        }
        // After the records: a hold closes before its record is sent, so a hold still open
        // now has its record in a later batch, never in this one.
        opened.clear();
        holds_waiting = holds.take_to_journal(clock.now(), &mut opened);
        let settled: Vec<HoldId> = records.iter().filter_map(|r| r.journaled_hold).collect();
        if !records.is_empty() || !opened.is_empty() {
            let n = records.len();
            commit(
                &records,
                JournalChanges {
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
/// most.
fn next(rx: &mpsc::Receiver<Message>, holds: &Holds, holds_waiting: bool) -> Next {
    if !holds_waiting && holds.writer_going_idle() {
        let message = rx.recv();
        holds.writer_awake();
        return message.map_or(Next::Closed, Next::Message);
    }
    match rx.recv_timeout(GATHER) {
        Ok(message) => Next::Message(message),
        Err(mpsc::RecvTimeoutError::Timeout) => Next::Interval,
        Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
    }
}

fn take(message: Message, records: &mut Vec<UsageRecord>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Record(record) => records.push(record),
        Message::Flush(done) => flushes.push(done),
        Message::Wake => {}
    }
}

/// Commits `records` and `journal` with `write`, retrying as the module docs say.
fn commit_with_retry(
    records: &[UsageRecord],
    journal: JournalChanges<'_>,
    stopping: &AtomicBool,
    retry: Retry,
    mut write: impl FnMut(&[UsageRecord], JournalChanges<'_>) -> anyhow::Result<()>,
) {
    let mut wait = retry.first;
    let mut tries_while_stopping = 0;
    for attempt in 1u64.. {
        let err = match write(records, journal) {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(attempt, records = records.len(), "usage batch committed");
                }
                return;
            }
            Err(err) => err,
        };
        if !can_heal(&err) {
            tracing::error!(
                records = records.len(),
                error = format!("{err:#}"),
                "usage batch refused; writing it row by row"
            );
            return commit_row_by_row(records, journal, write);
        }
        if stopping.load(Ordering::Acquire) {
            tries_while_stopping += 1;
            if tries_while_stopping >= retry.when_stopping {
                tracing::error!(
                    records = records.len(),
                    error = format!("{err:#}"),
                    "usage batch dropped: the database still fails and the daemon is exiting"
                );
                return;
            }
        }
        tracing::error!(
            attempt,
            records = records.len(),
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            error = format!("{err:#}"),
            "usage batch failed to commit; kept for another try"
        );
        std::thread::sleep(wait);
        wait = (wait * 2).min(retry.longest);
    }
}

/// One transaction per row, each with its hold's journal row, and one for the holds to
/// journal: the rows the database accepts land, the ones it refuses are dropped, the first
/// few logged one by one and all of them counted. A dropped row's hold is still deleted: the
/// request settled, and its spend is in the key's counters.
fn commit_row_by_row(
    records: &[UsageRecord],
    journal: JournalChanges<'_>,
    mut write: impl FnMut(&[UsageRecord], JournalChanges<'_>) -> anyhow::Result<()>,
) {
    const LOGGED: usize = 5;
    if !journal.opened.is_empty() {
        let opened = JournalChanges {
            opened: journal.opened,
            settled: &[],
        };
        if let Err(err) = write(&[], opened) {
            tracing::error!(
                holds = journal.opened.len(),
                error = format!("{err:#}"),
                "open holds refused by the database; not journaled"
            );
        }
    }
    let mut dropped = 0;
    for record in records {
        let own = JournalChanges {
            opened: &[],
            settled: record.journaled_hold.as_slice(),
        };
        if let Err(err) = write(std::slice::from_ref(record), own) {
            dropped += 1;
            if dropped <= LOGGED {
                tracing::error!(
                    key_id = %record.key_id,
                    model = %record.model,
                    cost = %record.cost,
                    error = format!("{err:#}"),
                    "usage record refused by the database; dropped"
                );
            }
            if !own.settled.is_empty() {
                let _ = write(&[], own);
            }
        }
    }
    if dropped > 0 {
        tracing::error!(
            dropped,
            records = records.len(),
            "usage records refused by the database and dropped"
        );
    }
}

/// Whether waiting can fix `err`: the database was busy, locked, full, unreadable or
/// unwritable, or memory ran out. Anything else (a constraint, a schema that does not match)
/// fails the same way every time.
fn can_heal(err: &anyhow::Error) -> bool {
    use rusqlite::ErrorCode::{
        CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, FileLockingProtocolFailed, OutOfMemory,
        ReadOnly, SystemIoFailure,
    };
    match err.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
            failure.code,
            DatabaseBusy
                | DatabaseLocked
                | DiskFull
                | SystemIoFailure
                | CannotOpen
                | ReadOnly
                | OutOfMemory
                | FileLockingProtocolFailed
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spend::ledger::SpendState;
    use crate::spend::price::Tokens;
    use crate::store::usage::CostSource;
    use gateway_shared::{Nanodollars, Provider};

    fn record(i: u64) -> UsageRecord {
        UsageRecord {
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
            spend: SpendState::default(),
            journaled_hold: None,
        }
    }

    const NO_HOLDS: JournalChanges<'static> = JournalChanges {
        opened: &[],
        settled: &[],
    };

    fn clock() -> Arc<dyn Clock> {
        Arc::new(crate::clock::ManualClock::new(
            "2026-11-27T12:00:00Z".parse().expect("time"),
        ))
    }

    const FAST: Retry = Retry {
        first: Duration::from_millis(1),
        longest: Duration::from_millis(4),
        when_stopping: 3,
    };

    fn sqlite_error(code: std::ffi::c_int) -> anyhow::Error {
        anyhow::Error::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
        .context("committing usage")
    }

    fn outputs(records: &[UsageRecord]) -> Vec<u64> {
        records.iter().map(|r| r.tokens.output).collect()
    }

    #[test]
    fn a_batch_is_kept_and_retried_until_a_busy_database_takes_it() {
        let records: Vec<UsageRecord> = (0..4).map(record).collect();
        let (mut attempts, mut committed) = (0, Vec::new());
        commit_with_retry(
            &records,
            NO_HOLDS,
            &AtomicBool::new(false),
            FAST,
            |rows, _| {
                attempts += 1;
                if attempts <= 10 {
                    return Err(sqlite_error(rusqlite::ffi::SQLITE_BUSY));
                }
                committed.extend(outputs(rows));
                Ok(())
            },
        );
        assert_eq!(
            attempts, 11,
            "ten failures, well past the three tries of old"
        );
        assert_eq!(committed, [0, 1, 2, 3], "the whole batch, once");
    }

    #[test]
    fn rows_the_database_refuses_are_dropped_alone() {
        let records: Vec<UsageRecord> = (0..5).map(record).collect();
        let mut committed = Vec::new();
        commit_with_retry(
            &records,
            NO_HOLDS,
            &AtomicBool::new(false),
            FAST,
            |rows, _| {
                if rows.iter().any(|r| r.tokens.output == 2) {
                    return Err(sqlite_error(rusqlite::ffi::SQLITE_CONSTRAINT));
                }
                committed.extend(outputs(rows));
                Ok(())
            },
        );
        assert_eq!(committed, [0, 1, 3, 4]);
    }

    #[test]
    fn at_shutdown_a_failing_batch_gets_a_few_more_tries_then_is_given_up() {
        let records: Vec<UsageRecord> = (0..2).map(record).collect();
        let mut attempts = 0;
        commit_with_retry(&records, NO_HOLDS, &AtomicBool::new(true), FAST, |_, _| {
            attempts += 1;
            Err(sqlite_error(rusqlite::ffi::SQLITE_IOERR))
        });
        assert_eq!(attempts, FAST.when_stopping);
    }

    #[test]
    fn only_failures_that_waiting_can_fix_are_retried() {
        assert!(can_heal(&sqlite_error(rusqlite::ffi::SQLITE_BUSY)));
        assert!(can_heal(&sqlite_error(rusqlite::ffi::SQLITE_FULL)));
        assert!(can_heal(&sqlite_error(rusqlite::ffi::SQLITE_READONLY)));
        assert!(!can_heal(&sqlite_error(rusqlite::ffi::SQLITE_CONSTRAINT)));
        assert!(!can_heal(&sqlite_error(rusqlite::ffi::SQLITE_CORRUPT)));
        assert!(!can_heal(&anyhow::anyhow!("not from SQLite")));
    }

    #[test]
    fn the_stores_own_errors_are_told_apart() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gateway.db");
        let store = Store::open(&path).expect("store");
        let other = rusqlite::Connection::open(&path).expect("second connection");
        other
            .execute_batch("ALTER TABLE usage RENAME TO usage_elsewhere")
            .expect("rename");
        let err = store
            .write_usage(&[record(0)], NO_HOLDS, false)
            .expect_err("no usage table");
        assert!(!can_heal(&err), "a missing table does not heal: {err:#}");
        other
            .execute_batch("BEGIN IMMEDIATE; ALTER TABLE usage_elsewhere RENAME TO usage")
            .expect("locked");
        // The store waits out its busy timeout, then reports the lock.
        let err = store
            .write_usage(&[record(0)], NO_HOLDS, false)
            .expect_err("locked");
        assert!(can_heal(&err), "a lock heals: {err:#}");
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
        let id = i64::try_from(slot.id()).expect("id");
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

    #[test]
    fn a_dropped_row_still_releases_its_hold() {
        let records: Vec<UsageRecord> = (0..3)
            .map(|i| UsageRecord {
                journaled_hold: Some(10 + i),
                ..record(i)
            })
            .collect();
        let mut settled = Vec::new();
        commit_with_retry(
            &records,
            JournalChanges {
                opened: &[],
                settled: &[10, 11, 12],
            },
            &AtomicBool::new(false),
            FAST,
            |rows, journal| {
                if rows.iter().any(|r| r.tokens.output == 1) {
                    return Err(sqlite_error(rusqlite::ffi::SQLITE_CONSTRAINT));
                }
                settled.extend_from_slice(journal.settled);
                Ok(())
            },
        );
        assert_eq!(settled, [10, 11, 12], "the refused row's hold too");
    }
}
