//! The fault matrix (FAULTS.md) over TLS: the rows of tests/fault_matrix.rs, against the TLS test
//! device (tests/support/tls.rs), which fails at the *plaintext* level of the exchange: after
//! its handshake, before a request byte; after n plaintext bytes of a request; after part of a
//! response; after a complete response. Every close comes in the forms TLS has: close_notify then
//! FIN, a bare FIN (no close_notify, as many embedded stacks do), RST, or a stall.
//!
//! Each `#[test]` is one row of FAULTS.md's "Over TLS" table; it runs its four cells (PUT/POST ×
//! fresh/reused connection) in parallel threads, each with its own client and device. A cell
//! asserts the exact outcome of the request under test (as in the plain matrix: `Ok` with
//! `meta().retries`, or the error's variant, `Stage`, `LostCause` and `may_have_been_processed()`;
//! the client's retries; how many times the device received the whole request, a POST at most
//! once); that no request byte (decrypted application data) reached the device after its close
//! where the close reached the client first (`TlsDevice::bytes_after_close`); and that the same
//! client then works, against the faulty device (where it recovers) and a healthy one.
//!
//! Expected outcomes follow the same rules (src/proto/retry.rs, src/proto/lifecycle.rs), with
//! what TLS changes (src/driver/tls.rs, src/tls/mod.rs):
//! - a close_notify is the device's FIN (`PeerClosed`), followed by the TCP FIN or not;
//! - a bare FIN is a FIN for a connection with no response under way, and a *truncation* once a
//!   response byte has arrived (RFC 8446 §6.1): an error, reported as `Reset` at
//!   `ReadingResponse` with an `UnexpectedEof` source that names close_notify, never a
//!   complete response;
//! - the client counts plaintext as written only once its records are in the socket, so the
//!   stages are those of the plain matrix (`SendingBody` once the head is out).
//!
//! Rows of the plain matrix that never reach TLS (connect refused, SYN never answered) are not
//! repeated here; a handshake that fails is `Error::Tls` (tls-tests/tests/client_tls.rs).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use finwatch::{Client, Error, LostCause, Method, Request, TlsConfig};
use support::matrix::*;
use support::tls::*;
use support::wait_until;

/// Plaintext bytes of a small request read before the cut. The client sends the whole small
/// request in one record, and the device must decrypt the whole record to get any of it: it
/// holds the whole request, but acts on (and logs) none of it, as the plain device that read 16
/// bytes.
const SMALL_CUT: usize = 16;

/// A bare FIN once a response byte has arrived: the response may be truncated (RFC 8446 §6.1),
/// an error the client reports as a reset (a socket error, `UnexpectedEof`).
const TRUNCATED: LostCause = LostCause::Reset;

/// Where and how the device fails (as `Fault` in tests/fault_matrix.rs, at the plaintext level).
/// "The request" is the request under test; on a reused connection it follows one successful
/// exchange (`GET /setup`) on the same connection.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The device completes the handshake and cuts the connection before reading a request
    /// byte. Reused: it closed the pooled connection first (close_notify and FIN after `/setup`'s
    /// response, at the client before the request), so the request goes out on a new connection
    /// (usually the handshaken warm spare the client opened on seeing that close), which the
    /// device cuts.
    Accept(TlsCut),
    /// The device reads part of the request's plaintext, then cuts. `large`: an 8 MiB body, of
    /// which it reads 64 KiB; else a small request of which it takes 16 bytes. `every`: every
    /// request (after `/setup`), on every connection.
    Partial { large: bool, then: TlsCut, every: bool },
    /// The device reads 64 KiB of an 8 MiB request, answers early with part of a status line,
    /// and, once the client has read that, cuts.
    EarlyResponse(TlsCut),
    /// The device reads 64 KiB of an 8 MiB request (its head: it acts on it), writes a complete
    /// response at once and closes with the rest unread: its kernel resets the connection.
    EarlyAnswer,
    /// The device reads the whole request, writes `bytes` (part of a response, or nothing) and
    /// then does `after`. `every`: every request after `/setup`.
    Respond { bytes: &'static [u8], after: TlsAfter, every: bool },
    /// An exchange gets its complete response, then the device closes; the request follows at
    /// once (`idle: false`: it races the close) or once the close has reached the client
    /// (`idle: true`).
    AfterResponse { after: TlsAfter, idle: bool },
    /// An exchange gets its complete response, then the device hangs: it never reads the request.
    IdleStall,
}

