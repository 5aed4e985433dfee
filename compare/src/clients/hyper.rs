//! hyper 1 through hyper-util's legacy `Client` (the pooled client most hyper users have), on a
//! tokio current-thread runtime owned by the adapter: each command is one `block_on` on the
//! caller's thread, so no thread hop.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{HttpClient, Method, REQUEST_TIMEOUT};

pub struct Hyper {
    rt: tokio::runtime::Runtime,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub fn make(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = {
        // The pool's idle timer is spawned on the runtime, so build inside it.
        let _guard = rt.enter();
        Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector)
    };
    Ok(Box::new(Hyper { rt, client }))
}

impl HttpClient for Hyper {
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
