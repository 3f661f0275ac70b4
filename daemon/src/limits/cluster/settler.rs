//! The replica's settler: settles the Redis holds of finished requests in batches, and
//! renews the leases of the holds still open (issue #17, docs/cluster-design.md).
//!
//! Why a task behind a channel: a request settles from its guard's `Drop` (a cancelled or
//! failed request too), which can neither await nor block, and a round trip to Redis per
//! request would double what admission costs. So [`Settler::settle`] only queues (an
//! unbounded channel: a send never waits), and the task sends whatever is queued, up to
//! `batch` settlements, in one pipelined [`RedisLimits::settle`] round trip; while that
//! round trip is out, the next batch queues.
//!
//! Failures: settle is idempotent by hold id, so a batch that failed (or whose answer was
//! lost) is sent again, with a growing wait ([`Backoff`]), for as long as the process lives:
//! a settlement is never dropped. On shutdown ([`CancellationToken`]) the task goes on
//! settling what is queued until `drain` has passed, then stops and logs what it leaves:
//! those holds stay open in Redis until their lease passes, when any replica's sweeper
//! charges them their estimate (never free).
//!
//! Renewal: the task keeps the set of this replica's open holds ([`Settler::open`] at
//! admission, removed once Redis confirmed their settlement; [`Settler::raise_estimate`]
//! for a stream that has cost more so far) and every `lease / 3` extends all their leases
//! in [`RedisLimits::renew`] calls of up to `batch` holds each, so a request running
//! longer than the lease is never swept while its replica lives. A hold whose settlement
//! is still queued is renewed too, with its actual cost as the estimate.
//!
//! Read-your-writes: [`Settler::flush`] answers once every settlement queued before it is
//! confirmed by Redis, sent at once rather than after a gather window. The key views call
//! it (bounded) before they read the shared ledger, so a view on the replica that served a
//! request counts it, as one server's does; another replica's view may lag by the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use crate::limits::redis::{
    Finished, HoldId, LimitsError, RedisLimits, Renewal, SettleResult, Settlement,
};

/// Settlements (or renewals) sent in one round trip at most.
pub const BATCH: usize = 512;

/// After a command wakes the task, how long it lets more queue before it sends them, not
/// listening meanwhile. Every request sends two commands (its hold opened, then settled)
/// from an event loop's thread; a task woken for each crossed threads twice a request (a
/// futex wake-up and a context switch each way) and sent one settlement a round trip, whose
/// script then ran in Redis just as the next request's admission arrived. Gathering makes it
/// one wake-up and one round trip per window, whatever the rate (measured at c1 on the
/// 2-core benchmark machine, bench/README "Cluster mode"). The price: a finished request's
/// hold stays counted this much longer (it holds the worst case, so a limit is never
/// exceeded by it; a request arriving meanwhile sees less headroom, as it would while the
/// settlement's round trip was out).
pub const GATHER: Duration = Duration::from_millis(2);

#[derive(Clone, Copy, Debug)]
pub struct SettlerConfig {
    /// The cluster's `hold_lease`: open holds are renewed every third of it.
    pub lease: Duration,
    pub batch: usize,
    /// How long a shutdown goes on settling what is queued.
    pub drain: Duration,
    /// After a command wakes the task, how long it gathers more before acting ([`GATHER`]).
    pub gather: Duration,
    /// The first wait after a failed round trip; doubling up to `longest_retry`.
    pub first_retry: Duration,
    pub longest_retry: Duration,
}

impl SettlerConfig {
    pub fn new(lease: Duration) -> SettlerConfig {
        SettlerConfig {
            lease,
            batch: BATCH,
            drain: Duration::from_secs(5),
            gather: GATHER,
            first_retry: Duration::from_millis(50),
            longest_retry: Duration::from_secs(5),
        }
    }

    fn renew_every(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(1))
    }
}

enum Command {
    Open {
        owner: Arc<str>,
        hold: HoldId,
        estimate: u64,
    },
    Raise {
        hold: HoldId,
        estimate: u64,
    },
    Settle {
        owner: Arc<str>,
        hold: HoldId,
        actual: u64,
        admitted_ms: u64,
    },
}

