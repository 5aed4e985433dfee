//! One simulated TCP connection as the client's socket sees it: a state, a receive queue, a
//! pending socket error, the bytes in flight towards the device, and what the driver has seen.
//!
//! Every state change goes through [`Sock::transition`], which logs it with the virtual time.
//! The model is deliberately plain: no sequence numbers, no retransmissions, no windows beyond
//! one send-buffer limit. What it keeps is what the driver can observe through the [`Kernel`]
//! calls: readiness edges, short writes, `WouldBlock`, 0 for FIN, the socket error for RST and
//! for a failed connect, and the order in which these arrive.
//!
//! [`Kernel`]: crate::os::Kernel

use std::collections::VecDeque;
use std::io;

use super::Ns;
use super::wire::Outgoing;

/// Where a client socket is, from its `open` to its `close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Opened for a connect set for later (`Kernel::open_at`), not started: like Linux's
    /// unconnected socket, epoll reports it hung up and writable.
    Unstarted,
    /// SYN sent, no answer yet (a dropped SYN stays here until the driver gives up).
    SynSent,
    /// The connect failed later (RST to the SYN, ICMP unreachable): the error waits in
    /// [`Sock::err`] for `connect_result` (Linux: `SO_ERROR`).
    Failed,
    /// Handshake done; data flows both ways.
    Established,
    /// The device's FIN arrived, after any data it sent: reads drain the queue, then return 0.
    /// Writes still succeed locally (the device's kernel will answer them with RST).
    PeerFin,
    /// A RST arrived: the next read, peek or write reports `ECONNRESET` once (the socket error),
    /// later reads 0 and later writes `EPIPE`.
    Reset,
    /// Closed by the driver; the stream handle is gone.
    Closed,
}

/// What happens to a socket: the inputs of [`Sock::transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// The timed connect started (the SYN goes out).
    Start,
    /// The SYN-ACK arrived.
    Connected,
    /// The connect failed with this error (refused, unreachable, ...).
    ConnectFailed(io::ErrorKind),
    /// The device's FIN arrived.
    Fin,
    /// The device's RST arrived.
    Rst,
    /// The driver closed the socket.
    Close,
}

/// The client's end of one simulated connection.
#[derive(Debug)]
pub(crate) struct Sock {
    /// The driver's token (slot index) it was opened under.
    pub token: usize,
    pub state: State,
    /// Bytes from the device, not yet read.
    pub rx: VecDeque<u8>,
    /// Bytes from the device in all, and read (not peeked) in all.
    pub rx_in: u64,
    pub rx_out: u64,
    /// The pending socket error (`SO_ERROR`), reported once by a read, peek, write or
    /// `connect_result`.
    pub err: Option<io::ErrorKind>,
    /// Bytes written and not yet consumed by the device: they hold the send buffer.
    pub unacked: usize,
    /// On the kernel's ready list (edge-triggered: an arrival queues it once).
    pub queued: bool,
    /// The driver has seen this socket's FIN or RST: a read or peek returned 0 or an error, or
    /// a `wait` reported it `closing`. From then on a write with bytes is a violation.
    pub seen_close: bool,
    /// `seen_close` before the last `wait` reported this socket (restored if the report was
    /// withheld from the driver: see `Faulty`).
    pub seen_before_report: bool,
    /// When the device's FIN or RST (or a failed connect) arrived: the kernel's syscall count
    /// at delivery. The pre-write invariant compares it with the driver's last chances to see it.
    pub closed_at: Option<u64>,
    /// The request stream written on it: where each request starts.
    pub out: Outgoing,
    /// The request being written: its index in the kernel's list of request starts.
    pub current_start: Option<usize>,
    /// Bytes the driver wrote on it in all.
    pub written: u64,
    /// Opened to the device's address (else to one where nothing listens).
    pub to_device: bool,
    /// Its timed connect failed as it started (the error in `err` until reported).
    pub start_failed: bool,
}

impl Sock {
    pub(crate) fn new(token: usize) -> Sock {
        Sock {
            token,
            state: State::SynSent,
            rx: VecDeque::new(),
            rx_in: 0,
            rx_out: 0,
            err: None,
            unacked: 0,
            queued: false,
            seen_close: false,
            seen_before_report: false,
            closed_at: None,
            out: Outgoing::default(),
            current_start: None,
            written: 0,
            to_device: true,
            start_failed: false,
        }
    }

