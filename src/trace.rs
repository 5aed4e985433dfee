//! A record of what happened on the wire, connection by connection, with timestamps: what
//! someone debugging the incident would otherwise need Wireshark for.
//!
//! Off by default ([`crate::ClientBuilder::trace`]); when on, the engine records each connect,
//! request written, response, FIN, RST and close, up to a bounded number of events (the oldest
//! are dropped). [`Trace::to_mermaid`] renders it as a Mermaid `sequenceDiagram`, the way the
//! incident was analysed.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// One thing that happened, in a [`TraceEvent`].
///
/// ```
/// use finwatch::{Client, TraceKind};
/// # let base = finwatch::__doc_device();
/// let mut client = Client::builder().trace(64).build()?;
/// client.get(&format!("{base}/io-state"))?;
/// let kinds: Vec<&TraceKind> = client.trace().unwrap().events().map(|e| &e.kind).collect();
/// assert!(matches!(kinds[0], TraceKind::Connecting { spare: false }));
/// assert!(kinds.iter().any(|k| matches!(k, TraceKind::Response { status: 200, .. })));
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceKind {
    /// A connect started (a warm spare if `spare`).
    Connecting {
        /// Opened ahead of need.
        spare: bool,
    },
    /// The handshake completed.
    Connected,
    /// A request was written (its request line).
    Sent {
        /// The request's id.
        request: u64,
        /// `METHOD target`.
        line: String,
    },
    /// A response arrived.
    Response {
        /// The request's id.
        request: u64,
        /// Its status code.
        status: u16,
    },
    /// The device closed the connection (FIN); `state` is what the connection was doing.
    PeerFin {
        /// `Open(Idle)`, `Open(Busy)`, …
        state: &'static str,
    },
    /// The connection was reset (RST or a socket error).
    PeerReset {
        /// What the connection was doing.
        state: &'static str,
    },
    /// The client closed the connection.
    Closed {
        /// Why, in words.
        reason: &'static str,
    },
    /// A request lost with its connection is sent again on a fresh one.
    Retried {
        /// The request's id.
        request: u64,
    },
    /// A request failed.
    Failed {
        /// The request's id.
        request: u64,
        /// The error, as displayed.
        error: String,
    },
    /// The TLS handshake completed (feature `tls`; the connection is then `Connected`).
    TlsHandshake {
        /// `TLSv1_3`, `TLSv1_2`.
        version: String,
        /// The negotiated cipher suite.
        cipher: String,
        /// The session was resumed (no certificate, no full key exchange).
        resumed: bool,
    },
    /// The device closed TLS: with a `close_notify` alert, or by a bare TCP FIN without one.
    TlsClosed {
        /// A `close_notify` came first.
        close_notify: bool,
    },
}

/// A timestamped event on one connection.
///
/// ```
/// use finwatch::{Client, TraceKind};
/// # let base = finwatch::__doc_device();
/// let mut client = Client::builder().trace(64).build()?;
/// client.put(&format!("{base}/unico/v1/interface/io"), "1")?;
/// let trace = client.take_trace().unwrap();
/// let sent = trace.events().find(|e| matches!(e.kind, TraceKind::Sent { .. })).unwrap();
/// assert_eq!(sent.host, base.trim_start_matches("http://"));
/// assert_eq!(sent.kind, TraceKind::Sent { request: 1, line: "PUT /unico/v1/interface/io".into() });
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceEvent {
    /// When the loop saw it.
    pub at: Instant,
    /// The connection's id (as in the debug log; 0 for a request not on a connection).
    pub conn: u64,
    /// `host:port`.
    pub host: String,
    /// What happened.
    pub kind: TraceKind,
}

/// A bounded record of events: what a client did on the wire, connection by connection, with
/// timestamps. Recorded by a client built with [`crate::ClientBuilder::trace`]; read with
/// [`crate::Client::trace`] or [`crate::Client::take_trace`].
///
/// ```
/// # let base = finwatch::__doc_device();
/// let mut client = finwatch::Client::builder().trace(256).build()?;
/// client.get(&format!("{base}/io-state"))?;
/// let trace = client.take_trace().unwrap();
/// for e in trace.events() {
///     println!("conn {} {}: {:?}", e.conn, e.host, e.kind);
/// }
/// println!("{}", trace.to_mermaid("controller"));
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Trace {
    events: VecDeque<TraceEvent>,
    capacity: usize,
}

