//! Per-key spend in memory, and reservations that make the spend cap hard (SPEC §5).
//!
//! Admission is atomic per key: under the key's lock, the spend this period plus the open
//! reservations plus this request's worst case must fit under the limit, and the reservation
//! is recorded in the same critical section, so fifty concurrent requests cannot all see the
//! same headroom. A [`Reservation`] is a guard: settling consumes it, and dropping it
//! unsettled settles its estimate, so no way out of a request (error, timeout, disconnect,
//! panic) leaks headroom.
//!
//! Once its request may have reached the provider, a reservation is also a *hold* in
//! [`super::holds`], which the usage writer journals, so that a crash charges it at the next
//! start instead of forgetting it (`SpendState::charge_at`, in `state`).
//!
//! Periods roll lazily: whoever touches the state after `period_resets_at` starts the new
//! period. Nothing runs on a timer, so a daemon that was down over midnight is still right.

use std::sync::{Arc, Mutex};

use gateway_shared::{Nanodollars, SpendReset};
use jiff::Timestamp;

use crate::clock::Clock;
use crate::keys::stamp::Stamp;

use super::holds::HoldSlot;
use super::price::{Price, Tokens};
use crate::limits::cluster::SharedHold;
// The state a ledger guards has a module of its own (`state`); most code names it from here.
pub use super::state::{CountedSpend, SpendState};

/// Why a request may not spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpendRefusal {
    /// The limit is reached for the period.
    Exhausted { resets_at: Option<Timestamp> },
    /// Not reached, but the open reservations and this request's worst case do not fit.
    WouldExceed {
        resets_at: Option<Timestamp>,
        headroom: Nanodollars,
    },
}

/// What a request asks of the ledger.
#[derive(Clone, Copy, Debug)]
pub struct Ask {
    pub price: Price,
    /// Upper bound of prompt tokens (UTF-8 bytes of the request body).
    pub input_tokens_bound: u64,
    /// The request's own output limit per answer, or the model's maximum.
    pub output_tokens: u64,
    /// How many answers it asks for (OpenAI `n`, Gemini `candidateCount`), each up to
    /// `output_tokens`: at least 1.
    pub answers: u64,
    /// Clamping may lower the output limit to no fewer than this.
    pub min_output_tokens: u64,
    /// Clamp instead of refusing when the worst case does not fit.
    pub clamp: bool,
}

impl Ask {
    /// The request's worst case: its input bound and every answer's whole output limit.
    pub fn worst(&self) -> Nanodollars {
        self.input_cost()
            .saturating_add(self.output_cost(self.output_tokens))
    }

    /// The least a clamp may lower it to (the input and the fewest output tokens allowed);
    /// `None` when clamping is off.
    pub fn clamp_floor(&self) -> Option<Nanodollars> {
        self.clamp.then(|| {
            self.input_cost()
                .saturating_add(self.output_cost(self.min_output_tokens))
        })
    }

    /// The output limit that fits `headroom` (never above the request's own), and what it
    /// costs at worst.
    pub fn clamped_to(&self, headroom: Nanodollars) -> (Nanodollars, u64) {
        let input_cost = self.input_cost();
        let affordable = self
            .price
            .output_tokens_for(headroom.saturating_sub(input_cost))
            / self.answers.max(1);
        let tokens = affordable.min(self.output_tokens);
        (input_cost.saturating_add(self.output_cost(tokens)), tokens)
    }

    fn input_cost(&self) -> Nanodollars {
        let per_token = self.price.max_input_price();
        let price = Price {
            input: per_token,
            ..self.price
        };
        price.cost(&Tokens {
            input: self.input_tokens_bound,
            ..Default::default()
        })
    }

    /// The cost of `tokens` of output for each of the request's answers.
    fn output_cost(&self, tokens: u64) -> Nanodollars {
        self.price.cost(&Tokens {
            output: tokens.saturating_mul(self.answers.max(1)),
            ..Default::default()
        })
    }
}

/// The state the ledger guards, with the clock settlements read.
pub struct Ledger {
    // Std mutex: every critical section is a few arithmetic operations, never an `.await`.
    state: Mutex<Stored>,
    clock: Arc<dyn Clock>,
}

/// Where a ledger lives, which each of its reservations keeps alive: the ledger on its own,
/// or a key's runtime, which holds it inline beside the rate window (`keys::KeyRuntime`: one
/// allocation a key for both, not two; 3.2 MiB of a 100,000-key table).
pub trait LedgerHome: Send + Sync + std::fmt::Debug + 'static {
    /// Always the same ledger: a reservation settles into the one it was made against.
    fn ledger(&self) -> &Ledger;
}

impl LedgerHome for Ledger {
    fn ledger(&self) -> &Ledger {
        self
    }
}

/// Reserving against the ledger in a home: each [`Reservation`] keeps the home alive. The
/// methods are written once, here; a home only says where it is.
pub trait Reserve {
    /// The home, as a reservation keeps it.
    fn home(&self) -> Arc<dyn LedgerHome>;

    /// The ledger reserved against.
    fn reserved_in(&self) -> &Ledger;