impl Fault {
    fn stalls(self) -> bool {
        matches!(
            self,
            Fault::Accept(TlsCut::Stall)
                | Fault::Partial { then: TlsCut::Stall, .. }
                | Fault::EarlyResponse(TlsCut::Stall)
                | Fault::Respond { after: TlsAfter::Stall, .. }
                | Fault::IdleStall
        )
    }

    /// Whether the device serves normally after the fault, so a follow-up request must succeed.
    fn recovers(self) -> bool {
        !matches!(self, Fault::Partial { every: true, .. } | Fault::Respond { every: true, .. })
    }

    /// Whether the fault is a `TlsCutRequest` of the device's.
    fn cuts(self) -> bool {
        matches!(
            self,
            Fault::Accept(_)
                | Fault::Partial { .. }
                | Fault::EarlyResponse(_)
                | Fault::EarlyAnswer
                | Fault::IdleStall
        )
    }

    /// Whether the device closes the pooled connection after `/setup`.
    fn closes_pooled(self) -> bool {
        matches!(self, Fault::Accept(_))
    }

    fn is_large(self) -> bool {
        matches!(self, Fault::Partial { large: true, .. } | Fault::EarlyResponse(_) | Fault::EarlyAnswer)
    }

    /// Whether the error must be a truncation: a bare FIN after a response byte.
    fn truncates(self) -> bool {
        match self {
            Fault::EarlyResponse(TlsCut::BareFin) => true,
            Fault::Respond { bytes, after: TlsAfter::BareFin, .. } => !bytes.is_empty(),
            _ => false,
        }
    }
}

/// One row: a fault, and per column of [`COLS`] the acceptable outcomes of the request (more
/// than one only where the network decides; empty: not applicable).
struct Row<'a> {
    name: &'static str,
    fault: Fault,
    expect: [&'a [Outcome]; 4],
}

/// Trusts the test PKI's CA.
fn ca() -> TlsConfig {
    TlsConfig::new().add_ca_pem(Pki::get().ca_pem.as_bytes()).unwrap()
}

fn client() -> Client {
    Client::builder().tls(ca()).request_timeout(DEADLINE).build().unwrap()
}

/// Runs the row's cells in parallel and fails with every failing cell's message.
fn run(row: Row<'_>) {
    let _ = env_logger::builder().is_test(true).try_init();
    let healthy = TlsDevice::start(TlsOptions::default());
    let label = format!("TLS {}", row.name);
    run_cells(&label, row.expect, |col, expect| cell(&row, col, expect, &healthy));
}

/// The device of a cell; `k`: exchanges on the first connection before the fault (1 if reused).
fn device(fault: Fault, k: usize) -> TlsDevice {
    let cut = |after_requests, after_bytes, then, every: bool| TlsCutRequest {
        after_requests,
        once: !every,
        after_bytes,
        respond: b"",
        then,
    };
    let cut_request = match fault {
        Fault::Accept(then) => Some(cut(k, 0, then, false)),
        Fault::Partial { large, then, every } => {
            Some(cut(k, if large { LARGE_CUT } else { SMALL_CUT }, then, every))
        }
        Fault::EarlyResponse(then) => {
            Some(TlsCutRequest { respond: STATUS_LINE, ..cut(k, LARGE_CUT, then, false) })
        }
        Fault::EarlyAnswer => {
            Some(TlsCutRequest { respond: EARLY_ANSWER, ..cut(k, LARGE_CUT, TlsCut::CloseUnread, false) })
        }
        Fault::IdleStall => Some(cut(k + 1, 0, TlsCut::Stall, false)),
        _ => None,
    };
    let options = TlsOptions { cut_request, ..TlsOptions::default() };
    TlsDevice::with_handler(options, move |r| {
        let at_fault = (r.conn, r.index_on_conn) == (0, k);
        match fault {
            _ if r.target == "/setup" && fault.closes_pooled() => TlsReply::seq(r, TlsAfter::CloseNotify),
            _ if r.target == "/setup" => TlsReply::seq(r, TlsAfter::KeepAlive),
            Fault::Respond { bytes, after, every } if at_fault || every => TlsReply::raw(bytes, after),
            Fault::AfterResponse { after, .. } if at_fault => TlsReply::seq(r, after),
            _ => TlsReply::seq(r, TlsAfter::KeepAlive),
        }
    })
}

