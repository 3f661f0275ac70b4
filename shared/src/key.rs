//! Secret token formats: proxy keys (`sk-proxy-…`) and, in the same style, admin tokens.
//!
//! A token is a fixed prefix, 32 base62 characters from the OS CSPRNG (about 190 bits), and a
//! 6-character base62 CRC32 of those characters (GitHub's recipe). The checksum is not
//! security: it lets the gateway reject a typo or random garbage before any look-up, and lets
//! secret scanners match `sk-proxy-[0-9A-Za-z]{38}` offline. Only the SHA-256 of the whole
//! token and a short display prefix are ever stored; a fast hash is right for a secret with
//! this much entropy (a slow KDF would only turn authentication into a CPU DoS vector).
//!
//! The parsed types print `***` in `Debug` and have no `Display`: the only way to the secret
//! is `expose()`, which makes every place that handles it easy to find.

use std::fmt;

use sha2::{Digest, Sha256};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random characters after the prefix.
pub const RANDOM_LEN: usize = 32;
/// Checksum characters after the random ones (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;
/// Characters of the random part shown in the display prefix.
pub const DISPLAY_CHARS: usize = 4;

/// The prefix of every proxy key.
pub const PROXY_KEY_PREFIX: &str = "sk-proxy-";
/// The prefix of every admin token.
pub const ADMIN_TOKEN_PREFIX: &str = "gwadm-";

/// The prefix of key ids: stable, not secret, safe to log (`key_…`).
pub const KEY_ID_PREFIX: &str = "key_";
/// Random base62 characters after the id prefix.
pub const KEY_ID_RANDOM_LEN: usize = 20;

/// A fresh key id: `key_` and 20 base62 characters from the OS CSPRNG.
pub fn new_key_id() -> Result<String, getrandom::Error> {
    Ok(format!(
        "{KEY_ID_PREFIX}{}",
        random_base62(KEY_ID_RANDOM_LEN)?
    ))
}

