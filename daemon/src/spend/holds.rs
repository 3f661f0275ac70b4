//! Open holds: the reservations of requests the provider may have, kept where the usage
//! writer can journal them, so that a `kill -9` cannot forget them (SPEC §9.4's rule for a
//! replica that vanishes, on one server: its open holds are charged their estimate).
//!
//! A reservation lives in memory; when the process dies with the request in flight, the
//! provider still bills it but the key's spend would never count it, and a crash loop could
//! spend past a cap. So once a request may have reached the provider (the upstream marks it
//! sent), its meter opens a *hold* here: what it would be charged if the process died now.
//! The usage writer reads this registry at each batch and journals, in the same transaction
//! as the batch's usage rows, the holds that were already open at its previous batch; a
//! settled hold's usage record carries the id of its journal row, and the batch that writes
//! the record deletes the row. The next start charges whatever the journal still holds.
//!
//! On the request path this is two short critical sections (open, close) on a shard of the
//! calling event loop, a copy of the key id and model into a slot whose buffers are reused,
//! and one load of a flag: no allocation once the slots are warm, no syscall, no channel
//! message. A request that opens and settles between two batches never reaches the database.
//!
//! Hand-written rather than the `slab` crate: a vacant slot keeps its strings' buffers here,
//! so reopening it copies into them instead of allocating (slab drops a removed value).

use std::num::NonZeroU64;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use compact_str::CompactString;
use gateway_shared::{Nanodollars, Provider};
use jiff::Timestamp;

/// A hold's id: unique in this process (journal rows from an earlier run are charged and
/// deleted before any request is served, so ids can start again at each start). Never 0, so
/// a usage record names its hold's row, or none, in 8 bytes.
pub type HoldId = NonZeroU64;

/// Shards: one per event loop (1-based), the rest of the threads on shard 0. More loops than
/// this share shards, which stays correct.
const SHARDS: usize = 64;
/// `id = seq << SHARD_BITS | shard`: unique across shards without a shared counter.
const SHARD_BITS: u32 = 6;

/// What an open hold is charged if the process dies with it open.
#[derive(Clone, Copy, Debug)]
pub struct HoldCharge<'a> {
    pub key_id: &'a str,
    pub provider: Provider,
    pub model: &'a str,
    /// The tokens the charge is for (the reservation's input bound and output tokens).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Nanodollars,
    /// The model has no price: the charge is recorded as unpriced, not as free.
    pub unpriced: bool,
}

/// Where an open hold is, to close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldSlot {
    shard: u32,
    index: u32,
    id: HoldId,
}

/// A hold as the journal stores it, copied out on the usage writer's thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournaledHold {
    pub id: HoldId,
    pub key_id: CompactString,
    pub provider: Provider,
    pub model: CompactString,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Nanodollars,
    pub unpriced: bool,
    /// When the writer journaled it: an instant the request was still in flight.
    pub at: Timestamp,
}

/// The registry of open holds.
pub struct Holds {
    shards: Box<[Padded<Mutex<Shard>>]>,
    /// Set by the usage writer just before it blocks with no hold left to journal, cleared
    /// by whoever wakes it: the first hold opened then asks for a wake-up (see `open`).
    writer_idle: Padded<AtomicBool>,
}

/// One shard: slots, the vacant ones listed for reuse.
#[derive(Default)]
struct Shard {
    slots: Vec<Slot>,
    vacant: Vec<u32>,
    next_seq: u64,
}

struct Slot {
    /// `None`: vacant.
    id: Option<HoldId>,
    /// The writer has seen it open at a batch: journaled at the next one if still open.
    seen: bool,
    /// The writer has journaled it: its settlement must delete the journal row.
    journaled: bool,
    key_id: CompactString,
    model: CompactString,
    provider: Provider,
    input_tokens: u64,
    output_tokens: u64,
    cost: Nanodollars,
    unpriced: bool,
}

/// Keeps each shard on a cache line (pair) of its own: the loops lock their own shards
/// concurrently.
#[repr(align(128))]
struct Padded<T>(T);

impl Default for Holds {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Holds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holds")
            .field("open", &self.open_count())
            .finish()
    }
}

