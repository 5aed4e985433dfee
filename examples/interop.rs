//! finwatch against HTTP servers no one on the team wrote, checked on the wire:
//! `interop/run.sh` (installs what it needs, then runs `cargo run --release --example interop`).
//!
//! Starts, on loopback ports of its own, nginx (keep-alive closed after 20 ms idle and after 5
//! requests; PUT through its DAV module; gzip, so chunked), Apache (`KeepAliveTimeout 20ms`,
//! announced as `Keep-Alive: timeout=0`), lighttpd (1 s idle, 5 requests),
//! BusyBox `httpd` (a connection per request, the web server of many embedded devices),
//! Python's `http.server` (HTTP/1.0), a Python device in the manner of the incident (HTTP/1.1
//! keep-alive, closes a connection idle for 20 ms with a FIN and no `Connection: close`, headers
//! and body in separate writes, a chunked answer) and Node.js (`keepAliveTimeout` 20 ms, which it
//! announces as `Keep-Alive: timeout=0`). Against each, one `finwatch::Client` with its
//! defaults sends back-to-back GETs, GETs paced around the server's idle timeout, PUTs, a
//! 94 KB download, HEADs and a chunked (gzip) download, and checks every answer.
//!
//! Built with `--features tls` (as `interop/run.sh` does), the run also makes a CA and a server
//! certificate for IP:127.0.0.1 and DNS:localhost with the `openssl` command in its temporary
//! directory, and starts nginx with an `ssl` server (the plain one's settings; TLS 1.2 and 1.3,
//! session tickets, a shared session cache) and `openssl s_server -WWW` (HTTP/1.0, closes after
//! every response, one connection at a time) once with `-tls1_3` and once with `-tls1_2`. Their
//! clients trust that CA alone (`TlsConfig::new().add_ca_pem`) and trace: the table counts full
//! and resumed handshakes (every connection after the first must resume) and how the server
//! closed TLS (`close_notify` or a bare FIN).
//!
//! `tcpdump` records the loopback traffic meanwhile, and the capture is then read here: for
//! every connection, no request byte may leave the client after the server's FIN was on the
//! wire (the incident's packet 18). A byte within 20 µs of the FIN is reported as a race (the
//! FIN was still being delivered; no check before a write can see it, on any network), one
//! later as a violation. Capturing needs root (or CAP_NET_RAW); without it the run says so and
//! checks the answers only. Over TLS a client may still send one thing after the server's FIN:
//! its own `close_notify`, one alert record of at most 31 bytes, where a request's record is
//! over 60; a segment that is exactly one such record is counted apart (decided by the record
//! header, not by timing), anything else is request bytes. And on every port, fewer request
//! segments on the wire than commands answered means the check is blind there: a failure.
//!
//! Prints a Markdown table; exits non-zero on any failed command, wrong answer or violation.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use finwatch::{Client, ClientBuilder, Method, Request, Response, TraceKind};

/// The incident device, in Python: HTTP/1.1 keep-alive, idle connections closed (FIN, no
/// header) after argv[2] seconds, headers and body written separately, `/chunked` in 7-byte
/// chunks, PUT answered after reading its body.
const PY_DEVICE: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = float(sys.argv[2])
    def log_message(self, *a):
        pass
    def log_error(self, *a):
        pass
    def answer(self, body, chunked):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 7):
                part = body[i:i + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    def do_GET(self):
        self.answer(b'{"ioId":25602,"value":1}', self.path.startswith("/chunked"))
    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.answer(b'{"ok":true}', False)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// A Node.js server as IoT gateways run them (Node-RED is one): keep-alive with
/// `keepAliveTimeout` 20 ms, which Node announces as `Keep-Alive: timeout=0`; `/chunked` is
/// written in two pieces (chunked); PUT answered after reading its body.
const NODE_SERVER: &str = r#"
const http = require('http');
const srv = http.createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => {
    res.setHeader('Content-Type', 'application/json');
    if (req.url.startsWith('/chunked')) {
      res.write('{"ioId":25602,');
      setImmediate(() => res.end('"value":1}'));
    } else {
      res.end(req.method === 'PUT' ? '{"ok":true}' : '{"ioId":25602,"value":1}');
    }
  });
});
srv.keepAliveTimeout = 20;
srv.listen(Number(process.argv[2]), '127.0.0.1');
"#;

const STATE_PATH: &str = "/unico/v1/interface/io-state";
const STATE_BODY: &[u8] = b"{\"ioId\":25602,\"value\":1}\n";
const PUT_PATH: &str = "/unico/v1/interface/io";
const PUT_BODY: &str = r#"{"ioId":25602,"value":1}"#;
/// A write this soon after the server's FIN (capture timestamps) crossed it on the wire.
const RACE: Duration = Duration::from_micros(20);
/// Every request's deadline, and the bound on every wait for a process.
const DEADLINE: Duration = Duration::from_secs(5);
/// A server's run stops after this many problems (each may have cost a deadline).
const GIVE_UP: usize = 5;
/// Trace events kept by a TLS server's client: all of its run (handshakes and closes counted).
const TRACE: usize = 1 << 16;

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One server under test.
struct Server {
    name: &'static str,
    version: String,
    /// How it ends connections, for the table.
    closes: &'static str,
    port: u16,
    /// Its idle timeout, if it has one worth pacing commands around.
    idle: Option<Duration>,
    /// Pacing around `idle`: how many commands (a 1 s timer makes each one slow).
    paced: usize,
    /// PUT succeeds (2xx) rather than being refused with an error status.
    put_ok: bool,
    /// Serves the static files (the 94 KB download, HEAD, gzip).
    files: bool,
    /// Answers `/chunked` with a chunked body.
    chunked_path: bool,
    /// Compresses on `Accept-Encoding: gzip`, chunked.
    gzip: bool,
    /// Is sent PUTs at all (a server that cannot even refuse one is not).
    put: bool,
    /// Answers HEAD (with `files`).
    head: bool,
    /// Speaks TLS, with a certificate from this CA (PEM): `https://`.
    ca: Option<Vec<u8>>,
    _proc: Proc,
}

impl Server {
    /// A static-file server without an idle timeout worth pacing around, refusing PUT.
    fn new(name: &'static str, version: String, closes: &'static str, port: u16, proc: Proc) -> Server {
        Server {
            name,
            version,
            closes,
            port,
            idle: None,
            paced: 0,
            put_ok: false,
            files: true,
            chunked_path: false,
            gzip: false,
            put: true,
            head: true,
            ca: None,
            _proc: proc,
        }
    }
}