    /// The one place a socket changes state. `discard_on_rst`: a RST throws away what was
    /// received and not read (Windows does; Linux's `tcp_recvmsg` hands out queued data before
    /// it reports the error — both are modelled, per scenario). Inputs that do not apply to the
    /// state (a FIN after the close, a second RST) change nothing.
    pub(crate) fn transition(&mut self, id: usize, input: Input, discard_on_rst: bool, now: Ns) {
        use State::*;
        let next = match (self.state, input) {
            (Closed, _) => Closed,
            (_, Input::Close) => Closed,
            (Unstarted, Input::Start) => {
                // What a wait reported of the unconnected socket was not the device's close.
                self.seen_close = false;
                self.seen_before_report = false;
                SynSent
            }
            (SynSent, Input::Connected) => Established,
            (SynSent, Input::ConnectFailed(kind)) => {
                self.err = Some(kind);
                Failed
            }
            // A RST answering the SYN is a refused connect.
            (SynSent, Input::Rst) => {
                self.err = Some(io::ErrorKind::ConnectionRefused);
                Failed
            }
            (Established, Input::Fin) => PeerFin,
            (Established | PeerFin, Input::Rst) => {
                self.err = Some(io::ErrorKind::ConnectionReset);
                if discard_on_rst {
                    self.rx.clear();
                }
                Reset
            }
            (s, _) => s,
        };
        if next != self.state {
            log::trace!("sim t={}us sock={id} {:?} -> {next:?} ({input:?})", now / 1000, self.state);
            self.state = next;
        }
        if next == Closed {
            self.rx = VecDeque::new();
            self.queued = false;
        }
    }

    /// The socket's readiness now, as epoll re-polls it before reporting (`tcp_poll`), in mio's
    /// terms: `(readable, closing, writable)`.
    pub(crate) fn readiness(&self, sndbuf: usize) -> (bool, bool, bool) {
        let space = self.unacked < sndbuf;
        match self.state {
            State::SynSent | State::Closed => (false, false, false),
            // EPOLLHUP | EPOLLOUT (`tcp_poll` of a socket in TCP_CLOSE).
            State::Unstarted => (true, true, true),
            // EPOLLERR | EPOLLHUP | EPOLLIN | EPOLLRDHUP, no EPOLLOUT.
            State::Failed => (true, true, false),
            State::Established => (!self.rx.is_empty(), false, space),
            State::PeerFin | State::Reset => (true, true, space),
        }
    }

    /// `recv` (or with `peek`, `MSG_PEEK` of at most `buf.len()` bytes).
    pub(crate) fn recv(&mut self, buf: &mut [u8], peek: bool) -> io::Result<usize> {
        match self.state {
            State::Closed | State::Unstarted => Err(io::ErrorKind::NotConnected.into()),
            State::SynSent => Err(io::ErrorKind::WouldBlock.into()),
            _ if !self.rx.is_empty() => {
                let n = buf.len().min(self.rx.len());
                for (b, x) in buf.iter_mut().zip(self.rx.iter()) {
                    *b = *x;
                }
                if !peek {
                    self.rx.drain(..n);
                    self.rx_out += n as u64;
                }
                Ok(n)
            }
            _ => {
                if let Some(kind) = self.err.take() {
                    self.seen_close = true;
                    return Err(kind.into());
                }
                match self.state {
                    State::PeerFin | State::Reset | State::Failed => {
                        self.seen_close = true;
                        Ok(0)
                    }
                    _ => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }

    /// How much of `len` bytes a `send` accepts now (the caller queues them to the device), or
    /// its error.
    pub(crate) fn send(&mut self, len: usize, sndbuf: usize) -> io::Result<usize> {
        match self.state {
            State::Closed | State::Unstarted => Err(io::ErrorKind::NotConnected.into()),
            State::SynSent => Err(io::ErrorKind::WouldBlock.into()),
            State::Failed | State::Reset => Err(self.err.take().unwrap_or(io::ErrorKind::BrokenPipe).into()),
            State::Established | State::PeerFin => {
                let n = len.min(sndbuf.saturating_sub(self.unacked));
                if n == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                self.unacked += n;
                self.written += n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_before_fin_then_zero() {
        let mut s = Sock::new(0);
        s.transition(0, Input::Connected, false, 0);
        s.rx.extend(b"ok");
        s.transition(0, Input::Fin, false, 0);
        let mut b = [0u8; 8];
        assert_eq!(s.recv(&mut b, true).unwrap(), 2);
        assert!(!s.seen_close);
        assert_eq!(s.recv(&mut b, false).unwrap(), 2);
        assert_eq!(s.recv(&mut b, false).unwrap(), 0);
        assert!(s.seen_close);
    }

    #[test]
    fn rst_keeps_or_discards_unread_data() {
        for discard in [false, true] {
            let mut s = Sock::new(0);
            s.transition(0, Input::Connected, discard, 0);
            s.rx.extend(b"HTTP/1.1 413");
            s.transition(0, Input::Rst, discard, 0);
            let mut b = [0u8; 64];
            let first = s.recv(&mut b, false);
            if discard {
                assert_eq!(first.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
            } else {
                assert_eq!(first.unwrap(), 12);
                assert_eq!(s.recv(&mut b, false).unwrap_err().kind(), io::ErrorKind::ConnectionReset);
            }
            assert_eq!(s.recv(&mut b, false).unwrap(), 0);
            assert_eq!(s.send(1, 10).unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        }
    }

    #[test]
    fn short_writes_then_would_block() {
        let mut s = Sock::new(0);
        s.transition(0, Input::Connected, false, 0);
        assert_eq!(s.send(100, 64).unwrap(), 64);
        assert_eq!(s.send(100, 64).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        s.unacked = 0;
        assert_eq!(s.readiness(64), (false, false, true));
    }
}
