//! The hand-written HTTP/1.1 the floors share: one request write, a response read by
//! Content-Length. Deliberately minimal: no chunked bodies, no header limits beyond the buffer.

use std::io;
use std::net::{SocketAddr, TcpStream};

use super::Method;

/// Appends the request to `out` (cleared first): request line, Host, Content-Length for a body.
pub fn encode(out: &mut Vec<u8>, method: Method, url: &str, host: &str, body: &[u8]) {
    use std::io::Write;
    out.clear();
    let path = path_of(url);
    let _ = write!(out, "{} {path} HTTP/1.1\r\nHost: {host}\r\n", method.as_str());
    if method == Method::Put {
        let _ = write!(out, "Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The origin-form target of an absolute `http[s]://host[:port]/path?query` URL.
fn path_of(url: &str) -> &str {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// What is known about a response from the bytes read so far.
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// The response is complete: body length.
    Done(usize),
}

/// Looks at the bytes received so far. A non-2xx status or a head without Content-Length is an
/// error (the device always sends one).
pub fn parse(buf: &[u8]) -> Result<Parsed, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(Parsed::Partial);
    };
    let head = &buf[..end];
    if !(head.starts_with(b"HTTP/1.1 2") || head.starts_with(b"HTTP/1.0 2")) {
        return Err(format!("bad status line: {:?}", String::from_utf8_lossy(&head[..head.len().min(40)])));
    }
    let mut len = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            len = std::str::from_utf8(&line[15..]).ok().and_then(|v| v.trim().parse::<usize>().ok());
        }
    }
    let len = len.ok_or("response without Content-Length")?;
    Ok(if buf.len() >= end + 4 + len { Parsed::Done(len) } else { Parsed::Partial })
}

/// A blocking connect with TCP_NODELAY.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Whether an I/O error means "the connection is gone" (the device closed or reset it), which
/// the floors answer by reconnecting and sending the command again.
pub fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof
    )
}

/// The `std::net::TcpStream` keep-alive floors: write the request, read until the Content-Length
/// is complete, keep the connection. Blocking reads sleep in the kernel (`recvfrom` wakes the
/// thread); `spin` makes the socket non-blocking and spins on `read` returning WouldBlock.
///
/// When the device has closed or reset the connection, the floor finds out on the next command:
/// with [`Check::None`] only from the exchange itself (the write fails, or the read sees EOF /
/// ECONNRESET before any response byte), with another [`Check`] before writing. Either way it
/// then reconnects and sends the command on the new connection.
pub struct StdFloor {
    addr: SocketAddr,
    host: String,
    spin: bool,
    check: Check,
    conn: Option<TcpStream>,
    req: Vec<u8>,
    buf: Box<[u8]>,
    pub counts: Counts,
}

/// What a floor does before writing on a connection it has used before.
pub enum Check {
    /// Nothing: no syscall, a close is found by the write or the read.
    None,
    /// `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte ([`peek`]): one syscall per command.
    Peek,
    /// A memory read of an io_uring completion queue, where a multishot poll for
    /// POLLRDHUP | POLLERR | POLLHUP armed at connect posts the close (`floor_uring.rs`).
    #[cfg(target_os = "linux")]
    Uring(Box<super::floor_uring::PollCheck>),
}

/// What a check found on a connection about to be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing: the request goes out on it.
    Open,
    /// The peer's FIN.
    Fin,
    /// A reset or another socket error.
    Error,
    /// Bytes nobody asked for (the connection cannot be trusted with a request).
    Stray,
}

/// A floor's own account of its connections (warm-up included).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Connections opened.
    pub connections: u64,
    /// Closes the check caught before a write: FIN, reset or error, stray bytes.
    pub caught_fin: u64,
    pub caught_error: u64,
    pub caught_stray: u64,
    /// Writes that went to a connection the peer had already closed: the exchange then failed
    /// with [`Lost::Closed`] and the command was sent again on a new connection. With
    /// [`Check::None`] that is every close; with a check, every close it missed.
    pub resent: u64,
    /// Blocking reads that returned EINTR (an io_uring completion's task_work interrupts them).
    pub interrupted: u64,
}

impl Counts {
    pub fn caught(&self) -> u64 {
        self.caught_fin + self.caught_error + self.caught_stray
    }

