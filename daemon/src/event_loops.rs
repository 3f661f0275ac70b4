//! The proxy's event loops: one thread per core, each running a single-threaded tokio runtime,
//! and every proxy connection living its whole life on one of them (nginx's worker model).
//!
//! Why not tokio's work-stealing runtime for the data plane: a proxied request is a short
//! chain of wake-ups (client readable → provider writable → provider readable → client
//! writable). On the work-stealing runtime each of them may land on another worker, which
//! costs a futex wake-up and a context switch to hand over, workers park and unpark while
//! searching for work, and memory allocated on one thread is freed on another (contended malloc
//! arenas). Measured on the 2-core benchmark machine: ~0.3 futex calls and context switches per
//! request against ~0.05 for the bare proxy, and 15 % of the CPU idle in scheduling bubbles
//! while load was waiting. A loop per core has none of that: the connection's task, its
//! upstream connection (from the loop's own pool shard, see `proxy::upstream::pool`) and its
//! timers are all on one thread.
//!
//! The price: a loop sees only its own connections and sleeps whenever all of them wait on
//! their peers, where a work-stealing pool over all of them rarely does. Measured on the
//! benchmark's bare proxy rebuilt this way: 10–14 % less JSON throughput at c16 on 2 cores.
//! gatewayd itself on the work-stealing runtime was slower still (its workers parked and woke
//! each other ~0.25 times a request; `bench/README.md`, sixth round), so the loops stay. At
//! gatewayd's own amount of work per request the loops cost nothing measurable: the bare
//! proxy spinning 3 µs a request on the work-stealing runtime was no faster than gatewayd at
//! the same CPU per request (seventh round).
//!
//! Connections are dealt at accept time to the loop with the fewest open connections, so a
//! burst of new connections spreads evenly and long streams do not pile up on one loop. The
//! management API, the usage writer and other background tasks stay on the main runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use tokio::sync::oneshot;

use crate::cpu_affinity::{CpuPlan, pin_current_thread};

