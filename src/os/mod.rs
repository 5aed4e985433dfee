//! The operating system as the driver sees it: sockets, readiness and the clock.
//!
//! The driver ([`crate::driver`]) runs over one [`Kernel`]. [`mio::MioKernel`] is the real one
//! (mio and socket2: the only file of the crate that names either), and [`sim::SimKernel`] a
//! deterministic simulated kernel for tests and fuzzing: TCP connections with send and receive
//! queues, FIN and RST at any byte, connects that fail at once or later, `EMFILE`, and a virtual
//! clock. The seam is narrow on purpose: whatever the driver does to a socket goes through these
//! methods, so the simulator can produce every situation the real kernel can, in any order, and
//! the driver's translation of syscalls into engine events is tested, not only the engine.
//!
//! The trait is generic, not `dyn`: finwatch's per-command budget is below a microsecond, and
//! `Driver<MioKernel>` compiles to the same calls as a driver written against mio directly.
//!
//! Call order per connection: [`Kernel::open`] → ([`Kernel::wait`] reports it writable) →
//! [`Kernel::connect_result`] → `read`/`peek`/`write` as `wait` reports → [`Kernel::close`].

#[cfg(any(test, feature = "__internal"))]
pub mod faulty;
pub(crate) mod mio;
#[cfg(any(test, feature = "__internal"))]
pub mod sim;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one kernel guarantees (smoltcp's `DeviceCapabilities`). The driver's shortcuts are
/// taken only where the kernel says they hold, so the portable paths can be run (by the
/// simulator) on any host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// A zero-timeout [`Kernel::wait`] reports every registered socket that has data, a FIN or
    /// an error *now* (Linux epoll re-polls a socket before reporting it). Without it the
    /// pre-write check peeks the socket.
    pub zero_wait_is_exact: bool,
    /// Writable without an error or a hang-up means the connect completed (Linux `tcp_poll`
    /// reports a socket in SYN_SENT neither readable nor writable). Without it the driver asks
    /// [`Kernel::connect_result`].
    pub writable_means_connected: bool,
    /// [`Kernel::read_wait`] can block in a socket's own `recv` (Linux). Without it the driver
    /// always waits in the poller.
    pub read_wait: bool,
}

/// How [`Kernel::open`] sets a socket up before its connect: the client's connect settings,
/// borrowed from its `Config` (nothing is allocated per connect).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OpenOpts<'a> {
    /// `TCP_NODELAY`.
    pub nodelay: bool,
    /// `bind()` to this address, port 0 (the kernel picks the port), before the connect. The
    /// driver has checked that it is of the destination's family.
    pub local: Option<IpAddr>,
    /// `SO_BINDTODEVICE` to this interface before the connect (Linux; elsewhere the client
    /// cannot be given one, and a kernel given one anyway fails the open).
    pub device: Option<&'a str>,
}

/// One readiness event, copied out of the kernel's buffer so the loop can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ready {
    /// The token the socket was opened under (the driver's slot index).
    pub token: usize,
    pub readable: bool,
    /// The event reported FIN or an error.
    pub closing: bool,
    pub writable: bool,
}

/// What a [`Kernel::wait`] saw besides socket readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Waited {
    /// The event buffer was filled: more events may be waiting.
    pub full: bool,
    /// The client's waker fired ([`Wake`] says why).
    pub woken: bool,
}

/// A way to end a [`Kernel::wait`] from another thread (mio's `Waker`, an eventfd on Linux).
pub(crate) trait Notify: Send + Sync + std::fmt::Debug {
    fn notify(&self) -> io::Result<()>;
}

/// The operating system under the driver. Every method is a syscall (or a few) of the real
/// kernel; none blocks except [`Kernel::wait`].
pub(crate) trait Kernel {
    /// A non-blocking TCP socket.
    type Stream;

    fn caps(&self) -> Caps;

    /// The only clock the driver reads (quinn's `Runtime::now`): the simulator's is virtual.
    fn now(&self) -> Instant;

