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

/// Over TLS: rustls (`rustls-no-provider`, with the ring provider installed as rustls's process
/// default, which reqwest takes), trusting only the run's CA (`tls_certs_only`: no platform
/// verifier).
pub fn make_tls(_addr: SocketAddr, pki: &crate::tls::Pki) -> Result<Box<dyn HttpClient>, String> {
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .tls_backend_rustls()
        .tls_certs_only([ca])
        .build();
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
