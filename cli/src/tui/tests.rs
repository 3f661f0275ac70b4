//! Whole screens rendered into ratatui's `TestBackend` and compared as insta snapshots, plus
//! the event loop driven by a scripted channel, plus mouse clicks aimed at what a rendered
//! screen shows (found in its text, as an operator would) and fed to `App::update`.
//!
//! Fixtures inject the instant and the keys, so the snapshots are stable. Snapshots hold the
//! text only; a separate test checks that states are also coloured.

use std::sync::mpsc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use gateway_shared::KeyState;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

use super::app::{App, Mode};
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
    terminal
        .draw(|frame| {
            ui::render(app, frame);
        })
        .expect("draw");
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

/// The create form with its last field (Expires) focused and wrong: Shift-Tab from the first
/// field wraps to it.
fn form_on_a_wrong_expiry() -> App {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Char('c')]);
    type_text(&mut app, "ci-runner");
    press(&mut app, &[KeyCode::BackTab]);
    type_text(&mut app, "2020-01-01");
    app
}

/// At 60×12 the form has seven rows for eight fields: it scrolls to the focused last field and
/// shows its error, and says that fields are hidden above. Before, it showed the first fields
/// and cut Expires and its error off the bottom.
#[test]
fn small_form_scrolls_to_the_focused_field_and_its_error() {
    let app = form_on_a_wrong_expiry();
    let text = screen(&app, 60, 12);
    assert!(text.contains("› Expires           2020-01-01▏"), "{text}");
    assert!(text.contains("✗ must be in the future"), "{text}");
    assert!(text.contains("↑ 4 more fields"), "{text}");
    insta::assert_snapshot!(text);
}

/// The same form where everything fits: every field, no scroll indicator.
#[test]
fn form_with_an_error_on_its_last_field_80x24() {
    let app = form_on_a_wrong_expiry();
    let text = screen(&app, 80, 24);
    assert!(!text.contains("more field"), "{text}");
    insta::assert_snapshot!(text);
}

/// At the top of a form too tall for the screen, the line above the hint says how many fields
/// are below.
#[test]
fn small_form_says_what_is_below() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Char('c')]);
    let text = screen(&app, 60, 12);
    assert!(text.contains("› Name"), "{text}");
    assert!(text.contains("↓ 3 more fields"), "{text}");
    insta::assert_snapshot!(text);
    // Submitting the empty form focuses the name and counts the hidden errors.
    press(&mut app, &[KeyCode::Enter]);
    let text = screen(&app, 60, 12);
    assert!(text.contains("✗ must not be empty"), "{text}");
    assert!(text.contains("↓ "), "{text}");
}

/// The daemon's refusal of a submit is at the bottom of the form, whatever field is focused and
/// however short the terminal.
#[test]
fn a_refused_submit_is_shown_in_a_small_form() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Char('c')]);
    type_text(&mut app, "ci-runner");
    press(&mut app, &[KeyCode::BackTab, KeyCode::Enter]);
    app.update(Event::Created(Err(Failure::refused(
        "A key named ci-runner already exists. (conflict)",
    ))));
    for height in 7..=24 {
        let text = screen(&app, 60, height);
        assert!(text.contains("› Expires"), "{height} rows:\n{text}");
        assert!(
            text.contains("✗ A key named ci-runner already exists."),
            "{height} rows:\n{text}"
        );
    }
    insta::assert_snapshot!(screen(&app, 60, 12));
}

