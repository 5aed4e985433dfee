//! hyper 1 through hyper-util's legacy `Client` (the pooled client most hyper users have), on a
//! tokio current-thread runtime owned by the adapter: each command is one `block_on` on the
//! caller's thread, so no thread hop. Over TLS, hyper-rustls's connector (ring provider).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{HttpClient, Method, REQUEST_TIMEOUT};

pub struct Hyper<C> {
    rt: tokio::runtime::Runtime,
    client: Client<C, Full<Bytes>>,
}

/// A runtime and a pooled client over `connector`.
fn build<C: Connect + Clone + Send + Sync + 'static>(connector: C) -> Result<Hyper<C>, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let client = {
        // The pool's idle timer is spawned on the runtime, so build inside it.
        let _guard = rt.enter();
        Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector)
    };
    Ok(Hyper { rt, client })
}

pub fn make(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Ok(Box::new(build(connector)?))
}

/// Over TLS: hyper-rustls's `HttpsConnector` around the same `HttpConnector`, with a rustls
/// config (ring) trusting only the run's CA and rustls's default session cache.
pub fn make_tls(_addr: SocketAddr, pki: &crate::tls::Pki) -> Result<Box<dyn HttpClient>, String> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(pki.client_config()?)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok(Box::new(build(https)?))
}

impl<C: Connect + Clone + Send + Sync + 'static> HttpClient for Hyper<C> {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        let mut req = hyper::Request::builder().uri(url);
        req = match method {
            Method::Get => req.method(hyper::Method::GET),
            Method::Put => req.method(hyper::Method::PUT).header("content-type", "application/json"),
        };
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).map_err(|e| e.to_string())?;
        let client = &self.client;
        self.rt.block_on(async {
            let call = async {
                let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
                if !resp.status().is_success() {
                    return Err(format!("status {}", resp.status()));
                }
                let body = resp.into_body().collect().await.map_err(|e| e.to_string())?;
                Ok(body.to_bytes().len())
            };
            tokio::time::timeout(REQUEST_TIMEOUT, call).await.map_err(|_| "timed out".to_string())?
        })
    }
}
