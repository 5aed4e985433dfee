//! finwatch inside an event loop the application owns: `cargo run --release --example embed_mio`.
//!
//! The application has its own `mio::Poll` with its own sources, here a UDP socket on which an
//! operator panel sends commands (`on`, `off`, `quit`), and a timer of its own (a state query
//! every 50 ms). finwatch's [`Client`] is one more source in that loop: its poller's fd
//! ([`std::os::fd::AsRawFd`] for `Client`) is registered for `READABLE`, and the loop
//!
//! 1. waits with a timeout of min(its own next timer, [`Client::next_deadline`]) - now;
//! 2. when finwatch's token is readable **or** that deadline has passed, calls
//!    `client.poll(Some(Duration::ZERO), &mut completions)`, which does the client's work
//!    (reads, writes, connects, expiries) without blocking and returns what completed.
//!
//! The loop runs against two simulated devices (the project's `tests/support` server): one
//! keep-alive, and one that closes connections idle for 20 ms, so the FINs on idle connections
//! arrive while the loop is waiting, and are processed through this path too.
//!
//! # What the fd's readiness means
//!
//! The fd is an epoll instance; a nested epoll is readable while its own ready list is not
//! empty. mio registers every source **edge-triggered**, so the outer `Poll` reports the
//! finwatch token once per new batch of events inside, not again for events still unprocessed
//! (this example checks it at start-up and prints what it saw). Hence: every time the token is
//! reported, call `client.poll` (it takes in everything pending, up to 256 socket events per
//! internal wait, the size of finwatch's event buffer).
//! A plain level-triggered registration (epoll without `EPOLLET`) would instead report the fd on
//! every wait until `client.poll` has consumed the events: correct too, but a loop that skipped
//! `client.poll` would spin.
//!
//! # Deadlines are timers, not fds
//!
//! Request deadlines, connect timeouts and idle-connection retirement have no fd: nothing makes
//! the fd readable when one expires. The application must bound its wait by
//! `client.next_deadline()` and call `client.poll` when it passes, or a request to a silent
//! device would never fail. (The deadline can move earlier whenever the client is used, so read
//! it again before each wait.)

//!
//! # Unix only
//!
//! The poller's fd (`AsRawFd` for `Client`) exists on Unix only (on Windows mio's poller is an
//! I/O completion port, with no fd to register elsewhere): elsewhere the example only says so.

// Every item but the stub `main` is Unix-only (a crate-level `#![cfg(unix)]` would leave a
// binary without `main`).
#[cfg(unix)]
#[path = "../tests/support/mod.rs"]
mod support;

#[cfg(unix)]
use std::net::UdpSocket as StdUdpSocket;
#[cfg(unix)]
use std::os::fd::AsRawFd;
use std::process::ExitCode;
#[cfg(unix)]
use std::thread;
#[cfg(unix)]
use std::time::{Duration, Instant};

#[cfg(unix)]
use finwatch::{Client, Completion, Request, RequestId};
#[cfg(unix)]
use mio::unix::SourceFd;
#[cfg(unix)]
use mio::{Events, Interest, Poll, Token};
#[cfg(unix)]
use support::DeviceServer;

#[cfg(unix)]
const UDP: Token = Token(0);
#[cfg(unix)]
const FINWATCH: Token = Token(1);
/// The application's own timer: a state query to each device this often.
#[cfg(unix)]
const QUERY_EVERY: Duration = Duration::from_millis(50);
/// A bound on the run, in case the panel's `quit` is lost.
#[cfg(unix)]
const LIMIT: Duration = Duration::from_secs(5);

#[cfg(not(unix))]
fn main() -> ExitCode {
    eprintln!("embed_mio registers the client's poller fd in a mio::Poll: Unix only");
    ExitCode::FAILURE
}