/// What one server's run produced.
#[derive(Default)]
struct Outcome {
    commands: usize,
    ok: usize,
    /// Latency of each back-to-back GET, µs.
    gets_us: Vec<u64>,
    problems: Vec<String>,
    stats: Option<finwatch::Stats>,
    wire: Wire,
    /// TLS servers: what the client's trace shows.
    tls: TlsSeen,
    /// TLS servers: the client's trace (written to the run's directory).
    trace: Option<finwatch::Trace>,
}

/// What a TLS server's client traced: handshakes and how the server closed TLS.
#[derive(Default)]
struct TlsSeen {
    full: usize,
    resumed: usize,
    /// `TraceKind::TlsClosed { close_notify: true }`.
    close_notify: usize,
    /// `TraceKind::TlsClosed { close_notify: false }`: a TCP FIN without one.
    bare_fin: usize,
    versions: Vec<String>,
    /// The trace filled up: the counts are a lower bound.
    truncated: bool,
}

impl TlsSeen {
    fn of(trace: &finwatch::Trace) -> TlsSeen {
        let mut t = TlsSeen::default();
        let mut events = 0;
        for e in trace.events() {
            events += 1;
            match &e.kind {
                TraceKind::TlsHandshake { version, resumed, .. } => {
                    *if *resumed { &mut t.resumed } else { &mut t.full } += 1;
                    if !t.versions.contains(version) {
                        t.versions.push(version.clone());
                    }
                }
                TraceKind::TlsClosed { close_notify: true } => t.close_notify += 1,
                TraceKind::TlsClosed { close_notify: false } => t.bare_fin += 1,
                _ => {}
            }
        }
        t.truncated = events >= TRACE;
        t
    }
}

/// What the capture showed for one server's port.
#[derive(Default, Clone)]
struct Wire {
    connections: usize,
    server_fins: usize,
    server_resets: usize,
    /// Client packets with request bytes after the server's FIN: (connection's client port, µs
    /// after).
    after_fin: Vec<(u16, u64)>,
    /// Client packets with request bytes, anywhere: at least one per command answered, or the
    /// capture (or the reading of it) is blind on this port.
    requests: usize,
    /// TLS only: client packets after the server's FIN holding nothing but one alert record
    /// (the client's `close_notify`), which are not requests (see [`pcap::alert_only`]).
    alerts_after_fin: usize,
}

