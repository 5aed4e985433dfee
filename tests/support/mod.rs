//! A misbehaving simulated device HTTP/1.1 server for loopback integration tests.
//!
//! The embedded devices finwatch talks to handle connections sloppily: they
//! answer a request and then close the connection (FIN) *without* sending
//! `Connection: close`, drop keep-alive connections after a short idle time,
//! or reset connections outright. A client that writes its next request onto
//! such a half-closed socket loses that request. [`DeviceServer`] reproduces
//! these behaviours on 127.0.0.1 and records what the client did, above all
//! every byte the client sent after we sent FIN ([`DeviceServer::bytes_after_fin`]),
//! which is the signature of that bug.
//!
//! Design: plain std threads, one accept thread (blocking accept, unblocked on
//! drop by a connection to itself) and one thread per connection. Nothing can hang a test:
//! every blocking read/write uses a short timeout and re-checks the stop flag,
//! and dropping the server sets that flag and waits at most about a second for
//! the threads. Requests are parsed with `httparse` (head, then exactly
//! `Content-Length` body bytes; chunked request bodies are not supported).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often blocked connection threads re-check the stop flag.
const TICK: Duration = Duration::from_millis(50);
/// How long we keep reading (and counting late bytes) after sending FIN.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// How long `Drop` waits for connection threads.
const JOIN_LIMIT: Duration = Duration::from_secs(1);
/// Largest request head we accept before dropping the connection.
const MAX_HEAD: usize = 64 * 1024;

// The TLS devices: compiled by the tls-tests crate only (its feature `tls-devices`), whose
// dependencies (rustls as a server, rcgen) stay out of finwatch's own test builds.
#[cfg(feature = "tls-devices")]
pub mod tls;

pub mod matrix;

/// Polls `cond` every millisecond until it is true (returns `true`) or
/// `timeout` has passed (returns `false`). Use instead of fixed sleeps.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Byte `i` of the streaming tests' bodies (tests/streaming.rs, tls-tests' streaming_tls.rs):
/// not periodic at any buffer or TLS record size.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

/// The first `len` bytes of [`pattern`].
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    (0..len as u64).map(pattern).collect()
}

