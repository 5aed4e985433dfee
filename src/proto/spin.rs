//! How long a wait for a response spins before it sleeps: an adaptive limit, the guest
//! kernel's halt-polling rule (`cpuidle-haltpoll`, and KVM's `halt_poll_ns`) applied in user
//! space.
//!
//! A thread that sleeps in `epoll_wait` pays a wake-up when the response arrives: on a VM whose
//! idle vCPU halts, tens of microseconds (a loopback command 64–68 µs sleeping against 18 µs
//! spinning, PERFORMANCE.md), on bare metal a C-state exit. Spinning avoids it, and costs CPU
//! for as long as it spins. It pays only for a response that arrives soon: so the spin is
//! bounded by a limit that follows what the waits were. The rule (each wait that ended in a
//! completion, `waited` from the moment the loop had nothing left to do to the completion):
//!
//! | the wait ended | decision | why |
//! |---|---|---|
//! | within the limit | [`Adjust::Keep`] | the spin caught it (it ended early: the limit only bounds a miss) |
//! | after the limit, within the cap | [`Adjust::Grow`]: ×2, at least [`SpinLimit::start`], at most the cap | a longer spin would have caught it |
//! | after the cap | [`Adjust::Shrink`]: ÷2, under [`SpinLimit::start`] to 0 | this device answers too slowly for a spin to pay |
//!
//! So a device that answers in 300 µs (the cap being 100) turns spinning off after at most
//! three commands (100 + 50 + 25 µs spun in vain), and it stays off while its answers take
//! longer than the cap; a device that answers within the cap, even by way of a sleep that paid
//! its wake-up, turns it back on. The cap is [`crate::ClientBuilder::adaptive_spin`]'s
//! (default [`DEFAULT_CAP`]); the kernel's halt polling has the same shape (grow ×2 from a
//! start when a wake-up came after the poll but within the maximum, shrink when it came after
//! the maximum).

use std::time::Duration;

/// The default cap: long enough for a loopback or same-host device answering through a
/// vCPU's wake-up (tens of µs) to be caught, short enough that a LAN device's round trip
/// (100 µs and more) switches spinning off.
pub(crate) const DEFAULT_CAP: Duration = Duration::from_micros(100);

/// What one finished wait does to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Adjust {
    Keep,
    Grow,
    Shrink,
}

/// The decision for a wait of `waited` under `limit`, with `cap` (the table in the module docs).
pub(crate) fn decide(waited: Duration, limit: Duration, cap: Duration) -> Adjust {
    if waited <= limit {
        Adjust::Keep
    } else if waited <= cap {
        Adjust::Grow
    } else {
        Adjust::Shrink
    }
}

/// The adaptive spin limit of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpinLimit {
    cap: Duration,
    limit: Duration,
}

impl SpinLimit {
    /// A limit under `cap`, starting at the cap (a first wait that the spin catches costs no
    /// more than the response takes). A zero cap: never spins.
    pub(crate) fn new(cap: Duration) -> SpinLimit {
        SpinLimit { cap, limit: cap }
    }

    /// How long the next wait may spin; zero: sleep at once.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// Where growth from zero starts, and under which a shrink goes to zero: a quarter of the
    /// cap (`cpuidle-haltpoll`: 50 µs of 200).
    pub(crate) fn start(&self) -> Duration {
        self.cap / 4
    }

    /// A wait that ended in a completion took `waited`; adjusts the limit.
    pub(crate) fn observe(&mut self, waited: Duration) -> Adjust {
        let adjust = decide(waited, self.limit, self.cap);
        match adjust {
            Adjust::Keep => {}
            Adjust::Grow => self.limit = self.limit.saturating_mul(2).max(self.start()).min(self.cap),
            Adjust::Shrink => {
                let half = self.limit / 2;
                self.limit = if half < self.start() { Duration::ZERO } else { half };
            }
        }
        adjust
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn the_case_table() {
        // (waited, limit, cap) -> decision, one row per line of the module docs' table, with
        // the boundaries on the side the table says.
        let rows = [
            (us(10), us(100), us(100), Adjust::Keep),
            (us(100), us(100), us(100), Adjust::Keep),
            (us(0), us(0), us(100), Adjust::Keep),
            (us(30), us(25), us(100), Adjust::Grow),
            (us(100), us(50), us(100), Adjust::Grow),
            (us(60), us(0), us(100), Adjust::Grow),
            (us(101), us(100), us(100), Adjust::Shrink),
            (us(5000), us(25), us(100), Adjust::Shrink),
            (us(1), us(0), us(0), Adjust::Shrink),
        ];
        for (waited, limit, cap, want) in rows {
            assert_eq!(decide(waited, limit, cap), want, "waited {waited:?}, limit {limit:?}, cap {cap:?}");
        }
    }

    #[test]
    fn a_slow_device_turns_spinning_off_within_three_waits_and_it_stays_off() {
        let mut s = SpinLimit::new(DEFAULT_CAP);
        assert_eq!(s.limit(), us(100));
        let mut spun = Duration::ZERO;
        for _ in 0..3 {
            spun += s.limit();
            assert_eq!(s.observe(us(300)), Adjust::Shrink);
        }
        assert_eq!(s.limit(), Duration::ZERO);
        assert_eq!(spun, us(175), "100 + 50 + 25 µs spun in vain, then none");
        for _ in 0..1000 {
            s.observe(us(300));
            assert_eq!(s.limit(), Duration::ZERO);
        }
    }

    #[test]
    fn a_device_answering_within_the_cap_turns_it_back_on_even_through_a_sleeps_wake_up() {
        let mut s = SpinLimit::new(DEFAULT_CAP);
        for _ in 0..3 {
            s.observe(us(300));
        }
        assert_eq!(s.limit(), Duration::ZERO);
        // Slept: the response plus the wake-up, 65 µs, within the cap.
        assert_eq!(s.observe(us(65)), Adjust::Grow);
        assert_eq!(s.limit(), us(25));
        assert_eq!(s.observe(us(65)), Adjust::Grow);
        assert_eq!(s.limit(), us(50));
        // Now the spin catches it at 18 µs: kept.
        assert_eq!(s.observe(us(18)), Adjust::Keep);
        assert_eq!(s.limit(), us(50));
        assert_eq!(s.observe(us(90)), Adjust::Grow);
        assert_eq!(s.observe(us(90)), Adjust::Keep);
        assert_eq!(s.limit(), us(100), "never past the cap");
    }

    #[test]
    fn a_zero_cap_never_spins() {
        let mut s = SpinLimit::new(Duration::ZERO);
        for waited in [us(0), us(1), us(50), us(10_000)] {
            s.observe(waited);
            assert_eq!(s.limit(), Duration::ZERO);
        }
    }

    #[test]
    fn no_duration_overflows() {
        let mut s = SpinLimit::new(Duration::MAX);
        s.observe(Duration::MAX);
        assert_eq!(s.limit(), Duration::MAX);
        s.observe(Duration::ZERO);
        let mut s = SpinLimit::new(Duration::MAX / 2 + us(1));
        s.limit = s.start();
        s.observe(s.cap);
        assert!(s.limit() <= s.cap);
    }
}
