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

/// The two `std::net::TcpStream` floors: write the request, read until the Content-Length is
/// complete, keep the connection. Blocking reads sleep in the kernel (`recvfrom` wakes the
/// thread); `spin` makes the socket non-blocking and spins on `read` returning WouldBlock.
///
/// When the device has closed or reset the connection, the floor finds out on the next command
/// (the write fails, or the read sees EOF / ECONNRESET before any response byte): it then
/// reconnects and sends the command once more. It pays no syscall to check a connection first.
pub struct StdFloor {
    addr: SocketAddr,
    host: String,
    spin: bool,
    conn: Option<TcpStream>,
    req: Vec<u8>,
    buf: Box<[u8]>,
}

impl StdFloor {
    pub fn new(addr: SocketAddr, spin: bool) -> StdFloor {
        StdFloor {
            addr,
            host: addr.to_string(),
            spin,
            conn: None,
            req: Vec::with_capacity(512),
            buf: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }

    pub fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        encode(&mut self.req, method, url, &self.host, body);
        loop {
            let fresh = self.conn.is_none();
            if fresh {
                let s = connect(self.addr).map_err(|e| format!("connect: {e}"))?;
                s.set_nonblocking(self.spin).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(super::REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
                self.conn = Some(s);
            }
            match self.exchange() {
                Ok(n) => return Ok(n),
                Err(Lost::Closed(_)) if !fresh => self.conn = None, // reconnect, send again
                Err(Lost::Closed(e) | Lost::Other(e)) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
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
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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
