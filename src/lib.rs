//! A raw-socket HTTP/1.1 client on [mio](https://docs.rs/mio) for latency-critical control loops
//! that command embedded devices, built so that a request is **never written on a connection the
//! device has closed**.
//!
//! Embedded HTTP servers close connections after a response (FIN) without saying
//! `Connection: close`, or after a few milliseconds of idleness. A pooled client that does not
//! notice writes its next command into the half-closed socket, the device's kernel answers RST,
//! and the command is lost. finwatch keeps explicit state for every connection, watches idle
//! sockets for FIN, checks a socket once more right before it writes (a zero-timeout poll on
//! Linux, `MSG_PEEK` elsewhere), and sends the command on a fresh socket instead. When a
//! connection is lost anyway, it tells the caller whether the device may have acted on the
//! command, and retries only where that cannot apply a command twice.
//!
//! In the examples below, `base` is the URL of a device, such as `http://10.0.0.5`. (In this
//! documentation it is a small HTTP/1.1 server on loopback that answers every request with
//! `200 OK` and `{"value":1}`, so that the examples run as tests.)
//!
//! # Quick start
//!
//! **Blocking**, on the caller's thread: no background thread, no thread hop on the hot path.
//!
//! ```
//! use std::time::Duration;
//! use finwatch::{Client, Request};
//! # let base = finwatch::__doc_device();
//!
//! let mut client = Client::builder()
//!     .connect_timeout(Duration::from_millis(500))
//!     .request_timeout(Duration::from_secs(2))
//!     .build()?;
//! let resp = client.put(&format!("{base}/unico/v1/interface/io"), r#"{"ioId":25602,"value":1}"#)?;
//! assert!(resp.is_success());
//! let state = client.get(&format!("{base}/unico/v1/interface/io-state?ioId=25602"))?;
//! assert_eq!(state.body(), br#"{"value":1}"#);
//!
//! // Any method, headers, a deadline of its own, an explicit retry permission:
//! let pulse = Request::post(&format!("{base}/api/pulse"), "dedup=41")
//!     .header("Content-Type", "text/plain")
//!     .timeout(Duration::from_millis(200))
//!     .retryable(true) // the device de-duplicates, so a second delivery is harmless
//!     .build()?;
//! match client.send(pulse) {
//!     Ok(resp) => println!("{}", resp.status()),
//!     Err(e) if !e.may_have_been_processed() => println!("not applied, safe to resend: {e}"),
//!     Err(e) => println!("the device may have acted on it: {e}"),
//! }
//! # Ok::<(), finwatch::Error>(())
//! ```
//!
//! **Submit and poll**, for a loop the caller owns: [`Client::submit`] returns at once;
//! [`Client::poll`] runs the event loop until a completion or its timeout, and never sleeps past
//! the nearest deadline.
//!
//! ```
//! # use std::time::Duration;
//! # use finwatch::{Client, Request};
//! # let base = finwatch::__doc_device();
//! let mut client = Client::new()?;
//! let id = client.submit(Request::get(&format!("{base}/state")).build()?);
//! let mut done = Vec::new();
//! while client.pending() > 0 {
//!     client.poll(Some(Duration::from_millis(1)), &mut done)?;
//!     // … the rest of the control period's work …
//! }
//! assert_eq!(done[0].id, id);
//! assert_eq!(done[0].result.as_ref().map(|r| r.status()).ok(), Some(200));
//! # Ok::<(), finwatch::Error>(())
//! ```
//!
//! **Execute**, for a command loop with no allocation per command: [`Client::execute`] borrows a
//! prepared [`Request`] and writes the response into the caller's [`Response`], reusing its
//! buffers. Once warm, a command on a reused connection allocates nothing. (For submit and poll,
//! [`Client::submit_ref`] and [`Client::recycle`] do the same.)
//!
//! ```
//! # use finwatch::{Client, Request, Response};
//! # let base = finwatch::__doc_device();
//! let mut client = Client::new()?;
//! let query = Request::get(&format!("{base}/unico/v1/interface/io-state?ioId=25602")).build()?;
//! let mut state = Response::default();
//! for _ in 0..3 {
//!     client.execute(&query, &mut state)?;
//!     assert_eq!(state.body(), br#"{"value":1}"#);
//! }
//! assert_eq!(client.stats().connects, 1);
//! # Ok::<(), finwatch::Error>(())
//! ```
//!
//! # Guarantees
//!
//! - **Never a write after FIN or RST.** A FIN or RST that reached the client before a write is
//!   never written into: the socket is checked right before every write (a zero-timeout poll
//!   that reports any socket with data, a FIN or an error; `MSG_PEEK` where that cannot tell),
//!   and only an idle, open connection may carry a request (see the state diagram below).
//! - **No command silently lost.** Each request ends with a [`Response`] or a typed [`Error`];
//!   [`Error::may_have_been_processed`] says whether the device may have acted on it, and `false`
//!   is a guarantee: the device never got the whole request.
//! - **No hidden double effect.** A request is sent again only where that is safe: when the
//!   device cannot have received all of it, or when it was lost on a reused connection before
//!   any response byte and is idempotent or marked [`RequestBuilder::retryable`]. Never after a
//!   response byte, never a request fully written on a fresh connection, at most
//!   [`ClientBuilder::max_retries`] times (default 1), always on a connection that has carried
//!   nothing. A retry that fails too reports both failures ([`Error::RetryFailed`]).
//! - **Order per device.** Requests to one `host:port` leave in submission order, one in flight
//!   at a time by default ([`ClientBuilder::max_in_flight_per_host`] opts into more).
//! - **Every wait has a deadline.** Connects, requests (default 10 s, or
//!   [`RequestBuilder::timeout`]) and idle connections all expire on timers of the loop; a stalled
//!   device delays nothing but its own requests.
//! - **Bounded memory.** Response heads, header counts, bodies, chunk metadata and interim
//!   responses are limited ([`Limits`]); going over is [`Error::LimitExceeded`] and the
//!   connection is retired. Reads are bounded per turn, so a flooding device cannot starve the
//!   timers. Firmware-sized bodies are streamed through one buffer instead
//!   ([`Client::send_streaming`] from a reader, [`Client::send_to`] into a writer).
//! - **Bad input is refused before anything is sent**: non-`http` URLs, a host the system
//!   resolver would read as a number other than a dotted quad (`10.0.5`, `127.1`, `0x7f.0.0.1`,
//!   `192.168.001.010`: see [`Url::parse`]), CR, LF, NUL or other control bytes in methods,
//!   targets, header names or values, `Transfer-Encoding` on requests, a `Content-Length` that
//!   disagrees with the body ([`Error::InvalidUrl`], [`Error::InvalidRequest`]). Responses are
//!   framed strictly (RFC 9112 §6.3); anything ambiguous is [`Error::MalformedResponse`] and the
//!   connection is never reused.
//!
//! # Connection states
//!
//! Every connection is in exactly one state; every change goes through one function, which logs
//! it at `debug` level (`RUST_LOG=finwatch=debug`):
//!
//! ```text
//!   request needs a connection
//!         │
//!         ▼
//!   ┌────────────┐  refused, connect timeout
//!   │ Connecting │────────────────────────────────► Closed
//!   └─────┬──────┘
//!         │ handshake done
//!         ▼
//!   ┌────────────┐  request assigned (pre-write check, then the write)        ┌────────────┐
//!   │ Open(Idle) │───────────────────────────────────────────────────────────►│ Open(Busy) │
//!   │            │◄───────────────────────────────────────────────────────────│            │
//!   └──┬───┬───┬─┘  response complete, connection reusable                    └──┬───┬───┬─┘
//!      │   │   │                                                                 │   │   │
//!      │   │   └── FIN (readiness or pre-write check) ─► PeerHalfClosed ◄── FIN ─┘   │   │
//!      │   └── RST, socket error ─────────────────► Reset ◄── RST, socket error ─────┘   │
//!      └── idle, Keep-Alive or learned ───────────► Closed ◄── Connection: close, ───────┘
//!          idle-close timeout;                                 HTTP/1.0, Keep-Alive max,
//!          unsolicited bytes                                   framing error, limit,
//!                                                              deadline, early response
//!
//!   PeerHalfClosed, Reset, Closed: the socket is closed at once and never written to again.
//! ```
//!
//! Only `Open(Idle)` may be given a request, and only `Open(Busy)` after a clean pre-write check
//! has bytes to write. A FIN on a busy connection either ends a close-delimited body or loses the request
//! (which the retry rules then judge). [`Client::connections`] shows each live connection's state,
//! and [`Client::stats`] counts the FINs caught, the retries and the reuses.
//!
//! # When a request fails
//!
//! The [fault matrix](https://github.com/finwatch/finwatch/blob/main/FAULTS.md) lists, for every
//! point at which a device can fail an exchange (refuse, accept and close, cut the request, cut
//! the response, stall, close while idle), what a PUT and a POST return on a fresh and a reused
//! connection; each cell is a test over real sockets. The rules behind it, in order:
//!
//! 1. **A response byte has arrived**: never retried (stage [`Stage::ReadingResponse`]), even if
//!    the request was still being sent.
//! 2. **The device cannot have the whole request** (nothing or only part of it was written,
//!    [`Stage::Sending`]): retried once on a new connection, whatever the method.
//! 3. **All of it was written on a reused connection** ([`Stage::AwaitingResponse`]): most likely
//!    the keep-alive race; retried only if idempotent or marked retryable. The device may then
//!    receive it twice.
//! 4. **All of it was written on a fresh connection**: reported, never retried; retrying would
//!    hide a device fault and could double a command.
//!
//! A pooled connection found closed before the write is not an attempt: the request goes out on
//! a new connection with its retry budget untouched. Deadlines and failed connects are never
//! retried. [`Error::may_have_been_processed`] is `true` for the stages `AwaitingResponse` and
//! `ReadingResponse` and for errors about the response itself; it is `false` only when the device
//! cannot have received the whole request.
//!
//! # `Client` or `SharedClient`?
//!
//! A [`Client`] is driven by its caller: each call runs the event loop on the calling thread, and
//! between calls nothing runs. That is the lowest-latency way to command a device and the right
//! choice for a control loop that owns a thread; a FIN that arrives between calls is handled at
//! the next call, still before anything is written. A [`SharedClient`] runs the same client on a
//! background thread behind a `Send + Sync + Clone` handle: choose it when several threads
//! command the same devices through one pool and one ordered queue per device, or when idle
//! connections should be closed the moment their FIN arrives, and pay a thread hop each way
//! (some tens of microseconds) per request.
//!
//! # Embedding in another event loop
//!
//! [`Client::poll`] with a zero timeout does the client's pending work without blocking. Register
//! the client's poller fd (`AsRawFd` for [`Client`], on Unix) in the host loop, bound the host's
//! wait by [`Client::next_deadline`], and call `poll` when the fd is readable or the deadline has
//! passed. A [`Waker`] makes a `poll` in progress return from another thread.
//!
//! # Observability
//!
//! [`Client::stats`] (counters), [`Client::connections`] (a snapshot of the pool),
//! [`Client::learned_idle_close`] (what the client has learned of a device's idle timeout),
//! [`Response::meta`] (which connection carried a response, and retries), the `log` crate at
//! `debug` level (every state transition), and [`ClientBuilder::trace`] (a bounded, timestamped
//! [`Trace`] of connection events, rendered as a Mermaid sequence diagram by
//! [`Trace::to_mermaid`]).
//!
//! # Authentication
//!
//! [`RequestBuilder::basic_auth`] sends RFC 7617 credentials with the request.
//! [`RequestBuilder::digest_auth`] answers a device's RFC 7616 Digest challenge: the first `401`
//! is answered by sending the request once more (the device refused it, so even a POST is
//! safe), and later requests to that device carry the answer from the start, so a control loop
//! pays the extra round trip once per nonce, not per command. A device's session is never
//! downgraded (from `SHA-256` to `MD5`, or from `qop=auth` to none: the `401` is returned
//! instead), and [`RequestBuilder::digest_policy`] can require `SHA-256` and `qop=auth` from
//! the start ([`DigestPolicy`]). Credentials in the URL are refused, and the error shows the
//! URL with `***` for the password. `Debug` output never shows a credential: not the password
//! of Digest credentials, nor the value of a header field that carries one by its name
//! ([`is_sensitive_header`]: `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`,
//! `X-Api-Key`, `X-Auth-Token`, …) or that the caller marked with
//! [`RequestBuilder::sensitive_header`], in a [`Request`] or a [`Response`].
//!
//! # Feature `http`
//!
//! Off by default (the core depends on `mio`, `socket2`, `httparse` and `log` only). With it, the
// The module when it is built, its page on docs.rs when it is not:
#![cfg_attr(feature = "http", doc = " [`http_interop`] module converts")]
#![cfg_attr(
    not(feature = "http"),
    doc = " [`http_interop`](https://docs.rs/finwatch/latest/finwatch/http_interop/) module converts"
)]
//! to and from the [`http`](https://docs.rs/http) crate's `Request`, `Response` and `Method`,
//! strictly: a request part finwatch cannot send exactly is an error, never dropped or rewritten.
//! `HttpClientExt::send_http` sends an `http::Request` with a [`Client`].
//!
//! ```toml
//! [dependencies]
//! finwatch = { version = "0.1", features = ["http"] }
//! ```
//!
//! # Feature `tls`
//!
//! Off by default. With it, `https://` URLs: rustls (the *ring* provider), driven sans-IO by
//! the driver; a connection reaches the engine once its handshake is complete, so warm spares
//! are handshaken ahead of need, and sessions resume. `ClientBuilder::tls(TlsConfig)` says how
//! devices are authenticated: a CA (PEM), a SHA-256 pin of the device's public key
//! (`sha256//…`, as curl takes it), or, under a name that says so, nothing. No root store is
//! built in. A `close_notify`, a bare FIN and a RST all end an idle connection as a FIN does;
//! a FIN without `close_notify` under a response is a truncation error. A failed handshake is
//! [`Error::Tls`]: nothing was sent. (README: "HTTPS".)
//!
//! ```toml
//! [dependencies]
//! finwatch = { version = "0.1", features = ["tls"] }
//! ```
//!
//! # What it does not do
//!
//! HTTP/1.1 only (TLS with the `tls` feature): no HTTP/2, no proxies, no pipelining, no request bodies with
//! `Transfer-Encoding`, no content decoding. Host names go to the system resolver on a
//! thread of their own (the loop never waits for a lookup; the connect timeout bounds it), are
//! cached with all their addresses, and are looked up again after a minute (in the
//! background) or once every address has failed; a refused address gives way to the name's
//! next one. The cache holds at most 1024 names (least recently used evicted, unused for an
//! hour dropped); a lookup that hangs is given up after 10 s (the name may be looked up
//! again), and at most 64 lookup threads are alive at once: beyond that a new name fails at
//! once with [`Error::Resolve`]. A FIN
//! still on the wire when a request is written (a truly simultaneous close) cannot be seen by any
//! client; the retry rules above and the learned idle-close margin are what finwatch does about
//! it.
//!
//! Layers: [`Client`] (the API) → `driver` (the mio loop: syscalls, no protocol decisions) →
//! `proto` (sans-IO: the connection state machine, pool, dispatch, retries, response framing).

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_code)] // one exception: `os::mio::as_uninit`, for socket2's `recv`
#![deny(missing_docs)]

