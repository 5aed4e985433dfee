//! The curl crate: one libcurl easy handle, reused (libcurl keeps the connection in the
//! handle's cache and checks it before reuse). PUT is libcurl's upload with a known size.

use std::io::SeekFrom;
use std::net::SocketAddr;

use curl::easy::{Easy2, Handler, List, ReadError, SeekResult, WriteError};

use super::{HttpClient, Method, REQUEST_TIMEOUT};

/// Collects the response body and serves the request body.
#[derive(Default)]
struct Io {
    response: Vec<u8>,
    upload: Vec<u8>,
    sent: usize,
}

impl Handler for Io {
    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        self.response.extend_from_slice(data);
        Ok(data.len())
    }

    fn read(&mut self, into: &mut [u8]) -> Result<usize, ReadError> {
        let n = into.len().min(self.upload.len() - self.sent);
        into[..n].copy_from_slice(&self.upload[self.sent..self.sent + n]);
        self.sent += n;
        Ok(n)
    }

    /// libcurl rewinds the upload when it resends on a fresh connection.
    fn seek(&mut self, whence: SeekFrom) -> SeekResult {
        match whence {
            SeekFrom::Start(0) => {
                self.sent = 0;
                SeekResult::Ok
            }
            _ => SeekResult::CantSeek,
        }
    }
}

pub struct Curl(Easy2<Io>);

pub fn make(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    let setup = || -> Result<Easy2<Io>, curl::Error> {
        let mut h = Easy2::new(Io::default());
        h.noproxy("*")?;
        h.tcp_nodelay(true)?;
        h.signal(false)?;
        h.timeout(REQUEST_TIMEOUT)?;
        Ok(h)
    };
    super::boxed(setup().map(Curl))
}

/// Over TLS: libcurl's TLS (the system's: OpenSSL), trusting only the run's CA (given as a
/// blob); its SSL session cache (per easy handle, on by default) resumes sessions.
pub fn make_tls(_addr: SocketAddr, pki: &crate::tls::Pki) -> Result<Box<dyn HttpClient>, String> {
    let setup = || -> Result<Easy2<Io>, curl::Error> {
        let mut h = Easy2::new(Io::default());
        h.noproxy("*")?;
        h.tcp_nodelay(true)?;
        h.signal(false)?;
        h.timeout(REQUEST_TIMEOUT)?;
        h.ssl_cainfo_blob(pki.ca_pem.as_bytes())?;
        h.ssl_sessionid_cache(true)?;
        Ok(h)
    };
    super::boxed(setup().map(Curl))
}

impl HttpClient for Curl {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        let h = &mut self.0;
        let run = |h: &mut Easy2<Io>| -> Result<u32, curl::Error> {
            h.get_mut().response.clear();
            h.url(url)?;
            match method {
                Method::Get => {
                    h.get(true)?;
                    h.http_headers(List::new())?;
                }
                Method::Put => {
                    let io = h.get_mut();
                    io.upload.clear();
                    io.upload.extend_from_slice(body);
                    io.sent = 0;
                    h.upload(true)?;
                    h.in_filesize(body.len() as u64)?;
                    let mut headers = List::new();
                    headers.append("Content-Type: application/json")?;
                    h.http_headers(headers)?;
                }
            }
            h.perform()?;
            h.response_code()
        };
        let code = run(h).map_err(|e| e.to_string())?;
        if !(200..300).contains(&code) {
            return Err(format!("status {code}"));
        }
        Ok(h.get_ref().response.len())
    }
}
