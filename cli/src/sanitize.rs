//! Text from the daemon, made safe to put on a terminal.
//!
//! Names, globs, audit actors and error messages come from the daemon, and the daemon prints
//! what its store holds: rows written before it refused control characters, a daemon of
//! another version, or whoever answers on a misconfigured profile. Written raw, a name holding
//! `ESC ]0;… BEL` retitles the operator's terminal, a C1 `CSI` (U+009B, which some terminals
//! obey in UTF-8) moves the cursor or clears the screen, and a right-to-left override makes
//! `exe.txt` read as `txt.exe`. So every character [`is_terminal_control`] names is written
//! visibly, one way everywhere (tables, details, messages, prompts, the dashboard): as Rust
//! writes it, `\u{1b}`, which says exactly which character it was. Backslashes themselves are
//! left alone, so ordinary text reads as it is; a name that spells `\u{1b}` literally reads
//! like an escaped one, which misleads no terminal.
//!
//! JSON output is for scripts and must stay exact. serde_json escapes C0 but writes DEL, C1
//! and the bidi controls raw, and JSON is often read in a terminal (`gwctl -o json … | less
//! -R`, or no pipe at all); [`JsonFormatter`] escapes those too, as JSON's own `\u009b`,
//! which decodes to the very same string: `-o json` is both lossless and terminal-safe.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};

/// What a terminal may act on instead of showing: C0 (line breaks and tabs included: in one
/// field they would break a table row), DEL and C1 (`char::is_control`, the `Cc` category),
/// and the bidi controls that reorder what follows them (embeddings, overrides, isolates,
/// marks) and the Unicode line and paragraph separators.
pub fn is_terminal_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// One value from the daemon (a name, a glob, a message) as it may be shown: every
/// [`is_terminal_control`] character written as `\u{1b}`. Borrowed when there is none.
pub fn text(value: &str) -> Cow<'_, str> {
    escape(value, is_terminal_control)
}

/// Text of several lines, put together by gwctl: as [`text`], but its line breaks stay.
/// What every write to stdout and stderr goes through, so that a daemon-supplied value a
/// renderer forgot to escape still cannot reach the terminal raw.
pub fn lines(value: &str) -> Cow<'_, str> {
    escape(value, |c| c != '\n' && is_terminal_control(c))
}

