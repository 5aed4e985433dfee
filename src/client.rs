//! The public client: blocking calls on the caller's thread, or submit + poll for a loop the
//! caller owns. Either way there is no background thread and no thread hop on the hot path.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::proto::engine::{Completion, Config, ConnectionInfo, Engine, RequestId, Stats};
use crate::proto::framing::{Limits, MAX_HEADERS_CAP};
use crate::request::{Method, Request};
use crate::response::Response;

/// An HTTP/1.1 client that never writes a request on a connection the server has closed.
///
/// A `Client` owns its sockets and its event loop; it is driven by the calls made on it
/// ([`Client::send`] and friends, or [`Client::poll`]). It is `Send`, so it can move to the
/// thread that runs the control loop.
pub struct Client {
    engine: Engine,
    driver: Driver,
    /// Completions collected while a blocking call waited for its own.
    ready: VecDeque<Completion>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", self.engine.config())
            .field("stats", &self.engine.stats())
            .finish()
    }
}

impl Client {
    /// A client with default settings (see [`ClientBuilder`]).
    pub fn new() -> Result<Client> {
        ClientBuilder::new().build()
    }

    /// A builder for the settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// `GET url`, blocking until the response or an error.
    pub fn get(&mut self, url: &str) -> Result<Response> {
        self.send(Request::get(url).build()?)
    }

    /// `PUT url` with `body`, blocking.
    pub fn put(&mut self, url: &str, body: impl Into<Vec<u8>>) -> Result<Response> {
        self.send(Request::put(url, body).build()?)
    }

    /// `POST url` with `body`, blocking. POST is not idempotent: it is retried only if the
    /// device provably did not receive it.
    pub fn post(&mut self, url: &str, body: impl Into<Vec<u8>>) -> Result<Response> {
        self.send(Request::post(url, body).build()?)
    }

    /// `DELETE url`, blocking.
    pub fn delete(&mut self, url: &str) -> Result<Response> {
        self.send(Request::builder(Method::DELETE, url).build()?)
    }

    /// Sends a request and blocks until its response or error. It queues behind requests
    /// submitted earlier to the same host; their completions are kept for [`Client::poll`].
    /// Never blocks past the request's deadline.
    pub fn send(&mut self, request: Request) -> Result<Response> {
        let id = self.submit(request);
        loop {
            self.driver.turn(&mut self.engine, None, false)?;
            while let Some(c) = self.engine.poll_completion() {
                if c.id == id {
                    return c.result;
                }
                self.ready.push_back(c);
            }
        }
    }

    /// Queues a request without blocking. Requests to one host go out in submission order;
    /// the outcome arrives through [`Client::poll`].
    pub fn submit(&mut self, request: Request) -> RequestId {
        self.engine.submit(&request, Instant::now())
    }

    /// Queues a borrowed request without blocking (its bytes are encoded at once, into a
    /// reused buffer): the allocation-free form of [`Client::submit`] for a loop that sends the
    /// same prepared requests again and again. Give responses back with [`Client::recycle`].
    pub fn submit_ref(&mut self, request: &Request) -> RequestId {
        self.engine.submit(request, Instant::now())
    }

    /// Gives a response the caller is done with back to the client, whose buffers then carry a
    /// later response: with [`Client::submit_ref`], the non-blocking API allocates nothing per
    /// command once warm.
    pub fn recycle(&mut self, response: Response) {
        self.engine.recycle(response);
    }

    /// Sends `request` and blocks until its response, which replaces `response`; the
    /// allocation-free way to run a command loop. The request is borrowed, so one prepared
    /// request can be sent again and again, and the buffers of the response it replaces are
    /// reused for a later one: once warm, a command on a reused connection allocates nothing.
    ///
    /// ```no_run
    /// # use finwatch::{Client, Request, Response};
    /// let mut client = Client::new()?;
    /// let poll_io = Request::get("http://10.0.0.5/unico/v1/interface/io-state?ioId=25602").build()?;
    /// let mut state = Response::default();
    /// loop {
    ///     client.execute(&poll_io, &mut state)?;
    ///     if state.body().starts_with(b"{\"value\":1") {
    ///         break;
    ///     }
    /// }
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn execute(&mut self, request: &Request, response: &mut Response) -> Result<()> {
        let id = self.engine.submit(request, Instant::now());
        loop {
            self.driver.turn(&mut self.engine, None, false)?;
            while let Some(c) = self.engine.poll_completion() {
                if c.id == id {
                    let old = std::mem::replace(response, c.result?);
                    self.engine.recycle(old);
                    return Ok(());
                }
                self.ready.push_back(c);
            }
        }
    }

