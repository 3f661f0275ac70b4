//! One response document (a stream event, an element of Gemini's JSON array, a whole body)
//! read straight into what metering takes from it, in one pass over its bytes.
//!
//! Why not a `serde_json::Value`: every usage event of every stream was parsed into one (a map
//! and a `String` per key, then dropped), which callgrind counted at about a tenth of
//! gatewayd's work on a streamed request (issue #19). Here the parser meets each value once:
//! the fields metering reads become counts (the characters of a text, whether a choice is
//! finished), everything else is skipped in place and nothing is allocated.
//!
//! It reads what the document-level reading read, exactly, wherever that reading could parse
//! the document: each type below is lenient (a value of another JSON type reads as absent,
//! never as an error), and a key named twice reads as its last occurrence, as in a `Value`.
//! `fuzzing::usage` checks the two against each other on every SSE event and JSON body of its
//! corpus. Where a `Value` could not be built, it reads more: a value metering does not read
//! is skipped unchecked (a lone surrogate escape, bytes that are not UTF-8, a number beyond
//! `f64`, deep nesting), as the whole-body reading always skipped them. So a provider's usage
//! event with such a value in, say, its `id` is metered as reported (and, when the gateway
//! asked for it, the usage-only chunk is still taken out) rather than dropped unread.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::fields::{Nested, Object, Type, Usage};

last_wins_struct! {
    /// The members of a response document that metering reads, for any of the providers
    /// (a provider's document carries only its own; the rest stay absent).
    pub struct Document {
        /// OpenAI's and Anthropic's usage (`message_delta`, a whole message). Usage objects
        /// are boxed: a few hundred bytes each, four of them would make every document a
        /// kilobyte and a half to move, for one usage object a stream.
        pub usage: Object<Box<Usage>> = "usage",
        /// Gemini's usage.
        pub usage_metadata: Object<Box<Usage>> = "usageMetadata",
        pub kind: Type = "type",
        /// Anthropic's `message_start` carries its usage in `message`.
        pub message: Object<Nested> = "message",
        /// OpenAI Responses' `response.completed` carries its usage in `response`.
        pub response: Object<Nested> = "response",
        /// OpenAI's chat and completion chunks.
        pub choices: Choices = "choices",
        /// OpenAI Responses' text delta (a string) or Anthropic's content delta (an object).
        pub delta: Delta = "delta",
        /// Gemini's candidates.
        pub candidates: Candidates = "candidates",
    }
}

last_wins_struct! {
    /// The members of a whole (non-streamed) response body that metering reads: its usage
    /// and the type that says which usage it is. Its choices or candidates are skipped, not
    /// summed: a body's usage is read as final whatever they say, and its text is counted only
    /// when no usage came (`unreported_content_chars`).
    pub struct Body {
        pub usage: Object<Box<Usage>> = "usage",
        pub usage_metadata: Object<Box<Usage>> = "usageMetadata",
        pub kind: Type = "type",
        pub message: Object<Nested> = "message",
        pub response: Object<Nested> = "response",
    }
}

impl Document {
    /// Reads `bytes` as a document: `None` for bytes that are not JSON or not an object.
    pub fn read(bytes: &[u8]) -> Option<Document> {
        read(bytes)
    }
}

impl Body {
    /// Reads `bytes` as a body: `None` for bytes that are not JSON or not an object.
    pub fn read(bytes: &[u8]) -> Option<Body> {
        read(bytes)
    }
}

/// `bytes` read as a `T`, when they are a JSON object.
fn read<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    // Checked as UTF-8 once, whole (a word at a time), the parser need not check each string
    // it reads again (callgrind: ~1k instructions a JSON body). Bytes that are not UTF-8 are
    // still read, as before, for the values metering reads.
    let read = match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str::<Object<T>>(text),
        Err(_) => serde_json::from_slice::<Object<T>>(bytes),
    };
    read.ok().and_then(|object| object.0)
}

