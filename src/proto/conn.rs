//! One connection's state, and the one place where it changes.
//!
//! Every state a connection can be in is a variant of [`ConnState`], carrying only the data that
//! state has (the exchange lives in `Busy`, the FIN's time in `PeerHalfClosed`). Every change goes
//! through [`Conn::transition`], which logs `conn=7 127.0.0.1:8080 Open(Idle) -> PeerHalfClosed
//! (FIN while idle)`: grep that one function to learn when a state can be entered.
//! [`Conn::may_carry_request`] is the rule the crate exists for: only `Open(Idle)` may.

use std::fmt;
use std::time::Instant;

use crate::error::Stage;
use crate::proto::framing::ResponseReader;
use crate::proto::slab::Key;

/// Why a connection is retired (closed by us) instead of being kept for reuse.
///
/// Each reason's [`RetireReason::as_str`] is what the debug log (`RUST_LOG=finwatch=debug`)
/// and a [`crate::TraceKind::Closed`] event say about the close.
///
/// ```
/// use finwatch::{Client, RetireReason, TraceKind};
/// # let base = finwatch::__doc_device();
/// let mut client = Client::builder().trace(64).build()?;
/// let req = finwatch::Request::get(&format!("{base}/io-state")).header("Connection", "close").build()?;
/// let resp = client.send(req)?;
/// assert_eq!(resp.header("Connection"), Some("close")); // the device agreed
/// let closed = client.trace().unwrap().events().find_map(|e| match e.kind {
///     TraceKind::Closed { reason } => Some(reason),
///     _ => None,
/// });
/// assert_eq!(closed, Some(RetireReason::ServerSaidClose.as_str()));
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetireReason {
    /// The response carried `Connection: close`.
    ServerSaidClose,
    /// An HTTP/1.0 response without `Connection: keep-alive`.
    Http10,
    /// The body was delimited by the server closing the connection.
    CloseDelimitedBody,
    /// `Keep-Alive: max` said no further request would be accepted.
    KeepAliveMaxReached,
    /// Retired ahead of the server's announced `Keep-Alive: timeout`.
    KeepAliveTimeout,
    /// Retired ahead of the idle timeout learned from how the device closed connections.
    LearnedIdleClose,
    /// The device was seen to close after every response: connections are single-use.
    DeviceClosesAfterResponse,
    /// Idle longer than the client's own idle timeout.
    IdleTimeout,
    /// The request asked for `Connection: close`.
    RequestedClose,
    /// The server sent bytes nobody asked for; the stream is out of step.
    UnsolicitedData,
    /// The response was complete before the request was fully sent (e.g. an early 4xx); the
    /// rest of the request would be read as a new one.
    EarlyResponse,
    /// The response broke framing rules or limits; what follows cannot be trusted.
    ProtocolError,
    /// The request's deadline passed mid-exchange; a late response would desynchronise it.
    DeadlineExceeded,
    /// The TCP handshake failed or timed out.
    ConnectFailed,
    /// The peer closed its side; the socket is released.
    PeerClosed,
    /// The socket failed; it is released.
    SocketError,
    /// The client is being dropped.
    Shutdown,
    /// The caller's body stream failed (the reader of a streamed request body, or the writer of
    /// a streamed response body): the rest of the exchange cannot go on.
    BodyStreamFailed,
}

impl RetireReason {
    /// A few words for logs.
    ///
    /// ```
    /// use finwatch::RetireReason;
    /// assert_eq!(RetireReason::ServerSaidClose.as_str(), "server sent Connection: close");
    /// assert_eq!(RetireReason::IdleTimeout.as_str(), "idle timeout");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            RetireReason::ServerSaidClose => "server sent Connection: close",
            RetireReason::Http10 => "HTTP/1.0 response without keep-alive",
            RetireReason::CloseDelimitedBody => "body delimited by close",
            RetireReason::KeepAliveMaxReached => "Keep-Alive max reached",
            RetireReason::KeepAliveTimeout => "retired before the server's Keep-Alive timeout",
            RetireReason::LearnedIdleClose => "retired before the device's learned idle close",
            RetireReason::DeviceClosesAfterResponse => "the device closes after every response",
            RetireReason::IdleTimeout => "idle timeout",
            RetireReason::RequestedClose => "request asked for Connection: close",
            RetireReason::UnsolicitedData => "unsolicited bytes from the server",
            RetireReason::EarlyResponse => "response complete before the request was fully sent",
            RetireReason::ProtocolError => "protocol error",
            RetireReason::DeadlineExceeded => "request deadline exceeded mid-exchange",
            RetireReason::ConnectFailed => "connect failed",
            RetireReason::PeerClosed => "peer closed",
            RetireReason::SocketError => "socket error",
            RetireReason::Shutdown => "client shut down",
            RetireReason::BodyStreamFailed => "the caller's body reader or writer failed",
        }
    }
}

