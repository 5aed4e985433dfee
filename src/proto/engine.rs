//! The sans-IO core: per-host queues, the connection pool, dispatch, retries and deadlines.
//!
//! The engine never touches a socket or a clock. The driver feeds it what happened (a connect
//! finished, bytes arrived, a read returned 0, a peek's result, the time) and executes the
//! [`Action`]s it asks for (connect, peek, write, close). Everything that decides whether a
//! request may go out on a connection lives here, so it is tested without sockets.
//!
//! The contract with the driver:
//! - before executing actions, report all pending readiness (so every FIN that has arrived is
//!   known);
//! - execute [`Action::Probe`] with a non-blocking `MSG_PEEK` and report it through
//!   [`Engine::on_probe`] before anything else: only an `Alive` probe leads to a
//!   [`Action::Write`];
//! - write only what [`Engine::output`] returns: it is empty for every connection that is not
//!   `Open(Busy)` with a request being written, so a `PeerHalfClosed` or `Reset` socket is never
//!   written to.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, LostCause, Stage};
use crate::proto::conn::{Conn, ConnState, Exchange, Open, Phase, RetireReason};
use crate::proto::digest::{self, Challenge, Credentials};
use crate::proto::framing::{Limits, Progress, ResponseReader};
use crate::proto::hash::{FastBuild, HostKey};
use crate::proto::learn::{Behaviour, CLOSES_AFTER_RESPONSE};
use crate::proto::retry::{Attempt, retry_is_safe};
use crate::proto::slab::{Key, Slab};
use crate::proto::timers::{Timer, Timers};
use crate::request::Request;
use crate::response::{Meta, Response};
use crate::trace::{Trace, TraceKind};

/// Client settings. See [`crate::ClientBuilder`] for what each one means.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) max_in_flight_per_host: usize,
    pub(crate) max_connections_per_host: usize,
    pub(crate) limits: Limits,
    pub(crate) nodelay: bool,
    pub(crate) busy_poll: Option<Duration>,
    pub(crate) warm_spares: bool,
    /// Record a [`Trace`] of at most this many events.
    pub(crate) trace: Option<usize>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_retries: 1,
            max_in_flight_per_host: 1,
            max_connections_per_host: 4,
            limits: Limits::default(),
            nodelay: true,
            busy_poll: None,
            warm_spares: true,
            trace: None,
        }
    }
}

/// Identifies a submitted request; returned by [`crate::Client::submit`], and found again in
/// its [`Completion`].
///
/// ```
/// use finwatch::{Client, Request};
/// # let base = finwatch::__doc_device();
/// let mut client = Client::new()?;
/// let a = client.submit(Request::get(&format!("{base}/a")).build()?);
/// let b = client.submit(Request::get(&format!("{base}/b")).build()?);
/// assert!(a < b);
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The id as a number (ids count up from 1 per client).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let id = client.submit(finwatch::Request::get(&format!("{base}/")).build()?);
    /// assert_eq!(id.get(), 1);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A finished request, as [`crate::Client::poll`] returns it.
///
/// ```
/// use std::time::Duration;
/// use finwatch::{Client, Completion, Request};
/// # let base = finwatch::__doc_device();
/// let mut client = Client::new()?;
/// let id = client.submit(Request::get(&format!("{base}/io-state")).build()?);
/// let mut done: Vec<Completion> = Vec::new();
/// while done.is_empty() {
///     client.poll(Some(Duration::from_millis(10)), &mut done)?;
/// }
/// let Completion { id: done_id, result } = done.pop().unwrap();
/// assert_eq!(done_id, id);
/// match result {
///     Ok(resp) => assert_eq!(resp.status(), 200),
///     Err(e) => panic!("{e}"),
/// }
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug)]
pub struct Completion {
    /// Which request.
    pub id: RequestId,
    /// Its outcome.
    pub result: Result<Response, Error>,
}

/// Counters since the client was created ([`crate::Client::stats`]).
///
/// ```
/// # let base = finwatch::__doc_device();
/// let mut client = finwatch::Client::new()?;
/// client.get(&format!("{base}/io-state"))?;
/// client.get(&format!("{base}/io-state"))?;
/// let stats = client.stats();
/// assert_eq!((stats.submitted, stats.succeeded, stats.failed), (2, 2, 0));
/// assert_eq!((stats.connects, stats.reuses), (1, 1));
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests submitted.
    pub submitted: u64,
    /// Requests that got a response.
    pub succeeded: u64,
    /// Requests that failed with an error.
    pub failed: u64,
    /// Connections started.
    pub connects: u64,
    /// Connects that failed or timed out.
    pub connect_failures: u64,
    /// Requests written on a connection that had carried an earlier exchange (after the
    /// pre-write peek found it alive).
    pub reuses: u64,
    /// FINs seen on idle connections (by a readiness event or the pre-write peek): each one a
    /// request that a naive pool would have written into a dead socket.
    pub fins_seen_idle: u64,
    /// Of those, how many only the check right before the write caught (after the connection
    /// had been chosen for a request): the `MSG_PEEK`, or on Linux the zero-timeout poll that
    /// stands in for it. A pool without that check would have written into them.
    pub fins_caught_by_peek: u64,
    /// FINs that arrived while a request was in flight (a close-delimited body ends this way).
    pub fins_while_busy: u64,
    /// Connections reset (RST or socket error) after they were established.
    pub resets: u64,
    /// Requests sent again on a fresh connection after a lost one.
    pub retries: u64,
    /// Connections retired by us (Connection: close, timeouts, protocol errors, …).
    pub retired: u64,
    /// Of those, idle connections retired ahead of the device's idle close, announced
    /// (`Keep-Alive: timeout`) or learned: each one a close the device did not have to make.
    pub retired_before_idle_close: u64,
    /// Connections opened ahead of need, because the one in use was known to be ending.
    pub warm_spares_opened: u64,
    /// Requests that found a warm spare ready (or connecting) instead of opening a connection.
    pub warm_spares_used: u64,
}

