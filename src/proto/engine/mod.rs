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

mod auth;
mod dispatch;
mod ending;
mod events;
mod stream;
mod types;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, LostCause, Stage};
use crate::proto::conn::{Conn, ConnState, Exchange, Open, Phase, RetireReason};
use crate::proto::digest::{self, Challenge, Credentials};
use crate::proto::framing::{Limits, Progress, ResponseReader};
use crate::proto::hash::{FastBuild, HostKey};
use crate::proto::learn::{Behaviour, SPARE_RECHECK_EVERY, SPARE_RECHECK_MAX, TimedSpare, spare_wait};
use crate::proto::lifecycle::{
    AfterConnectFailure, AfterResponse, AtRetireTime, ConnFate, ConnectFailure, EndedBy, Ending, IdleRetire,
    Loss, LossFate, PROBATION_EVERY, RECHECK_LEARNED_EVERY, RECHECK_LEARNED_MAX, Was,
};
use crate::proto::slab::{Key, Slab};
use crate::proto::spin::SpinLimit;
use crate::proto::time;
use crate::proto::timers::{Timer, Timers};
use crate::request::Request;
use crate::response::{Meta, Response};
use crate::trace::{Trace, TraceKind};

use auth::{DigestAuth, DigestSession, authorize};
pub(crate) use stream::{BodySink, BodySource};
pub use types::*;

#[derive(Debug)]
struct Pending {
    id: RequestId,
    host: HostKey,
    wire: Vec<u8>,
    /// The body's length: the wire's tail (an `Authorization` line may grow the head).
    body_len: usize,
    head_request: bool,
    retryable: bool,
    wants_close: bool,
    deadline: Instant,
    retries: u32,
    /// The first lost attempt, kept to report it if the retry fails too.
    first_failure: Option<Error>,
    /// A retry's: it goes out only on a connection that has carried nothing and whose connect
    /// started at this instant or later (see `dispatch`).
    retry_after: Option<Instant>,
    /// The connection it is on, and whether that one was reused.
    on: Option<(Key, bool)>,
    /// Digest credentials, and where the `Authorization` line goes in `wire`.
    auth: Option<Box<DigestAuth>>,
    /// A streamed request body (`wire` is then the head alone).
    source: Option<Box<BodySource>>,
    /// Where the response body goes instead of the response (then empty).
    sink: Option<BodySink>,
}

#[derive(Debug)]
struct Host {
    name: Arc<str>,
    port: u16,
    queue: VecDeque<Key>,
    conns: Vec<Key>,
    in_flight: usize,
    /// How the device closes connections, learned.
    behaviour: Behaviour,
    /// Responses from a device thought to close after every response; every
    /// [`PROBATION_EVERY`]th connection is kept on probation to re-check that.
    single_use: u32,
    /// Connections retired by the learned idle close since the last probation of it; at
    /// `recheck_every`, one is kept on probation instead, to re-check the lesson.
    learned_retirements: u32,
    recheck_every: u32,
    /// A connect failed while another connection was open: no new connection until an
    /// exchange completes (see `lifecycle::ConnectFailure`).
    connects_suspended: bool,
    /// The device's last Digest challenge, answered in advance by later requests.
    digest: Option<DigestSession>,
    /// When its last exchange completed, and the caller's pause from then to its next request:
    /// how long a warm spare opened now would wait for use
    /// ([`crate::proto::learn::SpareOutlook`]).
    last_done: Option<Instant>,
    pause: Option<Duration>,
    /// Warm spares not opened because they would idle out before use, since the last one
    /// opened anyway to re-check; that re-check comes every `spare_recheck_every` (from
    /// [`SPARE_RECHECK_EVERY`], doubling while the re-checked spares die too, up to
    /// [`SPARE_RECHECK_MAX`]; back to the start when one is used alive).
    spares_withheld: u32,
    spare_recheck_every: u32,
    /// A spare was due in the caller's last pause, and the loop ran to open it (a `poll`,
    /// `SharedClient`), or in the current one: no spare is set for later then, as a request
    /// goes out ([`Host::timed_spare`]); the loop opens one when it retires the connection.
    loop_in_pauses: bool,
    ran_in_pause: bool,
}

