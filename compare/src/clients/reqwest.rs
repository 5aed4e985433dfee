//! reqwest's blocking client: one `Client` (its own runtime on a background thread; each call
//! hops to it and back), pooled keep-alive connections.

use std::net::SocketAddr;

use super::{HttpClient, Method, REQUEST_TIMEOUT};

pub struct Reqwest(reqwest::blocking::Client);

pub fn make(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    let client =
        reqwest::blocking::Client::builder().no_proxy().tcp_nodelay(true).timeout(REQUEST_TIMEOUT).build();
    super::boxed(client.map(Reqwest))
}

impl HttpClient for Reqwest {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        let req = match method {
            Method::Get => self.0.get(url),
            Method::Put => self.0.put(url).header("content-type", "application/json").body(body.to_vec()),
        };
        let resp = req.send().map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        resp.bytes().map(|b| b.len()).map_err(|e| e.to_string())
    }
}
