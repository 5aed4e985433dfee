//! The crate's one error type.
//!
//! Every variant is named for what happened to the caller's request, and every variant answers
//! the question a control loop must ask before it decides what to do next: *may the device have
//! acted on this command?* ([`Error::may_have_been_processed`]).

use std::fmt;
use std::io;

/// How far an exchange had got when it failed: the part of an [`Error`] that says whether the
/// device can have received the request.
///
/// ```
/// use finwatch::{Error, Stage};
/// // The deadline passed while the request was being written: the device cannot have it all.
/// let e = Error::DeadlineExceeded { stage: Stage::Sending };
/// assert!(!e.may_have_been_processed());
/// assert!(Stage::AwaitingResponse.may_have_been_processed());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Waiting in the host's queue for a connection; nothing was sent.
    Queued,
    /// The connection for the request was still being established; nothing was sent.
    Connecting,
    /// Less than the request's head was written: the device cannot have parsed it.
    Sending,
    /// The request's head was written, not all of its body: the device may have acted on the
    /// head (many act on it and answer early, `200` or `413`, before reading the body).
    SendingBody,
    /// The whole request was written; no byte of the response had arrived.
    AwaitingResponse,
    /// Part of the response had arrived.
    ReadingResponse,
}

impl Stage {
    /// Whether a request that failed at this stage may have been acted on by the device.
    ///
    /// A device that did not receive the whole request head cannot have processed it; once it
    /// had the head, it may have acted on it, whatever became of the body (embedded servers
    /// commonly act on the head, answer and close with the body unread). `true` exactly for
    /// [`Stage::SendingBody`], [`Stage::AwaitingResponse`] and [`Stage::ReadingResponse`].
    ///
    /// ```
    /// use finwatch::Stage;
    /// for stage in [Stage::Queued, Stage::Connecting, Stage::Sending] {
    ///     assert!(!stage.may_have_been_processed());
    /// }
    /// for stage in [Stage::SendingBody, Stage::AwaitingResponse, Stage::ReadingResponse] {
    ///     assert!(stage.may_have_been_processed());
    /// }
    /// ```
    pub fn may_have_been_processed(self) -> bool {
        matches!(self, Stage::SendingBody | Stage::AwaitingResponse | Stage::ReadingResponse)
    }

    fn as_str(self) -> &'static str {
        match self {
            Stage::Queued => "while queued",
            Stage::Connecting => "while connecting",
            Stage::Sending => "while sending the request head",
            Stage::SendingBody => "while sending the request body, after its head",
            Stage::AwaitingResponse => "after the request was sent, before any response byte",
            Stage::ReadingResponse => "while reading the response",
        }
    }
}

/// Why a connection was lost under a request (in [`Error::ConnectionLost`]).
///
/// ```
/// use finwatch::{Error, LostCause, Stage};
/// fn describe(e: &Error) -> &'static str {
///     match e {
///         Error::ConnectionLost { cause: LostCause::PeerClosed, .. } => "the device closed it (FIN)",
///         Error::ConnectionLost { cause: LostCause::Reset, .. } => "the connection was reset (RST)",
///         _ => "another error",
///     }
/// }
/// let e = Error::ConnectionLost { cause: LostCause::Reset, stage: Stage::AwaitingResponse, source: None };
/// assert_eq!(describe(&e), "the connection was reset (RST)");
/// assert_eq!(e.kind(), "connection_reset");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostCause {
    /// The device closed its side (FIN) before the response was complete.
    PeerClosed,
    /// The connection was reset (RST) or failed with a socket error.
    Reset,
    /// The device sent bytes nobody had asked for (before the request was written, or after
    /// its response): the stream was out of step, so the connection was dropped.
    UnsolicitedData,
}

