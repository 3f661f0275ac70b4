//! Applying a key change another replica committed (`keys::sync`), without ever rolling the
//! table back.
//!
//! The follower reads a key's current row and then applies it; this replica's own
//! `KeyService` may commit a newer change to the same key and update the table in between.
//! Applied blindly, the row read before that commit would replace the newer entry until the
//! notification of this replica's own change came round. So the follower notes the entry
//! (or its absence) before reading the row, and the row is applied only if the entry is
//! still that one; otherwise the follower reads the row again, which is then at least as
//! new as what the table holds (an entry is only ever put in the table after its row
//! committed).

use std::sync::Arc;

use super::{KeyCache, KeyEntry, KeyRecord, KeyRuntime};

/// The key's entry changed after it was noted: read the row again and retry.
#[derive(Debug, PartialEq, Eq)]
pub struct ChangedMeanwhile;

/// What [`KeyCache::link_successor`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Link {
    /// The successor now shares its predecessor's live state.
    Linked,
    /// They already shared it (a rotation made here, or one applied before).
    AlreadyShared,
    /// One of the two keys is not in the table.
    Missing,
}

impl KeyCache {
    /// Puts `record` (a key as the store has it now) in the table if the key's entry is
    /// still `seen`, keeping the entry's live state as [`KeyCache::upsert`] does. With a
    /// `predecessor` that is in the table (the key was rotated from it), the key shares
    /// the predecessor's live state instead, as [`KeyCache::insert_successor`] does.
    /// Applying the same row twice changes nothing.
    pub fn apply_stored(
        &self,
        mut record: KeyRecord,
        seen: Option<&Arc<KeyEntry>>,
        predecessor: Option<&str>,
    ) -> Result<Arc<KeyEntry>, ChangedMeanwhile> {
        let policy = self.policy(&mut record);
        let mut index = self.write();
        let current = index.by_id.get(record.id.as_str()).map(|e| &e.0);
        let unchanged = match (current, seen) {
            (None, None) => true,
            (Some(current), Some(seen)) => Arc::ptr_eq(current, seen),
            _ => false,
        };
        if !unchanged {
            return Err(ChangedMeanwhile);
        }
        let predecessor = predecessor.and_then(|id| index.by_id.get(id)).map(|e| &e.0);
        let runtime = match (predecessor, current) {
            (Some(predecessor), _) => Arc::clone(&predecessor.runtime),
            (None, Some(current)) => Arc::clone(&current.runtime),
            (None, None) => Arc::new(KeyRuntime::new(&record, Arc::clone(&self.clock))),
        };
        if let Some(predecessor) = predecessor {
            let predecessor_id = predecessor.id.clone();
            index.successors.insert(predecessor_id, record.id.clone());
        }
        let entry = Arc::new(KeyEntry::new(record, policy, runtime));
        index.put(Arc::clone(&entry));
        Ok(entry)
    }

    /// Makes `successor_id` share `predecessor_id`'s live state and names it the
    /// predecessor's replacement (`KeyView::replaced_by`): a rotation made on another
    /// replica, as [`KeyCache::insert_successor`] does for one made here. One step under
    /// the table's lock, from the entry as it is now, so it never undoes another change.
    pub fn link_successor(&self, successor_id: &str, predecessor_id: &str) -> Link {
        let mut index = self.write();
        let (Some(successor), Some(predecessor)) = (
            index.by_id.get(successor_id).map(|e| Arc::clone(&e.0)),
            index.by_id.get(predecessor_id).map(|e| Arc::clone(&e.0)),
        ) else {
            return Link::Missing;
        };
        index
            .successors
            .insert(predecessor.id.clone(), successor.id.clone());
        if Arc::ptr_eq(&successor.runtime, &predecessor.runtime) {
            return Link::AlreadyShared;
        }
        let shared = KeyEntry::new(
            successor.record(),
            Arc::clone(&successor.policy),
            Arc::clone(&predecessor.runtime),
        );
        index.put(Arc::new(shared));
        Link::Linked
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{clock, record};
    use super::*;

    #[test]
    fn a_row_read_before_a_newer_local_change_is_refused() {
        let cache = KeyCache::new([record("a", 1)], clock());
        let seen = cache.get("a");
        // This replica commits an edit and updates the table after the row was read.
        let mut local = record("a", 1);
        local.name = "newer".into();
        cache.upsert(local);
        let mut read_before = record("a", 1);
        read_before.name = "older".into();
        assert_eq!(
            cache
                .apply_stored(read_before.clone(), seen.as_ref(), None)
                .map(|_| ()),
            Err(ChangedMeanwhile)
        );
        assert_eq!(cache.get("a").expect("a").name, "newer");

        // Read again, noting the entry first: applied, keeping the live state.
        let seen = cache.get("a").expect("a");
        let applied = cache
            .apply_stored(read_before, Some(&seen), None)
            .expect("unchanged since noted");
        assert!(Arc::ptr_eq(&applied.runtime, &seen.runtime));
        assert_eq!(cache.get("a").expect("a").name, "older");
    }

    #[test]
    fn a_new_key_is_added_once_and_a_local_create_meanwhile_wins() {
        let cache = KeyCache::new([], clock());
        let added = cache
            .apply_stored(record("new", 1), None, None)
            .expect("absent as noted");
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.apply_stored(record("new", 1), None, None).map(|_| ()),
            Err(ChangedMeanwhile),
            "noted absent, but present now"
        );
        let again = cache
            .apply_stored(record("new", 1), Some(&added), None)
            .expect("same row again");
        assert!(Arc::ptr_eq(&again.runtime, &added.runtime));
        assert_eq!(cache.len(), 1, "applying twice adds nothing");
    }

    #[test]
    fn a_remote_rotation_shares_the_predecessors_state_like_a_local_one() {
        let cache = KeyCache::new([record("old", 1)], clock());
        let old = cache.get("old").expect("old");
        // Applied with its predecessor known: shares its state at once.
        let new = cache
            .apply_stored(record("new", 2), None, Some("old"))
            .expect("absent");
        assert!(Arc::ptr_eq(&new.runtime, &old.runtime));
        let now = jiff::Timestamp::from_second(3).expect("ts");
        assert_eq!(cache.view(&old, now).replaced_by.as_deref(), Some("new"));
        assert_eq!(cache.link_successor("new", "old"), Link::AlreadyShared);

        // Linked after the fact (the successor was applied on its own first).
        let cache = KeyCache::new([record("old", 1), record("new", 2)], clock());
        assert_eq!(cache.link_successor("new", "old"), Link::Linked);
        assert_eq!(cache.link_successor("new", "old"), Link::AlreadyShared);
        let (old, new) = (
            cache.get("old").expect("old"),
            cache.get("new").expect("new"),
        );
        assert!(Arc::ptr_eq(&new.runtime, &old.runtime));
        assert_eq!(cache.view(&old, now).replaced_by.as_deref(), Some("new"));
        assert_eq!(new.name, "new", "the successor's settings are kept");
        assert_eq!(cache.link_successor("ghost", "old"), Link::Missing);
    }
}
