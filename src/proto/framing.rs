//! Response framing: where a response ends, and whether the connection may carry another.
//!
//! Sans-IO: bytes in (any split), a complete [`Response`] out. The body length follows RFC 9112
//! §6.3 in its order of precedence; anything ambiguous is an error and the connection is retired,
//! because a client that guesses where a response ends reads the next response out of step.

use std::ops::Range;
use std::time::Duration;

use crate::error::{Error, Limit, Result};
use crate::proto::chunked::ChunkedDecoder;
use crate::proto::conn::RetireReason;
use crate::request::has_token;
use crate::response::{Meta, Response};

/// The hard cap on [`Limits::max_headers`]: the parser's header array lives on the stack. A
/// larger `max_headers` is lowered to it when the client is built.
///
/// ```
/// use finwatch::{Client, Limits, MAX_HEADERS_CAP};
/// let limits = Limits { max_headers: MAX_HEADERS_CAP, ..Limits::default() };
/// let client = Client::builder().limits(limits).build()?;
/// # drop(client);
/// # Ok::<(), finwatch::Error>(())
/// ```
pub const MAX_HEADERS_CAP: usize = 256;

/// Bounds on what a server may make the client buffer, set with
/// [`crate::ClientBuilder::limits`]. A response that exceeds one fails with
/// [`crate::Error::LimitExceeded`], and its connection is not reused.
///
/// The defaults: 16 KiB of head, 64 header fields, 8 MiB of body, 8 interim responses.
///
/// ```
/// use finwatch::{Client, Limits};
/// let limits = Limits { max_body_bytes: 64 * 1024, ..Limits::default() };
/// assert_eq!(limits.max_headers, 64);
/// let client = Client::builder().limits(limits).build()?;
/// # drop(client);
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a response head (status line + fields); also bounds chunk extensions + trailers.
    pub max_head_bytes: usize,
    /// Header fields in one head (at most [`MAX_HEADERS_CAP`]).
    pub max_headers: usize,
    /// Bytes of a decoded body.
    pub max_body_bytes: usize,
    /// Interim 1xx responses skipped before the final one.
    pub max_interim_responses: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 8 * 1024 * 1024,
            max_interim_responses: 8,
        }
    }
}

/// What the server told us about the connection's future, from the final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Persistence {
    /// `Some` when the connection must not carry another request.
    pub(crate) close: Option<RetireReason>,
    /// `Keep-Alive: timeout=N`
    pub(crate) idle_timeout: Option<Duration>,
    /// `Keep-Alive: max=N`: requests the server will still accept on this connection.
    pub(crate) max_requests: Option<u32>,
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

#[derive(Debug)]
enum State {
    Head,
    Body(Body),
    Done,
}

/// The bytes of a status line parsed as they arrive, before its line break (see `feed_head`).
const EAGER_HEAD_BYTES: usize = 64;

/// Reads one response, incrementally.
#[derive(Debug)]
pub(crate) struct ResponseReader {
    limits: Limits,
    head_request: bool,
    state: State,
    started: bool,
    interim: usize,
    /// The head as it arrives, then (once it is complete, from `body_at`) the body: the
    /// [`Response`]'s one buffer.
    buf: Vec<u8>,
    body_at: usize,
    minor_version: u8,
    status: u16,
    reason: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    persistence: Persistence,
    /// Heads handed to the parser (complete or not), for the tests.
    #[cfg(test)]
    parses: usize,
}

/// The result of feeding bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The response is incomplete; all input was consumed.
    NeedMore,
    /// The response is complete; `extra` input bytes were not part of it.
    Complete { extra: usize },
}

impl ResponseReader {
    pub(crate) fn new(limits: Limits, head_request: bool) -> ResponseReader {
        ResponseReader::reuse(limits, head_request, Response::default())
    }

    /// A reader that fills the buffers of a response no longer needed (no allocation once
    /// they have grown to the size of the responses they carry).
    pub(crate) fn reuse(limits: Limits, head_request: bool, spare: Response) -> ResponseReader {
        let Response { mut buf, mut headers, .. } = spare;
        buf.clear();
        headers.clear();
        ResponseReader {
            limits,
            head_request,
            state: State::Head,
            started: false,
            interim: 0,
            buf,
            body_at: 0,
            minor_version: 1,
            status: 0,
            reason: 0..0,
            headers,
            persistence: Persistence::default(),
            #[cfg(test)]
            parses: 0,
        }
    }

    /// The body goes to a writer as it arrives ([`ResponseReader::body_mut`] is drained after
    /// every feed): `max_body_bytes` does not apply to it.
    pub(crate) fn stream_body(&mut self) {
        self.limits.max_body_bytes = usize::MAX;
    }

