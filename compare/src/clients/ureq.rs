//! ureq 3: one `Agent` (its connection pool), blocking calls on the caller's thread.

use std::net::SocketAddr;

use super::{HttpClient, Method, REQUEST_TIMEOUT};

pub struct Ureq(ureq::Agent);

pub fn make(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .no_delay(true)
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build();
    Ok(Box::new(Ureq(config.into())))
}

/// Over TLS: rustls with the ring provider, trusting only the run's CA.
pub fn make_tls(_addr: SocketAddr, pki: &crate::tls::Pki) -> Result<Box<dyn HttpClient>, String> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let ca = Certificate::from_pem(pki.ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(std::sync::Arc::new(vec![ca])))
        .unversioned_rustls_crypto_provider(crate::tls::provider())
        .build();
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .no_delay(true)
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .tls_config(tls)
        .build();
    Ok(Box::new(Ureq(config.into())))
}

impl HttpClient for Ureq {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        let mut resp = match method {
            Method::Get => self.0.get(url).call(),
            Method::Put => self.0.put(url).content_type("application/json").send(body),
        }
        .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        resp.body_mut().read_to_vec().map(|b| b.len()).map_err(|e| e.to_string())
    }
}