/// Where an exchange on a busy connection is.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Assigned; the pre-write peek has been asked for and nothing is written yet.
    Probing,
    /// `written` bytes of the request are on the wire.
    Writing { written: usize },
    /// The request is written; response bytes (if any) are in the reader.
    Reading,
}

/// A request in flight on a connection.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) req: Key,
    pub(crate) phase: Phase,
    pub(crate) reader: ResponseReader,
    /// The connection is known to end with this exchange (decided when the request was put
    /// on it): its successor connects as soon as the request is written.
    pub(crate) ends: bool,
    /// The length of the request's head on the wire: once that much is written, the device may
    /// act on the request, whatever becomes of its body.
    pub(crate) head_len: usize,
    /// Probed alive, but an earlier request to the same host has not been written yet: it is
    /// probed again (time passes) and written once that one is out, so requests to a device go
    /// out in submission order with more than one in flight.
    pub(crate) held: bool,
}

impl Exchange {
    /// How far the exchange has got. A response byte trumps everything: the device has the
    /// request (an early response can arrive while the request is still being written).
    pub(crate) fn stage(&self) -> Stage {
        if self.reader.started() {
            return Stage::ReadingResponse;
        }
        match self.phase {
            Phase::Probing => Stage::Queued,
            Phase::Writing { written } if written >= self.head_len => Stage::SendingBody,
            Phase::Writing { .. } => Stage::Sending,
            Phase::Reading => Stage::AwaitingResponse,
        }
    }
}

/// The state of an open connection.
// Not boxed on purpose: a Box per exchange is an allocation per command; a connection's state
// lives in its slab slot, so the larger variant costs memory once per connection, not per use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Open {
    /// Connected, nothing in flight, reusable (after the pre-write check).
    Idle { since: Instant },
    /// A request is in flight (no pipelining: at most one).
    Busy(Exchange),
}

/// A connection's state.
#[allow(clippy::large_enum_variant)] // see `Open`
#[derive(Debug)]
pub(crate) enum ConnState {
    /// Non-blocking connect in progress.
    Connecting { deadline: Instant },
    /// Connected.
    Open(Open),
    /// The peer sent FIN. Never written to again; the socket is released at once.
    PeerHalfClosed,
    /// RST or another socket error. Never written to again; the socket is released at once.
    Reset,
    /// We closed it.
    Closed { reason: RetireReason },
}

impl ConnState {
    /// The state's name, as in the design card and the logs.
    pub fn name(&self) -> &'static str {
        match self {
            ConnState::Connecting { .. } => "Connecting",
            ConnState::Open(Open::Idle { .. }) => "Open(Idle)",
            ConnState::Open(Open::Busy(_)) => "Open(Busy)",
            ConnState::PeerHalfClosed => "PeerHalfClosed",
            ConnState::Reset => "Reset",
            ConnState::Closed { .. } => "Closed",
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnState::Closed { reason } => write!(f, "Closed({})", reason.as_str()),
            _ => f.write_str(self.name()),
        }
    }
}

