//! Each provider's usage semantics, applied to one JSON document (a body or a stream event).
//!
//! - OpenAI: `usage` (chat and completions) or `response.usage` (Responses API events);
//!   `prompt_tokens` includes `cached_tokens`, which are billed at the cache-read price.
//! - Anthropic: `message_start` carries input and cache counts; `message_delta` carries
//!   *cumulative* counts, so the latest value of each field wins, never a sum. Cache reads
//!   and writes are separate from `input_tokens` and billed at their own prices.
//! - Gemini: every chunk repeats a cumulative `usageMetadata`: the last one wins.
//!   `promptTokenCount` includes `cachedContentTokenCount`; `thoughtsTokenCount` is output.
//!
//! A report seen mid-stream is not necessarily the last word: Anthropic's `message_start`
//! says `output_tokens: 1` before any output exists, an OpenAI chunk whose choices are still
//! open can carry running usage (`continuous_usage_stats`), and a Gemini chunk before its
//! `finishReason` counts only what was generated so far. Such a report is marked
//! [`Observed::partial`]: if the stream ends before a later report replaces it, the output
//! billed is at least what was seen streaming (see [`Observed::output_tokens_so_far`]).
//!
//! Every count is clamped to [`MAX_TOKENS_PER_REQUEST`] and sums saturate: a provider's
//! number, however large, can neither wrap nor push a cost near the range of an SQLite
//! integer.

use crate::config::Kind;

use super::fields::{Details, Type, Usage};
use crate::spend::price::Tokens;

/// The most tokens of any one kind a single request is billed for: 10^9, hundreds of times
/// the largest context window or output limit of any model (a few million tokens). A count
/// above it can only be a provider's error, and the bound keeps every cost computed from it
/// (at most 4 × 10^9 tokens × the price per token) and every sum of such costs in the usage
/// rollup far from overflow: a day's rollup row would need billions of requests to reach
/// `i64::MAX` tokens.
pub const MAX_TOKENS_PER_REQUEST: u64 = 1_000_000_000;

/// `tokens` with each count clamped to [`MAX_TOKENS_PER_REQUEST`].
pub fn clamp(tokens: Tokens) -> Tokens {
    let c = |n: u64| n.min(MAX_TOKENS_PER_REQUEST);
    Tokens {
        input: c(tokens.input),
        output: c(tokens.output),
        cache_read: c(tokens.cache_read),
        cache_write: c(tokens.cache_write),
    }
}

/// What has been observed of a response so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Usage as the provider reported it, once it has.
    pub reported: Option<Tokens>,
    /// `reported` is an interim report that a later one is expected to replace (Anthropic's
    /// `message_start`, an OpenAI chunk with its choices still open, a Gemini chunk before its
    /// `finishReason`): its output count may lag what has streamed.
    pub partial: bool,
    /// Stream events that carried generated content.
    pub content_events: u64,
    /// Characters of generated content.
    pub content_chars: u64,
}

impl Observed {
    /// A floor of the output tokens seen streaming, whatever was reported (a token is at
    /// least one content event's worth and at most about four characters).
    pub fn streamed_output_tokens(&self) -> u64 {
        self.content_events
            .max(self.content_chars.div_ceil(4))
            .min(MAX_TOKENS_PER_REQUEST)
    }

    /// Output tokens generated so far: a final report as reported; otherwise the larger of
    /// the interim report (if any) and the floor from what streamed.
    pub fn output_tokens_so_far(&self) -> u64 {
        match self.reported {
            Some(tokens) if !self.partial => tokens.output,
            Some(tokens) => tokens.output.max(self.streamed_output_tokens()),
            None => self.streamed_output_tokens(),
        }
    }

    /// Whether the provider's usage report is complete: reported, and not interim.
    pub fn has_final_report(&self) -> bool {
        self.reported.is_some() && !self.partial
    }
}

pub use super::document::Document;

/// Reads `bytes` as a response document: `None` for bytes that are not a JSON object.
pub fn read(bytes: &[u8]) -> Option<Document> {
    Document::read(bytes)
}

/// Applies one document's usage and content to what was observed so far.
pub fn apply(provider: Kind, document: &Document, observed: &mut Observed) {
    match provider {
        Kind::Openai | Kind::AzureOpenai => openai(document, observed),
        Kind::Anthropic => anthropic(document, observed),
        Kind::Gemini => gemini(document, observed),
    }
}

/// Whether `document` is OpenAI's usage-only chunk: no choices, a usage object (the one the
/// gateway asked for with `include_usage` when the client did not).
pub fn is_usage_only_chunk(document: &Document) -> bool {
    document.choices.array && document.choices.len == 0 && document.usage.0.is_some()
}

