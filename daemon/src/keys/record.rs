//! `KeyRecord`: one proxy key's settings and lifecycle as stored, minus the secret. It is what
//! the store reads and writes and what the service edits; the in-memory table keeps a compact
//! form of it (`KeyEntry`). Its spend fields are the values loaded at start-up or written at
//! creation; live spend is in the key's ledger.
//!
//! `version` counts the committed changes of the key's settings and lifecycle: 1 at creation,
//! one more per edit, revocation or rotation. Every write of an existing key is conditional on
//! the version it was read at (`Store::update_key`), so a replica editing from a stale copy
//! is refused instead of overwriting a newer change, and the key table never replaces an
//! entry with an older version (`KeyCache::upsert`). Spend is not versioned: it is the usage
//! writer's, never written by an edit.

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
    /// The committed change this record is (see the module docs); [`FIRST_VERSION`] for a
    /// new key.
    pub version: u64,
}

/// A new key's version.
pub const FIRST_VERSION: u64 = 1;

#[cfg(test)]
impl KeyRecord {
    /// For tests: a key just created at `at` with `id` as its secret's stand-in (its hash,
    /// prefix and name), no restriction, no limit, nothing spent. Fixtures override what
    /// they test with `..KeyRecord::plain(id, at)`.
    pub fn plain(id: &str, at: Timestamp) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            hash: KeyHash::of(id),
            prefix: "sk-proxy-abcd".into(),
            name: id.into(),
            allowed_providers: vec![],
            allowed_models: vec![],
            allowed_ips: vec![],
            rate_limit_rpm: None,
            spend_limit: None,
            spend_reset: None,
            expires_at: None,
            created_at: at,
            updated_at: at,
            revoked_at: None,
            last_used_at: None,
            spend_total: Nanodollars::ZERO,
            spend_period: Nanodollars::ZERO,
            period_resets_at: None,
            request_count: 0,
            version: FIRST_VERSION,
        }
    }
}