/// A connection to one host.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Serial number, for logs and diagnosis.
    pub(crate) id: u64,
    /// The host key (`host:port`) it belongs to.
    pub(crate) host: crate::proto::hash::HostKey,
    pub(crate) state: ConnState,
    /// Exchanges completed on it.
    pub(crate) served: u32,
    /// Retire (close) it rather than reuse it from this instant on, and why.
    pub(crate) retire_at: Option<(Instant, RetireReason)>,
    /// The instant of this connection's entry in the engine's timer heap, if it has one: a
    /// retire time that moved later (every exchange on a kept connection moves it) reuses that
    /// entry, which re-arms itself at the new time when it surfaces, instead of pushing one per
    /// exchange (a heap push and, later, a pop of the stale entry per command).
    pub(crate) retire_armed: Option<Instant>,
    /// Retire it after this many more exchanges (`Keep-Alive: max`).
    pub(crate) requests_left: Option<u32>,
    pub(crate) created: Instant,
    /// When its last response completed.
    pub(crate) last_response: Option<Instant>,
    /// Opened ahead of need (a warm spare), not for a waiting request.
    pub(crate) spare: bool,
    /// A warm spare whose connect the kernel starts at this time, while the caller is away
    /// ([`crate::proto::learn::TimedSpare`]); cleared once a request waits for it and the
    /// driver was told to connect it at once if it has not yet ([`Action::ConnectNow`]).
    ///
    /// [`Action::ConnectNow`]: crate::proto::engine::Action::ConnectNow
    pub(crate) connect_at: Option<Instant>,
    /// Connected at a set time by the kernel, while the loop did not run: when it is reported
    /// connected says nothing of the handshake's length.
    pub(crate) timed: bool,
    /// The exchange on it will leave the caller's next request to another connection (this
    /// one is retired first): a warm spare connects after its request is written, at this
    /// plan's time ([`crate::proto::learn::TimedSpare`]; decided when the request was put on
    /// it). Kept here, not in the exchange, which moves with the state on every command.
    pub(crate) timed_spare: Option<crate::proto::learn::SparePlan>,
    /// Kept after a response although the device was thought to close after every response,
    /// to find out whether it still does: usable only once it has survived
    /// [`crate::proto::learn::CLOSES_AFTER_RESPONSE`] idle (a device that closes sends its FIN
    /// long before that, and the FIN is then seen before any write).
    pub(crate) probation: bool,
    /// The driver is waiting for a name lookup before it can start the connect.
    pub(crate) resolving: bool,
    /// The TCP handshake is done and the TLS one under way (a connect timeout is then the TLS
    /// handshake's).
    pub(crate) tls_handshaking: bool,
}

impl Conn {
    pub(crate) fn new(id: u64, host: crate::proto::hash::HostKey, now: Instant, deadline: Instant) -> Conn {
        log::debug!("conn={id} {host} new -> Connecting");
        Conn {
            id,
            host,
            state: ConnState::Connecting { deadline },
            served: 0,
            retire_at: None,
            retire_armed: None,
            requests_left: None,
            created: now,
            last_response: None,
            spare: false,
            connect_at: None,
            timed: false,
            timed_spare: None,
            probation: false,
            resolving: false,
            tls_handshaking: false,
        }
    }

    /// The one place a connection changes state.
    #[inline]
    pub(crate) fn transition(&mut self, to: ConnState, reason: impl fmt::Display) -> ConnState {
        log::debug!("conn={} {} {} -> {} ({reason})", self.id, self.host, self.state, to);
        std::mem::replace(&mut self.state, to)
    }

    /// The rule finwatch exists for: only an open, idle connection may carry a new request.
    /// `PeerHalfClosed` and `Reset` never do.
    pub(crate) fn may_carry_request(&self, now: Instant) -> bool {
        matches!(self.state, ConnState::Open(Open::Idle { .. }))
            && self.retire_at.is_none_or(|(t, _)| now < t)
            && self.requests_left != Some(0)
            && !(self.probation
                && self.last_response.is_some_and(|t| now < t + crate::proto::learn::CLOSES_AFTER_RESPONSE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_open_idle_may_carry_a_request() {
        let now = Instant::now();
        let mut c = Conn::new(1, "h:80".into(), now, now + Duration::from_secs(1));
        assert!(!c.may_carry_request(now));
        c.transition(ConnState::Open(Open::Idle { since: now }), "connected");
        assert!(c.may_carry_request(now));
        c.retire_at = Some((now + Duration::from_millis(5), RetireReason::IdleTimeout));
        assert!(!c.may_carry_request(now + Duration::from_millis(5)));
        c.retire_at = None;
        c.requests_left = Some(0);
        assert!(!c.may_carry_request(now));
        c.requests_left = None;
        let old = c.transition(ConnState::PeerHalfClosed, "FIN while idle");
        assert_eq!(old.name(), "Open(Idle)");
        assert!(!c.may_carry_request(now));
        c.transition(ConnState::Reset, "RST");
        assert!(!c.may_carry_request(now));
    }
}
