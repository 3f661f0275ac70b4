//! Drawing: one function of the app's state, nothing else.
//!
//! The screen is a title line, the daemon-down banner when there is one, the main area (the
//! keys table or a key's detail), a status line and a one-line key hint bar; forms, modals and
//! help are drawn over the main area. Nothing here changes state or does I/O, so any state
//! can be rendered into a `TestBackend` and compared as text. Every size is computed with
//! saturating arithmetic and ratatui's layout, so a terminal of any size, down to 1×1, draws
//! what fits rather than panicking.
//!
//! Rendering also returns [`Hits`]: the rectangles the clickable buttons and rows were drawn
//! into, taken from the very layout that placed them, so a click hits what is on screen at
//! any size. Only the screen in front registers its buttons; a bar behind a modal is dimmed.

mod detail;
mod form;
mod keys_table;
mod modal;

use gateway_shared::KeyState;
use gateway_shared::api::KeyView;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::app::{App, Back, Mode};
use super::hits::{Button, Hits, Screen};
use crate::output::relative;

pub fn render(app: &App, frame: &mut Frame) -> Hits {
    let area = frame.area();
    let view = app.view();
    let mut hits = Hits::default();
    let banner_height = app
        .down
        .as_ref()
        .map_or(0, |message| 1 + wrapped_height(message, area.width).min(2));
    let [title, banner, main, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(banner_height),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_title(app, frame, title);
    if let Some(message) = &app.down {
        render_banner(message, frame, banner);
    }
    // The list or detail is in front unless a form, modal or help is drawn over it.
    let in_front = matches!(view.screen, Screen::List | Screen::Detail);
    let background_hits = in_front.then_some(&mut hits);
    match background(app) {
        Some(key_id) => detail::render(app, key_id, frame, main, background_hits),
        None => keys_table::render(app, frame, main, background_hits),
    }
    match &app.mode {
        Mode::Create(form) | Mode::Edit { form, .. } => form::render(app, form, frame, main),
        Mode::ConfirmRevoke { key_id, name, .. } => {
            modal::confirm_revoke(key_id, name, frame, main, &mut hits)
        }
        Mode::Secret(modal) => modal::secret(modal, frame, main, &mut hits),
        Mode::List | Mode::Detail { .. } => {}
    }
    if app.help {
        modal::help(frame, main);
    }
    render_status(app, frame, status, main);
    render_hints(app, frame, hints);
    hits.view = Some(view);
    hits
}

/// `[ Create Key ] [ Edit ] …` on one line from the left, a cell apart. Whole buttons only: one
/// that does not fit is left out (its key still works), never cut or overlapped. With `hits`
/// (the bar is in front) each drawn button is registered where it was drawn; without, the bar
/// is dimmed.
pub fn button_bar(buttons: &[Button], frame: &mut Frame, area: Rect, hits: Option<&mut Hits>) {
    if area.height == 0 {
        return;
    }
    let active = hits.is_some();
    let mut placed = Vec::new();
    let mut spans = Vec::new();
    let mut x = 0u16;
    for &button in buttons {
        let label = button.label();
        let width = u16::try_from(label.chars().count()).unwrap_or(u16::MAX);
        let start = x.saturating_add(1);
        let end = start.saturating_add(width);
        if end > area.width {
            continue;
        }
        spans.push(Span::raw(" ".repeat(usize::from(start - x))));
        let style = match (active, button) {
            (false, _) => Style::new().fg(Color::DarkGray),
            (true, Button::Revoke | Button::ConfirmRevoke) => {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            }
            (true, _) => Style::new().add_modifier(Modifier::BOLD),
        };
        spans.push(Span::styled(label, style));
        placed.push((Rect::new(area.x + start, area.y, width, 1), button));
        x = end;
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
    if let Some(hits) = hits {
        hits.buttons.extend(placed);
    }
}

/// The detail pane's key when it is on screen, behind a form or a modal too.
fn background(app: &App) -> Option<&str> {
    match &app.mode {
        Mode::Detail { key_id }
        | Mode::Edit {
            back: Back::Detail(key_id),
            ..
        }
        | Mode::ConfirmRevoke {
            back: Back::Detail(key_id),
            ..
        } => Some(key_id),
        _ => None,
    }
}

fn render_title(app: &App, frame: &mut Frame, area: Rect) {
    let clock = app.now.strftime("%H:%M:%S UTC").to_string();
    let left = Line::from(vec![
        Span::styled(
            " Gateway AI ",
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ),
        Span::raw(" keys · "),
        Span::styled(app.target.clone(), Style::new().fg(Color::DarkGray)),
    ]);
    frame.render_widget(Paragraph::new(left), area);
    frame.render_widget(Paragraph::new(Line::from(clock).right_aligned()), area);
}

fn render_banner(message: &str, frame: &mut Frame, area: Rect) {
    let style = Style::new().fg(Color::White).bg(Color::Red);
    let lines = vec![
        Line::from(vec![Span::styled(
            "✗ gatewayd unreachable: last known keys shown; retrying every 3 s (R: now)",
            style.add_modifier(Modifier::BOLD),
        )]),
        Line::from(Span::styled(message.to_owned(), style)),
    ];
    frame.render_widget(
        Paragraph::new(lines).style(style).wrap(Wrap { trim: true }),
        area,
    );
}

/// `main` is where modals are drawn: when the secret modal cannot show the secret whole there,
/// the status line says so, so the secret is never cut off without a word.
fn render_status(app: &App, frame: &mut Frame, area: Rect, main: Rect) {
    if let Mode::Secret(secret) = &app.mode
        && !modal::secret_on_screen(secret, main)
    {
        frame.render_widget(
            Paragraph::new(Span::styled(
                format!("✗ {}", modal::SECRET_NOT_SHOWN),
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            )),
            area,
        );
        return;
    }
    if let Some(status) = &app.status {
        let style = if status.error {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Green)
        };
        let prefix = if status.error { "✗ " } else { "✓ " };
        frame.render_widget(
            Paragraph::new(Span::styled(format!("{prefix}{}", status.text), style)),
            area,
        );
    } else {
        let filter = app.filter.map_or("all", KeyState::as_str);
        let mut text = format!(
            "{} of {} keys · filter: {filter} · sort: {}",
            app.visible().len(),
            app.keys().len(),
            app.sort.as_str()
        );
        if app.searching || !app.search.is_empty() {
            text.push_str(&format!(" · search: {}", app.search));
            if app.searching {
                text.push('▏');
            }
        }
        frame.render_widget(Paragraph::new(text), area);
    }
    let freshness = match app.last_refresh {
        None => "loading…".to_owned(),
        Some(at) => format!("updated {}", relative(at, app.now)),
    };
    frame.render_widget(
        Paragraph::new(
            Line::from(Span::styled(freshness, Style::new().fg(Color::DarkGray))).right_aligned(),
        ),
        area,
    );
}

fn render_hints(app: &App, frame: &mut Frame, area: Rect) {
    let hints: &[(&str, &str)] = if app.help {
        &[("?/Esc", "close help")]
    } else {
        match &app.mode {
            Mode::List if app.searching => {
                &[("type", "search"), ("Enter", "done"), ("Esc", "clear")]
            }
            Mode::List => &[
                ("?", "help"),
                ("q", "quit"),
                ("Enter", "detail"),
                ("c", "create"),
                ("e", "edit"),
                ("r", "revoke"),
                ("/", "search"),
                ("f", "filter"),
                ("s", "sort"),
                ("↑↓", "move"),
            ],
            Mode::Detail { .. } => &[
                ("↑↓", "next key"),
                ("e", "edit"),
                ("r", "revoke"),
                ("c", "create"),
                ("?", "help"),
                ("q/Esc", "back"),
            ],
            Mode::Create(_) | Mode::Edit { .. } => &[
                ("Tab/↑↓", "field"),
                ("←→", "reset period"),
                ("Ctrl-U", "clear"),
                ("Enter", "save"),
                ("Esc", "cancel"),
            ],
            Mode::ConfirmRevoke { .. } => &[("y", "revoke"), ("n/Esc", "keep")],
            Mode::Secret(_) => &[("c", "copy (OSC 52)"), ("Enter/Esc", "dismiss")],
        }
    };
    // Whole hints only: one that does not fit is left out (help lists them all), never cut.
    let mut spans = Vec::new();
    let mut used = 0usize;
    for (key, what) in hints {
        let width = key.chars().count() + what.chars().count() + 3;
        if used + width > usize::from(area.width) {
            continue;
        }
        used += width;
        spans.push(Span::styled(
            format!(" {key}"),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(format!(" {what} ")));
    }
    frame.render_widget(
        Paragraph::new(Line::from(spans)).style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
    );
}

/// A state as a symbol and its word, coloured: the word alone carries it without colour.
/// A key's state as [`state_span`] shows it, except that an active key rotated with a grace
/// period reads `◔ retiring` (the detail pane says when): it works, but not for long.
pub fn key_state_span(key: &KeyView) -> Span<'static> {
    if key.state == KeyState::Active && crate::output::retires_at(key).is_some() {
        return Span::styled("◔ retiring", Style::new().fg(Color::Cyan));
    }
    state_span(key.state)
}

pub fn state_span(state: KeyState) -> Span<'static> {
    let (symbol, colour) = match state {
        KeyState::Active => ("●", Color::Green),
        KeyState::Exhausted => ("◐", Color::Yellow),
        KeyState::Expired => ("○", Color::Magenta),
        KeyState::Revoked => ("✕", Color::Red),
    };
    Span::styled(
        format!("{symbol} {}", state.as_str()),
        Style::new().fg(colour),
    )
}

/// Lines `text` takes when wrapped at `width` (roughly: by characters, not words).
fn wrapped_height(text: &str, width: u16) -> u16 {
    let width = usize::from(width.max(1));
    u16::try_from(text.chars().count().div_ceil(width)).unwrap_or(u16::MAX)
}

/// Word-wraps `text` to `width` cells, every line after the first indented like the first.
pub fn wrap_indented(text: &str, indent: usize, width: usize) -> Vec<String> {
    let room = width.saturating_sub(indent).max(10);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > room {
            lines.push(format!("{:indent$}{line}", ""));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(format!("{:indent$}{line}", ""));
    }
    lines
}

/// A `width`-cell area centred in `area`, shrunk to fit.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}
