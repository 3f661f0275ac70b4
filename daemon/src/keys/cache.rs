//! The in-memory key table: the proxy's only source of keys, and the management API's source
//! for reads.
//!
//! The daemon is the only writer of the database, so a table updated right after each commit
//! (and before the management response is sent) is authoritative: the very next request sees
//! an edit or a revocation (SPEC §1) without any database read on the request path.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use gateway_shared::KeyHash;
use jiff::Timestamp;

use super::policy::{GlobCache, Policy};
use super::record::KeyRecord;
use crate::clock::Clock;
use crate::limits::rate::RateWindow;
use crate::spend::ledger::{Ledger, SpendState};

/// A key as the request path needs it: the record, its compiled restrictions, and the live
/// state (rate window, spend ledger) that outlives edits of the record.
#[derive(Debug)]
pub struct KeyEntry {
    pub record: KeyRecord,
    pub policy: Policy,
    pub runtime: Arc<KeyRuntime>,
}

/// Per-key state that changes on every request. Kept across edits: an edit replaces the
/// record, never the requests already counted against it.
#[derive(Debug)]
pub struct KeyRuntime {
    // Std mutex: held for a few comparisons per request, never across `.await`.
    pub rate: Mutex<RateWindow>,
    pub ledger: Arc<Ledger>,
}

impl KeyRuntime {
    fn new(record: &KeyRecord, clock: Arc<dyn Clock>) -> Self {
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
            ledger: Arc::new(Ledger::new(initial, clock)),
        }
    }
}

impl KeyEntry {
    /// Live spend, rolled to the current period.
    pub fn spend(&self) -> SpendState {
        self.runtime.ledger.view(self.record.spend_reset)
    }

    pub fn state_at(&self, now: jiff::Timestamp) -> gateway_shared::KeyState {
        self.record.state_at(&self.spend(), now)
    }

    pub fn view(&self, now: jiff::Timestamp) -> gateway_shared::api::KeyView {
        self.record.view(&self.spend(), now)
    }
}

impl std::ops::Deref for KeyEntry {
    type Target = KeyRecord;

    fn deref(&self) -> &KeyRecord {
        &self.record
    }
}

pub struct KeyCache {
    // Std RwLock: held only to clone an `Arc` or swap one in, never across `.await`.
    inner: RwLock<Index>,
    clock: Arc<dyn Clock>,
    globs: GlobCache,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("keys", &self.len())
            .finish()
    }
}

#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<String, Arc<KeyEntry>>,
    by_hash: HashMap<KeyHash, Arc<KeyEntry>>,
    /// Creation order, for stable pagination.
    order: BTreeSet<(Timestamp, String)>,
}

impl KeyCache {
    pub fn new(records: impl IntoIterator<Item = KeyRecord>, clock: Arc<dyn Clock>) -> Self {
        let cache = Self {
            inner: RwLock::default(),
            clock,
            globs: GlobCache::default(),
        };
        for record in records {
            cache.upsert(record);
        }
        cache
    }

    /// Inserts or replaces a key (matched by id), keeping its live state. Call only after
    /// the change has committed.
    pub fn upsert(&self, record: KeyRecord) -> Arc<KeyEntry> {
        let policy = Policy::compile(&record, &self.globs);
        let mut index = self.write();
        let runtime = match index.by_id.get(&record.id) {
            Some(old) => Arc::clone(&old.runtime),
            None => Arc::new(KeyRuntime::new(&record, Arc::clone(&self.clock))),
        };
        let record = Arc::new(KeyEntry {
            record,
            policy,
            runtime,
        });
        if let Some(old) = index.by_id.insert(record.id.clone(), Arc::clone(&record)) {
            index.by_hash.remove(&old.hash);
            index.order.remove(&(old.created_at, old.id.clone()));
        }
        index.by_hash.insert(record.hash, Arc::clone(&record));
        index.order.insert((record.created_at, record.id.clone()));
        record
    }

    pub fn get(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.read().by_id.get(id).cloned()
    }

    pub fn by_hash(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.read().by_hash.get(hash).cloned()
    }

    /// Every key, for the usage writer's and metrics' sweeps.
    pub fn all(&self) -> Vec<Arc<KeyEntry>> {
        self.read().by_id.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` keys created after the key `after` (an id), oldest first, that satisfy
    /// `keep`; and the cursor for the next page when there may be one.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&KeyEntry) -> bool,
    ) -> Option<(Vec<Arc<KeyEntry>>, Option<String>)> {
        let index = self.read();
        let start = match after {
            None => None,
            Some(id) => Some((index.by_id.get(id)?.created_at, id.to_owned())),
        };
        let range = match &start {
            None => index.order.range::<(Timestamp, String), _>(..),
            Some(start) => index.order.range::<(Timestamp, String), _>((
                std::ops::Bound::Excluded(start),
                std::ops::Bound::Unbounded,
            )),
        };
        let mut out = Vec::new();
        for (_, id) in range {
            let Some(record) = index.by_id.get(id) else {
                continue;
            };
            if !keep(record) {
                continue;
            }
            if out.len() == limit {
                let cursor = out.last().map(|r: &Arc<KeyEntry>| r.id.clone());
                return Some((out, cursor));
            }
            out.push(Arc::clone(record));
        }
        Some((out, None))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_shared::Nanodollars;

    fn clock() -> Arc<dyn Clock> {
        Arc::new(crate::clock::ManualClock::new(Timestamp::UNIX_EPOCH))
    }

    fn record(id: &str, second: i64) -> KeyRecord {
        let at = Timestamp::from_second(second).expect("ts");
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
        }
    }

    #[test]
    fn pages_in_creation_order_with_a_cursor() {
        let cache = KeyCache::new([record("c", 3), record("a", 1), record("b", 2)], clock());
        let (first, cursor) = cache.page(None, 2, |_| true).expect("page");
        assert_eq!(
            first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(cursor.as_deref(), Some("b"));
        let (second, cursor) = cache.page(Some("b"), 2, |_| true).expect("page");
        assert_eq!(
            second.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(cursor, None);
        assert!(
            cache.page(Some("zzz"), 2, |_| true).is_none(),
            "unknown cursor"
        );
        let (filtered, _) = cache.page(None, 10, |r| r.id != "b").expect("page");
        assert_eq!(filtered.len(), 2);
    }

    #[test]
    fn upsert_replaces_by_id_and_rehashes() {
        let cache = KeyCache::new([record("a", 1)], clock());
        let mut edited = record("a", 1);
        edited.name = "renamed".into();
        edited.hash = KeyHash::of("new secret");
        let before = cache.get("a").expect("a").runtime.clone();
        cache.upsert(edited);
        assert_eq!(cache.len(), 1);
        assert!(
            Arc::ptr_eq(&before, &cache.get("a").expect("a").runtime),
            "live state survives edits"
        );
        assert!(cache.by_hash(&KeyHash::of("a")).is_none());
        assert_eq!(
            cache
                .by_hash(&KeyHash::of("new secret"))
                .map(|r| r.name.clone()),
            Some("renamed".into())
        );
    }
}