/// `200 OK` with `body` behind `Content-Length`, as bytes.
pub fn content_length_response(body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// `200 OK` with `body` chunked, in chunks of assorted sizes: some larger than a TLS record
/// (16 KiB) or a 64 KiB read, some of a byte or three.
pub fn chunked_response(body: &[u8]) -> Vec<u8> {
    let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let sizes = [1usize, 1000, 17_000, 70_000, 65_536, 3, 200_000];
    let (mut at, mut k) = (0, 0);
    while at < body.len() {
        let n = sizes[k % sizes.len()].min(body.len() - at);
        bytes.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        bytes.extend_from_slice(&body[at..at + n]);
        bytes.extend_from_slice(b"\r\n");
        at += n;
        k += 1;
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    bytes
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// 0-based index of the connection in accept order.
    pub conn: usize,
    /// 0-based index of this request on its connection.
    pub index_on_conn: usize,
    /// 0-based global arrival order over all connections.
    pub seq: usize,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the server does with the connection after writing a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Wait for the next request.
    KeepAlive,
    /// `shutdown(Write)` (FIN, without any `Connection: close` header), then
    /// count every byte the client still sends. The FIN travels in the segment that carries the
    /// reply's last bytes (`TCP_CORK` until the shutdown): a client that has read the reply has
    /// the FIN too, so every byte it writes afterwards was written after it, and the count is
    /// exact. (A FIN sent a few syscalls after the reply could cross a request the client wrote
    /// a moment before it arrived, the race no client can see: [`After::FinApart`] and
    /// `IdleFin` keep that shape.)
    Fin,
    /// As [`After::Fin`], but the FIN in a segment of its own, a few syscalls after the reply
    /// (the incident's capture: `200 OK`, then `FIN, ACK`). Bytes that arrived before the
    /// shutdown returned are not counted (they may have crossed it); a test that writes after
    /// the FIN on purpose waits for [`DeviceServer::fins_settled`].
    FinApart,
    /// Close with SO_LINGER 0, which sends RST.
    Rst,
    /// Keep alive, but send FIN (as [`After::Fin`]) if no byte of a next
    /// request arrives within the duration.
    IdleFin(Duration),
    /// Never send anything more (e.g. after part of a response): keep the
    /// socket open, discarding input, until the client closes or the server
    /// is dropped (as [`Reply::stall`], but after writing the bytes).
    Stall,
}

/// The handler's answer to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Raw bytes, written verbatim.
    pub bytes: Vec<u8>,
    pub after: After,
    /// Wait this long before writing.
    pub delay: Duration,
    /// Never answer; keep the socket open until the server is dropped or
    /// the client closes.
    pub stall: bool,
    /// Write the bytes in pieces of this many bytes, one `write` each
    /// (TCP_NODELAY is on: a segment each), as some embedded servers do.
    /// 0: all at once.
    pub piece: usize,
}

impl Reply {
    /// `200 OK` with `Content-Length` and `Content-Type: application/json`.
    pub fn ok(body: &[u8]) -> Reply {
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Reply::raw(bytes)
    }

    /// Like [`Reply::ok`], but leaves the body out when `req` is a HEAD
    /// request (the `Content-Length` still announces `body.len()`).
    pub fn ok_for(req: &Received, body: &[u8]) -> Reply {
        let mut reply = Reply::ok(body);
        if req.method.eq_ignore_ascii_case("HEAD") {
            reply.bytes.truncate(reply.bytes.len() - body.len());
        }
        reply
    }

    /// Arbitrary bytes, then keep-alive.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply { bytes: bytes.into(), after: After::KeepAlive, delay: Duration::ZERO, stall: false, piece: 0 }
    }

    pub fn then(self, after: After) -> Reply {
        Reply { after, ..self }
    }

    pub fn delayed(self, delay: Duration) -> Reply {
        Reply { delay, ..self }
    }

    /// Written `piece` bytes per `write` (see [`Reply::piece`]).
    pub fn in_pieces(self, piece: usize) -> Reply {
        Reply { piece, ..self }
    }

    pub fn stall() -> Reply {
        Reply { stall: true, ..Reply::raw(Vec::new()) }
    }
}

/// The presets' handler: `200 OK` with body `{"seq":N}` (no body for HEAD),
/// keep-alive. Handy with [`DeviceServer::with_options`].
pub fn seq_reply(req: &Received) -> Reply {
    Reply::ok_for(req, format!("{{\"seq\":{}}}", req.seq).as_bytes())
}

/// Decides the reply to each request; runs on the connection's thread.
/// A panic in it closes that connection and makes dropping the server panic.
pub type Handler = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// Connection-level misbehaviour, applied before any request is read.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerOptions {
    /// Send FIN right after accepting, without reading anything. Bytes the
    /// client sends are not counted as `bytes_after_fin`: the client may
    /// legitimately have written them before our FIN existed.
    pub close_on_accept: bool,
    /// Send RST right after accepting.
    pub rst_on_accept: bool,
    /// Read only part of a request, then FIN, RST or stall (see [`CutRequest`]).
    pub cut_request: Option<CutRequest>,
}

/// Cut a request short: once the server has served `after_requests` whole
/// requests (over all connections), the next request a connection starts
/// reading is read for at most `after_bytes` bytes (head and body; 0: not one
/// byte, e.g. right at accept); then `respond` is written, if not empty (an
/// early, partial response), followed by a pause of one TICK (50 ms) so the
/// client reads it first; then the connection is cut with `then`.
/// Connections are served normally otherwise; with `once`, only the first
/// such request is cut, so a retry on a new connection is served.
///
/// The decision is taken when the connection starts waiting for the request
/// (at accept, or right after the previous response), so `after_bytes: 0`
/// cuts before the client writes anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutRequest {
    pub after_requests: usize,
    pub once: bool,
    pub after_bytes: usize,
    pub respond: &'static [u8],
    pub then: Cut,
}

