//! The engine's value types: its settings, what it returns to the caller (ids, completions,
//! statistics, connection snapshots) and what it asks of the driver (actions, probe results).

use super::*;

/// Client settings. See [`crate::ClientBuilder`] for what each one means.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) max_in_flight_per_host: usize,
    pub(crate) max_connections_per_host: usize,
    pub(crate) limits: Limits,
    pub(crate) nodelay: bool,
    /// Bind every socket to this local address (port 0) before its connect.
    pub(crate) local_address: Option<std::net::IpAddr>,
    /// Linux: bind every socket to this interface (`SO_BINDTODEVICE`) before its connect.
    pub(crate) bind_device: Option<Box<str>>,
    pub(crate) busy_poll: Option<Duration>,
    /// The cap of the adaptive spin before a wait sleeps ([`crate::proto::spin`]); zero: off.
    pub(crate) adaptive_spin: Duration,
    pub(crate) warm_spares: bool,
    /// Record a [`Trace`] of at most this many events.
    pub(crate) trace: Option<usize>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_retries: 1,
            max_in_flight_per_host: 1,
            max_connections_per_host: 4,
            limits: Limits::default(),
            nodelay: true,
            local_address: None,
            bind_device: None,
            busy_poll: None,
            adaptive_spin: crate::proto::spin::DEFAULT_CAP,
            warm_spares: true,
            trace: None,
        }
    }
}

/// Identifies a submitted request; returned by [`crate::Client::submit`], and found again in
/// its [`Completion`].
///
/// ```
/// use finwatch::{Client, Request};
/// # let base = finwatch::__doc_device();
/// let mut client = Client::new()?;
/// let a = client.submit(Request::get(&format!("{base}/a")).build()?);
/// let b = client.submit(Request::get(&format!("{base}/b")).build()?);
/// assert!(a < b);
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The id as a number (ids count up from 1 per client).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let id = client.submit(finwatch::Request::get(&format!("{base}/")).build()?);
    /// assert_eq!(id.get(), 1);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A finished request, as [`crate::Client::poll`] returns it.
///
/// ```
/// use std::time::Duration;
/// use finwatch::{Client, Completion, Request};
/// # let base = finwatch::__doc_device();
/// let mut client = Client::new()?;
/// let id = client.submit(Request::get(&format!("{base}/io-state")).build()?);
/// let mut done: Vec<Completion> = Vec::new();
/// while done.is_empty() {
///     client.poll(Some(Duration::from_millis(10)), &mut done)?;
/// }
/// let Completion { id: done_id, result, .. } = done.pop().unwrap();
/// assert_eq!(done_id, id);
/// match result {
///     Ok(resp) => assert_eq!(resp.status(), 200),
///     Err(e) => panic!("{e}"),
/// }
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Completion {
    /// Which request.
    pub id: RequestId,
    /// Its outcome.
    pub result: Result<Response, Error>,
}

