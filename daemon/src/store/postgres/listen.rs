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
    /// Changes committed since the last delivered, in seq order (never empty).
    Changes(Vec<Change>),
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

async fn follow(target: Target, mut last_seq: i64, events: mpsc::Sender<Event>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut connected = false;
        let err = match session(&target, &mut last_seq, &events, &mut connected).await {
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
    last_seq: &mut i64,
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
    loop {
        if !deliver(&client, last_seq, events).await? {
            return Ok(());
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

/// Reads and sends the changes after `last_seq`; `false` when the consumer is gone.
async fn deliver(
    client: &tokio_postgres::Client,
    last_seq: &mut i64,
    events: &mpsc::Sender<Event>,
) -> anyhow::Result<bool> {
    let changes = tokio::time::timeout(READ_TIMEOUT, changes::since(client, *last_seq))
        .await
        .context("reading the changes timed out")??;
    let Some(newest) = changes.last().map(|c| c.seq) else {
        return Ok(true);
    };
    if events.send(Event::Changes(changes)).await.is_err() {
        return Ok(false);
    }
    *last_seq = newest;
    Ok(true)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
