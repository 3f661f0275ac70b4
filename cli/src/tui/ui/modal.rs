//! Modals over the main area: the revoke confirmation, the secret shown once, and help.
//!
//! The confirmation names the key (name and id) because revocation cannot be undone (SPEC
//! §1). The secret modal repeats the CLI's warning word for word, so the two front ends say the
//! same thing about the one moment the raw key is visible.
//!
//! In a small terminal a modal keeps what matters and drops the rest, whole lines at a time:
//! blank lines first, then explanations, never the question or the keys that answer it. The
//! secret is shown whole on one line or not at all: a secret cut by the edge, or broken over
//! two lines, would be copied wrong without anyone noticing. When it cannot be shown, the
//! modal says so in its place and points to `c` (copy with OSC 52) or a wider terminal, and
//! the status line says so too in case the modal itself has no room (see [`secret_on_screen`]).
//!
//! The confirmation and the secret modal end in a bar of buttons for the mouse, on their last
//! inner line (when the modal has three rows inside or more), so that text above can never
//! push a button away from where its click lands.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::{button_bar, centered, wrap_indented};
use crate::output::SECRET_WARNING;
use crate::tui::app::SecretModal;
use crate::tui::hits::{Button, Hits};

/// Below this many rows a border would leave nothing inside: the modal goes without.
const MIN_BORDERED_HEIGHT: u16 = 3;

/// Lines kept or dropped together; the lower the rank, the longer they stay. Rank 0 is never
/// dropped.
struct Section {
    rank: u8,
    lines: Vec<Line<'static>>,
}

impl Section {
    fn new(rank: u8, lines: Vec<Line<'static>>) -> Self {
        Self { rank, lines }
    }

    fn blank() -> Self {
        Self::new(u8::MAX, vec![Line::raw("")])
    }
}

/// The sections' lines in order: all of them if they fit in `rows`; otherwise the most
/// important that fit (rank 0 always), then blank lines where they separate two kept sections
/// and there is room left.
fn fit(sections: Vec<Section>, rows: usize) -> Vec<Line<'static>> {
    let total: usize = sections.iter().map(|s| s.lines.len()).sum();
    if total > rows {
        let blank = |s: &Section| s.rank == u8::MAX;
        let mut keep = vec![false; sections.len()];
        let mut used = 0;
        let mut order: Vec<usize> = (0..sections.len())
            .filter(|&i| !blank(&sections[i]))
            .collect();
        order.sort_by_key(|&i| (sections[i].rank, i));
        for i in order {
            let len = sections[i].lines.len();
            if sections[i].rank == 0 || used + len <= rows {
                keep[i] = true;
                used += len;
            }
        }
        for i in 0..sections.len() {
            let between = keep[..i].iter().any(|&k| k) && keep[i + 1..].iter().any(|&k| k);
            if blank(&sections[i]) && between && used < rows {
                keep[i] = true;
                used += 1;
            }
        }
        return sections
            .into_iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .flat_map(|(s, _)| s.lines)
            .collect();
    }
    sections.into_iter().flat_map(|s| s.lines).collect()
}

/// `spans` on one line if they fit in `width`, else their text word-wrapped in `style`.
fn one_line_or_wrapped(
    spans: Vec<Span<'static>>,
    style: Style,
    width: usize,
) -> Vec<Line<'static>> {
    let line = Line::from(spans);
    if line.width() <= width {
        return vec![line];
    }
    let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
    wrap_indented(&text, 0, width)
        .into_iter()
        .map(|l| Line::from(Span::styled(l, style)))
        .collect()
}

/// Inner rows below which a modal has no button bar (its keys still answer).
const MIN_ROWS_FOR_BUTTONS: usize = 3;