/// A configured limit that a response exceeded (in [`Error::LimitExceeded`]); the limits are
/// set with [`crate::ClientBuilder::limits`].
///
/// ```
/// use finwatch::{Client, Error, Limit, Limits};
/// # let base = finwatch::__doc_device();
/// // The device's answer, {"value":1}, is 11 bytes.
/// let limits = Limits { max_body_bytes: 4, ..Limits::default() };
/// let mut client = Client::builder().limits(limits).build()?;
/// let err = client.get(&format!("{base}/io-state")).unwrap_err();
/// assert!(matches!(err, Error::LimitExceeded { limit: Limit::BodyBytes, max: 4 }));
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Bytes in the response head (status line and header fields), or in a chunked trailer.
    HeadBytes,
    /// Number of header fields in the response head.
    HeaderCount,
    /// Bytes in the response body.
    BodyBytes,
    /// Number of interim (1xx) responses before the final one.
    InterimResponses,
}

/// Everything that can go wrong with a request.
///
/// Each variant is named for what happened to the request, and [`Error::may_have_been_processed`]
/// answers the question a control loop must ask before it sends a command again: *may the device
/// have acted on it?* The [crate docs](crate#when-a-request-fails) summarise when a request is
/// retried before an error is reported; the fault matrix (`FAULTS.md`) lists the error for every
/// point at which a device can fail. `Display` gives one line for a log, saying what happened and
/// whether the device may have acted; the cause behind it (the socket error, a retry's failure) is
/// not repeated there but is its `source`, so that a printed chain (`{:#}` of an `anyhow::Error`,
/// or a walk of `source()`) shows each text once.
///
/// ```
/// use finwatch::{Client, Error};
/// // A port on which nothing listens: the connect is refused, and nothing was sent.
/// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
/// let mut client = Client::new()?;
/// match client.put(&format!("http://127.0.0.1:{port}/unico/v1/interface/io"), "1") {
///     Err(e @ Error::ConnectFailed { .. }) => {
///         assert!(!e.may_have_been_processed()); // sending it again cannot apply it twice
///         assert_eq!(e.kind(), "connect_failed");
///         println!("{e}"); // could not connect to 127.0.0.1:…
///         // The socket error is its source: Connection refused (os error 111)
///         assert!(std::error::Error::source(&e).is_some());
///     }
///     other => panic!("expected a refused connect, got {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be used: not `http://host[:port]/path?query`.
    ///
    /// ```
    /// let err = finwatch::Request::get("http://admin:s3cret@10.0.0.5/io").build().unwrap_err();
    /// assert_eq!(err.to_string(), r#"invalid URL "http://admin:***@10.0.0.5/io": user info in URLs is not supported"#);
    /// assert!(!format!("{err:?}").contains("s3cret"));
    /// ```
    InvalidUrl {
        /// The URL as given, except for the password of any user info, which is replaced by
        /// `***` (`http://admin:***@10.0.0.5/`; the user name is kept), so that neither
        /// `Display` nor `Debug` puts a password in a log. finwatch refuses user info, but a
        /// password pasted into a URL is still a secret.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The request was rejected before anything was sent (invalid method, target or header,
    /// a header with CR/LF/NUL, a conflicting Content-Length, …).
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// The host name did not resolve to an address, or its lookup did not finish within the
    /// connect timeout (`source.kind()` is then `TimedOut`). Nothing was sent.
    Resolve {
        /// `host:port` as in the URL.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The TCP connection could not be established (refused, unreachable, …). Nothing was sent.
    ConnectFailed {
        /// `host:port` as in the URL.
        host: String,
        /// The socket error.
        source: io::Error,
    },
    /// The TCP handshake did not finish within the connect timeout. Nothing was sent.
    ConnectTimedOut {
        /// `host:port` as in the URL.
        host: String,
    },
    /// The request's deadline passed.
    DeadlineExceeded {
        /// How far the exchange had got.
        stage: Stage,
    },
    /// The connection was closed or reset under the request, and it was not (or could not
    /// safely be) retried.
    ConnectionLost {
        /// FIN or RST.
        cause: LostCause,
        /// How far the exchange had got.
        stage: Stage,
        /// The socket error behind a reset, if there was one.
        source: Option<io::Error>,
    },
    /// The response broke HTTP/1.1 framing or syntax (a connection it arrived on is never
    /// reused), or could not be converted (see the `http` feature).
    MalformedResponse {
        /// What was wrong, in words.
        what: String,
    },
    /// The response exceeded a configured limit. The connection was not reused.
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// Its configured value.
        max: usize,
    },
    /// The request was lost after the device may have received it, retried on a fresh
    /// connection, and the retry failed too. Both failures are kept: the first one may have
    /// reached the device even when the retry did not. (A retry after a loss that provably did
    /// not reach the device reports only its own failure; `Stats::retries` counts it.)
    RetryFailed {
        /// The first lost attempt.
        first: Box<Error>,
        /// The retry's failure.
        last: Box<Error>,
    },
    /// The client was shut down before the request completed. `stage` says how far it had got.
    Shutdown {
        /// How far the exchange had got.
        stage: Stage,
    },
    /// The caller's body stream failed: the reader of a streamed request body
    /// ([`crate::Client::send_streaming`]: it returned an error, or ended before the announced
    /// length; `stage` is then [`Stage::SendingBody`]), or the writer a response body was
    /// streamed into ([`crate::Client::send_to`]; `stage` is then [`Stage::ReadingResponse`]).
    /// The connection was closed (the device would have waited for the rest of the body, or the
    /// rest of the response would have been read as the next one's); the client stays usable.
    BodyStream {
        /// How far the exchange had got.
        stage: Stage,
        /// The reader's or writer's error (`UnexpectedEof` for a reader that ended early).
        source: io::Error,
    },
    /// The event loop itself failed (the poller). The client may not be usable.
    Io(io::Error),
    /// The TLS handshake with the device failed (`https://`, feature `tls`): no application
    /// byte was sent. `reason` says why (an expired certificate, a name or address the
    /// certificate is not for, an unknown issuer, a pin that does not match, the device's alert).
    Tls {
        /// `https://host:port` as in the URL.
        host: String,
        /// What failed.
        failure: TlsFailure,
        /// Why, in words.
        reason: String,
    },
}

