//! The engine's Redis connections: one shared, and one per proxy event loop.
//!
//! Why one per loop: a multiplexed connection's reader and writer run as a task on the
//! runtime that opened it. With one connection opened on the main runtime, every admission
//! made on an event loop crossed threads twice (the command handed to the connection's
//! task, the answer handed back), each a futex wake-up and a context switch: measured at
//! c1 on the 2-core benchmark machine, the main runtime's thread took 44 % of gatewayd's
//! CPU and scheduling (`finish_task_switch`, the wake-ups' spin locks) 42 % of all samples.
//! A loop's own connection keeps the whole admission on the loop's thread, as its
//! upstream connections are (`event_loops`).
//!
//! A loop's connection is opened the first time that loop asks for one, by a task on that
//! loop; until it is open the call goes through the shared connection, which is also what
//! every call off the loops (the settler, the sweeper, the health probe, tests) uses. An
//! open that failed is tried again after a wait that doubles (1 s to 30 s), not at every
//! call. Each connection reconnects on its own (`ConnectionManager`), lazily: a loop's
//! connection may still hold the failure of an outage the probe has seen end, so a call it
//! fails with a connection error is sent again on the shared one (`RedisLimits::send`).
//!
//! A replica keeps one connection per event loop plus the shared one open to Redis (its
//! `maxclients` must allow that many per replica).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::event_loops;

/// The most event loops a daemon runs (`worker_threads` is at most this).
const MAX_LOOPS: usize = 1024;
/// The first and the longest wait before opening a loop's connection again after a failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LONGEST_RETRY: Duration = Duration::from_secs(30);

pub(super) struct Connections {
    client: redis::Client,
    config: ConnectionManagerConfig,
    timeout: Duration,
    shared: ConnectionManager,
    /// Indexed by `event_loops::current() - 1`: a slot for every loop the daemon may run
    /// (a few words each).
    loops: Box<[Slot]>,
}

#[derive(Default)]
struct Slot {
    connection: OnceLock<ConnectionManager>,
    /// A task of this loop is opening its connection (or waiting to retry).
    opening: AtomicBool,
    /// After a failed open: not before this, and the wait after the next failure.
    retry: Mutex<Option<(Instant, Duration)>>,
}

impl Connections {
    pub(super) fn new(
        client: redis::Client,
        config: ConnectionManagerConfig,
        timeout: Duration,
        shared: ConnectionManager,
    ) -> Connections {
        Connections {
            client,
            config,
            timeout,
            shared,
            loops: (0..MAX_LOOPS).map(|_| Slot::default()).collect(),
        }
    }

    /// The connection for a call made on the calling thread: its event loop's own when it
    /// is open (`true`), else the shared one (opening the loop's in the background).
    pub(super) fn here(self: &Arc<Self>) -> (ConnectionManager, bool) {
        let index = event_loops::current();
        if index == 0 || index > MAX_LOOPS {
            return (self.shared.clone(), false);
        }
        let slot = &self.loops[index - 1];
        if let Some(connection) = slot.connection.get() {
            return (connection.clone(), true);
        }
        let due = slot
            .retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|(at, _)| at <= Instant::now());
        if due && !slot.opening.swap(true, Ordering::AcqRel) {
            // Spawned from the loop's thread: the task, and the connection's own task, run on
            // this loop's runtime.
            let this = Arc::clone(self);
            tokio::spawn(async move { this.open(index).await });
        }
        (self.shared.clone(), false)
    }

    /// The shared connection, for calls that are not a request's.
    pub(super) fn shared(&self) -> ConnectionManager {
        self.shared.clone()
    }

    async fn open(&self, index: usize) {
        let slot = &self.loops[index - 1];
        let opened = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), self.config.clone()),
        )
        .await;
        match opened {
            Ok(Ok(connection)) => {
                let _ = slot.connection.set(connection);
                *slot.retry.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            // Redis away, slow, or refusing more clients: the shared connection serves
            // meanwhile, and a call after the wait tries again. Errors are the shared
            // connection's to report.
            Ok(Err(_)) | Err(_) => {
                let mut retry = slot.retry.lock().unwrap_or_else(|p| p.into_inner());
                let wait = retry.map_or(FIRST_RETRY, |(_, wait)| (wait * 2).min(LONGEST_RETRY));
                *retry = Some((Instant::now() + wait, wait));
                drop(retry);
                slot.opening.store(false, Ordering::Release);
            }
        }
    }
}
