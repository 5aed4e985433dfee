//! Scale benchmark: one client on one thread commanding many devices through the non-blocking
//! API (`Client::submit` + `Client::poll`), against simulated devices on loopback.
//!
//! `cargo bench --bench scale -- [--markdown] [--secs S] [--devices 10,100,1000] [--loads all,w1,w8,close]`
//!
//! A device is a distinct `host:port` (finwatch pools per `host:port`): listeners on 127.0.0.1 …
//! 127.0.0.50 (all of 127/8 is loopback on Linux) on kernel-chosen ports, one listener per
//! device, all served by ONE server thread (mio, edge-triggered, non-blocking) that answers every
//! request with a small `200 OK`, keeping the connection alive (or, in the `close` scenario,
//! with `Connection: close`, as many embedded servers do).
//!
//! Loads (`--loads`), each at 10, 100, 1,000 and 2,000 devices (`--devices`; capped by the
//! open-file limit, with a message saying so):
//! - `all`: one command in flight per device, re-sent to the same device when it completes (a
//!   control loop polling every device as fast as it answers). Latency grows with the device
//!   count here by Little's law (in flight / throughput); the per-command CPU must not.
//! - `W=1`: one command in flight, sent round-robin over all devices: the round trip of a lone
//!   command (including the client thread's wake-up from the poller).
//! - `W=8`: at most 8 commands in flight, sent round-robin over all devices: the same work per
//!   command at every device count, so latency and CPU per command should both stay flat.
//! - `close W=8`: as `W=8`, but every response says `Connection: close` (a new connection per
//!   command, which finwatch opens ahead as a warm spare).
//!
//! CPU per command is the client thread's own CPU time (`/proc/thread-self/schedstat`, in ns;
//! the server thread is measured separately, since both share this process), divided by the
//! commands completed. Each load runs a warm-up (all connections established, then 0.3 s of
//! traffic) and then 5 measured slices; the table shows the median slice and the [min–max]
//! range, since other processes on a shared machine steal time in bursts.
//!
//! Allocations per command are counted on the client thread inside `submit` and `poll` only;
//! `submit` takes the `Request` by value, so the prepared request is cloned for each command,
//! outside the count (its cost is printed separately).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use finwatch::{Client, Completion, Request};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

// ---- allocation counting (shared with tests/zero_alloc.rs): only the client thread counts ----

#[path = "support/proc_stat.rs"]
mod proc_stat;

use proc_stat::machine_busy_ticks;

#[path = "../tests/support/alloc_count.rs"]
mod alloc_count;

use alloc_count::{allocs, counting};

// ---- CPU time ----

/// CPU time (ns) of a thread, from `schedstat` (ns resolution); falls back to `stat`'s
/// utime + stime where schedstat is missing.
fn thread_cpu_ns(task_dir: &str) -> u64 {
    if let Ok(s) = std::fs::read_to_string(format!("{task_dir}/schedstat"))
        && let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok())
    {
        return ns;
    }
    let (user, sys) = thread_user_sys_ns(task_dir);
    user + sys
}

/// User and system CPU time (ns) of a thread, from `stat` (clock ticks, taken as 100 Hz, the
/// USER_HZ of every Linux ABI in use): coarse, so only summed over a whole load.
fn thread_user_sys_ns(task_dir: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("{task_dir}/stat")).unwrap_or_default();
    // The fields after the command name (which may contain spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    // utime and stime are fields 14 and 15: indices 11 and 12 from field 3.
    let tick = 10_000_000;
    (f.get(11).copied().unwrap_or(0) * tick, f.get(12).copied().unwrap_or(0) * tick)
}

fn my_task_dir() -> String {
    // "/proc/thread-self" links to "<pid>/task/<tid>".
    match std::fs::read_link("/proc/thread-self") {
        Ok(p) => format!("/proc/{}", p.display()),
        Err(_) => "/proc/thread-self".to_string(),
    }
}

