//! The simulated kernel: a deterministic [`Kernel`] for tests and fuzzing.
//!
//! - `tcp.rs`: one connection as the client's socket sees it (state enum, one transition).
//! - `device.rs`: scripted devices that parse requests and keep a ledger of what they acted on.
//! - `scenario.rs`: a scenario (client config, kernel options, device script, commands) decoded
//!   from arbitrary bytes, and encoded back for the committed seeds.
//! - `harness.rs`: drives `Engine` + `Driver<SimKernel>` as `Client` does and checks the
//!   invariants after every turn.
//!
//! Time is virtual: one real `Instant` taken at creation, plus an offset in nanoseconds. Every
//! syscall costs [`SYSCALL`] and every clock read [`CLOCK_READ`], so a loop that spins until
//! `now >= stop` ends; a `write` costs its copy too ([`WRITE_COPY`] bytes per nanosecond), so a
//! flush loop writing a large body chunk after chunk spans virtual time; `wait` jumps the clock
//! to the next scheduled event or its timeout. The network is a queue of events in virtual time
//! (arrivals after the latency), processed at the start of *every* call, not only `wait`, so what
//! a syscall sees is what had arrived by then: a device's answer and its RST that arrive while
//! the driver is in its flush loop make its next `write` fail (`ECONNRESET`, then `EPIPE`) with
//! the answer unread in the receive queue (readable before the error on Linux; discarded with
//! [`SimOptions::discard_on_rst`]). Readiness is edge-triggered, as with epoll: an arrival, in
//! whichever call it is processed, queues the socket once on a ready list; `wait` re-checks a
//! queued socket's condition, reports it if it still holds, and takes it off.
//!
//! Nothing here blocks, sleeps, reads the wall clock (beyond the epoch) or starts a thread.

mod device;
pub mod harness;
mod scenario;
mod tcp;
mod wire;

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use device::{Act, AfterResponse, Cut, Ledger, Listen, Script};
pub use scenario::{Command, Scenario};

use super::{Caps, Kernel, Notify, OpenOpts, Ready, Waited};
use device::{Device, ns};
use tcp::{Input, Sock, State};
use wire::Mark;

/// Virtual nanoseconds since the kernel's epoch.
pub(crate) type Ns = u64;

/// What one syscall costs in virtual time (an `epoll_wait(0)` or a `recv` on Linux: 0.2–0.5 µs).
const SYSCALL: Ns = 500;
/// What one clock read costs: the busy-poll spin reads the clock without a syscall at times.
const CLOCK_READ: Ns = 20;
/// What a `write` copies per nanosecond (2 GB/s, a loopback-like send path): a 64 KiB write
/// takes 32 µs of virtual time, and what arrives meanwhile is seen by the next call.
const WRITE_COPY: u64 = 2;
/// A run that makes more syscalls than this is a loop that does not wait: reported (it panics)
/// instead of hanging the test. A normal scenario makes a few thousand.
pub(crate) const MAX_SYSCALLS: u64 = 500_000;
/// The same for clock reads, which a spin can make without a syscall.
const MAX_CLOCK_READS: u64 = 5_000_000;
/// A wait longer than this with nothing scheduled is a wait for ever.
const FOREVER: Ns = 3600 * 1_000_000_000;

/// The address of the simulated device (an IP literal: the resolver is bypassed).
pub const DEVICE: &str = "10.0.0.1:80";

/// A device timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    Accept,
    Respond,
    Idle,
    /// The close of [`Script::close_after`].
    Quit,
    /// The device's application reads the next chunk of its receive queue.
    Read,
}

/// A complete response the device sent (invariant (h)): its command (`X-Cmd`), status, and
/// exchange (`X-Exchange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    pub cmd: u64,
    pub status: u16,
    pub exchange: u32,
}

/// A complete response that reached the client's receive queue (invariant (h)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub answer: Answer,
    /// The simulated connection, and when its last byte arrived.
    pub conn: usize,
    pub at: Ns,
    /// Its end in the socket's received bytes (`Sock::rx_in` after it).
    pub end: u64,
    /// A RST threw it away, unread or partly read ([`SimOptions::discard_on_rst`]).
    pub discarded: bool,
}

