//! An emulated network link with a fixed one-way delay (`--link-delay-us N`), so that a TCP
//! handshake costs a round trip as it does on a real network (on loopback it costs none). Linux
//! only, needs root; `tc netem` is not required (nor available on the project's kernel).
//!
//! ```text
//!  client namespace (main thread)             device namespace (device threads)
//!  clients ── 10.77.0.1 ─ fwlink-c              fwlink-d ─ 10.77.0.2 ── device listeners
//!                          │  TUN fd              TUN fd │
//!                          └──────── relay thread ───────┘
//!                  a FIFO per direction, each packet written N µs after it was read
//! ```
//!
//! [`Link::start`] moves the calling thread — the harness's main thread, before it has started
//! any other — into a private network namespace (nothing on the host is touched), brings `lo`
//! up and creates the client's TUN device, 10.77.0.1 with point-to-point peer 10.77.0.2. Every
//! thread the main thread starts later (client helper threads too) inherits that namespace. A
//! short-lived setup thread creates a second namespace the same way, with the device's TUN
//! device (10.77.0.2, peer 10.77.0.1), and leaves an fd that keeps it alive: each device thread
//! enters it ([`DeviceNet::enter`]) before binding its listeners to 10.77.0.2. The device
//! namespace is made once per run rather than once per device (one per scenario), so the relay
//! keeps the same two TUN fds throughout.
//!
//! The relay thread sleeps in `ppoll` until a TUN fd is readable or the next packet is due
//! (ns timeout, timer slack 1 ns): no spinning. Queues hold at most [`QUEUE_CAP`] packets per
//! direction; beyond that packets are dropped and counted. The delay is counted from the moment
//! the relay reads a packet, so the one-way delay is N µs plus the relay's wake-up latency on
//! both ends; [`RelayStats`] reports how late packets were released.

mod sys;

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sys::{EventFd, IfCtl, Tun};

/// The client side's address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The device side's address.
pub const DEVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const CLIENT_TUN: &str = "fwlink-c";
const DEVICE_TUN: &str = "fwlink-d";
/// Packets held per direction at most; more are dropped.
pub const QUEUE_CAP: usize = 4096;
/// Largest packet read from a TUN device (its MTU is 1500; no offloads are enabled).
const MAX_PACKET: usize = 65_536;

/// The running link: both namespaces set up and the relay thread forwarding.
pub struct Link {
    device: DeviceNet,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    relay: Option<JoinHandle<io::Result<RelayStats>>>,
}

/// The device side of a [`Link`], for the device threads.
#[derive(Clone)]
pub struct DeviceNet {
    ns: Arc<OwnedFd>,
}

impl DeviceNet {
    /// Moves the calling thread into the device's network namespace, for the rest of its life
    /// (so: only on a thread of its own). Sockets it creates afterwards live there.
    pub fn enter(&self) -> io::Result<()> {
        sys::enter_net(self.ns.as_fd()).map_err(context("setns into the device's network namespace"))
    }
}

