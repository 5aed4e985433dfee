//! The mio event loop: sockets, tokens and syscalls, and nothing else.
//!
//! The driver turns readiness into engine events and engine actions into syscalls. It makes no
//! protocol decision: whether a socket may be written is the engine's answer (`Engine::output`),
//! and the driver writes exactly that. A socket's token is its slab index; its full key (with the
//! slot's generation) is kept in the driver's table, and an event's key is taken from there when
//! the event is collected, so a readiness event for a socket that was closed and whose slot was
//! reused is ignored. (The token is not the whole key: a `usize` is 32 bits on ARMv7 and i686.)
//!
//! Readiness is edge-triggered: after a readable event the driver reads until `WouldBlock`, 0
//! (the FIN) or an error, or the next event never comes.
//!
//! One wait is not the poller's: when the only thing the loop can have to do before a response
//! is read that response, on the only connection (`Driver::direct_wait`), a kernel that can
//! (`Caps::read_wait`, Linux) waits in that socket's own `recv` (`Driver::read_direct`), one
//! syscall where the poller's wait and a read are two.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::os::mio::MioKernel;
use crate::os::{Kernel, Ready};
use crate::proto::engine::{Action, Engine, ProbeOutcome};
use crate::proto::slab::Key;
use crate::resolve::{Answer, LookupFn, Resolver};

mod bytes;
mod connect;
mod prewrite;
#[cfg(feature = "tls")]
mod tls;
use prewrite::{Check, Vouch};

pub(crate) use crate::os::Wake;

/// Reads per readiness event and connection before the loop moves on (64 KiB each): a server
/// that sends without pause must not keep the loop from its timers and other devices.
const READ_BUDGET: usize = 16;

/// A wait in a socket's own `recv` ends at least this long before the nearest deadline: the
/// kernel counts the receive timeout in ticks (1–10 ms), and the poller waits the rest.
const DIRECT_MARGIN: Duration = Duration::from_millis(20);

/// While busy-polling one socket, the poller is asked on every this many passes.
const POLLER_EVERY: u32 = 64;

/// One readiness event, with the key of the connection its socket belonged to when the event
/// was collected: an event of a socket closed since, whose slot went to another connection,
/// is recognised as stale. (The kernel's token is the slot index alone: a generation packed
/// into it was cut off on 32-bit targets, where `usize` is 32 bits.)
#[derive(Debug, Clone, Copy)]
struct Event {
    key: Key,
    readable: bool,
    /// The event reported FIN or an error.
    closing: bool,
    writable: bool,
}

struct Sock<S> {
    key: Key,
    stream: S,
    /// The host's key (`host:port`), for error messages.
    host: Arc<str>,
    /// While connecting to a host name: its walk through the name's addresses (a refused or
    /// unreachable address moves it on to the next). `None` for an IP literal.
    attempt: Option<Attempt>,
    /// `https`: the connection's TLS, from the TCP handshake on.
    #[cfg(feature = "tls")]
    tls: Option<Box<crate::tls::Session>>,
}

/// A connection's walk through the addresses of a host name: how many it has tried.
struct Attempt {
    tried: usize,
}

pub(crate) struct Driver<K: Kernel = MioKernel> {
    k: K,
    /// The kernel's last batch of events, and the same as the driver acts on them.
    kernel_ready: Vec<Ready>,
    ready: Vec<Event>,
    /// Connections whose reads stopped at [`READ_BUDGET`] with data left: resumed next turn.
    /// With whether the event said FIN or error, and a write's error not yet reported (the
    /// resumed read reports it, see `flush`).
    unfinished: Vec<(Key, bool, Option<io::Error>)>,
    waker: Option<Arc<Wake>>,
    /// The waker fired since the caller last asked.
    woken: bool,
    /// When the current wait for a completion began (the loop had nothing left to do): its spin
    /// (busy-poll's or the adaptive one) runs out a budget after it, and the adaptive spin's
    /// limit ([`crate::proto::spin`]) and the spin's counters learn how long it took.
    wait_started: Option<Instant>,
    /// The last poll filled the event buffer.
    events_full: bool,
    /// The last poll filed finished name lookups (and started their connects).
    looked_up: bool,
    /// A busy-poll spin read a socket directly since the last poll: epoll's ready list still
    /// holds that socket (its data arrived unannounced), so a zero-timeout poll would spend its
    /// time re-polling it; the pre-write check peeks instead (see `check_before_write`).
    read_around_poller: bool,
    /// Indexed by `Key::index()`; the entry's own key must match the event's.
    socks: Vec<Option<Sock<K::Stream>>>,
    scratch: Box<[u8]>,
    /// TLS: plaintext out of rustls, and the client's TLS settings.
    #[cfg(feature = "tls")]
    plain: Vec<u8>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<crate::tls::Connector>>,
    resolver: Resolver,
}

