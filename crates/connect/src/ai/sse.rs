//! A server-sent events parser, as the WHATWG HTML standard defines the `text/event-stream`
//! format (section 9.2.6): lines end with CRLF, LF or CR; `data:` lines accumulate (joined by
//! LF, one leading space removed); a blank line dispatches the event; lines starting with `:`
//! are comments; other fields (`event`, `id`, `retry`) are not needed by the OpenAI API and are
//! skipped. Bytes may arrive split anywhere, even inside a UTF-8 character or a CRLF.

use std::collections::VecDeque;

/// Turns chunks of bytes into the `data` of complete events.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
    /// The last byte fed was a CR: an LF right after it ends no second line.
    after_cr: bool,
    events: VecDeque<String>,
}

impl SseParser {
    /// Feeds bytes; complete events become available from [`next_event`](Self::next_event).
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line();
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                self.events.push_back(data);
            }
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &[][..]),
        };
        if field == b"data" {
            let value = String::from_utf8_lossy(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            }
        }
    }

    /// The data of the next complete event, if one has arrived.
    pub(crate) fn next_event(&mut self) -> Option<String> {
        self.events.pop_front()
    }

    /// True when bytes of an event that was never completed are buffered.
    #[cfg(test)]
    pub(crate) fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.data.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::SseParser;

    fn events(parser: &mut SseParser) -> Vec<String> {
        std::iter::from_fn(|| parser.next_event()).collect()
    }

    #[test]
    fn events_split_at_any_byte_come_out_whole() {
        let stream = b": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: first\ndata:second\n\ndata: [DONE]\n\n";
        for split in 0..stream.len() {
            let mut parser = SseParser::default();
            parser.feed(&stream[..split]);
            parser.feed(&stream[split..]);
            assert_eq!(
                events(&mut parser),
                vec!["{\"a\":1}", "first\nsecond", "[DONE]"],
                "split at {split}"
            );
            assert!(!parser.has_partial());
        }
    }

    #[test]
    fn cr_alone_ends_lines_and_an_unfinished_event_is_partial() {
        let mut parser = SseParser::default();
        parser.feed(b"data: one\r\rdata: tw");
        assert_eq!(events(&mut parser), vec!["one"]);
        assert!(parser.has_partial());
        parser.feed(b"o\n");
        assert!(parser.next_event().is_none());
        assert!(parser.has_partial());
        parser.feed(b"\n");
        assert_eq!(events(&mut parser), vec!["two"]);
    }

    #[test]
    fn multibyte_characters_split_across_chunks_survive() {
        let mut parser = SseParser::default();
        let bytes = "data: héllo\n\n".as_bytes();
        parser.feed(&bytes[..8]);
        parser.feed(&bytes[8..]);
        assert_eq!(events(&mut parser), vec!["héllo"]);
    }
}
