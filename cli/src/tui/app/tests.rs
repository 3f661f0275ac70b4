//! `App::update` driven by key events and worker answers, without a terminal or a daemon.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEventKind};
use gateway_shared::KeyState;
use gateway_shared::api::Patch;

use super::*;
use crate::tui::fixtures::{self, BACKEND_ID, BATCH_ID, INTERN_ID, SECRET, loaded_app, now};

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn press(app: &mut App, code: KeyCode) -> Vec<Effect> {
    app.update(key(code))
}

fn chars(app: &mut App, text: &str) -> Vec<Effect> {
    text.chars()
        .flat_map(|c| press(app, KeyCode::Char(c)))
        .collect()
}

fn names(app: &App) -> Vec<&str> {
    app.visible().iter().map(|k| k.name.as_str()).collect()
}

fn selected_name(app: &App) -> Option<&str> {
    app.selected().map(|k| k.name.as_str())
}

#[test]
fn start_loads_and_ticks_do_not_pile_up() {
    let mut app = App::new(now(), fixtures::SOCKET);
    assert_eq!(app.start(), vec![Effect::Refresh]);
    assert!(
        app.update(Event::Tick(now())).is_empty(),
        "a refresh is already out"
    );
    app.update(Event::Keys(Ok(fixtures::keys())));
    assert!(app.loaded && !app.refreshing);
    assert_eq!(app.last_refresh, Some(now()));
    let later = fixtures::ts("2027-01-02T12:00:03Z");
    assert_eq!(app.update(Event::Tick(later)), vec![Effect::Refresh]);
    assert_eq!(app.now, later);
}

#[test]
fn arrows_and_jk_move_and_the_cursor_follows_its_key() {
    let mut app = loaded_app();
    assert_eq!(
        names(&app),
        [
            "analytics",
            "backend-prod",
            "batch-jobs",
            "intern-laptop",
            "old-staging"
        ]
    );
    assert_eq!(selected_name(&app), Some("analytics"));
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Down);
    assert_eq!(selected_name(&app), Some("batch-jobs"));
    press(&mut app, KeyCode::Char('k'));
    assert_eq!(selected_name(&app), Some("backend-prod"));
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Up);
    assert_eq!(selected_name(&app), Some("analytics"), "stops at the top");
    press(&mut app, KeyCode::End);
    assert_eq!(selected_name(&app), Some("old-staging"));
    press(&mut app, KeyCode::Down);
    assert_eq!(
        selected_name(&app),
        Some("old-staging"),
        "stops at the bottom"
    );
    // A refresh with the keys in another order keeps the same key selected.
    let mut reversed = fixtures::keys();
    reversed.reverse();
    app.update(Event::Tick(now()));
    app.update(Event::Keys(Ok(reversed)));
    assert_eq!(selected_name(&app), Some("old-staging"));
}

#[test]
fn filter_sort_and_search() {
    let mut app = loaded_app();
    press(&mut app, KeyCode::Char('f'));
    assert_eq!(app.filter, Some(KeyState::Active));
    assert_eq!(names(&app), ["analytics", "backend-prod"]);
    for (state, expected) in [
        (KeyState::Exhausted, "batch-jobs"),
        (KeyState::Expired, "old-staging"),
        (KeyState::Revoked, "intern-laptop"),
    ] {
        press(&mut app, KeyCode::Char('f'));
        assert_eq!(app.filter, Some(state));
        assert_eq!(names(&app), [expected]);
    }
    press(&mut app, KeyCode::Char('f'));
    assert_eq!(app.filter, None);

    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, Sort::State);
    assert_eq!(
        names(&app),
        [
            "analytics",
            "backend-prod",
            "batch-jobs",
            "old-staging",
            "intern-laptop"
        ]
    );
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, Sort::Spend);
    assert_eq!(names(&app)[..2], ["analytics", "batch-jobs"]);
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, Sort::LastUsed);
    assert_eq!(names(&app)[0], "batch-jobs");
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, Sort::Created);
    assert_eq!(names(&app)[0], "backend-prod");
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, Sort::Name);

    press(&mut app, KeyCode::Char('/'));
    assert!(app.searching);
    // While searching, letters are text, not commands.
    assert!(chars(&mut app, "B").is_empty());
    assert_eq!(names(&app), ["backend-prod", "batch-jobs"]);
    chars(&mut app, "ac");
    assert_eq!(names(&app), ["backend-prod"]);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Enter);
    assert!(!app.searching);
    assert_eq!(app.search, "Ba");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.search, "", "Esc clears the search before it quits");
    assert_eq!(press(&mut app, KeyCode::Esc), vec![Effect::Quit]);
}