fn request(col: Col, url: &str, body: Vec<u8>, timeout: Duration) -> Request {
    let method = if col.post { Method::POST } else { Method::PUT };
    Request::builder(method, url).body(body).timeout(timeout).build().unwrap()
}

/// One cell: panics with a message naming it if anything is off.
fn cell(row: &Row<'_>, col: Col, expect: &[Outcome], healthy: &TlsDevice) {
    let name = format!("[TLS {} | {col}]", row.name);
    let fault = row.fault;
    let k = usize::from(col.reused);
    let mut c = client();
    let dev = device(fault, k);
    let slug: String = row.name.chars().map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' }).collect();
    let path = |what: &str| format!("/{slug}/{}/{}/{what}", if col.post { "post" } else { "put" }, k);

    if col.reused {
        let resp = c.get(&dev.url("/setup")).unwrap_or_else(|e| panic!("{name} setup: {e}"));
        assert_eq!((resp.status(), resp.meta().retries, resp.meta().reused), (200, 0, false), "{name} setup");
    }
    if col.reused && fault.closes_pooled() {
        // The pooled connection is stale: the device's close_notify and FIN are at the client
        // before the request.
        assert!(wait_until(SETTLE, || dev.fins_completed() >= 1), "{name}: the device did not close");
        thread::sleep(GAP);
    }
    if let Fault::AfterResponse { .. } | Fault::IdleStall = fault {
        // The exchange whose complete response the fault follows.
        let target = path("exchange");
        let resp = c
            .send(request(col, &dev.url(&target), target.clone().into_bytes(), DEADLINE))
            .unwrap_or_else(|e| panic!("{name} exchange before the fault: {e}"));
        assert_eq!(
            (resp.status(), resp.meta().retries, resp.meta().reused),
            (200, 0, col.reused),
            "{name} exchange"
        );
        match fault {
            Fault::AfterResponse { after: TlsAfter::CloseNotify | TlsAfter::BareFin, idle: true } => {
                assert!(wait_until(SETTLE, || dev.fins_completed() >= 1), "{name}: no idle close");
                thread::sleep(GAP);
            }
            Fault::AfterResponse { after: TlsAfter::Rst, idle: true } => {
                assert!(wait_until(SETTLE, || dev.rsts_completed() >= 1), "{name}: no RST");
                thread::sleep(GAP);
            }
            _ => {}
        }
    }

    // The request under test.
    let target = path("request");
    let body = if fault.is_large() { vec![b'x'; LARGE_BODY] } else { target.clone().into_bytes() };
    let limit = if fault.stalls() { STALL_DEADLINE } else { DEADLINE };
    let retries_before = c.stats().retries;
    let start = Instant::now();
    let result = c.send(request(col, &dev.url(&target), body, limit));
    let took = start.elapsed();
    assert!(took < limit + LATE, "{name}: took {took:?} with a deadline of {limit:?}");
    let retries = u32::try_from(c.stats().retries - retries_before).unwrap();
    let arrived = dev.count_matching(|r| r.target == target);
    let got = match &result {
        Ok(resp) => {
            assert_eq!(resp.status(), 200, "{name}");
            assert_eq!(resp.meta().retries, retries, "{name}: meta().retries against the client's stats");
            Got::Ok
        }
        Err(e) => Got::of(e).unwrap_or_else(|| panic!("{name}: unexpected error {e:?} (\"{e}\")")),
    };
    let outcome = Outcome { got, retries, arrived };
    eprintln!("{name}: {outcome:?} in {took:?} (conns={} cut={})", dev.connections(), dev.requests_cut());
    if col.post {
        assert!(arrived <= 1, "{name}: the device received the POST {arrived} times");
    }
    let shown = match &result {
        Ok(_) => String::new(),
        Err(e) => format!(" (\"{e}\")"),
    };
    assert!(expect.contains(&outcome), "{name}: got {outcome:?}{shown}; expected one of {expect:?}");
    if let Err(e) = &result {
        assert_eq!(e.may_have_been_processed(), got.may_have_been_processed(), "{name}: {e}");
        if fault.truncates() {
            let truncation = matches!(
                e,
                Error::ConnectionLost { source: Some(s), .. } if s.kind() == io::ErrorKind::UnexpectedEof
            );
            assert!(truncation && e.to_string().contains("close_notify"), "{name}: not a truncation: {e:?}");
        }
    }
    if fault.stalls() {
        assert!(took >= limit, "{name}: returned after {took:?}, before its deadline {limit:?}");
    }
    if fault.cuts() {
        assert!(dev.requests_cut() >= 1, "{name}: the device never cut a request");
    }
    if matches!(fault, Fault::EarlyAnswer) {
        assert_eq!(
            dev.requests_cut_after_reading(),
            1,
            "{name}: the device acted on the request more than once"
        );
    }
    if let (Ok(resp), Fault::AfterResponse { .. }) = (&result, fault) {
        assert!(!resp.meta().reused, "{name}: went out on the connection the device had closed");
    }

    // The client stays usable: for the device (where it recovers), and for a healthy one.
    if fault.recovers() {
        let resp = c.get(&dev.url(&path("follow-up"))).unwrap_or_else(|e| panic!("{name} follow-up: {e}"));
        assert_eq!(resp.status(), 200, "{name} follow-up");
        assert_eq!(dev.count_matching(|r| r.target == path("follow-up")), 1, "{name} follow-up");
    }
    let resp = c
        .get(&healthy.url(&path("healthy")))
        .unwrap_or_else(|e| panic!("{name}: a healthy device after the fault: {e}"));
    assert_eq!(resp.status(), 200, "{name}: a healthy device after the fault");

    // No request byte after a close that reached the client first. The device counts the
    // plaintext that arrives after its close_notify or FIN, bytes already queued when it closed
    // excepted (they crossed the close). Every close it counts after reached the client before
    // the client wrote anything more on that connection, except where the next request races a
    // close right after a response: there a request written into the closing connection (the
    // keep-alive race, a retry or a loss) may have crossed it; when the outcome shows nothing
    // was written there (ok, no retry), the count must be 0 too. (The cuts hold the connection
    // without reading: nothing of theirs is counted.)
    let racing = matches!(fault, Fault::AfterResponse { idle: false, .. }) && outcome != ok(0, 1);
    if !racing {
        assert_eq!(dev.bytes_after_close(), 0, "{name}: request bytes after the device's close");
        assert!(dev.requests_after_close().is_empty(), "{name}: a request after the device's close");
    }
}

