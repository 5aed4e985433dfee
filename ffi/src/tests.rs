//! The C ABI's null, UTF-8, error and panic paths, called as C would call them.

use std::ffi::{CStr, c_char, c_int};
use std::ptr::{null, null_mut};

use super::*;

/// The error's kind, message and flag, and frees it; panics if there is none.
fn take_error(e: *mut finwatch_error) -> (String, String, bool) {
    assert!(!e.is_null(), "expected an error");
    unsafe {
        let kind = CStr::from_ptr(finwatch_error_kind(e)).to_str().unwrap().to_string();
        let message = CStr::from_ptr(finwatch_error_message(e)).to_str().unwrap().to_string();
        let may = finwatch_error_may_have_been_processed(e) != 0;
        finwatch_error_free(e);
        (kind, message, may)
    }
}

/// A port on which nothing listens (bound, then closed).
fn closed_port_url() -> CString {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    CString::new(format!("http://127.0.0.1:{port}/io")).unwrap()
}

fn device_url(path: &str) -> CString {
    CString::new(format!("{}{path}", fw::__doc_device())).unwrap()
}

fn client() -> *mut finwatch_client {
    let mut err = null_mut();
    let c = unsafe { finwatch_client_new_with_timeouts(1000, 2000, &mut err) };
    assert!(!c.is_null() && err.is_null());
    c
}

fn body_of(r: *const finwatch_response) -> Vec<u8> {
    let mut len = usize::MAX;
    let p = unsafe { finwatch_response_body(r, &mut len) };
    unsafe { std::slice::from_raw_parts(p, len) }.to_vec()
}

/// Something that is not a pointer to a valid error, to check that `*error` is overwritten.
fn sentinel() -> *mut finwatch_error {
    std::ptr::dangling_mut()
}

#[test]
fn send_null_arguments_are_invalid_argument_errors() {
    let c = client();
    let url = device_url("/io");
    let cases: [(*mut finwatch_client, *const c_char, *const c_char, &str); 3] = [
        (null_mut(), c"GET".as_ptr(), url.as_ptr(), "client is NULL"),
        (c, null(), url.as_ptr(), "method is NULL"),
        (c, c"GET".as_ptr(), null(), "url is NULL"),
    ];
    for (client, method, url, message) in cases {
        let mut err = sentinel();
        let r = unsafe { finwatch_send(client, method, url, null(), 0, &mut err) };
        assert!(r.is_null());
        assert_eq!(take_error(err), ("invalid_argument".into(), message.into(), false));
    }
    // A NULL body with a length.
    let mut err = null_mut();
    let r = unsafe { finwatch_send(c, c"PUT".as_ptr(), url.as_ptr(), null(), 3, &mut err) };
    assert!(r.is_null());
    let (kind, message, may) = take_error(err);
    assert_eq!((kind.as_str(), may), ("invalid_argument", false));
    assert!(message.contains("body is NULL"), "{message}");
    // A NULL `error`: still no crash, just NULL.
    assert!(unsafe { finwatch_send(null_mut(), null(), null(), null(), 0, null_mut()) }.is_null());
    unsafe { finwatch_client_free(c) };
}

#[test]
fn invalid_utf8_is_an_invalid_argument_error() {
    let c = client();
    let bad = c"http://127.0.0.1/\xff\xfe";
    let mut err = null_mut();
    let r = unsafe { finwatch_send(c, c"GET".as_ptr(), bad.as_ptr(), null(), 0, &mut err) };
    assert!(r.is_null());
    assert_eq!(take_error(err), ("invalid_argument".into(), "url is not valid UTF-8".into(), false));
    let mut err = null_mut();
    let r = unsafe { finwatch_request_new(c"G\xe9T".as_ptr(), c"http://127.0.0.1/".as_ptr(), &mut err) };
    assert!(r.is_null());
    assert_eq!(take_error(err).0, "invalid_argument");
    unsafe { finwatch_client_free(c) };
}

