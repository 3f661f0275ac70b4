//! Applying a key change another replica committed (`keys::sync`), without ever rolling the
//! table back.
//!
//! The follower reads a key's current row and then applies it; this replica's own
//! `KeyService` may commit a newer change to the same key and update the table in between,
//! and the row read before that commit must not replace the newer entry. Every row carries
//! its key's version (`KeyRecord::version`, one more per committed change), so the rule is
//! one comparison under the table's lock: a row older than the entry is ignored
//! (`KeyCache::upsert`, which the service uses too). Nothing needs to be noted before the
//! read, and nothing is read twice.
//!
//! The one exception is a database restored from a backup (`Event::Reset`): its versions
//! restarted with it and no longer order rows against this table's, so
//! [`KeyCache::replace_stored`] puts every stored row in as it is.

use std::sync::Arc;

use super::{KeyCache, KeyEntry, KeyRecord, Live};

/// What [`KeyCache::replace_stored`] changed beyond taking the store's rows.
#[derive(Debug, Default)]
pub struct Restored {
    /// Keys taken out of the table: the store does not have them.
    pub removed: Vec<String>,
    /// Keys kept revoked though the store has them active: their rows as stored, with the
    /// table's `revoked_at`, to write back.
    pub revocations: Vec<KeyRecord>,
}

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
    /// Puts `record` (a key as the store has it now) in the table unless the table holds a
    /// newer version of it, keeping the entry's live state as [`KeyCache::upsert`] does.
    /// With a `predecessor` that is in the table (the key was rotated from it), the key
    /// shares the predecessor's live state instead, as [`KeyCache::insert_successor`] does.
    /// Applying the same row twice changes nothing. Answers the entry now in the table.
    pub fn apply_stored(&self, record: KeyRecord, predecessor: Option<&str>) -> Arc<KeyEntry> {
        self.put_unless_older(record, predecessor)
    }

    /// Puts every key as the store has it now in the table **whatever the versions** (the
    /// database was restored from a backup: its versions may be lower than the table's and
    /// still be the truth), keeping each entry's live state as [`KeyCache::upsert`] does, then
    /// links each rotation (successor id, predecessor id) as [`KeyCache::link_successor`]
    /// does, predecessors first, and takes out the keys the store does not have (made after
    /// the backup: every replica follows the store, and a replica started later would not
    /// know them).
    ///
    /// One thing the store's word does not undo: a revocation (SPEC §2: revoked is
    /// terminal). A key the table holds as revoked and the store as not (revoked after the
    /// backup) stays revoked here, at the table's instant, and comes back in
    /// [`Restored::revocations`] (the store's row with that `revoked_at`, at the store's
    /// version) for the caller to write back to the store.
    pub fn replace_stored(
        &self,
        records: Vec<KeyRecord>,
        rotations: &[(String, String)],
    ) -> Restored {
        let stored: std::collections::HashSet<String> =
            records.iter().map(|r| r.id.clone()).collect();
        let revocations = records
            .into_iter()
            .filter_map(|record| self.put_stored(record))
            .collect();
        let mut links: Vec<(Arc<KeyEntry>, &str)> = rotations
            .iter()
            .filter_map(|(successor, predecessor)| {
                Some((self.get(successor)?, predecessor.as_str()))
            })
            .collect();
        links.sort_by(|(a, _), (b, _)| a.order().cmp(&b.order()));
        for (successor, predecessor) in links {
            self.link_successor(&successor.id, predecessor);
        }
        let mut index = self.write();
        let gone: Vec<String> = index
            .order
            .iter()
            .filter(|entry| !stored.contains(entry.id.as_str()))
            .map(|entry| entry.id.to_string())
            .collect();
        for id in &gone {
            index.remove(id);
        }
        Restored {
            removed: gone,
            revocations,
        }
    }

    /// Puts one key as the store has it in the table whatever the versions, keeping its live
    /// state and a revocation the table holds (see [`KeyCache::replace_stored`]); answers the
    /// row to write back when it kept one.
    pub fn put_stored(&self, mut record: KeyRecord) -> Option<KeyRecord> {
        let policy = self.policy(&mut record);
        let mut index = self.write();
        let mut lost_revocation = None;
        let live = match index.by_id.get(record.id.as_str()) {
            Some(current) => {
                let held = current.0.revoked_at();
                if held.is_some_and(|held| record.revoked_at.is_none_or(|r| r > held)) {
                    record.revoked_at = held;
                    lost_revocation = Some(record.clone());
                }
                current.0.live()
            }
            None => Live::fresh(&record, Arc::clone(&self.clock)),
        };
        index.put(Arc::new(KeyEntry::new(record, policy, live)));
        lost_revocation
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
            .insert(predecessor.id.to_string(), successor.id.to_string());
        if Arc::ptr_eq(&successor.runtime, &predecessor.runtime) {
            return Link::AlreadyShared;
        }
        let shared = KeyEntry::new(
            successor.record(),
            Arc::clone(&successor.policy),
            predecessor.live(),
        );
        index.put(Arc::new(shared));
        Link::Linked
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{clock, record};
    use super::*;

    fn at_version(id: &str, version: u64, name: &str) -> KeyRecord {
        KeyRecord {
            name: name.into(),
            version,
            ..record(id, 1)
        }
    }

    #[test]
    fn a_row_read_before_a_newer_local_change_is_ignored() {
        let cache = KeyCache::new([record("a", 1)], clock());
        let loaded = cache.get("a").expect("a");
        // The follower reads the row at version 1; this replica commits an edit (version 2)
        // and updates the table; then the follower applies what it read: ignored.
        let local = cache.upsert(at_version("a", 2, "newer"));
        assert_eq!((local.version, local.name.as_str()), (2, "newer"));
        let kept = cache.apply_stored(at_version("a", 1, "older"), None);
        assert!(Arc::ptr_eq(&kept, &local), "the newer entry stays");
        assert_eq!(cache.get("a").expect("a").name, "newer");

        // A newer row (another replica's change after ours) is applied, keeping the state.
        let applied = cache.apply_stored(at_version("a", 3, "newest"), None);
        assert_eq!((applied.version, applied.name.as_str()), (3, "newest"));
        assert!(Arc::ptr_eq(&applied.runtime, &loaded.runtime));
        // And this replica's own echo or a late local update of version 2 changes nothing.
        let late = cache.upsert(at_version("a", 2, "newer"));
        assert!(Arc::ptr_eq(&late, &applied));
        assert_eq!(cache.get("a").expect("a").version, 3);
    }

    #[test]
    fn a_new_key_is_added_once() {
        let cache = KeyCache::new([], clock());
        let added = cache.apply_stored(record("new", 1), None);
        assert_eq!(cache.len(), 1);
        let again = cache.apply_stored(record("new", 1), None);
        assert!(Arc::ptr_eq(&again.runtime, &added.runtime));
        assert_eq!(cache.len(), 1, "applying twice adds nothing");
    }

    #[test]
    fn a_remote_rotation_shares_the_predecessors_state_like_a_local_one() {
        let cache = KeyCache::new([record("old", 1)], clock());
        let old = cache.get("old").expect("old");
        // Applied with its predecessor known: shares its state at once.
        let new = cache.apply_stored(record("new", 2), Some("old"));
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

    #[test]
    fn a_restored_store_replaces_newer_entries_keeping_state_and_rotations() {
        let cache = KeyCache::new(
            [
                at_version("a", 5, "newer"),
                record("old", 1),
                record("new", 2),
            ],
            clock(),
        );
        let before = cache.get("a").expect("a");
        let restored = cache.replace_stored(
            vec![
                at_version("a", 2, "restored"),
                record("old", 1),
                record("new", 2),
            ],
            &[("new".into(), "old".into())],
        );
        assert!(restored.removed.is_empty() && restored.revocations.is_empty());
        let after = cache.get("a").expect("a");
        assert_eq!((after.version, after.name.as_str()), (2, "restored"));
        assert!(Arc::ptr_eq(&after.runtime, &before.runtime));
        let (old, new) = (
            cache.get("old").expect("old"),
            cache.get("new").expect("new"),
        );
        assert!(
            Arc::ptr_eq(&old.runtime, &new.runtime),
            "the rotation is linked"
        );
        // Keys the restored store lacks are taken out, from every index.
        let restored = cache.replace_stored(vec![record("old", 1)], &[]);
        let mut removed = restored.removed;
        removed.sort();
        assert_eq!(removed, ["a", "new"]);
        assert_eq!(cache.len(), 1);
        assert!(cache.get("a").is_none() && cache.get("new").is_none());
        assert!(
            cache.by_hash(&new.hash).is_none(),
            "no longer found by its hash"
        );
        let now = jiff::Timestamp::from_second(2_000).expect("ts");
        assert_eq!(cache.view(&old, now).replaced_by, None);
    }

    #[test]
    fn a_restore_never_undoes_a_revocation() {
        let mut revoked = record("k", 1);
        revoked.revoked_at = Some(jiff::Timestamp::from_second(1_000).expect("ts"));
        revoked.version = 3;
        let cache = KeyCache::new([revoked], clock());
        // The backup predates the revocation: the key is active there, at a lower version.
        let restored = cache.replace_stored(vec![at_version("k", 1, "k")], &[]);
        let entry = cache.get("k").expect("k");
        assert_eq!(
            entry.revoked_at(),
            Some(jiff::Timestamp::from_second(1_000).expect("ts"))
        );
        let [write_back] = &restored.revocations[..] else {
            panic!("one revocation to write back: {restored:?}");
        };
        assert_eq!(
            (write_back.version, write_back.revoked_at),
            (1, entry.revoked_at())
        );
        // A store that has it revoked (earlier or the same) needs nothing written.
        let again = cache.replace_stored(vec![entry.record()], &[]);
        assert!(again.revocations.is_empty());
    }
}