/// What the server does at a [`CutRequest`]'s cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// `shutdown(Write)` (FIN, counted in `fins_sent`/`fins_completed`), then
    /// hold the socket open without reading another byte until the server is
    /// dropped: a client still writing fills the buffers and blocks, instead of
    /// completing its write into our receive buffer.
    Fin,
    /// Close with SO_LINGER 0 (RST), discarding what was not read.
    Rst,
    /// Hold the socket open without reading or writing until the server is
    /// dropped.
    Stall,
    /// A plain `close()` right after `respond`, without waiting for the client
    /// to read it, with the rest of the request unread: the kernel resets the
    /// connection (RFC 9293 §3.6.1: data unread at close). What an embedded
    /// server does when it answers a request early (`200`, or `413 Payload Too
    /// Large`) and is done with it: the answer and the RST reach the client
    /// while it is still writing the body.
    Close,
}

/// The simulated device. Dropping it stops all its threads.
pub struct DeviceServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

struct Shared {
    handler: Handler,
    options: ServerOptions,
    stop: AtomicBool,
    handler_panicked: AtomicBool,
    accepted: AtomicUsize,
    log: Mutex<Vec<Received>>,
    /// Bytes received after our FIN, by connection (only connections with some).
    after_fin: Mutex<BTreeMap<usize, usize>>,
    fins: AtomicUsize,
    /// FINs whose `shutdown(Write)` has returned: on loopback, in the client's receive queue.
    fins_done: AtomicUsize,
    /// FINs after which the bytes that crossed them were discarded: from then on every byte
    /// counts as after FIN.
    fins_settled: AtomicUsize,
    rsts: AtomicUsize,
    /// RSTs whose close has returned: on loopback, at the client.
    rsts_done: AtomicUsize,
    /// Requests cut by `ServerOptions::cut_request`.
    cuts: AtomicUsize,
    /// Of those, the ones read up to the cut point (`after_bytes` of them arrived).
    cuts_read: AtomicUsize,
    closed_by_client: AtomicUsize,
    closed_after_fin: AtomicUsize,
}