/// The README's examples are compiled as doctests, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod client;
mod driver;
mod error;
/// Conversions to and from the `http` crate's types (feature `http`).
#[cfg(feature = "http")]
pub mod http_interop;
mod os;
mod proto;
mod request;
mod resolve;
mod response;
mod shared;
#[cfg(feature = "tls")]
mod tls;
mod trace;
mod url;

pub use client::{Client, ClientBuilder, SinkHandle, Waker};
pub use error::{Error, Limit, LostCause, Result, Stage, TlsFailure};
pub use proto::conn::RetireReason;
pub use proto::digest::DigestPolicy;
pub use proto::engine::{Completion, ConnectionInfo, RequestId, Stats};
pub use proto::framing::{Limits, MAX_HEADERS_CAP};
pub use request::{Method, Request, RequestBuilder, is_sensitive_header};
pub use response::{Meta, Response};
pub use shared::{ResponseFuture, SharedClient};
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
pub use trace::{Trace, TraceEvent, TraceKind};
pub use url::Url;

/// Hooks for the micro-benchmarks in `benches/`; not part of the API (feature `__internal`).
#[cfg(feature = "__internal")]
#[doc(hidden)]
pub mod __bench {
    use crate::proto::framing::{Limits, Progress, ResponseReader};
    use crate::{Request, Response};