    /// Runs the event loop until at least one request completes or `timeout` passes, and
    /// appends the completions to `out`. Returns how many were appended. `None` waits until a
    /// completion (returns at once if nothing is pending; never past the earliest deadline of a
    /// pending request, which always has one).
    pub fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> Result<usize> {
        let start = out.len();
        out.extend(self.ready.drain(..));
        let until = timeout.map(|t| Instant::now() + t);
        loop {
            if out.len() > start || (self.engine.pending() == 0 && timeout.is_none()) {
                return Ok(out.len() - start);
            }
            // A wake that came before this call (or during a blocking call) is honoured too.
            if self.driver.take_woken() {
                return Ok(out.len() - start);
            }
            self.driver.turn(&mut self.engine, until, true)?;
            while let Some(c) = self.engine.poll_completion() {
                out.push(c);
            }
            if self.driver.take_woken() || until.is_some_and(|u| Instant::now() >= u) {
                return Ok(out.len() - start);
            }
        }
    }

    /// A waker for this client's loop: `wake()` from any thread makes a [`Client::poll`] in
    /// progress return at once (with what it has). For a loop that also waits on other input
    /// (a channel of commands, say).
    pub fn waker(&mut self) -> Result<Waker> {
        self.driver.waker().map(Waker).map_err(Error::Io)
    }

    /// The instant by which [`Client::poll`] must be called again even if the poller's fd shows
    /// nothing: the nearest request deadline, connect timeout or idle retirement. For embedding
    /// in another event loop (see [`std::os::fd::AsRawFd`] for `Client`).
    pub fn next_deadline(&mut self) -> Option<Instant> {
        if self.driver.has_backlog() {
            // Work the fd will not signal again (a paused read, a full event buffer): now.
            return Some(Instant::now());
        }
        self.engine.poll_timeout()
    }

    /// Gives up on every pending request: each completes (through [`Client::poll`]) with
    /// [`Error::Shutdown`], saying how far it had got, and every connection is closed. Returns
    /// how many requests were aborted. The client stays usable.
    pub fn abort_all(&mut self) -> usize {
        let n = self.engine.pending();
        self.engine.abort_all(Instant::now());
        self.driver.run_actions(&mut self.engine);
        while let Some(c) = self.engine.poll_completion() {
            self.ready.push_back(c);
        }
        n
    }

    /// Requests submitted and not yet completed or returned by [`Client::poll`].
    pub fn pending(&self) -> usize {
        self.engine.pending() + self.ready.len()
    }

    /// Counters since the client was created.
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// What the client has learned of a device's idle-close time: the shortest time, after a
    /// response, at which the device was seen to close that connection. Connections to it are
    /// retired a margin before it; a value of a millisecond or two means the device closes after
    /// every response, and its connections are used once.
    pub fn learned_idle_close(&self, url: &str) -> Option<Duration> {
        let url = crate::url::Url::parse(url).ok()?;
        self.engine.learned_idle_close(url.host_key())
    }

    /// The recorded trace, if [`ClientBuilder::trace`] turned recording on.
    pub fn trace(&self) -> Option<&crate::Trace> {
        self.engine.trace()
    }

    /// Takes the recorded trace and starts a new one.
    pub fn take_trace(&mut self) -> Option<crate::Trace> {
        self.engine.take_trace()
    }

    /// A snapshot of the live connections.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.engine.connections(Instant::now())
    }
}

/// Wakes a [`Client::poll`] in progress from another thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Waker(std::sync::Arc<mio::Waker>);