impl Holds {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect(),
            writer_idle: Padded(AtomicBool::new(false)),
        }
    }

    /// Opens a hold on the calling event loop's shard. Returns where it is, and whether the
    /// usage writer is idle and must be woken to journal it (the caller sends the wake-up).
    pub fn open(&self, charge: &HoldCharge<'_>) -> (HoldSlot, bool) {
        let shard_index = crate::event_loops::current() % SHARDS;
        let slot = {
            let mut shard = self.lock(shard_index);
            shard.next_seq += 1;
            let id =
                NonZeroU64::MIN.saturating_add((shard.next_seq << SHARD_BITS) | shard_index as u64);
            let index = match shard.vacant.pop() {
                Some(index) => index,
                None => {
                    shard.slots.push(Slot::vacant());
                    u32::try_from(shard.slots.len() - 1).unwrap_or(u32::MAX)
                }
            };
            if let Some(slot) = shard.slots.get_mut(index as usize) {
                slot.fill(id, charge);
            }
            HoldSlot {
                shard: shard_index as u32,
                index,
                id,
            }
        };
        // The writer stores `true` before its last look at the shards, under their locks: if
        // that look missed this hold, this load sees the flag (see `writer_going_idle`).
        let wake = self.writer_idle.0.load(Ordering::Relaxed)
            && self.writer_idle.0.swap(false, Ordering::AcqRel);
        (slot, wake)
    }

    /// Closes a hold. Returns its id if the writer journaled it: the settlement's usage
    /// record carries it, so the batch that writes the record deletes the journal row.
    pub fn close(&self, slot: HoldSlot) -> Option<HoldId> {
        let mut shard = self.lock(slot.shard as usize);
        let open = shard
            .slots
            .get_mut(slot.index as usize)
            .filter(|s| s.id == Some(slot.id))?;
        open.id = None;
        let journaled = open.journaled.then_some(slot.id);
        shard.vacant.push(slot.index);
        journaled
    }

    /// For the usage writer, at each batch: the holds to journal now (open at its previous
    /// batch too, and not journaled yet) are appended to `out`, stamped `at`, and marked
    /// journaled; younger ones are marked seen. Returns whether some open hold is still not
    /// journaled (the writer must come back within a batch interval).
    pub fn take_to_journal(&self, at: Timestamp, out: &mut Vec<JournaledHold>) -> bool {
        let mut younger = false;
        for index in 0..self.shards.len() {
            let mut shard = self.lock(index);
            for slot in shard.slots.iter_mut().filter(|s| !s.journaled) {
                let Some(id) = slot.id else { continue };
                if slot.seen {
                    slot.journaled = true;
                    out.push(slot.journaled_at(id, at));
                } else {
                    slot.seen = true;
                    younger = true;
                }
            }
        }
        younger
    }

    /// For the usage writer, before it blocks on its channel: marks it idle, so the next hold
    /// opened wakes it, unless a hold already waits to be journaled (then it must not block;
    /// returns false).
    pub fn writer_going_idle(&self) -> bool {
        self.writer_idle.0.store(true, Ordering::SeqCst);
        let waiting = (0..self.shards.len()).any(|index| {
            self.lock(index)
                .slots
                .iter()
                .any(|s| s.id.is_some() && !s.journaled)
        });
        if waiting {
            self.writer_idle.0.store(false, Ordering::SeqCst);
        }
        !waiting
    }

    /// For the usage writer, woken: holds opened from now on need not wake it.
    pub fn writer_awake(&self) {
        self.writer_idle.0.store(false, Ordering::Relaxed);
    }

    /// Open holds, journaled or not.
    pub fn open_count(&self) -> usize {
        (0..self.shards.len())
            .map(|index| {
                let shard = self.lock(index);
                shard.slots.len() - shard.vacant.len()
            })
            .sum()
    }

    fn lock(&self, index: usize) -> std::sync::MutexGuard<'_, Shard> {
        // Std mutex: a few field copies under it, never an `.await`.
        self.shards[index % self.shards.len()]
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl HoldSlot {
    pub fn id(&self) -> HoldId {
        self.id
    }
}

impl Slot {
    fn vacant() -> Slot {
        Slot {
            id: None,
            seen: false,
            journaled: false,
            key_id: CompactString::default(),
            model: CompactString::default(),
            provider: Provider::Openai,
            input_tokens: 0,
            output_tokens: 0,
            cost: Nanodollars::ZERO,
            unpriced: false,
        }
    }

