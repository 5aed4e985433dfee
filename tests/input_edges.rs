//! Inputs at the edge of what finwatch takes, through the public API: a URL host that the system
//! resolver would read as another address, and secrets that must not be echoed into errors or
//! `Debug` output.
//!
//! The host tests listen on 127.0.0.1 and write the loopback address in the forms glibc's
//! `inet_aton` reads as 127.0.0.1 (`127.1`, `0x7f.0.0.1`, …): before finwatch refused them, each
//! of these requests reached the listener. Nothing here connects anywhere but loopback.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use finwatch::{Client, Error, Request};

fn client() -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    Client::builder()
        .request_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// A loopback listener that is never answered: it only tells whether a connection reached it.
fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// The connection that reached `l` within `wait`, if any.
fn arrived(l: &TcpListener, wait: Duration) -> Option<TcpStream> {
    let end = Instant::now() + wait;
    loop {
        match l.accept() {
            Ok((s, _)) => return Some(s),
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < end => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// 127.0.0.1 as glibc's `inet_aton` (and so `getaddrinfo`) also reads it.
const LOOPBACK_ALIASES: [&str; 8] =
    ["127.1", "127.0.1", "0x7f.0.0.1", "0X7F.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.0.0.01"];

#[test]
fn the_listener_sees_a_connection_to_the_dotted_quad() {
    // The control: the way these tests look for a connection does see one.
    let (l, port) = listener();
    let mut c = client();
    let err = c.get(&format!("http://127.0.0.1:{port}/io")).unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err:?}");
    assert!(arrived(&l, Duration::from_secs(1)).is_some());
    assert_eq!(c.stats().connects, 1);
}

#[test]
fn loopback_in_numeric_forms_is_refused_before_any_socket() {
    let (l, port) = listener();
    let mut c = client();
    for host in LOOPBACK_ALIASES {
        let url = format!("http://{host}:{port}/unico/v1/interface/io");
        for (how, result) in [
            ("Client::put", c.put(&url, "1").map(|_| ())),
            ("Request::build", Request::put(&url, "1").build().map(|_| ())),
        ] {
            let err = result.unwrap_err();
            let Error::InvalidUrl { url: shown, reason } = &err else { panic!("{host} via {how}: {err:?}") };
            assert_eq!(shown, &url);
            assert!(reason.contains("not a dotted quad of four decimal octets"), "{host}: {reason}");
            assert!(!err.may_have_been_processed());
            assert_eq!(err.kind(), "invalid_url");
        }
    }
    let stats = c.stats();
    assert_eq!((stats.submitted, stats.connects), (0, 0), "{stats:?}");
    assert!(c.connections().is_empty());
    assert!(arrived(&l, Duration::from_millis(200)).is_none(), "a refused URL reached the listener");
}

#[test]
fn refused_through_every_way_in() {
    let (l, port) = listener();
    let mut c = client();
    let url = format!("http://127.1:{port}/io");
    assert!(matches!(c.get(&url), Err(Error::InvalidUrl { .. })));
    assert!(matches!(c.delete(&url), Err(Error::InvalidUrl { .. })));
    assert!(matches!(c.post(&url, "x"), Err(Error::InvalidUrl { .. })));
    assert!(matches!(finwatch::Url::parse(&url), Err(Error::InvalidUrl { .. })));
    assert_eq!(c.learned_idle_close(&url), None);
    // The octal trap of the faults issue: the address a reader sees is not the one dialled.
    assert!(matches!(c.get("http://192.168.001.010/"), Err(Error::InvalidUrl { .. })));
    assert_eq!(c.stats().connects, 0);
    assert!(arrived(&l, Duration::from_millis(100)).is_none());
}

#[test]
fn an_allow_list_on_the_host_cannot_be_bypassed() {
    // A caller that checks `Url::host` before sending: every URL that passes parses to a host
    // the resolver does not reinterpret.
    let allowed = ["127.0.0.1"];
    for host in LOOPBACK_ALIASES.iter().chain(&["10.0.5", "192.168.001.010", "1.2.3.4.5", "0"]) {
        if let Ok(url) = finwatch::Url::parse(&format!("http://{host}/")) {
            panic!("{host:?} parsed to host {:?}, allowed: {}", url.host(), allowed.contains(&url.host()));
        }
    }
    assert_eq!(finwatch::Url::parse("http://127.0.0.1/").unwrap().host(), allowed[0]);
}

#[test]
fn a_url_password_is_not_in_the_error() {
    let mut c = client();
    for url in
        ["http://admin:hunter2@127.0.0.1/io", "http://admin:hun#ter2@127.1/io", "admin:hunter2@10.0.0.5"]
    {
        let err = c.get(url).unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
        for shown in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
            assert!(!shown.contains("hunter2") && !shown.contains("hun#ter2"), "{shown}");
            assert!(shown.contains("admin:***@"), "{shown}");
        }
    }
}

#[test]
fn request_debug_hides_every_secret_header_and_the_device_still_gets_them() {
    use std::io::{Read as _, Write as _};
    let secrets = [
        ("Authorization", "Bearer s3cret-0"),
        ("Proxy-Authorization", "Basic s3cret-1"),
        ("Cookie", "sid=s3cret-2"),
        ("X-Api-Key", "s3cret-3"),
        ("Api-Key", "s3cret-4"),
        ("X-Auth-Token", "s3cret-5"),
        ("X-Client-Secret", "s3cret-6"),
    ];
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/io", l.local_addr().unwrap());
    let mut builder = Request::put(&url, "1").sensitive_header("X-Unico-Pin", "s3cret-7");
    for (name, value) in secrets {
        builder = builder.header(name, value);
    }
    assert!(!format!("{builder:?}").contains("s3cret"));
    let req = builder.header("X-Request-Id", "42").build().unwrap();
    let shown = format!("{req:?} {req:#?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert_eq!(shown.matches("<redacted>").count(), 2 * (secrets.len() + 1), "{shown}");
    assert!(shown.contains(r#"("X-Request-Id", "42")"#), "{shown}");
    // The device answers with a session cookie; it is sent what the caller wrote.
    let device = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        while !got.windows(5).any(|w| w == b"\r\n\r\n1") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the request ended early");
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=s3cret-8; HttpOnly\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8(got).unwrap()
    });
    let resp = client().send(req).unwrap();
    let wire = device.join().unwrap();
    for (name, value) in secrets.iter().chain(&[("X-Unico-Pin", "s3cret-7")]) {
        assert!(wire.contains(&format!("\r\n{name}: {value}\r\n")), "{name} not sent: {wire}");
    }
    assert_eq!(resp.header("Set-Cookie"), Some("sid=s3cret-8; HttpOnly"));
    let shown = format!("{resp:?} {resp:#?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains(r#"("Set-Cookie", "<redacted>")"#) && shown.contains("status: 200"), "{shown}");
}

#[cfg(feature = "http")]
#[test]
fn the_http_crates_sensitive_mark_carries_over_both_ways() {
    use finwatch::http_interop::ResponseExt as _;
    let mut pin = http::HeaderValue::from_static("s3cret-pin");
    pin.set_sensitive(true);
    let req = http::Request::get("http://10.0.0.5/io")
        .header("X-Unico-Pin", pin)
        .header("X-Request-Id", "42")
        .body(())
        .unwrap();
    let req = Request::try_from(req).unwrap();
    let shown = format!("{req:?}");
    assert!(!shown.contains("s3cret") && shown.contains(r#"("x-request-id", "42")"#), "{shown}");
    // A response's credentials are marked sensitive in its HeaderMap.
    use std::io::{Read as _, Write as _};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    let device = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = s.read(&mut [0; 4096]).unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=s3cret\r\nX-Io: 1\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    });
    let resp = client().get(&url).unwrap();
    device.join().unwrap();
    let map = resp.header_map().unwrap();
    assert!(map["set-cookie"].is_sensitive() && !map["x-io"].is_sensitive());
    assert_eq!(map["set-cookie"], "sid=s3cret");
    assert!(!format!("{map:?}").contains("s3cret"), "{map:?}");
}
