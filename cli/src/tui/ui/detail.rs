//! One key in full: restrictions, limits and when the period resets, then spend per day over
//! the last 30 days as a bar chart and spend by model.
//!
//! The key's fields come from the live key list, so they refresh with it; the usage comes from
//! `GET /v1/keys/{id}/usage`, and the last report stays on screen while the next one loads.
//! The first line inside holds the buttons that act on this key.

use gateway_shared::api::{KeyView, UsageReport};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Borders, Paragraph, Row, Table};

use super::keys_table::{GAUGE_WIDTH, gauge};
use super::{button_bar, key_state_span};
use crate::output::{relative, spend_summary};
use crate::tui::app::{App, USAGE_DAYS};
use crate::tui::hits::{Button, Hits};

/// The detail pane's buttons, most needed first.
const BUTTONS: [Button; 4] = [Button::Edit, Button::Revoke, Button::Create, Button::Back];

/// Draws the key's detail; with `hits` (the pane is in front) registers its buttons.
pub fn render(app: &App, key_id: &str, frame: &mut Frame, area: Rect, hits: Option<&mut Hits>) {
    let Some(key) = app.key(key_id) else {
        let text = format!("Key {key_id} is not in the latest list from gatewayd.");
        let block = Block::bordered();
        let [buttons, text_area] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(block.inner(area));
        frame.render_widget(block, area);
        button_bar(&[Button::Create, Button::Back], frame, buttons, hits);
        frame.render_widget(Paragraph::new(text), text_area);
        return;
    };
    let title = Line::from(vec![
        Span::styled(
            format!(" {} ", key.name),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!("· {} · {} · ", key.id, key.prefix)),
        key_state_span(key),
        Span::raw(" "),
    ]);
    let block = Block::bordered().title(title);
    let [buttons, inner] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(block.inner(area));
    frame.render_widget(block, area);
    button_bar(&BUTTONS, frame, buttons, hits);

    let usage = app.usage.as_ref().filter(|u| u.key_id == key.id);
    let n_models = usage
        .and_then(|u| u.report.as_ref())
        .map_or(1, |r| r.by_model.len().clamp(1, 4));
    let [info, chart, models] = Layout::vertical([
        Constraint::Length(7),
        Constraint::Min(4),
        Constraint::Length(u16::try_from(n_models).unwrap_or(4) + 1),
    ])
    .areas(inner);
    render_info(app, key, frame, info);
    if let Some(pane) = usage {
        match (&pane.report, &pane.error) {
            (Some(report), _) => {
                render_chart(report, frame, chart);
                render_models(report, frame, models);
            }
            (None, Some(error)) => {
                let text = format!("Usage unavailable: {error}");
                frame.render_widget(
                    Paragraph::new(text)
                        .style(Style::new().fg(Color::Red))
                        .wrap(ratatui::widgets::Wrap { trim: true })
                        .block(section(&format!("Spend per day, last {USAGE_DAYS} days"))),
                    chart,
                );
            }
            (None, None) => frame.render_widget(
                Paragraph::new("Loading usage…")
                    .block(section(&format!("Spend per day, last {USAGE_DAYS} days"))),
                chart,
            ),
        }
    }
}

fn section(title: &str) -> Block<'static> {
    Block::new()
        .borders(Borders::TOP)
        .title(format!(" {title} "))
        .border_style(Style::new().fg(Color::DarkGray))
}