/// Whether `text` has the shape of a key id (it may still name no key).
pub fn is_key_id(text: &str) -> bool {
    text.strip_prefix(KEY_ID_PREFIX).is_some_and(|rest| {
        rest.len() == KEY_ID_RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Prefixes of the secrets a message or log line must not echo: our proxy keys and admin
/// tokens, and the providers' API keys (OpenAI `sk-`/`sk-proj-`, Anthropic `sk-ant-`, Google
/// `AIza`). Longest first, so `sk-proxy-` is kept whole rather than as `sk-`.
const SECRET_PREFIXES: [&str; 6] = [
    PROXY_KEY_PREFIX,
    "sk-proj-",
    "sk-ant-",
    ADMIN_TOKEN_PREFIX,
    "sk-",
    "AIza",
];

/// `text` with every secret in it (a word starting with one of [`SECRET_PREFIXES`]) cut to
/// its prefix and four more characters, then `…`, like a key's display prefix
/// (`sk-proxy-a1b2…`): for messages and logs that echo what a user typed or requested, where
/// a secret pasted into the wrong place must not come back out.
pub fn redact_secrets(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        // Our own prefixes are distinctive enough to catch glued to other text (`x` + a key,
        // `%20` + a key); a provider's `sk-` only at the start of a word (not in `task-…`).
        let starts_word = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        let prefix = SECRET_PREFIXES.iter().find(|p| {
            (starts_word || **p == PROXY_KEY_PREFIX || **p == ADMIN_TOKEN_PREFIX)
                && bytes[at..].starts_with(p.as_bytes())
        });
        let Some(prefix) = prefix else {
            at += 1;
            continue;
        };
        let body = at + prefix.len();
        let end = body + bytes[body..].iter().take_while(|b| is_token(**b)).count();
        let shown = body + (end - body).min(DISPLAY_CHARS);
        if end > shown {
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..shown]);
            out.push('…');
            copied = end;
        }
        at = end.max(at + 1);
    }
    match out {
        Some(mut out) => {
            out.push_str(&text[copied..]);
            std::borrow::Cow::Owned(out)
        }
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// Why a presented string is not a well-formed token. Deliberately carries no part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("does not start with the expected prefix")]
    Prefix,
    #[error("has the wrong length")]
    Length,
    #[error("contains a character outside 0-9, A-Z, a-z")]
    Alphabet,
    #[error("fails its checksum")]
    Checksum,
}

/// A well-formed proxy key (checksum verified). Never printed; see the module doc.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyKey(String);

/// A well-formed admin token (checksum verified). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

/// SHA-256 of a whole token: what the store keeps and what look-ups use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

macro_rules! token_type {
    ($ty:ident, $prefix:expr) => {
        impl $ty {
            /// A fresh token from the OS CSPRNG.
            pub fn generate() -> Result<Self, getrandom::Error> {
                generate($prefix).map(Self)
            }

            /// Checks prefix, length, alphabet and checksum; no look-up happens here.
            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                check($prefix, raw)?;
                Ok(Self(raw.to_owned()))
            }

            /// The hash of a well-formed `raw`, without keeping a copy of the secret (the
            /// request path only needs the hash to find the key).
            pub fn hash_of(raw: &str) -> Result<KeyHash, ParseError> {
                check($prefix, raw)?;
                Ok(KeyHash::of(raw))
            }

            /// The raw secret. Call only to hand it to its owner once, or to send it.
            pub fn expose(&self) -> &str {
                &self.0
            }

            /// The display prefix, e.g. `sk-proxy-a1b2`: safe to store, log and show.
            pub fn display_prefix(&self) -> String {
                self.0[..$prefix.len() + DISPLAY_CHARS].to_owned()
            }

            pub fn hash(&self) -> KeyHash {
                KeyHash::of(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(***)", stringify!($ty))
            }
        }
    };
}

token_type!(ProxyKey, PROXY_KEY_PREFIX);
token_type!(AdminToken, ADMIN_TOKEN_PREFIX);

impl KeyHash {
    pub fn of(raw: &str) -> Self {
        Self(Sha256::digest(raw.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0])?;
            let lo = hex_value(pair[1])?;
            out[i] = (hi << 4) | lo;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not secret, but eight hex digits are enough to tell two apart in a log.
        write!(f, "KeyHash({}…)", &self.to_hex()[..8])
    }
}

/// `n` random base62 characters from the OS CSPRNG, by rejection sampling (no modulo bias).
pub fn random_base62(n: usize) -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf)?;
        for &byte in &buf {
            // 248 = 4 × 62: bytes at or above it would favour the first characters.
            if byte < 248 && out.len() < n {
                out.push(char::from(BASE62[usize::from(byte % 62)]));
            }
        }
    }
    Ok(out)
}

fn generate(prefix: &str) -> Result<String, getrandom::Error> {
    let random = random_base62(RANDOM_LEN)?;
    let mut raw = String::with_capacity(prefix.len() + RANDOM_LEN + CHECKSUM_LEN);
    raw.push_str(prefix);
    raw.push_str(&random);
    raw.push_str(&checksum(&random));
    Ok(raw)
}

fn check(prefix: &str, raw: &str) -> Result<(), ParseError> {
    let body = raw.strip_prefix(prefix).ok_or(ParseError::Prefix)?;
    if body.len() != RANDOM_LEN + CHECKSUM_LEN {
        return Err(ParseError::Length);
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ParseError::Alphabet);
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    if checksum(random) != sum {
        return Err(ParseError::Checksum);
    }
    Ok(())
}