    /// Reserves the worst case of `ask` against `limit`, or a clamped output limit when
    /// that fits and clamping is allowed. Keys without a limit are always admitted (their
    /// reservation still tracks what is in flight).
    fn reserve(
        &self,
        limit: Option<Nanodollars>,
        reset: Option<SpendReset>,
        ask: &Ask,
    ) -> Result<Reservation, SpendRefusal> {
        self.reserve_at(self.reserved_in().clock.now(), limit, reset, ask)
    }

    /// [`Reserve::reserve`] as of `now`, read from the ledger's clock by the caller (the
    /// request pipeline reads it once for all its steps).
    fn reserve_at(
        &self,
        now: Timestamp,
        limit: Option<Nanodollars>,
        reset: Option<SpendReset>,
        ask: &Ask,
    ) -> Result<Reservation, SpendRefusal> {
        let (amount, clamped_output) = self.reserved_in().update(|state| {
            state.roll(reset, now);
            let (amount, clamped_output) = admit(state, limit, ask)?;
            state.reserved = state.reserved.saturating_add(amount);
            state.open_reservations += 1;
            Ok((amount, clamped_output))
        })?;
        Ok(reservation(self.home(), ask, amount, clamped_output, None))
    }

    /// Records a reservation the cluster's shared ledger decided (`limits::cluster`): this
    /// ledger limits nothing there, it meters. `amount` is what the shared ledger holds,
    /// `clamped_output` the lowered output limit if it clamped; `shared` is settled with
    /// the reservation.
    fn reserve_decided(
        &self,
        now: Timestamp,
        reset: Option<SpendReset>,
        ask: &Ask,
        amount: Nanodollars,
        clamped_output: Option<u64>,
        shared: Option<SharedHold>,
    ) -> Reservation {
        self.reserved_in().update(|state| {
            state.roll(reset, now);
            state.reserved = state.reserved.saturating_add(amount);
            state.open_reservations += 1;
        });
        reservation(self.home(), ask, amount, clamped_output, shared)
    }
}

impl<H: LedgerHome> Reserve for Arc<H> {
    fn home(&self) -> Arc<dyn LedgerHome> {
        self.clone()
    }

    fn reserved_in(&self) -> &Ledger {
        (**self).ledger()
    }
}

/// The guard of `amount` reserved for `ask` (the ledger in `home` already counts it).
fn reservation(
    home: Arc<dyn LedgerHome>,
    ask: &Ask,
    amount: Nanodollars,
    clamped_output: Option<u64>,
    shared: Option<SharedHold>,
) -> Reservation {
    Reservation {
        home,
        amount,
        estimate: amount,
        clamped_output,
        output_tokens: clamped_output
            .unwrap_or(ask.output_tokens)
            .saturating_mul(ask.answers.max(1)),
        hold: None,
        shared,
        settled: false,
    }
}

/// `SpendState` as a ledger keeps it: the same values, its instants as 12-byte `Stamp`s,
/// because every key has a ledger and there may be 100,000 keys.
#[derive(Clone, Copy)]
struct Stored {
    total: Nanodollars,
    period: Nanodollars,
    reserved: Nanodollars,
    request_count: u64,
    open_reservations: u32,
    period_kind: Option<SpendReset>,
    period_resets_at: Stamp,
    last_used_at: Stamp,
}

impl From<SpendState> for Stored {
    fn from(state: SpendState) -> Stored {
        Stored {
            total: state.total,
            period: state.period,
            reserved: state.reserved,
            request_count: state.request_count,
            open_reservations: state.open_reservations,
            period_kind: state.period_kind,
            period_resets_at: Stamp::new(state.period_resets_at),
            last_used_at: Stamp::new(state.last_used_at),
        }
    }
}

impl From<Stored> for SpendState {
    fn from(stored: Stored) -> SpendState {
        SpendState {
            total: stored.total,
            period: stored.period,
            period_resets_at: stored.period_resets_at.get(),
            period_kind: stored.period_kind,
            reserved: stored.reserved,
            open_reservations: stored.open_reservations,
            request_count: stored.request_count,
            last_used_at: stored.last_used_at.get(),
        }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("state", &self.snapshot())
            .finish()
    }
}

