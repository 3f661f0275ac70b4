//! The in-memory key table: the proxy's only source of keys, and the management API's source
//! for reads.
//!
//! The table is updated right after each commit (and before the management response is
//! sent), so the very next request sees an edit or a revocation (SPEC §1) without any
//! database read on the request path. In a cluster other replicas' commits arrive through the
//! change feed (`keys::sync`, `remote`); every entry carries its key's version and the table
//! never replaces an entry with an older one, whichever of the two paths comes last.
//!
//! Every key is in memory, so an entry's size is what limits a fleet: an entry holds what the
//! request path and the management views need and nothing twice (spend lives only in the
//! ledger, the restriction lists only in the shared policy), and the indexes hold pointers to
//! entries rather than copies of their ids.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use gateway_shared::KeyHash;
use gateway_shared::api::KeyView;
use jiff::Timestamp;

use super::policy::{Policy, PolicyCache};
use super::record::KeyRecord;
use crate::clock::Clock;
use crate::store::Store;

mod entry;
mod index;
mod remote;

pub use entry::{KeyEntry, KeyRuntime, Live};
use index::{ByHash, ById, Index};
pub use remote::{Link, Restored};

pub struct KeyCache {
    // Std RwLock: held only to clone an `Arc` or swap one in, never across `.await`.
    inner: RwLock<Index>,
    clock: Arc<dyn Clock>,
    policies: PolicyCache,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("keys", &self.len())
            .finish()
    }
}

impl KeyCache {
    pub fn new(records: impl IntoIterator<Item = KeyRecord>, clock: Arc<dyn Clock>) -> Self {
        let cache = Self {
            inner: RwLock::default(),
            clock,
            policies: PolicyCache::default(),
        };
        for record in records {
            cache.upsert(record);
        }
        cache
    }

