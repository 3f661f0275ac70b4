//! `KeyRecord`: one proxy key's settings and lifecycle as stored, minus the secret. It is what
//! the store reads and writes and what the service edits; the in-memory table keeps a compact
//! form of it (`KeyEntry`). Its spend fields are the values loaded at start-up or written at
//! creation; live spend is in the key's ledger.

use gateway_shared::{KeyHash, Nanodollars, Provider, SpendReset};
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
