//! Experimental floor `floor-peek` (not in the default run): the blocking floor
//! ([`StdFloor`]), which before each write on a reused connection asks the socket whether the
//! peer has closed it: `recv(MSG_PEEK | MSG_DONTWAIT)` of one byte, one syscall per command
//! (what finwatch pays for its promise never to write on a connection the peer has closed).
//! `Ok(0)` (FIN), a byte (stray data) or an error other than WouldBlock: the floor reconnects
//! before writing. The reference `floor-uring` is measured against.
//!
//! `floor-spin-peek`: the same check on the busy-poll floor (`floor-spin`): what the spinning
//! floor would cost if it made finwatch's promise. finwatch's busy-poll row is held to the
//! spinning floor without it; this one says how much of the gap is the check.

use std::net::SocketAddr;

use super::raw::{Check, StdFloor};
use super::{HttpClient, Method};

pub struct FloorPeek(StdFloor);

pub fn make(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(FloorPeek(StdFloor::with_check(addr, false, Check::Peek))))
}

/// `floor-spin-peek`: the spinning floor with the peek before each write on a reused connection.
pub fn make_spin(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(FloorPeek(StdFloor::with_check(addr, true, Check::Peek))))
}

impl HttpClient for FloorPeek {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        self.0.command(method, url, body)
    }

    fn notes(&self) -> Option<String> {
        Some(self.0.counts.describe())
    }
}
