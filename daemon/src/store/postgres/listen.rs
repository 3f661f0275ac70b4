//! Following the change feed (`changes`) from another replica: a task on a connection of its
//! own (not the pool's: deadpool drops notifications, and a pooled connection would be
//! handed to others) that `LISTEN`s and turns each wake-up into the changes after the last
//! seq it delivered.
//!
//! A notification is only a wake-up; what is delivered is always read from the table, in
//! seq order, from the last seq delivered, so none is skipped or repeated. NOTIFY is never
//! replayed to a connection that was down, so after every (re)connect the task first
//! `LISTEN`s, then reads what it missed, then waits. A silent dead peer is caught by TCP
//! keepalives (`connect`) and by a re-read every [`RESYNC`] that doubles as a liveness check;
//! reconnects back off from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`].
//!
//! **A feed that goes backwards.** A database restored from a backup (point in time, or a
//! dump) has its `changes` sequence back where the backup was: new changes get seqs this
//! replica has already passed, and "after the last seq" would skip them for good (a
//! revocation never applied here). Key versions restart too, so they no longer say which row
//! is newer. Each read therefore starts *at* the last delivered seq and checks that the
//! change there is still the one delivered (same kind, id and version); when it is gone or
//! different, the history this replica followed is not the database's any more, and the
//! listener sends [`Event::Reset`] with the newest seq now: the consumer reloads everything
//! (regardless of versions) and the feed goes on from there. When the listener starts, it
//! knows only the seq it starts from, and takes the change found there as the one delivered.
//!
//! **Health.** [`Event::CaughtUp`] follows the first successful read after each (re)connect:
//! the store answers and what was missed is on its way; `Connected` alone says neither.

use std::future::poll_fn;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::changes::{self, CHANNEL, Change};
use super::connect::{self, Target};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the changes are read even without a notification.
const RESYNC: Duration = Duration::from_secs(30);
/// The longest a read of the changes may take before the connection counts as lost.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Events waiting for the consumer; when full, the listener waits (it loses nothing).
const QUEUE: usize = 64;

/// What the listener tells its consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Listening (first connect or a reconnect); the changes missed meanwhile follow.
    Connected,
    /// The first read after a (re)connect succeeded: what was missed meanwhile has been
    /// delivered (just before this), so the store counts as available again.
    CaughtUp,
    /// Changes committed since the last delivered, in seq order (never empty).
    Changes(Vec<Change>),
    /// The feed went backwards (the database was restored from a backup, see the module
    /// docs): reload every key, rotation and admin token from the store, replacing what is
    /// held whatever its version. The changes after `seq` follow, so a change committed
    /// during the reload is applied again (harmless), never missed.
    Reset { seq: i64 },
    /// The connection failed or was lost (why, without the password); reconnecting.
    Disconnected(String),
}

/// Follows the change feed at `url` from after `from_seq` (`Store::max_change_seq` read
/// before loading). Runs until the receiver is dropped. Must be called in a tokio runtime.
pub fn listen(url: &str, from_seq: i64) -> anyhow::Result<mpsc::Receiver<Event>> {
    let mut target = connect::parse(url)?;
    target.config.application_name("gatewayd listener");
    let runtime = tokio::runtime::Handle::try_current()
        .context("the change listener needs a tokio runtime")?;
    let (tx, rx) = mpsc::channel(QUEUE);
    runtime.spawn(follow(target, from_seq, tx));
    Ok(rx)
}

/// Where the feed is: the last seq delivered, and the change delivered there when known.
struct Position {
    seq: i64,
    /// `None` at start (the listener was given only a seq): the change found there is taken.
    last: Option<Change>,
}

