//! The usage objects of the three providers, read straight into counts.
//!
//! Every JSON response is read for its usage at its end, so this is on the request path:
//! building a `serde_json::Value` of the usage object (a map, a `String` per key) and then
//! looking fields up in it cost more than the rest of the metering. These types take the
//! numbers as the parser meets them and skip everything else in place.
//!
//! They never fail the document around them: a usage "object" that is not an object reads as
//! no usage; a count that is a number reads as that number (a fraction rounded up, one beyond
//! `u64` saturated; the per-request cap bounds it later); a count that is not a number at all
//! (negative, a string, ...) marks the whole usage object garbled, and it is not believed: the
//! request is billed as estimated rather than as a reported zero.
//!
//! A key named twice in an object reads as its last occurrence, as in a `serde_json::Value`
//! ([`last_wins_struct!`]): serde's derive refuses a duplicate field, which would fail the
//! whole document around it and leave a reported usage unread.

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
#[cfg(test)]
use serde_json::Value;

/// A struct read from a JSON object key by key: a known key is read into its field (a key
/// named twice: the last occurrence wins, as in a `serde_json::Value`), any other value is
/// skipped in place. Every field must read any JSON value without failing (the lenient types
/// of this module), so that an odd field never fails the document around it.
macro_rules! last_wins_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident: $ty:ty = $key:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, PartialEq, Eq)]
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty,)*
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct FieldsVisitor;

                impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("an object")
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$name, A::Error> {
                        const KEYS: &[&str] = &[$($key),*];
                        let mut fields = $name::default();
                        while let Some(key) =
                            map.next_key_seed($crate::proxy::usage::fields::KnownKey(KEYS))?
                        {
                            match key {
                                $(Some($key) => fields.$field = map.next_value()?,)*
                                _ => {
                                    map.next_value::<serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(fields)
                    }
                }

                deserializer.deserialize_map(FieldsVisitor)
            }
        }
    };
}

/// Reads an object's key as the one of `self.0` it equals (`None`: a key no field reads),
/// whether the key is borrowed from the input or unescaped into a scratch buffer.
pub struct KnownKey(pub &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KnownKey {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KnownKey {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().copied().find(|known| *known == key))
    }
}

/// The `visit_*` methods of a lenient visitor for the JSON values it does not read: each
/// returns `$absent`, and a skipped array or object is consumed, never an error.
macro_rules! absent_otherwise {
    ($absent:expr; $($kind:ident),*) => { $(absent_otherwise!(@$kind $absent);)* };
    (@bool $absent:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($absent)
        }
    };
    (@u64 $absent:expr) => {
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($absent)
        }
    };
    (@i64 $absent:expr) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($absent)
        }
    };
    (@f64 $absent:expr) => {
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($absent)
        }
    };
    (@str $absent:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($absent)
        }
    };
    (@null $absent:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($absent)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($absent)
        }
    };
    (@seq $absent:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($absent)
        }
    };
    (@map $absent:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($absent)
        }
    };
}

/// A token count: `Some` for a non-negative number (a fraction rounded up, one beyond `u64`
/// saturated), `None` when absent or `null`. The flag marks a count that is present but not a
/// count at all (negative, a string, a boolean, an array, an object): a usage object holding
/// one is garbled, and is not believed (see [`Usage::garbled`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count(pub Option<u64>, pub bool);

const GARBLED: Count = Count(None, true);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
        Ok(Count(Some(n), false))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
        Ok(u64::try_from(n).map_or(GARBLED, |n| Count(Some(n), false)))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Count, E> {
        // `as` saturates: 1e20 (an integer literal beyond u64 reads as a float) is u64::MAX,
        // which the per-request cap then bounds.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(if n >= 0.0 {
            Count(Some(n.ceil() as u64), false)
        } else {
            GARBLED
        })
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Count, D::Error> {
        Count::deserialize(deserializer)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
        Ok(Count(None, false))
    }

    fn visit_none<E: de::Error>(self) -> Result<Count, E> {
        Ok(Count(None, false))
    }

    absent_otherwise!(GARBLED; bool, str, seq, map);
}

impl Count {
    pub fn get(self) -> Option<u64> {
        self.0
    }
}

impl Usage {
    /// Whether any count in it is present but not a number: such a report is not read at
    /// all, so the request is billed as estimated (from its size and what streamed), never
    /// as a reported zero.
    pub fn garbled(&self) -> bool {
        [
            self.prompt_tokens,
            self.completion_tokens,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            self.prompt_token_count,
            self.tool_use_prompt_token_count,
            self.cached_content_token_count,
            self.candidates_token_count,
            self.thoughts_token_count,
        ]
        .iter()
        .any(|count| count.1)
    }
}