#[test]
fn core_errors_keep_their_kind() {
    let c = client();
    for (method, url, kind) in [
        (c"GET", c"ftp://10.0.0.5/", "invalid_url"),
        (c"GET", c"http://admin:pw@10.0.0.5/", "invalid_url"),
        (c"GET /x", c"http://10.0.0.5/", "invalid_request"),
        (c"CONNECT", c"http://10.0.0.5/", "invalid_request"),
    ] {
        let mut err = null_mut();
        let r = unsafe { finwatch_send(c, method.as_ptr(), url.as_ptr(), null(), 0, &mut err) };
        assert!(r.is_null());
        let (k, message, may) = take_error(err);
        assert_eq!((k.as_str(), may), (kind, false), "{message}");
        assert!(!message.contains("pw@"), "the password is redacted: {message}");
    }
    unsafe { finwatch_client_free(c) };
}

#[test]
fn refused_connection_was_not_processed() {
    let c = client();
    let url = closed_port_url();
    let mut err = sentinel();
    let r = unsafe { finwatch_send(c, c"POST".as_ptr(), url.as_ptr(), c"1".as_ptr().cast(), 1, &mut err) };
    assert!(r.is_null());
    let (kind, message, may) = take_error(err);
    assert_eq!((kind.as_str(), may), ("connect_failed", false), "{message}");
    unsafe { finwatch_client_free(c) };
}

