//! The simulator's entry points: a scenario in, `Engine` + `Driver<SimKernel>` driven exactly as
//! `Client::poll` (between submissions) and `Client::send` (at the end) drive them, and the
//! client's promises checked after every turn:
//!
//! - (a) no byte is written on a socket after the driver saw its FIN or RST (a read or peek
//!   returned 0 or an error, or a wait reported it closing): checked in the kernel's `write`;
//! - (a2) the product's promise, stronger: the first byte of a request (any attempt) is never
//!   written on a socket whose FIN or RST had arrived in the kernel before the driver's last
//!   `wait` or before the current turn began (the caller's call into the client), whether the
//!   driver saw it or not. A FIN that arrives after both (between the pre-write check and the
//!   write, or while the driver writes the other requests of a batch) is the race no check
//!   can close, and exempt; so are bytes of a request already started (a FIN mid-body). A driver
//!   that skipped its pre-write check breaks it (`fin_on_idle_while_away_*`);
//! - (b) no non-idempotent request (POST, PATCH) is acted on twice by the device (its ledger);
//! - (c) a request the device acted on never fails with `may_have_been_processed() == false`;
//! - (d) every request completes exactly once, and no later than its deadline plus [`SLACK`]
//!   (a request whose timeout is `Duration::MAX` has none);
//! - (e) connects are bounded: at most 4 per command plus 8 (a request may connect, retry once
//!   on a fresh connection, and each may bring a warm spare; the 8 covers spares and idle
//!   reconnects at the end): more is a connect storm;
//! - (f) the loop makes progress: 10,000 turns in a row that move nothing (no byte, no
//!   arrival, no clock jump, no completion) are a busy loop, and a turn that never returns is
//!   caught by the kernel's syscall budget (`MAX_SYSCALLS`);
//! - (g) submission order: the requests' *first starts* (the first time the first byte of any
//!   attempt of a command was written, in the kernel's write order; commands are named by
//!   their path, `/cmd/<n>`) follow submission order: no command starts before an earlier one
//!   that starts later, and an earlier command that never starts has completed by the end of
//!   the turn in which the later one started. Retries are exempt: a command's later starts
//!   (its retries) may follow later commands' first starts. A start whose request line never
//!   got out (the connection died within its first bytes) cannot be named: a violation with
//!   such a start before it is not reported (it may have been the earlier command's first);
//! - (h) an answer delivered is the outcome: when the device's complete response to command
//!   `n` (every byte of it, status line to body) reached the client's receive queue (the kernel
//!   appended it while the connection was established: before the device's FIN or RST, and
//!   while the client's socket was open), the client completes `n` with *that* response: `Ok`,
//!   the same status, and the same `X-Exchange` (the device numbers its exchanges, so a retry
//!   answered on another connection is not it) — never with an error, never with another
//!   attempt's response, and not never. Exempt: a response whose last byte arrived at or after
//!   `n`'s deadline (the client may have given up at the deadline: [`SLACK`] covers lateness,
//!   not this); a response the kernel threw away before the client read all of it (a RST with
//!   [`SimOptions::discard_on_rst`], Windows); and what arrives after the client closed the
//!   socket (never in a receive queue, so never delivered). A response cut short by the
//!   device's script is not complete, so not covered. Checked at the end of the run;
//! - and nothing panics (a `Duration::MAX` timeout among the inputs, say).
//!
//! The kernel is the simulator wrapped in `Faulty`, with the scenario's fault rates (none,
//! `EINTR`, short writes, spurious readiness, truncated batches, `EMFILE`, or all): every
//! invariant holds under them.
//!
//! [`run`] panics on a violation, like `__fuzz::engine`; [`check`] returns it.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

pub use super::Scenario;
use super::device::ns;
use super::{DEVICE, Ns, SimKernel};
use crate::driver::Driver;
use crate::error::Error;
use crate::os::faulty::Faulty;
pub use crate::os::faulty::{FaultCounts, FaultRates};
use crate::proto::engine::{Config, Engine, RequestId};
use crate::request::Request;
use crate::resolve::LookupFn;

pub use super::{Act, AfterResponse, Command, Cut, Ledger, Listen, Script, SimOptions};

