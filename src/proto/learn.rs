//! What finwatch learns about a device from how it closes connections.
//!
//! Many embedded servers close idle keep-alive connections after a few milliseconds, or after
//! every response, and announce neither (no `Connection: close`, no `Keep-Alive: timeout`). A
//! request written as the device's FIN is on the wire cannot be saved by any check; the only
//! defence is not to be writing then. So every time a device closes a connection that has
//! served a response, the time since that response is an upper bound of the device's idle
//! timeout; the smallest such bound is kept, and connections are retired a margin before it.
//! A device seen to close within [`CLOSES_AFTER_RESPONSE`] of a response is treated as closing
//! after every response: its connections are single-use, and a warm spare is kept ready.
//!
//! Both times are measured where the client sits: the device starts its idle clock when it
//! sends a response, which arrives half a round trip later, and its FIN takes as long, so the
//! response-to-FIN time seen here is the device's own. But a request needs half a round trip to
//! reach the device: to arrive before the close it must leave a whole round trip before the
//! FIN would. So every retire time also gives up one round trip, taken as the fastest TCP
//! handshake seen to the device (on loopback, microseconds; across a LAN, what matters).

use std::time::{Duration, Instant};

use crate::proto::conn::RetireReason;
use crate::proto::time;

/// A close this soon after a response means the device closes after every response.
pub(crate) const CLOSES_AFTER_RESPONSE: Duration = Duration::from_millis(2);

/// A device's observed closing behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Behaviour {
    /// The shortest time from a response to the device closing that connection.
    idle_close: Option<Duration>,
    /// The last `Keep-Alive: timeout` the server announced (applies to fresh connections too).
    announced: Option<Duration>,
    /// The fastest TCP handshake seen: an upper bound of the round-trip time.
    rtt: Option<Duration>,
    /// The last response said its connection ends with it (`Connection: close`, HTTP/1.0
    /// without keep-alive, a close-delimited body): the next one probably will too.
    announces_close: bool,
    /// The shortest age at which a warm spare, never used, was found closed by the device: an
    /// upper bound of how long the device keeps an unused connection open.
    spare_dies_after: Option<Duration>,
    /// Warm spares found closed unused since the last one that was used alive.
    spare_deaths_in_a_row: u8,
    /// While the device is thought to close after every response: the shortest age at which a
    /// warm spare was closed by it under its first request, before any response byte (from its
    /// connect, less a round trip): an upper bound of how long it keeps an unused connection.
    /// Such a spare passed the pre-write check, so it does not count as found closed unused.
    spare_cut_after: Option<Duration>,
}

/// Whether a warm spare is worth opening, given what became of the last ones and how long one
/// opened now would wait for its request: `idle`, the caller's last pause between a response
/// and its next request to the device, counted from the end of the exchange in flight if there
/// is one, else from the last one's end (a spare opened between commands, at a retirement,
/// has part of the pause behind it).
///
/// | spares died unused, youngest at age `a` | in a row (since one was used alive) | its wait `i` | open one? |
/// |---|---|---|---|
/// | never | – | any | yes |
/// | `a` | 1 | any | yes: one death may be a pause unlike the others |
/// | `a` | 2 or more | unknown (no second request yet) | yes |
/// | `a` | 2 or more | `i < a - a/8` | yes: it is used before it dies |
/// | `a` | 2 or more | `i ≥ a - a/8` | no: it would idle out before use |
///
/// A spare that lives saves the next command a handshake; one that dies costs it a FIN check
/// and a close on top of the connect it was to save, several times less. So spares are
/// withheld only once they keep dying at the caller's pace: with pauses that alternate around
/// the device's idle time, half of them live, and they stay worth opening.
///
/// A learned "closes after every response" opens a spare for every command; against a device
/// that in fact closes *idle* connections, with a caller that pauses longer than that idle
/// time, every spare died before use (a stall of the client's own, a response read 2 ms late
/// with the idle close behind it, teaches that lesson, and no probation can unlearn it while
/// the pauses outlast the idle time). Withheld spares are re-checked now and then
/// ([`SPARE_RECHECK_EVERY`]): one that is used alive lifts the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpareOutlook {
    pub dies_after: Option<Duration>,
    pub deaths_in_a_row: u8,
    pub idle: Option<Duration>,
}