/// `T` when the value is a JSON object, `None` for anything else (skipped, not an error).
#[derive(Debug, PartialEq, Eq)]
pub struct Object<T>(pub Option<T>);

impl<T> Default for Object<T> {
    fn default() -> Self {
        Object(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjectVisitor(std::marker::PhantomData))
    }
}

struct ObjectVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Object(Some(t)))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Object<T>, D::Error> {
        Object::deserialize(deserializer)
    }

    absent_otherwise!(Object(None); null, bool, u64, i64, f64, str, seq);
}

last_wins_struct! {
    /// Every field of the three providers' usage objects the gateway bills from (a
    /// provider's object carries only its own; the rest stay absent).
    pub struct Usage {
        // OpenAI chat and completions.
        pub prompt_tokens: Count = "prompt_tokens",
        pub completion_tokens: Count = "completion_tokens",
        pub prompt_tokens_details: Object<Details> = "prompt_tokens_details",
        // OpenAI Responses API, and Anthropic.
        pub input_tokens: Count = "input_tokens",
        pub output_tokens: Count = "output_tokens",
        pub input_tokens_details: Object<Details> = "input_tokens_details",
        // Anthropic.
        pub cache_read_input_tokens: Count = "cache_read_input_tokens",
        pub cache_creation_input_tokens: Count = "cache_creation_input_tokens",
        // Gemini.
        pub prompt_token_count: Count = "promptTokenCount",
        pub tool_use_prompt_token_count: Count = "toolUsePromptTokenCount",
        pub cached_content_token_count: Count = "cachedContentTokenCount",
        pub candidates_token_count: Count = "candidatesTokenCount",
        pub thoughts_token_count: Count = "thoughtsTokenCount",
    }
}

last_wins_struct! {
    /// OpenAI's `prompt_tokens_details` / `input_tokens_details`.
    pub struct Details {
        pub cached_tokens: Count = "cached_tokens",
    }
}

impl Details {
    pub fn cached(details: &Object<Details>) -> Option<u64> {
        details.0.as_ref().and_then(|d| d.cached_tokens.get())
    }
}

last_wins_struct! {
    /// `{"usage": {...}}` one level down (Anthropic's `message`, OpenAI Responses'
    /// `response`).
    pub struct Nested {
        pub usage: Object<Box<Usage>> = "usage",
    }
}

impl Object<Nested> {
    /// The usage object one level down, when there is one.
    pub fn usage(&self) -> Option<&Usage> {
        self.0.as_ref().and_then(|nested| nested.usage.0.as_deref())
    }
}

/// The `type` of a document, compared in place (no `String`): Anthropic's event and body
/// types, and OpenAI Responses' text delta event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Type {
    MessageStart,
    MessageDelta,
    Message,
    ContentBlockDelta,
    OutputTextDelta,
    #[default]
    Other,
}

impl<'de> Deserialize<'de> for Type {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TypeVisitor)
    }
}

struct TypeVisitor;

impl<'de> Visitor<'de> for TypeVisitor {
    type Value = Type;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a type name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Type, E> {
        Ok(match name {
            "message_start" => Type::MessageStart,
            "message_delta" => Type::MessageDelta,
            "message" => Type::Message,
            "content_block_delta" => Type::ContentBlockDelta,
            "response.output_text.delta" => Type::OutputTextDelta,
            _ => Type::Other,
        })
    }

    // A `type` that is not a string is no kind the gateway reads.
    absent_otherwise!(Type::Other; u64, i64, f64, bool, null, seq, map);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(json: &str) -> Object<Usage> {
        serde_json::from_str(json).expect("parses")
    }