/// Defines a lenient type's `Deserialize`: any JSON value is read through `$visitor`, whose
/// `visit_*` methods for the values it does not read return the type's default.
macro_rules! deserialize_any_with {
    ($name:ident, $visitor:expr) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any($visitor)
            }
        }
    };
}

/// A JSON array of objects read into a running summary, item by item (`Choices`,
/// `Candidates`, `Parts`): an item that is an object is read as `Item`, any other as `None`;
/// a value that is no array is the empty summary.
trait ArraySummary: Default {
    type Item: serde::de::DeserializeOwned;

    /// The summary of an empty array (which may differ from no array at all).
    fn array() -> Self {
        Self::default()
    }

    fn add(&mut self, item: Option<Self::Item>);
}

struct SummaryVisitor<S>(std::marker::PhantomData<S>);

impl<'de, S: ArraySummary> Visitor<'de> for SummaryVisitor<S> {
    type Value = S;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<S, A::Error> {
        let mut summary = S::array();
        while let Some(Object(item)) = seq.next_element::<Object<S::Item>>()? {
            summary.add(item);
        }
        Ok(summary)
    }

    absent_otherwise!(S::default(); null, bool, u64, i64, f64, str, map);
}

/// The length of a string in characters; any other value is no text (0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Text(pub u64);

deserialize_any_with!(Text, TextVisitor);

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a text")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text, E> {
        Ok(Text(text.chars().count() as u64))
    }

    absent_otherwise!(Text(0); null, bool, u64, i64, f64, seq, map);
}

/// Whether a value is there and not `null` (a `finish_reason`, a `finishReason`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Set(pub bool);

deserialize_any_with!(Set, SetVisitor);

struct SetVisitor;

impl<'de> Visitor<'de> for SetVisitor {
    type Value = Set;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Set, E> {
        Ok(Set(false))
    }

    fn visit_none<E: de::Error>(self) -> Result<Set, E> {
        Ok(Set(false))
    }

    absent_otherwise!(Set(true); bool, u64, i64, f64, str, seq, map);
}

/// OpenAI's `choices`, summed up as they are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Choices {
    /// `choices` is an array (an empty one is the usage-only chunk's).
    pub array: bool,
    pub len: usize,
    /// Choices without a `finish_reason` (absent or `null`), and items that are not objects.
    pub open: usize,
    /// Characters of `delta.content` and `delta.reasoning_content` over all choices.
    pub chars: u64,
}

impl Choices {
    /// A non-empty array whose choices are all still open: usage beside it is a running count.
    pub fn all_open(&self) -> bool {
        self.len > 0 && self.open == self.len
    }
}

deserialize_any_with!(Choices, SummaryVisitor::<Choices>(std::marker::PhantomData));

impl ArraySummary for Choices {
    type Item = Choice;

    fn array() -> Self {
        Choices {
            array: true,
            ..Choices::default()
        }
    }

    fn add(&mut self, choice: Option<Choice>) {
        let choice = choice.unwrap_or_default();
        self.len += 1;
        self.open += usize::from(!choice.finish_reason.0);
        if let Some(delta) = choice.delta.0 {
            self.chars += delta.content.0 + delta.reasoning_content.0;
        }
    }
}

last_wins_struct! {
    struct Choice {
        finish_reason: Set = "finish_reason",
        delta: Object<ChoiceDelta> = "delta",
    }
}

last_wins_struct! {
    struct ChoiceDelta {
        content: Text = "content",
        reasoning_content: Text = "reasoning_content",
    }
}

/// A document's `delta`: a string's characters (OpenAI Responses' text delta), or an object's
/// text fields (Anthropic's content delta).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Characters when `delta` is a string.
    pub text: u64,
    /// Characters of `text`, `thinking` and `partial_json` when `delta` is an object.
    pub content: u64,
}

deserialize_any_with!(Delta, DeltaVisitor);