/// After this many withheld spares, one is opened anyway: the caller's pace or the device may
/// have changed. The interval doubles while re-checked spares die too, up to
/// [`SPARE_RECHECK_MAX`]. (A host thought to close after every response has a spare due twice
/// a command, so its re-checks come every 8, 16, … commands.)
pub(crate) const SPARE_RECHECK_EVERY: u32 = 16;
pub(crate) const SPARE_RECHECK_MAX: u32 = 1024;

/// How long a warm spare opened at `now` would wait for its request, if the caller pauses as
/// it last did (`pause`, from a response to its next request): the exchange in flight (a spare
/// opened as a request goes out; `exchange`, its expected length) and the whole pause after
/// it, or what is left of the pause since the last exchange ended at `last_done` (one opened
/// between commands, at a retirement).
pub(crate) fn spare_wait(
    pause: Option<Duration>,
    last_done: Option<Instant>,
    in_flight: bool,
    exchange: Duration,
    now: Instant,
) -> Option<Duration> {
    pause.map(|pause| match last_done {
        Some(done) if !in_flight => time::after(done, pause).saturating_duration_since(now),
        _ => pause.saturating_add(exchange),
    })
}

/// What a warm spare connected at a set time needs beyond the round trip before the caller's
/// request comes: the wake-up of the thread that connects it (tens of microseconds on a host
/// whose idle vCPUs halt) and the device's `accept`.
pub(crate) const TIMED_SPARE_LEAD: Duration = Duration::from_micros(250);

/// A warm spare for a caller who pauses longer than the device keeps a connection: the one
/// that carries a request now will be closed (by the device, or retired by us ahead of that)
/// before the caller's next request, which would pay a handshake; a spare opened now would
/// idle out too. So the spare connects later, at a set time, while the caller is away, on the
/// kernel's side of the seam (`Kernel::open_at`): late enough to be alive when the request
/// comes, early enough to be connected. Decided as a request goes out on a kept connection
/// (`g`: the exchange, a round trip at least, then the caller's last pause; `r`: when that
/// connection will be retired after its response; both from now), and when a spare is due
/// between commands (`g`: what is left of the pause, [`spare_wait`]; `r` = 0: no connection
/// would carry the request); how long from now the spare should connect, if at all:
///
/// | the caller's next request in `g` | a kept connection retired in `r` | an unused connection lives `l` | round trip `t` | connect the spare |
/// |---|---|---|---|---|
/// | unknown | – | – | – | not by this rule |
/// | `g` | `g < r` | – | – | no: the kept connection carries it |
/// | `g` | `r ≤ g` | unknown | – | not by this rule: nothing says how long a spare would live |
/// | `g` | `r` = 0 (between commands) | `l`, `g < l - l/8` | – | at once: it lives until the request, and an early caller finds it too |
/// | `g` | `r ≤ g` (otherwise) | `l` | `t + lead ≥ l - l/8` | not by this rule: it could not connect and still be alive |
/// | `g` | `r ≤ g` (otherwise) | `l` | `t + lead < l - l/8` | in `g - w`, `w` the middle of `t + lead` and `l - l/8` (at once if `g ≤ w`) |
///
/// As a request goes out, the caller is about to be away (a loop that runs in its pauses
/// re-decides when it retires that connection, and starts the connect then if a spare would
/// live until the request: `Engine::open_spare_at`); the middle of the window leaves as much
/// room for a caller who comes early as for one who comes late, and the next pause is judged
/// by the last.
///
/// "Not by this rule": a spare due between commands (or after the write of a request that
/// ends its connection) is then opened at once, as before there was this rule (and
/// [`SpareOutlook`] may withhold it); one due as a request goes out on a kept connection is
/// not. For a device that closes after every response, `l` is known only from spares found
/// closed unused, or closed by its FIN under their first request (its idle close is its close
/// after the response; [`Behaviour::single_use_spare_lives`]).
///
/// `l` is the youngest age at which a spare was found closed unused, else the learned idle
/// close (both upper bounds: a spare that dies teaches a shorter one, and the next connects
/// later); `lead` is [`TIMED_SPARE_LEAD`]. The spare then waits `w` for its request, which the
/// spare rule ([`SpareOutlook`]) weighs like any other spare's wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedSpare {
    pub next_in: Option<Duration>,
    pub kept_for: Duration,
    pub lives: Option<Duration>,
    pub rtt: Duration,
}

