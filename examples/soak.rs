//! A bounded soak: `cargo run --release --example soak -- [--commands N] [--seed S] [--epoch N]`.
//!
//! Sends N commands (default 200,000) through **one** `finwatch::Client` (blocking `send`) to the
//! project's simulated device (`tests/support`), which misbehaves at random on every request:
//! keep-alive, FIN after the response (no `Connection: close`), RST after the response, FIN after
//! 1–5 ms of idleness, a brief stall (1–20 ms, well inside the request deadline) and, rarely, a
//! stall past the deadline. The choice is a deterministic function of the seed, the command id and
//! the connection it arrived on, so a seed replays the same device. Commands alternate an
//! idempotent PUT/GET with a non-idempotent POST, each with a unique id in its target and body;
//! the gaps between commands cycle through the racy values (0, 50 µs, 100 µs right after a
//! response, whose FIN may be on its way; 1–6 ms around the idle close).
//!
//! The device is restarted every `--epoch` commands (default 10,000; 0 = never): the simulator
//! keeps a log of every request it received (about 0.4 KiB each, measured), which over 200k
//! commands would grow the process by ~80 MB and hide the client's own memory. The client stays
//! the same; it sees the old device's connections close when it restarts, like a device reboot.
//! VmRSS still climbs for a while and then stays flat: the device's short-lived threads fill
//! glibc's per-thread malloc arenas (with `MALLOC_ARENA_MAX=1` it is flat from 20k commands on).
//!
//! Checked, and the exit status is non-zero if any fails:
//! - lost = 0: every `send` returned `Ok` or a typed `Err` (a panic, or a `send` that does not
//!   return within a watchdog bound, is a lost command);
//! - duplicated POSTs = 0: the device never received the same POST id in full twice;
//! - wrong responses = 0: every `Ok` carried the device's answer to *that* command;
//! - broken guarantees = 0: no command that failed with `may_have_been_processed() == false` was
//!   received in full by the device;
//! - no fd leak: /proc/self/fd has as many entries at the end (client and device dropped, their
//!   threads gone) as at the start.
//!
//! Reported: ok / retried / failed by error kind and stage, bytes the device received after its
//! FIN, fds, threads, VmRSS at start, after warm-up and at the end, elapsed time and commands/s.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use finwatch::{Client, Error, Method, Request};
use support::{After, DeviceServer, Received, Reply, wait_until};

/// Every request's deadline: far above the longest brief stall (20 ms), so only the long stalls
/// (which never answer) exceed it, even on a loaded machine (the device's threads and the client
/// share the CPUs with whatever else runs; stalls of 100-250 ms were seen under a load of 5 on 2
/// cores with a 150 ms deadline).
const DEADLINE: Duration = Duration::from_millis(400);
/// A `send` that has not returned after this long is counted as lost (it may never return).
const WATCHDOG: Duration = Duration::from_secs(20);
/// Commands before the "after warm-up" memory reading.
const WARMUP: usize = 10_000;

const fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// The pause before each command, cycled: 0 / 50 µs / 100 µs race the FIN or RST that follows a
/// response; 1–6 ms straddle the device's 1–5 ms idle close.
const GAPS: [Duration; 24] = [
    us(0),
    us(50),
    us(100),
    us(1000),
    us(0),
    us(50),
    us(100),
    us(2000),
    us(0),
    us(50),
    us(100),
    us(3000),
    us(0),
    us(50),
    us(100),
    us(4000),
    us(0),
    us(50),
    us(100),
    us(5000),
    us(0),
    us(50),
    us(100),
    us(6000),
];