/// Counters since the client was created ([`crate::Client::stats`]).
///
/// ```
/// # let base = finwatch::__doc_device();
/// let mut client = finwatch::Client::new()?;
/// client.get(&format!("{base}/io-state"))?;
/// client.get(&format!("{base}/io-state"))?;
/// let stats = client.stats();
/// assert_eq!((stats.submitted, stats.succeeded, stats.failed), (2, 2, 0));
/// assert_eq!((stats.connects, stats.reuses), (1, 1));
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests submitted.
    pub submitted: u64,
    /// Requests that got a response.
    pub succeeded: u64,
    /// Requests that failed with an error.
    pub failed: u64,
    /// Connections started.
    pub connects: u64,
    /// Connects that failed or timed out.
    pub connect_failures: u64,
    /// Requests written on a connection that had carried an earlier exchange (after the
    /// pre-write peek found it alive).
    pub reuses: u64,
    /// FINs seen on idle connections (by a readiness event or the pre-write peek): each one a
    /// request that a naive pool would have written into a dead socket.
    pub fins_seen_idle: u64,
    /// Of those, how many only the check right before the write caught (after the connection
    /// had been chosen for a request): the `MSG_PEEK`, or on Linux the zero-timeout poll that
    /// stands in for it. A pool without that check would have written into them.
    pub fins_caught_by_peek: u64,
    /// FINs that arrived while a request was in flight (a close-delimited body ends this way).
    pub fins_while_busy: u64,
    /// Connections reset (RST or socket error) after they were established.
    pub resets: u64,
    /// Requests sent again on a fresh connection after a lost one.
    pub retries: u64,
    /// Connections retired by us (Connection: close, timeouts, protocol errors, …).
    pub retired: u64,
    /// Of those, idle connections retired ahead of the device's idle close, announced
    /// (`Keep-Alive: timeout`) or learned: each one a close the device did not have to make.
    pub retired_before_idle_close: u64,
    /// Connections opened ahead of need, because the one in use was known to be ending.
    pub warm_spares_opened: u64,
    /// Requests that found a warm spare ready (or connecting) instead of opening a connection.
    pub warm_spares_used: u64,
    /// Times a warm spare was due and not opened because, at the caller's pace, it would idle
    /// out before use (spares kept being closed by the device unused, at a younger age than
    /// the caller's last pause). A device thought to close after every response has a spare
    /// due twice per command: after the request is written, and when the connection it used
    /// is retired.
    pub warm_spares_withheld: u64,
    /// Of the warm spares opened, those whose connect was set for later: the caller pauses
    /// longer than the device keeps a connection, so a spare opened at once would idle out,
    /// and the kernel connects it while the caller is away (see `ClientBuilder::warm_spares`).
    pub warm_spares_timed: u64,
    /// Waits for a response that ended within the spin's limit (the adaptive spin's, or
    /// busy-poll's budget): no thread wake-up between the response's arrival and its processing.
    pub spins_caught: u64,
    /// Waits that spun for their whole limit (or budget) and then slept: CPU spent in vain. The
    /// adaptive spin turns itself off for a device whose answers keep coming after its cap
    /// (waits while it is off count as neither).
    pub spins_missed: u64,
}

/// A connection, as [`crate::Client::connections`] shows it.
///
/// ```
/// # let base = finwatch::__doc_device();
/// let mut client = finwatch::Client::new()?;
/// let resp = client.get(&format!("{base}/io-state"))?;
/// let conns = client.connections();
/// assert_eq!(conns.len(), 1);
/// let c = &conns[0];
/// assert_eq!((c.id, c.state, c.served), (resp.meta().connection_id, "Open(Idle)", 1));
/// assert_eq!(c.host, base.trim_start_matches("http://"));
/// assert!(c.idle_for.is_some() && c.retire_in.is_some());
/// assert_eq!(c.retire_reason, Some(finwatch::RetireReason::IdleTimeout));
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Serial number, as in the debug log.
    pub id: u64,
    /// `host:port`.
    pub host: String,
    /// State name: `Connecting`, `Open(Idle)`, `Open(Busy)`.
    pub state: &'static str,
    /// Exchanges completed on it.
    pub served: u32,
    /// How long it has been idle (for `Open(Idle)`).
    pub idle_for: Option<Duration>,
    /// When it will be retired if still idle, from now.
    pub retire_in: Option<Duration>,
    /// Why it will be retired then: the client's idle timeout, the server's announced
    /// `Keep-Alive: timeout`, or the idle close learned from the device.
    pub retire_reason: Option<RetireReason>,
    /// Time since its connect started.
    pub age: Duration,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start a non-blocking connect to `host:port`, registered under `conn`. `label`: the
    /// host's key (`host:port`, an IPv6 host bracketed), for error messages.
    /// [`Engine::connect_at`] says whether the kernel is to start it later (a timed warm
    /// spare; kept out of the action, which every command moves several of).
    Connect { conn: Key, host: Arc<str>, port: u16, label: Arc<str> },
    /// A request waits for timed connect `conn`: start it now if the kernel has not yet, and
    /// report a failure of the kernel's start ([`Engine::on_connect_failed`]).
    ConnectNow { conn: Key },
    /// Peek the socket without blocking and report it with [`Engine::on_probe`].
    Probe { conn: Key },
    /// Write [`Engine::output`] and report it with [`Engine::on_written`].
    Write { conn: Key },
    /// Close the socket and forget the key.
    Close { conn: Key },
}

/// The result of a pre-write `MSG_PEEK`.
#[derive(Debug)]
pub(crate) enum ProbeOutcome {
    /// `WouldBlock`: nothing pending, the peer has not closed.
    Alive,
    /// Peek returned 0: the peer sent FIN.
    Fin,
    /// Bytes are waiting that nobody asked for.
    Data,
    /// The socket has an error (RST).
    Error(io::Error),
}