impl Waker {
    /// Makes the client's current or next `poll` return at once.
    pub fn wake(&self) -> std::io::Result<()> {
        self.0.wake()
    }
}

/// The fd of the client's poller (epoll on Linux): readable when any of its sockets has an event
/// or its waker fired. Register it in another event loop (`mio::unix::SourceFd`, epoll, …), and
/// call [`Client::poll`] with a zero timeout when it is readable **or** when
/// [`Client::next_deadline`] has passed: deadlines are timers, not fds.
#[cfg(unix)]
impl std::os::fd::AsRawFd for Client {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.driver.raw_fd()
    }
}

/// Settings for a [`Client`]. The defaults suit a controller talking to devices on a LAN.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ClientBuilder {
    cfg: Config,
}

impl ClientBuilder {
    /// Default settings.
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// How long a TCP handshake may take (default 3 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.cfg.connect_timeout = t;
        self
    }

    /// The default deadline of a request, from submission to the last response byte
    /// (default 10 s); a request can set its own with [`crate::RequestBuilder::timeout`].
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.cfg.request_timeout = t;
        self
    }

    /// How long an idle connection is kept for reuse (default 30 s). A server's
    /// `Keep-Alive: timeout=N` shortens it, with a margin.
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.cfg.idle_timeout = t;
        self
    }

    /// How many times a request may be retried on a fresh connection after a lost one, where
    /// that is safe (default 1; 0 disables retries).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.cfg.max_retries = n;
        self
    }

    /// Requests in flight at once per host (default 1, which keeps the device's commands in
    /// submission order end to end). More is opt-in: requests still *leave* in order, but may
    /// complete out of order.
    pub fn max_in_flight_per_host(mut self, n: usize) -> Self {
        self.cfg.max_in_flight_per_host = n.max(1);
        self
    }

    /// Connections per host, idle or busy (default 4).
    pub fn max_connections_per_host(mut self, n: usize) -> Self {
        self.cfg.max_connections_per_host = n.max(1);
        self
    }

    /// `TCP_NODELAY` (default on: a command is one small write that must not wait for Nagle).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.cfg.nodelay = on;
        self
    }

    /// Busy-poll mode, for a control loop that owns a core: while waiting for a response, spin
    /// on the sockets (zero-timeout polls) for up to `budget` before sleeping in the poller.
    ///
    /// Waking a sleeping thread costs more than a loopback or LAN round trip on ordinary
    /// machines; spinning avoids that wake-up at the price of one core at 100 % while a request
    /// is in flight (up to `budget` per wait). Off by default.
    pub fn busy_poll(mut self, budget: Duration) -> Self {
        self.cfg.busy_poll = (!budget.is_zero()).then_some(budget);
        self
    }

    /// Warm spares (default on): when a connection is known to be ending (`Connection: close`,
    /// HTTP/1.0, `Keep-Alive` limits, or a device observed to close after every response or
    /// after a short idle time), open the next connection at once, so the next command does not
    /// wait for a TCP handshake. Costs at most one extra connection per device.
    pub fn warm_spares(mut self, on: bool) -> Self {
        self.cfg.warm_spares = on;
        self
    }

    /// Records a [`crate::Trace`] of connection events (connects, requests, responses, FIN,
    /// RST, closes) with timestamps, keeping the last `capacity` events; read it with
    /// [`Client::trace`], render it with [`crate::Trace::to_mermaid`]. Off by default.
    pub fn trace(mut self, capacity: usize) -> Self {
        self.cfg.trace = Some(capacity);
        self
    }

    /// Response limits (head bytes, header count, body bytes, interim responses).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.cfg.limits = limits;
        self
    }

    /// Builds the client (creates its poller).
    pub fn build(self) -> Result<Client> {
        let mut cfg = self.cfg;
        cfg.limits.max_headers = cfg.limits.max_headers.min(MAX_HEADERS_CAP);
        Ok(Client {
            engine: Engine::new(cfg),
            driver: Driver::new().map_err(Error::Io)?,
            ready: VecDeque::new(),
        })
    }
}
