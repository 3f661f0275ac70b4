//! `gwctl tui`: the live dashboard (SPEC §7), wired together.
//!
//! Three parts, after DESIGN §3.6: [`app`] is the state and a pure `update(event) -> effects`;
//! [`worker`] is the only code doing I/O, answering effects with events; [`ui`] draws the state.
//! This module owns the threads and the terminal. The UI thread runs [`run_loop`], which is
//! generic over the ratatui backend so tests drive it with `TestBackend` and a scripted channel
//! of events. A second thread reads the keyboard and the mouse; the worker runs on the
//! command's tokio runtime, and so does a task that turns SIGTERM, SIGHUP and SIGINT into an
//! event. The terminal is restored on every way out: a normal quit, one of those signals (then
//! gwctl exits with 128 + its number, as if it had been killed by it), an error (the loop's
//! result is returned only after restoring) and a panic (a hook restores first). Restoring
//! includes turning mouse reporting off: left on, the shell after gwctl would receive escape
//! sequences for every click and wheel turn.
//!
//! What the daemon sends is escaped as it arrives (the worker's client is
//! [`ApiClient::escaping_text`], and [`event::Failure`] escapes its message): ratatui drops
//! control characters silently, so a name holding `ESC ]0;… BEL` would show as `]0;…`, and
//! the dashboard shows `\u{1b}]0;…\u{7}` instead, as the rest of gwctl does.

pub mod app;
pub mod effect;
pub mod event;
pub mod form;
pub mod hits;
pub mod secret;
pub mod ui;
pub mod worker;

#[cfg(test)]
mod fixtures;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use anyhow::Context;
use crossterm::event::{
    DisableMouseCapture, EnableMouseCapture, Event as TermEvent, MouseButton, MouseEventKind,
};
use jiff::Timestamp;
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedSender;

use crate::client::ApiClient;
use app::App;
use effect::Effect;
use event::Event;
use secret::Secret;

/// Runs the dashboard until the operator quits.
pub async fn run(client: ApiClient) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(crate::Refusal::invalid(
            "gwctl tui needs a terminal on stdin and stdout; use `gwctl keys list` in scripts.",
        )
        .into());
    }
    let target = client.transport().to_string();
    let client = client.with_timeout(worker::REQUEST_TIMEOUT).escaping_text();
    let (event_tx, event_rx) = std::sync::mpsc::channel();
    let (effect_tx, effect_rx) = tokio::sync::mpsc::unbounded_channel();
    let input_tx = event_tx.clone();
    // Listening before the terminal is taken, so no signal can leave it in raw mode.
    let signals = watch_signals(event_tx.clone())?;
    let ui = tokio::task::spawn_blocking(move || ui_thread(target, event_rx, input_tx, effect_tx));
    // The worker returns once the UI thread has dropped its effect sender.
    let (ui, ()) = tokio::join!(ui, worker::run(client, effect_rx, event_tx));
    signals.abort();
    ui.context("the dashboard stopped unexpectedly")?
}

/// The dashboard was stopped by a signal, and gave the terminal back first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signalled(pub i32);

impl Signalled {
    /// What a shell reports for a process the signal killed: 128 + its number.
    pub fn exit_code(self) -> u8 {
        u8::try_from(128 + self.0).unwrap_or(crate::exit_code::FAILURE)
    }
}

impl std::fmt::Display for Signalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by signal {}", self.0)
    }
}

impl std::error::Error for Signalled {}

/// SIGTERM (`kill`, systemd, tmux kill-session), SIGHUP (the terminal went away) and SIGINT
/// from outside (a Ctrl-C typed into the dashboard is a key press in raw mode) would otherwise
/// kill gwctl on the spot, leaving the terminal on the alternate screen, in raw mode, without
/// a cursor. Instead the first one becomes [`Event::Signal`].
fn watch_signals(events: Sender<Event>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listen = |kind: SignalKind| signal(kind).context("listening for signals");
    let mut term = listen(SignalKind::terminate())?;
    let mut hup = listen(SignalKind::hangup())?;
    let mut int = listen(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let kind = tokio::select! {
            _ = term.recv() => SignalKind::terminate(),
            _ = hup.recv() => SignalKind::hangup(),
            _ = int.recv() => SignalKind::interrupt(),
        };
        // The UI may be gone already; then there is nothing left to restore.
        let _ = events.send(Event::Signal(kind.as_raw_value()));
    }))
}

