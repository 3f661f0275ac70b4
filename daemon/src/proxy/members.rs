//! A JSON object as its ordered members, each value kept as the bytes the client sent.
//!
//! The gateway changes a request body only at its top level (an output limit, OpenAI's
//! `stream_options`) or one object below it (Gemini's `generationConfig`). Parsing the body
//! into a `serde_json::Value` tree to change one number would nest one stack frame per level,
//! and serde_json refuses more than 128 levels: a body such as `"content":[[[…]]]` that the
//! provider itself accepts could then not be clamped (it was a 500, and charged). Here every
//! value is a [`RawValue`], which serde_json skips without recursion, so the rewrite works at
//! any depth, copies the values it does not change byte for byte, keeps the members' order,
//! and costs one scan of the body instead of a tree built and dropped.
//!
//! Duplicate names are kept as sent (JSON leaves their meaning to the reader): a change is
//! made to every member of that name, so whichever one the provider reads is the changed one.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of one JSON object, in order.
pub struct Members<'a>(Vec<(Cow<'a, str>, Cow<'a, RawValue>)>);

impl<'a> Members<'a> {
    /// The members of `json`, which must be one JSON object (whitespace around it allowed).
    pub fn parse(json: &'a str) -> Result<Members<'a>, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The values of every member called `name`, to read or replace.
    pub fn values_mut<'s>(
        &'s mut self,
        name: &'s str,
    ) -> impl Iterator<Item = &'s mut Cow<'a, RawValue>> + 's {
        self.0
            .iter_mut()
            .filter(move |(member, _)| member == name)
            .map(|(_, value)| value)
    }

    /// Sets `name` to `value`: every member of that name, or a new last member.
    pub fn set(&mut self, name: &'a str, value: Box<RawValue>) {
        let mut found = false;
        for existing in self.values_mut(name) {
            *existing = Cow::Owned(value.clone());
            found = true;
        }
        if !found {
            self.push(name, value);
        }
    }

    /// Adds a member at the end.
    pub fn push(&mut self, name: &'a str, value: Box<RawValue>) {
        self.0.push((Cow::Borrowed(name), Cow::Owned(value)));
    }

    /// The object written back: `{"name":value,…}`, values as they were or as set.
    pub fn to_vec(&self) -> Result<Vec<u8>, serde_json::Error> {
        let length: usize = self
            .0
            .iter()
            .map(|(name, value)| name.len() + value.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(length + 2);
        out.push(b'{');
        for (at, (name, value)) in self.0.iter().enumerate() {
            if at > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, name.as_ref())?;
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b'}');
        Ok(out)
    }

    /// The object as a raw value, to set as another object's member.
    pub fn to_raw(&self) -> Result<Box<RawValue>, serde_json::Error> {
        let bytes = self.to_vec()?;
        // Built from a name serde_json escaped and values it validated: UTF-8 and JSON.
        let text = String::from_utf8(bytes).map_err(serde::de::Error::custom)?;
        RawValue::from_string(text)
    }
}

/// A JSON number as a raw value.
pub fn number(value: u64) -> Result<Box<RawValue>, serde_json::Error> {
    let mut text = itoa::Buffer::new();
    raw(text.format(value))
}

/// `text`, the gateway's own JSON, as a raw value (checked: it is never a client's).
pub fn raw(text: &str) -> Result<Box<RawValue>, serde_json::Error> {
    RawValue::from_string(text.to_owned())
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Name(name)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            members.push((name, Cow::Borrowed(value)));
        }
        Ok(Members(members))
    }
}

/// A member's name: borrowed from the body unless it had escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(NameVisitor)
    }
}

struct NameVisitor;

impl<'de> Visitor<'de> for NameVisitor {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, name: &'de str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Borrowed(name)))
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Owned(name.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn writes_back_what_it_read() {
        let text = r#" {"model":"m", "a\"b":[1, 2], "n":{"x": null}, "model":"again"} "#;
        let members = Members::parse(text).expect("object");
        let out = members.to_vec().expect("written");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            r#"{"model":"m","a\"b":[1, 2],"n":{"x": null},"model":"again"}"#
        );
    }

    #[test]
    fn any_depth() {
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let text = format!(r#"{{"messages":{deep},"max_tokens":900}}"#);
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "too deep for a tree"
        );
        let mut members = Members::parse(&text).expect("no depth limit");
        members.set("max_tokens", number(7).expect("number"));
        let out = String::from_utf8(members.to_vec().expect("written")).expect("utf-8");
        assert_eq!(out, format!(r#"{{"messages":{deep},"max_tokens":7}}"#));
    }

    #[test]
    fn set_changes_every_member_of_the_name_or_appends_one() {
        let mut members = Members::parse(r#"{"a":1,"b":2,"a":3}"#).expect("object");
        members.set("a", number(9).expect("number"));
        members.set("c", raw(r#"{"include_usage":true}"#).expect("json"));
        let out: Value = serde_json::from_slice(&members.to_vec().expect("ok")).expect("json");
        assert_eq!(out, json!({"a": 9, "b": 2, "c": {"include_usage": true}}));
    }

    #[test]
    fn only_objects() {
        for text in ["[1]", "1", "\"s\"", "{", r#"{"a":}"#, r#"{"a":1} x"#] {
            assert!(Members::parse(text).is_err(), "{text}");
        }
        let escaped = Members::parse(r#"{"\u0061":1}"#).expect("object");
        assert_eq!(escaped.to_vec().expect("ok"), br#"{"a":1}"#);
    }
}
