//! `gwctl keys …`: the verbs, plus what they share: turning flag text into validated field
//! values, and finding the key an operator means.
//!
//! Flag values are checked here with `gateway_shared::validate`, the daemon's own rules, so a
//! typo is refused before any round trip with the same field-naming message the daemon would
//! give, and the same exit code.

pub mod create;
pub mod edit;
pub mod list;
pub mod revoke;
pub mod rotate;
pub mod show;
pub mod usage;

use anyhow::Context;
use clap::{Args, Subcommand};
use gateway_shared::api::KeyView;
use gateway_shared::key::redact_secrets;
use gateway_shared::validate::{self, FieldError};
use gateway_shared::{ErrorCode, KeyState, Nanodollars};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::Refusal;
use crate::client::ApiClient;
use crate::output::Output;

/// The help text of every `KEY` argument.
pub const KEY_HELP: &str = "The key: its id (key_…), or its exact name or display prefix \
(sk-proxy-a1b2). A name several keys share picks the one that is not revoked, if only one is; \
during a rotation's grace period the name means the new key (the retiring one by its id or \
prefix), except to revoke, which then asks for an id.";

#[derive(Debug, Args)]
pub struct Cmd {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Create a key and print its secret, the only time it is shown.
    Create(create::Cmd),
    /// List keys (every page), optionally in one state.
    List(list::Cmd),
    /// Show every field of one key, with its current spend and state.
    Show(show::Cmd),
    /// Change a key's name, restrictions or limits (not its expiry).
    Edit(edit::Cmd),
    /// Revoke a key for good; asks first unless --yes.
    Revoke(revoke::Cmd),
    /// Replace a key's secret, keeping its settings; the old key stops working now (asks
    /// first unless --yes) or after --grace.
    Rotate(rotate::Cmd),
    /// Spend and requests per day and per model, with a per-day bar chart.
    Usage(usage::Cmd),
}

impl Cmd {
    pub async fn run(self, client: &ApiClient, output: &Output) -> anyhow::Result<()> {
        match self.verb {
            Verb::Create(cmd) => cmd.run(client, output).await,
            Verb::List(cmd) => cmd.run(client, output).await,
            Verb::Show(cmd) => cmd.run(client, output).await,
            Verb::Edit(cmd) => cmd.run(client, output).await,
            Verb::Revoke(cmd) => cmd.run(client, output).await,
            Verb::Rotate(cmd) => cmd.run(client, output).await,
            Verb::Usage(cmd) => cmd.run(client, output).await,
        }
    }
}

/// The key an operator named: fetched by id, or found by name or prefix in the list of keys,
/// read a page at a time keeping only the keys it names.
pub async fn resolve(client: &ApiClient, wanted: &str) -> anyhow::Result<KeyView> {
    resolve_as(client, wanted, SharedName::MeansSuccessor).await
}

/// [`resolve`] for revoking: a name shared by a rotation's pair is refused rather than taken
/// to mean the new key. Why: an operator who rotated a leaked key with a grace period and
/// then revokes "by name" most likely means the leaked one, and revoking the successor
/// instead would leave the leak working until the grace period ends.
pub async fn resolve_to_revoke(client: &ApiClient, wanted: &str) -> anyhow::Result<KeyView> {
    resolve_as(client, wanted, SharedName::Refused).await
}

/// What a name a rotation's pair shares means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SharedName {
    MeansSuccessor,
    Refused,
}

async fn resolve_as(
    client: &ApiClient,
    wanted: &str,
    shared: SharedName,
) -> anyhow::Result<KeyView> {
    if is_key_id(wanted) {
        return client.get_key(wanted).await;
    }
    let mut named = Named::default();
    let mut pages = client.key_pages(None);
    while let Some(page) = pages
        .next()
        .await
        .with_context(|| format!("listing keys to find {wanted:?}"))?
    {
        for key in page {
            named.add(key, wanted);
        }
    }
    let (found, total) = named.found();
    let found: Vec<&KeyView> = found.iter().collect();
    match rotation_pair(&found, wanted) {
        Some((_, successor)) if shared == SharedName::MeansSuccessor => Ok(successor.clone()),
        Some((retiring, successor)) => {
            let retires = crate::output::retires_at(retiring)
                .map_or_else(String::new, |at| format!(" at {at}"));
            Err(Refusal::invalid(format!(
                "{:?} names a rotated key and its successor: {} (retiring{retires}) and {} \
                 (its replacement). Revoke by id: {} to end the old key's grace period now, \
                 {} to revoke the new key.",
                wanted.trim(),
                retiring.id,
                successor.id,
                retiring.id,
                successor.id
            ))
            .into())
        }
        None => Ok(one(&found, total, wanted)?.clone()),
    }
}

