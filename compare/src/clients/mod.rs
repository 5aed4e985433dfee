//! One adapter per client behind [`HttpClient`]. Each adapter is used the way its users would
//! use it for a keep-alive control loop: one client / agent / handle, created once, reused for
//! every command, with its connection pool on where it has one.
//!
//! Common settings, so that no client is favoured: plain HTTP, no proxy, TCP_NODELAY on where
//! the client lets one choose (it is the default for most), a 2 s request timeout where the
//! client has one (only to keep a stuck client from stalling the run; no command gets near it).
//!
//! Over TLS (scenarios t1–t3, [`Kind::tls`]): the same, trusting only the run's CA, each client
//! with its own session cache and its library's defaults for resumption (all resume).

use std::net::SocketAddr;
use std::time::Duration;

use ::finwatch::Client;

use crate::tls::Pki;

mod attohttpc;
mod curl;
mod finwatch;
mod floor_blocking;
mod floor_mio;
mod floor_peek;
mod floor_spare;
mod floor_spin;
mod floor_tls;
#[cfg(target_os = "linux")]
mod floor_uring;
mod hyper;
mod minreq;
mod raw;
mod reqwest;
mod ureq;

/// The two methods the control loop uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
        }
    }
}

/// A client under test. `command` sends one request and blocks until the whole response has
/// been read; it returns the body length. Any error (transport, framing, a non-2xx status) is a
/// lost command for the harness.
pub trait HttpClient {
    fn command(&mut self, method: Method, url: &str, body: &[u8]) -> Result<usize, String>;

    /// The client's own account of the scenario, where it keeps one (connection counters).
    fn notes(&self) -> Option<String> {
        None
    }

    /// Waits between commands (scenario (c)) until `deadline`, to the microsecond. A client
    /// meant to be given the pause may use it.
    fn pause_until(&mut self, deadline: std::time::Instant) {
        crate::wait_until(deadline);
    }
}

/// How long any one request may take before the client gives up (where it can be set).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

type Make = fn(SocketAddr) -> Result<Box<dyn HttpClient>, String>;
/// The client for `https://` URLs, trusting the run's CA.
pub type MakeTls = fn(SocketAddr, &Pki) -> Result<Box<dyn HttpClient>, String>;

/// A client the harness can run: a short key for the command line, a label for the table.
pub struct Kind {
    pub key: &'static str,
    pub label: &'static str,
    pub make: Make,
    /// How to make it for the TLS scenarios; `None`: it does not run there.
    pub tls: Option<MakeTls>,
    /// Run only when named in `--clients`: kept out of the default set, so that a full run
    /// takes no longer and its tables stay as they were.
    pub experimental: bool,
}

/// Key of the blocking floor, the reference of the first ratio columns.
pub const FLOOR_BLOCKING: &str = "floor-blocking";
/// Key of the busy-poll floor, the reference of the last ratio columns.
pub const FLOOR_SPIN: &str = "floor-spin";
/// Key of the busy-poll floor with finwatch's pre-write peek (experimental): what of the
/// busy-poll target's ratio is the check.
pub const FLOOR_SPIN_PEEK: &str = "floor-spin-peek";
/// Key of the warm-spare floor: a new connection per command, opened right after the previous
/// response (a reference of the fresh-connection target).
pub const FLOOR_SPARE: &str = "floor-spare";
/// Key of the TLS floor: the TLS tables' floor and the TLS scenarios' regime reference.
pub const FLOOR_TLS: &str = "floor-tls";