/// A [`TimedSpare`] decision as an exchange carries it: microseconds, 12 bytes instead of 40
/// (the exchange is moved with its connection's state on every command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SparePlan {
    after_us: u32,
    wait_us: u32,
}

impl SparePlan {
    pub(crate) fn new((after, wait): (Duration, Duration)) -> SparePlan {
        let us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        SparePlan { after_us: us(after), wait_us: us(wait) }
    }

    /// `(connect_after, wait)`, as [`TimedSpare::decide`] gave them (to the microsecond).
    pub(crate) fn get(self) -> (Duration, Duration) {
        let us = |n: u32| Duration::from_micros(u64::from(n));
        (us(self.after_us), us(self.wait_us))
    }
}

impl TimedSpare {
    /// `Some((connect_after, wait))`: connect this long from now, and the spare then waits
    /// `wait` for its request.
    pub(crate) fn decide(self) -> Option<(Duration, Duration)> {
        let g = self.next_in?;
        if g < self.kept_for {
            return None;
        }
        let l = self.lives?;
        let (low, high) = (self.rtt + TIMED_SPARE_LEAD, l - l / 8);
        if self.kept_for.is_zero() && g < high {
            return Some((Duration::ZERO, g));
        }
        if low >= high {
            return None;
        }
        let wait = low + (high - low) / 2;
        Some((g.saturating_sub(wait), wait.min(g)))
    }
}

/// The sooner of two upper bounds, either of which may be unknown.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl SpareOutlook {
    pub(crate) fn worth_opening(self) -> bool {
        match (self.dies_after, self.idle) {
            (Some(a), Some(g)) if self.deaths_in_a_row >= 2 => g < a - a / 8,
            _ => true,
        }
    }
}

impl Behaviour {
    /// The device closed a connection `idle_for` after its last response (an upper bound: the
    /// FIN may have arrived earlier than the loop saw it). Returns whether the estimate changed.
    pub(crate) fn observe_close(&mut self, idle_for: Duration) -> bool {
        if self.idle_close.is_some_and(|d| d <= idle_for) {
            return false;
        }
        self.idle_close = Some(idle_for);
        true
    }

    /// A connection was found alive (by the pre-write peek) `idle_for` after its last response.
    /// If that contradicts what was learned (the device was thought to close sooner), the
    /// device does not close after every response: the estimate becomes that survived time,
    /// so connections are reused again for commands closer together than it, and nothing
    /// beyond what was observed is assumed. Returns whether the estimate changed.
    pub(crate) fn observe_alive(&mut self, idle_for: Duration) -> bool {
        if self.idle_close.is_some_and(|d| d <= idle_for) {
            self.idle_close = Some(idle_for);
            return true;
        }
        false
    }

    /// A warm spare, never used, was found closed by the device `age` after its connect began.
    /// Returns whether the bound changed.
    pub(crate) fn observe_spare_died(&mut self, age: Duration) -> bool {
        self.spare_deaths_in_a_row = self.spare_deaths_in_a_row.saturating_add(1);
        if self.spare_dies_after.is_some_and(|a| a <= age) {
            return false;
        }
        self.spare_dies_after = Some(age);
        true
    }

