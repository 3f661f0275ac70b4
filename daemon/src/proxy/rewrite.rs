//! The two changes the gateway makes to a request body, and only when it must: lowering the
//! output limit to what the key's remaining budget pays for (SPEC §5 clamp), and asking
//! OpenAI for a streaming usage chunk the client did not request (so streams are billed).

use std::borrow::Cow;

use crate::config::Kind;
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

/// The OpenAI output-limit fields the API at `path` reads: a limit only in another endpoint's
/// field (`max_output_tokens` on chat) bounds nothing there, and an OpenAI-compatible server
/// that ignores it would generate up to the model's maximum.
fn openai_fields_read_at(path: &str) -> &'static [&'static str] {
    if path.ends_with("/responses") {
        &["max_output_tokens"]
    } else if path.ends_with("/chat/completions") {
        &["max_completion_tokens", "max_tokens"]
    } else if path.ends_with("/completions") {
        &["max_tokens"]
    } else {
        &OPENAI_OUTPUT_FIELDS
    }
}

/// The field a clamp adds at `path` when the body sets none of those the API reads.
fn openai_field_to_add(path: &str) -> &'static str {
    if path.ends_with("/responses") {
        "max_output_tokens"
    } else if path.ends_with("/chat/completions") {
        "max_completion_tokens"
    } else {
        "max_tokens"
    }
}

/// The request's own output limit per answer, if it sets one: the largest of the fields the
/// provider might read, provided one of those the endpoint reads is set (else none: the
/// model's maximum is reserved and a clamp adds the endpoint's own field).
pub fn requested_output(provider: Kind, path: &str, body: &impl Fields) -> Option<u64> {
    match provider {
        Kind::Openai | Kind::AzureOpenai => {
            let read_here = largest(openai_fields_read_at(path).iter().map(|f| body.field(f)));
            read_here?;
            largest(OPENAI_OUTPUT_FIELDS.iter().map(|f| body.field(f)))
        }
        Kind::Anthropic => body.field("max_tokens").and_then(Value::as_u64),
        Kind::Gemini => largest(gemini_config_fields(body, &GEMINI_OUTPUT_FIELDS)),
    }
}

/// How many answers the request asks for, each up to the output limit: OpenAI's `n` (and
/// the completions API's `best_of`, all of which are generated and billed), Gemini's
/// `candidateCount`. At least 1.
pub fn answers(provider: Kind, body: &impl Fields) -> u64 {
    let asked = match provider {
        Kind::Openai | Kind::AzureOpenai => largest(["n", "best_of"].iter().map(|f| body.field(f))),
        Kind::Anthropic => None,
        Kind::Gemini => largest(gemini_config_fields(body, &GEMINI_CANDIDATE_FIELDS)),
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
    provider: Kind,
    path: &str,
    body: &mut Members<'a>,
    tokens: u64,
) -> Result<(), serde_json::Error> {
    match provider {
        Kind::Openai | Kind::AzureOpenai => {
            // Every field present is lowered; if none the endpoint reads was among them, its
            // own is added, so the limit is one the server applies.
            let read_here = openai_fields_read_at(path)
                .iter()
                .any(|name| body.values_mut(name).next().is_some());
            lower_present(body, &OPENAI_OUTPUT_FIELDS, tokens)?;
            if !read_here {
                body.push(openai_field_to_add(path), number(tokens)?);
            }
        }
        Kind::Anthropic => {
            if !lower_present(body, &["max_tokens"], tokens)? {
                body.push("max_tokens", number(tokens)?);
            }
        }
        Kind::Gemini => {
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
pub fn wants_include_usage(provider: Kind, path: &str, body: &impl Fields) -> bool {
    let applies = provider.is_openai_format()
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
    provider: Kind,
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
mod tests;
