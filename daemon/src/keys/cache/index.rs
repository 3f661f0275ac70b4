//! The key table's indexes: by id, by hash and in creation order, each holding pointers to
//! the one entry rather than copies of its id.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use gateway_shared::KeyHash;

use super::KeyEntry;

#[derive(Debug, Default)]
pub(super) struct Index {
    pub(super) by_id: HashSet<ById>,
    pub(super) by_hash: HashSet<ByHash, BuildHasherDefault<DigestHasher>>,
    /// Creation order (then id), for stable pagination.
    pub(super) order: Vec<Arc<KeyEntry>>,
    /// A rotated key's id → its successor's (`KeyView::replaced_by`). Here rather than in
    /// each entry: few keys are ever rotated, and an entry's size is paid by every key.
    pub(super) successors: HashMap<String, String>,
}

/// The hasher of the by-hash index: a key's hash is a SHA-256 digest, already uniform, so its
/// first eight bytes are the bucket hash. SipHash of the 32 bytes on every request's look-up
/// cost ~600 instructions (callgrind) and protects nothing here: only the operator's keys are
/// ever inserted, and no one can choose a digest to collide with them.
#[derive(Default)]
pub(super) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // A `[u8; 32]` is hashed as its length, then its bytes: the length is the same for
        // every digest, so the bytes alone decide.
        let mut first = [0; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }

    fn write_usize(&mut self, _length: usize) {}
}

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

    #[test]
    fn a_digest_hashes_as_its_first_eight_bytes() {
        let build = BuildHasherDefault::<DigestHasher>::default();
        let a = KeyHash::of("sk-proxy-a");
        let b = KeyHash::of("sk-proxy-b");
        assert_eq!(build.hash_one(a), build.hash_one(a));
        assert_ne!(build.hash_one(a), build.hash_one(b));
        let bytes = a.to_hex();
        let first = u64::from_str_radix(&bytes[..16], 16).expect("hex");
        assert_eq!(
            build.hash_one(a),
            first.swap_bytes(),
            "little-endian first eight bytes"
        );
    }
}
