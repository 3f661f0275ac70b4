//! A key table entry: a key's settings as the request path reads them, and the live state
//! (rate window, spend ledger) that outlives its edits and is shared by a rotated pair.

use std::sync::{Arc, Mutex};

use compact_str::CompactString;
use gateway_shared::api::KeyView;
use gateway_shared::state::{Lifecycle, SpendSnapshot, state_at};
use gateway_shared::{KeyHash, KeyState, Nanodollars, SpendReset};
use jiff::Timestamp;

use crate::clock::Clock;
use crate::keys::policy::Policy;
use crate::keys::record::KeyRecord;
use crate::keys::stamp::Stamp;
use crate::limits::rate::RateWindow;
use crate::spend::ledger::{Ledger, LedgerHome, SpendState};

/// A key as the request path and the management API need it: its settings, its compiled
/// restrictions, and the live state (rate window, spend ledger) that outlives edits.
#[derive(Debug)]
pub struct KeyEntry {
    /// Inline: a key id is 24 bytes (`key_` and 20 characters), which a `CompactString`
    /// holds without an allocation of its own (a `String` here was a 32-byte malloc chunk
    /// per key: 3.2 MiB of a 100,000-key table).
    pub id: CompactString,
    pub hash: KeyHash,
    pub prefix: CompactString,
    pub name: CompactString,
    /// The allowed providers, models and IPs, shared by every key with the same lists.
    pub policy: Arc<Policy>,
    pub rate_limit_rpm: Option<u32>,
    pub spend_limit: Option<Nanodollars>,
    pub spend_reset: Option<SpendReset>,
    pub(super) expires_at: Stamp,
    pub(super) created_at: Stamp,
    pub(super) updated_at: Stamp,
    pub(super) revoked_at: Stamp,
    /// The committed change this entry is (`KeyRecord::version`): the table never replaces
    /// an entry with an older one.
    pub version: u64,
    pub runtime: Arc<KeyRuntime>,
    /// Whose ledger `runtime` is when it is not this key's own: the first key of a rotated
    /// chain, which a cluster's shared ledger in Redis is named after ([`KeyEntry::owner`]).
    /// `None` for every key that was never rotated from another: no allocation, and one
    /// pointer, which fits in the slack of the entry's own allocation (an owner inline in
    /// the runtime moved the runtime from a 48-byte to an 80-byte chunk: a 100,000-key
    /// table's idle RSS went from 58.4 to 65.1 MiB with it, bisected to 8b6b6f9).
    owner: Option<Arc<CompactString>>,
}

/// A key's live state as a new entry takes it over: the runtime and whose ledger it is.
/// The only way to give an entry a runtime, so an entry that shares another's runtime
/// always names the same owner.
#[derive(Clone)]
pub struct Live {
    runtime: Arc<KeyRuntime>,
    owner: Option<Arc<CompactString>>,
}

impl Live {
    /// A key's own new state: it owns its ledger.
    pub fn fresh(record: &KeyRecord, clock: Arc<dyn Clock>) -> Live {
        Live {
            runtime: Arc::new(KeyRuntime::new(record, clock)),
            owner: None,
        }
    }

    /// A rotated chain's state, loaded from the store: the ledger is `first`'s.
    pub fn chain(runtime: KeyRuntime, first: &str) -> Live {
        Live {
            runtime: Arc::new(runtime),
            owner: Some(Arc::new(first.into())),
        }
    }
}

/// Per-key state that changes on every request. Kept across edits: an edit replaces the
/// entry, never the requests already counted against it. The ledger is inline: a
/// reservation keeps the whole runtime alive (`spend::ledger::LedgerHome`), so a key costs
/// one allocation for both, not two.
#[derive(Debug)]
pub struct KeyRuntime {
    // Std mutex: held for a few comparisons per request, never across `.await`.
    pub rate: Mutex<RateWindow>,
    pub ledger: Ledger,
}

impl LedgerHome for KeyRuntime {
    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

impl KeyRuntime {
    pub(super) fn new(record: &KeyRecord, clock: Arc<dyn Clock>) -> Self {
        let initial = SpendState {
            total: record.spend_total,
            period: record.spend_period,
            period_resets_at: record.period_resets_at,
            period_kind: record.spend_reset,
            request_count: record.request_count,
            last_used_at: record.last_used_at,
            ..SpendState::default()
        };
        Self {
            rate: Mutex::new(RateWindow::default()),
            ledger: Ledger::new(initial, clock),
        }
    }
}

impl KeyEntry {
    pub(super) fn new(record: KeyRecord, policy: Arc<Policy>, live: Live) -> Self {
        // Stored only when it is another key's.
        let owner = live.owner.filter(|owner| owner.as_str() != record.id);
        KeyEntry {
            id: record.id.into(),
            hash: record.hash,
            prefix: record.prefix.into(),
            name: record.name.into(),
            policy,
            rate_limit_rpm: record.rate_limit_rpm,
            spend_limit: record.spend_limit,
            spend_reset: record.spend_reset,
            expires_at: Stamp::new(record.expires_at),
            created_at: record.created_at.into(),
            updated_at: record.updated_at.into(),
            revoked_at: Stamp::new(record.revoked_at),
            version: record.version,
            runtime: live.runtime,
            owner,
        }
    }