struct DeltaVisitor;

impl<'de> Visitor<'de> for DeltaVisitor {
    type Value = Delta;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a delta")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Delta, E> {
        Ok(Delta {
            text: TextVisitor.visit_str::<E>(text)?.0,
            content: 0,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Delta, A::Error> {
        let delta = ContentDelta::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Delta {
            text: 0,
            content: delta.text.0 + delta.thinking.0 + delta.partial_json.0,
        })
    }

    absent_otherwise!(Delta::default(); null, bool, u64, i64, f64, seq);
}

last_wins_struct! {
    struct ContentDelta {
        text: Text = "text",
        thinking: Text = "thinking",
        partial_json: Text = "partial_json",
    }
}

/// Gemini's `candidates`, summed up as they are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidates {
    /// Some candidate has a `finishReason`: usage beside it is final.
    pub finished: bool,
    /// Characters of `content.parts[].text` over all candidates.
    pub chars: u64,
}

deserialize_any_with!(
    Candidates,
    SummaryVisitor::<Candidates>(std::marker::PhantomData)
);

impl ArraySummary for Candidates {
    type Item = Candidate;

    fn add(&mut self, candidate: Option<Candidate>) {
        let Some(candidate) = candidate else { return };
        self.finished |= candidate.finish_reason.0;
        if let Some(content) = candidate.content.0 {
            self.chars += content.parts.0;
        }
    }
}

last_wins_struct! {
    struct Candidate {
        finish_reason: Set = "finishReason",
        content: Object<Content> = "content",
    }
}

last_wins_struct! {
    struct Content {
        parts: Parts = "parts",
    }
}

/// Characters of the `text` of each part (an array of objects; anything else is none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Parts(u64);

deserialize_any_with!(Parts, SummaryVisitor::<Parts>(std::marker::PhantomData));

impl ArraySummary for Parts {
    type Item = Part;

    fn add(&mut self, part: Option<Part>) {
        self.0 += part.map_or(0, |part| part.text.0);
    }
}

