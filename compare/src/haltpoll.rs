//! `--halt-poll-ns N`: the guest's halt polling (`cpuidle-haltpoll`), which decides how fast an
//! idle vCPU wakes. With `guest_halt_poll_ns` 0 an idle vCPU halts at once and a wake-up from
//! another vCPU costs a VM exit and entry (the slow regime, ~60–80 µs a loopback round trip
//! across two vCPUs); with it at e.g. 200,000 an idle vCPU polls for up to 200 µs before
//! halting, and a wake-up within that time is a memory write (the fast regime the performance
//! issue saw on other hosts, ~5–25 µs). `--pin split --halt-poll-ns 200000` so reproduces the
//! fast cross-vCPU regime on any KVM guest with the haltpoll driver; `--pin same` the
//! one-vCPU regime (a context switch). Root only; the old value is put back when the run ends.

const PARAM: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

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
        write(ns)?;
        Ok(HaltPoll { previous })
    }
}

impl Drop for HaltPoll {
    fn drop(&mut self) {
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
