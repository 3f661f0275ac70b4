//! The model a request names, and the model check (SPEC §3).

use bytes::Bytes;
use gateway_shared::ErrorCode;
use serde_json::{Map, Value};

use super::route::ModelSource;
use crate::error::GatewayError;
use crate::keys::policy::Policy;

/// The request body's top-level fields the gateway reads (the model, output limits, stream
/// flags), when it is JSON and the request names a model (in the body or the path). The whole body is still checked to
/// be JSON: a body that does not parse is a 400, since the gateway cannot check what it
/// cannot read. Everything else is skipped without building a tree (a full `Value` parse
/// and its drop cost more than the rest of the checks together; `rewrite` parses fully only
/// when it must change the body).
pub fn json_body(
    source: &ModelSource,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> Result<Option<Skimmed>, GatewayError> {
    // Gemini names the model in the path, but its output limit (which the spend step reads
    // and may clamp) is in the body all the same.
    let reads_body = matches!(source, ModelSource::Body | ModelSource::Path(_));
    if !reads_body || body.is_empty() || !is_json(headers, body) {
        return Ok(None);
    }
    // serde_json passes over the strings of skipped fields without checking their UTF-8, and
    // a body that is not UTF-8 is not JSON (RFC 8259 §8.1); checked whole, then parsed as text.
    let Ok(text) = std::str::from_utf8(without_bom(body)) else {
        return Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            "The request body is not valid JSON: it is not UTF-8.",
        ));
    };
    match serde_json::from_str::<Skimmed>(text) {
        Ok(fields) => Ok(Some(fields)),
        Err(err) if err.classify() == serde_json::error::Category::Data => Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            "The request body must be a JSON object.",
        )),
        Err(err) => Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            format!("The request body is not valid JSON: {err}."),
        )),
    }
}

/// Top-level fields any pipeline step reads.
const READ_FIELDS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "best_of",
    "background",
    "generationConfig",
    "generation_config",
];

/// Top-level fields of a request body, by name: what the pipeline reads is the same whether
/// the body was skimmed ([`Skimmed`]) or, to be rewritten, parsed whole (a `Map`).
pub trait Fields {
    fn field(&self, name: &str) -> Option<&Value>;
}

impl Fields for Map<String, Value> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

/// A JSON object reduced to its [`READ_FIELDS`], one slot each (a later duplicate wins, as
/// in a full parse): no map and no key is allocated.
#[derive(Debug, Default)]
pub struct Skimmed([Option<Value>; READ_FIELDS.len()]);

impl Fields for Skimmed {
    fn field(&self, name: &str) -> Option<&Value> {
        let index = READ_FIELDS.iter().position(|f| *f == name)?;
        self.0[index].as_ref()
    }
}

impl<'de> serde::Deserialize<'de> for Skimmed {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SkimVisitor)
    }
}

struct SkimVisitor;

impl<'de> serde::de::Visitor<'de> for SkimVisitor {
    type Value = Skimmed;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Skimmed, A::Error> {
        let mut fields = Skimmed::default();
        while let Some(FieldName(index)) = map.next_key()? {
            match index {
                Some(index) => fields.0[index] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A key: which of [`READ_FIELDS`] it is (its index), if any. Compared in place, never
/// allocated.
struct FieldName(Option<usize>);

impl<'de> serde::Deserialize<'de> for FieldName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FieldNameVisitor)
    }
}

struct FieldNameVisitor;

impl serde::de::Visitor<'_> for FieldNameVisitor {
    type Value = FieldName;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<FieldName, E> {
        Ok(FieldName(READ_FIELDS.iter().position(|f| *f == name)))
    }
}

/// The model named by the request, if any.
pub fn named(source: &ModelSource, json: Option<&Skimmed>) -> Result<Option<String>, GatewayError> {
    match source {
        ModelSource::Listing | ModelSource::None => Ok(None),
        ModelSource::Path(model) => Ok(Some(model.clone())),
        ModelSource::Body => match json.and_then(|j| j.field("model")) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(model)) => Ok(Some(model.clone())),
            Some(_) => Err(GatewayError::new(
                ErrorCode::InvalidRequest,
                "The request's \"model\" must be a string.",
            )),
        },
    }
}

/// 403 `model_not_allowed` unless the key allows `model`. Listings pass; a request that names
/// no model passes only keys without a model restriction.
pub fn check(
    source: &ModelSource,
    model: Option<&str>,
    policy: &Policy,
) -> Result<(), GatewayError> {
    if matches!(source, ModelSource::Listing) {
        return Ok(());
    }
    match model {
        Some(model) if policy.allows_model(model) => Ok(()),
        Some(model) => Err(GatewayError::new(
            ErrorCode::ModelNotAllowed,
            format!("This key may not use the model {model:?}."),
        )),
        None if !policy.restricts_models() => Ok(()),
        None => Err(GatewayError::new(
            ErrorCode::ModelNotAllowed,
            "This key is restricted to certain models and this request names none.",
        )),
    }
}