// ---- accept (after the handshake), then close before a request byte ----

#[test]
fn accept_then_close_notify() {
    // As the plain `accept_then_fin` (its comment explains each outcome). Over TLS the device can
    // cut only once it has the client's Finished (TLS 1.3), which the client sends just before
    // its request: the request is usually out before the close_notify arrives (the fresh
    // cells' `AwaitingResponse` loss, about 9 runs in 10), and when the client's loop takes a
    // turn between the two, its pre-write check reads the close_notify through TLS (an attempt
    // at `Sending` on a connection that carried nothing: retried). Reused: the request goes to
    // the handshaken warm spare, which the device cuts, or past it (all three outcomes seen).
    let e = &[ok(1, 1), lost(FIN, AWAITING, 0, 0)][..];
    let put_reused = &[ok(0, 1), ok(1, 1), lost(FIN, AWAITING, 0, 0)][..];
    let post_reused = &[ok(0, 1), ok(1, 1), lost(FIN, AWAITING, 0, 0)][..];
    let expect = [e, put_reused, e, post_reused];
    run(Row {
        name: "accept, handshake, then close_notify",
        fault: Fault::Accept(TlsCut::CloseNotify),
        expect,
    });
}

#[test]
fn accept_then_bare_fin() {
    // No response under way: a bare FIN is a FIN, as a close_notify.
    let e = &[ok(1, 1), lost(FIN, AWAITING, 0, 0)][..];
    let put_reused = &[ok(0, 1), ok(1, 1), lost(FIN, AWAITING, 0, 0)][..];
    let post_reused = &[ok(0, 1), ok(1, 1), lost(FIN, AWAITING, 0, 0)][..];
    let expect = [e, put_reused, e, post_reused];
    run(Row { name: "accept, handshake, then bare FIN", fault: Fault::Accept(TlsCut::BareFin), expect });
}

