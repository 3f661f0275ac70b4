//! The top-level members of a JSON object, found without parsing the values in between.
//!
//! A JSON response is read at its end for a few top-level fields (`usage` and its kin). A
//! serde pass over the whole document decodes every key and walks every value of `choices`
//! (the bulk of the bytes) token by token. Here a value the caller does not want is stepped
//! over: strings by a `memchr` jump to their closing quote, containers by counting brackets
//! outside strings. Only the wanted values are then parsed, by serde, from their own bytes.
//!
//! Hand-written rather than a crate: SIMD JSON crates parse (or tape) the whole document,
//! which is the work this avoids. It validates only the object's own framing; a malformed
//! skipped value is not noticed (the document is the provider's and is forwarded untouched
//! either way), and a malformed wanted value fails its own parse.

/// Calls `each(key, value)` for each top-level member of the object in `text`, in order: the
/// key's raw bytes with their quotes (escapes as written, see [`key_text`]) and the value's
/// raw bytes. Returns `false` when `text` is not an object or its framing breaks off (members
/// before that point were still reported).
pub fn each_member<'a>(text: &'a [u8], mut each: impl FnMut(&'a [u8], &'a [u8])) -> bool {
    let Some(mut at) = skip_space(text, 0).filter(|&at| text[at] == b'{') else {
        return false;
    };
    at += 1;
    match skip_space(text, at) {
        Some(next) if text[next] == b'}' => return true,
        Some(next) => at = next,
        None => return false,
    }
    loop {
        if text.get(at) != Some(&b'"') {
            return false;
        }
        let Some(key_end) = string_end(text, at) else {
            return false;
        };
        let key = &text[at..key_end];
        let Some(colon) = skip_space(text, key_end).filter(|&c| text[c] == b':') else {
            return false;
        };
        let Some(value_start) = skip_space(text, colon + 1) else {
            return false;
        };
        let Some(value_end) = value_end(text, value_start) else {
            return false;
        };
        each(key, &text[value_start..value_end]);
        match skip_space(text, value_end).map(|next| (next, text[next])) {
            Some((next, b',')) => match skip_space(text, next + 1) {
                Some(following) => at = following,
                None => return false,
            },
            Some((_, b'}')) => return true,
            _ => return false,
        }
    }
}

/// A raw key (with its quotes, as [`each_member`] gives it) as the text it stands for: the
/// bytes between the quotes, or, when it has escapes, the decoded key (`"us\u0061ge"` is
/// `usage`); `None` when it does not decode.
pub fn key_text(raw: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    let inner = raw.get(1..raw.len().saturating_sub(1))?;
    if !inner.contains(&b'\\') {
        return Some(std::borrow::Cow::Borrowed(inner));
    }
    let key: String = serde_json::from_slice(raw).ok()?;
    Some(std::borrow::Cow::Owned(key.into_bytes()))
}

fn skip_space(text: &[u8], from: usize) -> Option<usize> {
    let offset = text
        .get(from..)?
        .iter()
        .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))?;
    Some(from + offset)
}

/// `text[start]` is a quote: the index just past the closing quote.
fn string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    // Most strings here are short (keys, ids, roles): a plain loop beats `memchr`'s set-up.
    // A long one (generated text) is left to `memchr` after the first bytes.
    let short_until = at + 32;
    loop {
        let b = *text.get(at)?;
        match b {
            b'"' => return Some(at + 1),
            // The escaped byte cannot end the string (`\"`), whatever it is.
            b'\\' => at += 2,
            _ => at += 1,
        }
        if at >= short_until {
            break;
        }
    }
    loop {
        at += memchr::memchr2(b'"', b'\\', text.get(at..)?)?;
        if text[at] == b'\\' {
            at += 2;
        } else {
            return Some(at + 1);
        }
    }
}

