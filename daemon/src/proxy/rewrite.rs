//! The two changes the gateway makes to a request body, and only when it must: lowering the
//! output limit to what the key's remaining budget pays for (SPEC §5 clamp), and asking
//! OpenAI for a streaming usage chunk the client did not request (so streams are billed).

use gateway_shared::Provider;
use serde_json::{Map, Value, json};

use super::model::Fields;

/// The request's own output limit, if it sets one.
pub fn requested_output(provider: Provider, body: &impl Fields) -> Option<u64> {
    match provider {
        Provider::Openai => body
            .field("max_completion_tokens")
            .and_then(Value::as_u64)
            .or_else(|| body.field("max_tokens").and_then(Value::as_u64))
            .or_else(|| body.field("max_output_tokens").and_then(Value::as_u64)),
        Provider::Anthropic => body.field("max_tokens").and_then(Value::as_u64),
        Provider::Gemini => body
            .field("generationConfig")
            .and_then(|c| c.get("maxOutputTokens"))
            .and_then(Value::as_u64),
    }
}

/// Sets the output limit in the field the provider (and this request) uses.
pub fn set_output_limit(
    provider: Provider,
    path: &str,
    body: &mut Map<String, Value>,
    tokens: u64,
) {
    match provider {
        Provider::Openai if path.ends_with("/responses") => {
            body.insert("max_output_tokens".into(), json!(tokens));
        }
        Provider::Openai => {
            // Current models accept max_completion_tokens; keep the client's field if it used
            // the older one, so old deployments keep working.
            if body.contains_key("max_tokens") && !body.contains_key("max_completion_tokens") {
                body.insert("max_tokens".into(), json!(tokens));
            } else {
                body.insert("max_completion_tokens".into(), json!(tokens));
            }
        }
        Provider::Anthropic => {
            body.insert("max_tokens".into(), json!(tokens));
        }
        Provider::Gemini => {
            let config = body.entry("generationConfig").or_insert_with(|| json!({}));
            if let Some(config) = config.as_object_mut() {
                config.insert("maxOutputTokens".into(), json!(tokens));
            }
        }
    }
}

/// Whether this is an OpenAI chat or completions stream that does not ask for usage (and
/// so must be made to, with the usage chunk hidden from the client).
pub fn wants_include_usage(provider: Provider, path: &str, body: &impl Fields) -> bool {
    let applies = provider == Provider::Openai
        && (path.ends_with("/chat/completions") || path.ends_with("/completions"))
        && body.field("stream").and_then(Value::as_bool) == Some(true);
    match body.field("stream_options") {
        _ if !applies => false,
        None => true,
        Some(Value::Object(options)) => {
            options.get("include_usage").and_then(Value::as_bool) != Some(true)
        }
        Some(_) => false,
    }
}

/// For an OpenAI chat or completions stream that does not ask for usage, asks for it.
/// Returns whether it did (and so whether the usage chunk must be hidden from the client).
pub fn inject_include_usage(provider: Provider, path: &str, body: &mut Map<String, Value>) -> bool {
    if !wants_include_usage(provider, path, body) {
        return false;
    }
    let options = body.entry("stream_options").or_insert_with(|| json!({}));
    let Some(options) = options.as_object_mut() else {
        return false;
    };
    options.insert("include_usage".into(), json!(true));
    true
}

/// The body with both changes applied as asked. Asking a stream for usage when it has no
/// `stream_options` at all (what SDKs send) is a splice at the object's opening brace; any
/// other change is one full parse and re-serialisation, paid only by requests that need it.
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
    let mut object: Map<String, Value> = serde_json::from_slice(body)?;
    if let Some(tokens) = output_limit {
        set_output_limit(provider, path, &mut object, tokens);
    }
    if include_usage {
        inject_include_usage(provider, path, &mut object);
    }
    serde_json::to_vec(&object)
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

    #[test]
    fn the_include_usage_splice_equals_the_full_rewrite() {
        for body in [
            r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"{\"a\":1}"}]}"#,
            " \r\n {\"stream\": true}\n",
            r#"{"stream":true,"x":{"stream_options":1}}"#,
        ] {
            let fields = object(serde_json::from_str(body).expect("json"));
            let spliced = splice_include_usage(body.as_bytes()).expect("an object");
            let mut full = fields.clone();
            assert!(inject_include_usage(
                Provider::Openai,
                "/v1/chat/completions",
                &mut full
            ));
            let spliced: Value = serde_json::from_slice(&spliced).expect("still JSON");
            assert_eq!(spliced, Value::Object(full), "{body}");
        }
        assert_eq!(
            splice_include_usage(b"{}").as_deref(),
            Some(&br#"{"stream_options":{"include_usage":true}}"#[..])
        );
        assert_eq!(splice_include_usage(b"[1]"), None);
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

        let mut body = object(json!({"model": "m"}));
        set_output_limit(
            Provider::Gemini,
            "/v1beta/models/m:generateContent",
            &mut body,
            42,
        );
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 42);
        let mut body = object(json!({"max_tokens": 1000}));
        set_output_limit(Provider::Openai, "/v1/chat/completions", &mut body, 10);
        assert_eq!(body, object(json!({"max_tokens": 10})));
        let mut body = object(json!({}));
        set_output_limit(Provider::Openai, "/v1/chat/completions", &mut body, 10);
        assert_eq!(body, object(json!({"max_completion_tokens": 10})));
    }

    #[test]
    fn include_usage_is_injected_only_when_missing() {
        let mut body = object(json!({"stream": true}));
        assert!(inject_include_usage(
            Provider::Openai,
            "/v1/chat/completions",
            &mut body
        ));
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert!(
            !inject_include_usage(Provider::Openai, "/v1/chat/completions", &mut body),
            "already there"
        );
        let mut not_streaming = object(json!({"stream": false}));
        assert!(!inject_include_usage(
            Provider::Openai,
            "/v1/chat/completions",
            &mut not_streaming
        ));
        assert!(!wants_include_usage(
            Provider::Openai,
            "/v1/chat/completions",
            &object(json!({"stream": true, "stream_options": "odd"}))
        ));
        let mut anthropic = object(json!({"stream": true}));
        assert!(!inject_include_usage(
            Provider::Anthropic,
            "/v1/messages",
            &mut anthropic
        ));
    }
}
