//! The price table: the shipped default (`prices.toml`), overridden and extended by the
//! operator's `[[prices]]`, plus an optional fallback for models neither names.
//!
//! Prices are nano-dollars per million tokens, parsed from their decimal text, so a price
//! like $0.075/M is exact; a cost is rounded up once, after summing every kind of token, so
//! many small requests can never add up to less than they cost.

use std::collections::HashMap;

use anyhow::Context;
use gateway_shared::{Nanodollars, Provider};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

const SHIPPED: &str = include_str!("../prices.toml");

/// Per-million-token prices of one model, and its largest possible output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price {
    pub input: Nanodollars,
    pub output: Nanodollars,
    pub cache_read: Nanodollars,
    pub cache_write: Nanodollars,
    pub max_output_tokens: u64,
}

/// Tokens of one request, by how they are billed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens billed at the input price (not served from or written to a cache).
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Tokens {
    pub fn total_input(&self) -> u64 {
        self.input
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
    }
}

impl Price {
    /// ceil(Σ tokens × price / 1e6), in u128 so no realistic count can overflow.
    pub fn cost(&self, tokens: &Tokens) -> Nanodollars {
        let sum = u128::from(tokens.input) * u128::from(self.input.0)
            + u128::from(tokens.output) * u128::from(self.output.0)
            + u128::from(tokens.cache_read) * u128::from(self.cache_read.0)
            + u128::from(tokens.cache_write) * u128::from(self.cache_write.0);
        Nanodollars(u64::try_from(sum.div_ceil(1_000_000)).unwrap_or(u64::MAX))
    }

    /// The dearest way a prompt token can be billed: bounds the input of a reservation.
    pub fn max_input_price(&self) -> Nanodollars {
        self.input.max(self.cache_read).max(self.cache_write)
    }

    /// How many output tokens `budget` pays for after `input_cost`.
    pub fn output_tokens_for(&self, budget: Nanodollars) -> u64 {
        if self.output.0 == 0 {
            return u64::MAX;
        }
        let tokens = u128::from(budget.0) * 1_000_000 / u128::from(self.output.0);
        u64::try_from(tokens).unwrap_or(u64::MAX)
    }
}

/// One `[[prices]]` entry as written in TOML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub model: String,
    /// Prices `model` only on this provider (SPEC §10), before any entry without one.
    pub provider: Option<Provider>,
    pub input: Decimal,
    pub output: Decimal,
    pub cache_read: Option<Decimal>,
    pub cache_write: Option<Decimal>,
    pub max_output_tokens: Option<u64>,
}

/// A fallback price: an entry without a model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackEntry {
    pub input: Decimal,
    pub output: Decimal,
    pub cache_read: Option<Decimal>,
    pub cache_write: Option<Decimal>,
    pub max_output_tokens: u64,
}

/// A price as TOML may write it: `0.15`, `2`, or `"0.15"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Decimal {
    Integer(u64),
    Float(f64),
    Text(String),
}

impl Decimal {
    fn dollars(&self) -> anyhow::Result<Nanodollars> {
        // Rust prints a float as the shortest decimal that reads back to it: the text the
        // operator wrote, for any price with up to 15 significant digits.
        let text = match self {
            Decimal::Integer(n) => n.to_string(),
            Decimal::Float(f) if f.is_finite() && *f >= 0.0 => f.to_string(),
            Decimal::Float(f) => anyhow::bail!("{f} is not a price"),
            Decimal::Text(t) => t.clone(),
        };
        text.parse().map_err(|e| anyhow::anyhow!("{text:?} {e}"))
    }
}

