//! Every response-framing rule (RFC 9112 §6.3) over a real loopback socket, and what each one
//! does to the connection: reused, or retired so the next request goes out on a fresh one.

mod support;

use std::time::Duration;

use finwatch::{Client, Error, Limit, Limits, Method, Request};
use support::*;

fn client() -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    Client::builder().request_timeout(Duration::from_secs(5)).build().unwrap()
}

/// A device that answers every request with `raw`.
fn device(raw: &'static [u8]) -> DeviceServer {
    DeviceServer::start(move |_| Reply::raw(raw))
}

/// Sends two GETs; returns the first response and how many connections carried them.
fn twice(raw: &'static [u8]) -> (finwatch::Response, usize) {
    let dev = device(raw);
    let mut c = client();
    let first = c.get(&dev.url("/")).unwrap();
    c.get(&dev.url("/")).unwrap();
    // Connections that carried the requests (the device may also have accepted a warm spare).
    let used: std::collections::HashSet<usize> = dev.requests().iter().map(|r| r.conn).collect();
    (first, used.len())
}

#[test]
fn content_length_body_is_read_and_the_connection_reused() {
    let (resp, conns) = twice(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Device: io\r\n\r\nhello world");
    assert_eq!((resp.status(), resp.reason(), resp.body()), (200, "OK", &b"hello world"[..]));
    assert_eq!(resp.header("x-device"), Some("io"));
    assert_eq!(conns, 1);
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let (resp, conns) = twice(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n",
    );
    assert_eq!(resp.body(), b"hello world");
    assert_eq!(conns, 1);
}

#[test]
fn close_delimited_body_ends_with_the_fin_and_retires_the_connection() {
    let dev =
        DeviceServer::start(|_| Reply::raw(&b"HTTP/1.1 200 OK\r\n\r\nuntil close"[..]).then(After::Fin));
    let mut c = client();
    assert_eq!(c.get(&dev.url("/")).unwrap().body(), b"until close");
    assert_eq!(c.get(&dev.url("/")).unwrap().body(), b"until close");
    let used: std::collections::HashSet<usize> = dev.requests().iter().map(|r| r.conn).collect();
    assert_eq!(used.len(), 2);
    assert_eq!(dev.bytes_after_fin(), 0);
}

#[test]
fn no_body_for_head_204_and_304() {
    let dev = DeviceServer::start(|r| {
        let raw: &[u8] = match r.target.as_str() {
            "/204" => b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            "/304" => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        };
        Reply::raw(raw)
    });
    let mut c = client();
    let head = c.send(Request::builder(Method::HEAD, &dev.url("/")).build().unwrap()).unwrap();
    assert_eq!((head.status(), head.body().len()), (200, 0));
    assert_eq!(c.get(&dev.url("/204")).unwrap().body().len(), 0);
    assert_eq!(c.get(&dev.url("/304")).unwrap().body().len(), 0);
    // No phantom body was read into the next response: all three shared one connection.
    assert_eq!(dev.connections_accepted(), 1);
}

#[test]
fn interim_responses_are_skipped() {
    let (resp, conns) = twice(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!((resp.status(), resp.body()), (201, &b"ok"[..]));
    assert_eq!(conns, 1);
}

#[test]
fn connection_close_and_http10_retire_the_connection() {
    let (_, conns) = twice(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(conns, 2);
    let (resp, conns) = twice(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!((resp.version(), conns), ("HTTP/1.0", 2));
    let (_, conns) = twice(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(conns, 1, "HTTP/1.0 keep-alive is honoured");
}

#[test]
fn keep_alive_timeout_retires_the_connection_before_the_server_does() {
    let dev = device(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1, max=50\r\nContent-Length: 0\r\n\r\n");
    let mut c = client();
    c.get(&dev.url("/")).unwrap();
    let conns = c.connections();
    assert_eq!(conns.len(), 1);
    let retire_in = conns[0].retire_in.unwrap();
    assert!(retire_in < Duration::from_secs(1), "retire in {retire_in:?}, the server closes at 1 s");
    assert_eq!(conns[0].retire_reason, Some(finwatch::RetireReason::KeepAliveTimeout));
    // Driven past that time, the client closes the connection itself, and so the warm spare
    // it opened in its place (fresh connections get the announced timeout too).
    let first = conns[0].id;
    let mut sink = Vec::new();
    assert!(wait_until(Duration::from_secs(4), || {
        c.poll(Some(Duration::from_millis(10)), &mut sink).unwrap();
        c.connections().iter().all(|i| i.id != first)
    }));
    assert!(wait_until(Duration::from_secs(4), || dev.connections_closed_by_client() >= 1));
    assert!(wait_until(Duration::from_secs(4), || {
        c.poll(Some(Duration::from_millis(10)), &mut sink).unwrap();
        c.connections().is_empty()
    }));
    assert_eq!(c.stats().warm_spares_opened, 1);
}

#[test]
fn framing_errors_are_typed_and_the_client_stays_usable() {
    let cases: [(&'static [u8], &str); 5] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            "conflicting Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nok",
            "Transfer-Encoding",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "status"),
    ];
    let good = DeviceServer::keep_alive();
    let mut c = client();
    for (raw, what) in cases {
        let dev = device(raw);
        match c.get(&dev.url("/")) {
            Err(Error::MalformedResponse { what: got }) => {
                assert!(got.contains(what), "{got:?} lacks {what:?}")
            }
            other => {
                panic!("{:?}: expected a malformed response, got {other:?}", String::from_utf8_lossy(raw))
            }
        }
        assert!(c.connections().iter().all(|i| !i.host.ends_with(&dev.addr().port().to_string())));
        assert_eq!(c.get(&good.url("/")).unwrap().status(), 200);
    }
}

#[test]
fn limits_are_enforced_and_typed() {
    let limits = Limits { max_head_bytes: 256, max_headers: 4, max_body_bytes: 64, max_interim_responses: 2 };
    let mut c = Client::builder().limits(limits).request_timeout(Duration::from_secs(5)).build().unwrap();
    let long_header: &'static [u8] = Box::leak(
        format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(300)).into_bytes().into_boxed_slice(),
    );
    let big_body: &'static [u8] = Box::leak(
        format!("HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n{}", "b".repeat(65))
            .into_bytes()
            .into_boxed_slice(),
    );
    let cases: [(&'static [u8], Limit); 5] = [
        (long_header, Limit::HeadBytes),
        (b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", Limit::HeaderCount),
        (big_body, Limit::BodyBytes),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n", Limit::BodyBytes),
        (b"HTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 B\r\n\r\nHTTP/1.1 100 C\r\n\r\n", Limit::InterimResponses),
    ];
    for (raw, want) in cases {
        let dev = device(raw);
        match c.get(&dev.url("/")) {
            Err(e @ Error::LimitExceeded { limit, .. }) if limit == want => {
                assert!(e.may_have_been_processed())
            }
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
    let ok = DeviceServer::keep_alive();
    assert_eq!(c.get(&ok.url("/")).unwrap().status(), 200);
}

#[test]
fn bytes_after_a_complete_response_retire_the_connection() {
    let (resp, conns) = twice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n");
    assert_eq!(resp.body(), b"ok");
    assert_eq!(conns, 2);
}
