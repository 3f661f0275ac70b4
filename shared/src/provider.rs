//! The upstream providers the gateway fronts: the three built-in ones, and any number the
//! operator configures under a name of their own (SPEC §10).
//!
//! A configured name is stored inline ([`ProviderName`], at most 32 bytes), so a `Provider`
//! stays `Copy`, compares without a pointer chase and is never allocated on the request path.
//! Which names exist is the daemon's configuration, not this crate's: any well-formed name
//! parses here (keys stored before a provider left the config still load, and gwctl never
//! refuses a name the daemon knows); the daemon checks names against its config.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    Openai,
    Anthropic,
    Gemini,
    /// An operator's `[providers.NAME]`.
    Configured(ProviderName),
}

impl Provider {
    /// The built-in providers.
    pub const ALL: [Provider; 3] = [Self::Openai, Self::Anthropic, Self::Gemini];

    pub fn as_str(&self) -> &str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Configured(name) => name.as_str(),
        }
    }

    pub fn is_builtin(&self) -> bool {
        !matches!(self, Self::Configured(_))
    }

    /// A built-in provider by name, or `None`.
    pub fn builtin(name: &str) -> Option<Provider> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = String;

    /// A built-in name, or any well-formed configured name (`[a-z][a-z0-9-]{0,31}`).
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(builtin) = Self::builtin(s) {
            return Ok(builtin);
        }
        ProviderName::new(s).map(Self::Configured).ok_or_else(|| {
            format!(
                "{s:?} is not a provider name (openai, anthropic, gemini, or a configured \
                 name: a lowercase letter, then up to 31 lowercase letters, digits or '-')"
            )
        })
    }
}

impl Serialize for Provider {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Provider {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The wire format a provider speaks: how its route reads the key and the model, where its
/// credential goes, and how its usage is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    /// OpenAI's format behind Azure's paths and `api-key` header.
    AzureOpenai,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        Self::Openai,
        Self::Anthropic,
        Self::Gemini,
        Self::AzureOpenai,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::AzureOpenai => "azure-openai",
        }
    }

    /// The kind of a built-in provider; `None` for a configured one.
    pub fn of_builtin(provider: Provider) -> Option<ProviderKind> {
        match provider {
            Provider::Openai => Some(Self::Openai),
            Provider::Anthropic => Some(Self::Anthropic),
            Provider::Gemini => Some(Self::Gemini),
            Provider::Configured(_) => None,
        }
    }

    /// OpenAI's body and usage format (plain or behind Azure's paths).
    pub fn is_openai_format(self) -> bool {
        matches!(self, Self::Openai | Self::AzureOpenai)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured provider's name, `[a-z][a-z0-9-]{0,31}`, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderName {
    /// Zero-padded: names never contain NUL, so padding sorts and compares like the text.
    bytes: [u8; ProviderName::MAX_LEN],
}

impl ProviderName {
    pub const MAX_LEN: usize = 32;

    /// `None` unless `name` is `[a-z][a-z0-9-]{0,31}`.
    pub fn new(name: &str) -> Option<ProviderName> {
        let valid = name.len() <= Self::MAX_LEN
            && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return None;
        }
        let mut bytes = [0; Self::MAX_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(ProviderName { bytes })
    }

    pub fn as_str(&self) -> &str {
        let len = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(Self::MAX_LEN);
        // Only ASCII is ever stored (checked in `new`).
        std::str::from_utf8(&self.bytes[..len]).unwrap_or_default()
    }
}

impl fmt::Debug for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_and_configured_names_parse_and_round_trip() {
        assert_eq!("openai".parse(), Ok(Provider::Openai));
        let local: Provider = "local-llama".parse().expect("configured name");
        assert!(!local.is_builtin());
        assert_eq!(local.as_str(), "local-llama");
        assert_eq!(local.to_string(), "local-llama");
        let max = "a".repeat(32);
        assert_eq!(max.parse::<Provider>().expect("32 chars").as_str(), max);
        let json = serde_json::to_string(&vec![Provider::Gemini, local]).expect("json");
        assert_eq!(json, r#"["gemini","local-llama"]"#);
        let back: Vec<Provider> = serde_json::from_str(&json).expect("back");
        assert_eq!(back, vec![Provider::Gemini, local]);
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            "",
            "Azure",
            "1abc",
            "-x",
            "a_b",
            "a b",
            "é",
            &"a".repeat(33),
        ] {
            assert!(bad.parse::<Provider>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<Provider>(r#""Open AI""#).is_err());
    }

    #[test]
    fn configured_names_order_like_their_text() {
        let a: Provider = "ab".parse().expect("ab");
        let b: Provider = "abc".parse().expect("abc");
        let c: Provider = "b".parse().expect("b");
        assert!(a < b && b < c);
        assert!(Provider::Gemini < a, "built-ins first");
    }
}