/// Something that happens at a virtual time.
#[derive(Debug)]
pub(crate) enum Ev {
    /// A connect set for later (`Kernel::open_at`) starts, on the kernel's side, whether or
    /// not the driver is running.
    TimedConnect {
        conn: usize,
    },
    /// The client's SYN reaches the device.
    Syn {
        conn: usize,
    },
    /// The SYN-ACK reaches the client.
    Connected {
        conn: usize,
    },
    /// The connect fails at the client (ICMP unreachable).
    ConnectFailed {
        conn: usize,
        kind: io::ErrorKind,
    },
    /// The client's bytes reach the device.
    ToDevice {
        conn: usize,
        bytes: Vec<u8>,
    },
    /// The client's close (FIN or RST) reaches the device.
    ClientClosed {
        conn: usize,
    },
    /// The device's bytes reach the client (`answer`: they end a complete response).
    ToClient {
        conn: usize,
        bytes: Vec<u8>,
        answer: Option<Answer>,
    },
    /// The device's FIN reaches the client.
    ClientFin {
        conn: usize,
    },
    /// The device's RST (or a RST to a SYN) reaches the client.
    ClientRst {
        conn: usize,
    },
    /// The device consumed `n` bytes: the client's send buffer frees them.
    Ack {
        conn: usize,
        n: usize,
    },
    Timer {
        conn: usize,
        epoch: u32,
        timer: Timer,
    },
    Reboot,
}

/// The network: the clock and the queue of events.
#[derive(Debug)]
pub(crate) struct Net {
    pub now: Ns,
    latency: Ns,
    queue: BTreeMap<(Ns, u64), Ev>,
    seq: u64,
}

impl Net {
    /// Schedules `ev` at `t`; events at the same time keep the order they were scheduled in.
    pub(crate) fn at(&mut self, t: Ns, ev: Ev) {
        self.seq += 1;
        self.queue.insert((t, self.seq), ev);
    }

    /// Schedules `ev` one network latency from now.
    pub(crate) fn after_latency(&mut self, ev: Ev) {
        self.at(self.now.saturating_add(self.latency), ev);
    }
}

/// The granularity of a receive timeout (`SO_RCVTIMEO` counts jiffies; HZ=100 is the coarsest).
const RCVTIMEO_TICK: Ns = 10_000_000;

/// The kernel's options, per scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOptions {
    /// `Caps::zero_wait_is_exact` (Linux epoll: true).
    pub zero_wait_is_exact: bool,
    /// `Caps::writable_means_connected` (Linux: true).
    pub writable_means_connected: bool,
    /// `Caps::read_wait` (Linux: true). The fuzz scenarios tie it to `zero_wait_is_exact`:
    /// a Linux-like kernel has both, another neither.
    pub read_wait: bool,
    /// Events per `wait` (1–2 exercise the driver's `full` path).
    pub events: usize,
    /// The send buffer: `write` accepts at most this many unconsumed bytes.
    pub sndbuf: usize,
    /// One-way latency.
    pub latency: Duration,
    /// A RST discards received, unread bytes (Windows); otherwise they are read first (Linux).
    pub discard_on_rst: bool,
    /// `open` fails with `EMFILE` while this many sockets are open.
    pub fd_limit: Option<usize>,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            zero_wait_is_exact: true,
            writable_means_connected: true,
            read_wait: true,
            events: 256,
            sndbuf: 64 * 1024,
            latency: Duration::from_micros(100),
            discard_on_rst: false,
            fd_limit: None,
        }
    }
}

/// The first byte of a request written on a socket (every attempt of every command), in the
/// order of the writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The simulated connection.
    pub sock: usize,
    /// The command (`None` while, or if for ever, its request line is not out).
    pub cmd: Option<u64>,
    /// Virtual time.
    pub at: Ns,
    /// The harness's turn it happened in.
    pub turn: u64,
}

/// A client socket of the simulated kernel (an index into its table; never reused).
#[derive(Debug)]
pub struct SimStream(usize);

