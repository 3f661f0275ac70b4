//! The renderers' text, pinned: columns, labels, relative times, secrets last.

use gateway_shared::{KeyState, Nanodollars, Provider, SpendReset};

use super::*;

fn ts(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

const NOW: &str = "2027-01-02T00:00:00Z";

pub(crate) fn sample_key() -> KeyView {
    KeyView {
        id: "key_0123456789abcdefghij".into(),
        name: "backend-prod".into(),
        prefix: "sk-proxy-a1b2".into(),
        state: KeyState::Active,
        allowed_providers: vec![Provider::Openai, Provider::Anthropic],
        allowed_models: vec!["gpt-4o*".into(), "claude-*".into()],
        allowed_ips: vec![],
        rate_limit_rpm: Some(60),
        spend_limit_usd: Some(Nanodollars(50_000_000_000)),
        spend_reset: Some(SpendReset::Daily),
        expires_at: Some(ts("2027-01-31T00:00:00Z")),
        created_at: ts("2026-12-01T10:00:00Z"),
        updated_at: ts("2026-12-01T10:00:00.250Z"),
        revoked_at: None,
        last_used_at: Some(ts("2027-01-01T21:00:00Z")),
        spend_period_usd: Nanodollars(1_200_000_000),
        spend_total_usd: Nanodollars(34_500_000_000),
        period_resets_at: Some(ts("2027-01-03T00:00:00Z")),
        request_count: 1234,
        replaced_by: None,
    }
}

fn check_relative(at: &str, expected: &str) {
    assert_eq!(relative(ts(at), ts(NOW)), expected, "{at}");
}

#[test]
fn relative_hints() {
    check_relative(NOW, "now");
    check_relative("2027-01-02T00:00:30Z", "in 30s");
    check_relative("2027-01-01T23:55:00Z", "5m ago");
    check_relative("2027-01-01T21:00:00Z", "3h ago");
    check_relative("2027-01-31T00:00:00Z", "in 29d");
    check_relative("2030-01-02T00:00:00Z", "in 3y");
    // The future to the nearest unit, the past rounded down.
    check_relative("2027-01-31T23:59:58Z", "in 30d"); // `--expires 30d`, 2 s later
    check_relative("2027-01-01T21:59:00Z", "2h ago");
    check_relative("2027-01-02T00:59:31Z", "in 1h");
    check_relative("2027-01-02T00:00:29.900Z", "in 29s");
    check_relative("2027-01-02T00:45:00Z", "in 45m");
    check_relative("2027-01-03T23:59:00Z", "in 2d"); // not "in 48h"
}

/// Times in printed answers are shown against the clock as it is after the answer came:
/// read when the command started, a key just edited read `updated … (in 1s)`.
#[test]
fn printed_times_are_relative_to_after_the_answer() {
    let output = Output::live(OutputFormat::Table);
    std::thread::sleep(std::time::Duration::from_millis(10));
    let answered_at = Timestamp::now();
    assert!(output.shown_now() >= answered_at);
    assert!(
        output.now < answered_at,
        "the start stays what --expires counts from"
    );
    let mut key = sample_key();
    key.updated_at = answered_at;
    let text = key_details(&key, output.shown_now());
    let updated = text
        .lines()
        .find(|l| l.starts_with("updated:"))
        .expect("updated line");
    assert!(!updated.contains("(in "), "{updated}");
    let fixed = Output::new(OutputFormat::Table, ts(NOW));
    assert_eq!(fixed.shown_now(), ts(NOW));
}

#[test]
fn details_show_every_field() {
    let text = key_details(&sample_key(), ts(NOW));
    for needle in [
        "id:            key_0123456789abcdefghij",
        "name:          backend-prod",
        "prefix:        sk-proxy-a1b2",
        "state:         active",
        "providers:     openai, anthropic",
        "models:        gpt-4o*, claude-*",
        "ips:           any",
        "rate limit:    60 rpm",
        "spend limit:   $50.00 daily",
        "period spend:  $1.20",
        "period resets: 2027-01-03T00:00:00Z (in 24h)",
        "total spend:   $34.50",
        "requests:      1234",
        "expires:       2027-01-31T00:00:00Z (in 29d)",
        "created:       2026-12-01T10:00:00Z (31d ago)",
        "updated:       2026-12-01T10:00:00Z (31d ago)",
        "last used:     2027-01-01T21:00:00Z (3h ago)",
        "revoked:       -",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert_eq!(text.lines().count(), 18);
}

#[test]
fn a_rotated_key_in_its_grace_period_says_when_it_retires() {
    let mut retiring = sample_key();
    retiring.revoked_at = Some(ts("2027-01-02T23:00:00Z"));
    assert_eq!(retires_at(&retiring), Some(ts("2027-01-02T23:00:00Z")));
    assert_eq!(state_text(&retiring, ts(NOW)), "active (retires in 23h)");
    let table = key_table(std::slice::from_ref(&retiring), ts(NOW));
    assert!(table.contains("active (retires in 23h)"), "{table}");
    let details = key_details(&retiring, ts(NOW));
    assert!(
        details.contains("state:         active (retires in 23h)"),
        "{details}"
    );
    retiring.state = KeyState::Revoked;
    assert_eq!(retires_at(&retiring), None);
    assert_eq!(state_text(&retiring, ts(NOW)), "revoked");
    assert_eq!(state_text(&sample_key(), ts(NOW)), "active");
}

#[test]
fn table_has_the_documented_columns() {
    let mut unlimited = sample_key();
    unlimited.id = "key_zzzzzzzzzzzzzzzzzzzz".into();
    unlimited.name = "batch".into();
    unlimited.rate_limit_rpm = None;
    unlimited.spend_limit_usd = None;
    unlimited.spend_reset = None;
    unlimited.expires_at = None;
    unlimited.last_used_at = None;
    let text = key_table(&[sample_key(), unlimited], ts(NOW));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header: Vec<&str> = lines[0]
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "ID",
            "NAME",
            "PREFIX",
            "STATE",
            "SPEND",
            "RPM",
            "EXPIRES",
            "LAST USED"
        ]
    );
    assert!(
        lines[1].starts_with("key_0123456789abcdefghij  backend-prod"),
        "{text}"
    );
    assert!(lines[1].contains("$1.20 / $50.00 daily"), "{text}");
    assert!(lines[1].contains("2027-01-31T00:00:00Z (in 29d)"), "{text}");
    assert!(lines[2].contains("$34.50"), "{text}");
    assert!(lines[2].ends_with("never"), "{text}");
    assert!(
        !text.lines().any(|l| l.ends_with(' ')),
        "trailing spaces:\n{text}"
    );
}