/// How late past its deadline a request may complete (the loop's wake-up granularity).
pub const SLACK: Duration = Duration::from_millis(2);
/// Turns in a row without progress that make a busy loop (invariant (f)).
const IDLE_TURNS: u32 = 10_000;
/// After the last command, how long the run may go on (virtual) for requests without a
/// deadline before it stops.
const HORIZON: Duration = Duration::from_secs(3600);

/// What a run came to, when no invariant was violated.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Commands submitted.
    pub commands: usize,
    /// Completed with a response.
    pub ok: usize,
    /// Completed with an error.
    pub failed: usize,
    /// Of those, lost again on a retry (`Error::RetryFailed`).
    pub retry_failed: usize,
    /// Requests the device acted on (with repeats).
    pub acted: usize,
    /// Sockets opened.
    pub opens: u64,
    /// Of those, opened with a connect set for later (timed warm spares).
    pub timed_opens: u64,
    /// Sockets opened before each command was submitted.
    pub opens_at_submit: Vec<u64>,
    /// Syscalls made.
    pub syscalls: u64,
    /// Turns of the loop.
    pub turns: u64,
    /// Virtual time the run took.
    pub virtual_time: Duration,
    /// Requests without a deadline (timeout `Duration::MAX`) left waiting for ever.
    pub stalled: usize,
    /// Each command's outcome: its status, or the error's kind.
    pub outcomes: Vec<Option<Result<u16, &'static str>>>,
    /// FINs on pooled connections that only the pre-write check caught (`Stats`).
    pub fins_caught_by_check: u64,
    /// Request starts written (every attempt).
    pub starts: usize,
    /// Faults the kernel injected.
    pub faults: FaultCounts,
    /// Complete responses that reached a receive queue (invariant (h)).
    pub answers_delivered: usize,
    /// Waits in one socket's `recv` instead of the poller (`Kernel::read_wait`).
    pub read_waits: u64,
    /// Writes that failed (`ECONNRESET`, `EPIPE`) while the socket held received bytes unread:
    /// the case the driver's `flush` reads before it reports the write's error.
    pub write_errors_with_unread: u64,
    /// The adaptive spin's limit at the end (`src/proto/spin.rs`).
    pub spin_limit: Duration,
    /// Waits whose spin saw the completion, and waits that spun in vain (`Stats`).
    pub spins: (u64, u64),
}

/// A broken promise: which invariant, and what happened.
#[derive(Debug, Clone)]
pub struct Violation {
    /// `"(a) write after FIN/RST"`, `"(b) ..."`, ..., or `"panic"`.
    pub invariant: &'static str,
    /// What happened, with the virtual time.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

/// Runs the scenario `input` decodes to; panics on a violated invariant (the fuzz target's and
/// the regression tests' entry point).
pub fn run(input: &[u8]) -> Report {
    check(input).unwrap_or_else(|v| panic!("{v}"))
}

/// Runs the scenario `input` decodes to and returns the first violated invariant.
pub fn check(input: &[u8]) -> Result<Report, Violation> {
    check_scenario(&Scenario::decode(input))
}

/// Runs `scenario`; a panic inside the client (or the kernel's budget) is a violation too.
pub fn check_scenario(scenario: &Scenario) -> Result<Report, Violation> {
    match panic::catch_unwind(AssertUnwindSafe(|| Run::new(scenario).go())) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let invariant = if msg.contains("invariant (f)") { "(f) no progress" } else { "panic" };
            Err(Violation { invariant, detail: msg })
        }
    }
}

/// One submitted command.
struct Sub {
    id: RequestId,
    non_idempotent: bool,
    /// Virtual deadline; `None` for `Duration::MAX`.
    deadline: Option<Ns>,
    /// Completed, and whether its error said the device cannot have acted on it.
    done: Option<bool>,
    /// The kernel's turn count when its completion was seen.
    done_turn: u64,
    /// The response it completed with: status and the device's `X-Exchange`.
    answer: Option<(u16, Option<u32>)>,
}

struct Run<'a> {
    s: &'a Scenario,
    engine: Engine,
    driver: Driver<Faulty<SimKernel>>,
    subs: Vec<Sub>,
    by_id: HashMap<RequestId, usize>,
    /// Acts per command, from the ledger.
    acts: Vec<u32>,
    /// Ledger entries already counted.
    ledger_seen: usize,
    idle_turns: u32,
    last: (u64, u64),
    report: Report,
}