fn main() -> ExitCode {
    let _ = env_logger::try_init();
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("interop: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let dir = env::temp_dir().join(format!("finwatch-interop-{}", std::process::id()));
    let _cleanup = RemoveDir(dir.clone());
    let www = dir.join("www");
    fs::create_dir_all(www.join("unico/v1/interface")).map_err(|e| format!("{}: {e}", www.display()))?;
    fs::write(www.join(STATE_PATH.trim_start_matches('/')), STATE_BODY).map_err(|e| e.to_string())?;
    let big = big_file();
    fs::write(www.join("big.txt"), &big).map_err(|e| e.to_string())?;
    fs::write(www.join("state.json"), STATE_BODY.repeat(40)).map_err(|e| e.to_string())?;

    #[allow(unused_mut)] // without the `tls` feature
    let mut servers = vec![
        nginx(&dir, &www, None)?,
        apache(&dir, &www)?,
        lighttpd(&dir, &www)?,
        busybox(&www)?,
        python_http_server(&www)?,
        python_device(&dir)?,
        node(&dir)?,
    ];
    #[cfg(feature = "tls")]
    servers.extend(tls::servers(&dir, &www)?);
    // A second incident device, for the control: a naive pooled client that writes its next
    // request without looking. The capture must show its requests crossing FINs, or it is blind.
    let control = python_device(&dir)?;
    let ports: Vec<u16> = servers.iter().chain([&control]).map(|s| s.port).collect();
    let tls_ports: Vec<u16> = servers.iter().filter(|s| s.ca.is_some()).map(|s| s.port).collect();
    let capture = Capture::start(&dir, &ports, &tls_ports);
    if let Err(e) = &capture {
        eprintln!("interop: no capture ({e}); the answers are checked, the wire is not");
    }

    let mut outcomes = Vec::new();
    for s in &servers {
        outcomes.push(exercise(s, &big));
    }
    let (control_sent, control_answered) = naive_pool(control.port);
    let wires = match capture {
        Ok(c) => Some(c.finish()?),
        Err(_) => None,
    };
    for (s, o) in servers.iter().zip(&outcomes) {
        if let Some(t) = &o.trace {
            let file = dir.join(format!("trace-{}.mmd", s.port));
            let _ = fs::write(file, t.to_mermaid("controller"));
        }
    }

    let mut ok = true;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| server | how it ends connections | commands | ok | back-to-back GET p50 µs | retries | connections | FINs seen idle | retired ahead | TLS handshakes: full / resumed | TLS closed by the server: `close_notify` / bare FIN | on the wire: connections | server FINs | request bytes after a FIN (race ≤ 20 µs) | client `close_notify` after a FIN | server RSTs |"
    );
    let _ = writeln!(table, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (s, o) in servers.iter().zip(&mut outcomes) {
        if let Some(w) = wires.as_ref().and_then(|w| w.iter().find(|(p, _)| *p == s.port)) {
            o.wire = w.1.clone();
        }
        let st = o.stats.unwrap_or_default();
        let late: Vec<_> = o.wire.after_fin.iter().filter(|(_, us)| *us > RACE.as_micros() as u64).collect();
        let tls = s.ca.is_some();
        let alerts = if tls { o.wire.alerts_after_fin.to_string() } else { "–".into() };
        let wire = if wires.is_some() {
            format!(
                "{} | {} | {} ({}) | {alerts} | {}",
                o.wire.connections,
                o.wire.server_fins,
                late.len(),
                o.wire.after_fin.len() - late.len(),
                o.wire.server_resets
            )
        } else {
            "not captured | | | | ".to_string()
        };
        let t = &o.tls;
        let (handshakes, closes) = if tls {
            let more = if t.truncated { "+" } else { "" };
            (
                format!("{}{more} / {}{more} ({})", t.full, t.resumed, t.versions.join(", ")),
                format!("{}{more} / {}{more}", t.close_notify, t.bare_fin),
            )
        } else {
            ("–".into(), "–".into())
        };
        let _ = writeln!(
            table,
            "| {} {} | {} | {} | {} | {} | {} | {} | {} | {} | {handshakes} | {closes} | {wire} |",
            s.name,
            s.version,
            s.closes,
            o.commands,
            o.ok,
            p50(&mut o.gets_us),
            st.retries,
            st.connects,
            st.fins_seen_idle,
            st.retired_before_idle_close
        );
        for (port, us) in late {
            o.problems.push(format!("request bytes on connection :{port} {us} µs after the server's FIN"));
        }
        if tls && t.full > 1 {
            o.problems.push(format!(
                "{} full TLS handshakes (and {} resumed): a connection after the first did not resume its session",
                t.full, t.resumed
            ));
        }
        if wires.is_some() && o.wire.requests < o.ok {
            o.problems.push(format!(
                "the capture shows {} request segments for {} commands answered: the wire check is blind here",
                o.wire.requests, o.ok
            ));
        }
        if !o.problems.is_empty() {
            ok = false;
        }
    }
    let mut blind = None;
    if let Some(w) = wires.as_ref().and_then(|w| w.iter().find(|(p, _)| *p == control.port)) {
        let w = &w.1;
        let late = w.after_fin.iter().filter(|(_, us)| *us > RACE.as_micros() as u64).count();
        let _ = writeln!(
            table,
            "| control: a naive pool writing without looking, Python device | {} | {control_sent} | {control_answered} | – | – | – | – | – | – | – | {} | {} | {late} ({}) | – | {} |",
            control.closes,
            w.connections,
            w.server_fins,
            w.after_fin.len() - late,
            w.server_resets
        );
        if late == 0 {
            ok = false;
            blind =
                Some("the capture saw no request of the control client after a FIN: the wire check is blind");
        }
    }
    println!("{table}");
    if let Some(b) = blind {
        println!("- **control**: {b}");
    }
    for (s, o) in servers.iter().zip(&outcomes) {
        for p in &o.problems {
            println!("- **{}**: {p}", s.name);
        }
    }
    if ok {
        println!(
            "Every command answered correctly{}.",
            if wires.is_some() { ", and no request byte followed a FIN" } else { "" }
        );
    }
    Ok(ok)
}

/// Sends every kind of command to `s` through one client, and checks each answer.
fn exercise(s: &Server, big: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let mut gets = Vec::new();
    let mut builder = Client::builder().request_timeout(DEADLINE).connect_timeout(DEADLINE);
    if let Some(ca) = &s.ca {
        builder = match with_tls(builder, ca) {
            Ok(b) => b.trace(TRACE),
            Err(e) => {
                o.problems.push(format!("no TLS client: {e}"));
                return o;
            }
        };
    }
    let mut client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            o.problems.push(format!("no client: {e}"));
            return o;
        }
    };
    let scheme = if s.ca.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://127.0.0.1:{}", s.port);
    let get = |path: &str| Request::get(&format!("{base}{path}")).build();
    let mut check =
        |what: &str, req: finwatch::Result<Request>, want: &dyn Fn(&Response) -> Result<(), String>| {
            if o.problems.len() >= GIVE_UP {
                return;
            }
            o.commands += 1;
            let result = req.and_then(|r| client.send(r));
            match result {
                Ok(resp) => match want(&resp) {
                    Ok(()) => o.ok += 1,
                    Err(e) => o.problems.push(format!("{what}: {e}")),
                },
                Err(e) => o
                    .problems
                    .push(format!("{what}: {e} (may have been processed: {})", e.may_have_been_processed())),
            }
        };
    let state_ok = |r: &Response| -> Result<(), String> {
        match (r.status(), r.body()) {
            (200, b) if b.starts_with(b"{\"ioId\":25602") => Ok(()),
            (st, b) => Err(format!("status {st}, {} body bytes", b.len())),
        }
    };
    for _ in 0..200 {
        let start = Instant::now();
        check("back-to-back GET", get(STATE_PATH), &state_ok);
        gets.push(start.elapsed().as_micros() as u64);
    }
    for _ in 0..if s.put { 20 } else { 0 } {
        let req = Request::put(&format!("{base}{PUT_PATH}"), PUT_BODY)
            .header("Content-Type", "application/json")
            .build();
        let put_ok = s.put_ok;
        check("PUT", req, &move |r: &Response| match r.status() {
            200..=299 if put_ok => Ok(()),
            400..=599 if !put_ok => Ok(()), // refused, but answered: the connection goes on
            st => Err(format!("status {st}")),
        });
    }
    if s.files {
        for _ in 0..20 {
            check("94 KB GET", get("/big.txt"), &|r: &Response| {
                if r.status() == 200 && r.body() == big {
                    Ok(())
                } else {
                    Err(format!("status {}, {} of {} bytes", r.status(), r.body().len(), big.len()))
                }
            });
        }
        for _ in 0..if s.head { 5 } else { 0 } {
            let req = Request::builder(Method::HEAD, &format!("{base}/big.txt")).build();
            check("HEAD", req, &|r: &Response| {
                let len = r.header("content-length").and_then(|v| v.parse::<usize>().ok());
                if r.status() == 200 && r.body().is_empty() && len == Some(big.len()) {
                    Ok(())
                } else {
                    Err(format!(
                        "status {}, {} body bytes, Content-Length {len:?}",
                        r.status(),
                        r.body().len()
                    ))
                }
            });
        }
    }
    if s.chunked_path {
        for _ in 0..20 {
            check("chunked GET", get("/chunked"), &|r: &Response| {
                if r.status() == 200 && r.body() == b"{\"ioId\":25602,\"value\":1}" {
                    Ok(())
                } else {
                    Err(format!("status {}, body {:?}", r.status(), String::from_utf8_lossy(r.body())))
                }
            });
        }
    }
    if s.gzip {
        let want = STATE_BODY.repeat(40).len() as u32;
        for _ in 0..20 {
            let req = Request::get(&format!("{base}/state.json")).header("Accept-Encoding", "gzip").build();
            check("gzip (chunked) GET", req, &move |r: &Response| gzip_ok(r, want));
        }
    }
    if let Some(idle) = s.idle {
        // Around the idle timeout: well inside, just inside, at, just after, well after.
        let gaps = [0.75, 0.95, 1.0, 1.05, 1.5].map(|f: f64| idle.mul_f64(f));
        for i in 0..s.paced {
            thread::sleep(gaps[i % gaps.len()]); // the pacing under test, not a synchronisation
            check("GET paced around the idle timeout", get(STATE_PATH), &state_ok);
        }
    }
    if o.problems.len() >= GIVE_UP {
        o.problems.push(format!("gave up after {GIVE_UP} problems: the remaining commands were not sent"));
    }
    o.stats = Some(client.stats());
    o.gets_us = gets;
    o.trace = client.take_trace();
    if let Some(t) = &o.trace {
        o.tls = TlsSeen::of(t);
    }
    o
}

