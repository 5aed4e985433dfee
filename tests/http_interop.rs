//! The `http` crate interop (feature `http`) against the loopback device: what goes on the wire
//! for an `http::Request`, what comes back as an `http::Response`, and every refusal.
#![cfg(feature = "http")]

mod support;

use std::time::{Duration, Instant};

use finwatch::http_interop::{HttpClientExt as _, ReasonPhrase, RequestOptions, ResponseExt as _};
use finwatch::{Client, Error, Meta, Method, Request};
use support::*;

const PUT_PATH: &str = "/unico/v1/interface/io";
const GET_PATH: &str = "/unico/v1/interface/io-state?ioId=25602";

fn client() -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    Client::builder().request_timeout(Duration::from_secs(5)).build().unwrap()
}

fn invalid_request<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::InvalidRequest { reason }) => reason,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

#[test]
fn put_goes_out_exactly_as_written() {
    let dev = DeviceServer::keep_alive();
    let mut client = client();
    let put = http::Request::put(dev.url(PUT_PATH))
        .header("Content-Type", "application/json")
        .header("X-Trace", "a")
        .header("x-trace", "b")
        .header("X-Label", "café")
        .body(br#"{"ioId":25602,"value":1}"#.to_vec())
        .unwrap();
    let resp = client.send_http(put).unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);

    let reqs = dev.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.target.as_str()), ("PUT", PUT_PATH));
    assert_eq!(r.body, br#"{"ioId":25602,"value":1}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-length"), Some("24"));
    assert_eq!(r.header("host"), Some(dev.addr().to_string().as_str()));
    assert_eq!(r.header("x-label"), Some("café"));
    let traces: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-trace"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(traces, ["a", "b"], "repeated fields keep their order");
}

#[test]
fn every_supported_body_type_and_an_extension_method() {
    let dev = DeviceServer::keep_alive();
    let mut client = client();
    let url = dev.url("/x");
    client.send_http(http::Request::get(&url).body(()).unwrap()).unwrap();
    client.send_http(http::Request::post(&url).body("str").unwrap()).unwrap();
    client.send_http(http::Request::post(&url).body(String::from("string")).unwrap()).unwrap();
    client.send_http(http::Request::post(&url).body(&b"slice"[..]).unwrap()).unwrap();
    client.send_http(http::Request::post(&url).body(*b"array").unwrap()).unwrap();
    let propfind = http::Method::from_bytes(b"PROPFIND").unwrap();
    client.send_http(http::Request::builder().method(propfind).uri(&url).body(()).unwrap()).unwrap();

    let seen: Vec<(String, Vec<u8>)> = dev.requests().into_iter().map(|r| (r.method, r.body)).collect();
    let expected: Vec<(String, Vec<u8>)> = [
        ("GET", &b""[..]),
        ("POST", b"str"),
        ("POST", b"string"),
        ("POST", b"slice"),
        ("POST", b"array"),
        ("PROPFIND", b""),
    ]
    .iter()
    .map(|(m, b)| (m.to_string(), b.to_vec()))
    .collect();
    assert_eq!(seen, expected);
    assert_eq!(dev.requests()[0].header("content-length"), None, "a GET without a body has no length");
}

#[test]
fn response_status_version_headers_body_and_extensions() {
    let dev = DeviceServer::start(|req| {
        let reply: &[u8] = if req.target == "/old" {
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
        } else {
            b"HTTP/1.1 201 Created Here\r\nSet-Cookie: a=1\r\nX-Unit: \xb0C\r\nset-cookie: b=2\r\n\
              Content-Length: 11\r\n\r\n{\"value\":1}"
        };
        Reply::raw(reply)
    });
    let mut client = client();
    let resp = client.send_http(http::Request::get(dev.url(GET_PATH)).body(()).unwrap()).unwrap();
    assert_eq!(resp.status(), http::StatusCode::CREATED);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let cookies: Vec<&[u8]> = resp.headers().get_all("set-cookie").iter().map(|v| v.as_bytes()).collect();
    assert_eq!(cookies, [&b"a=1"[..], b"b=2"]);
    assert_eq!(resp.headers()["x-unit"].as_bytes(), b"\xb0C", "obs-text is kept byte for byte");
    assert_eq!(resp.headers()["content-length"], "11");
    assert_eq!(resp.extensions().get::<ReasonPhrase>().map(|r| r.as_str()), Some("Created Here"));
    let meta = *resp.extensions().get::<Meta>().unwrap();
    assert!(!meta.reused);
    assert_eq!(resp.body(), br#"{"value":1}"#);

    let resp = client.send_http(http::Request::get(dev.url("/old")).body(()).unwrap()).unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_10);
    assert_eq!(resp.into_body(), b"ok");

    // The same parts without consuming a finwatch response.
    let resp = client.get(&dev.url(GET_PATH)).unwrap();
    assert_eq!(resp.status_code().unwrap(), 201);
    assert_eq!(resp.http_version(), http::Version::HTTP_11);
    assert_eq!(resp.header_map().unwrap().get_all("set-cookie").iter().count(), 2);
}