    #[test]
    fn a_count_is_a_non_negative_integer_and_anything_else_is_absent() {
        let read = |v: &str| {
            usage(&format!(
                r#"{{"prompt_tokens": {v}, "completion_tokens": 7}}"#
            ))
            .0
            .map(|u| (u.prompt_tokens.get(), u.completion_tokens.get()))
        };
        assert_eq!(read("12"), Some((Some(12), Some(7))));
        assert_eq!(
            read("18446744073709551615"),
            Some((Some(u64::MAX), Some(7)))
        );
        assert_eq!(read("1.5"), Some((Some(2), Some(7))), "rounded up");
        assert_eq!(read("1e3"), Some((Some(1000), Some(7))));
        assert_eq!(
            read("100000000000000000000"),
            Some((Some(u64::MAX), Some(7))),
            "beyond u64: saturated, then capped per request"
        );
        assert_eq!(read("null"), Some((None, Some(7))));
        let garbled = |v: &str| {
            usage(&format!(
                r#"{{"prompt_tokens": {v}, "completion_tokens": 7}}"#
            ))
            .0
            .map(|u| u.garbled())
        };
        assert_eq!(garbled("12"), Some(false));
        assert_eq!(garbled("null"), Some(false));
        for not_a_count in ["-1", "-0.5", "\"12\"", "true", "[1, 2]", r#"{"n": 1}"#] {
            assert_eq!(read(not_a_count), Some((None, Some(7))), "{not_a_count}");
            assert_eq!(garbled(not_a_count), Some(true), "{not_a_count}");
        }
    }

    #[test]
    fn usage_that_is_not_an_object_is_no_usage_and_the_document_still_reads() {
        for value in ["null", "3", "\"none\"", "[{\"prompt_tokens\": 1}]", "false"] {
            let body =
                format!(r#"{{"usage": {value}, "usageMetadata": {{"promptTokenCount": 4}}}}"#);
            #[derive(Deserialize)]
            struct Doc {
                usage: Object<Usage>,
                #[serde(rename = "usageMetadata")]
                usage_metadata: Object<Usage>,
            }
            let doc: Doc = serde_json::from_str(&body).expect(&body);
            assert_eq!(doc.usage.0, None, "{value}");
            assert_eq!(
                doc.usage_metadata.0.map(|u| u.prompt_token_count.get()),
                Some(Some(4))
            );
        }
    }

    #[test]
    fn nested_details_and_unknown_fields() {
        let read = usage(
            r#"{"prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": 80,
                "audio_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 5},
                "extra": [1, {"a": "usage"}], "input_tokens_details": "n/a"}"#,
        )
        .0
        .expect("an object");
        assert_eq!(Details::cached(&read.prompt_tokens_details), Some(80));
        assert_eq!(Details::cached(&read.input_tokens_details), None);
        assert_eq!(read.prompt_tokens.get(), Some(100));
    }

    #[test]
    fn the_usage_of_a_parsed_value_reads_the_same() {
        let value: Value =
            serde_json::from_str(r#"{"input_tokens": 3, "output_tokens": -2}"#).expect("json");
        let read = Object::<Usage>::deserialize(&value)
            .expect("lenient")
            .0
            .expect("an object");
        assert_eq!(
            (read.input_tokens.get(), read.output_tokens.get()),
            (Some(3), None)
        );
        assert_eq!(
            Object::<Usage>::deserialize(&Value::Null).ok(),
            Some(Object(None))
        );
    }

    /// A `Value` keeps the last of a key named twice; serde's derive would refuse the whole
    /// object (and with it the document around it).
    #[test]
    fn a_key_named_twice_reads_as_its_last_occurrence() {
        let read = usage(
            r#"{"prompt_tokens": 5, "prompt_tokens": 7, "prompt_tokens_details": {"cached_tokens": 1},
                "prompt_tokens_details": {"cached_tokens": 2, "cached_tokens": 3}, "pro\u006dpt_tokens": 9}"#,
        )
        .0
        .expect("an object");
        assert_eq!(read.prompt_tokens.get(), Some(9), "escaped keys match too");
        assert_eq!(Details::cached(&read.prompt_tokens_details), Some(3));
        let garbled_then_fine = usage(r#"{"prompt_tokens": "x", "prompt_tokens": 4}"#)
            .0
            .expect("an object");
        assert!(
            !garbled_then_fine.garbled(),
            "the last occurrence is what counts"
        );
    }

    #[test]
    fn kinds_are_matched_and_anything_else_is_other() {
        let kind = |v: &str| serde_json::from_str::<Type>(v).expect(v);
        assert_eq!(kind("\"message_start\""), Type::MessageStart);
        assert_eq!(kind("\"message_delta\""), Type::MessageDelta);
        assert_eq!(kind("\"message\""), Type::Message);
        assert_eq!(kind("\"content_block_delta\""), Type::ContentBlockDelta);
        assert_eq!(kind("\"error\""), Type::Other);
        assert_eq!(kind("\"mess\\u0061ge\""), Type::Message, "escaped text");
        for other in ["3", "null", "[\"message\"]", r#"{"type": "message"}"#] {
            assert_eq!(kind(other), Type::Other, "{other}");
        }
    }
}