fn escape(value: &str, escaped: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !value.chars().any(&escaped) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        if escaped(c) {
            // `\u{1b}`: the form Rust's own `{:?}` uses for these characters.
            let _ = write!(out, "{}", c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Every string in `value` (object keys too) escaped with [`text`]: what the dashboard does to
/// each answer as it arrives, so nothing it draws can hold a control character.
pub fn escape_json_strings(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Cow::Owned(escaped) = text(s) {
                *s = escaped;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(escape_json_strings),
        Value::Object(map) => {
            if map.keys().any(|k| matches!(text(k), Cow::Owned(_))) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (text(&k).into_owned(), v))
                    .collect();
            }
            map.values_mut().for_each(escape_json_strings);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// `value` as pretty JSON (serde_json's layout, two-space indent), terminal-safe.
pub fn to_json_pretty<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    to_json_with(value, PrettyFormatter::new())
}

/// `value` as compact JSON, terminal-safe.
pub fn to_json_compact<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    to_json_with(value, serde_json::ser::CompactFormatter)
}

fn to_json_with<T: Serialize + ?Sized, F: Formatter>(
    value: &T,
    formatter: F,
) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, JsonFormatter(formatter));
    value.serialize(&mut serializer)?;
    // serde_json writes UTF-8 only; the lossy path is never taken.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// A serde_json formatter that also escapes DEL, C1 and the bidi controls inside strings, as
/// `\u009b` (serde_json itself escapes C0). Layout is the wrapped formatter's.
pub struct JsonFormatter<F>(pub F);

impl<F: Formatter> Formatter for JsonFormatter<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if is_terminal_control(c) {
                writer.write_all(&fragment.as_bytes()[start..at])?;
                // Every such character is in the Basic Multilingual Plane: one `\uXXXX`.
                write!(writer, "\\u{:04x}", u32::from(c))?;
                start = at + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    // The layout is the wrapped formatter's: every method that places brackets, commas and
    // indentation is handed on.
    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_array(writer)
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array(writer)
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(writer, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_array_value(writer)
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object(writer)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object(writer)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(writer, first)
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_key(writer)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.begin_object_value(writer)
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.0.end_object_value(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the e2e test stores: a title change, a C1 CSI, a right-to-left override, a
    /// carriage return and DEL.
    const HOSTILE: &str = "evil\u{1b}]0;pwned\u{7}\u{9b}2J\u{202e}exe.txt\r\u{7f}";

    fn check_text(input: &str, expected: &str) {
        assert_eq!(text(input), expected, "{input:?}");
    }

    #[test]
    fn control_characters_are_escaped_visibly() {
        check_text(
            HOSTILE,
            r"evil\u{1b}]0;pwned\u{7}\u{9b}2J\u{202e}exe.txt\u{d}\u{7f}",
        );
        check_text("a\nb\tc", r"a\u{a}b\u{9}c");
        check_text("\u{0}\u{1f}\u{80}\u{9f}", r"\u{0}\u{1f}\u{80}\u{9f}");
        check_text(
            "\u{61c}\u{200e}\u{200f}\u{2028}\u{2029}\u{202a}\u{2066}\u{2069}",
            r"\u{61c}\u{200e}\u{200f}\u{2028}\u{2029}\u{202a}\u{2066}\u{2069}",
        );
        // Printable text, whatever its script, is left as it is, backslashes included.
        for plain in [
            "backend-prod",
            "gpt-4o*",
            "ünïcödé 名前 🔑",
            r"C:\keys",
            "\u{a0}x",
            "",
        ] {
            assert!(matches!(text(plain), Cow::Borrowed(_)), "{plain:?}");
        }
        // Emoji sequences keep their joiner (U+200D is no control).
        check_text("👩\u{200d}💻", "👩\u{200d}💻");
    }

    #[test]
    fn lines_keep_their_breaks_and_nothing_else() {
        assert_eq!(lines("a\nb"), "a\nb");
        assert_eq!(lines("a\r\nb\u{1b}[2J"), "a\\u{d}\nb\\u{1b}[2J");
        // Escaping is idempotent: what `text` made passes `lines` unchanged.
        assert_eq!(lines(&text(HOSTILE)), text(HOSTILE));
    }

    #[test]
    fn json_is_escaped_losslessly() {
        let value = serde_json::json!({"name": HOSTILE, "models": ["a\u{2066}b"], "n": 1});
        for json in [
            to_json_pretty(&value).expect("json"),
            to_json_compact(&value).expect("json"),
        ] {
            assert!(
                !json.chars().any(|c| c != '\n' && is_terminal_control(c)),
                "{json:?}"
            );
            assert!(
                json.contains(r"\u001b]0;pwned\u0007\u009b2J\u202eexe.txt\r\u007f"),
                "{json}"
            );
            let back: serde_json::Value = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, value);
        }
        // The layout is serde_json's own.
        let plain = serde_json::json!({"keys": [{"id": "k", "a": []}], "next_cursor": null});
        assert_eq!(
            to_json_pretty(&plain).expect("json"),
            serde_json::to_string_pretty(&plain).expect("json")
        );
        assert_eq!(
            to_json_compact(&plain).expect("json"),
            serde_json::to_string(&plain).expect("json")
        );
    }

    #[test]
    fn every_string_of_an_answer_is_escaped() {
        let mut value = serde_json::json!({
            "name": HOSTILE,
            "allowed_models": ["ok", "gpt-\u{1b}[31m"],
            "details": {"k\u{9b}": "v\u{202e}", "n": 1.5, "b": true, "z": null},
        });
        escape_json_strings(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "name": text(HOSTILE),
                "allowed_models": ["ok", r"gpt-\u{1b}[31m"],
                "details": {r"k\u{9b}": r"v\u{202e}", "n": 1.5, "b": true, "z": null},
            })
        );
    }
}