    /// The body bytes received and not yet taken (none before the head is complete).
    pub(crate) fn body(&self) -> &[u8] {
        match self.state {
            State::Head => &[],
            _ => self.buf.get(self.body_at..).unwrap_or_default(),
        }
    }

    /// Drops the body bytes received so far (a streamed body, once written out); not the head,
    /// nor a head still arriving.
    pub(crate) fn clear_body(&mut self) {
        if !matches!(self.state, State::Head) {
            self.buf.truncate(self.body_at);
        }
    }

    /// Whether any response byte has arrived (after which a request is never retried).
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    /// Feeds received bytes.
    pub(crate) fn feed(&mut self, mut input: &[u8]) -> Result<Progress> {
        if !input.is_empty() {
            self.started = true;
        }
        let total = input.len();
        while !input.is_empty() {
            match &mut self.state {
                State::Head => {
                    let used = self.feed_head(input)?;
                    input = &input[used..];
                }
                State::Body(Body::Length(remaining)) => {
                    let take = (*remaining).min(input.len() as u64) as usize;
                    self.buf.extend_from_slice(&input[..take]);
                    *remaining -= take as u64;
                    input = &input[take..];
                    if *remaining == 0 {
                        self.state = State::Done;
                    }
                }
                State::Body(Body::Chunked(decoder)) => {
                    let used =
                        decoder.decode(input, &mut self.buf, self.body_at, self.limits.max_body_bytes)?;
                    input = &input[used..];
                    if decoder.is_done() {
                        self.state = State::Done;
                    }
                }
                State::Body(Body::UntilClose) => {
                    if self.buf.len() - self.body_at + input.len() > self.limits.max_body_bytes {
                        return Err(Error::LimitExceeded {
                            limit: Limit::BodyBytes,
                            max: self.limits.max_body_bytes,
                        });
                    }
                    self.buf.extend_from_slice(input);
                    input = &[];
                }
                State::Done => break,
            }
        }
        Ok(match self.state {
            State::Done => Progress::Complete { extra: input.len() },
            _ => {
                debug_assert_eq!(total - input.len(), total);
                Progress::NeedMore
            }
        })
    }

    /// The server closed its side (FIN). Returns whether that completed the response
    /// (a close-delimited body ends this way); `false` means it was cut short.
    pub(crate) fn feed_eof(&mut self) -> bool {
        match self.state {
            State::Body(Body::UntilClose) => {
                self.state = State::Done;
                true
            }
            State::Done => true,
            _ => false,
        }
    }

    /// The finished response and what it says about the connection. Call once, when complete.
    pub(crate) fn finish(self, meta: Meta) -> (Response, Persistence) {
        let resp = Response {
            minor_version: self.minor_version,
            status: self.status,
            buf: self.buf,
            body_at: self.body_at,
            reason: self.reason,
            headers: self.headers,
            meta,
        };
        (resp, self.persistence)
    }