#[test]
fn accept_then_rst() {
    // As the plain `accept_then_rst`; `ConnectFailed` stays acceptable for the reused cells
    // (a spare reset before its handshake was handled).
    let e = &[ok(1, 1), lost(RST, AWAITING, 0, 0), CONNECT_FAILED][..];
    let put_reused = &[ok(0, 1), ok(1, 1), lost(RST, AWAITING, 0, 0), CONNECT_FAILED][..];
    let post_reused = &[ok(0, 1), ok(1, 1), lost(RST, AWAITING, 0, 0), CONNECT_FAILED][..];
    let expect = [e, put_reused, e, post_reused];
    run(Row { name: "accept, handshake, then RST", fault: Fault::Accept(TlsCut::Rst), expect });
}

#[test]
fn accept_then_stall() {
    let d = &[deadline(AWAITING, 0)][..];
    run(Row {
        name: "accept, handshake, then stall",
        fault: Fault::Accept(TlsCut::Stall),
        expect: [d, d, d, d],
    });
}

// ---- part of the request ----

fn partial_large(name: &'static str, then: TlsCut, cause: LostCause) {
    // The device has the head (and may have acted on it) when it stops reading and closes, with
    // the client still writing the body: `SendingBody`. Only the idempotent request on a reused
    // connection (the keep-alive race) is retried.
    let l = &[lost(cause, SENDING_BODY, 0, 0)][..];
    let r = &[ok(1, 1)][..];
    let fault = Fault::Partial { large: true, then, every: false };
    run(Row { name, fault, expect: [l, r, l, l] });
}

#[test]
fn partial_large_request_then_close_notify() {
    partial_large("64 KiB of an 8 MiB request, then close_notify", TlsCut::CloseNotify, FIN);
}

#[test]
fn partial_large_request_then_bare_fin() {
    // No response byte: the bare FIN is a FIN.
    partial_large("64 KiB of an 8 MiB request, then bare FIN", TlsCut::BareFin, FIN);
}

#[test]
fn partial_large_request_then_rst() {
    partial_large("64 KiB of an 8 MiB request, then RST", TlsCut::Rst, RST);
}

#[test]
fn partial_large_request_then_stall() {
    let d = &[deadline(SENDING_BODY, 0)][..];
    let fault = Fault::Partial { large: true, then: TlsCut::Stall, every: false };
    run(Row { name: "64 KiB of an 8 MiB request, then stall", fault, expect: [d, d, d, d] });
}

#[test]
fn partial_large_request_then_rst_every_time() {
    let l = &[lost(RST, SENDING_BODY, 0, 0)][..];
    let both = (RST, SENDING_BODY);
    let r = &[Outcome { got: Got::RetryFailed { first: both, last: both }, retries: 1, arrived: 0 }][..];
    let fault = Fault::Partial { large: true, then: TlsCut::Rst, every: true };
    run(Row { name: "64 KiB of an 8 MiB request, then RST, every request", fault, expect: [l, r, l, l] });
}

fn partial_small(name: &'static str, then: TlsCut, cause: LostCause) {
    // The client wrote the whole small request (one record) into the socket buffers: for it the
    // request was sent, and the rules for `AwaitingResponse` apply, as in the plain matrix.
    let fault = Fault::Partial { large: false, then, every: false };
    let (l, r) = (&[lost(cause, AWAITING, 0, 0)][..], &[ok(1, 1)][..]);
    run(Row { name, fault, expect: [l, r, l, l] });
}

