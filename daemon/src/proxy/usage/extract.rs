//! Each provider's usage semantics, applied to one JSON document (a body or a stream event).
//!
//! - OpenAI: `usage` (chat and completions) or `response.usage` (Responses API events);
//!   `prompt_tokens` includes `cached_tokens`, which are billed at the cache-read price.
//! - Anthropic: `message_start` carries input and cache counts; `message_delta` carries
//!   *cumulative* counts, so the latest value of each field wins, never a sum. Cache reads
//!   and writes are separate from `input_tokens` and billed at their own prices.
//! - Gemini: every chunk repeats a cumulative `usageMetadata`: the last one wins.
//!   `promptTokenCount` includes `cachedContentTokenCount`; `thoughtsTokenCount` is output.

use gateway_shared::Provider;
use serde_json::Value;

use super::fields::{Details, Usage};
use crate::spend::price::Tokens;

/// What has been observed of a response so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Usage as the provider reported it, once it has.
    pub reported: Option<Tokens>,
    /// Stream events that carried generated content.
    pub content_events: u64,
    /// Characters of generated content.
    pub content_chars: u64,
}

impl Observed {
    /// Output tokens generated so far: reported, else a floor from what streamed (a token is
    /// at least one event's worth and at most about four characters).
    pub fn output_tokens_estimate(&self) -> u64 {
        match self.reported {
            Some(tokens) => tokens.output,
            None => self.content_events.max(self.content_chars.div_ceil(4)),
        }
    }
}

pub fn apply(provider: Provider, document: &Value, observed: &mut Observed) {
    match provider {
        Provider::Openai => openai(document, observed),
        Provider::Anthropic => anthropic(document, observed),
        Provider::Gemini => gemini(document, observed),
    }
}

/// `Value::pointer` without its allocations (it unescapes every segment into a `String`).
trait Path {
    fn at_path(&self, keys: &[&str]) -> Option<&Value>;
}

impl Path for Value {
    fn at_path(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().try_fold(self, |value, key| value.get(key))
    }
}

fn text_len(value: Option<&Value>) -> u64 {
    value
        .and_then(Value::as_str)
        .map_or(0, |s| s.chars().count() as u64)
}

fn openai(document: &Value, observed: &mut Observed) {
    let usage = Usage::of(document.get("usage"))
        .or_else(|| Usage::of(document.get("response").and_then(|r| r.get("usage"))));
    if let Some(usage) = usage {
        openai_usage(&usage, observed);
    }
    let mut chars = 0;
    if let Some(choices) = document.get("choices").and_then(Value::as_array) {
        for choice in choices {
            chars += text_len(choice.at_path(&["delta", "content"]))
                + text_len(choice.at_path(&["delta", "reasoning_content"]));
        }
    }
    if document.get("type").and_then(Value::as_str) == Some("response.output_text.delta") {
        chars += text_len(document.get("delta"));
    }
    if chars > 0 {
        observed.content_events += 1;
        observed.content_chars += chars;
    }
}

/// OpenAI's `usage` object (chat, completions, Responses API).
pub fn openai_usage(usage: &Usage, observed: &mut Observed) {
    let prompt = usage
        .prompt_tokens
        .get()
        .or(usage.input_tokens.get())
        .unwrap_or(0);
    let completion = usage
        .completion_tokens
        .get()
        .or(usage.output_tokens.get())
        .unwrap_or(0);
    let cached = Details::cached(&usage.prompt_tokens_details)
        .or(Details::cached(&usage.input_tokens_details))
        .unwrap_or(0)
        .min(prompt);
    observed.reported = Some(Tokens {
        input: prompt - cached,
        cache_read: cached,
        output: completion,
        cache_write: 0,
    });
}

fn anthropic(document: &Value, observed: &mut Observed) {
    let usage = match document.get("type").and_then(Value::as_str) {
        Some("message_start") => document.at_path(&["message", "usage"]),
        Some("message_delta") | Some("message") => document.get("usage"),
        Some("content_block_delta") => {
            let delta = document.get("delta");
            let chars = text_len(delta.and_then(|d| d.get("text")))
                + text_len(delta.and_then(|d| d.get("thinking")))
                + text_len(delta.and_then(|d| d.get("partial_json")));
            observed.content_events += 1;
            observed.content_chars += chars;
            None
        }
        _ => None,
    };
    if let Some(usage) = Usage::of(usage) {
        anthropic_usage(&usage, observed);
    }
}

