//! An incremental Server-Sent Events parser that observes a byte stream without changing it.
//!
//! Hand-written rather than `eventsource-stream`: that crate re-parses into events and loses
//! the exact bytes, and the gateway must forward bytes untouched and, in one case (the OpenAI
//! usage chunk it asked for), drop exactly one event. Splits may fall anywhere: inside a
//! UTF-8 character (bytes are only decoded once a line is whole), between the CR and LF of a
//! CRLF (remembered across chunks), and lines may end in CRLF, LF or a bare CR (per the
//! WHATWG spec; bare-CR and split-CRLF handling are where other parsers have failed).

/// One event: borrowed from the parser, valid for the duration of the callback. Bytes, not
/// text: most events are only searched for a marker, and decoding each would cost more.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, empty when absent.
    pub name: &'a [u8],
    /// The `data:` lines joined with `\n`.
    pub data: &'a [u8],
}

/// Called for each block of the stream (the bytes up to and including a blank line): the
/// event it dispatches (none for comment-only or empty blocks) and its raw bytes (empty
/// unless the parser keeps raw bytes).
pub type OnBlock<'f> = dyn FnMut(Option<&Event<'_>>, &[u8]) + 'f;

/// The parser's buffers keep their capacity from event to event: after the first few events
/// of a stream, parsing allocates nothing. Lines are found with `memchr`, and a line that
/// lies whole inside a chunk is read in place; so is a block's raw bytes: only the part of a
/// block that arrived in an earlier chunk is kept in a buffer (copying every block there, to
/// hand it out, cost a copy of the whole stream).
#[derive(Debug, Default)]
pub struct SseParser {
    keep_raw: bool,
    /// The start of a line whose end has not arrived yet.
    line: Vec<u8>,
    after_cr: bool,
    data: Vec<u8>,
    has_data: bool,
    name: Vec<u8>,
    /// The bytes of the block in progress that came in earlier chunks (when kept).
    raw: Vec<u8>,
}

impl SseParser {
    /// `keep_raw`: also hand out each block's bytes (to re-emit or drop them).
    pub fn new(keep_raw: bool) -> Self {
        Self {
            keep_raw,
            ..Self::default()
        }
    }

    pub fn feed(&mut self, input: &[u8], on_block: &mut OnBlock<'_>) {
        let mut at = 0;
        // Where the block in progress starts in `input` (its earlier bytes, if any, are in
        // `self.raw`).
        let mut block_start = 0;
        while at < input.len() {
            if self.after_cr {
                self.after_cr = false;
                if input[at] == b'\n' {
                    // The LF of a CRLF whose CR ended the line already: a byte of the next
                    // block.
                    at += 1;
                    continue;
                }
            }
            let Some(offset) = memchr::memchr2(b'\r', b'\n', &input[at..]) else {
                self.line.extend_from_slice(&input[at..]);
                break;
            };
            let end = at + offset;
            self.after_cr = input[end] == b'\r';
            let blank = if self.line.is_empty() {
                self.end_line(&input[at..end])
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&input[at..end]);
                let blank = self.end_line(&line);
                line.clear();
                self.line = line;
                blank
            };
            if blank {
                self.dispatch(&input[block_start..=end], on_block);
                block_start = end + 1;
            }
            at = end + 1;
        }
        if self.keep_raw {
            self.raw.extend_from_slice(&input[block_start..]);
        }
    }

    /// Bytes of an unfinished block (held back when raw bytes are kept).
    pub fn take_pending_raw(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.raw)
    }

    /// Whether bytes of an unfinished block are held back.
    pub fn has_pending_raw(&self) -> bool {
        !self.raw.is_empty()
    }

    /// A blank line ended the block whose last bytes in this chunk are `tail`: hands it out.
    fn dispatch(&mut self, tail: &[u8], on_block: &mut OnBlock<'_>) {
        let raw: &[u8] = if !self.keep_raw {
            &[]
        } else if self.raw.is_empty() {
            tail
        } else {
            self.raw.extend_from_slice(tail);
            &self.raw
        };
        if self.has_data {
            let data = self.data.strip_suffix(b"\n").unwrap_or(&self.data);
            let event = Event {
                name: &self.name,
                data,
            };
            on_block(Some(&event), raw);
        } else {
            on_block(None, raw);
        }
        self.data.clear();
        self.name.clear();
        self.raw.clear();
        self.has_data = false;
    }

    /// Reads one line's field; returns whether the line is blank (it ends a block).
    fn end_line(&mut self, line: &[u8]) -> bool {
        if line.is_empty() {
            return true;
        }
        if line[0] == b':' {
            return false;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
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
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut parser = SseParser::new(false);
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut |event, raw| {
                assert!(raw.is_empty(), "raw bytes only when asked for");
                if let Some(event) = event {
                    events.push((
                        String::from_utf8_lossy(event.name).into_owned(),
                        String::from_utf8_lossy(event.data).into_owned(),
                    ));
                }
            });
        }
        events
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
        // Fed in every split: blocks re-join to the stream whatever the chunking.
        for split in 0..=stream.len() {
            let mut joined = Vec::new();
            let mut blocks = 0;
            for chunk in [&stream[..split], &stream[split..]] {
                parser.feed(chunk, &mut |_, raw| {
                    joined.extend_from_slice(raw);
                    blocks += 1;
                });
            }
            joined.extend(parser.take_pending_raw());
            assert_eq!(joined, stream.to_vec());
            assert_eq!(blocks, 3);
            parser = SseParser::new(true);
        }
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
