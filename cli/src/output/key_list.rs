//! `keys list` printed a page at a time, so that its memory does not grow with the number of
//! keys: with 100,000 keys, holding them all (and a table of them) took over 300 MB.
//!
//! Both forms keep their shape. The table is the one [`super::key_table`] draws, written
//! by hand rather than with comfy-table, which lays out a whole table in memory before
//! printing a line: columns are as wide as the widest cell seen so far (the header and the
//! first page, so a list of up to a page is laid out exactly as before) and only widen when a
//! later page needs it. The JSON is still one `{"keys": [...], "next_cursor": null}`
//! document, byte for byte what serde_json's pretty printer writes for the whole list: its
//! opening and closing are written here, each key by the (escaping) pretty printer, indented
//! to its depth.

use gateway_shared::api::KeyView;
use jiff::Timestamp;
use unicode_width::UnicodeWidthStr;

use super::{spend_summary, state_text, when_or};
use crate::{OutputFormat, sanitize};

/// Prints a key list of any length, one page at a time, as a table or as JSON.
pub enum KeyListPrinter {
    Table(KeyTable),
    Json(JsonKeyList),
}

impl KeyListPrinter {
    pub fn new(format: OutputFormat) -> Self {
        match format {
            OutputFormat::Table => Self::Table(KeyTable::default()),
            OutputFormat::Json => Self::Json(JsonKeyList::default()),
        }
    }

    /// The text for one page, to be written as it is.
    pub fn page(&mut self, keys: &[KeyView], now: Timestamp) -> anyhow::Result<String> {
        match self {
            Self::Table(table) => Ok(table.page(keys, now)),
            Self::Json(json) => json.page(keys),
        }
    }

    /// The text that ends the list.
    pub fn finish(&mut self) -> String {
        match self {
            Self::Table(table) => table.finish(),
            Self::Json(json) => json.finish(),
        }
    }
}

const HEADER: [&str; 8] = [
    "ID",
    "NAME",
    "PREFIX",
    "STATE",
    "SPEND",
    "RPM",
    "EXPIRES",
    "LAST USED",
];

/// Between columns, as in every gwctl table.
const GAP: usize = 2;

/// The keys table, a page at a time.
#[derive(Default)]
pub struct KeyTable {
    /// Column widths, set by the first page with a key (the header then printed).
    widths: Option<[usize; HEADER.len()]>,
}

impl KeyTable {
    /// Lines for `keys`, each ending in a line break; the header first, on the first page
    /// that has a key.
    pub fn page(&mut self, keys: &[KeyView], now: Timestamp) -> String {
        let rows: Vec<[String; HEADER.len()]> = keys.iter().map(|key| cells(key, now)).collect();
        let mut out = String::new();
        let first = self.widths.is_none();
        if first && rows.is_empty() {
            return out;
        }
        let mut widths = self.widths.unwrap_or(HEADER.map(UnicodeWidthStr::width));
        widen(&mut widths, &rows);
        self.widths = Some(widths);
        if first {
            push_line(&mut out, &HEADER, &widths);
        }
        for row in &rows {
            push_line(&mut out, row, &widths);
        }
        out
    }

    /// The header alone when no page had a key; otherwise nothing.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        if self.widths.is_none() {
            let widths = HEADER.map(UnicodeWidthStr::width);
            push_line(&mut out, &HEADER, &widths);
            self.widths = Some(widths);
        }
        out
    }
}

/// Grows `widths` to fit `rows`.
fn widen(widths: &mut [usize; HEADER.len()], rows: &[[String; HEADER.len()]]) {
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.width());
        }
    }
}

/// One key's cells, each escaped for the terminal.
fn cells(key: &KeyView, now: Timestamp) -> [String; HEADER.len()] {
    super::row([
        key.id.clone(),
        key.name.clone(),
        key.prefix.clone(),
        state_text(key, now),
        spend_summary(key),
        key.rate_limit_rpm
            .map_or_else(|| "-".to_owned(), |rpm| rpm.to_string()),
        when_or(key.expires_at, now, "never"),
        when_or(key.last_used_at, now, "never"),
    ])
}

/// Cells left-aligned in their columns, two spaces apart, no trailing blanks.
fn push_line(out: &mut String, cells: &[impl AsRef<str>], widths: &[usize]) {
    let start = out.len();
    for (cell, width) in cells.iter().zip(widths) {
        let cell = cell.as_ref();
        out.push_str(cell);
        let pad = width.saturating_sub(cell.width()) + GAP;
        out.extend(std::iter::repeat_n(' ', pad));
    }
    out.truncate(start + out[start..].trim_end().len());
    out.push('\n');
}

/// The JSON `KeyList`, a page of keys at a time.
#[derive(Default)]
pub struct JsonKeyList {
    started: bool,
    n_keys: usize,
}

/// Where `keys`' elements sit in the document: two levels deep, two spaces a level.
const ELEMENT_INDENT: &str = "    ";