/// Every client, in table order.
pub const ALL: &[Kind] = &[
    Kind {
        key: FLOOR_BLOCKING,
        label: "floor: blocking std TcpStream",
        make: floor_blocking::make,
        tls: None,
        experimental: false,
    },
    Kind {
        key: FLOOR_SPIN,
        label: "floor: busy-poll non-blocking",
        make: floor_spin::make,
        tls: None,
        experimental: false,
    },
    Kind {
        key: "floor-mio",
        label: "floor: minimal mio loop",
        make: floor_mio::make,
        tls: None,
        experimental: false,
    },
    // A fresh connection per command at the least cost: a blocking connect right after each
    // response, the next command sent on it (the fresh-connection target's floor).
    Kind {
        key: FLOOR_SPARE,
        label: "floor: blocking warm spare",
        make: floor_spare::make,
        tls: None,
        experimental: false,
    },
    // TLS only: std TcpStream + rustls `StreamOwned` (ring), blocking, keep-alive.
    Kind {
        key: FLOOR_TLS,
        label: "floor: blocking rustls StreamOwned",
        make: floor_tls::make,
        tls: Some(floor_tls::make_tls),
        experimental: false,
    },
    // `get` / `put`: `Client::send` of a request built per command.
    Kind {
        key: "finwatch",
        label: "finwatch",
        make: finwatch::make,
        tls: Some(finwatch::make_tls),
        experimental: false,
    },
    // finwatch with prepared requests and `Client::execute` (no allocation per command).
    Kind {
        key: "finwatch-execute",
        label: "finwatch (execute)",
        make: finwatch::make_execute,
        tls: Some(|a, p| finwatch::make_execute_with(a, finwatch::tls(Client::builder(), p)?)),
        experimental: false,
    },
    // `execute` with the adaptive spin off (`adaptive_spin(0)`): every wait sleeps, as the
    // defaults did before the spin; what the spin buys, and what it costs in CPU, in one run.
    Kind {
        key: "finwatch-nospin",
        label: "finwatch (execute, no spin)",
        make: |a| finwatch::make_execute_with(a, no_spin()),
        tls: Some(|a, p| finwatch::make_execute_with(a, finwatch::tls(no_spin(), p)?)),
        experimental: false,
    },
    // finwatch as a control loop that owns a core uses it: prepared requests and its opt-in
    // busy-poll mode (spins up to the budget before sleeping in epoll).
    Kind {
        key: "finwatch-busy",
        label: "finwatch (execute, busy-poll)",
        make: |a| finwatch::make_execute_with(a, busy()),
        tls: Some(|a, p| finwatch::make_execute_with(a, finwatch::tls(busy(), p)?)),
        experimental: false,
    },
    // finwatch, caller-driven, that lets its loop run during the pauses of (c) (`Client::poll`
    // until the next command is due): retires ahead of the device and keeps a spare ready.
    Kind {
        key: "finwatch-poll",
        label: "finwatch (execute, poll in pauses)",
        make: finwatch::make_poll,
        tls: Some(|_, p| finwatch::make_poll_with(finwatch::tls(Client::builder(), p)?)),
        experimental: false,
    },
    // finwatch with its loop on a background thread (`SharedClient`): sees every FIN and timer
    // as it happens, also between the caller's commands.
    Kind {
        key: "finwatch-shared",
        label: "finwatch (SharedClient)",
        make: finwatch::make_shared,
        tls: Some(|_, p| finwatch::make_shared_with(finwatch::tls(Client::builder(), p)?)),
        experimental: false,
    },
    Kind {
        key: "reqwest",
        label: "reqwest (blocking)",
        make: reqwest::make,
        tls: Some(reqwest::make_tls),
        experimental: false,
    },
    Kind { key: "ureq", label: "ureq", make: ureq::make, tls: Some(ureq::make_tls), experimental: false },
    Kind {
        key: "hyper",
        label: "hyper (legacy Client, current-thread)",
        make: hyper::make,
        tls: Some(hyper::make_tls),
        experimental: false,
    },
    Kind {
        key: "curl",
        label: "curl (libcurl easy)",
        make: curl::make,
        tls: Some(curl::make_tls),
        experimental: false,
    },
    Kind { key: "minreq", label: "minreq", make: minreq::make, tls: None, experimental: false },
    Kind { key: "attohttpc", label: "attohttpc", make: attohttpc::make, tls: None, experimental: false },
    // Experimental (only with `--clients`): the blocking floor with a check for the peer's
    // close before each write on a reused connection, by a syscall (a `recv(MSG_PEEK)`) or by a
    // read of an io_uring completion queue; and the latter audited by the former.
    Kind {
        key: "floor-peek",
        label: "floor: blocking + peek check",
        make: floor_peek::make,
        tls: None,
        experimental: true,
    },
    Kind {
        key: "floor-connect",
        label: "floor: blocking, a connect per command",
        make: floor_spare::make_connect,
        tls: None,
        experimental: true,
    },
    Kind {
        key: "floor-connect-watchdog",
        label: "floor: a connect per command + attohttpc's watchdog thread",
        make: floor_spare::make_connect_watchdog,
        tls: None,
        experimental: true,
    },
    Kind {
        key: FLOOR_SPIN_PEEK,
        label: "floor: busy-poll + peek check",
        make: floor_peek::make_spin,
        tls: None,
        experimental: true,
    },
    Kind {
        key: "floor-uring",
        label: "floor: blocking + io_uring poll check",
        make: uring(false),
        tls: None,
        experimental: true,
    },
    Kind {
        key: "floor-uring-audit",
        label: "floor: io_uring poll check + peek audit",
        make: uring(true),
        tls: None,
        experimental: true,
    },
    // With POLLIN in the poll's mask: stray bytes too, as finwatch's check and the peek see.
    Kind {
        key: "floor-uring-in",
        label: "floor: blocking + io_uring poll check (POLLIN too)",
        make: uring_in(),
        tls: None,
        experimental: true,
    },
];

