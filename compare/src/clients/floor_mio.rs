//! Floor 3: the least an event loop pays per command: `write`, `epoll_wait`, `read`. One mio
//! `Poll`, one registered socket (readable, edge-triggered); reconnects like the other floors
//! (a new socket costs a connect plus an `epoll_ctl`).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::raw::{self, Lost, Parsed};
use super::{HttpClient, Method, REQUEST_TIMEOUT};

pub struct FloorMio {
    addr: SocketAddr,
    host: String,
    poll: Poll,
    events: Events,
    conn: Option<TcpStream>,
    req: Vec<u8>,
    buf: Box<[u8]>,
}

pub fn make(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    let poll = Poll::new().map_err(|e| e.to_string())?;
    Ok(Box::new(FloorMio {
        addr,
        host: addr.to_string(),
        poll,
        events: Events::with_capacity(8),
        conn: None,
        req: Vec::with_capacity(512),
        buf: vec![0; 16 * 1024].into_boxed_slice(),
    }))
}

impl HttpClient for FloorMio {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        raw::encode(&mut self.req, method, url, &self.host, body);
        loop {
            let fresh = self.conn.is_none();
            if fresh {
                // A blocking connect (loopback: immediate), then non-blocking for the loop.
                let s = raw::connect(self.addr).map_err(|e| format!("connect: {e}"))?;
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                let mut s = TcpStream::from_std(s);
                self.poll
                    .registry()
                    .register(&mut s, Token(0), Interest::READABLE)
                    .map_err(|e| e.to_string())?;
                self.conn = Some(s);
            }
            match self.exchange() {
                Ok(n) => return Ok(n),
                Err(Lost::Closed(_)) if !fresh => self.drop_conn(), // reconnect, send again
                Err(Lost::Closed(e) | Lost::Other(e)) => {
                    self.drop_conn();
                    return Err(e);
                }
            }
        }
    }
}

impl FloorMio {
    fn drop_conn(&mut self) {
        if let Some(mut s) = self.conn.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
    }

    fn exchange(&mut self) -> Result<usize, Lost> {
        let s = self.conn.as_mut().expect("connected");
        let mut off = 0;
        while off < self.req.len() {
            match s.write(&self.req[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if raw::is_closed(&e) && off == 0 => return Err(Lost::Closed(format!("write: {e}"))),
                Err(e) => return Err(Lost::Other(format!("write: {e}"))),
            }
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut filled = 0;
        loop {
            // Wait first: right after the write the response cannot be there yet on a real
            // network, and a read that only says WouldBlock would be one syscall too many.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Lost::Other("timed out".into()));
            }
            match self.poll.poll(&mut self.events, Some(left)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Lost::Other(format!("poll: {e}"))),
            }
            if self.events.is_empty() {
                continue;
            }
            // Edge-triggered: read until the response is complete or WouldBlock.
            loop {
                if filled == self.buf.len() {
                    return Err(Lost::Other("response larger than the buffer".into()));
                }
                match s.read(&mut self.buf[filled..]) {
                    Ok(0) if filled == 0 => return Err(Lost::Closed("closed before the response".into())),
                    Ok(0) => return Err(Lost::Other("closed mid-response".into())),
                    Ok(n) => {
                        filled += n;
                        if let Parsed::Done(len) = raw::parse(&self.buf[..filled]).map_err(Lost::Other)? {
                            return Ok(len);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if raw::is_closed(&e) && filled == 0 => {
                        return Err(Lost::Closed(format!("read: {e}")));
                    }
                    Err(e) => return Err(Lost::Other(format!("read: {e}"))),
                }
            }
        }
    }
}