    /// Appends the wire form of `req` to `out`.
    pub fn encode_request(req: &Request, out: &mut Vec<u8>) {
        req.encode(out);
    }

    /// Parses one complete response from `bytes` into the buffers of `spare` (reused, as on the
    /// client's steady path); `None` if incomplete or invalid.
    pub fn read_response(bytes: &[u8], limits: Limits, spare: Response) -> Option<Response> {
        let mut r = ResponseReader::reuse(limits, false, spare);
        match r.feed(bytes) {
            Ok(Progress::Complete { .. }) => Some(r.finish(crate::Meta::default()).0),
            _ => None,
        }
    }
}

/// The engine's own CPU per command, sans-IO, for the micro-benchmarks; not part of the API
/// (feature `__internal`).
#[cfg(feature = "__internal")]
#[doc(hidden)]
pub mod __bench_engine {
    use std::time::Instant;

    use crate::proto::engine::{Action, Config, Engine, ProbeOutcome};
    use crate::proto::slab::Key;
    use crate::{Request, Response};

    /// One client's engine with one connection, playing the driver: every [`EngineLoop::command`]
    /// is what `Client::execute` asks of the engine for a command on a reused connection
    /// (submit, dispatch, the pre-write check's answer, the write, the response, the completion, the
    /// response's buffers recycled), without a syscall.
    pub struct EngineLoop {
        engine: Engine,
        conn: Key,
        response: Vec<u8>,
        spare: Option<Response>,
    }