// ---- the simulated devices: one mio thread ----

const WAKE: Token = Token(usize::MAX);
/// Tokens from here on are connections, below are listeners: half the token space each (on
/// 32-bit targets too, where `1 << 32` does not fit a `usize`); `WAKE` is neither.
const CONN_BASE: usize = usize::MAX / 2 + 1;
const BODY: &str = r#"{"ioId":25602,"on":true}"#;
const RESPONSE_KEEP_ALIVE: &[u8] = concat!(
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 24\r\n\r\n",
    r#"{"ioId":25602,"value":1}"#
)
.as_bytes();
const RESPONSE_CLOSE: &[u8] = concat!(
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 24\r\n\r\n",
    r#"{"ioId":25602,"value":1}"#
)
.as_bytes();

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    KeepAlive,
    Close,
}

struct ServerConn {
    stream: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    served: u32,
    eof: bool,
}

struct Devices {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    waker: Waker,
    task_dir: String,
    thread: Option<JoinHandle<()>>,
}

impl Devices {
    fn start(devices: usize, mode: Mode) -> io::Result<Devices> {
        let poll = Poll::new()?;
        let ips = devices.clamp(1, 50);
        let mut listeners = Vec::with_capacity(devices);
        let mut addrs = Vec::with_capacity(devices);
        for i in 0..devices {
            let ip = Ipv4Addr::new(127, 0, 0, 1 + (i % ips) as u8);
            let mut l = TcpListener::bind(SocketAddr::from((ip, 0)))?;
            poll.registry().register(&mut l, Token(i), Interest::READABLE)?;
            addrs.push(l.local_addr()?);
            listeners.push(l);
        }
        let waker = Waker::new(poll.registry(), WAKE)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        let thread = thread::Builder::new().name("devices".into()).spawn(move || {
            let _ = tx.send(my_task_dir());
            serve(poll, listeners, mode, &stop2);
        })?;
        let task_dir = rx.recv().map_err(|_| io::Error::other("device thread died"))?;
        Ok(Devices { addrs, stop, waker, task_dir, thread: Some(thread) })
    }

