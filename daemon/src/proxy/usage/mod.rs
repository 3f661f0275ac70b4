//! Metering a response as it streams: which format it is, and an observer that reads usage
//! from it without changing a byte (except, when the gateway asked OpenAI for a usage chunk
//! the client did not want, removing exactly that chunk).

#[macro_use]
mod fields;
mod document;
pub(crate) mod extract;
pub(crate) mod json_array;
pub(crate) mod reference;
pub(crate) mod sse;

use std::sync::LazyLock;

use crate::config::Kind as ProviderKind;
use bytes::Bytes;
use memchr::memmem::Finder;
use serde_json::Value;

use document::{Body, Document};
pub use extract::{MAX_TOKENS_PER_REQUEST, Observed, clamp};
use fields::Type;
use json_array::JsonArraySplitter;
use sse::SseParser;

/// Largest non-streaming body read for usage; beyond it the cost is estimated.
const MAX_JSON_BODY: usize = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Sse,
    /// Gemini `:streamGenerateContent` without `alt=sse`.
    JsonArray,
    /// One JSON document.
    Json,
    /// A body in a content coding (gzip, br, …): passed on untouched, not read.
    Encoded,
}

impl Format {
    pub fn of(provider: ProviderKind, path: &str, headers: &http::HeaderMap) -> Format {
        if super::headers::is_encoded(headers) {
            return Format::Encoded;
        }
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("text/event-stream") {
            Format::Sse
        } else if provider == ProviderKind::Gemini && path.contains(":streamGenerateContent") {
            Format::JsonArray
        } else {
            Format::Json
        }
    }
}

pub struct UsageObserver {
    provider: ProviderKind,
    format: Format,
    sse: SseParser,
    array: JsonArraySplitter,
    json: Vec<Bytes>,
    json_len: usize,
    /// The JSON body outgrew [`MAX_JSON_BODY`]: nothing more is kept and none of it parsed
    /// (the pieces kept would not be the body, only a splice of it).
    json_too_large: bool,
    /// Drop OpenAI's usage-only chunk (the gateway injected `include_usage`).
    strip_usage_chunk: bool,
    pub observed: Observed,
}

impl UsageObserver {
    pub fn new(provider: ProviderKind, format: Format, strip_usage_chunk: bool) -> Self {
        let strip = strip_usage_chunk && format == Format::Sse;
        Self {
            provider,
            format,
            sse: SseParser::new(strip),
            array: JsonArraySplitter::default(),
            json: Vec::new(),
            json_len: 0,
            json_too_large: false,
            strip_usage_chunk: strip,
            observed: Observed::default(),
        }
    }

    /// Observes one chunk and returns what the client receives: the chunk itself, or, when
    /// stripping, the complete SSE blocks in it minus the usage chunk (an unfinished block is
    /// held until it completes: a client cannot use half an event).
    pub fn observe(&mut self, chunk: Bytes) -> Bytes {
        match self.format {
            Format::Sse => {
                let (provider, observed) = (self.provider, &mut self.observed);
                if !self.strip_usage_chunk {
                    self.sse.feed(&chunk, &mut |event, _| {
                        if let Some(event) = event {
                            observe_event(provider, observed, event);
                        }
                    });
                    return chunk;
                }
                // Until a block is dropped, the blocks kept are the chunk's first `kept` bytes
                // (unless bytes of an earlier chunk were held: then they are copied from the
                // start): the common case, nothing dropped, costs no copy.
                let mut copied = self.sse.has_pending_raw().then(Vec::new);
                let mut kept = 0;
                self.sse.feed(&chunk, &mut |event, raw| {
                    let drop = event.is_some_and(|event| observe_event(provider, observed, event));
                    match (&mut copied, drop) {
                        (Some(out), false) => out.extend_from_slice(raw),
                        (Some(_), true) => {}
                        (None, false) => kept += raw.len(),
                        (None, true) => copied = Some(chunk[..kept].to_vec()),
                    }
                });
                match copied {
                    Some(out) => Bytes::from(out),
                    // Whole blocks, all kept: the chunk itself (or its start, when a block is
                    // still unfinished), not a copy.
                    None => chunk.slice(..kept),
                }
            }
            Format::JsonArray => {
                let mut elements = Vec::new();
                self.array.feed(&chunk, &mut elements);
                for element in elements {
                    if let Some(document) = Document::read(&element) {
                        extract::apply(self.provider, &document, &mut self.observed);
                    }
                }
                chunk
            }
            Format::Json => {
                if self.json_too_large {
                    return chunk;
                }
                if self.json_len + chunk.len() <= MAX_JSON_BODY {
                    self.json_len += chunk.len();
                    self.json.push(chunk.clone());
                } else {
                    // Over the cap: the cost is estimated. Skipping just this chunk and
                    // keeping later ones would parse a body with a hole in it.
                    self.json_too_large = true;
                    self.json = Vec::new();
                }
                chunk
            }
            Format::Encoded => chunk,
        }
    }

