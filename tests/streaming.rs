//! Streamed bodies (issue 17): a request body from a reader (`Client::send_streaming`) and a
//! response body into a writer (`Client::send_to`), for firmware-sized transfers, with the
//! promises of every request: typed failures, no silent re-send, bounded memory, deadlines.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use finwatch::{Client, Error, Request, Stage};
use support::*;

const MIB: usize = 1 << 20;
/// The engine's buffer for a streamed request body.
const BUFFER: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Live heap bytes of the threads that switched tracking on (the test's, which runs the client):
// the devices' threads and other tests do not count.

struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    if TRACKING.with(Cell::get) {
        let live = LIVE.with(|l| {
            l.set(l.get() + delta);
            l.get()
        });
        PEAK.with(|p| p.set(p.get().max(live)));
    }
}

// SAFETY: forwards to the system allocator unchanged; the counters are const-initialised
// thread-locals without destructors, so touching them never allocates.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// The most heap `f` held at once beyond what was live when it started, on this thread.
fn peak_heap(f: impl FnOnce()) -> isize {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    f();
    TRACKING.with(|t| t.set(false));
    PEAK.with(Cell::get)
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// FNV-1a over bytes, continued from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}
const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

fn pattern_hash(len: u64) -> u64 {
    let mut h = FNV0;
    for i in 0..len {
        h = (h ^ pattern(i) as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Gives the pattern for `len` bytes, then fails or ends as told; counts what it gave and
/// checks that no read asks for more than the engine's buffer.
struct PatternReader {
    pos: u64,
    len: u64,
    fail_at: Option<u64>,
    given: Arc<AtomicU64>,
    largest_read: Arc<AtomicUsize>,
}

impl PatternReader {
    fn new(len: u64) -> PatternReader {
        PatternReader { pos: 0, len, fail_at: None, given: Arc::default(), largest_read: Arc::default() }
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.largest_read.fetch_max(buf.len(), Ordering::Relaxed);
        if self.fail_at.is_some_and(|at| self.pos >= at) {
            return Err(io::Error::other("the flash went away"));
        }
        let end = self.len.min(self.pos + buf.len() as u64);
        let end = self.fail_at.map_or(end, |at| end.min(at));
        let n = (end - self.pos) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(self.pos + k as u64);
        }
        self.pos = end;
        self.given.store(self.pos, Ordering::Relaxed);
        Ok(n)
    }
}

/// A sink that hashes and counts, and fails after `fail_after` bytes if told.
struct HashSink {
    hash: u64,
    len: u64,
    fail_after: Option<u64>,
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.fail_after.is_some_and(|at| self.len >= at) {
            return Err(io::Error::other("disk full"));
        }
        self.hash = fnv(self.hash, buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn client(timeout: Duration) -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    Client::builder().request_timeout(timeout).build().unwrap()
}

/// A device that answers every request with `200` and the FNV hash of its body, in decimal.
fn hashing_device() -> DeviceServer {
    DeviceServer::start(|req| Reply::ok(fnv(FNV0, &req.body).to_string().as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Request bodies from a reader

#[test]
fn a_16_mib_upload_arrives_exact() {
    let device = hashing_device();
    let mut client = client(Duration::from_secs(30));
    let len = 16 * MIB as u64;
    let reader = PatternReader::new(len);
    let largest = Arc::clone(&reader.largest_read);
    let req = Request::put(&device.url("/firmware"), "").header("Content-Length", "0").build().unwrap();
    let resp = client.send_streaming(req, reader, len).unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body(), pattern_hash(len).to_string().as_bytes());
    let got = &device.requests()[0];
    assert_eq!(got.header("Content-Length"), Some(&*len.to_string()), "the caller's Content-Length replaced");
    assert_eq!(got.body.len() as u64, len);
    assert!(largest.load(Ordering::Relaxed) <= BUFFER, "a read asked for more than one buffer");
    // The connection is reused afterwards.
    assert_eq!(client.get(&device.url("/state")).unwrap().status(), 200);
    assert_eq!(client.stats().connects, 1);
}

#[test]
fn an_empty_streamed_body_and_the_refusals() {
    let device = hashing_device();
    let mut client = client(Duration::from_secs(5));
    let req = Request::post(&device.url("/x"), "").build().unwrap();
    let resp = client.send_streaming(req, io::empty(), 0).unwrap();
    assert_eq!(resp.body(), FNV0.to_string().as_bytes());
    assert_eq!(device.requests()[0].header("Content-Length"), Some("0"));

    let own_body = Request::post(&device.url("/x"), "abc").build().unwrap();
    let err = client.send_streaming(own_body, io::empty(), 0).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    let digest = Request::put(&device.url("/x"), "").digest_auth("u", "p").build().unwrap();
    let err = client.send_streaming(digest, io::empty(), 0).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    let digest = Request::get(&device.url("/x")).digest_auth("u", "p").build().unwrap();
    let err = client.send_to(digest, Vec::new()).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    assert_eq!(device.request_count(), 1, "a refused request was sent");
}

/// The device reads and counts; the client's heap never holds more than about one buffer of
/// the body, whatever its length.
#[test]
fn a_64_mib_upload_holds_one_buffer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&received);
    let device = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 32 * 1024];
        let mut head = Vec::new();
        let mut hash = FNV0;
        let mut body = 0u64;
        let mut len = None;
        loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed early");
            let mut data = &buf[..n];
            if len.is_none() {
                head.extend_from_slice(data);
                let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                let cl = text.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap();
                len = Some(cl.trim().parse::<u64>().unwrap());
                hash = fnv(hash, &head[end + 4..]);
                body = (head.len() - end - 4) as u64;
                data = &[];
            }
            hash = fnv(hash, data);
            body += data.len() as u64;
            seen.store(body, Ordering::Relaxed);
            if Some(body) == len {
                break;
            }
        }
        let answer = hash.to_string();
        write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len()).unwrap();
        // Until the client is done.
        let _ = s.read(&mut buf);
    });
    let mut client = client(Duration::from_secs(60));
    let url = format!("http://{addr}/firmware");
    let len = 64 * MIB as u64;
    let reader = PatternReader::new(len);
    let given = Arc::clone(&reader.given);
    let req = Request::put(&url, "").build().unwrap();
    let mut result = None;
    let peak = peak_heap(|| result = Some(client.send_streaming(req, reader, len)));
    let resp = result.unwrap().unwrap();
    assert_eq!(resp.body(), pattern_hash(len).to_string().as_bytes());
    assert_eq!((given.load(Ordering::Relaxed), received.load(Ordering::Relaxed)), (len, len));
    // One buffer of the body (64 KiB), and what a first request costs (its connection).
    assert!(peak < 2 * BUFFER as isize, "the client held {peak} bytes at once for a 64 MiB body");
    drop(client);
    device.join().unwrap();
}