/// The simulated kernel: virtual clock, TCP model, one scripted device.
#[derive(Debug)]
pub struct SimKernel {
    epoch: Instant,
    opts: SimOptions,
    net: Net,
    /// Clock reads since the last call that folds them into `net.now`.
    unfolded: Cell<Ns>,
    clock_reads: Cell<u64>,
    socks: Vec<Sock>,
    ready: VecDeque<usize>,
    pub(crate) device: Device,
    device_addr: SocketAddr,
    /// Counters the harness checks.
    pub(crate) syscalls: u64,
    pub(crate) opens: u64,
    /// Opens with a connect set for later ([`Kernel::open_at`]).
    pub(crate) timed_opens: u64,
    /// `read_wait` calls (the driver's waits in one socket's `recv`).
    pub(crate) read_waits: u64,
    live: usize,
    /// Bumped whenever something moves: bytes, connects, closes, arrivals.
    pub(crate) progress: u64,
    /// Waits that moved the clock to an event or a timeout.
    pub(crate) jumps: u64,
    /// A `wait` found nothing scheduled and no timeout: the real loop would sleep for ever.
    pub(crate) waited_forever: bool,
    /// Invariants (a) and (a2) broken in `write`: which, and what happened.
    pub(crate) violations: Vec<(&'static str, String)>,
    /// Every request start, in write order (invariant (g), submission order).
    pub(crate) starts: Vec<Start>,
    /// Every complete response that reached a receive queue (invariant (h)).
    pub(crate) delivered: Vec<Delivered>,
    /// Writes that failed (`ECONNRESET`, `EPIPE`) while the socket held received bytes unread:
    /// the path of the driver's read-before-reporting in `flush`.
    pub(crate) write_errors_with_unread: u64,
    /// Turns of the harness so far, and the syscall count when the current one began.
    turns: u64,
    turn_mark: u64,
    /// The number of the driver's last `wait` call.
    last_wait: u64,
}

impl SimKernel {
    /// A kernel with one device at [`DEVICE`] running `script`.
    pub(crate) fn new(opts: SimOptions, script: Script) -> SimKernel {
        let mut net = Net { now: 0, latency: ns(opts.latency), queue: BTreeMap::new(), seq: 0 };
        if let Some(t) = script.reboot_at {
            net.at(ns(t), Ev::Reboot);
        }
        SimKernel {
            epoch: Instant::now(),
            opts,
            net,
            unfolded: Cell::new(0),
            clock_reads: Cell::new(0),
            socks: Vec::new(),
            ready: VecDeque::new(),
            device: Device::new(script),
            device_addr: DEVICE.parse().expect("a socket address"),
            syscalls: 0,
            opens: 0,
            timed_opens: 0,
            read_waits: 0,
            live: 0,
            progress: 0,
            jumps: 0,
            waited_forever: false,
            violations: Vec::new(),
            starts: Vec::new(),
            delivered: Vec::new(),
            write_errors_with_unread: 0,
            turns: 0,
            turn_mark: 0,
            last_wait: 0,
        }
    }

    /// Virtual nanoseconds since the epoch.
    pub(crate) fn virtual_ns(&self) -> Ns {
        self.net.now + self.unfolded.get()
    }

    /// The instant `t` virtual nanoseconds after the epoch.
    pub(crate) fn instant(&self, t: Ns) -> Instant {
        self.epoch + Duration::from_nanos(t)
    }

    /// The harness calls into the driver (`turn`): what arrived before counts as arrived before
    /// anything the driver does in it.
    pub(crate) fn turn_started(&mut self) {
        self.fold();
        self.turns += 1;
        self.turn_mark = self.syscalls;
    }

    /// Lets the network run to `t` without the driver (what was in flight arrives).
    pub(crate) fn settle(&mut self, t: Ns) {
        self.fold();
        self.deliver(t);
        self.net.now = self.net.now.max(t);
    }

    /// Start of every call: the clock reads since the last one, the call's own cost, and what
    /// arrived meanwhile.
    fn syscall(&mut self) {
        self.syscalls += 1;
        assert!(
            self.syscalls <= MAX_SYSCALLS,
            "invariant (f) violated: more than {MAX_SYSCALLS} syscalls at t={}us: the loop does not wait",
            self.net.now / 1000
        );
        self.fold();
        self.net.now += SYSCALL;
        self.deliver(self.net.now);
    }