last_wins_struct! {
    struct Part {
        text: Text = "text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind as Provider;
    use crate::proxy::usage::{Format, UsageObserver};
    use bytes::Bytes;

    fn observe(
        provider: Provider,
        format: Format,
        strip: bool,
        bytes: &[u8],
    ) -> (Vec<u8>, Option<(u64, u64)>) {
        let mut observer = UsageObserver::new(provider, format, strip);
        let mut out = observer.observe(Bytes::copy_from_slice(bytes)).to_vec();
        out.extend_from_slice(&observer.finish());
        let reported = observer
            .observed
            .reported
            .map(|t| (t.input + t.cache_read, t.output));
        (out, reported)
    }

    /// Found by the review of the typed reading: a whole body's choices or candidates, which
    /// its billing never reads, must not be checked either, or one bad string in the answer's
    /// text (a cut-off emoji escape) loses the reported usage.
    #[test]
    fn a_bodys_unread_members_are_skipped_unchecked() {
        for (provider, body) in [
            (
                Provider::Gemini,
                &br#"{"candidates":[{"content":{"parts":[{"text":"a\ud83d"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5}}"#[..],
            ),
            (
                Provider::Gemini,
                b"{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\xff\"}]}}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":5}}",
            ),
            (
                Provider::Openai,
                br#"{"choices":[{"message":{"content":"hi"},"finish_reason":"\udc00"}],"usage":{"prompt_tokens":10,"completion_tokens":5}}"#,
            ),
            (
                Provider::Openai,
                br#"{"choices":[1e400],"usage":{"prompt_tokens":10,"completion_tokens":5}}"#,
            ),
            (
                Provider::Anthropic,
                br#"{"type":"message","delta":"\ud800","usage":{"input_tokens":10,"output_tokens":5}}"#,
            ),
        ] {
            let (out, reported) = observe(provider, Format::Json, false, body);
            assert_eq!(out, body, "passed on as it is");
            assert_eq!(
                reported,
                Some((10, 5)),
                "{provider} {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// A stream event with a value no `Value` could hold, in a member metering does not read:
    /// its usage is read, and the usage-only chunk the gateway asked for is still taken out.
    #[test]
    fn an_events_unread_members_are_skipped_unchecked() {
        let nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for odd in [r#""\ud800""#, "1e400", nested.as_str()] {
            let stream = format!(
                "data: {{\"id\":{odd},\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":4}}}}\n\ndata: [DONE]\n\n"
            );
            let (out, reported) = observe(Provider::Openai, Format::Sse, true, stream.as_bytes());
            assert_eq!(out, b"data: [DONE]\n\n", "{odd}");
            assert_eq!(reported, Some((3, 4)), "{odd}");
        }
    }

    #[test]
    fn choices_are_summed_and_odd_items_are_open() {
        let document = Document::read(
            br#"{"choices": [{"delta": {"content": "h\u00e9llo", "reasoning_content": "ab"}, "finish_reason": null},
                 3, {"finish_reason": "stop", "delta": "text"}, {"delta": {"content": 5}}]}"#,
        )
        .expect("an object");
        assert_eq!(
            document.choices,
            Choices {
                array: true,
                len: 4,
                open: 3,
                chars: 7
            }
        );
        assert!(!document.choices.all_open());
        let empty = Document::read(br#"{"choices": [], "usage": {}}"#).expect("an object");
        assert!(empty.choices.array && !empty.choices.all_open());
        assert!(empty.usage.0.is_some());
        let not_an_array = Document::read(br#"{"choices": {"0": {}}}"#).expect("an object");
        assert!(!not_an_array.choices.array);
    }

    #[test]
    fn a_delta_is_a_string_or_an_object() {
        let read = |json: &str| Document::read(json.as_bytes()).expect(json).delta;
        assert_eq!(
            read(r#"{"delta": "abc"}"#),
            Delta {
                text: 3,
                content: 0
            }
        );
        assert_eq!(
            read(
                r#"{"delta": {"text": "ab", "thinking": "c", "partial_json": "{}", "type": "x"}}"#
            ),
            Delta {
                text: 0,
                content: 5
            }
        );
        assert_eq!(
            read(r#"{"delta": {"text": "a", "text": "abcd"}}"#),
            Delta {
                text: 0,
                content: 4
            },
            "the last occurrence"
        );
        assert_eq!(read(r#"{"delta": [1]}"#), Delta::default());
    }

    #[test]
    fn candidates_sum_their_parts_and_any_finish_reason_finishes() {
        let document = Document::read(
            br#"{"candidates": [{"content": {"parts": [{"text": "ab"}, {"text": 1}, "x", {"text": "c"}]}},
                 null, {"content": {"parts": {"text": "no"}}, "finishReason": "STOP"}]}"#,
        )
        .expect("an object");
        assert_eq!(
            document.candidates,
            Candidates {
                finished: true,
                chars: 3
            }
        );
        let unfinished =
            Document::read(br#"{"candidates": [{"finishReason": null}]}"#).expect("an object");
        assert!(!unfinished.candidates.finished);
    }

    #[test]
    fn only_an_object_is_a_document() {
        for not_one in [
            &b"[{\"usage\": {}}]"[..],
            b"3",
            b"null",
            b"{\"usage\": ",
            b"",
        ] {
            assert!(Document::read(not_one).is_none(), "{not_one:?}");
        }
        // Skipped values are not built, and what is skipped can be any JSON.
        let document = Document::read(
            br#"{"id": "x", "extra": [{"usage": {"prompt_tokens": 1}}], "usage": {"prompt_tokens": 2}}"#,
        )
        .expect("an object");
        assert_eq!(
            document.usage.0.map(|usage| usage.prompt_tokens.get()),
            Some(Some(2))
        );
    }
}
