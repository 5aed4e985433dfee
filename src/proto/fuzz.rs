//! Entry points for fuzzing and property tests: arbitrary bytes in, invariants checked.
//!
//! Not part of the API (hidden from the docs). `fuzz/` drives these with libFuzzer; the unit
//! tests below and `tests/regressions.rs` drive them with fixed and pseudo-random inputs, so
//! every crash a fuzzer finds stays a test. A violated invariant panics.

use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::proto::digest::{self, Credentials};
use crate::proto::engine::{Action, Config, Engine, ProbeOutcome, RequestId};
use crate::proto::framing::{Limits, Progress, ResponseReader};
use crate::proto::slab::Key;
use crate::request::{Method, Request};
use crate::response::Meta;

/// `len` pseudo-random bytes from `seed` (xorshift64*): deterministic inputs for the property
/// tests of the engine and of the simulator, without a dependency.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Feeds `data` to the response reader whole and in the pieces its first bytes choose, and checks
/// that both agree, that nothing is buffered past the limits, and that nothing panics.
/// Layout: `[flags, n_splits, split bytes..., payload...]`.
pub fn response(data: &[u8]) {
    let (flags, rest) = data.split_first().unwrap_or((&0, &[]));
    let (n, rest) = rest.split_first().unwrap_or((&0, &[]));
    let n = (*n as usize % 8).min(rest.len());
    let (splits, payload) = rest.split_at(n);
    let head_request = flags & 1 == 1;
    let eof = flags & 2 == 2;
    let limits =
        Limits { max_head_bytes: 512, max_headers: 16, max_body_bytes: 1024, max_interim_responses: 4 };

    let whole = read(limits, head_request, eof, &[payload]);
    let mut pieces = Vec::new();
    let mut at = 0;
    for &s in splits {
        let len = (s as usize).min(payload.len() - at);
        pieces.push(&payload[at..at + len]);
        at += len;
    }
    pieces.push(&payload[at..]);
    let split = read(limits, head_request, eof, &pieces);
    assert_eq!(whole, split, "the result must not depend on how the bytes were split");
}

/// What a read came to, comparable across splits.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Incomplete,
    Complete { status: u16, body: Vec<u8>, extra: usize, close: bool },
    Failed(&'static str),
}

fn read(limits: Limits, head_request: bool, eof: bool, pieces: &[&[u8]]) -> Outcome {
    let mut r = ResponseReader::new(limits, head_request);
    let mut extra = 0;
    let mut complete = false;
    for (i, piece) in pieces.iter().enumerate() {
        match r.feed(piece) {
            Ok(Progress::NeedMore) => {}
            Ok(Progress::Complete { extra: e }) => {
                extra = e + pieces[i + 1..].iter().map(|p| p.len()).sum::<usize>();
                complete = true;
                break;
            }
            Err(e) => return Outcome::Failed(e.kind()),
        }
    }
    let ended_by_eof = !complete && eof && r.feed_eof();
    if !complete && !ended_by_eof {
        return Outcome::Incomplete;
    }
    let (resp, persistence) = r.finish(Meta::default());
    // A Digest challenge in it is parsed and answered as the engine would (no panic, any bytes).
    if let Some(c) = digest::best_challenge(resp.header_bytes("www-authenticate")) {
        let creds = Credentials { user: "u".into(), password: "p".into(), policy: Default::default() };
        let _ = digest::authorization(&c, &creds, "GET", "/", 1, "cnonce");
        let _ = digest::answerable(resp.header_bytes("www-authenticate"), Some(&c), &creds, &"fuzz");
    }
    assert!(resp.body().len() <= limits.max_body_bytes);
    assert!(resp.body_at <= limits.max_head_bytes);
    Outcome::Complete {
        status: resp.status(),
        body: resp.into_body(),
        extra,
        close: persistence.close.is_some(),
    }
}

