//! `gwctl keys usage KEY`: what a key spent, day by day and model by model (SPEC §5, §6).
//!
//! The daemon does the counting (`GET /v1/keys/{id}/usage`); this module only picks the date
//! range and draws. The per-day chart is plain text, one line a day with a bar of block
//! characters scaled to the most expensive day, so it reads the same in a pipe, a log file or a
//! terminal without colour; colour is an extra, off under `NO_COLOR` or when stdout is not a
//! terminal. `--output json` prints the API's `UsageReport` and nothing else. The report's
//! text from the daemon (the key id, model names) is escaped where it is put in, since the
//! chart's colours are escape codes and so the report is printed as it is.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Args;
use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use gateway_shared::api::{DailyUsage, UsageReport};
use gateway_shared::validate::FieldError;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use super::{KEY_HELP, resolve_id};
use crate::client::ApiClient;
use crate::output::Output;
use crate::{OutputFormat, Refusal};

/// Width of the longest bar, in terminal cells: fits beside the date and numbers in 80 columns.
pub const BAR_WIDTH: usize = 40;

#[derive(Debug, Args)]
pub struct Cmd {
    #[arg(value_name = "KEY", help = KEY_HELP)]
    key: String,
    /// First UTC day of the range, YYYY-MM-DD [default: 29 days before --to].
    #[arg(long, value_name = "DATE", conflicts_with = "days")]
    from: Option<String>,
    /// Last UTC day of the range, YYYY-MM-DD [default: today].
    #[arg(long, value_name = "DATE")]
    to: Option<String>,
    /// The last N days up to --to (or today), instead of --from.
    #[arg(long, value_name = "N")]
    days: Option<u32>,
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        let (from, to) = self.range(output.now).map_err(Refusal::from)?;
        let key_id = resolve_id(client, &self.key).await?;
        let report = client
            .key_usage(&key_id, from, to)
            .await
            .with_context(|| format!("reading the usage of key {key_id}"))?;
        match output.format {
            OutputFormat::Json => output.json(&report),
            OutputFormat::Table => output.stdout_styled(&usage_text(&report, colour_wanted())),
        }
    }

    /// The `from`/`to` to ask for; `None` leaves that end to the daemon's default.
    fn range(&self, now: Timestamp) -> Result<(Option<Date>, Option<Date>), FieldError> {
        let from = self
            .from
            .as_deref()
            .map(|t| parse_day("from", t))
            .transpose()?;
        let to = self.to.as_deref().map(|t| parse_day("to", t)).transpose()?;
        let from = match self.days {
            None => from,
            Some(0) => return Err(FieldError::invalid("days", "must be at least 1")),
            Some(days) => {
                let last = to.unwrap_or_else(|| now.to_zoned_datetime(TimeZone::UTC).date());
                let first = last
                    .checked_sub((i64::from(days) - 1).days())
                    .map_err(|e| FieldError::invalid("days", e.to_string()))?;
                Some(first)
            }
        };
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(FieldError::invalid(
                "from",
                format!("must not be after to ({from} > {to})"),
            ));
        }
        Ok((from, to))
    }
}

fn parse_day(field: &str, text: &str) -> Result<Date, FieldError> {
    let text = text.trim();
    let valid = text.len() == 10 && text.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    valid
        .then(|| text.parse::<Date>().ok())
        .flatten()
        .ok_or_else(|| {
            FieldError::invalid(field, format!("must be a date YYYY-MM-DD (got {text:?})"))
        })
}