    /// The table of every stored key. Rows go into the table as they are read, unordered,
    /// and the table is sorted once at the end: holding every row first would double
    /// start-up's peak memory, and sorting them in SQLite would hold them all too.
    pub async fn load(store: &Store, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<KeyCache>> {
        let cache = Arc::new(KeyCache::new([], clock));
        let count = store.count_keys().await?;
        cache.write().reserve(count);
        let table = Arc::clone(&cache);
        store.load_keys(move |record| table.push(record)).await?;
        cache.write().sort();
        cache.share_rotated(&store.load_rotations().await?);
        Ok(cache)
    }

    /// Gives each chain of rotated keys (successor id, predecessor id) one live state again,
    /// as `insert_successor` did when they were rotated: while an old secret is in its grace
    /// period it and its successor are one key with one budget, also after a restart. The
    /// state they share is the one that counted the most requests: both secrets' usage
    /// persisted the same ledger, each under its own id, so the larger count is the later.
    /// Its owner is the chain's first key, always.
    fn share_rotated(&self, rotations: &[(String, String)]) {
        let mut index = self.write();
        // Chains in creation order: a successor's predecessor is settled before it.
        let mut links: Vec<(Arc<KeyEntry>, Arc<KeyEntry>)> = rotations
            .iter()
            .filter_map(|(successor, predecessor)| {
                let successor = index.by_id.get(successor.as_str())?;
                let predecessor = index.by_id.get(predecessor.as_str())?;
                Some((Arc::clone(&successor.0), Arc::clone(&predecessor.0)))
            })
            .collect();
        links.sort_by(|(a, _), (b, _)| a.order().cmp(&b.order()));
        for (successor, predecessor) in &links {
            index
                .successors
                .insert(predecessor.id.to_string(), successor.id.to_string());
        }
        // Each key's chain, by the id of the chain's first key.
        let mut chain_of: HashMap<String, String> = HashMap::new();
        let mut chains: HashMap<String, Vec<String>> = HashMap::new();
        for (successor, predecessor) in &links {
            let root = chain_of
                .get(predecessor.id.as_str())
                .cloned()
                .unwrap_or_else(|| predecessor.id.to_string());
            let members = chains.entry(root.clone()).or_default();
            if members.is_empty() {
                members.push(predecessor.id.to_string());
                chain_of.insert(predecessor.id.to_string(), root.clone());
            }
            members.push(successor.id.to_string());
            chain_of.insert(successor.id.to_string(), root);
        }
        for members in chains.values() {
            let entries: Vec<Arc<KeyEntry>> = members
                .iter()
                .filter_map(|id| index.by_id.get(id.as_str()).map(|e| Arc::clone(&e.0)))
                .collect();
            let Some(latest) = entries
                .iter()
                .map(|entry| entry.record())
                .max_by_key(|record| (record.request_count, record.spend_total))
            else {
                continue;
            };
            // Named after the chain's first key whichever record gave the counts, as on a
            // replica that lived through the rotations: a cluster's shared ledger is the
            // owner's, and every replica must name the same one.
            let Some(first) = members.first() else {
                continue;
            };
            let live = Live::chain(KeyRuntime::new(&latest, Arc::clone(&self.clock)), first);
            for entry in entries {
                let shared = KeyEntry::new(entry.record(), Arc::clone(&entry.policy), live.clone());
                index.put(Arc::new(shared));
            }
        }
    }

    /// The rate windows that have admissions in them, one per live state (a rotated key and
    /// its successor share one) under one of its key ids: what a graceful shutdown saves.
    pub fn rate_windows(&self) -> Vec<(String, Vec<(u64, u32)>)> {
        let now = self.clock.monotonic();
        self.per_live_state(|entry| {
            let snapshot = entry
                .runtime
                .rate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .snapshot(now);
            (!snapshot.is_empty()).then_some(snapshot)
        })
        .into_iter()
        .map(|(id, snapshot)| (id.to_string(), snapshot))
        .collect()
    }

    /// Requests in flight across the table, each live state counted once (a rotated key and
    /// its successor share one, which counting per key showed twice): the
    /// `gateway_open_reservations` gauge.
    pub fn open_reservations(&self) -> u64 {
        self.per_live_state(|entry| {
            let open = entry.runtime.ledger.snapshot().open_reservations;
            (open > 0).then_some(u64::from(open))
        })
        .into_iter()
        .map(|(_, open)| open)
        .sum()
    }

    /// What `read` finds in each live state, once per state, under the id of the first key
    /// that has it. Only the states where it finds something go in the set of those seen: a
    /// set over every key cost megabytes of peak memory with 100k keys, every few seconds
    /// (`save_rate_windows_now_and_then`).
    fn per_live_state<T>(
        &self,
        mut read: impl FnMut(&KeyEntry) -> Option<T>,
    ) -> Vec<(compact_str::CompactString, T)> {
        let index = self.read();
        let mut seen = HashSet::new();
        index
            .order
            .iter()
            .filter_map(|entry| {
                let found = read(entry)?;
                seen.insert(Arc::as_ptr(&entry.runtime))
                    .then(|| (entry.id.clone(), found))
            })
            .collect()
    }

    /// Puts back the windows a shutdown saved (`saved_at_ms`, Unix ms, per window), each into
    /// its key's live state; unknown keys are skipped.
    pub fn restore_rate_windows(&self, saved: &[crate::store::SavedWindow]) {
        let now = self.clock.monotonic();
        let wall_ms = self.clock.now().as_millisecond();
        for (key_id, saved_at_ms, runs) in saved {
            let Some(entry) = self.get(key_id) else {
                continue;
            };
            let since = u64::try_from(wall_ms.saturating_sub(*saved_at_ms)).unwrap_or(0);
            entry
                .runtime
                .rate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .restore(now, runs, std::time::Duration::from_millis(since));
        }
    }

    /// Inserts or replaces a key (matched by id), keeping its live state, unless the table
    /// holds a newer version of it already (another replica's later change, applied by the
    /// change feed meanwhile): then that entry stays, and is returned. Either way the answer
    /// is the entry now in the table. Call only after the change has committed.
    pub fn upsert(&self, record: KeyRecord) -> Arc<KeyEntry> {
        self.put_unless_older(record, None)
    }

    /// Inserts a rotated key's successor, sharing the predecessor's live state (rate window
    /// and spend ledger): while both secrets work they draw on one budget and one rate
    /// limit. Call only after the rotation has committed. Never older than the table's
    /// entry, as [`KeyCache::upsert`].
    pub fn insert_successor(&self, record: KeyRecord, predecessor: &KeyEntry) -> Arc<KeyEntry> {
        self.put_unless_older(record, Some(&predecessor.id))
    }

    /// Puts `record` in the table unless the table's entry for it is newer (a lower version
    /// is an older row: see `KeyRecord::version`); an equal version is the same row, put
    /// back unchanged. The entry keeps its live state; with a `predecessor` in the table (the
    /// key was rotated from it), the key shares the predecessor's instead and the
    /// predecessor names it as its replacement. Answers the entry now in the table.
    fn put_unless_older(&self, mut record: KeyRecord, predecessor: Option<&str>) -> Arc<KeyEntry> {
        let policy = self.policy(&mut record);
        let mut index = self.write();
        let current = index
            .by_id
            .get(record.id.as_str())
            .map(|e| Arc::clone(&e.0));
        let predecessor = predecessor
            .and_then(|id| index.by_id.get(id))
            .map(|e| Arc::clone(&e.0));
        if let Some(predecessor) = &predecessor {
            index
                .successors
                .insert(predecessor.id.to_string(), record.id.clone());
        }
        if let Some(current) = &current
            && current.version > record.version
        {
            let Some(predecessor) =
                predecessor.filter(|p| !Arc::ptr_eq(&p.runtime, &current.runtime))
            else {
                return Arc::clone(current);
            };
            // The newer entry, sharing its predecessor's state as the older row would have.
            let shared = Arc::new(KeyEntry::new(
                current.record(),
                Arc::clone(&current.policy),
                predecessor.live(),
            ));
            index.put(Arc::clone(&shared));
            return shared;
        }
        let live = match (&predecessor, &current) {
            (Some(predecessor), _) => predecessor.live(),
            (None, Some(current)) => current.live(),
            (None, None) => Live::fresh(&record, Arc::clone(&self.clock)),
        };
        let entry = Arc::new(KeyEntry::new(record, policy, live));
        index.put(Arc::clone(&entry));
        entry
    }

    /// `entry` as the management API shows it: its own view, and the key that replaced it.
    pub fn view(&self, entry: &KeyEntry, now: Timestamp) -> KeyView {
        let mut view = entry.view(now);
        view.replaced_by = self.read().successors.get(entry.id.as_str()).cloned();
        view
    }

    /// A stored key at start-up: ids are unique in the store, and the order is fixed by one
    /// sort once all are in.
    fn push(&self, mut record: KeyRecord) {
        let policy = self.policy(&mut record);
        let live = Live::fresh(&record, Arc::clone(&self.clock));
        let entry = Arc::new(KeyEntry::new(record, policy, live));
        let mut index = self.write();
        index.by_id.insert(ById::new(&entry));
        index.by_hash.insert(ByHash::new(&entry));
        index.order.push(entry);
    }

    /// The shared policy for the record's lists, which it takes.
    fn policy(&self, record: &mut KeyRecord) -> Arc<Policy> {
        self.policies.get(
            std::mem::take(&mut record.allowed_providers),
            std::mem::take(&mut record.allowed_models),
            std::mem::take(&mut record.allowed_ips),
        )
    }

    pub fn get(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.read().by_id.get(id).map(|e| Arc::clone(&e.0))
    }

    pub fn by_hash(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.read().by_hash.get(hash).map(|e| Arc::clone(&e.0))
    }

    /// The ids of the keys that share `entry`'s ledger: its owner (the first key of a
    /// rotated chain) and each successor in turn, as far as the table knows them.
    pub fn ledger_keys(&self, entry: &KeyEntry) -> Vec<String> {
        let index = self.read();
        let mut ids = vec![entry.owner().to_owned()];
        while let Some(next) = ids.last().and_then(|id| index.successors.get(id)) {
            if ids.contains(next) {
                break;
            }
            ids.push(next.clone());
        }
        if !ids.iter().any(|id| *id == entry.id) {
            ids.push(entry.id.to_string());
        }
        ids
    }

    /// Every key, for the usage writer's and metrics' sweeps.
    pub fn all(&self) -> Vec<Arc<KeyEntry>> {
        self.read().order.clone()
    }

    pub fn len(&self) -> usize {
        self.read().order.len()
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
            None => 0,
            Some(id) => index.position(&index.by_id.get(id)?.0) + 1,
        };
        let mut out = Vec::new();
        for entry in &index.order[start..] {
            if !keep(entry) {
                continue;
            }
            if out.len() == limit {
                let cursor = out.last().map(|e: &Arc<KeyEntry>| e.id.to_string());
                return Some((out, cursor));
            }
            out.push(Arc::clone(entry));
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

    pub(super) fn clock() -> Arc<dyn Clock> {
        Arc::new(crate::clock::ManualClock::new(Timestamp::UNIX_EPOCH))
    }

    pub(super) fn record(id: &str, second: i64) -> KeyRecord {
        KeyRecord::plain(id, Timestamp::from_second(second).expect("ts"))
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
    fn each_chain_of_rotated_keys_shares_the_state_that_counted_the_most_requests() {
        let spent = |id: &str, second: i64, requests: u64| KeyRecord {
            spend_total: Nanodollars(requests * 100),
            request_count: requests,
            ..record(id, second)
        };
        let cache = KeyCache::new(
            [
                spent("first", 1, 5),
                spent("second", 2, 9),
                spent("third", 3, 7),
                spent("alone", 4, 1),
            ],
            clock(),
        );
        cache.share_rotated(&[
            ("third".into(), "second".into()),
            ("second".into(), "first".into()),
            ("ghost".into(), "alone".into()),
        ]);
        let entry = |id: &str| cache.get(id).expect("entry");
        for id in ["first", "second", "third"] {
            assert!(
                Arc::ptr_eq(&entry(id).runtime, &entry("second").runtime),
                "{id} shares the chain's state"
            );
            assert_eq!(entry(id).spend().request_count, 9, "{id}");
            assert_eq!(entry(id).spend().total, Nanodollars(900), "{id}");
            // The ledger is the chain's first key's, as on a replica that saw the rotations
            // (a cluster's shared ledger in Redis is named after it).
            assert_eq!(entry(id).owner(), "first", "{id}");
            assert_eq!(cache.ledger_keys(&entry(id)), ["first", "second", "third"]);
        }
        assert_eq!(entry("alone").spend().request_count, 1);
        assert_eq!(entry("alone").owner(), "alone");
        assert_eq!(
            cache.page(None, 10, |_| true).expect("page").0.len(),
            4,
            "no key added or lost"
        );
    }

    #[tokio::test]
    async fn loads_stored_keys_in_creation_order_with_their_spend() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("gateway.db")).expect("store");
        let mut spent = record("key_spent", 2);
        spent.spend_total = Nanodollars(42);
        spent.request_count = 3;
        for record in [
            record("key_c", 3),
            spent,
            record("key_b", 2),
            record("key_a", 1),
        ] {
            let audit = crate::store::AuditRecord {
                at: record.created_at,
                actor: "test".into(),
                action: "key.create",
                key_id: Some(record.id.clone()),
                details: serde_json::json!({}),
            };
            store.insert_key(record, audit).await.expect("insert");
        }
        let cache = KeyCache::load(&store, clock()).await.expect("load");
        let (all, _) = cache.page(None, 10, |_| true).expect("page");
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["key_a", "key_b", "key_spent", "key_c"]
        );
        let spent = cache.get("key_spent").expect("loaded").spend();
        assert_eq!((spent.total, spent.request_count), (Nanodollars(42), 3));
        assert!(cache.by_hash(&KeyHash::of("key_c")).is_some());
    }

