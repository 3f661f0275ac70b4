//! How a usage batch that fails to commit is retried (the usage writer's policy).
//!
//! A batch that fails is kept and tried again, with growing waits, for as long as the daemon
//! runs, when the failure can heal (a locked, full or unwritable database: an operator fixes
//! it and the usage still lands); when it cannot (the database refuses the rows themselves),
//! the batch is written row by row, each row with its hold's journal change, and only the
//! rows still refused are dropped, each logged. Once shutdown has begun a failing batch gets a
//! few more tries, then is dropped with its size logged, so a broken disk cannot hang the exit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::JournalChanges;
use super::usage::UsageRecord;

/// How failed commits are retried (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// The first wait; each next one twice as long, up to `longest`.
    pub first: Duration,
    pub longest: Duration,
    /// Tries a failing batch still gets once shutdown has begun.
    pub when_stopping: u32,
}

pub const RETRY: Retry = Retry {
    first: Duration::from_millis(200),
    longest: Duration::from_secs(5),
    when_stopping: 3,
};

/// Commits `records` and `journal` with `write`, retrying as the module docs say.
pub fn commit_with_retry(
    records: &[UsageRecord],
    journal: JournalChanges<'_>,
    stopping: &AtomicBool,
    retry: Retry,
    mut write: impl FnMut(&[UsageRecord], JournalChanges<'_>) -> anyhow::Result<()>,
) {
    let mut wait = retry.first;
    let mut tries_while_stopping = 0;
    for attempt in 1u64.. {
        let err = match write(records, journal) {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(attempt, records = records.len(), "usage batch committed");
                }
                return;
            }
            Err(err) => err,
        };
        if !can_heal(&err) {
            tracing::error!(
                records = records.len(),
                error = format!("{err:#}"),
                "usage batch refused; writing it row by row"
            );
            return commit_row_by_row(records, journal, write);
        }
        if stopping.load(Ordering::Acquire) {
            tries_while_stopping += 1;
            if tries_while_stopping >= retry.when_stopping {
                tracing::error!(
                    records = records.len(),
                    error = format!("{err:#}"),
                    "usage batch dropped: the database still fails and the daemon is exiting"
                );
                return;
            }
        }
        tracing::error!(
            attempt,
            records = records.len(),
            retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            error = format!("{err:#}"),
            "usage batch failed to commit; kept for another try"
        );
        std::thread::sleep(wait);
        wait = (wait * 2).min(retry.longest);
    }
}

/// One transaction per row, each with its hold's journal row, and one for the holds to
/// journal: the rows the database accepts land, the ones it refuses are dropped, the first
/// few logged one by one and all of them counted. A dropped row's hold is still deleted: the
/// request settled, and its spend is in the key's counters.
fn commit_row_by_row(
    records: &[UsageRecord],
    journal: JournalChanges<'_>,
    mut write: impl FnMut(&[UsageRecord], JournalChanges<'_>) -> anyhow::Result<()>,
) {
    const LOGGED: usize = 5;
    if !journal.opened.is_empty() {
        let opened = JournalChanges {
            opened: journal.opened,
            settled: &[],
            ..journal
        };
        if let Err(err) = write(&[], opened) {
            tracing::error!(
                holds = journal.opened.len(),
                error = format!("{err:#}"),
                "open holds refused by the database; not journaled"
            );
        }
    }
    let mut dropped = 0;
    for record in records {
        let own = JournalChanges {
            opened: &[],
            settled: record.journaled_hold.as_slice(),
            ..journal
        };
        if let Err(err) = write(std::slice::from_ref(record), own) {
            dropped += 1;
            if dropped <= LOGGED {
                tracing::error!(
                    key_id = %record.key_id,
                    model = %record.model,
                    cost = %record.cost,
                    error = format!("{err:#}"),
                    "usage record refused by the database; dropped"
                );
            }
            if !own.settled.is_empty() {
                let _ = write(&[], own);
            }
        }
    }
    if dropped > 0 {
        tracing::error!(
            dropped,
            records = records.len(),
            "usage records refused by the database and dropped"
        );
    }
}

/// Whether waiting can fix `err`: the database was busy, locked, full, unreadable or
/// unwritable, or memory ran out; PostgreSQL could not be reached, or aborted the
/// transaction to break a deadlock or a serialization conflict. Anything else (a constraint,
/// a schema that does not match) fails the same way every time.
fn can_heal(err: &anyhow::Error) -> bool {
    if super::is_unavailable(err) || postgres_conflict(err) {
        return true;
    }
    use rusqlite::ErrorCode::{
        CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, FileLockingProtocolFailed, OutOfMemory,
        ReadOnly, SystemIoFailure,
    };
    match err.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
            failure.code,
            DatabaseBusy
                | DatabaseLocked
                | DiskFull
                | SystemIoFailure
                | CannotOpen
                | ReadOnly
                | OutOfMemory
                | FileLockingProtocolFailed
        ),
        _ => false,
    }
}