#[test]
fn detail_loads_thirty_days_of_usage_and_refreshes_them() {
    let mut app = loaded_app();
    press(&mut app, KeyCode::Down);
    let effects = press(&mut app, KeyCode::Enter);
    let load = Effect::LoadUsage {
        key_id: BACKEND_ID.into(),
        from: "2026-12-04".parse().expect("date"),
        to: "2027-01-02".parse().expect("date"),
    };
    assert_eq!(effects, vec![load]);
    assert!(matches!(&app.mode, Mode::Detail { key_id } if key_id == BACKEND_ID));
    app.update(Event::Usage {
        key_id: BACKEND_ID.into(),
        result: Ok(fixtures::usage()),
    });
    assert!(app.usage.as_ref().is_some_and(|u| u.report.is_some()));
    // A tick refreshes both; the old report stays until the new one lands.
    let effects = app.update(Event::Tick(now()));
    assert_eq!(effects.len(), 2, "{effects:?}");
    assert!(app.usage.as_ref().is_some_and(|u| u.report.is_some()));
    // An answer for another key is ignored.
    app.update(Event::Usage {
        key_id: BATCH_ID.into(),
        result: Err(Failure::refused("nope")),
    });
    assert!(app.usage.as_ref().is_some_and(|u| u.error.is_none()));
    // Down moves to the next key and loads its usage.
    let effects = press(&mut app, KeyCode::Down);
    assert!(matches!(&effects[..], [Effect::LoadUsage { key_id, .. }] if key_id == BATCH_ID));
    // q goes back rather than quitting.
    assert!(press(&mut app, KeyCode::Char('q')).is_empty());
    assert!(matches!(app.mode, Mode::List));
    assert_eq!(press(&mut app, KeyCode::Char('q')), vec![Effect::Quit]);
}

fn create_and_receive(app: &mut App) {
    press(app, KeyCode::Char('c'));
    assert!(matches!(app.mode, Mode::Create(_)));
    chars(app, "ci-runner");
    let effects = press(app, KeyCode::Enter);
    assert!(
        matches!(&effects[..], [Effect::Create(create)] if create.name == "ci-runner"),
        "{effects:?}"
    );
    // A second Enter while the first is out sends nothing.
    assert!(press(app, KeyCode::Enter).is_empty());
    let effects = app.update(Event::Created(Ok(fixtures::created())));
    assert_eq!(effects, vec![Effect::Refresh]);
}

#[test]
fn the_secret_is_shown_once_then_gone() {
    let mut app = loaded_app();
    create_and_receive(&mut app);
    assert_eq!(app.secret(), Some(SECRET));
    assert!(
        !format!("{app:?}").contains(SECRET),
        "Debug must not print it"
    );
    // Keys other than copy and dismiss do nothing; copy hands a copy to the UI thread.
    assert!(press(&mut app, KeyCode::Char('q')).is_empty());
    let effects = press(&mut app, KeyCode::Char('c'));
    assert!(matches!(&effects[..], [Effect::Clipboard(s)] if s.expose() == SECRET));
    drop(effects);
    assert!(matches!(&app.mode, Mode::Secret(m) if m.copied));

    press(&mut app, KeyCode::Enter);
    assert_eq!(app.secret(), None);
    assert!(matches!(app.mode, Mode::List));
    // The new key is listed and selected, without its secret; nothing reopens the modal.
    assert_eq!(selected_name(&app), Some("ci-runner"));
    for code in [
        KeyCode::Enter,
        KeyCode::Esc,
        KeyCode::Char('c'),
        KeyCode::Esc,
    ] {
        press(&mut app, code);
        assert_eq!(app.secret(), None, "{code:?}");
    }
    app.update(Event::Tick(now()));
    app.update(Event::Keys(Ok(fixtures::keys())));
    assert_eq!(app.secret(), None);
}

#[test]
fn a_secret_arriving_after_the_form_was_left_is_still_shown() {
    let mut app = loaded_app();
    press(&mut app, KeyCode::Char('c'));
    chars(&mut app, "ci-runner");
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Esc);
    assert!(matches!(app.mode, Mode::List));
    app.update(Event::Created(Ok(fixtures::created())));
    assert_eq!(app.secret(), Some(SECRET));
}

