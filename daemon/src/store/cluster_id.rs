//! Which cluster a replica belongs to (SPEC §9): the shared database's id (`cluster` table,
//! a random id made with the schema), remembered in `data_dir/cluster-id` on the first start
//! against it.
//!
//! Without it, a replica pointed at a fresh or emptied database (a wrong URL, a server
//! restored empty) migrated a new schema, loaded no keys and served as if all were well while
//! its peers served the real keys. Now such a start is refused, naming both ids and how to
//! join another cluster on purpose: remove the file. A data directory without the file joins
//! whatever database it finds (the first start, or a replica from before this check).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The file in the data directory that holds the cluster id.
pub const FILE: &str = "cluster-id";

/// How a start relates to the cluster the data directory remembers.
#[derive(Debug, PartialEq, Eq)]
pub enum Membership {
    /// The data directory had no id: it now remembers `found`.
    Joined,
    /// The database is the cluster the data directory remembers.
    Same,
}

/// Checks the store's cluster id `found` against the one `data_dir` remembers, remembering
/// it when there is none; an error (naming both ids and the file) when they differ.
pub fn check(data_dir: &Path, found: &str) -> anyhow::Result<Membership> {
    let path = data_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let remembered = text.trim();
            anyhow::ensure!(
                remembered == found,
                "this replica belongs to cluster {remembered} (remembered in {}), but the \
                 database belongs to cluster {found}: it is not the database this replica's \
                 cluster uses (a wrong URL, or a server restored empty or from another \
                 cluster?). If this replica is to join that cluster on purpose, remove {} and \
                 start it again",
                path.display(),
                path.display()
            );
            Ok(Membership::Same)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            remember(&path, found)?;
            tracing::info!(cluster_id = found, "joined the cluster");
            Ok(Membership::Joined)
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the id through a temporary file renamed into place, so that a crash leaves either
/// no file or the whole id, never half of one.
fn remember(path: &Path, id: &str) -> anyhow::Result<()> {
    let mut temporary = PathBuf::from(path);
    temporary.set_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        writeln!(file, "{id}")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::postgres::test_database::TestDatabase;

    #[test]
    fn the_first_start_remembers_the_id_and_a_different_one_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(check(dir.path(), "one").expect("first"), Membership::Joined);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).expect("file"),
            "one\n"
        );
        assert_eq!(check(dir.path(), "one").expect("again"), Membership::Same);
        let message = format!("{:#}", check(dir.path(), "two").expect_err("refused"));
        assert!(message.contains("belongs to cluster one"), "{message}");
        assert!(message.contains("belongs to cluster two"), "{message}");
        assert!(
            message.contains(&format!("remove {}", dir.path().join(FILE).display())),
            "{message}"
        );
        assert_eq!(check(dir.path(), "one").expect("kept"), Membership::Same);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_pointed_at_a_fresh_database_is_refused_until_its_file_is_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let first = TestDatabase::create("cluster_id_a").await;
        let fresh = TestDatabase::create("cluster_id_b").await;
        let store = Store::connect_postgres(&first.url).await.expect("first");
        let id = store.cluster_id().await.expect("id").expect("postgres");
        assert_eq!(check(dir.path(), &id).expect("joins"), Membership::Joined);
        // Every connection (a restart, another replica) reads the same id.
        let again = Store::connect_postgres(&first.url).await.expect("again");
        assert_eq!(again.cluster_id().await.expect("id"), Some(id.clone()));
        assert_eq!(check(dir.path(), &id).expect("same"), Membership::Same);

        let other = Store::connect_postgres(&fresh.url).await.expect("fresh");
        let other_id = other.cluster_id().await.expect("id").expect("postgres");
        assert_ne!(other_id, id, "each new schema gets its own id");
        let message = format!("{:#}", check(dir.path(), &other_id).expect_err("refused"));
        assert!(
            message.contains(&id) && message.contains(&other_id),
            "{message}"
        );
        std::fs::remove_file(dir.path().join(FILE)).expect("remove");
        assert_eq!(
            check(dir.path(), &other_id).expect("joins on purpose"),
            Membership::Joined
        );
    }
}
