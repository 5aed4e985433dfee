//! A scenario: the client's configuration, the kernel's options, the device's script and the
//! commands, decoded from arbitrary bytes (every input is a valid scenario) and encoded back
//! (so hand-written scenarios become committed seed files that decode to exactly them).
//!
//! Values come from small tables, so a fuzzer reaches the interesting ones (a 2 MiB body, one
//! event per wait, `Duration::MAX`) without searching a wide range. Layout (bytes past the end
//! read as 0):
//!
//! | byte | bits |
//! |---|---|
//! | 0 | zero-wait exact, writable-means-connected, warm spares, RST discards, max in flight − 1 (2 bits, 3 → 1), retries (2) |
//! | 1 | events per wait (2), send buffer (2), latency (3), device read rate (low bit) |
//! | 2 | request timeout (3), connect timeout (3), busy-poll (1), device read rate (high bit) |
//! | 3 | idle timeout (3), fd limit (2), listen (3) |
//! | 4 | accept delay (2), respond delay (2), after response (2), `Keep-Alive: timeout` (2) |
//! | 5 | idle close (3), idle-close limit (2), idle close by RST (1), early answer (2) |
//! | 6 | cut: present, in response, RST, exchange (5) |
//! | 7–8 | cut offset (u16, little-endian) |
//! | 9 | reboot (3), response body length (2), kernel faults (3, see [`FAULTS`]) |
//! | 10.. | commands, 2 bytes each: method (3), body (3), own timeout (1), caller away (1); gap (3), timeout (3), device closes its connection after the response (1) |

use std::time::Duration;

use super::SimOptions;
use super::device::{AfterResponse, Cut, Listen, Script};
use crate::os::faulty::FaultRates;
use crate::request::Method;

const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);
const MAX: Duration = Duration::MAX;

const EVENTS: [usize; 4] = [256, 1, 2, 3];
const SNDBUF: [usize; 4] = [64 * 1024, 2 * 1024, 16 * 1024, 256 * 1024];
const LATENCY: [Duration; 8] = [
    Duration::from_micros(100),
    Duration::from_micros(10),
    MS,
    Duration::from_millis(5),
    Duration::from_micros(50),
    Duration::from_millis(20),
    Duration::from_micros(300),
    Duration::from_millis(2),
];
const REQUEST_TIMEOUT: [Duration; 8] = [
    Duration::from_secs(10),
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
    MAX,
    Duration::from_millis(20),
    Duration::from_millis(100),
];
const CONNECT_TIMEOUT: [Duration; 8] = [
    Duration::from_secs(3),
    Duration::from_millis(10),
    Duration::from_millis(100),
    Duration::from_secs(1),
    MAX,
    Duration::from_millis(30),
    Duration::from_millis(500),
    Duration::from_secs(5),
];
const IDLE_TIMEOUT: [Duration; 8] = [
    Duration::from_secs(30),
    Duration::ZERO,
    Duration::from_millis(5),
    Duration::from_millis(50),
    Duration::from_secs(1),
    MAX,
    Duration::from_millis(20),
    Duration::from_millis(200),
];
const FD_LIMIT: [Option<usize>; 4] = [None, None, Some(0), Some(1)];
const LISTEN: [Listen; 8] = [
    Listen::Accept,
    Listen::Refuse,
    Listen::RefuseAtOnce,
    Listen::UnreachableAtOnce,
    Listen::UnreachableLater,
    Listen::Silent,
    Listen::Accept,
    Listen::Accept,
];
const ACCEPT_DELAY: [Duration; 4] =
    [Duration::ZERO, Duration::from_millis(5), Duration::from_millis(100), Duration::from_secs(5)];
const RESPOND_DELAY: [Duration; 4] =
    [Duration::ZERO, MS, Duration::from_millis(20), Duration::from_millis(300)];
const AFTER: [AfterResponse; 4] =
    [AfterResponse::Keep, AfterResponse::Fin, AfterResponse::Rst, AfterResponse::Keep];
