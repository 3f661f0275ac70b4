//! The keys table: one row a key, with its state and its spend against its limit as a gauge.
//!
//! Columns are sized for 80 columns first (SPEC §7 dashboards live in small terminals too);
//! wider terminals get the dollar amounts beside the gauge, narrower ones fewer columns (the
//! spend is never squeezed: amounts are rounded to fit, never cut). Times are relative ("3h ago") so
//! a column stays narrow and readable at a glance; the detail pane has the exact instants.
//! Above the table, the view's buttons: what the product docs tell people to click.

use gateway_shared::Nanodollars;
use gateway_shared::api::KeyView;
use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};

use super::{button_bar, key_state_span};
use crate::commands::keys::usage::bar;
use crate::output::relative;
use crate::tui::app::{App, shown_spend};
use crate::tui::hits::{Button, Hits};

/// Cells of the gauge's bar.
const GAUGE_CELLS: usize = 8;
/// The bar and its percentage, `██▌░░░░░  31%`: the spend column without amounts.
pub const GAUGE_WIDTH: u16 = 13;
/// Least width of the name column.
const NAME_MIN: u16 = 8;
/// Between columns.
const SPACING: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Name,
    Prefix,
    State,
    Spend,
    Rpm,
    Expires,
    LastUsed,
}

impl Column {
    const ALL: [Column; 7] = [
        Column::Name,
        Column::Prefix,
        Column::State,
        Column::Spend,
        Column::Rpm,
        Column::Expires,
        Column::LastUsed,
    ];
    /// Which columns give way, first to last, when the terminal is too narrow for all: name,
    /// state and spend always stay (a squeezed spend column would cut its digits).
    const DROPPED_FIRST: [Column; 4] = [
        Column::LastUsed,
        Column::Rpm,
        Column::Expires,
        Column::Prefix,
    ];

    fn header(self) -> &'static str {
        match self {
            Column::Name => "NAME",
            Column::Prefix => "PREFIX",
            Column::State => "STATE",
            Column::Spend => "SPEND",
            Column::Rpm => "RPM",
            Column::Expires => "EXPIRES",
            Column::LastUsed => "LAST USED",
        }
    }

    /// Cells it asks for (the name takes what is left).
    fn length(self, spend_width: u16) -> u16 {
        match self {
            Column::Name => NAME_MIN,
            Column::Prefix => 13,
            Column::State => 11,
            Column::Spend => spend_width,
            Column::Rpm => 5,
            Column::Expires => 7,
            Column::LastUsed => 9,
        }
    }

    fn width(self, spend_width: u16) -> Constraint {
        match self {
            Column::Name => Constraint::Min(NAME_MIN),
            other => Constraint::Length(other.length(spend_width)),
        }
    }
}

/// The columns that fit in `width` cells, and the width the spend column really gets.
struct Shown {
    columns: Vec<Column>,
    spend_width: u16,
}

/// Drops columns in [`Column::DROPPED_FIRST`] order until the rest fit, then asks ratatui's
/// own layout (the one `Table` uses) how wide the spend column ends up, so the gauge is
/// formatted for the cells it really has instead of being cut by the table.
fn columns(width: u16, spend_width: u16, with_selection: bool) -> Shown {
    let selection = u16::from(with_selection);
    let needed = |columns: &[Column]| -> u32 {
        let cells: u32 = columns
            .iter()
            .map(|c| u32::from(c.length(spend_width)))
            .sum();
        let gaps = u32::try_from(columns.len().saturating_sub(1)).unwrap_or(u32::MAX);
        cells + gaps * u32::from(SPACING) + u32::from(selection)
    };
    let mut columns = Column::ALL.to_vec();
    for dropped in Column::DROPPED_FIRST {
        if needed(&columns) <= u32::from(width) {
            break;
        }
        columns.retain(|c| *c != dropped);
    }
    let [_, area] = Layout::horizontal([Constraint::Length(selection), Constraint::Fill(0)])
        .areas(Rect::new(0, 0, width, 1));
    let rects = Layout::horizontal(columns.iter().map(|c| c.width(spend_width)))
        .flex(Flex::Start)
        .spacing(SPACING)
        .split(area);
    let spend_width = columns
        .iter()
        .position(|c| *c == Column::Spend)
        .and_then(|i| rects.get(i))
        .map_or(0, |r| r.width);
    Shown {
        columns,
        spend_width,
    }
}