fn openai(document: &Document, observed: &mut Observed) {
    let usage = document
        .usage
        .0
        .as_deref()
        .or_else(|| document.response.usage());
    if let Some(usage) = usage {
        openai_usage(usage, observed);
        // Usage beside choices that are all still open is a running count (e.g. vLLM's
        // `continuous_usage_stats`); the usage-only chunk, a finished choice or a Responses
        // API event carries the final one.
        observed.partial = document.choices.all_open();
    }
    let mut chars = document.choices.chars;
    if document.kind == Type::OutputTextDelta {
        chars += document.delta.text;
    }
    if chars > 0 {
        observed.content_events += 1;
        observed.content_chars += chars;
    }
}

/// OpenAI's `usage` object (chat, completions, Responses API), as a final report.
pub fn openai_usage(usage: &Usage, observed: &mut Observed) {
    if usage.garbled() {
        return;
    }
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
    observed.reported = Some(clamp(Tokens {
        input: prompt - cached,
        cache_read: cached,
        output: completion,
        cache_write: 0,
    }));
    observed.partial = false;
}

fn anthropic(document: &Document, observed: &mut Observed) {
    let usage = match document.kind {
        Type::MessageStart => document.message.usage(),
        Type::MessageDelta | Type::Message => document.usage.0.as_deref(),
        Type::ContentBlockDelta => {
            observed.content_events += 1;
            observed.content_chars += document.delta.content;
            None
        }
        Type::OutputTextDelta | Type::Other => None,
    };
    if let Some(usage) = usage {
        anthropic_usage(usage, document.kind != Type::MessageStart, observed);
    }
}

/// Anthropic's `usage` object: each count present replaces the one seen before (cumulative).
/// `fin`: from `message_delta` or a whole `message` (final), not `message_start` (whose
/// `output_tokens` is a placeholder, before any output exists).
pub fn anthropic_usage(usage: &Usage, fin: bool, observed: &mut Observed) {
    if usage.garbled() {
        return;
    }
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
    observed.reported = Some(clamp(tokens));
    observed.partial = !fin;
}

fn gemini(document: &Document, observed: &mut Observed) {
    if let Some(usage) = document.usage_metadata.0.as_deref() {
        gemini_usage(usage, observed);
        // Every chunk repeats a running count; the one beside a `finishReason` is final.
        observed.partial = !document.candidates.finished;
    }
    if document.candidates.chars > 0 {
        observed.content_events += 1;
        observed.content_chars += document.candidates.chars;
    }
}