struct Args {
    commands: usize,
    seed: u64,
    epoch: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { commands: 200_000, seed: 0x5eed_f1a5, epoch: 10_000 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.replace('_', "").parse(),
            };
            parsed.map_err(|e| format!("{name} {v}: {e}"))
        };
        match flag.as_str() {
            "--commands" | "-n" => args.commands = value("--commands")? as usize,
            "--seed" => args.seed = value("--seed")?,
            "--epoch" => args.epoch = value("--epoch")? as usize,
            "-h" | "--help" => {
                return Err(
                    "usage: soak [--commands N (200000)] [--seed S] [--epoch N (10000; 0 = never)]".into()
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

/// splitmix64: a small deterministic PRNG step, also used to hash (seed, id, connection).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// What the device does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Behaviour {
    KeepAlive,
    Fin,
    Rst,
    IdleFin,
    BriefStall,
    LongStall,
}

/// The device's misbehaviour for a request: a pure function of (seed, command id, connection).
fn behaviour(seed: u64, id: u64, conn: usize) -> (Behaviour, u64) {
    let r = mix(seed ^ mix(id ^ mix(conn as u64)));
    let roll = r % 10_000;
    let b = match roll {
        0..3_000 => Behaviour::KeepAlive,
        3_000..5_000 => Behaviour::Fin,
        5_000..6_000 => Behaviour::Rst,
        6_000..9_500 => Behaviour::IdleFin,
        9_500..9_995 => Behaviour::BriefStall,
        _ => Behaviour::LongStall,
    };
    (b, r >> 16)
}

/// The command id in a request target `/.../<id>`.
fn command_id(req: &Received) -> Option<u64> {
    req.target.rsplit('/').next()?.parse().ok()
}

/// The device's handler, and what it counts (per behaviour) on the side.
/// When the device's handler ran for recent command ids (a fixed ring, so it does not grow): to
/// tell a device that answered late from a response the client did not read.
struct Handled {
    origin: Instant,
    /// (command id + 1, µs since `origin`), indexed by id modulo the length.
    slots: Vec<(AtomicU64, AtomicU64)>,
}

impl Handled {
    fn new(origin: Instant) -> Handled {
        Handled { origin, slots: (0..4096).map(|_| (AtomicU64::new(0), AtomicU64::new(0))).collect() }
    }

    fn record(&self, id: u64) {
        let slot = &self.slots[id as usize % self.slots.len()];
        slot.1.store(self.origin.elapsed().as_micros() as u64, Relaxed);
        slot.0.store(id + 1, Relaxed);
    }

    /// When the handler ran for `id`, if it has (and the slot was not reused since).
    fn at(&self, id: u64) -> Option<Instant> {
        let slot = &self.slots[id as usize % self.slots.len()];
        (slot.0.load(Relaxed) == id + 1).then(|| self.origin + Duration::from_micros(slot.1.load(Relaxed)))
    }
}

fn handler(
    seed: u64,
    chosen: Arc<[AtomicU64; 6]>,
    handled: Arc<Handled>,
) -> impl Fn(&Received) -> Reply + Send + Sync + 'static {
    move |req: &Received| {
        let Some(id) = command_id(req) else {
            return Reply::raw("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").then(After::Fin);
        };
        handled.record(id);
        let (b, r) = behaviour(seed, id, req.conn);
        chosen[b as usize].fetch_add(1, Relaxed);
        let ok = Reply::ok_for(req, format!("{{\"id\":{id}}}").as_bytes());
        let idle = || After::IdleFin(Duration::from_micros(1000 + (r % 4001)));
        match b {
            Behaviour::KeepAlive => ok.then(After::KeepAlive),
            Behaviour::Fin => ok.then(After::Fin),
            Behaviour::Rst => ok.then(After::Rst),
            Behaviour::IdleFin => ok.then(idle()),
            Behaviour::BriefStall => {
                let after = [After::KeepAlive, After::Fin, idle()][(r >> 20) as usize % 3];
                ok.delayed(Duration::from_micros(1000 + (r % 19_001))).then(after)
            }
            Behaviour::LongStall => Reply::stall(),
        }
    }
}

/// The kind of a command, by its index: PUT, POST, GET, POST, …
fn method_of(i: usize) -> Method {
    match i % 4 {
        0 => Method::PUT,
        2 => Method::GET,
        _ => Method::POST,
    }
}

/// What became of one command, for the checks against the device's log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Failed, and the error guarantees the device did not receive it all.
    FailedNotProcessed,
    FailedMaybeProcessed,
    Lost,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    ok_after_retry: u64,
    ok_reused: u64,
    failed: BTreeMap<String, u64>,
    failed_total: u64,
    failed_not_processed: u64,
    lost: u64,
    wrong_response: u64,
    duplicated_posts: u64,
    idempotent_seen_twice: u64,
    broken_guarantees: u64,
    /// Failed commands whose error said the device may have acted, and that it did receive.
    failed_maybe_received: u64,
    unseen_ok: u64,
    bytes_after_fin: u64,
    conns_with_bytes_after_fin: u64,
    device_accepted: u64,
    device_fins: u64,
    device_rsts: u64,
    device_requests: u64,
    examples: Vec<String>,
    /// Failures by (error, what the device drew for the request).
    failed_by_behaviour: BTreeMap<String, u64>,
    /// Failures the device's draw does not explain (it did not stall past the deadline).
    unexplained: Vec<String>,
    unexplained_total: u64,
    /// Latency histogram: bucket k holds sends that took [2^k, 2^(k+1)) µs.
    latency_log2: [u64; 32],
    max_latency: Duration,
}

