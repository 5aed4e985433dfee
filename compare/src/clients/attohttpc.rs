//! attohttpc: one `Session` (shared settings). attohttpc has no connection pool: every request
//! opens a connection and sends `Connection: close`.

use std::net::SocketAddr;

use attohttpc::{ProxySettings, Session};

use super::{HttpClient, Method, REQUEST_TIMEOUT};

pub struct Attohttpc(Session);

pub fn make(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    let mut s = Session::new();
    s.proxy_settings(ProxySettings::builder().build());
    s.timeout(REQUEST_TIMEOUT);
    Ok(Box::new(Attohttpc(s)))
}

impl HttpClient for Attohttpc {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        let resp = match method {
            Method::Get => self.0.get(url).send(),
            Method::Put => self.0.put(url).header("content-type", "application/json").bytes(body).send(),
        }
        .map_err(|e| e.to_string())?;
        if !resp.is_success() {
            return Err(format!("status {}", resp.status()));
        }
        resp.bytes().map(|b| b.len()).map_err(|e| e.to_string())
    }
}
