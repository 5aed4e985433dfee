//! A kernel that misbehaves on purpose: [`Faulty`] wraps any [`Kernel`] and injects, from a
//! seeded xorshift, the faults a real kernel may produce at any time (smoltcp's
//! `FaultInjector`): `EINTR` on `read`, `write`, `peek` and `wait`; short writes; spurious
//! readiness (an event with nothing behind it, and a wait that returns early with it);
//! truncated event batches (`full` with fewer events than were ready); `EMFILE` from `open`.
//! Every fault is logged with `log::trace!`.
//!
//! The seed is an input (never the clock), so a run is reproducible: the simulator's harness
//! derives it from the scenario. Because it wraps *any* kernel, the same faults run over
//! [`super::sim::SimKernel`] and over the real one.
//!
//! What it keeps faithful, so the driver may still rely on what [`Caps`] promise:
//! - a truncated batch keeps the events it did not report, as epoll's ready list does, and
//!   reports them first on the next wait (which then does not sleep); events of a socket
//!   closed meanwhile are dropped, as `close` takes a socket out of the poller;
//! - a spurious writable event goes only to a socket known to be connected when
//!   `writable_means_connected` holds (Linux never reports a connecting socket writable);
//! - an injected `EINTR` makes no syscall: nothing was consumed.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Caps, Kernel, Notify, OpenOpts, Ready, Waited};

/// How often each fault fires, in percent of the calls it applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultRates {
    /// `read`, `write`, `peek`, `wait` return `Interrupted`.
    pub eintr: u8,
    /// `write` accepts fewer bytes than offered (at least one).
    pub short_write: u8,
    /// `wait` returns at once with an event for a socket that has nothing (readable, or
    /// writable where allowed).
    pub spurious: u8,
    /// `wait` reports fewer events than were ready, with `full` set.
    pub truncate: u8,
    /// `open` fails with `EMFILE`.
    pub emfile: u8,
}

impl FaultRates {
    /// No faults: the wrapper only delegates.
    pub const NONE: FaultRates = FaultRates { eintr: 0, short_write: 0, spurious: 0, truncate: 0, emfile: 0 };
}

/// How many faults of each kind were injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// `Interrupted` returned.
    pub eintr: u64,
    /// Writes capped.
    pub short_write: u64,
    /// Spurious events added.
    pub spurious: u64,
    /// Batches truncated.
    pub truncate: u64,
    /// `open` failed with `EMFILE`.
    pub emfile: u64,
}

/// What a wrapped kernel may want to know about the events [`Faulty`] holds back or reports
/// late (the simulator keeps track of what the driver has seen; the real kernel has nothing
/// to do).
pub(crate) trait Observe {
    /// `r` was taken out of a batch: the driver has not seen it (yet).
    fn withheld(&mut self, _r: &Ready) {}
    /// `r`, withheld before, is reported now.
    fn redelivered(&mut self, _r: &Ready) {}
}

impl Observe for super::mio::MioKernel {}

/// A socket of the wrapped kernel, with the token it was opened under.
#[derive(Debug)]
pub struct FaultyStream<S> {
    inner: S,
    token: usize,
}

/// A live socket as the wrapper knows it.
#[derive(Debug, Clone, Copy)]
struct Live {
    token: usize,
    /// Known connected (a writable event without an error, or `connect_result` said so).
    connected: bool,
}

/// A [`Kernel`] that delegates to `inner` and injects faults (see the module docs).
#[derive(Debug)]
pub struct Faulty<K> {
    pub(crate) inner: K,
    rates: FaultRates,
    /// xorshift64 state (never 0).
    state: u64,
    live: Vec<Live>,
    /// Events of a truncated batch not reported yet.
    held: Vec<Ready>,
    pub(crate) counts: FaultCounts,
}