#[test]
fn send_returns_status_body_and_headers() {
    let c = client();
    let url = device_url("/unico/v1/interface/io");
    let body = br#"{"ioId":25602,"value":1}"#;
    let mut err = sentinel();
    let r = unsafe {
        finwatch_send(c, c"PUT".as_ptr(), url.as_ptr(), body.as_ptr().cast(), body.len(), &mut err)
    };
    assert!(!r.is_null());
    assert!(err.is_null(), "*error is NULL on success");
    unsafe {
        assert_eq!(finwatch_response_status(r), 200);
        assert_eq!(body_of(r), br#"{"value":1}"#);
        let mut len = 0;
        let v = finwatch_response_header(r, c"CONTENT-TYPE".as_ptr(), &mut len);
        assert_eq!(std::slice::from_raw_parts(v, len), b"application/json");
        assert!(finwatch_response_header(r, c"ETag".as_ptr(), &mut len).is_null());
        assert_eq!(len, 0);
        assert!(finwatch_response_header(r, null(), null_mut()).is_null());
        finwatch_response_free(r);
        // An empty body: a real pointer, length 0.
        let head = device_url("/io");
        let r = finwatch_send(c, c"HEAD".as_ptr(), head.as_ptr(), null(), 0, &mut err);
        assert_eq!(finwatch_response_status(r), 200);
        let mut len = 9;
        let p = finwatch_response_body(r, &mut len);
        assert_eq!((p, len), (c"".as_ptr().cast(), 0));
        finwatch_response_free(r);
    }
    unsafe { finwatch_client_free(c) };
}

#[test]
fn getters_and_frees_accept_null() {
    unsafe {
        finwatch_client_free(null_mut());
        finwatch_shared_client_free(null_mut());
        finwatch_request_free(null_mut());
        finwatch_response_free(null_mut());
        finwatch_error_free(null_mut());
        assert_eq!(finwatch_response_status(null()), 0);
        let mut len = 7;
        assert!(finwatch_response_body(null(), &mut len).is_null());
        assert_eq!(len, 0);
        assert!(finwatch_response_body(null(), null_mut()).is_null());
        assert_eq!(CStr::from_ptr(finwatch_error_kind(null())), c"");
        assert_eq!(CStr::from_ptr(finwatch_error_message(null())), c"");
        assert_eq!(finwatch_error_may_have_been_processed(null()), 0);
        assert_eq!(finwatch_pending(null()), 0);
        assert_eq!(finwatch_client_fd(null()), -1);
        assert_eq!(finwatch_client_next_deadline_ms(null_mut()), -1);
        let mut err = null_mut();
        assert_eq!(finwatch_poll(null_mut(), 0, &mut err), -1);
        assert_eq!(take_error(err).0, "invalid_argument");
        let mut err = null_mut();
        assert_eq!(finwatch_submit(null_mut(), null(), &mut err), 0);
        assert_eq!(take_error(err).0, "invalid_argument");
        let (mut id, mut resp, mut err) = (9, sentinel().cast(), null_mut());
        assert_eq!(finwatch_take_completion(null_mut(), &mut id, &mut resp, &mut err), -1);
        assert_eq!((id, resp), (0, null_mut()));
        assert_eq!(take_error(err).0, "invalid_argument");
        let mut err = null_mut();
        assert!(finwatch_send_request(null_mut(), null(), &mut err).is_null());
        assert_eq!(take_error(err).0, "invalid_argument");
        let mut err = null_mut();
        assert!(finwatch_shared_client_send(null(), null(), null(), null(), 0, &mut err).is_null());
        assert_eq!(take_error(err).0, "invalid_argument");
        let mut err = null_mut();
        assert_eq!(finwatch_request_add_header(null_mut(), null(), null(), &mut err), -1);
        assert_eq!(take_error(err).0, "invalid_argument");
        assert!(!CStr::from_ptr(finwatch_version()).to_bytes().is_empty());
    }
}

#[test]
fn a_panic_becomes_an_error_of_kind_panic() {
    let mut err = null_mut();
    let v: Option<()> = unsafe { guard(&mut err, || panic!("boom")) };
    assert!(v.is_none());
    let (kind, message, may) = take_error(err);
    assert_eq!((kind.as_str(), may), ("panic", true));
    assert!(message.contains("boom"), "{message}");
    let mut err = null_mut();
    let v: Option<()> = unsafe { guard(&mut err, || panic!("{}", String::from("formatted"))) };
    assert!(v.is_none());
    assert!(take_error(err).1.contains("formatted"));
    // Without an out-parameter: dropped, and no crash.
    assert!(unsafe { guard::<()>(null_mut(), || panic!("dropped")) }.is_none());
    assert_eq!(quiet(-1, || -> c_int { panic!("quiet") }), -1);
}

#[test]
fn request_setters_validate_and_leave_the_request_unchanged_on_failure() {
    let url = device_url("/api/pulse");
    let mut err = null_mut();
    let r = unsafe { finwatch_request_new(c"POST".as_ptr(), url.as_ptr(), &mut err) };
    assert!(!r.is_null() && err.is_null());
    unsafe {
        assert_eq!(finwatch_request_add_header(r, c"X-Id".as_ptr(), c"41".as_ptr(), &mut err), 0);
        assert!(err.is_null());
        // Header injection is refused, and the request stays as it was.
        assert_eq!(
            finwatch_request_add_header(r, c"X-Id".as_ptr(), c"1\r\nX-Evil: 1".as_ptr(), &mut err),
            -1
        );
        assert_eq!(take_error(err).0, "invalid_request");
        let mut err = null_mut();
        assert_eq!(finwatch_request_add_header(r, c"X-Id".as_ptr(), null(), &mut err), -1);
        assert_eq!(take_error(err), ("invalid_argument".into(), "value is NULL".into(), false));
        let mut err = null_mut();
        assert_eq!(finwatch_request_set_body(r, c"dedup=41".as_ptr().cast(), 8, &mut err), 0);
        assert_eq!(finwatch_request_set_body(r, null(), 1, &mut err), -1);
        assert_eq!(take_error(err).0, "invalid_argument");
        let mut err = null_mut();
        assert_eq!(finwatch_request_set_timeout_ms(r, 1500, &mut err), 0);
        assert_eq!(finwatch_request_set_retryable(r, 1, &mut err), 0);
        assert!(err.is_null());
        let built = &(*r).request;
        assert_eq!(built.body(), b"dedup=41");
        assert!(built.is_retryable());
        assert_eq!((*r).parts.headers, [("X-Id".to_string(), "41".to_string())]);

        // Sent twice: it is not consumed.
        let c = client();
        for _ in 0..2 {
            let resp = finwatch_send_request(c, r, &mut err);
            assert!(err.is_null());
            assert_eq!(finwatch_response_status(resp), 200);
            finwatch_response_free(resp);
        }
        finwatch_client_free(c);
        finwatch_request_free(r);
    }
}

#[test]
fn a_request_deadline_is_deadline_exceeded() {
    // A device that never answers: the kernel completes the handshake (the listen backlog), and
    // nobody reads.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = CString::new(format!("http://{}/io", silent.local_addr().unwrap())).unwrap();
    let mut err = null_mut();
    unsafe {
        let r = finwatch_request_new(c"PUT".as_ptr(), url.as_ptr(), &mut err);
        assert_eq!(finwatch_request_set_timeout_ms(r, 100, &mut err), 0);
        let c = client();
        let started = Instant::now();
        assert!(finwatch_send_request(c, r, &mut err).is_null());
        assert!(started.elapsed() < Duration::from_secs(1));
        let (kind, message, may) = take_error(err);
        assert_eq!((kind.as_str(), may), ("deadline_exceeded", true), "{message}");
        finwatch_client_free(c);
        finwatch_request_free(r);
    }
    drop(silent);
}

#[test]
fn submit_poll_take() {
    let c = client();
    let mut err = null_mut();
    unsafe {
        assert!(finwatch_client_fd(c) >= 0);
        assert_eq!(finwatch_client_next_deadline_ms(c), -1, "nothing to do yet");
        let ok = finwatch_request_new(c"GET".as_ptr(), device_url("/io-state").as_ptr(), &mut err);
        let refused = finwatch_request_new(c"GET".as_ptr(), closed_port_url().as_ptr(), &mut err);
        let first = finwatch_submit(c, ok, &mut err);
        let second = finwatch_submit(c, refused, &mut err);
        assert!(err.is_null());
        assert_eq!((first, second), (1, 2));
        assert_eq!(finwatch_pending(c), 2);
        let deadline = finwatch_client_next_deadline_ms(c);
        assert!((0..=2000).contains(&deadline), "{deadline}");
        let (mut id, mut resp, mut failure) = (0, null_mut(), null_mut());
        let mut seen = Vec::new();
        let started = Instant::now();
        while seen.len() < 2 {
            assert!(started.elapsed() < Duration::from_secs(5));
            assert!(finwatch_poll(c, 50, &mut err) >= 0);
            while finwatch_take_completion(c, &mut id, &mut resp, &mut failure) == 1 {
                if resp.is_null() {
                    seen.push((id, take_error(failure).0));
                } else {
                    assert!(failure.is_null());
                    seen.push((id, finwatch_response_status(resp).to_string()));
                    finwatch_response_free(resp);
                }
            }
        }
        seen.sort();
        assert_eq!(seen, [(1, "200".to_string()), (2, "connect_failed".to_string())]);
        assert_eq!(finwatch_pending(c), 0);
        assert_eq!(finwatch_take_completion(c, null_mut(), null_mut(), null_mut()), 0);
        finwatch_request_free(ok);
        finwatch_request_free(refused);
        finwatch_client_free(c);
    }
}

#[test]
fn shared_client_from_several_threads() {
    let sc = unsafe { finwatch_shared_client_new_with_timeouts(1000, 2000, null_mut()) };
    assert!(!sc.is_null());
    struct Ptr(*const finwatch_shared_client);
    // SAFETY: the shared client is thread-safe (checked statically above).
    unsafe impl Send for Ptr {}
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let p = Ptr(sc);
            std::thread::spawn(move || {
                let p = p;
                let url = device_url(&format!("/io?i={i}"));
                let mut err = null_mut();
                let r = unsafe {
                    finwatch_shared_client_send(p.0, c"GET".as_ptr(), url.as_ptr(), null(), 0, &mut err)
                };
                assert!(err.is_null());
                let status = unsafe { finwatch_response_status(r) };
                unsafe { finwatch_response_free(r) };
                status
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), 200);
    }
    let mut err = null_mut();
    let refused = closed_port_url();
    let r =
        unsafe { finwatch_shared_client_send(sc, c"GET".as_ptr(), refused.as_ptr(), null(), 0, &mut err) };
    assert!(r.is_null());
    assert_eq!(take_error(err).0, "connect_failed");
    unsafe { finwatch_shared_client_free(sc) };
}

