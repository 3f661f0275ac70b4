//! Fuzzing the response side: the usage observer over SSE streams and JSON bodies, and the
//! Gemini JSON-array splitter. Responses come from providers, which the gateway trusts to
//! bill but not to be well formed: a stream cut anywhere, garbled usage or a body that is
//! not what its type says must never panic, change a byte the client receives (beyond the one
//! usage chunk the gateway asked for), or be read differently depending on how it was split.

use crate::config::Kind;
use bytes::Bytes;
use serde_json::Value;

use super::{selector, splits};
use crate::proxy::usage::json_array::JsonArraySplitter;
use crate::proxy::usage::sse::SseParser;
use crate::proxy::usage::{Format, Observed, UsageObserver, extract, reference};

/// Selector: the provider (`% 3`: OpenAI, Anthropic, Gemini) and, by `/ 3 % 3`, an SSE
/// stream observed as is, an SSE stream with OpenAI's usage chunk stripped, or a JSON body.
/// The rest is the response body.
pub fn usage_observer(data: &[u8]) {
    let Some((selector, body)) = selector(data) else {
        return;
    };
    let provider = Kind::ALL[usize::from(selector % 3)];
    match selector / 3 % 3 {
        0 => sse(provider, false, body),
        1 => sse(provider, true, body),
        _ => json(provider, body),
    }
}

/// The whole input is a Gemini `streamGenerateContent` body (a JSON array, sent in pieces).
pub fn gemini_array(stream: &[u8]) {
    let [whole, others @ ..] = splits(stream);
    let elements = split_array(&whole);
    for chunks in &others {
        assert_eq!(
            split_array(chunks),
            elements,
            "the elements depend on the split"
        );
    }
    // Each element is a whole object or array, a piece of the stream, in stream order.
    let mut from = 0;
    for element in &elements {
        assert!(
            matches!(element.first(), Some(b'{' | b'['))
                && matches!(element.last(), Some(b'}' | b']')),
            "not a whole element: {:?}",
            String::from_utf8_lossy(element)
        );
        let at = memchr::memmem::find(&stream[from..], element)
            .expect("an element is a piece of the stream, after the one before it");
        from += at + element.len();
    }
    let (out, observed) = observe(Kind::Gemini, Format::JsonArray, false, &whole);
    assert_eq!(out, stream, "observing changed the bytes");
    for chunks in &others {
        assert_eq!(
            observe(Kind::Gemini, Format::JsonArray, false, chunks),
            (out.clone(), observed),
            "the usage depends on the split"
        );
    }
    // A well-formed array: its object and array items are the elements, and the usage is
    // what they report read one after the other.
    let Ok(items) = serde_json::from_slice::<Vec<Value>>(stream) else {
        return;
    };
    let items: Vec<Value> = items
        .into_iter()
        .filter(|item| item.is_object() || item.is_array())
        .collect();
    let parsed: Vec<Value> = elements
        .iter()
        .map(|element| serde_json::from_slice(element).expect("an item of a valid array parses"))
        .collect();
    assert_eq!(parsed, items, "the elements are not the array's items");
    let mut expected = Observed::default();
    for item in &items {
        reference::apply(Kind::Gemini, item, &mut expected);
    }
    assert_eq!(observed, expected, "the stream's usage is not its items'");
}

/// An SSE response observed in every split: the same bytes out and the same usage. Each
/// event is also read both ways: what the observer reads from its bytes in one pass must be
/// what the document-level reading (`reference`, a parsed `Value`) yields.
fn sse(provider: Kind, strip: bool, stream: &[u8]) {
    for (_, data) in events(stream) {
        read_both_ways(provider, &data);
    }
    let [whole, others @ ..] = splits(stream);
    let (out, observed) = observe(provider, Format::Sse, strip, &whole);
    for chunks in &others {
        assert_eq!(
            observe(provider, Format::Sse, strip, chunks),
            (out.clone(), observed),
            "the bytes out or the usage depend on the split"
        );
    }
    if !strip || provider != Kind::Openai {
        assert_eq!(out, stream, "observing changed the bytes");
        return;
    }
    // Stripping removes OpenAI's usage-only chunks and nothing else: the events the client
    // gets are the stream's, less some of those.
    let sent = events(stream);
    let received = events(&out);
    let mut remaining = received.as_slice();
    for event in &sent {
        if remaining.first() == Some(event) {
            remaining = &remaining[1..];
        } else {
            assert!(
                is_usage_only_chunk(&event.1),
                "dropped an event that is not the usage chunk: {:?}",
                String::from_utf8_lossy(&event.1)
            );
        }
    }
    assert!(
        remaining.is_empty(),
        "the client got events the provider never sent: {remaining:?}"
    );
}