    /// Parses the head from `input`; returns how many input bytes it used.
    fn feed_head(&mut self, input: &[u8]) -> Result<usize> {
        let old = self.buf.len();
        // httparse skips empty lines before a status line; RFC 9112 §2.2 allows that only to a
        // server reading a request. In a response it means the stream is out of step.
        if old == 0 && matches!(input.first(), Some(b'\r' | b'\n')) {
            return Err(Error::malformed("empty line before the status line"));
        }
        // Never buffer more than the limit (+1, to tell "exactly at the limit" from "over").
        // Saturating: `usize::MAX` is a caller's natural "no limit", and `+ 1` wrapped it to 0 in
        // release builds (no room: the loop spun on a head it never took in).
        let room = self.limits.max_head_bytes.saturating_add(1).saturating_sub(old);
        let take = input.len().min(room);
        self.buf.extend_from_slice(&input[..take]);
        // RFC 9112 §2.3: a message in a later minor version of HTTP/1 (`HTTP/1.2`) is processed
        // as the highest minor version the recipient implements, 1.1. httparse knows only 1.0
        // and 1.1, so the digit is rewritten once it has arrived.
        // (`HTTP/1.2x` still fails: httparse wants the space after the version.)
        if old < 8
            && self.buf.len() >= 8
            && self.buf.starts_with(b"HTTP/1.")
            && matches!(self.buf[7], b'2'..=b'9')
        {
            self.buf[7] = b'1';
        }

        // A head can only be complete once a line break arrives (it ends with an empty line),
        // and an error in a header line is as good found at that line's end: the head is parsed
        // only when new bytes brought a line break, and an error after the last one waits for
        // the end of its line. Only the first bytes of the status line are parsed as they come,
        // so that another protocol (a TLS alert, an HTTP/2 frame: no line break ever) is told
        // at once. A server that sends its head a byte at a time so costs a parse per line, not
        // one per byte, and the verdict depends on the bytes received, not on how they were
        // split into reads.
        let has_break = self.buf[old..].contains(&b'\n');
        let mut parse_to = if has_break {
            self.buf.len()
        } else if old < EAGER_HEAD_BYTES && !self.buf[..old].contains(&b'\n') {
            self.buf.len().min(EAGER_HEAD_BYTES)
        } else {
            return self.head_limit().map(|()| take);
        };
        let max_headers = self.limits.max_headers.min(MAX_HEADERS_CAP);
        // Uninitialised storage: initialising 256 headers (8 KiB) on every parse cost as much as
        // parsing a small head (benches/micro.rs). Creating it needs no `unsafe`.
        let mut storage =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
        let mut config = httparse::ParserConfig::default();
        // RFC 9112 §5.2: a user agent replaces obs-fold with SP; §5.1 lets a client tolerate
        // whitespace before the colon. Embedded servers emit both.
        config.allow_obsolete_multiline_headers_in_responses(true);
        config.allow_spaces_after_header_name_in_responses(true);
        #[cfg(test)]
        {
            self.parses += 1;
        }
        let mut parsed = httparse::Response::new(&mut []);
        let mut outcome = config.parse_response_with_uninit_headers(
            &mut parsed,
            &self.buf[..parse_to],
            &mut storage[..max_headers],
        );
        // Parsed through the line still arriving (the common case costs one parse and no search
        // for the last line break); an error counts only if it lies before that line.
        if has_break && outcome.is_err() {
            let last_break = self.buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            if last_break < parse_to {
                parse_to = last_break;
                parsed = httparse::Response::new(&mut []);
                outcome = config.parse_response_with_uninit_headers(
                    &mut parsed,
                    &self.buf[..parse_to],
                    &mut storage[..max_headers],
                );
            }
        }
        let len = match outcome {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return self.head_limit().map(|()| take),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::LimitExceeded { limit: Limit::HeaderCount, max: max_headers });
            }
            Err(e) => return Err(Error::malformed(describe(e))),
        };
        if len > self.limits.max_head_bytes {
            return Err(Error::LimitExceeded { limit: Limit::HeadBytes, max: self.limits.max_head_bytes });
        }
        let status = parsed.code.unwrap_or(0);
        let minor_version = parsed.version.unwrap_or(1);
        let base = self.buf.as_ptr() as usize;
        // httparse hands back slices of the buffer, except an empty reason phrase, which may be
        // a static "": anything outside the buffer is the empty range.
        let end = base + self.buf.len();
        let range = |s: &[u8]| {
            let p = s.as_ptr() as usize;
            if s.is_empty() || p < base || p + s.len() > end {
                return 0..0;
            }
            p - base..p - base + s.len()
        };
        let reason = parsed.reason.map(|r| range(r.as_bytes())).unwrap_or(0..0);
        self.headers.clear();
        self.headers.extend(parsed.headers.iter().map(|h| (range(h.name.as_bytes()), range(h.value))));
        let used = len - old;

        // A code outside 100..=599 is invalid, but RFC 9110 §15 asks a client to treat it as a
        // final (5xx-like) response: it is delivered as received, the caller sees the number.
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(Error::malformed("101 Switching Protocols without an Upgrade request"));
            }
            // Interim response: skip it and parse what follows as a new head (RFC 9110 §15.2).
            self.interim += 1;
            if self.interim > self.limits.max_interim_responses {
                return Err(Error::LimitExceeded {
                    limit: Limit::InterimResponses,
                    max: self.limits.max_interim_responses,
                });
            }
            self.buf.clear();
            return Ok(used);
        }

        // The bytes after the head were taken in with it (one copy, into one allocation that
        // the body then fills without growing) but are handed back as unused: the body's state
        // takes what belongs to it, by its framing.
        self.buf.truncate(len);
        self.body_at = len;
        // obs-fold: replace the line breaks inside a value with spaces, in place.
        // (A folded value holds a LF: found by memchr, the byte loop runs only there.)
        for (_, v) in &self.headers {
            let value = &mut self.buf[v.clone()];
            if value.contains(&b'\n') {
                for b in value {
                    if *b == b'\r' || *b == b'\n' {
                        *b = b' ';
                    }
                }
            }
        }
        self.status = status;
        self.minor_version = minor_version;
        self.reason = reason;
        self.state = State::Body(self.body_framing()?);
        if matches!(self.state, State::Body(Body::Length(0))) {
            self.state = State::Done;
        }
        Ok(used)
    }

    /// An incomplete head must not grow past the limit.
    fn head_limit(&self) -> Result<()> {
        if self.buf.len() > self.limits.max_head_bytes {
            return Err(Error::LimitExceeded { limit: Limit::HeadBytes, max: self.limits.max_head_bytes });
        }
        Ok(())
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| self.buf[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| self.buf[v.clone()].trim_ascii())
    }

    /// Which of the fields that decide framing and persistence the head has: one pass over the
    /// names, so a typical response (a few fields, only Content-Length among these) is not
    /// walked once per field name.
    fn framing_fields(&self) -> Fields {
        let mut f = Fields::default();
        for (i, (n, _)) in self.headers.iter().enumerate() {
            let name = &self.buf[n.clone()];
            match name.len() {
                10 if is_field(name, b"connection") => f.connection = true,
                10 if is_field(name, b"keep-alive") => f.keep_alive = true,
                14 if is_field(name, b"content-length") => {
                    if f.content_lengths == 0 {
                        f.content_length_at = i;
                    }
                    f.content_lengths += 1;
                }
                17 if is_field(name, b"transfer-encoding") => f.transfer_encoding = true,
                _ => {}
            }
        }
        f
    }

    /// RFC 9112 §6.3, in order; also fills in `persistence`.
    fn body_framing(&mut self) -> Result<Body> {
        let http10 = self.minor_version == 0;
        let fields = self.framing_fields();
        let (mut connection_close, mut keep_alive_token) = (false, false);
        if fields.connection {
            for v in self.values("connection") {
                connection_close |= has_token(v, b"close");
                keep_alive_token |= has_token(v, b"keep-alive");
            }
        }
        self.persistence.close = if connection_close {
            Some(RetireReason::ServerSaidClose)
        } else if http10 && !keep_alive_token {
            Some(RetireReason::Http10)
        } else {
            None
        };
        let (timeout, max) =
            if fields.keep_alive { parse_keep_alive(self.values("keep-alive")) } else { (None, None) };
        self.persistence.idle_timeout = timeout;
        self.persistence.max_requests = max;
        if max == Some(0) && self.persistence.close.is_none() {
            self.persistence.close = Some(RetireReason::KeepAliveMaxReached);
        }

        // 1. HEAD, 1xx (handled by the caller), 204 and 304 have no body, whatever the fields say.
        if self.head_request || self.status == 204 || self.status == 304 {
            return Ok(Body::Length(0));
        }
        let (has_te, has_cl) = (fields.transfer_encoding, fields.content_lengths > 0);
        // 3. Transfer-Encoding.
        if has_te {
            if has_cl {
                return Err(Error::malformed(
                    "both Transfer-Encoding and Content-Length (possible smuggling)",
                ));
            }
            if http10 {
                // RFC 9112 §6.1: treat as faulty framing.
                return Err(Error::malformed("Transfer-Encoding in an HTTP/1.0 response"));
            }
            let mut codings = self
                .values("transfer-encoding")
                .flat_map(|v| v.split(|&b| b == b','))
                .map(|c| c.trim_ascii())
                .filter(|c| !c.is_empty());
            let first = codings.next();
            let rest = codings.next();
            return match (first, rest) {
                (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => {
                    Ok(Body::Chunked(ChunkedDecoder::new(self.limits.max_head_bytes)))
                }
                _ => Err(Error::malformed(
                    "unsupported Transfer-Encoding (only a single \"chunked\" is understood)",
                )),
            };
        }
        // 5. Content-Length; repeats must agree (RFC 9110 §8.6).
        if has_cl {
            let mut length: Option<u64> = None;
            let single = (fields.content_lengths == 1).then(|| {
                let (_, v) = &self.headers[fields.content_length_at];
                self.buf[v.clone()].trim_ascii()
            });
            // Either the single field, or all of them (`take(0)` never runs the search).
            let all = self.values("content-length").take(if single.is_some() { 0 } else { usize::MAX });
            for v in single.into_iter().chain(all).flat_map(|v| v.split(|&b| b == b',')) {
                let v = v.trim_ascii();
                let n = parse_decimal(v).ok_or_else(|| Error::malformed("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Error::malformed("conflicting Content-Length values"));
                }
                length = Some(n);
            }
            let n = length.unwrap_or(0);
            if n > self.limits.max_body_bytes as u64 {
                return Err(Error::LimitExceeded {
                    limit: Limit::BodyBytes,
                    max: self.limits.max_body_bytes,
                });
            }
            return Ok(Body::Length(n));
        }
        // 7. Otherwise the body runs until the server closes the connection.
        self.persistence.close = Some(RetireReason::CloseDelimitedBody);
        Ok(Body::UntilClose)
    }
}

/// The fields [`ResponseReader::body_framing`] looks at, present or not.
#[derive(Default)]
struct Fields {
    connection: bool,
    keep_alive: bool,
    /// `Content-Length` fields, and the index of the first (the common single one is not
    /// searched for again).
    content_lengths: usize,
    content_length_at: usize,
    transfer_encoding: bool,
}

/// Whether header name `name` (a token: httparse admits nothing else) is `lower`, a name of
/// lowercase letters and `-`, in any case. Setting bit 5 folds a token's byte into `lower`'s
/// only from the same letter in either case, or from `-` itself (the other byte it folds to `-`
/// is CR, never in a token): a third of `eq_ignore_ascii_case`'s work, once per field per
/// response.
fn is_field(name: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower.iter().all(|&b| b.is_ascii_lowercase() || b == b'-'));
    name.len() == lower.len() && name.iter().zip(lower).all(|(&n, &l)| n | 0x20 == l)
}

