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

mod prewrite;
use prewrite::{Check, Vouch};

pub(crate) use crate::os::Wake;

/// Reads per readiness event and connection before the loop moves on (64 KiB each): a server
/// that sends without pause must not keep the loop from its timers and other devices.
const READ_BUDGET: usize = 16;

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
    /// Busy-poll: when the current wait's spinning budget runs out.
    spin_until: Option<Instant>,
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
            spin_until: None,
            events_full: false,
            looked_up: false,
            socks: Vec::new(),
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
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
        if self.unfinished.is_empty() && !engine.timer_due(now) {
            self.after_io(engine, now);
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
        if let Some(budget) = engine.config().busy_poll
            && engine.pending() > 0
        {
            // Spin instead of sleeping: no thread wake-up between the response's arrival and
            // its processing. The budget holds per wait for a completion, across turns (a
            // blocking call runs many), and never past the nearest deadline.
            let stop = *self.spin_until.get_or_insert(crate::proto::time::after(self.k.now(), budget));
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
    /// timers, run the engine's actions.
    fn step(&mut self, engine: &mut Engine, timeout: Option<Duration>) -> io::Result<()> {
        self.resume_reads(engine);
        self.poll_events(engine, timeout)?;
        self.after_io(engine, self.k.now());
        Ok(())
    }

    /// What follows the I/O of a pass: due timers, then the engine's actions.
    fn after_io(&mut self, engine: &mut Engine, now: Instant) {
        engine.on_timeout(now);
        self.run_actions(engine, now);
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
                    self.after_io(engine, now);
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
            std::hint::spin_loop();
        }
    }

    /// Whether the turn has something for the caller (or work the poller will not announce).
    fn turn_done(&self, engine: &Engine, stop_on_wake: bool) -> bool {
        engine.has_completions() || !self.unfinished.is_empty() || (stop_on_wake && self.woken)
    }

    /// A completion ends the current wait, and with it the busy-poll budget.
    fn end_wait(&mut self, engine: &Engine) {
        if engine.has_completions() {
            self.spin_until = None;
        }
    }

    /// Work the poller's fd will not announce again: reads paused at the budget, or a full
    /// event buffer (more events may be waiting). An embedding loop must call back at once.
    pub(crate) fn has_backlog(&self) -> bool {
        !self.unfinished.is_empty() || self.events_full
    }

    fn poll_events(&mut self, engine: &mut Engine, timeout: Option<Duration>) -> io::Result<()> {
        let mut kernel_ready = std::mem::take(&mut self.kernel_ready);
        let waited = loop {
            match self.k.wait(&mut kernel_ready, timeout) {
                Ok(w) => break w,
                // A zero-timeout poll is asked again: the pre-write check relies on it having
                // run. A waiting one returns, and its caller's loop goes round.
                Err(e) if e.kind() == io::ErrorKind::Interrupted && timeout == Some(Duration::ZERO) => {}
                Err(e) => {
                    self.kernel_ready = kernel_ready;
                    return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
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
        for r in &ready {
            if self.sock(r.key).is_none() {
                continue; // stale: the socket is gone
            }
            let now = self.k.now();
            if engine.is_connecting(r.key) {
                self.check_connect(engine, r, now);
                if engine.is_connecting(r.key) {
                    continue;
                }
            }
            if r.readable {
                self.read_all(engine, r.key, r.closing, &mut None, now);
            }
            if r.writable {
                self.flush(engine, r.key, now);
            }
        }
        self.ready = ready;
        self.looked_up = looked_up;
        if looked_up {
            let now = self.k.now();
            self.finish_lookups(engine, now);
        }
        Ok(())
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
        // Whether a pre-write poll has run since the last syscall of this batch: the probes
        // queued one after the other (requests submitted together) share it.
        let mut checked = false;
        while let Some(action) = engine.poll_action() {
            match action {
                // A connect the engine gave up on before it ran (abort_all, a deadline) is skipped.
                Action::Connect { conn, host, port, label } if engine.knows(conn) => {
                    checked = false;
                    self.connect(engine, conn, &host, port, label, now)
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
                let vouched = self.poll_events(engine, Some(Duration::ZERO)).is_ok()
                    && !self.events_full
                    && self.unfinished.is_empty();
                // A later probe of the batch may rely on this poll only if it found nothing: the
                // reads (or connects) it caused took time.
                *checked = vouched && self.ready.is_empty() && !self.looked_up;
                vouched
            }
        };
        if vouched {
            return engine.is_probing(conn).then_some(ProbeOutcome::Alive);
        }
        if !engine.is_probing(conn) {
            return None;
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

    /// `label`: the host's key (`host:port`), which names it in errors and in the resolver.
    fn connect(
        &mut self,
        engine: &mut Engine,
        key: Key,
        host: &str,
        port: u16,
        label: Arc<str>,
        now: Instant,
    ) {
        match ip_literal(host, port) {
            Some(Ok(addr)) => return self.connect_to(engine, key, addr, label, None, now),
            Some(Err(source)) => {
                return engine.on_connect_failed(
                    key,
                    Error::Resolve { host: label.to_string(), source },
                    now,
                );
            }
            None => {}
        }
        // A lookup off the loop wakes it through the client's waker; without one, it runs here.
        let wake = self.waker().map_err(|e| log::warn!("no waker for background name lookups: {e}")).ok();
        match self.resolver.resolve(wake, &label, host, port, key, now) {
            Answer::Addr(addr) => self.connect_to(engine, key, addr, label, Some(Attempt { tried: 1 }), now),
            // Parked until the lookup answers (under the engine's connect timeout); a lookup
            // that could not go to the background has answered already.
            Answer::Pending => {
                engine.on_resolving(key, true, now);
                if self.resolver.has_inline() {
                    self.finish_lookups(engine, now);
                }
            }
        }
    }

    /// Starts the connect of `key` to `addr`: an IP literal (`attempt` `None`), or the first
    /// address tried for a host name.
    fn connect_to(
        &mut self,
        engine: &mut Engine,
        key: Key,
        addr: SocketAddr,
        label: Arc<str>,
        attempt: Option<Attempt>,
        now: Instant,
    ) {
        if let Err((source, attempt)) = self.open(engine, key, addr, Arc::clone(&label), attempt) {
            self.connect_failed(engine, key, label, source, attempt, now);
        }
    }

    /// Name lookups that finished: their parked connections connect, or fail with the lookup's
    /// error. A connection the engine gave up on meanwhile (its connect timeout) is skipped.
    fn finish_lookups(&mut self, engine: &mut Engine, now: Instant) {
        for done in self.resolver.take_done(now) {
            for key in done.waiting {
                if !engine.is_connecting(key) || self.sock(key).is_some() {
                    continue;
                }
                engine.on_resolving(key, false, now);
                match &done.result {
                    Ok(addr) => {
                        let attempt = Some(Attempt { tried: 1 });
                        self.connect_to(engine, key, *addr, Arc::clone(&done.label), attempt, now)
                    }
                    Err(e) => {
                        let source = io::Error::new(e.kind(), e.to_string());
                        engine.on_connect_failed(
                            key,
                            Error::Resolve { host: done.label.to_string(), source },
                            now,
                        );
                    }
                }
            }
        }
    }

    /// Opens a socket to `addr` under `key` and starts its connect. On failure the attempt is
    /// handed back with the error.
    fn open(
        &mut self,
        engine: &Engine,
        key: Key,
        addr: SocketAddr,
        host: Arc<str>,
        attempt: Option<Attempt>,
    ) -> Result<(), (io::Error, Option<Attempt>)> {
        let stream = match self.k.open(addr, engine.config().nodelay, key.index()) {
            Ok(s) => s,
            Err(e) => return Err((e, attempt)),
        };
        if self.socks.len() <= key.index() {
            self.socks.resize_with(key.index() + 1, || None);
        }
        self.socks[key.index()] = Some(Sock { key, stream, host, attempt });
        log::trace!("conn={} connecting to {addr}", engine.conn_id(key));
        Ok(())
    }

    /// A connect failed (refused, unreachable, ...). If the host name has addresses this
    /// connection has not tried, the next one is tried under the same key: the engine sees one
    /// connect, bounded by its connect timeout. Otherwise the engine is told; either way new
    /// connections to the name start with the next address (and once all of them have failed
    /// in a row, with a new lookup of the name).
    fn connect_failed(
        &mut self,
        engine: &mut Engine,
        key: Key,
        label: Arc<str>,
        mut source: io::Error,
        mut attempt: Option<Attempt>,
        now: Instant,
    ) {
        while let Some(mut a) = attempt.take() {
            let Some(addr) = self.resolver.failed(&label, a.tried) else { break };
            a.tried += 1;
            log::debug!("conn={} {label}: {source}; trying {addr}", engine.conn_id(key));
            match self.open(engine, key, addr, Arc::clone(&label), Some(a)) {
                Ok(()) => return,
                Err((e, back)) => (source, attempt) = (e, back),
            }
        }
        engine.on_connect_failed(key, Error::ConnectFailed { host: label.to_string(), source }, now);
    }

    /// A connecting socket became writable (or failed): did the handshake succeed?
    fn check_connect(&mut self, engine: &mut Engine, r: &Event, now: Instant) {
        let key = r.key;
        let writable_means_connected = self.k.caps().writable_means_connected;
        let Some(s) = self.socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key)
        else {
            return;
        };
        // Linux reports a socket in SYN_SENT neither readable nor writable (`tcp_poll`), and a
        // failed connect with `EPOLLERR`: writable without an error or a hang-up means
        // connected, and `SO_ERROR` and `getpeername` would only confirm it (two syscalls per
        // connection). Elsewhere, and for any other event, ask.
        let outcome = if writable_means_connected && r.writable && !r.closing {
            Ok(true)
        } else {
            self.k.connect_result(&mut s.stream)
        };
        match outcome {
            Ok(true) => {
                if s.attempt.take().is_some() {
                    let label = Arc::clone(&s.host);
                    self.resolver.connected(&label);
                }
                engine.on_connected(key, now)
            }
            Ok(false) => {}
            Err(e) => {
                let (label, attempt) = (Arc::clone(&s.host), s.attempt.take());
                self.connect_failed(engine, key, label, e, attempt, now);
            }
        }
    }

    /// Reads what arrived. A busy connection is read until its response is complete (by a read
    /// that did not fill the buffer); anything else until `WouldBlock`, 0 (the FIN) or an error.
    /// `closing`: the event already reported FIN or an error, so the read must go on to consume
    /// it now. Stopping at a complete response saves a syscall per command and loses nothing:
    /// the socket was empty, so whatever arrives later raises a new event, which the pre-write
    /// poll (or peek) reports.
    ///
    /// `write_error`: a write on this socket just failed (its error not yet reported). The reset
    /// that failed it was consumed by the write, so a read then returns 0 as if for a FIN: that
    /// 0 is reported as the write's error, the connection's true end.
    fn read_all(
        &mut self,
        engine: &mut Engine,
        key: Key,
        closing: bool,
        write_error: &mut Option<io::Error>,
        now: Instant,
    ) {
        let Some(s) = self.socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key)
        else {
            return;
        };
        let was_busy = engine.is_busy(key);
        // Stop once the engine has let go of the connection (an error, a limit): a flooding
        // server must not keep the loop reading. Stop at the budget too, and resume next turn,
        // so timers (a deadline) run even while a server sends without pause.
        for _ in 0..READ_BUDGET {
            if !engine.knows(key) {
                return;
            }
            match self.k.read(&mut s.stream, &mut self.scratch) {
                Ok(0) => {
                    return match write_error.take() {
                        Some(e) => engine.on_error(key, e, now),
                        None => engine.on_fin(key, now),
                    };
                }
                Ok(n) => {
                    engine.on_data(key, &self.scratch[..n], now);
                    // The socket is empty and the response is not complete: acknowledge what
                    // came at once, or a device holding the rest until then waits 40 ms.
                    if n < self.scratch.len() && engine.is_busy(key) {
                        self.k.ack_now(&mut s.stream);
                    }
                    // A short read emptied the socket: anything that arrives later raises a new
                    // event, which the pre-write poll relies on. A full buffer may have left
                    // bytes behind the response (unsolicited), so the read goes on.
                    if was_busy && !closing && !engine.is_busy(key) && n < self.scratch.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return engine.on_error(key, e, now),
            }
        }
        if engine.knows(key) {
            self.unfinished.push((key, closing, write_error.take()));
        }
    }

    /// Writes what the engine has for `key` until it is all out or the socket is full.
    ///
    /// A write error is reported only after what the socket still holds has been read: a device
    /// that reads a request's head, answers early (`200`, `413`) and closes with the body unread
    /// resets the connection under our write, and its answer sits in our receive queue ahead of
    /// the RST (Linux returns queued data before the reset's error). That answer is the outcome;
    /// reported first, the error made the engine retry a POST the device had acted on, or fail
    /// it as "not processed".
    fn flush(&mut self, engine: &mut Engine, key: Key, now: Instant) {
        let Some(s) = self.socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key)
        else {
            return;
        };
        let err = loop {
            let out = engine.output(key);
            if out.is_empty() {
                return;
            }
            match self.k.write(&mut s.stream, out) {
                Ok(0) => break io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => engine.on_written(key, n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break e,
            }
        };
        let mut err = Some(err);
        self.read_all(engine, key, true, &mut err, now);
        // The read found the outcome (a response, the reset), or paused at its budget (the
        // error went with it, for the resumed read); otherwise the write's error is the news.
        if let Some(err) = err
            && engine.knows(key)
        {
            engine.on_error(key, err, now);
        }
    }

    fn close(&mut self, key: Key) {
        if let Some(slot) = self.socks.get_mut(key.index())
            && slot.as_ref().is_some_and(|s| s.key == key)
            && let Some(s) = slot.take()
        {
            // A connect the engine gave up on (its timeout): new connections start elsewhere.
            if s.attempt.is_some() {
                self.resolver.failed(&s.host, usize::MAX);
            }
            self.k.close(s.stream);
        } else {
            // Not connecting yet: parked for a name lookup, perhaps.
            self.resolver.forget(key);
        }
    }
}

/// An IP literal as a URL gives it: IPv4, IPv6, or IPv6 with a zone (`fe80::1%eth0`: the
/// interface's name or index; a name is looked up in `/sys/class/net`, so on Linux only, and
/// elsewhere the index is needed). `None`: a host name, for the resolver.
fn ip_literal(host: &str, port: u16) -> Option<io::Result<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Ok(SocketAddr::new(ip, port)));
    }
    let (addr, zone) = host.split_once('%')?;
    let addr = addr.parse::<std::net::Ipv6Addr>().ok()?;
    let scope = match zone.parse::<u32>() {
        Ok(index) => Ok(index),
        // `Url::parse` let only unreserved characters through, and not `.` or `..`: no path.
        Err(_) if cfg!(target_os = "linux") => {
            std::fs::read_to_string(format!("/sys/class/net/{zone}/ifindex"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("no network interface {zone:?}"))
                })
        }
        Err(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("interface names in IPv6 zones are read on Linux only; give the index of {zone:?}"),
        )),
    };
    Some(scope.map(|scope| SocketAddr::V6(std::net::SocketAddrV6::new(addr, port, 0, scope))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;
    use crate::proto::engine::Config;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, mpsc};

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// Reads one request head (no body) from `s`, within a deadline.
    fn read_head(s: &mut TcpStream) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).unwrap(), 1, "request cut short");
            head.push(b[0]);
        }
    }

    /// Turns the loop until `id` completes (bounded: the request's own deadline).
    fn run_until_done(d: &mut Driver, e: &mut Engine) -> crate::Result<crate::Response> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "no completion");
            d.turn(e, Some(Instant::now() + Duration::from_millis(10)), false).unwrap();
            if let Some(c) = e.poll_completion() {
                return c.result;
            }
        }
    }

    /// Accepts one connection within a deadline (never blocks a failing test for ever).
    fn accept_within(l: &TcpListener, within: Duration) -> Option<TcpStream> {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    return Some(s);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        }
        None
    }

    /// A host name whose first address refuses the connection (a `localhost` that resolves to
    /// `::1` first, with the device listening on 127.0.0.1 only): the connect moves on to the
    /// next address within the same connection, and later connections start with the one that
    /// worked.
    #[test]
    fn a_refused_address_of_a_name_falls_back_to_the_next() {
        let mut d = Driver::new().unwrap();
        let mut e = Engine::new(Config::default());
        let device = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = device.local_addr().unwrap().port();
        let refusing = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed again
        let label = format!("multi.test:{port}");
        d.resolver.insert(
            &label,
            "multi.test",
            port,
            vec![refusing, device.local_addr().unwrap()],
            Instant::now(),
        );
        e.submit(&Request::get(&format!("http://multi.test:{port}/io")).build().unwrap(), Instant::now());
        let server = std::thread::spawn(move || {
            let mut s = accept_within(&device, Duration::from_secs(5)).expect("no connection came");
            read_head(&mut s);
            s.write_all(OK).unwrap();
            s
        });
        assert_eq!(run_until_done(&mut d, &mut e).unwrap().status(), 200, "{:?}", e.stats());
        server.join().unwrap();
        assert_eq!((e.stats().connects, e.stats().connect_failures), (1, 0));
        assert_eq!(d.resolver.next_of(&label), Some(1), "new connections start with the address that worked");
    }

    #[test]
    fn ip_literals_with_zones() {
        let v6 = |r: Option<io::Result<SocketAddr>>| match r {
            Some(Ok(SocketAddr::V6(a))) => (a.ip().to_string(), a.port(), a.scope_id()),
            other => panic!("{other:?}"),
        };
        assert_eq!(v6(ip_literal("fe80::1%7", 80)), ("fe80::1".to_string(), 80, 7));
        assert!(matches!(ip_literal("10.0.0.5", 8080), Some(Ok(SocketAddr::V4(_)))));
        assert!(ip_literal("device.local", 80).is_none(), "a name is the resolver's");
        assert!(ip_literal("10.0.0.5%eth0", 80).is_none(), "zones are IPv6 only");
        if cfg!(target_os = "linux") {
            let lo: u32 =
                std::fs::read_to_string("/sys/class/net/lo/ifindex").unwrap().trim().parse().unwrap();
            assert_eq!(v6(ip_literal("fe80::1%lo", 80)).2, lo);
            match ip_literal("fe80::1%nosuchif0", 80) {
                Some(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Turns the loop until `n` requests have completed (bounded by a deadline).
    fn run_until_n(d: &mut Driver, e: &mut Engine, n: usize) -> Vec<crate::proto::engine::Completion> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut done = Vec::new();
        while done.len() < n {
            assert!(Instant::now() < deadline, "only {} of {n} completions", done.len());
            d.turn(e, Some(Instant::now() + Duration::from_millis(10)), false).unwrap();
            while let Some(c) = e.poll_completion() {
                done.push(c);
            }
        }
        done
    }

    /// A device that answers one request on its own thread.
    fn answer_one(device: TcpListener) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut s = accept_within(&device, Duration::from_secs(5)).expect("no connection came");
            read_head(&mut s);
            s.write_all(OK).unwrap();
        })
    }

    /// A resolver the test controls: `name` resolves to what the test sends (each lookup takes
    /// the next answer, waiting for it up to 10 s); it counts the lookups.
    fn scripted_lookup(
        name: &'static str,
    ) -> (LookupFn, mpsc::Sender<io::Result<Vec<SocketAddr>>>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::channel::<io::Result<Vec<SocketAddr>>>();
        let rx = Arc::new(Mutex::new(rx));
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        let lookup: LookupFn = Arc::new(move |host: &str, _port: u16| {
            assert_eq!(host, name);
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
            answer.unwrap_or_else(|_| Err(io::Error::other("the test sent no answer")))
        });
        (lookup, tx, count)
    }

    /// A name lookup that hangs (an mDNS name of a device that is switched off) holds up
    /// neither the commands to other devices nor its own deadline: it runs off the loop, and
    /// the connection waiting for it fails at its connect timeout. Its late answer is kept for
    /// the next connection to the name.
    #[test]
    fn a_hanging_name_lookup_holds_up_neither_other_devices_nor_its_deadline() {
        const CONNECT_TIMEOUT: Duration = Duration::from_millis(150);
        let (lookup, answer, lookups) = scripted_lookup("device.local");
        let mut d = Driver::with(64, lookup).unwrap();
        let mut e = Engine::new(Config { connect_timeout: CONNECT_TIMEOUT, ..Config::default() });
        let (named, other) =
            (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let named_port = named.local_addr().unwrap().port();
        let start = Instant::now();
        let stuck =
            e.submit(&Request::get(&format!("http://device.local:{named_port}/io")).build().unwrap(), start);
        let ok = e.submit(
            &Request::get(&format!("http://{}/io", other.local_addr().unwrap())).build().unwrap(),
            start,
        );
        let server = answer_one(other);
        let done = run_until_n(&mut d, &mut e, 2);
        server.join().unwrap();
        let result = |id| &done.iter().find(|c| c.id == id).unwrap().result;
        assert_eq!(result(ok).as_ref().map(|r| r.status()).ok(), Some(200));
        match result(stuck) {
            Err(Error::Resolve { host, source }) => {
                assert_eq!(host, &format!("device.local:{named_port}"));
                assert_eq!(source.kind(), io::ErrorKind::TimedOut);
            }
            other => panic!("{other:?}"),
        }
        assert!(start.elapsed() < CONNECT_TIMEOUT * 10, "the deadline held: {:?}", start.elapsed());

        // The answer comes late; the next connection to the name uses it, without a new lookup.
        answer.send(Ok(vec![named.local_addr().unwrap()])).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while d.resolver.has_pending_lookup() {
            assert!(Instant::now() < deadline, "the late answer never arrived");
            d.turn(&mut e, Some(Instant::now() + Duration::from_millis(10)), false).unwrap();
        }
        assert!(!d.take_woken(), "a lookup's wake-up is not the caller's");
        e.submit(
            &Request::get(&format!("http://device.local:{named_port}/io")).build().unwrap(),
            Instant::now(),
        );
        let server = answer_one(named);
        assert_eq!(run_until_done(&mut d, &mut e).unwrap().status(), 200, "{:?}", e.stats());
        server.join().unwrap();
        assert_eq!(lookups.load(Ordering::SeqCst), 1);
    }

    /// The first connection to `device.local` gets `first` from the resolver and fails (its
    /// error returned); the second gets a working address: it must ask the resolver again.
    fn fails_then_is_looked_up_again(first: io::Result<Vec<SocketAddr>>) -> Error {
        let (lookup, answer, lookups) = scripted_lookup("device.local");
        let mut d = Driver::with(64, lookup).unwrap();
        let mut e = Engine::new(Config::default());
        let device = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = "http://device.local:8080/io";
        answer.send(first).unwrap();
        e.submit(&Request::get(url).build().unwrap(), Instant::now());
        let err = run_until_done(&mut d, &mut e).expect_err("the first connection must fail");
        assert_eq!(lookups.load(Ordering::SeqCst), 1);

        answer.send(Ok(vec![device.local_addr().unwrap()])).unwrap();
        e.submit(&Request::get(url).build().unwrap(), Instant::now());
        let server = answer_one(device);
        assert_eq!(run_until_done(&mut d, &mut e).unwrap().status(), 200, "{:?}", e.stats());
        server.join().unwrap();
        assert_eq!(lookups.load(Ordering::SeqCst), 2, "looked up again");
        err
    }

    /// A device that comes back with a new address (a reboot, a new DHCP lease) is found
    /// again: once every address of its name has failed to connect, the next connection waits
    /// for a new lookup instead of trying the old address for ever.
    #[test]
    fn a_name_is_looked_up_again_when_its_addresses_stop_answering() {
        let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed again: refuses
        let err = fails_then_is_looked_up_again(Ok(vec![gone]));
        assert!(matches!(err, Error::ConnectFailed { .. }), "{err:?}");
    }

    /// A lookup that fails is reported as such (`Error::Resolve`, naming the host), and the
    /// next connection to the name asks again.
    #[test]
    fn a_failed_lookup_is_reported_and_the_next_connection_asks_again() {
        match fails_then_is_looked_up_again(Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))) {
            Error::Resolve { host, source } => {
                assert_eq!((host.as_str(), source.kind()), ("device.local:8080", io::ErrorKind::NotFound));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A caller that is away for longer than the connect timeout after its request's connect
    /// started (here the loop never ran after `connect`) finds, when it comes back, the
    /// connection established: the poller's news counts before the overdue connect timer.
    #[test]
    fn a_connect_that_completed_while_the_caller_was_away_is_not_timed_out() {
        const CONNECT_TIMEOUT: Duration = Duration::from_millis(30);
        let mut d = Driver::new().unwrap();
        let mut e = Engine::new(Config { connect_timeout: CONNECT_TIMEOUT, ..Config::default() });
        let device = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/io-state", device.local_addr().unwrap());
        e.submit(&Request::get(&url).build().unwrap(), Instant::now());
        d.run_actions(&mut e, Instant::now()); // the connect starts; nothing is polled
        let (mut s, _) = device.accept().unwrap(); // the handshake is done
        let server = std::thread::spawn(move || {
            read_head(&mut s);
            s.write_all(OK).unwrap();
            s
        });
        // The caller's pause (the situation under test, not a synchronisation).
        std::thread::sleep(CONNECT_TIMEOUT * 3);
        let resp = run_until_done(&mut d, &mut e);
        assert_eq!(resp.map(|r| r.status()).ok(), Some(200), "{:?}", e.stats());
        server.join().unwrap();
        assert_eq!(e.stats().connect_failures, 0);
    }

    /// When the pre-write poll cannot vouch for the chosen socket (here: its event buffer is
    /// full with another socket's event, ahead of the FIN in epoll's ready list), the socket is
    /// peeked, and its FIN stops the write as surely as if the poll had reported it.
    #[test]
    fn a_full_event_buffer_falls_back_to_the_peek_and_still_stops_the_write() {
        let mut d = Driver::with(1, crate::resolve::system_lookup()).unwrap();
        let mut e = Engine::new(Config { warm_spares: false, ..Config::default() });
        let device = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = |l: &TcpListener, p: &str| format!("http://{}{p}", l.local_addr().unwrap());
        // One idle connection to each listener.
        let mut conns = Vec::new();
        for l in [&device, &other] {
            e.submit(&Request::get(&url(l, "/")).build().unwrap(), Instant::now());
            d.turn(&mut e, Some(Instant::now()), false).unwrap();
            let (mut s, _) = l.accept().unwrap();
            // Turn until the request is out, then answer it.
            let t = std::thread::spawn(move || {
                read_head(&mut s);
                s.write_all(OK).unwrap();
                s
            });
            assert_eq!(run_until_done(&mut d, &mut e).unwrap().status(), 200);
            conns.push(t.join().unwrap());
        }
        let [dev_conn, mut other_conn] = <[TcpStream; 2]>::try_from(conns).unwrap();
        // First a stray byte on the other connection, then the device's FIN on its own: both
        // queued in the client's kernel before the next command (on loopback, by the time
        // these calls return).
        other_conn.write_all(b"x").unwrap();
        dev_conn.shutdown(Shutdown::Write).unwrap();

        let next = url(&device, "/next");
        let s = next_request_on_a_new_connection(&mut d, &mut e, &next, device, dev_conn);
        assert_eq!((s.connects, s.fins_caught_by_peek, s.retries, s.failed), (3, 1, 0, 0), "{s:?}");
    }

    /// Sends `url` after the device closed `dev_conn` (FIN): the device must get nothing on
    /// `dev_conn` but the client's close, and the request on a new connection, which it answers.
    fn next_request_on_a_new_connection(
        d: &mut Driver,
        e: &mut Engine,
        url: &str,
        device: TcpListener,
        mut dev_conn: TcpStream,
    ) -> crate::Stats {
        e.submit(&Request::get(url).build().unwrap(), Instant::now());
        let server = std::thread::spawn(move || {
            dev_conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut rest = Vec::new();
            let _ = dev_conn.read_to_end(&mut rest);
            let (mut s, _) = device.accept().unwrap();
            read_head(&mut s);
            s.write_all(OK).unwrap();
            rest
        });
        assert_eq!(run_until_done(d, e).unwrap().status(), 200);
        let written_after_fin = server.join().unwrap();
        assert!(written_after_fin.is_empty(), "{:?}", String::from_utf8_lossy(&written_after_fin));
        e.stats()
    }

    /// Busy-poll reads the awaited socket around the poller, so the pre-write check peeks the
    /// chosen socket instead of polling (epoll's ready list still holds it): a FIN that arrived
    /// after the response stops the write just the same.
    #[test]
    fn after_a_busy_poll_read_the_pre_write_peek_stops_the_write_on_a_fin() {
        let mut d = Driver::new().unwrap();
        let cfg = Config { warm_spares: false, busy_poll: Some(Duration::from_secs(2)), ..Config::default() };
        let mut e = Engine::new(cfg);
        let device = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = |p: &str| format!("http://{}{p}", device.local_addr().unwrap());
        e.submit(&Request::get(&url("/")).build().unwrap(), Instant::now());
        d.turn(&mut e, Some(Instant::now()), false).unwrap();
        let (mut s, _) = device.accept().unwrap();
        let (got_request, go) = (mpsc::channel(), mpsc::channel::<()>());
        let t = std::thread::spawn(move || {
            read_head(&mut s);
            got_request.0.send(()).unwrap();
            go.1.recv().unwrap();
            s.write_all(OK).unwrap();
            s
        });
        // Turn until the request is out (no response can arrive yet), then have the response
        // queued in the client's socket (on loopback, by the time `write_all` returns), so the
        // spin's first pass reads it directly (not its every-64th pass through the poller).
        let deadline = Instant::now() + Duration::from_secs(5);
        while got_request.1.try_recv().is_err() {
            assert!(Instant::now() < deadline, "the request never arrived");
            d.turn(&mut e, Some(Instant::now() + Duration::from_millis(1)), false).unwrap();
        }
        go.0.send(()).unwrap();
        let dev_conn = t.join().unwrap();
        assert_eq!(run_until_done(&mut d, &mut e).unwrap().status(), 200);
        assert!(d.read_around_poller, "the response was read by the spin, not through the poller");
        dev_conn.shutdown(Shutdown::Write).unwrap();

        let next = url("/next");
        let s = next_request_on_a_new_connection(&mut d, &mut e, &next, device, dev_conn);
        assert_eq!((s.connects, s.fins_caught_by_peek, s.retries, s.failed), (2, 1, 0, 0), "{s:?}");
    }
}
