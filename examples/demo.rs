//! The incident finwatch exists for, replayed on loopback: `cargo run --release --example demo`.
//!
//! A controller commands an embedded device over HTTP/1.1, many times a second. The device
//! answers `200 OK` and then closes the connection (FIN) without a `Connection: close` header,
//! or closes connections that stay idle for a few milliseconds. A pooled client that does not
//! notice writes its next command into the half-closed socket ~100 µs later; the device answers
//! RST and the command is lost. This demo starts the project's simulated device
//! (`tests/support`) in three behaviours and drives the same control loop (PUT a small JSON
//! command, then GET the I/O state, alternating) through a `finwatch::Client` against each:
//!
//! 1. FIN after every response, no `Connection: close`, next command ~100 µs later;
//! 2. FIN after 5 ms of idleness, with gaps between commands cycling from 1 to 24 ms;
//! 3. a well-behaved keep-alive device, as the baseline.
//!
//! For each phase it prints what the client counted (connections, reuses, FINs seen on idle
//! connections and how many only the pre-write check caught, retries), per-command latency, and
//! what the device counted, above all `bytes after FIN`: bytes the client wrote on a connection
//! after the device had closed it, the incident's signature. It exits with status 1 if any
//! command failed or any such byte arrived.
//!
//! `RUST_LOG=finwatch=debug` shows every connection state transition.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use finwatch::{Client, Request};
use support::{DeviceServer, wait_until};

const PUT_PATH: &str = "/unico/v1/interface/io";
const PUT_BODY: &str = r#"{"ioId":25602,"on":true}"#;
const GET_PATH: &str = "/unico/v1/interface/io-state?ioId=25602";

/// A safety bound on one phase's control loop: it stops issuing commands after this long.
const PHASE_BUDGET: Duration = Duration::from_secs(15);
/// How long to wait, after the client is gone, for the device to finish counting late bytes.
const SETTLE: Duration = Duration::from_secs(3);
/// Retried and failed commands listed in full per phase.
const SHOW_FAILURES: usize = 5;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Phase {
    title: &'static str,
    device: &'static str,
    start: fn() -> DeviceServer,
    /// The device closes after every response: the gap before the next command starts when its
    /// FIN has left, as in the incident ("~100 µs after the FIN arrived").
    gap_from_fin: bool,
    commands: usize,
    /// The pause before the next command (after the response, or after the FIN with
    /// `gap_from_fin`); a PUT/GET pair shares one, and the pairs cycle through the list.
    gaps: &'static [Duration],
}

const PHASES: [Phase; 3] = [
    Phase {
        title: "close after every response, no `Connection: close` (the incident)",
        device: "FIN right after each 200 OK, in a segment of its own",
        start: DeviceServer::close_after_response_apart,
        gap_from_fin: true,
        commands: 2000,
        gaps: &[Duration::from_micros(100)],
    },
    Phase {
        title: "idle close after 5 ms",
        device: "FIN when a connection has been idle for 5 ms",
        start: || DeviceServer::idle_close(ms(5)),
        gap_from_fin: false,
        commands: 256,
        // Beyond 5 ms too: the simulator's idle timer is a socket read timeout (SO_RCVTIMEO),
        // which Linux rounds up to its scheduler tick, so its FIN can come several ms late.
        gaps: &[ms(1), ms(3), ms(4), ms(5), ms(6), ms(8), ms(12), ms(24)],
    },
    Phase {
        title: "keep-alive (a well-behaved device, the baseline)",
        device: "keeps every connection open",
        start: DeviceServer::keep_alive,
        gap_from_fin: false,
        commands: 2000,
        gaps: &[Duration::ZERO],
    },
];

/// What happened to the commands sent after one requested gap.
#[derive(Default)]
struct GapRow {
    commands: usize,
    failed: usize,
    reused: usize,
    fins_seen_idle: u64,
    caught_by_peek: u64,
    retries: u64,
    measured: Vec<Duration>,
    latency: Vec<Duration>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_micros()
        .init();
    println!(
        "finwatch demo: a control loop against a simulated embedded device on 127.0.0.1.\n\
         The device answers 200 OK and then closes the connection (FIN) without `Connection: close`,\n\
         or closes it after a short idle time. A client that writes its next command into such a\n\
         half-closed socket loses it (the device answers RST). Each phase drives alternating\n\
         `PUT {PUT_PATH}` and `GET {GET_PATH}` commands through one\n\
         finwatch::Client (a fresh client per phase, so its counters are the phase's), and the\n\
         device counts every byte that arrives on a connection after its FIN: it must stay 0."
    );
    let mut problems = Vec::new();
    for (n, phase) in PHASES.iter().enumerate() {
        println!("\nPhase {}/{}: {}", n + 1, PHASES.len(), phase.title);
        problems.extend(run(phase).into_iter().map(|p| format!("phase {}: {p}", n + 1)));
    }
    println!();
    if problems.is_empty() {
        println!("verdict: no command lost, no byte written after a FIN");
        ExitCode::SUCCESS
    } else {
        println!("verdict: FAILED");
        for p in &problems {
            println!("  - {p}");
        }
        ExitCode::FAILURE
    }
}