/// What failed in a TLS handshake (in [`Error::Tls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The handshake itself: no common version or cipher suite, a device's alert, a malformed
    /// message, a connection closed during it.
    Handshake,
    /// The device's certificate was refused: expired, not yet valid, not for this name or
    /// address, issued by a CA that is not trusted.
    CertificateRefused,
    /// The device's public key is not one of the pinned ones (`sha256//…`).
    PinMismatch,
}

impl Error {
    /// Whether the device may have acted on the request.
    ///
    /// `false` is a guarantee: the device did not receive the whole request, so re-sending it
    /// cannot apply it twice. `true` means it may have; only the caller can decide whether to
    /// send a non-idempotent command again. `true` for the stages
    /// [`Stage::AwaitingResponse`] and [`Stage::ReadingResponse`], for errors about the response
    /// itself ([`Error::MalformedResponse`], [`Error::LimitExceeded`]: the device answered), for
    /// a [`Error::RetryFailed`] whose either attempt may have been processed, and for
    /// [`Error::Io`] (unknown, so assumed).
    ///
    /// ```
    /// use finwatch::{Error, LostCause, Stage};
    /// let refused = Error::ConnectTimedOut { host: "10.0.0.5:80".into() };
    /// assert!(!refused.may_have_been_processed());
    /// let stage = Stage::AwaitingResponse;
    /// let lost = Error::ConnectionLost { cause: LostCause::PeerClosed, stage, source: None };
    /// assert!(lost.may_have_been_processed());
    /// ```
    pub fn may_have_been_processed(&self) -> bool {
        match self {
            Error::InvalidUrl { .. }
            | Error::InvalidRequest { .. }
            | Error::Resolve { .. }
            | Error::ConnectFailed { .. }
            | Error::ConnectTimedOut { .. }
            | Error::Tls { .. } => false,
            Error::DeadlineExceeded { stage }
            | Error::ConnectionLost { stage, .. }
            | Error::Shutdown { stage }
            | Error::BodyStream { stage, .. } => stage.may_have_been_processed(),
            // The device answered (badly): it had the request.
            Error::MalformedResponse { .. } | Error::LimitExceeded { .. } => true,
            Error::RetryFailed { first, last } => {
                first.may_have_been_processed() || last.may_have_been_processed()
            }
            // Unknown: be conservative.
            Error::Io(_) => true,
        }
    }