/// Colour only for a person at a terminal who has not asked for none (no-color.org).
fn colour_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Totals, then the per-day chart, then the by-model table.
pub fn usage_text(report: &UsageReport, colour: bool) -> String {
    let total = &report.total;
    let n_days = report.by_day.len();
    let mut out = format!(
        "key:       {}\n\
         range:     {} to {} ({n_days} day{})\n\
         requests:  {} ({} estimated, {} unpriced)\n\
         tokens:    {} in / {} out\n\
         cost:      {}\n",
        crate::sanitize::text(&report.key_id),
        report.from,
        report.to,
        if n_days == 1 { "" } else { "s" },
        total.requests,
        total.estimated_requests,
        total.unpriced_requests,
        total.input_tokens,
        total.output_tokens,
        total.cost_usd,
    );
    out.push('\n');
    out.push_str(&day_chart(&report.by_day, BAR_WIDTH, colour));
    out.push('\n');
    if report.by_model.is_empty() {
        out.push_str("no requests in this range");
        return out;
    }
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header([
            "PROVIDER",
            "MODEL",
            "REQUESTS",
            "TOKENS IN",
            "TOKENS OUT",
            "COST",
        ]);
    for model in &report.by_model {
        table.add_row(crate::output::row([
            model.provider.to_string(),
            model.model.clone(),
            model.totals.requests.to_string(),
            model.totals.input_tokens.to_string(),
            model.totals.output_tokens.to_string(),
            model.totals.cost_usd.to_string(),
        ]));
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if i >= 2 {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    out.push_str(&table.trim_fmt());
    out
}

/// One line a day: `2027-01-02  ██████▌      $1.23  12 req`, bars scaled to the costliest day.
pub fn day_chart(days: &[DailyUsage], width: usize, colour: bool) -> String {
    let max = days.iter().map(|d| d.totals.cost_usd.0).max().unwrap_or(0);
    let costs: Vec<String> = days.iter().map(|d| d.totals.cost_usd.to_string()).collect();
    let cost_width = costs.iter().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    for (day, cost) in days.iter().zip(&costs) {
        let bar = bar(day.totals.cost_usd.0, max, width);
        let pad = " ".repeat(width.saturating_sub(bar.chars().count()));
        let bar = if colour && !bar.is_empty() {
            format!("\x1b[32m{bar}\x1b[0m")
        } else {
            bar
        };
        let requests = day.totals.requests;
        out.push_str(&format!(
            "{}  {bar}{pad}  {cost:>cost_width$}  {requests} req\n",
            day.date
        ));
    }
    out
}

/// Partial blocks for the last cell of a bar, in eighths of a cell.
const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/// A bar of `value / max` of `width` cells, to an eighth of a cell. A value above zero always
/// shows at least one eighth, so a cheap day is never mistaken for an idle one.
pub fn bar(value: u64, max: u64, width: usize) -> String {
    if value == 0 || max == 0 || width == 0 {
        return String::new();
    }
    let total_eighths = u128::try_from(width).unwrap_or(u128::MAX).saturating_mul(8);
    let scaled = (u128::from(value.min(max)) * total_eighths) / u128::from(max);
    let eighths = usize::try_from(scaled).unwrap_or(usize::MAX).max(1);
    let mut bar = "█".repeat(eighths / 8);
    if eighths % 8 != 0 {
        bar.push(EIGHTHS[eighths % 8]);
    }
    bar
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use gateway_shared::api::{ModelUsage, UsageTotals};
    use gateway_shared::{Nanodollars, Provider};

    use super::*;

    #[test]
    fn bars_scale_to_the_maximum_in_eighths() {
        assert_eq!(bar(10, 10, 4), "████");
        assert_eq!(bar(5, 10, 4), "██");
        assert_eq!(bar(1, 8, 1), "▏");
        assert_eq!(bar(3, 8, 1), "▍");
        assert_eq!(bar(15, 16, 2), "█▉"); // 15 of 16 eighths
        assert_eq!(bar(7, 10, 2), "█▍"); // 11.2 eighths, rounded down
        assert_eq!(bar(0, 10, 4), "");
        assert_eq!(bar(10, 0, 4), "");
        assert_eq!(bar(5, 10, 0), "");
        // A sliver is still visible; a value above the maximum is clamped.
        assert_eq!(bar(1, 1_000_000, 40), "▏");
        assert_eq!(bar(20, 10, 3), "███");
        assert_eq!(
            bar(u64::MAX, u64::MAX, BAR_WIDTH).chars().count(),
            BAR_WIDTH
        );
    }

    fn totals(requests: u64, cost_nanos: u64) -> UsageTotals {
        UsageTotals {
            requests,
            input_tokens: requests * 100,
            output_tokens: requests * 50,
            cost_usd: Nanodollars(cost_nanos),
            estimated_requests: 0,
            unpriced_requests: 0,
        }
    }

    fn day(date: &str, requests: u64, cost_nanos: u64) -> DailyUsage {
        DailyUsage {
            date: date.parse().expect("date"),
            totals: totals(requests, cost_nanos),
        }
    }

    fn report() -> UsageReport {
        UsageReport {
            key_id: "key_0123456789abcdefghij".into(),
            from: "2027-01-01".parse().expect("date"),
            to: "2027-01-03".parse().expect("date"),
            total: UsageTotals {
                estimated_requests: 1,
                unpriced_requests: 2,
                ..totals(7, 3_000_000_000)
            },
            by_day: vec![
                day("2027-01-01", 2, 1_000_000_000),
                day("2027-01-02", 0, 0),
                day("2027-01-03", 5, 2_000_000_000),
            ],
            by_model: vec![ModelUsage {
                provider: Provider::Openai,
                model: "gpt-4o".into(),
                totals: totals(7, 3_000_000_000),
            }],
        }
    }

    #[test]
    fn the_chart_has_a_line_a_day_without_colour() {
        let chart = day_chart(&report().by_day, 8, false);
        assert_eq!(
            chart,
            "2027-01-01  ████      $1.00  2 req\n\
             2027-01-02            $0.00  0 req\n\
             2027-01-03  ████████  $2.00  5 req\n"
        );
        assert!(!chart.contains('\x1b'));
        let coloured = day_chart(&report().by_day, 8, true);
        assert!(coloured.contains("\x1b[32m████\x1b[0m"), "{coloured}");
        // An idle day gets no escape codes around an empty bar.
        assert!(
            coloured.contains("2027-01-02            $0.00"),
            "{coloured}"
        );
    }

    #[test]
    fn the_report_has_totals_chart_and_models() {
        let text = usage_text(&report(), false);
        for needle in [
            "key:       key_0123456789abcdefghij",
            "range:     2027-01-01 to 2027-01-03 (3 days)",
            "requests:  7 (1 estimated, 2 unpriced)",
            "tokens:    700 in / 350 out",
            "cost:      $3.00",
            "PROVIDER  MODEL   REQUESTS  TOKENS IN  TOKENS OUT   COST",
            "openai    gpt-4o         7        700         350  $3.00",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
        let mut hostile = report();
        hostile.key_id = "key_\u{1b}]0;t\u{7}".into();
        hostile.by_model[0].model = "gpt-\u{1b}[2J\u{9b}".into();
        let text = usage_text(&hostile, true);
        assert!(text.contains(r"key:       key_\u{1b}]0;t\u{7}"), "{text}");
        assert!(text.contains(r"gpt-\u{1b}[2J\u{9b}"), "{text}");
        // Only the chart's own colour codes are escape codes.
        assert_eq!(text.matches('\x1b').count(), 2 * 2, "{text}");
        let mut idle = report();
        idle.by_model.clear();
        assert!(usage_text(&idle, false).ends_with("no requests in this range"));
    }

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        cmd: Cmd,
    }

    fn range(args: &[&str]) -> Result<(Option<String>, Option<String>), String> {
        let argv = ["usage", "key_0123456789abcdefghij"]
            .into_iter()
            .chain(args.iter().copied());
        let cmd = Harness::try_parse_from(argv)
            .map_err(|e| e.kind().to_string())?
            .cmd;
        cmd.range("2027-01-31T12:00:00Z".parse().expect("now"))
            .map(|(f, t)| (f.map(|d| d.to_string()), t.map(|d| d.to_string())))
            .map_err(|e| e.field)
    }

    fn some(
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<(Option<String>, Option<String>), String> {
        Ok((from.map(str::to_owned), to.map(str::to_owned)))
    }

    #[test]
    fn ranges_from_flags() {
        assert_eq!(range(&[]), some(None, None));
        assert_eq!(
            range(&["--from", "2027-01-01", "--to", "2027-01-10"]),
            some(Some("2027-01-01"), Some("2027-01-10"))
        );
        assert_eq!(range(&["--days", "7"]), some(Some("2027-01-25"), None));
        assert_eq!(
            range(&["--days", "1", "--to", "2027-01-10"]),
            some(Some("2027-01-10"), Some("2027-01-10"))
        );
        assert_eq!(range(&["--days", "0"]), Err("days".into()));
        assert_eq!(range(&["--from", "2027-1-1"]), Err("from".into()));
        assert_eq!(range(&["--to", "2027-02-30"]), Err("to".into()));
        assert_eq!(
            range(&["--from", "2027-01-10", "--to", "2027-01-01"]),
            Err("from".into())
        );
        assert!(range(&["--from", "2027-01-01", "--days", "3"]).is_err());
    }
}
