//! minreq: no client object and no connection reuse (each request opens its own connection);
//! used as documented, one `minreq::get` / `minreq::put` per command.

use std::net::SocketAddr;

use super::{HttpClient, Method, REQUEST_TIMEOUT};

pub struct Minreq;

pub fn make(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(Minreq))
}

impl HttpClient for Minreq {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        let req = match method {
            Method::Get => minreq::get(url),
            Method::Put => minreq::put(url).with_header("Content-Type", "application/json").with_body(body),
        };
        let resp = req.with_timeout(REQUEST_TIMEOUT.as_secs()).send().map_err(|e| e.to_string())?;
        if !(200..300).contains(&resp.status_code) {
            return Err(format!("status {}", resp.status_code));
        }
        Ok(resp.as_bytes().len())
    }
}
