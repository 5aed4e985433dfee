//! The engine's doors for what the driver saw: timers, connects, probes, writes, reads, FINs
//! and errors. Each translates one event into the engine's terms and hands the decision on.

use super::*;

impl Engine {
    /// The nearest instant at which [`Engine::on_timeout`] has work: a deadline, a connect
    /// timeout or an idle connection's retire time.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some((at, timer)) = self.timers.peek() {
            if self.timer_is_live(at, timer).is_some() {
                return Some(at);
            }
            self.timers.pop();
            self.rearm_if_moved(at, timer);
        }
        None
    }

    /// Gives `conn` (whose `retire_at` was just set) a timer entry at that time, unless its
    /// entry already in the heap is due no later: that one re-arms itself when it surfaces
    /// ([`Engine::rearm_if_moved`]).
    pub(super) fn arm_retire(timers: &mut Timers, c: &mut Conn, conn: Key) {
        let Some((at, _)) = c.retire_at else { return };
        if c.retire_armed.is_some_and(|armed| armed <= at) {
            return;
        }
        c.retire_armed = Some(at);
        timers.push(at, Timer::Retire(conn));
    }

    /// Gives request slot `slot`, whose request's deadline is `deadline`, a timer entry at that
    /// time, unless its entry already in the heap is due no later (it moves when it surfaces).
    pub(super) fn arm_deadline(&mut self, slot: usize, deadline: Instant) {
        if self.deadline_armed.len() <= slot {
            self.deadline_armed.resize(slot + 1, None);
        }
        if self.deadline_armed[slot].is_some_and(|armed| armed <= deadline) {
            return;
        }
        self.deadline_armed[slot] = Some(deadline);
        self.timers.push(deadline, Timer::Request(slot as u32));
    }

    /// The request slot's deadline entry at `at` has left the heap (it was its current one):
    /// it moves to the deadline of the request now in the slot, if that one is later than
    /// `now`, and the request is returned if its deadline has come.
    fn deadline_entry_left(&mut self, slot: u32, at: Instant, now: Instant) -> Option<Key> {
        let armed = self.deadline_armed.get_mut(slot as usize)?;
        if *armed != Some(at) {
            return None; // a later entry of the slot's, superseded by an earlier one
        }
        *armed = None;
        let r = self.reqs.key_at(slot as usize)?;
        let deadline = self.reqs.get(r)?.deadline;
        if deadline <= now {
            return Some(r);
        }
        self.arm_deadline(slot as usize, deadline);
        None
    }

    /// A timer entry that was not live has left the heap: if it was a connection's retire entry
    /// and the connection, idle, now retires later, the entry moves there; a request slot's
    /// current entry is forgotten (the slot is empty).
    fn rearm_if_moved(&mut self, at: Instant, timer: Timer) {
        if let Timer::Request(slot) = timer {
            if let Some(armed) = self.deadline_armed.get_mut(slot as usize)
                && *armed == Some(at)
            {
                *armed = None;
            }
            return;
        }
        let Timer::Retire(k) = timer else { return };
        let Some(c) = self.conns.get_mut(k) else { return };
        if c.retire_armed != Some(at) {
            return;
        }
        c.retire_armed = None;
        if matches!(c.state, ConnState::Open(Open::Idle { .. })) {
            Self::arm_retire(&mut self.timers, c, k);
        }
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
            let Some(why) = self.timer_is_live(at, timer) else {
                self.rearm_if_moved(at, timer);
                continue;
            };
            if let Timer::Retire(c) = timer
                && let Some(c) = self.conns.get_mut(c)
            {
                c.retire_armed = None;
            }
            match timer {
                Timer::Request(slot) => {
                    if let Some(r) = self.deadline_entry_left(slot, at, now) {
                        self.expire_request(r, now);
                    }
                }
                Timer::Connect(c) => {
                    let Some(conn) = self.conns.get(c) else { continue };
                    let host = conn.host.to_string();
                    if conn.resolving {
                        let source = io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the name lookup did not finish within the connect timeout",
                        );
                        self.connect_failed(c, Error::Resolve { host, source }, "name lookup timed out", now);
                    } else if conn.tls_handshaking {
                        let reason =
                            "the device did not complete the TLS handshake within the connect timeout";
                        let failure = crate::error::TlsFailure::Handshake;
                        let err = Error::Tls { host, failure, reason: reason.into() };
                        self.connect_failed(c, err, "TLS handshake timed out", now);
                    } else {
                        self.connect_failed(c, Error::ConnectTimedOut { host }, "connect timed out", now);
                    }
                }
                Timer::Retire(c) => self.retire_idle(c, why, now),
            }
        }
        if self.timers.needs_compaction(self.reqs.len() + self.conns.len()) {
            for c in self.conns.values_mut() {
                c.retire_armed = match c.state {
                    ConnState::Open(Open::Idle { .. }) => c.retire_at.map(|(t, _)| t),
                    _ => None,
                };
            }
            self.deadline_armed.iter_mut().for_each(|a| *a = None);
            for (k, p) in self.reqs.iter() {
                self.deadline_armed[k.index()] = Some(p.deadline);
            }
            let reqs = self.reqs.iter().map(|(k, p)| (p.deadline, Timer::Request(k.index() as u32)));
            let conns = self.conns.iter().filter_map(|(k, c)| match c.state {
                ConnState::Connecting { deadline } => Some((deadline, Timer::Connect(k))),
                ConnState::Open(Open::Idle { .. }) => c.retire_at.map(|(t, _)| (t, Timer::Retire(k))),
                _ => None,
            });
            self.timers.rebuild(reqs.chain(conns));
        }
    }

    /// An idle connection's retire time came: retire it, or keep it on probation past a learned
    /// idle close ([`IdleRetire::decide`]).
    fn retire_idle(&mut self, conn: Key, why: RetireReason, now: Instant) {
        let Some(c) = self.conns.get(conn) else { return };
        let Some(h) = self.hosts.get_mut(&c.host) else { return self.retire(conn, why, now) };
        let recheck_due = why == RetireReason::LearnedIdleClose && {
            h.learned_retirements = h.learned_retirements.saturating_add(1);
            h.learned_retirements >= h.recheck_every
        };
        if recheck_due {
            h.learned_retirements = 0;
        }
        match (IdleRetire { reason: why, recheck_due }).decide() {
            AtRetireTime::Retire => self.retire(conn, why, now),
            AtRetireTime::Probation => {
                let behaviour = h.behaviour;
                let Some(c) = self.conns.get_mut(conn) else { return };
                let ConnState::Open(Open::Idle { since }) = c.state else { return };
                // Until the limits that do not come from the lesson: ours, the device's own.
                let retire_at = behaviour.retire_at_unlearned(since, self.cfg.idle_timeout);
                log::debug!(
                    "conn={} {}: kept past the learned idle close {:?}, on probation, until {:?} from now",
                    c.id,
                    c.host,
                    behaviour.idle_close(),
                    retire_at.0.saturating_duration_since(now)
                );
                c.probation = true;
                c.retire_at = Some(retire_at);
                Self::arm_retire(&mut self.timers, c, conn);
            }
        }
    }

    /// Whether a timer entry still applies to its subject (and, for a retire timer, why).
    pub(super) fn timer_is_live(&self, at: Instant, timer: Timer) -> Option<RetireReason> {
        match timer {
            // Live while it is the slot's current entry and a request is in the slot (whose
            // deadline may be later: the entry then moves when it surfaces, which costs a
            // wake-up per request timeout, not a heap push per request).
            Timer::Request(slot) => (self.deadline_armed.get(slot as usize) == Some(&Some(at))
                && self.reqs.key_at(slot as usize).is_some())
            .then_some(RetireReason::DeadlineExceeded),
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

    /// The TCP handshake of `conn` is done and its TLS handshake under way (the engine hears
    /// `on_connected` when that one is done).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn on_tls_handshaking(&mut self, conn: Key) {
        if let Some(c) = self.conns.get_mut(conn) {
            c.tls_handshaking = true;
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
        let host = c.host.clone();
        let handshake = (!c.timed).then(|| now.saturating_duration_since(c.created));
        // `caller_back`: a request waits (see `since`).
        let (behaviour, caller_back) = match self.hosts.get_mut(&host) {
            Some(h) => {
                if let Some(handshake) = handshake {
                    h.behaviour.observe_handshake(handshake);
                }
                (h.behaviour, !h.queue.is_empty())
            }
            None => (Behaviour::default(), false),
        };
        // A timed spare connected at its set time while the loop did not run, heard of only
        // now that the caller is back with a request: the device's idle clock started when the
        // handshake's last ACK reached it, half a round trip after the handshake ended here (a
        // round trip after the connect began, at the soonest), not when the loop heard of it.
        // Dated now, it counted as fresh, and a caller back late sent its request into the
        // device's close. (A loop that runs in the pauses hears of the connect as it happens.)
        let since = if c.timed && caller_back {
            let rtt = behaviour.rtt();
            time::after(c.created, rtt.saturating_add(rtt / 2)).min(now)
        } else {
            now
        };
        c.transition(ConnState::Open(Open::Idle { since }), "connected");
        if let Some(t) = &mut self.trace {
            t.record(now, c.id, &c.host, TraceKind::Connected);
        }
        c.connect_at = None;
        if since < now {
            let retire_at = behaviour.retire_at(since, self.cfg.idle_timeout, None);
            if retire_at.0 <= now {
                // Past its retire time already: the device may close it under a request. As a
                // loop that ran would have at that time: retired, or kept on probation to
                // re-check the lesson, for a request that may be sent again.
                self.retire_idle(conn, retire_at.1, now);
                if self.conns.get(conn).is_some_and(|c| c.probation) {
                    self.dispatch(&host, now);
                }
                return;
            }
        }
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
            let retire_at = behaviour.retire_at(since, self.cfg.idle_timeout, None);
            c.retire_at = Some(retire_at);
            Self::arm_retire(&mut self.timers, c, conn);
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
                // With more than one request in flight to a host, an earlier request can still
                // be unsent here (its pooled connection turned out stale and it went back to the
                // queue for a new one): this one waits, and is checked again when its turn
                // comes, so requests to a device go out in the order they were submitted.
                if self.cfg.max_in_flight_per_host > 1 {
                    let req = ex.req;
                    let host = c.host.clone();
                    if self.earlier_unsent(&host, req) {
                        if let Some(c) = self.conns.get_mut(conn)
                            && let ConnState::Open(Open::Busy(ex)) = &mut c.state
                        {
                            log::trace!("conn={} waits for an earlier request to go out first", c.id);
                            ex.held = true;
                        }
                        return;
                    }
                }
                let Some(c) = self.conns.get_mut(conn) else { return };
                let ConnState::Open(Open::Busy(ex)) = &mut c.state else { return };
                if c.served > 0 {
                    self.stats.reuses += 1;
                } else if c.spare
                    && let Some(h) = self.hosts.get_mut(&c.host)
                {
                    h.behaviour.observe_spare_alive(now.saturating_duration_since(c.created));
                    h.spare_recheck_every = SPARE_RECHECK_EVERY;
                }
                if c.probation
                    && let Some(t) = c.last_response
                    && let Some(h) = self.hosts.get_mut(&c.host)
                {
                    let alive_for = now.saturating_duration_since(t);
                    let lesson = h.behaviour.idle_close();
                    if h.behaviour.observe_alive(alive_for) {
                        log::debug!(
                            "{}: a connection survived its probation {alive_for:?} after its response; \
                             the device keeps connections at least that long",
                            c.host
                        );
                        // Well past the lesson (not the jitter of a close measured late), the
                        // lesson was wrong: the next retirement by it is a probation again, so
                        // the estimate keeps rising while connections keep surviving.
                        if lesson.is_some_and(|l| alive_for > l + l / 4) {
                            h.recheck_every = 1;
                            h.learned_retirements = 0;
                        }
                    }
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
                if self.cfg.max_in_flight_per_host > 1 {
                    let host = c.host.clone();
                    self.release_held(&host);
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
        let Some(p) = self.reqs.get_mut(ex.req) else { return };
        // `written` counts the head (all of a request that is not streamed); a streamed body's
        // progress is its source's.
        let to_head = n.min(p.wire.len().saturating_sub(*written));
        *written += to_head;
        if *written < p.wire.len() {
            return;
        }
        if let Some(src) = p.source.as_deref_mut() {
            src.pos = (src.pos + (n - to_head)).min(src.buf.len());
            if src.pos < src.buf.len() {
                return;
            }
            if !src.done() {
                // The buffer is written (or, after the head, not yet filled): the next part.
                let r = ex.req;
                match src.refill() {
                    Ok(()) => return,
                    Err(source) => {
                        log::debug!("conn={} request {}: the body reader failed: {source}", c.id, p.id.0);
                        self.fail(r, Error::BodyStream { stage: Stage::SendingBody, source }, now);
                        return self.retire(conn, RetireReason::BodyStreamFailed, now);
                    }
                }
            }
        }
        ex.phase = Phase::Reading;
        self.last_reading = Some(conn);
        // The request is out and the loop waits for the response: if this connection is known
        // to end with it, the next one connects now, in the shadow of this round trip, instead
        // of after the response, on the next command's critical path.
        // Or, if the caller's next request comes after this connection is retired, a spare
        // connects while the caller is away, to be ready then.
        if ex.ends {
            let host = c.host.clone();
            self.open_spare(&host, now);
        } else if let Some(timed) = c.timed_spare.take() {
            let host = c.host.clone();
            self.open_spare_at(&host, now, Some(timed.get()));
        }
    }

    /// Bytes arrived on `conn`.
    pub(crate) fn on_data(&mut self, conn: Key, data: &[u8], now: Instant) {
        let Some(c) = self.conns.get_mut(conn) else { return };
        let progress = match &mut c.state {
            ConnState::Open(Open::Busy(ex)) if !matches!(ex.phase, Phase::Probing) => {
                let progress = ex.reader.feed(data);
                // A streamed response body goes to the caller's writer as it arrives: the
                // reader holds at most what one read delivered.
                if progress.is_ok()
                    && let Some(p) = self.reqs.get_mut(ex.req)
                    && let Some(BodySink(sink)) = p.sink.as_mut()
                {
                    let body = ex.reader.body();
                    let written = if body.is_empty() { Ok(()) } else { sink.write_all(body) };
                    ex.reader.clear_body();
                    if let Err(source) = written {
                        let r = ex.req;
                        log::debug!("conn={} request {}: the body writer failed: {source}", c.id, p.id.0);
                        self.fail(r, Error::BodyStream { stage: Stage::ReadingResponse, source }, now);
                        return self.retire(conn, RetireReason::BodyStreamFailed, now);
                    }
                }
                progress
            }
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
}
