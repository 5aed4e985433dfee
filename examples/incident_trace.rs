//! The incident side by side, as two Mermaid sequence diagrams: `cargo run --example incident_trace`.
//!
//! A controller sends `PUT /unico/v1/interface/io` to an embedded device, which answers `200 OK`
//! and closes the connection (FIN) without `Connection: close`. About 100 µs after the FIN has
//! arrived, the controller sends `GET /unico/v1/interface/io-state?ioId=25602`.
//!
//! The device here behaves like the one in the capture: after each response it shuts down its
//! side (FIN), and if anything arrives on the connection after that, it resets it (RST, by
//! closing with `SO_LINGER` 0), which is what the device's kernel does with data for a socket its
//! application has closed.
//!
//! 1. **naive pool**: a tiny hand-written pooled client keeps the `TcpStream` between requests
//!    and writes the next request without looking at the socket. The GET goes into the
//!    half-closed connection, the device answers RST, the command is lost.
//! 2. **finwatch** (`ClientBuilder::trace(256)`): the FIN is seen before the GET is written, so
//!    the GET goes out on a new connection and succeeds.
//!
//! Both record into a [`finwatch::Trace`] (the naive pool through the public `Trace::record`),
//! so both diagrams have the same form. The output is Markdown: paste it into a README.

use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use finwatch::{Client, Trace, TraceEvent, TraceKind};

const PUT_PATH: &str = "/unico/v1/interface/io";
const PUT_BODY: &str = r#"{"ioId":25602,"value":1}"#;
const GET_PATH: &str = "/unico/v1/interface/io-state?ioId=25602";
/// From the FIN's arrival to the next command, as in the capture.
const GAP: Duration = Duration::from_micros(100);
/// Every wait in this example is bounded by this.
const BOUND: Duration = Duration::from_secs(2);
const TRACE_CAPACITY: usize = 256;

