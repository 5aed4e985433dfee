//! Experimental floor `floor-uring` (not in the default run): the blocking floor
//! ([`StdFloor`]), which before each write on a reused connection checks it for the peer's FIN
//! or RST by a *memory read*: the completion queue of an io_uring in which a multishot
//! `IORING_OP_POLL_ADD` for POLLRDHUP | POLLERR | POLLHUP was armed once at connect. POLLIN is
//! not in the mask, so a response's arrival posts nothing; the kernel's wake-up of the poll on
//! every arrival is filtered out by the mask (in the device's softirq, not on the client).
//!
//! The question it answers: could finwatch's check (a syscall today: `recv(MSG_PEEK)` or a
//! zero-timeout `epoll_wait`, see `floor-peek`) cost no syscall, and would it still catch every
//! close that arrived before the write? The kernel posts a poll's completion through task_work
//! on the submitting thread (TWA_SIGNAL): the CQE is there only once this thread has gone
//! through the kernel since the FIN was processed (a syscall's return, an interrupt, a
//! reschedule IPI). `floor-uring-audit` looks for the gap: after the ring says "open" it asks
//! the socket itself (`recv(MSG_PEEK)`) and counts where the two disagree; the ignored test
//! `ring_lag_on_two_cpus` times it against a peek.
//!
//! One ring per client, reused across connections, with the default setup flags. Neither
//! IORING_SETUP_COOP_TASKRUN nor DEFER_TASKRUN (nor SQPOLL): the first queues the task_work
//! without interrupting the thread (TWA_SIGNAL_NO_IPI: it runs at the thread's next entry into
//! the kernel, a syscall in practice, a timer tick at worst), the second only inside an
//! `io_uring_enter` that waits for completions; either way the close's CQE would appear only
//! after a syscall, which is what the check is meant to spare. SQPOLL would add a kernel thread
//! spinning on the other vCPU.
//! Syscalls of the ring: one `io_uring_enter` per connection (the arm, carrying the previous
//! connection's cancellation), and one per re-arm (a multishot that ended without a close).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

use io_uring::{IoUring, cqueue, opcode, types::Fd};

use super::raw::{Counts, Found, StdFloor, peek};
use super::{HttpClient, Method};

/// What the poll waits for: the peer's FIN (POLLRDHUP), a reset or error (POLLERR, POLLHUP).
const MASK: u32 = (libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;
/// `floor-uring-in`'s: bytes too (POLLIN). finwatch's check also refuses a connection on which
/// bytes arrived that nobody asked for (a device's late `408` on an idle connection, say), which
/// [`MASK`] cannot see; with POLLIN every response's arrival posts a completion too (when the
/// task_work runs before the read takes the bytes), read and dropped when the response is
/// complete ([`PollCheck::settle`]).
const MASK_IN: u32 = MASK | libc::POLLIN as u32;
/// Set in the user_data of a cancellation (its own CQE); the rest is the generation cancelled.
const CANCEL: u64 = 1 << 63;
/// Ring size: at most two SQEs (a cancellation, an arm) are ever queued at once.
const ENTRIES: u32 = 8;

pub struct FloorUring(StdFloor);

/// `floor-uring`: the io_uring check alone.
pub fn make(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(FloorUring(floor(addr, false)?)))
}

/// `floor-uring-in`: the io_uring check with POLLIN in the mask, as exact as the peek about
/// stray bytes.
pub fn make_in(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(FloorUring(floor_in(addr)?)))
}

/// `floor-uring-audit`: the io_uring check, then a `recv(MSG_PEEK)` whenever it says "open"
/// (one syscall per command more: a diagnostic, not a floor to time).
pub fn make_audit(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(FloorUring(floor(addr, true)?)))
}

/// The floor of `floor-uring` (`audit`: of `floor-uring-audit`).
pub fn floor(addr: SocketAddr, audit: bool) -> Result<StdFloor, String> {
    floor_with(addr, audit, MASK)
}

/// The floor of `floor-uring-in`.
pub fn floor_in(addr: SocketAddr) -> Result<StdFloor, String> {
    floor_with(addr, false, MASK_IN)
}

fn floor_with(addr: SocketAddr, audit: bool, mask: u32) -> Result<StdFloor, String> {
    let check = PollCheck::with_mask(audit, mask)?;
    Ok(StdFloor::with_check(addr, false, super::raw::Check::Uring(Box::new(check))))
}