    fn cpu_ns(&self) -> u64 {
        thread_cpu_ns(&self.task_dir)
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut poll: Poll, listeners: Vec<TcpListener>, mode: Mode, stop: &AtomicBool) {
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<ServerConn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut scratch = vec![0u8; 16 * 1024];
    let response = match mode {
        Mode::KeepAlive => RESPONSE_KEEP_ALIVE,
        Mode::Close => RESPONSE_CLOSE,
    };
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("device poll failed: {e}");
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if ev.token() == WAKE {
                continue;
            }
            if t < CONN_BASE {
                // Edge-triggered: accept until WouldBlock.
                loop {
                    match listeners[t].accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let slot = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            let interest = Interest::READABLE | Interest::WRITABLE;
                            if poll
                                .registry()
                                .register(&mut stream, Token(CONN_BASE + slot), interest)
                                .is_err()
                            {
                                free.push(slot);
                                continue;
                            }
                            conns[slot] = Some(ServerConn {
                                stream,
                                inbuf: Vec::with_capacity(1024),
                                out: Vec::with_capacity(1024),
                                out_pos: 0,
                                served: 0,
                                eof: false,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break, // WouldBlock, or out of fds: the next event retries
                    }
                }
                continue;
            }
            let slot = t - CONN_BASE;
            let Some(c) = conns.get_mut(slot).and_then(Option::as_mut) else { continue };
            let keep = handle(c, &mut scratch, response, mode);
            if !keep {
                if let Some(mut c) = conns[slot].take() {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
                free.push(slot);
            }
        }
    }
}

/// Reads, answers and flushes one device connection; `false` when it is to be closed.
fn handle(c: &mut ServerConn, scratch: &mut [u8], response: &[u8], mode: Mode) -> bool {
    loop {
        match c.stream.read(scratch) {
            Ok(0) => {
                c.eof = true;
                break;
            }
            Ok(n) => c.inbuf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    let mut used = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = req.parse(&c.inbuf[used..]) else { break };
        let len = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if c.inbuf.len() - used < head + len {
            break;
        }
        used += head + len;
        c.out.extend_from_slice(response);
        c.served += 1;
        if mode == Mode::Close {
            break;
        }
    }
    c.inbuf.drain(..used);
    while c.out_pos < c.out.len() {
        match c.stream.write(&c.out[c.out_pos..]) {
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    c.out.clear();
    c.out_pos = 0;
    !(c.eof || (mode == Mode::Close && c.served > 0))
}

// ---- the client side ----

#[derive(Clone, Copy, Debug)]
struct Load {
    devices: usize,
    /// Commands in flight; `None`: one per device, re-sent to the device that answered.
    window: Option<usize>,
    mode: Mode,
}

impl Load {
    fn name(&self) -> String {
        let w = self.window.map_or("all".to_string(), |w| format!("W={w}"));
        match self.mode {
            Mode::KeepAlive => w,
            Mode::Close => format!("close {w}"),
        }
    }
}

struct Slice {
    cmds: u64,
    secs: f64,
    client_ns: u64,
    server_ns: u64,
    allocs: u64,
}

/// The outstanding commands, by request id: a table indexed by id modulo its size (ids count up,
/// and each command is short-lived), with a map for the rare id whose slot is still taken.
struct InFlight {
    slots: Vec<(u64, u32, Instant)>,
    mask: u64,
    overflow: HashMap<u64, (u32, Instant)>,
}

impl InFlight {
    fn new(window: usize) -> InFlight {
        let n = (window * 16).next_power_of_two().max(4096);
        InFlight {
            slots: vec![(0, 0, Instant::now()); n],
            mask: n as u64 - 1,
            overflow: HashMap::with_capacity(64),
        }
    }

    fn put(&mut self, id: u64, dev: usize, at: Instant) {
        let s = &mut self.slots[(id & self.mask) as usize];
        if s.0 == 0 {
            *s = (id, dev as u32, at);
        } else {
            self.overflow.insert(id, (dev as u32, at));
        }
    }

    fn take(&mut self, id: u64) -> Option<(usize, Instant)> {
        let s = &mut self.slots[(id & self.mask) as usize];
        if s.0 == id {
            s.0 = 0;
            return Some((s.1 as usize, s.2));
        }
        self.overflow.remove(&id).map(|(d, at)| (d as usize, at))
    }
}

struct Runner<'a> {
    client: Client,
    reqs: &'a [Request],
    load: Load,
    inflight: InFlight,
    out: Vec<Completion>,
    /// Devices whose command completed in the last poll.
    answered: Vec<usize>,
    /// Next device, round-robin (fixed-window loads).
    cursor: usize,
    done: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Runner<'_> {
    fn submit(&mut self, dev: usize) {
        let req = self.reqs[dev].clone(); // not counted: submit() takes the request by value
        counting(true);
        let id = self.client.submit(req);
        counting(false);
        self.inflight.put(id.get(), dev, Instant::now());
    }

    /// Waits for at least one completion; records latencies (submit to completion) in `lat`.
    fn poll(&mut self, mut lat: Option<&mut Vec<u32>>) {
        counting(true);
        let r = self.client.poll(None, &mut self.out);
        counting(false);
        r.expect("poll failed");
        let now = Instant::now();
        for c in self.out.drain(..) {
            let Some((dev, at)) = self.inflight.take(c.id.get()) else {
                panic!("completion for an unknown request {}", c.id.get());
            };
            match &c.result {
                Ok(resp) if resp.status() == 200 => {}
                Ok(resp) => {
                    self.errors += 1;
                    self.first_error.get_or_insert_with(|| format!("status {}", resp.status()));
                }
                Err(e) => {
                    self.errors += 1;
                    self.first_error.get_or_insert_with(|| e.to_string());
                }
            }
            // The response (its buffers) is dropped here, outside the count.
            if let Some(l) = lat.as_deref_mut()
                && l.len() < l.capacity()
            {
                l.push((now - at).as_nanos().min(u32::MAX as u128) as u32);
            }
            self.answered.push(dev);
            self.done += 1;
        }
    }

    /// One turn of the control loop: collect completions, send the next commands.
    fn step(&mut self, lat: Option<&mut Vec<u32>>) {
        self.poll(lat);
        for i in 0..self.answered.len() {
            let dev = match self.load.window {
                None => self.answered[i],
                Some(_) => {
                    let d = self.cursor;
                    self.cursor = (d + 1) % self.load.devices;
                    d
                }
            };
            self.submit(dev);
        }
        self.answered.clear();
    }
}

struct Figures {
    load: Load,
    slices: Vec<Slice>,
    /// p50, p99, p99.9, max (µs).
    lat_us: [f64; 4],
    errors: u64,
    first_error: Option<String>,
    connects: u64,
    /// The client thread's user and system CPU time over all slices (ns).
    user_sys_ns: (u64, u64),
    /// CPU used by other processes during the slices, in % of the machine (all cores).
    others_pct: f64,
}

fn run(load: Load, slices: usize, slice: Duration, lat: &mut Vec<u32>) -> io::Result<Figures> {
    let devs = Devices::start(load.devices, load.mode)?;
    let reqs: Vec<Request> = devs
        .addrs
        .iter()
        .map(|a| Request::put(&format!("http://{a}/unico/v1/interface/io"), BODY).build().expect("request"))
        .collect();
    let window = load.window.unwrap_or(load.devices).min(load.devices);
    let mut r = Runner {
        client: Client::builder().build().map_err(io::Error::other)?,
        reqs: &reqs,
        load,
        inflight: InFlight::new(load.devices),
        out: Vec::with_capacity(4096),
        answered: Vec::with_capacity(4096),
        cursor: window % load.devices,
        done: 0,
        errors: 0,
        first_error: None,
    };

    // Warm-up 1: a command to every device at once, so that every connection is established.
    for d in 0..load.devices {
        r.submit(d);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.client.pending() > 0 {
        assert!(Instant::now() < deadline, "warm-up did not complete");
        r.poll(None);
    }
    r.answered.clear();

    // Warm-up 2: the loop itself, `window` in flight, each completion sends the next command.
    for d in 0..window {
        r.submit(d);
    }
    let warm_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < warm_until {
        r.step(None);
    }

    let before = r.client.stats();
    let us0 = thread_user_sys_ns(SELF);
    let (busy0, mine0, t0) = (machine_busy_ticks(), process_ticks(), Instant::now());
    lat.clear();
    let mut out = Vec::with_capacity(slices);
    for _ in 0..slices {
        let (t0, c0, s0, d0) = (Instant::now(), thread_cpu_ns(SELF), devs.cpu_ns(), r.done);
        alloc_count::reset();
        let end = t0 + slice;
        while Instant::now() < end {
            r.step(Some(lat));
        }
        out.push(Slice {
            cmds: r.done - d0,
            secs: t0.elapsed().as_secs_f64(),
            client_ns: thread_cpu_ns(SELF) - c0,
            server_ns: devs.cpu_ns() - s0,
            allocs: allocs(),
        });
    }
    let after = r.client.stats();
    let us1 = thread_user_sys_ns(SELF);
    let others =
        machine_busy_ticks().saturating_sub(busy0) as f64 - process_ticks().saturating_sub(mine0) as f64;
    let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let others_pct = (others / (t0.elapsed().as_secs_f64() * 100.0 * cores) * 100.0).max(0.0);

    // Drain what is still in flight, so the devices are idle when they stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.client.pending() > 0 && Instant::now() < deadline {
        r.poll(None);
    }
    let (errors, first_error) = (r.errors, r.first_error.take());
    drop(r);
    drop(devs);

    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1e3
    };
    Ok(Figures {
        load,
        slices: out,
        lat_us: [pct(0.50), pct(0.99), pct(0.999), pct(1.0)],
        errors,
        first_error,
        connects: after.connects - before.connects,
        user_sys_ns: (us1.0 - us0.0, us1.1 - us0.1),
        others_pct,
    })
}

const SELF: &str = "/proc/thread-self";

// ---- limits, machine, output ----

/// The soft and hard limits on open files.
fn fd_limits() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    let mut f = line["Max open files".len()..].split_whitespace();
    let parse = |v: Option<&str>| v.map(|v| if v == "unlimited" { u64::MAX } else { v.parse().unwrap_or(0) });
    Some((parse(f.next())?, parse(f.next())?))
}

/// This process's user + system clock ticks (all threads), from `/proc/self/stat`.
fn process_ticks() -> u64 {
    let (user, sys) = thread_user_sys_ns("/proc/self");
    (user + sys) / 10_000_000
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn table(rows: &[Figures], markdown: bool) {
    let header = [
        "devices",
        "load",
        "cmds",
        "cmd/s [min-max]",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "client CPU us/cmd [min-max]",
        "client user+sys us/cmd",
        "devices CPU us/cmd",
        "allocs/cmd",
        "others %CPU",
        "connects",
    ];
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|f| {
            let cmds: u64 = f.slices.iter().map(|s| s.cmds).sum();
            let rate = median(f.slices.iter().map(|s| s.cmds as f64 / s.secs).collect());
            let cpu =
                median(f.slices.iter().map(|s| s.client_ns as f64 / 1e3 / s.cmds.max(1) as f64).collect());
            let srv =
                median(f.slices.iter().map(|s| s.server_ns as f64 / 1e3 / s.cmds.max(1) as f64).collect());
            let allocs = f.slices.iter().map(|s| s.allocs).sum::<u64>() as f64 / cmds.max(1) as f64;
            vec![
                f.load.devices.to_string(),
                f.load.name(),
                cmds.to_string(),
                format!("{:.0} [{:.0}-{:.0}]", rate.0, rate.1, rate.2),
                format!("{:.0}", f.lat_us[0]),
                format!("{:.0}", f.lat_us[1]),
                format!("{:.0}", f.lat_us[2]),
                format!("{:.0}", f.lat_us[3]),
                format!("{:.2} [{:.2}-{:.2}]", cpu.0, cpu.1, cpu.2),
                format!(
                    "{:.1}+{:.1}",
                    f.user_sys_ns.0 as f64 / 1e3 / cmds.max(1) as f64,
                    f.user_sys_ns.1 as f64 / 1e3 / cmds.max(1) as f64
                ),
                format!("{:.2}", srv.0),
                format!("{allocs:.2}"),
                format!("{:.0}", f.others_pct),
                f.connects.to_string(),
            ]
        })
        .collect();
    if markdown {
        println!("| {} |", header.join(" | "));
        println!("|{}", ":---|".repeat(2) + &"---:|".repeat(header.len() - 2));
        for l in &lines {
            println!("| {} |", l.join(" | "));
        }
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.len());
        }
    }
    let print = |cells: &[String]| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, &w))| if i == 1 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        println!("{}", s.join("  "));
    };
    print(&header.map(String::from));
    println!("{}", "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    for l in &lines {
        print(l);
    }
}