    impl EngineLoop {
        /// `response`: the device's complete answer to every request.
        pub fn new(request: &Request, response: &[u8]) -> EngineLoop {
            let mut engine = Engine::new(Config::default());
            let now = Instant::now();
            engine.submit(request, now);
            let conn = loop {
                match engine.poll_action() {
                    Some(Action::Connect { conn, .. }) => break conn,
                    Some(_) => {}
                    None => panic!("no connect"),
                }
            };
            engine.on_connected(conn, now);
            let mut l = EngineLoop { engine, conn, response: response.to_vec(), spare: None };
            l.exchange(now);
            l
        }

        fn exchange(&mut self, now: Instant) {
            while let Some(a) = self.engine.poll_action() {
                match a {
                    Action::Probe { conn } => self.engine.on_probe(conn, ProbeOutcome::Alive, now),
                    Action::Write { conn } => {
                        let n = self.engine.output(conn).len();
                        self.engine.on_written(conn, n, now);
                    }
                    _ => {}
                }
            }
            self.engine.on_data(self.conn, &self.response, now);
            let done = self.engine.poll_completion().expect("a completion");
            let resp = done.result.expect("a response");
            if let Some(old) = self.spare.replace(resp) {
                self.engine.recycle(old);
            }
        }

        /// One command on the reused connection; returns the response's status.
        pub fn command(&mut self, request: &Request) -> u16 {
            let now = Instant::now();
            self.engine.submit(request, now);
            self.engine.on_timeout(now);
            self.exchange(now);
            self.engine.on_timeout(now);
            self.spare.as_ref().map_or(0, |r| r.status())
        }
    }
}

