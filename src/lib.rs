//! finwatch: a raw-socket HTTP/1.1 client on `mio` for control loops that command embedded
//! devices, built so that a request is **never written on a connection the device has closed**.
//!
//! Embedded HTTP servers close connections after a response (FIN) without saying
//! `Connection: close`, or after a few milliseconds of idleness. A pooled client that does not
//! notice writes its next command into the half-closed socket, the device answers RST, and the
//! command is lost. finwatch keeps explicit state for every connection, watches idle sockets for
//! FIN, peeks each one right before it writes, and sends the command on a fresh socket instead.
//!
//! ```no_run
//! let mut client = finwatch::Client::new()?;
//! let resp = client.put("http://10.0.0.5/unico/v1/interface/io", r#"{"ioId":25602,"on":true}"#)?;
//! assert_eq!(resp.status(), 200);
//! let state = client.get("http://10.0.0.5/unico/v1/interface/io-state?ioId=25602")?;
//! println!("{}", String::from_utf8_lossy(state.body()));
//! # Ok::<(), finwatch::Error>(())
//! ```
//!
//! Layers: [`Client`] (public API) → `driver` (the mio loop, thin, no protocol decisions) →
//! `proto` (sans-IO: connection state machine, pool, dispatch, retries, response framing).

#![forbid(unsafe_code)]

/// The README's examples are compiled as doctests, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod client;
mod driver;
mod error;
/// Conversions to and from the `http` crate's types (feature `http`).
#[cfg(feature = "http")]
pub mod http_interop;
mod proto;
mod request;
mod response;
mod trace;
mod url;

pub use client::{Client, ClientBuilder, Waker};
pub use error::{Error, Limit, LostCause, Result, Stage};
pub use proto::conn::RetireReason;
pub use proto::engine::{Completion, ConnectionInfo, RequestId, Stats};
pub use proto::framing::{Limits, MAX_HEADERS_CAP};
pub use request::{Method, Request, RequestBuilder};
pub use response::{Meta, Response};
pub use trace::{Trace, TraceEvent, TraceKind};
pub use url::Url;

/// Hooks for the micro-benchmarks in `benches/`; not part of the API.
#[doc(hidden)]
pub mod __bench {
    use crate::proto::framing::{Limits, Progress, ResponseReader};
    use crate::{Request, Response};

    /// Appends the wire form of `req` to `out`.
    pub fn encode_request(req: &Request, out: &mut Vec<u8>) {
        req.encode(out);
    }

    /// Parses one complete response from `bytes` into the buffers of `spare` (reused, as on the
    /// client's steady path); `None` if incomplete or invalid.
    pub fn read_response(bytes: &[u8], limits: Limits, spare: Response) -> Option<Response> {
        let mut r = ResponseReader::reuse(limits, false, spare);
        match r.feed(bytes) {
            Ok(Progress::Complete { .. }) => Some(r.finish(crate::Meta::default()).0),
            _ => None,
        }
    }
}

/// Fuzzing entry points (used by `fuzz/` and the regression tests); not part of the API.
#[doc(hidden)]
pub use proto::fuzz as __fuzz;