impl JsonKeyList {
    pub fn page(&mut self, keys: &[KeyView]) -> anyhow::Result<String> {
        let mut out = self.start();
        for key in keys {
            let json = sanitize::to_json_pretty(key)?;
            out.push_str(if self.n_keys == 0 { "\n" } else { ",\n" });
            // serde_json never writes a raw line break inside a string, so every line
            // break here is layout, and each line moves in by the element's depth.
            for (i, line) in json.split('\n').enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str(ELEMENT_INDENT);
                out.push_str(line);
            }
            self.n_keys += 1;
        }
        Ok(out)
    }

    pub fn finish(&mut self) -> String {
        let mut out = self.start();
        out.push_str(if self.n_keys == 0 { "]" } else { "\n  ]" });
        out.push_str(",\n  \"next_cursor\": null\n}\n");
        out
    }

    /// The document's opening, the first time only.
    fn start(&mut self) -> String {
        if std::mem::replace(&mut self.started, true) {
            String::new()
        } else {
            "{\n  \"keys\": [".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use gateway_shared::api::KeyList;

    use super::*;
    use crate::output::tests::sample_key;

    fn now() -> Timestamp {
        "2027-01-02T00:00:00Z".parse().expect("now")
    }

    fn keys(n: usize) -> Vec<KeyView> {
        (0..n)
            .map(|i| KeyView {
                id: format!("key_{i:020}"),
                name: format!("{}-{i}", "n".repeat(i % 7)),
                ..sample_key()
            })
            .collect()
    }

    fn json_in_pages(pages: &[&[KeyView]]) -> String {
        let mut printer = KeyListPrinter::new(OutputFormat::Json);
        let mut text = String::new();
        for page in pages {
            text.push_str(&printer.page(page, now()).expect("json"));
        }
        text.push_str(&printer.finish());
        text
    }

    /// Streamed, the document is the one serde_json writes for the whole list, in any number
    /// of pages, empty ones included.
    #[test]
    fn json_in_pages_is_the_whole_lists_pretty_json() {
        let all = keys(5);
        for pages in [
            vec![],
            vec![&all[..0]],
            vec![&all[..1]],
            vec![&all[..]],
            vec![&all[..2], &all[2..2], &all[2..]],
        ] {
            let shown: Vec<KeyView> = pages.iter().flat_map(|p| p.to_vec()).collect();
            let whole = serde_json::to_string_pretty(&KeyList {
                keys: shown,
                next_cursor: None,
            })
            .expect("json");
            assert_eq!(json_in_pages(&pages), whole + "\n", "{} pages", pages.len());
        }
    }

    #[test]
    fn json_in_pages_is_escaped_and_exact() {
        let mut hostile = sample_key();
        hostile.name = "a\u{1b}]0;t\u{7}\u{9b}\u{202e}".into();
        let text = json_in_pages(&[std::slice::from_ref(&hostile)]);
        assert!(
            text.contains(r#""name": "a\u001b]0;t\u0007\u009b\u202e""#),
            "{text}"
        );
        let back: KeyList = serde_json::from_str(&text).expect("one document");
        assert_eq!(back.keys, [hostile]);
    }

    fn table_in_pages(pages: &[&[KeyView]]) -> String {
        let mut printer = KeyListPrinter::new(OutputFormat::Table);
        let mut text = String::new();
        for page in pages {
            text.push_str(&printer.page(page, now()).expect("table"));
        }
        text.push_str(&printer.finish());
        text
    }

    #[test]
    fn a_single_page_is_laid_out_as_one_comfy_table() {
        let all = keys(7);
        for n in [0, 1, 7] {
            let mut table = super::super::plain_table(HEADER);
            for key in &all[..n] {
                table.add_row(cells(key, now()));
            }
            let expected = super::super::finish(&mut table) + "\n";
            assert_eq!(table_in_pages(&[&all[..n]]), expected, "{n} keys");
        }
    }

    #[test]
    fn columns_widen_only_when_a_later_page_needs_it() {
        let mut wide = sample_key();
        wide.name = "a-much-longer-name-than-the-first-page-had".into();
        let first = keys(2);
        let text = table_in_pages(&[&first, &[], std::slice::from_ref(&wide)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let prefix_at = |line: &str| line.find("sk-proxy-a1b2").expect("prefix");
        assert_eq!(prefix_at(lines[1]), prefix_at(lines[2]), "{text}");
        assert_eq!(lines[0].find("PREFIX"), Some(prefix_at(lines[1])), "{text}");
        assert!(prefix_at(lines[3]) > prefix_at(lines[2]), "{text}");
        assert!(!text.lines().any(|l| l.ends_with(' ')), "{text}");
    }

    #[test]
    fn an_empty_list_is_the_header() {
        assert_eq!(
            table_in_pages(&[&[], &[]]),
            "ID  NAME  PREFIX  STATE  SPEND  RPM  EXPIRES  LAST USED\n"
        );
    }

    #[test]
    fn cells_are_escaped() {
        let mut hostile = sample_key();
        hostile.name = "evil\u{1b}]0;t\u{7}\nnext".into();
        let text = table_in_pages(&[std::slice::from_ref(&hostile)]);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains(r"evil\u{1b}]0;t\u{7}\u{a}next  "), "{text}");
    }
}