/// The io_uring floor (Linux only): `audit` adds the peek after the ring's "open".
const fn uring(audit: bool) -> Make {
    #[cfg(target_os = "linux")]
    {
        if audit { floor_uring::make_audit } else { floor_uring::make }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = audit;
        |_| Err("io_uring: Linux only".to_string())
    }
}

/// `floor-uring-in` (Linux only).
const fn uring_in() -> Make {
    #[cfg(target_os = "linux")]
    {
        floor_uring::make_in
    }
    #[cfg(not(target_os = "linux"))]
    {
        |_| Err("io_uring: Linux only".to_string())
    }
}

/// The clients a run takes when `--clients` does not name them: all but the experimental.
pub fn defaults() -> impl Iterator<Item = &'static Kind> {
    ALL.iter().filter(|k| !k.experimental)
}

/// The other clients that speak TLS here: the peers the TLS targets are measured against.
pub const TLS_PEERS: [&str; 4] = ["reqwest", "ureq", "hyper", "curl"];

pub fn find(key: &str) -> Option<&'static Kind> {
    ALL.iter().find(|k| k.key == key)
}

/// Boxes an adapter, turning its construction error into the harness's error type.
fn boxed<C: HttpClient + 'static, E: std::fmt::Display>(
    r: Result<C, E>,
) -> Result<Box<dyn HttpClient>, String> {
    r.map(|c| Box::new(c) as Box<dyn HttpClient>).map_err(|e| e.to_string())
}

/// The busy-poll budget given to finwatch's busy-poll row: a few loopback round trips, so a
/// response is normally caught while spinning and a slow one still ends in epoll.
fn busy() -> ::finwatch::ClientBuilder {
    ::finwatch::Client::builder().busy_poll(BUSY_POLL_BUDGET)
}

/// finwatch without its adaptive spin: every wait sleeps in the poller (or the socket's recv).
fn no_spin() -> ::finwatch::ClientBuilder {
    ::finwatch::Client::builder().adaptive_spin(Duration::ZERO)
}

/// The budget of the finwatch busy-poll row (named in the report).
pub const BUSY_POLL_BUDGET: Duration = Duration::from_micros(200);