/// Like [`resolve`], but an id is taken as is, without asking the daemon.
pub async fn resolve_id(client: &ApiClient, wanted: &str) -> anyhow::Result<String> {
    if is_key_id(wanted) {
        return Ok(wanted.to_owned());
    }
    Ok(resolve(client, wanted).await?.id)
}

pub use gateway_shared::key::is_key_id;

/// Exact name or exact display prefix. Several matches are ambiguous — also a name that is
/// another key's prefix (names made before such names were refused), so that revoking a
/// leaked key by its prefix can never reach another key — unless only one of them is still
/// usable: a revoked key's name is often reused by its replacement. (A rotation's pair, both
/// still usable during the grace period, is [`resolve`]'s to settle: see [`rotation_pair`].)
#[cfg(test)]
fn pick<'a>(keys: &'a [KeyView], wanted: &str) -> Result<&'a KeyView, Refusal> {
    let named = Named::of(keys, wanted);
    let (found, total) = named.found();
    one(found, total, wanted)
}

/// The keys `wanted` names, in a list of keys.
#[cfg(test)]
fn matches<'a>(keys: &'a [KeyView], wanted: &str) -> Vec<&'a KeyView> {
    Named::of(keys, wanted).found().0.to_vec()
}

/// Whether `wanted` is `key`'s exact name or prefix, or either as gwctl shows it (control
/// characters escaped, see [`crate::sanitize`]), so a name copied from a table still names
/// its key.
fn names(key: &KeyView, wanted: &str) -> bool {
    [&key.name, &key.prefix]
        .into_iter()
        .any(|field| field == wanted || crate::sanitize::text(field) == wanted)
}

/// How many of the keys a name matches are kept, live and revoked each (and listed when the
/// name is ambiguous): a name 100,000 keys share must not hold them all. At least two, so
/// "one match" and a rotation's pair are still told apart exactly.
const MATCHES_KEPT: usize = 10;

/// The keys `wanted` names, gathered a key at a time: the first [`MATCHES_KEPT`] that are
/// still usable and the first that are revoked, and how many there are of each.
struct Named<K> {
    live: Vec<K>,
    revoked: Vec<K>,
    n_live: usize,
    n_revoked: usize,
}

impl<K> Default for Named<K> {
    fn default() -> Self {
        Self {
            live: Vec::new(),
            revoked: Vec::new(),
            n_live: 0,
            n_revoked: 0,
        }
    }
}

impl<K: std::borrow::Borrow<KeyView>> Named<K> {
    #[cfg(test)]
    fn of(keys: impl IntoIterator<Item = K>, wanted: &str) -> Self {
        let mut named = Self::default();
        for key in keys {
            named.add(key, wanted);
        }
        named
    }

    fn add(&mut self, key: K, wanted: &str) {
        let view = key.borrow();
        if !names(view, wanted.trim()) {
            return;
        }
        let (kept, n) = if view.state == KeyState::Revoked {
            (&mut self.revoked, &mut self.n_revoked)
        } else {
            (&mut self.live, &mut self.n_live)
        };
        *n += 1;
        if kept.len() < MATCHES_KEPT {
            kept.push(key);
        }
    }

    /// The keys named: only those not revoked if there are any, else the revoked ones; and
    /// how many there are in all.
    fn found(&self) -> (&[K], usize) {
        if self.n_live > 0 {
            (&self.live, self.n_live)
        } else {
            (&self.revoked, self.n_revoked)
        }
    }
}

/// The single match, or why there is none: `matches` are the first of `total`.
fn one<'a>(matches: &[&'a KeyView], total: usize, wanted: &str) -> Result<&'a KeyView, Refusal> {
    let wanted = wanted.trim();
    match matches {
        [] => Err(Refusal {
            code: ErrorCode::KeyNotFound,
            message: format!(
                "No key has the id, name or prefix {:?}.",
                redact_secrets(wanted)
            ),
        }),
        [one] => Ok(one),
        many => {
            let ids: Vec<String> = many
                .iter()
                .map(|k| format!("{} ({})", k.id, k.state))
                .collect();
            let more = match total.saturating_sub(many.len()) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            Err(Refusal::invalid(format!(
                "{wanted:?} names {total} keys: {}{more}. Use an id.",
                ids.join(", ")
            )))
        }
    }
}

