//! The create and edit forms: one line a field, its error under it as soon as it is wrong.
//!
//! Errors are words after a `✗`, not only red, so they read without colour; the focused field
//! is marked with `›` and a cursor, again not only by colour.
//!
//! A short terminal cannot show every field: the form then scrolls, so the operator never
//! types into a field they cannot see or presses Enter on an error they cannot read. What is
//! shown is chosen by what matters, in this order: the focused field's line, the daemon's
//! answer to the last submit (or "Saving…") at the bottom of the form, the focused field's
//! error, then the fields around it. Hidden fields are announced by a `↑`/`↓` line that
//! counts them and says how many have an error. The scroll position is not state: it is the
//! highest view that shows the focused field whole, computed afresh on every draw, so a resize
//! can never leave the focus off screen. Scrolling is by whole fields, so a field's line is
//! never shown without its error, nor an error without its field (unless a single field's
//! error is taller than the whole form: then its first lines are shown, the last ending in
//! `…`). A value too long for its line keeps its end, where the cursor is, in view.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::{centered, wrap_indented};
use crate::output::when;
use crate::tui::app::App;
use crate::tui::form::{Field, Form, FormKind};

const LABEL_WIDTH: usize = 18;
/// The marker and the label, before a field's value.
const VALUE_COLUMN: usize = 2 + LABEL_WIDTH;
/// Below this many rows a border would leave almost nothing inside: the form goes without.
const MIN_BORDERED_HEIGHT: u16 = 5;
const HINT: &str = "Enter saves · Esc cancels";

pub fn render(app: &App, form: &Form, frame: &mut Frame, area: Rect) {
    let bordered = area.height >= MIN_BORDERED_HEIGHT;
    let popup_width = area.width.min(78);
    let inner_width = usize::from(popup_width.saturating_sub(if bordered { 2 } else { 0 }));
    let focus = form.focus.min(form.fields.len().saturating_sub(1));
    let mut blocks: Vec<Vec<Line>> = form
        .fields
        .iter()
        .enumerate()
        .map(|(i, field)| field_lines(field, form.hint(field.id), i == focus, inner_width))
        .collect();
    if let FormKind::Edit(key) = &form.kind {
        let expires = key
            .expires_at
            .map_or_else(|| "never".to_owned(), |at| when(at, app.now));
        let value = clip_end(
            &format!("{expires} (fixed at creation)"),
            inner_width.saturating_sub(VALUE_COLUMN),
        );
        blocks.push(vec![Line::from(Span::styled(
            format!("  {:<LABEL_WIDTH$}{value}", "Expires"),
            Style::new().fg(Color::DarkGray),
        ))]);
    }
    let notice = notice_lines(form, inner_width);
    let natural = blocks.iter().map(Vec::len).sum::<usize>() + 1 + notice.len().max(1);
    let borders = if bordered { 2 } else { 0 };
    let height = u16::try_from(natural + borders).unwrap_or(u16::MAX);
    let popup = centered(area, popup_width, height);
    let block = if bordered {
        Block::bordered().title(format!(" {} ", form.title()))
    } else {
        Block::new()
    };
    let inner = block.inner(popup);
    let lines = arrange(
        blocks,
        focus,
        notice,
        usize::from(inner.height),
        inner_width,
    );
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(block), popup);
}

/// A field's line and, once it has been typed in, its error.
fn field_lines(field: &Field, hint: &str, focused: bool, width: usize) -> Vec<Line<'static>> {
    let room = width.saturating_sub(VALUE_COLUMN);
    let hint_style = Style::new().fg(Color::DarkGray);
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
        spans.push(Span::styled(clip_end(hint, room), hint_style));
    } else if focused {
        // The cursor takes a cell; the value gives up its start, not its end, to make room.
        let shown = clip_start(&field.value, room.saturating_sub(1));
        let left = room.saturating_sub(shown.chars().count() + 1);
        spans.push(Span::raw(shown));
        spans.push(Span::styled(
            "▏",
            Style::new().add_modifier(Modifier::SLOW_BLINK),
        ));
        if field.value.is_empty() {
            spans.push(Span::styled(clip_end(hint, left), hint_style));
        }
    } else {
        spans.push(Span::raw(clip_end(&field.value, room)));
    }
    let mut lines = vec![Line::from(spans)];
    if let Some(error) = field.error.as_ref().filter(|_| field.touched) {
        for line in wrap_indented(&format!("✗ {error}"), 4, width) {
            lines.push(Line::from(Span::styled(line, Style::new().fg(Color::Red))));
        }
    }
    lines
}

/// "Saving…" or the daemon's refusal of the last submit: empty when there is neither.
fn notice_lines(form: &Form, width: usize) -> Vec<Line<'static>> {
    if form.submitting {
        return vec![Line::from(Span::styled(
            "Saving…",
            Style::new().fg(Color::Yellow),
        ))];
    }
    let Some(error) = &form.error else {
        return Vec::new();
    };
    wrap_indented(&format!("✗ {error}"), 0, width)
        .into_iter()
        .map(|line| {
            Line::from(Span::styled(
                line,
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ))
        })
        .collect()
}