fn violation(invariant: &'static str, detail: String) -> Result<(), Violation> {
    Err(Violation { invariant, detail })
}

impl<'a> Run<'a> {
    fn new(s: &'a Scenario) -> Run<'a> {
        let cfg = Config {
            connect_timeout: s.connect_timeout,
            request_timeout: s.request_timeout,
            idle_timeout: s.idle_timeout,
            max_retries: s.max_retries,
            max_in_flight_per_host: s.max_in_flight,
            busy_poll: s.busy_poll.then_some(super::scenario::BUSY_POLL),
            warm_spares: s.warm_spares,
            ..Config::default()
        };
        let lookup: LookupFn = Arc::new(|_: &str, _: u16| Err(io::Error::other("sim: IP literals only")));
        let kernel =
            Faulty::new(SimKernel::new(s.kernel.clone(), s.script.clone()), s.faults, s.fault_seed());
        Run {
            s,
            engine: Engine::new(cfg),
            driver: Driver::over(kernel, lookup),
            subs: Vec::new(),
            by_id: HashMap::new(),
            acts: vec![0; s.commands.len()],
            ledger_seen: 0,
            idle_turns: 0,
            last: (0, 0),
            report: Report { outcomes: vec![None; s.commands.len()], ..Report::default() },
        }
    }

    fn k(&mut self) -> &mut SimKernel {
        &mut self.driver.kernel_mut().inner
    }

    fn go(mut self) -> Result<Report, Violation> {
        let mut at = 0;
        for (i, c) in self.s.commands.iter().enumerate() {
            if c.away {
                // `send` returned; the caller sleeps without calling the client.
                self.drain()?;
                at = self.k().virtual_ns() + ns(c.gap);
                self.k().settle(at);
            } else {
                at += ns(c.gap);
                self.run_until(at)?;
            }
            let url = format!("http://{DEVICE}/cmd/{i}");
            let mut b = Request::builder(self.s.method(i), &url).header("X-Cmd", &i.to_string());
            if c.body > 0 {
                b = b.body(vec![b'x'; c.body]);
            }
            if let Some(t) = c.timeout {
                b = b.timeout(t);
            }
            let req = b.build().expect("a valid request");
            let opens = self.k().opens;
            self.report.opens_at_submit.push(opens);
            let now = self.k().virtual_ns();
            let timeout = c.timeout.unwrap_or(self.s.request_timeout);
            let id = self.engine.submit(&req, self.driver.now());
            let deadline = (timeout != Duration::MAX).then(|| now.saturating_add(ns(timeout)));
            self.by_id.insert(id, i);
            self.subs.push(Sub {
                id,
                non_idempotent: matches!(c.method, "POST" | "PATCH"),
                deadline,
                done: None,
                done_turn: 0,
                answer: None,
            });
            self.report.commands += 1;
        }
        self.drain()?;
        // What was in flight arrives (a head the device acts on after the client gave up).
        let end = self.k().virtual_ns() + ns(Duration::from_secs(10));
        self.k().settle(end);
        self.check()?;
        self.check_order()?;
        self.check_answers()?;
        self.report.fins_caught_by_check = self.engine.stats().fins_caught_by_peek;
        self.report.spin_limit = self.engine.spin_limit();
        self.report.spins = (self.engine.stats().spins_caught, self.engine.stats().spins_missed);
        self.report.faults = self.driver.kernel_mut().counts;
        let k = &mut self.driver.kernel_mut().inner;
        self.report.starts = k.starts.len();
        self.report.answers_delivered = k.delivered.len();
        self.report.write_errors_with_unread = k.write_errors_with_unread;
        self.report.opens = k.opens;
        self.report.timed_opens = k.timed_opens;
        self.report.read_waits = k.read_waits;
        self.report.syscalls = k.syscalls;
        self.report.acted = k.device.ledger.len();
        self.report.virtual_time = Duration::from_nanos(k.virtual_ns());
        Ok(self.report)
    }

    /// `Client::poll(Some(until - now))`: turns until the virtual time `t`.
    fn run_until(&mut self, t: Ns) -> Result<(), Violation> {
        while self.k().virtual_ns() < t {
            let until = self.k().instant(t);
            self.k().turn_started();
            let r = self.driver.turn(&mut self.engine, Some(until), true);
            self.after_turn(r)?;
        }
        Ok(())
    }

    /// `Client::send`: turns without a timeout until nothing is pending.
    fn drain(&mut self) -> Result<(), Violation> {
        let start = self.k().virtual_ns();
        while self.engine.pending() > 0 {
            self.k().turn_started();
            let r = self.driver.turn(&mut self.engine, None, false);
            let forever = r.is_err() && self.k().waited_forever;
            if forever || self.k().virtual_ns() - start > ns(HORIZON) {
                let open: Vec<usize> =
                    self.subs.iter().enumerate().filter(|(_, s)| s.done.is_none()).map(|(i, _)| i).collect();
                if let Some(&i) = open.iter().find(|&&i| self.subs[i].deadline.is_some()) {
                    return violation(
                        "(d) completes by its deadline",
                        format!(
                            "cmd {i} is pending and the loop waits for ever (t={}us)",
                            self.k().virtual_ns() / 1000
                        ),
                    );
                }
                self.report.stalled = open.len();
                return Ok(());
            }
            self.after_turn(r)?;
        }
        Ok(())
    }

    fn after_turn(&mut self, r: std::io::Result<()>) -> Result<(), Violation> {
        self.report.turns += 1;
        if let Err(e) = r {
            return violation("driver error", format!("turn failed: {e}"));
        }
        let mut completed = false;
        let turn = self.k().turns;
        while let Some(c) = self.engine.poll_completion() {
            completed = true;
            let now = self.k().virtual_ns();
            let Some(&i) = self.by_id.get(&c.id) else {
                return violation("(d) completes exactly once", format!("unknown request {:?}", c.id));
            };
            let sub = &mut self.subs[i];
            if sub.done.is_some() {
                return violation("(d) completes exactly once", format!("cmd {i} completed twice"));
            }
            if let Some(d) = sub.deadline
                && now > d + ns(SLACK)
            {
                return violation(
                    "(d) completes by its deadline",
                    format!("cmd {i} completed at t={}us, deadline {}us", now / 1000, d / 1000),
                );
            }
            sub.done = Some(c.result.as_ref().is_err_and(|e| !e.may_have_been_processed()));
            sub.answer = c
                .result
                .as_ref()
                .ok()
                .map(|r| (r.status(), r.header("x-exchange").and_then(|x| x.trim().parse().ok())));
            sub.done_turn = turn;
            let _ = sub.id;
            self.report.outcomes[i] = Some(c.result.as_ref().map(|r| r.status()).map_err(Error::kind));
            match &c.result {
                Ok(_) => self.report.ok += 1,
                Err(e) => {
                    log::trace!("sim cmd {i}: {e}");
                    self.report.failed += 1;
                    self.report.retry_failed += usize::from(matches!(e, Error::RetryFailed { .. }));
                }
            }
        }
        self.check()?;
        let k = self.k();
        let now = (k.progress, k.jumps);
        if completed || now != self.last {
            self.idle_turns = 0;
        } else {
            self.idle_turns += 1;
            if self.idle_turns >= IDLE_TURNS {
                return violation("(f) no progress", format!("{IDLE_TURNS} turns in a row moved nothing"));
            }
        }
        self.last = now;
        Ok(())
    }

    /// Invariants (a), (b), (c), (d: overdue), (e).
    fn check(&mut self) -> Result<(), Violation> {
        let k = &mut self.driver.kernel_mut().inner;
        if let Some((invariant, detail)) = k.violations.first() {
            return violation(invariant, detail.clone());
        }
        let now = k.virtual_ns();
        let (opens, ledger) = (k.opens, &k.device.ledger);
        for act in &ledger[self.ledger_seen..] {
            let Some(n) = self.acts.get_mut(act.cmd as usize) else { continue };
            *n += 1;
            let i = act.cmd as usize;
            if *n > 1 && self.subs.get(i).is_some_and(|s| s.non_idempotent) {
                return violation(
                    "(b) non-idempotent acted on twice",
                    format!(
                        "cmd {i} ({}) acted on {n} times (t={}us, conn {})",
                        act.method,
                        act.at / 1000,
                        act.conn
                    ),
                );
            }
        }
        self.ledger_seen = ledger.len();
        for (i, s) in self.subs.iter().enumerate() {
            if s.done == Some(true) && self.acts[i] > 0 {
                return violation(
                    "(c) may_have_been_processed",
                    format!(
                        "cmd {i} failed with may_have_been_processed() == false, but the device acted on it"
                    ),
                );
            }
            if s.done.is_none()
                && let Some(d) = s.deadline
                && now > d + ns(SLACK)
            {
                return violation(
                    "(d) completes by its deadline",
                    format!("cmd {i} still pending at t={}us, deadline {}us", now / 1000, d / 1000),
                );
            }
        }
        let bound = 4 * self.subs.len() as u64 + 8;
        if opens > bound {
            return violation(
                "(e) bounded connects",
                format!("{opens} connects for {} commands", self.subs.len()),
            );
        }
        Ok(())
    }
}

impl Run<'_> {
    /// Invariant (h), over the whole run: a complete response delivered (and kept) is the
    /// outcome of its command.
    fn check_answers(&mut self) -> Result<(), Violation> {
        let delivered = self.k().delivered.clone();
        for d in delivered.iter().filter(|d| !d.discarded) {
            let a = d.answer;
            let Some(sub) = self.subs.get(a.cmd as usize) else { continue };
            if sub.deadline.is_some_and(|dl| d.at >= dl) {
                continue;
            }
            let i = a.cmd;
            let outcome = self.report.outcomes[i as usize];
            if sub.answer != Some((a.status, Some(a.exchange))) {
                return violation(
                    "(h) an answer delivered is the outcome",
                    format!(
                        "cmd {i}: the device's complete {} (exchange {}) reached the receive queue of sock {} at t={}us \
                         (deadline {}), but cmd {i} completed with {} ({:?})",
                        a.status,
                        a.exchange,
                        d.conn,
                        d.at / 1000,
                        sub.deadline.map_or("none".to_string(), |dl| format!("{}us", dl / 1000)),
                        match sub.answer {
                            Some((st, x)) => format!("status {st}, exchange {x:?}"),
                            None if outcome.is_some() => "an error".to_string(),
                            None => "nothing (never completed)".to_string(),
                        },
                        outcome
                    ),
                );
            }
        }
        Ok(())
    }