/// The index just past the value that starts at `start`.
fn value_end(text: &[u8], start: usize) -> Option<usize> {
    match *text.get(start)? {
        b'"' => string_end(text, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = start;
            loop {
                match *text.get(at)? {
                    b'"' => {
                        at = string_end(text, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        // A number, `true`, `false` or `null`: up to the next delimiter.
        _ => {
            let rest = &text[start..];
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                .unwrap_or(rest.len());
            Some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn members(text: &str) -> (bool, Vec<(String, String)>) {
        let mut out = Vec::new();
        let whole = each_member(text.as_bytes(), |key, value| {
            out.push((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        });
        (whole, out)
    }

    #[test]
    fn finds_each_top_level_member_and_skips_nested_decoys() {
        let text = r#" { "id" : "x\"}{" , "choices":[{"message":{"content":"\"usage\": {}"},
            "usage": {"prompt_tokens": 1}}], "usage" :{"prompt_tokens":12,"n":[1,{"a":"]"}]},
            "created": 17e2, "ok": true, "none": null } "#;
        let (whole, found) = members(text);
        assert!(whole);
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                r#""id""#,
                r#""choices""#,
                r#""usage""#,
                r#""created""#,
                r#""ok""#,
                r#""none""#
            ]
        );
        assert_eq!(found[2].1, r#"{"prompt_tokens":12,"n":[1,{"a":"]"}]}"#);
        assert_eq!(found[3].1, "17e2");
        assert_eq!(found[5].1, "null");
    }

    #[test]
    fn long_strings_with_escapes_past_the_short_scan() {
        let long = format!(r#"{}\"{}\\"#, "a".repeat(40), "b".repeat(100));
        let text = format!(r#"{{"text": "{long}", "usage": {{"n": "{long}"}}, "last": 1}}"#);
        let (whole, found) = members(&text);
        assert!(whole);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].1, format!("\"{long}\""));
        assert_eq!(found[2].1, "1");
    }

    #[test]
    fn broken_framing_stops_the_walk() {
        for text in [
            "",
            "[]",
            "{",
            r#"{"a" 1}"#,
            r#"{"a": 1"#,
            r#"{"a": "x"#,
            r#"{"a": [1}"#,
            "{,}",
        ] {
            assert!(!members(text).0, "{text:?}");
        }
        assert_eq!(members("{}"), (true, vec![]));
        let (whole, found) = members(r#"{"a": 1, "b": [2, "#);
        assert!(!whole);
        assert_eq!(
            found,
            [(r#""a""#.to_owned(), "1".to_owned())],
            "what came before is kept"
        );
    }

    #[test]
    fn escaped_keys_are_decoded_before_comparing() {
        let text = |raw: &[u8]| key_text(raw).map(|k| k.into_owned());
        assert_eq!(text(br#""usage""#).as_deref(), Some(&b"usage"[..]));
        assert_eq!(text(br#""us\u0061ge""#).as_deref(), Some(&b"usage"[..]));
        assert_eq!(text(br#""us\"age""#).as_deref(), Some(&b"us\"age"[..]));
        assert_eq!(text(br#""""#).as_deref(), Some(&b""[..]));
        assert_eq!(text(br#""\x""#), None, "not a JSON escape");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            // Quarters: floats that print and read back exactly (the comparison is of values).
            any::<i32>().prop_map(|n| Value::from(f64::from(n) / 4.0)),
            ".*".prop_map(Value::String),
            // Text that looks like structure, to be skipped as text.
            prop_oneof![Just("\"usage\": {}"), Just("}]\\\""), Just("{[")]
                .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((".*", inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        /// Every member of any serialized object is found, with the key and value serde
        /// reads, in compact and in pretty form.
        #[test]
        fn agrees_with_serde_on_any_object(
            pairs in prop::collection::vec((".*", json_value()), 0..8),
            pretty in any::<bool>(),
        ) {
            let object = Value::Object(pairs.into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&object)
            } else {
                serde_json::to_string(&object)
            }
            .expect("serializes");
            let mut seen = Map::new();
            let whole = each_member(text.as_bytes(), |key, value| {
                let key: String = serde_json::from_slice(key).expect("a key");
                let value: Value = serde_json::from_slice(value).expect("a value");
                seen.insert(key, value);
            });
            prop_assert!(whole);
            prop_assert_eq!(Value::Object(seen), object);
        }
    }
}
