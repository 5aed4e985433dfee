//! The TLS floor (scenarios t1–t3): a blocking `std::net::TcpStream` under a rustls
//! `StreamOwned` (ring provider, trusting only the run's CA), the request written in one TLS
//! record, the response read by Content-Length: what one TLS exchange costs with nothing around
//! it, wake-ups included. It is the TLS tables' floor and the reference that files each round of
//! a TLS scenario by the host's wake-up regime (`regime.rs`).
//!
//! Connections as the plain floors keep them: reused until the device closes one. Where the
//! device closes after every response (t2, t2g, t3) it sends `close_notify` in the same flush as
//! the response, so the floor sees the close among the bytes it has already read, with no
//! syscall of its own, and connects afresh for the next command; all connections share one
//! `ClientConfig`, whose session cache resumes the session. A close it has not seen yet (write
//! error, or EOF / reset before any response byte) costs a reconnect and one resend.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::raw::{Parsed, connect, is_closed, parse};
use super::{HttpClient, Method};

pub struct FloorTls {
    addr: SocketAddr,
    host: String,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
    conn: Option<StreamOwned<ClientConnection, TcpStream>>,
    req: Vec<u8>,
    buf: Box<[u8]>,
}

/// Not over plain HTTP: the plain floors are the reference there.
pub fn make(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Err("the TLS floor runs in the TLS scenarios only".into())
}

pub fn make_tls(addr: SocketAddr, pki: &crate::tls::Pki) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(FloorTls {
        addr,
        host: addr.to_string(),
        name: ServerName::IpAddress(addr.ip().into()),
        config: Arc::new(pki.client_config_x25519_first()?),
        conn: None,
        req: Vec::with_capacity(512),
        buf: vec![0; 16 * 1024].into_boxed_slice(),
    }))
}

enum Lost {
    Closed(String),
    Other(String),
}

impl HttpClient for FloorTls {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        super::raw::encode(&mut self.req, method, url, &self.host, body);
        loop {
            let fresh = self.conn.is_none();
            if fresh {
                let s = connect(self.addr).map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(super::REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
                let c = ClientConnection::new(self.config.clone(), self.name.clone())
                    .map_err(|e| format!("TLS: {e}"))?;
                self.conn = Some(StreamOwned::new(c, s));
            }
            match self.exchange() {
                Ok((n, closed)) => {
                    if closed {
                        self.conn = None;
                    }
                    return Ok(n);
                }
                Err(Lost::Closed(_)) if !fresh => self.conn = None, // reconnect, send again
                Err(Lost::Closed(e) | Lost::Other(e)) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
    }
}

impl FloorTls {
    /// One exchange: the body length, and whether the device's `close_notify` came with it.
    fn exchange(&mut self) -> Result<(usize, bool), Lost> {
        let s = self.conn.as_mut().expect("connected");
        // `StreamOwned` completes the handshake (or resumes) inside the first write.
        match s.write_all(&self.req).and_then(|()| s.flush()) {
            Ok(()) => {}
            Err(e) if is_closed(&e) => return Err(Lost::Closed(format!("write: {e}"))),
            Err(e) => return Err(Lost::Other(format!("write: {e}"))),
        }
        let mut filled = 0;
        loop {
            if filled == self.buf.len() {
                return Err(Lost::Other("response larger than the buffer".into()));
            }
            match s.read(&mut self.buf[filled..]) {
                Ok(0) if filled == 0 => return Err(Lost::Closed("closed before the response".into())),
                Ok(0) => return Err(Lost::Other("closed mid-response".into())),
                Ok(n) => {
                    filled += n;
                    if let Parsed::Done(len) = parse(&self.buf[..filled]).map_err(Lost::Other)? {
                        // Records already read but not yet processed (no I/O here).
                        let closed = s.conn.process_new_packets().map_or(true, |st| st.peer_has_closed());
                        return Ok((len, closed));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_closed(&e) && filled == 0 => return Err(Lost::Closed(format!("read: {e}"))),
                Err(e) => return Err(Lost::Other(format!("read: {e}"))),
            }
        }
    }
}