/// A connection, as [`crate::Client::connections`] shows it.
///
/// ```
/// # let base = finwatch::__doc_device();
/// let mut client = finwatch::Client::new()?;
/// let resp = client.get(&format!("{base}/io-state"))?;
/// let conns = client.connections();
/// assert_eq!(conns.len(), 1);
/// let c = &conns[0];
/// assert_eq!((c.id, c.state, c.served), (resp.meta().connection_id, "Open(Idle)", 1));
/// assert_eq!(c.host, base.trim_start_matches("http://"));
/// assert!(c.idle_for.is_some() && c.retire_in.is_some());
/// assert_eq!(c.retire_reason, Some(finwatch::RetireReason::IdleTimeout));
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Serial number, as in the debug log.
    pub id: u64,
    /// `host:port`.
    pub host: String,
    /// State name: `Connecting`, `Open(Idle)`, `Open(Busy)`.
    pub state: &'static str,
    /// Exchanges completed on it.
    pub served: u32,
    /// How long it has been idle (for `Open(Idle)`).
    pub idle_for: Option<Duration>,
    /// When it will be retired if still idle, from now.
    pub retire_in: Option<Duration>,
    /// Why it will be retired then: the client's idle timeout, the server's announced
    /// `Keep-Alive: timeout`, or the idle close learned from the device.
    pub retire_reason: Option<RetireReason>,
    /// Time since its connect started.
    pub age: Duration,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start a non-blocking connect to `host:port`, registered under `conn`. `label`: the
    /// host's key (`host:port`, an IPv6 host bracketed), for error messages.
    Connect { conn: Key, host: String, port: u16, label: Arc<str> },
    /// Peek the socket without blocking and report it with [`Engine::on_probe`].
    Probe { conn: Key },
    /// Write [`Engine::output`] and report it with [`Engine::on_written`].
    Write { conn: Key },
    /// Close the socket and forget the key.
    Close { conn: Key },
}

/// The result of a pre-write `MSG_PEEK`.
#[derive(Debug)]
pub(crate) enum ProbeOutcome {
    /// `WouldBlock`: nothing pending, the peer has not closed.
    Alive,
    /// Peek returned 0: the peer sent FIN.
    Fin,
    /// Bytes are waiting that nobody asked for.
    Data,
    /// The socket has an error (RST).
    Error(io::Error),
}

#[derive(Debug)]
struct Pending {
    id: RequestId,
    host: HostKey,
    wire: Vec<u8>,
    head_request: bool,
    retryable: bool,
    wants_close: bool,
    deadline: Instant,
    retries: u32,
    /// The first lost attempt, kept to report it if the retry fails too.
    first_failure: Option<Error>,
    /// The connection it is on, and whether that one was reused.
    on: Option<(Key, bool)>,
    /// Digest credentials, and where the `Authorization` line goes in `wire`.
    auth: Option<Box<DigestAuth>>,
}

/// A request's Digest state: its credentials, the span of its `Authorization` line in the
/// wire (empty until the device's challenge is known), and whether a challenge was answered.
#[derive(Debug)]
struct DigestAuth {
    creds: Arc<Credentials>,
    /// Where the line starts: the end of the head's last header line.
    at: usize,
    /// The line's length (0: none yet).
    len: usize,
    /// The device challenged this request once: a second 401 is the caller's.
    challenged: bool,
}

/// A device's Digest challenge and the nonce count of its nonce.
#[derive(Debug)]
struct DigestSession {
    challenge: Challenge,
    nc: u32,
}

#[derive(Debug)]
struct Host {
    name: String,
    port: u16,
    queue: VecDeque<Key>,
    conns: Vec<Key>,
    in_flight: usize,
    /// How the device closes connections, learned.
    behaviour: Behaviour,
    /// Responses from a device thought to close after every response; every
    /// [`PROBATION_EVERY`]th connection is kept on probation to re-check that.
    single_use: u32,
    /// The device's last Digest challenge, answered in advance by later requests.
    digest: Option<DigestSession>,
}

/// The core. See the module docs for the contract with the driver.
#[derive(Debug)]
pub(crate) struct Engine {
    cfg: Config,
    conns: Slab<Conn>,
    reqs: Slab<Pending>,
    hosts: HashMap<HostKey, Host, FastBuild>,
    actions: VecDeque<Action>,
    completions: VecDeque<Completion>,
    timers: Timers,
    trace: Option<Trace>,
    /// Request encoding buffers, reused.
    wire_pool: Vec<Vec<u8>>,
    /// Responses whose buffers can be reused for the next response.
    response_pool: Vec<Response>,
    /// Forget hosts with nothing open once there are more than this many hosts.
    prune_hosts_at: usize,
    /// The connection whose request most recently finished writing (for `sole_awaited`).
    last_reading: Option<Key>,
    next_conn_id: u64,
    next_req_id: u64,
    stats: Stats,
}

