//! The engine's typed API: what a replica asks ([`Admission`], [`Settlement`]) and what
//! Redis answers ([`Outcome`], [`SettleResult`], [`Swept`], [`Peek`]), decoded from the
//! scripts' integer arrays here so the rest of the code never reads a raw reply.
//!
//! Amounts are nano-dollars (`u64`). Lua numbers are doubles, exact below 2^53 nd (about
//! $9M): every amount sent is saturated at [`MAX_EXACT`] first (`exact`), and the scripts
//! saturate sums there too. A limit of $9M or more therefore acts as $9,007,199.25; a worst
//! case that large is refused by any smaller limit, as it should be.

use std::fmt;
use std::time::Duration;

use gateway_shared::SpendReset;
use redis::Value;

use super::error::LimitsError;

/// The largest amount the scripts hold exactly: 2^53 − 1 nano-dollars.
pub const MAX_EXACT: u64 = (1 << 53) - 1;

/// `amount`, saturated at [`MAX_EXACT`].
pub fn exact(amount: u64) -> u64 {
    amount.min(MAX_EXACT)
}

/// A hold's id, chosen by the replica: its writer instance and a sequence (so a usage
/// record can use the same id, and a retried admission or settle is recognised).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldId {
    pub instance: u64,
    pub seq: u64,
}

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{:x}", self.instance, self.seq)
    }
}

impl std::str::FromStr for HoldId {
    type Err = ();

    fn from_str(text: &str) -> Result<HoldId, ()> {
        let (instance, seq) = text.split_once('.').ok_or(())?;
        Ok(HoldId {
            instance: u64::from_str_radix(instance, 16).map_err(|_| ())?,
            seq: u64::from_str_radix(seq, 16).map_err(|_| ())?,
        })
    }
}

/// One request's admission against everything its key limits.
#[derive(Clone, Debug)]
pub struct Admission<'a> {
    /// The ledger's owner: the key, or the first key of a rotated pair (they share one).
    pub owner: &'a str,
    pub key_id: &'a str,
    /// The version of the key the replica decided with.
    pub version: u64,
    pub hold: HoldId,
    /// Requests per rolling 60 s.
    pub rate_limit: Option<u32>,
    pub spend: Option<SpendAsk>,
    /// What the hold is charged if its replica vanishes (swept past its lease). Capped at
    /// the amount held when the key has a spend limit. A key with no limit and a zero
    /// estimate gets a version check only, no hold.
    pub estimate: u64,
    pub lease: Duration,
    /// What the request was, kept with its hold for the usage record a sweep writes (the
    /// replica's own encoding; at most a few dozen bytes).
    pub what: &'a str,
}

/// The spend limit's part of an admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpendAsk {
    pub limit: u64,
    pub reset: Option<SpendReset>,
    /// The request's worst case.
    pub worst: u64,
    /// The clamp floor (input and the fewest output tokens): `None` = no clamping.
    pub min: Option<u64>,
}

/// The rate window's answer for SPEC §4's headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Until the oldest admission in the window leaves it.
    pub reset_after: Duration,
}

/// What an admission came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted; `held` is reserved until it settles.
    Admitted {
        held: u64,
        rate: Option<RateInfo>,
        /// The lease's end, Redis's clock (ms since the epoch); 0 without a hold.
        lease_expires_ms: u64,
        /// The same hold id was admitted before: this is that answer again.
        repeated: bool,
    },
    /// Admitted with the whole headroom held: the replica lowers the output limit to fit.
    Clamped {
        headroom: u64,
        rate: Option<RateInfo>,
        lease_expires_ms: u64,
        repeated: bool,
    },
    /// 429: the window is full; a slot frees after `retry_after`.
    RateLimited { limit: u32, retry_after: Duration },
    /// 402: the period's spend reached the limit.
    SpendExhausted { resets_at_ms: Option<u64> },
    /// 402: the worst case does not fit (and no clamp does).
    SpendWouldExceed {
        headroom: u64,
        resets_at_ms: Option<u64>,
    },
    /// Redis holds a newer version of the key: reload it and retry.
    Stale { version: u64 },
    /// Redis has no ledger for the owner: sum the period from the durable store, `seed`,
    /// retry.
    NeedRebuild {
        now_ms: u64,
        period_start_ms: Option<u64>,
    },
    /// The hold id was settled, reverted or swept already.
    AlreadyFinished,
}

