//! Proves the simulated device server in `support` behaves as documented,
//! using plain `std::net::TcpStream` clients (no finwatch involved).

mod support;

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

const TIMEOUT: Duration = Duration::from_secs(2);

/// A minimal blocking HTTP/1.1 client; every I/O call times out.
struct Client {
    stream: TcpStream,
    /// Received bytes not yet consumed (pipelined responses).
    buf: Vec<u8>,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        let mut it = self.headers.iter();
        it.find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn connect(server: &DeviceServer) -> Client {
        let stream = TcpStream::connect(server.addr()).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Client { stream, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn get(&mut self, path: &str) {
        self.send(get(path).as_bytes());
    }

    /// Reads one response; `head` means it answers a HEAD request (no body).
    fn response(&mut self, head: bool) -> Response {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = resp.parse(&self.buf).unwrap() {
                let headers: Vec<(String, String)> = (resp.headers.iter())
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into()))
                    .collect();
                let status = resp.code.unwrap();
                let response = Response { status, headers, body: Vec::new() };
                let body_len = match response.header("content-length") {
                    Some(_) if head => 0,
                    Some(v) => v.parse().unwrap(),
                    None => 0,
                };
                while self.buf.len() < len + body_len {
                    self.read_more();
                }
                let body = self.buf[len..len + body_len].to_vec();
                self.buf.drain(..len + body_len);
                return Response { body, ..response };
            }
            self.read_more();
        }
    }

    fn read_more(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).expect("read response");
        assert!(n > 0, "unexpected EOF while reading a response");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// One raw read: `Ok(0)` is EOF.
    fn read_raw(&mut self) -> io::Result<usize> {
        self.stream.read(&mut [0u8; 256])
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: device\r\n\r\n")
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let server = DeviceServer::keep_alive();
    let mut client = Client::connect(&server);
    client.get("/a");
    let first = client.response(false);
    assert_eq!(first.status, 200);
    assert_eq!(first.body, br#"{"seq":0}"#);
    assert_eq!(first.header("content-type"), Some("application/json"));
    client.get("/b");
    assert_eq!(client.response(false).body, br#"{"seq":1}"#);

    assert_eq!(server.connections_accepted(), 1);
    let reqs = server.requests();
    let targets: Vec<_> = reqs.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/a", "/b"]);
    assert!(reqs.iter().all(|r| r.conn == 0 && r.method == "GET"));
    assert_eq!(reqs[1].index_on_conn, 1);

    drop(client);
    assert!(wait_until(TIMEOUT, || server.connections_closed_by_client() == 1));
    assert_eq!(server.fins_sent(), 0);
}

#[test]
fn close_after_response_fin_then_late_request_is_counted() {
    let server = DeviceServer::close_after_response();
    let mut client = Client::connect(&server);
    client.get("/status");
    let resp = client.response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), None, "the device never says close");
    assert_eq!(client.read_raw().unwrap(), 0, "expected FIN");
    assert_eq!(server.fins_sent(), 1);
    assert!(wait_until(TIMEOUT, || server.fins_settled() == 1));

    // The bug: writing the next request on the half-closed socket.
    let late = get("/again");
    client.send(late.as_bytes());
    assert!(wait_until(TIMEOUT, || server.bytes_after_fin() == late.len()));
    assert_eq!(server.bytes_after_fin_on(0), late.len());
    assert_eq!(server.conns_with_bytes_after_fin(), 1);
    assert_eq!(server.request_count(), 1, "the late request is never served");
}

/// The FIN travels with the response's last bytes: it is there the moment the response is (no
/// wait), and a request written the moment the response was read counts as after it.
#[cfg(target_os = "linux")]
#[test]
fn close_after_response_sends_the_fin_with_the_response() {
    let server = DeviceServer::close_after_response();
    for i in 0..20 {
        let mut client = Client::connect(&server);
        client.get("/status");
        assert_eq!(client.response(false).status, 200);
        client.stream.set_nonblocking(true).unwrap();
        assert_eq!(client.read_raw().unwrap(), 0, "the FIN came with the response ({i})");
        client.stream.set_nonblocking(false).unwrap();
        let late = get("/again");
        client.send(late.as_bytes());
        assert!(wait_until(TIMEOUT, || server.bytes_after_fin_on(i) == late.len()), "connection {i}");
    }
    assert_eq!(server.request_count(), 20, "no late request is served");
    assert_eq!(server.fins_sent(), 20);
}

#[test]
fn close_after_response_client_closing_is_clean() {
    let server = DeviceServer::close_after_response();
    let mut client = Client::connect(&server);
    client.get("/status");
    client.response(false);
    assert_eq!(client.read_raw().unwrap(), 0, "expected FIN");
    drop(client);
    assert!(wait_until(TIMEOUT, || server.clients_closed_after_fin() == 1));
    assert_eq!(server.bytes_after_fin(), 0);
    assert_eq!(server.conns_with_bytes_after_fin(), 0);
    // We closed first, so this is not a close "by the client".
    assert_eq!(server.connections_closed_by_client(), 0);
}

#[test]
fn rst_after_response_resets_the_connection() {
    let server = DeviceServer::rst_after_response();
    let mut client = Client::connect(&server);
    client.get("/status");
    assert_eq!(client.response(false).status, 200);

    // Whichever of write and read first meets the RST must fail.
    let reset = match client.stream.write_all(get("/again").as_bytes()) {
        Err(e) => is_reset(&e),
        Ok(()) => matches!(client.read_raw(), Err(e) if is_reset(&e)),
    };
    assert!(reset, "expected a connection reset");
    assert_eq!(server.rsts_sent(), 1);
    assert_eq!(server.request_count(), 1);
}

