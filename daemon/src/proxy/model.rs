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
        Ok(Skimmed {
            twice: Some(name), ..
        }) => Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            format!(
                "The request body gives the member {name:?} twice: the gateway and the \
                 provider could each read a different one. Send it once."
            ),
        )),
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

/// Top-level fields of a request body, by name: the pipeline reads a [`Skimmed`] body; tests
/// and the fuzz targets compare it with a `Map` of the whole body.
pub trait Fields {
    fn field(&self, name: &str) -> Option<&Value>;
}

impl Fields for Map<String, Value> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

/// A JSON object reduced to its [`READ_FIELDS`], one slot each: no map and no key is
/// allocated.
///
/// A read field given twice (its name perhaps spelled with escapes), or an object in one that
/// names a member twice (`generationConfig`, `stream_options`), is noted in `twice` and the
/// body refused: JSON leaves which duplicate counts to the reader, and the gateway would
/// check, price and clamp the last (as serde_json reads it) while a provider may act on the
/// first, e.g. `"max_tokens":100000,"max_tokens":10` reserved and left unclamped as 10.
#[derive(Debug, Default)]
pub struct Skimmed {
    values: [Option<Value>; READ_FIELDS.len()],
    twice: Option<&'static str>,
}

impl Fields for Skimmed {
    fn field(&self, name: &str) -> Option<&Value> {
        let index = READ_FIELDS.iter().position(|f| *f == name)?;
        self.values[index].as_ref()
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
                Some(index) => {
                    let Checked { value, twice } = map.next_value()?;
                    let slot = &mut fields.values[index];
                    if twice || slot.is_some() {
                        fields.twice.get_or_insert(READ_FIELDS[index]);
                    }
                    *slot = Some(value);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A read field's value, and whether an object it is names a member twice (members one level
/// down are what the gateway reads in one: `maxOutputTokens`, `include_usage`).
struct Checked {
    value: Value,
    twice: bool,
}

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl CheckedVisitor {
    fn once(value: Value) -> Checked {
        Checked {
            value,
            twice: false,
        }
    }
}

/// Builds the `Value` as serde_json's own visitor does, and notes a duplicate member name.
impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Checked, E> {
        Ok(Self::once(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Checked, E> {
        Ok(Self::once(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Checked, E> {
        Ok(Self::once(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Checked, E> {
        Ok(Self::once(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Checked, E> {
        Ok(Self::once(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Checked, E> {
        Ok(Self::once(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Self::once(Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Self::once(Value::Array(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut object = serde_json::Map::new();
        let mut twice = false;
        while let Some((name, value)) = map.next_entry::<String, Value>()? {
            twice |= object.insert(name, value).is_some();
        }
        Ok(Checked {
            value: Value::Object(object),
            twice,
        })
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

    /// A member the gateway reads, given twice (also spelled with escapes, or inside the
    /// generation config or stream options): JSON leaves which one counts to the reader, so
    /// the gateway could check, price and clamp one while the provider acts on the other.
    #[test]
    fn a_member_the_gateway_reads_given_twice_is_refused() {
        let headers = json_headers();
        for body in [
            r#"{"model":"gpt-4o","max_tokens":100000,"max_tokens":10}"#,
            r#"{"model":"gpt-4o","max_tokens":100000,"max\u005ftokens":10}"#,
            r#"{"model":"o1-pro","model":"gpt-4o-mini"}"#,
            r#"{"model":"m","stream":true,"stream":false}"#,
            r#"{"model":"m","n":8,"n":1}"#,
            r#"{"generationConfig":{"maxOutputTokens":100000,"maxOutputTokens":10}}"#,
            r#"{"generationConfig":{"candidateCount":8,"candidateCount":1}}"#,
            r#"{"generationConfig":{"a":1},"generationConfig":{"b":2}}"#,
            r#"{"stream":true,"stream_options":{"include_usage":false,"include_usage":true}}"#,
        ] {
            let body = Bytes::from_static(body.as_bytes());
            let err = json_body(&ModelSource::Body, &headers, &body).expect_err("refused");
            assert_eq!(err.code, ErrorCode::InvalidRequest);
            assert!(err.message.contains("twice"), "{}", err.message);
        }
        // Members the gateway does not read, and the same name at different levels, pass.
        for body in [
            r#"{"model":"m","metadata":{"a":1},"metadata":{"a":2}}"#,
            r#"{"model":"m","max_tokens":5,"messages":[{"max_tokens":9}]}"#,
            r#"{"generationConfig":{"thinkingConfig":{"x":1,"x":2}},"model":"m"}"#,
        ] {
            let body = Bytes::from_static(body.as_bytes());
            assert!(
                json_body(&ModelSource::Body, &headers, &body).is_ok(),
                "{body:?}"
            );
        }
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
            named_in(&headers, br#"{"mo\u0064el": "b"}"#).ok(),
            Some(Some("b".into())),
            "an escaped name is the same name"
        );
        assert!(
            named_in(&headers, br#"{"model": "a", "mo\u0064el": "b"}"#).is_err(),
            "given twice"
        );
        let mut multipart = http::HeaderMap::new();
        multipart.insert(
            "content-type",
            "multipart/form-data; boundary=x".parse().expect("value"),
        );
        assert_eq!(named_in(&multipart, b"--x\r\n").ok(), Some(None));
    }
}