    /// What a stream cut at its reservation ends with, so that a client (and an SDK) can tell
    /// the cut from a complete answer: an SSE error event in the provider's own error event
    /// shape, carrying the SPEC's error body. After two line breaks, which end any event in
    /// progress (blank lines between events are allowed). `None` where no event can be added
    /// (a JSON array stream): the caller ends the body with an error instead.
    pub fn cut_notice(&self, message: &str) -> Option<Bytes> {
        if self.format != Format::Sse {
            return None;
        }
        let error = serde_json::json!({
            "type": "gateway_error",
            "code": gateway_shared::ErrorCode::SpendLimitExceeded.as_str(),
            "message": message,
        });
        let event = match self.provider {
            // Anthropic's SDKs raise on an `error` event.
            ProviderKind::Anthropic => format!(
                "\n\nevent: error\ndata: {}\n\n",
                serde_json::json!({"type": "error", "error": error})
            ),
            // OpenAI's SDKs raise on an event whose data has an `error` member.
            ProviderKind::Openai | ProviderKind::AzureOpenai | ProviderKind::Gemini => {
                format!("\n\ndata: {}\n\n", serde_json::json!({ "error": error }))
            }
        };
        Some(Bytes::from(event))
    }

    /// Whether what the client receives can differ from what the provider sent.
    pub fn may_change_bytes(&self) -> bool {
        self.strip_usage_chunk
    }

    /// The body ended: parses a buffered JSON body; returns bytes still held back.
    pub fn finish(&mut self) -> Bytes {
        if self.format == Format::Json && !self.json.is_empty() {
            // Usually one chunk: read in place, copied only when it came in pieces.
            let whole = match self.json.as_slice() {
                [one] => one.clone(),
                pieces => Bytes::from(pieces.concat()),
            };
            self.json.clear();
            // Only an object is a document (serde's derive would read an array by position).
            if let Some(body) = Body::read(&whole) {
                apply_body(self.provider, &body, &mut self.observed);
            }
            if self.observed.reported.is_none() {
                // A server that reports no usage (some OpenAI-compatible ones never do): the
                // answer's text is what its estimate counts (SPEC §10).
                let chars = unreported_content_chars(self.provider, &whole);
                self.observed.content_chars += chars;
                self.observed.content_events += u64::from(chars > 0);
            }
        }
        if self.strip_usage_chunk {
            Bytes::from(self.sse.take_pending_raw())
        } else {
            Bytes::new()
        }
    }
}

/// Characters of generated text in a whole JSON answer that reported no usage, so that its
/// estimate bills the output too: OpenAI's `choices[].message.content` and `choices[].text`,
/// Anthropic's `content[].text`, Gemini's `candidates[].content.parts[].text`. Runs only when
/// usage is missing: the built-in providers always report it, but a configured server of any
/// kind (an Anthropic- or Gemini-compatible one too) may not (SPEC §10).
fn unreported_content_chars(provider: ProviderKind, body: &[u8]) -> u64 {
    let Ok(document) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map_or(0, |s| s.chars().count());
    let chars: usize = match provider {
        ProviderKind::Openai | ProviderKind::AzureOpenai => array(document.get("choices"))
            .iter()
            .map(|c| text(c.get("message").and_then(|m| m.get("content"))) + text(c.get("text")))
            .sum(),
        ProviderKind::Anthropic => array(document.get("content"))
            .iter()
            .map(|block| text(block.get("text")))
            .sum(),
        ProviderKind::Gemini => array(document.get("candidates"))
            .iter()
            .flat_map(|c| array(c.get("content").and_then(|content| content.get("parts"))))
            .map(|part| text(part.get("text")))
            .sum(),
    };
    chars as u64
}