#[test]
fn a_failing_reader_fails_typed_closes_the_connection_and_the_client_goes_on() {
    let device = hashing_device();
    let mut client = client(Duration::from_secs(10));
    // A connection that has carried a request: even a retryable one is not sent again.
    assert_eq!(client.get(&device.url("/state")).unwrap().status(), 200);
    let mut reader = PatternReader::new(8 * MIB as u64);
    reader.fail_at = Some(MIB as u64 + 100);
    let given = Arc::clone(&reader.given);
    let req = Request::put(&device.url("/firmware"), "").retryable(true).build().unwrap();
    let started = Instant::now();
    let err = client.send_streaming(req, reader, 8 * MIB as u64).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match &err {
        Error::BodyStream { stage: Stage::SendingBody, source } => {
            assert_eq!(source.to_string(), "the flash went away")
        }
        other => panic!("expected a body stream error, got {other:?}"),
    }
    assert!(err.may_have_been_processed());
    assert_eq!(err.kind(), "body_stream");
    assert!(err.to_string().contains("reader of the request body failed"), "{err}");
    assert_eq!(given.load(Ordering::Relaxed), MIB as u64 + 100);
    assert!(client.connections().is_empty(), "the connection was kept: {:?}", client.connections());
    assert_eq!(client.stats().retries, 0);
    // Usable afterwards, on a new connection.
    assert_eq!(client.get(&device.url("/state")).unwrap().status(), 200);
    assert_eq!(client.stats().connects, 2);
    // The device never got a whole PUT.
    assert_eq!(device.count_matching(|r| r.method == "PUT"), 0);
}

#[test]
fn a_reader_that_ends_early_is_an_error_not_a_hang() {
    let device = hashing_device();
    let mut client = client(Duration::from_secs(10));
    let reader = PatternReader::new(100_000);
    let req = Request::post(&device.url("/firmware"), "").build().unwrap();
    let started = Instant::now();
    let err = client.send_streaming(req, reader, MIB as u64).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match &err {
        Error::BodyStream { stage: Stage::SendingBody, source } => {
            assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof);
            assert!(source.to_string().contains("100000 of 1048576"), "{source}");
        }
        other => panic!("expected a body stream error, got {other:?}"),
    }
    assert!(err.may_have_been_processed());
    assert!(client.connections().is_empty());
    assert_eq!(client.get(&device.url("/state")).unwrap().status(), 200);
}