/// An error taller than the form shows its start and says that it goes on; a value longer
/// than its line shows its end, where the cursor is.
#[test]
fn what_cannot_fit_in_a_tiny_form_is_marked() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Char('c'), KeyCode::BackTab]);
    type_text(&mut app, "tomorrow");
    let text = screen(&app, 60, 9);
    assert!(text.contains("› Expires           tomorrow▏"), "{text}");
    assert!(text.contains("✗ \"tomorrow\" is not an RFC 3339"), "{text}");
    assert!(text.contains("…│"), "{text}");
    // At 60×12 the whole error fits, under the line that counts the fields above.
    let text = screen(&app, 60, 12);
    assert!(text.contains("↑ 7 more fields"), "{text}");
    assert!(text.contains("2w)"), "{text}");
    press(&mut app, &[KeyCode::Tab, KeyCode::Tab, KeyCode::Tab]);
    type_text(
        &mut app,
        "gpt-4o*, claude-*, gemini-2.5-pro, o1*, o3-mini, text-embedding-3-*",
    );
    let text = screen(&app, 60, 12);
    assert!(text.contains("› Models            …"), "{text}");
    assert!(text.contains("text-embedding-3-*▏│"), "{text}");
}

/// Whatever the size, the focused field's line is on screen as soon as the form has a row, and
/// its error as soon as the form has room for both.
#[test]
fn the_focused_field_is_always_on_screen() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Char('c')]);
    let wrong = [
        "x",
        "mistral",
        "gpt-4o*",
        "not-an-ip",
        "0",
        "ten",
        "",
        "2020-01-01",
    ];
    for text in wrong {
        type_text(&mut app, text);
        press(&mut app, &[KeyCode::Tab]);
    }
    press(&mut app, &[KeyCode::Enter]);
    let super::app::Mode::Create(form) = &app.mode else {
        panic!("the form");
    };
    let fields = form.fields.clone();
    for (at, field) in fields.iter().enumerate() {
        if let super::app::Mode::Create(form) = &mut app.mode {
            form.focus = at;
        }
        for width in [40, 60, 80] {
            // The title, status and hint lines take three rows; the form gets the rest.
            for height in 4..=30 {
                let text = screen(&app, width, height);
                let label = format!("› {}", field.id.label());
                assert!(text.contains(&label), "{width}×{height}:\n{text}");
                if height >= 12
                    && let Some(error) = field.error.as_ref()
                {
                    let start: String = format!("✗ {error}").chars().take(12).collect();
                    assert!(text.contains(&start), "{width}×{height}:\n{text}");
                }
            }
        }
    }
}

#[test]
fn secret_modal_60x12() {
    let mut app = loaded_app();
    app.update(Event::Created(Ok(fixtures::created())));
    let text = screen(&app, 60, 12);
    assert!(text.contains(SECRET), "{text}");
    insta::assert_snapshot!(text);
}

/// The secret is on screen whole, or the screen says it is not and how to get it: never a
/// part of it that could be copied by mistake.
#[test]
fn the_secret_is_never_cut_silently() {
    let mut app = loaded_app();
    app.update(Event::Created(Ok(fixtures::created())));
    // Past the key's prefix, which the table shows too.
    let tail = &SECRET[13..];
    for width in [20, 40, 47, 48, 49, 50, 60, 80] {
        for height in 1..=24 {
            let text = screen(&app, width, height);
            let whole = text.contains(SECRET);
            let partial = text
                .lines()
                .any(|l| !l.contains(SECRET) && l.contains(&tail[..8]));
            assert!(!partial, "{width}×{height}:\n{text}");
            if height >= 3 && !whole {
                assert!(
                    text.contains("does not fit") || text.contains("The secret does"),
                    "{width}×{height}:\n{text}"
                );
            }
            if width >= 60 && height >= 4 {
                assert!(whole, "{width}×{height}:\n{text}");
            }
        }
    }
    insta::assert_snapshot!(screen(&app, 40, 12));
}

/// A short terminal keeps the question and the keys that answer it.
#[test]
fn revoke_confirmation_60x8() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Down, KeyCode::Char('r')]);
    let text = screen(&app, 60, 8);
    assert!(
        text.contains("Revoke key backend-prod (key_backendprod0000000001)?"),
        "{text}"
    );
    assert!(text.contains("y revoke   n/Esc keep it"), "{text}");
    insta::assert_snapshot!(text);
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