/// A device for one exchange on 127.0.0.1: reads a request (its body by `Content-Length`),
/// answers `200` with `reply`, and hands back the request body it read.
fn one_exchange_device(reply: Vec<u8>) -> (String, std::thread::JoinHandle<Vec<u8>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/firmware", listener.local_addr().unwrap());
    let device = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "closed before the head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = buf.split_off(head_end);
        while body.len() < len {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "closed mid-body");
            body.extend_from_slice(&chunk[..n]);
        }
        s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", reply.len()).as_bytes())
            .unwrap();
        s.write_all(&reply).unwrap();
        body
    });
    (url, device)
}

/// A path in the temporary directory that no other test uses.
fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("finwatch-ffi-{}-{name}", std::process::id()))
}

fn request(method: &str, url: &str) -> *mut finwatch_request {
    let (method, url) = (CString::new(method).unwrap(), CString::new(url).unwrap());
    let mut err = null_mut();
    let r = unsafe { finwatch_request_new(method.as_ptr(), url.as_ptr(), &mut err) };
    assert!(!r.is_null() && err.is_null());
    r
}

#[test]
fn a_file_goes_up_streamed_and_a_body_comes_down_into_a_file() {
    let image: Vec<u8> = (0..3 * 1024 * 1024 + 7u32).map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8).collect();
    let c = client();

    let path = temp_path("image.bin");
    std::fs::write(&path, &image).unwrap();
    let (url, device) = one_exchange_device(b"ok".to_vec());
    let (r, cpath) = (request("PUT", &url), CString::new(path.to_str().unwrap()).unwrap());
    let mut err = null_mut();
    let resp = unsafe { finwatch_send_file(c, r, cpath.as_ptr(), &mut err) };
    assert!(err.is_null() && !resp.is_null(), "{:?}", (!err.is_null()).then(|| take_error(err)));
    assert_eq!((unsafe { finwatch_response_status(resp) }, body_of(resp)), (200, b"ok".to_vec()));
    assert!(device.join().unwrap() == image, "the device got another body");
    unsafe { (finwatch_response_free(resp), finwatch_request_free(r)) };

    let out = temp_path("download.bin");
    let (url, device) = one_exchange_device(image.clone());
    let (r, cout) = (request("GET", &url), CString::new(out.to_str().unwrap()).unwrap());
    let resp = unsafe { finwatch_send_to_file(c, r, cout.as_ptr(), &mut err) };
    assert!(err.is_null() && !resp.is_null());
    assert_eq!((unsafe { finwatch_response_status(resp) }, body_of(resp)), (200, Vec::new()));
    assert!(std::fs::read(&out).unwrap() == image, "the file holds another body");
    assert!(device.join().unwrap().is_empty());
    unsafe { (finwatch_response_free(resp), finwatch_request_free(r), finwatch_client_free(c)) };

    // The same through a shared client.
    let shared = unsafe { finwatch_shared_client_new_with_timeouts(1000, 2000, &mut err) };
    assert!(!shared.is_null() && err.is_null());
    let (url, device) = one_exchange_device(b"ok".to_vec());
    let r = request("PUT", &url);
    let resp = unsafe { finwatch_shared_client_send_file(shared, r, cpath.as_ptr(), &mut err) };
    assert!(err.is_null() && !resp.is_null());
    assert_eq!(body_of(resp), b"ok".to_vec());
    assert!(device.join().unwrap() == image, "the device got another body (shared)");
    unsafe { (finwatch_response_free(resp), finwatch_request_free(r)) };
    std::fs::remove_file(&out).unwrap();
    let (url, device) = one_exchange_device(image.clone());
    let r = request("GET", &url);
    let resp = unsafe { finwatch_shared_client_send_to_file(shared, r, cout.as_ptr(), &mut err) };
    assert!(err.is_null() && !resp.is_null());
    assert!(std::fs::read(&out).unwrap() == image, "the file holds another body (shared)");
    assert!(device.join().unwrap().is_empty());
    let missing = CString::new(temp_path("missing/none.bin").to_str().unwrap()).unwrap();
    assert!(unsafe { finwatch_shared_client_send_file(shared, r, missing.as_ptr(), &mut err) }.is_null());
    assert_eq!(take_error(err).0, "file");
    unsafe { (finwatch_response_free(resp), finwatch_request_free(r), finwatch_shared_client_free(shared)) };
    let _ = (std::fs::remove_file(path), std::fs::remove_file(out));
}