/// The device reads the head and ~96 KiB, answers `413` and closes with the rest unread (as
/// tests/early_answer.rs does for bodies in memory): the answer is the outcome.
#[test]
fn an_early_413_while_uploading_is_the_answer() {
    let cut = CutRequest {
        after_requests: 0,
        once: false,
        after_bytes: 96 << 10,
        respond: b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        then: Cut::Close,
    };
    let device =
        DeviceServer::with_options(ServerOptions { cut_request: Some(cut), ..Default::default() }, seq_reply);
    let mut client = client(Duration::from_secs(10));
    for i in 0..5 {
        let reader = PatternReader::new(16 * MIB as u64);
        let given = Arc::clone(&reader.given);
        let req = Request::post(&device.url(&format!("/firmware/{i}")), "").build().unwrap();
        let resp = client.send_streaming(req, reader, 16 * MIB as u64).unwrap();
        assert_eq!(resp.status(), 413, "upload {i}");
        assert!(given.load(Ordering::Relaxed) < 16 * MIB as u64, "the whole body was read anyway");
    }
    assert_eq!(client.stats().retries, 0);
    assert_eq!(device.requests_cut_after_reading(), 5, "an upload was sent twice");
}

/// Lost after its body began, on a reused connection, for a request that may be retried: the
/// body cannot be read again, so it fails, typed; never re-sent.
#[test]
fn a_streamed_body_is_never_sent_again() {
    let cut =
        CutRequest { after_requests: 1, once: true, after_bytes: 200 << 10, respond: b"", then: Cut::Rst };
    let device =
        DeviceServer::with_options(ServerOptions { cut_request: Some(cut), ..Default::default() }, seq_reply);
    let mut client = client(Duration::from_secs(10));
    assert_eq!(client.get(&device.url("/state")).unwrap().status(), 200);
    let reader = PatternReader::new(8 * MIB as u64);
    let req = Request::put(&device.url("/firmware"), "").build().unwrap();
    let err = client.send_streaming(req, reader, 8 * MIB as u64).unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { stage: Stage::SendingBody, .. }), "{err:?}");
    assert!(err.may_have_been_processed());
    assert_eq!(client.stats().retries, 0);
    assert_eq!(client.get(&device.url("/state")).unwrap().status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Response bodies into a writer

fn content_length_reply(body: &[u8]) -> Reply {
    Reply::raw(content_length_response(body))
}

fn chunked_reply(body: &[u8]) -> Reply {
    Reply::raw(chunked_response(body))
}

#[test]
fn a_16_mib_download_into_a_vec_arrives_exact() {
    let body = Arc::new(pattern_bytes(16 * MIB));
    let served = Arc::clone(&body);
    let device = DeviceServer::start(move |req| match req.target.as_str() {
        "/cl" => content_length_reply(&served),
        "/chunked" => chunked_reply(&served),
        _ => Reply::ok(b"{}"),
    });
    // Far above the default 8 MiB and this client's 1 KiB limit: the sink is not limited.
    let limits = finwatch::Limits { max_body_bytes: 1024, ..Default::default() };
    let mut client =
        Client::builder().request_timeout(Duration::from_secs(30)).limits(limits).build().unwrap();
    for path in ["/cl", "/chunked"] {
        let req = Request::get(&device.url(path)).build().unwrap();
        let (resp, got) = client.send_to(req, Vec::new()).unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.body().is_empty(), "{path}: the body was kept in the response too");
        assert!(got == *body, "{path}: {} bytes, not the body sent", got.len());
    }
    assert_eq!(client.stats().connects, 1, "the connection was not reused");
    // The limit still holds for a response kept in memory.
    let err = client.get(&device.url("/cl")).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
}

#[test]
fn a_close_delimited_download_into_a_writer() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let device = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        read_head(&mut s);
        s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n").unwrap();
        s.write_all(&pattern_bytes(3 * MIB)).unwrap();
    });
    let mut client = client(Duration::from_secs(10));
    let req = Request::get(&format!("http://{addr}/log")).build().unwrap();
    let (resp, got) = client.send_to(req, Vec::new()).unwrap();
    assert_eq!(resp.status(), 200);
    assert!(got == pattern_bytes(3 * MIB));
    device.join().unwrap();
}

fn read_head(s: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
}

/// The device sends 64 MiB; the client's heap never holds more than a read's worth of it.
#[test]
fn a_64_mib_download_holds_one_read() {
    const LEN: usize = 64 * MIB;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let device = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        read_head(&mut s);
        write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").unwrap();
        let mut buf = [0u8; 16 * 1024];
        let mut at = 0u64;
        while at < LEN as u64 {
            for (k, b) in buf.iter_mut().enumerate() {
                *b = pattern(at + k as u64);
            }
            s.write_all(&buf).unwrap();
            at += buf.len() as u64;
        }
        let mut rest = [0u8; 1];
        let _ = s.read(&mut rest);
    });
    let mut client = client(Duration::from_secs(60));
    let req = Request::get(&format!("http://{addr}/firmware")).build().unwrap();
    let mut result = None;
    let sink = HashSink { hash: FNV0, len: 0, fail_after: None };
    let peak = peak_heap(|| result = Some(client.send_to(req, sink)));
    let (resp, sink) = result.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!((sink.len, sink.hash), (LEN as u64, pattern_hash(LEN as u64)));
    // What one read delivered (at most 64 KiB), and what a first request costs (its connection,
    // its response's head).
    assert!(peak < 4 * BUFFER as isize, "the client held {peak} bytes at once for a 64 MiB body");
    drop(client);
    device.join().unwrap();
}