/// Draws `app` as the loop does, keeping the hit areas, and returns the screen's lines.
fn draw(app: &mut App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    let mut hits = None;
    terminal
        .draw(|frame| hits = Some(ui::render(app, frame)))
        .expect("draw");
    app.hits = hits.expect("drawn");
    let buffer = terminal.backend().buffer();
    (0..height)
        .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect())
        .collect()
}

/// Where `text` is drawn (column, row), the first time from the top; `None` if it is not.
fn find(lines: &[String], text: &str) -> Option<(u16, u16)> {
    lines.iter().enumerate().find_map(|(y, line)| {
        let at = line.find(text)?;
        let x = line[..at].chars().count();
        Some((u16::try_from(x).ok()?, u16::try_from(y).ok()?))
    })
}

fn mouse(kind: MouseEventKind, (column, row): (u16, u16)) -> Event {
    Event::Mouse(MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

fn click(at: (u16, u16)) -> Event {
    mouse(MouseEventKind::Down(MouseButton::Left), at)
}

/// Clicks the middle of `label` as drawn at this size; fails if it is not on screen.
fn click_on(app: &mut App, width: u16, height: u16, label: &str) -> Vec<Effect> {
    let lines = draw(app, width, height);
    let (x, y) =
        find(&lines, label).unwrap_or_else(|| panic!("{label} on screen:\n{}", lines.join("\n")));
    let middle = u16::try_from(label.chars().count() / 2).expect("fits");
    app.update(click((x + middle, y)))
}

fn selected_name(app: &App) -> Option<&str> {
    app.selected().map(|k| k.name.as_str())
}

#[test]
fn button_bar_120x40() {
    let app = loaded_app();
    insta::assert_snapshot!(screen(&app, 120, 40));
}

/// At 40 columns the buttons that do not fit are left out whole; the hint bar still lists
/// their keys.
#[test]
fn button_bar_40x12() {
    let mut app = loaded_app();
    let lines = draw(&mut app, 40, 12);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("[ Create Key ] [ Edit ] [ Revoke ]"))
    );
    assert!(!lines.iter().any(|l| l.contains("[ Quit ]")));
    insta::assert_snapshot!(screen(&app, 40, 12));
}

/// Each registered button covers exactly its label on screen, at any width, and no two
/// overlap: the hit areas are the drawn ones.
#[test]
fn hit_areas_are_where_the_buttons_are_drawn() {
    for width in [120, 80, 40, 25, 12, 3] {
        let mut app = loaded_app();
        let lines = draw(&mut app, width, 20);
        assert!(!app.hits.buttons.is_empty() || width < 14, "{width}");
        for (i, (rect, button)) in app.hits.buttons.iter().enumerate() {
            let line = &lines[usize::from(rect.y)];
            let drawn: String = line
                .chars()
                .skip(usize::from(rect.x))
                .take(usize::from(rect.width))
                .collect();
            assert_eq!(drawn, button.label(), "at {width} columns");
            assert!(rect.right() <= width, "inside the screen at {width}");
            for (other, _) in &app.hits.buttons[i + 1..] {
                assert!(!rect.intersects(*other), "{rect:?} overlaps {other:?}");
            }
        }
    }
}

#[test]
fn clicking_create_key_opens_the_create_form_at_any_size() {
    for (width, height) in [(120, 40), (80, 24), (40, 12)] {
        let mut app = loaded_app();
        assert_eq!(click_on(&mut app, width, height, "[ Create Key ]"), vec![]);
        assert!(
            matches!(&app.mode, Mode::Create(_)),
            "{width}x{height}: {:?}",
            app.mode
        );
        // The form is in front now: the list's buttons behind it do not answer, and a click
        // inside the form changes nothing.
        let lines = draw(&mut app, width, height);
        let (x, y) = find(&lines, "Create a key").expect("the form's title");
        app.update(click((x + 2, y + 1)));
        app.update(click((2, 2)));
        assert!(matches!(&app.mode, Mode::Create(form) if form.focus == 0));
    }
}