    /// Invariant (g), over the whole run: the commands' first starts follow submission order.
    fn check_order(&mut self) -> Result<(), Violation> {
        let starts = self.k().starts.clone();
        let n = self.subs.len();
        // Each command's first start (its position in the write order), and the position of
        // the first start that could not be named.
        let mut first: Vec<Option<usize>> = vec![None; n];
        for (pos, st) in starts.iter().enumerate() {
            if let Some(cmd) = st.cmd
                && let Some(f) = first.get_mut(cmd as usize)
                && f.is_none()
            {
                *f = Some(pos);
            }
        }
        let unnamed = starts.iter().position(|st| st.cmd.is_none());
        for j in 0..n {
            let Some(pj) = first[j] else { continue };
            if unnamed.is_some_and(|u| u < pj) {
                continue;
            }
            let sj = starts[pj];
            for (i, &fi) in first.iter().enumerate().take(j) {
                let out_of_order = match fi {
                    Some(pi) => pi > pj,
                    // Never written: it must have ended (failed, by its deadline, say) by the
                    // end of the turn that wrote the later one.
                    None => self.subs[i].done.is_none() || self.subs[i].done_turn > sj.turn,
                };
                if out_of_order {
                    let when = fi.map_or("never".to_string(), |p| {
                        format!("at t={}us on sock {}", starts[p].at / 1000, starts[p].sock)
                    });
                    return violation(
                        "(g) submission order",
                        format!(
                            "cmd {j} first written at t={}us on sock {} (turn {}), before cmd {i} (first written {when}, \
                             completed in turn {:?})",
                            sj.at / 1000,
                            sj.sock,
                            sj.turn,
                            self.subs[i].done.map(|_| self.subs[i].done_turn)
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// The hand-written scenarios of the faults, by name (their seeds are
/// `fuzz/seeds/sim/<name>`, written by `cargo test --test sim -- --ignored write_seeds`).
pub fn named_scenarios() -> Vec<(&'static str, Scenario)> {
    super::scenario::named()
}
