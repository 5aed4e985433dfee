//! How exchanges and connections end: a complete response, a connection lost under a request,
//! a failed connect, a deadline. The decisions themselves are in `proto::lifecycle`; this file
//! gathers their facts and applies them.

use super::*;

impl Engine {
    /// The response on `conn` is complete. `extra`: bytes followed it; `fin`: the peer closed.
    pub(super) fn complete_exchange(&mut self, conn: Key, extra: bool, fin: bool, now: Instant) {
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
        // One lookup of the host for the exchange's end: what the response taught, the
        // exchange no longer in flight, and whether requests wait in its queue.
        let (behaviour, single_use, queued) = match self.hosts.get_mut(&c.host) {
            Some(h) => {
                h.in_flight -= 1;
                h.last_done = Some(now);
                // An exchange completed: connects suspended after a refused one may resume.
                h.connects_suspended = false;
                h.behaviour.observe_announced(persistence.idle_timeout);
                if c.spare && c.served == 1 {
                    // A spare's first exchange completed: as old as this, spares are not cut.
                    h.behaviour.observe_spare_served(now.saturating_duration_since(c.created));
                }
                h.behaviour.observe_response_closes(matches!(
                    persistence.close,
                    Some(
                        RetireReason::ServerSaidClose
                            | RetireReason::Http10
                            | RetireReason::CloseDelimitedBody
                    )
                ));
                (h.behaviour, h.single_use, !h.queue.is_empty())
            }
            None => (Behaviour::default(), 0, false),
        };
        let facts = AfterResponse {
            fin,
            extra,
            still_writing: matches!(ex_phase, Phase::Writing { .. }),
            says_close: persistence.close,
            requested_close: wants_close,
            max_reached: c.requests_left == Some(0),
            closes_after_response: behaviour.closes_after_response(),
            probation_due: single_use.wrapping_add(1).is_multiple_of(PROBATION_EVERY),
        };
        let keep = facts.decide();
        // Single-use, except now and then a connection kept on probation: the learning came
        // from one close, and a device that in fact keeps connections alive must not be denied
        // reuse for ever. The count advances only where the decision was about that.
        if matches!(
            keep,
            ConnFate::Keep { probation: true } | ConnFate::Retire(RetireReason::DeviceClosesAfterResponse)
        ) && let Some(h) = self.hosts.get_mut(&c.host)
        {
            h.single_use = h.single_use.wrapping_add(1);
        }
        if keep == (ConnFate::Keep { probation: true }) {
            c.probation = true;
        }
        let retire = match keep {
            ConnFate::Retire(why) => Some(why),
            ConnFate::Released | ConnFate::Keep { .. } => None,
        };
        // Kept for reuse: it gets a retire time and its timer (a connection that is closing now
        // needs neither).
        if matches!(keep, ConnFate::Keep { .. }) {
            let retire_at = behaviour.retire_at(now, self.cfg.idle_timeout, persistence.idle_timeout);
            c.retire_at = Some(retire_at);
            Self::arm_retire(&mut self.timers, c, conn);
        }
        let probation = c.probation && retire.is_none();
        if let Some(t) = &mut self.trace {
            t.record(now, c.id, &c.host, TraceKind::Response { request: req_id.0, status: resp.status });
        }
        let requeued = resp.status == 401 && self.digest_challenged(ex.req, &resp);
        if requeued {
            // Sent again, first in its queue, with the answer: not a completion.
            self.recycle(resp);
        } else if let Some(p) = self.reqs.remove(ex.req) {
            // A server with one-time (or expiring) nonces names the next one (RFC 7616 §3.5):
            // taking it saves the next request a 401.
            if p.auth.is_some()
                && let Some(nonce) = digest::next_nonce(resp.header_bytes("authentication-info"))
                && let Some(session) = self.hosts.get_mut(&p.host).and_then(|h| h.digest.as_mut())
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
            // Nothing queued (a challenged request goes back to its queue), one request in
            // flight at most: dispatch would find nothing to do. (The host's key is cloned
            // only here: an `Arc`'s two atomic operations on every command otherwise.)
            let dispatch = queued || requeued || self.cfg.max_in_flight_per_host > 1;
            if (dispatch || probation)
                && let Some(host) = self.conns.get(conn).map(|c| c.host.clone())
            {
                if dispatch {
                    self.dispatch(&host, now);
                }
                if probation {
                    // The next command must not wait for the probation to end.
                    self.open_spare(&host, now);
                }
            }
        }
    }