impl<K> Faulty<K> {
    /// Wraps `inner`; `seed` makes the faults reproducible.
    pub fn new(inner: K, rates: FaultRates, seed: u64) -> Faulty<K> {
        Faulty {
            inner,
            rates,
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            live: Vec::new(),
            held: Vec::new(),
            counts: FaultCounts::default(),
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// True with probability `pct` percent (no draw at 0, so a fault-free run draws nothing).
    fn maybe(&mut self, pct: u8) -> bool {
        pct > 0 && self.next() % 100 < u64::from(pct)
    }

    fn eintr(&mut self, call: &str) -> io::Result<()> {
        if self.maybe(self.rates.eintr) {
            self.counts.eintr += 1;
            log::trace!("faulty: {call}: EINTR");
            return Err(io::ErrorKind::Interrupted.into());
        }
        Ok(())
    }

    fn live_mut(&mut self, token: usize) -> Option<&mut Live> {
        self.live.iter_mut().find(|l| l.token == token)
    }
}

impl<K: Kernel> Faulty<K> {
    /// An open of the inner kernel's (`open` or `open_at`), or the injected `EMFILE` before it.
    fn open_with(
        &mut self,
        addr: SocketAddr,
        token: usize,
        open: impl FnOnce(&mut K) -> io::Result<K::Stream>,
    ) -> io::Result<FaultyStream<K::Stream>> {
        if self.maybe(self.rates.emfile) {
            self.counts.emfile += 1;
            log::trace!("faulty: open {addr}: EMFILE");
            return Err(io::Error::from_raw_os_error(24));
        }
        let inner = open(&mut self.inner)?;
        self.live.push(Live { token, connected: false });
        Ok(FaultyStream { inner, token })
    }
}

impl<K: Kernel + Observe> Kernel for Faulty<K> {
    type Stream = FaultyStream<K::Stream>;

    fn caps(&self) -> Caps {
        self.inner.caps()
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn open(&mut self, addr: SocketAddr, opts: &OpenOpts<'_>, token: usize) -> io::Result<Self::Stream> {
        self.open_with(addr, token, |k| k.open(addr, opts, token))
    }

    fn open_at(
        &mut self,
        addr: SocketAddr,
        opts: &OpenOpts<'_>,
        token: usize,
        at: Instant,
    ) -> io::Result<Self::Stream> {
        self.open_with(addr, token, |k| k.open_at(addr, opts, token, at))
    }

    fn start_now(&mut self, s: &mut Self::Stream) -> io::Result<()> {
        self.inner.start_now(&mut s.inner)
    }

    fn connect_result(&mut self, s: &mut Self::Stream) -> io::Result<bool> {
        let r = self.inner.connect_result(&mut s.inner);
        if matches!(r, Ok(true))
            && let Some(l) = self.live_mut(s.token)
        {
            l.connected = true;
        }
        r
    }

    fn read(&mut self, s: &mut Self::Stream, buf: &mut [u8]) -> io::Result<usize> {
        self.eintr("read")?;
        self.inner.read(&mut s.inner, buf)
    }

    fn read_wait(&mut self, s: &mut Self::Stream, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.eintr("read_wait")?;
        self.inner.read_wait(&mut s.inner, buf, timeout)
    }

    fn write(&mut self, s: &mut Self::Stream, buf: &[u8]) -> io::Result<usize> {
        self.eintr("write")?;
        let mut len = buf.len();
        if len > 1 && self.maybe(self.rates.short_write) {
            len = 1 + (self.next() % (len as u64 - 1)) as usize;
            self.counts.short_write += 1;
            log::trace!("faulty: write of {} bytes capped at {len}", buf.len());
        }
        self.inner.write(&mut s.inner, &buf[..len])
    }

    fn peek(&mut self, s: &mut Self::Stream) -> io::Result<usize> {
        self.eintr("peek")?;
        self.inner.peek(&mut s.inner)
    }

    fn ack_now(&mut self, s: &mut Self::Stream) {
        self.inner.ack_now(&mut s.inner)
    }

    fn close(&mut self, s: Self::Stream) {
        self.live.retain(|l| l.token != s.token);
        self.held.retain(|r| r.token != s.token);
        self.inner.close(s.inner)
    }

    fn wait(&mut self, ready: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<Waited> {
        self.eintr("wait")?;
        let spurious = !self.live.is_empty() && self.maybe(self.rates.spurious);
        // Events held back make the wait return at once, as epoll's ready list does; so does a
        // spurious wake-up.
        let timeout = if spurious || !self.held.is_empty() { Some(Duration::ZERO) } else { timeout };
        let mut waited = self.inner.wait(ready, timeout)?;
        let writable_means_connected = self.inner.caps().writable_means_connected;
        for r in ready.iter() {
            if r.writable
                && !r.closing
                && writable_means_connected
                && let Some(l) = self.live_mut(r.token)
            {
                l.connected = true;
            }
        }
        // What was held back comes first (it was ready first); the same socket's new event
        // merges into it.
        if !self.held.is_empty() {
            let mut merged = std::mem::take(&mut self.held);
            for r in &merged {
                self.inner.redelivered(r);
            }
            for r in ready.drain(..) {
                match merged.iter_mut().find(|m| m.token == r.token) {
                    Some(m) => {
                        m.readable |= r.readable;
                        m.closing |= r.closing;
                        m.writable |= r.writable;
                    }
                    None => merged.push(r),
                }
            }
            *ready = merged;
        }
        if spurious {
            let pick = (self.next() % self.live.len() as u64) as usize;
            let l = self.live[pick];
            let may_write = l.connected || !writable_means_connected;
            let writable = may_write && self.next().is_multiple_of(2);
            if !ready.iter().any(|r| r.token == l.token) {
                self.counts.spurious += 1;
                log::trace!(
                    "faulty: spurious {} event for token {}",
                    if writable { "writable" } else { "readable" },
                    l.token
                );
                ready.push(Ready { token: l.token, readable: !writable, closing: false, writable });
            }
        }
        if ready.len() > 1 && self.maybe(self.rates.truncate) {
            let keep = 1 + (self.next() % (ready.len() as u64 - 1)) as usize;
            self.counts.truncate += 1;
            log::trace!("faulty: batch of {} events truncated to {keep}", ready.len());
            for r in ready.drain(keep..) {
                self.inner.withheld(&r);
                self.held.push(r);
            }
            waited.full = true;
        }
        Ok(waited)
    }

    fn notifier(&mut self) -> io::Result<Box<dyn Notify>> {
        self.inner.notifier()
    }
}

/// `Faulty<MioKernel>` is a kernel too (the generic impl), for runs against real devices.
#[allow(dead_code)]
fn faulty_mio_is_a_kernel() {
    fn kernel<K: Kernel>() {}
    kernel::<Faulty<super::mio::MioKernel>>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::sim::{Script, SimKernel, SimOptions};

    const OPEN: OpenOpts<'static> = OpenOpts { nodelay: true, local: None, device: None };

    /// A kernel with one connected socket to the simulated device, under `rates` and `seed`.
    fn connected(
        rates: FaultRates,
        seed: u64,
    ) -> (Faulty<SimKernel>, FaultyStream<crate::os::sim::SimStream>) {
        let opts = SimOptions { events: 256, ..SimOptions::default() };
        let mut k = Faulty::new(SimKernel::new(opts, Script::default()), FaultRates::NONE, seed);
        let addr = crate::os::sim::DEVICE.parse().unwrap();
        let mut s = k.open(addr, &OPEN, 0).unwrap();
        let mut ready = Vec::new();
        while !ready.iter().any(|r: &Ready| r.writable) {
            k.wait(&mut ready, Some(Duration::from_millis(10))).unwrap();
        }
        assert!(k.connect_result(&mut s).unwrap());
        k.rates = rates;
        (k, s)
    }

    /// Drives a few hundred syscalls; returns what was injected and every call's outcome.
    fn drive(rates: FaultRates, seed: u64) -> (FaultCounts, Vec<String>) {
        let (mut k, mut s) = connected(rates, seed);
        let addr = crate::os::sim::DEVICE.parse().unwrap();
        let mut others = Vec::new();
        let mut log = Vec::new();
        let mut ready = Vec::new();
        let mut buf = [0u8; 64];
        for i in 0..200 {
            log.push(format!(
                "{:?}",
                k.write(&mut s, b"GET /cmd/0 HTTP/1.1\r\nX-Cmd: 0\r\n").map_err(|e| e.kind())
            ));
            log.push(format!("{:?}", k.read(&mut s, &mut buf).map_err(|e| e.kind())));
            log.push(format!("{:?}", k.peek(&mut s).map_err(|e| e.kind())));
            log.push(format!(
                "{:?} {ready:?}",
                k.wait(&mut ready, Some(Duration::ZERO)).map_err(|e| e.kind())
            ));
            if i % 10 == 0 {
                match k.open(addr, &OPEN, 1 + i) {
                    Ok(o) => others.push(o),
                    Err(e) => log.push(format!("open {:?}", e.raw_os_error())),
                }
            }
        }
        (k.counts, log)
    }

    #[test]
    fn each_fault_fires_and_a_seed_repeats_its_run() {
        let all = FaultRates { eintr: 20, short_write: 50, spurious: 30, truncate: 50, emfile: 30 };
        let (counts, log) = drive(all, 7);
        assert!(counts.eintr > 0, "{counts:?}");
        assert!(counts.short_write > 0, "{counts:?}");
        assert!(counts.spurious > 0, "{counts:?}");
        assert!(counts.truncate > 0, "{counts:?}");
        assert!(counts.emfile > 0, "{counts:?}");
        assert!(log.iter().any(|l| l.contains("Interrupted")));
        assert!(log.iter().any(|l| l == "open Some(24)"));
        // The same seed, the same faults at the same calls; another seed, others.
        assert_eq!(drive(all, 7), (counts, log.clone()));
        assert_ne!(drive(all, 8).1, log);
    }

    #[test]
    fn without_faults_it_only_delegates() {
        let (counts, log) = drive(FaultRates::NONE, 7);
        assert_eq!(counts, FaultCounts::default());
        assert!(!log.iter().any(|l| l.contains("Interrupted") || l.contains("Some(24)")));
    }

    /// A truncated batch keeps the rest for the next wait, which returns at once.
    #[test]
    fn a_truncated_batch_reports_the_rest_next() {
        let (mut k, _s) = connected(FaultRates::NONE, 1);
        let addr = crate::os::sim::DEVICE.parse().unwrap();
        let _a = k.open(addr, &OPEN, 1).unwrap();
        let _b = k.open(addr, &OPEN, 2).unwrap();
        let later = k.inner.virtual_ns() + 10_000_000;
        k.inner.settle(later); // both connects complete: two events are ready
        k.rates.truncate = 100;
        let mut ready = Vec::new();
        let mut seen = Vec::new();
        let w = k.wait(&mut ready, Some(Duration::from_secs(1))).unwrap();
        assert!(w.full && ready.len() == 1, "{w:?} {ready:?}");
        seen.extend(ready.iter().map(|r| r.token));
        let before = k.inner.virtual_ns();
        k.wait(&mut ready, Some(Duration::from_secs(1))).unwrap();
        assert!(k.inner.virtual_ns() - before < 1_000_000, "held events make the wait return at once");
        seen.extend(ready.iter().map(|r| r.token));
        seen.sort();
        assert_eq!(seen, [1, 2]);
        assert_eq!(k.counts.truncate, 1);
    }
}