const KEEP_ALIVE: [Option<u32>; 4] = [None, Some(0), Some(1), Some(5)];
const IDLE_CLOSE: [Option<Duration>; 8] = [
    None,
    Some(MS),
    Some(Duration::from_millis(5)),
    Some(Duration::from_millis(30)),
    Some(Duration::from_millis(200)),
    Some(Duration::from_secs(2)),
    None,
    Some(Duration::from_micros(300)),
];
const IDLE_LIMIT: [Option<u32>; 4] = [None, Some(1), Some(2), Some(3)];
const EARLY: [Option<(u16, usize)>; 4] =
    [None, Some((200, 96 * 1024)), Some((413, 96 * 1024)), Some((200, 1024))];
const REBOOT: [Option<Duration>; 8] = [
    None,
    Some(Duration::from_millis(10)),
    Some(Duration::from_millis(100)),
    Some(Duration::from_secs(1)),
    Some(Duration::from_secs(3)),
    Some(Duration::from_millis(50)),
    Some(Duration::from_millis(500)),
    Some(Duration::from_secs(2)),
];
const BODY_LEN: [usize; 4] = [2, 0, 500, 100_000];
/// The device's read rate, bytes per microsecond: 1 GB/s, 100 MB/s, 10 MB/s, 4 GB/s.
const READ_RATE: [u32; 4] = [1000, 100, 10, 4000];
/// The fault rates of the `Faulty` wrapper around the simulated kernel (percent): none, one
/// kind at a time, or all together.
pub const FAULTS: [FaultRates; 8] = [
    FaultRates::NONE,
    FaultRates { eintr: 10, ..FaultRates::NONE },
    FaultRates { short_write: 50, ..FaultRates::NONE },
    FaultRates { spurious: 20, ..FaultRates::NONE },
    FaultRates::NONE,
    FaultRates { truncate: 40, ..FaultRates::NONE },
    FaultRates { emfile: 5, ..FaultRates::NONE },
    FaultRates { eintr: 5, short_write: 30, spurious: 10, truncate: 20, emfile: 2 },
];
const METHODS: [&str; 8] = ["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "POST", "GET"];
const BODIES: [usize; 8] = [0, 10, 1000, 70_000, 300_000, 2 * 1024 * 1024, 1, 5000];
const GAPS: [Duration; 8] = [
    Duration::ZERO,
    US.saturating_mul(100),
    MS,
    Duration::from_millis(10),
    Duration::from_millis(30),
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(3),
];
/// The busy-poll budget when busy-polling is on.
pub(crate) const BUSY_POLL: Duration = Duration::from_micros(50);
/// Commands per scenario (bounds a run's time).
pub const MAX_COMMANDS: usize = 80;
/// Request body bytes per scenario (bounds a run's memory and time): bodies past it are empty.
const MAX_BODY_TOTAL: usize = 6 * 1024 * 1024;

/// One command the harness submits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// `GET`, `PUT`, `POST`, `PATCH`, `DELETE` or `HEAD`.
    pub method: &'static str,
    /// Body length (sent for `PUT`, `POST` and `PATCH` only).
    pub body: usize,
    /// Virtual time between the previous submission (or the start) and this one.
    pub gap: Duration,
    /// The request's own timeout (else the client's).
    pub timeout: Option<Duration>,
    /// The caller was away before this command, as a control loop that calls `send` and sleeps
    /// is: everything before it completed (the harness runs the loop until nothing is pending),
    /// then `gap` passed without a call into the client, the network moving on its own (a
    /// device's idle close arrives unseen), and then it was submitted.
    pub away: bool,
}