/// Runs one phase, prints its summary, and returns what went wrong.
fn run(phase: &Phase) -> Vec<String> {
    let device = (phase.start)();
    let (put_url, get_url) = (device.url(PUT_PATH), device.url(GET_PATH));
    let mut client = Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("create the client");

    let mut rows: Vec<(Duration, GapRow)> = phase.gaps.iter().map(|&g| (g, GapRow::default())).collect();
    let mut failures = Vec::new();
    let mut retried = Vec::new();
    let mut problems = Vec::new();
    let mut last_response: Option<Instant> = None;
    let started = Instant::now();
    let mut sent = 0;
    while sent < phase.commands && started.elapsed() < PHASE_BUDGET {
        let (gap, row) = &mut rows[(sent / 2) % phase.gaps.len()];
        if last_response.is_some() {
            if phase.gap_from_fin && !await_fin(&device) {
                problems.push(format!("the device had not sent its FIN 1 s before command #{sent}"));
            }
            thread::sleep(*gap);
        }
        let (method, request) = if sent.is_multiple_of(2) {
            ("PUT", Request::put(&put_url, PUT_BODY))
        } else {
            ("GET", Request::get(&get_url))
        };
        let request = request.build().expect("a valid request");
        let before = client.stats();
        let t0 = Instant::now();
        let result = client.send(request);
        let t1 = Instant::now();
        let after = client.stats();

        row.commands += 1;
        row.latency.push(t1 - t0);
        let measured = last_response.map(|t| t0 - t);
        row.measured.extend(measured);
        let after_gap = match measured {
            Some(m) => format!("after a {} gap ({} measured)", micros(*gap), micros(m)),
            None => "(first)".to_string(),
        };
        row.fins_seen_idle += after.fins_seen_idle - before.fins_seen_idle;
        row.caught_by_peek += after.fins_caught_by_peek - before.fins_caught_by_peek;
        row.retries += after.retries - before.retries;
        match result {
            Ok(resp) if resp.is_success() => {
                let meta = resp.meta();
                row.reused += usize::from(meta.reused);
                if meta.retries > 0 {
                    retried.push(format!(
                        "command #{sent} {method} {after_gap}: ok on conn={} after {} retry",
                        meta.connection_id, meta.retries
                    ));
                }
            }
            Ok(resp) => {
                row.failed += 1;
                failures.push(format!("command #{sent} {method} {after_gap}: status {}", resp.status()));
            }
            Err(e) => {
                row.failed += 1;
                let maybe = if e.may_have_been_processed() { "may" } else { "cannot" };
                failures.push(format!(
                    "command #{sent} {method} {after_gap}: {e} [{}; device {maybe} have acted]",
                    e.kind()
                ));
            }
        }
        last_response = Some(t1);
        sent += 1;
    }
    let stats = client.stats();
    // Dropping the client closes its sockets, so the device sees EOF on every connection it
    // closed: after that no late byte can arrive, and the counter is final.
    drop(client);
    let settled = wait_until(SETTLE, || device.clients_closed_after_fin() >= device.fins_sent());

    let all = |f: fn(&GapRow) -> &[Duration]| -> Vec<Duration> {
        rows.iter().flat_map(|(_, r)| f(r).iter().copied()).collect()
    };
    let failed: usize = rows.iter().map(|(_, r)| r.failed).sum();
    let late = device.bytes_after_fin();
    let late_conns = device.conns_with_bytes_after_fin();

    let line = |label: &str, value: String| println!("  {label:<22}{value}");
    line("device", format!("{} ({})", phase.device, device.addr()));
    line("commands", format!("{sent} of {}, PUT/GET alternating", phase.commands));
    let from = if phase.gap_from_fin { "the device's FIN" } else { "the response" };
    line("gap asked", format!("{} after {from}", join(phase.gaps.iter().map(|g| micros(*g)))));
    line("gap measured", format!("{}   (response to next command)", spread(&all(|r| &r.measured))));
    line("ok / failed", format!("{} / {failed}", sent - failed));
    line(
        "connections opened",
        format!("{} (client), {} (device accepted)", stats.connects, device.connections_accepted()),
    );
    line("requests at device", device.request_count().to_string());
    let reused: usize = rows.iter().map(|(_, r)| r.reused).sum();
    line(
        "connection reuses",
        format!("{} (client stats), {reused} (responses with meta().reused)", stats.reuses),
    );
    line(
        "FINs seen while idle",
        format!("{} (pre-write check caught {})", stats.fins_seen_idle, stats.fins_caught_by_peek),
    );
    line("FINs while busy", stats.fins_while_busy.to_string());
    line("resets / retries", format!("{} / {}", stats.resets, stats.retries));
    line("latency", spread(&all(|r| &r.latency)));
    line(
        "waits, spin",
        format!(
            "{} caught by the adaptive spin, {} spun in vain (it turns off for a slow device)",
            stats.spins_caught, stats.spins_missed
        ),
    );
    line("device FINs sent", device.fins_sent().to_string());
    let counter = if settled { "" } else { " (NOT settled: the client left a closed connection open)" };
    line("bytes after FIN", format!("{late} on {late_conns} connections{counter}"));

    if phase.gaps.len() > 1 {
        let head = [
            "gap",
            "cmds",
            "reused",
            "new",
            "FIN idle",
            "check",
            "retries",
            "failed",
            "gap p50",
            "latency p50",
        ];
        println!("{}", table_row(head.map(String::from)));
        for (gap, r) in &rows {
            let p50 = |samples: &[Duration]| percentile(samples, 50).map_or("-".into(), micros);
            println!(
                "{}",
                table_row([
                    micros(*gap),
                    r.commands.to_string(),
                    r.reused.to_string(),
                    (r.commands - r.reused - r.failed).to_string(),
                    r.fins_seen_idle.to_string(),
                    r.caught_by_peek.to_string(),
                    r.retries.to_string(),
                    r.failed.to_string(),
                    p50(&r.measured),
                    p50(&r.latency),
                ])
            );
        }
    }
    for (tag, list) in [("RETRIED", &retried), ("FAILED", &failures)] {
        for item in list.iter().take(SHOW_FAILURES) {
            println!("  {tag} {item}");
        }
        if list.len() > SHOW_FAILURES {
            println!("  ... and {} more", list.len() - SHOW_FAILURES);
        }
    }

    if sent < phase.commands {
        problems
            .push(format!("stopped after {sent} of {} commands ({PHASE_BUDGET:?} budget)", phase.commands));
    }
    if failed > 0 {
        problems.push(format!("{failed} command(s) failed"));
    }
    if late > 0 {
        problems.push(format!(
            "{late} byte(s) on {late_conns} connection(s) arrived after the device's FIN \
             ({} command(s) retried after the connection closed under them, {failed} lost)",
            retried.len()
        ));
    }
    if !settled {
        problems.push("the device's late-byte counter did not settle".into());
    }
    problems
}

/// Waits (at most 1 s) until the device that closes after every response has sent the FIN that
/// follows its latest response. Its connection thread can be descheduled between writing the
/// response and sending the FIN; a command sent in between reaches the device before its FIN,
/// which no client can tell apart from a keep-alive device, and the device would count that
/// command as written after its FIN.
fn await_fin(device: &DeviceServer) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while device.fins_completed() < device.request_count() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::yield_now();
    }
    true
}

/// `p`-th percentile (nearest rank) of `samples`.
fn percentile(samples: &[Duration], p: usize) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// `p50 … p99 … max …` of `samples`, in µs.
fn spread(samples: &[Duration]) -> String {
    let at = |p| percentile(samples, p).map_or("-".into(), micros);
    format!("p50 {:>7}   p99 {:>7}   max {:>7}", at(50), at(99), at(100))
}

/// One row of the per-gap table, right-aligned.
fn table_row(cells: [String; 10]) -> String {
    const WIDTHS: [usize; 10] = [10, 5, 7, 5, 9, 6, 8, 7, 11, 12];
    cells.iter().zip(WIDTHS).map(|(cell, w)| format!("{cell:>w$}")).collect()
}

fn micros(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}