    /// A warm spare was found alive (by the pre-write check) `age` after its connect began, as
    /// its first request went out: a bound at or below that is wrong, and is dropped.
    pub(crate) fn observe_spare_alive(&mut self, age: Duration) {
        self.spare_deaths_in_a_row = 0;
        if self.spare_dies_after.is_some_and(|a| a <= age) {
            self.spare_dies_after = None;
        }
    }

    /// A warm spare was closed by the device under its first request, before any response
    /// byte, `age` after its connect began, while the device was thought to close after every
    /// response. It bounds how long the device keeps an unused connection by that age less a
    /// round trip (the device's accept came half a round trip after the connect began, its FIN
    /// took as long to arrive). Where the caller pauses longer than that, each request's
    /// successor, connected during the exchange, idles out as the next request crosses the
    /// device's close: a retry each time, a POST lost. Returns whether the bound changed.
    pub(crate) fn observe_spare_cut(&mut self, age: Duration) -> bool {
        let age = age.saturating_sub(self.rtt());
        if self.spare_cut_after.is_some_and(|a| a <= age) {
            return false;
        }
        self.spare_cut_after = Some(age);
        true
    }

    /// A warm spare's first exchange completed, `age` after its connect began: a cut bound at
    /// or below that age less a round trip (as [`Behaviour::observe_spare_cut`] counts) is
    /// wrong, and is dropped. (A pre-write check that finds a spare alive says nothing of it:
    /// the spares it bounds were alive at the check, and cut as the request crossed the close.)
    pub(crate) fn observe_spare_served(&mut self, age: Duration) {
        let age = age.saturating_sub(self.rtt());
        if self.spare_cut_after.is_some_and(|a| a <= age) {
            self.spare_cut_after = None;
        }
    }

    /// How long a device thought to close after every response keeps an unused connection, as
    /// far as is known: the youngest age at which a warm spare was found closed unused, or cut
    /// under its first request (its idle close is its close after the response, and says
    /// nothing of that).
    pub(crate) fn single_use_spare_lives(&self) -> Option<Duration> {
        sooner(self.spare_dies_after, self.spare_cut_after)
    }

    /// What became of the spares so far, for [`SpareOutlook`] (with how long a spare opened
    /// now would wait).
    pub(crate) fn spare_outlook(&self, idle: Option<Duration>) -> SpareOutlook {
        SpareOutlook { dies_after: self.spare_dies_after, deaths_in_a_row: self.spare_deaths_in_a_row, idle }
    }

    /// How long a connection that nobody uses lives, as far as is known: the youngest age at
    /// which a warm spare was found closed unused, or the learned idle close if that is
    /// sooner. Both are upper bounds, and the idle rule retires a spare by the idle close
    /// ([`Behaviour::retire_at`]): a spare timed by a later death, one the loop noticed only
    /// when the caller came back, waited longer than that rule let it live and was retired as
    /// its request came (compare's (c) and (c2) across the link: a row with a spare found dead
    /// 4.75 ms after its connect against a 2.5 ms idle close paid a handshake per command).
    pub(crate) fn unused_lives(&self) -> Option<Duration> {
        sooner(self.spare_dies_after, self.idle_close)
    }

    /// The fastest TCP handshake seen (zero if none yet).
    pub(crate) fn rtt(&self) -> Duration {
        self.rtt.unwrap_or_default()
    }

    /// A TCP handshake took `handshake` (from `connect` to the socket reported connected): the
    /// round trip is at most that. The fastest one is kept.
    pub(crate) fn observe_handshake(&mut self, handshake: Duration) {
        if self.rtt.is_none_or(|r| handshake < r) {
            self.rtt = Some(handshake);
        }
    }

    /// Whether the last response ended its connection by what it said (not by a FIN).
    pub(crate) fn observe_response_closes(&mut self, closes: bool) {
        self.announces_close = closes;
    }

    /// Whether the device's last response said its connection ends with it.
    pub(crate) fn announces_close(&self) -> bool {
        self.announces_close
    }

    /// The server announced `Keep-Alive: timeout` (or stopped announcing it).
    pub(crate) fn observe_announced(&mut self, keep_alive: Option<Duration>) {
        self.announced = keep_alive;
    }

