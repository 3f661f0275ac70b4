//! The keys table: one row a key, with its state and its spend against its limit as a gauge.
//!
//! Columns are sized for 80 columns first (SPEC §7 dashboards live in small terminals too);
//! wider terminals get the dollar amounts beside the gauge. Times are relative ("3h ago") so
//! a column stays narrow and readable at a glance; the detail pane has the exact instants.

use gateway_shared::api::KeyView;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};

use super::state_span;
use crate::commands::keys::usage::bar;
use crate::output::relative;
use crate::tui::app::{App, shown_spend};

/// Cells of the gauge's bar.
const GAUGE_CELLS: usize = 8;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let block = Block::new().borders(Borders::TOP).title(" Keys ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let visible = app.visible();
    if visible.is_empty() {
        let text = if !app.loaded {
            "Loading keys from gatewayd…".to_owned()
        } else if app.keys().is_empty() {
            "No keys yet. Press c to create one.".to_owned()
        } else {
            "No key matches the filter and search (f: filter, /: search).".to_owned()
        };
        frame.render_widget(
            Paragraph::new(text).style(Style::new().fg(Color::DarkGray)),
            inner,
        );
        return;
    }
    let wide = area.width >= 100;
    let spend_width: u16 = if wide { 30 } else { 13 };
    let header = Row::new([
        "NAME",
        "PREFIX",
        "STATE",
        "SPEND",
        "RPM",
        "EXPIRES",
        "LAST USED",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = visible.iter().map(|key| {
        Row::new(vec![
            Line::from(key.name.clone()),
            Line::from(key.prefix.clone()),
            Line::from(state_span(key.state)),
            Line::from(gauge(key, wide)),
            Line::from(
                key.rate_limit_rpm
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            ),
            Line::from(
                key.expires_at
                    .map_or_else(|| "never".to_owned(), |at| relative(at, app.now)),
            ),
            Line::from(
                key.last_used_at
                    .map_or_else(|| "never".to_owned(), |at| relative(at, app.now)),
            ),
        ])
    });
    let widths = [
        Constraint::Min(8),
        Constraint::Length(13),
        Constraint::Length(11),
        Constraint::Length(spend_width),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(9),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("›");
    let mut state = TableState::new().with_selected(app.selected_index());
    frame.render_stateful_widget(table, inner, &mut state);
}

/// `██▌░░░░░  31%` (and `$1.20/$50.00` when wide): spend against the limit, readable without
/// colour; just the total, `$34.50`, for a key without a limit.
pub fn gauge(key: &KeyView, with_amounts: bool) -> Vec<Span<'static>> {
    let spent = shown_spend(key);
    let Some(limit) = key.spend_limit_usd else {
        // No gauge is the sign of no limit; the words fit only in a wide column.
        let text = if with_amounts {
            format!("{spent} (no limit)")
        } else {
            spent.to_string()
        };
        return vec![Span::raw(text)];
    };
    let filled = bar(spent.0, limit.0, GAUGE_CELLS);
    let empty = "░".repeat(GAUGE_CELLS.saturating_sub(filled.chars().count()));
    let percent = (u128::from(spent.0) * 100)
        .checked_div(u128::from(limit.0))
        .unwrap_or(0)
        .min(999);
    let colour = match percent {
        0..80 => Color::Green,
        80..100 => Color::Yellow,
        _ => Color::Red,
    };
    let mut spans = vec![
        Span::styled(filled, Style::new().fg(colour)),
        Span::styled(empty, Style::new().fg(Color::DarkGray)),
        Span::raw(format!(" {percent:>3}%")),
    ];
    if with_amounts {
        spans.push(Span::raw(format!(" {spent}/{limit}")));
    }
    spans
}

#[cfg(test)]
mod tests {
    use gateway_shared::Nanodollars;

    use super::*;
    use crate::output::tests::sample_key;

    fn text(spans: &[Span]) -> String {
        spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn gauges_read_without_colour() {
        let mut key = sample_key(); // $1.20 of $50.00 daily
        assert_eq!(text(&gauge(&key, false)), "▏░░░░░░░   2%");
        assert_eq!(text(&gauge(&key, true)), "▏░░░░░░░   2% $1.20/$50.00");
        key.spend_period_usd = Nanodollars(25_000_000_000);
        assert_eq!(text(&gauge(&key, false)), "████░░░░  50%");
        key.spend_period_usd = Nanodollars(60_000_000_000);
        assert_eq!(text(&gauge(&key, false)), "████████ 120%");
        assert_eq!(gauge(&key, false)[0].style.fg, Some(Color::Red));
        key.spend_limit_usd = None;
        assert_eq!(text(&gauge(&key, false)), "$34.50");
        assert_eq!(text(&gauge(&key, true)), "$34.50 (no limit)");
    }
}