thread_local! {
    /// 1-based index of the event loop this thread runs; 0 on every other thread.
    static LOOP_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The event loop the calling thread runs (1-based), or 0 when it runs none (the main
/// runtime, tests). Per-loop state such as connection pool shards is indexed with it.
pub fn current() -> usize {
    LOOP_INDEX.with(Cell::get)
}

pub struct EventLoops {
    loops: Vec<Loop>,
}

struct Loop {
    handle: tokio::runtime::Handle,
    /// Connections currently served by this loop.
    open: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EventLoops {
    /// Starts `count` threads (at least one), each with its own runtime, I/O driver and timers,
    /// and each pinned to its CPU of `cpus` when given (see `cpu_affinity`).
    pub fn start(count: usize, cpus: Option<&CpuPlan>) -> anyhow::Result<EventLoops> {
        let mut loops = Vec::with_capacity(count.max(1));
        for index in 1..=count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a proxy event loop")?;
            let handle = runtime.handle().clone();
            runtime.spawn(heartbeat());
            let (stop, stopped) = oneshot::channel::<()>();
            let cpu = cpus.map(|plan| plan.for_loop(index));
            let thread = std::thread::Builder::new()
                .name(format!("gatewayd-loop-{index}"))
                .spawn(move || {
                    LOOP_INDEX.with(|cell| cell.set(index));
                    if let Some(cpu) = cpu {
                        pin_current_thread(cpu, "event loop");
                    }
                    // Runs spawned connections until told to stop; dropping the runtime then
                    // cancels whatever is left (the drain deadline has passed by then).
                    let _ = runtime.block_on(stopped);
                })
                .context("starting a proxy event loop thread")?;
            loops.push(Loop {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(EventLoops { loops })
    }

    /// Runs `connection` on the loop with the fewest open connections. The future is first
    /// polled on that loop's thread, so sockets it registers belong to that loop's driver.
    pub fn spawn<F>(&self, connection: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let chosen = self
            .loops
            .iter()
            .min_by_key(|l| l.open.load(Ordering::Relaxed))
            .unwrap_or_else(|| unreachable!("EventLoops::start makes at least one loop"));
        let open = Arc::clone(&chosen.open);
        open.fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(open);
        chosen.handle.spawn(async move {
            let _guard = guard;
            connection.await;
        });
    }

    /// Stops every loop (cancelling what still runs on it) and waits for the threads.
    pub fn shutdown(mut self) {
        for l in &mut self.loops {
            if let Some(stop) = l.stop.take() {
                let _ = stop.send(());
            }
        }
        for l in &mut self.loops {
            if let Some(thread) = l.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for EventLoops {
    fn drop(&mut self) {
        // Without an explicit shutdown (an error path), the loops still stop; not joined.
        for l in &mut self.loops {
            if let Some(stop) = l.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

/// Keeps the loop's next timer wake-up at most [`HEARTBEAT`] away.
///
/// tokio's timer driver wakes its own thread (an `eventfd` write, a syscall) whenever a timer
/// is registered earlier than the driver's next planned wake-up, even from the thread that
/// runs the driver. hyper arms a header-read timer for every request on a keep-alive
/// connection; on an otherwise timer-less loop each one was "earlier than never": measured
/// 0.25 `write` calls per proxied request. With a wake-up always due within half a second, a
/// request's timers (seconds away) never come first, and the loop wakes twice a second when
/// idle.
async fn heartbeat() {
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
    }
}

const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(500);

/// Counts a connection as open on its loop until its task ends or is cancelled.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens `n` connections that each report `seen()` from their loop's thread and stay open
    /// until the returned sender says `true`; the reports come back sorted.
    fn open_connections<T: Ord + Send + 'static>(
        loops: &EventLoops,
        n: usize,
        seen: fn() -> T,
    ) -> (Vec<T>, tokio::sync::watch::Sender<bool>) {
        let (release, released) = tokio::sync::watch::channel(false);
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        for _ in 0..n {
            let mut released = released.clone();
            let seen_tx = seen_tx.clone();
            loops.spawn(async move {
                let _ = seen_tx.send(seen());
                let _ = released.wait_for(|r| *r).await;
            });
        }
        let mut reports: Vec<T> = (0..n).map(|_| seen_rx.recv().unwrap()).collect();
        reports.sort_unstable();
        (reports, release)
    }

    #[test]
    fn connections_are_dealt_to_the_least_busy_loop_and_run_on_its_thread() {
        let loops = EventLoops::start(2, None).unwrap();
        let (indexes, release) = open_connections(&loops, 4, current);
        assert_eq!(indexes, [1, 1, 2, 2], "four open connections, two per loop");
        assert_eq!(current(), 0, "the test thread runs no loop");
        release.send(true).unwrap();
        loops.shutdown();
    }

    #[test]
    fn with_a_cpu_plan_each_loop_runs_on_its_own_cpu_only() {
        let plan = CpuPlan::of_current_thread().expect("the test process has CPUs");
        let loops = EventLoops::start(2, Some(&plan)).unwrap();
        let (seen, release) = open_connections(&loops, 2, || {
            (current(), crate::cpu_affinity::current_thread_cpus())
        });
        assert_eq!(
            seen,
            [(1, vec![plan.for_loop(1)]), (2, vec![plan.for_loop(2)])]
        );
        release.send(true).unwrap();
        loops.shutdown();
    }

    #[test]
    fn a_finished_connection_no_longer_counts_as_open() {
        let loops = EventLoops::start(2, None).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        loops.spawn(async move {
            let _ = done_tx.send(());
        });
        done_rx.recv().unwrap();
        // The guard drops right after the future completes, on the loop's thread.
        for _ in 0..1000 {
            if loops
                .loops
                .iter()
                .all(|l| l.open.load(Ordering::Relaxed) == 0)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            loops
                .loops
                .iter()
                .all(|l| l.open.load(Ordering::Relaxed) == 0)
        );
        loops.shutdown();
    }

    #[test]
    fn every_loop_runs_a_heartbeat_and_nothing_else_when_idle() {
        let loops = EventLoops::start(2, None).unwrap();
        for l in &loops.loops {
            // Spawned before the loop's thread starts running; the only task of a fresh loop.
            assert_eq!(l.handle.metrics().num_alive_tasks(), 1);
        }
        loops.shutdown();
    }

    #[test]
    fn shutdown_cancels_what_still_runs() {
        let loops = EventLoops::start(1, None).unwrap();
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
        struct Notify(std::sync::mpsc::Sender<()>);
        impl Drop for Notify {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let notify = Notify(dropped_tx);
        loops.spawn(async move {
            let _notify = notify;
            std::future::pending::<()>().await;
        });
        loops.shutdown();
        dropped_rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap();
    }
}
