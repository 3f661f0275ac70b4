//! Field validation for the management API, naming the offending field.
//!
//! Both sides use these: the daemon to answer 400 `invalid_argument` with the field in the
//! message, gwctl to refuse bad flags before a round trip. Values come back normalised
//! (sorted, de-duplicated providers; canonical CIDRs) so what is stored is what is shown.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;

use crate::error::ErrorCode;
use crate::money::Nanodollars;
use crate::provider::Provider;

pub const NAME_MAX_CHARS: usize = 64;
pub const LIST_MAX_ITEMS: usize = 256;
pub const GLOB_MAX_CHARS: usize = 256;
pub const RPM_MAX: u32 = 1_000_000;
/// One billion dollars: far above any sane per-key limit, far below `u64` nano-dollars.
pub const SPEND_LIMIT_MAX: Nanodollars = Nanodollars(1_000_000_000 * 1_000_000_000);

/// A rejected field: the code to answer with, the field's wire name and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub code: ErrorCode,
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidArgument,
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn not_editable(field: impl Into<String>) -> Self {
        let field = field.into();
        let reason = format!(
            "cannot be changed after a key is created (editable: {})",
            EDITABLE.join(", ")
        );
        Self {
            code: ErrorCode::FieldNotEditable,
            field,
            reason,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

/// Fields `PATCH /v1/keys/{id}` accepts (SPEC §1).
pub const EDITABLE: &[&str] = &[
    "name",
    "allowed_providers",
    "allowed_models",
    "allowed_ips",
    "rate_limit_rpm",
    "spend_limit_usd",
    "spend_reset",
];

/// Fields of a key that exist but may not be edited.
pub const NOT_EDITABLE: &[&str] = &[
    "id",
    "prefix",
    "state",
    "expires_at",
    "created_at",
    "updated_at",
    "revoked_at",
    "last_used_at",
    "spend_period_usd",
    "spend_total_usd",
    "period_resets_at",
    "request_count",
    "secret",
];

pub fn name(value: &str) -> Result<String, FieldError> {
    let trimmed = value.trim();
    let n_chars = trimmed.chars().count();
    if n_chars == 0 {
        return Err(FieldError::invalid("name", "must not be empty"));
    }
    if n_chars > NAME_MAX_CHARS {
        return Err(FieldError::invalid(
            "name",
            format!("must be at most {NAME_MAX_CHARS} characters (got {n_chars})"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    if trimmed.chars().any(is_invisible_format) {
        return Err(FieldError::invalid(
            "name",
            "must not contain invisible or text-direction characters (zero-width, soft \
             hyphen, fillers, tags, bidirectional marks and overrides)",
        ));
    }
    // Keys are named by id, name or display prefix (gwctl, the dashboard): a name shaped like
    // another key's prefix or id would let `revoke <prefix>` reach the wrong key.
    let lower = trimmed.to_ascii_lowercase();
    if [crate::key::PROXY_KEY_PREFIX, crate::key::ADMIN_TOKEN_PREFIX]
        .iter()
        .any(|prefix| lower.starts_with(prefix))
        || crate::key::is_key_id(trimmed)
    {
        return Err(FieldError::invalid(
            "name",
            "must not look like a key's id or display prefix (key_…, sk-proxy-…, gwadm-…): \
             keys are named by those too",
        ));
    }
    Ok(trimmed.to_owned())
}

/// Characters that change how a name is displayed without being seen: zero-width and
/// invisible characters, fillers, tags, line separators and bidirectional marks, overrides
/// and isolates (a name shown in `gwctl keys list` and the dashboard must read as what it is).
/// Variation selectors stay allowed: an emoji such as ❤️ carries one. The proxy refuses
/// model names with them too (a model is stored and shown in usage reports).
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
        | '\u{17B5}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E0FFF}')
}

pub fn providers<S: AsRef<str>>(values: &[S]) -> Result<Vec<Provider>, FieldError> {
    let mut out = Vec::with_capacity(values.len());
    for value in values {
        let provider = value
            .as_ref()
            .trim()
            .parse::<Provider>()
            .map_err(|reason| FieldError::invalid("allowed_providers", reason))?;
        out.push(provider);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The daemon's check of a parsed `allowed_providers` against the providers it runs (the
/// built-in ones and its `[providers.NAME]`, SPEC §10): an unknown name is refused with the
/// list of the names it knows.
pub fn providers_known(list: &[Provider], known: &[Provider]) -> Result<(), FieldError> {
    match list.iter().find(|p| !known.contains(p)) {
        None => Ok(()),
        Some(unknown) => {
            let names: Vec<&str> = known.iter().map(Provider::as_str).collect();
            Err(FieldError::invalid(
                "allowed_providers",
                format!(
                    "\"{unknown}\" is not a provider of this gateway (configured: {})",
                    names.join(", ")
                ),
            ))
        }
    }
}

pub fn model_globs<S: AsRef<str>>(values: &[S]) -> Result<Vec<String>, FieldError> {
    const FIELD: &str = "allowed_models";
    check_list_len(FIELD, values.len())?;
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let pattern = value.as_ref().trim();
        if pattern.is_empty() {
            return Err(FieldError::invalid(FIELD, "patterns must not be empty"));
        }
        if pattern.chars().count() > GLOB_MAX_CHARS {
            return Err(FieldError::invalid(
                FIELD,
                format!("patterns must be at most {GLOB_MAX_CHARS} characters"),
            ));
        }
        // A glob is shown by gwctl and the dashboard and compared with model names that may
        // not contain these (the proxy refuses them): one here is a mistake or an attack on
        // the operator's terminal.
        if pattern
            .chars()
            .any(|c| c.is_control() || is_invisible_format(c))
        {
            return Err(FieldError::invalid(
                FIELD,
                "patterns must not contain control, invisible or text-direction characters",
            ));
        }
        globset::Glob::new(pattern).map_err(|e| {
            FieldError::invalid(
                FIELD,
                format!("{pattern:?} is not a valid glob: {}", e.kind()),
            )
        })?;
        if !out.iter().any(|p| p == pattern) {
            out.push(pattern.to_owned());
        }
    }
    Ok(out)
}

/// Addresses stay addresses (`10.0.0.7`); networks are truncated to their base
/// (`10.0.0.7/8` → `10.0.0.0/8`); IPv4-mapped IPv6 becomes IPv4, as client addresses do.
pub fn ips<S: AsRef<str>>(values: &[S]) -> Result<Vec<String>, FieldError> {
    const FIELD: &str = "allowed_ips";
    check_list_len(FIELD, values.len())?;
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let text = value.as_ref().trim();
        let normalised = if let Ok(addr) = text.parse::<IpAddr>() {
            addr.to_canonical().to_string()
        } else if let Ok(net) = text.parse::<IpNet>() {
            canonical_net(net).to_string()
        } else {
            return Err(FieldError::invalid(
                FIELD,
                format!(
                    "{text:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)"
                ),
            ));
        };
        if !out.contains(&normalised) {
            out.push(normalised);
        }
    }
    Ok(out)
}

/// Parses one stored `allowed_ips` entry into a network (an address is a /32 or /128).
pub fn parse_ip_rule(text: &str) -> Option<IpNet> {
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .or_else(|_| text.parse::<IpNet>())
        .ok()
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        // ::ffff:a.b.c.d/104 is the IPv4 network a.b.c.d/8.
        if let Some(v4) = v6.addr().to_ipv4_mapped()
            && v6.prefix_len() >= 96
            && let Ok(v4net) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
        {
            return IpNet::V4(v4net.trunc());
        }
    }
    net.trunc()
}

pub fn rate_limit_rpm(value: u64) -> Result<u32, FieldError> {
    match u32::try_from(value) {
        Ok(rpm) if (1..=RPM_MAX).contains(&rpm) => Ok(rpm),
        _ => Err(FieldError::invalid(
            "rate_limit_rpm",
            format!(
                "must be a whole number of requests per minute from 1 to {RPM_MAX} (got {value})"
            ),
        )),
    }
}

pub fn spend_limit(value: Nanodollars) -> Result<Nanodollars, FieldError> {
    if value == Nanodollars::ZERO {
        return Err(FieldError::invalid(
            "spend_limit_usd",
            "must be greater than 0",
        ));
    }
    if value > SPEND_LIMIT_MAX {
        return Err(FieldError::invalid(
            "spend_limit_usd",
            format!("must be at most {SPEND_LIMIT_MAX}"),
        ));
    }
    Ok(value)
}

/// An RFC 3339 instant. jiff also reads offsets up to ±25:59 (which RFC 3339 does not allow:
/// `+25:00` would silently move the instant a day) and cannot represent the last hours of
/// year 9999; both get a message that says what is wrong.
pub fn timestamp(field: &str, value: &str) -> Result<Timestamp, FieldError> {
    let invalid = |why: &str| {
        FieldError::invalid(
            field,
            format!("{value:?} is not an RFC 3339 instant{why} (e.g. 2027-01-31T00:00:00Z)"),
        )
    };
    let four_digit_year = value.len() > 4
        && value.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && value.as_bytes()[4] == b'-';
    match value.parse::<Timestamp>() {
        Ok(_) if !four_digit_year => Err(invalid(": the year must have four digits")),
        Ok(at) if offset_is_rfc3339(value) => Ok(at),
        Ok(_) => Err(invalid(
            ": its UTC offset must be between -23:59 and +23:59",
        )),
        Err(err) if err.to_string().contains("range") => Err(invalid(
            " in the supported range (years 0001 to 9999, up to 9999-12-30T22:00:00Z)",
        )),
        Err(_) => Err(invalid("")),
    }
}

/// Whether the text's trailing UTC offset (`Z` or `±HH:MM`) has hours 00–23 and minutes 00–59.
fn offset_is_rfc3339(value: &str) -> bool {
    if value.ends_with(['Z', 'z']) {
        return true;
    }
    let bytes = value.as_bytes();
    let Some(offset) = bytes.len().checked_sub(6).map(|at| &bytes[at..]) else {
        return false;
    };
    let digits = |a: u8, b: u8| {
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| (a - b'0') * 10 + (b - b'0'))
    };
    matches!(offset[0], b'+' | b'-')
        && offset[3] == b':'
        && digits(offset[1], offset[2]).is_some_and(|h| h <= 23)
        && digits(offset[4], offset[5]).is_some_and(|m| m <= 59)
}

fn check_list_len(field: &str, n: usize) -> Result<(), FieldError> {
    if n > LIST_MAX_ITEMS {
        return Err(FieldError::invalid(
            field,
            format!("must have at most {LIST_MAX_ITEMS} entries (got {n})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name("  backend-prod "), Ok("backend-prod".to_owned()));
        assert_eq!(name("").map_err(|e| e.field), Err("name".to_owned()));
        assert!(name(&"x".repeat(64)).is_ok());
        assert!(name(&"x".repeat(65)).is_err());
        assert!(name("a\nb").is_err());
        for spoof in [
            "evil\u{202E}gpj.exe",
            "a\u{200B}b",
            "a\u{2066}b",
            "\u{FEFF}x",
            "a\u{061C}b",
            "soft\u{00AD}hyphen",
            "\u{3164}",
            "a\u{E0041}b",
            "a\u{2028}b",
        ] {
            assert!(name(spoof).is_err(), "{spoof:?}");
        }
        for lookalike in [
            "sk-proxy-a1b2",
            "SK-PROXY-x",
            "gwadm-AbCd",
            "key_0123456789abcdefghij",
        ] {
            assert!(name(lookalike).is_err(), "{lookalike:?}");
        }
        assert!(name("key_backup").is_ok(), "not an id");
        assert!(name("proxy for sk team").is_ok());
        assert!(name("équipe données 数据").is_ok());
        assert!(
            name("❤\u{FE0F} team").is_ok(),
            "an emoji's variation selector"
        );
    }

    #[test]
    fn timestamps_are_rfc_3339() {
        let parse = |text: &str| timestamp("expires_at", text).map(|t| t.to_string());
        assert_eq!(
            parse("2027-01-01T00:00:00Z").as_deref(),
            Ok("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            parse("2027-01-01T01:30:00+01:30").as_deref(),
            Ok("2027-01-01T00:00:00Z")
        );
        assert_eq!(parse("2027-01-01T00:00:00-23:59").map(|_| ()), Ok(()));
        let offset = parse("2027-01-01T00:00:00+25:00").expect_err("+25:00");
        assert!(offset.reason.contains("UTC offset"), "{}", offset.reason);
        assert!(parse("2027-01-01T00:00:00+23:60").is_err());
        let late = parse("9999-12-31T23:59:59Z").expect_err("out of range");
        assert!(late.reason.contains("supported range"), "{}", late.reason);
        assert!(parse("tomorrow").is_err());
        assert!(
            parse("+002030-01-01T00:00:00Z").is_err(),
            "extended years are not RFC 3339"
        );
    }

    #[test]
    fn providers_are_sorted_and_unique() {
        assert_eq!(
            providers(&["gemini", "openai", "gemini"]),
            Ok(vec![Provider::Openai, Provider::Gemini])
        );
        let err = providers(&["Azure"]).expect_err("malformed");
        assert_eq!(err.field, "allowed_providers");
        assert!(err.reason.contains("Azure"));
        // A well-formed name parses (gwctl cannot know the daemon's config)…
        let named = providers(&["local-llama", "openai"]).expect("configured name");
        // …and the daemon checks it against what it runs, listing those.
        let known = [Provider::Openai, Provider::Gemini];
        let err = providers_known(&named, &known).expect_err("not configured");
        assert_eq!(err.field, "allowed_providers");
        assert!(err.reason.contains("\"local-llama\""), "{}", err.reason);
        assert!(err.reason.contains("openai, gemini"), "{}", err.reason);
        assert!(providers_known(&[Provider::Gemini], &known).is_ok());
    }

    #[test]
    fn globs() {
        assert_eq!(
            model_globs(&["gpt-4o*", "claude-*", "gpt-4o*"]),
            Ok(vec!["gpt-4o*".to_owned(), "claude-*".to_owned()])
        );
        let err = model_globs(&["gpt-[4"]).expect_err("unclosed class");
        assert_eq!(err.field, "allowed_models");
        assert!(model_globs(&[""]).is_err());
        for bad in [
            "\u{0}",
            "gpt-4o\u{1b}]0;owned\u{7}",
            "a\u{7f}",
            "a\u{85}b",
            "gpt\u{202e}",
        ] {
            let err = model_globs(&[bad]).expect_err(bad);
            assert_eq!(err.field, "allowed_models");
            assert!(err.reason.contains("control"), "{}", err.reason);
        }
    }

    #[test]
    fn ip_rules_are_canonical() {
        let got = ips(&[
            "10.0.0.7/8",
            "192.168.1.1",
            "::ffff:10.1.2.3",
            "2001:db8::1/32",
            "::ffff:10.0.0.0/104",
        ]);
        assert_eq!(
            got,
            Ok(vec![
                "10.0.0.0/8".to_owned(),
                "192.168.1.1".to_owned(),
                "10.1.2.3".to_owned(),
                "2001:db8::/32".to_owned()
            ])
        );
        for bad in ["10.0.0.0/33", "300.1.1.1", "example.com", ""] {
            let err = ips(&[bad]).expect_err(bad);
            assert_eq!(err.field, "allowed_ips");
        }
        assert!(parse_ip_rule("10.1.2.3").is_some_and(|n| n.prefix_len() == 32));
    }

    #[test]
    fn numbers() {
        assert_eq!(rate_limit_rpm(60), Ok(60));
        assert!(rate_limit_rpm(0).is_err());
        assert!(rate_limit_rpm(u64::MAX).is_err());
        assert!(spend_limit(Nanodollars::ZERO).is_err());
        assert!(spend_limit(Nanodollars(1)).is_ok());
        assert!(timestamp("expires_at", "2027-01-31T00:00:00Z").is_ok());
        assert_eq!(
            timestamp("expires_at", "tomorrow").map_err(|e| e.field),
            Err("expires_at".to_owned())
        );
    }
}
