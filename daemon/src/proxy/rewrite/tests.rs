//! The rewrite's tests: clamps per provider and field, usage asked for, any depth.

use super::*;
use crate::proxy::model;
use serde_json::{Map, json};

#[test]
fn rewrite_keeps_every_other_field() {
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"temperature":0.5}"#;
    let fields = object(serde_json::from_slice(body).expect("json"));
    for limit in [Some(7), None] {
        let out = rewrite(
            Kind::Openai,
            "/v1/chat/completions",
            body,
            &fields,
            limit,
            true,
        )
        .expect("valid");
        let out: Value = serde_json::from_slice(&out).expect("json");
        let mut expected = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
               "stream": true, "temperature": 0.5,
               "stream_options": {"include_usage": true}});
        if let Some(limit) = limit {
            expected["max_completion_tokens"] = json!(limit);
        }
        assert_eq!(out, expected);
    }
}

#[test]
fn rewrite_only_as_asked() {
    let body = br#"{"model":"gpt-4o","stream":true}"#;
    let fields = object(serde_json::from_slice(body).expect("json"));
    let out = rewrite(
        Kind::Openai,
        "/v1/chat/completions",
        body,
        &fields,
        Some(3),
        false,
    )
    .expect("valid");
    let out: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(
        out,
        json!({"model": "gpt-4o", "stream": true, "max_completion_tokens": 3})
    );
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("object")
}

/// `body` clamped to `tokens` as `rewrite` does it, read back.
fn clamped(provider: Kind, path: &str, body: Value, tokens: u64) -> Value {
    let bytes = serde_json::to_vec(&body).expect("json");
    let out =
        rewrite(provider, path, &bytes, &object(body), Some(tokens), false).expect("rewritten");
    serde_json::from_slice(&out).expect("still JSON")
}

#[test]
fn the_include_usage_splice_equals_the_full_rewrite() {
    for body in [
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"{\"a\":1}"}]}"#,
        " \r\n {\"stream\": true}\n",
        r#"{"stream":true,"x":{"stream_options":1}}"#,
    ] {
        let fields = object(serde_json::from_str(body).expect("json"));
        let spliced = splice_include_usage(body.as_bytes()).expect("an object");
        let mut members = Members::parse(body).expect("object");
        ask_for_usage(&mut members).expect("asked");
        let full: Value = serde_json::from_slice(&members.to_vec().expect("ok")).expect("json");
        let spliced: Value = serde_json::from_slice(&spliced).expect("still JSON");
        assert_eq!(spliced, full, "{body}");
        assert_eq!(full["stream_options"], json!({"include_usage": true}));
        assert_eq!(Value::Object(fields)["stream"], json!(true));
    }
    assert_eq!(
        splice_include_usage(b"{}").as_deref(),
        Some(&br#"{"stream_options":{"include_usage":true}}"#[..])
    );
    assert_eq!(splice_include_usage(b"[1]"), None);
}