/// The list's buttons, most needed first: on a narrow terminal the last ones give way.
const BUTTONS: [Button; 7] = [
    Button::Create,
    Button::Edit,
    Button::Revoke,
    Button::Details,
    Button::Refresh,
    Button::Help,
    Button::Quit,
];

/// Draws the "API Keys" view; with `hits` (the list is in front) registers its buttons, its
/// rows on screen and the table, where they were drawn.
pub fn render(app: &App, frame: &mut Frame, area: Rect, mut hits: Option<&mut Hits>) {
    let block = Block::new().borders(Borders::TOP).title(" API Keys ");
    let [buttons, inner] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(block.inner(area));
    frame.render_widget(block, area);
    button_bar(&BUTTONS, frame, buttons, hits.as_deref_mut());
    let visible = app.visible();
    if visible.is_empty() {
        let text = if !app.loaded {
            "Loading keys from gatewayd…".to_owned()
        } else if app.keys().is_empty() {
            "No keys yet. Press c or click Create Key to create one.".to_owned()
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
    let spend_width: u16 = if wide { 30 } else { GAUGE_WIDTH };
    let selected = app.selected_index();
    let shown = columns(inner.width, spend_width, selected.is_some());
    let spend_width = shown.spend_width;
    let header = Row::new(
        shown
            .columns
            .iter()
            .map(|column| column.header())
            .collect::<Vec<_>>(),
    )
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = visible.iter().map(|key| {
        Row::new(
            shown
                .columns
                .iter()
                .map(|column| match column {
                    Column::Name => Line::from(key.name.clone()),
                    Column::Prefix => Line::from(key.prefix.clone()),
                    Column::State => Line::from(key_state_span(key)),
                    Column::Spend => Line::from(gauge(key, usize::from(spend_width))),
                    Column::Rpm => Line::from(
                        key.rate_limit_rpm
                            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                    ),
                    Column::Expires => Line::from(
                        key.expires_at
                            .map_or_else(|| "never".to_owned(), |at| relative(at, app.now)),
                    ),
                    Column::LastUsed => Line::from(
                        key.last_used_at
                            .map_or_else(|| "never".to_owned(), |at| relative(at, app.now)),
                    ),
                })
                .collect::<Vec<_>>(),
        )
    });
    let widths: Vec<Constraint> = shown
        .columns
        .iter()
        .map(|column| column.width(spend_width))
        .collect();
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("›");
    let mut state = TableState::new().with_selected(selected);
    frame.render_stateful_widget(table, inner, &mut state);
    if let Some(hits) = hits {
        // One line a row under a one-line header, from the offset the table scrolled to.
        hits.table = Some(inner);
        let rows = inner.height.saturating_sub(1);
        for (line, key) in (0..rows).zip(visible.iter().skip(state.offset())) {
            let rect = Rect::new(inner.x, inner.y + 1 + line, inner.width, 1);
            hits.rows.push((rect, key.id.clone()));
        }
    }
}

/// Spend against the limit in `width` cells: `██▌░░░░░  31% $1.20/$50.00` when the amounts
/// fit beside the bar (rounded for display: cents from a dollar up, three significant digits
/// below, `$1.2k` when even whole dollars do not fit), `██▌░░░░░  31%` when they do not, a
/// shorter bar or no bar when even that does not fit; just the spend, `$34.50 (no limit)` or
/// `$34.50`, for a key without a limit. Digits are never cut: what cannot be shown whole is
/// left out, and an ellipsis marks the last resort.
pub fn gauge(key: &KeyView, width: usize) -> Vec<Span<'static>> {
    let spent = shown_spend(key);
    let spent_forms = money_forms(spent);
    let Some(limit) = key.spend_limit_usd else {
        // No gauge is the sign of no limit; the words fit only in a wide column.
        let words = format!("{} (no limit)", spent_forms[0]);
        let text = if words.chars().count() <= width {
            words
        } else {
            fit_one(&spent_forms, width)
        };
        return vec![Span::raw(text)];
    };
    let limit_forms = money_forms(limit);
    let percent = (u128::from(spent.0) * 100)
        .checked_div(u128::from(limit.0))
        .unwrap_or(0)
        .min(999);
    let colour = match percent {
        0..80 => Color::Green,
        80..100 => Color::Yellow,
        _ => Color::Red,
    };
    let percent_text = format!(" {percent:>3}%");
    let bar_spans = |cells: usize| {
        let filled = bar(spent.0, limit.0, cells);
        let empty = "░".repeat(cells.saturating_sub(filled.chars().count()));
        vec![
            Span::styled(filled, Style::new().fg(colour)),
            Span::styled(empty, Style::new().fg(Color::DarkGray)),
        ]
    };
    let gauge_width = GAUGE_CELLS + percent_text.len();
    // The amounts beside the whole bar, as precise as the room allows.
    let levels = spent_forms.len().max(limit_forms.len());
    for level in 0..levels {
        let amounts = format!(
            " {}/{}",
            spent_forms[level.min(spent_forms.len() - 1)],
            limit_forms[level.min(limit_forms.len() - 1)]
        );
        if gauge_width + amounts.chars().count() <= width {
            let mut spans = bar_spans(GAUGE_CELLS);
            spans.push(Span::raw(percent_text));
            spans.push(Span::raw(amounts));
            return spans;
        }
    }
    // No room for the amounts: the bar and the percentage, the bar shrinking to fit.
    if width > percent_text.len() {
        let mut spans = bar_spans(GAUGE_CELLS.min(width - percent_text.len()));
        spans.push(Span::raw(percent_text));
        return spans;
    }
    let percent_text = format!("{percent}%");
    vec![Span::styled(
        fit_one(std::slice::from_ref(&percent_text), width),
        Style::new().fg(colour),
    )]
}

/// The first of `forms` that fits in `width` cells, else the last one cut to an ellipsis.
fn fit_one(forms: &[String], width: usize) -> String {
    if let Some(form) = forms.iter().find(|f| f.chars().count() <= width) {
        return form.clone();
    }
    match width {
        0 => String::new(),
        _ => {
            let last = forms.last().map_or("", String::as_str);
            let mut cut: String = last.chars().take(width - 1).collect();
            cut.push('…');
            cut
        }
    }
}

const NANOS_PER_DOLLAR: u64 = 1_000_000_000;

/// Ways to show `amount`, most precise first, each an honest rounding of it (to the nearest
/// digit shown, never cut): `$1234.56`, `$1235`, `$1.23k`, `$1.2k`, `$1k`; `$12.35`, `$12`;
/// below a dollar three, two and one significant digits (`$0.000755`, `$0.00075`, `$0.0008`),
/// then `<$0.01`. The detail pane and `gwctl keys show` have the exact amount.
pub fn money_forms(amount: Nanodollars) -> Vec<String> {
    let nanos = amount.0;
    if nanos == 0 {
        return vec!["$0.00".to_owned(), "$0".to_owned()];
    }
    if nanos < NANOS_PER_DOLLAR {
        let magnitude = nanos.ilog10(); // 0..=8: the first significant digit's place
        let first_decimal = 9 - magnitude; // 1..=9
        let mut forms: Vec<String> = (1..=3u32)
            .rev()
            .map(|significant| {
                let decimals = (first_decimal + significant - 1).clamp(2, 9);
                decimal(nanos, decimals)
            })
            .collect();
        if nanos < NANOS_PER_DOLLAR / 100 {
            forms.push("<$0.01".to_owned());
        }
        forms.dedup();
        return forms;
    }
    let mut forms = vec![decimal(nanos, 2), decimal(nanos, 0)];
    let units = [(1_000_000_000u64, "B"), (1_000_000, "M"), (1_000, "k")];
    if let Some(&(unit, suffix)) = units
        .iter()
        .find(|(unit, _)| nanos / NANOS_PER_DOLLAR >= *unit)
    {
        for decimals in [2, 1, 0] {
            let places = 10u128.pow(decimals);
            let scale = u128::from(unit) * u128::from(NANOS_PER_DOLLAR);
            let rounded = (u128::from(nanos) * places + scale / 2) / scale;
            forms.push(format!(
                "${}{suffix}",
                with_decimals(rounded, decimals, places)
            ));
        }
    }
    forms.dedup();
    forms
}

/// `nanos` rounded half up to `decimals` places, trailing zeros past the cents dropped.
fn decimal(nanos: u64, decimals: u32) -> String {
    let places = 10u128.pow(decimals);
    let step = 10u128.pow(9 - decimals);
    let rounded = (u128::from(nanos) + step / 2) / step;
    let mut text = with_decimals(rounded, decimals, places);
    if let Some(point) = text.find('.') {
        while text.len() > point + 3 && text.ends_with('0') {
            text.pop();
        }
    }
    format!("${text}")
}

/// `rounded` hundredths (say) as `12.34`.
fn with_decimals(rounded: u128, decimals: u32, places: u128) -> String {
    let whole = rounded / places;
    if decimals == 0 {
        return whole.to_string();
    }
    let width = usize::try_from(decimals).unwrap_or(9);
    format!("{whole}.{:0width$}", rounded % places)
}

#[cfg(test)]
mod tests {
    use gateway_shared::Nanodollars;

    use super::*;
    use crate::output::tests::sample_key;

    fn text(spans: &[Span]) -> String {
        spans.iter().map(|s| s.content.as_ref()).collect()
    }

    const WIDE: usize = 30;
    const NARROW: usize = GAUGE_WIDTH as usize;

    #[test]
    fn gauges_read_without_colour() {
        let mut key = sample_key(); // $1.20 of $50.00 daily
        assert_eq!(text(&gauge(&key, NARROW)), "▏░░░░░░░   2%");
        assert_eq!(text(&gauge(&key, WIDE)), "▏░░░░░░░   2% $1.20/$50.00");
        key.spend_period_usd = Nanodollars(25_000_000_000);
        assert_eq!(text(&gauge(&key, NARROW)), "████░░░░  50%");
        key.spend_period_usd = Nanodollars(60_000_000_000);
        assert_eq!(text(&gauge(&key, NARROW)), "████████ 120%");
        assert_eq!(gauge(&key, NARROW)[0].style.fg, Some(Color::Red));
        key.spend_limit_usd = None;
        assert_eq!(text(&gauge(&key, NARROW)), "$34.50");
        assert_eq!(text(&gauge(&key, WIDE)), "$34.50 (no limit)");
    }

    fn money(nanos: u64) -> Vec<String> {
        money_forms(Nanodollars(nanos))
    }

    #[test]
    fn amounts_round_to_what_reads_well() {
        assert_eq!(money(0), ["$0.00", "$0"]);
        assert_eq!(money(10_000_052_500), ["$10.00", "$10"]);
        assert_eq!(money(12_345_000_000), ["$12.35", "$12"]);
        assert_eq!(money(999_996_000), ["$1.00"]);
        assert_eq!(money(500_000_000), ["$0.50"]);
        assert_eq!(money(123_456_789), ["$0.123", "$0.12"]);
        assert_eq!(
            money(754_500),
            ["$0.000755", "$0.00075", "$0.0008", "<$0.01"]
        );
        assert_eq!(money(1), ["$0.000000001", "<$0.01"]);
        assert_eq!(
            money(1_000_000_000_000),
            ["$1000.00", "$1000", "$1.00k", "$1.0k", "$1k"]
        );
        assert_eq!(
            money(1_234_567_000_000_000),
            ["$1234567.00", "$1234567", "$1.23M", "$1.2M", "$1M"]
        );
        assert_eq!(money(u64::MAX).last().map(String::as_str), Some("$18B"));
    }

    /// What the review found: `$10.0000525/$1000` was cut to `$10.0000525/$100` (a limit read
    /// ten times too low) and `$0.0007545` to `$0.00`.
    #[test]
    fn amounts_are_rounded_never_cut() {
        let mut key = sample_key();
        key.spend_period_usd = Nanodollars(10_000_052_500);
        key.spend_limit_usd = Some(Nanodollars(1_000_000_000_000));
        assert_eq!(text(&gauge(&key, WIDE)), "▏░░░░░░░   1% $10.00/$1000.00");
        key.spend_period_usd = Nanodollars(1_234_560_000_000);
        key.spend_limit_usd = Some(Nanodollars(10_000_000_000_000));
        assert_eq!(text(&gauge(&key, WIDE)), "▉░░░░░░░  12% $1235/$10000");
        key.spend_period_usd = Nanodollars(1_234_560_000_000_000);
        key.spend_limit_usd = Some(Nanodollars(10_000_000_000_000_000));
        assert_eq!(text(&gauge(&key, WIDE)), "▉░░░░░░░  12% $1.23M/$10.00M");
        // Narrower than the gauge: the bar gives way first, the percentage last.
        assert_eq!(text(&gauge(&key, 9)), "▍░░░  12%");
        assert_eq!(text(&gauge(&key, 5)), "12%");
        assert_eq!(text(&gauge(&key, 2)), "1…");
        key.spend_limit_usd = None;
        key.spend_total_usd = Nanodollars(754_500);
        assert_eq!(text(&gauge(&key, WIDE)), "$0.000755 (no limit)");
        assert_eq!(text(&gauge(&key, NARROW)), "$0.000755");
        assert_eq!(text(&gauge(&key, 8)), "$0.00075");
        assert_eq!(text(&gauge(&key, 6)), "<$0.01");
        assert_eq!(text(&gauge(&key, 4)), "<$0…");
    }

    fn screen_with(keys: Vec<KeyView>, width: u16) -> String {
        let mut app = crate::tui::fixtures::loaded_app();
        app.update(crate::tui::event::Event::Keys(Ok(keys)));
        let mut terminal =
            ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, 8)).expect("terminal");
        terminal
            .draw(|frame| render(&app, frame, frame.area(), None))
            .expect("draw");
        terminal.backend().to_string()
    }

    #[test]
    fn the_table_shows_whole_amounts_at_120_and_40_columns() {
        let limited = KeyView {
            name: "pg3".into(),
            spend_period_usd: Nanodollars(10_000_052_500),
            spend_limit_usd: Some(Nanodollars(1_000_000_000_000)),
            ..sample_key()
        };
        let unlimited = KeyView {
            id: "key_tinytinytinytinyti".into(),
            name: "tiny".into(),
            spend_limit_usd: None,
            spend_total_usd: Nanodollars(754_500),
            ..sample_key()
        };
        let wide = screen_with(vec![limited.clone(), unlimited.clone()], 120);
        insta::assert_snapshot!(wide);
        assert!(wide.contains("$10.00/$1000.00"), "{wide}");
        assert!(wide.contains("$0.000755 (no limit)"), "{wide}");
        let narrow = screen_with(vec![limited, unlimited], 40);
        insta::assert_snapshot!(narrow);
        assert!(narrow.contains("   1%"), "{narrow}");
        assert!(narrow.contains("$0.000755"), "{narrow}");
    }
}