#[test]
fn clicking_a_row_selects_it_and_revoke_asks_about_that_row() {
    let mut app = loaded_app();
    let lines = draw(&mut app, 120, 40);
    let row = find(&lines, "batch-jobs").expect("row");
    assert_eq!(app.update(click(row)), vec![]);
    assert_eq!(selected_name(&app), Some("batch-jobs"));
    // The header and the space under the last row select nothing.
    let header = find(&lines, "NAME").expect("header");
    app.update(click(header));
    app.update(click((10, 30)));
    assert_eq!(selected_name(&app), Some("batch-jobs"));

    assert_eq!(click_on(&mut app, 120, 40, "[ Revoke ]"), vec![]);
    assert!(
        matches!(&app.mode, Mode::ConfirmRevoke { name, .. } if name == "batch-jobs"),
        "{:?}",
        app.mode
    );
    let lines = draw(&mut app, 120, 40);
    assert!(lines.iter().any(|l| l.contains("Revoke key batch-jobs")));
    // The modal's own [ Revoke ] (the list's is behind it) confirms.
    let effects = click_on(&mut app, 120, 40, "[ Keep it ]");
    assert_eq!(effects, vec![]);
    assert!(matches!(app.mode, Mode::List));
    click_on(&mut app, 120, 40, "[ Revoke ]");
    let lines = draw(&mut app, 120, 40);
    let (x, y) = find(&lines, "[ Keep it ]").expect("keep");
    // The modal's [ Revoke ] is on the same line, left of [ Keep it ].
    let revoke = lines[usize::from(y)][..]
        .find("[ Revoke ]")
        .map(|at| lines[usize::from(y)][..at].chars().count())
        .expect("the modal's revoke button");
    assert!(u16::try_from(revoke).expect("fits") < x);
    let effects = app.update(click((u16::try_from(revoke).expect("fits") + 2, y)));
    assert_eq!(
        effects,
        vec![Effect::Revoke {
            key_id: fixtures::BATCH_ID.into()
        }]
    );
}

#[test]
fn edit_and_details_buttons_act_on_the_selected_row() {
    let mut app = loaded_app();
    let lines = draw(&mut app, 120, 40);
    app.update(click(find(&lines, "backend-prod").expect("row")));
    click_on(&mut app, 120, 40, "[ Edit ]");
    assert!(
        matches!(&app.mode, Mode::Edit { form, .. } if form.title().contains(BACKEND_ID)),
        "{:?}",
        app.mode
    );
    press(&mut app, &[KeyCode::Esc]);
    let effects = click_on(&mut app, 120, 40, "[ Details ]");
    assert!(matches!(&app.mode, Mode::Detail { key_id } if key_id == BACKEND_ID));
    assert!(matches!(effects[..], [Effect::LoadUsage { .. }]));
    // The detail pane has its own bar; Back returns to the list.
    click_on(&mut app, 120, 40, "[ Back ]");
    assert!(matches!(app.mode, Mode::List));
    assert_eq!(click_on(&mut app, 120, 40, "[ Quit ]"), vec![Effect::Quit]);
}

#[test]
fn the_wheel_moves_the_selection_over_the_table_only() {
    let mut app = loaded_app();
    let lines = draw(&mut app, 120, 40);
    let over = find(&lines, "analytics").expect("row");
    app.update(mouse(MouseEventKind::ScrollDown, over));
    app.update(mouse(MouseEventKind::ScrollDown, over));
    assert_eq!(selected_name(&app), Some("batch-jobs"));
    app.update(mouse(MouseEventKind::ScrollUp, over));
    assert_eq!(selected_name(&app), Some("backend-prod"));
    // Over the title line: nothing.
    app.update(mouse(MouseEventKind::ScrollDown, (5, 0)));
    assert_eq!(selected_name(&app), Some("backend-prod"));
}