/// Digits only (no sign, no space), at most 19 of them: below `u64::MAX`, so no overflow.
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0')))
}

/// `Keep-Alive: timeout=5, max=100` (RFC 2068 §19.7.1.1; still what embedded servers send).
fn parse_keep_alive<'a>(values: impl Iterator<Item = &'a [u8]>) -> (Option<Duration>, Option<u32>) {
    let (mut timeout, mut max) = (None, None);
    for param in values.flat_map(|v| v.split(|&b| b == b',' || b == b';')) {
        let Some(eq) = param.iter().position(|&b| b == b'=') else { continue };
        let (k, v) = (param[..eq].trim_ascii(), param[eq + 1..].trim_ascii());
        let Some(n) = parse_decimal(v) else { continue };
        if k.eq_ignore_ascii_case(b"timeout") {
            // Servers that count their keep-alive timeout in milliseconds announce it in whole
            // seconds, rounded down (Node.js, Apache): `timeout=0` says "under a second", not
            // "never reuse" (taken literally, every command would pay a handshake against a
            // server that keeps connections for hundreds of milliseconds). Not announced, then:
            // the pre-write check and the learned idle close cover it, as for any server.
            timeout = (n > 0).then(|| Duration::from_secs(n.min(86_400)));
        } else if k.eq_ignore_ascii_case(b"max") {
            max = Some(n.min(u64::from(u32::MAX)) as u32);
        }
    }
    (timeout, max)
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid byte in a header name",
        httparse::Error::HeaderValue => "invalid byte in a header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status line",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "not an HTTP/1.x response",
        httparse::Error::TooManyHeaders => "too many header fields",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], head_request: bool) -> Result<(Response, Persistence, usize)> {
        let mut r = ResponseReader::new(Limits::default(), head_request);
        match r.feed(input)? {
            Progress::Complete { extra } => {
                let (resp, p) = r.finish(Meta::default());
                Ok((resp, p, extra))
            }
            Progress::NeedMore => panic!("incomplete: {:?}", String::from_utf8_lossy(input)),
        }
    }

    fn malformed(input: &[u8]) -> bool {
        let mut r = ResponseReader::new(Limits::default(), false);
        matches!(r.feed(input), Err(Error::MalformedResponse { .. }))
    }

    #[test]
    fn content_length_body_and_keep_alive() {
        let (resp, p, extra) =
            read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloGARBAGE", false).unwrap();
        assert_eq!((resp.status(), resp.reason(), resp.body()), (200, "OK", &b"hello"[..]));
        assert_eq!(resp.header("x-a"), Some("b"));
        assert_eq!(p.close, None);
        assert_eq!(extra, 7);
    }

    /// A server that trickles its head a byte at a time costs a parse per line, not one per
    /// byte (a parse re-reads the head from its start: per byte, a 16 KiB head would be
    /// 16,384 parses of 8 KiB on average). Here: 10,780 bytes, 53 line breaks, 69 parses.
    /// The head and the body share one buffer: what a streamed body hands out after each feed
    /// (and then drops) is body only, never a part of a head still arriving, whatever the
    /// split; the response keeps its head.
    #[test]
    fn a_streamed_body_never_takes_head_bytes() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-A: b\r\n\r\n0123456789";
        for split in 1..input.len() {
            let mut r = ResponseReader::new(Limits::default(), false);
            r.stream_body();
            let mut streamed = Vec::new();
            for piece in [&input[..split], &input[split..]] {
                assert!(r.feed(piece).is_ok(), "split at {split}");
                streamed.extend_from_slice(r.body());
                r.clear_body();
            }
            assert_eq!(streamed, b"0123456789", "split at {split}");
            let (resp, _) = r.finish(Meta::default());
            assert_eq!((resp.status(), resp.header("x-a"), resp.body()), (200, Some("b"), &b""[..]));
        }
        // Kept in memory, the body follows the head in the same buffer, and leaves it whole.
        let (resp, _, _) = read_all(input, false).unwrap();
        assert_eq!((resp.body(), resp.header("content-length")), (&b"0123456789"[..], Some("10")));
        assert_eq!(resp.into_body(), b"0123456789");
    }

    #[test]
    fn a_head_trickled_byte_by_byte_is_parsed_once_per_line() {
        let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..50 {
            input.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(200)).as_bytes());
        }
        input.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
        let lines = input.iter().filter(|&&b| b == b'\n').count();
        let mut r = ResponseReader::new(Limits::default(), false);
        let (last, bytes) = input.split_last().unwrap();
        for b in bytes {
            assert_eq!(r.feed(std::slice::from_ref(b)).unwrap(), Progress::NeedMore);
        }
        assert_eq!(r.feed(&[*last]).unwrap(), Progress::Complete { extra: 0 });
        // The status line's bytes before its CR LF are parsed as they come (16), then one parse
        // per line break.
        assert_eq!(r.parses, b"HTTP/1.1 200 OK\r".len() + lines, "{} bytes", input.len());
        assert_eq!(r.finish(Meta::default()).0.body(), b"ok");

        // An error in a header line is found at the end of the line, whatever the split (in the
        // status line's first bytes, at once); an endless line still stops at the head limit.
        let mut r = ResponseReader::new(Limits::default(), false);
        assert_eq!(r.feed(b"HTTP/1.1 200 OK\r\nX-A: b").unwrap(), Progress::NeedMore);
        assert_eq!(r.feed(b"\x01c").unwrap(), Progress::NeedMore);
        assert!(matches!(r.feed(b"\r\n"), Err(Error::MalformedResponse { .. })));
        let mut r = ResponseReader::new(Limits::default(), false);
        assert!(matches!(r.feed(b"\x15\x03\x01"), Err(Error::MalformedResponse { .. })));
        let mut r = ResponseReader::new(Limits { max_head_bytes: 64, ..Limits::default() }, false);
        assert_eq!(r.feed(b"HTTP/1.1 200 OK\r\nX: ").unwrap(), Progress::NeedMore);
        let err = r.feed(&[b'a'; 100]).unwrap_err();
        assert!(matches!(err, Error::LimitExceeded { limit: Limit::HeadBytes, max: 64 }), "{err:?}");
    }

    #[test]
    fn every_split_point_parses_identically() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
        for split in 0..=input.len() {
            let mut r = ResponseReader::new(Limits::default(), false);
            assert_eq!(
                r.feed(&input[..split]).unwrap(),
                if split == input.len() { Progress::Complete { extra: 0 } } else { Progress::NeedMore },
                "split {split}"
            );
            if split < input.len() {
                assert_eq!(
                    r.feed(&input[split..]).unwrap(),
                    Progress::Complete { extra: 0 },
                    "split {split}"
                );
            }
            let (resp, _) = r.finish(Meta::default());
            assert_eq!((resp.status(), resp.body()), (200, &b"abcd"[..]));
        }
    }

    /// A head trickled a byte at a time (bare LF, obs-fold, an interim response first) reads as
    /// the same response as in one piece, and a trickled head over the limit is still refused.
    #[test]
    fn a_head_fed_a_byte_at_a_time_parses_identically() {
        let input: &[u8] =
            b"HTTP/1.1 103 Early\n\nHTTP/1.1 200 OK\nX-A: one\r\n  two\nContent-Length: 2\r\n\r\nok";
        let mut r = ResponseReader::new(Limits::default(), false);
        for (i, b) in input.iter().enumerate() {
            let p = r.feed(std::slice::from_ref(b)).unwrap();
            assert_eq!(p == Progress::Complete { extra: 0 }, i + 1 == input.len(), "byte {i}");
        }
        let (resp, _) = r.finish(Meta::default());
        let (whole, _, _) = read_all(input, false).unwrap();
        assert_eq!((resp.status(), resp.header("x-a"), resp.body()), (200, whole.header("x-a"), &b"ok"[..]));
        assert!(resp.header("x-a").is_some_and(|v| v.starts_with("one ") && v.ends_with(" two")));
        let limits = Limits { max_head_bytes: 64, ..Limits::default() };
        let mut r = ResponseReader::new(limits, false);
        let long = format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n", "p".repeat(100));
        let err = long.as_bytes().iter().find_map(|b| r.feed(std::slice::from_ref(b)).err());
        assert!(matches!(err, Some(Error::LimitExceeded { limit: Limit::HeadBytes, max: 64 })), "{err:?}");
    }

    #[test]
    fn no_body_for_head_204_304() {
        let (resp, p, extra) = read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true).unwrap();
        assert_eq!((resp.body().len(), p.close, extra), (0, None, 0));
        for s in [204, 304] {
            let input = format!("HTTP/1.1 {s} X\r\nContent-Length: 4\r\n\r\n");
            let (resp, _, _) = read_all(input.as_bytes(), false).unwrap();
            assert_eq!(resp.body().len(), 0);
        }
    }

    #[test]
    fn close_delimited_body_ends_at_eof() {
        let mut r = ResponseReader::new(Limits::default(), false);
        assert_eq!(r.feed(b"HTTP/1.1 200 OK\r\n\r\npart1").unwrap(), Progress::NeedMore);
        assert_eq!(r.feed(b"part2").unwrap(), Progress::NeedMore);
        assert!(r.feed_eof());
        let (resp, p) = r.finish(Meta::default());
        assert_eq!(resp.body(), b"part1part2");
        assert_eq!(p.close, Some(RetireReason::CloseDelimitedBody));
    }

    #[test]
    fn eof_mid_length_body_is_truncation() {
        let mut r = ResponseReader::new(Limits::default(), false);
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").unwrap();
        assert!(!r.feed_eof());
        let mut r = ResponseReader::new(Limits::default(), false);
        assert!(!r.feed_eof());
        assert!(!r.started());
    }

    #[test]
    fn connection_close_http10_and_keep_alive_header() {
        let (_, p, _) =
            read_all(b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 0\r\n\r\n", false)
                .unwrap();
        assert_eq!(p.close, Some(RetireReason::ServerSaidClose));
        let (_, p, _) = read_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        assert_eq!(p.close, Some(RetireReason::Http10));
        let (_, p, _) = read_all(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5, max=99\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        assert_eq!(
            p,
            Persistence { close: None, idle_timeout: Some(Duration::from_secs(5)), max_requests: Some(99) }
        );
        let (_, p, _) =
            read_all(b"HTTP/1.1 200 OK\r\nKeep-Alive: max=0\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        assert_eq!(p.close, Some(RetireReason::KeepAliveMaxReached));
    }

    /// RFC 9112 §2.3: a later HTTP/1 minor version is read as HTTP/1.1, however the head is split.
    #[test]
    fn a_later_http1_minor_version_is_read_as_1_1() {
        let wire = b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok";
        for split in 1..wire.len() {
            let mut r = ResponseReader::new(Limits::default(), false);
            let first = r.feed(&wire[..split]).unwrap();
            if !matches!(first, Progress::Complete { .. }) {
                assert!(
                    matches!(r.feed(&wire[split..]).unwrap(), Progress::Complete { extra: 0 }),
                    "split {split}"
                );
            }
            let (resp, p) = r.finish(Meta::default());
            assert_eq!((resp.status(), resp.body(), p.close), (200, &b"ok"[..], None), "split {split}");
        }
        assert!(malformed(b"HTTP/1.x 200 OK\r\n\r\n"));
        assert!(malformed(b"HTTP/1.23 200 OK\r\n\r\n"));
        assert!(malformed(b"HTTP/3.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn content_length_repeats_must_agree() {
        let (resp, _, _) =
            read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok", false)
                .unwrap();
        assert_eq!(resp.body(), b"ok");
        assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"));
    }

    #[test]
    fn transfer_encoding_rules() {
        assert!(malformed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"));
        assert!(malformed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(malformed(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"));
    }

    #[test]
    fn malformed_heads() {
        assert!(malformed(b"HTTP/2.0 200 OK\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 2000 OK\r\n\r\n"));
        assert!(malformed(b"ICY 200 OK\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nBad\0Name: x\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n"));
        assert!(malformed(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"));
        assert!(malformed(b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(malformed(b"\nHTTP/1.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn status_line_without_reason_phrase() {
        for input in [
            &b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.1 200\nContent-Length: 2\n\nok",
            b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
        ] {
            let (resp, _, _) = read_all(input, false).unwrap();
            assert_eq!((resp.status(), resp.reason(), resp.body()), (200, "", &b"ok"[..]));
        }
        let (resp, _, _) = read_all(b"HTTP/1.1 200 \xffOK\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.reason(); // obs-text: not UTF-8, but never a panic
    }

    #[test]
    fn obs_fold_becomes_spaces() {
        let (resp, _, _) =
            read_all(b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        let v = resp.header("x-long").unwrap();
        assert!(v.starts_with('a') && v.ends_with('b') && !v.contains(['\r', '\n']), "{v:?}");
        // Several folds, in several fields, bare LFs among them, the last field folded: every
        // line break inside a value goes (the head's line-break count finds them all).
        let (resp, _, _) = read_all(
            b"HTTP/1.1 200 OK\nA: 1\r\n 2\n\t3\r\nB: x\r\nContent-Length: 0\r\nC: y\n z\r\n\r\n",
            false,
        )
        .unwrap();
        for (name, first, last) in [("a", '1', '3'), ("b", 'x', 'x'), ("c", 'y', 'z')] {
            let v = resp.header(name).unwrap();
            assert!(v.starts_with(first) && v.ends_with(last) && !v.contains(['\r', '\n']), "{name}: {v:?}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits =
            Limits { max_head_bytes: 64, max_headers: 2, max_body_bytes: 4, max_interim_responses: 2 };
        let check = |input: &[u8], want: Limit| {
            let mut r = ResponseReader::new(limits, false);
            let got = r.feed(input);
            assert!(matches!(got, Err(Error::LimitExceeded { limit, .. }) if limit == want), "{got:?}");
        };
        check(&[&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'a'; 100]].concat(), Limit::HeadBytes);
        check(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", Limit::HeaderCount);
        check(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Limit::BodyBytes);
        check(b"HTTP/1.1 200 OK\r\n\r\n12345", Limit::BodyBytes);
        check(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n", Limit::BodyBytes);
        check(b"HTTP/1.1 100 A\r\n\r\nHTTP/1.1 102 B\r\n\r\nHTTP/1.1 103 C\r\n\r\n", Limit::InterimResponses);
    }

    #[test]
    fn head_limit_holds_when_bytes_arrive_one_at_a_time() {
        let limits = Limits { max_head_bytes: 32, ..Limits::default() };
        let mut r = ResponseReader::new(limits, false);
        let endless = b"HTTP/1.1 200 OK\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut result = Ok(Progress::NeedMore);
        for b in endless.chunks(1) {
            result = r.feed(b);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(Error::LimitExceeded { limit: Limit::HeadBytes, .. })));
        assert!(r.buf.len() <= 33);
    }

    /// `usize::MAX` in every limit (a natural "no limit") overflows nothing: the response is
    /// read as with the defaults. (`max_head_bytes + 1` wrapped to 0 in release builds, and the
    /// loop spun on a head it never took in.)
    #[test]
    fn limits_of_usize_max_mean_no_limit() {
        let max = usize::MAX;
        let limits =
            Limits { max_head_bytes: max, max_headers: max, max_body_bytes: max, max_interim_responses: max };
        for response in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..],
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ] {
            let mut r = ResponseReader::new(limits, false);
            // One byte at a time, as a slow device sends it.
            let mut progress = Progress::NeedMore;
            for b in response {
                assert_eq!(progress, Progress::NeedMore);
                progress = r.feed(std::slice::from_ref(b)).unwrap();
            }
            assert_eq!(progress, Progress::Complete { extra: 0 });
        }
        let mut r = ResponseReader::new(limits, false);
        r.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody").unwrap();
        assert!(r.feed_eof());
    }

    /// A body length beyond 32 bits is never cut to its low bits (5_000_000_000 would become
    /// 705_032_704, and 2^32 + 10 would be a 10-byte body, on a target with a 32-bit `usize`):
    /// it is a limit error where `max_body_bytes` cannot reach it (any 32-bit target), and
    /// otherwise a body still awaited after 10 bytes. Also with `usize::MAX` for "no limit".
    #[test]
    fn lengths_beyond_32_bits_are_never_truncated() {
        let unlimited =
            Limits { max_head_bytes: usize::MAX, max_body_bytes: usize::MAX, ..Limits::default() };
        let beyond_32_bits = [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 4294967306\r\n\r\n0123456789"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5000000000\r\n\r\n0123456789",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000a\r\n0123456789",
        ];
        for input in beyond_32_bits {
            let text = String::from_utf8_lossy(input);
            let got = ResponseReader::new(unlimited, false).feed(input);
            match (got, usize::BITS > 32) {
                (Err(Error::LimitExceeded { limit: Limit::BodyBytes, max }), false) => {
                    assert_eq!(max, usize::MAX)
                }
                (Ok(Progress::NeedMore), true) => {}
                (other, _) => panic!("{text}: {other:?}"),
            }
            // The default limits refuse it, on every target.
            let got = ResponseReader::new(Limits::default(), false).feed(input);
            assert!(matches!(got, Err(Error::LimitExceeded { limit: Limit::BodyBytes, .. })), "{got:?}");
        }
        // A 20-digit length is invalid, not wrapped.
        assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551626\r\n\r\n"));
    }
}