/// Wraps an error with what was being done.
fn context(what: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Link {
    /// Sets up both namespaces and starts the relay (see the module docs). Must be called on
    /// the main thread before any other thread has been started: the calling thread stays in
    /// the client's namespace, and only threads started afterwards inherit it.
    pub fn start(delay: Duration) -> io::Result<Link> {
        sys::unshare_net().map_err(context("unshare(CLONE_NEWNET) (the link needs root)"))?;
        let client_tun = side(CLIENT_TUN, CLIENT_IP, DEVICE_IP)?;
        let (device_tun, ns) = std::thread::Builder::new()
            .name("link-setup".into())
            .spawn(|| -> io::Result<(Tun, OwnedFd)> {
                sys::unshare_net().map_err(context("unshare(CLONE_NEWNET) for the device side"))?;
                let tun = side(DEVICE_TUN, DEVICE_IP, CLIENT_IP)?;
                Ok((tun, sys::current_net().map_err(context("/proc/thread-self/ns/net"))?))
            })?
            .join()
            .map_err(|_| io::Error::other("the link's setup thread panicked"))??;
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(EventFd::new()?);
        let relay = {
            let (stop, wake) = (stop.clone(), wake.clone());
            std::thread::Builder::new()
                .name("link-relay".into())
                .spawn(move || relay([client_tun, device_tun], delay, &stop, &wake))?
        };
        Ok(Link { device: DeviceNet { ns: Arc::new(ns) }, stop, wake, relay: Some(relay) })
    }

    pub fn device_net(&self) -> &DeviceNet {
        &self.device
    }

    /// Whether the relay thread has ended (only [`Link::stop`] should end it).
    pub fn relay_ended(&self) -> bool {
        self.relay.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the relay and returns what it did, or the error that ended it.
    pub fn stop(mut self) -> io::Result<RelayStats> {
        self.halt().unwrap_or_else(|| Err(io::Error::other("the relay was already stopped")))
    }

    fn halt(&mut self) -> Option<io::Result<RelayStats>> {
        let relay = self.relay.take()?;
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.wake.signal() {
            // Without a wake-up the relay would sleep until its next packet: never, now.
            return Some(Err(io::Error::new(e.kind(), format!("cannot wake the relay: {e}"))));
        }
        Some(relay.join().unwrap_or_else(|_| Err(io::Error::other("the relay thread panicked"))))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(Err(e)) = self.halt() {
            eprintln!("link relay: {e}");
        }
    }
}

/// In the calling thread's namespace: brings `lo` up and creates TUN device `name` with address
/// `local`, point-to-point peer `peer`, up.
fn side(name: &str, local: Ipv4Addr, peer: Ipv4Addr) -> io::Result<Tun> {
    let ctl = IfCtl::new()?;
    ctl.up("lo").map_err(context("bringing lo up"))?;
    let tun = Tun::create(name).map_err(context("creating a TUN device"))?;
    ctl.set_point_to_point(name, local, peer).map_err(context("addressing the TUN device"))?;
    ctl.up(name).map_err(context("bringing the TUN device up"))?;
    Ok(tun)
}

/// What the relay did over the run.
pub struct RelayStats {
    /// Packets forwarded, client→device and device→client.
    pub forwarded: [u64; 2],
    /// Packets dropped because their direction's queue was full.
    pub dropped: [u64; 2],
    /// Packets the receiving TUN device refused (write errors).
    pub refused: u64,
    /// How late packets were written after their release time: counts per whole µs, the last
    /// bucket for everything from `LATE_BUCKETS - 1` µs on.
    late_us: Vec<u64>,
    late_max: Duration,
}

const LATE_BUCKETS: usize = 1001;

impl RelayStats {
    fn new() -> RelayStats {
        RelayStats {
            forwarded: [0; 2],
            dropped: [0; 2],
            refused: 0,
            late_us: vec![0; LATE_BUCKETS],
            late_max: Duration::ZERO,
        }
    }

    fn record_late(&mut self, late: Duration) {
        let us = (late.as_micros() as usize).min(LATE_BUCKETS - 1);
        self.late_us[us] += 1;
        self.late_max = self.late_max.max(late);
    }

    /// The nearest-rank percentile `pct` of release lateness, in whole µs (a floor; the last
    /// bucket is open-ended).
    fn late_pct(&self, pct: u64) -> Option<usize> {
        let n: u64 = self.late_us.iter().sum();
        let rank = (pct * n).div_ceil(100).max(1);
        let mut seen = 0;
        self.late_us.iter().position(|&c| {
            seen += c;
            seen >= rank
        })
    }
}

impl fmt::Display for RelayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} packets client→device, {} device→client; dropped {} / {} (queues of {QUEUE_CAP}), \
             refused {}; released late by p50 {} µs, p99 {} µs, max {} µs",
            self.forwarded[0],
            self.forwarded[1],
            self.dropped[0],
            self.dropped[1],
            self.refused,
            self.late_pct(50).map_or("-".into(), |v| v.to_string()),
            self.late_pct(99).map_or("-".into(), |v| v.to_string()),
            self.late_max.as_micros(),
        )
    }
}

/// The packets of one direction, in arrival order, each with its release time.
struct Queue {
    packets: std::collections::VecDeque<(Instant, Vec<u8>)>,
    /// Buffers of released packets, reused: no allocation per packet once warm.
    spare: Vec<Vec<u8>>,
}

impl Queue {
    fn new() -> Queue {
        Queue { packets: std::collections::VecDeque::with_capacity(QUEUE_CAP), spare: Vec::new() }
    }

    fn next_due(&self) -> Option<Instant> {
        self.packets.front().map(|p| p.0)
    }