/// The form's lines for `rows` rows: every field, a blank line and the notice (or the hint)
/// when they fit; otherwise the window around the focused field, with the notice below it.
fn arrange(
    blocks: Vec<Vec<Line<'static>>>,
    focus: usize,
    notice: Vec<Line<'static>>,
    rows: usize,
    width: usize,
) -> Vec<Line<'static>> {
    let heights: Vec<usize> = blocks.iter().map(Vec::len).collect();
    let total: usize = heights.iter().sum();
    let hint = || Line::from(Span::styled(HINT, Style::new().fg(Color::DarkGray)));
    if total + 1 + notice.len().max(1) <= rows {
        let mut lines: Vec<Line> = blocks.into_iter().flatten().collect();
        lines.push(Line::raw(""));
        if notice.is_empty() {
            lines.push(hint());
        } else {
            lines.extend(notice);
        }
        return lines;
    }
    // The notice first, but never at the cost of the focused field's own line.
    let notice_rows = match rows {
        0 => 0,
        1 if notice.is_empty() => 0,
        1 => 1,
        _ => notice.len().min(rows - 1),
    };
    let mut view_rows = rows - notice_rows;
    let mut footer: Vec<Line> = notice.into_iter().take(notice_rows).collect();
    // The hint, only while the focused field still fits whole beside it.
    let mut window = None;
    if footer.is_empty() && view_rows >= 2 {
        window = scroll(&heights, focus, view_rows - 1);
        if window.is_some() {
            view_rows -= 1;
            footer.push(hint());
        }
    }
    let window = window.or_else(|| scroll(&heights, focus, view_rows));
    let mut lines: Vec<Line> = Vec::with_capacity(rows);
    match window {
        Some((start, end)) => {
            if start > 0 {
                lines.push(more("↑", &heights[..start]));
            }
            lines.extend(blocks[start..end].iter().flatten().cloned());
            if end < blocks.len() {
                lines.push(more("↓", &heights[end..]));
            }
        }
        // The focused field is taller than the form: its line and as much of its error as
        // fit, the last line ending in `…` to say that there is more.
        None => {
            lines.extend(blocks[focus].iter().take(view_rows).cloned());
            if view_rows >= 2
                && let Some(last) = lines.last_mut()
            {
                let text: String = last.spans.iter().map(|s| s.content.as_ref()).collect();
                let style = last.spans.first().map_or_else(Style::new, |s| s.style);
                let cut = clip_end(&format!("{} …", text.trim_end()), width);
                *last = Line::from(Span::styled(cut, style));
            }
        }
    }
    // The footer sits at the bottom of the form, however many lines the fields took.
    lines.resize(view_rows, Line::raw(""));
    lines.extend(footer);
    lines
}

/// The fields `start..end` to show in `rows` rows, counting a row for each `↑`/`↓` line
/// needed: the window that starts highest while holding the focused field whole, or `None`
/// when even that field alone (with its indicators) does not fit.
fn scroll(heights: &[usize], focus: usize, rows: usize) -> Option<(usize, usize)> {
    (0..=focus).find_map(|start| {
        let room = rows.checked_sub(usize::from(start > 0))?;
        let mut end = start;
        let mut used = 0;
        while end < heights.len() && used + heights[end] <= room {
            used += heights[end];
            end += 1;
        }
        if end < heights.len() {
            // Fields are left below: make room for the line that says so.
            while end > start && used + 1 > room {
                end -= 1;
                used -= heights[end];
            }
        }
        (end > focus).then_some((start, end))
    })
}

/// "↓ 3 more fields, 1 with an error": a field with more than one line shows an error.
fn more(arrow: &str, hidden: &[usize]) -> Line<'static> {
    let count = hidden.len();
    let errors = hidden.iter().filter(|&&h| h > 1).count();
    let fields = if count == 1 { "field" } else { "fields" };
    let mut text = format!("  {arrow} {count} more {fields}");
    let style = if errors > 0 {
        text.push_str(&format!(", {errors} with an error"));
        Style::new().fg(Color::Red)
    } else {
        Style::new().fg(Color::DarkGray)
    };
    Line::from(Span::styled(text, style))
}

/// `text` in `room` characters, cut at the end with `…` if it is longer.
fn clip_end(text: &str, room: usize) -> String {
    if text.chars().count() <= room {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(room.saturating_sub(1)).collect();
    if room > 0 {
        clipped.push('…');
    }
    clipped
}

/// `text` in `room` characters, cut at the start with `…` if it is longer: the end, where
/// typing happens, stays in view.
fn clip_start(text: &str, room: usize) -> String {
    let count = text.chars().count();
    if count <= room {
        return text.to_owned();
    }
    if room == 0 {
        return String::new();
    }
    let kept: String = text.chars().skip(count - (room - 1)).collect();
    format!("…{kept}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_starts_as_high_as_it_can_and_holds_the_focus() {
        // Eight one-line fields, the last with a two-line error.
        let heights = [1, 1, 1, 1, 1, 1, 1, 3];
        // Everything above the focus that fits, and a line for the fields below.
        assert_eq!(scroll(&heights, 0, 6), Some((0, 5)));
        assert_eq!(scroll(&heights, 4, 6), Some((0, 5)));
        // Moving down scrolls by as much as needed: ↑ line, fields 2..=5, ↓ line.
        assert_eq!(scroll(&heights, 5, 6), Some((2, 6)));
        // The last field and its error, under the ↑ line and two fields above it.
        assert_eq!(scroll(&heights, 7, 6), Some((5, 8)));
        assert_eq!(scroll(&heights, 7, 4), Some((7, 8)));
        // Too tall to show whole with its ↑ line.
        assert_eq!(scroll(&heights, 7, 3), None);
        // Everything fits: no indicator lines.
        assert_eq!(scroll(&heights, 7, 10), Some((0, 8)));
    }

    #[test]
    fn clipping_marks_the_cut() {
        assert_eq!(clip_end("abcdef", 6), "abcdef");
        assert_eq!(clip_end("abcdef", 4), "abc…");
        assert_eq!(clip_end("abcdef", 0), "");
        assert_eq!(clip_start("abcdef", 4), "…def");
        assert_eq!(clip_start("abcdef", 1), "…");
        assert_eq!(clip_start("abcdef", 0), "");
    }
}
