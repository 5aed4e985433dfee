//! Turnaround benchmark: what finwatch adds to a busy-polled round trip, with the device's
//! wake-up taken out of the figure.
//!
//! `cargo bench --bench turnaround -- [--blocks N] [--block N]`
//!
//! Against `compare/`'s device (which sleeps in `epoll_wait` between requests, so its vCPU halts),
//! a client's turnaround (response in, next request out) is magnified several times in the
//! latency: a request that arrives before the device's CPU has halted finds it awake, one that
//! arrives after pays a wake-up from halt. Here the device spins on its sockets instead (one
//! thread, non-blocking reads in a loop), so a round trip is the client's work, the device's and
//! both kernels' loopback path, and nothing else; on a 2-core machine the two spinning threads
//! each own a core.
//!
//! Five clients, on five connections to the same device, send the same GET one after another,
//! interleaved in blocks (the order fixed, blocks short, so drift hits all alike):
//! - `raw spin`: a non-blocking socket, write, spin on `read` (the busy-poll floor of
//!   `compare/`);
//! - `raw spin + epoll_wait(0) check`: the same, with the socket registered (edge-triggered) in
//!   an epoll set and a zero-timeout `epoll_wait` before each write: the pre-write check as
//!   finwatch makes it when it waits in the poller;
//! - `raw spin + peek check`: registered too, with a one-byte `MSG_PEEK` before each write: the
//!   pre-write check as finwatch makes it after a spin has read the socket around the poller
//!   (the least the FIN guarantee costs here);
//! - `finwatch busy-poll`: `Client::execute` with `busy_poll(200 µs)`, a prepared request, one
//!   reused response;
//! - `finwatch busy-poll, get(url)`: another such client, through the convenience API
//!   (`Client::get` with the URL string; a new response per command).
//!
//! Why the two checks differ (2026-11-25, this VM, twelve runs of this bench and of a variant:
//! `epoll_wait(0)` +0.76–2.2 µs per round trip over the raw loop, the peek +0.46–1.2 µs and
//! cheaper than `epoll_wait(0)` in eleven, a socket merely registered +0–0.5 µs): a spin
//! reads the socket without asking epoll, so each response leaves the socket on epoll's ready
//! list; a zero-timeout `epoll_wait` then re-polls and unlinks it, and the next response's
//! arrival links it again (the callback's slow path). The peek leaves the list alone.
//!
//! The table shows the median over blocks of each block's mean round trip, and the difference
//! to the raw spin loop. Every wait is bounded (a spin gives up after a second).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use finwatch::{Client, Request, Response};

