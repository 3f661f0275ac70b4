//! The two changes the gateway makes to a request body, and only when it must: lowering the
//! output limit to what the key's remaining budget pays for (SPEC §5 clamp), and asking
//! OpenAI for a streaming usage chunk the client did not request (so streams are billed).

use std::borrow::Cow;

use gateway_shared::Provider;
use serde_json::Value;
use serde_json::value::RawValue;

use super::members::{Members, number, raw};
use super::model::Fields;

/// OpenAI's output-limit fields, any of which a body may carry (an OpenAI-compatible
/// upstream may honour whichever it knows): the largest is the request's limit, and a clamp
/// lowers every one present.
const OPENAI_OUTPUT_FIELDS: [&str; 3] =
    ["max_completion_tokens", "max_tokens", "max_output_tokens"];

/// Gemini's generation config and its fields, in the REST API's camelCase and the proto's
/// snake_case (the API accepts both).
const GEMINI_CONFIGS: [&str; 2] = ["generationConfig", "generation_config"];
const GEMINI_OUTPUT_FIELDS: [&str; 2] = ["maxOutputTokens", "max_output_tokens"];
const GEMINI_CANDIDATE_FIELDS: [&str; 2] = ["candidateCount", "candidate_count"];

/// The request's own output limit per answer, if it sets one: the largest of the fields the
/// provider might read.
pub fn requested_output(provider: Provider, body: &impl Fields) -> Option<u64> {
    match provider {
        Provider::Openai => largest(OPENAI_OUTPUT_FIELDS.iter().map(|f| body.field(f))),
        Provider::Anthropic => body.field("max_tokens").and_then(Value::as_u64),
        Provider::Gemini => largest(gemini_config_fields(body, &GEMINI_OUTPUT_FIELDS)),
    }
}

/// How many answers the request asks for, each up to the output limit: OpenAI's `n` (and
/// the completions API's `best_of`, all of which are generated and billed), Gemini's
/// `candidateCount`. At least 1.
pub fn answers(provider: Provider, body: &impl Fields) -> u64 {
    let asked = match provider {
        Provider::Openai => largest(["n", "best_of"].iter().map(|f| body.field(f))),
        Provider::Anthropic => None,
        Provider::Gemini => largest(gemini_config_fields(body, &GEMINI_CANDIDATE_FIELDS)),
    };
    asked.unwrap_or(1).max(1)
}

fn largest<'a>(values: impl Iterator<Item = Option<&'a Value>>) -> Option<u64> {
    values.flatten().filter_map(whole_number).max()
}

/// A count as a provider may read it: a whole number, also written as a float (`8.0`, `8e0`)
/// or a string (`"8"`), which proto3 JSON (Gemini) accepts for its integers. Reading only
/// JSON integers let `"candidateCount": "8"` ask for eight answers reserved as one.
fn whole_number(value: &Value) -> Option<u64> {
    let from_float = |f: f64| {
        (f.is_finite() && f >= 0.0 && f.fract() == 0.0).then(|| {
            // Saturates at u64::MAX, which a reservation then refuses.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let whole = f as u64;
            whole
        })
    };
    match value {
        Value::Number(number) => number
            .as_u64()
            .or_else(|| number.as_f64().and_then(from_float)),
        Value::String(text) => {
            let text = text.trim();
            text.parse::<u64>()
                .ok()
                .or_else(|| text.parse::<f64>().ok().and_then(from_float))
        }
        _ => None,
    }
}

/// `names` inside either spelling of Gemini's generation config.
fn gemini_config_fields<'a>(
    body: &'a impl Fields,
    names: &'a [&str],
) -> impl Iterator<Item = Option<&'a Value>> {
    GEMINI_CONFIGS
        .iter()
        .filter_map(|config| body.field(config))
        .flat_map(move |config| names.iter().map(move |name| config.get(name)))
}