impl Driver<MioKernel> {
    /// A driver with the system resolver (the tests' default).
    #[cfg(test)]
    fn new() -> io::Result<Driver> {
        Driver::with(256, crate::resolve::system_lookup())
    }

    /// A driver whose host names go to `lookup` (the system resolver or the caller's).
    pub(crate) fn with_lookup(lookup: LookupFn) -> io::Result<Driver> {
        Driver::with(256, lookup)
    }

    fn with(events: usize, lookup: LookupFn) -> io::Result<Driver> {
        Ok(Driver::over(MioKernel::new(events)?, lookup))
    }

    /// The poller's file descriptor, for embedding in another event loop.
    #[cfg(unix)]
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.k.raw_fd()
    }
}

impl<K: Kernel> Driver<K> {
    /// A driver over kernel `k` (the real one, or the simulator).
    pub(crate) fn over(k: K, lookup: LookupFn) -> Driver<K> {
        Driver {
            k,
            kernel_ready: Vec::new(),
            ready: Vec::new(),
            unfinished: Vec::new(),
            waker: None,
            woken: false,
            read_around_poller: false,
            wait_started: None,
            events_full: false,
            looked_up: false,
            socks: Vec::new(),
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
            #[cfg(feature = "tls")]
            plain: Vec::new(),
            #[cfg(feature = "tls")]
            tls: None,
            resolver: Resolver::new(lookup),
        }
    }

    /// The driver's clock: the kernel's (virtual under the simulator).
    pub(crate) fn now(&self) -> Instant {
        self.k.now()
    }

    /// The kernel, for the simulator's checks.
    #[allow(dead_code)]
    pub(crate) fn kernel_mut(&mut self) -> &mut K {
        &mut self.k
    }

    /// One turn of the loop. First due timers and the engine's queued actions run: the requests
    /// submitted since the last turn go out at once, each after its pre-write check (that no
    /// FIN, RST or stray byte has arrived on that socket; see [`Driver::check_before_write`]).
    /// Reads paused at the budget resume. If that produced no completion, the loop sleeps in
    /// the poller (or spins, in busy-poll mode) until readiness, `until`, or the engine's
    /// nearest timer, whichever is first, and runs again. With `stop_on_wake`, a wake-up
    /// (pending, or arriving while it waits) ends the turn, so that `Client::poll` returns at
    /// once.
    ///
    /// Why no poll of its own before the actions: the request was dispatched when it was
    /// submitted, so an earlier poll could not change the choice of connection, only find a FIN
    /// on it one syscall before the pre-write check does, which is the check closest to the
    /// write and the only one the guarantee needs. Unless a timer is due: then what the network
    /// delivered counts first (a connect that completed, a response, a FIN), so that a caller
    /// who was away for longer than a timeout does not lose a request to a connection that
    /// connected long ago, or retire "ahead of the device" a connection the device has closed.
    pub(crate) fn turn(
        &mut self,
        engine: &mut Engine,
        until: Option<Instant>,
        stop_on_wake: bool,
    ) -> io::Result<()> {
        let now = self.k.now();
        self.turn_at(engine, until, stop_on_wake, now)
    }

