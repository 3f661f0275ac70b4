//! The create and edit forms: one line a field, its error under it as soon as it is wrong.
//!
//! Errors are words after a `✗`, not only red, so they read without colour; the focused field
//! is marked with `›` and a cursor, again not only by colour.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::{centered, wrap_indented};
use crate::output::when;
use crate::tui::app::App;
use crate::tui::form::{Form, FormKind};

const LABEL_WIDTH: usize = 18;

pub fn render(app: &App, form: &Form, frame: &mut Frame, area: Rect) {
    let popup_width = area.width.min(78);
    let inner_width = usize::from(popup_width.saturating_sub(2));
    let mut lines = Vec::new();
    for (i, field) in form.fields.iter().enumerate() {
        let focused = i == form.focus;
        let marker = if focused { "› " } else { "  " };
        let label_style = if focused {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        let mut spans = vec![
            Span::raw(marker),
            Span::styled(format!("{:<LABEL_WIDTH$}", field.id.label()), label_style),
        ];
        if field.id.is_choice() {
            spans.push(Span::raw(format!("‹ {} ›", field.value)));
        } else if field.value.is_empty() && !focused {
            spans.push(Span::styled(
                field.id.hint(),
                Style::new().fg(Color::DarkGray),
            ));
        } else {
            spans.push(Span::raw(field.value.clone()));
            if focused {
                spans.push(Span::styled(
                    "▏",
                    Style::new().add_modifier(Modifier::SLOW_BLINK),
                ));
                if field.value.is_empty() {
                    spans.push(Span::styled(
                        field.id.hint(),
                        Style::new().fg(Color::DarkGray),
                    ));
                }
            }
        }
        lines.push(Line::from(spans));
        if let Some(error) = field.error.as_ref().filter(|_| field.touched) {
            let text = format!("✗ {error}");
            for line in wrap_indented(&text, 4, inner_width) {
                lines.push(Line::from(Span::styled(line, Style::new().fg(Color::Red))));
            }
        }
    }
    if let FormKind::Edit(key) = &form.kind {
        let expires = key
            .expires_at
            .map_or_else(|| "never".to_owned(), |at| when(at, app.now));
        lines.push(Line::from(Span::styled(
            format!("  {:<LABEL_WIDTH$}{expires} (fixed at creation)", "Expires"),
            Style::new().fg(Color::DarkGray),
        )));
    }
    lines.push(Line::raw(""));
    if form.submitting {
        lines.push(Line::from(Span::styled(
            "Saving…",
            Style::new().fg(Color::Yellow),
        )));
    } else if let Some(error) = &form.error {
        for line in wrap_indented(&format!("✗ {error}"), 0, inner_width) {
            lines.push(Line::from(Span::styled(
                line,
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )));
        }
    } else {
        lines.push(Line::from(Span::styled(
            "Enter saves · Esc cancels",
            Style::new().fg(Color::DarkGray),
        )));
    }
    let height = u16::try_from(lines.len())
        .unwrap_or(u16::MAX)
        .saturating_add(2);
    let popup = centered(area, popup_width, height);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!(" {} ", form.title()))),
        popup,
    );
}