impl DeviceServer {
    pub fn start(handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> DeviceServer {
        DeviceServer::with_options(ServerOptions::default(), handler)
    }

    pub fn with_options(
        options: ServerOptions,
        handler: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> DeviceServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared {
            handler: Arc::new(handler),
            options,
            stop: AtomicBool::new(false),
            handler_panicked: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            after_fin: Mutex::new(BTreeMap::new()),
            fins: AtomicUsize::new(0),
            fins_done: AtomicUsize::new(0),
            fins_settled: AtomicUsize::new(0),
            rsts: AtomicUsize::new(0),
            rsts_done: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            cuts_read: AtomicUsize::new(0),
            closed_by_client: AtomicUsize::new(0),
            closed_after_fin: AtomicUsize::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name("device-accept".into())
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn accept thread");
        DeviceServer { addr, shared, accept_thread: Some(accept_thread) }
    }

    /// Well-behaved keep-alive device.
    pub fn keep_alive() -> DeviceServer {
        DeviceServer::preset(After::KeepAlive)
    }

    /// FIN after every response, without `Connection: close`.
    pub fn close_after_response() -> DeviceServer {
        DeviceServer::preset(After::Fin)
    }

    /// FIN after every response, in a segment of its own ([`After::FinApart`]).
    pub fn close_after_response_apart() -> DeviceServer {
        DeviceServer::preset(After::FinApart)
    }

    /// FIN when a connection has been idle for `idle` after a response.
    pub fn idle_close(idle: Duration) -> DeviceServer {
        DeviceServer::preset(After::IdleFin(idle))
    }

    /// RST after every response.
    pub fn rst_after_response() -> DeviceServer {
        DeviceServer::preset(After::Rst)
    }

    fn preset(after: After) -> DeviceServer {
        DeviceServer::start(move |req| seq_reply(req).then(after))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(SeqCst)
    }

    /// Copy of the request log, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.shared.log).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    pub fn count_matching(&self, pred: impl Fn(&Received) -> bool) -> usize {
        lock(&self.shared.log).iter().filter(|r| pred(r)).count()
    }

    /// Bytes received after we sent FIN, summed over all connections.
    pub fn bytes_after_fin(&self) -> usize {
        lock(&self.shared.after_fin).values().sum()
    }

    /// Bytes received after we sent FIN on connection `conn`.
    pub fn bytes_after_fin_on(&self, conn: usize) -> usize {
        lock(&self.shared.after_fin).get(&conn).copied().unwrap_or(0)
    }

    /// Number of connections on which bytes arrived after our FIN.
    pub fn conns_with_bytes_after_fin(&self) -> usize {
        lock(&self.shared.after_fin).len()
    }

    /// FINs sent. Counted before sending, so a client that saw the FIN
    /// (or, for [`DeviceServer::rsts_sent`], the RST) also sees the count.
    pub fn fins_sent(&self) -> usize {
        self.shared.fins.load(SeqCst)
    }

    /// FINs whose `shutdown(Write)` has returned. On loopback the FIN is then queued at the
    /// client: wait for this before a test's deliberate gap to model "the FIN arrived first".
    pub fn fins_completed(&self) -> usize {
        self.shared.fins_done.load(SeqCst)
    }

    /// FINs after which every byte the client sends counts as after FIN (the bytes that
    /// crossed the FIN were discarded): a test that writes after a FIN on purpose waits for it.
    pub fn fins_settled(&self) -> usize {
        self.shared.fins_settled.load(SeqCst)
    }

    pub fn rsts_sent(&self) -> usize {
        self.shared.rsts.load(SeqCst)
    }

    /// RSTs whose close has returned. On loopback the RST has then reached
    /// the client (as [`DeviceServer::fins_completed`] for FINs).
    pub fn rsts_completed(&self) -> usize {
        self.shared.rsts_done.load(SeqCst)
    }

    /// Requests cut short by [`ServerOptions::cut_request`] (counted when the
    /// cut is decided, before its bytes are read).
    pub fn requests_cut(&self) -> usize {
        self.shared.cuts.load(SeqCst)
    }

    /// Cut requests of which all `after_bytes` arrived before the cut: with
    /// `after_bytes` past the head, requests the device acted on.
    pub fn requests_cut_after_reading(&self) -> usize {
        self.shared.cuts_read.load(SeqCst)
    }

    /// Connections the client closed (EOF or reset) while we were waiting
    /// for a request or stalling, i.e. before we closed them.
    pub fn connections_closed_by_client(&self) -> usize {
        self.shared.closed_by_client.load(SeqCst)
    }

    /// Connections the client closed (EOF) after our FIN: it noticed the close.
    pub fn clients_closed_after_fin(&self) -> usize {
        self.shared.closed_after_fin.load(SeqCst)
    }
}

/// Stops a device's threads: sets `stop`, unblocks the accept thread listening on `addr` (a
/// connection to itself), and waits for its connections' threads at most [`JOIN_LIMIT`] (they
/// notice the flag within one TICK; any still running after that are detached).
fn stop_device(stop: &AtomicBool, accept: Option<JoinHandle<Vec<JoinHandle<()>>>>, addr: SocketAddr) {
    stop.store(true, SeqCst);
    let Some(accept) = accept else { return };
    // If this fails the accept thread is left behind, never waited on.
    if TcpStream::connect_timeout(&addr, JOIN_LIMIT).is_err() {
        return;
    }
    let Ok(conns) = accept.join() else { return };
    wait_until(JOIN_LIMIT, || conns.iter().all(|h| h.is_finished()));
}

impl Drop for DeviceServer {
    fn drop(&mut self) {
        stop_device(&self.shared.stop, self.accept_thread.take(), self.addr);
        if self.shared.handler_panicked.load(SeqCst) && !thread::panicking() {
            panic!("a DeviceServer handler panicked (see its message above)");
        }
    }
}

impl Shared {
    /// Whether the request a connection is about to read is to be cut.
    fn claim_cut(&self, cut: CutRequest) -> bool {
        if lock(&self.log).len() < cut.after_requests {
            return false;
        }
        if cut.once {
            self.cuts.compare_exchange(0, 1, SeqCst, SeqCst).is_ok()
        } else {
            self.cuts.fetch_add(1, SeqCst);
            true
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) -> Vec<JoinHandle<()>> {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    // A blocking accept: a connection is served the moment it arrives (a polling accept would
    // add up to its poll interval to every fresh connection's first exchange). `Drop`
    // unblocks it by connecting once after setting `stop`.
    loop {
        let accepted = listener.accept();
        if shared.stop.load(SeqCst) {
            break;
        }
        let Ok((stream, _)) = accepted else {
            thread::sleep(Duration::from_millis(1));
            continue;
        };
        let id = shared.accepted.fetch_add(1, SeqCst);
        let shared = Arc::clone(&shared);
        conns.retain(|h| !h.is_finished());
        let handle = thread::Builder::new()
            .name(format!("device-conn-{id}"))
            .spawn(move || serve(stream, id, &shared))
            .expect("spawn connection thread");
        conns.push(handle);
    }
    conns
}

/// Result of one bounded read.
enum Input {
    Data(usize),
    Eof,
    /// The caller's deadline passed.
    Timeout,
    /// Server stopping, or an I/O error; `reset` tells whether it was a reset.
    Gone {
        reset: bool,
    },
}

/// Why waiting for a request ended without one.
enum NoRequest {
    ClientClosed,
    Idle,
    Gone,
}

struct Conn<'a> {
    stream: TcpStream,
    id: usize,
    shared: &'a Shared,
    /// Received bytes not yet consumed as a request.
    buf: Vec<u8>,
}

fn serve(stream: TcpStream, id: usize, shared: &Shared) {
    let mut c = Conn { stream, id, shared, buf: Vec::new() };
    let setup = (c.stream.set_nonblocking(false))
        .and_then(|()| c.stream.set_nodelay(true))
        .and_then(|()| c.stream.set_write_timeout(Some(TICK)));
    if setup.is_err() {
        return;
    }
    if shared.options.rst_on_accept {
        return c.rst();
    }
    if shared.options.close_on_accept {
        return c.fin(false);
    }
    let mut idle = None;
    for index_on_conn in 0.. {
        if let Some(cut) = shared.options.cut_request
            && shared.claim_cut(cut)
        {
            return c.cut(cut);
        }
        let req = match c.next_request(index_on_conn, idle) {
            Ok(req) => req,
            Err(NoRequest::ClientClosed) => {
                shared.closed_by_client.fetch_add(1, SeqCst);
                return;
            }
            Err(NoRequest::Idle) => return c.fin(true),
            Err(NoRequest::Gone) => return,
        };
        let Ok(reply) = panic::catch_unwind(AssertUnwindSafe(|| (shared.handler)(&req))) else {
            shared.handler_panicked.store(true, SeqCst);
            return;
        };
        if reply.stall {
            return c.stall();
        }
        if !c.sleep(reply.delay) {
            return;
        }
        let piece = if reply.piece == 0 { reply.bytes.len().max(1) } else { reply.piece };
        // A reply followed by FIN is held back until the shutdown, which sends the FIN with it.
        let with_fin = reply.after == After::Fin && reply.piece == 0 && c.cork();
        if !reply.bytes.chunks(piece).all(|p| c.write_all(p)) {
            return;
        }
        if with_fin {
            return c.fin_then(true, true);
        }
        idle = None;
        match reply.after {
            After::KeepAlive => {}
            After::IdleFin(d) => idle = Some(d),
            After::Fin | After::FinApart => return c.fin(true),
            After::Rst => return c.rst(),
            After::Stall => return c.stall(),
        }
    }
}

impl Conn<'_> {
    fn stopped(&self) -> bool {
        self.shared.stop.load(SeqCst)
    }