#[test]
fn idle_close_sends_fin_when_idle() {
    let server = DeviceServer::idle_close(Duration::from_millis(20));
    let mut client = Client::connect(&server);
    client.get("/status");
    assert_eq!(client.response(false).status, 200);
    // Read timeout is TIMEOUT, so this returning 0 means the FIN arrived.
    assert_eq!(client.read_raw().unwrap(), 0, "expected FIN after idling");
    assert_eq!(server.fins_sent(), 1);
    drop(client);
    assert!(wait_until(TIMEOUT, || server.clients_closed_after_fin() == 1));
    assert_eq!(server.bytes_after_fin(), 0);
}

#[test]
fn idle_close_keeps_connection_when_next_request_is_in_time() {
    let server = DeviceServer::idle_close(Duration::from_secs(5));
    let mut client = Client::connect(&server);
    for expected in [br#"{"seq":0}"#, br#"{"seq":1}"#] {
        client.get("/status");
        assert_eq!(client.response(false).body, expected);
    }
    assert_eq!(server.connections_accepted(), 1);
    assert_eq!(server.fins_sent(), 0);
}

#[test]
fn custom_handler_with_raw_reply() {
    let server = DeviceServer::start(|req| {
        let id = req.header("x-device-id").unwrap_or("?");
        let body = format!("busy {id}");
        let head = format!("HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: {}\r\n\r\n", body.len());
        Reply::raw(head + &body)
    });
    let mut client = Client::connect(&server);
    client.send(b"GET /x HTTP/1.1\r\nHost: device\r\nX-Device-Id: 7\r\n\r\n");
    let resp = client.response(false);
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert_eq!(resp.body, b"busy 7");
    assert_eq!(server.requests()[0].header("X-DEVICE-ID"), Some("7"));
}

#[test]
fn head_gets_headers_but_no_body() {
    let server = DeviceServer::keep_alive();
    let mut client = Client::connect(&server);
    client.send(b"HEAD /status HTTP/1.1\r\nHost: device\r\n\r\n");
    let resp = client.response(true);
    assert_eq!(resp.header("content-length"), Some("9"));
    assert!(resp.body.is_empty());
    // No stray body bytes precede the next response.
    client.get("/status");
    assert_eq!(client.response(false).body, br#"{"seq":1}"#);
}

#[test]
fn request_body_is_received_fully() {
    let server = DeviceServer::start(|req| Reply::ok(req.body.len().to_string().as_bytes()));
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut client = Client::connect(&server);
    let head = format!("POST /upload HTTP/1.1\r\nHost: device\r\nContent-Length: {}\r\n\r\n", body.len());
    client.send(head.as_bytes());
    client.send(&body[..7_000]);
    client.send(&body[7_000..]);
    assert_eq!(client.response(false).body, b"20000");
    assert_eq!(server.requests()[0].body, body);
    assert_eq!(server.count_matching(|r| r.method == "POST"), 1);
}

#[test]
fn back_to_back_requests_in_one_write_are_answered_in_order() {
    let server = DeviceServer::keep_alive();
    let mut client = Client::connect(&server);
    let post = "POST /2 HTTP/1.1\r\nHost: device\r\nContent-Length: 3\r\n\r\nabc";
    client.send((get("/1") + post).as_bytes());
    assert_eq!(client.response(false).body, br#"{"seq":0}"#);
    assert_eq!(client.response(false).body, br#"{"seq":1}"#);
    let reqs = server.requests();
    assert_eq!((reqs[0].target.as_str(), reqs[0].index_on_conn), ("/1", 0));
    assert_eq!((reqs[1].target.as_str(), reqs[1].index_on_conn), ("/2", 1));
    assert_eq!(reqs[1].body, b"abc");
}

#[test]
fn delayed_reply_arrives_after_the_delay() {
    let delay = Duration::from_millis(30);
    let server = DeviceServer::start(move |_| Reply::ok(b"{}").delayed(delay));
    let mut client = Client::connect(&server);
    let start = Instant::now();
    client.get("/slow");
    assert_eq!(client.response(false).body, b"{}");
    assert!(start.elapsed() >= delay);
}

#[test]
fn stalled_request_is_never_answered_and_drop_does_not_hang() {
    let server = DeviceServer::start(|_| Reply::stall());
    let mut client = Client::connect(&server);
    client.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    client.get("/hang");
    let err = client.read_raw().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
    assert_eq!(server.request_count(), 1);

    let start = Instant::now();
    drop(server);
    assert!(start.elapsed() < Duration::from_millis(1500));
}

#[test]
fn close_on_accept_sends_fin_before_reading() {
    let options = ServerOptions { close_on_accept: true, ..ServerOptions::default() };
    let server = DeviceServer::with_options(options, seq_reply);
    let mut client = Client::connect(&server);
    assert_eq!(client.read_raw().unwrap(), 0, "expected FIN");
    assert_eq!(server.fins_sent(), 1);
    assert_eq!(server.request_count(), 0);
}

#[test]
fn rst_on_accept_resets_at_once() {
    let options = ServerOptions { rst_on_accept: true, ..ServerOptions::default() };
    let server = DeviceServer::with_options(options, seq_reply);
    let mut client = Client::connect(&server);
    let err = client.read_raw().unwrap_err();
    assert!(is_reset(&err), "expected a reset, got {err}");
    assert_eq!(server.rsts_sent(), 1);
    assert_eq!(server.request_count(), 0);
}

#[test]
#[should_panic(expected = "handler panicked")]
fn handler_panic_closes_the_connection_and_fails_the_test_on_drop() {
    let server = DeviceServer::start(|_| panic!("deliberate handler panic"));
    let mut client = Client::connect(&server);
    client.get("/boom");
    assert_eq!(client.read_raw().unwrap(), 0, "expected the connection closed");
    drop(server);
}