/// What the settler has done, for tests and metrics.
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    settled: AtomicU64,
    failures: AtomicU64,
    renewals: AtomicU64,
    renewed: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettlerStats {
    /// Settle round trips that succeeded.
    pub batches: u64,
    /// Settlements Redis answered (settled, already finished, or unknown).
    pub settled: u64,
    /// Round trips (settle or renew) that failed and were retried.
    pub failures: u64,
    /// Renew round trips that succeeded, and the holds they renewed.
    pub renewals: u64,
    pub renewed: u64,
}

/// What a stopped settler left: settlements never confirmed by Redis, and holds opened but
/// never settled. Both are swept at their lease, charged their estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leftover {
    pub unsent: usize,
    pub open: usize,
}

/// The request path's handle: cheap to clone, and no method waits.
#[derive(Clone)]
pub struct Settler {
    commands: mpsc::UnboundedSender<Command>,
    /// Flushes go apart from the commands: the task listens for them even while it
    /// gathers commands (see [`Settler::flush`]).
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
    counters: Arc<Counters>,
}

impl Settler {
    /// Starts the settler's task. It ends when `stop` is cancelled (after draining, see the
    /// module docs) or once every handle is dropped and all is settled.
    pub fn spawn(
        redis: RedisLimits,
        config: SettlerConfig,
        stop: CancellationToken,
    ) -> (Settler, JoinHandle<Leftover>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (flushes, flush_receiver) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let task = Task {
            redis,
            config,
            counters: counters.clone(),
            open: HashMap::new(),
            pending: VecDeque::new(),
            retry_at: None,
            backoff: Backoff::new(config.first_retry, config.longest_retry),
            renew_at: Instant::now() + config.renew_every(),
            queued: 0,
            confirmed: 0,
            flushes: Vec::new(),
        };
        let handle = tokio::spawn(task.run(receiver, flush_receiver, stop));
        (
            Settler {
                commands,
                flushes,
                counters,
            },
            handle,
        )
    }

    /// A hold admitted: renewed until it settles. `estimate`: what it is charged if this
    /// replica vanishes. Called once the admission answered with a hold (a lease end above
    /// 0: a key without limits and without an estimate gets none), so the hold is in Redis.
    pub fn open(&self, owner: Arc<str>, hold: HoldId, estimate: u64) {
        self.send(
            hold,
            Command::Open {
                owner,
                hold,
                estimate,
            },
        );
    }

    /// A stream that has cost `estimate` so far: its next renewal raises the hold's
    /// estimate to it (never lowers it).
    pub fn raise_estimate(&self, hold: HoldId, estimate: u64) {
        self.send(hold, Command::Raise { hold, estimate });
    }

    /// The request finished, costing `actual`. Never waits; callable from `Drop`.
    /// `admitted_ms`: when Redis admitted it (its clock; 0 if unknown), so that a hold Redis
    /// lost with its data (restarted empty) is still charged to the rebuilt ledger.
    pub fn settle(&self, owner: Arc<str>, hold: HoldId, actual: u64, admitted_ms: u64) {
        self.send(
            hold,
            Command::Settle {
                owner,
                hold,
                actual,
                admitted_ms,
            },
        );
    }

    /// Waits until every settlement queued before this call is confirmed by Redis (sent
    /// without waiting for a gather window). Unbounded while Redis fails: callers bound it.
    /// Returns at once if the settler has stopped.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.flushes.send(done).is_ok() {
            let _ = wait.await;
        }
    }

    pub fn stats(&self) -> SettlerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SettlerStats {
            batches: read(&self.counters.batches),
            settled: read(&self.counters.settled),
            failures: read(&self.counters.failures),
            renewals: read(&self.counters.renewals),
            renewed: read(&self.counters.renewed),
        }
    }

    fn send(&self, hold: HoldId, command: Command) {
        if self.commands.send(command).is_err() {
            tracing::warn!(
                %hold,
                "the settler has stopped: this hold is swept at its lease, charged its estimate"
            );
        }
    }
}

/// An open hold of this replica's.
struct Open {
    owner: Arc<str>,
    estimate: u64,
    /// Its settlement, queued or out, not yet confirmed.
    settling: Option<u64>,
}