    fn fold(&mut self) {
        self.net.now += self.unfolded.replace(0);
    }

    /// Processes every event scheduled at or before `t`, in order, each at its own time (the
    /// device answers a byte that arrived during a long write when it arrived, not when the
    /// client's next call looks); the clock ends at the later of `t`'s caller's and the last.
    fn deliver(&mut self, t: Ns) {
        let base = self.net.now;
        while let Some(entry) = self.net.queue.first_entry() {
            if entry.key().0 > t {
                break;
            }
            let ((at, _), ev) = entry.remove_entry();
            self.net.now = at;
            self.apply(ev);
        }
        self.net.now = self.net.now.max(base);
    }

    fn apply(&mut self, ev: Ev) {
        let discard = self.opts.discard_on_rst;
        let now = self.net.now;
        self.progress += 1;
        let stamp = self.syscalls;
        let to_client = |k: &mut SimKernel, conn: usize, input: Input| {
            let s = &mut k.socks[conn];
            s.transition(conn, input, discard, now);
            if matches!(s.state, State::PeerFin | State::Reset | State::Failed) && s.closed_at.is_none() {
                s.closed_at = Some(stamp);
            }
            k.queue(conn);
        };
        match ev {
            Ev::TimedConnect { conn } => self.start(conn),
            Ev::Syn { conn } => self.device.on_syn(&mut self.net, conn),
            Ev::Connected { conn } => to_client(self, conn, Input::Connected),
            Ev::ConnectFailed { conn, kind } => to_client(self, conn, Input::ConnectFailed(kind)),
            Ev::ClientFin { conn } => to_client(self, conn, Input::Fin),
            Ev::ClientRst { conn } => {
                let s = &self.socks[conn];
                if discard && matches!(s.state, State::Established | State::PeerFin) {
                    let read = s.rx_out;
                    for d in self.delivered.iter_mut().filter(|d| d.conn == conn && d.end > read) {
                        d.discarded = true;
                    }
                }
                to_client(self, conn, Input::Rst)
            }
            Ev::ToDevice { conn, bytes } => self.device.on_bytes(&mut self.net, conn, &bytes),
            Ev::ClientClosed { conn } => self.device.on_client_close(conn),
            Ev::ToClient { conn, bytes, answer } => {
                let s = &mut self.socks[conn];
                if matches!(s.state, State::Established) {
                    s.rx_in += bytes.len() as u64;
                    s.rx.extend(bytes);
                    if let Some(answer) = answer {
                        let end = s.rx_in;
                        self.delivered.push(Delivered { answer, conn, at: now, end, discarded: false });
                    }
                    self.queue(conn);
                } else if s.state == State::Closed {
                    // The client's kernel answers data for a closed socket with RST.
                    self.device.on_client_close(conn);
                }
            }
            Ev::Ack { conn, n } => {
                let s = &mut self.socks[conn];
                s.unacked = s.unacked.saturating_sub(n);
                self.queue(conn);
            }
            Ev::Timer { conn, epoch, timer } => self.device.on_timer(&mut self.net, conn, epoch, timer),
            Ev::Reboot => self.device.reboot(&mut self.net),
        }
    }

    /// An arrival on `conn`: on the ready list once (edge-triggered).
    fn queue(&mut self, conn: usize) {
        let s = &mut self.socks[conn];
        if !s.queued && s.state != State::Closed {
            s.queued = true;
            self.ready.push_back(conn);
        }
    }

    /// Reports queued sockets whose condition holds, up to the event capacity; returns whether
    /// the buffer filled.
    fn report(&mut self, out: &mut Vec<Ready>) -> bool {
        while let Some(conn) = self.ready.pop_front() {
            let s = &mut self.socks[conn];
            s.queued = false;
            let (readable, closing, writable) = s.readiness(self.opts.sndbuf);
            if !(readable || closing || writable) {
                continue; // re-polled: nothing holds any more
            }
            s.seen_before_report = s.seen_close;
            s.seen_close |= closing;
            out.push(Ready { token: s.token, readable, closing, writable });
            if out.len() >= self.opts.events {
                return true;
            }
        }
        false
    }

