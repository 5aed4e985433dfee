//! Floor 2: the same client on a non-blocking socket that spins on `read` returning WouldBlock:
//! no sleep, no wake-up, so the lowest latency this machine allows (and a core burnt waiting).

use std::net::SocketAddr;

use super::raw::StdFloor;
use super::{HttpClient, Method};

pub struct FloorSpin(StdFloor);

pub fn make(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(FloorSpin(StdFloor::new(addr, true))))
}

impl HttpClient for FloorSpin {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        self.0.command(method, url, body)
    }
}
