//! Gemini's streaming without `alt=sse`: one JSON array, sent element by element.
//!
//! Finds each top-level object of the array as its bytes arrive (tracking strings and
//! escapes so braces inside text do not count), without buffering the whole response.

#[derive(Debug, Default)]
pub struct JsonArraySplitter {
    depth: u32,
    in_string: bool,
    escaped: bool,
    element: Vec<u8>,
}

impl JsonArraySplitter {
    /// Feeds bytes; complete top-level objects are appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        for &byte in bytes {
            if self.depth >= 2 {
                self.element.push(byte);
            }
            if self.in_string {
                match (self.escaped, byte) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth == 2 {
                        self.element.clear();
                        self.element.push(byte);
                    }
                }
                b']' | b'}' => {
                    if self.depth == 2 {
                        out.push(std::mem::take(&mut self.element));
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_elements_across_any_chunking() {
        let text = br#"[{"a": "}{[\"", "n": {"x": 1}}
,
{"b": 2}]"#;
        for size in 1..text.len() {
            let mut splitter = JsonArraySplitter::default();
            let mut out = Vec::new();
            for chunk in text.chunks(size) {
                splitter.feed(chunk, &mut out);
            }
            let parsed: Vec<serde_json::Value> = out
                .iter()
                .map(|e| serde_json::from_slice(e).expect("element parses"))
                .collect();
            assert_eq!(parsed.len(), 2, "chunk size {size}");
            assert_eq!(parsed[1]["b"], 2);
            assert_eq!(parsed[0]["a"], "}{[\"");
        }
    }
}