    /// [`Driver::turn`] from `now`, a clock reading the caller took a moment ago (a blocking
    /// call's submit: one clock read less per command). Not for an instant of any age: the
    /// turn's timers and wait are reckoned from it.
    pub(crate) fn turn_at(
        &mut self,
        engine: &mut Engine,
        until: Option<Instant>,
        stop_on_wake: bool,
        now: Instant,
    ) -> io::Result<()> {
        if self.unfinished.is_empty() && !engine.timer_due(now) {
            // No timer is due (just asked): the engine's actions, without `on_timeout`.
            self.run_actions_vouched(engine, now, false);
        } else {
            self.step(engine, Some(Duration::ZERO))?;
        }
        if self.turn_done(engine, stop_on_wake) {
            self.end_wait(engine);
            return Ok(());
        }
        let wake = match (until, engine.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let spin = engine.spin_budget().filter(|_| engine.pending() > 0);
        // A spin implies a measured wait (`Engine::measures_waits`): `started` is then set.
        let started = if !engine.measures_waits() || engine.pending() == 0 {
            self.wait_started = None;
            None
        } else {
            Some(*self.wait_started.get_or_insert_with(|| self.k.now()))
        };
        if let Some((key, timeout)) = self.direct_wait(engine, spin, wake, now, stop_on_wake) {
            self.read_direct(engine, key, timeout);
            self.end_wait(engine);
            return Ok(());
        }
        if let (Some(budget), Some(started)) = (spin, started) {
            // Spin before sleeping: no thread wake-up between the response's arrival and its
            // processing. The budget (busy-poll's, or the adaptive limit) holds per wait for a
            // completion, across turns (a blocking call runs many), and never past the nearest
            // deadline.
            let stop = crate::proto::time::after(started, budget);
            if self.spin(engine, wake.map_or(stop, |w| w.min(stop)), stop_on_wake)? {
                self.end_wait(engine);
                return Ok(());
            }
        }
        let now = self.k.now();
        let left = wake.map(|w| w.saturating_duration_since(now));
        match left {
            // epoll_wait counts whole milliseconds (mio rounds a shorter timeout up to 1 ms): the
            // last fraction of a millisecond before a deadline or the caller's timeout is spun
            // on zero-timeout polls instead, so it is met to the microsecond.
            Some(d) if !d.is_zero() && d < Duration::from_millis(1) => {
                self.spin(engine, now + d, stop_on_wake)?;
            }
            // Whole milliseconds only: wake at or before the instant; the rest is spun.
            _ => {
                self.step(engine, left.map(|d| Duration::from_millis(d.as_millis() as u64)))?;
            }
        }
        self.end_wait(engine);
        Ok(())
    }

    /// One pass: continue paused reads, report readiness (waiting up to `timeout`), fire due
    /// timers, run the engine's actions. A wait that vouched for every socket (see
    /// [`Driver::poll_events`]) stands for the pre-write checks of the requests its events let
    /// go (a connect it reported complete): nothing took time since it returned.
    fn step(&mut self, engine: &mut Engine, timeout: Option<Duration>) -> io::Result<()> {
        self.resume_reads(engine);
        let vouched = self.poll_events(engine, timeout)?;
        self.after_io(engine, self.k.now(), vouched);
        Ok(())
    }

    /// What follows the I/O of a pass: due timers, then the engine's actions. `vouched`: the
    /// pass's wait vouched for every socket and nothing took time since.
    fn after_io(&mut self, engine: &mut Engine, now: Instant, vouched: bool) {
        engine.on_timeout(now);
        self.run_actions_vouched(engine, now, vouched);
    }

    /// Zero-timeout passes until `stop`, a completion, or (with `stop_on_wake`) a wake-up.
    /// Returns whether it ended early.
    ///
    /// While the only thing pending is one response, a pass reads that socket directly (one
    /// `recv`, as the hand-written busy-poll floor does) instead of asking the poller: spinning
    /// on `epoll_wait` measured 10–15 µs slower per command on this 2-core VM. The poller (other
    /// sockets, the waker) is still consulted every [`POLLER_EVERY`] passes and whenever a timer
    /// is due, and every write is still preceded by the pre-write check.
    fn spin(&mut self, engine: &mut Engine, stop: Instant, stop_on_wake: bool) -> io::Result<bool> {
        let mut sole = engine.sole_awaited();
        let mut pass = 0u32;
        loop {
            let now = self.k.now();
            if now >= stop {
                return Ok(false);
            }
            pass = pass.wrapping_add(1);
            match sole {
                // A due timer waits for a full pass: the poller's news first (see `turn`).
                Some(key) if !pass.is_multiple_of(POLLER_EVERY) && !engine.timer_due(now) => {
                    self.read_around_poller = true;
                    self.read_all(engine, key, false, &mut None, now);
                    self.after_io(engine, now, false);
                    if !engine.is_busy(key) {
                        sole = engine.sole_awaited();
                    }
                }
                _ => {
                    self.step(engine, Some(Duration::ZERO))?;
                    sole = engine.sole_awaited();
                }
            }
            if engine.has_completions() || (stop_on_wake && self.woken) {
                return Ok(true);
            }
            // Not `spin_loop`: a yield lets a thread that shares this CPU run (on one vCPU, the
            // device itself: without it, a busy-poll's p99 there was its whole budget).
            std::thread::yield_now();
        }
    }

    /// Whether this turn may wait in the socket's own `recv` ([`Driver::read_direct`]) instead
    /// of the poller, and for how long. Only when nothing but that socket can need the loop
    /// before its response: the one pending request awaits its response on the only connection
    /// (no other socket's FIN, connect or data to notice, no name lookup under way), no read is
    /// paused, no event was left in the poller, no spin (busy-poll or the adaptive one), not the
    /// connection's first exchange, no TLS (rustls reads the socket), and, in a turn that a
    /// wake-up ends, no waker. The nearest timer or `until` must be
    /// further than [`DIRECT_MARGIN`]: the receive timeout counts in the kernel's ticks, so the
    /// last stretch before a deadline is waited in the poller, to the microsecond. While the
    /// deadline is far the timeout is a whole second, set once per connection.
    fn direct_wait(
        &self,
        engine: &Engine,
        spin: Option<Duration>,
        wake: Option<Instant>,
        now: Instant,
        stop_on_wake: bool,
    ) -> Option<(Key, Duration)> {
        if !self.k.caps().read_wait
            || (stop_on_wake && self.waker.is_some())
            || !self.unfinished.is_empty()
            || self.events_full
            || spin.is_some()
            || engine.connection_count() != 1
        {
            return None;
        }
        let key = engine.sole_awaited()?;
        // A connection's first exchange waits in the poller: making the socket blocking costs
        // three syscalls (two `fcntl`s, `SO_RCVTIMEO`), paid back only by a connection that is
        // reused (a device that closes after every response, or idles out between commands,
        // never reuses one).
        if self.is_tls(key) || !engine.has_served(key) {
            return None;
        }
        let left = wake?.checked_duration_since(now)?.checked_sub(DIRECT_MARGIN)?;
        let timeout = left.min(Duration::from_secs(1));
        (!timeout.is_zero()).then_some((key, timeout))
    }

    /// Whether the turn has something for the caller (or work the poller will not announce).
    fn turn_done(&self, engine: &Engine, stop_on_wake: bool) -> bool {
        engine.has_completions() || !self.unfinished.is_empty() || (stop_on_wake && self.woken)
    }

    /// A completion ends the current wait, and with it the spin's budget; the adaptive spin
    /// learns how long the wait took.
    fn end_wait(&mut self, engine: &mut Engine) {
        if engine.has_completions()
            && let Some(started) = self.wait_started.take()
        {
            engine.observe_wait(self.k.now().saturating_duration_since(started));
        }
    }

    /// Work the poller's fd will not announce again: reads paused at the budget, or a full
    /// event buffer (more events may be waiting). An embedding loop must call back at once.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.unfinished.is_empty() || self.events_full
    }