/// A popup of `width` holding `sections` in at most `area`'s height, drawn over `area`, with
/// `buttons` on its last inner line when there is room.
fn draw(
    sections: impl FnOnce(usize) -> Vec<Section>,
    width: u16,
    block: Block<'static>,
    (frame, area): (&mut Frame, Rect),
    (buttons, hits): (&[Button], &mut Hits),
) {
    let bordered = area.height >= MIN_BORDERED_HEIGHT;
    let frame_size = if bordered { 2 } else { 0 };
    let width = width.min(area.width);
    let rows = usize::from(area.height.saturating_sub(frame_size));
    let bar = usize::from(!buttons.is_empty() && rows >= MIN_ROWS_FOR_BUTTONS);
    let lines = fit(
        sections(usize::from(width.saturating_sub(frame_size))),
        rows - bar,
    );
    let height = u16::try_from(lines.len() + bar)
        .unwrap_or(u16::MAX)
        .saturating_add(frame_size);
    let popup = centered(area, width, height);
    let block = if bordered { block } else { Block::new() };
    let inner = block.inner(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(block), popup);
    if bar == 1 && inner.height > 0 {
        let last = Rect::new(inner.x, inner.bottom() - 1, inner.width, 1);
        button_bar(buttons, frame, last, Some(hits));
    }
}

fn bold(text: &str) -> Span<'static> {
    Span::styled(text.to_owned(), Style::new().add_modifier(Modifier::BOLD))
}

pub fn confirm_revoke(key_id: &str, name: &str, frame: &mut Frame, area: Rect, hits: &mut Hits) {
    let sections = |width: usize| {
        let warning = Style::new().fg(Color::Red);
        vec![
            Section::blank(),
            Section::new(
                0,
                one_line_or_wrapped(
                    vec![
                        Span::raw("Revoke key "),
                        bold(name),
                        Span::raw(format!(" ({key_id})?")),
                    ],
                    Style::new(),
                    width,
                ),
            ),
            Section::blank(),
            Section::new(
                2,
                one_line_or_wrapped(
                    vec![Span::styled(
                        "Requests with it are refused at once. This cannot be undone.",
                        warning,
                    )],
                    warning,
                    width,
                ),
            ),
            Section::blank(),
            Section::new(
                1,
                one_line_or_wrapped(
                    vec![
                        bold("y"),
                        Span::raw(" revoke   "),
                        bold("n/Esc"),
                        Span::raw(" keep it"),
                    ],
                    Style::new(),
                    width,
                ),
            ),
        ]
    };
    let block = Block::bordered()
        .title(" Revoke key ")
        .border_style(Style::new().fg(Color::Red));
    draw(
        sections,
        66,
        block,
        (frame, area),
        (&[Button::ConfirmRevoke, Button::Keep], hits),
    );
}

const SECRET_WIDTH: u16 = 76;

/// The secret's line fits whole in the modal drawn over `area`. When it does not, the modal
/// (if it has room) and the status line say so.
pub fn secret_on_screen(modal: &SecretModal, area: Rect) -> bool {
    let frame_size = if area.height >= MIN_BORDERED_HEIGHT {
        2
    } else {
        0
    };
    let inner_width = SECRET_WIDTH.min(area.width).saturating_sub(frame_size);
    area.height > frame_size && usize::from(inner_width) >= modal.secret().chars().count()
}

/// Said in the secret's place when it cannot be shown whole.
const SECRET_DOES_NOT_FIT: &str = "The secret does not fit in this window: press c to copy it, \
                                   or enlarge the terminal to read it.";

/// The same, short enough for the status line of a small terminal.
pub const SECRET_NOT_SHOWN: &str = "The secret does not fit: c copies it";

