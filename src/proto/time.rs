//! Instants from a caller's durations, without overflow.
//!
//! `Instant + Duration` panics when the sum is not representable, and `Duration::MAX` is the
//! natural way to say "no limit": as a request, connect or idle timeout it panicked in
//! `submit`, and in `SharedClient` killed the loop thread. Every instant the crate derives
//! from a caller's duration goes through [`after`], which saturates to a point so far ahead
//! that it is never reached (a timer set there never fires: "no limit").

use std::time::{Duration, Instant};

/// Far enough ahead to never be reached, near enough to be representable on every platform
/// (`Instant` holds at least ±292 years of nanoseconds on 64-bit Unix and Windows).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, or, where that is not representable, the furthest instant at most [`FOREVER`]
/// ahead that is.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    if let Some(t) = now.checked_add(d) {
        return t;
    }
    // Halve until representable: at most ~64 steps, and only for absurd durations.
    let mut step = FOREVER.min(d);
    loop {
        if let Some(t) = now.checked_add(step) {
            return t;
        }
        if step.is_zero() {
            return now;
        }
        step /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_duration_overflows() {
        let now = Instant::now();
        for d in
            [Duration::ZERO, Duration::from_millis(5), FOREVER, Duration::from_secs(u64::MAX), Duration::MAX]
        {
            let t = after(now, d);
            assert!(t >= now);
            assert!(t.saturating_duration_since(now) <= d);
        }
        assert_eq!(after(now, Duration::from_millis(5)), now + Duration::from_millis(5));
        assert!(after(now, Duration::MAX) >= now + Duration::from_secs(365 * 24 * 3600));
    }
}
