//! The usage writer: the one task that turns usage records into rows, in batches.
//!
//! The request path only sends a record down a channel (never waits on SQLite). This task
//! takes whatever has queued since its last commit and writes it in one transaction, group
//! commit style: under load, batches grow and commits stay few; idle, a lone record is on disk
//! within milliseconds. The same transaction persists each key's spend counters, coalesced to
//! the latest state per key.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

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
    Record(Box<UsageRecord>),
    Flush(oneshot::Sender<()>),
}

/// The sending side, cheap to clone into every request.
#[derive(Clone)]
pub struct UsageWriter {
    tx: mpsc::UnboundedSender<Message>,
    depth: Arc<AtomicUsize>,
}

impl UsageWriter {
    pub fn spawn(store: Store) -> (UsageWriter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let depth = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(run(store, rx, Arc::clone(&depth)));
        (UsageWriter { tx, depth }, task)
    }

    /// Queues a record. Never blocks; if the writer is gone (shutdown), the record is logged.
    pub fn record(&self, record: UsageRecord) {
        self.depth.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = self.tx.send(Message::Record(Box::new(record))) {
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

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Message>, depth: Arc<AtomicUsize>) {
    while let Some(first) = rx.recv().await {
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        let is_flush = matches!(first, Message::Flush(_));
        take(first, &mut records, &mut flushes);
        if !is_flush {
            // Let a batch gather without waking this task once per record: sleep through
            // the window, then take everything that queued.
            tokio::time::sleep(GATHER).await;
        }
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(message) => take(message, &mut records, &mut flushes),
                Err(_) => break,
            }
        }
        if !records.is_empty() {
            let n = records.len();
            commit_with_retry(&store, records).await;
            depth.fetch_sub(n, Ordering::Relaxed);
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn take(message: Message, records: &mut Vec<UsageRecord>, flushes: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Record(record) => records.push(*record),
        Message::Flush(done) => flushes.push(done),
    }
}

async fn commit_with_retry(store: &Store, records: Vec<UsageRecord>) {
    let records = Arc::new(records);
    for attempt in 1..=3 {
        match store.write_usage(Arc::clone(&records)).await {
            Ok(()) => return,
            Err(err) => {
                tracing::error!(
                    attempt,
                    records = records.len(),
                    error = format!("{err:#}"),
                    "usage batch failed to commit"
                );
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
    }
    tracing::error!(
        records = records.len(),
        "usage batch dropped after 3 attempts"
    );
}