impl HttpClient for FloorUring {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        self.0.command(method, url, body)
    }

    fn notes(&self) -> Option<String> {
        let super::raw::Check::Uring(u) = self.0.check() else { return None };
        Some(notes(&self.0.counts, u))
    }
}

fn notes(c: &Counts, u: &PollCheck) -> String {
    let mut s = format!(
        "{}; poll: {} arms, {} re-arms (a multishot that ended without a close), {} cancels ({} \
         submitted alone, the others with the next arm; {} found no poll), {} CQEs read ({} closing, {} of old \
         connections ignored), {} CQ overflows; blocking reads interrupted (EINTR): {}",
        c.describe(),
        u.arms,
        u.rearms,
        u.cancels,
        u.cancels_alone,
        u.cancels_failed,
        u.cqes,
        u.closing,
        u.stale,
        u.overflow,
        c.interrupted
    );
    if u.mask & libc::POLLIN as u32 != 0 {
        s.push_str(&format!(
            "; POLLIN completions: {} of responses (dropped when complete), {} found by a check (bytes \
             after a response: not written to)",
            u.pollin_settled, u.pollin_found
        ));
    }
    if u.audit {
        s.push_str(&format!(
            "; audit: the ring said open and the peek found the connection closed {} times ({} of them \
             the close's CQE was in the ring right after the peek's syscall), in {} audits of {} ns \
             each on average (ring read to peek return)",
            u.audit_missed,
            u.audit_late,
            u.audits,
            u.audit_window_ns.checked_div(u.audits).unwrap_or(0)
        ));
    }
    s
}

/// The ring and the state of the current connection's poll.
pub struct PollCheck {
    ring: IoUring,
    /// The current connection's generation: its poll's user_data.
    generation: u64,
    /// The current connection's poll is live (armed, no CQE without IORING_CQE_F_MORE since).
    armed: bool,
    /// A cancellation waits in the SQ for the next submit.
    pending_cancel: bool,
    /// What [`PollCheck::settle`] found (a close), for the next check.
    pending: Found,
    audit: bool,
    /// The poll's events ([`MASK`] or [`MASK_IN`]).
    mask: u32,
    /// POLLIN completions read: dropped when a response completed ([`PollCheck::settle`]), or
    /// found by a check (bytes after the response: the connection is not written to).
    pub pollin_settled: u64,
    pub pollin_found: u64,
    pub arms: u64,
    pub rearms: u64,
    pub cancels: u64,
    pub cancels_alone: u64,
    pub cancels_failed: u64,
    pub cqes: u64,
    pub closing: u64,
    pub stale: u64,
    pub overflow: u32,
    pub audit_missed: u64,
    pub audit_late: u64,
    /// Audits, and their windows added up: from before the ring's read to after the peek's
    /// return (a close processed in that window is seen by the peek and could not have been by
    /// the ring).
    pub audits: u64,
    pub audit_window_ns: u64,
}

impl PollCheck {
    #[cfg(test)]
    pub fn new(audit: bool) -> Result<PollCheck, String> {
        PollCheck::with_mask(audit, MASK)
    }

    pub fn with_mask(audit: bool, mask: u32) -> Result<PollCheck, String> {
        let ring = IoUring::new(ENTRIES).map_err(|e| {
            format!(
                "io_uring setup failed: {e} (kernel.io_uring_disabled = {})",
                std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                    .map_or_else(|_| "?".into(), |v| v.trim().to_string())
            )
        })?;
        Ok(PollCheck {
            ring,
            generation: 0,
            armed: false,
            pending_cancel: false,
            pending: Found::Open,
            audit,
            mask,
            pollin_settled: 0,
            pollin_found: 0,
            arms: 0,
            rearms: 0,
            cancels: 0,
            cancels_alone: 0,
            cancels_failed: 0,
            cqes: 0,
            closing: 0,
            stale: 0,
            overflow: 0,
            audit_missed: 0,
            audit_late: 0,
            audits: 0,
            audit_window_ns: 0,
        })
    }

    /// Arms a multishot poll on `s` under a new generation (one `io_uring_enter`, which also
    /// carries a pending cancellation of the previous connection's poll).
    pub fn arm(&mut self, s: &TcpStream) -> io::Result<()> {
        self.arm_poll(s)?;
        self.arms += 1;
        Ok(())
    }

    fn arm_poll(&mut self, s: &TcpStream) -> io::Result<()> {
        self.generation += 1;
        let sqe =
            opcode::PollAdd::new(Fd(s.as_raw_fd()), self.mask).multi(true).build().user_data(self.generation);
        self.push(&sqe)?;
        self.submit()?;
        self.pending_cancel = false;
        self.pending = Found::Open;
        self.armed = true;
        Ok(())
    }

