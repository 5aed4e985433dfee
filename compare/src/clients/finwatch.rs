//! finwatch: one `Client` with default settings, blocking `get` / `put`.

use std::net::SocketAddr;

use finwatch::{Client, ClientBuilder, SharedClient, Stats, TlsConfig};

use crate::tls::Pki;

use super::{HttpClient, Method, REQUEST_TIMEOUT};

pub struct Finwatch(Client);

pub fn make(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    super::boxed(Client::builder().request_timeout(REQUEST_TIMEOUT).build().map(Finwatch))
}

/// [`make`] for `https://`, trusting the run's CA.
pub fn make_tls(_addr: SocketAddr, pki: &Pki) -> Result<Box<dyn HttpClient>, String> {
    let builder = traced(tls(Client::builder(), pki)?);
    super::boxed(builder.request_timeout(REQUEST_TIMEOUT).build().map(Finwatch))
}

/// `builder` trusting the run's CA (and nothing else): `TlsConfig::new().add_ca_pem(..)`.
pub fn tls(builder: ClientBuilder, pki: &Pki) -> Result<ClientBuilder, String> {
    let config = TlsConfig::new().add_ca_pem(pki.ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    Ok(builder.tls(config))
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

    fn notes(&self) -> Option<String> {
        print_trace(&self.0);
        Some(stats_note(self.0.stats()))
    }
}

/// With `COMPARE_TRACE` set, finwatch's caller-driven clients record their last events
/// (`ClientBuilder::trace`), printed to stderr as a sequence diagram at the end of the scenario.
fn traced(builder: ClientBuilder) -> ClientBuilder {
    if std::env::var_os("COMPARE_TRACE").is_some() { builder.trace(40) } else { builder }
}

fn print_trace(client: &Client) {
    if let Some(t) = client.trace() {
        eprintln!("{}", t.to_mermaid("finwatch"));
    }
}

/// finwatch with its loop on a background thread (`SharedClient`): every readiness event and
/// timer is handled when it happens, also while the caller is away between commands, at the
/// price of two thread hops per command.
pub struct FinwatchShared(SharedClient);

pub fn make_shared(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    make_shared_with(Client::builder())
}

/// [`make_shared`] from the given settings (plus the harness's request timeout).
pub fn make_shared_with(builder: ClientBuilder) -> Result<Box<dyn HttpClient>, String> {
    let builder = builder.request_timeout(REQUEST_TIMEOUT);
    super::boxed(SharedClient::from_builder(builder).map(FinwatchShared))
}

impl HttpClient for FinwatchShared {
    /// `get` / `put`, as the `finwatch` row calls `Client` (a URL used before is not parsed
    /// again).
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

    fn notes(&self) -> Option<String> {
        Some(stats_note(self.0.stats()))
    }
}

/// finwatch's counters: where its connections went, and whether it retired them before the
/// device closed them.
fn stats_note(s: Stats) -> String {
    format!(
        "{} connects ({} warm spares, {} of them timed, {} used, {} withheld), {} reuses; retired {} connections ahead of \
         the device's idle close, saw {} device closes on idle connections ({} only by the \
         pre-write check); {} retries; {} waits caught by the spin, {} spun in vain",
        s.connects,
        s.warm_spares_opened,
        s.warm_spares_timed,
        s.warm_spares_used,
        s.warm_spares_withheld,
        s.reuses,
        s.retired_before_idle_close,
        s.fins_seen_idle,
        s.fins_caught_by_peek,
        s.retries,
        s.spins_caught,
        s.spins_missed
    )
}

/// finwatch as a control loop that cares about every microsecond uses it: prepared requests
/// sent with `Client::execute` into one reused `Response` (no allocation per command).
pub struct FinwatchExecute {
    client: Client,
    prepared: Vec<(Method, String, Vec<u8>, finwatch::Request)>,
    response: finwatch::Response,
}

pub fn make_execute(addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    make_execute_with(addr, Client::builder())
}

/// [`make_execute`], and during the pauses between commands the loop runs (`Client::poll` until
/// the next command is due) instead of the thread just waiting.
pub fn make_poll(_addr: SocketAddr) -> Result<Box<dyn HttpClient>, String> {
    make_poll_with(Client::builder())
}

/// [`make_poll`] from the given settings (plus the harness's request timeout).
pub fn make_poll_with(builder: ClientBuilder) -> Result<Box<dyn HttpClient>, String> {
    let inner = FinwatchExecute::new(builder)?;
    Ok(Box::new(FinwatchPoll { inner, done: Vec::new() }))
}

pub struct FinwatchPoll {
    inner: FinwatchExecute,
    done: Vec<finwatch::Completion>,
}

impl HttpClient for FinwatchPoll {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        self.inner.command(method, url, body)
    }

    fn notes(&self) -> Option<String> {
        self.inner.notes()
    }

    fn pause_until(&mut self, deadline: std::time::Instant) {
        while let Some(left) =
            deadline.checked_duration_since(std::time::Instant::now()).filter(|d| !d.is_zero())
        {
            if self.inner.client.poll(Some(left), &mut self.done).is_err() {
                return crate::wait_until(deadline);
            }
            self.done.clear();
        }
    }
}

/// [`make_execute`] from the given settings (plus the harness's request timeout).
pub fn make_execute_with(_addr: SocketAddr, builder: ClientBuilder) -> Result<Box<dyn HttpClient>, String> {
    Ok(Box::new(FinwatchExecute::new(builder)?))
}

impl FinwatchExecute {
    /// From the given settings, plus the harness's request timeout.
    fn new(builder: ClientBuilder) -> Result<FinwatchExecute, String> {
        let client = traced(builder).request_timeout(REQUEST_TIMEOUT).build().map_err(|e| e.to_string())?;
        Ok(FinwatchExecute { client, prepared: Vec::new(), response: finwatch::Response::default() })
    }
}

impl HttpClient for FinwatchExecute {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String> {
        let found = self.prepared.iter().position(|(m, u, b, _)| *m == method && u == url && b == body);
        let i = match found {
            Some(i) => i,
            None => {
                let req = match method {
                    Method::Get => finwatch::Request::get(url),
                    Method::Put => finwatch::Request::put(url, body),
                }
                .build()
                .map_err(|e| e.to_string())?;
                self.prepared.push((method, url.to_string(), body.to_vec(), req));
                self.prepared.len() - 1
            }
        };
        self.client.execute(&self.prepared[i].3, &mut self.response).map_err(|e| e.to_string())?;
        if !self.response.is_success() {
            return Err(format!("status {}", self.response.status()));
        }
        Ok(self.response.body().len())
    }

    fn notes(&self) -> Option<String> {
        print_trace(&self.client);
        Some(stats_note(self.client.stats()))
    }
}
