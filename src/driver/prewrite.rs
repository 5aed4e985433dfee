//! The pre-write check's one decision: may a zero-timeout poll vouch for the socket a request is
//! about to be written on, or must that socket be peeked?
//!
//! On Linux a zero-timeout `epoll_wait` answers "has a FIN, an RST or a stray byte arrived on
//! this socket?" for every socket at once, in 190 ns where a `MSG_PEEK` of one socket takes
//! 460 ns (PERFORMANCE.md). It is exact, not a hint: epoll re-polls a socket before reporting it,
//! so a registered socket that has data, a FIN or an error *now* is reported (with
//! edge-triggering, because anything that arrived since it was last reported queued it), and one
//! that is not reported has none of them. What the poll reports is read at once, so the engine
//! learns of the FIN (or the reset, or the unsolicited bytes) before the write, exactly as from
//! the peek.

/// What the driver knows when a request's pre-write check comes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vouch {
    /// The kernel's zero-timeout wait reports every socket with news *now* (`Caps`).
    pub zero_wait_is_exact: bool,
    /// A busy-poll spin read a socket directly since the last poll: epoll's ready list still
    /// holds it, and a poll would spend its time re-polling and unlinking it.
    pub read_around_poller: bool,
    /// A poll earlier in this batch of actions vouched for every socket, reported nothing, and
    /// nothing that takes time (a connect, a write, a close) ran since.
    pub batch_vouched: bool,
    /// Reads paused at their budget: the poller would not announce their data again.
    pub reads_paused: bool,
}

/// How the socket is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// `MSG_PEEK` of this socket.
    Peek,
    /// The batch's earlier poll stands for it.
    Trust,
    /// A zero-timeout poll, whose events are read at once; it vouches if it succeeded, its
    /// event buffer was not full and no read paused (else: peek).
    Poll,
}

impl Vouch {
    /// First matching row wins:
    ///
    /// | # | wait exact | read around the poller | batch vouched | reads paused | → | why |
    /// |---|---|---|---|---|---|---|
    /// | 1 | no | | | | `Peek` | no other kernel promises the exact poll |
    /// | 2 | yes | yes | | | `Peek` | a poll would re-poll the spun socket: 0.15–0.8 µs more per round trip than the peek (`benches/turnaround.rs`) |
    /// | 3 | yes | no | yes | | `Trust` | requests submitted together share one poll |
    /// | 4 | yes | no | no | yes | `Peek` | the poll could not vouch for a socket whose reads are paused |
    /// | 5 | yes | no | no | no | `Poll` | |
    pub(crate) fn decide(self) -> Check {
        if !self.zero_wait_is_exact || self.read_around_poller {
            Check::Peek
        } else if self.batch_vouched {
            Check::Trust
        } else if self.reads_paused {
            Check::Peek
        } else {
            Check::Poll
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vouch_table() {
        let v = |zero_wait_is_exact, read_around_poller, batch_vouched, reads_paused| {
            Vouch { zero_wait_is_exact, read_around_poller, batch_vouched, reads_paused }.decide()
        };
        // Row 1: every combination without an exact wait peeks.
        for a in [false, true] {
            for b in [false, true] {
                for c in [false, true] {
                    assert_eq!(v(false, a, b, c), Check::Peek);
                }
            }
        }
        assert_eq!(v(true, true, true, false), Check::Peek); // 2
        assert_eq!(v(true, false, true, true), Check::Trust); // 3
        assert_eq!(v(true, false, false, true), Check::Peek); // 4
        assert_eq!(v(true, false, false, false), Check::Poll); // 5
    }
}
