//! The cluster section of the report: the cluster gatewayd beside the single-server one
//! measured in the same rounds, what each request cost Redis, and issue #17's targets.
//!
//! Added latency here is over the single-server gatewayd (same key, same cell, rounds taken
//! in turns), so it is what cluster mode costs a request; the main table still shows both
//! against the bare proxy.

use std::fmt::Write as _;

use crate::load::{Mode, Sample};
use crate::report::{Cell, Run, Server};

/// Most Redis round trips a proxied request may cost (issue #17).
const MAX_ROUND_TRIPS: f64 = 2.0;
/// Most p50 the cluster gatewayd may add at c1 over the single-server one, ms.
const MAX_ADDED_P50_MS: f64 = 0.15;

/// The Redis figures of a cluster cell for the progress line; empty for other cells.
pub fn progress(sample: &Sample) -> String {
    let Some(redis) = &sample.redis else {
        return String::new();
    };
    let relay = redis.relay.as_ref();
    format!(
        "  redis: {} round trips/req, {} commands sent/req, cpu {} µs/req",
        fmt(relay.and_then(|r| sample.per_request(r.flights as f64)), 2),
        fmt(
            relay.and_then(|r| sample.per_request(r.commands.values().sum::<u64>() as f64)),
            2
        ),
        fmt(sample.per_request(redis.cpu.as_secs_f64() * 1e6), 1)
    )
}

fn fmt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "?".to_owned(), |v| format!("{v:.decimals$}"))
}

