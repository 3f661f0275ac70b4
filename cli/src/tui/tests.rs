//! Whole screens rendered into ratatui's `TestBackend` and compared as insta snapshots, plus
//! the event loop driven by a scripted channel.
//!
//! Fixtures inject the instant and the keys, so the snapshots are stable. Snapshots hold the
//! text only; a separate test checks that states are also coloured.

use std::sync::mpsc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use gateway_shared::KeyState;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

use super::app::App;
use super::effect::Effect;
use super::event::{Event, Failure};
use super::fixtures::{self, BACKEND_ID, SECRET, loaded_app};
use super::{osc52, run_loop, ui};

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn press(app: &mut App, codes: &[KeyCode]) {
    for &code in codes {
        app.update(key(code));
    }
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        app.update(key(KeyCode::Char(c)));
    }
}

fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal.draw(|frame| ui::render(app, frame)).expect("draw");
    terminal
}

fn screen(app: &App, width: u16, height: u16) -> String {
    render(app, width, height).backend().to_string()
}

#[test]
fn list_80x24() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Down]);
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn list_100x30() {
    let app = loaded_app();
    insta::assert_snapshot!(screen(&app, 100, 30));
}

#[test]
fn detail_with_chart_100x30() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Down, KeyCode::Enter]);
    app.update(Event::Usage {
        key_id: BACKEND_ID.into(),
        result: Ok(fixtures::usage()),
    });
    insta::assert_snapshot!(screen(&app, 100, 30));
}

#[test]
fn detail_80x24() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Down, KeyCode::Enter]);
    app.update(Event::Usage {
        key_id: BACKEND_ID.into(),
        result: Ok(fixtures::usage()),
    });
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn create_form_with_a_validation_error() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Char('c')]);
    type_text(&mut app, "ci-runner");
    press(
        &mut app,
        &[KeyCode::Tab, KeyCode::Tab, KeyCode::Tab, KeyCode::Tab],
    );
    type_text(&mut app, "0");
    press(&mut app, &[KeyCode::Tab]);
    type_text(&mut app, "ten");
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn secret_modal() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Char('c')]);
    type_text(&mut app, "ci-runner");
    press(&mut app, &[KeyCode::Enter]);
    app.update(Event::Created(Ok(fixtures::created())));
    let text = screen(&app, 80, 24);
    assert!(
        text.contains(SECRET),
        "the whole secret fits at 80 columns:\n{text}"
    );
    insta::assert_snapshot!(text);
    // Dismissed: not on screen any more.
    press(&mut app, &[KeyCode::Enter]);
    assert!(!screen(&app, 80, 24).contains(SECRET));
}

#[test]
fn revoke_confirmation() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Down, KeyCode::Char('r')]);
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn help_overlay() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Char('?')]);
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn daemon_down_banner() {
    let mut app = loaded_app();
    app.update(Event::Tick(fixtures::ts("2027-01-02T12:00:09Z")));
    app.update(Event::Keys(Err(Failure::unreachable(
        "cannot reach gatewayd at /run/gatewayd/admin.sock (no socket there): is gatewayd \
         running? Use --socket or GWCTL_SOCKET if it listens elsewhere",
    ))));
    insta::assert_snapshot!(screen(&app, 80, 24));
}

#[test]
fn daemon_down_before_the_first_answer() {
    let mut app = App::new(fixtures::now(), fixtures::SOCKET);
    app.start();
    app.update(Event::Keys(Err(Failure::unreachable("no socket"))));
    let text = screen(&app, 80, 24);
    assert!(text.contains("gatewayd unreachable"), "{text}");
    assert!(text.contains("Loading keys"), "{text}");
}

/// Every screen, drawn into areas down to nothing: must not panic.
#[test]
fn tiny_areas_do_not_panic() {
    let mut screens: Vec<App> = Vec::new();
    screens.push(loaded_app());
    let mut detail = loaded_app();
    press(&mut detail, &[KeyCode::Down, KeyCode::Enter]);
    detail.update(Event::Usage {
        key_id: BACKEND_ID.into(),
        result: Ok(fixtures::usage()),
    });
    screens.push(detail);
    let mut form = loaded_app();
    press(&mut form, &[KeyCode::Char('c'), KeyCode::Enter]);
    screens.push(form);
    let mut secret = loaded_app();
    secret.update(Event::Created(Ok(fixtures::created())));
    screens.push(secret);
    let mut confirm = loaded_app();
    press(&mut confirm, &[KeyCode::Char('r')]);
    screens.push(confirm);
    let mut help = loaded_app();
    press(&mut help, &[KeyCode::Char('?')]);
    help.update(Event::Keys(Err(Failure::unreachable("down"))));
    screens.push(help);
    for app in &screens {
        for (width, height) in [(20, 5), (1, 1), (0, 0), (3, 40), (200, 2), (40, 10)] {
            render(app, width, height);
        }
    }
    insta::assert_snapshot!(screen(&screens[0], 20, 5));
}