    /// Reads once into `buf`, in TICK slices so the stop flag is honoured.
    fn read_some(&mut self, deadline: Option<Instant>) -> Input {
        self.read_at_most(8192, deadline)
    }

    /// Reads and drops whatever is already queued on the socket, without waiting.
    fn discard_queued(&mut self) {
        if self.stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut chunk = [0u8; 8192];
        while matches!(self.stream.read(&mut chunk), Ok(n) if n > 0) {}
        let _ = self.stream.set_nonblocking(false);
    }

    /// Waits for input until a deadline closer than SO_RCVTIMEO can resolve (it is rounded up
    /// to the kernel's tick, 4 ms or more): polls without blocking, sleeping ~100 µs between.
    fn read_precisely(&mut self, chunk: &mut [u8], deadline: Instant) -> Input {
        if self.stream.set_nonblocking(true).is_err() {
            return Input::Gone { reset: false };
        }
        let input = loop {
            match self.stream.read(chunk) {
                Ok(0) => break Input::Eof,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    break Input::Data(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || self.stopped() {
                        break Input::Timeout;
                    }
                    thread::sleep(left.min(Duration::from_micros(100)));
                }
                Err(e) if retryable(e.kind()) => {}
                Err(e) => break Input::Gone { reset: e.kind() == ErrorKind::ConnectionReset },
            }
        };
        if self.stream.set_nonblocking(false).is_err() {
            return Input::Gone { reset: false };
        }
        input
    }