/// Everything one simulated run is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// `max_in_flight_per_host`, 1–3.
    pub max_in_flight: usize,
    /// `max_retries`, 0–3.
    pub max_retries: u32,
    /// Warm spares on or off.
    pub warm_spares: bool,
    /// Busy-polling on (with a 50 µs budget) or off.
    pub busy_poll: bool,
    /// The client's request timeout.
    pub request_timeout: Duration,
    /// The client's connect timeout.
    pub connect_timeout: Duration,
    /// The client's idle timeout.
    pub idle_timeout: Duration,
    /// The simulated kernel.
    pub kernel: SimOptions,
    /// The device.
    pub script: Script,
    /// The commands, in submission order.
    pub commands: Vec<Command>,
    /// Faults the kernel injects (`Faulty`).
    pub faults: FaultRates,
}

impl Default for Scenario {
    fn default() -> Scenario {
        Scenario::decode(&[])
    }
}

impl Command {
    /// A command of `method` with a body of `body` bytes, `gap` after the previous one.
    pub fn new(method: &'static str, body: usize, gap: Duration) -> Command {
        Command { method, body, gap, timeout: None, away: false }
    }
}

/// Reads bytes, 0 past the end.
struct Bytes<'a>(std::slice::Iter<'a, u8>);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }
}

fn bits(b: u8, shift: u32, width: u32) -> usize {
    usize::from(b >> shift) & ((1 << width) - 1)
}

/// The index of `v` in `table`; a hand-written scenario must use table values.
fn idx<T: PartialEq + std::fmt::Debug>(table: &[T], v: &T) -> u8 {
    table.iter().position(|t| t == v).unwrap_or_else(|| panic!("{v:?} is not one of {table:?}")) as u8
}

impl Scenario {
    /// The scenario `data` describes (any bytes are one).
    pub fn decode(data: &[u8]) -> Scenario {
        let mut b = Bytes(data.iter());
        let (b0, b1, b2, b3, b4, b5, b6) =
            (b.next(), b.next(), b.next(), b.next(), b.next(), b.next(), b.next());
        let cut_at = usize::from(u16::from_le_bytes([b.next(), b.next()]));
        let b9 = b.next();
        let kernel = SimOptions {
            zero_wait_is_exact: b0 & 1 == 0,
            read_wait: b0 & 1 == 0,
            writable_means_connected: b0 & 2 == 0,
            discard_on_rst: b0 & 8 != 0,
            events: EVENTS[bits(b1, 0, 2)],
            sndbuf: SNDBUF[bits(b1, 2, 2)],
            latency: LATENCY[bits(b1, 4, 3)],
            fd_limit: FD_LIMIT[bits(b3, 3, 2)],
        };
        let script = Script {
            listen: LISTEN[bits(b3, 5, 3)],
            accept_delay: ACCEPT_DELAY[bits(b4, 0, 2)],
            respond_delay: RESPOND_DELAY[bits(b4, 2, 2)],
            after_response: AFTER[bits(b4, 4, 2)],
            keep_alive_timeout: KEEP_ALIVE[bits(b4, 6, 2)],
            idle_close: IDLE_CLOSE[bits(b5, 0, 3)],
            idle_close_limit: IDLE_LIMIT[bits(b5, 3, 2)],
            idle_close_rst: b5 & 0x20 != 0,
            early_answer: EARLY[bits(b5, 6, 2)],
            cut: (b6 & 1 != 0).then_some(Cut {
                in_response: b6 & 2 != 0,
                rst: b6 & 4 != 0,
                exchange: u32::from(b6 >> 3),
                at: cut_at,
            }),
            reboot_at: REBOOT[bits(b9, 0, 3)],
            body_len: BODY_LEN[bits(b9, 3, 2)],
            read_rate: READ_RATE[bits(b1, 7, 1) | bits(b2, 7, 1) << 1],
            close_after: 0,
        };
        let mut script = script;
        let mut commands = Vec::new();
        let mut total = 0;
        let rest = data.get(10..).unwrap_or(&[]);
        for pair in rest.chunks(2).take(MAX_COMMANDS) {
            let (c0, c1) = (pair[0], pair.get(1).copied().unwrap_or(0));
            let method = METHODS[bits(c0, 0, 3)];
            let mut body =
                if matches!(method, "PUT" | "POST" | "PATCH") { BODIES[bits(c0, 3, 3)] } else { 0 };
            if total + body > MAX_BODY_TOTAL {
                body = 0;
            }
            total += body;
            let timeout = (c0 & 0x40 != 0).then_some(REQUEST_TIMEOUT[bits(c1, 3, 3)]);
            let away = c0 & 0x80 != 0;
            if c1 & 0x40 != 0 {
                script.close_after |= 1 << commands.len();
            }
            commands.push(Command { method, body, gap: GAPS[bits(c1, 0, 3)], timeout, away });
        }
        Scenario {
            max_in_flight: [1, 2, 3, 1][bits(b0, 4, 2)],
            max_retries: bits(b0, 6, 2) as u32,
            warm_spares: b0 & 4 == 0,
            busy_poll: b2 & 0x40 != 0,
            request_timeout: REQUEST_TIMEOUT[bits(b2, 0, 3)],
            connect_timeout: CONNECT_TIMEOUT[bits(b2, 3, 3)],
            idle_timeout: IDLE_TIMEOUT[bits(b3, 0, 3)],
            kernel,
            script,
            commands,
            faults: FAULTS[bits(b9, 5, 3)],
        }
    }