    /// The part of the notes every checking floor shares.
    pub fn describe(&self) -> String {
        format!(
            "{} connections; {} closes caught by the check before writing (FIN {}, reset/error {}, \
             stray bytes {}); {} writes went to a closed connection (the command sent again on a new \
             one)",
            self.connections,
            self.caught(),
            self.caught_fin,
            self.caught_error,
            self.caught_stray,
            self.resent
        )
    }
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte: `Ok(0)` is a FIN, a byte is stray data, an
/// error other than WouldBlock (ECONNRESET, ...) a dead connection.
pub fn peek(s: &TcpStream) -> Found {
    let mut byte = [std::mem::MaybeUninit::uninit()];
    loop {
        return match socket2::SockRef::from(s).recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        {
            Ok(0) => Found::Fin,
            Ok(_) => Found::Stray,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Found::Open,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => Found::Error,
        };
    }
}

impl StdFloor {
    pub fn new(addr: SocketAddr, spin: bool) -> StdFloor {
        StdFloor::with_check(addr, spin, Check::None)
    }

    pub fn with_check(addr: SocketAddr, spin: bool, check: Check) -> StdFloor {
        StdFloor {
            addr,
            host: addr.to_string(),
            spin,
            check,
            conn: None,
            req: Vec::with_capacity(512),
            buf: vec![0; 16 * 1024].into_boxed_slice(),
            counts: Counts::default(),
        }
    }

    pub fn check(&self) -> &Check {
        &self.check
    }

    #[cfg(test)]
    pub fn check_mut(&mut self) -> &mut Check {
        &mut self.check
    }

    #[cfg(test)]
    pub fn conn(&self) -> Option<&TcpStream> {
        self.conn.as_ref()
    }