/// `b` with the run's CA as the only trust (feature `tls`).
#[cfg(feature = "tls")]
fn with_tls(b: ClientBuilder, ca: &[u8]) -> Result<ClientBuilder, String> {
    let tls = finwatch::TlsConfig::new().add_ca_pem(ca).map_err(|e| e.to_string())?;
    Ok(b.tls(tls))
}

#[cfg(not(feature = "tls"))]
fn with_tls(_: ClientBuilder, _: &[u8]) -> Result<ClientBuilder, String> {
    Err("the example was built without the `tls` feature".into())
}

fn p50(v: &mut [u64]) -> String {
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).map_or("–".into(), |x| x.to_string())
}

/// The incident's client, for the control: keeps one connection and writes each request on it
/// without looking, 30 ms apart (the device closes connections idle for 20 ms); a request that
/// gets no answer is lost, and the next one connects anew. Returns (sent, answered).
fn naive_pool(port: u16) -> (usize, usize) {
    use std::io::Write as _;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let request = format!("GET {STATE_PATH} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut stream: Option<TcpStream> = None;
    let (mut sent, mut answered) = (0, 0);
    for _ in 0..10 {
        sent += 1;
        let s = match stream.take() {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&addr, DEADLINE) {
                Ok(s) => s,
                Err(_) => continue,
            },
        };
        let _ = s.set_read_timeout(Some(DEADLINE));
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let ok = (&s).write_all(request.as_bytes()).is_ok()
            && loop {
                match (&s).read(&mut buf) {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                if got.ends_with(b"}") {
                    break true;
                }
            };
        if ok {
            answered += 1;
            stream = Some(s);
        }
        thread::sleep(Duration::from_millis(30)); // the pacing under test
    }
    (sent, answered)
}

/// A gzip body (chunked on the wire) whose trailer says it holds `want` bytes.
fn gzip_ok(r: &Response, want: u32) -> Result<(), String> {
    let b = r.body();
    let chunked = r.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let gz = r.header("content-encoding") == Some("gzip");
    if r.status() != 200 || !gz || !chunked || b.len() < 18 || b[..2] != [0x1f, 0x8b] {
        return Err(format!("status {}, gzip {gz}, chunked {chunked}, {} body bytes", r.status(), b.len()));
    }
    let isize = u32::from_le_bytes([b[b.len() - 4], b[b.len() - 3], b[b.len() - 2], b[b.len() - 1]]);
    if isize != want {
        return Err(format!("gzip trailer says {isize} bytes, the file has {want}"));
    }
    Ok(())
}

/// 94 KB of printable, line-broken, non-repeating text.
fn big_file() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    let mut out = Vec::with_capacity(96 * 1024);
    for i in 0..96_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(if i % 77 == 76 { b'\n' } else { b'a' + (x % 26) as u8 });
    }
    out
}

/// nginx; with `ssl` (certificate, key), an `ssl` server (TLS 1.2 and 1.3, session tickets and a
/// shared session cache), otherwise the same.
fn nginx(dir: &Path, www: &Path, ssl: Option<(&Path, &Path)>) -> Result<Server, String> {
    let bin = find("nginx")?;
    let port = free_port()?;
    let d = dir.join(if ssl.is_some() { "nginx-ssl" } else { "nginx" });
    let (listen, ssl) = match ssl {
        Some((cert, key)) => (
            " ssl",
            format!(
                "ssl_certificate {}; ssl_certificate_key {};\n\
                 ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets on; ssl_session_cache shared:interop:1m;\n",
                cert.display(),
                key.display()
            ),
        ),
        None => ("", String::new()),
    };
    fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    let conf = format!(
        "daemon off; master_process off; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{}}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
           uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           types {{ application/json json; text/plain txt; }}\n\
           keepalive_timeout 20ms; keepalive_requests 5;\n\
           gzip on; gzip_min_length 0; gzip_types *;\n\
           server {{\n\
             listen 127.0.0.1:{port}{listen}; root {www};\n\
             {ssl}\
             location /unico/v1/interface/ {{ dav_methods PUT; create_full_put_path on; }}\n\
           }}\n\
         }}\n",
        d = d.display(),
        www = www.display()
    );
    fs::write(d.join("nginx.conf"), conf).map_err(|e| e.to_string())?;
    let conf = d.join("nginx.conf");
    let proc =
        spawn(Command::new(&bin).arg("-p").arg(&d).arg("-e").arg(d.join("error.log")).arg("-c").arg(conf))?;
    wait_listening(port, &d.join("error.log"))?;
    let version = version(&bin, &["-v"]).trim_start_matches("nginx version: nginx/").to_string();
    let closes = "keep-alive; FIN after 20 ms idle; `Connection: close` on the 5th response";
    let name = if listen.is_empty() { "nginx" } else { "nginx `ssl`" };
    Ok(Server {
        idle: Some(Duration::from_millis(20)),
        paced: 40,
        put_ok: true,
        gzip: true,
        ..Server::new(name, version, closes, port, proc)
    })
}

