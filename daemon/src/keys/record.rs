//! `KeyRecord`: one proxy key's settings and lifecycle as stored, minus the secret. Its spend
//! fields are the values loaded at start-up; live spend is in the key's ledger.

use gateway_shared::api::KeyView;
use gateway_shared::state::{Lifecycle, SpendSnapshot, state_at};

use crate::spend::ledger::SpendState;
use gateway_shared::{KeyHash, KeyState, Nanodollars, Provider, SpendReset};
use jiff::Timestamp;

#[derive(Clone, Debug, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub hash: KeyHash,
    pub prefix: String,
    pub name: String,
    pub allowed_providers: Vec<Provider>,
    pub allowed_models: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub rate_limit_rpm: Option<u32>,
    pub spend_limit: Option<Nanodollars>,
    pub spend_reset: Option<SpendReset>,
    pub expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub spend_total: Nanodollars,
    pub spend_period: Nanodollars,
    /// End of the period `spend_period` was counted in; `None` without a reset period.
    pub period_resets_at: Option<Timestamp>,
    pub request_count: u64,
}

impl KeyRecord {
    /// The record's lifecycle with `spend` as the key's live spend.
    pub fn lifecycle(&self, spend: &SpendState) -> Lifecycle {
        Lifecycle {
            revoked_at: self.revoked_at,
            expires_at: self.expires_at,
            spend: SpendSnapshot {
                limit: self.spend_limit,
                reset: self.spend_reset,
                period: spend.period,
                period_resets_at: spend.period_resets_at,
                total: spend.total,
            },
        }
    }

    pub fn state_at(&self, spend: &SpendState, now: Timestamp) -> KeyState {
        state_at(&self.lifecycle(spend), now)
    }

    /// Revoked for good at `now` (a rotation's future `revoked_at` does not count yet).
    pub fn is_revoked_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_some_and(|at| at <= now)
    }

    /// The key as the management API shows it, with `spend` as its live spend.
    pub fn view(&self, spend: &SpendState, now: Timestamp) -> KeyView {
        let snapshot = self.lifecycle(spend).spend;
        KeyView {
            id: self.id.clone(),
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            state: self.state_at(spend, now),
            allowed_providers: self.allowed_providers.clone(),
            allowed_models: self.allowed_models.clone(),
            allowed_ips: self.allowed_ips.clone(),
            rate_limit_rpm: self.rate_limit_rpm,
            spend_limit_usd: self.spend_limit,
            spend_reset: self.spend_reset,
            expires_at: self.expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            revoked_at: self.revoked_at,
            last_used_at: spend.last_used_at,
            spend_period_usd: snapshot.counted_at(now),
            spend_total_usd: spend.total,
            period_resets_at: snapshot.resets_at(now),
            request_count: spend.request_count,
        }
    }
}