fn render_info(app: &App, key: &KeyView, frame: &mut Frame, area: Rect) {
    let list = |items: Vec<String>, empty: &str| {
        if items.is_empty() {
            empty.to_owned()
        } else {
            items.join(", ")
        }
    };
    let when = |at: Option<jiff::Timestamp>, missing: &str| {
        at.map_or_else(
            || missing.to_owned(),
            |at| {
                format!(
                    "{} ({})",
                    at.strftime("%Y-%m-%d %H:%MZ"),
                    relative(at, app.now)
                )
            },
        )
    };
    let label =
        |text: &'static str| Span::styled(format!("{text:<11}"), Style::new().fg(Color::DarkGray));
    let left = vec![
        Line::from(Span::styled(
            "Restrictions",
            Style::new().add_modifier(Modifier::BOLD),
        )),
        Line::from(vec![
            label("providers"),
            Span::raw(list(
                key.allowed_providers
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                "all",
            )),
        ]),
        Line::from(vec![
            label("models"),
            Span::raw(list(key.allowed_models.clone(), "all")),
        ]),
        Line::from(vec![
            label("client IPs"),
            Span::raw(list(key.allowed_ips.clone(), "any")),
        ]),
        Line::from(vec![
            label("expires"),
            Span::raw(when(key.expires_at, "never")),
        ]),
        Line::from(vec![
            label("created"),
            Span::raw(when(Some(key.created_at), "-")),
        ]),
        Line::from(vec![
            label("last used"),
            Span::raw(when(key.last_used_at, "never")),
        ]),
    ];
    let mut right = vec![
        Line::from(Span::styled(
            "Limits",
            Style::new().add_modifier(Modifier::BOLD),
        )),
        Line::from(vec![
            label("rate limit"),
            Span::raw(
                key.rate_limit_rpm
                    .map_or_else(|| "none".to_owned(), |n| format!("{n} rpm")),
            ),
        ]),
        Line::from(vec![label("spend"), Span::raw(spend_summary(key))]),
    ];
    if key.spend_limit_usd.is_some() {
        let mut gauge_line = vec![label("")];
        gauge_line.extend(gauge(key, usize::from(GAUGE_WIDTH)));
        right.push(Line::from(gauge_line));
    }
    let resets = match (key.spend_limit_usd, key.spend_reset) {
        (Some(_), Some(_)) => when(key.period_resets_at, "-"),
        (Some(_), None) => "never (lifetime cap)".to_owned(),
        (None, _) => "no spend limit".to_owned(),
    };
    right.push(Line::from(vec![label("resets"), Span::raw(resets)]));
    right.push(Line::from(vec![
        label("total"),
        Span::raw(format!(
            "{} · {} requests",
            key.spend_total_usd, key.request_count
        )),
    ]));
    if let Some(retires) = crate::output::retires_at(key) {
        // Rotated with a grace period: works until then.
        right.push(Line::from(vec![
            label("retires"),
            Span::styled(when(Some(retires), "-"), Style::new().fg(Color::Cyan)),
        ]));
    } else if let Some(revoked) = key.revoked_at {
        right.push(Line::from(vec![
            label("revoked"),
            Span::styled(when(Some(revoked), "-"), Style::new().fg(Color::Red)),
        ]));
    }
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    frame.render_widget(Paragraph::new(left), left_area);
    frame.render_widget(Paragraph::new(right), right_area);
}

/// One bar a day, scaled to the costliest day; the axis line under it names the first and
/// last day, and the title the maximum, so the chart reads without a legend.
fn render_chart(report: &UsageReport, frame: &mut Frame, area: Rect) {
    let peak = report.by_day.iter().max_by_key(|d| d.totals.cost_usd);
    let title = match peak {
        Some(day) if day.totals.cost_usd.0 > 0 => format!(
            "Spend per day, {} to {} (max {} on {})",
            report.from, report.to, day.totals.cost_usd, day.date
        ),
        _ => format!(
            "Spend per day, {} to {}: nothing spent",
            report.from, report.to
        ),
    };
    let block = section(&title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [bars_area, axis] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(inner);
    let n_days = u16::try_from(report.by_day.len())
        .unwrap_or(u16::MAX)
        .max(1);
    let per_day = bars_area.width / n_days;
    let (bar_width, bar_gap) = if per_day >= 2 {
        (per_day - 1, 1)
    } else {
        (1, 0)
    };
    let bars: Vec<Bar> = report
        .by_day
        .iter()
        // Micro-dollars: the chart's integer scale, fine enough for a one-cent day to show.
        .map(|d| {
            Bar::default()
                .value(d.totals.cost_usd.0 / 1_000)
                .text_value(String::new())
        })
        .collect();
    let chart = BarChart::default()
        .data(BarGroup::default().bars(&bars))
        .bar_width(bar_width)
        .bar_gap(bar_gap)
        .bar_style(Style::new().fg(Color::Cyan));
    frame.render_widget(chart, bars_area);
    // The axis spans the bars, not the pane, so the last date sits under the last bar.
    let axis = Rect {
        width: axis.width.min(
            n_days
                .saturating_mul(bar_width + bar_gap)
                .saturating_sub(bar_gap),
        ),
        ..axis
    };
    let axis_style = Style::new().fg(Color::DarkGray);
    frame.render_widget(
        Paragraph::new(Span::styled(report.from.to_string(), axis_style)),
        axis,
    );
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(report.to.to_string(), axis_style)).right_aligned()),
        axis,
    );
}

fn render_models(report: &UsageReport, frame: &mut Frame, area: Rect) {
    let block = section("Spend by model");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if report.by_model.is_empty() {
        frame.render_widget(Paragraph::new("No requests in this range."), inner);
        return;
    }
    let rows = report.by_model.iter().map(|m| {
        Row::new(vec![
            format!("{}/{}", m.provider, m.model),
            m.totals.cost_usd.to_string(),
            format!("{} req", m.totals.requests),
            format!(
                "{} in / {} out tokens",
                m.totals.input_tokens, m.totals.output_tokens
            ),
        ])
    });
    let widths = [
        Constraint::Min(16),
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Min(0),
    ];
    frame.render_widget(Table::new(rows, widths).column_spacing(2), inner);
}