/// Time and allocations of cloning (and dropping) one prepared request: the price of
/// `submit(Request)` taking it by value, paid by the caller outside the counts above.
fn clone_cost() -> (f64, f64) {
    let req = Request::put("http://127.0.0.1:40000/unico/v1/interface/io", BODY).build().expect("request");
    let n = 100_000;
    alloc_count::reset();
    counting(true);
    let t = Instant::now();
    for _ in 0..n {
        drop(std::hint::black_box(req.clone()));
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    counting(false);
    (ns, allocs() as f64 / n as f64)
}

fn main() {
    let mut markdown = false;
    let mut secs = 1.5f64;
    let mut counts: Vec<usize> = vec![10, 100, 1000, 2000];
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--markdown" => markdown = true,
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()).expect("--secs takes a number"),
            "--devices" => {
                counts = args
                    .next()
                    .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                    .expect("--devices takes a list, e.g. 10,100,1000")
            }
            "--loads" => only = args.next(),
            "--help" | "-h" => {
                println!(
                    "usage: cargo bench --bench scale -- [--markdown] [--secs S] [--devices 10,100,1000] \
                     [--loads all,w1,w8,close]"
                );
                return;
            }
            _ => {} // `cargo bench` passes `--bench`
        }
    }

    // Per device: its listener, the device's end and the client's end of a connection; with
    // `Connection: close`, a warm spare doubles both ends.
    let (soft, hard) = fd_limits().unwrap_or((1024, 1024));
    let cap = |per_device: u64| (soft.saturating_sub(64) / per_device) as usize;
    let (cap_keep, cap_close) = (cap(3), cap(5));
    let max = counts.iter().copied().max().unwrap_or(0);
    if max > cap_keep || max > cap_close {
        println!(
            "open-file limit {soft} (hard {hard}) allows {cap_keep} devices (keep-alive), {cap_close} \
             (close); larger counts are capped. Raise it with `ulimit -n {hard}` (or `prlimit --nofile=N \
             cargo bench --bench scale`)."
        );
    }

    let slices = 5;
    let slice = Duration::from_secs_f64(secs / slices as f64);
    let mut loads = Vec::new();
    let all = [
        ("all", None, Mode::KeepAlive),
        ("w1", Some(1), Mode::KeepAlive),
        ("w8", Some(8), Mode::KeepAlive),
        ("close", Some(8), Mode::Close),
    ];
    for (key, window, mode) in all {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|k| k == key)) {
            continue;
        }
        let cap = if mode == Mode::Close { cap_close } else { cap_keep };
        let mut seen = Vec::new();
        for &n in &counts {
            let n = n.min(cap).max(1);
            if !seen.contains(&n) {
                seen.push(n);
                loads.push(Load { devices: n, window, mode });
            }
        }
    }

    let started = Instant::now();
    let load_before = loadavg();
    let mut lat = Vec::with_capacity(4 << 20);
    let mut rows = Vec::new();
    for load in loads {
        eprintln!("running {} devices, {} ...", load.devices, load.name());
        match run(load, slices, slice, &mut lat) {
            Ok(f) => rows.push(f),
            Err(e) => eprintln!("  failed: {e}"),
        }
    }
    let (clone_ns, clone_allocs) = clone_cost();

    println!(
        "finwatch scale: one client thread, non-blocking submit/poll, {slices} slices of {:.2} s per \
         load after warm-up; one device thread (mio) serving every listener",
        slice.as_secs_f64()
    );
    println!(
        "load average before: {load_before}, after: {}; nproc {}",
        loadavg(),
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    table(&rows, markdown);
    for f in &rows {
        if f.errors > 0 {
            println!(
                "{} devices {}: {} errors, first: {}",
                f.load.devices,
                f.load.name(),
                f.errors,
                f.first_error.as_deref().unwrap_or("?")
            );
        }
        if f.load.mode == Mode::KeepAlive && f.connects > 0 {
            println!(
                "{} devices {}: {} connects during the measurement (expected 0)",
                f.load.devices,
                f.load.name(),
                f.connects
            );
        }
    }
    println!(
        "not in the figures: cloning + dropping the prepared Request for submit(): {clone_ns:.0} ns, \
         {clone_allocs:.0} allocs per command"
    );
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
