//! The keep-alive hot path alone, for tools that watch a process from outside (`bpftrace`,
//! `strace`, `perf`): sequential GETs on one connection to a device that sleeps in `epoll_wait`
//! between requests, as `compare/`'s device does, sent by finwatch (`Client::execute`, a
//! prepared request, one reused response) or by the minimal mio loop (write, `epoll_wait`,
//! read: the least an event loop pays), nothing else in the process.
//!
//! `cargo run --release --example hot_path -- [finwatch|mio] [commands, default 30000]`
//!
//! `benches/syscall_gaps.sh` runs it under `bpftrace` and prints the time the client thread
//! spends in user space between each pair of its syscalls, for both clients: a figure that the
//! machine's drift hardly moves (the syscalls themselves and the wake-ups are left out), for
//! judging a change to the hot path when `compare/`'s pooled p50s are too noisy to.

#[path = "common/epoll_device.rs"]
mod epoll_device;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use epoll_device::EpollDevice;
use finwatch::{Client, Request, Response};
use mio::{Events, Interest, Poll, Token};

const PATH: &str = "/unico/v1/interface/io-state?ioId=25602";
/// A small JSON answer (34-byte body).
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 34\r\n\r\n{\"ioId\":25602,\"value\":1,\"ok\":true}";
const BODY_LEN: usize = 34;
/// Every wait is bounded: a device that stops answering fails the run instead of hanging it.
const WAIT: Duration = Duration::from_secs(2);

/// The minimal mio loop of `compare/` (floor 3): write, `epoll_wait`, read until the response's
/// known length is in.
fn mio_loop(addr: SocketAddr, commands: usize) -> Result<(), Box<dyn std::error::Error>> {
    let request = format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let std_stream = TcpStream::connect(addr)?;
    std_stream.set_nodelay(true)?;
    std_stream.set_nonblocking(true)?;
    let mut stream = mio::net::TcpStream::from_std(std_stream);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut stream, Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(8);
    let mut buf = vec![0u8; 4096];
    for _ in 0..commands {
        (&stream).write_all(&request)?;
        let deadline = Instant::now() + WAIT;
        let mut got = 0;
        'response: loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the device did not answer in time".into());
            }
            poll.poll(&mut events, Some(left))?;
            loop {
                match (&stream).read(&mut buf[got..]) {
                    Ok(0) => return Err("the device closed the connection".into()),
                    Ok(n) => {
                        got += n;
                        if got >= RESPONSE.len() {
                            break 'response;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

fn finwatch_loop(addr: SocketAddr, commands: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = Client::builder().request_timeout(WAIT).build()?;
    let request = Request::get(&format!("http://{addr}{PATH}")).build()?;
    let mut response = Response::default();
    for _ in 0..commands {
        client.execute(&request, &mut response)?;
        if response.body().len() != BODY_LEN {
            return Err(format!("a body of {} bytes", response.body().len()).into());
        }
    }
    let s = client.stats();
    if s.connects != 1 {
        return Err(format!("{} connections instead of one", s.connects).into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "finwatch".into());
    let commands: usize = match args.next() {
        Some(n) => n.parse().map_err(|_| format!("not a number of commands: {n}"))?,
        None => 30_000,
    };
    let device = EpollDevice::start(RESPONSE, false)?;
    let start = Instant::now();
    match which.as_str() {
        "finwatch" => finwatch_loop(device.addr, commands)?,
        "mio" => mio_loop(device.addr, commands)?,
        other => return Err(format!("unknown client {other:?}: finwatch or mio").into()),
    }
    let per = start.elapsed() / commands.max(1) as u32;
    println!("{which}: {commands} commands, {per:.1?} per command (wall clock, for orientation only)");
    Ok(())
}
