//! A key's restrictions compiled for the request path: providers, model globs, IP networks.
//!
//! Compiled once when a key is loaded or edited, so the proxy never parses a glob or a CIDR
//! per request. Stored values were validated on the way in; if one still fails to compile
//! (a hand-edited database), the policy fails closed: the rule matches nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};

use gateway_shared::Provider;
use gateway_shared::validate::parse_ip_rule;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ipnet::IpNet;

use super::record::KeyRecord;

#[derive(Clone, Debug)]
pub struct Policy {
    /// Empty: every provider.
    providers: Vec<Provider>,
    /// `None`: every model. Shared between keys with the same patterns (a compiled set is
    /// kilobytes; 100k keys with one glob would otherwise hold 100k copies).
    models: Option<Arc<GlobSet>>,
    /// `None`: any address.
    networks: Option<Vec<IpNet>>,
}

impl Policy {
    pub fn compile(record: &KeyRecord, globs: &GlobCache) -> Policy {
        Policy {
            providers: record.allowed_providers.clone(),
            models: (!record.allowed_models.is_empty()).then(|| globs.get(&record.allowed_models)),
            networks: (!record.allowed_ips.is_empty()).then(|| {
                record
                    .allowed_ips
                    .iter()
                    .filter_map(|rule| parse_ip_rule(rule))
                    .collect()
            }),
        }
    }

    /// `ip` of `None` is a client address that could not be determined: allowed only when
    /// the key has no IP restriction.
    pub fn allows_ip(&self, ip: Option<IpAddr>) -> bool {
        match (&self.networks, ip) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(networks), Some(ip)) => {
                let ip = ip.to_canonical();
                networks.iter().any(|net| net.contains(&ip))
            }
        }
    }

    pub fn allows_provider(&self, provider: Provider) -> bool {
        self.providers.is_empty() || self.providers.contains(&provider)
    }

    /// Whether the key restricts models at all.
    pub fn restricts_models(&self) -> bool {
        self.models.is_some()
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|set| set.is_match(model))
    }
}

/// Compiled model globs by pattern list, shared while any key uses them.
#[derive(Debug, Default)]
pub struct GlobCache {
    // Std mutex: taken when a key is loaded or edited, never on the request path.
    sets: Mutex<HashMap<Vec<String>, Weak<GlobSet>>>,
}

impl GlobCache {
    pub fn get(&self, patterns: &[String]) -> Arc<GlobSet> {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = sets.get(patterns).and_then(Weak::upgrade) {
            return set;
        }
        let set = Arc::new(compile_globs(patterns));
        sets.retain(|_, weak| weak.strong_count() > 0);
        sets.insert(patterns.to_vec(), Arc::downgrade(&set));
        set
    }
}

fn compile_globs(patterns: &[String]) -> GlobSet {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        // Model ids are not paths: `*` also matches `/` and `.`.
        match GlobBuilder::new(pattern).literal_separator(false).build() {
            Ok(glob) => {
                builder.add(glob);
            }
            Err(err) => {
                tracing::error!(pattern, error = %err, "stored model glob does not compile; ignoring it")
            }
        }
    }
    builder.build().unwrap_or_else(|err| {
        tracing::error!(error = %err, "model globs do not compile; the key matches no model");
        GlobSet::empty()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(providers: &[Provider], models: &[&str], ips: &[&str]) -> Policy {
        let at = jiff::Timestamp::UNIX_EPOCH;
        let record = KeyRecord {
            id: "key_1".into(),
            hash: gateway_shared::KeyHash::of("x"),
            prefix: "sk-proxy-abcd".into(),
            name: "n".into(),
            allowed_providers: providers.to_vec(),
            allowed_models: models.iter().map(|s| s.to_string()).collect(),
            allowed_ips: ips.iter().map(|s| s.to_string()).collect(),
            rate_limit_rpm: None,
            spend_limit: None,
            spend_reset: None,
            expires_at: None,
            created_at: at,
            updated_at: at,
            revoked_at: None,
            last_used_at: None,
            spend_total: Default::default(),
            spend_period: Default::default(),
            period_resets_at: None,
            request_count: 0,
        };
        Policy::compile(&record, &GlobCache::default())
    }

    #[test]
    fn model_globs_match_the_spec_example() {
        let p = policy(&[], &["gpt-4o*"], &[]);
        assert!(p.allows_model("gpt-4o"));
        assert!(p.allows_model("gpt-4o-mini"));
        assert!(!p.allows_model("gpt-4"));
        assert!(!p.allows_model("o1"));
        let p = policy(&[], &["models/*", "claude-?-*"], &[]);
        assert!(p.allows_model("models/a/b.c"));
        assert!(p.allows_model("claude-3-opus"));
        assert!(policy(&[], &[], &[]).allows_model("anything"));
        assert!(!policy(&[], &[], &[]).restricts_models());
    }

    #[test]
    fn keys_with_the_same_patterns_share_one_compiled_set() {
        let cache = GlobCache::default();
        let a = cache.get(&["gpt-4o*".to_owned()]);
        let b = cache.get(&["gpt-4o*".to_owned()]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &cache.get(&["claude-*".to_owned()])));
    }

    #[test]
    fn ip_rules_match_canonical_addresses() {
        let p = policy(&[], &[], &["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        assert!(p.allows_ip(ip("10.1.2.3")));
        assert!(
            p.allows_ip(ip("::ffff:10.1.2.3")),
            "IPv4-mapped IPv6 matches IPv4 rules"
        );
        assert!(p.allows_ip(ip("2001:db8::5")));
        assert!(p.allows_ip(ip("192.168.1.7")));
        assert!(!p.allows_ip(ip("192.168.1.8")));
        assert!(!p.allows_ip(ip("11.0.0.1")));
        assert!(
            !p.allows_ip(None),
            "an unknown client is refused when IPs are restricted"
        );
        assert!(policy(&[], &[], &[]).allows_ip(None));
    }

    #[test]
    fn providers() {
        let p = policy(&[Provider::Anthropic], &[], &[]);
        assert!(p.allows_provider(Provider::Anthropic));
        assert!(!p.allows_provider(Provider::Openai));
        assert!(policy(&[], &[], &[]).allows_provider(Provider::Gemini));
    }
}