#[test]
fn create_refusals_stay_in_the_form() {
    let mut app = loaded_app();
    press(&mut app, KeyCode::Char('c'));
    // Nothing typed: Enter shows the name's error and sends nothing.
    assert!(press(&mut app, KeyCode::Enter).is_empty());
    let Mode::Create(form) = &app.mode else {
        panic!("still the form")
    };
    assert!(form.fields[0].touched && form.fields[0].error.is_some());
    chars(&mut app, "dup");
    press(&mut app, KeyCode::Enter);
    app.update(Event::Created(Err(Failure::refused(
        "Invalid name: taken. (invalid_argument)",
    ))));
    let Mode::Create(form) = &app.mode else {
        panic!("still the form")
    };
    assert!(!form.submitting);
    assert_eq!(
        form.error.as_deref(),
        Some("Invalid name: taken. (invalid_argument)")
    );
    assert!(app.down.is_none());
    // Unreachable also raises the banner.
    press(&mut app, KeyCode::Enter);
    app.update(Event::Created(Err(Failure::unreachable("no socket"))));
    assert_eq!(app.down.as_deref(), Some("no socket"));
}

#[test]
fn edit_only_editable_fields_and_not_revoked_keys() {
    let mut app = loaded_app();
    press(&mut app, KeyCode::End);
    press(&mut app, KeyCode::Up); // intern-laptop, revoked
    assert_eq!(app.selected().map(|k| k.id.as_str()), Some(INTERN_ID));
    assert!(press(&mut app, KeyCode::Char('e')).is_empty());
    assert!(matches!(app.mode, Mode::List));
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.error && s.text.contains("revoked"))
    );

    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Down); // backend-prod
    press(&mut app, KeyCode::Enter);
    press(&mut app, KeyCode::Char('e'));
    let Mode::Edit { form, back } = &app.mode else {
        panic!("the edit form")
    };
    assert_eq!(*back, Back::Detail(BACKEND_ID.into()));
    assert!(
        form.fields
            .iter()
            .all(|f| f.id != super::super::form::FieldId::Expires)
    );
    // Rate limit is the fifth field: clear it and type a new one.
    for _ in 0..4 {
        press(&mut app, KeyCode::Tab);
    }
    app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    chars(&mut app, "120");
    let effects = press(&mut app, KeyCode::Enter);
    let [Effect::Update { key_id, update }] = &effects[..] else {
        panic!("{effects:?}")
    };
    assert_eq!(key_id, BACKEND_ID);
    assert_eq!(update.rate_limit_rpm, Patch::Set(120));
    assert!(update.name.is_none() && update.spend_limit_usd.is_keep());
    let mut saved = fixtures::keys()[0].clone();
    saved.rate_limit_rpm = Some(120);
    app.update(Event::Updated(Ok(saved)));
    assert!(matches!(&app.mode, Mode::Detail { key_id } if key_id == BACKEND_ID));
    assert_eq!(
        app.key(BACKEND_ID).and_then(|k| k.rate_limit_rpm),
        Some(120)
    );
}

#[test]
fn revoke_asks_first_naming_the_key() {
    let mut app = loaded_app();
    press(&mut app, KeyCode::Down); // backend-prod
    press(&mut app, KeyCode::Char('r'));
    let Mode::ConfirmRevoke { key_id, name, .. } = &app.mode else {
        panic!("a confirmation")
    };
    assert_eq!(
        (key_id.as_str(), name.as_str()),
        (BACKEND_ID, "backend-prod")
    );
    assert!(press(&mut app, KeyCode::Char('n')).is_empty());
    assert!(matches!(app.mode, Mode::List));
    press(&mut app, KeyCode::Char('r'));
    assert!(
        press(&mut app, KeyCode::Char('x')).is_empty(),
        "only y confirms"
    );
    let effects = press(&mut app, KeyCode::Char('y'));
    assert_eq!(
        effects,
        vec![Effect::Revoke {
            key_id: BACKEND_ID.into()
        }]
    );
    let mut revoked = fixtures::keys()[0].clone();
    revoked.state = KeyState::Revoked;
    app.update(Event::Revoked(Ok(revoked)));
    assert_eq!(
        app.key(BACKEND_ID).map(|k| k.state),
        Some(KeyState::Revoked)
    );
    assert!(
        app.status
            .as_ref()
            .is_some_and(|s| s.text.starts_with("Revoked key backend-prod"))
    );
    // Revoking again is refused locally.
    assert!(press(&mut app, KeyCode::Char('r')).is_empty());
    assert!(matches!(app.mode, Mode::List));
}