impl Engine {
    pub(crate) fn new(cfg: Config) -> Engine {
        Engine {
            trace: cfg.trace.map(Trace::new),
            cfg,
            conns: Slab::default(),
            reqs: Slab::default(),
            hosts: HashMap::default(),
            actions: VecDeque::new(),
            completions: VecDeque::new(),
            timers: Timers::default(),
            wire_pool: Vec::new(),
            response_pool: Vec::new(),
            prune_hosts_at: MAX_IDLE_HOSTS,
            last_reading: None,
            next_conn_id: 1,
            next_req_id: 1,
            stats: Stats::default(),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats
    }

    /// Queues a request behind earlier ones to the same host.
    pub(crate) fn submit(&mut self, req: &Request, now: Instant) -> RequestId {
        let id = RequestId(self.next_req_id);
        self.next_req_id += 1;
        self.stats.submitted += 1;
        let key = HostKey::new(req.url.host_key().clone());
        let mut wire = self.wire_pool.pop().unwrap_or_default();
        req.encode(&mut wire);
        // The wire is the head's lines, an empty line and the body: an `Authorization` line
        // goes right before the empty line.
        let auth = req.digest.as_ref().map(|creds| {
            let at = wire.len() - req.body.len() - 2;
            Box::new(DigestAuth { creds: Arc::clone(creds), at, len: 0, challenged: false })
        });
        let pending = Pending {
            id,
            host: key.clone(),
            wire,
            head_request: req.method.as_str() == "HEAD",
            retryable: req.is_retryable(),
            wants_close: req.wants_close(),
            deadline: now + req.timeout.unwrap_or(self.cfg.request_timeout),
            retries: 0,
            first_failure: None,
            on: None,
            auth,
        };
        let deadline = pending.deadline;
        let r = self.reqs.insert(pending);
        self.timers.push(deadline, Timer::Request(r));
        let host = self.hosts.entry(key.clone()).or_insert_with(|| Host {
            name: req.url.host().to_string(),
            port: req.url.port(),
            queue: VecDeque::new(),
            conns: Vec::new(),
            in_flight: 0,
            behaviour: Behaviour::default(),
            single_use: 0,
            digest: None,
        });
        host.queue.push_back(r);
        log::trace!("request {} {} {} queued", id.0, req.method.as_str(), key);
        self.dispatch(&key, now);
        id
    }

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub(crate) fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    pub(crate) fn has_completions(&self) -> bool {
        !self.completions.is_empty()
    }

    /// Requests submitted and not yet completed.
    pub(crate) fn pending(&self) -> usize {
        self.reqs.len()
    }

    /// The connection whose response is all that is pending (its request fully written): what
    /// a busy-polling loop may spin on directly.
    /// O(1): with one request pending, if it awaits its response it is the one that most
    /// recently finished writing.
    pub(crate) fn sole_awaited(&self) -> Option<Key> {
        if self.reqs.len() != 1 {
            return None;
        }
        let conn = self.last_reading?;
        match &self.conns.get(conn)?.state {
            ConnState::Open(Open::Busy(ex)) if matches!(ex.phase, Phase::Reading) => Some(conn),
            _ => None,
        }
    }

    /// The bytes to write on `conn` now; empty unless it is `Open(Busy)` writing a request.
    pub(crate) fn output(&self, conn: Key) -> &[u8] {
        let Some(c) = self.conns.get(conn) else { return &[] };
        let ConnState::Open(Open::Busy(ex)) = &c.state else { return &[] };
        let Phase::Writing { written } = ex.phase else { return &[] };
        self.reqs.get(ex.req).map_or(&[], |p| &p.wire[written..])
    }

    /// Whether a Connecting connection is awaiting its handshake (the driver checks SO_ERROR).
    pub(crate) fn is_connecting(&self, conn: Key) -> bool {
        matches!(self.conns.get(conn).map(|c| &c.state), Some(ConnState::Connecting { .. }))
    }

    /// The nearest instant at which [`Engine::on_timeout`] has work: a deadline, a connect
    /// timeout or an idle connection's retire time.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some((at, timer)) = self.timers.peek() {
            if self.timer_is_live(at, timer).is_some() {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Whether a timer is due at `now` (the driver then reads what the network delivered before
    /// it lets [`Engine::on_timeout`] act).
    pub(crate) fn timer_due(&mut self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|t| t <= now)
    }

    /// Enforces deadlines, connect timeouts and idle expiry that are due at `now`.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(why) = self.timer_is_live(at, timer) else { continue };
            match timer {
                Timer::Request(r) => self.expire_request(r, now),
                Timer::Connect(c) => {
                    let Some(conn) = self.conns.get(c) else { continue };
                    let host = conn.host.to_string();
                    if conn.resolving {
                        let source = io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the name lookup did not finish within the connect timeout",
                        );
                        self.connect_failed(c, Error::Resolve { host, source }, "name lookup timed out", now);
                    } else {
                        self.connect_failed(c, Error::ConnectTimedOut { host }, "connect timed out", now);
                    }
                }
                Timer::Retire(c) => self.retire(c, why, now),
            }
        }
        if self.timers.needs_compaction(self.reqs.len() + self.conns.len()) {
            let reqs = self.reqs.iter().map(|(k, p)| (p.deadline, Timer::Request(k)));
            let conns = self.conns.iter().filter_map(|(k, c)| match c.state {
                ConnState::Connecting { deadline } => Some((deadline, Timer::Connect(k))),
                ConnState::Open(Open::Idle { .. }) => c.retire_at.map(|(t, _)| (t, Timer::Retire(k))),
                _ => None,
            });
            self.timers.rebuild(reqs.chain(conns));
        }
    }

    /// Whether a timer entry still applies to its subject (and, for a retire timer, why).
    fn timer_is_live(&self, at: Instant, timer: Timer) -> Option<RetireReason> {
        match timer {
            Timer::Request(r) => {
                self.reqs.get(r).filter(|p| p.deadline == at).map(|_| RetireReason::DeadlineExceeded)
            }
            Timer::Connect(c) => match self.conns.get(c)?.state {
                ConnState::Connecting { deadline } if deadline == at => Some(RetireReason::ConnectFailed),
                _ => None,
            },
            Timer::Retire(c) => {
                let c = self.conns.get(c)?;
                match (&c.state, c.retire_at) {
                    (ConnState::Open(Open::Idle { .. }), Some((t, why))) if t == at => Some(why),
                    _ => None,
                }
            }
        }
    }

    /// The driver waits for a name lookup before it can start `conn`'s connect (`true`), or the
    /// lookup has answered and the connect starts now (`false`): a connect timeout while
    /// waiting is then a lookup that timed out, and the handshake is timed from the lookup's end.
    pub(crate) fn on_resolving(&mut self, conn: Key, resolving: bool, now: Instant) {
        if let Some(c) = self.conns.get_mut(conn) {
            if c.resolving && !resolving {
                c.created = now;
            }
            c.resolving = resolving;
        }
    }

    /// The non-blocking connect finished.
    pub(crate) fn on_connected(&mut self, conn: Key, now: Instant) {
        let Some(c) = self.conns.get_mut(conn) else { return };
        if !matches!(c.state, ConnState::Connecting { .. }) {
            return;
        }
        c.transition(ConnState::Open(Open::Idle { since: now }), "connected");
        if let Some(t) = &mut self.trace {
            t.record(now, c.id, &c.host, TraceKind::Connected);
        }
        let host = c.host.clone();
        let handshake = now.saturating_duration_since(c.created);
        let behaviour = match self.hosts.get_mut(&host) {
            Some(h) => {
                h.behaviour.observe_handshake(handshake);
                h.behaviour
            }
            None => Behaviour::default(),
        };
        // The request waiting for this connection takes it first: the idle limits are about
        // time spent idle, and it has spent none. (Armed first, a limit the margins reduce to
        // nothing, `idle_timeout(0)` or a device's tiny idle close, had every new connection past
        // its retire time as it connected, and the request opened another: a connect storm.)
        c.retire_at = None;
        self.dispatch(&host, now);
        if let Some(c) = self.conns.get_mut(conn)
            && matches!(c.state, ConnState::Open(Open::Idle { .. }))
        {
            // Nothing took it (a warm spare): it waits under the idle limits.
            let retire_at = behaviour.retire_at(now, self.cfg.idle_timeout, None);
            c.retire_at = Some(retire_at);
            self.timers.push(retire_at.0, Timer::Retire(conn));
        }
    }

    /// The connect failed (refused, unreachable, name did not resolve, …).
    pub(crate) fn on_connect_failed(&mut self, conn: Key, err: Error, now: Instant) {
        let Some(c) = self.conns.get(conn) else { return };
        if !matches!(c.state, ConnState::Connecting { .. }) {
            return;
        }
        let why = format!("connect failed: {err}");
        self.connect_failed(conn, err, &why, now);
    }

    /// The pre-write peek's result.
    pub(crate) fn on_probe(&mut self, conn: Key, outcome: ProbeOutcome, now: Instant) {
        let Some(c) = self.conns.get_mut(conn) else { return };
        let ConnState::Open(Open::Busy(ex)) = &mut c.state else { return };
        if !matches!(ex.phase, Phase::Probing) {
            return;
        }
        match outcome {
            ProbeOutcome::Alive => {
                if c.served > 0 {
                    self.stats.reuses += 1;
                }
                if c.probation
                    && let Some(t) = c.last_response
                    && let Some(h) = self.hosts.get_mut(&c.host)
                    && h.behaviour.observe_alive(now.saturating_duration_since(t))
                {
                    log::debug!(
                        "{}: a connection survived its probation; the device keeps connections",
                        c.host
                    );
                }
                c.probation = false;
                ex.phase = Phase::Writing { written: 0 };
                self.actions.push_back(Action::Write { conn });
                if let Some(t) = &mut self.trace
                    && let Some(p) = self.reqs.get(ex.req)
                {
                    let line = p.wire.split(|&b| b == b'\r').next().unwrap_or_default();
                    let line = String::from_utf8_lossy(line).trim_end_matches(" HTTP/1.1").to_string();
                    t.record(now, c.id, &c.host, TraceKind::Sent { request: p.id.0, line });
                }
            }
            ProbeOutcome::Fin => {
                self.stats.fins_seen_idle += 1;
                self.stats.fins_caught_by_peek += 1;
                self.end_conn(conn, ConnState::PeerHalfClosed, "FIN found by pre-write peek", now);
            }
            ProbeOutcome::Data => {
                self.retire(conn, RetireReason::UnsolicitedData, now);
            }
            ProbeOutcome::Error(e) => {
                self.stats.resets += 1;
                let why = format!("socket error found by pre-write peek: {e}");
                self.end_conn(conn, ConnState::Reset, &why, now);
            }
        }
    }

    /// `n` bytes of [`Engine::output`] were written.
    pub(crate) fn on_written(&mut self, conn: Key, n: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(conn) else { return };
        let ConnState::Open(Open::Busy(ex)) = &mut c.state else { return };
        let Phase::Writing { written } = &mut ex.phase else { return };
        *written += n;
        let Some(p) = self.reqs.get(ex.req) else { return };
        if *written < p.wire.len() {
            return;
        }
        ex.phase = Phase::Reading;
        self.last_reading = Some(conn);
        // The request is out and the loop waits for the response: if this connection is known
        // to end with it, the next one connects now, in the shadow of this round trip, instead
        // of after the response, on the next command's critical path.
        if ex.ends {
            let host = c.host.clone();
            self.open_spare(&host, now);
        }
    }

    /// Bytes arrived on `conn`.
    pub(crate) fn on_data(&mut self, conn: Key, data: &[u8], now: Instant) {
        let Some(c) = self.conns.get_mut(conn) else { return };
        let progress = match &mut c.state {
            ConnState::Open(Open::Busy(ex)) if !matches!(ex.phase, Phase::Probing) => ex.reader.feed(data),
            ConnState::Open(_) => {
                // Idle, or assigned but not written: a response to nothing. The stream is out
                // of step; nothing more can be trusted on it.
                return self.retire(conn, RetireReason::UnsolicitedData, now);
            }
            _ => return,
        };
        match progress {
            Ok(Progress::NeedMore) => {}
            Ok(Progress::Complete { extra }) => self.complete_exchange(conn, extra > 0, false, now),
            Err(e) => {
                if let Some(r) = self.busy_request(conn) {
                    self.fail(r, e, now);
                }
                self.retire(conn, RetireReason::ProtocolError, now);
            }
        }
    }

    /// A read returned 0: the peer sent FIN.
    pub(crate) fn on_fin(&mut self, conn: Key, now: Instant) {
        let Some(c) = self.conns.get_mut(conn) else { return };
        match &mut c.state {
            ConnState::Connecting { .. } => {
                let err = io::Error::new(io::ErrorKind::ConnectionAborted, "closed during connect");
                let host = c.host.to_string();
                self.on_connect_failed(conn, Error::ConnectFailed { host, source: err }, now);
            }
            ConnState::Open(Open::Idle { .. }) => {
                self.stats.fins_seen_idle += 1;
                self.end_conn(conn, ConnState::PeerHalfClosed, "FIN while idle", now);
            }
            ConnState::Open(Open::Busy(ex)) if matches!(ex.phase, Phase::Probing) => {
                // Assigned, but nothing written yet: for the request this was an idle socket,
                // and the check right before the write is what found its FIN.
                self.stats.fins_seen_idle += 1;
                self.stats.fins_caught_by_peek += 1;
                self.end_conn(conn, ConnState::PeerHalfClosed, "FIN before the request was written", now);
            }
            ConnState::Open(Open::Busy(ex)) => {
                self.stats.fins_while_busy += 1;
                if matches!(ex.phase, Phase::Reading) && ex.reader.feed_eof() {
                    self.complete_exchange(conn, false, true, now);
                } else {
                    self.end_conn(conn, ConnState::PeerHalfClosed, "FIN while busy", now);
                }
            }
            _ => {}
        }
    }

    /// A read or write failed (RST, or another socket error).
    pub(crate) fn on_error(&mut self, conn: Key, err: io::Error, now: Instant) {
        let Some(c) = self.conns.get(conn) else { return };
        match c.state {
            ConnState::Connecting { .. } => {
                let host = c.host.to_string();
                self.on_connect_failed(conn, Error::ConnectFailed { host, source: err }, now);
            }
            ConnState::Open(_) => {
                self.stats.resets += 1;
                let why = format!("socket error: {err}");
                self.end_conn_with(conn, ConnState::Reset, &why, Some(err), now);
            }
            _ => {}
        }
    }

    /// A snapshot of the live connections.
    pub(crate) fn connections(&self, now: Instant) -> Vec<ConnectionInfo> {
        self.conns
            .iter()
            .map(|(_, c)| ConnectionInfo {
                id: c.id,
                host: c.host.to_string(),
                state: c.state.name(),
                served: c.served,
                idle_for: match c.state {
                    ConnState::Open(Open::Idle { since }) => Some(now.saturating_duration_since(since)),
                    _ => None,
                },
                retire_in: c.retire_at.map(|(t, _)| t.saturating_duration_since(now)),
                retire_reason: c.retire_at.map(|(_, why)| why),
                age: now.saturating_duration_since(c.created),
            })
            .collect()
    }

    /// Fails every pending request with [`Error::Shutdown`] and closes every connection.
    pub(crate) fn abort_all(&mut self, now: Instant) {
        let reqs: Vec<Key> = self.reqs.iter().map(|(k, _)| k).collect();
        for r in reqs {
            let Some(p) = self.reqs.get(r) else { continue };
            let stage = match p.on.and_then(|(c, _)| self.conns.get(c)).map(|c| &c.state) {
                Some(ConnState::Open(Open::Busy(ex))) => ex.stage(),
                _ => Stage::Queued,
            };
            let host = p.host.clone();
            if let Some(h) = self.hosts.get_mut(&host) {
                h.queue.retain(|&q| q != r);
            }
            self.fail(r, Error::Shutdown { stage }, now);
        }
        let conns: Vec<Key> = self.conns.iter().map(|(k, _)| k).collect();
        for c in conns {
            self.retire(c, RetireReason::Shutdown, now);
        }
    }

    /// The trace, if recording.
    pub(crate) fn trace(&self) -> Option<&Trace> {
        self.trace.as_ref()
    }

    /// Takes the recorded trace, leaving an empty one (if recording).
    pub(crate) fn take_trace(&mut self) -> Option<Trace> {
        let cap = self.cfg.trace?;
        self.trace.replace(Trace::new(cap))
    }

    /// Takes back a response the caller is done with, so its buffers carry a later one.
    pub(crate) fn recycle(&mut self, resp: Response) {
        if self.response_pool.len() < POOL_SIZE && resp.body.capacity() <= POOLED_BUFFER_MAX {
            self.response_pool.push(resp);
        }
    }

    fn recycle_wire(&mut self, mut wire: Vec<u8>) {
        if self.wire_pool.len() < POOL_SIZE && wire.capacity() <= POOLED_BUFFER_MAX {
            wire.clear();
            self.wire_pool.push(wire);
        }
    }

    /// The learned idle-close time of a host (`host:port` key).
    pub(crate) fn learned_idle_close(&self, host: &str) -> Option<Duration> {
        self.hosts.get(&HostKey::from(host))?.behaviour.idle_close()
    }

    /// Whether `conn` carries a request.
    pub(crate) fn is_busy(&self, conn: Key) -> bool {
        matches!(self.conns.get(conn).map(|c| &c.state), Some(ConnState::Open(Open::Busy(_))))
    }

    /// Whether `conn` carries a request that awaits its pre-write check.
    pub(crate) fn is_probing(&self, conn: Key) -> bool {
        matches!(
            self.conns.get(conn).map(|c| &c.state),
            Some(ConnState::Open(Open::Busy(Exchange { phase: Phase::Probing, .. })))
        )
    }

    /// Whether `conn` is still a live connection of the engine's.
    pub(crate) fn knows(&self, conn: Key) -> bool {
        self.conns.get(conn).is_some()
    }

    /// The request on `conn` and whether it may be retried (for the fuzz harness's checks).
    pub(crate) fn request_on(&self, conn: Key) -> Option<(RequestId, bool)> {
        let r = self.busy_request(conn)?;
        self.reqs.get(r).map(|p| (p.id, p.retryable))
    }

    /// The connection's log serial, for the driver's own log lines.
    pub(crate) fn conn_id(&self, conn: Key) -> u64 {
        self.conns.get(conn).map_or(0, |c| c.id)
    }

    // ---- internals ----

    /// Starts queued requests of `host` on idle or new connections, in submission order.
    fn dispatch(&mut self, host_key: &HostKey, now: Instant) {
        loop {
            let Some(host) = self.hosts.get_mut(host_key) else { return };
            if host.in_flight >= self.cfg.max_in_flight_per_host || host.queue.is_empty() {
                return;
            }
            // A retry goes to a connection that has carried nothing yet (new, or a warm spare):
            // another pooled one may be as stale as the one that just failed.
            let front = host.queue.front().and_then(|&r| self.reqs.get(r));
            let fresh_only = front.is_some_and(|p| p.retries > 0);
            // A connection on probation is a test of whether the device still closes after every
            // response; a FIN that is merely late fails it with the request on the wire. Only a
            // request that may be sent again takes that test.
            let may_probe = front.is_some_and(|p| p.retryable);
            // The most recently used idle connection: the one least likely to have been closed.
            let idle = host
                .conns
                .iter()
                .filter_map(|&k| self.conns.get(k).map(|c| (k, c)))
                .filter(|(_, c)| {
                    c.may_carry_request(now) && !(fresh_only && c.served > 0) && (may_probe || !c.probation)
                })
                // A connection on probation that became usable goes first: that is the test.
                .max_by_key(|(_, c)| match c.state {
                    ConnState::Open(Open::Idle { since }) => (c.probation, Some(since)),
                    _ => (false, None),
                })
                .map(|(k, _)| k);
            if let Some(conn) = idle {
                let r = host.queue.pop_front().expect("queue checked non-empty");
                host.in_flight += 1;
                let host_ends = host.behaviour.closes_after_response() || host.behaviour.announces_close();
                self.assign(conn, r, host_ends);
                continue;
            }
            let connecting = host
                .conns
                .iter()
                .filter(|&&k| {
                    self.conns.get(k).is_some_and(|c| matches!(c.state, ConnState::Connecting { .. }))
                })
                .count();
            let startable = host.queue.len().min(self.cfg.max_in_flight_per_host - host.in_flight);
            if connecting >= startable {
                return;
            }
            if host.conns.len() >= self.cfg.max_connections_per_host {
                // Idle connections past their retire time make room for a fresh one.
                let stale = host.conns.iter().copied().find(|&k| {
                    self.conns.get(k).is_some_and(|c| matches!(c.state, ConnState::Open(Open::Idle { .. })))
                });
                match stale {
                    Some(k) => {
                        let why = self.conns.get(k).and_then(|c| c.retire_at.map(|(_, w)| w));
                        self.retire(k, why.unwrap_or(RetireReason::IdleTimeout), now);
                        continue;
                    }
                    None => return,
                }
            }
            let id = self.next_conn_id;
            self.next_conn_id += 1;
            let (name, port) = (host.name.clone(), host.port);
            let conn =
                self.conns.insert(Conn::new(id, host_key.clone(), now, now + self.cfg.connect_timeout));
            self.timers.push(now + self.cfg.connect_timeout, Timer::Connect(conn));
            host.conns.push(conn);
            self.stats.connects += 1;
            self.actions.push_back(Action::Connect { conn, host: name, port, label: Arc::clone(host_key) });
            if let Some(t) = &mut self.trace {
                t.record(now, id, host_key, TraceKind::Connecting { spare: false });
            }
        }
    }

    /// Puts request `r` on idle connection `conn` and asks for the pre-write peek. `host_ends`:
    /// the device is known to end connections after a response (it closes after every one, or
    /// its last response said so).
    fn assign(&mut self, conn: Key, r: Key, host_ends: bool) {
        let Some(c) = self.conns.get_mut(conn) else { return };
        let Some(p) = self.reqs.get_mut(r) else { return };
        let reused = c.served > 0;
        if c.spare && !reused {
            self.stats.warm_spares_used += 1;
        }
        p.on = Some((conn, reused));
        // Digest: answer the device's current challenge, with the next nonce count (counted
        // here, in the order requests go out).
        if let Some(a) = p.auth.as_deref_mut()
            && let Some(session) = self.hosts.get_mut(&p.host).and_then(|h| h.digest.as_mut())
        {
            session.nc = session.nc.wrapping_add(1);
            authorize(&mut p.wire, a, session);
        }
        let reader = match self.response_pool.pop() {
            Some(spare) => ResponseReader::reuse(self.cfg.limits, p.head_request, spare),
            None => ResponseReader::new(self.cfg.limits, p.head_request),
        };
        let ends = host_ends || p.wants_close || c.requests_left == Some(1);
        let busy = ConnState::Open(Open::Busy(Exchange { req: r, phase: Phase::Probing, reader, ends }));
        c.transition(busy, format_args!("request {}", p.id.0));
        self.actions.push_back(Action::Probe { conn });
    }

    fn busy_request(&self, conn: Key) -> Option<Key> {
        match &self.conns.get(conn)?.state {
            ConnState::Open(Open::Busy(ex)) => Some(ex.req),
            _ => None,
        }
    }

    /// The response on `conn` is complete. `extra`: bytes followed it; `fin`: the peer closed.
    fn complete_exchange(&mut self, conn: Key, extra: bool, fin: bool, now: Instant) {
        let Some(c) = self.conns.get_mut(conn) else { return };
        let next = if fin { ConnState::PeerHalfClosed } else { ConnState::Open(Open::Idle { since: now }) };
        let ConnState::Open(Open::Busy(ex)) = c.transition(next, "response complete") else { return };
        c.served = c.served.saturating_add(1);
        let ex_phase = ex.phase;
        let Some(p) = self.reqs.get(ex.req) else { return };
        let (req_id, wants_close) = (p.id, p.wants_close);
        let reused = p.on.is_some_and(|(_, reused)| reused);
        let reauthenticated = p.auth.as_ref().is_some_and(|a| a.challenged);
        let meta = Meta { connection_id: c.id, reused, retries: p.retries, reauthenticated };
        let (resp, persistence) = ex.reader.finish(meta);

        // What the response says about the connection's future.
        if let Some(n) = persistence.max_requests {
            c.requests_left = Some(n);
        } else if let Some(n) = &mut c.requests_left {
            *n = n.saturating_sub(1);
        }
        c.last_response = Some(now);
        let behaviour = match self.hosts.get_mut(&c.host) {
            Some(h) => {
                h.behaviour.observe_announced(persistence.idle_timeout);
                h.behaviour.observe_response_closes(matches!(
                    persistence.close,
                    Some(
                        RetireReason::ServerSaidClose
                            | RetireReason::Http10
                            | RetireReason::CloseDelimitedBody
                    )
                ));
                h.behaviour
            }
            None => Behaviour::default(),
        };
        let retire = if extra {
            Some(RetireReason::UnsolicitedData)
        } else if matches!(ex_phase, Phase::Writing { .. }) {
            Some(RetireReason::EarlyResponse)
        } else if let Some(why) = persistence.close {
            Some(why)
        } else if wants_close {
            Some(RetireReason::RequestedClose)
        } else if c.requests_left == Some(0) {
            Some(RetireReason::KeepAliveMaxReached)
        } else if behaviour.closes_after_response() {
            // Single-use, except now and then a connection kept on probation: the learning
            // came from one close, and a device that in fact keeps connections alive must not
            // be denied reuse for ever.
            let h = self.hosts.get_mut(&c.host);
            let n = h.map_or(1, |h| {
                h.single_use = h.single_use.wrapping_add(1);
                h.single_use
            });
            if n.is_multiple_of(PROBATION_EVERY) {
                c.probation = true;
                None
            } else {
                Some(RetireReason::DeviceClosesAfterResponse)
            }
        } else {
            None
        };
        // Kept for reuse: it gets a retire time and its timer (a connection that is closing now
        // needs neither).
        if retire.is_none() && !fin {
            let retire_at = behaviour.retire_at(now, self.cfg.idle_timeout, persistence.idle_timeout);
            c.retire_at = Some(retire_at);
            self.timers.push(retire_at.0, Timer::Retire(conn));
        }
        let probation = c.probation && retire.is_none();
        let host = c.host.clone();
        if let Some(h) = self.hosts.get_mut(&host) {
            h.in_flight -= 1;
        }
        if let Some(t) = &mut self.trace {
            t.record(now, c.id, &host, TraceKind::Response { request: req_id.0, status: resp.status });
        }
        if resp.status == 401 && self.digest_challenged(ex.req, &resp) {
            // Sent again, first in its queue, with the answer: not a completion.
            self.recycle(resp);
        } else if let Some(p) = self.reqs.remove(ex.req) {
            // A server with one-time (or expiring) nonces names the next one (RFC 7616 §3.5):
            // taking it saves the next request a 401.
            if p.auth.is_some()
                && let Some(nonce) = digest::next_nonce(resp.header_bytes("authentication-info"))
                && let Some(session) = self.hosts.get_mut(&host).and_then(|h| h.digest.as_mut())
            {
                session.challenge.nonce = nonce;
                session.nc = 0;
            }
            self.stats.succeeded += 1;
            self.completions.push_back(Completion { id: p.id, result: Ok(resp) });
            self.recycle_wire(p.wire);
        }
        if fin {
            self.end_conn(conn, ConnState::PeerHalfClosed, "released after close-delimited response", now);
        } else if let Some(why) = retire {
            self.retire(conn, why, now);
        } else {
            self.dispatch(&host, now);
            if probation {
                // The next command must not wait for the probation to end.
                self.open_spare(&host, now);
            }
        }
    }

    /// A `401` for request `r`: if it carries Digest credentials, was not challenged before,
    /// and the response holds a Digest challenge we can answer, the device's session is
    /// (re)started from it and the request goes back to the head of its queue to be sent again
    /// with the answer. The device refused the request, so sending it again is safe whatever
    /// the method. Returns whether it did.
    fn digest_challenged(&mut self, r: Key, resp: &Response) -> bool {
        let Some(p) = self.reqs.get_mut(r) else { return false };
        let Some(a) = p.auth.as_deref_mut() else { return false };
        if a.challenged {
            return false;
        }
        let Some(challenge) = digest::best_challenge(resp.header_bytes("www-authenticate")) else {
            return false;
        };
        let Some(h) = self.hosts.get_mut(&p.host) else { return false };
        log::debug!("request {}: {} asks for Digest authentication; sending it again", p.id.0, p.host);
        a.challenged = true;
        p.on = None;
        match &mut h.digest {
            // The same nonce (this request's answer was refused for another reason, or two
            // requests were challenged at once): its count goes on, a server may refuse a repeat.
            Some(s) if s.challenge.nonce == challenge.nonce => s.challenge = challenge,
            _ => h.digest = Some(DigestSession { challenge, nc: 0 }),
        }
        h.queue.push_front(r);
        true
    }

    /// Closes `conn` on our initiative.
    fn retire(&mut self, conn: Key, why: RetireReason, now: Instant) {
        self.stats.retired += 1;
        if matches!(why, RetireReason::KeepAliveTimeout | RetireReason::LearnedIdleClose) {
            self.stats.retired_before_idle_close += 1;
        }
        self.end_conn(conn, ConnState::Closed { reason: why }, why.as_str(), now);
    }

    fn end_conn(&mut self, conn: Key, to: ConnState, why: &str, now: Instant) {
        self.end_conn_with(conn, to, why, None, now);
    }

    /// The one way a connection ends: enter the terminal state, release the slot, ask the driver
    /// to close the socket, and decide the fate of the request that was on it.
    fn end_conn_with(&mut self, conn: Key, to: ConnState, why: &str, err: Option<io::Error>, now: Instant) {
        let Some(mut c) = self.conns.remove(conn) else { return };
        let cause = match to {
            ConnState::Reset => LostCause::Reset,
            ConnState::Closed { reason: RetireReason::UnsolicitedData } => LostCause::UnsolicitedData,
            _ => LostCause::PeerClosed,
        };
        let device_closed = matches!(to, ConnState::PeerHalfClosed | ConnState::Reset);
        let spare_reason = match &to {
            ConnState::Closed { reason } => will_end(*reason),
            _ => false,
        };
        if let Some(t) = &mut self.trace {
            let state = match &c.state {
                ConnState::PeerHalfClosed => "end of a close-delimited response",
                s => s.name(),
            };
            let kind = match &to {
                ConnState::PeerHalfClosed => TraceKind::PeerFin { state },
                ConnState::Reset => TraceKind::PeerReset { state },
                ConnState::Closed { reason } => TraceKind::Closed { reason: reason.as_str() },
                _ => TraceKind::Closed { reason: "closed" },
            };
            t.record(now, c.id, &c.host, kind);
        }
        let old = c.transition(to, why);
        self.actions.push_back(Action::Close { conn });
        let host = c.host.clone();
        // A device that closes a connection we were not reading a response from has shown
        // when it closes idle connections (or that it closes after every response).
        // A close while a request was being written or awaited, before any response byte (the
        // keep-alive race), is an upper bound too. Within a couple of milliseconds of the last
        // response it may instead be the device's reaction to that request; it is learned all
        // the same (a client that turns around in microseconds would otherwise cross the FIN
        // of a device that closes after every response again and again, as long as the FIN
        // never arrives before its next write), and the next connection is kept on probation,
        // which unlearns it within milliseconds if the device in fact keeps connections.
        let since_response = c.last_response.map(|t| now.saturating_duration_since(t));
        let mut raced = false;
        let idle_close = match &old {
            ConnState::Open(Open::Idle { .. }) => true,
            ConnState::Open(Open::Busy(ex)) if matches!(ex.phase, Phase::Probing) => true,
            ConnState::Open(Open::Busy(ex)) if !ex.reader.started() && since_response.is_some() => {
                raced = since_response.is_some_and(|d| d <= CLOSES_AFTER_RESPONSE);
                true
            }
            _ => false,
        };
        // PeerHalfClosed already: a close-delimited response ended with the FIN.
        let ended_by_response = matches!(old, ConnState::PeerHalfClosed);
        let mut want_spare =
            c.served > 0 && (spare_reason || ended_by_response || (device_closed && idle_close));
        if let Some(h) = self.hosts.get_mut(&host) {
            h.conns.retain(|&k| k != conn);
            if device_closed && raced && !h.behaviour.closes_after_response() {
                // The next connection kept for reuse is the probation that tests the lesson.
                h.single_use = PROBATION_EVERY - 1;
            }
            if device_closed
                && idle_close
                && let Some(d) = since_response
                && h.behaviour.observe_close(d)
            {
                log::debug!(
                    "{host}: the device closed a connection {d:?} after its response{}",
                    if h.behaviour.closes_after_response() {
                        " (it closes after every response)"
                    } else {
                        ""
                    }
                );
            }
        }
        if let ConnState::Open(Open::Busy(ex)) = old {
            want_spare = false; // the request goes back through dispatch, which connects
            // A warm spare waited in the pool like a reused connection: the same race applies.
            self.lost_exchange(ex, c.served > 0 || c.spare, cause, err, now);
        }
        self.dispatch(&host, now);
        if want_spare {
            self.open_spare(&host, now);
        }
        if self.hosts.len() > self.prune_hosts_at {
            // Amortised: the next sweep waits until the map has grown well past what is live,
            // so many active devices do not make every connection end walk the whole map.
            self.hosts.retain(|_, h| !(h.conns.is_empty() && h.queue.is_empty() && h.in_flight == 0));
            self.prune_hosts_at = MAX_IDLE_HOSTS.max(2 * self.hosts.len());
        }
    }

    /// Opens a connection to `host` ahead of need, so the next command finds one connected:
    /// unless one is already usable or on its way.
    fn open_spare(&mut self, host_key: &HostKey, now: Instant) {
        if !self.cfg.warm_spares {
            return;
        }
        let Some(host) = self.hosts.get_mut(host_key) else { return };
        let ready = host.conns.iter().any(|&k| {
            self.conns
                .get(k)
                .is_some_and(|c| c.may_carry_request(now) || matches!(c.state, ConnState::Connecting { .. }))
        });
        if ready || host.conns.len() >= self.cfg.max_connections_per_host {
            return;
        }
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let mut c = Conn::new(id, host_key.clone(), now, now + self.cfg.connect_timeout);
        c.spare = true;
        let conn = self.conns.insert(c);
        self.timers.push(now + self.cfg.connect_timeout, Timer::Connect(conn));
        host.conns.push(conn);
        self.stats.connects += 1;
        self.stats.warm_spares_opened += 1;
        log::debug!("conn={id} {host_key} opened as a warm spare");
        if let Some(t) = &mut self.trace {
            t.record(now, id, host_key, TraceKind::Connecting { spare: true });
        }
        let label = Arc::clone(host_key);
        self.actions.push_back(Action::Connect { conn, host: host.name.clone(), port: host.port, label });
    }

    /// The connection under an exchange was lost: retry the request or fail it.
    fn lost_exchange(
        &mut self,
        ex: Exchange,
        pooled: bool,
        cause: LostCause,
        err: Option<io::Error>,
        now: Instant,
    ) {
        let r = ex.req;
        let Some(p) = self.reqs.get_mut(r) else { return };
        if let Some(h) = self.hosts.get_mut(&p.host) {
            h.in_flight -= 1;
        }
        p.on = None;
        let stage = match &ex.phase {
            Phase::Probing if pooled => {
                // A stale pooled connection, caught before a byte was written: not an attempt.
                log::debug!("request {} returns to the head of its queue (stale connection)", p.id.0);
                let host = p.host.clone();
                if let Some(h) = self.hosts.get_mut(&host) {
                    h.queue.push_front(r);
                }
                return;
            }
            // A fresh connection the device closed before our first byte: an attempt.
            Phase::Probing => Stage::Sending,
            _ => ex.stage(),
        };
        let attempt = Attempt { stage, reused: pooled, retryable: p.retryable, retries: p.retries };
        let loss = Error::ConnectionLost { cause, stage, source: err };
        if retry_is_safe(attempt, self.cfg.max_retries) && p.deadline > now {
            log::debug!("request {} retried on a fresh connection after: {loss}", p.id.0);
            p.retries += 1;
            if p.first_failure.is_none() && stage.may_have_been_processed() {
                p.first_failure = Some(loss);
            }
            self.stats.retries += 1;
            if let Some(t) = &mut self.trace {
                t.record(now, 0, &p.host, TraceKind::Retried { request: p.id.0 });
            }
            let host = p.host.clone();
            if let Some(h) = self.hosts.get_mut(&host) {
                h.queue.push_front(r);
                // The retry must not go back to an idle connection of the same age as the one
                // that just failed: the first idle one it takes is probed, and a stale one is
                // caught there, so only the ordering matters here.
            }
        } else {
            self.fail(r, loss, now);
        }
    }

    /// A connect failed: the request waiting for it (the head of the host's queue) fails with
    /// `err`, unless another connection is coming for it; then the connection ends.
    fn connect_failed(&mut self, conn: Key, err: Error, why: &str, now: Instant) {
        let Some(c) = self.conns.get(conn) else { return };
        let host = c.host.clone();
        self.stats.connect_failures += 1;
        let other_coming = self.hosts.get(&host).is_some_and(|h| {
            h.conns.iter().any(|&k| {
                k != conn
                    && self
                        .conns
                        .get(k)
                        .is_some_and(|c| matches!(c.state, ConnState::Connecting { .. } | ConnState::Open(_)))
            })
        });
        let waiter =
            if other_coming { None } else { self.hosts.get_mut(&host).and_then(|h| h.queue.pop_front()) };
        if let Some(r) = waiter {
            self.fail(r, err, now);
        }
        self.end_conn(conn, ConnState::Closed { reason: RetireReason::ConnectFailed }, why, now);
    }

    /// The request's deadline passed.
    fn expire_request(&mut self, r: Key, now: Instant) {
        let Some(p) = self.reqs.get(r) else { return };
        let host = p.host.clone();
        match p.on {
            Some((conn, _)) => {
                let stage = match self.conns.get(conn).map(|c| &c.state) {
                    Some(ConnState::Open(Open::Busy(ex))) => ex.stage(),
                    _ => Stage::Queued,
                };
                self.fail(r, Error::DeadlineExceeded { stage }, now);
                // A late response would be read as the next request's: the connection goes.
                self.retire(conn, RetireReason::DeadlineExceeded, now);
            }
            None => {
                let connecting = self.hosts.get(&host).is_some_and(|h| {
                    h.conns.iter().any(|&k| {
                        self.conns.get(k).is_some_and(|c| matches!(c.state, ConnState::Connecting { .. }))
                    })
                });
                if let Some(h) = self.hosts.get_mut(&host) {
                    h.queue.retain(|&q| q != r);
                }
                let stage = if connecting { Stage::Connecting } else { Stage::Queued };
                self.fail(r, Error::DeadlineExceeded { stage }, now);
            }
        }
    }

    fn fail(&mut self, r: Key, err: Error, now: Instant) {
        let Some(p) = self.reqs.remove(r) else { return };
        if p.on.is_some()
            && let Some(h) = self.hosts.get_mut(&p.host)
        {
            h.in_flight -= 1;
        }
        let err = match p.first_failure {
            Some(first) => Error::RetryFailed { first: Box::new(first), last: Box::new(err) },
            None => err,
        };
        log::debug!("request {} failed: {err}", p.id.0);
        self.stats.failed += 1;
        if let Some(t) = &mut self.trace {
            let conn = p.on.and_then(|(k, _)| self.conns.get(k)).map_or(0, |c| c.id);
            t.record(now, conn, &p.host, TraceKind::Failed { request: p.id.0, error: err.to_string() });
        }
        self.completions.push_back(Completion { id: p.id, result: Err(err) });
        self.recycle_wire(p.wire);
    }
}

