//! Streamed bodies over TLS (`send_streaming`, `send_to`): what tests/streaming.rs shows on
//! plain TCP, through rustls. A firmware image goes up, and a log comes down, to an `https://`
//! device as exactly as to an `http://` one: the TLS writer takes at most a record's worth of
//! plaintext at a time from the body's buffer, and credits it as written only once its records
//! are in the socket; the reader hands each decrypted read to the sink.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use finwatch::{Client, Error, Request, Stage, TlsConfig};
use support::tls::*;
use support::{chunked_response, content_length_response, pattern, pattern_bytes};

const MIB: usize = 1024 * 1024;

/// Gives the pattern for `len` bytes, in reads of whatever size the client asks for.
struct PatternReader {
    pos: u64,
    len: u64,
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let end = self.len.min(self.pos + buf.len() as u64);
        let n = (end - self.pos) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(self.pos + k as u64);
        }
        self.pos = end;
        Ok(n)
    }
}

/// A sink that fails once it has taken `fail_after` bytes.
struct FailingSink {
    taken: usize,
    fail_after: usize,
}

impl Write for FailingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.taken >= self.fail_after {
            return Err(io::Error::other("disk full"));
        }
        self.taken += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn client() -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    let tls = TlsConfig::new().add_ca_pem(Pki::get().ca_pem.as_bytes()).unwrap();
    Client::builder().tls(tls).request_timeout(Duration::from_secs(30)).build().unwrap()
}

#[test]
fn a_4_mib_upload_over_tls_arrives_exact_and_the_connection_is_reused() {
    for versions in [Versions::Tls12, Versions::Tls13] {
        let dev = TlsDevice::with_handler(TlsOptions { versions, ..TlsOptions::default() }, |req| {
            TlsReply::raw(content_length_response(req.body.len().to_string().as_bytes()), TlsAfter::KeepAlive)
        });
        let mut c = client();
        let len = 4 * MIB as u64 + 7; // not a whole number of records
        let put = Request::put(&dev.url("/firmware"), "").build().unwrap();
        let resp = c.send_streaming(put, PatternReader { pos: 0, len }, len).unwrap();
        assert_eq!((resp.status(), resp.body()), (200, len.to_string().as_bytes()), "{versions:?}");
        let got = &dev.requests()[0];
        assert_eq!(got.header("Content-Length"), Some(&*len.to_string()), "{versions:?}");
        assert!(got.body == pattern_bytes(len as usize), "{versions:?}: the body arrived altered");
        assert_eq!(c.put(&dev.url("/io"), "{}").unwrap().status(), 200);
        assert_eq!((dev.connections(), c.stats().reuses), (1, 1), "{versions:?}");
    }
}

#[test]
fn a_4_mib_download_over_tls_into_a_writer_arrives_exact() {
    let body = Arc::new(pattern_bytes(4 * MIB + 7));
    let served = Arc::clone(&body);
    let dev = TlsDevice::with_handler(TlsOptions::default(), move |req| match req.target.as_str() {
        "/cl" => TlsReply::raw(content_length_response(&served), TlsAfter::KeepAlive),
        "/chunked" => TlsReply::raw(chunked_response(&served), TlsAfter::KeepAlive),
        "/close" => {
            let mut bytes = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
            bytes.extend_from_slice(&served);
            TlsReply::raw(bytes, TlsAfter::CloseNotify)
        }
        _ => TlsReply::raw(content_length_response(b"{}"), TlsAfter::KeepAlive),
    });
    let mut c = client();
    for path in ["/cl", "/chunked", "/close"] {
        let get = Request::get(&dev.url(path)).build().unwrap();
        let (resp, got) = c.send_to(get, Vec::new()).unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.body().is_empty(), "{path}: the body was kept in the response too");
        assert!(got == *body, "{path}: {} bytes, not the body sent", got.len());
    }
    assert_eq!(c.get(&dev.url("/state")).unwrap().status(), 200);
    // All three on one connection (the streamed bodies left it usable); the close-delimited
    // one ended it, so the next command went out on another.
    let conn = |path: &str| dev.requests().iter().find(|r| r.target == path).map(|r| r.conn);
    assert_eq!([conn("/chunked"), conn("/close")], [conn("/cl"); 2]);
    assert_ne!(conn("/state"), conn("/close"));
}

#[test]
fn a_failing_sink_over_tls_fails_typed_and_the_client_goes_on() {
    let body = Arc::new(pattern_bytes(4 * MIB));
    let served = Arc::clone(&body);
    let dev = TlsDevice::with_handler(TlsOptions::default(), move |req| match req.target.as_str() {
        "/big" => TlsReply::raw(content_length_response(&served), TlsAfter::KeepAlive),
        _ => TlsReply::raw(content_length_response(b"{}"), TlsAfter::KeepAlive),
    });
    let mut c = client();
    assert_eq!(c.get(&dev.url("/state")).unwrap().status(), 200);
    let started = Instant::now();
    let get = Request::get(&dev.url("/big")).build().unwrap();
    let err = c.send_to(get, FailingSink { taken: 0, fail_after: MIB }).map(|(r, _)| r).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    match &err {
        Error::BodyStream { stage: Stage::ReadingResponse, source } => {
            assert_eq!(source.to_string(), "disk full")
        }
        other => panic!("expected a body stream error, got {other:?}"),
    }
    assert!(err.may_have_been_processed());
    assert!(c.connections().is_empty(), "the connection was kept: {:?}", c.connections());
    assert_eq!((c.stats().retries, dev.count_matching(|r| r.target == "/big")), (0, 1));
    assert_eq!(c.get(&dev.url("/state")).unwrap().status(), 200);
}

/// A device that reads the head and a little of a 16 MiB streamed upload, answers `413` and
/// closes with the rest unread (its kernel resets the connection under the client's writes):
/// the answer is the outcome, the reader is not drained, nothing is sent twice.
#[test]
fn an_early_413_while_uploading_over_tls_is_the_answer() {
    let cut = TlsCutRequest {
        after_requests: 0,
        once: false,
        after_bytes: 96 << 10,
        respond: b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        then: TlsCut::CloseUnread,
    };
    let dev = TlsDevice::start(TlsOptions { cut_request: Some(cut), ..TlsOptions::default() });
    let mut c = client();
    let len = 16 * MIB as u64;
    for i in 0..3 {
        let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = CountingReader { inner: PatternReader { pos: 0, len }, read: Arc::clone(&read) };
        let post = Request::post(&dev.url(&format!("/firmware/{i}")), "").build().unwrap();
        let resp = c.send_streaming(post, counted, len).unwrap();
        assert_eq!(resp.status(), 413, "upload {i}");
        assert!(
            read.load(std::sync::atomic::Ordering::Relaxed) < len,
            "upload {i}: the whole body was read anyway"
        );
    }
    assert_eq!(c.stats().retries, 0);
    assert_eq!(dev.requests_cut_after_reading(), 3, "an upload was sent twice");
}

/// Counts what the inner reader gave.
struct CountingReader {
    inner: PatternReader,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}
