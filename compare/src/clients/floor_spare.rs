//! Floor 4: a blocking `std::net::TcpStream` with a warm spare, the reference of the
//! fresh-connection target (scenarios (b), (b100), (b1ms), (c2)): right after reading each
//! response it connects a new socket (blocking connect, TCP_NODELAY) and keeps it; the next
//! command is sent on that socket, and the old one is closed. It never sends a second request
//! on a connection: the least a fresh socket per command can cost a caller-driven client.
//!
//! Where the connect falls: inside the timed `command()` call, after the response has been read
//! (the harness times the whole call, so the spare's connect is charged to the command before
//! the one that uses it). This is what the issue describes ("right after each response it
//! connects a new socket and sends the next command on it"). The alternative, connecting at the
//! start of the next call, would be a plain connect per command (what minreq and attohttpc do)
//! and no spare at all. What the spare takes out of a command is not the connect syscall but
//! the device's side of it: by the time the next command is written, the device has had the
//! time since the connect (in (b100), (b1ms) and (c2), the whole pause) to accept the
//! connection, so the request does not queue behind the accept. On loopback a blocking connect
//! returns once the kernel has run the handshake (the SYN-ACK is processed in the connecting
//! thread's own softirq), so what it costs the timed call is CPU, not a wait on the device.
//!
//! In (c2) the spare idles 2.5 ms and the device closes it at 2 ms: the send on it then fails
//! (the write, or EOF / reset before any response byte) and, as the other floors do, the floor
//! connects again and sends the command once more. A floor that lost commands would be no
//! floor. Those resends are counted in its notes.
//!
//! `floor-connect` (experimental, run when named) is the same code without the spare: it
//! connects at the start of each call, as minreq and attohttpc do, with the floors' minimal
//! code. Beside `floor-spare` it tells whether a plain connect beats a warm spare because of
//! the pattern (where the connect falls) or because of a client's implementation.
//! `floor-connect-watchdog` (experimental) adds what attohttpc does per connection: a watchdog
//! thread, spawned right after the connect, holding a clone of the socket to shut it down at
//! the deadline, and ending when the command drops its end of a channel. In the slow wake-up
//! regime that thread's start and exit on the client's vCPU are worth several microseconds a
//! command (PERFORMANCE.md, issue 16): what attohttpc's lead there is made of.

use std::io;
use std::net::{SocketAddr, TcpStream};

use super::raw::{Lost, Parsed, connect, encode, is_closed, parse};
use super::{HttpClient, Method, REQUEST_TIMEOUT};

pub struct FloorSpare {
    addr: SocketAddr,
    host: String,
    /// The spare: connected after the previous response, not yet used.
    spare: Option<TcpStream>,
    req: Vec<u8>,
    buf: Box<[u8]>,
    /// Commands whose spare turned out closed, sent again on a new connection.
    resent: u64,
    /// Spares that could not be connected (the next command then connects first).
    spare_failed: u64,
    connects: Connects,
}

/// When the floor connects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Connects {
    /// `floor-spare`: right after each response, the spare for the next command.
    Ahead,
    /// `floor-connect`: at the start of every call.
    PerCall,
    /// `floor-connect-watchdog`: at the start of every call, with a thread per connection, as
    /// attohttpc's deadline watchdog.
    PerCallWithWatchdog,
}

pub fn make(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(floor(addr, Connects::Ahead)))
}

/// `floor-connect`: a connect per command, at the start of the call.
pub fn make_connect(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(floor(addr, Connects::PerCall)))
}

/// `floor-connect-watchdog`: the same, with a watchdog thread per connection.
pub fn make_connect_watchdog(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(floor(addr, Connects::PerCallWithWatchdog)))
}

fn floor(addr: SocketAddr, connects: Connects) -> FloorSpare {
    FloorSpare {
        addr,
        host: addr.to_string(),
        spare: None,
        req: Vec::with_capacity(512),
        buf: vec![0; 16 * 1024].into_boxed_slice(),
        resent: 0,
        spare_failed: 0,
        connects,
    }
}

/// A blocking connect with TCP_NODELAY and the request timeout on reads.
fn open(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = connect(addr)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    Ok(s)
}

impl HttpClient for FloorSpare {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        encode(&mut self.req, method, url, &self.host, body);
        // The spare if there is one (it is not fresh: it may have idled out), else a new one.
        let (mut conn, mut fresh) = match self.spare.take() {
            Some(s) => (s, false),
            None => (open(self.addr).map_err(|e| format!("connect: {e}"))?, true),
        };
        // Ends when this call returns (its sender dropped), as attohttpc's ends with the response.
        let _watchdog = if self.connects == Connects::PerCallWithWatchdog {
            Some(watchdog(&conn).map_err(|e| format!("watchdog: {e}"))?)
        } else {
            None
        };
        let len = loop {
            match exchange(&mut conn, &self.req, &mut self.buf) {
                Ok(n) => break n,
                Err(Lost::Closed(_)) if !fresh => {
                    self.resent += 1;
                    conn = open(self.addr).map_err(|e| format!("connect: {e}"))?;
                    fresh = true;
                }
                Err(Lost::Closed(e) | Lost::Other(e)) => return Err(e),
            }
        };
        // Right after the response: the spare for the next command, then the used socket closed.
        if self.connects == Connects::Ahead {
            match open(self.addr) {
                Ok(s) => self.spare = Some(s),
                Err(_) => self.spare_failed += 1,
            }
        }
        drop(conn);
        Ok(len)
    }

    fn notes(&self) -> Option<String> {
        Some(format!(
            "{} commands found their spare closed and were sent again on a new connection; {} spares \
             failed to connect",
            self.resent, self.spare_failed
        ))
    }
}

