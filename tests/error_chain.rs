//! An error printed as a chain (each `Display`, then its `source()`'s, as `anyhow`'s `{:#}` or
//! `std::error::Report` print it) says every text once: no level repeats what its source says.

use std::error::Error as _;
use std::io;

use finwatch::{Client, Error, LostCause, Stage};

/// The `Display` of `e` and of every error down its `source()` chain.
fn chain(e: &Error) -> Vec<String> {
    let mut texts = vec![e.to_string()];
    let mut cause = e.source();
    while let Some(c) = cause {
        texts.push(c.to_string());
        cause = c.source();
    }
    texts
}

/// No level of the chain contains the text of a level below it.
fn assert_no_repeats(e: &Error) -> Vec<String> {
    let texts = chain(e);
    for (i, upper) in texts.iter().enumerate() {
        assert!(!upper.is_empty(), "level {i} of {texts:?} is empty");
        for lower in &texts[i + 1..] {
            assert!(
                !upper.contains(lower.as_str()),
                "{upper:?} repeats its source {lower:?} (chain {texts:?})"
            );
        }
    }
    texts
}

fn refused() -> io::Error {
    io::Error::from(io::ErrorKind::ConnectionRefused)
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "reset by the test device")
}

#[test]
fn every_error_with_a_source_says_its_text_once() {
    let host = "10.0.0.5:80".to_string();
    let lost =
        |source| Error::ConnectionLost { cause: LostCause::Reset, stage: Stage::AwaitingResponse, source };
    let cases = [
        Error::Resolve { host: "device.invalid:80".into(), source: io::Error::other("no such host") },
        Error::ConnectFailed { host: host.clone(), source: refused() },
        lost(Some(reset())),
        lost(None),
        Error::Io(io::Error::other("epoll_wait failed")),
        Error::RetryFailed {
            first: Box::new(lost(Some(reset()))),
            last: Box::new(Error::ConnectFailed { host: host.clone(), source: refused() }),
        },
        Error::ConnectTimedOut { host },
    ];
    for e in &cases {
        assert_no_repeats(e);
    }
}

#[test]
fn the_chain_still_says_everything() {
    let e = Error::ConnectFailed { host: "10.0.0.5:80".into(), source: refused() };
    let texts = assert_no_repeats(&e);
    assert_eq!(texts, ["could not connect to 10.0.0.5:80".to_string(), refused().to_string()]);
    let io = e.source().and_then(|s| s.downcast_ref::<io::Error>()).expect("the io::Error is the source");
    assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);

    // A failed retry: its own text names the first attempt (and that attempt's cause, which is
    // not in the chain); the retry's failure is the source.
    let first = Error::ConnectionLost {
        cause: LostCause::Reset,
        stage: Stage::AwaitingResponse,
        source: Some(reset()),
    };
    let first_text = first.to_string();
    let e = Error::RetryFailed {
        first: Box::new(first),
        last: Box::new(Error::ConnectFailed { host: "10.0.0.5:80".into(), source: refused() }),
    };
    let texts = assert_no_repeats(&e);
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts[0].contains(&first_text) && texts[0].contains("reset by the test device"), "{texts:?}");
    assert_eq!(texts[1], "could not connect to 10.0.0.5:80");
    assert_eq!(e.kind(), "connect_failed");
    assert!(e.may_have_been_processed());
}

/// A TLS stream ended by a bare FIN (no `close_notify`) is told in finwatch's own words, in an
/// `io::Error` of kind `UnexpectedEof` (src/driver/tls.rs): part of the message, not a cause.
#[test]
fn a_truncated_tls_stream_is_said_once_in_the_message() {
    let own = io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the device closed the connection without close_notify: the response may be truncated",
    );
    let e =
        Error::ConnectionLost { cause: LostCause::Reset, stage: Stage::ReadingResponse, source: Some(own) };
    let texts = assert_no_repeats(&e);
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("without close_notify") && texts[0].contains("may have acted"), "{texts:?}");
    assert!(
        matches!(&e, Error::ConnectionLost { source: Some(s), .. } if s.kind() == io::ErrorKind::UnexpectedEof)
    );
}

#[test]
fn a_refused_connect_from_the_client() {
    // A port on which nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = Client::new().unwrap().get(&format!("http://127.0.0.1:{port}/")).unwrap_err();
    assert_eq!(err.kind(), "connect_failed", "{err:?}");
    let texts = assert_no_repeats(&err);
    assert_eq!(texts[0], format!("could not connect to 127.0.0.1:{port}"));
    assert_eq!(texts.len(), 2, "{texts:?}");
}