/// A settled request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement<'a> {
    pub owner: &'a str,
    pub hold: HoldId,
    pub actual: u64,
    /// When Redis admitted it (ms, Redis's clock: the lease's end less the lease); 0 when
    /// unknown. A hold Redis no longer has, of a ledger rebuilt after this instant, was lost
    /// with Redis's data: its cost is added to the rebuilt ledger (the durable store's sum
    /// could not include a request still running).
    pub admitted_ms: u64,
}

/// What a settle did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleResult {
    Settled,
    /// Finished before: settled (a retry), swept (charged its estimate) or reverted.
    AlreadyFinished(Finished),
    /// No such hold (never admitted, or Redis lost it: the durable store has the record).
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    Settled,
    Swept,
    Reverted,
}

/// A hold charged its estimate by the sweeper: the caller writes its usage record (id: the
/// hold id, so a settlement that reached the durable store first wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swept {
    pub owner: String,
    pub key_id: String,
    pub hold: HoldId,
    pub estimate: u64,
    /// The admission's `what`.
    pub what: String,
}

/// Self-service's view of an owner's shared state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peek {
    /// Whether Redis has the ledger (else it needs a rebuild before the next admission).
    pub seeded: bool,
    /// The key's version as Redis has it (0: none).
    pub version: u64,
    pub rate: Option<RateInfo>,
    /// The period's spend, rolled to now.
    pub spent: u64,
    pub held: u64,
    pub period_start_ms: Option<u64>,
    pub resets_at_ms: Option<u64>,
    pub open_holds: u64,
    pub now_ms: u64,
}

/// The scripts' code for a reset period.
pub(super) fn reset_code(reset: Option<SpendReset>) -> &'static str {
    match reset {
        None => "n",
        Some(SpendReset::Daily) => "d",
        Some(SpendReset::Weekly) => "w",
        Some(SpendReset::Monthly) => "m",
    }
}

/// A script's reply as integers (the scripts answer arrays of integers, and strings where
/// said).
pub(super) struct Reply {
    items: Vec<Value>,
}

