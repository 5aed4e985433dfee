//! `--halt-poll-ns N`: the guest's halt polling (`cpuidle-haltpoll`), which decides how fast an
//! idle vCPU wakes. With `guest_halt_poll_ns` 0 an idle vCPU halts at once and a wake-up from
//! another vCPU costs a VM exit and entry (the slow regime, ~60–80 µs a loopback round trip
//! across two vCPUs); with it at e.g. 200,000 an idle vCPU polls for up to 200 µs before
//! halting, and a wake-up within that time is a memory write (the fast regime the performance
//! issue saw on other hosts, ~5–25 µs). `--pin split --halt-poll-ns 200000` so reproduces the
//! fast cross-vCPU regime on any KVM guest with the haltpoll driver; `--pin same` the
//! one-vCPU regime (a context switch). Root only; the old value is put back when the run ends,
//! and also when the run is ended by SIGINT, SIGTERM or SIGHUP (a run killed half-way used to
//! leave the VM in the regime it had set).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const PARAM: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";
/// The same path for the signal handler, which may not allocate.
const PARAM_C: &std::ffi::CStr = c"/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// What the signal handler puts back, while a guard lives.
static PREVIOUS: AtomicU64 = AtomicU64::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);

/// Restores the previous `guest_halt_poll_ns` when dropped.
pub struct HaltPoll {
    previous: u64,
}

impl HaltPoll {
    /// Sets `guest_halt_poll_ns` to `ns` for as long as the guard lives.
    pub fn set(ns: u64) -> Result<HaltPoll, String> {
        let previous = current().ok_or_else(|| {
            format!("{PARAM} is not readable: no cpuidle-haltpoll driver here (not a KVM guest?)")
        })?;
        PREVIOUS.store(previous, Ordering::SeqCst);
        ARMED.store(true, Ordering::SeqCst);
        install_restore_on_signal();
        write(ns)?;
        Ok(HaltPoll { previous })
    }
}

impl Drop for HaltPoll {
    fn drop(&mut self) {
        ARMED.store(false, Ordering::SeqCst);
        if let Err(e) = write(self.previous) {
            eprintln!("--halt-poll-ns: could not restore {PARAM} to {}: {e}", self.previous);
        }
    }
}

/// The current `guest_halt_poll_ns`, if the driver is there.
pub fn current() -> Option<u64> {
    std::fs::read_to_string(PARAM).ok()?.trim().parse().ok()
}

fn write(ns: u64) -> Result<(), String> {
    std::fs::write(PARAM, ns.to_string()).map_err(|e| format!("cannot write {PARAM} (root only): {e}"))
}

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// For the signals that end a run from outside: put the old value back, then die of the signal
/// as before (its default action, re-raised). Child processes start by `exec`, which resets the
/// handler.
fn install_restore_on_signal() {
    for sig in SIGNALS {
        // SAFETY: a zeroed `sigaction` is a valid "no flags, empty mask" value; the handler
        // below is async-signal-safe (atomics, open/write/close, signal, raise; no allocation).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = restore_and_reraise as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

extern "C" fn restore_and_reraise(sig: libc::c_int) {
    if ARMED.swap(false, Ordering::SeqCst) {
        let mut digits = [0u8; 20];
        let text = decimal(PREVIOUS.load(Ordering::SeqCst), &mut digits);
        // SAFETY: async-signal-safe calls on a NUL-terminated path and a live buffer.
        unsafe {
            let fd = libc::open(PARAM_C.as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                libc::write(fd, text.as_ptr().cast(), text.len());
                libc::close(fd);
            }
        }
    }
    // SAFETY: restoring the default action and re-raising is async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// `n` in decimal, written into `buf` without allocating (for the signal handler).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_writes_every_digit() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(200_000, &mut buf), b"200000");
        assert_eq!(decimal(u64::MAX, &mut buf), u64::MAX.to_string().as_bytes());
    }
}