/// A small JSON answer (34-byte body).
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 34\r\n\r\n{\"ioId\":25602,\"value\":1,\"ok\":true}";
const PATH: &str = "/unico/v1/interface/io-state?ioId=25602";
const CLIENTS: usize = 5;
const SPIN_LIMIT: Duration = Duration::from_secs(1);

/// The device: one thread spinning over its (at most `CLIENTS`) connections, answering each
/// request head with `RESPONSE`.
fn device(listener: TcpListener, stop: Arc<AtomicBool>) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        if conns.len() < CLIENTS {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nodelay(true)?;
                    s.set_nonblocking(true)?;
                    conns.push((s, Vec::new()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let mut i = 0;
        while i < conns.len() {
            let (s, pending) = &mut conns[i];
            match s.read(&mut buf) {
                Ok(0) => {
                    conns.swap_remove(i);
                    continue;
                }
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        s.write_all(RESPONSE)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    conns.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
        std::hint::spin_loop();
    }
    Ok(())
}

/// The pre-write check a raw client makes.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    None,
    /// Registered in an epoll set; a zero-timeout `epoll_wait` before each write.
    EpollWait,
    /// Registered in an epoll set; a one-byte `MSG_PEEK` before each write.
    Peek,
}

/// A raw client: write the request, spin on `read` until the whole (known-length) response is in.
struct Raw {
    stream: mio::net::TcpStream,
    request: Vec<u8>,
    check: Check,
    /// With a check: the poller the socket is registered in.
    poll: Option<(mio::Poll, mio::Events)>,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: SocketAddr, check: Check) -> io::Result<Raw> {
        let std = TcpStream::connect(addr)?;
        std.set_nodelay(true)?;
        std.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(std);
        let poll = if check != Check::None {
            let poll = mio::Poll::new()?;
            let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
            poll.registry().register(&mut stream, mio::Token(0), interest)?;
            Some((poll, mio::Events::with_capacity(16)))
        } else {
            None
        };
        let request = format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
        Ok(Raw { stream, request, check, poll, buf: vec![0; 4096] })
    }

    fn command(&mut self) -> io::Result<()> {
        match (self.check, &mut self.poll) {
            (Check::EpollWait, Some((poll, events))) => {
                poll.poll(events, Some(Duration::ZERO))?;
                // The device answers requests only: nothing may be ready to read now.
                if events.iter().any(|e| e.is_readable() || e.is_read_closed()) {
                    return Err(io::Error::other("the pre-write check found data or a FIN"));
                }
            }
            (Check::Peek, _) => match self.stream.peek(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Err(io::Error::other(format!("the pre-write peek found {other:?}"))),
            },
            _ => {}
        }
        (&self.stream).write_all(&self.request)?;
        let mut got = 0;
        let give_up = Instant::now() + SPIN_LIMIT;
        while got < RESPONSE.len() {
            match (&self.stream).read(&mut self.buf[got..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() > give_up {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    std::hint::spin_loop();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} needs a number")))
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let blocks = arg(&args, "--blocks", 15).max(1);
    let block = arg(&args, "--block", 10_000).max(1);

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || device(listener, stop))
    };

    let raw = [Check::None, Check::EpollWait, Check::Peek].map(|c| Raw::connect(addr, c));
    for r in &raw {
        if let Err(e) = r {
            return Err(format!("connect: {e}").into());
        }
    }
    let mut raw = raw.map(|r| r.expect("checked above"));
    let mut client = Client::builder().busy_poll(Duration::from_micros(200)).build()?;
    let mut getter = Client::builder().busy_poll(Duration::from_micros(200)).build()?;
    let url = format!("http://{addr}{PATH}");
    let request = Request::get(&url).build()?;
    let mut response = Response::default();

    let names = [
        "raw spin",
        "raw spin + epoll_wait(0) check",
        "raw spin + peek check",
        "finwatch busy-poll",
        "finwatch busy-poll, get(url)",
    ];
    let mut means: [Vec<f64>; CLIENTS] = Default::default();
    // One unmeasured block first: connections made, caches and branch predictors warm.
    for b in 0..=blocks {
        for (i, mean) in means.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..block {
                match raw.get_mut(i) {
                    Some(r) => r.command()?,
                    None if i == 3 => client.execute(&request, &mut response)?,
                    None => {
                        let got = getter.get(&url)?;
                        if got.body().len() != 34 {
                            return Err(format!("get: {} bytes of body", got.body().len()).into());
                        }
                    }
                }
            }
            if b > 0 {
                mean.push(start.elapsed().as_nanos() as f64 / block as f64);
            }
        }
    }
    assert_eq!((response.status(), response.body().len()), (200, 34));
    stop.store(true, Ordering::Relaxed);
    drop((raw, client, getter));
    server.join().expect("device thread")?;

    println!(
        "turnaround against a spinning device: {blocks} blocks × {block} round trips per client, \
         interleaved; median over blocks of the block's mean round trip"
    );
    let floor = median(means[0].clone());
    println!("{:<32} {:>10} {:>12} {:>16}", "client", "µs/round", "+ns vs raw", "block means µs");
    for (name, m) in names.iter().zip(means) {
        let (lo, hi) = m.iter().fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let med = median(m);
        println!(
            "{name:<32} {:>10.2} {:>12.0} {:>16}",
            med / 1000.0,
            med - floor,
            format!("{:.2}–{:.2}", lo / 1000.0, hi / 1000.0)
        );
    }
    Ok(())
}