impl Trace {
    /// An empty trace keeping at most `capacity` events (at least 1).
    ///
    /// ```
    /// let trace = finwatch::Trace::new(100);
    /// assert!(trace.is_empty());
    /// ```
    pub fn new(capacity: usize) -> Trace {
        Trace { events: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Adds an event (dropping the oldest beyond the capacity). Public so that other clients
    /// can be traced in the same form, for side-by-side comparisons.
    ///
    /// ```
    /// use std::time::Instant;
    /// use finwatch::{Trace, TraceKind};
    /// let mut t = Trace::new(2);
    /// let now = Instant::now();
    /// t.record(now, 1, "10.0.0.5:80", TraceKind::Connecting { spare: false });
    /// t.record(now, 1, "10.0.0.5:80", TraceKind::Connected);
    /// t.record(now, 1, "10.0.0.5:80", TraceKind::PeerFin { state: "Open(Idle)" });
    /// // The oldest event was dropped.
    /// assert_eq!(t.events().next().unwrap().kind, TraceKind::Connected);
    /// ```
    pub fn record(&mut self, at: Instant, conn: u64, host: &str, kind: TraceKind) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(TraceEvent { at, conn, host: host.to_string(), kind });
    }

    /// The events, oldest first.
    ///
    /// ```
    /// use std::time::Instant;
    /// use finwatch::{Trace, TraceKind};
    /// let mut t = Trace::new(10);
    /// t.record(Instant::now(), 3, "10.0.0.5:80", TraceKind::Closed { reason: "idle timeout" });
    /// assert_eq!(t.events().map(|e| e.conn).collect::<Vec<_>>(), [3]);
    /// ```
    pub fn events(&self) -> impl Iterator<Item = &TraceEvent> {
        self.events.iter()
    }

    /// Whether nothing was recorded.
    ///
    /// ```
    /// let client = finwatch::Client::builder().trace(16).build()?;
    /// assert!(client.trace().unwrap().is_empty());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Renders the trace as a Mermaid `sequenceDiagram` between `client` and the device,
    /// with times relative to the first event.
    ///
    /// ```
    /// # use std::time::Instant;
    /// use finwatch::{Trace, TraceKind};
    /// let mut t = Trace::new(100);
    /// let t0 = Instant::now();
    /// t.record(t0, 1, "10.0.0.5:80", TraceKind::Sent { request: 1, line: "PUT /io".into() });
    /// t.record(t0, 1, "10.0.0.5:80", TraceKind::PeerFin { state: "Open(Idle)" });
    /// let diagram = t.to_mermaid("controller");
    /// assert!(diagram.starts_with("sequenceDiagram"));
    /// assert!(diagram.contains("controller->>device: PUT /io (conn 1)"));
    /// ```
    pub fn to_mermaid(&self, client: &str) -> String {
        let mut out = String::from("sequenceDiagram\n");
        let _ = writeln!(out, "    participant {client}");
        let _ = writeln!(out, "    participant device");
        let Some(t0) = self.events.front().map(|e| e.at) else { return out };
        for e in &self.events {
            let t = fmt_offset(e.at.saturating_duration_since(t0));
            let c = e.conn;
            let line = match &e.kind {
                TraceKind::Connecting { spare: false } => format!("{client}->>device: SYN (conn {c}) {t}"),
                TraceKind::Connecting { spare: true } => {
                    format!("{client}->>device: SYN (conn {c}, warm spare) {t}")
                }
                TraceKind::Connected => format!("device->>{client}: SYN-ACK (conn {c}) {t}"),
                TraceKind::Sent { line, .. } => format!("{client}->>device: {line} (conn {c}) {t}"),
                TraceKind::Response { status, .. } => format!("device->>{client}: {status} (conn {c}) {t}"),
                TraceKind::PeerFin { state } => format!("device->>{client}: FIN (conn {c}, {state}) {t}"),
                TraceKind::PeerReset { state } => format!("device->>{client}: RST (conn {c}, {state}) {t}"),
                TraceKind::Closed { reason } => format!("{client}->>device: FIN (conn {c}: {reason}) {t}"),
                TraceKind::Retried { request } => {
                    format!("Note over {client}: request {request} retried on a fresh connection {t}")
                }
                TraceKind::Failed { request, error } => {
                    format!("Note over {client}: request {request} failed: {error} {t}")
                }
                TraceKind::TlsHandshake { version, resumed, .. } => {
                    let how = if *resumed { "resumed" } else { "full" };
                    format!("device->>{client}: TLS {version} handshake done, {how} (conn {c}) {t}")
                }
                TraceKind::TlsClosed { close_notify: true } => {
                    format!("device->>{client}: close_notify (conn {c}) {t}")
                }
                TraceKind::TlsClosed { close_notify: false } => {
                    format!("Note over {client}: conn {c}: FIN without close_notify {t}")
                }
            };
            // `;` and `#` would end or escape a Mermaid statement.
            let _ = writeln!(out, "    {}", line.replace(';', ",").replace('#', "nr "));
        }
        out
    }
}

fn fmt_offset(d: Duration) -> String {
    format!("[+{:.3} ms]", d.as_secs_f64() * 1e3)
}