/// Sets the output limit in every field of it the request carries, or else in the one the
/// provider (and this path) uses.
fn set_output_limit<'a>(
    provider: Provider,
    path: &str,
    body: &mut Members<'a>,
    tokens: u64,
) -> Result<(), serde_json::Error> {
    match provider {
        Provider::Openai => {
            if !lower_present(body, &OPENAI_OUTPUT_FIELDS, tokens)? {
                let field = if path.ends_with("/responses") {
                    "max_output_tokens"
                } else {
                    "max_completion_tokens"
                };
                body.push(field, number(tokens)?);
            }
        }
        Provider::Anthropic => {
            if !lower_present(body, &["max_tokens"], tokens)? {
                body.push("max_tokens", number(tokens)?);
            }
        }
        Provider::Gemini => {
            let mut configs = 0;
            for name in GEMINI_CONFIGS {
                for config in body.values_mut(name) {
                    if !is_object(config) {
                        continue;
                    }
                    configs += 1;
                    let lowered = {
                        let mut fields = Members::parse(config.get())?;
                        if !lower_present(&mut fields, &GEMINI_OUTPUT_FIELDS, tokens)? {
                            fields.push("maxOutputTokens", number(tokens)?);
                        }
                        fields.to_raw()?
                    };
                    *config = Cow::Owned(lowered);
                }
            }
            if configs == 0 {
                let config = format!(r#"{{"maxOutputTokens":{tokens}}}"#);
                body.set("generationConfig", raw(&config)?);
            }
        }
    }
    Ok(())
}

/// Lowers each of `names` present to `tokens`, never raising one: a client's smaller limit
/// in another field stays its own. Whether any was present.
fn lower_present(
    object: &mut Members<'_>,
    names: &[&str],
    tokens: u64,
) -> Result<bool, serde_json::Error> {
    let mut any = false;
    for name in names {
        for value in object.values_mut(name) {
            let own = whole_number_raw(value).filter(|own| *own <= tokens);
            *value = Cow::Owned(number(own.unwrap_or(tokens))?);
            any = true;
        }
    }
    Ok(any)
}

/// [`whole_number`] of a raw value: only numbers and strings can be one, so nothing else is
/// parsed (a field may hold anything, nested at any depth).
fn whole_number_raw(value: &RawValue) -> Option<u64> {
    let text = value.get();
    let scalar = text
        .bytes()
        .next()
        .is_some_and(|b| b == b'"' || b == b'-' || b.is_ascii_digit());
    scalar
        .then(|| serde_json::from_str::<Value>(text).ok())
        .flatten()
        .as_ref()
        .and_then(whole_number)
}

fn is_object(value: &RawValue) -> bool {
    value.get().starts_with('{')
}

/// Whether this is an OpenAI chat or completions stream that does not ask for usage (and
/// so must be made to, with the usage chunk hidden from the client). `"stream_options":
/// null` is no options at all, as OpenAI reads it: otherwise a client (or SDK) that sends
/// the null would stream unmetered.
pub fn wants_include_usage(provider: Provider, path: &str, body: &impl Fields) -> bool {
    let applies = provider == Provider::Openai
        && (path.ends_with("/chat/completions") || path.ends_with("/completions"))
        && body.field("stream").and_then(Value::as_bool) == Some(true);
    match body.field("stream_options") {
        _ if !applies => false,
        None | Some(Value::Null) => true,
        Some(Value::Object(options)) => {
            options.get("include_usage").and_then(Value::as_bool) != Some(true)
        }
        Some(_) => false,
    }
}

/// Asks for the usage chunk (the caller checked [`wants_include_usage`]): `stream_options`
/// set to `{"include_usage":true}` where it is absent or `null`, `include_usage` set inside it
/// where it is an object.
fn ask_for_usage(body: &mut Members<'_>) -> Result<(), serde_json::Error> {
    let mut found = false;
    for options in body.values_mut("stream_options") {
        found = true;
        let asked = if is_object(options) {
            let mut fields = Members::parse(options.get())?;
            fields.set("include_usage", raw("true")?);
            fields.to_raw()?
        } else {
            raw(INCLUDE_USAGE)?
        };
        *options = Cow::Owned(asked);
    }
    if !found {
        body.push("stream_options", raw(INCLUDE_USAGE)?);
    }
    Ok(())
}

const INCLUDE_USAGE: &str = r#"{"include_usage":true}"#;

/// The body with both changes applied as asked. Asking a stream for usage when it has no
/// `stream_options` at all (what SDKs send) is a splice at the object's opening brace; any
/// other change (a `null` one included: a splice would leave the key twice) rewrites the
/// members it must change and copies every other value byte for byte, at any depth
/// ([`Members`]).
/// `fields` is the skim of `body` (so `body` is known to be one valid JSON object).
pub fn rewrite(
    provider: Provider,
    path: &str,
    body: &[u8],
    fields: &impl Fields,
    output_limit: Option<u64>,
    include_usage: bool,
) -> Result<Vec<u8>, serde_json::Error> {
    if output_limit.is_none()
        && include_usage
        && fields.field("stream_options").is_none()
        && let Some(spliced) = splice_include_usage(body)
    {
        return Ok(spliced);
    }
    let text =
        std::str::from_utf8(super::model::without_bom(body)).map_err(serde::de::Error::custom)?;
    let mut members = Members::parse(text)?;
    if let Some(tokens) = output_limit {
        set_output_limit(provider, path, &mut members, tokens)?;
    }
    if include_usage {
        ask_for_usage(&mut members)?;
    }
    members.to_vec()
}

/// `{"stream_options":{"include_usage":true},` + the rest of the object, byte for byte.
fn splice_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true}"#;
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let open = body.iter().position(|b| !is_space(b))?;
    if body[open] != b'{' {
        return None;
    }
    let rest = &body[open + 1..];
    let empty = rest.iter().find(|b| !is_space(b)) == Some(&b'}');
    let mut out = Vec::with_capacity(body.len() + MEMBER.len() + 1);
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(MEMBER);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model;
    use serde_json::{Map, json};

    #[test]
    fn rewrite_keeps_every_other_field() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"temperature":0.5}"#;
        let fields = object(serde_json::from_slice(body).expect("json"));
        for limit in [Some(7), None] {
            let out = rewrite(
                Provider::Openai,
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
            Provider::Openai,
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
    fn clamped(provider: Provider, path: &str, body: Value, tokens: u64) -> Value {
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
            (Provider::Openai, "/v1/chat/completions", "max_tokens"),
            (
                Provider::Gemini,
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
                Provider::Gemini => {
                    assert_eq!(changed["generationConfig"]["maxOutputTokens"], 12);
                    assert_eq!(changed["generationConfig"]["temperature"], 0.5);
                }
                _ => assert_eq!(changed["max_tokens"], 12),
            }
        }
    }

    #[test]
    fn output_limits_per_provider() {
        assert_eq!(
            requested_output(Provider::Openai, &object(json!({"max_tokens": 5}))),
            Some(5)
        );
        assert_eq!(
            requested_output(
                Provider::Openai,
                &object(json!({"max_completion_tokens": 7, "max_tokens": 5}))
            ),
            Some(7)
        );
        assert_eq!(
            requested_output(Provider::Anthropic, &object(json!({"max_tokens": 9}))),
            Some(9)
        );
        assert_eq!(
            requested_output(
                Provider::Gemini,
                &object(json!({"generationConfig": {"maxOutputTokens": 11}}))
            ),
            Some(11)
        );
        assert_eq!(requested_output(Provider::Gemini, &object(json!({}))), None);

        let body = clamped(
            Provider::Gemini,
            "/v1beta/models/m:generateContent",
            json!({"model": "m"}),
            42,
        );
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 42);
        let body = clamped(
            Provider::Openai,
            "/v1/chat/completions",
            json!({"max_tokens": 1000}),
            10,
        );
        assert_eq!(body, json!({"max_tokens": 10}));
        let body = clamped(Provider::Openai, "/v1/chat/completions", json!({}), 10);
        assert_eq!(body, json!({"max_completion_tokens": 10}));
        let body = clamped(Provider::Openai, "/v1/responses", json!({}), 10);
        assert_eq!(body, json!({"max_output_tokens": 10}));
        let body = clamped(
            Provider::Anthropic,
            "/v1/messages",
            json!({"max_tokens": 4000, "model": "c"}),
            10,
        );
        assert_eq!(body, json!({"max_tokens": 10, "model": "c"}));
        // Lowered, never raised: a limit the skim could not read ("5") is not replaced by a
        // larger clamp.
        let body = clamped(
            Provider::Anthropic,
            "/v1/messages",
            json!({"max_tokens": "5", "model": "c"}),
            10,
        );
        assert_eq!(body, json!({"max_tokens": 5, "model": "c"}));
        let body = clamped(
            Provider::Anthropic,
            "/v1/messages",
            json!({"model": "c"}),
            10,
        );
        assert_eq!(body, json!({"model": "c", "max_tokens": 10}));
        // A config that is not an object is replaced, as a parse into a map would.
        let body = clamped(
            Provider::Gemini,
            "/v1beta/models/m:generateContent",
            json!({"generationConfig": null}),
            3,
        );
        assert_eq!(body, json!({"generationConfig": {"maxOutputTokens": 3}}));
    }

    #[test]
    fn the_largest_limit_of_any_field_counts_and_a_clamp_lowers_them_all() {
        let both = object(json!({"max_tokens": 60000, "max_completion_tokens": 10}));
        assert_eq!(requested_output(Provider::Openai, &both), Some(60000));
        let body = clamped(
            Provider::Openai,
            "/v1/chat/completions",
            Value::Object(both.clone()),
            7,
        );
        assert_eq!(body, json!({"max_tokens": 7, "max_completion_tokens": 7}));
        // Lowered, never raised: the client's smaller limit stays.
        let body = clamped(
            Provider::Openai,
            "/v1/chat/completions",
            Value::Object(both.clone()),
            500,
        );
        assert_eq!(
            body,
            json!({"max_tokens": 500, "max_completion_tokens": 10})
        );
        let strings = object(json!({"max_tokens": "60000"}));
        assert_eq!(requested_output(Provider::Openai, &strings), Some(60000));
        let mixed = object(json!({"max_completion_tokens": 10, "max_output_tokens": 60000}));
        assert_eq!(requested_output(Provider::Openai, &mixed), Some(60000));

        let snake = object(json!({"generation_config": {"max_output_tokens": 60000}}));
        assert_eq!(requested_output(Provider::Gemini, &snake), Some(60000));
        let body = clamped(
            Provider::Gemini,
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
        assert_eq!(requested_output(Provider::Gemini, &camel_both), Some(800));
    }

    #[test]
    fn answers_multiply_the_output() {
        assert_eq!(answers(Provider::Openai, &object(json!({}))), 1);
        assert_eq!(answers(Provider::Openai, &object(json!({"n": 50}))), 50);
        assert_eq!(
            answers(Provider::Openai, &object(json!({"n": 2, "best_of": 5}))),
            5
        );
        assert_eq!(answers(Provider::Openai, &object(json!({"n": 0}))), 1);
        for written in [json!("3"), json!(3.0), json!("3e0"), json!(" 3 ")] {
            assert_eq!(
                answers(Provider::Openai, &object(json!({ "n": written }))),
                3,
                "{written}"
            );
        }
        assert_eq!(answers(Provider::Openai, &object(json!({"n": 2.5}))), 1);
        assert_eq!(answers(Provider::Openai, &object(json!({"n": "many"}))), 1);
        assert_eq!(
            answers(
                Provider::Gemini,
                &object(json!({"generationConfig": {"candidateCount": "8"}}))
            ),
            8
        );
        assert_eq!(
            answers(
                Provider::Gemini,
                &object(json!({"generationConfig": {"candidateCount": 8}}))
            ),
            8
        );
        assert_eq!(
            answers(
                Provider::Gemini,
                &object(json!({"generation_config": {"candidate_count": 4}}))
            ),
            4
        );
        assert_eq!(answers(Provider::Anthropic, &object(json!({"n": 9}))), 1);
    }

    #[test]
    fn include_usage_is_injected_only_when_missing() {
        let path = "/v1/chat/completions";
        let asks = |body: Value| {
            let fields = object(body);
            wants_include_usage(Provider::Openai, path, &fields)
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
            Provider::Anthropic,
            "/v1/messages",
            &object(json!({"stream": true}))
        ));
        let body = json!({"stream": true, "stream_options": {"include_usage": false, "x": 1}});
        let bytes = serde_json::to_vec(&body).expect("json");
        let out =
            rewrite(Provider::Openai, path, &bytes, &object(body), None, true).expect("rewritten");
        let out: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            out,
            json!({"stream": true, "stream_options": {"include_usage": true, "x": 1}})
        );
        assert!(!wants_include_usage(
            Provider::Openai,
            "/v1/chat/completions",
            &object(json!({"stream": true, "stream_options": "odd"}))
        ));
        // `null` is no options: usage is asked for, and the rewritten body is one object
        // with the key once (a splice would have duplicated it).
        let body = br#"{"model":"gpt-4o","stream":true,"stream_options":null}"#;
        let fields = object(serde_json::from_slice(body).expect("json"));
        assert!(wants_include_usage(
            Provider::Openai,
            "/v1/chat/completions",
            &fields
        ));
        for limit in [None, Some(5)] {
            let out = rewrite(
                Provider::Openai,
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
}
