//! The shared limits engine of cluster mode (SPEC §9, issue #17): rate windows, spend
//! ledgers with their holds, and key versions, counted in Redis so that N replicas enforce
//! one limit, not N × the limit.
//!
//! Why Redis scripts: an admission must read and write the key's window, ledger and version
//! atomically, on one clock, in one round trip. Each operation is one Lua script (`lua/`)
//! run with EVALSHA (reloaded after NOSCRIPT, a restarted Redis having forgotten them), on
//! Redis's `TIME`, touching only the keys of one ledger owner, which share one hash tag
//! (`layout`), so Redis Cluster can run it too.
//!
//! What a replica calls, and what each costs (ARCHITECTURE.md, "The Redis limits engine"):
//! - [`RedisLimits::admit`]: one round trip (the script and the sweeper index's touch,
//!   pipelined). Version check, rate window, spend hold with the clamp rule of
//!   `spend/ledger.rs`, all or nothing; idempotent by hold id.
//! - [`RedisLimits::settle`] and [`RedisLimits::renew`]: one pipelined round trip for a
//!   batch. [`RedisLimits::revert`]: one. [`RedisLimits::restart_period`] after an edit
//!   that sets a new reset or limit.
//! - [`RedisLimits::sweep`]: holds past their lease charged their estimate, returned for
//!   their usage records. [`RedisLimits::seed`] rebuilds a lost ledger;
//!   [`RedisLimits::publish_version`] after a committed edit; [`RedisLimits::peek`] for
//!   self-service; [`RedisLimits::ping`] for health.
//!
//! Every call is bounded by the timeout given to `connect` (connection, answer, and any
//! reconnection it waits for): past it the answer is `Unavailable`, and an admission's
//! outcome unknown, resolved by retrying with the same hold id.

mod connections;
mod error;
mod layout;
mod scripts;
mod types;

#[cfg(test)]
pub(crate) mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use gateway_shared::SpendReset;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Pipeline, Value};

use crate::config::SecretUrl;
use connections::Connections;
pub use error::LimitsError;
use error::Redactor;
use layout::OwnerKeys;
use scripts::{Scripts, Window};
pub use types::{
    Admission, Finished, HoldId, MAX_EXACT, Outcome, Peek, RateInfo, SettleResult, Settlement,
    SpendAsk, Swept,
};
use types::{Reply, exact, reset_code};

/// A replica's handle on the shared limits: cheap to clone (multiplexed connections, one
/// shared and one per event loop: `connections`).
#[derive(Clone)]
pub struct RedisLimits {
    connections: Arc<Connections>,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
    timeout: Duration,
    redactor: Redactor,
    /// Moves Redis's clock for the scripts: only the engine's tests set it, so windows and
    /// periods are tested without waiting for them. Always 0 otherwise.
    offset_ms: i64,
}

/// A hold to keep open: its replica is alive and its request still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal<'a> {
    pub owner: &'a str,
    pub hold: HoldId,
    /// What the request has cost so far: the hold's estimate is raised to it.
    pub estimate: u64,
}

impl RedisLimits {
    /// Connects to `url` (multiplexed, reconnecting in the background) and loads the
    /// scripts. Keys are written under `prefix` (no `{` or `}`). `timeout` bounds every call.
    pub async fn connect(
        url: &SecretUrl,
        prefix: &str,
        timeout: Duration,
    ) -> Result<RedisLimits, LimitsError> {
        Self::connect_with(url, prefix, timeout, Window::Ring).await
    }