/// The elements of an array, none for anything else.
fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The strings that say an event may carry usage, each with its searcher built once:
/// `memmem::find` builds one per call, which callgrind counted at ~2.2k instructions a
/// 7-event stream (issue #19).
struct Markers {
    usage: Finder<'static>,
    response_completed: Finder<'static>,
    message_start: Finder<'static>,
    message_delta: Finder<'static>,
    usage_metadata: Finder<'static>,
    content_block_delta: Finder<'static>,
}

static MARKERS: LazyLock<Markers> = LazyLock::new(|| Markers {
    usage: Finder::new(b"\"usage\""),
    response_completed: Finder::new(b"\"response.completed\""),
    message_start: Finder::new(b"\"message_start\""),
    message_delta: Finder::new(b"\"message_delta\""),
    usage_metadata: Finder::new(b"\"usageMetadata\""),
    content_block_delta: Finder::new(b"\"content_block_delta\""),
});

/// Reads usage from one SSE event. Only events that can carry usage are parsed (the rest
/// are counted, which is what an estimate needs: for Anthropic only its content deltas, so
/// that framing events such as `content_block_start`, `ping` or `message_stop` do not count
/// as tokens); returns whether the event is OpenAI's usage-only chunk.
fn observe_event(provider: ProviderKind, observed: &mut Observed, event: &sse::Event<'_>) -> bool {
    let data = event.data;
    if data.is_empty() || data == b"[DONE]" {
        return false;
    }
    let has = |marker: &Finder<'_>| marker.find(data).is_some();
    let relevant = match provider {
        ProviderKind::Openai | ProviderKind::AzureOpenai => {
            has(&MARKERS.usage) || has(&MARKERS.response_completed)
        }
        ProviderKind::Anthropic => {
            matches!(event.name, b"message_start" | b"message_delta")
                || has(&MARKERS.message_start)
                || has(&MARKERS.message_delta)
        }
        ProviderKind::Gemini => has(&MARKERS.usage_metadata),
    };
    if !relevant {
        let content = provider != ProviderKind::Anthropic
            || event.name == b"content_block_delta"
            || (event.name.is_empty() && has(&MARKERS.content_block_delta));
        observed.content_events += u64::from(content);
        return false;
    }
    let Some(document) = Document::read(data) else {
        return false;
    };
    extract::apply(provider, &document, observed);
    provider.is_openai_format() && extract::is_usage_only_chunk(&document)
}

/// What a whole (non-streamed) response body is billed from: its usage report, as final.
/// Unlike a stream event's, a body's choices say nothing about a running count, and its
/// content is counted only when no usage came ([`unreported_content_chars`]).
fn apply_body(provider: ProviderKind, document: &Body, observed: &mut Observed) {
    match provider {
        ProviderKind::Openai | ProviderKind::AzureOpenai => {
            if let Some(usage) = document
                .usage
                .0
                .as_deref()
                .or_else(|| document.response.usage())
            {
                extract::openai_usage(usage, observed);
            }
        }
        ProviderKind::Anthropic => {
            let usage = match document.kind {
                Type::MessageStart => document.message.usage(),
                Type::MessageDelta | Type::Message => document.usage.0.as_deref(),
                Type::ContentBlockDelta => {
                    observed.content_events += 1;
                    None
                }
                Type::OutputTextDelta | Type::Other => None,
            };
            if let Some(usage) = usage {
                extract::anthropic_usage(usage, document.kind != Type::MessageStart, observed);
            }
        }
        ProviderKind::Gemini => {
            if let Some(usage) = document.usage_metadata.0.as_deref() {
                extract::gemini_usage(usage, observed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