#[test]
fn states_are_coloured_as_well_as_worded() {
    let app = loaded_app();
    let terminal = render(&app, 100, 30);
    let buffer = terminal.backend().buffer();
    let colour_of = |word: &str| {
        let area = buffer.area;
        for y in 0..area.height {
            let line: String = (0..area.width)
                .map(|x| buffer[(x, y)].symbol().to_owned())
                .collect();
            if let Some(at) = line.find(word) {
                let x = u16::try_from(line[..at].chars().count()).expect("fits");
                return buffer[(x, y)].fg;
            }
        }
        panic!("{word} not on screen");
    };
    assert_eq!(colour_of("active"), Color::Green);
    assert_eq!(colour_of("exhausted"), Color::Yellow);
    assert_eq!(colour_of("expired"), Color::Magenta);
    assert_eq!(colour_of("revoked"), Color::Red);
    let _ = KeyState::ALL;
}

#[test]
fn the_loop_applies_scripted_events_and_hands_out_effects() {
    let (tx, rx) = mpsc::channel();
    for event in [
        Event::Keys(Ok(fixtures::keys())),
        key(KeyCode::Down),
        key(KeyCode::Char('r')),
        key(KeyCode::Char('y')),
        Event::Resize,
    ] {
        tx.send(event).expect("send");
    }
    drop(tx);
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    let mut app = App::new(fixtures::now(), fixtures::SOCKET);
    let mut effects = Vec::new();
    run_loop(&mut terminal, &mut app, &rx, &mut |e| effects.push(e)).expect("loop");
    assert_eq!(
        effects,
        vec![
            Effect::Refresh,
            Effect::Revoke {
                key_id: BACKEND_ID.into()
            }
        ]
    );
    let text = terminal.backend().to_string();
    assert!(text.contains("Revoking key_backendprod"), "{text}");
}

#[test]
fn the_loop_stops_at_quit() {
    let (tx, rx) = mpsc::channel();
    tx.send(key(KeyCode::Char('q'))).expect("send");
    tx.send(key(KeyCode::Char('c'))).expect("send");
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    let mut app = App::new(fixtures::now(), fixtures::SOCKET);
    run_loop(&mut terminal, &mut app, &rx, &mut drop).expect("loop");
    // The key after q was never applied, though the sender is still open.
    assert!(matches!(app.mode, super::app::Mode::List));
    drop(tx);
}

#[test]
fn osc52_encodes_base64() {
    assert_eq!(osc52(""), "\x1b]52;c;\x07");
    assert_eq!(osc52("f"), "\x1b]52;c;Zg==\x07");
    assert_eq!(osc52("fo"), "\x1b]52;c;Zm8=\x07");
    assert_eq!(osc52("foo"), "\x1b]52;c;Zm9v\x07");
    assert_eq!(osc52("foobar"), "\x1b]52;c;Zm9vYmFy\x07");
    assert_eq!(osc52("sk-proxy-ab"), "\x1b]52;c;c2stcHJveHktYWI=\x07");
}

/// A key rotated with a grace period still works until `revoked_at`: the table says it is
/// retiring rather than plainly active, and the detail pane says when.
#[test]
fn a_retiring_key_reads_as_such() {
    let mut app = loaded_app();
    let mut keys = fixtures::keys();
    let backend = keys
        .iter_mut()
        .find(|k| k.id == BACKEND_ID)
        .expect("backend key");
    backend.revoked_at = Some(fixtures::ts("2027-01-02T18:00:00Z"));
    app.update(Event::Keys(Ok(keys)));
    let list = screen(&app, 100, 30);
    let row = list
        .lines()
        .find(|l| l.contains("backend-prod"))
        .expect("row");
    assert!(row.contains("◔ retiring"), "{list}");
    press(&mut app, &[KeyCode::Down, KeyCode::Enter]);
    let detail = screen(&app, 100, 30);
    assert!(detail.contains("retiring"), "{detail}");
    assert!(detail.contains("retires"), "{detail}");
    assert!(detail.contains("(in 6h)"), "{detail}");
    assert!(!detail.contains("revoked "), "{detail}");
}

/// SIGTERM, SIGHUP and SIGINT end the loop at once (the caller then restores the terminal)
/// with an error that makes gwctl exit as the signal would have.
#[test]
fn a_signal_stops_the_loop() {
    let (tx, rx) = mpsc::channel();
    tx.send(Event::Keys(Ok(fixtures::keys()))).expect("send");
    tx.send(Event::Signal(15)).expect("send");
    tx.send(key(KeyCode::Char('c'))).expect("send");
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    let mut app = App::new(fixtures::now(), fixtures::SOCKET);
    let err = run_loop(&mut terminal, &mut app, &rx, &mut drop).expect_err("stopped");
    assert_eq!(
        err.downcast_ref::<super::Signalled>(),
        Some(&super::Signalled(15))
    );
    assert!(
        matches!(app.mode, super::app::Mode::List),
        "c was not applied"
    );
    assert_eq!(super::Signalled(15).exit_code(), 143);
    assert_eq!(super::Signalled(1).exit_code(), 129);
    assert_eq!(app.update(Event::Signal(1)), vec![Effect::Quit]);
    drop(tx);
}