    /// The learned idle-close time, if any.
    pub fn idle_close(&self) -> Option<Duration> {
        self.idle_close
    }

    /// Whether the device closes connections right after each response.
    pub(crate) fn closes_after_response(&self) -> bool {
        self.idle_close.is_some_and(|d| d <= CLOSES_AFTER_RESPONSE)
    }

    /// [`Behaviour::retire_at`] without the learned idle close: how long a connection kept on
    /// probation past it may wait.
    pub(crate) fn retire_at_unlearned(
        &self,
        since: Instant,
        idle_limit: Duration,
    ) -> (Instant, RetireReason) {
        Behaviour { idle_close: None, ..*self }.retire_at(since, idle_limit, None)
    }

    /// When a connection idle since `since` must be retired, and why: the earliest of our own
    /// idle limit, the server's `Keep-Alive: timeout` and the learned idle close, each of the
    /// last two with a margin so a request never crosses the device's FIN: an eighth of the
    /// timeout (at least 0.5 ms for scheduling jitter on both sides, at most 1 s), plus one
    /// round trip (a request must reach the device before its idle clock runs out).
    pub(crate) fn retire_at(
        &self,
        since: Instant,
        idle_limit: Duration,
        keep_alive: Option<Duration>,
    ) -> (Instant, RetireReason) {
        let mut at = (time::after(since, idle_limit), RetireReason::IdleTimeout);
        let rtt = self.rtt.unwrap_or_default();
        let margin = |t: Duration| {
            t.saturating_sub((t / 8).clamp(Duration::from_micros(500), Duration::from_secs(1)))
                .saturating_sub(rtt)
        };
        if let Some(t) = keep_alive.or(self.announced)
            && time::after(since, margin(t)) < at.0
        {
            at = (time::after(since, margin(t)), RetireReason::KeepAliveTimeout);
        }
        // A device that closes after every response is handled by making its connections
        // single-use; its idle close says nothing about a fresh connection.
        if let Some(t) = self.idle_close
            && !self.closes_after_response()
            && time::after(since, margin(t)) < at.0
        {
            at = (time::after(since, margin(t)), RetireReason::LearnedIdleClose);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn keeps_the_smallest_bound() {
        let mut b = Behaviour::default();
        assert!(b.observe_close(24 * MS));
        assert!(b.observe_close(6 * MS));
        assert!(!b.observe_close(12 * MS));
        assert_eq!(b.idle_close(), Some(6 * MS));
        assert!(!b.closes_after_response());
        assert!(b.observe_close(Duration::from_micros(150)));
        assert!(b.closes_after_response());
    }

    #[test]
    fn a_connection_alive_past_the_learned_close_unlearns_it() {
        let mut b = Behaviour::default();
        b.observe_close(Duration::from_micros(150));
        assert!(b.closes_after_response());
        assert!(!b.observe_alive(Duration::from_micros(100)));
        assert!(b.observe_alive(3 * MS));
        assert!(!b.closes_after_response());
        assert_eq!(b.idle_close(), Some(3 * MS));
    }

    #[test]
    fn spares_that_would_idle_out_before_use_are_not_worth_opening() {
        let at = |dies_after: Option<u64>, deaths_in_a_row: u8, idle: Option<u64>| {
            let us = Duration::from_micros;
            SpareOutlook { dies_after: dies_after.map(us), deaths_in_a_row, idle: idle.map(us) }
                .worth_opening()
        };
        // The table's rows, in order (µs).
        assert!(at(None, 0, Some(10_000)));
        assert!(at(Some(2_000), 1, Some(2_500)));
        assert!(at(Some(2_000), 2, None));
        assert!(at(Some(2_000), 2, Some(1_000)));
        assert!(at(Some(2_000), 2, Some(1_749)));
        assert!(!at(Some(2_000), 2, Some(1_750)));
        assert!(!at(Some(2_000), 9, Some(2_500)));
    }

    #[test]
    fn a_timed_spare_connects_to_be_alive_and_connected_when_the_request_comes() {
        let us = Duration::from_micros;
        let at = |next_in: Option<u64>, kept_for: u64, lives: Option<u64>, rtt: u64| {
            TimedSpare {
                next_in: next_in.map(us),
                kept_for: us(kept_for),
                lives: lives.map(us),
                rtt: us(rtt),
            }
            .decide()
        };
        // The table's rows, in order (µs): the device keeps connections 2 ms, the caller pauses
        // 2.5 ms.
        assert_eq!(at(None, 1_700, Some(2_000), 50), None);
        assert_eq!(at(Some(1_000), 1_700, Some(2_000), 50), None);
        assert_eq!(at(Some(2_500), 1_700, None, 50), None);
        assert_eq!(at(Some(2_500), 1_700, Some(2_000), 1_500), None); // 1.75 ms ≥ 1.75 ms
        // Loopback: the spare waits the middle of 0.3 and 1.75 ms, 1.025 ms.
        assert_eq!(at(Some(2_500), 1_700, Some(2_000), 50), Some((us(1_475), us(1_025))));
        // Across a 1 ms link (a handshake of 1 ms): 1.5 ms, so it connects 1 ms after the write.
        assert_eq!(at(Some(2_500), 1_000, Some(2_000), 1_000), Some((us(1_000), us(1_500))));
        // A pause shorter than that wait (the connection was retired early, by our own limit):
        // at once.
        assert_eq!(at(Some(800), 500, Some(2_000), 50), Some((us(0), us(800))));
        // Between commands, 0.5 ms of the pause behind (no kept connection): in 0.975 ms.
        assert_eq!(at(Some(2_000), 0, Some(2_000), 50), Some((us(975), us(1_025))));
        // Between commands, 1 ms of it behind: at once (1.5 ms < 1.75 ms).
        assert_eq!(at(Some(1_500), 0, Some(2_000), 50), Some((us(0), us(1_500))));
    }

    #[test]
    fn a_spare_opened_between_commands_waits_what_is_left_of_the_pause() {
        let done = Instant::now();
        let pause = Some(2_500 * Duration::from_micros(1));
        // As a request goes out: the whole pause, after that exchange.
        assert_eq!(spare_wait(pause, Some(done), true, Duration::ZERO, done + 3 * MS), pause);
        // A request in flight: its exchange comes first.
        assert_eq!(spare_wait(pause, Some(done), true, MS, done + 3 * MS), pause.map(|p| p + MS));
        // Between commands, 1.5 ms after the last response (a retirement ahead of an idle
        // close): 1 ms left.
        assert_eq!(spare_wait(pause, Some(done), false, MS, done + 1_500 * MS / 1000), Some(MS));
        // Past the usual pause: due at once.
        assert_eq!(spare_wait(pause, Some(done), false, MS, done + 4 * MS), Some(Duration::ZERO));
        assert_eq!(spare_wait(None, Some(done), false, MS, done), None);
        assert_eq!(spare_wait(pause, None, false, Duration::ZERO, done), pause);
    }

    #[test]
    fn a_spare_seen_alive_past_the_bound_lifts_it() {
        let mut b = Behaviour::default();
        let outlook = |b: &Behaviour| b.spare_outlook(Some(3 * MS));
        assert!(b.observe_spare_died(50 * MS));
        assert!(b.observe_spare_died(2 * MS));
        assert!(!b.observe_spare_died(3 * MS));
        assert_eq!((outlook(&b).dies_after, outlook(&b).deaths_in_a_row), (Some(2 * MS), 3));
        assert!(!outlook(&b).worth_opening());
        b.observe_spare_alive(MS);
        assert_eq!(outlook(&b).dies_after, Some(2 * MS), "younger than the bound: no news");
        assert_eq!(outlook(&b).deaths_in_a_row, 0, "but the deaths are no longer in a row");
        assert!(outlook(&b).worth_opening());
        b.observe_spare_alive(2 * MS);
        assert_eq!(outlook(&b).dies_after, None);
    }

    /// A single-use device's spare life: the youngest spare found closed unused or cut under
    /// its first request; a pre-write check that finds a spare alive does not lift the cut
    /// bound (the cut spares were alive at theirs), a first exchange completed past it does.
    #[test]
    fn a_spare_cut_under_its_request_bounds_a_single_use_device_s_spare_life() {
        let mut b = Behaviour::default();
        assert_eq!(b.single_use_spare_lives(), None);
        assert!(b.observe_spare_cut(3 * MS));
        assert!(b.observe_spare_cut(2 * MS));
        assert!(!b.observe_spare_cut(5 * MS));
        assert_eq!(b.single_use_spare_lives(), Some(2 * MS));
        assert_eq!(b.spare_outlook(Some(3 * MS)).dies_after, None, "not a spare found closed unused");
        b.observe_spare_alive(3 * MS);
        assert_eq!(b.single_use_spare_lives(), Some(2 * MS), "alive at the check: no news");
        assert!(b.observe_spare_died(4 * MS));
        assert_eq!(b.single_use_spare_lives(), Some(2 * MS), "the younger of the two");
        b.observe_spare_served(MS);
        assert_eq!(b.single_use_spare_lives(), Some(2 * MS), "younger than the bound: no news");
        b.observe_spare_served(2 * MS);
        assert_eq!(b.single_use_spare_lives(), Some(4 * MS), "the cut bound is gone");
    }

    /// An unused connection lives as long as the sooner of the two bounds: a spare found dead
    /// late (the loop noticed it only when the caller came back) does not stretch a timed
    /// spare's wait past what the idle close lets it live.
    #[test]
    fn an_unused_connection_lives_the_sooner_of_a_spare_s_death_and_the_idle_close() {
        let mut b = Behaviour::default();
        assert_eq!(b.unused_lives(), None);
        b.observe_close(5 * MS / 2);
        assert_eq!(b.unused_lives(), Some(5 * MS / 2));
        b.observe_spare_died(19 * MS / 4);
        assert_eq!(b.unused_lives(), Some(5 * MS / 2), "the idle close is the sooner");
        b.observe_spare_died(2 * MS);
        assert_eq!(b.unused_lives(), Some(2 * MS), "the spare's death is the sooner");
        let mut only_spares = Behaviour::default();
        only_spares.observe_spare_died(3 * MS);
        assert_eq!(only_spares.unused_lives(), Some(3 * MS));
    }

    #[test]
    fn retires_a_margin_before_the_earliest_limit() {
        let now = Instant::now();
        let mut b = Behaviour::default();
        assert_eq!(b.retire_at(now, 30_000 * MS, None), (now + 30_000 * MS, RetireReason::IdleTimeout));
        let ka = b.retire_at(now, 30_000 * MS, Some(2_000 * MS));
        assert_eq!(ka, (now + 1_750 * MS, RetireReason::KeepAliveTimeout));
        b.observe_close(8 * MS);
        assert_eq!(
            b.retire_at(now, 30_000 * MS, Some(2_000 * MS)),
            (now + 7 * MS, RetireReason::LearnedIdleClose)
        );
        b.observe_close(Duration::ZERO);
        assert_eq!(b.retire_at(now, 30_000 * MS, None), (now + 30_000 * MS, RetireReason::IdleTimeout));
    }

    #[test]
    fn a_round_trip_is_given_up_before_every_learned_or_announced_close() {
        let now = Instant::now();
        let mut b = Behaviour::default();
        b.observe_close(8 * MS);
        b.observe_handshake(3 * MS); // a late look at a connect: an overestimate
        b.observe_handshake(MS); // across a link with 1 ms round trips
        b.observe_handshake(2 * MS);
        assert_eq!(b.retire_at(now, 30_000 * MS, None), (now + 6 * MS, RetireReason::LearnedIdleClose));
        assert_eq!(
            b.retire_at(now, 30_000 * MS, Some(4 * MS)),
            (now + 2_500 * Duration::from_micros(1), RetireReason::KeepAliveTimeout)
        );
    }
}
