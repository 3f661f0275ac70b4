//! An incremental Server-Sent Events parser that observes a byte stream without changing it.
//!
//! Hand-written rather than `eventsource-stream`: that crate re-parses into events and loses
//! the exact bytes, and the gateway must forward bytes untouched and, in one case (the OpenAI
//! usage chunk it asked for), drop exactly one event. Splits may fall anywhere: inside a
//! UTF-8 character (bytes are only decoded once a line is whole), between the CR and LF of a
//! CRLF (remembered across chunks), and lines may end in CRLF, LF or a bare CR (per the
//! WHATWG spec; bare-CR and split-CRLF handling are where other parsers have failed).

/// One block of the stream: the bytes up to and including a blank line, and the event they
/// dispatch (none for comment-only or empty blocks).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Block {
    pub event: Option<Event>,
    /// The block's raw bytes; empty unless the parser keeps raw bytes.
    pub raw: Vec<u8>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, empty when absent.
    pub name: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

#[derive(Debug, Default)]
pub struct SseParser {
    keep_raw: bool,
    line: Vec<u8>,
    after_cr: bool,
    data: Vec<u8>,
    has_data: bool,
    name: Vec<u8>,
    raw: Vec<u8>,
}

impl SseParser {
    /// `keep_raw`: also return each block's bytes (to re-emit or drop them).
    pub fn new(keep_raw: bool) -> Self {
        Self {
            keep_raw,
            ..Self::default()
        }
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Block>) {
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    // The LF of a CRLF whose CR ended the line already.
                    self.push_raw(byte);
                    continue;
                }
            }
            self.push_raw(byte);
            match byte {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(out);
                }
                b'\n' => self.end_line(out),
                _ => self.line.push(byte),
            }
        }
    }

    /// Bytes of an unfinished block (held back when raw bytes are kept).
    pub fn take_pending_raw(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.raw)
    }

    fn push_raw(&mut self, byte: u8) {
        if self.keep_raw {
            self.raw.push(byte);
        }
    }

    fn end_line(&mut self, out: &mut Vec<Block>) {
        if self.line.is_empty() {
            let event = self.has_data.then(|| {
                if self.data.last() == Some(&b'\n') {
                    self.data.pop();
                }
                // Moved, not copied, when the bytes are valid UTF-8 (they always are in practice).
                Event {
                    name: into_string(std::mem::take(&mut self.name)),
                    data: into_string(std::mem::take(&mut self.data)),
                }
            });
            self.data.clear();
            self.name.clear();
            self.has_data = false;
            out.push(Block {
                event,
                raw: std::mem::take(&mut self.raw),
            });
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line[0] != b':' {
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(i) => {
                    let value = &line[i + 1..];
                    (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (&line[..], &[][..]),
            };
            match field {
                b"data" => {
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                    self.has_data = true;
                }
                b"event" => {
                    self.name.clear();
                    self.name.extend_from_slice(value);
                }
                _ => {}
            }
        }
        self.line = line;
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut parser = SseParser::new(false);
        let mut blocks = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut blocks);
        }
        blocks
            .into_iter()
            .filter_map(|b| b.event)
            .map(|e| (e.name, e.data))
            .collect()
    }

    #[test]
    fn line_endings_and_fields() {
        let expected = vec![
            ("".to_owned(), "a".to_owned()),
            ("ping".to_owned(), "b\nc".to_owned()),
        ];
        assert_eq!(
            events(&[b"data: a\n\nevent: ping\ndata: b\ndata:c\n\n"]),
            expected
        );
        assert_eq!(
            events(&[b"data: a\r\n\r\nevent: ping\r\ndata: b\r\ndata:c\r\n\r\n"]),
            expected
        );
        assert_eq!(
            events(&[b"data: a\r\revent: ping\rdata: b\rdata:c\r\r"]),
            expected
        );
        assert_eq!(
            events(&[b": comment\n\ndata\n\n"]),
            vec![("".to_owned(), "".to_owned())]
        );
    }

    #[test]
    fn a_crlf_split_between_chunks_is_one_line_end() {
        assert_eq!(
            events(&[b"data: a\r", b"\n\r", b"\n"]),
            vec![("".to_owned(), "a".to_owned())]
        );
    }

    #[test]
    fn a_utf8_character_split_between_chunks_survives() {
        let text = "data: caf\u{e9} \u{1f600}\n\n".as_bytes();
        let (a, b) = text.split_at(10); // inside the é
        assert_eq!(
            events(&[a, b]),
            vec![("".to_owned(), "caf\u{e9} \u{1f600}".to_owned())]
        );
    }

    #[test]
    fn raw_blocks_reassemble_the_stream() {
        let stream = b": hi\r\n\r\nevent: x\r\ndata: 1\r\n\r\ndata: 2\n\ntail";
        let mut parser = SseParser::new(true);
        let mut blocks = Vec::new();
        parser.feed(stream, &mut blocks);
        let mut joined: Vec<u8> = blocks.iter().flat_map(|b| b.raw.clone()).collect();
        joined.extend(parser.take_pending_raw());
        assert_eq!(joined, stream.to_vec());
        assert_eq!(blocks.len(), 3);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(
            cut in prop::collection::vec(0usize..200, 0..12),
            crlf in any::<bool>(),
        ) {
            let newline = if crlf { "\r\n" } else { "\n" };
            let text = format!(
                "event: message_start{n}data: {{\"a\": \"é\"}}{n}{n}: keepalive{n}{n}data: x{n}data: y{n}{n}",
                n = newline
            );
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cut.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for c in cuts {
                chunks.push(&bytes[start..c.max(start)]);
                start = c.max(start);
            }
            chunks.push(&bytes[start..]);
            prop_assert_eq!(events(&chunks), events(&[bytes]));
            prop_assert_eq!(events(&[bytes]).len(), 2);
        }
    }
}