/// PostgreSQL gave up on the transaction for another's sake (deadlock, serialization):
/// trying again succeeds.
fn postgres_conflict(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
        .filter_map(|err| err.code())
        .any(|code| matches!(code.code(), "40001" | "40P01"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spend::holds::HoldId;
    use crate::store::Store;
    use crate::store::writer::tests::record;

    fn ids(ids: &[u64]) -> Vec<HoldId> {
        ids.iter().filter_map(|id| HoldId::new(*id)).collect()
    }

    const NO_HOLDS: JournalChanges<'static> = JournalChanges {
        instance: 7,
        opened: &[],
        settled: &[],
    };

    const FAST: Retry = Retry {
        first: Duration::from_millis(1),
        longest: Duration::from_millis(4),
        when_stopping: 3,
    };

    fn sqlite_error(code: std::ffi::c_int) -> anyhow::Error {
        anyhow::Error::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
        .context("committing usage")
    }

    fn outputs(records: &[UsageRecord]) -> Vec<u64> {
        records.iter().map(|r| r.tokens.output).collect()
    }

    #[test]
    fn a_batch_is_kept_and_retried_until_a_busy_database_takes_it() {
        let records: Vec<UsageRecord> = (0..4).map(record).collect();
        let (mut attempts, mut committed) = (0, Vec::new());
        commit_with_retry(
            &records,
            NO_HOLDS,
            &AtomicBool::new(false),
            FAST,
            |rows, _| {
                attempts += 1;
                if attempts <= 10 {
                    return Err(sqlite_error(rusqlite::ffi::SQLITE_BUSY));
                }
                committed.extend(outputs(rows));
                Ok(())
            },
        );
        assert_eq!(
            attempts, 11,
            "ten failures, well past the three tries of old"
        );
        assert_eq!(committed, [0, 1, 2, 3], "the whole batch, once");
    }

    #[test]
    fn rows_the_database_refuses_are_dropped_alone() {
        let records: Vec<UsageRecord> = (0..5).map(record).collect();
        let mut committed = Vec::new();
        commit_with_retry(
            &records,
            NO_HOLDS,
            &AtomicBool::new(false),
            FAST,
            |rows, _| {
                if rows.iter().any(|r| r.tokens.output == 2) {
                    return Err(sqlite_error(rusqlite::ffi::SQLITE_CONSTRAINT));
                }
                committed.extend(outputs(rows));
                Ok(())
            },
        );
        assert_eq!(committed, [0, 1, 3, 4]);
    }

    #[test]
    fn at_shutdown_a_failing_batch_gets_a_few_more_tries_then_is_given_up() {
        let records: Vec<UsageRecord> = (0..2).map(record).collect();
        let mut attempts = 0;
        commit_with_retry(&records, NO_HOLDS, &AtomicBool::new(true), FAST, |_, _| {
            attempts += 1;
            Err(sqlite_error(rusqlite::ffi::SQLITE_IOERR))
        });
        assert_eq!(attempts, FAST.when_stopping);
    }

    #[test]
    fn only_failures_that_waiting_can_fix_are_retried() {
        assert!(can_heal(&sqlite_error(rusqlite::ffi::SQLITE_BUSY)));
        assert!(can_heal(&sqlite_error(rusqlite::ffi::SQLITE_FULL)));
        assert!(can_heal(&sqlite_error(rusqlite::ffi::SQLITE_READONLY)));
        assert!(!can_heal(&sqlite_error(rusqlite::ffi::SQLITE_CONSTRAINT)));
        assert!(!can_heal(&sqlite_error(rusqlite::ffi::SQLITE_CORRUPT)));
        assert!(!can_heal(&anyhow::anyhow!("not from SQLite")));
    }

    #[test]
    fn the_stores_own_errors_are_told_apart() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gateway.db");
        let store = Store::open(&path).expect("store");
        let other = rusqlite::Connection::open(&path).expect("second connection");
        other
            .execute_batch("ALTER TABLE usage RENAME TO usage_elsewhere")
            .expect("rename");
        let err = store
            .write_usage(&[record(0)], NO_HOLDS, false)
            .expect_err("no usage table");
        assert!(!can_heal(&err), "a missing table does not heal: {err:#}");
        other
            .execute_batch("BEGIN IMMEDIATE; ALTER TABLE usage_elsewhere RENAME TO usage")
            .expect("locked");
        // The store waits out its busy timeout, then reports the lock.
        let err = store
            .write_usage(&[record(0)], NO_HOLDS, false)
            .expect_err("locked");
        assert!(can_heal(&err), "a lock heals: {err:#}");
    }

    #[test]
    fn a_dropped_row_still_releases_its_hold() {
        let records: Vec<UsageRecord> = (0..3)
            .map(|i| UsageRecord {
                journaled_hold: HoldId::new(10 + i),
                ..record(i)
            })
            .collect();
        let mut settled = Vec::new();
        commit_with_retry(
            &records,
            JournalChanges {
                instance: 7,
                opened: &[],
                settled: &ids(&[10, 11, 12]),
            },
            &AtomicBool::new(false),
            FAST,
            |rows, journal| {
                if rows.iter().any(|r| r.tokens.output == 1) {
                    return Err(sqlite_error(rusqlite::ffi::SQLITE_CONSTRAINT));
                }
                settled.extend_from_slice(journal.settled);
                Ok(())
            },
        );
        assert_eq!(settled, ids(&[10, 11, 12]), "the refused row's hold too");
    }
}
