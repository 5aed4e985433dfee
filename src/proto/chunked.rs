//! The chunked transfer coding, decoded incrementally (RFC 9112 §7.1).
//!
//! Bytes arrive in any split; the decoder keeps only a few integers of state between calls and
//! appends chunk data to the caller's body buffer. Chunk extensions are skipped, trailer fields
//! are read and discarded; both are bounded so a hostile server cannot make it buffer without end.

use crate::error::{Error, Limit, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` so far.
    Size {
        digits: u8,
    },
    /// After the size: optional whitespace, then `;ext` or the line end.
    AfterSize,
    /// Inside chunk extensions, skipped up to the line end.
    Extension,
    /// Saw CR ending a size line; LF must follow.
    SizeLf,
    /// Reading chunk data.
    Data,
    /// Chunk data done; its CRLF must follow.
    DataCr,
    DataLf,
    /// Reading the trailer section, line by line; `line_len` bytes of the current line so far.
    Trailer {
        line_len: usize,
    },
    TrailerLf {
        line_len: usize,
    },
    Done,
}

/// Incremental chunked decoder.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    /// Remaining bytes of the current chunk (while in `Size`, the size being accumulated).
    remaining: u64,
    /// Bytes spent on extensions and trailers, bounded by `max_meta`.
    meta: usize,
    max_meta: usize,
}

impl ChunkedDecoder {
    /// `max_meta` bounds the bytes of chunk extensions plus trailer fields.
    pub(crate) fn new(max_meta: usize) -> ChunkedDecoder {
        ChunkedDecoder { state: State::Size { digits: 0 }, remaining: 0, meta: 0, max_meta }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending data to `body`, whose body starts at `body_at` (the
    /// bytes before it are the response head: at most `max_body` bytes from there in all).
    /// Returns how many input bytes were consumed; stops right after the final CRLF.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        body: &mut Vec<u8>,
        body_at: usize,
        max_body: usize,
    ) -> Result<usize> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => match hex_value(b) {
                    // Leading zeros are valid, but not without end: a size line is bounded.
                    Some(_) if digits == u8::MAX => {
                        return Err(Error::malformed("chunk size has too many digits"));
                    }
                    Some(v) => {
                        // A size that wraps a u64 is a classic smuggling trick: refuse it.
                        if self.remaining > u64::MAX >> 4 {
                            return Err(Error::malformed("chunk size overflows 64 bits"));
                        }
                        self.remaining = (self.remaining << 4) | u64::from(v);
                        self.state = State::Size { digits: digits.saturating_add(1) };
                    }
                    None if digits == 0 => {
                        return Err(Error::malformed(format!("chunk size expected, got byte 0x{b:02x}")));
                    }
                    None => {
                        self.state = State::AfterSize;
                        continue; // re-examine this byte
                    }
                },
                State::AfterSize => match b {
                    b' ' | b'\t' => self.count_meta()?,
                    b';' => {
                        self.count_meta()?;
                        self.state = State::Extension;
                    }
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => self.end_size_line(body.len().saturating_sub(body_at), max_body)?,
                    _ => return Err(Error::malformed(format!("invalid byte 0x{b:02x} after chunk size"))),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => self.end_size_line(body.len().saturating_sub(body_at), max_body)?,
                    0 => return Err(Error::malformed("NUL in chunk extension")),
                    _ => self.count_meta()?,
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(Error::malformed("bare CR in chunk size line"));
                    }
                    self.end_size_line(body.len().saturating_sub(body_at), max_body)?;
                }
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let take = avail.min(self.remaining) as usize;
                    body.extend_from_slice(&input[i..i + take]);
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    // A lone LF as line terminator is tolerated (RFC 9112 §2.2).
                    b'\n' => self.state = State::Size { digits: 0 },
                    _ => return Err(Error::malformed("chunk data not followed by CRLF")),
                },
                State::DataLf => {
                    if b != b'\n' {
                        return Err(Error::malformed("chunk data not followed by CRLF"));
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::Trailer { line_len } => match b {
                    b'\r' => self.state = State::TrailerLf { line_len },
                    b'\n' => self.end_trailer_line(line_len),
                    0 => return Err(Error::malformed("NUL in trailer section")),
                    _ => {
                        self.count_meta()?;
                        self.state = State::Trailer { line_len: line_len + 1 };
                    }
                },
                State::TrailerLf { line_len } => {
                    if b != b'\n' {
                        return Err(Error::malformed("bare CR in trailer section"));
                    }
                    self.end_trailer_line(line_len);
                }
                State::Done => return Ok(i),
            }
            i += 1;
            if self.state == State::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }

    fn count_meta(&mut self) -> Result<()> {
        self.meta += 1;
        if self.meta > self.max_meta {
            return Err(Error::LimitExceeded { limit: Limit::HeadBytes, max: self.max_meta });
        }
        Ok(())
    }

    fn end_size_line(&mut self, body_len: usize, max_body: usize) -> Result<()> {
        if self.remaining == 0 {
            self.state = State::Trailer { line_len: 0 };
            return Ok(());
        }
        if self.remaining > (max_body - body_len.min(max_body)) as u64 {
            return Err(Error::LimitExceeded { limit: Limit::BodyBytes, max: max_body });
        }
        self.state = State::Data;
        Ok(())
    }

    fn end_trailer_line(&mut self, line_len: usize) {
        // An empty line ends the trailer section, and the message.
        self.state = if line_len == 0 { State::Done } else { State::Trailer { line_len: 0 } };
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool)> {
        let mut d = ChunkedDecoder::new(1024);
        let mut body = Vec::new();
        let n = d.decode(input, &mut body, 0, 1 << 20)?;
        Ok((body, n, d.is_done()))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let input = b"5;name=val\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nEXTRA";
        let (body, n, done) = decode_all(input).unwrap();
        assert_eq!(body, b"hello world");
        assert!(done);
        assert_eq!(&input[n..], b"EXTRA");
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        let input = b"a\r\n0123456789\r\n3;e\r\nabc\r\n0\r\nT: v\r\n\r\n";
        for split in 0..input.len() {
            let mut d = ChunkedDecoder::new(1024);
            let mut body = Vec::new();
            let a = d.decode(&input[..split], &mut body, 0, 1 << 20).unwrap();
            assert_eq!(a, split);
            let b = d.decode(&input[split..], &mut body, 0, 1 << 20).unwrap();
            assert_eq!(split + b, input.len());
            assert!(d.is_done(), "split {split}");
            assert_eq!(body, b"0123456789abc");
        }
    }

    #[test]
    fn endless_leading_zeros_are_refused() {
        let mut input = vec![b'0'; 300];
        input.extend_from_slice(b"3\r\n");
        assert!(matches!(decode_all(&input), Err(Error::MalformedResponse { .. })));
    }

    #[test]
    fn leading_zeros_do_not_overflow() {
        let (body, _, done) = decode_all(b"00000000000000000003\r\nabc\r\n0\r\n\r\n").unwrap();
        assert_eq!((body.as_slice(), done), (&b"abc"[..], true));
    }

    #[test]
    fn tolerates_bare_lf_line_ends() {
        let (body, _, done) = decode_all(b"3\nabc\n0\n\n").unwrap();
        assert_eq!((body.as_slice(), done), (&b"abc"[..], true));
    }

    #[test]
    fn rejects_bad_sizes() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"3 x\r\n",
            b"10000000000000000\r\n",
            b"fffffffffffffffff\r\n",
            b"3\rx",
            b"3\r\nabcX",
        ] {
            assert!(matches!(decode_all(bad), Err(Error::MalformedResponse { .. })), "{bad:?}");
        }
    }

    #[test]
    fn bounds_body_and_metadata() {
        let mut d = ChunkedDecoder::new(1024);
        let r = d.decode(b"401\r\n", &mut Vec::new(), 0, 1024);
        assert!(matches!(r, Err(Error::LimitExceeded { limit: Limit::BodyBytes, .. })));
        let mut d = ChunkedDecoder::new(8);
        let r = d.decode(b"1;aaaaaaaaaaaaaaaaa", &mut Vec::new(), 0, 1024);
        assert!(matches!(r, Err(Error::LimitExceeded { limit: Limit::HeadBytes, .. })));
        let mut d = ChunkedDecoder::new(8);
        let r = d.decode(b"0\r\nX-Endless-Trailer: aaaaaaa", &mut Vec::new(), 0, 1024);
        assert!(matches!(r, Err(Error::LimitExceeded { limit: Limit::HeadBytes, .. })));
    }

    /// The body shares its buffer with the response head: only the bytes from `body_at` on
    /// count against `max_body`.
    #[test]
    fn the_head_before_body_at_does_not_count_against_the_body_limit() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut buf = head.to_vec();
        let mut d = ChunkedDecoder::new(1024);
        // Exactly the limit: accepted, after the head.
        let n = d.decode(b"4\r\nabcd\r\n0\r\n\r\n", &mut buf, head.len(), 4).unwrap();
        assert_eq!((n, d.is_done(), &buf[head.len()..]), (14, true, &b"abcd"[..]));
        // One byte over: refused, however long the head.
        let mut buf = head.to_vec();
        let mut d = ChunkedDecoder::new(1024);
        let r = d.decode(b"5\r\n", &mut buf, head.len(), 4);
        assert!(matches!(r, Err(Error::LimitExceeded { limit: Limit::BodyBytes, max: 4 })));
        // Across two chunks the count goes on from the first.
        let mut buf = head.to_vec();
        let mut d = ChunkedDecoder::new(1024);
        assert!(d.decode(b"3\r\nabc\r\n", &mut buf, head.len(), 4).is_ok());
        let r = d.decode(b"2\r\n", &mut buf, head.len(), 4);
        assert!(matches!(r, Err(Error::LimitExceeded { limit: Limit::BodyBytes, max: 4 })));
    }
}