impl Host {
    /// For a request going out now on a kept connection: whether, and when, a warm spare
    /// should connect while the caller is away ([`TimedSpare`]). Nothing to weigh (the common
    /// case: no close learned) costs one test.
    #[inline]
    fn timed_spare(&self, now: Instant, idle_limit: Duration) -> Option<(Duration, Duration)> {
        let lives = self.behaviour.unused_lives()?;
        self.timed_spare_learned(lives, now, idle_limit)
    }

    #[cold]
    #[inline(never)]
    fn timed_spare_learned(
        &self,
        lives: Duration,
        now: Instant,
        idle_limit: Duration,
    ) -> Option<(Duration, Duration)> {
        if self.loop_in_pauses {
            return None;
        }
        // As a request goes out: its answer comes an exchange from now (a round trip at the
        // least, the fastest handshake), the caller's next request a pause after that, and the
        // connection it leaves is retired counting from that answer. (Reckoned from now, the
        // spare connected an exchange early: across a 1 ms link, a caller back 0.6 ms later
        // than last time found it idled out.)
        let pause = self.pause?;
        let rtt = self.behaviour.rtt();
        let answer = time::after(now, rtt);
        let (retire, _) = self.behaviour.retire_at(answer, idle_limit, None);
        let kept_for = retire.saturating_duration_since(now);
        let next_in = pause.saturating_add(rtt);
        TimedSpare { next_in: Some(next_in), kept_for, lives: Some(lives), rtt }.decide()
    }

    /// For a spare due at once (a connection retired, a probation; after the write of a request
    /// that ends its connection), the caller's next request expected in `next_in`: when it
    /// should connect, if the rule says ([`TimedSpare`]). For a device that closes after every
    /// response its idle close says nothing of how long an unused connection lives: only spares
    /// found closed unused, or cut under their first request, do.
    fn timed_spare_between(&self, next_in: Option<Duration>) -> Option<(Duration, Duration)> {
        let lives = if self.behaviour.closes_after_response() {
            self.behaviour.single_use_spare_lives()?
        } else {
            self.behaviour.unused_lives()?
        };
        TimedSpare { next_in, kept_for: Duration::ZERO, lives: Some(lives), rtt: self.behaviour.rtt() }
            .decide()
    }
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
    /// Per request slot, the time of its deadline entry in `timers` (`Timer::Request`), if it
    /// has one.
    deadline_armed: Vec<Option<Instant>>,
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
    /// How long the next wait may spin before it sleeps, unless busy-polling.
    spin: SpinLimit,
}