/// A key rotated with a grace period and its successor share the name until the old one
/// retires. When `wanted` names exactly two usable keys, both by name, and one was replaced
/// by the other (`replaced_by`, as the daemon records rotations), this is
/// `(retiring, successor)`.
fn rotation_pair<'a>(matches: &[&'a KeyView], wanted: &str) -> Option<(&'a KeyView, &'a KeyView)> {
    let wanted = wanted.trim();
    let [a, b] = matches else {
        return None;
    };
    if a.name != wanted || b.name != wanted {
        return None;
    }
    if a.replaced_by.as_deref() == Some(b.id.as_str()) {
        Some((a, b))
    } else if b.replaced_by.as_deref() == Some(a.id.as_str()) {
        Some((b, a))
    } else {
        None
    }
}

/// Comma-separated, blanks trimmed and dropped: `''` is the empty list.
pub fn parse_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn parse_rpm(text: &str) -> Result<u32, FieldError> {
    let n: u64 = text.trim().parse().map_err(|_| {
        FieldError::invalid(
            "rate_limit_rpm",
            format!("must be a whole number of requests per minute (got {text:?})"),
        )
    })?;
    validate::rate_limit_rpm(n)
}

pub fn parse_spend_limit(text: &str) -> Result<Nanodollars, FieldError> {
    let amount: Nanodollars = text
        .parse()
        .map_err(|e| FieldError::invalid("spend_limit_usd", format!("{e} (got {text:?})")))?;
    validate::spend_limit(amount)
}

/// Help for `--expires`, shared by create and (to say it is refused) edit.
pub const EXPIRES_FORMS: &str = "an RFC 3339 instant (2027-01-31T00:00:00Z), a date meaning \
00:00 UTC at the start of that day (2027-01-31), or a duration from now in minutes, hours, \
days or weeks (90m, 12h, 30d, 2w)";

/// `--expires`: an instant, a date (its first instant, UTC) or a duration from `now`. The
/// result must be in the future, as the daemon requires.
pub fn parse_expires(text: &str, now: Timestamp) -> Result<Timestamp, FieldError> {
    const FIELD: &str = "expires_at";
    let text = text.trim();
    let at = if text.parse::<Timestamp>().is_ok() {
        // The same rules as the daemon's (offsets within ±23:59, the supported range).
        gateway_shared::validate::timestamp(FIELD, text)?
    } else if let Some(date) = parse_date(text) {
        TimeZone::UTC
            .to_timestamp(date.at(0, 0, 0, 0))
            .map_err(|e| FieldError::invalid(FIELD, format!("{text:?}: {e}")))?
    } else if let Some(duration) = parse_duration(text) {
        now.checked_add(duration).map_err(|_| {
            FieldError::invalid(FIELD, format!("{text:?} from now is too far in the future"))
        })?
    } else {
        return Err(FieldError::invalid(
            FIELD,
            format!("{text:?} is not {EXPIRES_FORMS}"),
        ));
    };
    if at <= now {
        return Err(FieldError::invalid(
            FIELD,
            format!("must be in the future (now is {now})"),
        ));
    }
    Ok(at)
}

/// `2027-01-31` and nothing more: jiff also reads a date out of a datetime, which would turn
/// an instant missing its offset (`2027-01-31T15:00:00`) into midnight without a word.
fn parse_date(text: &str) -> Option<Date> {
    if !text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return None;
    }
    text.parse().ok()
}