    /// Waits up to `timeout` for readiness and handles what it reports. Returns whether the wait
    /// vouches for every socket as the pre-write check's poll would (`Vouch::batch_vouched`): it
    /// succeeded, its event buffer was not full, no read is paused, no name lookup finished,
    /// and no event it reported made a syscall (a connect reported complete by a writable
    /// event, on a kernel where that means connected, makes none; a read or a write does).
    fn poll_events(&mut self, engine: &mut Engine, timeout: Option<Duration>) -> io::Result<bool> {
        let mut kernel_ready = std::mem::take(&mut self.kernel_ready);
        let waited = loop {
            match self.k.wait(&mut kernel_ready, timeout) {
                Ok(w) => break w,
                // A zero-timeout poll is asked again: the pre-write check relies on it having
                // run. A waiting one returns, and its caller's loop goes round.
                Err(e) if e.kind() == io::ErrorKind::Interrupted && timeout == Some(Duration::ZERO) => {}
                Err(e) => {
                    self.kernel_ready = kernel_ready;
                    return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
                }
            }
        };
        self.read_around_poller = false;
        let mut looked_up = false;
        if waited.woken
            && let Some(w) = &self.waker
        {
            self.woken |= w.caller.swap(false, Ordering::AcqRel);
            looked_up |= w.lookup.swap(false, Ordering::AcqRel);
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        for r in &kernel_ready {
            // The slot's tenant now: the event belongs to it (a later close and reuse of the
            // slot within this batch is caught by the key comparison in `sock`).
            let Some(Some(s)) = self.socks.get(r.token) else { continue };
            ready.push(Event { key: s.key, readable: r.readable, closing: r.closing, writable: r.writable });
        }
        self.kernel_ready = kernel_ready;
        self.events_full = waited.full;
        let mut quiet = true;
        let connected_by_writable = self.k.caps().writable_means_connected;
        for r in &ready {
            if self.sock(r.key).is_none() {
                continue; // stale: the socket is gone
            }
            let now = self.k.now();
            if engine.is_connecting(r.key) {
                quiet &=
                    connected_by_writable && r.writable && !r.closing && !r.readable && !self.is_tls(r.key);
                self.check_connect(engine, r, now);
                if engine.is_connecting(r.key) {
                    continue;
                }
            }
            if r.readable {
                quiet = false;
                self.read_all(engine, r.key, r.closing, &mut None, now);
            }
            if r.writable {
                quiet &= engine.output(r.key).is_empty();
                self.flush(engine, r.key, now);
            }
        }
        self.ready = ready;
        self.looked_up = looked_up;
        if looked_up {
            let now = self.k.now();
            self.finish_lookups(engine, now);
        }
        Ok(quiet && !looked_up && !self.events_full && self.unfinished.is_empty())
    }

    /// Whether `key` speaks TLS (its connect completes with a handshake, which makes syscalls).
    fn is_tls(&self, key: Key) -> bool {
        #[cfg(feature = "tls")]
        {
            self.sock(key).is_some_and(|s| s.tls.is_some()) || self.tls_handshaking(key)
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = key;
            false
        }
    }

    /// Continues reads that stopped at the budget (no new edge would announce their data).
    fn resume_reads(&mut self, engine: &mut Engine) {
        if self.unfinished.is_empty() {
            return; // the common case, every pass: not even an empty iterator
        }
        for (key, closing, mut write_error) in std::mem::take(&mut self.unfinished) {
            let now = self.k.now();
            self.read_all(engine, key, closing, &mut write_error, now);
            // Read to its end: the write's error, if the read found no other.
            if let Some(e) = write_error
                && engine.knows(key)
                && !self.unfinished.iter().any(|u| u.0 == key)
            {
                engine.on_error(key, e, now);
            }
        }
    }

    /// The client's waker (created on first use: a poller has at most one).
    pub(crate) fn waker(&mut self) -> io::Result<Arc<Wake>> {
        if let Some(w) = &self.waker {
            return Ok(w.clone());
        }
        let w = Arc::new(Wake::new(self.k.notifier()?));
        self.waker = Some(w.clone());
        Ok(w)
    }

    /// Whether the waker fired since the last call.
    pub(crate) fn take_woken(&mut self) -> bool {
        std::mem::take(&mut self.woken)
    }

    /// Runs the engine's queued actions. `now`: the time of the pass (the actions of one pass
    /// run within microseconds; a clock read per action was a measurable share of a command).
    pub(crate) fn run_actions(&mut self, engine: &mut Engine, now: Instant) {
        self.run_actions_vouched(engine, now, false);
    }

    /// [`Driver::run_actions`], where `vouched` says that the wait just before vouched for every
    /// socket and nothing took time since.
    fn run_actions_vouched(&mut self, engine: &mut Engine, now: Instant, vouched: bool) {
        // Whether a pre-write poll (or the pass's wait) has run since the last syscall of this
        // batch: the probes queued one after the other (requests submitted together, a request
        // let go by a connect the wait reported) share it.
        let mut checked = vouched;
        while let Some(action) = engine.poll_action() {
            match action {
                // A connect the engine gave up on before it ran (abort_all, a deadline) is skipped.
                Action::Connect { conn, host, port, label } if engine.knows(conn) => {
                    checked = false;
                    self.connect(engine, conn, &host, port, label, now)
                }
                Action::ConnectNow { conn } => {
                    checked = false;
                    self.connect_now(engine, conn, now)
                }
                Action::Connect { .. } => {}
                Action::Probe { conn } => {
                    if let Some(outcome) = self.check_before_write(engine, conn, &mut checked) {
                        engine.on_probe(conn, outcome, now);
                    }
                }
                Action::Write { conn } => {
                    checked = false;
                    self.flush(engine, conn, now)
                }
                Action::Close { conn } => {
                    checked = false;
                    self.close(conn)
                }
            }
        }
    }

    /// The last check before a request is written on `conn`: has a FIN, an RST or a stray byte
    /// arrived on it? `None`: the check ended the exchange itself (the engine was told). How it
    /// checks is [`Vouch::decide`]'s (a zero-timeout poll for every socket at once, or a peek).
    /// `checked`: a poll of this batch of actions vouched for every socket (reset by the actions
    /// that take time: a connect, a write, a close).
    fn check_before_write(
        &mut self,
        engine: &mut Engine,
        conn: Key,
        checked: &mut bool,
    ) -> Option<ProbeOutcome> {
        let vouch = Vouch {
            zero_wait_is_exact: self.k.caps().zero_wait_is_exact,
            read_around_poller: self.read_around_poller,
            batch_vouched: *checked,
            reads_paused: !self.unfinished.is_empty(),
        };
        let vouched = match vouch.decide() {
            Check::Trust => true,
            Check::Peek => false,
            Check::Poll => {
                let polled = self.poll_events(engine, Some(Duration::ZERO));
                let vouched = polled.is_ok() && !self.events_full && self.unfinished.is_empty();
                // A later probe of the batch may rely on this poll only if what it reported made
                // no syscall: the reads it caused took time.
                *checked = vouched && polled.is_ok_and(|quiet| quiet);
                vouched
            }
        };
        if vouched {
            return engine.is_probing(conn).then_some(ProbeOutcome::Alive);
        }
        if !engine.is_probing(conn) {
            return None;
        }
        // Over TLS a peek sees ciphertext: a NewSessionTicket would look like unsolicited data.
        // The socket is read through TLS instead: a close_notify or application data there ends
        // the exchange as from the peek; records for TLS alone are consumed.
        #[cfg(feature = "tls")]
        if self.sock(conn).is_some_and(|s| s.tls.is_some()) {
            let now = self.k.now();
            self.tls_read_all(engine, conn, false, &mut None, now);
            return engine.is_probing(conn).then_some(ProbeOutcome::Alive);
        }
        let Some(s) = self.socks.get_mut(conn.index()).and_then(|s| s.as_mut()).filter(|s| s.key == conn)
        else {
            return Some(ProbeOutcome::Error(io::Error::from(io::ErrorKind::NotConnected)));
        };
        Some(loop {
            break match self.k.peek(&mut s.stream) {
                Ok(0) => ProbeOutcome::Fin,
                Ok(_) => ProbeOutcome::Data,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ProbeOutcome::Alive,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => ProbeOutcome::Error(e),
            };
        })
    }

    fn sock(&self, key: Key) -> Option<&Sock<K::Stream>> {
        self.socks.get(key.index())?.as_ref().filter(|s| s.key == key)
    }
}

#[cfg(test)]
mod tests;