    /// Before a write on `s`: reads the completion queue (no syscall). A CQE of the current
    /// generation with POLLRDHUP / POLLHUP / POLLERR, or an error other than ECANCELED, is a
    /// close. A multishot that ended without one is armed again (a syscall).
    pub fn check(&mut self, s: &TcpStream) -> Found {
        let start = self.audit.then(std::time::Instant::now);
        let mut found = self.drain(false);
        if let Some(start) = start
            && found == Found::Open
        {
            found = peek(s);
            self.audit_window_ns += start.elapsed().as_nanos() as u64;
            self.audits += 1;
            if found != Found::Open {
                self.audit_missed += 1;
                // The peek's syscall has been through the kernel: its return ran the task_work.
                if self.drain(false) != Found::Open {
                    self.audit_late += 1;
                }
            }
        }
        if found == Found::Open && !self.armed {
            self.rearms += 1;
            if self.arm_poll(s).is_err() {
                // Without a poll the check would be blind: treat the connection as lost.
                return Found::Error;
            }
        }
        found
    }

    /// CQEs waiting in the completion queue (read without consuming them), and a close that
    /// [`PollCheck::settle`] took from it for the next check.
    #[cfg(test)]
    pub fn ready(&mut self) -> usize {
        self.ring.completion().len() + usize::from(self.pending != Found::Open)
    }

    /// A response is complete: its bytes have all been read, so a POLLIN completion in the ring
    /// now was posted for them (the task_work re-polls the socket before posting, and runs at
    /// the latest on the return of the read that took the last bytes). They are dropped; a close
    /// found meanwhile stays for the next check.
    pub fn settle(&mut self) {
        if self.mask & libc::POLLIN as u32 != 0 {
            self.pending = self.drain(true);
        }
    }

    /// Reads every CQE there is (the tail with acquire ordering, the head stored back with
    /// release: memory only), and tells whether the current generation's poll saw a close (or,
    /// unless `settling`, bytes).
    fn drain(&mut self, settling: bool) -> Found {
        let mut found = std::mem::replace(&mut self.pending, Found::Open);
        let mut cq = self.ring.completion();
        self.overflow = cq.overflow();
        for cqe in &mut cq {
            self.cqes += 1;
            let (data, res) = (cqe.user_data(), cqe.result());
            if data & CANCEL != 0 {
                // A cancellation's own CQE: 0 (removed), or -ENOENT if the poll had ended.
                if res != 0 {
                    self.cancels_failed += 1;
                }
                continue;
            }
            if data != self.generation {
                self.stale += 1; // an old connection's (its cancellation's -ECANCELED, or late)
                continue;
            }
            if !cqueue::more(cqe.flags()) {
                self.armed = false;
            }
            let closed = if res < 0 {
                (res != -libc::ECANCELED).then_some(Found::Error)
            } else if res as u32 & (libc::POLLHUP | libc::POLLERR) as u32 != 0 {
                Some(Found::Error)
            } else if res as u32 & libc::POLLRDHUP as u32 != 0 {
                Some(Found::Fin)
            } else if res as u32 & libc::POLLIN as u32 != 0 {
                if settling {
                    self.pollin_settled += 1;
                    None
                } else {
                    self.pollin_found += 1;
                    Some(Found::Stray)
                }
            } else {
                None
            };
            if let Some(c) = closed {
                self.closing += u64::from(c != Found::Stray);
                if found == Found::Open || c == Found::Error {
                    found = c;
                }
            }
        }
        found
    }

    /// The current connection is about to be dropped: its poll is cancelled (if still live) so
    /// that the ring lets go of the socket. The cancellation waits for the next submit.
    pub fn release(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let sqe = opcode::PollRemove::new(self.generation).build().user_data(CANCEL | self.generation);
        if self.push(&sqe).is_ok() {
            self.pending_cancel = true;
            self.cancels += 1;
        }
    }

    /// Submits a pending cancellation now (no arm follows: the command failed).
    pub fn flush(&mut self) {
        if self.pending_cancel && self.submit().is_ok() {
            self.pending_cancel = false;
            self.cancels_alone += 1;
        }
    }