#[test]
fn a_body_nested_at_any_depth_is_clamped() {
    let deep = format!("{}\"hi\"{}", "[".repeat(5_000), "]".repeat(5_000));
    for (provider, path, field) in [
        (Kind::Openai, "/v1/chat/completions", "max_tokens"),
        (
            Kind::Gemini,
            "/v1beta/models/m:generateContent",
            "generationConfig",
        ),
    ] {
        let limit = if field == "max_tokens" {
            "4000".to_owned()
        } else {
            r#"{"maxOutputTokens":4000,"temperature":0.5}"#.to_owned()
        };
        let body =
            format!(r#"{{"model":"m","messages":[{{"content":{deep}}}],"{field}":{limit}}}"#);
        let fields: model::Skimmed = serde_json::from_str(&body).expect("the skim reads it");
        let out = rewrite(provider, path, body.as_bytes(), &fields, Some(12), false)
            .expect("no depth limit");
        let out = String::from_utf8(out).expect("utf-8");
        assert!(out.contains(&deep), "the nested value is copied as sent");
        let changed = out.replace(&deep, "0");
        let changed: Value = serde_json::from_str(&changed).expect("JSON");
        match provider {
            Kind::Gemini => {
                assert_eq!(changed["generationConfig"]["maxOutputTokens"], 12);
                assert_eq!(changed["generationConfig"]["temperature"], 0.5);
            }
            _ => assert_eq!(changed["max_tokens"], 12),
        }
    }
}

const CHAT: &str = "/v1/chat/completions";

/// Only a field the endpoint reads bounds the request: `max_output_tokens` alone on chat
/// completions reserves the model's maximum, and a clamp adds `max_completion_tokens` (it
/// lowered only the field chat ignores, and an OpenAI-compatible server would have generated
/// without limit).
#[test]
fn only_the_endpoints_own_fields_bound_an_openai_request() {
    let responses_field = object(json!({"max_output_tokens": 10}));
    assert_eq!(requested_output(Kind::Openai, CHAT, &responses_field), None);
    assert_eq!(
        requested_output(Kind::Openai, "/v1/responses", &responses_field),
        Some(10)
    );
    let chat_field = object(json!({"max_completion_tokens": 10}));
    assert_eq!(
        requested_output(Kind::Openai, "/v1/responses", &chat_field),
        None
    );
    assert_eq!(
        requested_output(Kind::Openai, "/v1/completions", &chat_field),
        None
    );
    assert_eq!(
        requested_output(
            Kind::Openai,
            "/v1/completions",
            &object(json!({"max_tokens": 4}))
        ),
        Some(4)
    );
    // Unknown endpoints read any of them.
    assert_eq!(
        requested_output(Kind::Openai, "/v1/other", &responses_field),
        Some(10)
    );
    let body = clamped(Kind::Openai, CHAT, json!({"max_output_tokens": 5000}), 7);
    assert_eq!(
        body,
        json!({"max_output_tokens": 7, "max_completion_tokens": 7})
    );
    let body = clamped(Kind::Openai, "/v1/completions", json!({}), 7);
    assert_eq!(body, json!({"max_tokens": 7}));
}

#[test]
fn output_limits_per_provider() {
    assert_eq!(
        requested_output(Kind::Openai, CHAT, &object(json!({"max_tokens": 5}))),
        Some(5)
    );
    assert_eq!(
        requested_output(
            Kind::Openai,
            CHAT,
            &object(json!({"max_completion_tokens": 7, "max_tokens": 5}))
        ),
        Some(7)
    );
    assert_eq!(
        requested_output(Kind::Anthropic, CHAT, &object(json!({"max_tokens": 9}))),
        Some(9)
    );
    assert_eq!(
        requested_output(
            Kind::Gemini,
            CHAT,
            &object(json!({"generationConfig": {"maxOutputTokens": 11}}))
        ),
        Some(11)
    );
    assert_eq!(
        requested_output(Kind::Gemini, CHAT, &object(json!({}))),
        None
    );

    let body = clamped(
        Kind::Gemini,
        "/v1beta/models/m:generateContent",
        json!({"model": "m"}),
        42,
    );
    assert_eq!(body["generationConfig"]["maxOutputTokens"], 42);
    let body = clamped(
        Kind::Openai,
        "/v1/chat/completions",
        json!({"max_tokens": 1000}),
        10,
    );
    assert_eq!(body, json!({"max_tokens": 10}));
    let body = clamped(Kind::Openai, "/v1/chat/completions", json!({}), 10);
    assert_eq!(body, json!({"max_completion_tokens": 10}));
    let body = clamped(Kind::Openai, "/v1/responses", json!({}), 10);
    assert_eq!(body, json!({"max_output_tokens": 10}));
    let body = clamped(
        Kind::Anthropic,
        "/v1/messages",
        json!({"max_tokens": 4000, "model": "c"}),
        10,
    );
    assert_eq!(body, json!({"max_tokens": 10, "model": "c"}));
    // Lowered, never raised: a limit the skim could not read ("5") is not replaced by a
    // larger clamp.
    let body = clamped(
        Kind::Anthropic,
        "/v1/messages",
        json!({"max_tokens": "5", "model": "c"}),
        10,
    );
    assert_eq!(body, json!({"max_tokens": 5, "model": "c"}));
    let body = clamped(Kind::Anthropic, "/v1/messages", json!({"model": "c"}), 10);
    assert_eq!(body, json!({"model": "c", "max_tokens": 10}));
    // A config that is not an object is replaced, as a parse into a map would.
    let body = clamped(
        Kind::Gemini,
        "/v1beta/models/m:generateContent",
        json!({"generationConfig": null}),
        3,
    );
    assert_eq!(body, json!({"generationConfig": {"maxOutputTokens": 3}}));
}

#[test]
fn the_largest_limit_of_any_field_counts_and_a_clamp_lowers_them_all() {
    let both = object(json!({"max_tokens": 60000, "max_completion_tokens": 10}));
    assert_eq!(requested_output(Kind::Openai, CHAT, &both), Some(60000));
    let body = clamped(
        Kind::Openai,
        "/v1/chat/completions",
        Value::Object(both.clone()),
        7,
    );
    assert_eq!(body, json!({"max_tokens": 7, "max_completion_tokens": 7}));
    // Lowered, never raised: the client's smaller limit stays.
    let body = clamped(
        Kind::Openai,
        "/v1/chat/completions",
        Value::Object(both.clone()),
        500,
    );
    assert_eq!(
        body,
        json!({"max_tokens": 500, "max_completion_tokens": 10})
    );
    let strings = object(json!({"max_tokens": "60000"}));
    assert_eq!(requested_output(Kind::Openai, CHAT, &strings), Some(60000));
    let mixed = object(json!({"max_completion_tokens": 10, "max_output_tokens": 60000}));
    assert_eq!(requested_output(Kind::Openai, CHAT, &mixed), Some(60000));

    let snake = object(json!({"generation_config": {"max_output_tokens": 60000}}));
    assert_eq!(requested_output(Kind::Gemini, CHAT, &snake), Some(60000));
    let body = clamped(
        Kind::Gemini,
        "/v1beta/models/m:generateContent",
        Value::Object(snake.clone()),
        9,
    );
    assert_eq!(
        body,
        json!({"generation_config": {"max_output_tokens": 9}}),
        "lowered where the client put it, no second config"
    );
    let camel_both =
        object(json!({"generationConfig": {"maxOutputTokens": 5, "max_output_tokens": 800}}));
    assert_eq!(requested_output(Kind::Gemini, CHAT, &camel_both), Some(800));
}

#[test]
fn answers_multiply_the_output() {
    assert_eq!(answers(Kind::Openai, &object(json!({}))), 1);
    assert_eq!(answers(Kind::Openai, &object(json!({"n": 50}))), 50);
    assert_eq!(
        answers(Kind::Openai, &object(json!({"n": 2, "best_of": 5}))),
        5
    );
    assert_eq!(answers(Kind::Openai, &object(json!({"n": 0}))), 1);
    for written in [json!("3"), json!(3.0), json!("3e0"), json!(" 3 ")] {
        assert_eq!(
            answers(Kind::Openai, &object(json!({ "n": written }))),
            3,
            "{written}"
        );
    }
    assert_eq!(answers(Kind::Openai, &object(json!({"n": 2.5}))), 1);
    assert_eq!(answers(Kind::Openai, &object(json!({"n": "many"}))), 1);
    assert_eq!(
        answers(
            Kind::Gemini,
            &object(json!({"generationConfig": {"candidateCount": "8"}}))
        ),
        8
    );
    assert_eq!(
        answers(
            Kind::Gemini,
            &object(json!({"generationConfig": {"candidateCount": 8}}))
        ),
        8
    );
    assert_eq!(
        answers(
            Kind::Gemini,
            &object(json!({"generation_config": {"candidate_count": 4}}))
        ),
        4
    );
    assert_eq!(answers(Kind::Anthropic, &object(json!({"n": 9}))), 1);
}

#[test]
fn include_usage_is_injected_only_when_missing() {
    let path = "/v1/chat/completions";
    let asks = |body: Value| {
        let fields = object(body);
        wants_include_usage(Kind::Openai, path, &fields)
    };
    assert!(asks(json!({"stream": true})));
    assert!(!asks(
        json!({"stream": true, "stream_options": {"include_usage": true}})
    ));
    assert!(asks(
        json!({"stream": true, "stream_options": {"include_usage": false}})
    ));
    assert!(!asks(json!({"stream": false})));
    assert!(!wants_include_usage(
        Kind::Anthropic,
        "/v1/messages",
        &object(json!({"stream": true}))
    ));
    let body = json!({"stream": true, "stream_options": {"include_usage": false, "x": 1}});
    let bytes = serde_json::to_vec(&body).expect("json");
    let out = rewrite(Kind::Openai, path, &bytes, &object(body), None, true).expect("rewritten");
    let out: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(
        out,
        json!({"stream": true, "stream_options": {"include_usage": true, "x": 1}})
    );
    assert!(!wants_include_usage(
        Kind::Openai,
        "/v1/chat/completions",
        &object(json!({"stream": true, "stream_options": "odd"}))
    ));
    // `null` is no options: usage is asked for, and the rewritten body is one object
    // with the key once (a splice would have duplicated it).
    let body = br#"{"model":"gpt-4o","stream":true,"stream_options":null}"#;
    let fields = object(serde_json::from_slice(body).expect("json"));
    assert!(wants_include_usage(
        Kind::Openai,
        "/v1/chat/completions",
        &fields
    ));
    for limit in [None, Some(5)] {
        let out = rewrite(
            Kind::Openai,
            "/v1/chat/completions",
            body,
            &fields,
            limit,
            true,
        )
        .expect("valid");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.matches("stream_options").count(), 1, "{text}");
        let out: Value = serde_json::from_str(&text).expect("still JSON");
        assert_eq!(out["stream_options"], json!({"include_usage": true}));
    }
}