    /// A wait's clock jump: what the network has scheduled up to `target` arrives, and the
    /// clock stands at `target` (or later, if a delivery moved it).
    fn jump_to(&mut self, target: Ns) {
        self.jumps += 1;
        self.deliver(target);
        self.net.now = self.net.now.max(target);
    }

    /// Opens a socket under `token`; its connect starts now, or (`at`) is set for that virtual
    /// time.
    fn open_sock(&mut self, addr: SocketAddr, token: usize, at: Option<Ns>) -> io::Result<SimStream> {
        self.syscall();
        self.opens += 1;
        self.timed_opens += u64::from(at.is_some());
        self.progress += 1;
        if self.opts.fd_limit.is_some_and(|l| self.live >= l) {
            return Err(io::Error::from_raw_os_error(24)); // EMFILE
        }
        if at.is_none() && addr == self.device_addr {
            match self.device.script.listen {
                Listen::RefuseAtOnce => return Err(io::ErrorKind::ConnectionRefused.into()),
                Listen::UnreachableAtOnce => return Err(io::ErrorKind::NetworkUnreachable.into()),
                _ => {}
            }
        }
        let conn = self.socks.len();
        let mut sock = Sock::new(token);
        sock.to_device = addr == self.device_addr;
        self.socks.push(sock);
        self.live += 1;
        log::trace!("sim t={}us open sock={conn} to {addr} token={token} at={at:?}", self.net.now / 1000);
        match at {
            None => self.send_syn(conn),
            Some(t) => {
                self.socks[conn].state = State::Unstarted;
                self.queue(conn);
                self.net.at(t.max(self.net.now), Ev::TimedConnect { conn });
            }
        }
        Ok(SimStream(conn))
    }

    /// The SYN of `conn` goes out: to the device, or to an address where nothing listens
    /// (its kernel answers with RST).
    fn send_syn(&mut self, conn: usize) {
        if self.socks[conn].to_device {
            self.net.after_latency(Ev::Syn { conn });
        } else {
            let rtt = 2 * self.net.latency;
            self.net.at(self.net.now + rtt, Ev::ClientRst { conn });
        }
    }

    /// A timed connect starts (if it has not, and its socket is open). A device that refuses
    /// or is unreachable at once fails it at once: the error waits for `connect_result`, with
    /// no new readiness (Linux's failed `connect` on an unconnected socket changes nothing epoll
    /// sees; the driver learns it when it asks, `start_now`, or from a report of the socket
    /// still pending from its open).
    fn start(&mut self, conn: usize) {
        let now = self.net.now;
        let s = &mut self.socks[conn];
        if s.state != State::Unstarted {
            return;
        }
        s.transition(conn, Input::Start, false, now);
        let at_once = match (s.to_device, self.device.script.listen) {
            (true, Listen::RefuseAtOnce) => Some(io::ErrorKind::ConnectionRefused),
            (true, Listen::UnreachableAtOnce) => Some(io::ErrorKind::NetworkUnreachable),
            _ => None,
        };
        match at_once {
            Some(kind) => {
                let stamp = self.syscalls;
                let s = &mut self.socks[conn];
                s.transition(conn, Input::ConnectFailed(kind), false, now);
                s.start_failed = true;
                s.closed_at.get_or_insert(stamp);
            }
            None => self.send_syn(conn),
        }
    }

    fn sock(&mut self, s: &SimStream) -> &mut Sock {
        &mut self.socks[s.0]
    }

    /// The open socket registered under `token`.
    fn by_token(&mut self, token: usize) -> Option<&mut Sock> {
        self.socks.iter_mut().rev().find(|s| s.token == token && s.state != State::Closed)
    }
}

impl crate::os::faulty::Observe for SimKernel {
    /// The report did not reach the driver: it has not seen what it said.
    fn withheld(&mut self, r: &crate::os::Ready) {
        if let Some(s) = self.by_token(r.token) {
            s.seen_close = s.seen_before_report;
        }
    }