    /// A short, stable, machine-readable name of the variant (used by `ctl --json`):
    /// `invalid_url`, `invalid_request`, `resolve`, `connect_failed`, `connect_timed_out`,
    /// `deadline_exceeded`, `connection_closed`, `connection_reset`,
    /// `connection_unsolicited_data`, `malformed_response`, `limit_exceeded`, `shutdown`,
    /// `body_stream`, `io`, and with the `tls` feature `tls_handshake`, `tls_certificate`,
    /// `tls_pin_mismatch`; a [`Error::RetryFailed`] has the kind of its last failure.
    ///
    /// ```
    /// use finwatch::{Error, Stage};
    /// assert_eq!(Error::DeadlineExceeded { stage: Stage::Queued }.kind(), "deadline_exceeded");
    /// let url = finwatch::Request::get("ftp://10.0.0.5/").build().unwrap_err();
    /// assert_eq!(url.kind(), "invalid_url");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidUrl { .. } => "invalid_url",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::Resolve { .. } => "resolve",
            Error::ConnectFailed { .. } => "connect_failed",
            Error::ConnectTimedOut { .. } => "connect_timed_out",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            Error::ConnectionLost { cause: LostCause::PeerClosed, .. } => "connection_closed",
            Error::ConnectionLost { cause: LostCause::Reset, .. } => "connection_reset",
            Error::ConnectionLost { cause: LostCause::UnsolicitedData, .. } => "connection_unsolicited_data",
            Error::MalformedResponse { .. } => "malformed_response",
            Error::LimitExceeded { .. } => "limit_exceeded",
            Error::RetryFailed { last, .. } => last.kind(),
            Error::Shutdown { .. } => "shutdown",
            Error::BodyStream { .. } => "body_stream",
            Error::Io(_) => "io",
            Error::Tls { failure: TlsFailure::Handshake, .. } => "tls_handshake",
            Error::Tls { failure: TlsFailure::CertificateRefused, .. } => "tls_certificate",
            Error::Tls { failure: TlsFailure::PinMismatch, .. } => "tls_pin_mismatch",
        }
    }

    pub(crate) fn invalid_request(reason: impl Into<String>) -> Error {
        Error::InvalidRequest { reason: reason.into() }
    }

    pub(crate) fn malformed(what: impl Into<String>) -> Error {
        Error::MalformedResponse { what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // finwatch's own errors hold the URL redacted already; one made by a caller may not.
            Error::InvalidUrl { url, reason } => {
                write!(f, "invalid URL {:?}: {reason}", crate::url::redact_userinfo(url))
            }
            Error::InvalidRequest { reason } => write!(f, "invalid request: {reason}"),
            // The io::Error of these is their `source()`, not repeated here.
            Error::Resolve { host, .. } => write!(f, "could not resolve {host}"),
            Error::ConnectFailed { host, .. } => write!(f, "could not connect to {host}"),
            Error::ConnectTimedOut { host } => write!(f, "connect to {host} timed out"),
            Error::DeadlineExceeded { stage } => {
                write!(f, "request deadline exceeded {}", stage.as_str())?;
                if stage.may_have_been_processed() {
                    write!(f, "; the device may have acted on it")
                } else {
                    write!(f, "; the device did not receive it")
                }
            }
            Error::ConnectionLost { cause, stage, source } => {
                match cause {
                    LostCause::PeerClosed => write!(f, "device closed the connection ")?,
                    LostCause::Reset => write!(f, "connection reset ")?,
                    LostCause::UnsolicitedData => write!(f, "device sent bytes it was not asked for ")?,
                }
                write!(f, "{}", stage.as_str())?;
                if let Some(e) = source
                    && is_own_words(e)
                {
                    write!(f, " ({e})")?;
                }
                if stage.may_have_been_processed() {
                    write!(f, "; the device may have acted on it")
                } else {
                    write!(f, "; the device did not receive it")
                }
            }
            Error::MalformedResponse { what } => write!(f, "malformed response: {what}"),
            Error::LimitExceeded { limit, max } => {
                let what = match limit {
                    Limit::HeadBytes => "response head bytes",
                    Limit::HeaderCount => "response header fields",
                    Limit::BodyBytes => "response body bytes",
                    Limit::InterimResponses => "interim (1xx) responses",
                };
                write!(f, "response exceeded the limit of {max} {what}")
            }
            // `last` is the `source()`; `first` is not in the chain, so its own causes are
            // written out here.
            Error::RetryFailed { first, .. } => {
                write!(f, "the retry of a lost request failed (the first attempt: ")?;
                let mut cause: Option<&dyn std::error::Error> = Some(&**first);
                let mut sep = "";
                while let Some(e) = cause {
                    write!(f, "{sep}{e}")?;
                    sep = ": ";
                    cause = e.source();
                }
                write!(f, ")")
            }
            Error::Shutdown { stage } => write!(f, "client shut down {}", stage.as_str()),
            Error::BodyStream { stage, .. } => {
                if *stage == Stage::ReadingResponse {
                    write!(f, "the writer of the response body failed {}", stage.as_str())?;
                } else {
                    write!(f, "the reader of the request body failed {}", stage.as_str())?;
                }
                if stage.may_have_been_processed() {
                    write!(f, "; the device may have acted on it")
                } else {
                    write!(f, "; the device did not receive it")
                }
            }
            Error::Io(_) => write!(f, "event loop failed"),
            Error::Tls { host, failure, reason } => {
                let what = match failure {
                    TlsFailure::Handshake => "TLS handshake with",
                    TlsFailure::CertificateRefused => "certificate refused for",
                    TlsFailure::PinMismatch => "public key pin mismatch for",
                };
                write!(f, "{what} {host}: {reason}; nothing was sent")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Resolve { source, .. } | Error::ConnectFailed { source, .. } => Some(source),
            Error::ConnectionLost { source: Some(e), .. } if !is_own_words(e) => Some(e),
            Error::RetryFailed { last, .. } => Some(&**last),
            Error::BodyStream { source, .. } => Some(source),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Whether the `io::Error` under a lost connection is finwatch's own account of it rather than a
/// cause: a TLS stream that ended with a bare FIN, no `close_notify` (the response may be
/// truncated), is told by the TLS driver in an error of kind `UnexpectedEof`, which no socket error
/// has. Its text is part of `Display`, and `source()` does not return it (it stays in the variant's
/// `source` field).
fn is_own_words(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::UnexpectedEof
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// `Result` with this crate's [`Error`].
///
/// ```
/// fn switch_on(client: &mut finwatch::Client, base: &str) -> finwatch::Result<u16> {
///     Ok(client.put(&format!("{base}/unico/v1/interface/io"), r#"{"value":1}"#)?.status())
/// }
/// # let base = finwatch::__doc_device();
/// assert_eq!(switch_on(&mut finwatch::Client::new()?, &base)?, 200);
/// # Ok::<(), finwatch::Error>(())
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;
