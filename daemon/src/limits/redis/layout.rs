//! Where the engine keeps what: the Redis key names, in one place.
//!
//! Every key of one ledger owner (a proxy key, or a rotated pair's first key) carries the
//! owner in a hash tag, `<prefix>:{<owner>}:…`, so all of them hash to one slot and each
//! script touches one slot: Redis Cluster runs them as they are. The sweeper's index of
//! owners with holds is the one key outside any owner, under a tag of its own.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>:{<o>}:led` | hash | `seeded`, `kind` (n/d/w/m), `ps` (period start ms), `spent`, `held` (nd), `v:<key id>` (versions) |
//! | `<p>:{<o>}:rw` | string | the rate window: a ring of the last N admission times (named `win` in its first format, whose 24-byte header the queue's 40-byte one replaced: a new name, so no script reads the other's format) |
//! | `<p>:{<o>}:h:<hold>` | hash | an open hold: `a` amount, `e` estimate, `x` lease expiry ms, `k` key id, `l` lease ms, `t` window time, `c` clamped, `rl`/`rr`/`rs` the rate answer |
//! | `<p>:{<o>}:hx` | sorted set | the owner's open holds by lease expiry |
//! | `<p>:{<o>}:d:<hold>` | string, TTL | a finished hold (`s` settled, `w` swept, `r` reverted) |
//! | `<p>:{sweep}:owners` | sorted set | owners that may have holds, scored by when to look |

use super::error::LimitsError;
use super::types::HoldId;

/// The key names of one owner.
pub(super) struct OwnerKeys {
    base: String,
}

impl OwnerKeys {
    /// Refuses an owner whose name would break the hash tag (`{`, `}`) or be empty.
    pub(super) fn new(prefix: &str, owner: &str) -> Result<OwnerKeys, LimitsError> {
        if owner.is_empty() || owner.contains(['{', '}']) {
            return Err(LimitsError::InvalidName("a ledger owner"));
        }
        Ok(OwnerKeys {
            base: format!("{prefix}:{{{owner}}}:"),
        })
    }

    pub(super) fn ledger(&self) -> String {
        format!("{}led", self.base)
    }

    pub(super) fn window(&self) -> String {
        format!("{}rw", self.base)
    }

    pub(super) fn expiries(&self) -> String {
        format!("{}hx", self.base)
    }

    pub(super) fn hold_prefix(&self) -> String {
        format!("{}h:", self.base)
    }

    pub(super) fn hold(&self, hold: HoldId) -> String {
        format!("{}h:{hold}", self.base)
    }

    pub(super) fn done_prefix(&self) -> String {
        format!("{}d:", self.base)
    }

    pub(super) fn done(&self, hold: HoldId) -> String {
        format!("{}d:{hold}", self.base)
    }
}

/// The sweeper's index: one per prefix.
pub(super) fn sweep_index(prefix: &str) -> String {
    format!("{prefix}:{{sweep}}:owners")
}

/// A prefix must not hold a hash tag of its own (it would put every owner in one slot).
pub(super) fn check_prefix(prefix: &str) -> Result<(), LimitsError> {
    if prefix.is_empty() || prefix.contains(['{', '}']) {
        return Err(LimitsError::InvalidName("the key prefix"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_an_owner_shares_its_hash_tag() {
        let keys = OwnerKeys::new("gw", "key_01").expect("owner");
        let hold = HoldId {
            instance: 7,
            seq: 9,
        };
        for key in [
            keys.ledger(),
            keys.window(),
            keys.expiries(),
            keys.hold(hold),
            keys.done(hold),
        ] {
            assert!(key.starts_with("gw:{key_01}:"), "{key}");
        }
        assert!(OwnerKeys::new("gw", "a}b").is_err());
        assert!(OwnerKeys::new("gw", "").is_err());
        assert!(check_prefix("g{w").is_err());
        assert!(check_prefix("gw").is_ok());
    }
}
