//! The key table's indexes: by id, by hash and in creation order, each holding pointers to
//! the one entry rather than copies of its id.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use gateway_shared::KeyHash;

use super::KeyEntry;

#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) by_id: HashSet<ById>,
    pub(super) by_hash: HashSet<ByHash, DigestHasher>,
    /// Creation order (then id), for stable pagination.
    pub(super) order: Vec<Arc<KeyEntry>>,
    /// A rotated key's id → its successor's (`KeyView::replaced_by`). Here rather than in
    /// each entry: few keys are ever rotated, and an entry's size is paid by every key.
    pub(super) successors: HashMap<String, String>,
}

/// The by-hash index's hasher: foldhash, seeded per process. SipHash (the default) cost
/// ~600 instructions on every request's look-up (callgrind); a digest is uniform in
/// production, but the index must not rely on it: a store holding hashes that share their
/// first bytes (a test's seeded keys did) made a first-bytes hasher put 100,000 keys in one
/// bucket chain.
type DigestHasher = foldhash::fast::RandomState;

impl Index {
    /// Room for `additional` more keys at once, rather than growing by doubling.
    pub(super) fn reserve(&mut self, additional: usize) {
        self.by_id.reserve(additional);
        self.by_hash.reserve(additional);
        self.order.reserve_exact(additional);
    }

    pub(super) fn sort(&mut self) {
        self.order
            .sort_unstable_by(|a, b| a.order().cmp(&b.order()));
    }

    /// Adds `entry`, replacing the entry with its id if there is one.
    pub(super) fn put(&mut self, entry: Arc<KeyEntry>) {
        let old = self.by_id.replace(ById::new(&entry)).map(|old| old.0);
        if let Some(old) = &old {
            self.by_hash.remove(&old.hash);
        }
        self.by_hash.replace(ByHash::new(&entry));
        if let Some(old) = old {
            let at = self.position(&old);
            if self.order.get(at).is_some_and(|e| Arc::ptr_eq(e, &old)) {
                if old.created_at == entry.created_at {
                    self.order[at] = entry;
                    return;
                }
                self.order.remove(at);
            }
        }
        let at = self.position(&entry);
        self.order.insert(at, entry);
    }

    /// Takes key `id` out of every index (a restored store no longer has it).
    pub(super) fn remove(&mut self, id: &str) -> Option<Arc<KeyEntry>> {
        let entry = self.by_id.take(id)?.0;
        self.by_hash.remove(&entry.hash);
        let at = self.position(&entry);
        if self.order.get(at).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            self.order.remove(at);
        }
        self.successors.remove(id);
        self.successors.retain(|_, successor| successor != id);
        Some(entry)
    }

    /// Where `entry` is, or would go, in creation order.
    pub(super) fn position(&self, entry: &KeyEntry) -> usize {
        self.order.partition_point(|e| e.order() < entry.order())
    }
}

/// An index entry: the table's entry, looked up by a borrowed key without copying it out.
/// Hash and Eq are the key's, as `Borrow` requires.
macro_rules! index_entry {
    ($(#[$doc:meta])* $name:ident by $key:ty = |$entry:ident| $get:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(super) struct $name(pub(super) Arc<KeyEntry>);

        impl $name {
            pub(super) fn new(entry: &Arc<KeyEntry>) -> Self {
                $name(Arc::clone(entry))
            }

            fn key(&self) -> &$key {
                let $entry = &self.0;
                $get
            }
        }

        impl Borrow<$key> for $name {
            fn borrow(&self) -> &$key {
                self.key()
            }
        }

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.key().hash(state);
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.key() == other.key()
            }
        }

        impl Eq for $name {}
    };
}

index_entry!(
    /// The by-id index, looked up by `&str`.
    ById by str = |entry| entry.id.as_str()
);
index_entry!(
    /// The by-hash index, looked up by `&KeyHash`.
    ByHash by KeyHash = |entry| &entry.hash
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Digests that differ only in their last bytes (as seeded test keys' do) spread over the
    /// buckets: a hasher that read only the first bytes would give them one value.
    #[test]
    fn digests_differing_only_at_the_end_hash_apart() {
        let build = DigestHasher::default();
        let hashes: HashSet<u64> = (0..1000u64)
            .map(|n| {
                let digest = KeyHash::from_hex(&format!("{n:064x}")).expect("hex");
                build.hash_one(digest)
            })
            .collect();
        assert_eq!(hashes.len(), 1000);
    }
}
