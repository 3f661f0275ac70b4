//! A backup of a test database and its restore, done the way an operator would: `pg_dump`
//! while the replicas run, later `pg_restore` into a fresh database swapped in under the
//! old name (the old database dropped with its connections). Replicas then reconnect to a
//! store whose history is older than the one they followed (SPEC §9, issue #16).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{PgDatabase, connect, postgres_bin_dir, with_database};

impl PgDatabase {
    /// Writes a backup of the database as it is now to `to` (`pg_dump`'s custom format).
    pub async fn backup(&self, to: &Path) {
        run_tool(
            "pg_dump",
            &[
                "--format=custom",
                "--file",
                &to.display().to_string(),
                &self.url,
            ],
        )
        .await;
    }

    /// Replaces the database with the backup at `from`: restored into a database of its own,
    /// then the current one is dropped (its connections ended) and the restored one renamed
    /// to its name. Between the two, connections to the name fail as if it were down.
    pub async fn restore(&self, from: &Path) {
        let staging = format!("{}_restore", self.name);
        let server = connect(&self.server_url, "the shared PostgreSQL").await;
        server
            .batch_execute(&format!("CREATE DATABASE \"{staging}\""))
            .await
            .unwrap_or_else(|e| panic!("creating {staging}: {e:?}"));
        run_tool(
            "pg_restore",
            &[
                "--no-owner",
                "--exit-on-error",
                "--dbname",
                &with_database(&self.server_url, &staging),
                &from.display().to_string(),
            ],
        )
        .await;
        // Two statements: DROP DATABASE may not run inside a transaction block, which one
        // multi-statement query would be.
        for statement in [
            format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name),
            format!("ALTER DATABASE \"{staging}\" RENAME TO \"{}\"", self.name),
        ] {
            server
                .batch_execute(&statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e:?}"));
        }
    }
}

/// Runs one of PostgreSQL's client programs, panicking with its stderr when it fails.
async fn run_tool(name: &str, args: &[&str]) {
    let program = tool(name);
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&program).args(args).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} took over 60 s"))
    .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A client program of the same PostgreSQL as the server binaries, else Debian's (it ships
/// them with the server package, in the same directory).
fn tool(name: &str) -> PathBuf {
    let beside_server = postgres_bin_dir().join(name);
    if beside_server.is_file() {
        return beside_server;
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path().join("bin").join(name)))
        .filter(|path| path.is_file())
        .max()
        .unwrap_or_else(|| PathBuf::from(name))
}