fn apache(dir: &Path, www: &Path) -> Result<Server, String> {
    let bin = find("apache2")?;
    let port = free_port()?;
    let d = dir.join("apache");
    fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    // Debian's layout: modules in /usr/lib/apache2/modules (mpm and unixd as Debian builds them).
    let modules = "/usr/lib/apache2/modules";
    let types = if Path::new("/etc/mime.types").exists() { "/etc/mime.types" } else { "/dev/null" };
    let conf = format!(
        "ServerRoot \"{d}\"\nListen 127.0.0.1:{port}\nServerName localhost\n\
         LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
         LoadModule authz_core_module {modules}/mod_authz_core.so\n\
         LoadModule mime_module {modules}/mod_mime.so\n\
         TypesConfig {types}\nPidFile \"{d}/httpd.pid\"\nErrorLog \"{d}/error.log\"\n\
         DocumentRoot \"{www}\"\n<Directory \"{www}\">\n  Require all granted\n</Directory>\n\
         KeepAlive On\nKeepAliveTimeout 20ms\nMaxKeepAliveRequests 100\n",
        d = d.display(),
        www = www.display()
    );
    fs::write(d.join("httpd.conf"), conf).map_err(|e| e.to_string())?;
    // -X: one process in the foreground, so that killing it stops the server.
    let proc = spawn(Command::new(&bin).arg("-X").arg("-f").arg(d.join("httpd.conf")))?;
    wait_listening(port, &d.join("error.log"))?;
    let version = version(&bin, &["-v"]);
    let version =
        version.split('/').nth(1).and_then(|v| v.split_whitespace().next()).unwrap_or("").to_string();
    let closes =
        "keep-alive; `KeepAliveTimeout 20ms`, announced as `Keep-Alive: timeout=0`; FIN after 20 ms idle";
    Ok(Server {
        idle: Some(Duration::from_millis(20)),
        paced: 40,
        ..Server::new("Apache httpd", version, closes, port, proc)
    })
}

fn lighttpd(dir: &Path, www: &Path) -> Result<Server, String> {
    let bin = find("lighttpd")?;
    let port = free_port()?;
    let d = dir.join("lighttpd");
    fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    let conf = format!(
        "server.document-root = \"{www}\"\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\n\
         server.errorlog = \"{d}/error.log\"\nserver.max-keep-alive-idle = 1\n\
         server.max-keep-alive-requests = 5\n\
         mimetype.assign = (\".json\" => \"application/json\", \".txt\" => \"text/plain\")\n",
        www = www.display(),
        d = d.display()
    );
    fs::write(d.join("lighttpd.conf"), conf).map_err(|e| e.to_string())?;
    let proc = spawn(Command::new(&bin).arg("-D").arg("-f").arg(d.join("lighttpd.conf")))?;
    wait_listening(port, &d.join("error.log"))?;
    let version = version(&bin, &["-v"]);
    let version = version.split_whitespace().next().unwrap_or("").trim_start_matches("lighttpd/").to_string();
    let closes = "keep-alive; FIN after 1 s idle; `Connection: close` on the 5th response";
    Ok(Server {
        idle: Some(Duration::from_secs(1)),
        paced: 5,
        ..Server::new("lighttpd", version, closes, port, proc)
    })
}

fn busybox(www: &Path) -> Result<Server, String> {
    let bin = find("busybox")?;
    let port = free_port()?;
    let proc = spawn(
        Command::new(&bin).args(["httpd", "-f", "-p"]).arg(format!("127.0.0.1:{port}")).arg("-h").arg(www),
    )?;
    wait_listening(port, Path::new("(busybox httpd logs nothing)"))?;
    let version = version(&bin, &[]).split_whitespace().nth(1).unwrap_or("").to_string();
    let closes = "a connection per request (`Connection: close`)";
    Ok(Server::new("BusyBox httpd", version, closes, port, proc))
}

fn python_http_server(www: &Path) -> Result<Server, String> {
    let bin = find("python3")?;
    let port = free_port()?;
    let proc = spawn(
        Command::new(&bin)
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(www),
    )?;
    wait_listening(port, Path::new("(python3 -m http.server)"))?;
    let version = version(&bin, &["--version"]).trim_start_matches("Python ").to_string();
    Ok(Server::new("Python http.server", version, "HTTP/1.0: FIN after every response", port, proc))
}

/// A server whose program is `source`, written to `dir/file` and run by `bin` with the port
/// and `args`, once it listens; with the interpreter's own `--version`.
fn scripted(
    bin: PathBuf,
    dir: &Path,
    file: &str,
    source: &str,
    args: &[&str],
) -> Result<(u16, Proc, String), String> {
    let port = free_port()?;
    let script = dir.join(file);
    fs::write(&script, source).map_err(|e| e.to_string())?;
    let proc = spawn(Command::new(&bin).arg(&script).arg(port.to_string()).args(args))?;
    wait_listening(port, Path::new(file))?;
    Ok((port, proc, version(&bin, &["--version"])))
}

fn python_device(dir: &Path) -> Result<Server, String> {
    let (port, proc, version) = scripted(find("python3")?, dir, "device.py", PY_DEVICE, &["0.02"])?;
    let version = version.trim_start_matches("Python ").to_string();
    let closes = "HTTP/1.1 keep-alive; FIN after 20 ms idle, no header (the incident)";
    Ok(Server {
        idle: Some(Duration::from_millis(20)),
        paced: 40,
        put_ok: true,
        files: false,
        chunked_path: true,
        ..Server::new("Python device", version, closes, port, proc)
    })
}

fn node(dir: &Path) -> Result<Server, String> {
    let bin = find("node").or_else(|_| find("nodejs"))?;
    let (port, proc, version) = scripted(bin, dir, "server.js", NODE_SERVER, &[])?;
    let version = version.trim_start_matches('v').to_string();
    let closes = "keep-alive, `keepAliveTimeout` 20 ms announced as `Keep-Alive: timeout=0`";
    Ok(Server {
        idle: Some(Duration::from_secs(1)),
        paced: 5,
        put_ok: true,
        files: false,
        chunked_path: true,
        ..Server::new("Node.js http", version, closes, port, proc)
    })
}

/// The TLS servers (feature `tls`), with certificates made by this run.
#[cfg(feature = "tls")]
mod tls {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::{Server, find, free_port, nginx, spawn, version, wait_listening};

    /// nginx `ssl`, and `openssl s_server -WWW` in TLS 1.3 and in TLS 1.2.
    pub(super) fn servers(dir: &Path, www: &Path) -> Result<Vec<Server>, String> {
        let c = Certs::make(&dir.join("pki"))?;
        Ok(vec![
            Server { ca: Some(c.ca.clone()), ..nginx(dir, www, Some((&c.cert, &c.key)))? },
            s_server(&c, www, "-tls1_3", "openssl s_server -WWW -tls1_3")?,
            s_server(&c, www, "-tls1_2", "openssl s_server -WWW -tls1_2")?,
        ])
    }