/// Eight keys in a table with room for four rows: the wheel scrolls the table with the
/// selection, and a click selects the row drawn there after scrolling, not the one that was.
#[test]
fn the_wheel_scrolls_a_long_list_and_clicks_follow_it() {
    let mut app = loaded_app();
    let mut keys = fixtures::keys();
    for i in 0..3 {
        let mut extra = keys[0].clone();
        extra.id = format!("key_extra{i}");
        extra.name = format!("zz-extra-{i}");
        keys.push(extra);
    }
    app.update(Event::Keys(Ok(keys)));
    // 10 lines: title, border, buttons, header, 4 rows, status, hints.
    let lines = draw(&mut app, 80, 10);
    let first = find(&lines, "analytics").expect("first row");
    assert!(find(&lines, "zz-extra-2").is_none(), "off screen");
    for _ in 0..7 {
        app.update(mouse(MouseEventKind::ScrollDown, first));
        draw(&mut app, 80, 10);
    }
    assert_eq!(selected_name(&app), Some("zz-extra-2"));
    let lines = draw(&mut app, 80, 10);
    assert!(
        find(&lines, "analytics").is_none(),
        "scrolled:\n{}",
        lines.join("\n")
    );
    let row = find(&lines, "zz-extra-0").expect("scrolled into view");
    app.update(click(row));
    assert_eq!(selected_name(&app), Some("zz-extra-0"));
}

#[test]
fn the_secret_modal_buttons_copy_and_dismiss() {
    let mut app = loaded_app();
    app.update(Event::Created(Ok(fixtures::created())));
    let effects = click_on(&mut app, 80, 24, "[ Copy ]");
    assert!(matches!(effects[..], [Effect::Clipboard(_)]));
    assert_eq!(click_on(&mut app, 80, 24, "[ Dismiss ]"), vec![]);
    assert!(matches!(app.mode, Mode::List));
    assert!(app.secret().is_none());
}

#[test]
fn help_closes_on_a_click_and_the_help_button_opens_it() {
    let mut app = loaded_app();
    click_on(&mut app, 80, 24, "[ Help ]");
    assert!(app.help);
    draw(&mut app, 80, 24);
    // On the list's Quit button, hidden behind help: closes help, does not quit.
    assert_eq!(app.update(click((70, 2))), vec![]);
    assert!(!app.help);
}

/// A click that arrives before the frame for a new screen is drawn is dropped: it was aimed
/// at something no longer there.
#[test]
fn a_click_aimed_at_a_screen_that_has_changed_is_dropped() {
    let mut app = loaded_app();
    let lines = draw(&mut app, 120, 40);
    let revoke = find(&lines, "[ Revoke ]").expect("revoke");
    // The selection moves by key before the next frame: [ Revoke ] was seen for analytics.
    press(&mut app, &[KeyCode::Down]);
    assert_eq!(app.update(click((revoke.0 + 2, revoke.1))), vec![]);
    assert!(matches!(app.mode, Mode::List));
    // The create form opened by key; the Create button behind it was not redrawn yet.
    let create = find(&lines, "[ Create Key ]").expect("create");
    press(&mut app, &[KeyCode::Char('c'), KeyCode::Char('x')]);
    app.update(click((create.0 + 2, create.1)));
    assert!(matches!(&app.mode, Mode::Create(form) if form.fields[0].value == "x"));
}

/// A button clicked while a search is being typed acts (ending the search, which stays
/// applied) rather than typing its letter into the search.
#[test]
fn a_button_click_while_searching_acts_instead_of_typing() {
    let mut app = loaded_app();
    press(&mut app, &[KeyCode::Char('/')]);
    type_text(&mut app, "back");
    click_on(&mut app, 120, 40, "[ Edit ]");
    assert_eq!(app.search, "back");
    assert!(!app.searching);
    assert!(matches!(&app.mode, Mode::Edit { form, .. } if form.title().contains(BACKEND_ID)));
}