    /// The bytes that decode to this scenario. Panics on a value that is not in its table
    /// (hand-written scenarios pick from the tables above).
    pub fn encode(&self) -> Vec<u8> {
        let (k, s) = (&self.kernel, &self.script);
        let flight = idx(&[1, 2, 3], &self.max_in_flight);
        assert!(self.max_retries < 4, "max_retries 0–3");
        assert_eq!(k.read_wait, k.zero_wait_is_exact, "one bit carries both");
        let b0 = u8::from(!k.zero_wait_is_exact)
            | u8::from(!k.writable_means_connected) << 1
            | u8::from(!self.warm_spares) << 2
            | u8::from(k.discard_on_rst) << 3
            | flight << 4
            | (self.max_retries as u8) << 6;
        let rate = idx(&READ_RATE, &s.read_rate);
        let b1 = idx(&EVENTS, &k.events)
            | idx(&SNDBUF, &k.sndbuf) << 2
            | idx(&LATENCY, &k.latency) << 4
            | (rate & 1) << 7;
        let b2 = idx(&REQUEST_TIMEOUT, &self.request_timeout)
            | idx(&CONNECT_TIMEOUT, &self.connect_timeout) << 3
            | u8::from(self.busy_poll) << 6
            | (rate >> 1) << 7;
        let b3 = idx(&IDLE_TIMEOUT, &self.idle_timeout)
            | idx(&FD_LIMIT, &k.fd_limit) << 3
            | idx(&LISTEN, &s.listen) << 5;
        let b4 = idx(&ACCEPT_DELAY, &s.accept_delay)
            | idx(&RESPOND_DELAY, &s.respond_delay) << 2
            | idx(&AFTER, &s.after_response) << 4
            | idx(&KEEP_ALIVE, &s.keep_alive_timeout) << 6;
        let b5 = idx(&IDLE_CLOSE, &s.idle_close)
            | idx(&IDLE_LIMIT, &s.idle_close_limit) << 3
            | u8::from(s.idle_close_rst) << 5
            | idx(&EARLY, &s.early_answer) << 6;
        let (b6, at) = match s.cut {
            None => (0, 0u16),
            Some(c) => {
                assert!(c.exchange < 32, "cut exchange 0–31");
                let at = u16::try_from(c.at).expect("cut offset below 64 KiB");
                (1 | u8::from(c.in_response) << 1 | u8::from(c.rst) << 2 | (c.exchange as u8) << 3, at)
            }
        };
        let b9 =
            idx(&REBOOT, &s.reboot_at) | idx(&BODY_LEN, &s.body_len) << 3 | idx(&FAULTS, &self.faults) << 5;
        let [a0, a1] = at.to_le_bytes();
        let mut out = vec![b0, b1, b2, b3, b4, b5, b6, a0, a1, b9];
        assert!(self.commands.len() <= MAX_COMMANDS, "at most {MAX_COMMANDS} commands");
        for (i, c) in self.commands.iter().enumerate() {
            let body = if matches!(c.method, "PUT" | "POST" | "PATCH") { idx(&BODIES, &c.body) } else { 0 };
            let t = c.timeout.map_or(0, |t| idx(&REQUEST_TIMEOUT, &t));
            out.push(
                idx(&METHODS, &c.method)
                    | body << 3
                    | u8::from(c.timeout.is_some()) << 6
                    | u8::from(c.away) << 7,
            );
            let close = u8::from((s.close_after >> i) & 1 == 1);
            out.push(idx(&GAPS, &c.gap) | t << 3 | close << 6);
        }
        let back = Scenario::decode(&out);
        assert_eq!(&back, self, "the scenario does not survive encoding (a body past the total?)");
        out
    }