    /// Closes `conn` on our initiative.
    pub(super) fn retire(&mut self, conn: Key, why: RetireReason, now: Instant) {
        self.stats.retired += 1;
        if matches!(why, RetireReason::KeepAliveTimeout | RetireReason::LearnedIdleClose) {
            self.stats.retired_before_idle_close += 1;
        }
        self.end_conn(conn, ConnState::Closed { reason: why }, why.as_str(), now);
    }

    pub(super) fn end_conn(&mut self, conn: Key, to: ConnState, why: &str, now: Instant) {
        self.end_conn_with(conn, to, why, None, now);
    }

    /// The one way a connection ends: enter the terminal state, release the slot, ask the driver
    /// to close the socket, then apply what [`Ending::decide`] says the end teaches and whether a
    /// spare follows, and what [`Loss::decide`] says of the request that was on it.
    pub(super) fn end_conn_with(
        &mut self,
        conn: Key,
        to: ConnState,
        why: &str,
        err: Option<io::Error>,
        now: Instant,
    ) {
        let Some(mut c) = self.conns.remove(conn) else { return };
        let cause = match to {
            ConnState::Reset => LostCause::Reset,
            ConnState::Closed { reason: RetireReason::UnsolicitedData } => LostCause::UnsolicitedData,
            _ => LostCause::PeerClosed,
        };
        let by = match &to {
            ConnState::Closed { reason } => EndedBy::Us(*reason),
            _ => EndedBy::Device,
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
        let was = match &old {
            ConnState::Connecting { .. } => Was::Connecting,
            ConnState::Open(Open::Idle { .. }) => Was::Idle,
            ConnState::Open(Open::Busy(ex)) if matches!(ex.phase, Phase::Probing) => Was::Probing,
            ConnState::Open(Open::Busy(ex)) if !ex.reader.started() => Was::Sending,
            ConnState::Open(Open::Busy(_)) => Was::Reading,
            // PeerHalfClosed already: a close-delimited response ended with the FIN.
            ConnState::PeerHalfClosed | ConnState::Reset | ConnState::Closed { .. } => Was::Released,
        };
        let host_single_use = self.hosts.get(&host).is_some_and(|h| h.behaviour.closes_after_response());
        let since_response = c.last_response.map(|t| now.saturating_duration_since(t));
        let decision = Ending { was, by, served: c.served, since_response, host_single_use }.decide();
        if let Some(h) = self.hosts.get_mut(&host) {
            h.conns.retain(|&k| k != conn);
            if c.spare
                && c.served == 0
                && by == EndedBy::Device
                && matches!(was, Was::Idle | Was::Probing)
                && h.behaviour.observe_spare_died(now.saturating_duration_since(c.created))
            {
                log::debug!(
                    "{host}: a warm spare was closed by the device unused, {:?} after its connect",
                    now.saturating_duration_since(c.created)
                );
            }
            // A spare cut by the device's FIN under its first request, where the device is
            // thought to close after every response: how long its unused connections live, for
            // the next successors' timing (`Host::timed_spare_between`). A FIN only: a reset
            // under a request has other causes (a device that resets under load, say).
            if c.spare
                && c.served == 0
                && by == EndedBy::Device
                && was == Was::Sending
                && cause == LostCause::PeerClosed
                && h.behaviour.closes_after_response()
            {
                let age = now.saturating_duration_since(c.created);
                if h.behaviour.observe_spare_cut(age) {
                    log::debug!(
                        "{host}: a warm spare was closed by the device under its first request, {age:?} after its connect"
                    );
                }
            }
            if c.probation && was == Was::Idle && by == EndedBy::Device {
                // The device closed a connection kept past the lesson: it was right. Check it
                // less often, and never less than every `RECHECK_LEARNED_MAX` retirements.
                h.recheck_every =
                    (h.recheck_every.max(RECHECK_LEARNED_EVERY / 2) * 2).min(RECHECK_LEARNED_MAX);
            }
            if decision.probation_next {
                // The next connection kept for reuse is the probation that tests the lesson.
                h.single_use = PROBATION_EVERY - 1;
            }
            if let Some(d) = decision.lesson
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
            self.lost_exchange(ex, &c, cause, err, now);
        }
        self.dispatch(&host, now);
        if decision.spare {
            self.open_spare(&host, now);
        }
        if self.hosts.len() > self.prune_hosts_at {
            // Amortised: the next sweep waits until the map has grown well past what is live,
            // so many active devices do not make every connection end walk the whole map.
            self.hosts.retain(|_, h| !(h.conns.is_empty() && h.queue.is_empty() && h.in_flight == 0));
            self.prune_hosts_at = MAX_IDLE_HOSTS.max(2 * self.hosts.len());
        }
    }

    /// Connection `c` was lost under exchange `ex`: requeue, retry or fail the request, as
    /// [`Loss::decide`] says.
    pub(super) fn lost_exchange(
        &mut self,
        ex: Exchange,
        c: &Conn,
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
        let loss = Loss {
            stage: ex.stage(),
            pooled: c.served > 0 || c.spare,
            retryable: p.retryable,
            retries: p.retries,
            max_retries: self.cfg.max_retries,
            before_deadline: p.deadline > now,
            unrepeatable: p.source.as_deref().is_some_and(BodySource::started),
        };
        let fate = loss.decide();
        let host = p.host.clone();
        if fate == LossFate::Fail {
            let stage = loss.attempt_stage();
            return self.fail(r, Error::ConnectionLost { cause, stage, source: err }, now);
        }
        if fate == LossFate::Requeue {
            log::debug!("request {} returns to the head of its queue (stale connection)", p.id.0);
        } else {
            let stage = loss.attempt_stage();
            let lost = Error::ConnectionLost { cause, stage, source: err };
            log::debug!("request {} retried on a fresh connection after: {lost}", p.id.0);
            p.retries += 1;
            // The device's idle clock on a used connection started at its last response, so
            // any connection connected since is fresher. One that died under its first request
            // says the device's spares die (its idle close, or a limit on connections), and a
            // connection started before now may share its fate: a connect of its own then.
            p.retry_after = Some(if c.served > 0 { c.last_response.unwrap_or(now) } else { now });
            if p.first_failure.is_none() && stage.may_have_been_processed() {
                p.first_failure = Some(lost);
            }
            self.stats.retries += 1;
            if let Some(t) = &mut self.trace {
                t.record(now, 0, &p.host, TraceKind::Retried { request: p.id.0 });
            }
        }
        // Either way at the head of its queue: it keeps its place in submission order. (A retry
        // takes only a connection that has carried nothing and is fresher than this one: see
        // `dispatch`.)
        if let Some(h) = self.hosts.get_mut(&host) {
            h.queue.push_front(r);
        }
    }

    /// A connect failed: who fails is [`ConnectFailure::decide`]'s, then the connection ends.
    pub(super) fn connect_failed(&mut self, conn: Key, err: Error, why: &str, now: Instant) {
        let Some(c) = self.conns.get(conn) else { return };
        let host = c.host.clone();
        self.stats.connect_failures += 1;
        let Some(h) = self.hosts.get(&host) else {
            return self.end_conn(conn, ConnState::Closed { reason: RetireReason::ConnectFailed }, why, now);
        };
        let (mut others_connecting, mut others_open) = (0, 0);
        for &k in h.conns.iter().filter(|&&k| k != conn) {
            match self.conns.get(k).map(|c| &c.state) {
                Some(ConnState::Connecting { .. }) => others_connecting += 1,
                Some(ConnState::Open(_)) => others_open += 1,
                _ => {}
            }
        }
        let startable = h.queue.len().min(self.cfg.max_in_flight_per_host.saturating_sub(h.in_flight));
        match (ConnectFailure { startable, others_connecting, others_open }).decide() {
            AfterConnectFailure::FailHead => {
                if let Some(r) = self.hosts.get_mut(&host).and_then(|h| h.queue.pop_front()) {
                    self.fail(r, err, now);
                }
            }
            AfterConnectFailure::WaitForOpen => {
                log::debug!("{host}: {err}; no new connection until an exchange completes");
                if let Some(h) = self.hosts.get_mut(&host) {
                    h.connects_suspended = true;
                }
            }
            AfterConnectFailure::Wait => {}
        }
        self.end_conn(conn, ConnState::Closed { reason: RetireReason::ConnectFailed }, why, now);
    }

    /// The request's deadline passed.
    pub(super) fn expire_request(&mut self, r: Key, now: Instant) {
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

    pub(super) fn fail(&mut self, r: Key, err: Error, now: Instant) {
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