    /// A CA and a server certificate it issued (subjectAltName IP:127.0.0.1, DNS:localhost),
    /// P-256 keys, valid for a day: made by the `openssl` command line in the run's directory,
    /// so no key is ever checked in.
    struct Certs {
        /// The CA certificate, PEM: the client's only trust.
        ca: Vec<u8>,
        cert: PathBuf,
        key: PathBuf,
    }

    impl Certs {
        fn make(d: &Path) -> Result<Certs, String> {
            let bin = find("openssl")?;
            fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            let ext = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                       extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n";
            fs::write(d.join("server.ext"), ext).map_err(|e| e.to_string())?;
            let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
            let steps: [&[&str]; 3] = [
                &[&["req", "-x509"][..], &key, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "1"]]
                    .concat(),
                &[&["req", "-new"][..], &key, &["-keyout", "server.key", "-out", "server.csr"]].concat(),
                &[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-extfile",
                    "server.ext",
                    "-out",
                    "server.pem",
                ],
            ];
            let subjects = [
                &[
                    "-subj",
                    "/CN=finwatch interop CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ][..],
                &["-subj", "/CN=localhost"],
                &[],
            ];
            for (args, more) in steps.iter().zip(subjects) {
                let out = Command::new(&bin)
                    .args(*args)
                    .args(more)
                    .current_dir(d)
                    .output()
                    .map_err(|e| format!("openssl: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "openssl {}: {}",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            let ca = fs::read(d.join("ca.pem")).map_err(|e| e.to_string())?;
            Ok(Certs { ca, cert: d.join("server.pem"), key: d.join("server.key") })
        }
    }

    /// `openssl s_server -WWW` serving `www`: reads a request's first line, answers `GET /file`
    /// with `HTTP/1.0 200 ok` and the file (no `Content-Length`), and closes: a device that
    /// closes after every response, over TLS. One connection at a time; no HEAD, no PUT.
    fn s_server(c: &Certs, www: &Path, protocol: &str, name: &'static str) -> Result<Server, String> {
        let bin = find("openssl")?;
        let port = free_port()?;
        let proc = spawn(
            Command::new(&bin)
                .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-WWW", protocol])
                .arg("-cert")
                .arg(&c.cert)
                .arg("-key")
                .arg(&c.key)
                .current_dir(www),
        )?;
        wait_listening(port, Path::new("(openssl s_server)"))?;
        let version = version(&bin, &["version"]).split_whitespace().nth(1).unwrap_or("").to_string();
        let closes = "`-WWW`: HTTP/1.0, closes after every response (one connection at a time)";
        Ok(Server {
            ca: Some(c.ca.clone()),
            put: false,
            head: false,
            ..Server::new(name, version, closes, port, proc)
        })
    }
}

/// `name` on the PATH, or in the sbin directories a non-root PATH lacks.
fn find(name: &str) -> Result<PathBuf, String> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} not found: interop/run.sh installs it"))
}

fn spawn(cmd: &mut Command) -> Result<Proc, String> {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.spawn().map(Proc).map_err(|e| format!("{what}: {e}"))
}

/// The first line a `--version`-like invocation prints (on stdout or stderr).
fn version(bin: &Path, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

/// A loopback port nothing listens on now (the OS's choice; the server binds it next).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Polls until something accepts on `port`, within [`DEADLINE`].
fn wait_listening(port: u16, log: &Path) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let detail = fs::read_to_string(log).unwrap_or_else(|_| log.display().to_string());
    Err(format!("nothing listens on port {port} after {DEADLINE:?}: {}", detail.trim()))
}

/// Removes the run's temporary directory when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        if env::var_os("INTEROP_KEEP").is_some() {
            eprintln!(
                "interop: kept {} (the capture, the servers' configuration and logs)",
                self.0.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// `tcpdump` writing the servers' loopback traffic to a file.
struct Capture {
    proc: Proc,
    file: PathBuf,
    ports: Vec<u16>,
    /// The ports of those that speak TLS.
    tls: Vec<u16>,
    /// A port nothing listens on, also captured: a connection attempt to it marks the end.
    marker: u16,
}

impl Capture {
    fn start(dir: &Path, ports: &[u16], tls: &[u16]) -> Result<Capture, String> {
        let bin = find("tcpdump")?;
        let file = dir.join("wire.pcap");
        let marker = free_port()?;
        let filter =
            ports.iter().chain([&marker]).map(|p| format!("port {p}")).collect::<Vec<_>>().join(" or ");
        let mut child = Command::new(&bin)
            .args(["-i", "lo", "-U", "-n", "-s", "128", "-w"])
            .arg(&file)
            .arg(format!("tcp and ({filter})"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tcpdump: {e}"))?;
        // Capturing once it says it listens; its first words otherwise say why not.
        let stderr = child.stderr.take().ok_or("tcpdump: no stderr")?;
        let proc = Proc(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            let _ = tx.send(first);
            for _ in lines {} // keep draining until tcpdump exits
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(line) if line.contains("listening on") => {
                Ok(Capture { proc, file, ports: ports.to_vec(), tls: tls.to_vec(), marker })
            }
            Ok(line) => Err(format!("tcpdump: {line}")),
            Err(_) => Err("tcpdump said nothing".into()),
        }
    }

    /// Stops the capture and reads it. tcpdump lags behind the kernel and stops reading at
    /// SIGINT, so it is stopped only once it has written the marker: a connection attempt (SYN,
    /// RST) to the marker port, made after the last command.
    fn finish(mut self) -> Result<Vec<(u16, Wire)>, String> {
        let _ = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.marker)));
        let until = Instant::now() + DEADLINE;
        loop {
            let bytes = fs::read(&self.file).map_err(|e| e.to_string())?;
            if pcap::analyse(&bytes, &[self.marker], &[])
                .is_ok_and(|w| w.iter().any(|(_, w)| w.connections > 0))
            {
                break;
            }
            if Instant::now() >= until {
                return Err("tcpdump did not write the end marker: the capture is incomplete".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
        let pid = self.proc.0.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let until = Instant::now() + DEADLINE;
        while self.proc.0.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() >= until {
                return Err("tcpdump did not stop".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
        let mut bytes = Vec::new();
        fs::File::open(&self.file).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| e.to_string())?;
        pcap::analyse(&bytes, &self.ports, &self.tls)
    }
}

/// Just enough of the pcap format (and Ethernet, IPv4/IPv6, TCP) to follow connections.
mod pcap {
    use std::collections::HashMap;

    use super::Wire;

    struct Conn {
        fin_at: Option<u64>,
    }

    /// The largest alert record: TLS 1.2 AES-GCM (8-byte explicit nonce, 2-byte alert, 16-byte
    /// tag); TLS 1.3 wraps an alert as application data of 2 + 1 (inner type) + 16 (tag) bytes,
    /// and rustls pads nothing. A request's record is at least its request line and `Host`
    /// header (over 40 bytes for the shortest finwatch writes) plus the same overhead.
    const ALERT_MAX: usize = 8 + 2 + 16;

    /// Whether a client segment of `len` payload bytes, of which `head` were captured, is one
    /// TLS alert record and nothing else: its header (type 21 alert, or 23 application data as
    /// TLS 1.3 sends alerts, version 3.x) gives a length of at most [`ALERT_MAX`] that is the
    /// whole rest of the segment. After the server's FIN that is the client's `close_notify`
    /// (sent in answer to the server's, or on its own close before it read the FIN): not a
    /// request. The decision is by the record header, not by timing: a request and an alert
    /// cannot be confused however late they come, and anything else (a larger record, two
    /// records, a segment that does not start with a record header) counts as request bytes.
    pub(super) fn alert_only(len: usize, head: &[u8]) -> bool {
        match head {
            [t, 3, _, hi, lo, ..] if *t == 21 || *t == 23 => {
                let rec = u16::from_be_bytes([*hi, *lo]) as usize;
                rec <= ALERT_MAX && len == 5 + rec
            }
            _ => false,
        }
    }

    /// Follows every connection to `ports` in the capture `b`; on `tls` ports (a subset), a
    /// client's lone alert record after the server's FIN is not a request ([`alert_only`]).
    pub(super) fn analyse(b: &[u8], ports: &[u16], tls: &[u16]) -> Result<Vec<(u16, Wire)>, String> {
        if b.len() < 24 {
            return Err("capture file too short".into());
        }
        let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let (le, nanos) = match magic {
            0xa1b2_c3d4 => (true, false),
            0xa1b2_3c4d => (true, true),
            0xd4c3_b2a1 => (false, false),
            0x4d3c_b2a1 => (false, true),
            m => return Err(format!("not a pcap file (magic {m:#x})")),
        };
        let u32_at = |o: usize| {
            let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
            if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
        };
        let link = u32_at(20);
        let mut wires: HashMap<u16, Wire> = ports.iter().map(|&p| (p, Wire::default())).collect();
        let mut conns: HashMap<(u16, u16), Conn> = HashMap::new();
        let mut o = 24;
        while o + 16 <= b.len() {
            let (sec, frac, caplen) = (u32_at(o) as u64, u32_at(o + 4) as u64, u32_at(o + 8) as usize);
            let t_us = sec * 1_000_000 + if nanos { frac / 1000 } else { frac };
            // A record still being written ends the file for now.
            let Some(pkt) = b.get(o + 16..o + 16 + caplen) else { break };
            o += 16 + caplen;
            let Some(tcp) = tcp_of(pkt, link) else { continue };
            let (src, dst, flags, payload, head) = tcp;
            let (server, client, from_server) = if wires.contains_key(&src) {
                (src, dst, true)
            } else if wires.contains_key(&dst) {
                (dst, src, false)
            } else {
                continue;
            };
            let w = wires.get_mut(&server).expect("a server port");
            const FIN: u8 = 0x01;
            const SYN: u8 = 0x02;
            const RST: u8 = 0x04;
            const ACK: u8 = 0x10;
            if !from_server && flags & SYN != 0 && flags & ACK == 0 {
                w.connections += 1;
                conns.insert((server, client), Conn { fin_at: None });
                continue;
            }
            let c = conns.entry((server, client)).or_insert(Conn { fin_at: None });
            if from_server && flags & FIN != 0 && c.fin_at.is_none() {
                w.server_fins += 1;
                c.fin_at = Some(t_us);
            }
            if from_server && flags & RST != 0 {
                w.server_resets += 1;
            }
            if from_server || payload == 0 {
                continue;
            }
            if tls.contains(&server) {
                if alert_only(payload, head) {
                    if c.fin_at.is_some() {
                        w.alerts_after_fin += 1;
                    }
                    continue;
                }
                // The handshake's records (type 22, and 20 in TLS 1.2) are no requests; after
                // the FIN they still count, below, as bytes the client should not have sent.
                if head.first() == Some(&23) {
                    w.requests += 1;
                }
            } else {
                w.requests += 1;
            }
            if let Some(fin) = c.fin_at {
                w.after_fin.push((client, t_us.saturating_sub(fin)));
            }
        }
        let mut v: Vec<_> = wires.into_iter().collect();
        v.sort_by_key(|(p, _)| *p);
        Ok(v)
    }

    /// (source port, destination port, flags, payload length, the payload's captured start) of
    /// a TCP segment.
    fn tcp_of(p: &[u8], link: u32) -> Option<(u16, u16, u8, usize, &[u8])> {
        let ip = match link {
            1 if p.len() >= 14 => match u16::from_be_bytes([p[12], p[13]]) {
                0x0800 | 0x86dd => &p[14..],
                _ => return None,
            },
            113 if p.len() >= 16 => &p[16..], // Linux cooked capture
            _ => return None,
        };
        let (tcp, len) = match ip.first()? >> 4 {
            4 => {
                let ihl = (ip[0] & 0x0f) as usize * 4;
                if ip.len() < ihl || ip[9] != 6 {
                    return None;
                }
                let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
                (&ip[ihl..], total.checked_sub(ihl)?)
            }
            6 => {
                if ip.len() < 40 || ip[6] != 6 {
                    return None;
                }
                (&ip[40..], u16::from_be_bytes([ip[4], ip[5]]) as usize)
            }
            _ => return None,
        };
        if tcp.len() < 14 {
            return None;
        }
        let off = (tcp[12] >> 4) as usize * 4;
        let payload = len.checked_sub(off)?;
        let head = tcp.get(off..).unwrap_or_default();
        Some((
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
            tcp[13],
            payload,
            &head[..head.len().min(payload)],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::pcap;

    const SERVER: u16 = 8080;
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;

    /// A little-endian microsecond pcap with Ethernet frames of IPv4/TCP segments:
    /// (µs, source port, destination port, flags, payload length).
    fn capture(packets: &[(u32, u16, u16, u8, usize)]) -> Vec<u8> {
        let x: Vec<_> = packets.iter().map(|&(t, s, d, f, n)| (t, s, d, f, vec![b'x'; n])).collect();
        capture_bytes(&x)
    }

    /// [`capture`] with the payloads given.
    fn capture_bytes(packets: &[(u32, u16, u16, u8, Vec<u8>)]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for (t, src, dst, flags, bytes) in packets {
            let (t, src, dst, flags, payload) = (*t, *src, *dst, *flags, bytes.len());
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + 20 + payload) as u16;
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1];
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            frame.extend_from_slice(&ip);
            let mut tcp = vec![0u8; 20];
            tcp[0..2].copy_from_slice(&src.to_be_bytes());
            tcp[2..4].copy_from_slice(&dst.to_be_bytes());
            tcp[12] = 5 << 4;
            tcp[13] = flags;
            frame.extend_from_slice(&tcp);
            frame.extend_from_slice(bytes);
            for v in [t / 1_000_000, t % 1_000_000, frame.len() as u32, frame.len() as u32] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&frame);
        }
        b
    }

    #[test]
    fn a_request_after_the_servers_fin_is_found_with_its_delay() {
        let c = 40_000; // the client's port
        let wire = capture(&[
            (0, c, SERVER, SYN, 0),
            (10, SERVER, c, SYN | ACK, 0),
            (20, c, SERVER, ACK | 0x08, 30), // request
            (50, SERVER, c, ACK | 0x08, 60), // response
            (1_000, SERVER, c, FIN | ACK, 0),
            (1_100, c, SERVER, ACK | 0x08, 30), // the incident: a request 100 µs after the FIN
            (1_150, SERVER, c, RST, 0),
            (2_000, 40_001, 9999, SYN, 0), // another port: not ours
        ]);
        let w = pcap::analyse(&wire, &[SERVER], &[]).unwrap();
        assert_eq!(w.len(), 1);
        let (port, w) = &w[0];
        assert_eq!(*port, SERVER);
        assert_eq!((w.connections, w.server_fins, w.server_resets), (1, 1, 1));
        assert_eq!(w.after_fin, vec![(c, 100)]);
    }

    #[test]
    fn requests_before_the_fin_and_acks_after_it_are_not_counted() {
        let c = 40_002;
        let wire = capture(&[
            (0, c, SERVER, SYN, 0),
            (20, c, SERVER, ACK | 0x08, 30),
            (50, SERVER, c, ACK | 0x08, 60),
            (1_000, SERVER, c, FIN | ACK, 0),
            (1_010, c, SERVER, ACK, 0),       // the ACK of the FIN
            (1_020, c, SERVER, FIN | ACK, 0), // the client closes too
        ]);
        let w = pcap::analyse(&wire, &[SERVER], &[]).unwrap();
        assert!(w[0].1.after_fin.is_empty());
        // A record cut short at the end of the file (tcpdump still writing) ends the read.
        let mut cut = wire.clone();
        cut.truncate(wire.len() - 5);
        assert_eq!(pcap::analyse(&cut, &[SERVER], &[]).unwrap()[0].1.connections, 1);
        assert!(pcap::analyse(b"not a pcap file, long enough", &[SERVER], &[]).is_err());
    }

    /// A TLS record of `len` bytes of content, header included.
    fn record(kind: u8, len: usize) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(0xa5, len));
        r
    }

    #[test]
    fn over_tls_a_lone_alert_after_the_fin_is_a_close_notify_and_anything_larger_a_request() {
        let c = 40_010;
        let data = 0x17; // application data: TLS 1.3's alerts too
        let alert = 0x15;
        let p = |t, src, dst, flags, bytes| (t, src, dst, flags, bytes);
        let wire = capture_bytes(&[
            p(0, c, SERVER, SYN, vec![]),
            p(10, c, SERVER, ACK | 0x08, record(0x16, 500)), // ClientHello: no request
            p(20, c, SERVER, ACK | 0x08, record(data, 19)),  // a close_notify before any FIN
            p(30, c, SERVER, ACK | 0x08, record(data, 120)), // a request
            p(40, SERVER, c, ACK | 0x08, record(data, 90)),
            p(1_000, SERVER, c, FIN | ACK, vec![]),
            p(1_100, c, SERVER, ACK | 0x08, record(data, 19)), // TLS 1.3 close_notify: 24 bytes
            p(1_200, c, SERVER, ACK | 0x08, record(alert, 26)), // TLS 1.2 AES-GCM alert: 31
            p(1_300, c, SERVER, FIN | ACK, vec![]),
        ]);
        let w = &pcap::analyse(&wire, &[SERVER], &[SERVER]).unwrap()[0].1;
        assert_eq!((w.requests, w.alerts_after_fin), (1, 2));
        assert!(w.after_fin.is_empty());

        // After the FIN: a request's record, an alert-sized record followed by more, a record
        // one byte over the largest alert, and a segment not starting with a record header.
        let mut two = record(data, 19);
        two.extend(record(data, 100));
        let mut headless = vec![0u8; 24];
        headless[..5].copy_from_slice(&[0x41, 0x42, 0x43, 0x44, 0x45]);
        for (i, bytes) in [record(data, 100), two, record(data, 27), headless].into_iter().enumerate() {
            let wire = capture_bytes(&[
                p(0, c, SERVER, SYN, vec![]),
                p(1_000, SERVER, c, FIN | ACK, vec![]),
                p(1_050, c, SERVER, ACK | 0x08, bytes),
            ]);
            let w = &pcap::analyse(&wire, &[SERVER], &[SERVER]).unwrap()[0].1;
            assert_eq!(w.after_fin, vec![(c, 50)], "case {i}");
            assert_eq!(w.alerts_after_fin, 0, "case {i}");
        }

        // On a plain port the same 24 bytes after the FIN are request bytes.
        let wire = capture_bytes(&[
            p(0, c, SERVER, SYN, vec![]),
            p(1_000, SERVER, c, FIN | ACK, vec![]),
            p(1_050, c, SERVER, ACK | 0x08, record(data, 19)),
        ]);
        let w = &pcap::analyse(&wire, &[SERVER], &[]).unwrap()[0].1;
        assert_eq!((w.after_fin.len(), w.alerts_after_fin, w.requests), (1, 0, 1));
    }
}