#[test]
fn partial_small_request_then_close_notify() {
    partial_small("16 plaintext bytes of a small request, then close_notify", TlsCut::CloseNotify, FIN);
}

#[test]
fn partial_small_request_then_bare_fin() {
    partial_small("16 plaintext bytes of a small request, then bare FIN", TlsCut::BareFin, FIN);
}

#[test]
fn partial_small_request_then_rst() {
    partial_small("16 plaintext bytes of a small request, then RST", TlsCut::Rst, RST);
}

// ---- an early response, while the request is still being written ----

fn early_response(name: &'static str, then: TlsCut, e: Outcome) {
    let e = &[e][..];
    run(Row { name, fault: Fault::EarlyResponse(then), expect: [e, e, e, e] });
}

#[test]
fn early_response_then_close_notify() {
    early_response(
        "early partial response, 8 MiB request unsent, then close_notify",
        TlsCut::CloseNotify,
        lost(FIN, READING, 0, 0),
    );
}

#[test]
fn early_response_then_bare_fin() {
    // A response byte has arrived: the bare FIN truncates it.
    early_response(
        "early partial response, 8 MiB request unsent, then bare FIN",
        TlsCut::BareFin,
        lost(TRUNCATED, READING, 0, 0),
    );
}

#[test]
fn early_response_then_rst() {
    early_response(
        "early partial response, 8 MiB request unsent, then RST",
        TlsCut::Rst,
        lost(RST, READING, 0, 0),
    );
}

#[test]
fn early_response_then_stall() {
    early_response(
        "early partial response, 8 MiB request unsent, then stall",
        TlsCut::Stall,
        deadline(READING, 0),
    );
}

/// A complete answer to a request whose body the device did not read.
const EARLY_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[test]
fn early_complete_answer_then_close_with_the_body_unread() {
    // The answer's records and the RST reach the client while it is still writing: the answer is
    // the outcome, never retried; the device acted once.
    let e = &[ok(0, 0)][..];
    run(Row {
        name: "early complete answer, 8 MiB request unread, then close (RST)",
        fault: Fault::EarlyAnswer,
        expect: [e, e, e, e],
    });
}

// ---- the whole request, no answer ----

fn whole_request(name: &'static str, after: TlsAfter, every: bool, expect: [&[Outcome]; 4]) {
    run(Row { name, fault: Fault::Respond { bytes: b"", after, every }, expect });
}

#[test]
fn whole_request_then_close_notify() {
    let (l, r) = (&[lost(FIN, AWAITING, 0, 1)][..], &[ok(1, 2)][..]);
    whole_request("whole request, then close_notify", TlsAfter::CloseNotify, false, [l, r, l, l]);
}

#[test]
fn whole_request_then_bare_fin() {
    // No response byte: a FIN.
    let (l, r) = (&[lost(FIN, AWAITING, 0, 1)][..], &[ok(1, 2)][..]);
    whole_request("whole request, then bare FIN", TlsAfter::BareFin, false, [l, r, l, l]);
}

#[test]
fn whole_request_then_rst() {
    let (l, r) = (&[lost(RST, AWAITING, 0, 1)][..], &[ok(1, 2)][..]);
    whole_request("whole request, then RST", TlsAfter::Rst, false, [l, r, l, l]);
}

#[test]
fn whole_request_then_stall() {
    let d = &[deadline(AWAITING, 1)][..];
    whole_request("whole request, then stall", TlsAfter::Stall, false, [d, d, d, d]);
}

#[test]
fn whole_request_then_rst_every_time() {
    let l = &[lost(RST, AWAITING, 0, 1)][..];
    let both = Got::RetryFailed { first: (RST, AWAITING), last: (RST, AWAITING) };
    let r = &[Outcome { got: both, retries: 1, arrived: 2 }][..];
    whole_request("whole request, then RST, every request", TlsAfter::Rst, true, [l, r, l, l]);
}

// ---- part of the response: never retried ----

const STATUS_LINE: &[u8] = b"HTTP/1.1 20";
const HEADERS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/js";
const BODY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
const CHUNKED_BODY: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
const CHUNK_SIZE_LINE: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1";