    /// As `read_some`, reading at most `max` (1..=8192) bytes.
    fn read_at_most(&mut self, max: usize, deadline: Option<Instant>) -> Input {
        let mut chunk = [0u8; 8192];
        let chunk = &mut chunk[..max.clamp(1, 8192)];
        if let Some(deadline) = deadline
            && deadline.saturating_duration_since(Instant::now()) < Duration::from_millis(30)
        {
            return self.read_precisely(chunk, deadline);
        }
        loop {
            if self.stopped() {
                return Input::Gone { reset: false };
            }
            let mut timeout = TICK;
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Input::Timeout;
                }
                timeout = timeout.min(left).max(Duration::from_millis(1));
            }
            if self.stream.set_read_timeout(Some(timeout)).is_err() {
                return Input::Gone { reset: false };
            }
            match self.stream.read(chunk) {
                Ok(0) => return Input::Eof,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Input::Data(n);
                }
                Err(e) if retryable(e.kind()) => {}
                Err(e) => {
                    let reset = e.kind() == ErrorKind::ConnectionReset;
                    return Input::Gone { reset };
                }
            }
        }
    }

    /// Reads until one whole request is buffered and logs it. With `idle`,
    /// gives up if no byte of the request arrives within that time.
    fn next_request(&mut self, index_on_conn: usize, idle: Option<Duration>) -> Result<Received, NoRequest> {
        let idle_deadline = idle.map(|d| Instant::now() + d);
        loop {
            if let Some(head) = parse_head(&self.buf).map_err(|_| NoRequest::Gone)? {
                let end = head.len + head.body_len;
                if self.buf.len() >= end {
                    let body = self.buf[head.len..end].to_vec();
                    self.buf.drain(..end);
                    return Ok(self.log(head, body, index_on_conn));
                }
            }
            let deadline = if self.buf.is_empty() { idle_deadline } else { None };
            match self.read_some(deadline) {
                Input::Data(_) => {}
                Input::Eof | Input::Gone { reset: true } => return Err(NoRequest::ClientClosed),
                Input::Timeout => return Err(NoRequest::Idle),
                Input::Gone { reset: false } => return Err(NoRequest::Gone),
            }
        }
    }

    fn log(&self, head: Head, body: Vec<u8>, index_on_conn: usize) -> Received {
        let mut log = lock(&self.shared.log);
        let req = Received {
            conn: self.id,
            index_on_conn,
            seq: log.len(),
            method: head.method,
            target: head.target,
            headers: head.headers,
            body,
        };
        log.push(req.clone());
        req
    }

    /// Sleeps for `d` in TICK slices; false if the server is stopping.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            if self.stopped() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(TICK));
        }
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.stopped() {
                return false;
            }
            match self.stream.write(bytes) {
                Ok(0) => return false,
                Ok(n) => bytes = &bytes[n..],
                Err(e) if retryable(e.kind()) => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// `TCP_CORK` on: written bytes wait for a full segment or a FIN. Where there is none, the
    /// reply and the FIN go apart, as with `IdleFin`.
    fn cork(&self) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        return socket2::SockRef::from(&self.stream).set_tcp_cork(true).is_ok();
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        return false;
    }

    /// Sends FIN, then reads until EOF, error, stop or DRAIN_LIMIT. With
    /// `count`, every byte read is recorded as arriving after our FIN.
    fn fin(self, count: bool) {
        self.fin_then(count, false);
    }

    /// [`Conn::fin`]. `with_reply`: the FIN leaves in the segment of the reply held back by the
    /// cork, so the client had it the moment it had the reply, and no request of a client that
    /// honours it can cross it (the client does not pipeline): every byte after the shutdown
    /// counts.
    fn fin_then(mut self, count: bool, with_reply: bool) {
        // Bytes already queued here were sent before the client could have seen this FIN (a
        // request crossing it, the race no client can see): they are not "after FIN".
        self.discard_queued();
        // Count first, so a client that has seen the FIN also sees the count.
        self.shared.fins.fetch_add(1, SeqCst);
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        self.shared.fins_done.fetch_add(1, SeqCst);
        // Nor are bytes that arrived while a FIN apart from the reply was being sent: between
        // the discard above and the shutdown's return (a few syscalls, during which a fast
        // client's next request, written before any FIN existed, lands), the race no client can
        // see. On loopback the FIN reached the client's queue before `shutdown` returned; a
        // client that then sees it needs a wake-up before it could write, so what is queued now
        // crossed it.
        if !with_reply {
            self.discard_queued();
        }
        self.shared.fins_settled.fetch_add(1, SeqCst);
        // Bytes buffered before the FIN (e.g. a pipelined request) are not late.
        self.buf.clear();
        let deadline = Instant::now() + DRAIN_LIMIT;
        loop {
            match self.read_some(Some(deadline)) {
                Input::Data(n) => {
                    self.buf.clear();
                    if count {
                        *lock(&self.shared.after_fin).entry(self.id).or_default() += n;
                    }
                }
                Input::Eof => {
                    self.shared.closed_after_fin.fetch_add(1, SeqCst);
                    return;
                }
                Input::Timeout | Input::Gone { .. } => return,
            }
        }
    }

    /// Closes with SO_LINGER 0 so the kernel sends RST instead of FIN.
    fn rst(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        self.shared.rsts.fetch_add(1, SeqCst);
        let shared = self.shared;
        drop(self.stream);
        shared.rsts_done.fetch_add(1, SeqCst);
    }

    /// Reads at most `cut.after_bytes` bytes of the next request, then cuts.
    fn cut(mut self, cut: CutRequest) {
        while self.buf.len() < cut.after_bytes {
            match self.read_at_most(cut.after_bytes - self.buf.len(), None) {
                Input::Data(_) => {}
                Input::Eof | Input::Gone { reset: true } => {
                    self.shared.closed_by_client.fetch_add(1, SeqCst);
                    return;
                }
                Input::Timeout | Input::Gone { reset: false } => return,
            }
        }
        self.shared.cuts_read.fetch_add(1, SeqCst);
        if !cut.respond.is_empty() {
            if !self.write_all(cut.respond) {
                return;
            }
            // Pause so the client reads the bytes before the cut.
            if cut.then != Cut::Close && !self.sleep(TICK) {
                return;
            }
        }
        match cut.then {
            Cut::Close => {
                self.shared.rsts.fetch_add(1, SeqCst);
                let shared = self.shared;
                drop(self.stream);
                shared.rsts_done.fetch_add(1, SeqCst);
            }
            Cut::Rst => self.rst(),
            Cut::Fin => {
                self.shared.fins.fetch_add(1, SeqCst);
                if self.stream.shutdown(Shutdown::Write).is_err() {
                    return;
                }
                self.shared.fins_done.fetch_add(1, SeqCst);
                self.hold();
            }
            Cut::Stall => self.hold(),
        }
    }

    /// Keeps the socket open, reading nothing, until the server stops.
    fn hold(self) {
        while !self.stopped() {
            thread::sleep(TICK);
        }
    }

    /// Never answers; discards input until the client closes or we stop.
    fn stall(mut self) {
        loop {
            match self.read_some(None) {
                Input::Data(_) => self.buf.clear(),
                Input::Eof | Input::Gone { reset: true } => {
                    self.shared.closed_by_client.fetch_add(1, SeqCst);
                    return;
                }
                Input::Timeout | Input::Gone { reset: false } => return,
            }
        }
    }
}

fn retryable(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    /// Length of the head including the blank line.
    len: usize,
    body_len: usize,
}

/// `Ok(None)` while the head is incomplete; `Err` for garbage.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf).map_err(|e| e.to_string())? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > MAX_HEAD => return Err("head too large".into()),
        httparse::Status::Partial => return Ok(None),
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let body_len = match headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
        Some((_, v)) => v.trim().parse().map_err(|_| format!("bad Content-Length {v:?}"))?,
        None => 0,
    };
    Ok(Some(Head {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        headers,
        len,
        body_len,
    }))
}