/// One connection in this many, to a device thought to close after every response, is kept on
/// probation to re-check it.
const PROBATION_EVERY: u32 = 32;

/// Buffers kept for reuse, and the largest one kept (a huge body is not hoarded).
const POOL_SIZE: usize = 64;
const POOLED_BUFFER_MAX: usize = 64 * 1024;

/// Hosts with nothing open are forgotten (with what was learned of them) beyond this many.
const MAX_IDLE_HOSTS: usize = 1024;

/// Writes (or rewrites) the `Authorization` line of a Digest request into its wire, answering
/// `session`'s challenge with its current nonce count and a fresh client nonce.
fn authorize(wire: &mut Vec<u8>, a: &mut DigestAuth, session: &DigestSession) {
    let line = wire.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let uri = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let value = digest::authorization(&session.challenge, &a.creds, &method, &uri, session.nc, &cnonce());
    let new = format!("Authorization: {value}\r\n");
    wire.splice(a.at..a.at + a.len, new.bytes());
    a.len = new.len();
}

/// A client nonce: 128 bits from the standard library's randomly keyed hasher (keys from the
/// operating system's random source), so that it cannot be predicted by the server.
fn cnonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let mut out = String::with_capacity(32);
    for i in 0..2u64 {
        let mut h = state.build_hasher();
        h.write_u64(i);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Whether a retirement means the device's next command needs a new connection (so a warm
/// spare is worth opening), as opposed to a fault.
fn will_end(reason: RetireReason) -> bool {
    matches!(
        reason,
        RetireReason::ServerSaidClose
            | RetireReason::Http10
            | RetireReason::CloseDelimitedBody
            | RetireReason::KeepAliveMaxReached
            | RetireReason::KeepAliveTimeout
            | RetireReason::LearnedIdleClose
            | RetireReason::DeviceClosesAfterResponse
    )
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