/// Gemini's `usageMetadata` object, as a final report.
pub fn gemini_usage(usage: &Usage, observed: &mut Observed) {
    if usage.garbled() {
        return;
    }
    let prompt = usage
        .prompt_token_count
        .get()
        .unwrap_or(0)
        .saturating_add(usage.tool_use_prompt_token_count.get().unwrap_or(0));
    let cached = usage
        .cached_content_token_count
        .get()
        .unwrap_or(0)
        .min(prompt);
    let output = usage
        .candidates_token_count
        .get()
        .unwrap_or(0)
        .saturating_add(usage.thoughts_token_count.get().unwrap_or(0));
    observed.reported = Some(clamp(Tokens {
        input: prompt - cached,
        cache_read: cached,
        output,
        cache_write: 0,
    }));
    observed.partial = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// `apply` on the document `value` written out, as the observer reads it from a stream.
    fn apply_json(provider: Kind, value: &Value, observed: &mut Observed) {
        let bytes = serde_json::to_vec(value).expect("json");
        if let Some(document) = Document::read(&bytes) {
            apply(provider, &document, observed);
        }
    }

    #[test]
    fn a_garbled_usage_report_is_not_believed() {
        for (provider, document) in [
            (
                Kind::Openai,
                json!({"usage": {"prompt_tokens": 10, "completion_tokens": "12"}}),
            ),
            (
                Kind::Openai,
                json!({"usage": {"prompt_tokens": -7, "completion_tokens": 3}}),
            ),
            (
                Kind::Anthropic,
                json!({"type": "message_delta", "usage": {"output_tokens": [1]}}),
            ),
            (
                Kind::Gemini,
                json!({"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": true},
                       "candidates": [{"finishReason": "STOP"}]}),
            ),
        ] {
            let mut observed = Observed::default();
            apply_json(provider, &document, &mut observed);
            assert_eq!(observed.reported, None, "{document}");
            assert!(
                !observed.has_final_report(),
                "billed as estimated: {document}"
            );
        }
        let mut observed = Observed::default();
        apply_json(
            Kind::Openai,
            &json!({"usage": {"prompt_tokens": 1e20, "completion_tokens": 2.5}}),
            &mut observed,
        );
        assert_eq!(
            observed.reported.map(|t| (t.input, t.output)),
            Some((MAX_TOKENS_PER_REQUEST, 3)),
            "numbers out of range are capped, fractions rounded up"
        );
    }

    fn check(provider: Kind, documents: &[Value], expected: Tokens) {
        let mut observed = Observed::default();
        for document in documents {
            apply_json(provider, document, &mut observed);
        }
        assert_eq!(observed.reported, Some(expected), "{provider}");
    }

    #[test]
    fn openai_cached_tokens_are_part_of_the_prompt() {
        check(
            Kind::Openai,
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
            Kind::Openai,
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
            Kind::Anthropic,
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
            Kind::Gemini,
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
            apply_json(
                Kind::Openai,
                &json!({"choices": [{"delta": {"content": "hello world"}}]}),
                &mut observed,
            );
        }
        assert_eq!(observed.reported, None);
        assert_eq!(
            observed.output_tokens_so_far(),
            9,
            "33 characters ≈ 9 tokens, at least 3 events"
        );
    }

    #[test]
    fn anthropic_message_start_is_interim_until_message_delta() {
        let mut observed = Observed::default();
        apply_json(
            Kind::Anthropic,
            &json!({"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}}),
            &mut observed,
        );
        for _ in 0..200 {
            apply_json(
                Kind::Anthropic,
                &json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "ab"}}),
                &mut observed,
            );
        }
        assert!(observed.partial);
        assert!(!observed.has_final_report());
        assert_eq!(
            observed.output_tokens_so_far(),
            200,
            "the placeholder output of 1 does not hide 200 deltas"
        );
        apply_json(
            Kind::Anthropic,
            &json!({"type": "message_delta", "usage": {"output_tokens": 201}}),
            &mut observed,
        );
        assert!(observed.has_final_report());
        assert_eq!(observed.output_tokens_so_far(), 201);
        assert_eq!(observed.reported.map(|t| t.input), Some(10));
    }

    #[test]
    fn running_usage_of_openai_and_gemini_is_interim() {
        let mut observed = Observed::default();
        apply_json(
            Kind::Openai,
            &json!({"choices": [{"delta": {"content": "hi"}, "finish_reason": null}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}),
            &mut observed,
        );
        assert!(
            observed.partial,
            "usage beside an open choice is a running count"
        );
        apply_json(
            Kind::Openai,
            &json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}}),
            &mut observed,
        );
        assert!(observed.has_final_report(), "the usage-only chunk is final");
        let mut observed = Observed::default();
        apply_json(
            Kind::Openai,
            &json!({"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 9}}),
            &mut observed,
        );
        assert!(observed.has_final_report(), "beside a finished choice");

        let mut observed = Observed::default();
        apply_json(
            Kind::Gemini,
            &json!({"candidates": [{"content": {"parts": [{"text": "abcdefgh"}]}}], "usageMetadata": {"promptTokenCount": 4}}),
            &mut observed,
        );
        assert!(observed.partial);
        assert_eq!(
            observed.output_tokens_so_far(),
            2,
            "8 characters, no count yet"
        );
        apply_json(
            Kind::Gemini,
            &json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1}}),
            &mut observed,
        );
        assert!(observed.has_final_report());
        assert_eq!(
            observed.output_tokens_so_far(),
            1,
            "a final count is taken as it is"
        );
    }

    #[test]
    fn huge_counts_saturate_and_are_clamped() {
        let max = u64::MAX;
        check(
            Kind::Gemini,
            &[
                json!({"usageMetadata": {"promptTokenCount": max, "toolUsePromptTokenCount": 2, "candidatesTokenCount": max, "thoughtsTokenCount": 3}}),
            ],
            Tokens {
                input: MAX_TOKENS_PER_REQUEST,
                output: MAX_TOKENS_PER_REQUEST,
                ..Default::default()
            },
        );
        check(
            Kind::Openai,
            &[
                json!({"usage": {"prompt_tokens": 10, "completion_tokens": 9_000_000_000_000_000_000_u64}}),
            ],
            Tokens {
                input: 10,
                output: MAX_TOKENS_PER_REQUEST,
                ..Default::default()
            },
        );
        check(
            Kind::Anthropic,
            &[
                json!({"type": "message", "usage": {"input_tokens": max, "output_tokens": 3, "cache_read_input_tokens": max, "cache_creation_input_tokens": 1}}),
            ],
            Tokens {
                input: MAX_TOKENS_PER_REQUEST,
                output: 3,
                cache_read: MAX_TOKENS_PER_REQUEST,
                cache_write: 1,
            },
        );
    }
}
