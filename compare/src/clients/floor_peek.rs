//! Experimental floor `floor-peek` (not in the default run): the blocking floor
//! ([`StdFloor`]), which before each write on a reused connection asks the socket whether the
//! peer has closed it: `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte, one syscall per command
//! (what finwatch pays for its promise never to write on a connection the peer has closed).
//! `Ok(0)` (FIN), a byte (stray data) or an error other than WouldBlock: the floor reconnects
//! before writing. The reference `floor-uring` is measured against.

use std::net::SocketAddr;

use super::raw::{Check, StdFloor};
use super::{HttpClient, Method};

pub struct FloorPeek(StdFloor);

pub fn make(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(FloorPeek(StdFloor::with_check(addr, false, Check::Peek))))
}

impl HttpClient for FloorPeek {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        self.0.command(method, url, body)
    }

    fn notes(&self) -> Option<String> {
        Some(self.0.counts.describe())
    }
}