struct Task {
    redis: RedisLimits,
    config: SettlerConfig,
    counters: Arc<Counters>,
    open: HashMap<HoldId, Open>,
    /// Settlements to send: owner, hold, actual cost, admitted at (Redis ms).
    pending: VecDeque<(Arc<str>, HoldId, u64, u64)>,
    /// While round trips fail: no call before this.
    retry_at: Option<Instant>,
    backoff: Backoff,
    renew_at: Instant,
    /// Settlements ever queued, and ever confirmed (`pending` is sent from its front, so
    /// the first `confirmed` of the `queued` are the confirmed ones).
    queued: u64,
    confirmed: u64,
    /// Flushes waiting, each for `confirmed` to reach what was queued before it.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
        stop: CancellationToken,
    ) -> Leftover {
        let mut closed = false;
        let mut drain_until: Option<Instant> = None;
        // Commands are not listened for until then: they queue and are taken at once.
        let mut gather_until: Option<Instant> = None;
        loop {
            while let Ok(command) = commands.try_recv() {
                self.apply(command);
            }
            let now = Instant::now();
            if gather_until.is_some_and(|until| until <= now) || drain_until.is_some() {
                gather_until = None;
            }
            match drain_until {
                Some(deadline) if self.pending.is_empty() || now >= deadline => break,
                None if closed && self.pending.is_empty() => break,
                _ => {}
            }
            let ready = self.retry_at.is_none_or(|at| at <= now) && gather_until.is_none();
            // Renewals first when due: under settlements that never stop (each round trip
            // finds more queued) they would otherwise wait for ever, and a live replica's
            // long request would be swept at its lease (tested).
            if ready && drain_until.is_none() && now >= self.renew_at {
                self.renew().await;
                continue;
            }
            if ready && !self.pending.is_empty() {
                self.settle_batch(drain_until).await;
                continue;
            }
            // Gathering: nothing is due before the window ends (a settlement or a renewal
            // due meanwhile waits for it), so the only wake-up is its end.
            let wake = match gather_until {
                Some(until) => until,
                None => {
                    let retry = self.retry_at.unwrap_or(now);
                    let mut wake = now + Duration::from_secs(3600);
                    if !self.pending.is_empty() {
                        wake = wake.min(retry);
                    }
                    match drain_until {
                        Some(deadline) => wake.min(deadline),
                        None => wake.min(self.renew_at.max(retry)),
                    }
                }
            };
            tokio::select! {
                () = stop.cancelled(), if drain_until.is_none() => {
                    drain_until = Some(Instant::now() + self.config.drain);
                }
                Some(flush) = flushes.recv() => {
                    // Everything sent before the flush is in the channel now: taken, then
                    // sent at once, not after the window.
                    while let Ok(command) = commands.try_recv() {
                        self.apply(command);
                    }
                    self.flush(flush);
                    gather_until = None;
                }
                command = commands.recv(), if !closed && gather_until.is_none() => match command {
                    Some(command) => {
                        self.apply(command);
                        if !self.config.gather.is_zero() && drain_until.is_none() {
                            gather_until = Some(Instant::now() + self.config.gather);
                        }
                    }
                    None => closed = true,
                },
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        self.leftover()
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Open {
                owner,
                hold,
                estimate,
            } => {
                self.open.insert(
                    hold,
                    Open {
                        owner,
                        estimate,
                        settling: None,
                    },
                );
            }
            Command::Raise { hold, estimate } => {
                if let Some(open) = self.open.get_mut(&hold) {
                    open.estimate = open.estimate.max(estimate);
                }
            }
            Command::Settle {
                owner,
                hold,
                actual,
                admitted_ms,
            } => {
                self.open
                    .entry(hold)
                    .or_insert_with(|| Open {
                        owner: owner.clone(),
                        estimate: 0,
                        settling: None,
                    })
                    .settling = Some(actual);
                self.pending.push_back((owner, hold, actual, admitted_ms));
                self.queued += 1;
            }
        }
    }

    /// Answers `done` once every settlement queued so far is confirmed (now, if they are).
    fn flush(&mut self, done: oneshot::Sender<()>) {
        if self.confirmed >= self.queued {
            let _ = done.send(());
        } else {
            // Flushes whose callers gave up (a view bounds its wait) are not kept: while
            // Redis fails, views would otherwise pile them up until it answers.
            self.flushes.retain(|(_, waiting)| !waiting.is_closed());
            self.flushes.push((self.queued, done));
        }
    }

    /// Answers the flushes whose settlements are all confirmed.
    fn answer_flushes(&mut self) {
        let confirmed = self.confirmed;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(target, _)| *target <= confirmed);
        self.flushes = waiting;
        for (_, flush) in done {
            let _ = flush.send(());
        }
    }

    /// One round trip for up to `batch` of the queued settlements. While draining, bounded
    /// by the drain's deadline.
    async fn settle_batch(&mut self, deadline: Option<Instant>) {
        let n = self.pending.len().min(self.config.batch.max(1));
        let settlements: Vec<Settlement<'_>> = self
            .pending
            .iter()
            .take(n)
            .map(|(owner, hold, actual, admitted_ms)| Settlement {
                owner,
                hold: *hold,
                actual: *actual,
                admitted_ms: *admitted_ms,
            })
            .collect();
        let call = self.redis.settle(&settlements);
        let answer = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, call)
                .await
                .unwrap_or_else(|_| Err(LimitsError::Unavailable("the drain's deadline".into()))),
            None => call.await,
        };
        drop(settlements);
        match answer {
            Ok(results) => {
                for ((owner, hold, _, _), result) in self.pending.drain(..n).zip(results) {
                    self.open.remove(&hold);
                    match result {
                        SettleResult::Settled
                        | SettleResult::AlreadyFinished(Finished::Settled) => {}
                        SettleResult::AlreadyFinished(Finished::Swept) => tracing::info!(
                            %hold, %owner,
                            "a hold was swept (charged its estimate) before its settlement arrived"
                        ),
                        SettleResult::AlreadyFinished(Finished::Reverted) => tracing::warn!(
                            %hold, %owner, "a settlement of a reverted hold: not billed in Redis"
                        ),
                        SettleResult::Unknown => tracing::debug!(
                            %hold, %owner,
                            "a settlement of a hold Redis does not know (its data was lost)"
                        ),
                    }
                }
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
                self.counters.settled.fetch_add(n as u64, Ordering::Relaxed);
                self.confirmed += n as u64;
                self.answer_flushes();
                self.succeeded();
            }
            Err(error) => self.failed("settling a batch", &error),
        }
    }

    /// Renews every open hold, `batch` a round trip.
    async fn renew(&mut self) {
        let holds: Vec<(HoldId, Arc<str>, u64)> = self
            .open
            .iter()
            .map(|(hold, open)| {
                let estimate = open.estimate.max(open.settling.unwrap_or(0));
                (*hold, open.owner.clone(), estimate)
            })
            .collect();
        let sent = !holds.is_empty();
        for chunk in holds.chunks(self.config.batch.max(1)) {
            let renewals: Vec<Renewal<'_>> = chunk
                .iter()
                .map(|(hold, owner, estimate)| Renewal {
                    owner,
                    hold: *hold,
                    estimate: *estimate,
                })
                .collect();
            match self.redis.renew(&renewals, self.config.lease).await {
                Ok(expiries) => {
                    for ((hold, owner, _), expiry) in chunk.iter().zip(expiries) {
                        if expiry.is_some() {
                            continue;
                        }
                        // Settled meanwhile, or swept: its lease passed while this replica
                        // lived (it could not renew, Redis was away too long).
                        if self.open.get(hold).is_some_and(|o| o.settling.is_none()) {
                            tracing::warn!(
                                %hold, %owner,
                                "an open hold is gone from Redis (swept at its lease): not renewed"
                            );
                            self.open.remove(hold);
                        }
                    }
                    self.counters.renewals.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .renewed
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Err(error) => {
                    self.failed("renewing the open holds", &error);
                    return;
                }
            }
        }
        self.renew_at = Instant::now() + self.config.renew_every();
        if sent {
            self.succeeded();
        }
    }

    fn succeeded(&mut self) {
        self.retry_at = None;
        self.backoff.succeeded();
    }

    fn failed(&mut self, what: &str, error: &LimitsError) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let wait = self.backoff.failed();
        self.retry_at = Some(Instant::now() + wait);
        tracing::warn!(
            %error,
            queued = self.pending.len(),
            open = self.open.len(),
            "{what} failed; retrying in {wait:?}"
        );
    }

    fn leftover(&self) -> Leftover {
        let leftover = Leftover {
            unsent: self.pending.len(),
            open: self
                .open
                .values()
                .filter(|open| open.settling.is_none())
                .count(),
        };
        if leftover != Leftover::default() {
            tracing::warn!(
                unsent = leftover.unsent,
                open = leftover.open,
                "the settler stopped with holds not settled: they are swept at their lease, \
                 charged their estimate"
            );
        }
        leftover
    }
}
