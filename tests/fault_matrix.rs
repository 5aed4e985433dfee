//! The fault matrix (FAULTS.md): a device that fails at every point of an exchange, for an
//! idempotent (PUT) and a non-idempotent (POST) request, on a fresh connection and on a reused one
//! (one successful exchange first on the same connection).
//!
//! Each `#[test]` is one row of FAULTS.md; it runs its four cells in parallel threads, each with
//! its own client and device, and reports every failing cell by name. A cell asserts the exact
//! outcome of the request under test: `Ok` with `meta().retries`, or the error's variant, `Stage`,
//! `LostCause` and `may_have_been_processed()`; how many retries the client spent; and how many
//! times the device received the whole request (a POST at most once). Where a real network leaves
//! the outcome to a race, the cell lists the set of acceptable outcomes and says why. Then the same
//! client must still work: against the faulty device (where it recovers) and a healthy one.
//!
//! The faults strike once (the first request at the fault point); the rows marked "every
//! request" strike every time, to show that retries are bounded.
//!
//! Expected outcomes follow src/proto/retry.rs and src/error.rs:
//! - no retry once a response byte has arrived (`ReadingResponse`);
//! - the device cannot have parsed the request (`Sending`: less than its head written, or caught
//!   before the write): retry, any method;
//! - its head written, not all of its body (`SendingBody`): the device may have acted on the head
//!   (as `AwaitingResponse` below);
//! - all of it written on a *reused* connection (`AwaitingResponse`): the keep-alive race, retry
//!   only idempotent requests;
//! - all of it written on a *fresh* connection: report, never retry;
//! - a stale pooled connection caught before the write is not an attempt; a deadline is never
//!   retried; a failed connect is not retried; at most one retry (`max_retries` 1).

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use finwatch::{Client, Error, Method, Request, Stage};
use support::matrix::*;
use support::*;

/// Bytes of a small request (all of it in the socket buffers at once) read before the cut.
const SMALL_CUT: usize = 16;

/// Where and how the device fails. "The request" is the request under test; on a reused
/// connection it follows one successful exchange (`GET /setup`) on the same connection.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Nothing listens on the port. Reused: the device closed the pooled connection (FIN after
    /// `/setup`'s response) and stopped listening.
    Refused,
    /// The listener's accept queue is full: the SYN is never answered.
    SynIgnored,
    /// The device accepts and cuts the new connection before reading a byte. Reused: it closed
    /// the pooled connection first (FIN after `/setup`'s response, at the client before the
    /// request), so the request goes out on a new connection (usually the warm spare the client
    /// opened on seeing that FIN), which the device cuts.
    Accept(Cut),
    /// The device reads part of the request, then cuts. `large`: an 8 MiB body, of which it
    /// reads 64 KiB (the client cannot finish writing); else a small request of which it reads
    /// 16 bytes (the client has written all of it, into the socket buffers). `every`: every
    /// request (after `/setup`), on every connection.
    Partial { large: bool, then: Cut, every: bool },
    /// The device reads 64 KiB of an 8 MiB request, answers early with part of a status line,
    /// and, once the client has read that, cuts.
    EarlyResponse(Cut),
    /// The device reads 64 KiB of an 8 MiB request (its head: it acts on it), writes a complete
    /// response at once and closes with the rest unread: its kernel resets the connection, and
    /// the answer and the RST reach the client while it is still writing.
    EarlyAnswer,
    /// The device reads the whole request, writes `bytes` (part of a response, or nothing) and
    /// then does `after`. `every`: every request after `/setup`.
    Respond { bytes: &'static [u8], after: After, every: bool },
    /// An exchange gets its complete response, then the device sends FIN or RST; the request
    /// follows at once (`idle: false`: it races the FIN/RST) or once the FIN/RST has reached the
    /// client (`idle: true`: the FIN/RST arrived while the connection was idle).
    AfterResponse { after: After, idle: bool },
    /// An exchange gets its complete response, then the device hangs: it never reads the request.
    IdleStall,
}

