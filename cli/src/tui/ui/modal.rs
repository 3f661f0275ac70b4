//! Modals over the main area: the revoke confirmation, the secret shown once, and help.
//!
//! The confirmation names the key (name and id) because revocation cannot be undone (SPEC
//! §1). The secret modal repeats the CLI's warning word for word, so the two front ends say the
//! same thing about the one moment the raw key is visible.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::centered;
use crate::output::SECRET_WARNING;
use crate::tui::app::SecretModal;

pub fn confirm_revoke(key_id: &str, name: &str, frame: &mut Frame, area: Rect) {
    let lines = vec![
        Line::raw(""),
        Line::from(vec![
            Span::raw("Revoke key "),
            Span::styled(name.to_owned(), Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(" ({key_id})?")),
        ]),
        Line::raw(""),
        Line::from(Span::styled(
            "Requests with it are refused at once. This cannot be undone.",
            Style::new().fg(Color::Red),
        )),
        Line::raw(""),
        Line::from(vec![
            Span::styled("y", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(" revoke   "),
            Span::styled("n/Esc", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(" keep it"),
        ]),
    ];
    let popup = centered(area, 66, 8);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(" Revoke key ")
                .border_style(Style::new().fg(Color::Red)),
        ),
        popup,
    );
}

pub fn secret(modal: &SecretModal, frame: &mut Frame, area: Rect) {
    let key = &modal.key;
    let copied = if modal.copied {
        Line::from(Span::styled(
            "Sent to the clipboard with OSC 52 (if this terminal allows it).",
            Style::new().fg(Color::Green),
        ))
    } else {
        Line::raw("")
    };
    let lines = vec![
        Line::from(format!(
            "Key {} ({}) was created. Its secret:",
            key.name, key.id
        )),
        Line::raw(""),
        Line::from(Span::styled(
            format!("  {}", modal.secret()),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        )),
        Line::raw(""),
        Line::from(Span::styled(
            format!(
                "⚠ {}",
                capitalised(SECRET_WARNING.trim_start_matches("warning: "))
            ),
            Style::new().add_modifier(Modifier::BOLD),
        )),
        Line::raw(""),
        copied,
        Line::from(vec![
            Span::styled("c", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(" copy to clipboard   "),
            Span::styled("Enter/Esc", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(" dismiss: the secret is then gone for good"),
        ]),
    ];
    let popup = centered(area, 76, 12);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(" New key: copy the secret now ")
                .border_style(Style::new().fg(Color::Yellow)),
        ),
        popup,
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
        Paragraph::new(lines).block(Block::bordered().title(" Help (? or Esc closes) ")),
        popup,
    );
}