/// A row whose fault comes after part of the response: the same outcome in every column.
fn mid_response(name: &'static str, bytes: &'static [u8], after: TlsAfter) {
    let e = match after {
        TlsAfter::CloseNotify => lost(FIN, READING, 0, 1),
        TlsAfter::BareFin => lost(TRUNCATED, READING, 0, 1),
        TlsAfter::Rst => lost(RST, READING, 0, 1),
        _ => deadline(READING, 1),
    };
    let e = &[e][..];
    run(Row { name, fault: Fault::Respond { bytes, after, every: false }, expect: [e, e, e, e] });
}

macro_rules! mid_response_rows {
    ($($test:ident: $name:literal, $bytes:expr, $after:ident;)*) => {$(
        #[test]
        fn $test() {
            mid_response($name, $bytes, TlsAfter::$after);
        }
    )*};
}

mid_response_rows! {
    mid_status_line_then_close_notify: "mid status line, then close_notify", STATUS_LINE, CloseNotify;
    mid_status_line_then_bare_fin: "mid status line, then bare FIN", STATUS_LINE, BareFin;
    mid_status_line_then_rst: "mid status line, then RST", STATUS_LINE, Rst;
    mid_status_line_then_stall: "mid status line, then stall", STATUS_LINE, Stall;
    mid_headers_then_close_notify: "mid headers, then close_notify", HEADERS, CloseNotify;
    mid_headers_then_bare_fin: "mid headers, then bare FIN", HEADERS, BareFin;
    mid_headers_then_rst: "mid headers, then RST", HEADERS, Rst;
    mid_headers_then_stall: "mid headers, then stall", HEADERS, Stall;
    mid_body_then_close_notify: "mid body (Content-Length), then close_notify", BODY, CloseNotify;
    mid_body_then_bare_fin: "mid body (Content-Length), then bare FIN", BODY, BareFin;
    mid_body_then_rst: "mid body (Content-Length), then RST", BODY, Rst;
    mid_body_then_stall: "mid body (Content-Length), then stall", BODY, Stall;
    mid_chunked_body_then_close_notify: "mid chunked body, then close_notify", CHUNKED_BODY, CloseNotify;
    mid_chunked_body_then_bare_fin: "mid chunked body, then bare FIN", CHUNKED_BODY, BareFin;
    mid_chunked_body_then_rst: "mid chunked body, then RST", CHUNKED_BODY, Rst;
    mid_chunked_body_then_stall: "mid chunked body, then stall", CHUNKED_BODY, Stall;
    mid_chunk_size_line_then_close_notify: "inside a chunk-size line, then close_notify", CHUNK_SIZE_LINE, CloseNotify;
    mid_chunk_size_line_then_bare_fin: "inside a chunk-size line, then bare FIN", CHUNK_SIZE_LINE, BareFin;
    mid_chunk_size_line_then_rst: "inside a chunk-size line, then RST", CHUNK_SIZE_LINE, Rst;
    mid_chunk_size_line_then_stall: "inside a chunk-size line, then stall", CHUNK_SIZE_LINE, Stall;
}

// ---- after a complete response ----
// The exchange itself succeeds; the outcome is the next request's.

#[test]
fn right_after_response_close_notify() {
    // As the plain `right_after_response_fin`. The close_notify usually arrives with the
    // response and is seen before the next request is written (ok on a new connection). Written
    // first, the request goes into the socket without an error (the device has only half-closed
    // its TCP side, and reads on), and the close_notify read after it is the keep-alive race:
    // PUT retried, POST reported.
    let put = &[ok(0, 1), ok(1, 1)][..];
    let post = &[ok(0, 1), lost(FIN, AWAITING, 0, 0)][..];
    let fault = Fault::AfterResponse { after: TlsAfter::CloseNotify, idle: false };
    run(Row {
        name: "close_notify right after a response, next request at once",
        fault,
        expect: [put, put, post, post],
    });
}