#[test]
fn spend_summaries() {
    let mut key = sample_key();
    assert_eq!(spend_summary(&key), "$1.20 / $50.00 daily");
    key.spend_reset = None;
    assert_eq!(spend_summary(&key), "$34.50 / $50.00 lifetime");
    key.spend_limit_usd = None;
    assert_eq!(spend_summary(&key), "$34.50");
}

#[test]
fn created_key_ends_with_its_secret() {
    let created = KeyCreated {
        key: sample_key(),
        secret: "sk-proxy-a1b2SECRET".into(),
    };
    let text = created_details(&created, ts(NOW));
    assert!(text.starts_with("id:"), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.ends_with("sk-proxy-a1b2SECRET")),
        "{text}"
    );
    assert!(text.contains("spend limit:"));
    assert!(!text.contains("total spend"));
}

#[test]
fn audit_rows() {
    let entry = AuditEntry {
        id: 7,
        at: ts("2027-01-01T23:00:00Z"),
        actor: "uid:1000".into(),
        action: "key.update".into(),
        key_id: Some("key_0123456789abcdefghij".into()),
        details: serde_json::json!({"rate_limit_rpm": 60}),
    };
    let text = audit_table(&[entry], ts(NOW));
    let row = text.lines().nth(1).expect("a row");
    assert!(
        row.starts_with("2027-01-01T23:00:00Z (1h ago)  uid:1000  key.update"),
        "{text}"
    );
    assert!(row.ends_with(r#"{"rate_limit_rpm":60}"#), "{text}");
}

fn rotated(revoked_at: Option<&str>) -> KeyRotated {
    let mut new_key = sample_key();
    new_key.id = "key_NEWNEWNEWNEWNEWNEW1".into();
    new_key.prefix = "sk-proxy-wxyz".into();
    let mut previous = sample_key();
    previous.revoked_at = revoked_at.map(ts);
    KeyRotated {
        created: KeyCreated {
            key: new_key,
            secret: "sk-proxy-wxyzSECRET".into(),
        },
        previous,
    }
}

#[test]
fn details_say_when_the_old_key_stops() {
    let text = rotated_details(&rotated(Some("2027-01-03T00:00:00Z")), ts(NOW));
    assert!(text.starts_with("id:"), "{text}");
    assert!(
        text.contains("replaces:    key_0123456789abcdefghij (sk-proxy-a1b2)"),
        "{text}"
    );
    assert!(
        text.contains("old key:     works until 2027-01-03T00:00:00Z (in 24h)"),
        "{text}"
    );
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l == "secret:      sk-proxy-wxyzSECRET"),
        "{text}"
    );
    let now = rotated_details(&rotated(Some(NOW)), ts(NOW));
    assert!(
        now.contains("old key:     revoked 2027-01-02T00:00:00Z (now)"),
        "{now}"
    );
}

fn admin_token(revoked_at: Option<&str>) -> AdminTokenView {
    AdminTokenView {
        id: "tok_0123456789abcdefghij".into(),
        name: "ci".into(),
        prefix: "gwadm-AbCd".into(),
        created_at: ts("2027-01-01T00:00:00Z"),
        revoked_at: revoked_at.map(ts),
        last_used_at: None,
    }
}

#[test]
fn admin_tokens_render_without_secrets() {
    let text = admin_token_table(
        &[admin_token(None), admin_token(Some("2027-01-01T12:00:00Z"))],
        ts(NOW),
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ID"), "{text}");
    assert!(
        lines[1].starts_with("tok_0123456789abcdefghij  ci    gwadm-AbCd  active"),
        "{text}"
    );
    assert!(lines[2].contains("revoked"), "{text}");
    assert!(lines[1].ends_with("never"), "{text}");

    let created = AdminTokenCreated {
        token: admin_token(None),
        secret: "gwadm-AbCdSECRET".into(),
    };
    let text = admin_token_created_details(&created, ts(NOW));
    assert!(text.starts_with("id:"), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l == "secret:  gwadm-AbCdSECRET"),
        "{text}"
    );
    let details = admin_token_details(&admin_token(Some(NOW)), ts(NOW));
    assert!(details.contains("state:     revoked"), "{details}");
    assert!(
        details.contains("revoked:   2027-01-02T00:00:00Z (now)"),
        "{details}"
    );
}