    /// Takes `charge` into this vacant slot, reusing its string buffers.
    fn fill(&mut self, id: HoldId, charge: &HoldCharge<'_>) {
        self.id = Some(id);
        self.seen = false;
        self.journaled = false;
        self.key_id.clear();
        self.key_id.push_str(charge.key_id);
        self.model.clear();
        self.model.push_str(charge.model);
        self.provider = charge.provider;
        self.input_tokens = charge.input_tokens;
        self.output_tokens = charge.output_tokens;
        self.cost = charge.cost;
        self.unpriced = charge.unpriced;
    }

    fn journaled_at(&self, id: HoldId, at: Timestamp) -> JournaledHold {
        JournaledHold {
            id,
            key_id: self.key_id.clone(),
            provider: self.provider,
            model: self.model.clone(),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost: self.cost,
            unpriced: self.unpriced,
            at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(key_id: &str, cost: u64) -> HoldCharge<'_> {
        HoldCharge {
            key_id,
            provider: Provider::Anthropic,
            model: "claude-sonnet-4-5-20250929-with-a-long-name",
            input_tokens: 400,
            output_tokens: 1000,
            cost: Nanodollars(cost),
            unpriced: false,
        }
    }

    fn at() -> Timestamp {
        "2026-11-27T12:00:00Z".parse().expect("time")
    }

    #[test]
    fn a_hold_is_journaled_at_the_second_batch_that_sees_it_open() {
        let holds = Holds::new();
        let (slot, _) = holds.open(&charge("key_a", 7));
        let mut out = Vec::new();
        assert!(holds.take_to_journal(at(), &mut out), "seen, not yet old");
        assert!(out.is_empty());
        assert!(!holds.take_to_journal(at(), &mut out), "nothing left");
        assert_eq!(
            out,
            [JournaledHold {
                id: slot.id(),
                key_id: "key_a".into(),
                provider: Provider::Anthropic,
                model: "claude-sonnet-4-5-20250929-with-a-long-name".into(),
                input_tokens: 400,
                output_tokens: 1000,
                cost: Nanodollars(7),
                unpriced: false,
                at: at(),
            }]
        );
        holds.take_to_journal(at(), &mut out);
        assert_eq!(out.len(), 1, "journaled once");
        assert_eq!(holds.close(slot), Some(slot.id()), "its row must go");
        assert_eq!(holds.open_count(), 0);
    }

    #[test]
    fn a_hold_closed_before_its_second_batch_never_reaches_the_journal() {
        let holds = Holds::new();
        let mut out = Vec::new();
        let (before, _) = holds.open(&charge("key_a", 1));
        holds.take_to_journal(at(), &mut out);
        assert_eq!(holds.close(before), None);
        let (between, _) = holds.open(&charge("key_b", 2));
        assert_eq!(holds.close(between), None);
        assert!(!holds.take_to_journal(at(), &mut out));
        assert!(out.is_empty());
        // The slot is reused, under a new id; closing the old one again changes nothing.
        let (again, _) = holds.open(&charge("key_c", 3));
        assert_ne!(again.id(), between.id());
        assert_eq!(holds.close(between), None);
        assert_eq!(holds.open_count(), 1);
    }

    #[test]
    fn ids_are_unique_across_shards_and_reuse() {
        let holds = Holds::new();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..100 {
            let (slot, _) = holds.open(&charge("key_a", 1));
            assert!(ids.insert(slot.id()));
            holds.close(slot);
        }
    }

    #[test]
    fn an_idle_writer_is_woken_by_the_first_hold_only() {
        let holds = Holds::new();
        assert!(
            holds.writer_going_idle(),
            "nothing to journal: it may block"
        );
        let (first, wake) = holds.open(&charge("key_a", 1));
        assert!(wake, "the first hold wakes it");
        let (_, wake) = holds.open(&charge("key_a", 1));
        assert!(!wake, "once");
        assert!(
            !holds.writer_going_idle(),
            "holds wait to be journaled: it must not block"
        );
        let (_, wake) = holds.open(&charge("key_a", 1));
        assert!(!wake, "not idle");
        holds.close(first);
    }
}