/// Fuzzing entry points (used by `fuzz/` and the regression tests); not part of the API.
#[cfg(feature = "__internal")]
#[doc(hidden)]
pub use proto::fuzz as __fuzz;

/// The simulated kernel's harness (used by `fuzz/`, `tests/sim.rs`); not part of the API.
#[cfg(feature = "__internal")]
#[doc(hidden)]
pub use os::sim::harness as __sim;

/// Test support for this crate's documentation examples; **not part of the API** (hidden, and
/// not covered by semantic versioning). Do not use it in applications.
///
/// Starts, once per process and on first use, a tiny HTTP/1.1 keep-alive server on
/// `127.0.0.1:0` that answers every request with `200 OK`, a `Content-Length` and the JSON body
/// `{"value":1}` (headers only for `HEAD`), and returns its base URL, `http://127.0.0.1:PORT`.
/// It is what lets the examples in these docs run against a device. It serves each connection on
/// a thread of its own, at most 64 at once (more are closed at accept); it closes a connection
/// after 10 s without a byte, on a request head over 16 KiB, a body over 1 MiB, a malformed or
/// chunked request, or `Connection: close`.
///
/// ```
/// let base = finwatch::__doc_device();
/// assert!(base.starts_with("http://127.0.0.1:"));
/// let resp = finwatch::Client::new()?.get(&format!("{base}/anything"))?;
/// assert_eq!((resp.status(), resp.body()), (200, &br#"{"value":1}"#[..]));
/// # Ok::<(), finwatch::Error>(())
/// ```
///
/// Compiled for this crate's own tests only (feature `__internal`, which its dev-dependency on
/// itself turns on for every test build, doctests included; and the unit tests).
#[cfg(any(test, feature = "__internal"))]
#[doc(hidden)]
pub fn __doc_device() -> String {
    static BASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BASE.get_or_init(doc_device::start).clone()
}