impl Fault {
    fn stalls(self) -> bool {
        matches!(
            self,
            Fault::SynIgnored
                | Fault::Accept(Cut::Stall)
                | Fault::Partial { then: Cut::Stall, .. }
                | Fault::EarlyResponse(Cut::Stall)
                | Fault::Respond { after: After::Stall, .. }
                | Fault::IdleStall
        )
    }

    /// Whether the device serves normally after the fault, so a follow-up request must succeed.
    fn recovers(self) -> bool {
        !matches!(
            self,
            Fault::Refused
                | Fault::SynIgnored
                | Fault::Partial { every: true, .. }
                | Fault::Respond { every: true, .. }
        )
    }

    /// Whether the fault is a `CutRequest` of the device's.
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
        matches!(self, Fault::Refused | Fault::Accept(_))
    }

    fn is_large(self) -> bool {
        matches!(self, Fault::Partial { large: true, .. } | Fault::EarlyResponse(_) | Fault::EarlyAnswer)
    }
}

/// One row: a fault, and per column of [`COLS`] the acceptable outcomes of the request (more
/// than one only where the network decides; empty: not applicable).
struct Row<'a> {
    name: &'static str,
    fault: Fault,
    expect: [&'a [Outcome]; 4],
}

/// Runs the row's cells in parallel and fails with every failing cell's message.
fn run(row: Row<'_>) {
    let _ = env_logger::builder().is_test(true).try_init();
    let healthy = DeviceServer::keep_alive();
    run_cells(row.name, row.expect, |col, expect| cell(&row, col, expect, &healthy));
}

/// The device of a cell; `k`: exchanges on the first connection before the fault (1 if reused).
fn device(fault: Fault, k: usize) -> DeviceServer {
    let cut = |after_requests, after_bytes, then, every: bool| CutRequest {
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
            Some(CutRequest { respond: STATUS_LINE, ..cut(k, LARGE_CUT, then, false) })
        }
        Fault::EarlyAnswer => {
            Some(CutRequest { respond: EARLY_ANSWER, ..cut(k, LARGE_CUT, Cut::Close, false) })
        }
        Fault::IdleStall => Some(cut(k + 1, 0, Cut::Stall, false)),
        _ => None,
    };
    let options = ServerOptions { cut_request, ..ServerOptions::default() };
    DeviceServer::with_options(options, move |r| {
        let at_fault = (r.conn, r.index_on_conn) == (0, k);
        match fault {
            _ if r.target == "/setup" && fault.closes_pooled() => seq_reply(r).then(After::Fin),
            _ if r.target == "/setup" => seq_reply(r),
            Fault::Respond { bytes, after, every } if at_fault || every => Reply::raw(bytes).then(after),
            Fault::AfterResponse { after: After::Fin, idle: true } if at_fault => {
                seq_reply(r).then(After::IdleFin(Duration::from_millis(5)))
            }
            Fault::AfterResponse { after, .. } if at_fault => seq_reply(r).then(after),
            _ => seq_reply(r),
        }
    })
}

/// An address nothing listens on.
fn refusing_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A listener whose accept queue is full, so further SYNs are dropped: the handshake never
/// completes (as in tests/client.rs). Keep the returned values alive.
fn unanswering_listener() -> (socket2::Socket, Vec<TcpStream>, SocketAddr) {
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    let mut full = false;
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => fillers.push(s),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "could not fill the accept queue");
    (listener, fillers, addr)
}

fn request(col: Col, url: &str, body: Vec<u8>, timeout: Duration) -> Request {
    let method = if col.post { Method::POST } else { Method::PUT };
    Request::builder(method, url).body(body).timeout(timeout).build().unwrap()
}