    fn push(&mut self, sqe: &io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: PollAdd and PollRemove point at no user memory; a poll's fd stays open until
        // `release` has queued its removal (the socket is dropped after, the ring keeps its own
        // reference to the file until the removal is submitted).
        unsafe { self.ring.submission().push(sqe) }.map_err(|_| io::Error::other("submission queue full"))
    }

    fn submit(&mut self) -> io::Result<()> {
        for _ in 0..3 {
            match self.ring.submit() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r.map(drop),
            }
        }
        Err(io::Error::from(io::ErrorKind::Interrupted))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Shutdown, TcpListener};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(2);

    /// One close, timed: the peer's `shutdown(Write)` on another thread, while this thread spins
    /// in user space reading the completion queue (memory only: `Instant::now` is the vDSO's).
    /// Returns how long after the peer's `shutdown` returned (negative: before) the CQE was
    /// there, and how long after it was called. With `pin`, this thread is on CPU 0 and the
    /// peer on CPU 1 (the CQE then needs the kernel to interrupt this CPU: TWA_SIGNAL's IPI).
    /// With `by_peek`, the same spin asks the socket instead (`recv(MSG_PEEK)`, a syscall each
    /// turn): when the close is there for a syscall to see, the reference for the ring's lag.
    fn one_close(pin: bool, by_peek: bool) -> (i64, i64) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let mut ring = PollCheck::new(false).unwrap_or_else(|e| panic!("this test needs io_uring: {e}"));
        ring.arm(&client).unwrap();
        let go = Arc::new(AtomicBool::new(false));
        let times = Arc::new(Mutex::new(None));
        let peer = {
            let (go, times) = (go.clone(), times.clone());
            std::thread::spawn(move || {
                if pin {
                    crate::pin_this_thread(1).unwrap();
                }
                let deadline = Instant::now() + DEADLINE;
                while !go.load(Ordering::Acquire) {
                    assert!(Instant::now() < deadline, "peer: no go within {DEADLINE:?}");
                    std::hint::spin_loop();
                }
                let before = Instant::now();
                server.shutdown(Shutdown::Write).unwrap();
                *times.lock().unwrap() = Some((before, Instant::now()));
                server
            })
        };
        if pin {
            crate::pin_this_thread(0).unwrap();
        }
        let deadline = Instant::now() + DEADLINE;
        go.store(true, Ordering::Release);
        let mut spins = 0u32;
        while if by_peek { peek(&client) == Found::Open } else { ring.ready() == 0 } {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                assert!(Instant::now() < deadline, "the close's CQE did not show within {DEADLINE:?}");
            }
            std::hint::spin_loop();
        }
        let seen = Instant::now();
        let _server = peer.join().expect("peer");
        let (before, after) = times.lock().unwrap().expect("the peer's times");
        assert_eq!(ring.check(&client), Found::Fin);
        let signed = |t: Instant| match seen.checked_duration_since(t) {
            Some(d) => d.as_nanos() as i64,
            None => -(t.duration_since(seen).as_nanos() as i64),
        };
        (signed(after), signed(before))
    }

    /// The close's CQE shows while the client never enters the kernel: the completion does not
    /// wait for the client's next syscall (no COOP_TASKRUN / DEFER_TASKRUN).
    #[test]
    fn the_close_shows_in_the_ring_without_a_syscall() {
        for _ in 0..3 {
            one_close(false, false);
        }
    }

    /// How late the ring shows a close, on two CPUs (client on CPU 0, peer on CPU 1), against
    /// how late a `recv(MSG_PEEK)` does: 200 closes each, interleaved. A diagnostic (prints,
    /// asserts nothing on timing):
    /// `cargo test --release -p compare -- --ignored --nocapture ring_lag`.
    #[test]
    #[ignore]
    fn ring_lag_on_two_cpus() {
        let (mut ring, mut sock) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            ring.push(one_close(true, false));
            sock.push(one_close(true, true));
        }
        let q = |v: &[i64], p: usize| v[(v.len() - 1) * p / 100];
        for (who, v) in [("ring (CQE)", ring), ("peek (syscall)", sock)] {
            let (mut v, mut called): (Vec<i64>, Vec<i64>) = v.into_iter().unzip();
            v.sort_unstable();
            called.sort_unstable();
            println!(
                "{who}: close seen after the peer's shutdown() returned, ns: min {} p10 {} p50 {} \
                 p90 {} p99 {} max {}; after it was called: p50 {}",
                v[0],
                q(&v, 10),
                q(&v, 50),
                q(&v, 90),
                q(&v, 99),
                v[v.len() - 1],
                q(&called, 50)
            );
        }
    }
}