fn main() -> ExitCode {
    let naive = run_naive();
    let finwatch = run_finwatch();

    let titles = [
        "Naive pool: keeps the socket, writes the next request without looking",
        "finwatch: `ClientBuilder::trace(256)`",
    ];
    for (title, run) in titles.into_iter().zip([&naive, &finwatch]) {
        println!("### {title}\n");
        println!("```mermaid\n{}```\n", run.trace.to_mermaid("controller"));
    }
    println!("naive:    {}", naive.summary);
    println!("finwatch: {}", finwatch.summary);

    // The example doubles as a check: the naive pool must lose the GET, finwatch must not.
    if naive.get_ok || !finwatch.get_ok || finwatch.late_bytes != 0 {
        eprintln!("unexpected outcome: the incident was not reproduced as described");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// What one side of the comparison produced.
struct Run {
    trace: Trace,
    summary: String,
    get_ok: bool,
    late_bytes: usize,
}

fn run_naive() -> Run {
    let device = Device::start();
    let mut pool = NaivePool::new(device.addr);
    let put = pool.send("PUT", PUT_PATH, PUT_BODY.as_bytes());
    // Make sure the FIN has arrived before the GET: wait for it on the pooled socket, as a
    // capture on the controller would show it. The pool itself never looks.
    let fin_at = pool.wait_for_fin_on_idle(BOUND);
    thread::sleep(GAP);
    let get = pool.send("GET", GET_PATH, b"");
    // The device has read the GET's bytes after its FIN, and answered RST.
    wait_until(BOUND, || device.state.resets.load(SeqCst) >= 1);

    let served = device.served();
    let late_bytes = device.state.late_bytes.load(SeqCst);
    let sent_get_at = sent_at(&pool.trace, "GET");
    let reset_seen = pool.trace.events().any(|e| matches!(e.kind, TraceKind::PeerReset { .. }));
    let summary = format!(
        "PUT {} → FIN {}, unnoticed → GET written into the half-closed connection {} later{} → {}; \
         the device served {} of 2 commands and discarded {} bytes that came after its FIN",
        outcome(&put),
        fin_at.map_or("not seen".into(), |t| after(first_at(&pool.trace), t)),
        match (fin_at, sent_get_at) {
            (Some(f), Some(g)) => fmt_gap(g.saturating_duration_since(f)),
            _ => "(?)".into(),
        },
        if reset_seen { " → RST" } else { "" },
        match &get {
            Ok(status) => format!("{status} (not reproduced)"),
            Err(e) => format!("GET LOST ({e})"),
        },
        served.len(),
        late_bytes,
    );
    Run { trace: pool.trace, summary, get_ok: get.is_ok(), late_bytes }
}

fn run_finwatch() -> Run {
    let device = Device::start();
    let mut client = Client::builder()
        .request_timeout(BOUND)
        .trace(TRACE_CAPACITY)
        .build()
        .expect("a client with a trace");
    let url = |path| format!("http://{}{path}", device.addr);
    let put = client.put(&url(PUT_PATH), PUT_BODY).map(|r| r.status()).map_err(|e| e.to_string());
    // The same bounded wait: the device's FIN has left (on loopback: it is queued at the client).
    wait_until(BOUND, || device.state.fins.load(SeqCst) >= 1);
    thread::sleep(GAP);
    let get = client.get(&url(GET_PATH));
    // Let the client see the second FIN and close both sockets, so the diagram ends cleanly.
    let mut sink = Vec::new();
    wait_until(BOUND, || {
        let _ = client.poll(Some(Duration::from_millis(1)), &mut sink);
        device.state.closed_by_client.load(SeqCst) >= 2
    });

    let trace = client.take_trace().expect("tracing is on");
    let stats = client.stats();
    let served = device.served();
    let late_bytes = device.state.late_bytes.load(SeqCst);
    let fin_seen = trace.events().find(|e| matches!(e.kind, TraceKind::PeerFin { .. })).map(|e| e.at);
    let get_conn = trace
        .events()
        .find(|e| matches!(&e.kind, TraceKind::Sent { line, .. } if line.starts_with("GET")))
        .map(|e| e.conn);
    let summary = format!(
        "PUT {} → FIN seen {} → GET on a new connection (conn {}) → {}; the device served {} of 2 \
         commands and got {} bytes after a FIN; {} retries",
        outcome(&put),
        fin_seen.map_or("not seen".into(), |t| after(first_at(&trace), t)),
        get_conn.map_or("?".into(), |c| c.to_string()),
        match &get {
            Ok(r) => r.status().to_string(),
            Err(e) => format!("GET LOST ({e})"),
        },
        served.len(),
        late_bytes,
        stats.retries,
    );
    Run { trace, summary, get_ok: get.is_ok(), late_bytes }
}

fn outcome(r: &Result<u16, String>) -> String {
    match r {
        Ok(status) => status.to_string(),
        Err(e) => format!("failed ({e})"),
    }
}

fn first_at(trace: &Trace) -> Instant {
    trace.events().next().map_or_else(Instant::now, |e: &TraceEvent| e.at)
}

fn sent_at(trace: &Trace, method: &str) -> Option<Instant> {
    trace
        .events()
        .find(|e| matches!(&e.kind, TraceKind::Sent { line, .. } if line.starts_with(method)))
        .map(|e| e.at)
}

/// `at +1.234 ms`, from the start of the trace (as in the diagrams).
fn after(t0: Instant, t: Instant) -> String {
    format!("at +{:.3} ms", t.saturating_duration_since(t0).as_secs_f64() * 1e3)
}

fn fmt_gap(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn wait_until(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_micros(50));
    }
    true
}

// ---------------------------------------------------------------------------------------------
// The naive pool.

/// A pooled HTTP/1.1 client as many are written: it keeps the last connection and writes the
/// next request on it without checking whether the device has closed it.
struct NaivePool {
    addr: SocketAddr,
    host: String,
    idle: Option<(u64, TcpStream)>,
    connections: u64,
    requests: u64,
    trace: Trace,
}

impl NaivePool {
    fn new(addr: SocketAddr) -> NaivePool {
        NaivePool {
            addr,
            host: addr.to_string(),
            idle: None,
            connections: 0,
            requests: 0,
            trace: Trace::new(TRACE_CAPACITY),
        }
    }

    fn record(&mut self, conn: u64, kind: TraceKind) {
        self.trace.record(Instant::now(), conn, &self.host, kind);
    }

    /// Sends one request and reads its response: the status, or what went wrong.
    fn send(&mut self, method: &str, target: &str, body: &[u8]) -> Result<u16, String> {
        self.requests += 1;
        let request = self.requests;
        let (conn, mut stream) = match self.idle.take() {
            Some(idle) => idle,
            None => {
                self.connections += 1;
                let conn = self.connections;
                self.record(conn, TraceKind::Connecting { spare: false });
                let stream = TcpStream::connect(self.addr).map_err(|e| self.fail(conn, request, e))?;
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(BOUND));
                self.record(conn, TraceKind::Connected);
                (conn, stream)
            }
        };
        let mut wire = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if !body.is_empty() || method == "PUT" {
            wire.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        wire.push_str("\r\n");
        let mut wire = wire.into_bytes();
        wire.extend_from_slice(body);
        // No look at the socket first: this is the bug.
        stream.write_all(&wire).map_err(|e| self.fail(conn, request, e))?;
        self.record(conn, TraceKind::Sent { request, line: format!("{method} {target}") });
        match read_status(&mut stream) {
            Ok(status) => {
                self.record(conn, TraceKind::Response { request, status });
                self.idle = Some((conn, stream));
                Ok(status)
            }
            Err(e) => {
                // The read ended without a response. On Linux the FIN that was already queued
                // makes it end with EOF; the RST the device sent for our GET shows up as the
                // socket's pending error (EPIPE in CLOSE_WAIT). Wait for it, boundedly, so the
                // diagram shows it as the capture did.
                let mut reset = (e.kind() == ErrorKind::ConnectionReset).then_some(e.kind());
                wait_until(BOUND, || {
                    if let Ok(Some(err)) = stream.take_error() {
                        reset = Some(err.kind());
                    }
                    reset.is_some()
                });
                if reset.is_some() {
                    self.record(conn, TraceKind::PeerReset { state: "request written after the FIN" });
                }
                Err(self.fail(conn, request, e))
            }
        }
    }

    fn fail(&mut self, conn: u64, request: u64, e: io::Error) -> String {
        let error = match e.kind() {
            ErrorKind::UnexpectedEof => "connection closed before the response".to_string(),
            _ => e.to_string(),
        };
        self.record(conn, TraceKind::Failed { request, error: error.clone() });
        error
    }

    /// Waits (at most `bound`) until the device's FIN is queued on the pooled socket, records it,
    /// and returns when it was seen. Only the harness calls this; the pool never looks.
    fn wait_for_fin_on_idle(&mut self, bound: Duration) -> Option<Instant> {
        let (conn, stream) = self.idle.as_ref()?;
        let conn = *conn;
        stream.set_nonblocking(true).ok()?;
        let mut seen = None;
        wait_until(bound, || {
            if let Ok(0) = stream.peek(&mut [0; 1]) {
                seen = Some(Instant::now());
            }
            seen.is_some()
        });
        stream.set_nonblocking(false).ok()?;
        let at = seen?;
        self.trace.record(at, conn, &self.host, TraceKind::PeerFin { state: "idle in the pool, unnoticed" });
        Some(at)
    }
}

/// Reads one response (head and `Content-Length` body) and returns its status.
fn read_status(stream: &mut TcpStream) -> io::Result<u16> {
    let mut buf = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) =
            resp.parse(&buf).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?
        {
            let length = content_length(resp.headers);
            if buf.len() >= head + length {
                return Ok(resp.code.unwrap_or(0));
            }
        }
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk)? {
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn content_length(headers: &[httparse::Header<'_>]) -> usize {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The device.

/// A device on 127.0.0.1 that closes after every response (FIN, no `Connection: close`) and
/// resets a connection on which anything arrives after its FIN. Its threads are detached: they
/// end on their own (bounded reads) or with the process.
struct Device {
    addr: SocketAddr,
    state: Arc<DeviceState>,
}

#[derive(Default)]
struct DeviceState {
    /// Request lines served, in order.
    served: Mutex<Vec<String>>,
    /// FINs whose `shutdown(Write)` has returned (on loopback: queued at the client).
    fins: AtomicUsize,
    /// Bytes that arrived after a FIN: commands the device never served.
    late_bytes: AtomicUsize,
    /// Connections reset because bytes arrived after the FIN.
    resets: AtomicUsize,
    /// Connections the client closed (it noticed the FIN, or closed a spare).
    closed_by_client: AtomicUsize,
}

impl Device {
    fn start() -> Device {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        let state = Arc::new(DeviceState::default());
        let accept_state = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&accept_state);
                thread::spawn(move || serve(stream, &state));
            }
        });
        Device { addr, state }
    }

    fn served(&self) -> Vec<String> {
        self.state.served.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn serve(mut stream: TcpStream, state: &DeviceState) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(BOUND));
    let line = match read_request(&mut stream) {
        Ok(Some(line)) => line,
        Ok(None) => {
            state.closed_by_client.fetch_add(1, SeqCst);
            return;
        }
        Err(_) => return,
    };
    let body = if line.starts_with("GET") { PUT_BODY } else { r#"{"ok":true}"# };
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).is_err() {
        return;
    }
    if let Ok(mut served) = state.served.lock() {
        served.push(line);
    }
    // Done with this connection: FIN, without having said `Connection: close`.
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    state.fins.fetch_add(1, SeqCst);
    match stream.read(&mut [0; 4096]) {
        Ok(0) => {
            state.closed_by_client.fetch_add(1, SeqCst);
        }
        Ok(n) => {
            // A request after our FIN: the device's kernel answers RST (SO_LINGER 0 close).
            state.late_bytes.fetch_add(n, SeqCst);
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
            state.resets.fetch_add(1, SeqCst);
        }
        Err(_) => {}
    }
}

/// Reads one request; returns its request line (`METHOD target`), or `None` if the client
/// closed the connection before sending one.
fn read_request(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head) =
            req.parse(&buf).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?
            && buf.len() >= head + content_length(req.headers)
        {
            return Ok(Some(format!("{} {}", req.method.unwrap_or(""), req.path.unwrap_or(""))));
        }
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk)? {
            0 => return Ok(None),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