async fn follow(target: Target, from_seq: i64, events: mpsc::Sender<Event>) {
    let mut backoff = FIRST_BACKOFF;
    let mut position = Position {
        seq: from_seq,
        last: None,
    };
    loop {
        let mut connected = false;
        let err = match session(&target, &mut position, &events, &mut connected).await {
            Ok(()) => return,
            Err(err) => err,
        };
        if connected {
            backoff = FIRST_BACKOFF;
        }
        let why = format!("PostgreSQL at {}: {err:#}", target.described);
        tracing::warn!(error = %why, retry_in_ms = backoff.as_millis() as u64, "change listener disconnected");
        if events.send(Event::Disconnected(why)).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = events.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: `Ok` when the consumer went away, `Err` when the connection did.
async fn session(
    target: &Target,
    position: &mut Position,
    events: &mpsc::Sender<Event>,
    connected: &mut bool,
) -> anyhow::Result<()> {
    let (client, mut connection) = target
        .config
        .connect(target.tls.clone())
        .await
        .context("connecting")?;
    // The connection's messages: notifications become wake-ups, its end (or error) the
    // session's.
    let (wake_tx, mut wakes) = mpsc::unbounded_channel::<Result<(), tokio_postgres::Error>>();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if wake_tx.send(Ok(())).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    let _ = wake_tx.send(Err(err));
                    return;
                }
                None => return,
            }
        }
    });
    let _stop_driver = AbortOnDrop(driver);

    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .context("listening")?;
    *connected = true;
    if events.send(Event::Connected).await.is_err() {
        return Ok(());
    }
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    let mut caught_up = false;
    loop {
        if !deliver(&client, position, events).await? {
            return Ok(());
        }
        if !caught_up {
            caught_up = true;
            if events.send(Event::CaughtUp).await.is_err() {
                return Ok(());
            }
        }
        tokio::select! {
            wake = wakes.recv() => match wake {
                Some(Ok(())) => {
                    // One read covers every notification queued so far.
                    while let Ok(Ok(())) = wakes.try_recv() {}
                }
                Some(Err(err)) => return Err(err).context("the connection failed"),
                None => anyhow::bail!("the connection closed"),
            },
            _ = resync.tick() => {}
            () = events.closed() => return Ok(()),
        }
    }
}

/// Reads and sends the changes after `position`, or a reset when the feed went backwards;
/// `false` when the consumer is gone.
async fn deliver(
    client: &tokio_postgres::Client,
    position: &mut Position,
    events: &mpsc::Sender<Event>,
) -> anyhow::Result<bool> {
    let mut changes = tokio::time::timeout(READ_TIMEOUT, changes::from(client, position.seq))
        .await
        .context("reading the changes timed out")??;
    if position.seq > 0 {
        let first = changes.first().filter(|first| first.seq == position.seq);
        let same = match (first, &position.last) {
            (Some(first), Some(last)) => first == last,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !same {
            return reset(client, position, events).await;
        }
        let delivered = changes.remove(0);
        position.last = Some(delivered);
    }
    let Some(newest) = changes.last().cloned() else {
        return Ok(true);
    };
    if events.send(Event::Changes(changes)).await.is_err() {
        return Ok(false);
    }
    *position = Position {
        seq: newest.seq,
        last: Some(newest),
    };
    Ok(true)
}

/// The feed no longer holds the change last delivered: tells the consumer to reload, and
/// goes on from the newest change now.
async fn reset(
    client: &tokio_postgres::Client,
    position: &mut Position,
    events: &mpsc::Sender<Event>,
) -> anyhow::Result<bool> {
    let newest = tokio::time::timeout(READ_TIMEOUT, changes::newest(client))
        .await
        .context("reading the changes timed out")??;
    let seq = newest.as_ref().map_or(0, |c| c.seq);
    tracing::warn!(
        last_seq = position.seq,
        newest_seq = seq,
        "the change feed went backwards (was the database restored from a backup?): \
         reloading every key and admin token"
    );
    if events.send(Event::Reset { seq }).await.is_err() {
        return Ok(false);
    }
    *position = Position { seq, last: newest };
    Ok(true)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
