//! The change feed: every key and admin-token change appends a row to `changes` and
//! notifies `gatewayd_changes` in its own transaction, so that other replicas reload what
//! changed (`listen`), and a replica that was disconnected reads what it missed.
//!
//! A follower reads "every change after the last seq I saw", which is only right if seqs
//! become visible in order: with two writers, seq 11 could commit before seq 10, a follower
//! woken by 11 would move past 10, and 10 would be missed for good. So a change transaction
//! takes one advisory lock first, before any row lock (taking it later could deadlock with a
//! writer holding it and waiting for our row), and holds it to its commit: change
//! transactions run one at a time and commit in seq order. They are management writes, a
//! handful a second at most; PostgreSQL already serialises commits that NOTIFY.

use anyhow::Context;
use deadpool_postgres::{Object, Transaction};
use tokio_postgres::Client;

/// The channel replicas listen on; the payload is the newest seq of the transaction.
pub const CHANNEL: &str = "gatewayd_changes";

/// The advisory lock change transactions take ("gatewy" and 2).
const CHANGES_LOCK: i64 = 0x6761_7465_7779_0002;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A key was created or its row changed (edit, revoke, rotation): reload it.
    Key,
    /// An admin token was created or its row changed: reload it.
    AdminToken,
    /// The key `id` was rotated from another (`Store::predecessor_of`): the two share a
    /// budget.
    Rotation,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Key => "key",
            ChangeKind::AdminToken => "admin_token",
            ChangeKind::Rotation => "rotation",
        }
    }

    fn parse(text: &str) -> Option<ChangeKind> {
        match text {
            "key" => Some(ChangeKind::Key),
            "admin_token" => Some(ChangeKind::AdminToken),
            "rotation" => Some(ChangeKind::Rotation),
            _ => None,
        }
    }
}

/// One committed change: its place in the feed, what changed, and the id of what changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    pub id: String,
    /// For a key change, the version it committed (`KeyRecord::version`): a replica whose
    /// table holds that version or a newer one has nothing to read. `None` for the other
    /// kinds, and for a key change written by a gatewayd that did not record it.
    pub version: Option<u64>,
}

/// A change to record in a change transaction: what changed, its id, and for a key the
/// version it commits.
pub type Changed<'a> = (ChangeKind, &'a str, Option<u64>);

/// Starts a transaction that will record changes: takes the changes lock first (see the
/// module docs).
pub async fn begin(client: &mut Object) -> anyhow::Result<Transaction<'_>> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGES_LOCK])
        .await
        .context("waiting for the changes lock")?;
    Ok(tx)
}

/// Appends `changes` and notifies the channel with the last seq; both take effect at commit.
pub async fn append(
    tx: &tokio_postgres::Transaction<'_>,
    changes: &[Changed<'_>],
) -> anyhow::Result<()> {
    let mut last: i64 = 0;
    for (kind, id, version) in changes {
        let version = version.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        last = tx
            .query_one(
                "INSERT INTO changes (kind, id, version) VALUES ($1, $2, $3) RETURNING seq",
                &[&kind.as_str(), id, &version],
            )
            .await
            .context("recording the change")?
            .get(0);
    }
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &last.to_string()])
        .await
        .context("notifying the change")?;
    Ok(())
}

/// The changes after `seq`, oldest first.
pub async fn since(client: &Client, seq: i64) -> anyhow::Result<Vec<Change>> {
    let rows = client
        .query(
            "SELECT seq, kind, id, version FROM changes WHERE seq > $1 ORDER BY seq",
            &[&seq],
        )
        .await
        .context("reading the changes")?;
    rows.iter().map(decode).collect()
}

/// The change at `seq` and every one after it, oldest first: a follower checks that the
/// first is still the change it delivered last (see `listen`).
pub async fn from(client: &Client, seq: i64) -> anyhow::Result<Vec<Change>> {
    let rows = client
        .query(
            "SELECT seq, kind, id, version FROM changes WHERE seq >= $1 ORDER BY seq",
            &[&seq],
        )
        .await
        .context("reading the changes")?;
    rows.iter().map(decode).collect()
}

/// The newest change, if the feed has any.
pub async fn newest(client: &Client) -> anyhow::Result<Option<Change>> {
    let row = client
        .query_opt(
            "SELECT seq, kind, id, version FROM changes ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .context("reading the newest change")?;
    row.as_ref().map(decode).transpose()
}

fn decode(row: &tokio_postgres::Row) -> anyhow::Result<Change> {
    let kind: String = row.get(1);
    Ok(Change {
        seq: row.get(0),
        kind: ChangeKind::parse(&kind)
            .with_context(|| format!("a change of unknown kind `{kind}`"))?,
        id: row.get(2),
        version: row
            .get::<_, Option<i64>>(3)
            .and_then(|v| u64::try_from(v).ok()),
    })
}
