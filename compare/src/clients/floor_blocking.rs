//! Floor 1: a blocking `std::net::TcpStream` (the read sleeps in the kernel until the response
//! arrives): what one write + one blocking read cost, wake-up included.

use std::net::SocketAddr;

use super::raw::StdFloor;
use super::{HttpClient, Method};

pub struct FloorBlocking(StdFloor);

pub fn make(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(FloorBlocking(StdFloor::new(addr, false))))
}

impl HttpClient for FloorBlocking {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        self.0.command(method, url, body)
    }
}