#[test]
fn right_after_response_bare_fin() {
    // The bare FIN comes after a complete response: a FIN, not a truncation.
    let put = &[ok(0, 1), ok(1, 1)][..];
    let post = &[ok(0, 1), lost(FIN, AWAITING, 0, 0)][..];
    let fault = Fault::AfterResponse { after: TlsAfter::BareFin, idle: false };
    run(Row {
        name: "bare FIN right after a response, next request at once",
        fault,
        expect: [put, put, post, post],
    });
}

#[test]
fn right_after_response_rst() {
    let put = &[ok(0, 1), ok(1, 1)][..];
    let post = &[ok(0, 1), ok(1, 1), lost(RST, AWAITING, 0, 0)][..];
    let fault = Fault::AfterResponse { after: TlsAfter::Rst, idle: false };
    run(Row {
        name: "RST right after a response, next request at once",
        fault,
        expect: [put, put, post, post],
    });
}

#[test]
fn idle_close_notify() {
    let e = &[ok(0, 1)][..];
    let fault = Fault::AfterResponse { after: TlsAfter::CloseNotify, idle: true };
    run(Row { name: "close_notify while idle", fault, expect: [e, e, e, e] });
}

#[test]
fn idle_bare_fin() {
    let e = &[ok(0, 1)][..];
    let fault = Fault::AfterResponse { after: TlsAfter::BareFin, idle: true };
    run(Row { name: "bare FIN while idle", fault, expect: [e, e, e, e] });
}

#[test]
fn idle_rst() {
    let e = &[ok(0, 1)][..];
    let fault = Fault::AfterResponse { after: TlsAfter::Rst, idle: true };
    run(Row { name: "RST while idle", fault, expect: [e, e, e, e] });
}

#[test]
fn idle_stall() {
    let d = &[deadline(AWAITING, 0)][..];
    run(Row { name: "stall while idle", fault: Fault::IdleStall, expect: [d, d, d, d] });
}

// ---- the device ----

#[test]
fn support_tls_cut_request_reads_part_of_a_request_then_cuts() {
    // The matrix's TLS device, checked with a plain blocking rustls client: 16 plaintext bytes
    // read, the early bytes written, then close_notify (a clean end of the stream) or a bare
    // FIN (rustls: unexpected EOF); nothing logged as a request; `once`: the next connection is
    // served.
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Arc;

    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(Pki::get().roots())
        .with_no_client_auth();
    let config = Arc::new(config);
    let connect = |dev: &TlsDevice| {
        let tcp = TcpStream::connect(dev.addr()).unwrap();
        tcp.set_read_timeout(Some(SETTLE)).unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(dev.addr().ip().into());
        rustls::StreamOwned::new(rustls::ClientConnection::new(Arc::clone(&config), name).unwrap(), tcp)
    };
    for (then, clean) in [(TlsCut::CloseNotify, true), (TlsCut::BareFin, false)] {
        let cut =
            TlsCutRequest { after_requests: 0, once: true, after_bytes: 16, respond: b"HTTP/1.1 20", then };
        let dev = TlsDevice::start(TlsOptions { cut_request: Some(cut), ..TlsOptions::default() });
        let mut s = connect(&dev);
        s.write_all(b"PUT /x HTTP/1.1\r\nHost: d\r\nContent-Length: 1\r\n\r\n1").unwrap();
        let mut got = Vec::new();
        let end = s.read_to_end(&mut got);
        assert_eq!(got, b"HTTP/1.1 20", "{then:?}");
        match end {
            Ok(_) => assert!(clean, "{then:?}: a clean end without close_notify"),
            Err(e) => assert!(!clean && e.kind() == io::ErrorKind::UnexpectedEof, "{then:?}: {e}"),
        }
        assert_eq!((dev.requests_cut(), dev.requests_cut_after_reading(), dev.request_count()), (1, 1, 0));
        // The device counts its FIN once `shutdown` has returned, maybe after the client saw it.
        assert!(wait_until(SETTLE, || dev.fins_completed() == 1), "{then:?}: no FIN");
        assert_eq!(dev.close_notifies_sent(), usize::from(clean), "{then:?}");
        let mut s = connect(&dev);
        s.write_all(b"GET /y HTTP/1.1\r\nHost: d\r\n\r\n").unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200", "{then:?}");
    }
}