/// JSON by content type, or else by shape: a body that opens with `{` is read as JSON
/// whatever its type says (curl's `-d` sends form-encoded, some clients `text/plain`), since
/// providers parse it as JSON all the same and the gateway must read the model and output
/// limit it will act on. Multipart bodies (audio uploads) are never JSON.
fn is_json(headers: &http::HeaderMap, body: &Bytes) -> bool {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    if let Some(essence) = content_type {
        let suffix = essence
            .len()
            .checked_sub(5)
            .and_then(|at| essence.get(at..));
        if essence.eq_ignore_ascii_case("application/json")
            || suffix.is_some_and(|s| s.eq_ignore_ascii_case("+json"))
        {
            return true;
        }
        if essence
            .get(..10)
            .is_some_and(|s| s.eq_ignore_ascii_case("multipart/"))
        {
            return false;
        }
    }
    without_bom(body).iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The body without a leading UTF-8 byte order mark, which JSON parsers refuse but some
/// Windows clients write.
pub fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers() -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            "application/json; charset=utf-8".parse().expect("value"),
        );
        headers
    }

    fn named_in(
        headers: &http::HeaderMap,
        body: &'static [u8],
    ) -> Result<Option<String>, GatewayError> {
        let body = Bytes::from_static(body);
        let json = json_body(&ModelSource::Body, headers, &body)?;
        named(&ModelSource::Body, json.as_ref())
    }

    #[test]
    fn keeps_only_the_fields_the_gateway_reads() {
        let body = Bytes::from_static(
            br#"{"messages": [{"role": "user", "content": "hi"}], "model": "m", "stream": true,
                "stream_options": {"include_usage": false}, "max_tokens": 5, "temperature": 1}"#,
        );
        let fields = json_body(&ModelSource::Body, &json_headers(), &body)
            .expect("valid")
            .expect("json");
        let mut names: Vec<&str> = READ_FIELDS
            .iter()
            .copied()
            .filter(|name| fields.field(name).is_some())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["max_tokens", "model", "stream", "stream_options"]);
        assert_eq!(
            fields.field("stream_options").map(|o| &o["include_usage"]),
            Some(&Value::Bool(false))
        );
        assert_eq!(
            fields.field("temperature"),
            None,
            "not a field the gateway reads"
        );
    }

    #[test]
    fn json_is_known_by_its_content_type_in_any_case() {
        let body = Bytes::from_static(b"{}");
        let with = |content_type: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("content-type", content_type.parse().expect("value"));
            is_json(&headers, &body)
        };
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ;x=1",
            "application/vnd.api+JSON",
        ] {
            assert!(with(yes), "{yes}");
        }
        for by_shape in ["text/plain", "json", "+jsonx", "application/jsonp"] {
            assert!(with(by_shape), "{by_shape}: a body opening with a brace");
        }
        assert!(!with("multipart/form-data"), "never JSON");
        assert!(is_json(&http::HeaderMap::new(), &body), "no type: by shape");
        let mut plain = http::HeaderMap::new();
        plain.insert("content-type", "text/plain".parse().expect("value"));
        assert!(!is_json(&plain, &Bytes::from_static(b"hello {")));
        assert!(
            is_json(&plain, &Bytes::from_static(b"\xEF\xBB\xBF {}")),
            "after a BOM"
        );
    }

    /// Found by fuzzing (`fuzz/corpus/request_body/crash-ec68d3c4…`): serde_json passes over
    /// the strings of fields the skim does not read without checking their UTF-8, so a body
    /// that is not UTF-8 (not JSON at all) was taken, and failed only when rewritten (a 500).
    #[test]
    fn a_body_that_is_not_utf8_is_not_json() {
        let err = named_in(
            &json_headers(),
            b"{\"messages\": \"\xff\xfe\", \"model\": \"m\"}",
        )
        .expect_err("not UTF-8");
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn reads_the_model_from_a_json_body() {
        let headers = json_headers();
        assert_eq!(
            named_in(
                &headers,
                br#"{"messages": [], "model": "gpt-4o-mini", "stream": true}"#
            )
            .ok(),
            Some(Some("gpt-4o-mini".into()))
        );
        assert_eq!(named_in(&headers, br#"{"input": "x"}"#).ok(), Some(None));
        assert_eq!(
            named_in(&headers, b"{not json").map_err(|e| e.code).err(),
            Some(ErrorCode::InvalidRequest)
        );
        assert!(named_in(&headers, br#"{"model": 4}"#).is_err());
        assert!(named_in(&headers, br#"[1]"#).is_err());
        assert!(named_in(&headers, br#"["gpt-4o"]"#).is_err());
        assert!(named_in(&headers, br#"{"model": "a"} x"#).is_err());
        assert!(named_in(&headers, br#"{"x": [1, {"y": }], "model": "a"}"#).is_err());
        assert_eq!(
            named_in(&headers, br#"{"model": "a", "mo\u0064el": "b"}"#).ok(),
            Some(Some("b".into())),
            "escaped keys are the same key; the later one wins"
        );
        let mut multipart = http::HeaderMap::new();
        multipart.insert(
            "content-type",
            "multipart/form-data; boundary=x".parse().expect("value"),
        );
        assert_eq!(named_in(&multipart, b"--x\r\n").ok(), Some(None));
    }
}