    /// Whose ledger this key draws on: itself, or the first key of the rotated chain it is
    /// in. A cluster's shared ledger in Redis is named after it, so every replica must
    /// name the same one.
    pub fn owner(&self) -> &str {
        self.owner
            .as_deref()
            .map_or(self.id.as_str(), CompactString::as_str)
    }

    /// Whether this entry stores an owner of its own (a key never rotated from another
    /// stores none).
    #[cfg(test)]
    pub(super) fn stores_owner(&self) -> bool {
        self.owner.is_some()
    }

    /// This key's live state, for an entry that takes it over: an edit of the key, or a
    /// successor rotated from it (which then draws on this key's owner's ledger).
    pub fn live(&self) -> Live {
        Live {
            runtime: Arc::clone(&self.runtime),
            owner: Some(
                self.owner
                    .clone()
                    .unwrap_or_else(|| Arc::new(self.id.as_str().into())),
            ),
        }
    }

    /// Live spend, rolled to the current period.
    pub fn spend(&self) -> SpendState {
        self.runtime.ledger.view(self.spend_reset)
    }

    pub fn state_at(&self, now: Timestamp) -> KeyState {
        state_at(&self.lifecycle(&self.spend()), now)
    }

    /// Its state at `now` had it spent `period` in the current period (a cluster's shared
    /// ledger counts what every replica served; this entry's ledger only this replica's).
    pub fn state_with_period(&self, now: Timestamp, period: Nanodollars) -> KeyState {
        let mut lifecycle = self.lifecycle(&self.spend());
        match self.spend_reset {
            // A lifetime limit counts the total: the shared ledger's "period" is the lifetime.
            None => lifecycle.spend.total = period,
            Some(reset) => {
                lifecycle.spend.period = period;
                lifecycle.spend.period_resets_at = Some(reset.next_reset(now));
            }
        }
        state_at(&lifecycle, now)
    }

    /// Revoked for good at `now` (a rotation's future `revoked_at` does not count yet).
    pub fn is_revoked_at(&self, now: Timestamp) -> bool {
        self.revoked_at().is_some_and(|at| at <= now)
    }

    pub fn created_at(&self) -> Timestamp {
        self.created_at.at()
    }

    pub fn updated_at(&self) -> Timestamp {
        self.updated_at.at()
    }

    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at.get()
    }

    pub fn revoked_at(&self) -> Option<Timestamp> {
        self.revoked_at.get()
    }

    /// The key as the management API shows it, with its live spend.
    pub fn view(&self, now: Timestamp) -> KeyView {
        let spend = self.spend();
        let lifecycle = self.lifecycle(&spend);
        KeyView {
            id: self.id.to_string(),
            name: self.name.to_string(),
            prefix: self.prefix.to_string(),
            state: state_at(&lifecycle, now),
            allowed_providers: self.policy.providers().to_vec(),
            allowed_models: self.policy.models().to_vec(),
            allowed_ips: self.policy.ips().to_vec(),
            rate_limit_rpm: self.rate_limit_rpm,
            spend_limit_usd: self.spend_limit,
            spend_reset: self.spend_reset,
            expires_at: self.expires_at(),
            created_at: self.created_at(),
            updated_at: self.updated_at(),
            revoked_at: self.revoked_at(),
            last_used_at: spend.last_used_at,
            spend_period_usd: lifecycle.spend.counted_at(now),
            spend_total_usd: spend.total,
            period_resets_at: lifecycle.spend.resets_at(now),
            request_count: spend.request_count,
            replaced_by: None,
        }
    }

    /// The key as the store writes it, spend as of now: what an edit starts from.
    pub fn record(&self) -> KeyRecord {
        let spend = self.runtime.ledger.snapshot();
        KeyRecord {
            id: self.id.to_string(),
            hash: self.hash,
            prefix: self.prefix.to_string(),
            name: self.name.to_string(),
            allowed_providers: self.policy.providers().to_vec(),
            allowed_models: self.policy.models().to_vec(),
            allowed_ips: self.policy.ips().to_vec(),
            rate_limit_rpm: self.rate_limit_rpm,
            spend_limit: self.spend_limit,
            spend_reset: self.spend_reset,
            expires_at: self.expires_at(),
            created_at: self.created_at(),
            updated_at: self.updated_at(),
            revoked_at: self.revoked_at(),
            last_used_at: spend.last_used_at,
            spend_total: spend.total,
            spend_period: spend.period,
            period_resets_at: spend.period_resets_at,
            request_count: spend.request_count,
            version: self.version,
        }
    }

    fn lifecycle(&self, spend: &SpendState) -> Lifecycle {
        Lifecycle {
            revoked_at: self.revoked_at(),
            expires_at: self.expires_at(),
            spend: SpendSnapshot {
                limit: self.spend_limit,
                reset: self.spend_reset,
                period: spend.period,
                period_resets_at: spend.period_resets_at,
                total: spend.total,
            },
        }
    }

    /// Where the key sorts in creation order.
    pub(super) fn order(&self) -> (Stamp, &str) {
        (self.created_at, &self.id)
    }
}
