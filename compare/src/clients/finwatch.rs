//! finwatch: one `Client` with default settings, blocking `get` / `put`.

use std::net::SocketAddr;

use finwatch::{Client, ClientBuilder};

use super::{HttpClient, Method, REQUEST_TIMEOUT};

pub struct Finwatch(Client);

pub fn make(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    make_with(addr, Client::builder())
}

/// A finwatch client from the given settings (plus the harness's request timeout).
pub fn make_with(_addr: SocketAddr, builder: ClientBuilder) -> Result<Box<dyn HttpClient>, String> {
    super::boxed(builder.request_timeout(REQUEST_TIMEOUT).build().map(Finwatch))
}

impl HttpClient for Finwatch {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        let resp = match method {
            Method::Get => self.0.get(url),
            Method::Put => self.0.put(url, body),
        }
        .map_err(|e| e.to_string())?;
        if !resp.is_success() {
            return Err(format!("status {}", resp.status()));
        }
        Ok(resp.body().len())
    }
}
