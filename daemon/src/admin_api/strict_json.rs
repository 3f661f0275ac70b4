//! JSON bodies of the management API, parsed as `serde_json` does but refusing an object that
//! names a field twice.
//!
//! Why: `serde_json` keeps the last of two equal keys, so `{"spend_limit_usd": 1,
//! "spend_limit_usd": 1000}` set $1000 while a reviewer of the request (or a proxy or log
//! filter that keeps the first) read $1. A limit or an allowlist must mean one thing.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as one JSON value; a duplicate key anywhere is an error naming it.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "the field {key:?} is given twice"
                )));
            }
            let value = map.next_value_seed(Strict)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_as_serde_json_does() {
        for text in [
            r#"{"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "c": "\u00e9"}"#,
            "[]",
            "1e-6",
            "\"s\"",
        ] {
            let strict = parse(text.as_bytes()).expect("valid");
            let plain: Value = serde_json::from_str(text).expect("valid");
            assert_eq!(strict, plain, "{text}");
        }
    }

    #[test]
    fn a_field_given_twice_is_refused_at_any_depth() {
        let err =
            parse(br#"{"spend_limit_usd": 1, "spend_limit_usd": 1000}"#).expect_err("duplicate");
        assert!(
            err.to_string()
                .contains("\"spend_limit_usd\" is given twice"),
            "{err}"
        );
        assert!(parse(br#"{"a": [{"b": 1, "b": 2}]}"#).is_err());
        assert!(
            parse(br#"{"a": 1, "\u0061": 2}"#).is_err(),
            "escaped spelling"
        );
        assert_eq!(
            parse(br#"{"a": {"b": 1}, "b": {"a": 2}}"#).expect("distinct"),
            json!({"a": {"b": 1}, "b": {"a": 2}})
        );
        assert!(parse(b"{} x").is_err(), "trailing bytes");
    }
}