    /// The seed of the kernel's faults: a hash of the scenario (the same scenario, the same
    /// faults at the same calls).
    pub(crate) fn fault_seed(&self) -> u64 {
        format!("{self:?}")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    }

    /// The request method of command `i`.
    pub(crate) fn method(&self, i: usize) -> Method {
        match self.commands[i].method {
            "GET" => Method::GET,
            "PUT" => Method::PUT,
            "POST" => Method::POST,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            _ => Method::HEAD,
        }
    }
}

/// A scenario with the defaults (keep-alive device, Linux caps) and `commands`.
fn with(commands: Vec<Command>) -> Scenario {
    Scenario { commands, ..Scenario::default() }
}

/// The hand-written scenarios: a baseline or two that pass, and one per fault of the issue.
pub(crate) fn named() -> Vec<(&'static str, Scenario)> {
    let ms = Duration::from_millis;
    let mut v = Vec::new();
    v.push((
        "keep_alive_mixed",
        with(
            ["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD"]
                .iter()
                .map(|m| {
                    Command::new(m, if matches!(*m, "GET" | "DELETE" | "HEAD") { 0 } else { 1000 }, ms(1))
                })
                .collect(),
        ),
    ));
    let mut s = with((0..4).map(|_| Command::new("POST", 10, ms(10))).collect());
    s.script.after_response = AfterResponse::Fin;
    v.push(("fin_after_every_response", s));
    // Fault #1: the device acts on the head of a 2 MiB POST, reads ~96 KiB of the body, answers
    // and closes with the rest unread, so its kernel sends RST.
    // Received data stays readable before the RST's error (Linux), or the RST discards it.
    for (name, status, discard) in [
        ("early_answer_200_then_rst", 200, false),
        ("early_answer_413_then_rst", 413, false),
        ("early_answer_200_then_rst_discarding", 200, true),
        ("early_answer_413_then_rst_discarding", 413, true),
    ] {
        let mut s =
            with(vec![Command::new("POST", 2 * 1024 * 1024, Duration::ZERO), Command::new("GET", 0, ms(10))]);
        s.script.early_answer = Some((status, 96 * 1024));
        s.kernel.discard_on_rst = discard;
        v.push((name, s));
    }
    // Fault #1 where the device's answer and its RST arrive while the client is in its flush
    // loop, writing the 2 MiB body chunk after chunk (the device reads at 1 GB/s, 10 µs away,
    // 256 KiB send buffer): the next write fails (`ECONNRESET`) with the answer unread in the
    // receive queue, readable (Linux). The answer is the outcome (invariant (h)); reported at
    // once, the write's error loses it.
    for (name, status) in
        [("early_answer_during_the_write_then_rst", 200), ("early_answer_413_during_the_write_then_rst", 413)]
    {
        let mut s = with(
            (0..3)
                .map(|i| Command::new("POST", 2 * 1024 * 1024, if i == 0 { Duration::ZERO } else { ms(10) }))
                .collect(),
        );
        s.script.early_answer = Some((status, 96 * 1024));
        s.kernel.latency = Duration::from_micros(10);
        s.kernel.sndbuf = 256 * 1024;
        v.push((name, s));
    }
    // Fault #2: two in flight, nothing listens: each GET fails, connects stay bounded.
    let mut s = with((0..4).map(|_| Command::new("GET", 0, Duration::ZERO)).collect());
    s.max_in_flight = 2;
    s.script.listen = Listen::Refuse;
    v.push(("connect_storm_refused", s));
    // EMFILE from open.
    let mut s = with(vec![Command::new("GET", 0, Duration::ZERO), Command::new("GET", 0, ms(10))]);
    s.kernel.fd_limit = Some(0);
    v.push(("emfile", s));
    let mut s = with((0..4).map(|_| Command::new("GET", 0, Duration::ZERO)).collect());
    s.kernel.fd_limit = Some(1);
    s.max_in_flight = 2;
    v.push(("emfile_second_connection", s));
    // Fault #3: Duration::MAX as each timeout.
    let gets = || (0..3).map(|_| Command::new("GET", 0, ms(10))).collect::<Vec<_>>();
    let mut s = with(gets());
    s.request_timeout = MAX;
    v.push(("duration_max_request_timeout", s));
    let mut s = with(gets());
    s.connect_timeout = MAX;
    v.push(("duration_max_connect_timeout", s));
    let mut s = with(gets());
    s.idle_timeout = MAX;
    v.push(("duration_max_idle_timeout", s));
    // The learned idle close must recover: the device resets one connection 30 ms after its
    // first response, then keeps connections; commands 100 ms apart for 6 s.
    let mut s = with((0..60).map(|_| Command::new("GET", 0, ms(100))).collect());
    s.script.idle_close = Some(ms(30));
    s.script.idle_close_limit = Some(1);
    s.script.idle_close_rst = true;
    v.push(("learned_idle_close_recovers", s));
    // The headline promise: the device closes an idle pooled connection (FIN, 5 ms after the
    // response) while the caller is away; the next command, submitted after the FIN arrived,
    // must not be written into it. Only the pre-write check can find that FIN (no wait ran
    // since it arrived): the zero-timeout poll (Linux) or the peek.
    for (name, exact) in [("fin_on_idle_while_away_epoll", true), ("fin_on_idle_while_away_peek", false)] {
        let mut s = with(vec![
            Command::new("GET", 0, Duration::ZERO),
            Command { away: true, ..Command::new("PUT", 10, ms(10)) },
        ]);
        s.script.idle_close = Some(ms(5));
        s.script.idle_close_limit = Some(1);
        s.kernel.zero_wait_is_exact = exact;
        s.kernel.read_wait = exact;
        s.warm_spares = false;
        v.push((name, s));
    }
    // Submission order with two in flight: two commands on two connections; the device closes
    // the second's (the most recently used) 1 ms after its response, while the caller is away.
    // Of the next two commands, submitted together, the first gets that connection, the second
    // the other one, alive. The first goes back to its queue
    // for a new connection; the second, checked alive, must wait for it to be written.
    let mut s = with(vec![
        Command::new("GET", 0, Duration::ZERO),
        Command::new("GET", 0, Duration::ZERO),
        Command { away: true, ..Command::new("PUT", 10, ms(10)) },
        Command::new("PUT", 10, Duration::ZERO),
    ]);
    s.max_in_flight = 2;
    s.script.close_after = 1 << 1; // the connection of command 1, the most recently used
    v.push(("order_with_two_in_flight_and_a_stale_connection", s));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_encode_round_trips() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..200 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let s = Scenario::decode(&data);
            assert_eq!(Scenario::decode(&s.encode()), s);
        }
    }
}
