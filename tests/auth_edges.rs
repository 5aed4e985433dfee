//! Digest authentication at its edges, end to end against the loopback device: a device (or
//! a man in the middle) that downgrades its challenge, a caller's policy, and request targets
//! that would need escaping in the answer's `uri` parameter.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use finwatch::{Client, DigestPolicy, Error, Request};
use support::*;

fn client() -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    Client::builder().request_timeout(Duration::from_secs(5)).build().unwrap()
}

const SHA256_QOP: &str = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"io\", qop=\"auth\", \
                          algorithm=SHA-256, nonce=\"strong\"\r\nContent-Length: 0\r\n\r\n";
const MD5_BARE: &str = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"io\", algorithm=MD5, \
                        nonce=\"weak\"\r\nContent-Length: 0\r\n\r\n";

/// A device whose session uses SHA-256 with `qop=auth` starts answering every request with an
/// MD5 challenge without `qop` (a man in the middle, say): the client does not answer it. The
/// 401 is the caller's response, and no MD5 answer (nor one without `qop`) is ever sent.
#[test]
fn a_downgraded_challenge_is_not_answered() {
    let downgraded = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&downgraded);
    let dev = DeviceServer::start(move |r| {
        if d.load(Ordering::SeqCst) {
            return Reply::raw(MD5_BARE);
        }
        match r.header("Authorization") {
            Some(a) if a.contains("algorithm=SHA-256") && a.contains("qop=auth") => Reply::ok_for(r, b"{}"),
            _ => Reply::raw(SHA256_QOP),
        }
    });
    let mut c = client();
    let get = || Request::get(&dev.url("/io-state")).digest_auth("op", "pw").build().unwrap();
    let resp = c.send(get()).unwrap();
    assert_eq!((resp.status(), resp.meta().reauthenticated), (200, true));

    downgraded.store(true, Ordering::SeqCst);
    let put = Request::put(&dev.url("/io"), "1").digest_auth("op", "pw").build().unwrap();
    let resp = c.send(put).unwrap();
    assert_eq!((resp.status(), resp.meta().reauthenticated), (401, false), "the downgrade is refused");
    // Still refused on the next command (the session stays SHA-256).
    assert_eq!(c.send(get()).unwrap().status(), 401);

    let reqs = dev.requests();
    assert_eq!(reqs.len(), 4, "one request each after the downgrade, none answered: {reqs:?}");
    for r in &reqs {
        if let Some(a) = r.header("Authorization") {
            assert!(a.contains("algorithm=SHA-256") && a.contains("qop=auth"), "{a}");
        }
    }
}

/// An MD5-only device: answered by default (old devices only do MD5), refused under a policy
/// that requires SHA-256 or `qop`, without a second request.
#[test]
fn an_md5_only_device_is_answered_unless_the_policy_says_no() {
    let dev = DeviceServer::start(|r| match r.header("Authorization") {
        Some(a) if a.contains("nonce=\"weak\"") => Reply::ok_for(r, b"{}"),
        _ => Reply::raw(MD5_BARE),
    });
    let mut c = client();
    let req = |policy: Option<DigestPolicy>| {
        let b = Request::get(&dev.url("/io-state")).digest_auth("op", "pw");
        match policy {
            Some(p) => b.digest_policy(p),
            None => b,
        }
        .build()
        .unwrap()
    };
    assert_eq!(c.send(req(None)).unwrap().status(), 200);
    assert_eq!(dev.request_count(), 2);
    // The session is MD5 now; a strict request sends no answer in advance, and does not answer.
    for policy in [DigestPolicy::new().require_sha256(true), DigestPolicy::new().require_qop(true)] {
        let before = dev.request_count();
        assert_eq!(c.send(req(Some(policy))).unwrap().status(), 401, "{policy:?}");
        let reqs = dev.requests();
        assert_eq!(reqs.len(), before + 1, "{policy:?}: not answered");
        assert_eq!(reqs[before].header("Authorization"), None, "{policy:?}: no MD5 answer in advance");
    }
    // The policy may come before the credentials.
    let b = Request::get(&dev.url("/io")).digest_policy(DigestPolicy::strict()).digest_auth("op", "pw");
    assert_eq!(c.send(b.build().unwrap()).unwrap().status(), 401);
    // The default still works against the same device.
    assert_eq!(c.send(req(None)).unwrap().status(), 200);
}

/// A target with `"` or `\` would need escaping in the `uri` parameter (where it could add
/// parameters on a naive server): refused for Digest requests when the request is built, so
/// nothing is sent; percent-encoded, it goes out and the `uri` parameter is the target.
#[test]
fn targets_that_would_need_escaping_are_refused_for_digest() {
    let dev = DeviceServer::start(|r| match r.header("Authorization") {
        Some(_) => Reply::ok_for(r, b"{}"),
        None => Reply::raw(SHA256_QOP),
    });
    for target in [r#"/a",username="admin",x=""#, "/a\\b", "/q?x=\""] {
        let url = format!("http://{}{target}", dev.addr());
        let err = Request::get(&url).digest_auth("op", "pw").build().unwrap_err();
        assert!(matches!(err, Error::InvalidRequest { .. }), "{target}: {err:?}");
        assert!(err.to_string().contains("%22"), "{err}");
        // Either order of the builder calls.
        let err = Request::builder(finwatch::Method::GET, &url).digest_auth("op", "pw").build();
        assert!(err.is_err());
        // Without Digest, such a target is the caller's business, as before.
        assert!(Request::get(&url).build().is_ok(), "{target}");
    }
    assert_eq!(dev.request_count(), 0, "nothing was sent");

    let mut c = client();
    let target = "/a%22,username=%22admin/io?x=%5C";
    let req = Request::get(&dev.url(target)).digest_auth("op", "pw").build().unwrap();
    assert_eq!(c.send(req).unwrap().status(), 200);
    let reqs = dev.requests();
    let auth = reqs[1].header("Authorization").unwrap();
    assert_eq!(reqs[1].target, target);
    assert!(auth.contains(&format!("uri=\"{target}\"")), "{auth}");
    assert_eq!(auth.matches("username=\"").count(), 1, "{auth}");
}