impl Ledger {
    pub fn new(initial: SpendState, clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Mutex::new(initial.into()),
            clock,
        }
    }

    pub fn snapshot(&self) -> SpendState {
        SpendState::from(*self.lock())
    }

    /// The state as of now under `reset` (rolled, not persisted).
    pub fn view(&self, reset: Option<SpendReset>) -> SpendState {
        let now = self.clock.now();
        self.update(|state| {
            state.roll(reset, now);
            *state
        })
    }

    /// Starts the period of a reset that has just been set on the key (a new limit, or a
    /// different reset period) at what the key really spent in it, instead of carrying
    /// whatever the old period counted: a monthly limit added on the 2nd counts the 2nd, not
    /// a year of spend. `counted` is what the database has (the period's days and the total
    /// persisted with them); spend settled since its last usage batch is in this ledger's
    /// total and not there, so it is added. Returns the new state, to persist.
    pub fn restart_period(
        &self,
        reset: SpendReset,
        now: Timestamp,
        counted: CountedSpend,
    ) -> SpendState {
        self.update(|state| {
            state.roll(Some(reset), now);
            let unwritten = state.total.saturating_sub(counted.total);
            state.period = counted.since.saturating_add(unwritten);
            *state
        })
    }

    fn settle(&self, amount: Nanodollars, actual: Nanodollars, now: Timestamp) -> SpendState {
        self.update(|state| {
            state.reserved = state.reserved.saturating_sub(amount);
            state.open_reservations = state.open_reservations.saturating_sub(1);
            let kind = state.period_kind;
            state.roll(kind, now);
            state.total = state.total.saturating_add(actual);
            state.period = state.period.saturating_add(actual);
            state.request_count += 1;
            state.last_used_at = Some(now);
            *state
        })
    }

    /// Runs `change` on the state under the lock and keeps what it leaves.
    fn update<T>(&self, change: impl FnOnce(&mut SpendState) -> T) -> T {
        let mut stored = self.lock();
        let mut state = SpendState::from(*stored);
        let out = change(&mut state);
        *stored = state.into();
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The amount to reserve for `ask` on a state rolled to now, and the lowered output limit
/// when it had to be clamped to fit.
fn admit(
    state: &SpendState,
    limit: Option<Nanodollars>,
    ask: &Ask,
) -> Result<(Nanodollars, Option<u64>), SpendRefusal> {
    let worst = ask.worst();
    let Some(limit) = limit else {
        return Ok((worst, None));
    };
    let resets_at = state.period_resets_at;
    if state.period >= limit {
        return Err(SpendRefusal::Exhausted { resets_at });
    }
    let headroom = limit
        .saturating_sub(state.period)
        .saturating_sub(state.reserved);
    if worst <= headroom {
        return Ok((worst, None));
    }
    match ask.clamp_floor() {
        Some(floor) if floor <= headroom => {
            let (amount, tokens) = ask.clamped_to(headroom);
            Ok((amount, Some(tokens)))
        }
        _ => Err(SpendRefusal::WouldExceed {
            resets_at,
            headroom,
        }),
    }
}

/// Headroom held for one request in flight. Settle it with the actual cost; if it is dropped
/// instead, it settles its current estimate (initially the whole reservation).
#[must_use = "a reservation must be settled; dropping it settles its estimate"]
#[derive(Debug)]
pub struct Reservation {
    home: Arc<dyn LedgerHome>,
    amount: Nanodollars,
    estimate: Nanodollars,
    clamped_output: Option<u64>,
    /// The output tokens reserved for: the request's limit, the model's, or the clamp, times
    /// the answers it asked for.
    output_tokens: u64,
    /// Its place among the open holds, once its request may have reached the provider. Who
    /// opens it closes it (the meter, before the settlement's usage record is sent).
    hold: Option<HoldSlot>,
    /// Its hold in the cluster's shared ledger (Redis), settled with it.
    shared: Option<SharedHold>,
    settled: bool,
}

impl Reservation {
    pub fn amount(&self) -> Nanodollars {
        self.amount
    }

    /// The lowered output limit, when the request was clamped to fit.
    pub fn clamped_output(&self) -> Option<u64> {
        self.clamped_output
    }

    /// The output tokens this reservation pays for (after any clamp, every answer counted):
    /// the most the request was allowed to produce.
    pub fn output_tokens(&self) -> u64 {
        self.output_tokens
    }

    /// Its open hold, if any.
    pub fn hold(&self) -> Option<HoldSlot> {
        self.hold
    }

    /// Its hold in the cluster's shared ledger, if any.
    pub fn shared(&self) -> Option<&SharedHold> {
        self.shared.as_ref()
    }

    /// Records the hold opened for it.
    pub fn set_hold(&mut self, hold: HoldSlot) {
        self.hold = Some(hold);
    }

    /// Its open hold, to close.
    pub fn take_hold(&mut self) -> Option<HoldSlot> {
        self.hold.take()
    }

    /// What to settle if this reservation is dropped without `settle`.
    pub fn set_estimate(&mut self, estimate: Nanodollars) {
        self.estimate = estimate;
    }

    /// Records `actual` as spent, releases the reservation, returns the key's new state.
    pub fn settle(self, actual: Nanodollars) -> SpendState {
        let now = self.home.ledger().clock.now();
        self.settle_at(actual, now)
    }

    /// [`Reservation::settle`] as of `now` (from the ledger's clock, read by the caller).
    pub fn settle_at(mut self, actual: Nanodollars, now: Timestamp) -> SpendState {
        self.settled = true;
        if let Some(shared) = self.shared.take() {
            shared.settle(actual);
        }
        self.home.ledger().settle(self.amount, actual, now)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            if let Some(shared) = self.shared.take() {
                shared.settle(self.estimate);
            }
            let ledger = self.home.ledger();
            ledger.settle(self.amount, self.estimate, ledger.clock.now());
        }
    }
}

#[cfg(test)]
mod tests;
