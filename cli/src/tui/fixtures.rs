//! Fixed keys, usage and instants for the dashboard's tests, so snapshots never change with
//! the clock or a random id.

use gateway_shared::api::{DailyUsage, KeyCreated, KeyView, ModelUsage, UsageReport, UsageTotals};
use gateway_shared::{KeyState, Nanodollars, Provider, SpendReset};
use jiff::{Timestamp, ToSpan};

use super::app::App;
use super::event::Event;

pub const NOW: &str = "2027-01-02T12:00:00Z";
pub const SOCKET: &str = "/run/gatewayd/admin.sock";
/// 47 characters, like a real key; never a real one.
pub const SECRET: &str = "sk-proxy-n3wKTESTONLYxxxxxxxxxxxxxxxxxxxxxxxxxx";

pub fn ts(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

pub fn now() -> Timestamp {
    ts(NOW)
}

fn dollars(cents: u64) -> Nanodollars {
    Nanodollars(cents * 10_000_000)
}

fn base(id: &str, name: &str, prefix: &str) -> KeyView {
    KeyView {
        id: id.into(),
        name: name.into(),
        prefix: prefix.into(),
        state: KeyState::Active,
        allowed_providers: vec![],
        allowed_models: vec![],
        allowed_ips: vec![],
        rate_limit_rpm: None,
        spend_limit_usd: None,
        spend_reset: None,
        expires_at: None,
        created_at: ts("2026-11-01T09:00:00Z"),
        updated_at: ts("2026-11-01T09:00:00Z"),
        revoked_at: None,
        last_used_at: None,
        spend_period_usd: Nanodollars::ZERO,
        spend_total_usd: Nanodollars::ZERO,
        period_resets_at: None,
        request_count: 0,
        replaced_by: None,
    }
}

pub const BACKEND_ID: &str = "key_backendprod0000000001";
pub const BATCH_ID: &str = "key_batchjobs00000000002";
pub const STAGING_ID: &str = "key_oldstaging000000003";
pub const INTERN_ID: &str = "key_internlaptop00000004";
pub const ANALYTICS_ID: &str = "key_analytics0000000005";

/// One key in each state, plus a lifetime cap near its limit; listed oldest first, as the
/// daemon lists them.
pub fn keys() -> Vec<KeyView> {
    vec![
        KeyView {
            state: KeyState::Active,
            allowed_providers: vec![Provider::Openai, Provider::Anthropic],
            allowed_models: vec!["gpt-4o*".into(), "claude-*".into()],
            allowed_ips: vec!["10.0.0.0/8".into()],
            rate_limit_rpm: Some(60),
            spend_limit_usd: Some(dollars(5_000)),
            spend_reset: Some(SpendReset::Daily),
            expires_at: Some(ts("2027-01-31T00:00:00Z")),
            last_used_at: Some(ts("2027-01-02T09:00:00Z")),
            spend_period_usd: dollars(120),
            spend_total_usd: dollars(3_450),
            period_resets_at: Some(ts("2027-01-03T00:00:00Z")),
            request_count: 1234,
            ..base(BACKEND_ID, "backend-prod", "sk-proxy-a1b2")
        },
        KeyView {
            state: KeyState::Exhausted,
            rate_limit_rpm: Some(600),
            spend_limit_usd: Some(dollars(1_000)),
            spend_reset: Some(SpendReset::Monthly),
            last_used_at: Some(ts("2027-01-02T11:40:00Z")),
            spend_period_usd: dollars(1_000),
            spend_total_usd: dollars(4_000),
            period_resets_at: Some(ts("2027-02-01T00:00:00Z")),
            request_count: 98_765,
            created_at: ts("2026-11-02T09:00:00Z"),
            ..base(BATCH_ID, "batch-jobs", "sk-proxy-b7c3")
        },
        KeyView {
            state: KeyState::Expired,
            expires_at: Some(ts("2027-01-01T00:00:00Z")),
            spend_total_usd: dollars(340),
            request_count: 57,
            last_used_at: Some(ts("2026-12-31T18:00:00Z")),
            created_at: ts("2026-11-03T09:00:00Z"),
            ..base(STAGING_ID, "old-staging", "sk-proxy-c9d4")
        },
        KeyView {
            state: KeyState::Revoked,
            revoked_at: Some(ts("2026-12-20T15:00:00Z")),
            spend_total_usd: dollars(12),
            request_count: 3,
            created_at: ts("2026-11-04T09:00:00Z"),
            ..base(INTERN_ID, "intern-laptop", "sk-proxy-e5f6")
        },
        KeyView {
            spend_limit_usd: Some(dollars(10_000)),
            spend_total_usd: dollars(8_500),
            request_count: 4_321,
            created_at: ts("2026-11-05T09:00:00Z"),
            ..base(ANALYTICS_ID, "analytics", "sk-proxy-f0a1")
        },
    ]
}

fn totals(requests: u64, cost: Nanodollars) -> UsageTotals {
    UsageTotals {
        requests,
        input_tokens: requests * 1_000,
        output_tokens: requests * 250,
        cost_usd: cost,
        estimated_requests: 0,
        unpriced_requests: 0,
    }
}

/// Thirty days for backend-prod, a few idle, with a peak of $2.40 on 2026-12-28.
pub fn usage() -> UsageReport {
    let from: jiff::civil::Date = "2026-12-04".parse().expect("date");
    let by_day: Vec<DailyUsage> = (0..30)
        .map(|i: i64| {
            let cents = match i {
                24 => 240,
                5 | 6 | 12 | 13 => 0,
                _ => u64::try_from((i * 37) % 150 + 20).expect("positive"),
            };
            DailyUsage {
                date: from.checked_add(i.days()).expect("date"),
                totals: totals(cents / 2, dollars(cents)),
            }
        })
        .collect();
    let total_cost = by_day.iter().fold(Nanodollars::ZERO, |sum, d| {
        sum.saturating_add(d.totals.cost_usd)
    });
    let total_requests = by_day.iter().map(|d| d.totals.requests).sum();
    UsageReport {
        key_id: BACKEND_ID.into(),
        from,
        to: "2027-01-02".parse().expect("date"),
        total: totals(total_requests, total_cost),
        by_day,
        by_model: vec![
            ModelUsage {
                provider: Provider::Openai,
                model: "gpt-4o".into(),
                totals: totals(700, dollars(2_500)),
            },
            ModelUsage {
                provider: Provider::Anthropic,
                model: "claude-sonnet-4".into(),
                totals: totals(300, dollars(950)),
            },
        ],
    }
}

pub fn created() -> KeyCreated {
    KeyCreated {
        key: KeyView {
            created_at: now(),
            updated_at: now(),
            ..base("key_newkey00000000000006", "ci-runner", "sk-proxy-n3wK")
        },
        secret: SECRET.into(),
    }
}

/// An app that has loaded the fixture keys.
pub fn loaded_app() -> App {
    let mut app = App::new(now(), SOCKET);
    app.start();
    app.update(Event::Keys(Ok(keys())));
    app
}