/// Draws, then for each event: update the app, hand its effects to `effects`, draw again.
/// Events that queued up meanwhile are applied before the next draw, so a burst of answers
/// costs one frame. Returns on `Effect::Quit` or when every event sender is gone.
pub fn run_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    events: &Receiver<Event>,
    effects: &mut dyn FnMut(Effect),
) -> anyhow::Result<()> {
    for effect in app.start() {
        effects(effect);
    }
    draw(terminal, app)?;
    while let Ok(first) = events.recv() {
        let mut next = Some(first);
        while let Some(event) = next {
            if let Event::Signal(number) = event {
                // Stop now, whatever else is queued; the caller restores the terminal.
                app.update(event);
                return Err(Signalled(number).into());
            }
            for effect in app.update(event) {
                match effect {
                    Effect::Quit => return Ok(()),
                    other => effects(other),
                }
            }
            next = events.try_recv().ok();
        }
        draw(terminal, app)?;
    }
    Ok(())
}

/// Draws a frame and keeps where it put its buttons and rows, for the clicks that follow.
fn draw<B: Backend>(terminal: &mut Terminal<B>, app: &mut App) -> anyhow::Result<()> {
    let mut hits = hits::Hits::default();
    terminal
        .draw(|frame| hits = ui::render(app, frame))
        .map_err(|e| anyhow::anyhow!("drawing the dashboard: {e}"))?;
    app.hits = hits;
    Ok(())
}

fn ui_thread(
    target: String,
    events: Receiver<Event>,
    input_tx: Sender<Event>,
    effect_tx: UnboundedSender<Effect>,
) -> anyhow::Result<()> {
    // Also installs a panic hook that restores the terminal before the panic is reported.
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(err) => {
            restore_terminal();
            return Err(err).context("setting up the terminal");
        }
    };
    // Ahead of ratatui's hook, which knows nothing of the mouse.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        disable_mouse();
        hook(info);
    }));
    if let Err(err) = crossterm::execute!(std::io::stdout(), EnableMouseCapture) {
        restore_terminal();
        return Err(err).context("turning on mouse reporting");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let input = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || read_input(&input_tx, &stop))
    };
    let mut app = App::new(Timestamp::now(), target);
    let mut sink = |effect: Effect| match effect {
        Effect::Clipboard(secret) => copy_to_clipboard(&secret),
        // A closed worker means the runtime is going away; there is nobody to ask.
        other => drop(effect_tx.send(other)),
    };
    let result = run_loop(&mut terminal, &mut app, &events, &mut sink);
    // Wipes a secret still on screen (quit with Ctrl-C from the modal) before anything else.
    drop(app);
    stop.store(true, Ordering::Relaxed);
    restore_terminal();
    // The reader polls with a timeout, so it notices `stop` within one poll.
    let _ = input.join();
    result
}

/// Mouse reporting off, then raw mode and the alternate screen (ratatui's restore).
fn restore_terminal() {
    disable_mouse();
    ratatui::restore();
}

fn disable_mouse() {
    // Nothing useful to do if the terminal is gone.
    let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
}

/// Forwards key presses, resizes, clicks and wheel turns until told to stop or the UI is gone.
/// Moves, drags and releases are dropped here: the terminal reports every move once mouse
/// capture is on, and each would cost a frame for nothing.
fn read_input(events: &Sender<Event>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let event = match crossterm::event::poll(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => crossterm::event::read(),
            Err(err) => Err(err),
        };
        let event = match event {
            Ok(TermEvent::Key(key)) => Event::Key(key),
            Ok(TermEvent::Resize(..)) => Event::Resize,
            Ok(TermEvent::Mouse(mouse))
                if matches!(
                    mouse.kind,
                    MouseEventKind::Down(MouseButton::Left)
                        | MouseEventKind::ScrollUp
                        | MouseEventKind::ScrollDown
                ) =>
            {
                Event::Mouse(mouse)
            }
            Ok(_) => continue,
            // No more keyboard: quit rather than leave a dashboard nobody can close.
            Err(_) => Event::InputClosed,
        };
        let closed = matches!(event, Event::InputClosed);
        if events.send(event).is_err() || closed {
            return;
        }
    }
}

/// OSC 52 "set clipboard": terminals that support it (and tmux with `set-clipboard on`) put
/// the text on the system clipboard; others ignore the sequence. Written by the thread that
/// draws, between frames, so it cannot land in the middle of one.
fn copy_to_clipboard(secret: &Secret) {
    let sequence = zeroize::Zeroizing::new(osc52(secret.expose()));
    let mut stdout = std::io::stdout().lock();
    // Nothing useful to do if the terminal is gone; the modal still shows the secret.
    let _ = stdout
        .write_all(sequence.as_bytes())
        .and_then(|()| stdout.flush());
}

pub fn osc52(text: &str) -> String {
    format!("\x1b]52;c;{}\x07", base64(text.as_bytes()))
}

/// Standard base64 with padding (RFC 4648 §4), the encoding OSC 52 takes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