/// `name n.nn, …` per request, names under 0.005 per request left out.
fn by_name<'a>(sample: &Sample, counts: impl Iterator<Item = (&'a String, u64)>) -> String {
    counts
        .filter_map(|(name, calls)| {
            let per = sample.per_request(calls as f64)?;
            (per >= 0.005).then(|| format!("{name} {per:.2}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => String::new(),
    }
}

/// Pairs of (cluster cell, single-server cell) in the run's order.
fn pairs(run: &Run) -> Vec<(&Cell, Option<&Cell>)> {
    run.cells
        .iter()
        .filter(|c| c.server == Server::GatewaydCluster)
        .map(|c| (c, run.find(c.mode, c.concurrency, Server::Gatewayd)))
        .collect()
}

pub fn render(run: &Run, out: &mut String) {
    let pairs = pairs(run);
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### Cluster mode (gatewayd with PostgreSQL and Redis; ratios and added latency are ÷ / over the single-server gatewayd, same run)\n"
    );
    let _ = writeln!(
        out,
        "| mode | conc | req/s | ×gatewayd | ×bare | p50 ms | added p50 ms | p99 ms | added p99 ms | gatewayd CPU µs/req | ×gatewayd | Redis CPU µs/req | Redis round trips/req | commands sent/req | bytes sent / received per req | Redis µs in scripts/req | errors |"
    );
    let _ = writeln!(
        out,
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    );
    let mut names = String::new();
    for (cell, single) in &pairs {
        let s = &cell.sample;
        let bare = run.find(cell.mode, cell.concurrency, Server::Bare);
        let added = |q: f64| {
            single.map_or_else(String::new, |g| {
                format!("{:+.3}", s.percentile_ms(q) - g.sample.percentile_ms(q))
            })
        };
        let cpu = s.cpu_us_per_request();
        let redis = s.redis.as_ref();
        let relay = redis.and_then(|r| r.relay.as_ref());
        let per = |n: u64, decimals: usize| fmt(s.per_request(n as f64), decimals);
        let _ = writeln!(
            names,
            "| {} | {} | {} | {} |",
            cell.mode.name(),
            cell.concurrency,
            relay.map_or_else(String::new, |r| by_name(
                s,
                r.commands.iter().map(|(n, &c)| (n, c))
            )),
            redis.map_or_else(String::new, |r| format!(
                "{} in all: {}",
                per(r.commands_run(), 2),
                by_name(s, r.commands.iter().map(|(n, c)| (n, c.calls)))
            )),
        );
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {:.3} | {} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell.mode.name(),
            cell.concurrency,
            s.rps(),
            ratio(Some(s.rps()), single.map(|g| g.sample.rps())),
            ratio(Some(s.rps()), bare.map(|b| b.sample.rps())),
            s.percentile_ms(0.5),
            added(0.5),
            s.percentile_ms(0.99),
            added(0.99),
            fmt(cpu, 1),
            ratio(cpu, single.and_then(|g| g.sample.cpu_us_per_request())),
            fmt(
                redis.and_then(|r| s.per_request(r.cpu.as_secs_f64() * 1e6)),
                1
            ),
            relay.map_or_else(|| "?".to_owned(), |r| per(r.flights, 2)),
            relay.map_or_else(|| "?".to_owned(), |r| per(r.commands.values().sum(), 2)),
            relay.map_or_else(
                || "?".to_owned(),
                |r| format!("{} / {}", per(r.bytes_up, 0), per(r.bytes_down, 0))
            ),
            redis.map_or_else(|| "?".to_owned(), |r| per(r.script_usec(), 1)),
            s.errors,
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Redis commands per request, by name: sent by gatewayd (counted at the relay) and run by Redis (`INFO commandstats`: the commands scripts call included; on a shared Redis, anyone else's too).\n"
    );
    let _ = writeln!(out, "| mode | conc | sent by gatewayd | run in Redis |");
    let _ = writeln!(out, "|---|--:|---|---|");
    out.push_str(&names);
    let _ = writeln!(out);
}

/// Issue #17's targets for cluster mode, when it was measured.
pub fn targets(run: &Run) -> Vec<String> {
    let judge = |pass: bool| if pass { "PASS" } else { "FAIL" };
    let pairs = pairs(run);
    let mut verdicts = Vec::new();
    let trips: Vec<(f64, &Cell)> = pairs
        .iter()
        .filter_map(|(cell, _)| {
            let flights = cell.sample.redis.as_ref()?.relay.as_ref()?.flights;
            Some((cell.sample.per_request(flights as f64)?, *cell))
        })
        .collect();
    let any_traffic = trips.iter().any(|(t, _)| *t > 0.0);
    if !trips.is_empty() && !any_traffic {
        verdicts.push(
            "n/a Redis round trips per request: none in any cluster cell (this gatewayd sent Redis nothing while measured)".to_owned(),
        );
    } else if let Some((worst, cell)) = trips.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
        let at_c1: Vec<String> = trips
            .iter()
            .filter(|(_, c)| c.concurrency == 1)
            .map(|(t, c)| format!("{} {t:.2}", c.mode.name()))
            .collect();
        verdicts.push(format!(
            "{} Redis round trips per request ≤ {MAX_ROUND_TRIPS:.0} in every cluster cell: at most {worst:.2} ({} c{}); at c1: {}",
            judge(*worst <= MAX_ROUND_TRIPS),
            cell.mode.name(),
            cell.concurrency,
            if at_c1.is_empty() { "not measured".to_owned() } else { at_c1.join(", ") }
        ));
    }
    for mode in [Mode::Json, Mode::Sse] {
        if let Some((cluster, Some(single))) = pairs
            .iter()
            .find(|(c, _)| c.mode == mode && c.concurrency == 1)
        {
            let (c, g) = (
                cluster.sample.percentile_ms(0.5),
                single.sample.percentile_ms(0.5),
            );
            verdicts.push(format!(
                "{} cluster adds ≤ {MAX_ADDED_P50_MS:.2} ms p50 at c1 over single-server ({}): {:+.3} ms ({c:.3} vs {g:.3} ms)",
                judge(c - g <= MAX_ADDED_P50_MS),
                mode.name(),
                c - g
            ));
            if let Some(floor) = run.redis_floor {
                verdicts.push(format!(
                    "INFO of which a bare Redis round trip on this machine ({}, c1 p50, the admission's shape): {:.3} ms (PING {:.3} ms); cluster adds {:+.3} ms beyond it",
                    mode.name(),
                    floor.script_ms,
                    floor.ping_ms,
                    c - g - floor.script_ms
                ));
            }
        }
    }
    for (cluster, single) in &pairs {
        let (Some(single), Some(redis)) = (single, cluster.sample.redis.as_ref()) else {
            continue;
        };
        if cluster.mode != Mode::Json {
            continue;
        }
        let s = &cluster.sample;
        verdicts.push(format!(
            "INFO CPU per request, json c{}: gatewayd-cluster {} µs ({}× single-server's {} µs), Redis {} µs",
            cluster.concurrency,
            fmt(s.cpu_us_per_request(), 1),
            ratio(s.cpu_us_per_request(), single.sample.cpu_us_per_request()),
            fmt(single.sample.cpu_us_per_request(), 1),
            fmt(s.per_request(redis.cpu.as_secs_f64() * 1e6), 1),
        ));
    }
    verdicts
}