impl Engine {
    pub(crate) fn new(cfg: Config) -> Engine {
        Engine {
            trace: cfg.trace.map(Trace::new),
            spin: SpinLimit::new(cfg.adaptive_spin),
            cfg,
            conns: Slab::default(),
            reqs: Slab::default(),
            hosts: HashMap::default(),
            actions: VecDeque::new(),
            completions: VecDeque::new(),
            timers: Timers::default(),
            deadline_armed: Vec::new(),
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

    /// How long the current wait for a response may spin before it sleeps: busy-poll's budget,
    /// or the adaptive limit ([`crate::proto::spin`]); `None`: sleep at once.
    pub(crate) fn spin_budget(&self) -> Option<Duration> {
        self.cfg.busy_poll.or_else(|| Some(self.spin.limit()).filter(|d| !d.is_zero()))
    }

    /// The adaptive spin's current limit (the simulator's report).
    #[cfg(any(test, feature = "__internal"))]
    pub(crate) fn spin_limit(&self) -> Duration {
        self.spin.limit()
    }

    /// Whether the adaptive spin is in charge (on, and not replaced by busy-poll).
    pub(crate) fn spin_adapts(&self) -> bool {
        self.cfg.busy_poll.is_none() && !self.cfg.adaptive_spin.is_zero()
    }

    /// Whether waits are measured: for the adaptive spin's limit, and for the spin's counters
    /// (also in busy-poll mode).
    pub(crate) fn measures_waits(&self) -> bool {
        self.cfg.busy_poll.is_some() || self.spin_adapts()
    }

    /// A wait that ended in a completion took `waited` (from the moment the loop had nothing
    /// left to do): counted as caught by the spin if it ended within the spin's limit (or
    /// busy-poll's budget), as spun in vain if it ended after it; and the adaptive spin's limit
    /// follows it. A wait under a zero limit (the spin off for now) counts as neither.
    pub(crate) fn observe_wait(&mut self, waited: Duration) {
        if let Some(limit) = self.spin_budget() {
            if waited <= limit {
                self.stats.spins_caught += 1;
            } else {
                self.stats.spins_missed += 1;
            }
        }
        if self.spin_adapts() {
            let before = self.spin.limit();
            self.spin.observe(waited);
            if self.spin.limit() != before {
                log::trace!("adaptive spin: waited {waited:?}, limit {before:?} -> {:?}", self.spin.limit());
            }
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats
    }

    /// Queues a request behind earlier ones to the same host.
    pub(crate) fn submit(&mut self, req: &Request, now: Instant) -> RequestId {
        self.submit_streamed(req, None, None, now)
    }

    /// [`Engine::submit`], with the body from `source` (after a head that announces its length;
    /// the request's own body is not sent) and the response body into `sink`, if given. The
    /// caller refuses Digest authentication with either (a challenge would need both again).
    pub(crate) fn submit_streamed(
        &mut self,
        req: &Request,
        source: Option<BodySource>,
        sink: Option<BodySink>,
        now: Instant,
    ) -> RequestId {
        let id = RequestId(self.next_req_id);
        self.next_req_id += 1;
        self.stats.submitted += 1;
        let key = req.url.host_key();
        let mut wire = self.wire_pool.pop().unwrap_or_default();
        match &source {
            Some(src) => req.encode_streamed_head(&mut wire, src.len()),
            None => req.encode(&mut wire),
        }
        let body_len = if source.is_some() { 0 } else { req.body.len() };
        // The wire is the head's lines, an empty line and the body: an `Authorization` line
        // goes right before the empty line.
        let auth = req.digest.as_ref().map(|creds| {
            let at = wire.len() - body_len - 2;
            Box::new(DigestAuth { creds: Arc::clone(creds), at, len: 0, challenged: false })
        });
        let pending = Pending {
            id,
            host: key.clone(),
            wire,
            body_len,
            head_request: req.traits.head,
            retryable: req.traits.retryable,
            wants_close: req.traits.wants_close,
            deadline: time::after(now, req.timeout.unwrap_or(self.cfg.request_timeout)),
            retries: 0,
            first_failure: None,
            retry_after: None,
            on: None,
            auth,
            source: source.map(Box::new),
            sink,
        };
        let deadline = pending.deadline;
        let r = self.reqs.insert(pending);
        self.arm_deadline(r.index(), deadline);
        // A lookup by reference first: the key's `Arc` is cloned only for a new host.
        let host = match self.hosts.get_mut(key) {
            Some(host) => host,
            None => self.hosts.entry(key.clone()).or_insert_with(|| Host {
                name: req.url.host().into(),
                port: req.url.port(),
                queue: VecDeque::new(),
                conns: Vec::new(),
                in_flight: 0,
                behaviour: Behaviour::default(),
                single_use: 0,
                learned_retirements: 0,
                recheck_every: RECHECK_LEARNED_EVERY,
                connects_suspended: false,
                digest: None,
                last_done: None,
                pause: None,
                spares_withheld: 0,
                spare_recheck_every: SPARE_RECHECK_EVERY,
                loop_in_pauses: false,
                ran_in_pause: false,
            }),
        };
        if let Some(t) = host.last_done {
            host.pause = Some(now.saturating_duration_since(t));
            host.loop_in_pauses = std::mem::take(&mut host.ran_in_pause);
        }
        host.queue.push_back(r);
        log::trace!("request {} {} {} queued", id.0, req.method.as_str(), key);
        self.dispatch(key, now);
        id
    }

    /// When the kernel is to start the connect of `conn` (a timed warm spare), if later than
    /// now; `None`: at once.
    pub(crate) fn connect_at(&self, conn: Key) -> Option<Instant> {
        self.conns.get(conn)?.connect_at
    }

    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub(crate) fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// Whether actions are queued for the driver (a submitted request's connect or write): the
    /// next turn has work that no fd announces.
    pub(crate) fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    pub(crate) fn has_completions(&self) -> bool {
        !self.completions.is_empty()
    }

    /// Live connections (connecting, open, or waiting for a name lookup).
    pub(crate) fn connection_count(&self) -> usize {
        self.conns.len()
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
        let Some(p) = self.reqs.get(ex.req) else { return &[] };
        match p.wire.get(written..) {
            Some(head) if !head.is_empty() => head,
            // The head is out: a streamed body's current buffer.
            _ => p.source.as_deref().map_or(&[], BodySource::unsent),
        }
    }

    /// Whether a Connecting connection is awaiting its handshake (the driver checks SO_ERROR).
    pub(crate) fn is_connecting(&self, conn: Key) -> bool {
        matches!(self.conns.get(conn).map(|c| &c.state), Some(ConnState::Connecting { .. }))
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
        if self.response_pool.len() < POOL_SIZE && resp.buf.capacity() <= POOLED_BUFFER_MAX {
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

    /// Whether a byte of the response on `conn` has arrived (TLS: a FIN without close_notify is
    /// then a truncation).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn response_started(&self, conn: Key) -> bool {
        matches!(self.conns.get(conn).map(|c| &c.state), Some(ConnState::Open(Open::Busy(ex))) if ex.reader.started())
    }

    /// Records a trace event of `conn` that the driver saw (TLS), if tracing.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn trace_event(&mut self, conn: Key, now: Instant, kind: TraceKind) {
        if let Some(t) = &mut self.trace
            && let Some(c) = self.conns.get(conn)
        {
            t.record(now, c.id, &c.host, kind);
        }
    }

    /// Whether `conn` is still a live connection of the engine's.
    pub(crate) fn knows(&self, conn: Key) -> bool {
        self.conns.get(conn).is_some()
    }

    /// The request on `conn` and whether it may be retried (for the fuzz harness's checks).
    #[cfg(any(test, feature = "__internal"))]
    pub(crate) fn request_on(&self, conn: Key) -> Option<(RequestId, bool)> {
        let r = self.busy_request(conn)?;
        self.reqs.get(r).map(|p| (p.id, p.retryable))
    }

    /// Whether `conn` has completed an exchange before the one it carries now.
    pub(crate) fn has_served(&self, conn: Key) -> bool {
        self.conns.get(conn).is_some_and(|c| c.served > 0)
    }

    /// The connection's log serial, for the driver's own log lines.
    pub(crate) fn conn_id(&self, conn: Key) -> u64 {
        self.conns.get(conn).map_or(0, |c| c.id)
    }

    fn busy_request(&self, conn: Key) -> Option<Key> {
        match &self.conns.get(conn)?.state {
            ConnState::Open(Open::Busy(ex)) => Some(ex.req),
            _ => None,
        }
    }
}

/// Buffers kept for reuse, and the largest one kept (a huge body is not hoarded).
const POOL_SIZE: usize = 64;
const POOLED_BUFFER_MAX: usize = 64 * 1024;

/// Hosts with nothing open are forgotten (with what was learned of them) beyond this many.
const MAX_IDLE_HOSTS: usize = 1024;

#[cfg(test)]
mod tests;