#[test]
fn a_file_that_cannot_be_opened_or_created_sends_nothing() {
    let c = client();
    let r = request("PUT", closed_port_url().to_str().unwrap());
    let missing = CString::new(temp_path("missing/none.bin").to_str().unwrap()).unwrap();
    let mut err = null_mut();
    assert!(unsafe { finwatch_send_file(c, r, missing.as_ptr(), &mut err) }.is_null());
    let (kind, message, may) = take_error(err);
    assert_eq!((kind.as_str(), may), ("file", false), "{message}");
    assert!(message.contains("could not open") && message.contains("none.bin"), "{message}");
    assert!(unsafe { finwatch_send_to_file(c, r, missing.as_ptr(), &mut err) }.is_null());
    assert_eq!(take_error(err).0, "file");
    // A NULL path, and a request with a body of its own: refused before anything is sent.
    assert!(unsafe { finwatch_send_file(c, r, null(), &mut err) }.is_null());
    assert_eq!(take_error(err).0, "invalid_argument");
    let body = b"1";
    unsafe { finwatch_request_set_body(r, body.as_ptr().cast(), body.len(), &mut err) };
    assert!(err.is_null());
    let here = CString::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    assert!(unsafe { finwatch_send_file(c, r, here.as_ptr(), &mut err) }.is_null());
    let (kind, _, may) = take_error(err);
    assert_eq!((kind.as_str(), may), ("invalid_request", false));
    unsafe { (finwatch_request_free(r), finwatch_client_free(c)) };
}

