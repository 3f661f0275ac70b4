//! The in-memory key table: the proxy's only source of keys, and the management API's source
//! for reads.
//!
//! The daemon is the only writer of the database, so a table updated right after each commit
//! (and before the management response is sent) is authoritative: the very next request sees
//! an edit or a revocation (SPEC §1) without any database read on the request path.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use gateway_shared::KeyHash;
use jiff::Timestamp;

use super::policy::Policy;
use super::record::KeyRecord;

/// A key as the request path needs it: the record and its compiled restrictions.
#[derive(Debug)]
pub struct KeyEntry {
    pub record: KeyRecord,
    pub policy: Policy,
}

impl std::ops::Deref for KeyEntry {
    type Target = KeyRecord;

    fn deref(&self) -> &KeyRecord {
        &self.record
    }
}

#[derive(Debug, Default)]
pub struct KeyCache {
    // Std RwLock: held only to clone an `Arc` or swap one in, never across `.await`.
    inner: RwLock<Index>,
}

#[derive(Debug, Default)]
struct Index {
    by_id: HashMap<String, Arc<KeyEntry>>,
    by_hash: HashMap<KeyHash, Arc<KeyEntry>>,
    /// Creation order, for stable pagination.
    order: BTreeSet<(Timestamp, String)>,
}

impl KeyCache {
    pub fn new(records: impl IntoIterator<Item = KeyRecord>) -> Self {
        let cache = Self::default();
        for record in records {
            cache.upsert(record);
        }
        cache
    }

    /// Inserts or replaces a key (matched by id). Call only after the change has committed.
    pub fn upsert(&self, record: KeyRecord) -> Arc<KeyEntry> {
        let policy = Policy::compile(&record);
        let record = Arc::new(KeyEntry { record, policy });
        let mut index = self.write();
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
        let cache = KeyCache::new([record("c", 3), record("a", 1), record("b", 2)]);
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
        let cache = KeyCache::new([record("a", 1)]);
        let mut edited = record("a", 1);
        edited.name = "renamed".into();
        edited.hash = KeyHash::of("new secret");
        cache.upsert(edited);
        assert_eq!(cache.len(), 1);
        assert!(cache.by_hash(&KeyHash::of("a")).is_none());
        assert_eq!(
            cache
                .by_hash(&KeyHash::of("new secret"))
                .map(|r| r.name.clone()),
            Some("renamed".into())
        );
    }
}