    #[test]
    fn keys_with_the_same_lists_share_a_policy() {
        let mut a = record("a", 1);
        a.allowed_models = vec!["gpt-*".into()];
        let mut b = record("b", 2);
        b.allowed_models = vec!["gpt-*".into()];
        let cache = KeyCache::new([a.clone(), b], clock());
        let (a_entry, b_entry) = (cache.get("a").expect("a"), cache.get("b").expect("b"));
        assert!(Arc::ptr_eq(&a_entry.policy, &b_entry.policy));
        assert_eq!(
            a_entry.record(),
            a,
            "the entry gives back the record it was made of"
        );
    }

    #[test]
    fn a_rotated_chain_names_its_first_key_as_owner_through_edits_and_reloads() {
        let cache = KeyCache::new([record("a", 1)], clock());
        let a = cache.get("a").expect("a");
        let b = cache.insert_successor(record("b", 2), &a);
        let c = cache.insert_successor(record("c", 3), &b);
        for id in ["a", "b", "c"] {
            assert_eq!(cache.get(id).expect(id).owner(), "a", "{id}");
        }
        assert!(Arc::ptr_eq(&a.runtime, &c.runtime));
        // An edit keeps the owner, as it keeps the state; so does the store's row put back.
        let mut edited = record("c", 3);
        edited.name = "renamed".into();
        edited.version = 2;
        assert_eq!(cache.upsert(edited).owner(), "a");
        cache.put_stored(record("b", 2));
        assert_eq!(cache.get("b").expect("b").owner(), "a");
        // A rotation another replica made, linked here after both rows arrived.
        let other = KeyCache::new([record("a", 1), record("b", 2), record("c", 3)], clock());
        assert_eq!(other.link_successor("b", "a"), remote::Link::Linked);
        assert_eq!(other.link_successor("c", "b"), remote::Link::Linked);
        for id in ["a", "b", "c"] {
            assert_eq!(other.get(id).expect(id).owner(), "a", "{id}");
        }
        // A key never rotated from another owns its ledger, and stores no owner of its own.
        let lone = cache.upsert(record("lone", 4));
        assert_eq!(lone.owner(), "lone");
        let mut edited = record("lone", 4);
        edited.version = 2;
        let edited = cache.upsert(edited);
        assert!(Arc::ptr_eq(&lone.runtime, &edited.runtime));
        assert!(!lone.stores_owner() && !edited.stores_owner());
        // The chain's first key stores none; its successors do.
        assert!(!cache.get("a").expect("a").stores_owner());
        assert!(cache.get("b").expect("b").stores_owner());
    }

