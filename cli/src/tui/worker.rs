//! The only part of the dashboard that does I/O: runs effects against the daemon and ticks
//! the refresh clock.
//!
//! Each effect runs in its own task, so a slow list never delays a revoke, and its answer
//! comes back to the UI thread as an [`Event`] on a channel. The UI thread never waits on the
//! network; when the daemon is down the answers are failures, which the app turns into the
//! banner, and the next tick retries (modelled on gitui's asyncgit and ratatui's async-github
//! example).

use std::sync::mpsc::Sender;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc::UnboundedReceiver;

use super::effect::Effect;
use super::event::{Event, Failure};
use crate::client::ApiClient;

/// How often the dashboard refreshes (SPEC §7 "live").
pub const REFRESH_EVERY: Duration = Duration::from_secs(3);

/// A dashboard request gives up well before the next few ticks: the banner should appear
/// within seconds of the daemon going quiet, not after the CLI's 30 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until the UI drops its effect sender (the dashboard closed) or the UI's event
/// receiver is gone.
pub async fn run(client: ApiClient, mut effects: UnboundedReceiver<Effect>, events: Sender<Event>) {
    {
        // Once: the providers a key may name (the forms' hint); the daemon checks them anyway.
        let (client, events) = (client.clone(), events.clone());
        tokio::spawn(async move {
            let providers = client
                .list_providers()
                .await
                .map_err(|err| Failure::from_error(&err));
            let _ = events.send(Event::Providers(providers));
        });
    }
    let mut ticker = tokio::time::interval(REFRESH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if events.send(Event::Tick(Timestamp::now())).is_err() {
                    return;
                }
            }
            effect = effects.recv() => {
                let Some(effect) = effect else { return };
                let client = client.clone();
                let events = events.clone();
                tokio::spawn(async move {
                    if let Some(event) = perform(&client, effect).await {
                        // The UI may have closed meanwhile; nobody is left to tell.
                        let _ = events.send(event);
                    }
                });
            }
        }
    }
}

/// One effect's request and the event that reports it. Effects for the UI thread itself
/// (quit, clipboard) have no request and no answer.
pub async fn perform(client: &ApiClient, effect: Effect) -> Option<Event> {
    let failure = |err: anyhow::Error| Failure::from_error(&err);
    Some(match effect {
        Effect::Refresh => Event::Keys(client.list_all_keys(None).await.map_err(failure)),
        Effect::LoadUsage { key_id, from, to } => {
            let result = client
                .key_usage(&key_id, Some(from), Some(to))
                .await
                .map_err(failure);
            Event::Usage { key_id, result }
        }
        Effect::Create(create) => Event::Created(client.create_key(&create).await.map_err(failure)),
        Effect::Update { key_id, update } => {
            Event::Updated(client.update_key(&key_id, &update).await.map_err(failure))
        }
        Effect::Revoke { key_id } => {
            Event::Revoked(client.revoke_key(&key_id).await.map_err(failure))
        }
        Effect::Clipboard(_) | Effect::Quit => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Transport;

    #[tokio::test]
    async fn a_missing_daemon_is_an_unreachable_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = ApiClient::new(Transport::Unix(dir.path().join("none.sock")));
        let Some(Event::Keys(Err(failure))) = perform(&client, Effect::Refresh).await else {
            panic!("a failed key list");
        };
        assert!(failure.unreachable, "{failure:?}");
        assert!(failure.message.contains("none.sock"), "{failure:?}");
        assert!(perform(&client, Effect::Quit).await.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_worker_ticks_and_stops_when_the_ui_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = ApiClient::new(Transport::Unix(dir.path().join("none.sock")));
        let (effect_tx, effect_rx) = tokio::sync::mpsc::unbounded_channel();
        let (event_tx, event_rx) = std::sync::mpsc::channel();
        let worker = tokio::spawn(run(client, effect_rx, event_tx));
        effect_tx.send(Effect::Refresh).expect("send");
        let mut saw_tick = false;
        let mut saw_keys = false;
        let mut saw_providers = false;
        while !(saw_tick && saw_keys && saw_providers) {
            let event =
                tokio::task::block_in_place(|| event_rx.recv_timeout(Duration::from_secs(5)))
                    .expect("an event");
            match event {
                Event::Tick(_) => saw_tick = true,
                Event::Keys(Err(_)) => saw_keys = true,
                // Asked once at start, unprompted.
                Event::Providers(Err(_)) => saw_providers = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(effect_tx);
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("worker stops")
            .expect("no panic");
    }
}