impl Reply {
    pub(super) fn new(value: Value) -> Result<Reply, LimitsError> {
        match value {
            Value::Array(items) => Ok(Reply { items }),
            Value::Int(n) => Ok(Reply {
                items: vec![Value::Int(n)],
            }),
            _ => Err(LimitsError::Script("a reply that is not an array".into())),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn int(&self, at: usize) -> Result<i64, LimitsError> {
        match self.items.get(at) {
            Some(Value::Int(n)) => Ok(*n),
            _ => Err(LimitsError::Script(format!(
                "reply item {at} is not an integer"
            ))),
        }
    }

    pub(super) fn uint(&self, at: usize) -> Result<u64, LimitsError> {
        u64::try_from(self.int(at)?)
            .map_err(|_| LimitsError::Script(format!("reply item {at} is negative")))
    }

    /// An integer where −1 means none.
    pub(super) fn optional(&self, at: usize) -> Result<Option<u64>, LimitsError> {
        let n = self.int(at)?;
        Ok(u64::try_from(n).ok())
    }

    pub(super) fn text(&self, at: usize) -> Result<String, LimitsError> {
        match self.items.get(at) {
            Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone())
                .map_err(|_| LimitsError::Script(format!("reply item {at} is not UTF-8"))),
            Some(Value::SimpleString(text)) => Ok(text.clone()),
            _ => Err(LimitsError::Script(format!(
                "reply item {at} is not a string"
            ))),
        }
    }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn u32_of(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Decodes `admit.lua`'s reply.
pub(super) fn outcome(reply: &Reply) -> Result<Outcome, LimitsError> {
    Ok(match reply.int(0)? {
        1 => {
            let held = reply.uint(1)?;
            let limit = u32_of(reply.uint(3)?);
            let rate = (limit > 0).then(|| -> Result<RateInfo, LimitsError> {
                Ok(RateInfo {
                    limit,
                    remaining: u32_of(reply.uint(4)?),
                    reset_after: millis(reply.uint(5)?),
                })
            });
            let rate = rate.transpose()?;
            let lease_expires_ms = reply.uint(6)?;
            let repeated = reply.int(7)? == 1;
            if reply.int(2)? == 1 {
                Outcome::Clamped {
                    headroom: held,
                    rate,
                    lease_expires_ms,
                    repeated,
                }
            } else {
                Outcome::Admitted {
                    held,
                    rate,
                    lease_expires_ms,
                    repeated,
                }
            }
        }
        2 => Outcome::RateLimited {
            limit: u32_of(reply.uint(1)?),
            retry_after: millis(reply.uint(2)?),
        },
        3 => Outcome::SpendExhausted {
            resets_at_ms: reply.optional(1)?,
        },
        4 => Outcome::SpendWouldExceed {
            headroom: reply.uint(1)?,
            resets_at_ms: reply.optional(2)?,
        },
        5 => Outcome::Stale {
            version: reply.uint(1)?,
        },
        6 => Outcome::NeedRebuild {
            now_ms: reply.uint(1)?,
            period_start_ms: reply.optional(2)?,
        },
        7 => Outcome::AlreadyFinished,
        tag => {
            return Err(LimitsError::Script(format!(
                "unknown admission reply {tag}"
            )));
        }
    })
}

/// Decodes `settle.lua`'s reply.
pub(super) fn settle_result(reply: &Reply) -> Result<SettleResult, LimitsError> {
    Ok(match reply.int(0)? {
        1 => SettleResult::Settled,
        2 => SettleResult::AlreadyFinished(match reply.text(1)?.as_str() {
            "s" => Finished::Settled,
            "w" => Finished::Swept,
            "r" => Finished::Reverted,
            other => {
                return Err(LimitsError::Script(format!(
                    "unknown finish mark {other:?}"
                )));
            }
        }),
        3 => SettleResult::Unknown,
        tag => return Err(LimitsError::Script(format!("unknown settle reply {tag}"))),
    })
}

/// Decodes `peek.lua`'s reply for a window of `rate_limit`.
pub(super) fn peek(reply: &Reply, rate_limit: Option<u32>) -> Result<Peek, LimitsError> {
    let rate = rate_limit
        .map(|limit| -> Result<RateInfo, LimitsError> {
            let used = u32_of(reply.uint(2)?);
            Ok(RateInfo {
                limit,
                remaining: limit.saturating_sub(used),
                reset_after: millis(reply.uint(3)?),
            })
        })
        .transpose()?;
    Ok(Peek {
        seeded: reply.int(0)? == 1,
        version: reply.uint(1)?,
        rate,
        spent: reply.uint(4)?,
        held: reply.uint(5)?,
        period_start_ms: reply.optional(6)?,
        resets_at_ms: reply.optional(7)?,
        open_holds: reply.uint(8)?,
        now_ms: reply.uint(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_ids_round_trip_through_their_text() {
        let hold = HoldId {
            instance: u64::MAX,
            seq: 0,
        };
        assert_eq!(hold.to_string().parse::<HoldId>(), Ok(hold));
        assert!("x.1".parse::<HoldId>().is_err());
        assert!("12".parse::<HoldId>().is_err());
    }

    #[test]
    fn amounts_saturate_where_doubles_stop_being_exact() {
        assert_eq!(exact(1 << 60), MAX_EXACT);
        assert_eq!(exact(MAX_EXACT), MAX_EXACT);
        assert_eq!(exact(5), 5);
        // The largest value kept is exact as a double (what Lua computes with).
        assert_eq!(MAX_EXACT as f64 as u64, MAX_EXACT);
    }
}