    /// `socket()`, `TCP_NODELAY`, the binds of `opts` (device, then local address), a
    /// non-blocking `connect()`, registration for readable and writable events under `token`.
    /// An error is a connect that failed at once (refused, unreachable, `EMFILE`, a bind that
    /// failed): the driver handles it exactly like one that fails later.
    fn open(&mut self, addr: SocketAddr, opts: &OpenOpts<'_>, token: usize) -> io::Result<Self::Stream>;

    /// [`Kernel::open`], but the connect starts at `at`, while the driver may not run (the
    /// caller is away): the socket is opened and registered now. Until the connect starts,
    /// [`Kernel::connect_result`] says `Ok(false)` whatever a `wait` reports of the socket.
    /// A kernel that cannot start it later starts it now.
    fn open_at(
        &mut self,
        addr: SocketAddr,
        opts: &OpenOpts<'_>,
        token: usize,
        at: Instant,
    ) -> io::Result<Self::Stream> {
        let _ = at;
        self.open(addr, opts, token)
    }

    /// Starts the connect of a socket opened by [`Kernel::open_at`] now, if it has not started
    /// yet (for any other socket, nothing). `Err`: the start failed (now or when the kernel
    /// made it): the connect's error.
    fn start_now(&mut self, s: &mut Self::Stream) -> io::Result<()> {
        let _ = s;
        Ok(())
    }

    /// After a writable or error event of a connecting socket: `Ok(true)` connected,
    /// `Ok(false)` not yet (a spurious wake-up), `Err` the connect's error.
    fn connect_result(&mut self, s: &mut Self::Stream) -> io::Result<bool>;

    fn read(&mut self, s: &mut Self::Stream, buf: &mut [u8]) -> io::Result<usize>;

    fn write(&mut self, s: &mut Self::Stream, buf: &[u8]) -> io::Result<usize>;

    /// A read that waits up to `timeout` for data, a FIN or an error on `s` alone, in the
    /// socket's own `recv` (no poller wait, no second syscall): `WouldBlock` when the time
    /// passed first, else as [`Kernel::read`]. Only where [`Caps::read_wait`] says so. The
    /// timeout may be rounded up to the kernel's tick (a few milliseconds): the driver asks for
    /// one well short of its deadlines.
    fn read_wait(&mut self, s: &mut Self::Stream, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;

    /// `MSG_PEEK | MSG_DONTWAIT` of one byte: `Ok(0)` FIN, `Ok(1)` data, `WouldBlock` nothing.
    fn peek(&mut self, s: &mut Self::Stream) -> io::Result<usize>;

    /// Acknowledge at once what `s` has received, instead of when the kernel's delayed-ACK
    /// timer says (Linux: `TCP_QUICKACK`, which sends the pending ACK and leaves delayed-ACK mode
    /// until our next write; elsewhere nothing). Called when a read leaves a response incomplete.
    ///
    /// A device that writes its response in pieces (the head, then the body) with Nagle's
    /// algorithm on, as embedded stacks commonly do, keeps the second piece until the first is
    /// acknowledged. Linux delays that ACK by at least 40 ms on a connection that carries
    /// requests and responses, expecting to send it with our next request, which waits for this
    /// response: each response after the first then takes 40 ms more (reqwest, hyper, curl do the
    /// same). Against such a device (the Python device of `examples/interop.rs`, which also closes
    /// connections idle for 20 ms) a GET took 20 ms, ended by the device's idle close that pushed
    /// the body out with its FIN, where it takes ~0.2 ms with this. A response that arrives whole
    /// costs nothing here; a long body, one `setsockopt` per read that drains the socket.
    fn ack_now(&mut self, s: &mut Self::Stream);

    /// Close the socket (and take it out of the poller).
    fn close(&mut self, s: Self::Stream);

    /// Wait up to `timeout` (`None`: no limit) for readiness and fill `ready` (cleared first).
    /// `Interrupted` is returned as an error; the driver decides whether to ask again.
    fn wait(&mut self, ready: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<Waited>;

    /// The handle other threads use to end a `wait` (a poller has at most one).
    fn notifier(&mut self) -> io::Result<Box<dyn Notify>>;
}

/// The client's waker, and why it fired: a caller's [`crate::Waker::wake`], or a name lookup
/// that finished on its thread (which must not look like the caller's wake-up to a `poll`).
/// One notifier serves both: a poller may have only one.
#[derive(Debug)]
pub(crate) struct Wake {
    notify: Box<dyn Notify>,
    pub(crate) caller: AtomicBool,
    pub(crate) lookup: AtomicBool,
}

impl Wake {
    pub(crate) fn new(notify: Box<dyn Notify>) -> Wake {
        Wake { notify, caller: AtomicBool::new(false), lookup: AtomicBool::new(false) }
    }

    /// The caller's wake-up: a `poll` in progress returns.
    pub(crate) fn wake(&self) -> io::Result<()> {
        self.caller.store(true, Ordering::Release);
        self.notify.notify()
    }

    /// A name lookup finished: the loop files it and goes on.
    pub(crate) fn lookup_done(&self) -> io::Result<()> {
        self.lookup.store(true, Ordering::Release);
        self.notify.notify()
    }
}
