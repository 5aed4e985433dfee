//! The host queue and dispatch: which queued request goes out on which connection, and when a
//! connection (or a warm spare) is opened for it. Requests leave a host's queue in submission
//! order.

use super::*;
use crate::proto::learn::SparePlan;

impl Engine {
    /// Starts queued requests of `host` on idle or new connections, in submission order; then
    /// lets held requests go whose turn has come.
    pub(super) fn dispatch(&mut self, host_key: &HostKey, now: Instant) {
        self.start_queued(host_key, now);
        if self.cfg.max_in_flight_per_host > 1 {
            self.release_held(host_key);
        }
    }

    fn start_queued(&mut self, host_key: &HostKey, now: Instant) {
        loop {
            let Some(host) = self.hosts.get_mut(host_key) else { return };
            if host.in_flight >= self.cfg.max_in_flight_per_host || host.queue.is_empty() {
                return;
            }
            // A retry goes to a connection that has carried nothing yet (new, or a warm spare):
            // another pooled one may be as stale as the one that just failed. And only to one
            // whose connect started after the lost one became idle (a spare idle longer is
            // reached by the device's idle close first), or, if that one died unused, started
            // after it died: a retry sent into the same close fails too and the command is lost
            // (across compare's link, (c2) under load: spares connected at once idled through the
            // caller's pause, and the retry, on a spare as old, failed too).
            let front = host.queue.front().and_then(|&r| self.reqs.get(r));
            let retry_after = front.and_then(|p| p.retry_after);
            let may_take = |c: &Conn| retry_after.is_none_or(|t| c.served == 0 && c.created >= t);
            // A connection on probation is a test of whether the device still closes after every
            // response; a FIN that is merely late fails it with the request on the wire. Only a
            // request that may be sent again takes that test.
            let may_probe = front.is_some_and(|p| p.retryable);
            // The most recently used idle connection: the one least likely to have been closed.
            let idle = host
                .conns
                .iter()
                .filter_map(|&k| self.conns.get(k).map(|c| (k, c)))
                .filter(|(_, c)| c.may_carry_request(now) && may_take(c) && (may_probe || !c.probation))
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
                let timed = if host_ends || !self.cfg.warm_spares {
                    None
                } else {
                    host.timed_spare(now, self.cfg.idle_timeout).map(SparePlan::new)
                };
                // The common case, the queue's only request: no second lookup to find it empty.
                let more = !host.queue.is_empty();
                self.assign(conn, r, host_ends, timed);
                if !more {
                    return;
                }
                continue;
            }
            // Connecting, and of those the ones the queue's head may take.
            let (mut connecting, mut takable) = (0, 0);
            for c in host.conns.iter().filter_map(|&k| self.conns.get(k)) {
                if matches!(c.state, ConnState::Connecting { .. }) {
                    connecting += 1;
                    takable += usize::from(may_take(c));
                }
            }
            let startable = host.queue.len().min(self.cfg.max_in_flight_per_host - host.in_flight);
            // A warm spare whose connect the kernel was to start later, while the caller was
            // away: the caller is here, so at once (if the kernel has not yet; told once).
            if connecting > 0 {
                Self::connect_timed_now_all(&host.conns, &mut self.conns, &mut self.actions, now);
            }
            // Suspended: a connect failed while another connection was open; the queue waits
            // for that one until an exchange completes (`lifecycle::ConnectFailure`).
            if takable >= startable || (host.connects_suspended && !host.conns.is_empty()) {
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
            let conn = self.conns.insert(Conn::new(
                id,
                host_key.clone(),
                now,
                time::after(now, self.cfg.connect_timeout),
            ));
            self.timers.push(time::after(now, self.cfg.connect_timeout), Timer::Connect(conn));
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
    /// its last response said so). `timed_spare`: [`Conn::timed_spare`].
    pub(super) fn assign(&mut self, conn: Key, r: Key, host_ends: bool, timed_spare: Option<SparePlan>) {
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
            && digest::may_answer(&session.challenge, &a.creds)
        {
            session.nc = session.nc.wrapping_add(1);
            authorize(&mut p.wire, a, session);
        }
        let mut reader = match self.response_pool.pop() {
            Some(spare) => ResponseReader::reuse(self.cfg.limits, p.head_request, spare),
            None => ResponseReader::new(self.cfg.limits, p.head_request),
        };
        if p.sink.is_some() {
            reader.stream_body();
        }
        let ends = host_ends || p.wants_close || c.requests_left == Some(1);
        c.timed_spare = if ends { None } else { timed_spare };
        let head_len = p.wire.len() - p.body_len;
        let busy = ConnState::Open(Open::Busy(Exchange {
            req: r,
            phase: Phase::Probing,
            reader,
            ends,
            head_len,
            held: false,
        }));
        c.transition(busy, format_args!("request {}", p.id.0));
        self.actions.push_back(Action::Probe { conn });
    }

    /// Every timed spare of `host_conns` whose connect the kernel has not been told to start
    /// now is told (out of line: the hot path of a command never comes here).
    #[cold]
    #[inline(never)]
    fn connect_timed_now_all(
        host_conns: &[Key],
        conns: &mut Slab<Conn>,
        actions: &mut VecDeque<Action>,
        now: Instant,
    ) {
        for &k in host_conns {
            if conns.get(k).is_some_and(|c| c.connect_at.is_some()) {
                Self::connect_timed_now_in(conns, actions, k, now);
            }
        }
    }

    /// The connect of timed spare `k` starts now, if the kernel has not started it (told once).
    fn connect_timed_now_in(conns: &mut Slab<Conn>, actions: &mut VecDeque<Action>, k: Key, now: Instant) {
        let Some(c) = conns.get_mut(k) else { return };
        let Some(at) = c.connect_at.take() else { return };
        if now < at {
            c.created = now;
            c.timed = false;
        }
        log::trace!("conn={} timed spare: connect now", c.id);
        actions.push_back(Action::ConnectNow { conn: k });
    }

    /// Opens a connection to `host` ahead of need, so the next command finds one connected:
    /// unless one is already usable or on its way.
    pub(super) fn open_spare(&mut self, host_key: &HostKey, now: Instant) {
        self.open_spare_at(host_key, now, None);
    }

    /// [`Engine::open_spare`], its connect started by the kernel `timed.0` from now if that is
    /// later than now, to wait `timed.1` for its request ([`crate::proto::learn::TimedSpare`]).
    pub(super) fn open_spare_at(
        &mut self,
        host_key: &HostKey,
        now: Instant,
        timed: Option<(Duration, Duration)>,
    ) {
        if !self.cfg.warm_spares {
            return;
        }
        let Some(host) = self.hosts.get_mut(host_key) else { return };
        let exchange = host.behaviour.rtt();
        let next_in = spare_wait(host.pause, host.last_done, host.in_flight > 0, exchange, now);
        // Nothing queued or in flight: the loop runs in the caller's pause (a `poll`,
        // `SharedClient`), and the spare is due because a connection was retired or closed.
        // It opens now, as a loop in the pauses always did: the last spare moment the old
        // connection gave, with the whole of a spare's life ahead for the caller's request
        // whenever it comes; unless what is left of the pause is longer than a spare lives
        // (across a link, a connection retired a round trip early), when it connects later as
        // a caller-driven client's does. Otherwise (after a write) it may be set for later: it
        // would idle out before the request if opened now.
        let in_pause =
            host.in_flight == 0 && host.queue.is_empty() && host.last_done.is_some_and(|t| now > t);
        host.ran_in_pause |= in_pause;
        let timed = if in_pause {
            host.timed_spare_between(next_in).filter(|&(after, _)| !after.is_zero())
        } else {
            timed.or_else(|| host.timed_spare_between(next_in))
        };
        let mut not_started = None;
        let ready = host.conns.iter().any(|&k| {
            self.conns.get(k).is_some_and(|c| {
                if c.connect_at.is_some_and(|at| at > now) {
                    not_started = Some(k);
                }
                c.may_carry_request(now) || matches!(c.state, ConnState::Connecting { .. })
            })
        });
        if ready {
            // A spare set for later (as a request went out, for a caller away in its pauses):
            // the loop runs in the pauses after all, and now is better, safe from an early
            // caller (see above).
            if in_pause && let Some(k) = not_started {
                Self::connect_timed_now_in(&mut self.conns, &mut self.actions, k, now);
            }
            return;
        }
        if host.conns.len() >= self.cfg.max_connections_per_host {
            return;
        }
        let idle = match timed {
            Some((_, wait)) => Some(wait),
            None => next_in,
        };
        let outlook = host.behaviour.spare_outlook(idle);
        if !outlook.worth_opening() {
            host.spares_withheld += 1;
            if host.spares_withheld < host.spare_recheck_every {
                self.stats.warm_spares_withheld += 1;
                log::trace!("{host_key}: no warm spare: it would idle out before use ({outlook:?})");
                return;
            }
            // A re-check; if this one dies unused too, the next comes twice as late.
            host.spares_withheld = 0;
            host.spare_recheck_every = (host.spare_recheck_every * 2).min(SPARE_RECHECK_MAX);
        }
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let at = timed.map(|(after, _)| time::after(now, after)).filter(|&at| at > now);
        let start = at.unwrap_or(now);
        let deadline = time::after(start, self.cfg.connect_timeout);
        let mut c = Conn::new(id, host_key.clone(), start, deadline);
        c.spare = true;
        c.connect_at = at;
        c.timed = at.is_some();
        let conn = self.conns.insert(c);
        self.timers.push(deadline, Timer::Connect(conn));
        host.conns.push(conn);
        self.stats.connects += 1;
        self.stats.warm_spares_opened += 1;
        if let Some(at) = at {
            self.stats.warm_spares_timed += 1;
            log::debug!(
                "conn={id} {host_key} opened as a warm spare, to connect in {:?}",
                at.saturating_duration_since(now)
            );
        } else {
            log::debug!("conn={id} {host_key} opened as a warm spare");
        }
        if let Some(t) = &mut self.trace {
            t.record(now, id, host_key, TraceKind::Connecting { spare: true });
        }
        let label = Arc::clone(host_key);
        self.actions.push_back(Action::Connect { conn, host: host.name.clone(), port: host.port, label });
    }

    /// Whether a request of `host` submitted before `req` has not been written yet (queued, or
    /// assigned and awaiting its pre-write check).
    pub(super) fn earlier_unsent(&self, host: &HostKey, req: Key) -> bool {
        let Some(id) = self.reqs.get(req).map(|p| p.id) else { return false };
        let Some(h) = self.hosts.get(host) else { return false };
        let earlier = |r: Key| self.reqs.get(r).is_some_and(|p| p.id < id);
        h.queue.iter().any(|&r| earlier(r))
            || h.conns.iter().any(|&k| match self.conns.get(k).map(|c| &c.state) {
                Some(ConnState::Open(Open::Busy(ex))) => {
                    matches!(ex.phase, Phase::Probing) && earlier(ex.req)
                }
                _ => false,
            })
    }

    /// Held requests of `host` whose turn has come (nothing earlier unsent) are checked again
    /// (a pre-write check: time has passed since theirs) and then written. Oldest first.
    pub(super) fn release_held(&mut self, host: &HostKey) {
        let Some(h) = self.hosts.get(host) else { return };
        let mut held: Vec<(RequestId, Key, Key)> = h
            .conns
            .iter()
            .filter_map(|&k| match &self.conns.get(k)?.state {
                ConnState::Open(Open::Busy(ex)) if ex.held => Some((self.reqs.get(ex.req)?.id, k, ex.req)),
                _ => None,
            })
            .collect();
        held.sort_unstable();
        for (_, conn, req) in held {
            if self.earlier_unsent(host, req) {
                break;
            }
            if let Some(c) = self.conns.get_mut(conn)
                && let ConnState::Open(Open::Busy(ex)) = &mut c.state
            {
                ex.held = false;
                self.actions.push_back(Action::Probe { conn });
            }
        }
    }
}
