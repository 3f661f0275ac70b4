//! The usage observer on whole answers of each provider: bytes passed on unchanged, the
//! injected usage chunk and only it stripped, usage read from JSON bodies and streams, and
//! what an answer without usage leaves for the estimate.

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
            String::from_utf8(run(&mut observer, OPENAI_STREAM.as_bytes(), chunk)).expect("utf-8"),
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
    let head = Bytes::from_static(br#"{"usage":{"prompt_tokens":5,"completion_tokens":3},"pad":""#);
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