#[test]
fn meta_says_when_a_connection_was_reused() {
    let dev = DeviceServer::keep_alive();
    let mut client = client();
    let get = || http::Request::get(dev.url(GET_PATH)).body(()).unwrap();
    let first = client.send_http(get()).unwrap();
    let second = client.send_http(get()).unwrap();
    let (first, second) =
        (first.extensions().get::<Meta>().unwrap(), second.extensions().get::<Meta>().unwrap());
    assert!(!first.reused && second.reused);
    assert_eq!(first.connection_id, second.connection_id);
}

#[test]
fn status_outside_http_range_is_malformed_and_may_have_been_processed() {
    let dev = DeviceServer::start(|_| Reply::raw(&b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n"[..]));
    let mut client = client();
    let err = client.send_http(http::Request::put(dev.url(PUT_PATH)).body("1").unwrap()).unwrap_err();
    assert!(matches!(err, Error::MalformedResponse { .. }), "{err:?}");
    assert!(err.may_have_been_processed(), "the device answered: it had the command");
    assert_eq!(dev.request_count(), 1);
    // finwatch itself accepts the response; only the conversion refuses it.
    let resp = client.put(&dev.url(PUT_PATH), "1").unwrap();
    assert_eq!(resp.status(), 99);
    assert!(matches!(resp.status_code(), Err(Error::MalformedResponse { .. })));
    assert!(http::Response::try_from(finwatch::Response::default()).is_err());
}

#[test]
fn relative_and_non_http_uris_are_invalid_urls_and_nothing_is_sent() {
    let dev = DeviceServer::keep_alive();
    let mut client = client();
    let mut uris = vec!["/unico/v1/interface/io", "*", "ftp://127.0.0.1/io"];
    if !cfg!(feature = "tls") {
        uris.push("https://127.0.0.1/io"); // needs the `tls` feature
    }
    for uri in uris {
        let req = http::Request::get(uri).body(()).unwrap();
        let err = client.send_http(req).unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{uri}: {err:?}");
        assert!(!err.may_have_been_processed());
    }
    // Authority form (`host:port`) has no scheme either.
    let req = http::Request::get(dev.addr().to_string()).body(()).unwrap();
    assert!(matches!(client.send_http(req), Err(Error::InvalidUrl { .. })));
    let with_user = format!("http://user@{}/", dev.addr());
    let req = http::Request::get(with_user).body(()).unwrap();
    assert!(matches!(client.send_http(req), Err(Error::InvalidUrl { .. })));
    assert_eq!(dev.connections_accepted(), 0);
}

#[test]
fn only_http_1_1_requests_convert() {
    for version in
        [http::Version::HTTP_09, http::Version::HTTP_10, http::Version::HTTP_2, http::Version::HTTP_3]
    {
        let req = http::Request::get("http://10.0.0.5/").version(version).body(()).unwrap();
        let reason = invalid_request(Request::try_from(req));
        assert!(reason.contains("HTTP/1.1 only"), "{version:?}: {reason}");
    }
    let req = http::Request::get("http://10.0.0.5/").body(()).unwrap();
    assert_eq!(req.version(), http::Version::HTTP_11, "the http builder's default");
    assert!(Request::try_from(req).is_ok());
}

#[test]
fn headers_finwatch_cannot_send_are_refused() {
    let base = || http::Request::post("http://10.0.0.5/io");
    // Not UTF-8 (http accepts obs-text; finwatch header values are text).
    let value = http::HeaderValue::from_bytes(b"\xff\xfe").unwrap();
    let reason = invalid_request(Request::try_from(base().header("X-Raw", value).body("1").unwrap()));
    assert!(reason.contains("x-raw"), "{reason}");
    // finwatch sends bodies with Content-Length only.
    invalid_request(Request::try_from(base().header("Transfer-Encoding", "chunked").body("1").unwrap()));
    // A Content-Length that disagrees with the body.
    invalid_request(Request::try_from(base().header("Content-Length", "5").body("1").unwrap()));
    // A matching one is fine, and so is the caller's own Host.
    let req = base().header("Content-Length", "1").header("Host", "device.local").body("1").unwrap();
    assert!(Request::try_from(req).is_ok());
}

#[test]
fn methods_convert_both_ways() {
    for (h, f) in [
        (http::Method::GET, Method::GET),
        (http::Method::HEAD, Method::HEAD),
        (http::Method::POST, Method::POST),
        (http::Method::PUT, Method::PUT),
        (http::Method::DELETE, Method::DELETE),
        (http::Method::OPTIONS, Method::OPTIONS),
        (http::Method::PATCH, Method::PATCH),
        (http::Method::TRACE, Method::TRACE),
    ] {
        assert_eq!(Method::try_from(&h).unwrap(), f);
        assert_eq!(http::Method::from(&f), h);
    }
    // Every token character, both ways.
    let token = "!#$%&'*+-.^_`|~09azAZ";
    let f = Method::new(token).unwrap();
    let h = http::Method::from(f.clone());
    assert_eq!(h.as_str(), token);
    assert_eq!(Method::try_from(h).unwrap(), f);
    // A long extension method (http allocates those).
    let long = "X".repeat(40);
    assert_eq!(http::Method::from(Method::new(&long).unwrap()).as_str(), long);
    invalid_request(Method::try_from(http::Method::CONNECT));
    let connect = http::Request::connect("http://10.0.0.5:80").body(()).unwrap();
    invalid_request(Request::try_from(connect));
}

#[test]
fn request_options_set_the_deadline_and_retryability() {
    let post = |opts: Option<RequestOptions>| {
        let mut b = http::Request::post("http://10.0.0.5/io");
        if let Some(opts) = opts {
            b = b.extension(opts);
        }
        Request::try_from(b.body("1").unwrap()).unwrap()
    };
    assert!(!post(None).is_retryable());
    assert!(!post(Some(RequestOptions::new())).is_retryable());
    assert!(post(Some(RequestOptions::new().retryable(true))).is_retryable());

    // The deadline is the request's own, shorter than the client's 5 s.
    let dev = DeviceServer::start(|_| Reply::stall());
    let mut client = client();
    let get = http::Request::get(dev.url(GET_PATH))
        .extension(RequestOptions::new().timeout(Duration::from_millis(100)))
        .body(())
        .unwrap();
    let start = Instant::now();
    let err = client.send_http(get).unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
}

#[test]
fn send_http_after_a_fin_goes_to_a_new_connection() {
    // The incident, through the http-crate API: finwatch's guarantees hold unchanged.
    let dev = DeviceServer::close_after_response();
    let mut client = client();
    let put = http::Request::put(dev.url(PUT_PATH)).body(r#"{"ioId":25602,"value":1}"#).unwrap();
    assert_eq!(client.send_http(put).unwrap().status(), 200);
    assert!(wait_until(Duration::from_secs(3), || dev.fins_completed() == 1));
    std::thread::sleep(Duration::from_micros(100));
    let get = client.send_http(http::Request::get(dev.url(GET_PATH)).body(()).unwrap()).unwrap();
    assert_eq!(get.status(), 200);
    assert!(!get.extensions().get::<Meta>().unwrap().reused);
    assert_eq!(dev.request_count(), 2);
    drop(client);
    assert!(wait_until(Duration::from_secs(3), || dev.clients_closed_after_fin() == 2));
    assert_eq!(dev.bytes_after_fin(), 0);
}
