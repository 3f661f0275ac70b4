//! The document-level reading of usage that [`super::document`] replaced on the request
//! path: each document parsed into a `serde_json::Value`, then looked up. It is the plainest
//! statement of what the gateway reads from a response, so it is kept as the oracle the typed
//! reading is checked against (`fuzzing::usage` on every SSE event and JSON body of its
//! corpus, and the observer's tests). Nothing on a request path calls it.

use serde::Deserialize;
use serde_json::Value;

use super::extract::{self, Observed};
use super::fields::{Object, Usage};
use crate::config::Kind;

/// What the gateway reads from `document`, a response document of `provider`'s.
pub fn apply(provider: Kind, document: &Value, observed: &mut Observed) {
    match provider {
        Kind::Openai | Kind::AzureOpenai => openai(document, observed),
        Kind::Anthropic => anthropic(document, observed),
        Kind::Gemini => gemini(document, observed),
    }
}

/// OpenAI's usage-only chunk: no choices, a usage object.
pub fn is_usage_only_chunk(document: &Value) -> bool {
    document
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && document.get("usage").is_some_and(Value::is_object)
}

/// The usage object at `value`, when it is one.
fn usage_of(value: Option<&Value>) -> Option<Usage> {
    let value = value.filter(|v| v.is_object())?;
    Object::<Usage>::deserialize(value)
        .ok()
        .and_then(|usage| usage.0)
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
    let usage = usage_of(document.get("usage"))
        .or_else(|| usage_of(document.get("response").and_then(|r| r.get("usage"))));
    let choices = document.get("choices").and_then(Value::as_array);
    if let Some(usage) = usage {
        extract::openai_usage(&usage, observed);
        // Usage beside choices that are all still open is a running count (e.g. vLLM's
        // `continuous_usage_stats`); the usage-only chunk, a finished choice or a Responses
        // API event carries the final one.
        observed.partial = choices.is_some_and(|choices| {
            !choices.is_empty()
                && choices
                    .iter()
                    .all(|c| c.get("finish_reason").is_none_or(Value::is_null))
        });
    }
    let mut chars = 0;
    if let Some(choices) = choices {
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

fn anthropic(document: &Value, observed: &mut Observed) {
    let mut fin = true;
    let usage = match document.get("type").and_then(Value::as_str) {
        Some("message_start") => {
            fin = false;
            document.at_path(&["message", "usage"])
        }
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
    if let Some(usage) = usage_of(usage) {
        extract::anthropic_usage(&usage, fin, observed);
    }
}

fn gemini(document: &Value, observed: &mut Observed) {
    let candidates = document.get("candidates").and_then(Value::as_array);
    if let Some(usage) = usage_of(document.get("usageMetadata")) {
        extract::gemini_usage(&usage, observed);
        // Every chunk repeats a running count; the one beside a `finishReason` is final.
        observed.partial = !candidates.is_some_and(|candidates| {
            candidates
                .iter()
                .any(|c| c.get("finishReason").is_some_and(|r| !r.is_null()))
        });
    }
    let mut chars = 0;
    if let Some(candidates) = candidates {
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