/// CRC32 of the random part as exactly six base62 characters, most significant first.
fn checksum(random: &str) -> String {
    let mut value = u64::from(crc32fast::hash(random.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_in_echoed_text_are_cut_to_their_display_prefix() {
        let key = ProxyKey::generate().expect("key");
        let secret = key.expose();
        let text = format!("No key has the id {secret:?}; also /v1/x/{secret}/y gwadm-abcdefghij");
        let redacted = redact_secrets(&text);
        assert!(!redacted.contains(&secret[12..]), "{redacted}");
        assert_eq!(
            redacted
                .matches(&format!("{}…", key.display_prefix()))
                .count(),
            2,
            "{redacted}"
        );
        assert!(redacted.ends_with("gwadm-abcd…"), "{redacted}");
        assert_eq!(redact_secrets("key_abc sk-proxy-"), "key_abc sk-proxy-");
        let glued = format!("/v1/keys/x{secret} and %20{secret}=gwadm-abcdefgh");
        let glued = redact_secrets(&glued);
        assert!(!glued.contains(&secret[13..]), "{glued}");
        assert!(glued.ends_with("=gwadm-abcd…"), "{glued}");
        assert_eq!(
            redact_secrets("sk-proxy-ab"),
            "sk-proxy-ab",
            "nothing past the prefix"
        );
        assert!(matches!(
            redact_secrets("plain é text"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_have_the_published_shape() {
        let key = ProxyKey::generate().expect("rng");
        let raw = key.expose();
        assert!(raw.starts_with("sk-proxy-"));
        assert_eq!(raw.len(), 9 + 38);
        assert!(raw[9..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(key.display_prefix(), &raw[..13]);
        assert_eq!(ProxyKey::parse(raw).expect("parses"), key);
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let key = ProxyKey::generate().expect("rng");
        let shown = format!("{key:?}");
        assert_eq!(shown, "ProxyKey(***)");
        let token = AdminToken::generate().expect("rng");
        assert!(!format!("{token:?}").contains(token.expose()));
    }

    #[test]
    fn rejects_each_kind_of_malformed_key() {
        let key = ProxyKey::generate().expect("rng");
        let raw = key.expose();
        assert_eq!(ProxyKey::parse(""), Err(ParseError::Prefix));
        assert_eq!(ProxyKey::parse(&raw[1..]), Err(ParseError::Prefix));
        assert_eq!(
            ProxyKey::parse(&raw[..raw.len() - 1]),
            Err(ParseError::Length)
        );
        let bad_alphabet = format!("{}-{}", &raw[..20], &raw[21..]);
        assert_eq!(ProxyKey::parse(&bad_alphabet), Err(ParseError::Alphabet));
        // A proxy key is not an admin token, even with a valid checksum.
        assert_eq!(AdminToken::parse(raw), Err(ParseError::Prefix));
    }

    #[test]
    fn key_ids_have_their_shape() {
        let id = new_key_id().expect("rng");
        assert!(is_key_id(&id), "{id}");
        assert!(!is_key_id("key_short"));
        assert!(!is_key_id("backend-prod"));
    }

    #[test]
    fn hash_hex_round_trips() {
        let hash = KeyHash::of("anything");
        assert_eq!(KeyHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(KeyHash::from_hex("zz"), None);
    }

    proptest! {
        #[test]
        fn any_random_part_round_trips(random in "[0-9A-Za-z]{32}") {
            let raw = format!("sk-proxy-{random}{}", checksum(&random));
            let key = ProxyKey::parse(&raw).expect("valid");
            prop_assert_eq!(key.expose(), raw.as_str());
            prop_assert_eq!(ProxyKey::hash_of(&raw).expect("valid"), key.hash());
        }

        #[test]
        fn any_one_character_change_fails(
            random in "[0-9A-Za-z]{32}",
            position in 0usize..47,
            replacement in proptest::char::range('!', '~'),
        ) {
            let raw = format!("sk-proxy-{random}{}", checksum(&random));
            let mut chars: Vec<char> = raw.chars().collect();
            prop_assume!(chars[position] != replacement);
            chars[position] = replacement;
            let mutated: String = chars.into_iter().collect();
            prop_assert!(ProxyKey::parse(&mutated).is_err());
            prop_assert!(ProxyKey::hash_of(&mutated).is_err());
        }
    }
}