/// Interprets `data` as a sequence of driver events for an `Engine` and checks, after every
/// step, the promises the engine makes:
/// - nothing is ever written on a connection after its FIN or RST was reported;
/// - a `Write` only ever follows an `Alive` probe of that connection;
/// - a request that may not be retried is fully written at most once, plus once per Digest
///   `401` challenge it received (the device refused it: sending it again is safe);
/// - every request completes exactly once, and all do once time runs past their deadlines;
/// - a connection that connects never makes the engine open another (it takes a waiting request
///   or waits idle): no connect storm.
///
/// Each input runs twice: with the default idle limit, and with `idle_timeout` 0, under which
/// every connection is past its idle limit the moment it connects (the trigger of a connect
/// storm once found against a server announcing `Keep-Alive: timeout=0`).
pub fn engine(data: &[u8]) {
    engine_with(data, Config::default().idle_timeout);
    engine_with(data, Duration::ZERO);
}

fn engine_with(data: &[u8], idle_timeout: Duration) {
    let mut h = Harness::new(idle_timeout);
    let mut input = data.iter().copied();
    while let Some(op) = input.next() {
        let arg = input.next().unwrap_or(0);
        h.step(op, arg, &mut input);
    }
    // Everything submitted must come to an end once its deadline has passed.
    for _ in 0..4 {
        h.now += Duration::from_secs(60);
        h.e.on_timeout(h.now);
        h.drain(None);
    }
    let open: Vec<_> = h.submitted.iter().filter(|id| !h.completed.contains(id)).collect();
    assert!(open.is_empty(), "requests never completed: {open:?}");
}

struct Harness {
    e: Engine,
    now: Instant,
    conns: Vec<Key>,
    dead: HashSet<Key>,
    submitted: Vec<RequestId>,
    completed: HashSet<RequestId>,
    fully_written: HashMap<RequestId, u32>,
    /// Digest challenges fed to a connection while it carried the request.
    challenged: HashMap<RequestId, u32>,
}

/// The index in [`RESPONSES`] of the Digest challenge.
const CHALLENGE: usize = 6;

const RESPONSES: [&[u8]; 7] = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1, max=2\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=auth\r\nContent-Length: 0\r\n\r\n",
];

impl Harness {
    fn new(idle_timeout: Duration) -> Harness {
        let cfg = Config {
            max_in_flight_per_host: 2,
            max_connections_per_host: 3,
            idle_timeout,
            ..Config::default()
        };
        Harness {
            e: Engine::new(cfg),
            now: Instant::now(),
            conns: Vec::new(),
            dead: HashSet::new(),
            submitted: Vec::new(),
            completed: HashSet::new(),
            fully_written: HashMap::new(),
            challenged: HashMap::new(),
        }
    }

    fn conn(&self, arg: u8) -> Option<Key> {
        (!self.conns.is_empty()).then(|| self.conns[arg as usize % self.conns.len()])
    }