/// Anthropic's `usage` object: each count present replaces the one seen before (cumulative).
pub fn anthropic_usage(usage: &Usage, observed: &mut Observed) {
    let mut tokens = observed.reported.unwrap_or_default();
    if let Some(n) = usage.input_tokens.get() {
        tokens.input = n;
    }
    if let Some(n) = usage.output_tokens.get() {
        tokens.output = n;
    }
    if let Some(n) = usage.cache_read_input_tokens.get() {
        tokens.cache_read = n;
    }
    if let Some(n) = usage.cache_creation_input_tokens.get() {
        tokens.cache_write = n;
    }
    observed.reported = Some(tokens);
}

fn gemini(document: &Value, observed: &mut Observed) {
    if let Some(usage) = Usage::of(document.get("usageMetadata")) {
        gemini_usage(&usage, observed);
    }
    let mut chars = 0;
    if let Some(candidates) = document.get("candidates").and_then(Value::as_array) {
        for candidate in candidates {
            if let Some(parts) = candidate
                .at_path(&["content", "parts"])
                .and_then(Value::as_array)
            {
                chars += parts.iter().map(|p| text_len(p.get("text"))).sum::<u64>();
            }
        }
    }
    if chars > 0 {
        observed.content_events += 1;
        observed.content_chars += chars;
    }
}

/// Gemini's `usageMetadata` object.
pub fn gemini_usage(usage: &Usage, observed: &mut Observed) {
    let prompt = usage.prompt_token_count.get().unwrap_or(0)
        + usage.tool_use_prompt_token_count.get().unwrap_or(0);
    let cached = usage
        .cached_content_token_count
        .get()
        .unwrap_or(0)
        .min(prompt);
    let output = usage.candidates_token_count.get().unwrap_or(0)
        + usage.thoughts_token_count.get().unwrap_or(0);
    observed.reported = Some(Tokens {
        input: prompt - cached,
        cache_read: cached,
        output,
        cache_write: 0,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(provider: Provider, documents: &[Value], expected: Tokens) {
        let mut observed = Observed::default();
        for document in documents {
            apply(provider, document, &mut observed);
        }
        assert_eq!(observed.reported, Some(expected), "{provider}");
    }

    #[test]
    fn openai_cached_tokens_are_part_of_the_prompt() {
        check(
            Provider::Openai,
            &[
                json!({"usage": {"prompt_tokens": 1000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 800}}}),
            ],
            Tokens {
                input: 200,
                cache_read: 800,
                output: 50,
                cache_write: 0,
            },
        );
        check(
            Provider::Openai,
            &[
                json!({"type": "response.completed", "response": {"usage": {"input_tokens": 10, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 0}}}}),
            ],
            Tokens {
                input: 10,
                output: 5,
                ..Default::default()
            },
        );
    }

    #[test]
    fn anthropic_message_delta_is_cumulative_not_summed() {
        check(
            Provider::Anthropic,
            &[
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 40}}}),
                json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hello"}}),
                json!({"type": "message_delta", "usage": {"output_tokens": 30}}),
                json!({"type": "message_delta", "usage": {"output_tokens": 55}}),
            ],
            Tokens {
                input: 25,
                output: 55,
                cache_read: 100,
                cache_write: 40,
            },
        );
    }

    #[test]
    fn gemini_last_usage_wins_and_thoughts_are_output() {
        check(
            Provider::Gemini,
            &[
                json!({"candidates": [{"content": {"parts": [{"text": "a"}]}}], "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1}}),
                json!({"candidates": [{"content": {"parts": [{"text": "b"}]}}], "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 9, "thoughtsTokenCount": 20, "cachedContentTokenCount": 2}}),
            ],
            Tokens {
                input: 10,
                cache_read: 2,
                output: 29,
                cache_write: 0,
            },
        );
    }

    #[test]
    fn content_counts_give_a_floor_when_usage_never_came() {
        let mut observed = Observed::default();
        for _ in 0..3 {
            apply(
                Provider::Openai,
                &json!({"choices": [{"delta": {"content": "hello world"}}]}),
                &mut observed,
            );
        }
        assert_eq!(observed.reported, None);
        assert_eq!(
            observed.output_tokens_estimate(),
            9,
            "33 characters ≈ 9 tokens, at least 3 events"
        );
    }
}