#[test]
fn a_failing_sink_fails_typed_closes_the_connection_and_the_client_goes_on() {
    let body = Arc::new(pattern_bytes(8 * MIB));
    let served = Arc::clone(&body);
    let device = DeviceServer::start(move |req| match req.target.as_str() {
        "/big" => content_length_reply(&served),
        _ => Reply::ok(b"{}"),
    });
    let mut client = client(Duration::from_secs(10));
    assert_eq!(client.get(&device.url("/state")).unwrap().status(), 200);
    let sink = HashSink { hash: FNV0, len: 0, fail_after: Some(MIB as u64) };
    let req = Request::get(&device.url("/big")).build().unwrap();
    let started = Instant::now();
    let err = client.send_to(req, sink).map(|(r, _)| r).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match &err {
        Error::BodyStream { stage: Stage::ReadingResponse, source } => {
            assert_eq!(source.to_string(), "disk full")
        }
        other => panic!("expected a body stream error, got {other:?}"),
    }
    assert!(err.may_have_been_processed());
    assert!(err.to_string().contains("writer of the response body failed"), "{err}");
    assert!(client.connections().is_empty(), "the connection was kept: {:?}", client.connections());
    assert_eq!(client.stats().retries, 0);
    assert_eq!(device.count_matching(|r| r.target == "/big"), 1, "sent again");
    assert_eq!(client.get(&device.url("/state")).unwrap().status(), 200);
}

#[test]
fn a_stalled_transfer_ends_at_its_deadline() {
    let device = DeviceServer::start(|req| match req.target.as_str() {
        "/stall" => {
            Reply::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nabc".to_vec()).then(After::Stall)
        }
        _ => Reply::ok(b"{}"),
    });
    let mut client = client(Duration::from_secs(10));
    let req = Request::get(&device.url("/stall")).timeout(Duration::from_millis(300)).build().unwrap();
    let started = Instant::now();
    let err = client.send_to(req, Vec::new()).map(|(r, _)| r).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, Error::DeadlineExceeded { stage: Stage::ReadingResponse }), "{err:?}");
    assert_eq!(client.get(&device.url("/state")).unwrap().status(), 200);
}

/// The non-blocking forms: a host loop uploads to one device and downloads from another while
/// it keeps commanding a third, all through `poll`; every transfer exact, every command answered.
#[test]
fn submit_streaming_and_submit_to_run_beside_other_commands_in_one_loop() {
    let device = hashing_device();
    let body = Arc::new(pattern_bytes(4 * MIB));
    let served = Arc::clone(&body);
    let downloads = DeviceServer::start(move |_| content_length_reply(&served));
    let other = DeviceServer::keep_alive();
    let mut client = client(Duration::from_secs(30));
    let len = 4 * MIB as u64;
    let put = Request::put(&device.url("/firmware"), "").build().unwrap();
    let up = client.submit_streaming(put, PatternReader::new(len), len).unwrap();
    let (down, sink) =
        client.submit_to(Request::get(&downloads.url("/log")).build().unwrap(), Vec::new()).unwrap();
    let (mut done, mut commands, mut answered) = (Vec::new(), 0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done && answered == commands) {
        assert!(Instant::now() < deadline, "not done: up {up_done}, down {down_done}, {answered}/{commands}");
        if commands < 50 && commands == answered {
            client.submit(Request::get(&other.url("/io")).build().unwrap());
            commands += 1;
        }
        client.poll(Some(Duration::from_millis(5)), &mut done).unwrap();
        for c in done.drain(..) {
            let resp = c.result.unwrap();
            if c.id == up {
                assert_eq!(resp.body(), pattern_hash(len).to_string().as_bytes());
                up_done = true;
            } else if c.id == down {
                assert!(resp.body().is_empty());
                down_done = true;
            } else {
                assert_eq!(resp.status(), 200);
                answered += 1;
            }
        }
    }
    assert!(sink.take().unwrap() == *body, "the download arrived altered");
    assert!(commands >= 2, "the other device's commands did not run beside the transfers");
    // Refused at once, as the blocking forms refuse.
    let with_body = Request::put(&device.url("/x"), "1").build().unwrap();
    assert!(matches!(client.submit_streaming(with_body, io::empty(), 0), Err(Error::InvalidRequest { .. })));
}