pub fn secret(modal: &SecretModal, frame: &mut Frame, area: Rect, hits: &mut Hits) {
    let key = &modal.key;
    let on_screen = secret_on_screen(modal, area);
    let sections = |width: usize| {
        let secret_style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
        let secret = modal.secret();
        let (header, secret) = if on_screen {
            // Indented when there is room for it, never at the cost of the secret's end.
            let indent = if width >= secret.chars().count() + 2 {
                "  "
            } else {
                ""
            };
            (
                format!("Key {} ({}) was created. Its secret:", key.name, key.id),
                vec![Line::from(Span::styled(
                    format!("{indent}{secret}"),
                    secret_style,
                ))],
            )
        } else {
            (
                format!("Key {} ({}) was created.", key.name, key.id),
                wrap_indented(SECRET_DOES_NOT_FIT, 0, width)
                    .into_iter()
                    .map(|l| Line::from(Span::styled(l, secret_style)))
                    .collect(),
            )
        };
        let warning = format!(
            "⚠ {}",
            capitalised(SECRET_WARNING.trim_start_matches("warning: "))
        );
        let warning_style = Style::new().add_modifier(Modifier::BOLD);
        let copied = if modal.copied {
            let green = Style::new().fg(Color::Green);
            Section::new(
                1,
                one_line_or_wrapped(
                    vec![Span::styled(
                        "Sent to the clipboard with OSC 52 (if this terminal allows it).",
                        green,
                    )],
                    green,
                    width,
                ),
            )
        } else {
            Section::blank()
        };
        let mut actions = vec![
            bold("c"),
            Span::raw(" copy to clipboard   "),
            bold("Enter/Esc"),
            Span::raw(" dismiss: the secret is then gone for good"),
        ];
        let actions = if Line::from(actions.clone()).width() <= width {
            vec![Line::from(actions)]
        } else {
            let dismiss = actions.split_off(2);
            actions.truncate(1);
            actions.push(Span::raw(" copy to clipboard"));
            let mut lines = one_line_or_wrapped(actions, Style::new(), width);
            lines.extend(one_line_or_wrapped(dismiss, Style::new(), width));
            lines
        };
        vec![
            Section::new(
                3,
                wrap_indented(&header, 0, width)
                    .into_iter()
                    .map(Line::from)
                    .collect(),
            ),
            Section::blank(),
            Section::new(0, secret),
            Section::blank(),
            Section::new(
                2,
                wrap_indented(&warning, 0, width)
                    .into_iter()
                    .map(|l| Line::from(Span::styled(l, warning_style)))
                    .collect(),
            ),
            Section::blank(),
            copied,
            Section::new(1, actions),
        ]
    };
    let block = Block::bordered()
        .title(" New key: copy the secret now ")
        .border_style(Style::new().fg(Color::Yellow));
    draw(
        sections,
        SECRET_WIDTH,
        block,
        (frame, area),
        (&[Button::CopySecret, Button::DismissSecret], hits),
    );
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Every binding, by screen.
const HELP: &[(&str, &str)] = &[
    ("Keys", ""),
    ("↑ ↓ j k", "move (PgUp PgDn Home End)"),
    (
        "Enter",
        "open the key's detail: limits, spend per day and by model",
    ),
    ("c", "create a key (the secret is shown once)"),
    ("e", "edit the selected key (not revoked ones)"),
    ("r", "revoke the selected key, after confirmation"),
    ("/", "search by name (Enter keeps it, Esc clears it)"),
    (
        "f",
        "filter by state: all, active, exhausted, expired, revoked",
    ),
    ("s", "sort by name, state, spend, last used or creation"),
    ("R  F5", "refresh now (it also refreshes every 3 s)"),
    ("q  Esc", "back from the detail; quit from the list"),
    ("Ctrl-C", "quit from anywhere"),
    ("Forms", ""),
    (
        "Tab ↑ ↓",
        "next or previous field; ← → change the reset period",
    ),
    ("Enter  Esc", "save, or cancel"),
    ("Mouse", ""),
    (
        "click",
        "a button does its key; a row selects it; any click closes help",
    ),
    ("wheel", "move the selection in the list"),
];

pub fn help(frame: &mut Frame, area: Rect) {
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| {
            if what.is_empty() {
                Line::from(Span::styled(
                    *keys,
                    Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
                ))
            } else {
                Line::from(vec![
                    Span::styled(
                        format!("  {keys:<11}"),
                        Style::new().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(*what),
                ])
            }
        })
        .collect();
    let height = u16::try_from(lines.len())
        .unwrap_or(u16::MAX)
        .saturating_add(2);
    let popup = centered(area, 78, height);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Help (?, Esc or a click closes) ")),
        popup,
    );
}