/// `finwatch_client_new_with_spin` hands its cap to the adaptive spin: 0 never spins (no wait
/// counted either way), a cap of a second catches every loopback answer; the shared form builds
/// and sends too. The other constructors keep the default (100 µs).
#[test]
fn the_adaptive_spin_cap_reaches_the_client() {
    let url = device_url("/io");
    for (cap_us, caught) in [(0, 0), (1_000_000, 5)] {
        let mut err = null_mut();
        let c = unsafe { finwatch_client_new_with_spin(1000, 2000, cap_us, &mut err) };
        assert!(!c.is_null() && err.is_null());
        for _ in 0..5 {
            let r = unsafe { finwatch_send(c, c"GET".as_ptr(), url.as_ptr(), null(), 0, &mut err) };
            assert!(err.is_null());
            assert_eq!(unsafe { finwatch_response_status(r) }, 200);
            unsafe { finwatch_response_free(r) };
        }
        let s = unsafe { &*c }.client.stats();
        assert_eq!((s.spins_caught, s.spins_missed), (caught, 0), "cap {cap_us} µs: {s:?}");
        unsafe { finwatch_client_free(c) };
    }
    let mut err = null_mut();
    let sc = unsafe { finwatch_shared_client_new_with_spin(1000, 2000, 0, &mut err) };
    assert!(!sc.is_null() && err.is_null());
    let r = unsafe { finwatch_shared_client_send(sc, c"GET".as_ptr(), url.as_ptr(), null(), 0, &mut err) };
    assert!(err.is_null());
    assert_eq!(unsafe { finwatch_response_status(r) }, 200);
    unsafe { finwatch_response_free(r) };
    unsafe { finwatch_shared_client_free(sc) };
}