/// The server behind [`__doc_device`].
#[cfg(any(test, feature = "__internal"))]
mod doc_device {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    const BODY: &[u8] = br#"{"value":1}"#;
    const MAX_CONNECTIONS: usize = 64;
    const MAX_HEAD: usize = 16 * 1024;
    const MAX_BODY: usize = 1024 * 1024;
    const IDLE: Duration = Duration::from_secs(10);
    static OPEN: AtomicUsize = AtomicUsize::new(0);

    pub(crate) fn start() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("doc device: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("doc device: local address");
        std::thread::Builder::new()
            .name("finwatch-doc-device".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    if OPEN.fetch_add(1, SeqCst) >= MAX_CONNECTIONS {
                        OPEN.fetch_sub(1, SeqCst);
                        continue; // dropped: closed
                    }
                    let served = std::thread::Builder::new().spawn(move || {
                        let _ = serve(stream);
                        OPEN.fetch_sub(1, SeqCst);
                    });
                    if served.is_err() {
                        OPEN.fetch_sub(1, SeqCst);
                    }
                }
            })
            .expect("doc device: spawn the accept thread");
        format!("http://{addr}")
    }

    /// Answers requests on one connection until it ends; every exit closes it.
    fn serve(mut stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(IDLE))?;
        stream.set_write_timeout(Some(IDLE))?;
        stream.set_nodelay(true)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let head_len = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if buf.len() > MAX_HEAD {
                    return Ok(());
                }
                match stream.read(&mut chunk)? {
                    0 => return Ok(()),
                    n => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let (head, body_len, close) = {
                let mut fields = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut fields);
                if !matches!(req.parse(&buf[..head_len]), Ok(httparse::Status::Complete(_))) {
                    return Ok(());
                }
                let mut body_len = 0;
                let mut close = req.version == Some(0);
                for f in req.headers.iter() {
                    let value = std::str::from_utf8(f.value).unwrap_or("").trim();
                    if f.name.eq_ignore_ascii_case("content-length") {
                        match value.parse::<usize>() {
                            Ok(n) if n <= MAX_BODY => body_len = n,
                            _ => return Ok(()),
                        }
                    } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Ok(());
                    } else if f.name.eq_ignore_ascii_case("connection") {
                        close |= value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
                    }
                }
                (req.method == Some("HEAD"), body_len, close)
            };
            buf.drain(..head_len);
            while buf.len() < body_len {
                match stream.read(&mut chunk)? {
                    0 => return Ok(()),
                    n => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..body_len);
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
                BODY.len(),
                if close { "Connection: close\r\n" } else { "" }
            )
            .into_bytes();
            if !head {
                out.extend_from_slice(BODY);
            }
            stream.write_all(&out)?;
            if close {
                return Ok(());
            }
        }
    }
}
