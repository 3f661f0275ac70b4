//! `KeyRecord`: everything the gateway knows about one proxy key, as stored, minus the secret.

use gateway_shared::api::KeyView;
use gateway_shared::state::{Lifecycle, SpendSnapshot, state_at};
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
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            revoked_at: self.revoked_at,
            expires_at: self.expires_at,
            spend: self.spend(),
        }
    }

    pub fn spend(&self) -> SpendSnapshot {
        SpendSnapshot {
            limit: self.spend_limit,
            reset: self.spend_reset,
            period: self.spend_period,
            period_resets_at: self.period_resets_at,
            total: self.spend_total,
        }
    }

    pub fn state_at(&self, now: Timestamp) -> KeyState {
        state_at(&self.lifecycle(), now)
    }

    /// Revoked for good at `now` (a rotation's future `revoked_at` does not count yet).
    pub fn is_revoked_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_some_and(|at| at <= now)
    }

    pub fn view(&self, now: Timestamp) -> KeyView {
        let spend = self.spend();
        KeyView {
            id: self.id.clone(),
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            state: self.state_at(now),
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
            last_used_at: self.last_used_at,
            spend_period_usd: spend.counted_at(now),
            spend_total_usd: self.spend_total,
            period_resets_at: spend.resets_at(now),
            request_count: self.request_count,
        }
    }
}
