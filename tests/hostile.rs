//! Hostile responses over real loopback sockets. Every malformed, ambiguous, unsolicited or
//! endless response gets one defined outcome (RFC 9112 §2.2 bare LF, §4 status line, §5.2 obs-fold,
//! §6.3 body length, §7.1 chunked, §9.3 persistence), asserted exactly: the `Error` variant and
//! what it says, or the exact response. After each one the client must still serve a healthy
//! device, and the bad connection must never carry another request (device connection counts).
//! Endless responses come from a streaming server in this file; one test measures the client's
//! memory while servers stream without end.
//!
//! Table-driven tests run every case and report all mismatches at once.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use finwatch::{Client, Error, Limit, Limits, LostCause, Method, Request, Response, Stage};
use support::*;

// ---------------------------------------------------------------------------------------------
// Settings and shared helpers
// ---------------------------------------------------------------------------------------------

/// Small limits, so the limit cases are fast.
const LIMITS: Limits =
    Limits { max_head_bytes: 2048, max_headers: 16, max_body_bytes: 64 * 1024, max_interim_responses: 4 };
/// The request deadline of cases that must not wait for it.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The request deadline of cases that end at the deadline.
const SHORT: Duration = Duration::from_millis(300);
/// How long to wait for the device to see a connection closed.
const SETTLE: Duration = Duration::from_secs(2);

/// The memory test measures this process while it runs alone; every other test holds this shared.
static ISOLATION: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    ISOLATION.read().unwrap_or_else(PoisonError::into_inner)
}

fn client() -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    Client::builder()
        .limits(LIMITS)
        .request_timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// Runs `f`, turning a panic (inside finwatch) into its message.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic)".into())
    })
}

fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn describe(got: &Result<Response, Error>) -> String {
    match got {
        Ok(r) => {
            let headers: Vec<String> = r.headers().map(|(n, v)| format!("{n}: {}", show(v))).collect();
            format!(
                "response {} {:?} headers [{}] body {}",
                r.status(),
                r.reason(),
                headers.join(", "),
                show(r.body())
            )
        }
        Err(e) => format!("Err({e:?})"),
    }
}

/// A request to a healthy device must succeed: the client is still usable.
fn healthy_request(c: &mut Client, healthy: &DeviceServer) -> Result<(), String> {
    match guarded(|| c.get(&healthy.url("/healthy"))) {
        Ok(Ok(r)) if r.status() == 200 => Ok(()),
        Ok(other) => Err(format!("then a request to a healthy device gave {}", describe(&other))),
        Err(p) => Err(format!("then a request to a healthy device panicked: {p}")),
    }
}

/// The client's live connections to `addr`.
fn connections_to(c: &Client, addr: SocketAddr) -> usize {
    let host = addr.to_string();
    c.connections().iter().filter(|i| i.host == host).count()
}

// ---------------------------------------------------------------------------------------------
// Expected outcomes
// ---------------------------------------------------------------------------------------------

type Fields = &'static [(&'static str, &'static [u8])];

#[derive(Clone, Copy)]
enum Expect {
    /// Exactly this response: status, reason, every header field in order, body. `reuse`: the
    /// connection carries the next request (else it is retired).
    Response {
        status: u16,
        reason: &'static str,
        headers: Fields,
        body: &'static [u8],
        reuse: bool,
    },
    /// `Error::MalformedResponse` saying exactly this.
    Malformed(&'static str),
    /// `Error::MalformedResponse`, whatever it says: finwatch does not reject this input yet, so
    /// there is no wording to pin.
    MalformedAny,
    Limit(Limit, usize),
    Lost(LostCause, Stage),
    Deadline(Stage),
}

impl Expect {
    fn reuse(&self) -> bool {
        matches!(self, Expect::Response { reuse: true, .. })
    }
}

impl fmt::Debug for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Response { status, reason, headers, body, reuse } => {
                let headers: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {}", show(v))).collect();
                write!(
                    f,
                    "response {status} {reason:?} headers [{}] body {} ({})",
                    headers.join(", "),
                    show(body),
                    if *reuse { "connection reused" } else { "connection retired" }
                )
            }
            Expect::Malformed(what) => write!(f, "Err(MalformedResponse {{ what: {what:?} }})"),
            Expect::MalformedAny => write!(f, "Err(MalformedResponse {{ .. }})"),
            Expect::Limit(limit, max) => write!(f, "Err(LimitExceeded {{ limit: {limit:?}, max: {max} }})"),
            Expect::Lost(cause, stage) => {
                write!(f, "Err(ConnectionLost {{ cause: {cause:?}, stage: {stage:?} }})")
            }
            Expect::Deadline(stage) => write!(f, "Err(DeadlineExceeded {{ stage: {stage:?} }})"),
        }
    }
}

fn check(want: &Expect, got: &Result<Response, Error>) -> Result<(), String> {
    if let Err(e) = got
        && !e.may_have_been_processed()
    {
        return Err(format!("{e:?} claims the device cannot have acted, but it answered"));
    }
    let matches = match (want, got) {
        (Expect::Response { status, reason, headers, body, .. }, Ok(r)) => {
            r.status() == *status
                && r.reason() == *reason
                && r.body() == *body
                && r.headers().eq(headers.iter().map(|&(n, v)| (n, v)))
        }
        (Expect::Malformed(what), Err(Error::MalformedResponse { what: got })) => got == what,
        (Expect::MalformedAny, Err(Error::MalformedResponse { .. })) => true,
        (Expect::Limit(l, m), Err(Error::LimitExceeded { limit, max })) => (l, m) == (limit, max),
        (Expect::Lost(c, s), Err(Error::ConnectionLost { cause, stage, .. })) => (c, s) == (cause, stage),
        (Expect::Deadline(s), Err(Error::DeadlineExceeded { stage })) => s == stage,
        _ => false,
    };
    if matches { Ok(()) } else { Err(format!("expected {want:?}, got {}", describe(got))) }
}

// ---------------------------------------------------------------------------------------------
// Fixed hostile replies, through the support device
// ---------------------------------------------------------------------------------------------

/// One hostile reply: the device answers every request with `raw`, then does `after`.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    raw: &'static [u8],
    after: After,
    head: bool,
    timeout: Duration,
    expect: Expect,
}

fn case(name: &'static str, raw: &'static [u8], expect: Expect) -> Case {
    Case { name, raw, after: After::KeepAlive, head: false, timeout: TIMEOUT, expect }
}

fn malformed(name: &'static str, raw: &'static [u8], what: &'static str) -> Case {
    case(name, raw, Expect::Malformed(what))
}

