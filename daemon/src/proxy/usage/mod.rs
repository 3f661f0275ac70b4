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
mod tests {
    use super::*;
    use crate::spend::price::Tokens;

    #[test]
    fn a_cut_ends_with_an_error_event_in_the_providers_shape() {
        for (provider, event) in [
            (ProviderKind::Openai, None),
            (ProviderKind::Gemini, None),
            (ProviderKind::Anthropic, Some("error")),
        ] {
            let observer = UsageObserver::new(provider, Format::Sse, false);
            let notice = observer.cut_notice("cut").expect("an event");
            let text = std::str::from_utf8(&notice).expect("utf-8");
            assert!(
                text.starts_with("\n\n") && text.ends_with("\n\n"),
                "{text:?}"
            );
            let mut parser = SseParser::new(false);
            let mut seen = Vec::new();
            parser.feed(b"data: {\"partial", &mut |_, _| {});
            parser.feed(&notice, &mut |parsed, _| {
                if let Some(parsed) = parsed {
                    let name = String::from_utf8_lossy(parsed.name).into_owned();
                    seen.push(((!name.is_empty()).then_some(name), parsed.data.to_vec()));
                }
            });
            let (name, data) = seen.last().expect("the notice is an event").clone();
            assert_eq!(name.as_deref(), event, "{provider:?}");
            let data: Value = serde_json::from_slice(&data).expect("json");
            let error = &data["error"];
            assert_eq!(error["code"], "spend_limit_exceeded", "{data}");
            assert_eq!(error["message"], "cut");
        }
        let array = UsageObserver::new(ProviderKind::Gemini, Format::JsonArray, false);
        assert!(
            array.cut_notice("cut").is_none(),
            "no event fits a JSON array"
        );
    }

    const OPENAI_STREAM: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n\
        data: [DONE]\n\n";

    fn run(observer: &mut UsageObserver, text: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in text.chunks(chunk) {
            out.extend_from_slice(&observer.observe(Bytes::copy_from_slice(piece)));
        }
        out.extend_from_slice(&observer.finish());
        out
    }

    #[test]
    fn observing_never_changes_the_bytes() {
        for chunk in [1, 3, 7, 64, 4096] {
            let mut observer = UsageObserver::new(ProviderKind::Openai, Format::Sse, false);
            assert_eq!(
                run(&mut observer, OPENAI_STREAM.as_bytes(), chunk),
                OPENAI_STREAM.as_bytes()
            );
            assert_eq!(
                observer.observed.reported,
                Some(Tokens {
                    input: 9,
                    output: 2,
                    ..Default::default()
                })
            );
        }
    }

    #[test]
    fn the_injected_usage_chunk_and_only_it_is_stripped() {
        let expected = OPENAI_STREAM.replace(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\n",
            "",
        );
        for chunk in [1, 2, 5, 33, 4096] {
            let mut observer = UsageObserver::new(ProviderKind::Openai, Format::Sse, true);
            assert_eq!(
                String::from_utf8(run(&mut observer, OPENAI_STREAM.as_bytes(), chunk))
                    .expect("utf-8"),
                expected
            );
            assert_eq!(
                observer.observed.reported.map(|t| t.output),
                Some(2),
                "usage still metered"
            );
        }
    }