    fn redelivered(&mut self, r: &crate::os::Ready) {
        if let Some(s) = self.by_token(r.token) {
            s.seen_close |= r.closing;
        }
    }
}

/// The client's waker has nothing to wake: the simulation has no other thread.
#[derive(Debug)]
struct NoNotify;

impl Notify for NoNotify {
    fn notify(&self) -> io::Result<()> {
        Ok(())
    }
}

impl Kernel for SimKernel {
    type Stream = SimStream;

    fn caps(&self) -> Caps {
        Caps {
            zero_wait_is_exact: self.opts.zero_wait_is_exact,
            writable_means_connected: self.opts.writable_means_connected,
            read_wait: self.opts.read_wait,
        }
    }

    fn now(&self) -> Instant {
        let reads = self.clock_reads.get() + 1;
        self.clock_reads.set(reads);
        assert!(
            reads <= MAX_CLOCK_READS,
            "invariant (f) violated: more than {MAX_CLOCK_READS} clock reads: the loop spins without end"
        );
        self.unfolded.set(self.unfolded.get() + CLOCK_READ);
        self.instant(self.virtual_ns())
    }

    fn open(&mut self, addr: SocketAddr, _opts: &OpenOpts<'_>, token: usize) -> io::Result<SimStream> {
        self.open_sock(addr, token, None)
    }

    fn open_at(
        &mut self,
        addr: SocketAddr,
        _opts: &OpenOpts<'_>,
        token: usize,
        at: Instant,
    ) -> io::Result<SimStream> {
        let t = ns(at.saturating_duration_since(self.epoch));
        self.open_sock(addr, token, Some(t))
    }

    fn start_now(&mut self, s: &mut SimStream) -> io::Result<()> {
        self.syscall();
        self.start(s.0);
        // A start that failed, now or when the kernel made it, is reported here (the real
        // kernel's thread keeps the error for the driver).
        let sock = self.sock(s);
        match sock.err.take() {
            Some(kind) if sock.start_failed => {
                sock.seen_close = true;
                Err(kind.into())
            }
            err => {
                sock.err = err;
                Ok(())
            }
        }
    }

    fn connect_result(&mut self, s: &mut SimStream) -> io::Result<bool> {
        self.syscall();
        let sock = self.sock(s);
        match sock.state {
            State::SynSent | State::Unstarted => Ok(false),
            State::Failed => {
                sock.seen_close = true;
                Err(sock.err.take().unwrap_or(io::ErrorKind::NotConnected).into())
            }
            State::Closed => Err(io::ErrorKind::NotConnected.into()),
            State::Established | State::PeerFin | State::Reset => Ok(true),
        }
    }

    fn read(&mut self, s: &mut SimStream, buf: &mut [u8]) -> io::Result<usize> {
        self.syscall();
        let r = self.sock(s).recv(buf, false);
        if matches!(r, Ok(n) if n > 0) {
            self.progress += 1;
        }
        r
    }

    /// Delivers what the network has scheduled, up to `timeout`, until the socket has data, a
    /// FIN or an error. Not a wait of the poller's: it vouches for no other socket.
    fn read_wait(&mut self, s: &mut SimStream, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.syscall();
        self.read_waits += 1;
        // As a real kernel counts SO_RCVTIMEO: in ticks, rounded up (HZ=100, the coarsest).
        let limit = self.net.now.saturating_add(ns(timeout).div_ceil(RCVTIMEO_TICK) * RCVTIMEO_TICK);
        loop {
            match self.sock(s).recv(buf, false) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => {
                    if matches!(r, Ok(n) if n > 0) {
                        self.progress += 1;
                    }
                    return r;
                }
            }
            if limit <= self.net.now {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let target = self.net.queue.first_key_value().map_or(limit, |(k, _)| k.0.min(limit));
            self.jump_to(target);
        }
    }