    pub fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        encode(&mut self.req, method, url, &self.host, body);
        loop {
            let fresh = self.conn.is_none();
            if fresh {
                let s = connect(self.addr).map_err(|e| format!("connect: {e}"))?;
                s.set_nonblocking(self.spin).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(super::REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
                self.counts.connections += 1;
                #[cfg(target_os = "linux")]
                if let Check::Uring(u) = &mut self.check {
                    u.arm(&s).map_err(|e| format!("io_uring poll: {e}"))?;
                }
                self.conn = Some(s);
            } else {
                let found = match &mut self.check {
                    Check::None => Found::Open,
                    Check::Peek => peek(self.conn.as_ref().expect("connected")),
                    #[cfg(target_os = "linux")]
                    Check::Uring(u) => u.check(self.conn.as_ref().expect("connected")),
                };
                if found != Found::Open {
                    match found {
                        Found::Fin => self.counts.caught_fin += 1,
                        Found::Error => self.counts.caught_error += 1,
                        _ => self.counts.caught_stray += 1,
                    }
                    self.close();
                    continue; // a new connection before writing
                }
            }
            match self.exchange() {
                Ok(n) => {
                    #[cfg(target_os = "linux")]
                    if let Check::Uring(u) = &mut self.check {
                        u.settle();
                    }
                    return Ok(n);
                }
                Err(Lost::Closed(_)) if !fresh => {
                    // reconnect, send again
                    self.counts.resent += 1;
                    self.close();
                }
                Err(Lost::Closed(e) | Lost::Other(e)) => {
                    self.close();
                    #[cfg(target_os = "linux")]
                    if let Check::Uring(u) = &mut self.check {
                        u.flush();
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Drops the connection; with an io_uring check, its poll is cancelled first (the
    /// cancellation goes with the next submit: the new connection's).
    fn close(&mut self) {
        #[cfg(target_os = "linux")]
        if let Check::Uring(u) = &mut self.check {
            u.release();
        }
        self.conn = None;
    }

    fn exchange(&mut self) -> Result<usize, Lost> {
        let s = self.conn.as_mut().expect("connected");
        let mut off = 0;
        while off < self.req.len() {
            match io::Write::write(s, &self.req[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_closed(&e) && off == 0 => return Err(Lost::Closed(format!("write: {e}"))),
                Err(e) => return Err(Lost::Other(format!("write: {e}"))),
            }
        }
        let deadline = std::time::Instant::now() + super::REQUEST_TIMEOUT;
        let mut filled = 0;
        let mut spins = 0u32;
        loop {
            if filled == self.buf.len() {
                return Err(Lost::Other("response larger than the buffer".into()));
            }
            match io::Read::read(s, &mut self.buf[filled..]) {
                Ok(0) if filled == 0 => return Err(Lost::Closed("closed before the response".into())),
                Ok(0) => return Err(Lost::Other("closed mid-response".into())),
                Ok(n) => {
                    filled += n;
                    if let Parsed::Done(len) = parse(&self.buf[..filled]).map_err(Lost::Other)? {
                        return Ok(len);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.spin => {
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(4096) && std::time::Instant::now() > deadline {
                        return Err(Lost::Other("timed out".into()));
                    }
                    std::hint::spin_loop();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.counts.interrupted += 1,
                Err(e) if is_closed(&e) && filled == 0 => return Err(Lost::Closed(format!("read: {e}"))),
                Err(e) => return Err(Lost::Other(format!("read: {e}"))),
            }
        }
    }
}

/// How an exchange failed: `Closed` = the connection was already gone (nothing of the response
/// arrived), so sending again on a fresh one is safe.
pub enum Lost {
    Closed(String),
    Other(String),
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener};
    use std::time::{Duration, Instant};

    use super::*;

    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    const DEADLINE: Duration = Duration::from_secs(2);

    /// How the test server ends its connection after the one response.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum End {
        /// `shutdown(Write)`: a FIN; the socket stays open and is handed back.
        Fin,
        /// Closed: a FIN, and a reset for whatever arrives after.
        Close,
        /// Closed with linger 0: a reset.
        Rst,
        /// Open, after bytes nobody asked for (a `408`, as servers send on idle connections
        /// before they close them); the socket is handed back.
        Stray,
    }

    const STRAY: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n";

    /// Accepts one connection on `l` (within [`DEADLINE`]), answers one request with a fixed
    /// 200 OK and ends the connection as `end` says; returns the server's socket if still open.
    fn serve_one(l: &TcpListener, end: End) -> Option<TcpStream> {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + DEADLINE;
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "test server: no connection within {DEADLINE:?}");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("test server: accept: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut req = Vec::new();
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut b = [0; 1024];
            let n = s.read(&mut b).expect("test server: read the request");
            assert!(n > 0, "test server: EOF before a whole request");
            req.extend_from_slice(&b[..n]);
        }
        s.write_all(RESPONSE).unwrap();
        match end {
            End::Fin => {
                s.shutdown(Shutdown::Write).unwrap();
                Some(s)
            }
            End::Close => None,
            End::Rst => {
                socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
                None
            }
            // The bytes go once the client has read the response (`send_stray`): sent with it,
            // they would be read with it, and dropped as what follows a complete response.
            End::Stray => Some(s),
        }
    }

    /// Waits (bounded) until `ready` says the floor can see the close; `ready` may make a
    /// syscall (a poll's CQE is posted by the thread's own way through the kernel).
    fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !ready() {
            assert!(Instant::now() < deadline, "{what}: not seen within {DEADLINE:?}");
            std::thread::yield_now();
        }
    }

    /// One command on a connection the server then ends (`end`); once `seen` says the floor
    /// can see that, a second command. Returns the floor's counts and the first connection's
    /// server socket (if `end` kept it open).
    fn two_commands(
        make: impl FnOnce(SocketAddr) -> StdFloor,
        end: End,
        seen: impl FnMut(&mut StdFloor) -> bool,
    ) -> (StdFloor, Option<TcpStream>) {
        let mut seen = seen;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let url = format!("http://{addr}/x");
        let mut f = make(addr);
        let server = std::thread::spawn(move || {
            let s = serve_one(&l, end);
            (l, s)
        });
        assert_eq!(f.command(Method::Get, &url, b"").map_err(|e| e.to_string()), Ok(2), "first command");
        let (l, first) = server.join().expect("test server");
        if end == End::Stray {
            send_stray(first.as_ref().expect("open"));
        }
        wait_for(&format!("{end:?}"), || seen(&mut f));
        let server = std::thread::spawn(move || serve_one(&l, End::Close));
        assert_eq!(f.command(Method::Get, &url, b"").map_err(|e| e.to_string()), Ok(2), "second command");
        server.join().expect("test server");
        (f, first)
    }

    /// The stray bytes, on a connection whose response the client has read.
    fn send_stray(mut s: &TcpStream) {
        s.write_all(STRAY).expect("test server: the stray bytes");
    }

    /// The server's end of a connection sees the client's close (EOF or reset) within the
    /// deadline: the client's socket is really gone.
    fn assert_closed_by_client(s: &mut TcpStream) {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        match s.read(&mut [0; 64]) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("the client's first socket is still open: {other:?}"),
        }
    }

    /// The peek catches the FIN (the reset, the stray bytes) before the second write: a new
    /// connection, no write on the old; on the blocking floor (`floor-peek`) and the spinning
    /// one (`floor-spin-peek`).
    #[test]
    fn the_peek_check_catches_a_close_before_writing() {
        for (spin, end) in
            [false, true].into_iter().flat_map(|s| [End::Fin, End::Rst, End::Stray].map(|e| (s, e)))
        {
            let (f, first) = two_commands(
                |a| StdFloor::with_check(a, spin, Check::Peek),
                end,
                |f| peek(f.conn().expect("connected")) != Found::Open,
            );
            // After a reset the floor's peek reads EOF, not ECONNRESET: the wait's own peek
            // above has taken the error (a socket error is reported once; then the socket is
            // done and reads 0).
            let c = f.counts;
            assert_eq!(
                (c.connections, c.caught(), c.resent),
                (2, 1, 0),
                "spin {spin}, {end:?}: {}",
                c.describe()
            );
            if let Some(mut s) = first {
                assert_closed_by_client(&mut s);
            }
        }
    }

    /// Without a check the write goes out on the closed connection, and the command is sent
    /// again on a new one: what the checks' counters are measured against.
    #[test]
    fn without_a_check_the_write_goes_to_the_closed_connection() {
        let (f, _) = two_commands(
            |a| StdFloor::new(a, false),
            End::Close,
            |f| peek(f.conn().expect("connected")) != Found::Open,
        );
        let c = f.counts;
        assert_eq!((c.connections, c.caught(), c.resent), (2, 0, 1), "{}", c.describe());
    }

    /// The io_uring floor's check.
    #[cfg(target_os = "linux")]
    fn ring(f: &mut StdFloor) -> &mut super::super::floor_uring::PollCheck {
        match f.check_mut() {
            Check::Uring(u) => u,
            _ => unreachable!("an io_uring floor"),
        }
    }

    /// The io_uring check catches the close from the completion queue (no syscall) before the
    /// second write; the first connection's poll is cancelled, so the ring lets go of its socket
    /// (the server sees it closed). Fails, not skips, where io_uring cannot be set up.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_io_uring_check_catches_a_close_before_writing() {
        use super::super::floor_uring::floor;
        for end in [End::Fin, End::Rst] {
            let make =
                |a| floor(a, false).unwrap_or_else(|e| panic!("this test needs io_uring, which failed: {e}"));
            // The close's CQE is in the ring: the check before the next write reads it.
            let (mut f, first) = two_commands(make, end, |f| ring(f).ready() > 0);
            let c = f.counts;
            assert_eq!((c.connections, c.caught(), c.resent), (2, 1, 0), "{end:?}: {}", c.describe());
            let expected = if end == End::Fin { c.caught_fin } else { c.caught_error };
            assert_eq!(expected, 1, "{end:?}: {}", c.describe());
            let u = ring(&mut f);
            assert_eq!((u.arms, u.rearms, u.cancels, u.cancels_alone), (2, 0, 1, 0), "{end:?}");
            if let Some(mut s) = first {
                assert_closed_by_client(&mut s);
            }
        }
    }

    /// With POLLIN in the poll's mask the ring sees stray bytes too: the check refuses the
    /// connection before the second write. The response's own POLLIN completions (if the
    /// task_work ran before the read took its bytes) are dropped when it is complete, never
    /// taken for stray bytes: the first command's connection is not refused for them.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_io_uring_check_with_pollin_catches_stray_bytes() {
        for end in [End::Fin, End::Stray] {
            let make = |a| {
                super::super::floor_uring::floor_in(a)
                    .unwrap_or_else(|e| panic!("this test needs io_uring, which failed: {e}"))
            };
            let (mut f, _first) = two_commands(make, end, |f| ring(f).ready() > 0);
            let c = f.counts;
            assert_eq!((c.connections, c.caught(), c.resent), (2, 1, 0), "{end:?}: {}", c.describe());
            let expected = if end == End::Fin { c.caught_fin } else { c.caught_stray };
            assert_eq!(expected, 1, "{end:?}: {}", c.describe());
            assert_eq!(ring(&mut f).pollin_found, u64::from(end == End::Stray), "{end:?}");
        }
    }

    /// Without POLLIN (`floor-uring`) the ring is blind to stray bytes: the second request goes
    /// out on the connection and its answer is the device's `408`: a lost command. What the
    /// cheaper mask gives up (finwatch's check and the peek refuse that connection).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_io_uring_check_without_pollin_misses_stray_bytes() {
        use super::super::floor_uring::floor;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let url = format!("http://{addr}/x");
        let mut f =
            floor(addr, false).unwrap_or_else(|e| panic!("this test needs io_uring, which failed: {e}"));
        let server = std::thread::spawn(move || serve_one(&l, End::Stray));
        assert_eq!(f.command(Method::Get, &url, b"").map_err(|e| e.to_string()), Ok(2), "first command");
        let open = server.join().expect("test server").expect("open");
        send_stray(&open);
        // The bytes have arrived (a peek sees them; it does not take them).
        wait_for("stray bytes", || peek(f.conn().expect("connected")) == Found::Stray);
        let second = f.command(Method::Get, &url, b"");
        assert!(matches!(&second, Err(e) if e.contains("408")), "{second:?}");
        assert_eq!(f.counts.caught(), 0, "{}", f.counts.describe());
    }
}