impl Tally {
    fn example(&mut self, s: String) {
        if self.examples.len() < 12 {
            self.examples.push(s);
        }
    }

    fn latency(&mut self, d: Duration) {
        let micros = d.as_micros().max(1) as u64;
        self.latency_log2[(63 - micros.leading_zeros() as usize).min(31)] += 1;
        self.max_latency = self.max_latency.max(d);
    }

    /// Upper bound of the bucket holding the `p`-th percentile.
    fn latency_percentile(&self, p: f64) -> Duration {
        let total: u64 = self.latency_log2.iter().sum();
        let rank = ((total as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (k, n) in self.latency_log2.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(1 << (k + 1));
            }
        }
        self.max_latency
    }
}

/// `kind (stage)` of an error, for the failure table.
fn describe(e: &Error) -> String {
    match e {
        Error::DeadlineExceeded { stage } | Error::ConnectionLost { stage, .. } => {
            format!("{} ({stage:?})", e.kind())
        }
        Error::RetryFailed { first, last } => {
            format!("{} after retry of {}", describe(last), describe(first))
        }
        _ => e.kind().to_string(),
    }
}

fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn thread_count() -> usize {
    fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// The 1-minute load average: the machine's other work delays the device's threads and the client.
fn load_avg() -> String {
    let s = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().next().unwrap_or("?").to_string()
}

/// VmRSS in KiB.
fn rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A failed command: index, how long its `send` took, the error described, and when the device's
/// handler ran for it relative to the start of the `send` (None: not before the send returned).
struct Failure {
    i: usize,
    took: Duration,
    error: String,
    handled_after: Option<Duration>,
}

/// Compares one device epoch's log with the outcomes of its commands.
fn check_epoch(
    seed: u64,
    device: &DeviceServer,
    first: usize,
    outcomes: &[Outcome],
    failures: &[Failure],
    tally: &mut Tally,
) {
    // Let the device's connection threads read what is still in flight (late bytes after a FIN).
    thread::sleep(Duration::from_millis(100));
    let mut seen: HashMap<u64, u32> = HashMap::new();
    // Where the device received each command: (connection, index on it).
    let mut arrivals: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
    for req in device.requests() {
        if let Some(id) = command_id(&req) {
            *seen.entry(id).or_default() += 1;
            arrivals.entry(id).or_default().push((req.conn, req.index_on_conn));
        }
    }
    for f in failures {
        let got = arrivals.get(&(f.i as u64)).map_or(&[][..], |v| v.as_slice());
        let drawn: Vec<Behaviour> =
            got.iter().map(|&(conn, _)| behaviour(seed, f.i as u64, conn).0).collect();
        let key = match drawn.as_slice() {
            [] => format!("{}  <- device never received it", f.error),
            [b] => format!("{}  <- device drew {b:?}", f.error),
            more => format!("{}  <- device drew {more:?}", f.error),
        };
        *tally.failed_by_behaviour.entry(key).or_default() += 1;
        if !drawn.contains(&Behaviour::LongStall) && !f.error.contains("connection_") {
            tally.unexplained_total += 1;
            if tally.unexplained.len() < 12 {
                let handled = match f.handled_after {
                    Some(d) => format!("{:.3} ms after the send began", d.as_secs_f64() * 1e3),
                    None => "only after the send had returned".to_string(),
                };
                tally.unexplained.push(format!(
                    "command {} {}: {} after {:.1} ms; device received it on (conn, index on conn) \
                     {got:?}, drew {drawn:?}, handled it {handled}",
                    f.i,
                    method_of(f.i).as_str(),
                    f.error,
                    f.took.as_secs_f64() * 1e3
                ));
            }
        }
    }
    for (k, outcome) in outcomes.iter().enumerate() {
        let i = first + k;
        let times = seen.get(&(i as u64)).copied().unwrap_or(0);
        let post = method_of(i) == Method::POST;
        if times > 1 && post {
            tally.duplicated_posts += 1;
            tally.example(format!("command {i} POST received {times} times by the device"));
        } else if times > 1 {
            tally.idempotent_seen_twice += 1;
        }
        match outcome {
            Outcome::FailedNotProcessed if times > 0 => {
                tally.broken_guarantees += 1;
                tally.example(format!(
                    "command {i} failed with may_have_been_processed() == false, yet the device received it"
                ));
            }
            Outcome::FailedMaybeProcessed if times > 0 => tally.failed_maybe_received += 1,
            Outcome::Ok if times == 0 => {
                tally.unseen_ok += 1;
                tally.example(format!("command {i} returned Ok, but the device never received it"));
            }
            _ => {}
        }
    }
    tally.bytes_after_fin += device.bytes_after_fin() as u64;
    tally.conns_with_bytes_after_fin += device.conns_with_bytes_after_fin() as u64;
    tally.device_accepted += device.connections_accepted() as u64;
    tally.device_fins += device.fins_sent() as u64;
    tally.device_rsts += device.rsts_sent() as u64;
    tally.device_requests += device.request_count() as u64;
}

fn main() -> ExitCode {
    // `RUST_LOG=finwatch=debug` logs every connection state transition (to stderr).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off"))
        .format_timestamp_micros()
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (fds_start, threads_start, rss_start) = (fd_count(), thread_count(), rss_kib());
    let load_start = load_avg();
    println!(
        "finwatch soak: {} commands through one Client against a misbehaving simulated device\n  \
         seed {:#x} (replay with --seed {:#x}), device restarted every {} commands, deadline {} ms",
        args.commands,
        args.seed,
        args.seed,
        if args.epoch == 0 { "never".to_string() } else { args.epoch.to_string() },
        DEADLINE.as_millis(),
    );

    // Watchdog: a send that never returns is a lost command; report it instead of hanging.
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (progress, done) = (Arc::clone(&progress), Arc::clone(&done));
        thread::spawn(move || {
            let mut last = (u64::MAX, Instant::now());
            while !done.load(Relaxed) {
                thread::sleep(Duration::from_millis(100));
                let now = progress.load(Relaxed);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > WATCHDOG {
                    println!("LOST: the send of command {now} has not returned for {WATCHDOG:?}; aborting");
                    std::process::exit(3);
                }
            }
        })
    };

    let mut client = Client::builder()
        .request_timeout(DEADLINE)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("create the client");
    let chosen: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    let handled = Arc::new(Handled::new(Instant::now()));
    let mut tally = Tally::default();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(args.epoch.max(1).min(args.commands));
    let mut failures: Vec<Failure> = Vec::new();
    let mut rss_warm = None;
    let mut rss_samples = Vec::new();
    let epoch = if args.epoch == 0 { usize::MAX } else { args.epoch };

    let started = Instant::now();
    let mut device = DeviceServer::start(handler(args.seed, Arc::clone(&chosen), Arc::clone(&handled)));
    let mut epoch_first = 0;
    for i in 0..args.commands {
        if i > epoch_first && (i - epoch_first) % epoch == 0 {
            check_epoch(args.seed, &device, epoch_first, &outcomes, &failures, &mut tally);
            outcomes.clear();
            failures.clear();
            device = DeviceServer::start(handler(args.seed, Arc::clone(&chosen), Arc::clone(&handled)));
            epoch_first = i;
        }
        if i == WARMUP.min(args.commands / 2) {
            rss_warm = Some(rss_kib());
        }
        if i % 20_000 == 0 && i > 0 {
            let rss = rss_kib();
            rss_samples.push((i, rss));
            let s = client.stats();
            println!(
                "  {i:>7} commands  {:>5.1} s  ok {:>7}  failed {:>4}  retries {:>4}  conns {:>6}  rss {}",
                started.elapsed().as_secs_f64(),
                tally.ok,
                tally.failed_total,
                s.retries,
                s.connects,
                mib(rss)
            );
        }
        thread::sleep(GAPS[i % GAPS.len()]);

        let method = method_of(i);
        let url = match method.as_str() {
            "PUT" => device.url(&format!("/unico/v1/io/{i}")),
            "GET" => device.url(&format!("/unico/v1/io-state/{i}")),
            _ => device.url(&format!("/unico/v1/cmd/{i}")),
        };
        let mut builder = Request::builder(method.clone(), &url);
        if method != Method::GET {
            builder = builder.body(format!("{{\"id\":{i},\"on\":{}}}", i % 3 == 0));
        }
        let request = builder.build().expect("a valid request");

        progress.store(i as u64, Relaxed);
        let t0 = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(|| client.send(request)));
        let took = t0.elapsed();
        tally.latency(took);
        let outcome = match result {
            Ok(Ok(resp)) => {
                let expected = format!("{{\"id\":{i}}}");
                if resp.status() != 200 || resp.body() != expected.as_bytes() {
                    tally.wrong_response += 1;
                    tally.example(format!(
                        "command {i} {}: got status {} body {:?}",
                        method.as_str(),
                        resp.status(),
                        String::from_utf8_lossy(resp.body())
                    ));
                }
                tally.ok += 1;
                tally.ok_after_retry += u64::from(resp.meta().retries > 0);
                tally.ok_reused += u64::from(resp.meta().reused);
                Outcome::Ok
            }
            Ok(Err(e)) => {
                tally.failed_total += 1;
                *tally.failed.entry(format!("{} {}", method.as_str(), describe(&e))).or_default() += 1;
                let handled_after = handled.at(i as u64).map(|t| t.saturating_duration_since(t0));
                failures.push(Failure { i, took, error: describe(&e), handled_after });
                if e.may_have_been_processed() {
                    Outcome::FailedMaybeProcessed
                } else {
                    tally.failed_not_processed += 1;
                    Outcome::FailedNotProcessed
                }
            }
            Err(_) => {
                tally.lost += 1;
                tally.example(format!("command {i} {}: send panicked", method.as_str()));
                Outcome::Lost
            }
        };
        outcomes.push(outcome);
    }
    let elapsed = started.elapsed();
    check_epoch(args.seed, &device, epoch_first, &outcomes, &failures, &mut tally);
    let stats = client.stats();
    let rss_end = rss_kib();
    done.store(true, Relaxed);
    let _ = watchdog.join();

    drop(client);
    drop(device);
    // Connection threads the device's Drop did not wait for finish within a tick or two.
    let fds_settled = wait_until(Duration::from_secs(5), || fd_count() <= fds_start);
    wait_until(Duration::from_secs(5), || thread_count() <= threads_start);
    let (fds_end, threads_end, rss_dropped) = (fd_count(), thread_count(), rss_kib());

    let n = args.commands as u64;
    let line = |label: &str, value: String| println!("  {label:<31}{value}");
    println!("\nreport (seed {:#x})", args.seed);
    line("commands", format!("{n} (PUT/POST/GET/POST …, unique ids)"));
    line(
        "elapsed",
        format!("{:.1} s, {:.0} commands/s", elapsed.as_secs_f64(), n as f64 / elapsed.as_secs_f64()),
    );
    line(
        "latency (log2 buckets)",
        format!(
            "p50 < {} µs, p99 < {} µs, p99.9 < {} µs, max {} µs",
            tally.latency_percentile(50.0).as_micros(),
            tally.latency_percentile(99.0).as_micros(),
            tally.latency_percentile(99.9).as_micros(),
            tally.max_latency.as_micros()
        ),
    );
    let b = |k: Behaviour| chosen[k as usize].load(Relaxed);
    line(
        "device behaviours drawn",
        format!(
            "keep-alive {}, FIN {}, RST {}, idle FIN 1-5 ms {}, brief stall {}, long stall {}",
            b(Behaviour::KeepAlive),
            b(Behaviour::Fin),
            b(Behaviour::Rst),
            b(Behaviour::IdleFin),
            b(Behaviour::BriefStall),
            b(Behaviour::LongStall)
        ),
    );
    line(
        "ok",
        format!(
            "{} ({} after a retry, {} on a reused connection)",
            tally.ok, tally.ok_after_retry, tally.ok_reused
        ),
    );
    line(
        "retried (client stats)",
        format!("{} retries; {} commands ok with meta().retries > 0", stats.retries, tally.ok_after_retry),
    );
    line(
        "failed with a typed error",
        format!(
            "{} ({} guaranteed not processed; of the {} that may have been, the device did receive {})",
            tally.failed_total,
            tally.failed_not_processed,
            tally.failed_total - tally.failed_not_processed,
            tally.failed_maybe_received
        ),
    );
    for (kind, count) in &tally.failed {
        println!("  {:<31}{count:>6}  {kind}", "");
    }
    line("failures by device draw", String::new());
    for (key, count) in &tally.failed_by_behaviour {
        println!("  {:<31}{count:>6}  {key}", "");
    }
    line(
        "failures not explained",
        format!("{} (no long stall drawn, not a lost connection)", tally.unexplained_total),
    );
    for u in &tally.unexplained {
        println!("  ? {u}");
    }
    line("lost (no outcome seen)", tally.lost.to_string());
    line("duplicated POSTs", tally.duplicated_posts.to_string());
    line(
        "PUT/GET received twice",
        format!("{} (idempotent retries the device saw)", tally.idempotent_seen_twice),
    );
    line("wrong responses", tally.wrong_response.to_string());
    line("broken not-processed promises", tally.broken_guarantees.to_string());
    line("Ok never seen by the device", tally.unseen_ok.to_string());
    line(
        "bytes after the device's FIN",
        format!("{} on {} connections", tally.bytes_after_fin, tally.conns_with_bytes_after_fin),
    );
    line(
        "device",
        format!(
            "{} connections accepted, {} requests, {} FINs, {} RSTs",
            tally.device_accepted, tally.device_requests, tally.device_fins, tally.device_rsts
        ),
    );
    line(
        "client stats",
        format!(
            "connects {}, reuses {}, FINs seen idle {} (pre-write check caught {}), FINs while busy {}, resets {}, \
             retired {}",
            stats.connects,
            stats.reuses,
            stats.fins_seen_idle,
            stats.fins_caught_by_peek,
            stats.fins_while_busy,
            stats.resets,
            stats.retired
        ),
    );
    line("load average (1 min)", format!("{load_start} at start, {} at end", load_avg()));
    line("file descriptors", format!("{fds_start} at start, {fds_end} at end"));
    line("threads", format!("{threads_start} at start, {threads_end} at end"));
    line(
        "VmRSS",
        format!(
            "{} at start, {} after warm-up ({} commands), {} at the end, {} after dropping all",
            mib(rss_start),
            rss_warm.map_or("-".into(), mib),
            WARMUP.min(args.commands / 2),
            mib(rss_end),
            mib(rss_dropped)
        ),
    );
    if !rss_samples.is_empty() {
        let samples: Vec<String> =
            rss_samples.iter().map(|(i, r)| format!("{}k: {}", i / 1000, mib(*r))).collect();
        line("VmRSS along the way", samples.join(", "));
    }
    for e in &tally.examples {
        println!("  ! {e}");
    }
    println!(
        "\n  Bytes after FIN are commands written while the device's FIN was already on its way: the\n  \
         client checks the socket right before writing, but a FIN sent after that check (or one the\n  \
         device's thread had not yet sent when the response arrived) cannot be seen by any client.\n  \
         Such a command is lost on the wire; an idempotent one is retried on a fresh connection, a\n  \
         POST fails with a typed error saying the device may have acted (it did not)."
    );

    let mut problems = Vec::new();
    if tally.lost > 0 {
        problems.push(format!("{} command(s) lost", tally.lost));
    }
    if tally.duplicated_posts > 0 {
        problems.push(format!("{} POST(s) duplicated", tally.duplicated_posts));
    }
    if tally.wrong_response > 0 {
        problems.push(format!("{} wrong response(s)", tally.wrong_response));
    }
    if tally.broken_guarantees > 0 {
        problems.push(format!("{} broken not-processed promise(s)", tally.broken_guarantees));
    }
    if !fds_settled || fds_end != fds_start {
        problems.push(format!("fd leak: {fds_start} fds at start, {fds_end} at end"));
    }
    if problems.is_empty() {
        println!("\nverdict: ok");
        ExitCode::SUCCESS
    } else {
        println!("\nverdict: FAILED: {}", problems.join("; "));
        ExitCode::FAILURE
    }
}