/// A JSON response in every split: passed on as it is, and its usage read from the bytes in
/// one pass is what the whole document yields (a key named twice included: both read its
/// last occurrence).
fn json(provider: Kind, body: &[u8]) {
    read_both_ways(provider, body);
    let [whole, others @ ..] = splits(body);
    let (out, observed) = observe(provider, Format::Json, false, &whole);
    assert_eq!(out, body, "observing changed the bytes");
    for chunks in &others {
        assert_eq!(
            observe(provider, Format::Json, false, chunks).1,
            observed,
            "the usage depends on the split"
        );
    }
    let Ok(document) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let mut expected = Observed::default();
    reference::apply(provider, &document, &mut expected);
    assert_eq!(
        observed.reported, expected.reported,
        "the body's usage fields say other than the whole document"
    );
    if provider == Kind::Anthropic {
        assert_eq!(observed.content_events, expected.content_events);
    }
}

/// One document read from its bytes (`extract::read`) and as a parsed `Value`
/// (`reference`), onto a fresh observation and onto one that already holds a report: the two
/// must agree wherever the `Value` parses. (The bytes are read more leniently: a value they
/// skip, such as a string with invalid UTF-8, is not checked.)
fn read_both_ways(provider: Kind, data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let document = extract::read(data);
    assert_eq!(
        document.is_some(),
        value.is_object(),
        "only an object is a document"
    );
    let earlier = Observed {
        reported: Some(crate::spend::price::Tokens {
            input: 3,
            output: 1,
            cache_read: 2,
            cache_write: 1,
        }),
        partial: true,
        content_events: 4,
        content_chars: 9,
    };
    for start in [Observed::default(), earlier] {
        let (mut typed, mut expected) = (start, start);
        if let Some(document) = &document {
            extract::apply(provider, document, &mut typed);
        }
        reference::apply(provider, &value, &mut expected);
        assert_eq!(
            typed,
            expected,
            "read from the bytes: other than from the document: {}",
            String::from_utf8_lossy(data)
        );
    }
    assert_eq!(
        document.as_ref().is_some_and(extract::is_usage_only_chunk),
        reference::is_usage_only_chunk(&value),
        "the usage-only chunk: {}",
        String::from_utf8_lossy(data)
    );
}

fn observe(provider: Kind, format: Format, strip: bool, chunks: &[&[u8]]) -> (Vec<u8>, Observed) {
    let mut observer = UsageObserver::new(provider, format, strip);
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&observer.observe(Bytes::copy_from_slice(chunk)));
    }
    out.extend_from_slice(&observer.finish());
    (out, observer.observed)
}

fn split_array(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut splitter = JsonArraySplitter::default();
    let mut elements = Vec::new();
    for chunk in chunks {
        splitter.feed(chunk, &mut elements);
    }
    elements
}

/// The stream's events as (name, data).
fn events(stream: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut parser = SseParser::new(false);
    let mut events = Vec::new();
    parser.feed(stream, &mut |event, _| {
        if let Some(event) = event {
            events.push((event.name.to_vec(), event.data.to_vec()));
        }
    });
    events
}

/// OpenAI's usage-only chunk: no choices, a usage object.
fn is_usage_only_chunk(data: &[u8]) -> bool {
    serde_json::from_slice::<Value>(data).is_ok_and(|chunk| reference::is_usage_only_chunk(&chunk))
}
