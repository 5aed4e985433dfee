//! `Request::head`, `Request::delete` and `Client::head` on the wire; `Display` and `FromStr`
//! of `Method` and `Url`.

mod support;

use std::time::Duration;

use finwatch::{Client, Method, Request, Url};
use support::*;

fn client() -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    Client::builder().request_timeout(Duration::from_secs(5)).build().unwrap()
}

#[test]
fn head_gets_the_headers_and_no_body_and_the_connection_stays_in_step() {
    let dev = DeviceServer::start(|r| Reply::ok_for(r, b"0123456789"));
    let mut c = client();
    let resp = c.head(&dev.url("/firmware")).unwrap();
    assert_eq!((resp.status(), resp.header("Content-Length")), (200, Some("10")));
    assert!(resp.body().is_empty());
    // The same connection then carries a GET whose body is read whole: the HEAD response's
    // Content-Length was not taken for a body.
    let resp = c.send(Request::head(&dev.url("/firmware")).build().unwrap()).unwrap();
    assert!(resp.body().is_empty() && resp.meta().reused);
    let resp = c.get(&dev.url("/firmware")).unwrap();
    assert_eq!(resp.body(), b"0123456789");
    assert!(resp.meta().reused);
    let methods: Vec<_> = dev.requests().iter().map(|r| (r.method.clone(), r.target.clone())).collect();
    assert_eq!(
        methods,
        [("HEAD", "/firmware"), ("HEAD", "/firmware"), ("GET", "/firmware")]
            .map(|(m, t)| (m.into(), t.into()))
    );
    assert_eq!(dev.connections_accepted(), 1);
    // A HEAD request carries no body and no Content-Length.
    assert!(dev.requests().iter().all(|r| r.body.is_empty() && r.header("Content-Length").is_none()));
}

#[test]
fn delete_request_builder() {
    let dev = DeviceServer::start(|r| Reply::ok_for(r, b"{}"));
    let mut c = client();
    let req = Request::delete(&dev.url("/schedule/7")).header("X-Token", "1").build().unwrap();
    assert_eq!(req.method(), &Method::DELETE);
    assert!(req.is_retryable(), "DELETE is idempotent");
    assert_eq!(c.send(req).unwrap().status(), 200);
    let got = dev.requests();
    assert_eq!((got[0].method.as_str(), got[0].target.as_str()), ("DELETE", "/schedule/7"));
    assert_eq!(got[0].header("X-Token"), Some("1"));
    assert!(got[0].body.is_empty() && got[0].header("Content-Length").is_none());
    // An invalid URL is the builder's error, as for the other methods.
    assert_eq!(Request::delete("ftp://10.0.0.5/").build().unwrap_err().kind(), "invalid_url");
    assert_eq!(Request::head("10.0.0.5/").build().unwrap_err().kind(), "invalid_url");
}

#[test]
fn method_display_and_from_str() {
    for m in [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::PATCH,
        Method::TRACE,
    ] {
        let s = m.to_string();
        assert_eq!(s, m.as_str());
        assert_eq!(s.parse::<Method>().unwrap(), m);
    }
    // Extension methods: any token (RFC 9110 §9.1, tchar), kept as written.
    for name in ["PROPFIND", "M-SEARCH", "REBOOT", "x!#$%&'*+-.^_`|~9"] {
        let m: Method = name.parse().unwrap();
        assert_eq!((m.as_str(), m.to_string()), (name, name.to_string()));
        assert!(!m.is_idempotent());
    }
    // Case-sensitive: `get` is an extension method, not GET (so it is not idempotent).
    let lower: Method = "get".parse().unwrap();
    assert_ne!(lower, Method::GET);
    assert!(!lower.is_idempotent());
    // Not tokens, and CONNECT (finwatch does not tunnel).
    for bad in ["", "GET /", "GET\r\n", "G\0T", "PÜT", "(GET)", "GET:", "CONNECT"] {
        let err = bad.parse::<Method>().unwrap_err();
        assert_eq!(err.kind(), "invalid_request", "{bad:?}");
    }
}

#[test]
fn url_display_parses_back_to_the_same_url() {
    let cases = [
        ("http://10.0.0.5", "http://10.0.0.5/"),
        ("http://10.0.0.5:80/io", "http://10.0.0.5/io"),
        ("HTTP://Device.local:8080?x=1#frag", "http://Device.local:8080/?x=1"),
        ("http://device-01/a/b%20c?d=e&f", "http://device-01/a/b%20c?d=e&f"),
        ("http://[::1]:9000/", "http://[::1]:9000/"),
        ("http://[fe80::1%25eth0]/io", "http://[fe80::1%25eth0]/io"),
        ("http://[fe80::1%eth0]:81/io", "http://[fe80::1%25eth0]:81/io"),
        ("http://[FE80::1%25Eth0]/", "http://[FE80::1%25Eth0]/"),
        ("http://192.168.1.8:65535/x", "http://192.168.1.8:65535/x"),
    ];
    for (input, shown) in cases {
        let url: Url = input.parse().unwrap();
        assert_eq!(url, Url::parse(input).unwrap());
        assert_eq!(url.to_string(), shown, "{input}");
        let again: Url = shown.parse().unwrap();
        assert_eq!(again, url, "{input} -> {shown}");
        assert_eq!(again.to_string(), shown);
    }
    // FromStr is the parser: it refuses what `Url::parse` refuses, with the same error.
    for bad in
        ["ftp://10.0.0.5/", "http://admin:pw@10.0.0.5/", "http://10.0.5/", "http://10.0.0.5:0/", "10.0.0.5"]
    {
        let a = bad.parse::<Url>().unwrap_err();
        let b = Url::parse(bad).unwrap_err();
        assert_eq!((a.kind(), a.to_string()), (b.kind(), b.to_string()), "{bad}");
    }
}

#[cfg(feature = "tls")]
#[test]
fn https_url_display_keeps_the_scheme_and_its_default_port() {
    let url: Url = "https://10.0.0.5:443/io".parse().unwrap();
    assert_eq!(url.to_string(), "https://10.0.0.5/io");
    let url: Url = "https://10.0.0.5:80/io".parse().unwrap();
    assert_eq!(url.to_string(), "https://10.0.0.5:80/io");
    assert_eq!(url.to_string().parse::<Url>().unwrap(), url);
}