    fn write(&mut self, s: &mut SimStream, buf: &[u8]) -> io::Result<usize> {
        self.syscall();
        let (now, sndbuf) = (self.net.now, self.opts.sndbuf);
        // What arrived before the driver's last wait, or before this turn began, the driver had
        // its chance to see before this write; what arrived since (between its pre-write check
        // and this call, or while it wrote other sockets of the batch) is the race no check can
        // close, and is exempt.
        let vouch = self.turn_mark.max(self.last_wait);
        let sock = &mut self.socks[s.0];
        if sock.seen_close && !buf.is_empty() {
            self.violations.push((
                "(a) write after FIN/RST seen",
                format!(
                    "t={}us write of {} bytes on sock={} after the driver saw its FIN/RST ({:?})",
                    now / 1000,
                    buf.len(),
                    s.0,
                    sock.state
                ),
            ));
        }
        let starting = sock.out.at_start();
        let n = match sock.send(buf.len(), sndbuf) {
            Ok(n) => n,
            Err(e) => {
                log::trace!(
                    "sim t={}us write sock={} of {}: {e} ({} unread)",
                    now / 1000,
                    s.0,
                    buf.len(),
                    sock.rx.len()
                );
                if e.kind() != io::ErrorKind::WouldBlock && !sock.rx.is_empty() {
                    self.write_errors_with_unread += 1;
                }
                return Err(e);
            }
        };
        if starting
            && let Some(at) = sock.closed_at
            && at <= vouch
        {
            self.violations.push((
                "(a2) request written into an arrived FIN/RST",
                format!(
                    "t={}us a request's first {n} bytes written on sock={} ({:?}) whose FIN/RST arrived at syscall {at}, \
                     before the driver's last wait (syscall {}) or the turn's start (syscall {}); this write is syscall {}",
                    now / 1000,
                    s.0,
                    sock.state,
                    self.last_wait,
                    self.turn_mark,
                    self.syscalls
                ),
            ));
        }
        for mark in sock.out.feed(&buf[..n]) {
            match mark {
                Mark::Start => {
                    sock.current_start = Some(self.starts.len());
                    self.starts.push(Start { sock: s.0, cmd: None, at: now, turn: self.turns });
                }
                Mark::Named(cmd) => {
                    if let Some(i) = sock.current_start {
                        self.starts[i].cmd = Some(cmd);
                    }
                }
            }
        }
        self.progress += 1;
        self.net.after_latency(Ev::ToDevice { conn: s.0, bytes: buf[..n].to_vec() });
        log::trace!("sim t={}us write sock={} of {}: {n}", now / 1000, s.0, buf.len());
        // The copy takes time; what arrives meanwhile, the next call sees.
        self.net.now += n as u64 / WRITE_COPY;
        Ok(n)
    }

    fn peek(&mut self, s: &mut SimStream) -> io::Result<usize> {
        self.syscall();
        let mut byte = [0u8; 1];
        self.sock(s).recv(&mut byte, true)
    }

    fn ack_now(&mut self, _s: &mut SimStream) {
        self.syscall();
    }

    fn close(&mut self, s: SimStream) {
        self.syscall();
        let now = self.net.now;
        self.socks[s.0].transition(s.0, Input::Close, false, now);
        self.live -= 1;
        self.progress += 1;
        self.net.after_latency(Ev::ClientClosed { conn: s.0 });
    }

    fn wait(&mut self, ready: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<Waited> {
        ready.clear();
        self.syscall();
        self.last_wait = self.syscalls;
        let limit = timeout.map(|t| self.net.now.saturating_add(ns(t)));
        loop {
            if self.report(ready) {
                return Ok(Waited { full: true, woken: false });
            }
            if !ready.is_empty() || limit.is_some_and(|l| l <= self.net.now) {
                return Ok(Waited::default());
            }
            let next = self.net.queue.first_key_value().map(|(k, _)| k.0);
            let target = match (next, limit) {
                (Some(n), Some(l)) => n.min(l),
                (Some(n), None) => n,
                (None, Some(l)) if l - self.net.now < FOREVER => l,
                _ => {
                    self.waited_forever = true;
                    return Err(io::Error::other("sim: a wait for ever (nothing scheduled, no timeout)"));
                }
            };
            self.jump_to(target);
        }
    }

    fn notifier(&mut self) -> io::Result<Box<dyn Notify>> {
        Ok(Box::new(NoNotify))
    }
}