/// attohttpc's deadline watchdog: a thread holding a clone of the socket, which it would shut
/// down at the request's deadline unless the returned sender is dropped first.
fn watchdog(s: &TcpStream) -> io::Result<std::sync::mpsc::Sender<()>> {
    let clone = s.try_clone()?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(REQUEST_TIMEOUT) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            let _ = clone.shutdown(std::net::Shutdown::Both);
        }
    });
    Ok(tx)
}

/// Writes the request and reads the response on `s`, blocking.
fn exchange(s: &mut TcpStream, req: &[u8], buf: &mut [u8]) -> Result<usize, Lost> {
    let mut off = 0;
    while off < req.len() {
        match io::Write::write(s, &req[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_closed(&e) && off == 0 => return Err(Lost::Closed(format!("write: {e}"))),
            Err(e) => return Err(Lost::Other(format!("write: {e}"))),
        }
    }
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(Lost::Other("response larger than the buffer".into()));
        }
        match io::Read::read(s, &mut buf[filled..]) {
            Ok(0) if filled == 0 => return Err(Lost::Closed("closed before the response".into())),
            Ok(0) => return Err(Lost::Other("closed mid-response".into())),
            Ok(n) => {
                filled += n;
                if let Parsed::Done(len) = parse(&buf[..filled]).map_err(Lost::Other)? {
                    return Ok(len);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_closed(&e) && filled == 0 => return Err(Lost::Closed(format!("read: {e}"))),
            Err(e) => return Err(Lost::Other(format!("read: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use super::*;
    use crate::device::{BODY, Device, Mode};

    /// Waits (bounded) until the device's counter of connections accepted reaches `n`, and
    /// returns (served, accepted): the device accepts a spare on its own thread, after the call
    /// that opened it returned.
    fn settled(d: &Device, n: u64) -> (u64, u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let c = d.counters(0);
        while c.accepted.load(Relaxed) < n && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        (c.served.load(Relaxed), c.accepted.load(Relaxed))
    }

    /// One connection per command, each opened after the previous response; the spare that idled
    /// out (closed at 2 ms, used after 10 ms: well after, so that a loaded machine's late idle
    /// close still comes first) is replaced and the command sent again: none lost.
    /// `floor-connect` opens each at the start of its call instead, and none is left over.
    #[test]
    fn a_new_connection_per_command_none_lost() {
        for (jit, mode, gap) in [
            (false, Mode::Fin, Duration::ZERO),
            (false, Mode::KeepAlive, Duration::ZERO),
            (false, Mode::IdleClose(Duration::from_millis(2)), Duration::from_millis(10)),
            (true, Mode::Fin, Duration::ZERO),
            (true, Mode::KeepAlive, Duration::ZERO),
            (true, Mode::IdleClose(Duration::from_millis(2)), Duration::from_millis(10)),
        ] {
            let d = Device::start(mode, 1, None, None, None).unwrap();
            let mut c = if jit { make_connect(d.addr(0)) } else { make(d.addr(0)) }.unwrap();
            // The watchdog variant: the same connections, and no command cut short by it.
            let mut w = if jit { Some(make_connect_watchdog(d.addr(0)).unwrap()) } else { None };
            let url = format!("http://{}/x", d.addr(0));
            for k in 0..6 {
                std::thread::sleep(gap);
                let m = if k % 2 == 0 { Method::Put } else { Method::Get };
                assert_eq!(c.command(m, &url, b"{}"), Ok(BODY.len()), "{mode:?}, command {k}");
                if let Some(w) = &mut w {
                    assert_eq!(w.command(m, &url, b"{}"), Ok(BODY.len()), "{mode:?}, command {k}, watchdog");
                }
            }
            // A spare per command, and in idle-close a resend on a new one for every command
            // after the first; without spares, one connection per command.
            let expected = match (jit, gap.is_zero()) {
                (true, _) => 12,
                (false, true) => 7,
                (false, false) => 12,
            };
            let (served, accepted) = settled(&d, expected);
            let commands = if jit { 12 } else { 6 };
            assert_eq!(
                served, commands,
                "{mode:?}, jit {jit}: one request per connection, each answered once"
            );
            assert_eq!(accepted, expected, "{mode:?}, jit {jit}: {:?}", c.notes());
        }
    }
}