/// `90m`, `12h`, `30d`, `2w`: whole units, nothing else.
fn parse_duration(text: &str) -> Option<SignedDuration> {
    let unit_at = text.len().checked_sub(1)?;
    let (digits, unit) = text.split_at_checked(unit_at)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds_per_unit: i64 = match unit {
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    let n: i64 = digits.parse().ok()?;
    Some(SignedDuration::from_secs(n.checked_mul(seconds_per_unit)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample_key;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    const NOW: &str = "2027-01-02T10:30:00Z";

    fn check_expires(text: &str, expected: Result<&str, &str>) {
        let got = parse_expires(text, ts(NOW))
            .map(|at| at.to_string())
            .map_err(|e| {
                assert_eq!(e.field, "expires_at");
                e.reason
            });
        match expected {
            Ok(at) => assert_eq!(got, Ok(at.to_owned()), "{text}"),
            Err(fragment) => {
                let reason = got.expect_err(text);
                assert!(reason.contains(fragment), "{text}: {reason}");
            }
        }
    }

    #[test]
    fn expires_forms() {
        check_expires("2027-01-31T00:00:00Z", Ok("2027-01-31T00:00:00Z"));
        check_expires("2027-01-31T02:00:00+02:00", Ok("2027-01-31T00:00:00Z"));
        check_expires("2027-01-31", Ok("2027-01-31T00:00:00Z"));
        check_expires("90m", Ok("2027-01-02T12:00:00Z"));
        check_expires("12h", Ok("2027-01-02T22:30:00Z"));
        check_expires("30d", Ok("2027-02-01T10:30:00Z"));
        check_expires("2w", Ok("2027-01-16T10:30:00Z"));
        check_expires(" 1d ", Ok("2027-01-03T10:30:00Z"));
        check_expires("0d", Err("must be in the future"));
        check_expires("2027-01-02", Err("must be in the future"));
        check_expires("2020-01-01T00:00:00Z", Err("must be in the future"));
        check_expires("2027-01-31T00:00:00", Err("is not an RFC 3339 instant"));
        check_expires("2027-01-31 15:00", Err("is not an RFC 3339 instant"));
        check_expires("30", Err("is not"));
        check_expires("d", Err("is not"));
        check_expires("-3d", Err("is not"));
        check_expires("3y", Err("is not"));
        check_expires("soon", Err("is not"));
        check_expires("99999999999999999w", Err("is not"));
        check_expires("999999999w", Err("too far"));
        check_expires("2030-01-01T00:00:00+25:00", Err("UTC offset"));
        check_expires("2030-01-01T00:00:00-24:00", Err("UTC offset"));
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(parse_list("openai,anthropic"), ["openai", "anthropic"]);
        assert_eq!(parse_list(" gpt-4o* , claude-*,"), ["gpt-4o*", "claude-*"]);
        assert!(parse_list("").is_empty());
        assert!(parse_list(" , ").is_empty());
    }

    #[test]
    fn numbers_name_their_field() {
        assert_eq!(parse_rpm("60"), Ok(60));
        for bad in ["0", "-1", "1.5", "lots", "99999999999"] {
            assert_eq!(
                parse_rpm(bad).map_err(|e| e.field),
                Err("rate_limit_rpm".to_owned()),
                "{bad}"
            );
        }
        assert_eq!(parse_spend_limit("12.50"), Ok(Nanodollars(12_500_000_000)));
        assert_eq!(parse_spend_limit("$0.10"), Ok(Nanodollars(100_000_000)));
        assert_eq!(parse_spend_limit("1e-6"), Ok(Nanodollars(1_000)));
        for bad in ["0", "-5", "ten", "1e", "1e-10"] {
            assert_eq!(
                parse_spend_limit(bad).map_err(|e| e.field),
                Err("spend_limit_usd".to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_are_recognised_exactly() {
        assert!(is_key_id("key_0123456789abcdefghij"));
        assert!(!is_key_id("key_0123456789abcdefghi"));
        assert!(!is_key_id("key_backup"));
        assert!(!is_key_id("key_0123456789abcdefgh-j"));
        assert!(!is_key_id("backend-prod"));
    }

    fn key(id: &str, name: &str, prefix: &str, state: KeyState) -> KeyView {
        KeyView {
            id: id.into(),
            name: name.into(),
            prefix: prefix.into(),
            state,
            ..sample_key()
        }
    }

    #[test]
    fn names_and_prefixes_resolve() {
        let keys = [
            key("key_a", "web", "sk-proxy-aaaa", KeyState::Active),
            key("key_b", "batch", "sk-proxy-bbbb", KeyState::Active),
            key("key_c", "batch", "sk-proxy-cccc", KeyState::Expired),
            key("key_d", "web", "sk-proxy-dddd", KeyState::Revoked),
            key("key_e", "sk-proxy-bbbb", "sk-proxy-eeee", KeyState::Active),
        ];
        let check = |wanted: &str, expected: Result<&str, ErrorCode>| {
            let got = pick(&keys, wanted)
                .map(|k| k.id.as_str())
                .map_err(|e| e.code);
            assert_eq!(got, expected, "{wanted}");
        };
        check("web", Ok("key_a")); // the revoked namesake does not make it ambiguous
        check("sk-proxy-cccc", Ok("key_c"));
        // A name that is another key's prefix: ambiguous, never the name's key silently.
        check("sk-proxy-bbbb", Err(ErrorCode::InvalidArgument));
        check("batch", Err(ErrorCode::InvalidArgument));
        check("nope", Err(ErrorCode::KeyNotFound));
        // A name with control characters (stored before they were refused) is named as
        // stored, or as gwctl shows it.
        let odd = [key(
            "key_f",
            "odd\u{1b}[2J",
            "sk-proxy-ffff",
            KeyState::Active,
        )];
        assert_eq!(
            pick(&odd, "odd\u{1b}[2J").map(|k| k.id.as_str()),
            Ok("key_f")
        );
        assert_eq!(
            pick(&odd, r"odd\u{1b}[2J").map(|k| k.id.as_str()),
            Ok("key_f")
        );
        assert!(pick(&odd, "odd[2J").is_err());
        // A name a great many keys share is refused listing a few of them, not all.
        let fleet: Vec<KeyView> = (0..25)
            .map(|i| {
                key(
                    &format!("key_w{i}"),
                    "worker",
                    "sk-proxy-wwww",
                    KeyState::Active,
                )
            })
            .collect();
        let err = pick(&fleet, "worker").expect_err("ambiguous");
        assert!(
            err.message
                .starts_with("\"worker\" names 25 keys: key_w0 (active), ")
                && err
                    .message
                    .ends_with("key_w9 (active) and 15 more. Use an id."),
            "{}",
            err.message
        );
        let err = pick(&keys, "batch").expect_err("ambiguous");
        assert!(
            err.message.contains("key_b (active)") && err.message.contains("key_c (expired)"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_rotation_pair_is_told_apart_from_other_namesakes() {
        let mut retiring = key("key_old", "pg3", "sk-proxy-oooo", KeyState::Active);
        retiring.revoked_at = Some("2027-01-03T00:00:00Z".parse().expect("ts"));
        retiring.replaced_by = Some("key_new".into());
        let successor = key("key_new", "pg3", "sk-proxy-nnnn", KeyState::Active);
        let gone = key("key_gone", "pg3", "sk-proxy-gggg", KeyState::Revoked);
        let keys = [gone.clone(), retiring.clone(), successor.clone()];
        let found = matches(&keys, "pg3");
        assert_eq!(found.len(), 2, "the revoked namesake is left out");
        let (old, new) = rotation_pair(&found, "pg3").expect("a rotation pair");
        assert_eq!((old.id.as_str(), new.id.as_str()), ("key_old", "key_new"));
        // Not replaced by the other namesake: ambiguous; the retiring key by its prefix.
        let mut unlinked = retiring.clone();
        unlinked.replaced_by = Some("key_elsewhere".into());
        assert!(rotation_pair(&matches(&[unlinked, successor.clone()], "pg3"), "pg3").is_none());
        assert_eq!(
            pick(&keys, "pg3").map_err(|e| e.code).map(|k| &k.id),
            Err(ErrorCode::InvalidArgument)
        );
        assert_eq!(
            pick(&keys, "sk-proxy-oooo").map(|k| k.id.as_str()),
            Ok("key_old")
        );
        // Two keys that both still work, neither replaced, or a prefix match: no pair.
        let other = key("key_other", "pg3", "sk-proxy-pppp", KeyState::Active);
        let keys = [successor.clone(), other];
        assert!(rotation_pair(&matches(&keys, "pg3"), "pg3").is_none());
        let by_prefix = key(
            "key_pfx",
            "sk-proxy-oooo",
            "sk-proxy-qqqq",
            KeyState::Active,
        );
        let keys = [retiring.clone(), by_prefix];
        assert!(rotation_pair(&matches(&keys, "sk-proxy-oooo"), "sk-proxy-oooo").is_none());
        // A revoked key with its revocation in the past is no retiring key.
        let mut revoked = retiring;
        revoked.state = KeyState::Revoked;
        let keys = [revoked, successor];
        assert_eq!(pick(&keys, "pg3").map(|k| k.id.as_str()), Ok("key_new"));
    }
}
