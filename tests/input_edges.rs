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