    /// A whole JSON body is read from its usage fields only; what it yields must be what the
    /// document-level extraction yields for the same body.
    #[test]
    fn a_json_body_yields_what_the_whole_document_does() {
        let bodies: &[(ProviderKind, &str)] = &[
            (
                ProviderKind::Openai,
                r#"{"id":"c","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1000,"completion_tokens":50,"prompt_tokens_details":{"cached_tokens":800}}}"#,
            ),
            (
                ProviderKind::Openai,
                r#"{"object":"response","output":[],"usage":{"input_tokens":30,"output_tokens":7,"input_tokens_details":{"cached_tokens":10}}}"#,
            ),
            (
                ProviderKind::Openai,
                r#"{"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":2}}}"#,
            ),
            (ProviderKind::Openai, r#"{"usage":null,"choices":[]}"#),
            (
                ProviderKind::Anthropic,
                r#"{"type":"message","content":[{"type":"text","text":"x"}],"usage":{"input_tokens":3,"output_tokens":4,"cache_read_input_tokens":5,"cache_creation_input_tokens":6}}"#,
            ),
            (
                ProviderKind::Anthropic,
                r#"{"type":"message_start","message":{"usage":{"input_tokens":9,"output_tokens":1}}}"#,
            ),
            (
                ProviderKind::Anthropic,
                r#"{"type":"content_block_delta","delta":{"text":"abc"}}"#,
            ),
            (
                ProviderKind::Anthropic,
                r#"{"type":"error","usage":{"input_tokens":9}}"#,
            ),
            (
                ProviderKind::Gemini,
                r#"{"candidates":[{"content":{"parts":[{"text":"hello"}]}}],"usageMetadata":{"promptTokenCount":10,"cachedContentTokenCount":4,"candidatesTokenCount":3,"thoughtsTokenCount":2,"toolUsePromptTokenCount":1}}"#,
            ),
            (ProviderKind::Gemini, r#"{"usageMetadata":"none"}"#),
        ];
        for (provider, body) in bodies {
            let mut observer = UsageObserver::new(*provider, Format::Json, false);
            run(&mut observer, body.as_bytes(), 7);
            let mut whole = Observed::default();
            let document: Value = serde_json::from_str(body).expect("test body");
            reference::apply(*provider, &document, &mut whole);
            assert_eq!(
                observer.observed.reported, whole.reported,
                "{provider} {body}"
            );
            if *provider == ProviderKind::Anthropic {
                // A JSON body carries no stream events to count but this one kind.
                assert_eq!(
                    observer.observed.content_events, whole.content_events,
                    "{body}"
                );
            }
        }
    }

    /// Found by the fuzz harness's differential (`fuzz/corpus/usage_observer/finding-array-body`):
    /// serde's derive also reads a struct from an array, by position, so the body
    /// `[{"prompt_tokens": 5}]` was billed as reporting usage no field of it names.
    #[test]
    fn a_json_body_that_is_not_an_object_reports_no_usage() {
        for body in [
            r#"[{"prompt_tokens":5,"completion_tokens":1}]"#,
            r#"[null, {"promptTokenCount": 5}]"#,
        ] {
            for provider in ProviderKind::ALL {
                let mut observer = UsageObserver::new(provider, Format::Json, false);
                run(&mut observer, body.as_bytes(), 4096);
                assert_eq!(observer.observed.reported, None, "{provider} {body}");
            }
        }
    }

    #[test]
    fn gemini_json_array_and_plain_json() {
        let array = br#"[{"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}}
,{"usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 8}}]"#;
        let mut observer = UsageObserver::new(ProviderKind::Gemini, Format::JsonArray, false);
        assert_eq!(run(&mut observer, array, 10), array.to_vec());
        assert_eq!(
            observer.observed.reported,
            Some(Tokens {
                input: 5,
                output: 8,
                ..Default::default()
            })
        );

        let body = br#"{"type": "message", "usage": {"input_tokens": 3, "output_tokens": 4}}"#;
        let mut observer = UsageObserver::new(ProviderKind::Anthropic, Format::Json, false);
        assert_eq!(run(&mut observer, body, 9), body.to_vec());
        assert_eq!(
            observer.observed.reported,
            Some(Tokens {
                input: 3,
                output: 4,
                ..Default::default()
            })
        );
    }

    /// A body past the cap is not read at all, not read with the chunk that crossed it left
    /// out: here the pieces around a skipped one would still parse, with usage in them.
    #[test]
    fn a_json_body_over_the_cap_is_not_parsed_from_what_was_kept() {
        let head =
            Bytes::from_static(br#"{"usage":{"prompt_tokens":5,"completion_tokens":3},"pad":""#);
        let pad = Bytes::from(vec![b'x'; MAX_JSON_BODY]);
        let tail = Bytes::from_static(br#""}"#);
        let mut observer = UsageObserver::new(ProviderKind::Openai, Format::Json, false);
        for chunk in [head.clone(), pad, tail.clone()] {
            assert_eq!(observer.observe(chunk.clone()), chunk, "passed on as it is");
        }
        assert!(observer.finish().is_empty());
        assert_eq!(observer.observed.reported, None, "left to the estimate");

        // Under the cap the same pieces are read.
        let mut observer = UsageObserver::new(ProviderKind::Openai, Format::Json, false);
        for chunk in [head, Bytes::from_static(b"xx"), tail] {
            observer.observe(chunk);
        }
        observer.finish();
        assert_eq!(
            observer.observed.reported.map(|t| (t.input, t.output)),
            Some((5, 3))
        );
    }

    /// Anthropic's stream as the gateway sees it when the client leaves after the content:
    /// `message_start` (input 10, a placeholder output of 1), 200 deltas, no `message_delta`.
    fn anthropic_stream(deltas: usize, with_message_delta: bool) -> String {
        let mut text = String::from(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n\
             event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0}\n\n\
             event: ping\ndata: {\"type\":\"ping\"}\n\n",
        );
        for i in 0..deltas {
            text.push_str(&format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"part{i} \"}}}}\n\n"
            ));
        }
        text.push_str(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        if with_message_delta {
            text.push_str(&format!(
                "event: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":{}}}}}\n\n\
                 event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
                deltas + 1
            ));
        }
        text
    }

    #[test]
    fn an_anthropic_stream_cut_before_message_delta_counts_its_deltas() {
        for chunk in [1, 17, 4096] {
            let mut observer = UsageObserver::new(ProviderKind::Anthropic, Format::Sse, false);
            run(
                &mut observer,
                anthropic_stream(200, false).as_bytes(),
                chunk,
            );
            let observed = observer.observed;
            assert_eq!(
                observed.reported.map(|t| (t.input, t.output)),
                Some((10, 1))
            );
            assert!(observed.partial, "message_start's usage is not final");
            assert_eq!(
                observed.content_events, 200,
                "deltas only: start, ping and stop carry no tokens"
            );
            assert_eq!(observed.output_tokens_so_far(), 200);

            let mut observer = UsageObserver::new(ProviderKind::Anthropic, Format::Sse, false);
            run(&mut observer, anthropic_stream(200, true).as_bytes(), chunk);
            assert!(observer.observed.has_final_report());
            assert_eq!(observer.observed.output_tokens_so_far(), 201);
        }
        // Without `event:` lines the type in the data still identifies the deltas.
        let nameless = anthropic_stream(5, false).replace("event: ", ": ");
        let mut observer = UsageObserver::new(ProviderKind::Anthropic, Format::Sse, false);
        run(&mut observer, nameless.as_bytes(), 64);
        assert_eq!(observer.observed.content_events, 5);
        assert!(observer.observed.partial);
    }

    /// SPEC §10: an OpenAI-compatible server that reports no usage leaves the answer's text
    /// for the estimate, never nothing.
    #[test]
    fn a_json_answer_without_usage_leaves_its_text_for_the_estimate() {
        let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the mock."}}]}"#;
        let mut observer = UsageObserver::new(ProviderKind::Openai, Format::Json, false);
        observer.observe(Bytes::from(body));
        observer.finish();
        assert_eq!(observer.observed.reported, None);
        assert_eq!(observer.observed.content_chars, 20);
        assert_eq!(observer.observed.output_tokens_so_far(), 5);
        // With usage, usage it is, and nothing is counted beside it.
        let body = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let mut observer = UsageObserver::new(ProviderKind::Openai, Format::Json, false);
        observer.observe(Bytes::from(body));
        observer.finish();
        assert_eq!(observer.observed.content_chars, 0);
        assert_eq!(observer.observed.output_tokens_so_far(), 4);
    }

    /// An Anthropic- or Gemini-compatible configured server that reports no usage: its
    /// answer's text is counted too, so the output is billed, not only the input.
    #[test]
    fn an_anthropic_or_gemini_answer_without_usage_leaves_its_text_for_the_estimate() {
        for (kind, body) in [
            (
                ProviderKind::Anthropic,
                r#"{"type":"message","role":"assistant","content":[{"type":"text","text":"Hello from the mock."}]}"#,
            ),
            (
                ProviderKind::Gemini,
                r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello from "},{"text":"the mock."}]}}]}"#,
            ),
        ] {
            let mut observer = UsageObserver::new(kind, Format::Json, false);
            observer.observe(Bytes::from(body));
            observer.finish();
            assert_eq!(observer.observed.reported, None, "{kind}");
            assert_eq!(observer.observed.content_chars, 20, "{kind}");
            assert_eq!(observer.observed.output_tokens_so_far(), 5, "{kind}");
        }
    }
}