    #[test]
    fn requests_in_flight_are_counted_once_per_live_state() {
        use crate::spend::ledger::{Ask, Reserve};
        let cache = KeyCache::new([record("a", 1), record("lone", 2)], clock());
        let a = cache.get("a").expect("a");
        cache.insert_successor(record("b", 3), &a);
        let ask = Ask {
            price: crate::spend::price::Price {
                input: Nanodollars(1),
                output: Nanodollars(1),
                cache_read: Nanodollars::ZERO,
                cache_write: Nanodollars::ZERO,
                max_output_tokens: 100,
            },
            input_tokens_bound: 10,
            output_tokens: 10,
            answers: 1,
            min_output_tokens: 1,
            clamp: false,
        };
        let first = a.runtime.reserve(None, None, &ask).expect("no limit");
        let lone = cache.get("lone").expect("lone");
        let second = lone.runtime.reserve(None, None, &ask).expect("no limit");
        assert_eq!(
            cache.open_reservations(),
            2,
            "a and b share one state: counted once"
        );
        drop((first, second));
        assert_eq!(cache.open_reservations(), 0);
    }

    /// A 100,000-key table holds one entry and one runtime per key: a field that moves either
    /// into a bigger malloc chunk costs 1.6 MiB or more there (the benchmark's `--scale-keys`
    /// peak RSS target). glibc rounds a request up to a multiple of 16, 8 bytes of header
    /// included; an `Arc` adds 16 bytes of counts.
    #[test]
    fn an_entry_and_its_runtime_stay_in_their_malloc_chunks() {
        let chunk = |size: usize| (size + 16 + 8).next_multiple_of(16);
        // The runtime with its ledger inline: one 128-byte chunk, where a runtime of 48 and
        // a ledger of its own of 112 were two.
        assert_eq!(chunk(std::mem::size_of::<KeyRuntime>()), 128);
        assert!(chunk(std::mem::size_of::<KeyEntry>()) <= 240);
        // And its id allocates nothing of its own.
        let id = gateway_shared::key::new_key_id().expect("rng");
        let cache = KeyCache::new([record(&id, 1)], clock());
        assert!(
            !cache.get(&id).expect("entry").id.is_heap_allocated(),
            "{id}"
        );
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