#[derive(Debug)]
pub struct PriceTable {
    globs: GlobSet,
    prices: Vec<Price>,
    /// Every entry written without glob syntax, with the index of the first entry that
    /// matches it (an earlier glob can). Most requests name such a model: one hash look-up
    /// instead of running the glob set. Hashed with foldhash (seeded), not SipHash: only the
    /// operator's and the shipped entries are ever inserted, and a look-up is on every
    /// request.
    exact: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    fallback: Option<Price>,
    /// The operator's entries that name a provider, a table per provider, searched first
    /// for that provider's requests. Empty unless some entry names one.
    scoped: Vec<(Provider, PriceTable)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShippedFile {
    prices: Vec<PriceEntry>,
}

impl PriceTable {
    /// The operator's entries first, then the shipped table; first match wins.
    pub fn new(
        overrides: &[PriceEntry],
        fallback: Option<&FallbackEntry>,
    ) -> anyhow::Result<PriceTable> {
        let shipped: ShippedFile = toml::from_str(SHIPPED).context("the shipped prices.toml")?;
        let general: Vec<&PriceEntry> = overrides.iter().filter(|e| e.provider.is_none()).collect();
        let mut table = Self::build(&general, &shipped.prices, fallback)?;
        let mut named: Vec<Provider> = overrides.iter().filter_map(|e| e.provider).collect();
        named.sort();
        named.dedup();
        for provider in named {
            let entries: Vec<&PriceEntry> = overrides
                .iter()
                .filter(|e| e.provider == Some(provider))
                .collect();
            table
                .scoped
                .push((provider, Self::build(&entries, &[], None)?));
        }
        Ok(table)
    }

    fn build(
        overrides: &[&PriceEntry],
        shipped: &[PriceEntry],
        fallback: Option<&FallbackEntry>,
    ) -> anyhow::Result<PriceTable> {
        let mut builder = GlobSetBuilder::new();
        let mut prices = Vec::new();
        for (index, entry) in overrides.iter().copied().chain(shipped).enumerate() {
            let origin = if index < overrides.len() {
                "[[prices]]"
            } else {
                "shipped prices.toml"
            };
            let glob = GlobBuilder::new(&entry.model)
                .literal_separator(false)
                .build()
                .with_context(|| {
                    format!("{origin}: model {:?} is not a valid glob", entry.model)
                })?;
            builder.add(glob);
            prices.push(
                price(
                    &entry.input,
                    &entry.output,
                    entry.cache_read.as_ref(),
                    entry.cache_write.as_ref(),
                    entry.max_output_tokens,
                )
                .with_context(|| format!("{origin} for {:?}", entry.model))?,
            );
        }
        let fallback = fallback
            .map(|f| {
                price(
                    &f.input,
                    &f.output,
                    f.cache_read.as_ref(),
                    f.cache_write.as_ref(),
                    Some(f.max_output_tokens),
                )
            })
            .transpose()
            .context("[spend.fallback_price]")?;
        let globs = builder.build().context("compiling price globs")?;
        let mut exact = HashMap::default();
        for entry in overrides.iter().copied().chain(shipped) {
            if !entry.model.contains(['*', '?', '[', ']', '{', '}', '\\'])
                && let Some(first) = globs.matches(entry.model.as_str()).into_iter().min()
            {
                exact.entry(entry.model.as_str().into()).or_insert(first);
            }
        }
        Ok(PriceTable {
            globs,
            prices,
            exact,
            fallback,
            scoped: Vec::new(),
        })
    }

    /// The price of `model` on `provider`: an entry naming that provider first, then as
    /// [`PriceTable::lookup`].
    pub fn lookup_for(&self, provider: Provider, model: &str) -> Option<Price> {
        if !self.scoped.is_empty()
            && let Some((_, table)) = self.scoped.iter().find(|(p, _)| *p == provider)
            && let Some(price) = table.lookup(model)
        {
            return Some(price);
        }
        self.lookup(model)
    }