    /// Reads every packet queued on `from`, each due `delay` after it was read. Returns the
    /// number dropped because the queue was full.
    fn receive(&mut self, from: &Tun, buf: &mut [u8], delay: Duration) -> io::Result<u64> {
        let mut dropped = 0;
        loop {
            let n = match from.recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(dropped),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let due = Instant::now() + delay;
            if self.packets.len() >= QUEUE_CAP {
                dropped += 1;
                continue;
            }
            let mut packet = self.spare.pop().unwrap_or_default();
            packet.clear();
            packet.extend_from_slice(&buf[..n]);
            self.packets.push_back((due, packet));
        }
    }

    /// Writes every packet due at `now` to `to`.
    fn release(&mut self, now: Instant, to: &Tun, stats: &mut RelayStats, dir: usize) {
        while let Some((due, packet)) = self.packets.pop_front_if(|p| p.0 <= now) {
            match to.send(&packet) {
                Ok(_) => {
                    stats.forwarded[dir] += 1;
                    stats.record_late(now - due);
                }
                Err(_) => stats.refused += 1,
            }
            self.spare.push(packet);
        }
    }
}

/// The relay thread: `tuns[0]` is the client side, `tuns[1]` the device side; what is read from
/// one is written to the other `delay` later. Runs until `stop` is set and `wake` signalled.
fn relay(tuns: [Tun; 2], delay: Duration, stop: &AtomicBool, wake: &EventFd) -> io::Result<RelayStats> {
    // Without this, ppoll may return up to 50 µs after the release time.
    if let Err(e) = sys::set_timer_slack(Duration::from_nanos(1)) {
        eprintln!("link relay: cannot lower the timer slack ({e}); releases may be up to 50 µs later");
    }
    let mut queues = [Queue::new(), Queue::new()];
    let mut stats = RelayStats::new();
    let mut buf = vec![0; MAX_PACKET];
    loop {
        let now = Instant::now();
        for (dir, q) in queues.iter_mut().enumerate() {
            q.release(now, &tuns[1 - dir], &mut stats, dir);
        }
        let timeout =
            queues.iter().filter_map(Queue::next_due).min().map(|due| due.saturating_duration_since(now));
        let mut fds =
            [sys::poll_in(tuns[0].as_fd()), sys::poll_in(tuns[1].as_fd()), sys::poll_in(wake.as_fd())];
        match sys::ppoll(&mut fds, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("ppoll: {e}"))),
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(stats);
        }
        for (dir, q) in queues.iter_mut().enumerate() {
            if fds[dir].revents != 0 {
                let dropped = q
                    .receive(&tuns[dir], &mut buf, delay)
                    .map_err(|e| io::Error::new(e.kind(), format!("reading a TUN device: {e}")))?;
                stats.dropped[dir] += dropped;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    #[test]
    fn a_handshake_and_an_exchange_each_cost_a_round_trip() {
        // On a thread of its own: the link moves the calling thread into a namespace for good.
        std::thread::spawn(|| {
            let delay = Duration::from_millis(2);
            // Needs root (network namespaces, TUN devices): without it this fails, it does
            // not pass silently.
            let link = Link::start(delay).expect("the link needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)");
            let net = link.device_net().clone();
            let (addr_tx, addr_rx) = mpsc::channel();
            let echo = std::thread::spawn(move || -> io::Result<()> {
                net.enter()?;
                let listener = TcpListener::bind((DEVICE_IP, 0))?;
                addr_tx.send(listener.local_addr()?).map_err(io::Error::other)?;
                let (mut s, peer) = listener.accept()?;
                assert_eq!(peer.ip(), CLIENT_IP);
                let mut b = [0; 4];
                s.read_exact(&mut b)?;
                s.write_all(&b)
            });
            let addr = addr_rx.recv().unwrap();
            let start = Instant::now();
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
            let connect = start.elapsed();
            s.set_nodelay(true).unwrap();
            let start = Instant::now();
            s.write_all(b"ping").unwrap();
            let mut b = [0; 4];
            s.read_exact(&mut b).unwrap();
            let exchange = start.elapsed();
            assert_eq!(&b, b"ping");
            echo.join().unwrap().unwrap();
            for (what, t) in [("connect", connect), ("exchange", exchange)] {
                assert!(t >= 2 * delay && t < 2 * delay + Duration::from_millis(100), "{what}: {t:?}");
            }
            let stats = link.stop().unwrap();
            assert_eq!(stats.dropped, [0, 0]);
            assert!(stats.forwarded.iter().all(|&n| n >= 3), "{stats}");
        })
        .join()
        .unwrap();
    }
}