#[test]
fn the_banner_comes_and_goes_with_the_daemon() {
    let mut app = loaded_app();
    app.update(Event::Tick(now()));
    app.update(Event::Keys(Err(Failure::unreachable(
        "cannot reach gatewayd",
    ))));
    assert_eq!(app.down.as_deref(), Some("cannot reach gatewayd"));
    assert_eq!(app.keys().len(), 5, "the last known keys stay");
    // R retries at once, even with a request still out.
    app.update(Event::Tick(now()));
    assert_eq!(press(&mut app, KeyCode::Char('R')), vec![Effect::Refresh]);
    app.update(Event::Keys(Ok(fixtures::keys())));
    assert_eq!(app.down, None);
    // A refusal is a status message, not the banner.
    app.update(Event::Revoked(Err(Failure::refused(
        "Key is revoked. (key_revoked)",
    ))));
    assert_eq!(app.down, None);
    assert!(app.status.as_ref().is_some_and(|s| s.error));
}

#[test]
fn help_overlays_and_quitting() {
    let mut app = loaded_app();
    press(&mut app, KeyCode::Char('?'));
    assert!(app.help);
    // Inside help, q closes help instead of quitting, and other keys do nothing.
    assert!(press(&mut app, KeyCode::Char('c')).is_empty());
    assert!(matches!(app.mode, Mode::List));
    assert!(press(&mut app, KeyCode::Char('q')).is_empty());
    assert!(!app.help);
    // Ctrl-C quits from anywhere, even a form.
    press(&mut app, KeyCode::Char('c'));
    let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(app.update(ctrl_c), vec![Effect::Quit]);
    assert_eq!(app.update(Event::InputClosed), vec![Effect::Quit]);
}

fn click(column: u16, row: u16) -> Event {
    Event::Mouse(crossterm::event::MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

/// Before the first frame nothing was drawn, so a click can hit nothing.
#[test]
fn clicks_before_the_first_frame_are_ignored() {
    let mut app = loaded_app();
    assert_eq!(app.update(click(3, 2)), vec![]);
    assert!(matches!(app.mode, Mode::List));
}

/// A row drawn for a key that a refresh or the filter has since hidden selects nothing.
#[test]
fn a_click_on_a_row_whose_key_is_hidden_now_selects_nothing() {
    use ratatui::layout::Rect;
    let mut app = loaded_app();
    app.hits = Hits {
        view: Some(app.view()),
        buttons: vec![(Rect::new(1, 2, 8, 1), Button::Edit)],
        rows: vec![
            (Rect::new(0, 4, 80, 1), INTERN_ID.to_owned()),
            (Rect::new(0, 5, 80, 1), BACKEND_ID.to_owned()),
        ],
        table: Some(Rect::new(0, 3, 80, 10)),
    };
    press(&mut app, KeyCode::Char('f')); // active keys only: intern-laptop is revoked
    app.update(click(5, 4));
    assert_eq!(selected_name(&app), Some("analytics"));
    app.update(click(5, 5));
    assert_eq!(selected_name(&app), Some("backend-prod"));
    // The selection changed since the frame: [ Edit ] was drawn for analytics, so it waits
    // for a frame showing backend-prod selected.
    assert_eq!(app.update(click(3, 2)), vec![]);
    assert!(matches!(app.mode, Mode::List));
    app.hits.view = Some(app.view());
    app.update(click(3, 2));
    assert!(matches!(&app.mode, Mode::Edit { form, .. } if form.title().contains(BACKEND_ID)));
}

/// SPEC §10: the forms offer the daemon's providers, configured ones included, once it said
/// them; before that (or if it could not), the general hint.
#[test]
fn the_forms_offer_the_daemons_providers() {
    use crate::tui::form::FieldId;
    use gateway_shared::api::{ProviderList, ProviderView};
    use gateway_shared::provider::ProviderKind;

    let mut app = loaded_app();
    press(&mut app, KeyCode::Char('c'));
    let Mode::Create(form) = &app.mode else {
        panic!("a create form");
    };
    assert_eq!(form.hint(FieldId::Providers), FieldId::Providers.hint());
    press(&mut app, KeyCode::Esc);

    let view = |name: &str, kind, builtin| ProviderView {
        name: name.parse().expect("name"),
        kind,
        builtin,
    };
    let list = ProviderList {
        providers: vec![
            view("openai", ProviderKind::Openai, true),
            view("azure", ProviderKind::AzureOpenai, false),
            view("local-llama", ProviderKind::Openai, false),
        ],
    };
    assert!(app.update(Event::Providers(Ok(list))).is_empty());
    press(&mut app, KeyCode::Char('c'));
    let Mode::Create(form) = &app.mode else {
        panic!("a create form");
    };
    assert_eq!(
        form.hint(FieldId::Providers),
        "openai, azure, local-llama (empty: all)"
    );
    assert_eq!(form.hint(FieldId::Name), FieldId::Name.hint());
}