#[cfg(unix)]
fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let keep = DeviceServer::keep_alive();
    let idle = DeviceServer::idle_close(Duration::from_millis(20));
    let devices = [("keep-alive", &keep), ("idle-close-20ms", &idle)];

    let mut client = Client::builder().request_timeout(Duration::from_millis(500)).build().expect("client");
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(64);

    // The application's own source: commands arrive by UDP.
    let mut udp = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).expect("udp");
    poll.registry().register(&mut udp, UDP, Interest::READABLE).expect("register udp");
    // finwatch's poller, as one more source.
    let fd = client.as_raw_fd();
    poll.registry().register(&mut SourceFd(&fd), FINWATCH, Interest::READABLE).expect("register finwatch");

    check_readiness_semantics(&mut client, &mut poll, &mut events, keep.url("/probe"));

    let panel = operator_panel(udp.local_addr().expect("udp address"));
    let mut names: Vec<(RequestId, String)> = Vec::new();
    let mut completions: Vec<Completion> = Vec::new();
    let (mut ok, mut failed, mut woke_fd, mut woke_deadline) = (0u32, 0u32, 0u32, 0u32);
    let start = Instant::now();
    let mut next_query = start;
    let mut datagram = [0u8; 64];
    let mut quit = false;
    while !quit && start.elapsed() < LIMIT {
        // The wait: until the application's next timer or finwatch's next deadline.
        let now = Instant::now();
        let deadline = client.next_deadline();
        let wake_at = deadline.map_or(next_query, |d| d.min(next_query));
        match poll.poll(&mut events, Some(wake_at.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        let now = Instant::now();
        let mut finwatch_ready = false;
        for event in events.iter() {
            match event.token() {
                UDP => loop {
                    // Edge-triggered: read until WouldBlock.
                    let n = match udp.recv(&mut datagram) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("udp: {e}"),
                    };
                    let cmd = String::from_utf8_lossy(&datagram[..n]).into_owned();
                    if cmd == "quit" {
                        quit = true;
                        continue;
                    }
                    for (name, dev) in devices {
                        let body = format!(r#"{{"ioId":25602,"on":{}}}"#, cmd == "on");
                        let req = Request::put(&dev.url("/unico/v1/interface/io"), body).build().unwrap();
                        names.push((client.submit(req), format!("PUT {cmd:<3} → {name}")));
                    }
                },
                FINWATCH => finwatch_ready = true,
                _ => unreachable!(),
            }
        }
        if now >= next_query {
            for (name, dev) in devices {
                let req = Request::get(&dev.url("/unico/v1/interface/io-state?ioId=25602")).build().unwrap();
                names.push((client.submit(req), format!("GET state → {name}")));
            }
            next_query += QUERY_EVERY;
        }
        let deadline_passed = deadline.is_some_and(|d| now >= d);
        woke_fd += u32::from(finwatch_ready);
        woke_deadline += u32::from(deadline_passed && !finwatch_ready);
        // finwatch's turn: readable, or a deadline is due. (Calling it after a submit too lets
        // the new requests' connects and writes start now instead of at the next event.)
        client.poll(Some(Duration::ZERO), &mut completions).expect("finwatch poll");
        for c in completions.drain(..) {
            let i = names.iter().position(|(id, _)| *id == c.id).expect("a request of ours");
            let (_, what) = names.swap_remove(i);
            match c.result {
                Ok(resp) => {
                    ok += 1;
                    let conn = resp.meta().connection_id;
                    let body = String::from_utf8_lossy(resp.body()).into_owned();
                    println!(
                        "{:>7.1?}  {what:<32} {} on conn {conn:<3} {body}",
                        start.elapsed(),
                        resp.status()
                    );
                }
                Err(e) => {
                    failed += 1;
                    println!("{:>7.1?}  {what:<32} failed: {e}", start.elapsed());
                }
            }
        }
    }
    poll.registry().deregister(&mut SourceFd(&fd)).expect("deregister finwatch");
    panel.join().expect("operator panel");

    let s = client.stats();
    println!(
        "\n{ok} ok, {failed} failed; finwatch's fd woke the loop {woke_fd} times, its deadlines {woke_deadline} \
         times; {} connects, {} reuses, {} FINs seen on idle connections ({} only by the pre-write check)",
        s.connects, s.reuses, s.fins_seen_idle, s.fins_caught_by_peek
    );
    let late: usize = devices.iter().map(|(_, d)| d.bytes_after_fin()).sum();
    println!("devices: {late} bytes received after a FIN");
    if failed > 0 || late > 0 || s.fins_seen_idle == 0 {
        println!("verdict: FAILED");
        return ExitCode::FAILURE;
    }
    println!("verdict: ok");
    ExitCode::SUCCESS
}

/// Sends a few commands to the loop's UDP socket, then `quit`.
#[cfg(unix)]
fn operator_panel(to: std::net::SocketAddr) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let socket = StdUdpSocket::bind("127.0.0.1:0").expect("panel socket");
        for cmd in ["on", "off", "on", "off"] {
            thread::sleep(Duration::from_millis(170));
            socket.send_to(cmd.as_bytes(), to).expect("send command");
        }
        thread::sleep(Duration::from_millis(170));
        socket.send_to(b"quit", to).expect("send quit");
    })
}

/// Shows how the outer `Poll` reports finwatch's fd: once per new batch of events
/// (edge-triggered), not again while they wait, and again after `client.poll` only if new
/// events arrive.
#[cfg(unix)]
fn check_readiness_semantics(client: &mut Client, poll: &mut Poll, events: &mut Events, url: String) {
    let reported = |poll: &mut Poll, events: &mut Events, wait: Duration| {
        poll.poll(events, Some(wait)).expect("poll");
        events.iter().any(|e| e.token() == FINWATCH)
    };
    let id = client.submit(Request::get(&url).build().unwrap());
    // The submit queued a connect; only `client.poll` starts it.
    let mut done = Vec::new();
    client.poll(Some(Duration::ZERO), &mut done).expect("finwatch poll");
    let first = reported(poll, events, Duration::from_secs(2));
    // Do not call client.poll: the events are still inside, unprocessed.
    let again = reported(poll, events, Duration::from_millis(20));
    while !done.iter().any(|c: &Completion| c.id == id) {
        client.poll(Some(Duration::ZERO), &mut done).expect("finwatch poll");
        if !done.iter().any(|c| c.id == id) {
            reported(poll, events, Duration::from_secs(2));
        }
    }
    let after = reported(poll, events, Duration::from_millis(20));
    println!(
        "readiness of finwatch's fd in this mio Poll: reported when the connect finished: {first}; \
         reported again, unprocessed: {again}; reported after client.poll with nothing new: {after} \
         => {}",
        if first && !again && !after {
            "edge-triggered: call client.poll every time it is reported"
        } else {
            "not the expected edge-triggered behaviour"
        }
    );
    println!();
}