    async fn connect_with(
        url: &SecretUrl,
        prefix: &str,
        timeout: Duration,
        window: Window,
    ) -> Result<RedisLimits, LimitsError> {
        layout::check_prefix(prefix)?;
        let client = redis::Client::open(url.expose()).map_err(|e| {
            // The parser's message may quote a part of the URL: only its kind is kept.
            LimitsError::Unavailable(format!(
                "the Redis URL {url} cannot be used ({:?})",
                e.kind()
            ))
        })?;
        let redactor = Redactor::new(client.get_connection_info().redis_settings().password());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(500));
        let connection = match tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client.clone(), config.clone()),
        )
        .await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(redactor.error(&e)),
            Err(_) => return Err(redactor.timed_out()),
        };
        let limits = RedisLimits {
            connections: Arc::new(Connections::new(client, config, timeout, connection)),
            prefix: prefix.into(),
            scripts: Arc::new(Scripts::new(window)),
            timeout,
            redactor,
            offset_ms: 0,
        };
        limits.load_scripts().await?;
        Ok(limits)
    }

    /// One admission, one round trip. See [`Outcome`] for the answers and what the caller
    /// does with each.
    pub async fn admit(&self, admission: &Admission<'_>) -> Result<Outcome, LimitsError> {
        if admission.rate_limit == Some(0) {
            // A window of no request admits nothing (configuration refuses it before).
            return Ok(Outcome::RateLimited {
                limit: 0,
                retry_after: Duration::from_secs(60),
            });
        }
        let keys = OwnerKeys::new(&self.prefix, admission.owner)?;
        let hold = admission.hold;
        let spend = admission.spend;
        let mut invocation = self.scripts.admit.prepare_invoke();
        invocation
            .key(keys.ledger())
            .key(keys.window())
            .key(keys.hold(hold))
            .key(keys.expiries())
            .key(keys.done(hold))
            .arg(self.offset_ms)
            .arg(admission.key_id)
            .arg(admission.version)
            .arg(hold.to_string())
            .arg(admission.rate_limit.unwrap_or(0))
            .arg(u8::from(spend.is_some()))
            .arg(spend.map_or(0, |s| exact(s.limit)))
            .arg(reset_code(spend.and_then(|s| s.reset)))
            .arg(spend.map_or(0, |s| exact(s.worst)))
            .arg(
                spend
                    .and_then(|s| s.min)
                    .map_or(-1, |m| i64::try_from(exact(m)).unwrap_or(-1)),
            )
            .arg(exact(admission.estimate))
            .arg(
                u64::try_from(admission.lease.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .arg(admission.what);
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        if admission.rate_limit.is_some() || spend.is_some() || admission.estimate > 0 {
            // After the script: a sweeper that read the index before this hold existed sees
            // the score change and looks again (sweep_index.lua).
            pipe.cmd("ZINCRBY")
                .arg(layout::sweep_index(&self.prefix))
                .arg(-1)
                .arg(admission.owner)
                .ignore();
        }
        let (reply,): (Value,) = self.send(&pipe).await?;
        types::outcome(&Reply::new(reply)?)
    }

    /// Takes back an admission whose request was refused after it, or whose answer was lost
    /// (Redis timed out, and the request was answered 503): its window slot and its hold are
    /// released, free, and the id is remembered as finished for a few `lease`s, so the
    /// admission arriving late is not admitted. `false` when the hold was not open.
    pub async fn revert(
        &self,
        owner: &str,
        hold: HoldId,
        lease: Duration,
    ) -> Result<bool, LimitsError> {
        let keys = OwnerKeys::new(&self.prefix, owner)?;
        let mut invocation = self.scripts.revert.prepare_invoke();
        invocation
            .key(keys.ledger())
            .key(keys.window())
            .key(keys.hold(hold))
            .key(keys.expiries())
            .key(keys.done(hold))
            .arg(hold.to_string())
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1));
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        let (taken,): (i64,) = self.send(&pipe).await?;
        Ok(taken == 1)
    }

    /// Settles a batch of holds in one pipelined round trip. Idempotent per hold.
    pub async fn settle(
        &self,
        settlements: &[Settlement<'_>],
    ) -> Result<Vec<SettleResult>, LimitsError> {
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for settlement in settlements {
            let keys = OwnerKeys::new(&self.prefix, settlement.owner)?;
            let mut invocation = self.scripts.settle.prepare_invoke();
            invocation
                .key(keys.ledger())
                .key(keys.hold(settlement.hold))
                .key(keys.expiries())
                .key(keys.done(settlement.hold))
                .arg(self.offset_ms)
                .arg(settlement.hold.to_string())
                .arg(exact(settlement.actual))
                .arg(settlement.admitted_ms);
            pipe.invoke_script(&invocation);
        }
        let replies: Vec<Value> = self.send(&pipe).await?;
        replies
            .into_iter()
            .map(|reply| types::settle_result(&Reply::new(reply)?))
            .collect()
    }

    /// Extends the leases of open holds to `lease` from now (Redis's clock) and raises their
    /// estimates, in one pipelined round trip. Per hold: its new lease end (ms), or `None`
    /// when it is no longer open (settled, or swept: its replica was presumed gone).
    pub async fn renew(
        &self,
        renewals: &[Renewal<'_>],
        lease: Duration,
    ) -> Result<Vec<Option<u64>>, LimitsError> {
        if renewals.is_empty() {
            return Ok(Vec::new());
        }
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut pipe = redis::pipe();
        for renewal in renewals {
            let keys = OwnerKeys::new(&self.prefix, renewal.owner)?;
            let mut invocation = self.scripts.renew.prepare_invoke();
            invocation
                .key(keys.hold(renewal.hold))
                .key(keys.expiries())
                .arg(self.offset_ms)
                .arg(renewal.hold.to_string())
                .arg(exact(renewal.estimate))
                .arg(lease_ms);
            pipe.invoke_script(&invocation);
        }
        let expiries: Vec<i64> = self.send(&pipe).await?;
        Ok(expiries
            .into_iter()
            .map(|e| u64::try_from(e).ok())
            .collect())
    }

    /// Charges holds whose lease has passed their estimate (at most `limit` of them), and
    /// returns them so that the caller writes their usage records. Any replica may sweep;
    /// two sweeping at once charge each hold once (the scripts run one at a time).
    pub async fn sweep(&self, limit: usize) -> Result<Vec<Swept>, LimitsError> {
        let index = layout::sweep_index(&self.prefix);
        let now_ms = self.redis_now_ms().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(now_ms)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        let (due,): (Vec<String>,) = self.send(&pipe).await?;
        let mut swept = Vec::new();
        for pair in due.chunks(2) {
            let [owner, seen] = pair else { break };
            let budget = limit.saturating_sub(swept.len());
            if budget == 0 {
                break;
            }
            let Ok(keys) = OwnerKeys::new(&self.prefix, owner) else {
                continue;
            };
            let mut invocation = self.scripts.sweep.prepare_invoke();
            invocation
                .key(keys.ledger())
                .key(keys.expiries())
                .arg(self.offset_ms)
                .arg(keys.hold_prefix())
                .arg(keys.done_prefix())
                .arg(budget);
            let mut pipe = redis::pipe();
            pipe.invoke_script(&invocation);
            let (reply,): (Value,) = self.send(&pipe).await?;
            let reply = Reply::new(reply)?;
            let next = reply.int(0)?;
            let count = usize::try_from(reply.uint(1)?).unwrap_or(0);
            for i in 0..count {
                let at = 2 + i * 4;
                let hold = reply.text(at)?;
                swept.push(Swept {
                    owner: owner.clone(),
                    key_id: reply.text(at + 1)?,
                    hold: hold.parse().map_err(|()| {
                        LimitsError::Script(format!("a swept hold id {hold:?} unreadable"))
                    })?,
                    estimate: reply.uint(at + 2)?,
                    what: reply.text(at + 3)?,
                });
            }
            debug_assert_eq!(reply.len(), 2 + count * 4);
            let mut invocation = self.scripts.sweep_index.prepare_invoke();
            invocation.key(&index).arg(owner).arg(seen).arg(next);
            let mut pipe = redis::pipe();
            pipe.invoke_script(&invocation);
            let (_,): (i64,) = self.send(&pipe).await?;
        }
        Ok(swept)
    }

    /// Rebuilds the ledger of `owner` that Redis does not have, from the durable store: the
    /// spend of the period starting at `period_start_ms` under `reset` (what `NeedRebuild`
    /// said), and the versions of its keys. Set only if still absent; `true` when this call
    /// set it.
    pub async fn seed(
        &self,
        owner: &str,
        reset: Option<SpendReset>,
        period_start_ms: Option<u64>,
        spent: u64,
        versions: &[(&str, u64)],
    ) -> Result<bool, LimitsError> {
        self.set_ledger(false, owner, reset, period_start_ms, spent, versions)
            .await
    }

    /// Starts the period of a reset or limit an edit has just set, at what the key really
    /// spent in it (the durable store's sum, `spent`): the memory engine's
    /// `Ledger::restart_period`. Unlike [`RedisLimits::seed`] it overwrites the period;
    /// open holds stay held.
    pub async fn restart_period(
        &self,
        owner: &str,
        reset: Option<SpendReset>,
        period_start_ms: Option<u64>,
        spent: u64,
    ) -> Result<(), LimitsError> {
        self.set_ledger(true, owner, reset, period_start_ms, spent, &[])
            .await
            .map(|_| ())
    }

    async fn set_ledger(
        &self,
        force: bool,
        owner: &str,
        reset: Option<SpendReset>,
        period_start_ms: Option<u64>,
        spent: u64,
        versions: &[(&str, u64)],
    ) -> Result<bool, LimitsError> {
        let keys = OwnerKeys::new(&self.prefix, owner)?;
        let mut invocation = self.scripts.seed.prepare_invoke();
        invocation
            .key(keys.ledger())
            .arg(u8::from(force))
            .arg(reset_code(reset))
            .arg(period_start_ms.map_or(-1, |ms| i64::try_from(ms).unwrap_or(i64::MAX)))
            .arg(exact(spent));
        for (key_id, version) in versions {
            invocation.arg(*key_id).arg(*version);
        }
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        let (set,): (i64,) = self.send(&pipe).await?;
        Ok(set == 1)
    }

    /// Publishes a key's version after its change committed (set only if greater), so the
    /// very next admission on any replica with an older copy answers `Stale`. Returns the
    /// version Redis holds now.
    pub async fn publish_version(
        &self,
        owner: &str,
        key_id: &str,
        version: u64,
    ) -> Result<u64, LimitsError> {
        let keys = OwnerKeys::new(&self.prefix, owner)?;
        let mut invocation = self.scripts.publish.prepare_invoke();
        invocation.key(keys.ledger()).arg(key_id).arg(version);
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        let (stored,): (u64,) = self.send(&pipe).await?;
        Ok(stored)
    }

    /// The shared state of `owner` as self-service shows it, without changing anything.
    pub async fn peek(
        &self,
        owner: &str,
        key_id: &str,
        rate_limit: Option<u32>,
        reset: Option<SpendReset>,
    ) -> Result<Peek, LimitsError> {
        let keys = OwnerKeys::new(&self.prefix, owner)?;
        let mut invocation = self.scripts.peek.prepare_invoke();
        invocation
            .key(keys.ledger())
            .key(keys.window())
            .key(keys.expiries())
            .arg(self.offset_ms)
            .arg(key_id)
            .arg(rate_limit.unwrap_or(0))
            .arg(reset_code(reset));
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        let (reply,): (Value,) = self.send(&pipe).await?;
        types::peek(&Reply::new(reply)?, rate_limit)
    }

    /// Whether Redis answers, within the timeout.
    pub async fn ping(&self) -> Result<(), LimitsError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        let (_,): (String,) = self.send(&pipe).await?;
        Ok(())
    }

    /// Redis's clock (ms), moved by the tests' offset.
    async fn redis_now_ms(&self) -> Result<i64, LimitsError> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        let ((secs, micros),): ((i64, i64),) = self.send(&pipe).await?;
        Ok(secs * 1000 + micros / 1000 + self.offset_ms)
    }

    /// This handle with Redis's clock moved by `offset_ms` for the scripts (tests only).
    #[cfg(test)]
    fn with_offset(&self, offset_ms: i64) -> RedisLimits {
        RedisLimits {
            offset_ms,
            ..self.clone()
        }
    }

    async fn load_scripts(&self) -> Result<(), LimitsError> {
        let mut pipe = redis::pipe();
        for script in self.scripts.all() {
            pipe.load_script(script).ignore();
        }
        let mut connection = self.connections.shared();
        self.bounded(pipe.query_async::<()>(&mut connection))
            .await?
            .map_err(|e| self.redactor.error(&e))
    }

    /// Sends `pipe`; after NOSCRIPT (Redis restarted and forgot the scripts) loads them and
    /// sends it once more. Every script is safe to run twice (idempotent by hold id, or
    /// failed before writing: NOSCRIPT runs nothing).
    ///
    /// On an event loop the call goes on the loop's own connection (`connections`); if that
    /// fails with a connection error (refused, dropped, broken), it may be holding an outage
    /// the shared connection has already seen end, so the call is sent once more on the
    /// shared one (which the health probe keeps fresh). Not after a timeout: that would
    /// double the wait.
    async fn send<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, LimitsError> {
        let (connection, on_loop) = self.connections.here();
        match self.send_on(connection, pipe).await {
            Err(Failed::Connection(_)) if on_loop => self
                .send_on(self.connections.shared(), pipe)
                .await
                .map_err(|failed| failed.into_error(&self.redactor)),
            answer => answer.map_err(|failed| failed.into_error(&self.redactor)),
        }
    }

    async fn send_on<T: FromRedisValue>(
        &self,
        mut connection: ConnectionManager,
        pipe: &Pipeline,
    ) -> Result<T, Failed> {
        let lost = |e: redis::RedisError| {
            if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
                Failed::Connection(e)
            } else {
                Failed::Other(self.redactor.error(&e))
            }
        };
        match self
            .bounded(pipe.query_async::<T>(&mut connection))
            .await
            .map_err(Failed::Other)?
        {
            Ok(value) => Ok(value),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.load_scripts().await.map_err(Failed::Other)?;
                self.bounded(pipe.query_async::<T>(&mut connection))
                    .await
                    .map_err(Failed::Other)?
                    .map_err(lost)
            }
            Err(e) => Err(lost(e)),
        }
    }

    async fn bounded<F: Future>(&self, future: F) -> Result<F::Output, LimitsError> {
        tokio::time::timeout(self.timeout, future)
            .await
            .map_err(|_| self.redactor.timed_out())
    }
}

/// How a call on one connection failed: the connection itself (worth another connection),
/// or anything else (already a `LimitsError`, the password redacted).
enum Failed {
    Connection(redis::RedisError),
    Other(LimitsError),
}

impl Failed {
    fn into_error(self, redactor: &Redactor) -> LimitsError {
        match self {
            Failed::Connection(e) => redactor.error(&e),
            Failed::Other(error) => error,
        }
    }
}
