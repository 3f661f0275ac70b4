//! A key's restrictions compiled for the request path: providers, model globs, IP networks.
//!
//! Compiled once when a key is loaded or edited, so the proxy never parses a glob or a CIDR
//! per request. Stored values were validated on the way in; if one still fails to compile
//! (a hand-edited database), the policy fails closed: the rule matches nothing.
//!
//! Policies are interned: keys with the same three lists share one `Policy`, lists included.
//! Fleets hand out many keys with the same scope, and a compiled glob set alone is kilobytes,
//! so 100,000 keys with one scope hold one policy instead of 100,000.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};

use gateway_shared::Provider;
use gateway_shared::validate::parse_ip_rule;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use ipnet::IpNet;

#[derive(Debug)]
pub struct Policy {
    /// The lists as stored, for the management API's views and edits.
    providers: Vec<Provider>,
    models: Vec<String>,
    ips: Vec<String>,
    /// `None`: every model.
    model_set: Option<GlobSet>,
    /// `None`: any address.
    networks: Option<Vec<IpNet>>,
}

impl Policy {
    /// Empty lists restrict nothing.
    pub fn compile(providers: Vec<Provider>, models: Vec<String>, ips: Vec<String>) -> Policy {
        Policy {
            model_set: (!models.is_empty()).then(|| compile_globs(&models)),
            networks: (!ips.is_empty())
                .then(|| ips.iter().filter_map(|rule| parse_ip_rule(rule)).collect()),
            providers,
            models,
            ips,
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
        self.model_set.is_some()
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.model_set
            .as_ref()
            .is_none_or(|set| set.is_match(model))
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    pub fn ips(&self) -> &[String] {
        &self.ips
    }

    fn is(&self, providers: &[Provider], models: &[String], ips: &[String]) -> bool {
        self.providers == providers && self.models == models && self.ips == ips
    }
}

/// The live policies by their lists, shared while any key uses them.
#[derive(Debug, Default)]
pub struct PolicyCache {
    // Std mutex: taken when a key is loaded or edited, never on the request path.
    inner: Mutex<Interned>,
}

#[derive(Debug, Default)]
struct Interned {
    hasher: RandomState,
    /// By a hash of the three lists: the lists themselves live only in the policies.
    policies: HashMap<u64, Vec<Weak<Policy>>>,
    /// Buckets after the last sweep of dead policies; the next sweep waits for twice as
    /// many, so sweeping stays linear in the number of edits.
    swept_at: usize,
}

impl PolicyCache {
    pub fn get(
        &self,
        providers: Vec<Provider>,
        models: Vec<String>,
        ips: Vec<String>,
    ) -> Arc<Policy> {
        let mut interned = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let hash = interned.hasher.hash_one((&providers, &models, &ips));
        let bucket = interned.policies.entry(hash).or_default();
        if let Some(policy) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|policy| policy.is(&providers, &models, &ips))
        {
            return policy;
        }
        let policy = Arc::new(Policy::compile(providers, models, ips));
        bucket.retain(|weak| weak.strong_count() > 0);
        bucket.push(Arc::downgrade(&policy));
        interned.sweep();
        policy
    }
}

impl Interned {
    fn sweep(&mut self) {
        if self.policies.len() < self.swept_at.max(64) * 2 {
            return;
        }
        self.policies.retain(|_, bucket| {
            bucket.retain(|weak| weak.strong_count() > 0);
            !bucket.is_empty()
        });
        self.swept_at = self.policies.len();
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

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn policy(providers: &[Provider], models: &[&str], ips: &[&str]) -> Policy {
        Policy::compile(providers.to_vec(), strings(models), strings(ips))
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
    fn keys_with_the_same_lists_share_one_policy() {
        let cache = PolicyCache::default();
        let get = |models: &[&str]| cache.get(vec![Provider::Openai], strings(models), vec![]);
        let a = get(&["gpt-4o*"]);
        assert!(Arc::ptr_eq(&a, &get(&["gpt-4o*"])));
        assert!(!Arc::ptr_eq(&a, &get(&["claude-*"])));
        let other_provider = cache.get(vec![], strings(&["gpt-4o*"]), vec![]);
        assert!(!Arc::ptr_eq(&a, &other_provider));
        assert_eq!(a.models(), ["gpt-4o*"]);
        let weak = Arc::downgrade(&a);
        drop(a);
        assert!(
            weak.upgrade().is_none(),
            "the cache does not keep a policy alive"
        );
    }

    #[test]
    fn dead_policies_are_swept_as_edits_go_on() {
        let cache = PolicyCache::default();
        for i in 0..10_000 {
            drop(cache.get(vec![], strings(&[&format!("model-{i}")]), vec![]));
        }
        let buckets = cache.inner.lock().expect("lock").policies.len();
        assert!(
            buckets <= 256,
            "{buckets} buckets for one live policy at a time"
        );
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