    fn step(&mut self, op: u8, arg: u8, input: &mut impl Iterator<Item = u8>) {
        let mut probed_alive = None;
        match op % 10 {
            0 => {
                let method =
                    [Method::GET, Method::PUT, Method::POST, Method::PATCH][arg as usize % 4].clone();
                let url = format!("http://10.0.0.{}/cmd", arg / 4 % 3);
                let mut b = Request::builder(method, &url).body("x");
                if arg & 0x80 != 0 {
                    b = b.timeout(Duration::from_millis(u64::from(arg & 0x3f)));
                }
                if arg & 0x40 != 0 {
                    b = b.digest_auth("u", "p");
                }
                let id = self.e.submit(&b.build().expect("valid request"), self.now);
                self.submitted.push(id);
            }
            1 => {
                if let Some(k) = self.conn(arg) {
                    self.e.on_connected(k, self.now);
                    let opened = self.drain(None);
                    assert_eq!(opened, 0, "a connection that connected made the engine open {opened} more");
                }
            }
            2 => {
                if let Some(k) = self.conn(arg) {
                    let source = io::Error::from(io::ErrorKind::ConnectionRefused);
                    self.e.on_connect_failed(k, Error::ConnectFailed { host: "h".into(), source }, self.now);
                }
            }
            3 => {
                if let Some(k) = self.conn(arg) {
                    let outcome = match input.next().unwrap_or(0) % 4 {
                        0 => ProbeOutcome::Alive,
                        1 => ProbeOutcome::Fin,
                        2 => ProbeOutcome::Data,
                        _ => ProbeOutcome::Error(io::ErrorKind::ConnectionReset.into()),
                    };
                    // A probe the engine did not ask for is ignored; one it did ask for that
                    // finds FIN/RST ends the connection with a Close action (checked in drain).
                    let alive = matches!(outcome, ProbeOutcome::Alive);
                    self.e.on_probe(k, outcome, self.now);
                    probed_alive = alive.then_some(k);
                }
            }
            4 => {
                if let Some(k) = self.conn(arg) {
                    let out = self.e.output(k).len();
                    let n = (input.next().unwrap_or(255) as usize).min(out);
                    if n > 0 {
                        assert!(!self.dead.contains(&k), "bytes to write on a dead connection");
                        let req = self.e.request_on(k);
                        self.e.on_written(k, n, self.now);
                        if n == out
                            && let Some((id, retryable)) = req
                        {
                            let count = self.fully_written.entry(id).or_default();
                            *count += 1;
                            let allowed = 1 + self.challenged.get(&id).copied().unwrap_or(0);
                            assert!(
                                retryable || *count <= allowed,
                                "non-retryable request {id:?} written twice"
                            );
                        }
                    }
                }
            }
            5 => {
                if let Some(k) = self.conn(arg) {
                    let which = input.next().unwrap_or(0) as usize % RESPONSES.len();
                    let canned = RESPONSES[which];
                    let cut = input.next().map_or(canned.len(), |c| c as usize % (canned.len() + 1));
                    if which == CHALLENGE
                        && let Some((id, _)) = self.e.request_on(k)
                    {
                        *self.challenged.entry(id).or_default() += 1;
                    }
                    self.e.on_data(k, &canned[..cut], self.now);
                }
            }
            6 => {
                if let Some(k) = self.conn(arg) {
                    self.dead.insert(k);
                    self.e.on_fin(k, self.now);
                }
            }
            7 => {
                if let Some(k) = self.conn(arg) {
                    self.dead.insert(k);
                    self.e.on_error(k, io::ErrorKind::ConnectionReset.into(), self.now);
                }
            }
            8 => {
                self.now += Duration::from_millis(u64::from(arg) * 8);
                self.e.on_timeout(self.now);
            }
            _ => {
                if let Some(k) = self.conn(arg) {
                    let junk: Vec<u8> = input.by_ref().take(arg as usize % 16).collect();
                    self.e.on_data(k, &junk, self.now);
                }
            }
        }
        self.drain(probed_alive);
    }

    /// Checks and applies the engine's actions and completions; returns how many connections it
    /// opened.
    fn drain(&mut self, probed_alive: Option<Key>) -> usize {
        let mut opened = 0;
        while let Some(a) = self.e.poll_action() {
            match a {
                Action::Connect { conn, .. } => {
                    self.conns.push(conn);
                    opened += 1;
                }
                Action::Write { conn } => {
                    assert_eq!(Some(conn), probed_alive, "a write that no Alive probe preceded");
                    assert!(!self.dead.contains(&conn), "a write on a connection after FIN/RST");
                }
                Action::Close { conn } => {
                    self.dead.insert(conn);
                }
                Action::ConnectNow { conn } => {
                    assert!(self.conns.contains(&conn), "connect now of a connection never opened");
                    assert!(!self.dead.contains(&conn), "connect now of a closed connection");
                }
                Action::Probe { .. } => {}
            }
        }
        for &k in &self.dead {
            assert!(self.e.output(k).is_empty(), "bytes to write on a dead connection");
        }
        while let Some(c) = self.e.poll_completion() {
            assert!(self.completed.insert(c.id), "request {:?} completed twice", c.id);
        }
        opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_invariants_hold_on_pseudo_random_event_sequences() {
        for seed in 0..3000 {
            engine(&bytes(seed, 64 + (seed as usize % 400)));
        }
    }

    #[test]
    fn response_reader_is_split_invariant_on_pseudo_random_input() {
        for seed in 0..3000 {
            let mut data = bytes(seed, 2 + seed as usize % 300);
            // Half the cases start like a response, so the parser gets past the status line.
            if seed % 2 == 0 {
                let prefix = RESPONSES[seed as usize % RESPONSES.len()];
                data.splice(2..2, prefix.iter().copied());
            }
            response(&data);
        }
    }

    #[test]
    fn canned_responses_parse_under_every_split() {
        for r in RESPONSES {
            for s in 0..r.len().min(255) {
                let mut data = vec![2, 1, s as u8];
                data.extend_from_slice(r);
                response(&data);
            }
        }
    }
}