/// One cell: panics with a message naming it if anything is off.
fn cell(row: &Row<'_>, col: Col, expect: &[Outcome], healthy: &DeviceServer) {
    let name = format!("[{} | {col}]", row.name);
    let fault = row.fault;
    let k = usize::from(col.reused);
    let mut c = Client::builder().request_timeout(DEADLINE).build().unwrap();

    let mut dev = None;
    let mut _unanswering = None;
    let addr = match fault {
        Fault::Refused if !col.reused => refusing_addr(),
        Fault::SynIgnored => {
            let (listener, fillers, addr) = unanswering_listener();
            _unanswering = Some((listener, fillers));
            addr
        }
        _ => {
            let d = device(fault, k);
            let addr = d.addr();
            dev = Some(d);
            addr
        }
    };
    let url = |path: &str| format!("http://{addr}{path}");
    let slug: String = row.name.chars().map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' }).collect();
    let path = |what: &str| format!("/{slug}/{}/{}/{what}", if col.post { "post" } else { "put" }, k);

    if col.reused {
        let resp = c.get(&url("/setup")).unwrap_or_else(|e| panic!("{name} setup: {e}"));
        assert_eq!((resp.status(), resp.meta().retries, resp.meta().reused), (200, 0, false), "{name} setup");
    }
    if col.reused && fault.closes_pooled() {
        // The pooled connection is stale: the device's FIN is at the client before the request.
        let d = dev.as_ref().unwrap();
        assert!(wait_until(SETTLE, || d.fins_completed() >= 1), "{name}: the device did not close");
        thread::sleep(GAP);
        if let Fault::Refused = fault {
            drop(dev.take()); // stops listening
        }
    }
    if let Fault::AfterResponse { .. } | Fault::IdleStall = fault {
        // The exchange whose complete response the fault follows.
        let target = path("exchange");
        let resp = c
            .send(request(col, &url(&target), target.clone().into_bytes(), DEADLINE))
            .unwrap_or_else(|e| panic!("{name} exchange before the fault: {e}"));
        assert_eq!(
            (resp.status(), resp.meta().retries, resp.meta().reused),
            (200, 0, col.reused),
            "{name} exchange"
        );
        let d = dev.as_ref().unwrap();
        match fault {
            Fault::AfterResponse { after: After::Fin, idle: true } => {
                assert!(wait_until(SETTLE, || d.fins_completed() >= 1), "{name}: no idle FIN");
                thread::sleep(GAP);
            }
            Fault::AfterResponse { after: After::Rst, idle: true } => {
                assert!(wait_until(SETTLE, || d.rsts_completed() >= 1), "{name}: no RST");
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
    let result = c.send(request(col, &url(&target), body, limit));
    let took = start.elapsed();
    assert!(took < limit + LATE, "{name}: took {took:?} with a deadline of {limit:?}");
    let retries = u32::try_from(c.stats().retries - retries_before).unwrap();
    let arrived = dev.as_ref().map_or(0, |d| d.count_matching(|r| r.target == target));
    let got = match &result {
        Ok(resp) => {
            assert_eq!(resp.status(), 200, "{name}");
            assert_eq!(resp.meta().retries, retries, "{name}: meta().retries against the client's stats");
            Got::Ok
        }
        Err(e) => Got::of(e).unwrap_or_else(|| panic!("{name}: unexpected error {e:?}")),
    };
    let outcome = Outcome { got, retries, arrived };
    eprintln!("{name}: {outcome:?} in {took:?}");
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
    }
    if fault.stalls() {
        assert!(took >= limit, "{name}: returned after {took:?}, before its deadline {limit:?}");
    }
    if let Some(d) = &dev {
        if fault.cuts() {
            assert!(d.requests_cut() >= 1, "{name}: the device never cut a request");
        }
        if matches!(fault, Fault::EarlyAnswer) {
            assert_eq!(
                d.requests_cut_after_reading(),
                1,
                "{name}: the device acted on the request more than once"
            );
        }
        if let Fault::AfterResponse { after: After::Fin, idle: true } = fault {
            assert_eq!(d.bytes_after_fin(), 0, "{name}: bytes written after the device's FIN");
        }
    }
    if let (Ok(resp), Fault::AfterResponse { .. }) = (&result, fault) {
        assert!(!resp.meta().reused, "{name}: went out on the connection the device had closed");
    }

    // The client stays usable: for the device (where it recovers), and for a healthy one.
    if let Some(d) = dev.as_ref().filter(|_| fault.recovers()) {
        let resp = c.get(&url(&path("follow-up"))).unwrap_or_else(|e| panic!("{name} follow-up: {e}"));
        assert_eq!(resp.status(), 200, "{name} follow-up");
        assert_eq!(d.count_matching(|r| r.target == path("follow-up")), 1, "{name} follow-up");
    }
    if let Fault::Refused = fault {
        let again = c.get(&url(&path("follow-up")));
        assert!(matches!(again, Err(Error::ConnectFailed { .. })), "{name} follow-up: {again:?}");
    }
    let resp = c
        .get(&healthy.url(&path("healthy")))
        .unwrap_or_else(|e| panic!("{name}: a healthy device after the fault: {e}"));
    assert_eq!(resp.status(), 200, "{name}: a healthy device after the fault");
}

// ---- connect ----

#[test]
fn connect_refused() {
    // A failed connect sent nothing and is not retried. Reused: the stale pooled connection is
    // caught before a byte is written; it is not an attempt. But if the client noticed the
    // device's FIN before the request (here: usually, within the `/setup` call), it opened a
    // warm spare at once, which the device accepted and then closed as it went away: the request
    // finds the spare closed before its first byte, which on a connection that has carried no
    // exchange counts as an attempt (`Sending`), and the retry's connect is refused.
    let f = &[CONNECT_FAILED][..];
    let r = &[CONNECT_FAILED, Outcome { retries: 1, ..CONNECT_FAILED }][..];
    run(Row { name: "connect refused", fault: Fault::Refused, expect: [f, r, f, r] });
}

#[test]
fn connect_never_completes() {
    // The deadline (300 ms) ends the wait before the connect timeout (3 s). Reused: n/a (a
    // pooled connection is already connected; see `connect_refused` for a stale one).
    let d = &[deadline(Stage::Connecting, 0)][..];
    run(Row { name: "SYN never answered", fault: Fault::SynIgnored, expect: [d, &[], d, &[]] });
}

// ---- accept ----

#[test]
fn accept_then_fin() {
    // Racy on a real network: the FIN is sent as the device's thread starts, while the client
    // connects and writes. Seen before the write (by readiness or the pre-write peek) on the
    // fresh connection, it counts as an attempt at `Sending` -> retried, whatever the method.
    // Seen after the whole request was written -> `AwaitingResponse` on a fresh connection ->
    // not retried (the client cannot know that the device read nothing). Reused: the stale pooled
    // connection is not an attempt, and neither is a warm spare the device cut while it waited
    // in the pool, if that is seen before the write (then a new connection serves it: ok, no
    // retry); seen after the write, the spare is treated like a reused connection: an
    // idempotent request is retried, a POST is reported. If the pooled connection's FIN is
    // found only by the request's own pre-write drain, no spare is opened and the request goes
    // to a plain new connection: cut before the write, that is the fresh case (retried, even a
    // POST: nothing was sent).
    let e = &[ok(1, 1), lost(FIN, AWAITING, 0, 0)][..];
    let put_reused = &[ok(0, 1), ok(1, 1), lost(FIN, AWAITING, 0, 0)][..];
    let post_reused = &[ok(0, 1), ok(1, 1), lost(FIN, AWAITING, 0, 0)][..];
    let expect = [e, put_reused, e, post_reused];
    run(Row { name: "accept, then FIN", fault: Fault::Accept(Cut::Fin), expect });
}

#[test]
fn accept_then_rst() {
    // As `accept_then_fin`, plus: an RST that lands before the client has handled the
    // handshake's completion is a failed connect (nothing was sent, not retried).
    let e = &[ok(1, 1), lost(RST, AWAITING, 0, 0), CONNECT_FAILED][..];
    let put_reused = &[ok(0, 1), ok(1, 1), lost(RST, AWAITING, 0, 0), CONNECT_FAILED][..];
    let post_reused = &[ok(0, 1), ok(1, 1), lost(RST, AWAITING, 0, 0), CONNECT_FAILED][..];
    let expect = [e, put_reused, e, post_reused];
    run(Row { name: "accept, then RST", fault: Fault::Accept(Cut::Rst), expect });
}

#[test]
fn accept_then_stall() {
    // The small request fits in the socket buffers: for the client it is written whole.
    let d = &[deadline(AWAITING, 0)][..];
    run(Row { name: "accept, then stall", fault: Fault::Accept(Cut::Stall), expect: [d, d, d, d] });
}

// ---- part of the request ----

#[test]
fn partial_large_request_then_fin() {
    // The device has the head (and may have acted on it) when it stops reading and closes, with
    // the client still writing the body: `SendingBody`. Only the idempotent request on a reused
    // connection (the keep-alive race) is retried; the rest are reported as possibly processed.
    // (Before, a partly written body counted as unsent, and POSTs were sent again.)
    let l = &[lost(FIN, SENDING_BODY, 0, 0)][..];
    let r = &[ok(1, 1)][..];
    let fault = Fault::Partial { large: true, then: Cut::Fin, every: false };
    run(Row { name: "64 KiB of an 8 MiB request, then FIN", fault, expect: [l, r, l, l] });
}

#[test]
fn partial_large_request_then_rst() {
    let l = &[lost(RST, SENDING_BODY, 0, 0)][..];
    let r = &[ok(1, 1)][..];
    let fault = Fault::Partial { large: true, then: Cut::Rst, every: false };
    run(Row { name: "64 KiB of an 8 MiB request, then RST", fault, expect: [l, r, l, l] });
}

#[test]
fn partial_large_request_then_stall() {
    // The head is out: the deadline's error says the device may have acted on it.
    let d = &[deadline(SENDING_BODY, 0)][..];
    let fault = Fault::Partial { large: true, then: Cut::Stall, every: false };
    run(Row { name: "64 KiB of an 8 MiB request, then stall", fault, expect: [d, d, d, d] });
}

#[test]
fn partial_large_request_then_rst_every_time() {
    // The retry (PUT, reused) is cut too: the retry budget (1) is spent, and both losses are
    // reported, each after the head was written.
    let l = &[lost(RST, SENDING_BODY, 0, 0)][..];
    let both = (RST, SENDING_BODY);
    let r = &[Outcome { got: Got::RetryFailed { first: both, last: both }, retries: 1, arrived: 0 }][..];
    let fault = Fault::Partial { large: true, then: Cut::Rst, every: true };
    run(Row { name: "64 KiB of an 8 MiB request, then RST, every request", fault, expect: [l, r, l, l] });
}

#[test]
fn partial_small_request_then_fin() {
    // The device read 16 bytes, but the client had written the whole small request into the
    // socket buffers: for it the request was sent, and the rules for `AwaitingResponse` apply
    // (the device in fact got nothing; "may have been processed" is a may).
    let fault = Fault::Partial { large: false, then: Cut::Fin, every: false };
    let (l, r) = (&[lost(FIN, AWAITING, 0, 0)][..], &[ok(1, 1)][..]);
    run(Row { name: "16 bytes of a small request, then FIN", fault, expect: [l, r, l, l] });
}

#[test]
fn partial_small_request_then_rst() {
    let fault = Fault::Partial { large: false, then: Cut::Rst, every: false };
    let (l, r) = (&[lost(RST, AWAITING, 0, 0)][..], &[ok(1, 1)][..]);
    run(Row { name: "16 bytes of a small request, then RST", fault, expect: [l, r, l, l] });
}

// ---- an early response, while the request is still being written ----
// Rule 1 comes first: once a response byte has arrived the request is never retried, although
// the device has not received all of it; and the stage is how far the exchange got.

#[test]
fn early_response_then_fin() {
    let e = &[lost(FIN, READING, 0, 0)][..];
    let fault = Fault::EarlyResponse(Cut::Fin);
    run(Row { name: "early partial response, 8 MiB request unsent, then FIN", fault, expect: [e, e, e, e] });
}

#[test]
fn early_response_then_rst() {
    let e = &[lost(RST, READING, 0, 0)][..];
    let fault = Fault::EarlyResponse(Cut::Rst);
    run(Row { name: "early partial response, 8 MiB request unsent, then RST", fault, expect: [e, e, e, e] });
}

#[test]
fn early_response_then_stall() {
    let d = &[deadline(READING, 0)][..];
    let fault = Fault::EarlyResponse(Cut::Stall);
    run(Row {
        name: "early partial response, 8 MiB request unsent, then stall",
        fault,
        expect: [d, d, d, d],
    });
}

/// A complete answer to a request whose body the device did not read.
const EARLY_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[test]
fn early_complete_answer_then_close_with_the_body_unread() {
    // The faults issue's first fault. The answer is the outcome, in every column: returned, never
    // retried, the device acted once (the cut is the device's one request: its log counts only
    // requests it read whole). Before, the write error was reported before the answer sitting in
    // the socket was read: the POST was retried (applied twice) or failed as "not processed".
    let e = &[ok(0, 0)][..];
    run(Row {
        name: "early complete answer, 8 MiB request unread, then close (RST)",
        fault: Fault::EarlyAnswer,
        expect: [e, e, e, e],
    });
}

// ---- the whole request, no answer ----

#[test]
fn whole_request_then_fin() {
    // Reused: the keep-alive race; only the idempotent request is retried (received twice).
    let fault = Fault::Respond { bytes: b"", after: After::Fin, every: false };
    let (l, r) = (&[lost(FIN, AWAITING, 0, 1)][..], &[ok(1, 2)][..]);
    run(Row { name: "whole request, then FIN", fault, expect: [l, r, l, l] });
}

#[test]
fn whole_request_then_rst() {
    let fault = Fault::Respond { bytes: b"", after: After::Rst, every: false };
    let (l, r) = (&[lost(RST, AWAITING, 0, 1)][..], &[ok(1, 2)][..]);
    run(Row { name: "whole request, then RST", fault, expect: [l, r, l, l] });
}

#[test]
fn whole_request_then_stall() {
    let d = &[deadline(AWAITING, 1)][..];
    let fault = Fault::Respond { bytes: b"", after: After::Stall, every: false };
    run(Row { name: "whole request, then stall", fault, expect: [d, d, d, d] });
}

#[test]
fn whole_request_then_rst_every_time() {
    // Reused PUT: lost on the reused connection (retried), then on the fresh one (not retried):
    // both failures are reported, and the device received it twice.
    let fault = Fault::Respond { bytes: b"", after: After::Rst, every: true };
    let l = &[lost(RST, AWAITING, 0, 1)][..];
    let both = Got::RetryFailed { first: (RST, AWAITING), last: (RST, AWAITING) };
    let r = &[Outcome { got: both, retries: 1, arrived: 2 }][..];
    run(Row { name: "whole request, then RST, every request", fault, expect: [l, r, l, l] });
}

// ---- part of the response: never retried ----

const STATUS_LINE: &[u8] = b"HTTP/1.1 20";
const HEADERS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/js";
const BODY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
const CHUNKED_BODY: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
const CHUNK_SIZE_LINE: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1";

/// A row whose fault comes after part of the response: the same outcome in every column. (After
/// an RST, Linux still hands out the bytes received before it, so the client always sees the
/// response start before the reset.)
fn mid_response(name: &'static str, bytes: &'static [u8], after: After) {
    let e = match after {
        After::Fin => lost(FIN, READING, 0, 1),
        After::Rst => lost(RST, READING, 0, 1),
        _ => deadline(READING, 1),
    };
    let e = &[e][..];
    run(Row { name, fault: Fault::Respond { bytes, after, every: false }, expect: [e, e, e, e] });
}

#[test]
fn mid_status_line_then_fin() {
    mid_response("mid status line, then FIN", STATUS_LINE, After::Fin);
}

#[test]
fn mid_status_line_then_rst() {
    mid_response("mid status line, then RST", STATUS_LINE, After::Rst);
}

#[test]
fn mid_status_line_then_stall() {
    mid_response("mid status line, then stall", STATUS_LINE, After::Stall);
}

#[test]
fn mid_headers_then_fin() {
    mid_response("mid headers, then FIN", HEADERS, After::Fin);
}

#[test]
fn mid_headers_then_rst() {
    mid_response("mid headers, then RST", HEADERS, After::Rst);
}

#[test]
fn mid_headers_then_stall() {
    mid_response("mid headers, then stall", HEADERS, After::Stall);
}

#[test]
fn mid_body_then_fin() {
    mid_response("mid body (Content-Length), then FIN", BODY, After::Fin);
}

#[test]
fn mid_body_then_rst() {
    mid_response("mid body (Content-Length), then RST", BODY, After::Rst);
}

#[test]
fn mid_body_then_stall() {
    mid_response("mid body (Content-Length), then stall", BODY, After::Stall);
}

#[test]
fn mid_chunked_body_then_fin() {
    mid_response("mid chunked body, then FIN", CHUNKED_BODY, After::Fin);
}

#[test]
fn mid_chunked_body_then_rst() {
    mid_response("mid chunked body, then RST", CHUNKED_BODY, After::Rst);
}

#[test]
fn mid_chunked_body_then_stall() {
    mid_response("mid chunked body, then stall", CHUNKED_BODY, After::Stall);
}

#[test]
fn mid_chunk_size_line_then_fin() {
    mid_response("inside a chunk-size line, then FIN", CHUNK_SIZE_LINE, After::Fin);
}

#[test]
fn mid_chunk_size_line_then_rst() {
    mid_response("inside a chunk-size line, then RST", CHUNK_SIZE_LINE, After::Rst);
}

#[test]
fn mid_chunk_size_line_then_stall() {
    mid_response("inside a chunk-size line, then stall", CHUNK_SIZE_LINE, After::Stall);
}

// ---- after a complete response ----
// The exchange itself succeeds; the outcome is the next request's. Fresh/reused: whether that
// exchange was the first on its connection or the second.

#[test]
fn right_after_response_fin() {
    // The next request races the FIN (sent right after the response). FIN first: caught before
    // the write, not an attempt, sent on a new connection. Request first: the keep-alive race
    // (the device discards it unread): PUT retried, POST reported.
    let put = &[ok(0, 1), ok(1, 1)][..];
    let post = &[ok(0, 1), lost(FIN, AWAITING, 0, 0)][..];
    let fault = Fault::AfterResponse { after: After::Fin, idle: false };
    run(Row {
        name: "FIN right after a response, next request at once",
        fault,
        expect: [put, put, post, post],
    });
}

#[test]
fn right_after_response_rst() {
    // As with the FIN, plus: a write into the reset socket fails (`Sending`), so even the POST
    // may be retried.
    let put = &[ok(0, 1), ok(1, 1)][..];
    let post = &[ok(0, 1), ok(1, 1), lost(RST, AWAITING, 0, 0)][..];
    let fault = Fault::AfterResponse { after: After::Rst, idle: false };
    run(Row {
        name: "RST right after a response, next request at once",
        fault,
        expect: [put, put, post, post],
    });
}

#[test]
fn idle_fin() {
    // The FIN arrived while idle: never written into, not an attempt; a new connection.
    let e = &[ok(0, 1)][..];
    let fault = Fault::AfterResponse { after: After::Fin, idle: true };
    run(Row { name: "FIN while idle", fault, expect: [e, e, e, e] });
}

#[test]
fn idle_rst() {
    let e = &[ok(0, 1)][..];
    let fault = Fault::AfterResponse { after: After::Rst, idle: true };
    run(Row { name: "RST while idle", fault, expect: [e, e, e, e] });
}

#[test]
fn idle_stall() {
    // A device that hangs while the connection is idle is indistinguishable from one that
    // stalls after reading the request: the small request is written into the socket buffers.
    let d = &[deadline(AWAITING, 0)][..];
    run(Row { name: "stall while idle", fault: Fault::IdleStall, expect: [d, d, d, d] });
}

// ---- beyond the matrix ----

#[test]
fn retry_goes_to_a_new_connection_even_when_another_is_idle() {
    // retry.rs: "Every retry goes to a fresh connection". With two idle connections (two
    // requests were in flight at once), the device resets each connection on reading its second
    // request, as a device that drops all its connections would: the retry must not be spent on
    // the other pooled connection.
    let _ = env_logger::builder().is_test(true).try_init();
    let dev = DeviceServer::start(|r| {
        if r.index_on_conn == 1 { Reply::raw(Vec::new()).then(After::Rst) } else { seq_reply(r) }
    });
    let mut c = Client::builder().request_timeout(DEADLINE).max_in_flight_per_host(2).build().unwrap();
    c.submit(Request::get(&dev.url("/a")).build().unwrap());
    c.submit(Request::get(&dev.url("/b")).build().unwrap());
    let mut done = Vec::new();
    let start = Instant::now();
    while done.len() < 2 && start.elapsed() < SETTLE {
        c.poll(Some(DEADLINE), &mut done).unwrap();
    }
    assert!(done.iter().all(|d| d.result.is_ok()), "{done:?}");
    assert_eq!(c.connections().len(), 2, "two idle connections");
    let resp = c.put(&dev.url("/c"), "1").unwrap_or_else(|e| panic!("the retry was lost too: {e:?}"));
    assert_eq!((resp.meta().retries, resp.meta().reused), (1, false));
    assert_eq!(dev.connections_accepted(), 3, "the retry went out on a new connection");
}

#[test]
fn support_cut_request_reads_part_of_a_request_then_cuts() {
    // The matrix's device, checked with a plain socket: 16 bytes read, the early bytes written,
    // then the FIN, and nothing logged as a request.
    use std::io::{Read, Write};
    let cut = CutRequest {
        after_requests: 0,
        once: true,
        after_bytes: 16,
        respond: b"HTTP/1.1 20",
        then: Cut::Fin,
    };
    let dev = DeviceServer::with_options(
        ServerOptions { cut_request: Some(cut), ..ServerOptions::default() },
        seq_reply,
    );
    let mut s = TcpStream::connect(dev.addr()).unwrap();
    s.set_read_timeout(Some(SETTLE)).unwrap();
    s.write_all(b"PUT /x HTTP/1.1\r\nHost: d\r\nContent-Length: 1\r\n\r\n1").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"HTTP/1.1 20");
    assert_eq!((dev.requests_cut(), dev.request_count()), (1, 0));
    assert!(wait_until(SETTLE, || dev.fins_completed() == 1));
    // `once`: the next connection is served.
    let mut s = TcpStream::connect(dev.addr()).unwrap();
    s.set_read_timeout(Some(SETTLE)).unwrap();
    s.write_all(b"GET /y HTTP/1.1\r\nHost: d\r\n\r\n").unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}