    /// The price of `model`: the first matching entry, else the fallback, else `None`.
    pub fn lookup(&self, model: &str) -> Option<Price> {
        if let Some(&first) = self.exact.get(model) {
            return self.prices.get(first).copied();
        }
        let first = self.globs.matches(model).into_iter().min();
        first
            .and_then(|i| self.prices.get(i).copied())
            .or(self.fallback)
    }
}

fn price(
    input: &Decimal,
    output: &Decimal,
    cache_read: Option<&Decimal>,
    cache_write: Option<&Decimal>,
    max_output_tokens: Option<u64>,
) -> anyhow::Result<Price> {
    let input = input.dollars().context("input")?;
    let output = output.dollars().context("output")?;
    Ok(Price {
        input,
        output,
        cache_read: cache_read
            .map(Decimal::dollars)
            .transpose()
            .context("cache_read")?
            .unwrap_or(input),
        cache_write: cache_write
            .map(Decimal::dollars)
            .transpose()
            .context("cache_write")?
            .unwrap_or(input),
        max_output_tokens: match max_output_tokens {
            None => anyhow::bail!("max_output_tokens is required"),
            // What a request that names no output limit reserves: 0 for a priced output would
            // reserve nothing and let it run unbounded past the key's limit (0 is for models
            // with no output, such as embeddings, priced 0).
            Some(0) if output != Nanodollars::ZERO => anyhow::bail!(
                "max_output_tokens must be at least 1 for a model whose output is priced"
            ),
            Some(tokens) => tokens,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(model: &str, input: f64, output: f64) -> PriceEntry {
        PriceEntry {
            model: model.into(),
            provider: None,
            input: Decimal::Float(input),
            output: Decimal::Float(output),
            cache_read: None,
            cache_write: None,
            max_output_tokens: Some(1000),
        }
    }

    #[test]
    fn the_shipped_table_parses_and_orders_narrow_before_wide() {
        let table = PriceTable::new(&[], None).expect("shipped table");
        let mini = table.lookup("gpt-4o-mini-2024-07-18").expect("priced");
        assert_eq!(mini.input, Nanodollars(150_000_000), "$0.15 per million");
        assert_eq!(mini.cache_read, Nanodollars(75_000_000));
        assert_eq!(
            table.lookup("gpt-4o").expect("priced").input,
            Nanodollars(2_500_000_000)
        );
        assert_eq!(
            table
                .lookup("claude-sonnet-4-5-20250929")
                .expect("priced")
                .cache_write,
            Nanodollars(3_750_000_000)
        );
        assert_eq!(
            table
                .lookup("gemini-2.5-flash-lite")
                .expect("priced")
                .output,
            Nanodollars(400_000_000)
        );
        assert!(table.lookup("llama-3-70b").is_none());
    }

    #[test]
    fn premium_variants_are_not_priced_as_their_family() {
        let table = PriceTable::new(&[], None).expect("shipped table");
        // (model, $ per million input, output): the public list prices, where the family's
        // glob alone would charge a tenth or less.
        for (model, input, output) in [
            ("o1-pro-2025-03-19", 150, 600),
            ("o3-pro", 20, 80),
            ("gpt-5-pro", 15, 120),
            ("o3-deep-research", 10, 40),
            ("o4-mini-deep-research", 2, 8),
            ("gpt-4o-realtime-preview", 5, 20),
            ("gemini-2.5-flash-image-preview", 0, 30),
            ("gpt-4o-audio-preview-2025-06-03", 40, 80),
            ("gpt-4o-mini-audio-preview", 10, 20),
            ("gpt-audio", 32, 64),
            ("gemini-2.0-flash-preview-image-generation", 0, 30),
            ("gemini-3-pro-image-preview", 2, 120),
            ("gemini-2.5-pro-preview-tts", 1, 20),
            ("o1", 15, 60),
            ("o3", 2, 8),
            ("gpt-5", 1, 10),
        ] {
            let price = table.lookup(model).expect("priced");
            let dollars = |n: Nanodollars| n.0 / 1_000_000_000;
            assert_eq!(
                (dollars(price.input), dollars(price.output)),
                (input, output),
                "{model}"
            );
        }
    }

    #[test]
    fn exact_names_answer_as_the_glob_set_would() {
        let overrides = [
            entry("gpt-4o*", 1.0, 1.0),
            entry("gpt-4o-mini", 2.0, 2.0),
            entry("house-model", 3.0, 3.0),
            entry("house-model", 4.0, 4.0),
        ];
        let table = PriceTable::new(&overrides, None).expect("table");
        let input = |model: &str| table.lookup(model).map(|p| p.input);
        assert_eq!(
            input("gpt-4o-mini"),
            Some(Nanodollars(1_000_000_000)),
            "the earlier glob wins over the later exact name"
        );
        assert_eq!(input("house-model"), Some(Nanodollars(3_000_000_000)));
        assert_eq!(input("house-model-2"), None);
        let shipped: ShippedFile = toml::from_str(SHIPPED).expect("shipped");
        for name in shipped.prices.iter().map(|e| e.model.as_str()) {
            let by_globs = table.globs.matches(name).into_iter().min();
            assert_eq!(
                table.lookup(name),
                by_globs.and_then(|i| table.prices.get(i).copied()),
                "{name}"
            );
        }
    }

    #[test]
    fn overrides_come_first_and_the_fallback_last() {
        let fallback = FallbackEntry {
            input: Decimal::Text("1".into()),
            output: Decimal::Integer(2),
            cache_read: None,
            cache_write: None,
            max_output_tokens: 4096,
        };
        let table = PriceTable::new(&[entry("gpt-4o*", 1.0, 3.0)], Some(&fallback)).expect("table");
        assert_eq!(
            table.lookup("gpt-4o-mini").expect("override").output,
            Nanodollars(3_000_000_000)
        );
        assert_eq!(
            table
                .lookup("my-local-model")
                .expect("fallback")
                .max_output_tokens,
            4096
        );
    }

    #[test]
    fn costs_round_up_once() {
        let price = Price {
            input: Nanodollars(150_000_000),
            output: Nanodollars(600_000_000),
            cache_read: Nanodollars(75_000_000),
            cache_write: Nanodollars(150_000_000),
            max_output_tokens: 16384,
        };
        // 1000 × $0.15/M + 500 × $0.60/M + 200 × $0.075/M = $0.000465
        let tokens = Tokens {
            input: 1000,
            output: 500,
            cache_read: 200,
            cache_write: 0,
        };
        assert_eq!(price.cost(&tokens), Nanodollars(465_000));
        // A token at $0.001 per million is a thousandth of a nano-dollar: it rounds up to 1,
        // never down to 0.
        let tiny = Price {
            input: Nanodollars(1_000_000),
            ..price
        };
        assert_eq!(
            tiny.cost(&Tokens {
                input: 1,
                ..Default::default()
            }),
            Nanodollars(1)
        );
        assert_eq!(price.output_tokens_for(Nanodollars(600_000)), 1000);
    }

    proptest! {
        #[test]
        fn cost_is_monotone_and_never_overflows(
            a in 0u64..u32::MAX as u64, b in 0u64..u32::MAX as u64,
            per_million in 0u64..1_000_000_000_000_000,
        ) {
            let price = Price { input: Nanodollars(per_million), output: Nanodollars(per_million),
                cache_read: Nanodollars(per_million), cache_write: Nanodollars(per_million), max_output_tokens: 1 };
            let (lo, hi) = (a.min(b), a.max(b));
            let low = price.cost(&Tokens { input: lo, ..Default::default() });
            let high = price.cost(&Tokens { input: hi, ..Default::default() });
            prop_assert!(low <= high);
            // Exact: cost × 1e6 ≥ tokens × price > (cost − 1) × 1e6.
            let exact = u128::from(hi) * u128::from(per_million);
            prop_assert!(u128::from(high.0) * 1_000_000 >= exact);
            prop_assert!(high.0 == 0 || u128::from(high.0 - 1) * 1_000_000 < exact);
        }
    }

    #[test]
    fn an_entry_naming_a_provider_prices_the_model_there_only() {
        let local: Provider = "local-llama".parse().expect("name");
        let other: Provider = "groq".parse().expect("name");
        let mut free = entry("gpt-4o", 0.0, 0.0);
        free.provider = Some(local);
        let mut llama = entry("llama-*", 0.0, 0.0);
        llama.provider = Some(local);
        let table = PriceTable::new(&[free, llama], None).expect("table");
        let input = |provider, model: &str| table.lookup_for(provider, model).map(|p| p.input);
        assert_eq!(input(local, "gpt-4o"), Some(Nanodollars::ZERO));
        assert_eq!(input(local, "llama-3.1-8b"), Some(Nanodollars::ZERO));
        // Elsewhere the shipped price stands, and the scoped glob does not apply.
        assert!(input(Provider::Openai, "gpt-4o").is_some_and(|p| p > Nanodollars::ZERO));
        assert!(input(other, "gpt-4o").is_some_and(|p| p > Nanodollars::ZERO));
        assert_eq!(input(other, "llama-3.1-8b"), None);
    }
}