/// Accepted: exactly this response, and the connection is reused.
fn accepted(
    name: &'static str,
    raw: &'static [u8],
    (status, reason): (u16, &'static str),
    headers: Fields,
    body: &'static [u8],
) -> Case {
    case(name, raw, Expect::Response { status, reason, headers, body, reuse: true })
}

impl Case {
    /// The device sends FIN after the reply.
    fn fin(self) -> Case {
        Case { after: After::Fin, ..self }
    }
    /// The device keeps the connection open and silent: only the (short) deadline ends it.
    fn stalls(self) -> Case {
        Case { after: After::KeepAlive, timeout: SHORT, ..self }
    }
    /// The response is delivered, but the connection is retired.
    fn retired(self) -> Case {
        match self.expect {
            Expect::Response { status, reason, headers, body, .. } => {
                Case { expect: Expect::Response { status, reason, headers, body, reuse: false }, ..self }
            }
            _ => self,
        }
    }
    fn head_request(self) -> Case {
        Case { head: true, ..self }
    }
}

const CL2: Fields = &[("Content-Length", b"2")];
const CHUNKED: Fields = &[("Transfer-Encoding", b"chunked")];
const OK: (u16, &str) = (200, "OK");

/// Runs every case (each on its own device and client) and fails with the list of mismatches.
fn run_table(cases: &[Case]) {
    let _shared = shared();
    let healthy = DeviceServer::keep_alive();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| match guarded(|| run_case(case, &healthy)) {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("- {}: {}\n    input {}", case.name, e, show(case.raw))),
            Err(p) => Some(format!("- {}: the test itself panicked: {p}", case.name)),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Two requests to a device that sends `case.raw` to each: both get the expected outcome, and
/// the device sees one connection (reused) or two (the first one retired and closed by the
/// client); then a healthy device is still served.
fn run_case(case: &Case, healthy: &DeviceServer) -> Result<(), String> {
    let (raw, after) = (case.raw, case.after);
    let dev = DeviceServer::start(move |_| Reply::raw(raw).then(after));
    let mut c = client();
    let reuse = case.expect.reuse();
    for n in 0..2 {
        let method = if case.head { Method::HEAD } else { Method::GET };
        let req = Request::builder(method, &dev.url(&format!("/{n}"))).timeout(case.timeout).build().unwrap();
        let got = match guarded(|| c.send(req)) {
            Ok(got) => got,
            Err(p) => {
                let then =
                    healthy_request(&mut c, healthy).err().unwrap_or_else(|| "client still usable".into());
                return Err(format!("request {n}: finwatch panicked: {p:?}; {then}"));
            }
        };
        check(&case.expect, &got).map_err(|e| format!("request {n}: {e}"))?;
        let kept = connections_to(&c, dev.addr());
        if kept != usize::from(reuse) {
            return Err(format!("request {n}: the client kept {kept} connection(s) to the device"));
        }
    }
    let conns: Vec<usize> = dev.requests().iter().map(|r| r.conn).collect();
    let want = if reuse { [0, 0] } else { [0, 1] };
    if conns != want {
        return Err(format!("requests arrived on device connections {conns:?}, expected {want:?}"));
    }
    if c.stats().retries != 0 {
        return Err(format!("{} retries after a response byte", c.stats().retries));
    }
    if !reuse {
        // The client closed both bad connections itself, and wrote nothing after a FIN.
        let closed = || dev.connections_closed_by_client() + dev.clients_closed_after_fin();
        if !wait_until(SETTLE, || closed() == 2) {
            return Err(format!("the client closed {} of the 2 bad connections", closed()));
        }
        if dev.bytes_after_fin() != 0 {
            return Err(format!("{} bytes written after the device's FIN", dev.bytes_after_fin()));
        }
    }
    healthy_request(&mut c, healthy)
}

#[test]
fn malformed_status_lines_are_typed_errors_and_the_connection_is_dropped() {
    const NOT_HTTP1: &str = "not an HTTP/1.x response";
    const BAD_STATUS: &str = "invalid status line";
    run_table(&[
        malformed("version HTTP/2.0", b"HTTP/2.0 200 OK\r\n\r\n", NOT_HTTP1),
        malformed("version HTTP/1.10", b"HTTP/1.10 200 OK\r\n\r\n", NOT_HTTP1),
        // RFC 9112 §2.3: HTTP-name is case-sensitive.
        malformed("version in lower case", b"http/1.1 200 OK\r\n\r\n", NOT_HTTP1),
        malformed("2-digit status", b"HTTP/1.1 20 OK\r\n\r\n", BAD_STATUS),
        malformed("4-digit status", b"HTTP/1.1 2000 OK\r\n\r\n", BAD_STATUS),
        malformed("negative status", b"HTTP/1.1 -200 OK\r\n\r\n", BAD_STATUS),
        malformed("no space after the version", b"HTTP/1.1200 OK\r\n\r\n", NOT_HTTP1),
        malformed("no space after the status", b"HTTP/1.1 200OK\r\n\r\n", BAD_STATUS),
        malformed("two spaces after the version", b"HTTP/1.1  200 OK\r\n\r\n", BAD_STATUS),
        malformed("NUL in the reason phrase", b"HTTP/1.1 200 O\0K\r\n\r\n", BAD_STATUS),
        malformed("CTL in the reason phrase", b"HTTP/1.1 200 O\x01K\r\n\r\n", BAD_STATUS),
        // RFC 9112 §2.2: a bare CR is invalid.
        malformed("bare CR ends the status line", b"HTTP/1.1 200 OK\rX: y\r\n\r\n", BAD_STATUS),
        malformed("garbage", b"garbage\r\n\r\n", NOT_HTTP1),
        malformed("ICY (SHOUTcast) status line", b"ICY 200 OK\r\n\r\n", NOT_HTTP1),
        malformed("HTTP/2 connection preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", NOT_HTTP1),
        malformed("HTTP/2 SETTINGS frame", b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", NOT_HTTP1),
        malformed("HTTP/2-style status line", b"HTTP/2 200\r\ncontent-length: 2\r\n\r\nok", NOT_HTTP1),
        malformed("TLS alert record", b"\x15\x03\x01\x00\x02\x02\x50", NOT_HTTP1),
        case(
            "status line cut short, then FIN",
            b"HTTP/1.1 200 O",
            Expect::Lost(LostCause::PeerClosed, Stage::ReadingResponse),
        )
        .fin(),
        case(
            "status line cut short, then silence",
            b"HTTP/1.1 200 O",
            Expect::Deadline(Stage::ReadingResponse),
        )
        .stalls(),
        // RFC 9112 §4: `SP [ reason-phrase ]`; the phrase may be empty.
        accepted(
            "empty reason phrase",
            b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
            (200, ""),
            CL2,
            b"ok",
        ),
        // RFC 9110 §15: outside 100..599 is invalid, and a client treats it as a 5xx: a final
        // response, delivered as it is.
        accepted(
            "status 600",
            b"HTTP/1.1 600 Weird\r\nContent-Length: 2\r\n\r\nok",
            (600, "Weird"),
            CL2,
            b"ok",
        ),
        accepted("status 099", b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok", (99, "Odd"), CL2, b"ok"),
    ]);
}

/// RFC 9112 §4 requires `SP` after the status code, but the reason phrase carries no meaning
/// (clients SHOULD ignore it) and `Response::reason` documents that it may be empty: a status
/// line without it is accepted. obs-text (0x80-0xFF) is valid in a reason phrase.
#[test]
fn status_lines_without_a_reason_phrase_or_with_obs_text_are_accepted() {
    run_table(&[
        accepted(
            "no reason phrase, no SP",
            b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
            (200, ""),
            CL2,
            b"ok",
        ),
        accepted(
            "no reason phrase, bare LF",
            b"HTTP/1.1 200\nContent-Length: 2\n\nok",
            (200, ""),
            CL2,
            b"ok",
        ),
        // `reason()` is a &str: a phrase that is not UTF-8 reads as empty.
        accepted(
            "obs-text in the reason phrase",
            b"HTTP/1.1 200 \xffOK\r\nContent-Length: 2\r\n\r\nok",
            (200, ""),
            CL2,
            b"ok",
        ),
    ]);
}

/// RFC 9112 §2.2 lets a *server* skip empty lines before a request-line; nothing lets a client
/// skip them before a status line: the first line of a response is its status line. Skipping
/// them turns `\r\n\r\n` into "wait for more" (the request then ends at its deadline).
#[test]
fn empty_lines_before_the_status_line_are_malformed() {
    run_table(&[
        case("empty line first", b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", Expect::MalformedAny),
        case("a response that is just CRLF CRLF", b"\r\n\r\n", Expect::MalformedAny).stalls(),
    ]);
}

#[test]
fn invalid_header_bytes_are_typed_errors_and_obs_fold_and_bare_lf_are_accepted() {
    const NAME: &str = "invalid byte in a header name";
    const VALUE: &str = "invalid byte in a header value";
    run_table(&[
        malformed("NUL in a name", b"HTTP/1.1 200 OK\r\nBad\0Name: x\r\n\r\n", NAME),
        malformed("CTL 0x01 in a name", b"HTTP/1.1 200 OK\r\nX\x01Y: x\r\n\r\n", NAME),
        malformed("DEL in a name", b"HTTP/1.1 200 OK\r\nX\x7fY: x\r\n\r\n", NAME),
        malformed("0x80 in a name", b"HTTP/1.1 200 OK\r\nX\x80Y: x\r\n\r\n", NAME),
        malformed("0xff in a name", b"HTTP/1.1 200 OK\r\nX\xffY: x\r\n\r\n", NAME),
        malformed("space inside a name", b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", NAME),
        malformed("line without a colon", b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", NAME),
        malformed("empty name", b"HTTP/1.1 200 OK\r\n: x\r\n\r\n", NAME),
        // RFC 9112 §2.2: whitespace between the start-line and the first field: reject (or skip).
        malformed("whitespace before the first field", b"HTTP/1.1 200 OK\r\n X: a\r\n\r\n", NAME),
        // RFC 9110 §5.5: NUL, CR and LF in a value MUST be rejected (or replaced); other CTLs
        // are invalid too.
        malformed("NUL in a value", b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n", VALUE),
        malformed("CTL 0x01 in a value", b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n", VALUE),
        malformed("DEL in a value", b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\n\r\n", VALUE),
        malformed("bare CR in a value", b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", VALUE),
        accepted(
            "obs-text and HTAB in a value",
            b"HTTP/1.1 200 OK\r\nX: a\xff\tb\r\nContent-Length: 2\r\n\r\nok",
            OK,
            &[("X", b"a\xff\tb"), ("Content-Length", b"2")],
            b"ok",
        ),
        // RFC 9112 §5.1: a user agent may tolerate whitespace before the colon; it is not part
        // of the name (so this Content-Length frames the body).
        accepted(
            "space before the colon",
            b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
            OK,
            CL2,
            b"ok",
        ),
        // RFC 9112 §5.2: a user agent replaces each obs-fold with one or more SP.
        accepted(
            "obs-fold",
            b"HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nContent-Length: 2\r\n\r\nok",
            OK,
            &[("X-Long", b"a    b"), ("Content-Length", b"2")],
            b"ok",
        ),
        accepted(
            "obs-fold after an empty first line",
            b"HTTP/1.1 200 OK\r\nX:\r\n b\r\nContent-Length: 2\r\n\r\nok",
            OK,
            &[("X", b"b"), ("Content-Length", b"2")],
            b"ok",
        ),
        accepted(
            "obs-fold with bare LF",
            b"HTTP/1.1 200 OK\nX: a\n b\nContent-Length: 2\n\nok",
            OK,
            &[("X", b"a  b"), ("Content-Length", b"2")],
            b"ok",
        ),
        // Folded into "1   0", not "10".
        malformed(
            "obs-fold inside Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n 0\r\n\r\nok",
            "invalid Content-Length",
        ),
        // RFC 9112 §2.2: a recipient MAY recognize a single LF as a line terminator.
        accepted(
            "bare LF line endings",
            b"HTTP/1.1 200 OK\nContent-Length: 2\nX: y\n\nok",
            OK,
            &[("Content-Length", b"2"), ("X", b"y")],
            b"ok",
        ),
        accepted(
            "mixed CRLF and LF",
            b"HTTP/1.1 200 OK\r\nX: y\nContent-Length: 2\r\n\nok",
            OK,
            &[("X", b"y"), ("Content-Length", b"2")],
            b"ok",
        ),
    ]);
}

#[test]
fn content_length_and_transfer_encoding_follow_rfc_9112_section_6() {
    const TE: &str = "unsupported Transfer-Encoding (only a single \"chunked\" is understood)";
    const BOTH: &str = "both Transfer-Encoding and Content-Length (possible smuggling)";
    run_table(&[
        // RFC 9110 §8.6: identical repeats may be collapsed to one value.
        accepted(
            "duplicate identical Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
            OK,
            &[("Content-Length", b"2"), ("Content-Length", b"2")],
            b"ok",
        ),
        accepted(
            "Content-Length list 2, 2",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
            OK,
            &[("Content-Length", b"2, 2")],
            b"ok",
        ),
        malformed(
            "Content-Length list 2, 3",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
            "conflicting Content-Length values",
        ),
        malformed(
            "Content-Length 2 then 2, 3",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 3\r\n\r\nok",
            "conflicting Content-Length values",
        ),
        accepted(
            "Content-Length with leading zeros",
            b"HTTP/1.1 200 OK\r\nContent-Length: 002\r\n\r\nok",
            OK,
            &[("Content-Length", b"002")],
            b"ok",
        ),
        malformed("empty Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok", "invalid Content-Length"),
        malformed("hex Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok", "invalid Content-Length"),
        malformed("Content-Length 2 2", b"HTTP/1.1 200 OK\r\nContent-Length: 2 2\r\n\r\nok", "invalid Content-Length"),
        case(
            "Content-Length larger than the body, then FIN",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok",
            Expect::Lost(LostCause::PeerClosed, Stage::ReadingResponse),
        )
        .fin(),
        case(
            "Content-Length over the body limit",
            b"HTTP/1.1 200 OK\r\nContent-Length: 65537\r\n\r\n",
            Expect::Limit(Limit::BodyBytes, LIMITS.max_body_bytes),
        ),
        // RFC 9112 §6.3 rule 3: both present "ought to be handled as an error".
        malformed(
            "Content-Length, then Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            BOTH,
        ),
        malformed(
            "Transfer-Encoding and Content-Length 0",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            BOTH,
        ),
        // RFC 9112 §6.3 rule 4 frames these by the close; finwatch cannot decode the codings
        // and refuses them (the connection is retired either way, so nothing desynchronises).
        malformed(
            "Transfer-Encoding chunked, gzip",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            TE,
        ),
        malformed("Transfer-Encoding gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", TE),
        malformed(
            "Transfer-Encoding chunked, then gzip on a second line",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\nok",
            TE,
        ),
        // RFC 9112 §7: transfer-coding names are case-insensitive.
        accepted(
            "Transfer-Encoding Chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            OK,
            &[("Transfer-Encoding", b"Chunked")],
            b"ok",
        ),
        // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
        malformed(
            "Transfer-Encoding in an HTTP/1.0 response",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "Transfer-Encoding in an HTTP/1.0 response",
        ),
        malformed(
            "Transfer-Encoding in an HTTP/1.0 keep-alive response",
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "Transfer-Encoding in an HTTP/1.0 response",
        ),
    ]);
}

#[test]
fn chunked_framing_errors_are_typed_and_trailers_are_discarded() {
    macro_rules! chunked {
        ($body:literal) => {
            concat!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", $body).as_bytes()
        };
    }
    const OVERFLOW: &str = "chunk size overflows 64 bits";
    run_table(&[
        malformed("chunk size of 18 hex digits", chunked!("ffffffffffffffffff\r\nok\r\n0\r\n\r\n"), OVERFLOW),
        malformed("chunk size of 17 hex digits", chunked!("10000000000000000\r\nok\r\n0\r\n\r\n"), OVERFLOW),
        case(
            "chunk size u64::MAX",
            chunked!("ffffffffffffffff\r\nok\r\n0\r\n\r\n"),
            Expect::Limit(Limit::BodyBytes, LIMITS.max_body_bytes),
        ),
        // RFC 9112 §7.1: leading zeros are valid and must not count as overflow.
        accepted(
            "chunk size with 24 digits of leading zeros",
            chunked!("000000000000000000000002\r\nok\r\n0\r\n\r\n"),
            OK,
            CHUNKED,
            b"ok",
        ),
        malformed(
            "chunk size garbage",
            chunked!("g\r\nok\r\n0\r\n\r\n"),
            "chunk size expected, got byte 0x67",
        ),
        malformed(
            "negative chunk size",
            chunked!("-2\r\nok\r\n0\r\n\r\n"),
            "chunk size expected, got byte 0x2d",
        ),
        malformed("chunk size 0x2", chunked!("0x2\r\nok\r\n0\r\n\r\n"), "invalid byte 0x78 after chunk size"),
        malformed(
            "space before the chunk size",
            chunked!(" 2\r\nok\r\n0\r\n\r\n"),
            "chunk size expected, got byte 0x20",
        ),
        malformed(
            "bare CR after the chunk size",
            chunked!("2\rok\r\n0\r\n\r\n"),
            "bare CR in chunk size line",
        ),
        malformed(
            "chunk data longer than its size",
            chunked!("2\r\nokX\r\n0\r\n\r\n"),
            "chunk data not followed by CRLF",
        ),
        malformed("NUL in a chunk extension", chunked!("2;a\0\r\nok\r\n0\r\n\r\n"), "NUL in chunk extension"),
        accepted(
            "chunk extension with BWS",
            chunked!("2 ; name=\"v\"\r\nok\r\n0\r\n\r\n"),
            OK,
            CHUNKED,
            b"ok",
        ),
        accepted("chunked with bare LF", chunked!("2\nok\n0\n\n"), OK, CHUNKED, b"ok"),
        // Trailer fields are read and discarded: not in the response's header fields.
        accepted(
            "trailers",
            chunked!("2\r\nok\r\n0\r\nX-Checksum: 1\r\nX-Other: two\r\n\r\n"),
            OK,
            CHUNKED,
            b"ok",
        ),
        accepted("trailers with bare LF", chunked!("2\r\nok\r\n0\nX-T: 1\n\n"), OK, CHUNKED, b"ok"),
        malformed("NUL in a trailer", chunked!("2\r\nok\r\n0\r\nX-T: \0\r\n\r\n"), "NUL in trailer section"),
        // RFC 9112 §7.1: the CRLF that ends the trailer section ends the message; without it
        // finwatch reports the response cut short (§8 would also let a client keep the body
        // once the zero-size chunk arrived; finwatch does not deliver a partial message).
        case(
            "no CRLF after the last chunk, then FIN",
            chunked!("2\r\nok\r\n0\r\n"),
            Expect::Lost(LostCause::PeerClosed, Stage::ReadingResponse),
        )
        .fin(),
        case(
            "no CRLF after the last chunk, then silence",
            chunked!("2\r\nok\r\n0\r\n"),
            Expect::Deadline(Stage::ReadingResponse),
        )
        .stalls(),
        case(
            "unterminated trailer section, then FIN",
            chunked!("2\r\nok\r\n0\r\nX-T: 1\r\n"),
            Expect::Lost(LostCause::PeerClosed, Stage::ReadingResponse),
        )
        .fin(),
        case(
            "no last chunk, then FIN",
            chunked!("2\r\nok\r\n"),
            Expect::Lost(LostCause::PeerClosed, Stage::ReadingResponse),
        )
        .fin(),
    ]);
}

#[test]
fn interim_responses_101_and_bytes_after_a_response_have_defined_outcomes() {
    const NO_UPGRADE: &str = "101 Switching Protocols without an Upgrade request";
    run_table(&[
        // RFC 9110 §15.2.2: a server must not switch to a protocol the client did not ask for.
        malformed(
            "101 with an Upgrade header",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            NO_UPGRADE,
        ),
        malformed("101 without an Upgrade header", b"HTTP/1.1 101 Switching Protocols\r\n\r\n", NO_UPGRADE),
        malformed("100, then 101", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching\r\n\r\n", NO_UPGRADE),
        // RFC 9112 §6.3 rule 1: a 1xx never has a body, whatever its fields say.
        accepted(
            "100 with a Content-Length, then 200",
            b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            OK,
            CL2,
            b"ok",
        ),
        case(
            "5 interim responses over a limit of 4",
            b"HTTP/1.1 100 A\r\n\r\nHTTP/1.1 102 B\r\n\r\nHTTP/1.1 103 C\r\n\r\nHTTP/1.1 100 D\r\n\r\nHTTP/1.1 100 E\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Expect::Limit(Limit::InterimResponses, LIMITS.max_interim_responses),
        ),
        // Bytes after a complete response belong to no request (RFC 9112 §6.3, §9.3); the
        // response is delivered and the stream, out of step, is retired. (The plain
        // Content-Length case is in tests/framing.rs.)
        accepted(
            "bytes after a chunked response",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            OK,
            CHUNKED,
            b"ok",
        )
        .retired(),
        accepted(
            "a 204 followed by body bytes",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
            (204, "No Content"),
            &[("Content-Length", b"5")],
            b"",
        )
        .retired(),
        accepted(
            "a HEAD response followed by body bytes",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            OK,
            &[("Content-Length", b"5")],
            b"",
        )
        .head_request()
        .retired(),
    ]);
}

// ---------------------------------------------------------------------------------------------
// A scripted loopback server: speaks first, speaks late, or streams without end
// ---------------------------------------------------------------------------------------------

/// How often blocked server calls re-check the stop flag.
const TICK: Duration = Duration::from_millis(20);

/// A loopback server that runs `script` on a thread for every accepted connection. Every
/// blocking call has a timeout and re-checks the stop flag; dropping it stops everything.
struct Script {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    accept: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

struct Peer {
    stream: TcpStream,
    /// 0-based accept order.
    index: usize,
    stop: Arc<AtomicBool>,
}

impl Script {
    fn start(script: impl Fn(Peer) + Send + Sync + 'static) -> Script {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let (stop2, accepted2) = (stop.clone(), accepted.clone());
        let accept = thread::spawn(move || {
            let mut conns = Vec::new();
            while !stop2.load(SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(1));
                    continue;
                };
                let index = accepted2.fetch_add(1, SeqCst);
                let (script, stop) = (script.clone(), stop2.clone());
                conns.push(thread::spawn(move || {
                    if stream.set_nonblocking(false).is_ok()
                        && stream.set_nodelay(true).is_ok()
                        && stream.set_read_timeout(Some(TICK)).is_ok()
                        && stream.set_write_timeout(Some(TICK)).is_ok()
                    {
                        script(Peer { stream, index, stop });
                    }
                }));
            }
            conns
        });
        Script { addr, stop, accepted, accept: Some(accept) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(conns) = self.accept.take().and_then(|h| h.join().ok()) {
            wait_until(Duration::from_secs(1), || conns.iter().all(|h| h.is_finished()));
        }
    }
}

/// How a streaming connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A write failed: the client closed or reset the connection.
    ClientGone,
    /// The byte cap was reached.
    Cap,
    /// The time cap was reached.
    Time,
    /// The server is being dropped, or no request came.
    Stopped,
}

impl Peer {
    fn stopped(&self) -> bool {
        self.stop.load(SeqCst)
    }

    /// Reads one request head (finwatch's GETs have no body). False on EOF, error, stop or 2 s.
    fn read_request(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            if self.stopped() || Instant::now() > deadline {
                return false;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return false,
            }
        }
        true
    }

    fn write(&mut self, mut bytes: &[u8]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !bytes.is_empty() {
            if self.stopped() || Instant::now() > deadline {
                return false;
            }
            match self.stream.write(bytes) {
                Ok(0) => return false,
                Ok(n) => bytes = &bytes[n..],
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads until the client closes; returns the bytes it sent meanwhile, or `None` if it did
    /// not close within 2 s.
    fn bytes_until_closed(&mut self) -> Option<usize> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut chunk = [0u8; 4096];
        let mut sent = 0;
        loop {
            if self.stopped() || Instant::now() > deadline {
                return None;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(sent),
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return Some(sent),
            }
        }
    }

    /// After a request, writes `head`, then `unit` over and over until the client goes away or
    /// a cap is reached. Counts the bytes written into `written` as it goes.
    fn stream(&mut self, head: &[u8], unit: &[u8], caps: (u64, Duration), written: &AtomicU64) -> End {
        if !self.read_request() || !self.write(head) {
            return End::Stopped;
        }
        let start = Instant::now();
        // Where the next write starts in `unit`: a short write must not restart it.
        let mut at = 0;
        loop {
            if self.stopped() {
                return End::Stopped;
            }
            if written.load(SeqCst) >= caps.0 {
                return End::Cap;
            }
            if start.elapsed() >= caps.1 {
                return End::Time;
            }
            match self.stream.write(&unit[at..]) {
                Ok(n) => {
                    at = (at + n) % unit.len();
                    written.fetch_add(n as u64, SeqCst);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return End::ClientGone,
            }
        }
    }
}

/// The server's account of one streamed connection.
#[derive(Debug, Clone, Copy)]
struct Streamed {
    written: u64,
    end: End,
}

/// A server that answers every request with `head` and then `unit` without end (up to `caps`).
struct Endless {
    script: Script,
    log: Arc<Mutex<Vec<Streamed>>>,
}

impl Endless {
    fn start(head: &'static [u8], unit: Vec<u8>, caps: (u64, Duration)) -> Endless {
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let script = Script::start(move |mut peer| {
            let written = AtomicU64::new(0);
            let end = peer.stream(head, &unit, caps, &written);
            let written = written.load(SeqCst);
            log2.lock().unwrap_or_else(PoisonError::into_inner).push(Streamed { written, end });
        });
        Endless { script, log }
    }

    /// The connections finished so far.
    fn streamed(&self) -> Vec<Streamed> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until `n` connections have finished.
    fn finished(&self, n: usize) -> Vec<Streamed> {
        wait_until(Duration::from_secs(3), || self.streamed().len() >= n);
        self.streamed()
    }
}

const MIB: u64 = 1024 * 1024;
/// The streaming server's hard caps.
const CAPS: (u64, Duration) = (256 * MIB, Duration::from_secs(10));

/// An endless response of one kind.
struct Flood {
    name: &'static str,
    head: &'static [u8],
    unit: Vec<u8>,
    expect: Expect,
}

fn repeat(unit: &[u8], bytes: usize) -> Vec<u8> {
    unit.iter().copied().cycle().take(bytes.div_ceil(unit.len()) * unit.len()).collect()
}

/// A chunk of `size` bytes, with its size line and CRLF.
fn chunk(size: usize) -> Vec<u8> {
    let mut c = format!("{size:x}\r\n").into_bytes();
    c.resize(c.len() + size, b'c');
    c.extend_from_slice(b"\r\n");
    c
}

#[test]
fn endless_responses_end_at_their_limit_and_the_connection_is_dropped() {
    let _shared = shared();
    let healthy = DeviceServer::keep_alive();
    let floods = [
        Flood {
            name: "header lines without end",
            head: b"HTTP/1.1 200 OK\r\n",
            unit: repeat(b"X-Flood: 0123456789\r\n", 64 * 1024),
            expect: Expect::Limit(Limit::HeaderCount, LIMITS.max_headers),
        },
        Flood {
            name: "one header value without end",
            head: b"HTTP/1.1 200 OK\r\nX-Endless: ",
            unit: vec![b'a'; 64 * 1024],
            expect: Expect::Limit(Limit::HeadBytes, LIMITS.max_head_bytes),
        },
        Flood {
            name: "close-delimited body without end",
            head: b"HTTP/1.1 200 OK\r\n\r\n",
            unit: vec![b'b'; 64 * 1024],
            expect: Expect::Limit(Limit::BodyBytes, LIMITS.max_body_bytes),
        },
        Flood {
            name: "chunked body without end (4 KiB chunks)",
            head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            unit: repeat(&chunk(4096), 64 * 1024),
            expect: Expect::Limit(Limit::BodyBytes, LIMITS.max_body_bytes),
        },
        Flood {
            name: "chunked body without end (1-byte chunks)",
            head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            unit: repeat(&chunk(1), 64 * 1024),
            expect: Expect::Limit(Limit::BodyBytes, LIMITS.max_body_bytes),
        },
        Flood {
            name: "1xx flood",
            head: b"",
            unit: repeat(b"HTTP/1.1 100 Continue\r\n\r\n", 64 * 1024),
            expect: Expect::Limit(Limit::InterimResponses, LIMITS.max_interim_responses),
        },
        // Chunk extensions and trailers are bounded by the head limit.
        Flood {
            name: "chunk extension without end",
            head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;ext=",
            unit: vec![b'e'; 64 * 1024],
            expect: Expect::Limit(Limit::HeadBytes, LIMITS.max_head_bytes),
        },
        Flood {
            name: "trailer section without end",
            head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n",
            unit: repeat(b"X-Trailer: 0123456789\r\n", 64 * 1024),
            expect: Expect::Limit(Limit::HeadBytes, LIMITS.max_head_bytes),
        },
    ];
    let mut failures = Vec::new();
    for flood in &floods {
        if let Err(e) =
            guarded(|| run_flood(flood, &healthy)).unwrap_or_else(|p| Err(format!("panicked: {p}")))
        {
            failures.push(format!("- {}: {e}", flood.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} floods failed:\n{}",
        failures.len(),
        floods.len(),
        failures.join("\n")
    );
}

/// Two requests to a server that floods each: both end at the limit, on two connections, each
/// cut off by the client; then a healthy device is still served.
fn run_flood(flood: &Flood, healthy: &DeviceServer) -> Result<(), String> {
    let server = Endless::start(flood.head, flood.unit.clone(), CAPS);
    let mut c = client();
    for n in 0..2 {
        let got = guarded(|| c.get(&server.script.url("/")))
            .map_err(|p| format!("request {n}: finwatch panicked: {p:?}"))?;
        check(&flood.expect, &got).map_err(|e| format!("request {n}: {e}"))?;
        if connections_to(&c, server.script.addr) != 0 {
            return Err(format!("request {n}: the client kept the flooding connection"));
        }
    }
    let streamed = server.finished(2);
    eprintln!("{}: the server wrote {:?} before the client cut it off", flood.name, streamed);
    if server.script.accepted() != 2 || streamed.len() != 2 {
        return Err(format!("{} connections, {streamed:?}: expected 2 cut off", server.script.accepted()));
    }
    for s in &streamed {
        // The client reads at most its limit; the rest sat in the socket buffers.
        if s.end != End::ClientGone || s.written > 48 * MIB {
            return Err(format!("the flood was not cut off near the limit: {s:?}"));
        }
    }
    if c.stats().retries != 0 {
        return Err(format!("{} retries after a response byte", c.stats().retries));
    }
    healthy_request(&mut c, healthy)
}

/// A server that streams a valid body without pause never lets a read return `WouldBlock`;
/// with a body limit too large to trip first, the request's deadline must still end it, on time
/// (`Client::send`: "never blocks past the request's deadline"): the loop reads a bounded
/// amount per turn, then runs its timers.
#[test]
fn deadline_holds_while_a_server_streams_without_end() {
    let _shared = shared();
    let healthy = DeviceServer::keep_alive();
    // 3 s: ten times the deadline, so a client that misses it fails fast. One-byte chunks
    // make the body grow slowly, so the large limit is not what ends it.
    let server = Endless::start(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1\r\nx\r\n".repeat(10_000),
        (256 * MIB, Duration::from_secs(3)),
    );
    let mut c = Client::builder()
        .limits(Limits { max_body_bytes: 1 << 30, ..LIMITS })
        .request_timeout(TIMEOUT)
        .build()
        .unwrap();
    let start = Instant::now();
    let got = c.send(Request::get(&server.script.url("/")).timeout(SHORT).build().unwrap());
    let took = start.elapsed();
    let streamed = server.finished(1);
    eprintln!("zero-digit flood: {} after {took:?}; the server wrote {streamed:?}", describe(&got));
    let outcome = check(&Expect::Deadline(Stage::ReadingResponse), &got)
        .or_else(|e| if matches!(got, Err(Error::LimitExceeded { .. })) { Ok(()) } else { Err(e) });
    assert!(
        outcome.is_ok() && took < SHORT + Duration::from_millis(500),
        "a {SHORT:?} deadline; after {took:?}: {outcome:?}; the server wrote {streamed:?}"
    );
    assert_eq!(connections_to(&c, server.script.addr), 0);
    assert!(matches!(streamed[..], [Streamed { end: End::ClientGone, .. }]), "{streamed:?}");
    healthy_request(&mut c, &healthy).unwrap();
}

/// Some embedded servers write a response a few bytes (or a header line) at a time, with Nagle
/// off: a segment each. The client reads them all, pieces of the head and body alike, and keeps
/// the connection.
#[test]
fn a_response_written_in_tiny_pieces_is_read_whole_and_the_connection_kept() {
    let _shared = shared();
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..12 {
        head.push_str(&format!("X-Field-{i}: value {i}\r\n"));
    }
    let plain = format!("{head}Content-Length: 34\r\n\r\n{{\"ioId\":25602,\"value\":1,\"ok\":true}}");
    let chunked =
        format!("{head}Transfer-Encoding: chunked\r\n\r\n6\r\n{{\"ok\":\r\n5\r\ntrue}}\r\n0\r\n\r\n");
    for (wire, body, piece) in [
        (plain.clone(), &b"{\"ioId\":25602,\"value\":1,\"ok\":true}"[..], 1),
        (plain, &b"{\"ioId\":25602,\"value\":1,\"ok\":true}"[..], 7),
        (chunked, &b"{\"ok\":true}"[..], 3),
    ] {
        let dev = DeviceServer::start(move |_| Reply::raw(wire.clone()).in_pieces(piece));
        let mut c = client();
        for _ in 0..3 {
            let resp = c.get(&dev.url("/io-state")).unwrap_or_else(|e| panic!("pieces of {piece}: {e}"));
            assert_eq!((resp.status(), resp.body()), (200, body), "pieces of {piece}");
            assert_eq!(resp.header("x-field-11"), Some("value 11"));
        }
        assert_eq!(dev.connections_accepted(), 1, "pieces of {piece}: the connection was kept");
    }
}

// ---------------------------------------------------------------------------------------------
// Responses to no request
// ---------------------------------------------------------------------------------------------

const BOGUS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbogus";
const REAL: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal";

/// What the server saw on the connection it sent the unsolicited response on.
#[derive(Default)]
struct Unsolicited {
    /// Set once the unsolicited response is written (on loopback: in the client's socket).
    written: AtomicBool,
    /// Bytes the client sent after it, once it closed the connection (`usize::MAX`: it did not
    /// close it within 2 s).
    bytes_after: AtomicUsize,
    closed: AtomicBool,
}

/// Connection 0 runs `first` and then reports what the client did after it; every later
/// connection answers each request with `REAL`.
fn unsolicited_server(
    first: impl Fn(&mut Peer) -> bool + Send + Sync + 'static,
) -> (Script, Arc<Unsolicited>) {
    let seen = Arc::new(Unsolicited::default());
    let seen2 = seen.clone();
    let script = Script::start(move |mut peer| {
        if peer.index > 0 {
            while peer.read_request() && peer.write(REAL) {}
            return;
        }
        if !first(&mut peer) {
            return;
        }
        seen2.written.store(true, SeqCst);
        let after = peer.bytes_until_closed();
        seen2.bytes_after.store(after.unwrap_or(usize::MAX), SeqCst);
        seen2.closed.store(after.is_some(), SeqCst);
    });
    (script, seen)
}

/// Opens a connection that carries no request: a request whose deadline passes while its
/// connection is still being set up fails, and leaves that connection opening.
fn open_idle_connection(c: &mut Client, server: &Script) {
    let err =
        c.send(Request::get(&server.url("/warm-up")).timeout(Duration::ZERO).build().unwrap()).unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded { stage: Stage::Connecting }), "{err:?}");
}

fn assert_unsolicited_connection_dropped_untouched(seen: &Unsolicited) {
    assert!(wait_until(SETTLE, || seen.closed.load(SeqCst)), "the client did not close the connection");
    assert_eq!(seen.bytes_after.load(SeqCst), 0, "the client wrote on the out-of-step connection");
}

/// A server that speaks first (a response before any request) and a client with nothing to
/// send: the client reads the bytes on the idle connection and drops it; the next request goes
/// out on a fresh connection and gets its own answer.
#[test]
fn response_before_any_request_retires_the_idle_connection() {
    let _shared = shared();
    let (server, seen) = unsolicited_server(|peer| peer.write(BOGUS));
    let mut c = client();
    open_idle_connection(&mut c, &server);
    assert!(wait_until(SETTLE, || seen.written.load(SeqCst)), "no connection was opened");
    let mut sink = Vec::new();
    assert!(
        wait_until(SETTLE, || {
            c.poll(Some(Duration::from_millis(5)), &mut sink).unwrap();
            c.connections().is_empty()
        }),
        "the client kept the connection the server spoke first on: {:?}",
        c.connections()
    );
    assert!(sink.is_empty());
    assert_unsolicited_connection_dropped_untouched(&seen);

    let resp = c.get(&server.url("/real")).unwrap();
    assert_eq!(resp.body(), b"real");
    assert_eq!((resp.meta().reused, resp.meta().retries), (false, 0));
    assert_eq!(server.accepted(), 2);
    let stats = c.stats();
    assert_eq!((stats.succeeded, stats.failed, stats.retries, stats.retired), (1, 1, 0, 1));
}

/// The same, but the request is submitted before the client has looked at the connection: the
/// unsolicited bytes are found when it is handed the connection, before a byte of it is
/// written. The connection is retired and the request goes out once more on a fresh one (it
/// counts as a retry: the connection was never used).
#[test]
fn response_before_any_request_is_found_before_the_request_is_written() {
    let _shared = shared();
    let (server, seen) = unsolicited_server(|peer| peer.write(BOGUS));
    let mut c = client();
    open_idle_connection(&mut c, &server);
    assert!(wait_until(SETTLE, || seen.written.load(SeqCst)), "no connection was opened");
    thread::sleep(Duration::from_millis(20)); // loopback: the bytes are in the client's socket

    let resp = c.get(&server.url("/real")).unwrap();
    assert_eq!(resp.body(), b"real", "the unsolicited response was taken as the answer");
    assert_eq!((resp.meta().reused, resp.meta().retries), (false, 1));
    assert_eq!(server.accepted(), 2);
    assert_unsolicited_connection_dropped_untouched(&seen);
    let stats = c.stats();
    assert_eq!((stats.succeeded, stats.failed, stats.retries, stats.retired), (1, 1, 1, 1));
}

/// A response on a kept-alive connection after its exchange ended (a late duplicate, a stray
/// keep-alive "ping"): the connection is out of step. The next request must not be written on
/// it, nor read the stray response as its answer.
#[test]
fn response_on_an_idle_connection_is_never_taken_as_the_next_answer() {
    let _shared = shared();
    let (server, seen) = unsolicited_server(|peer| {
        peer.read_request() && peer.write(REAL) && {
            thread::sleep(Duration::from_millis(20));
            peer.write(BOGUS)
        }
    });
    let mut c = client();
    assert_eq!(c.get(&server.url("/first")).unwrap().body(), b"real");
    assert!(wait_until(SETTLE, || seen.written.load(SeqCst)));
    thread::sleep(Duration::from_millis(20)); // loopback: the bytes are in the client's socket

    let resp = c.get(&server.url("/second")).unwrap();
    assert_eq!(resp.body(), b"real", "the unsolicited response was taken as the answer");
    // Caught before the write, on a connection that had served: not an attempt, no retry.
    assert_eq!((resp.meta().reused, resp.meta().retries), (false, 0));
    assert_eq!(server.accepted(), 2);
    assert_unsolicited_connection_dropped_untouched(&seen);
    let stats = c.stats();
    assert_eq!((stats.succeeded, stats.failed, stats.retries, stats.retired), (2, 0, 0, 1));
}

// ---------------------------------------------------------------------------------------------
// Memory stays bounded, measured
// ---------------------------------------------------------------------------------------------

/// Counts live heap bytes and their peak, for the memory test.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, SeqCst) + by;
    PEAK.fetch_max(now, SeqCst);
}

// SAFETY: every call goes straight to `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A moving realloc holds both blocks for a moment: count that as the peak.
        PEAK.fetch_max(LIVE.load(SeqCst) + new_size, SeqCst);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A `kB` line of /proc/self/status, in bytes.
fn proc_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 =
        line[field.len()..].trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

struct Measured {
    outcome: String,
    took: Duration,
    streamed: Vec<Streamed>,
    heap_growth: u64,
    rss_growth: Option<u64>,
}

/// One request to an endless server, with the client's peak heap and RSS growth while it ran.
fn measure(c: &mut Client, server: &Endless, timeout: Duration) -> (Result<Response, Error>, Measured) {
    // Reset the kernel's peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0).
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = proc_status("VmRSS");
    let live_before = LIVE.load(SeqCst);
    PEAK.store(live_before, SeqCst);
    // Sample RSS too, in case VmHWM could not be reset.
    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let sampler = thread::spawn(move || {
        let mut peak = 0;
        while !done2.load(SeqCst) {
            peak = peak.max(proc_status("VmRSS").unwrap_or(0));
            thread::sleep(Duration::from_millis(1));
        }
        peak
    });
    let start = Instant::now();
    let got = c.send(Request::get(&server.script.url("/")).timeout(timeout).build().unwrap());
    let took = start.elapsed();
    let heap_growth = (PEAK.load(SeqCst) - live_before) as u64;
    done.store(true, SeqCst);
    let sampled = sampler.join().unwrap();
    let hwm = if hwm_reset { proc_status("VmHWM").unwrap_or(0) } else { 0 };
    let rss_growth = rss_before.map(|before| sampled.max(hwm).saturating_sub(before));
    let outcome = describe(&got);
    let streamed = server.finished(1);
    (got, Measured { outcome, took, streamed, heap_growth, rss_growth })
}

/// (name, head, unit, the server's caps, expected outcome)
type MemoryCase = (&'static str, &'static [u8], Vec<u8>, (u64, Duration), Expect);

/// The client's memory while servers stream without end, at the *default* limits (8 MiB body,
/// 16 KiB head): the peak growth stays far below 32 MiB, and a flood is cut off near the limit.
/// The last case streams more than 64 MiB that no limit applies to (chunk-size digits): memory
/// stays flat. Runs alone in the process (the other tests hold `ISOLATION` shared).
#[test]
fn memory_stays_bounded_while_servers_stream_without_end() {
    let _alone = ISOLATION.write().unwrap_or_else(PoisonError::into_inner);
    let limits = Limits::default();
    let chunked: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let cases: [MemoryCase; 5] = [
        (
            "close-delimited body",
            b"HTTP/1.1 200 OK\r\n\r\n",
            vec![b'b'; 64 * 1024],
            CAPS,
            Expect::Limit(Limit::BodyBytes, limits.max_body_bytes),
        ),
        (
            "chunked body",
            chunked,
            repeat(&chunk(16 * 1024), 64 * 1024),
            CAPS,
            Expect::Limit(Limit::BodyBytes, limits.max_body_bytes),
        ),
        (
            "one header value",
            b"HTTP/1.1 200 OK\r\nX-Endless: ",
            vec![b'a'; 64 * 1024],
            CAPS,
            Expect::Limit(Limit::HeadBytes, limits.max_head_bytes),
        ),
        (
            "1xx flood",
            b"",
            repeat(b"HTTP/1.1 100 Continue\r\n\r\n", 64 * 1024),
            CAPS,
            Expect::Limit(Limit::InterimResponses, limits.max_interim_responses),
        ),
        // Leading zeros are valid in a chunk size, but a size line is bounded (255 digits).
        (
            "chunk-size digits without end",
            chunked,
            vec![b'0'; 64 * 1024],
            (66 * MIB, Duration::from_secs(30)),
            Expect::Malformed("chunk size has too many digits"),
        ),
    ];
    let mut c = Client::builder().limits(limits).build().unwrap();
    let mut report = vec![format!(
        "{:<38} {:>10} {:>12} {:>14} {:>14}  outcome",
        "endless response", "took", "server wrote", "heap growth", "RSS growth"
    )];
    let mut failures = Vec::new();
    for (name, head, unit, caps, expect) in cases {
        let server = Endless::start(head, unit, caps);
        let (got, m) = measure(&mut c, &server, Duration::from_secs(40));
        let written = m.streamed.first().map_or(0, |s| s.written);
        let mib = |b: u64| {
            if b < MIB {
                format!("{:.1} KiB", b as f64 / 1024.0)
            } else {
                format!("{:.1} MiB", b as f64 / MIB as f64)
            }
        };
        report.push(format!(
            "{name:<38} {:>10} {:>12} {:>14} {:>14}  {}",
            format!("{:.0?}", m.took),
            mib(written),
            mib(m.heap_growth),
            m.rss_growth.map_or("n/a".into(), mib),
            m.outcome
        ));
        if let Err(e) = check(&expect, &got) {
            failures.push(format!("{name}: {e}"));
        }
        if m.heap_growth >= 32 * MIB || m.rss_growth.is_some_and(|g| g >= 32 * MIB) {
            failures.push(format!(
                "{name}: memory grew by {} heap / {:?} RSS bytes",
                m.heap_growth, m.rss_growth
            ));
        }
        // A limit, or a bound on a line (chunk-size digits), cuts the stream off.
        let limited = matches!(expect, Expect::Limit(..) | Expect::Malformed(_));
        if limited
            && !(written < 64 * MIB && matches!(m.streamed[..], [Streamed { end: End::ClientGone, .. }]))
        {
            failures.push(format!("{name}: not cut off near the limit: {:?}", m.streamed));
        }
        if !limited && written < 64 * MIB {
            failures.push(format!("{name}: the server streamed only {written} bytes: {:?}", m.streamed));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}\n{}", failures.join("\n"), report.join("\n"));
}
