//! The usage writer: the one thread that turns usage records into rows, in batches.
//!
//! The request path only sends a record down a channel (never waits on SQLite). This thread
//! takes whatever has queued since its last commit and writes it in one transaction, group
//! commit style: under load, batches grow and commits stay few; idle, a lone record is on disk
//! within milliseconds. The same transaction persists each key's spend counters, coalesced to
//! the latest state per key.
//!
//! A thread of its own, not a task plus the blocking pool: a batch then costs no hand-over
//! between runtime threads. (It runs at the default CPU priority: a lower one, nice 10,
//! measured no better in the benchmark, and an unprivileged thread could never raise it again
//! if the writer fell behind on a busy many-core machine.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::oneshot;

use super::Store;
use super::usage::UsageRecord;

const MAX_BATCH: usize = 4000;
/// After the first record of a batch, how long to gather more: under load this turns
/// thousands of fsyncs a second into two hundred; idle, a record waits this long. Longer
/// windows make bigger batches that cost less per row (2.0 µs of CPU per row in 150-row
/// batches, 1.5 µs in 600-row ones, on the insert path alone), but each commit is then a
/// longer burst of CPU that shows in the proxy's tail latency: 20 ms took JSON p99 at c16 from
/// ~1.0 ms to ~1.6 ms for no throughput the benchmark could see.
const GATHER: Duration = Duration::from_millis(5);

enum Message {
    Record(UsageRecord),
    Flush(oneshot::Sender<()>),
}

/// The sending side, cheap to clone into every request.
#[derive(Clone)]
pub struct UsageWriter {
    tx: mpsc::Sender<Message>,
    depth: Arc<AtomicUsize>,
}

impl UsageWriter {
    /// Starts the writer thread, pinned to `cpu` when given (see `cpu_affinity`). It runs
    /// until every `UsageWriter` is dropped.
    pub fn spawn(
        store: Store,
        cpu: Option<usize>,
    ) -> anyhow::Result<(UsageWriter, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel();
        let depth = Arc::new(AtomicUsize::new(0));
        let thread_depth = Arc::clone(&depth);
        let thread = std::thread::Builder::new()
            .name("gatewayd-usage".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    crate::cpu_affinity::pin_current_thread(cpu, "usage writer");
                }
                run(&store, &rx, &thread_depth);
            })
            .context("starting the usage writer thread")?;
        Ok((UsageWriter { tx, depth }, thread))
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

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) {
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

fn run(store: &Store, rx: &mpsc::Receiver<Message>, depth: &AtomicUsize) {
    while let Ok(first) = rx.recv() {
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        let is_flush = matches!(first, Message::Flush(_));
        take(first, &mut records, &mut flushes);
        if !is_flush {
            // Let a batch gather without waking this thread once per record: sleep through
            // the window, then take everything that queued.
            std::thread::sleep(GATHER);
        }
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(message) => take(message, &mut records, &mut flushes),
                Err(_) => break,
            }
        }
        if !records.is_empty() {
            let n = records.len();
            commit_with_retry(store, &records);
            depth.fetch_sub(n, Ordering::Relaxed);
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn take(message: Message, records: &mut Vec<UsageRecord>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Record(record) => records.push(record),
        Message::Flush(done) => flushes.push(done),
    }
}

fn commit_with_retry(store: &Store, records: &[UsageRecord]) {
    for attempt in 1..=3 {
        match store.write_usage(records) {
            Ok(()) => return,
            Err(err) => {
                tracing::error!(
                    attempt,
                    records = records.len(),
                    error = format!("{err:#}"),
                    "usage batch failed to commit"
                );
                std::thread::sleep(Duration::from_millis(200 * attempt));
            }
        }
    }
    tracing::error!(
        records = records.len(),
        "usage batch dropped after 3 attempts"
    );
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
        }
    }

    #[tokio::test]
    async fn records_are_committed_by_the_writer_thread_and_flush_waits_for_them() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("gateway.db")).expect("store");
        let (writer, _thread) = UsageWriter::spawn(store.clone(), None).expect("writer");
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
}
