//! The real kernel: mio's poller and socket2's sockets. The only file of the crate that names
//! either.

use std::io;
#[cfg(not(target_os = "linux"))]
use std::io::{Read, Write};
#[cfg(target_os = "linux")]
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::{Caps, Kernel, Notify, OpenOpts, Ready, Waited};

/// `EINPROGRESS`: a non-blocking connect has started (`io::ErrorKind::InProgress` is unstable).
#[cfg(target_os = "linux")]
const EINPROGRESS: i32 = 115;
#[cfg(not(target_os = "linux"))]
const EINPROGRESS: i32 = 36;

/// The `recv`/`send` flags (Linux's values, the same on every architecture).
#[cfg(target_os = "linux")]
const MSG_PEEK: i32 = 0x2;
#[cfg(target_os = "linux")]
const MSG_DONTWAIT: i32 = 0x40;
#[cfg(target_os = "linux")]
const MSG_NOSIGNAL: i32 = 0x4000;

/// The token of the client's waker: never a socket's (slab indices stay below `u32::MAX`, which
/// is `usize::MAX` on 32-bit targets: `slab::MAX_SLOTS`).
const WAKE: Token = Token(usize::MAX);

/// mio's `Poll` and its event buffer, and the thread that starts timed connects.
pub(crate) struct MioKernel {
    poll: Poll,
    events: Events,
    /// Started by the first [`Kernel::open_at`].
    timed: Option<Timed>,
    /// Timed connects done with, kept for the next ones: a timed warm spare per command then
    /// allocates nothing (at most [`SPARE_JOBS`]; one the connecting thread still holds is
    /// skipped until it lets go).
    spare_jobs: Vec<Arc<Job>>,
}

/// How many finished timed connects [`MioKernel`] keeps for reuse.
const SPARE_JOBS: usize = 8;

impl MioKernel {
    /// A poller whose event buffer holds `events` events per wait.
    pub(crate) fn new(events: usize) -> io::Result<MioKernel> {
        Ok(MioKernel {
            poll: Poll::new()?,
            events: Events::with_capacity(events),
            timed: None,
            spare_jobs: Vec::new(),
        })
    }

    /// A pending timed connect of `sock` to `addr` at `at`: a finished one reused when one is
    /// no longer shared with the connecting thread, a new one otherwise.
    fn job(&mut self, at: Instant, sock: Socket, addr: SocketAddr) -> Arc<Job> {
        let state = JobState::Pending { sock, addr: addr.into() };
        for i in 0..self.spare_jobs.len() {
            if let Some(job) = Arc::get_mut(&mut self.spare_jobs[i]) {
                job.at = at;
                *job.state.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
                return self.spare_jobs.swap_remove(i);
            }
        }
        Arc::new(Job { at, state: Mutex::new(state) })
    }

    /// A timed connect the driver is done with (started, failed and reported, or called off),
    /// kept for [`MioKernel::job`] while there is room.
    fn recycle(&mut self, job: Arc<Job>) {
        if self.spare_jobs.len() < SPARE_JOBS {
            self.spare_jobs.push(job);
        }
    }

    /// The timed connects' thread, started if need be (`None`: it could not be).
    fn timed(&mut self) -> Option<&Timed> {
        if self.timed.is_none() {
            match Timed::start() {
                Ok(t) => self.timed = Some(t),
                Err(e) => {
                    log::warn!("no thread for timed connects ({e}): warm spares connect at once");
                    return None;
                }
            }
        }
        self.timed.as_ref()
    }

    /// The poller's file descriptor, for embedding in another event loop.
    #[cfg(unix)]
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.poll.as_raw_fd()
    }
}

impl std::fmt::Debug for MioKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MioKernel").finish_non_exhaustive()
    }
}

impl Notify for mio::Waker {
    fn notify(&self) -> io::Result<()> {
        self.wake()
    }
}

/// A connection's socket. On Linux every read, peek and write passes `MSG_DONTWAIT`, so that
/// [`Kernel::read_wait`] may clear the socket's `O_NONBLOCK` and block in its `recv`.
pub(crate) struct MioStream {
    io: mio::net::TcpStream,
    /// Its connect, set for later ([`Kernel::open_at`]), until it is known to have started.
    timed: Option<Arc<Job>>,
    /// `O_NONBLOCK` was cleared (by the first `read_wait`).
    #[cfg(target_os = "linux")]
    blocking: bool,
    /// The `SO_RCVTIMEO` last set (`None`: none, the default).
    #[cfg(target_os = "linux")]
    rcvtimeo: Option<Duration>,
}

impl MioStream {
    fn new(io: mio::net::TcpStream) -> MioStream {
        MioStream {
            io,
            timed: None,
            #[cfg(target_os = "linux")]
            blocking: false,
            #[cfg(target_os = "linux")]
            rcvtimeo: None,
        }
    }
}

/// `buf` as the uninitialised bytes socket2's `recv` takes.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the slice's only writer is the
    // kernel, through socket2's `recv`, which writes received (initialised) bytes: nothing
    // uninitialised can be written into `buf` through it. (What std's own `read` does.)
    unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [MaybeUninit<u8>]) }
}

impl Kernel for MioKernel {
    type Stream = MioStream;

    fn caps(&self) -> Caps {
        Caps {
            // epoll re-polls a socket before it reports it (ep_item_poll); kqueue and IOCP as
            // mio drives them make no such promise.
            zero_wait_is_exact: cfg!(target_os = "linux"),
            writable_means_connected: cfg!(target_os = "linux"),
            read_wait: cfg!(target_os = "linux"),
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn open(&mut self, addr: SocketAddr, opts: &OpenOpts<'_>, token: usize) -> io::Result<Self::Stream> {
        let socket = new_socket(addr, opts)?;
        start_connect(&socket, addr)?;
        self.register(socket, token)
    }

    /// The socket is opened (options, binds) and registered now, and a duplicate of its
    /// descriptor goes to the timed connects' thread, which connects it at `at` unless the
    /// driver did first ([`Kernel::start_now`]) or closed it. Until then a `wait` may report it
    /// (an unconnected socket is writable and hung up, to epoll), and `connect_result` says not
    /// yet; once connected, epoll reports it writable as any other.
    fn open_at(
        &mut self,
        addr: SocketAddr,
        opts: &OpenOpts<'_>,
        token: usize,
        at: Instant,
    ) -> io::Result<Self::Stream> {
        if at <= Instant::now() {
            return self.open(addr, opts, token);
        }
        let socket = new_socket(addr, opts)?;
        let job = match (socket.try_clone(), self.timed()) {
            (Ok(dup), Some(t)) => {
                t.prune();
                self.job(at, dup, addr)
            }
            (Err(e), _) => {
                log::debug!("timed connect to {addr}: no duplicate descriptor ({e}): connecting now");
                start_connect(&socket, addr)?;
                return self.register(socket, token);
            }
            (_, None) => {
                start_connect(&socket, addr)?;
                return self.register(socket, token);
            }
        };
        let mut stream = self.register(socket, token)?;
        if let Some(t) = &self.timed {
            t.push(Arc::clone(&job));
        }
        stream.timed = Some(job);
        Ok(stream)
    }

    fn start_now(&mut self, s: &mut Self::Stream) -> io::Result<()> {
        match s.timed.take() {
            Some(job) => {
                let started = job.start();
                self.recycle(job);
                started
            }
            None => Ok(()),
        }
    }

    fn connect_result(&mut self, s: &mut Self::Stream) -> io::Result<bool> {
        // A timed connect not started: not yet. Failed when the thread started it: that error.
        // Started: the socket says (and the job is no longer needed).
        if let Some(outcome) = s.timed.as_ref().map(|job| job.outcome()) {
            let Some(started) = outcome else { return Ok(false) };
            if let Some(job) = s.timed.take() {
                self.recycle(job);
            }
            started?;
        }
        match s.io.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match s.io.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false), // spurious wake-up
                Err(e) => Err(e),
            },
        }
    }

    fn read(&mut self, s: &mut Self::Stream, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        return socket2::SockRef::from(&s.io).recv_with_flags(as_uninit(buf), MSG_DONTWAIT);
        #[cfg(not(target_os = "linux"))]
        s.io.read(buf)
    }

    /// Linux: clears the socket's `O_NONBLOCK` on its first call (two `fcntl`s, once per
    /// connection), sets `SO_RCVTIMEO` when the timeout differs from the last one (the driver
    /// asks for whole seconds while a deadline is far), and `recv`s without `MSG_DONTWAIT`.
    #[cfg(target_os = "linux")]
    fn read_wait(&mut self, s: &mut Self::Stream, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let sock = socket2::SockRef::from(&s.io);
        if !s.blocking {
            sock.set_nonblocking(false)?;
            s.blocking = true;
        }
        // SO_RCVTIMEO of zero means no timeout at all.
        let timeout = timeout.max(Duration::from_micros(1));
        if s.rcvtimeo != Some(timeout) {
            sock.set_read_timeout(Some(timeout))?;
            s.rcvtimeo = Some(timeout);
        }
        sock.recv_with_flags(as_uninit(buf), 0)
    }

    #[cfg(not(target_os = "linux"))]
    fn read_wait(&mut self, _s: &mut Self::Stream, _buf: &mut [u8], _timeout: Duration) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn write(&mut self, s: &mut Self::Stream, buf: &[u8]) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        return socket2::SockRef::from(&s.io).send_with_flags(buf, MSG_DONTWAIT | MSG_NOSIGNAL);
        #[cfg(not(target_os = "linux"))]
        s.io.write(buf)
    }

    fn peek(&mut self, s: &mut Self::Stream) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        return socket2::SockRef::from(&s.io)
            .recv_with_flags(&mut [MaybeUninit::uninit()], MSG_PEEK | MSG_DONTWAIT);
        #[cfg(not(target_os = "linux"))]
        {
            let mut byte = [0u8; 1];
            s.io.peek(&mut byte)
        }
    }

    /// Linux: `TCP_QUICKACK`, which sends the pending ACK and leaves delayed-ACK mode until our
    /// next write. Elsewhere nothing.
    fn ack_now(&mut self, s: &mut Self::Stream) {
        #[cfg(target_os = "linux")]
        if let Err(e) = socket2::SockRef::from(&s.io).set_tcp_quickack(true) {
            log::debug!("TCP_QUICKACK: {e}");
        }
        #[cfg(not(target_os = "linux"))]
        let _ = s;
    }

    fn close(&mut self, mut s: Self::Stream) {
        // A connect still set for later is called off first (the thread's duplicate of the
        // descriptor is closed with it), so that this close is the socket's last.
        if let Some(job) = s.timed.take() {
            job.cancel();
            self.recycle(job);
        }
        // Dropping the stream closes the socket; on Linux closing the last descriptor also
        // removes it from the epoll set, so no EPOLL_CTL_DEL (a syscall per connection).
        #[cfg(not(target_os = "linux"))]
        let _ = self.poll.registry().deregister(&mut s.io);
        drop(s);
    }

    #[inline]
    fn wait(&mut self, ready: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<Waited> {
        ready.clear();
        self.poll.poll(&mut self.events, timeout)?;
        let mut waited = Waited::default();
        let mut n = 0;
        for e in self.events.iter() {
            n += 1;
            if e.token() == WAKE {
                waited.woken = true;
                continue;
            }
            ready.push(Ready {
                token: e.token().0,
                readable: e.is_readable() || e.is_read_closed() || e.is_error(),
                closing: e.is_read_closed() || e.is_error(),
                writable: e.is_writable(),
            });
        }
        waited.full = n == self.events.capacity();
        Ok(waited)
    }

    fn notifier(&mut self) -> io::Result<Box<dyn Notify>> {
        Ok(Box::new(mio::Waker::new(self.poll.registry(), WAKE)?))
    }
}

impl MioKernel {
    /// Registers `socket` under `token` for readable and writable events.
    fn register(&mut self, socket: Socket, token: usize) -> io::Result<MioStream> {
        let mut stream = mio::net::TcpStream::from_std(socket.into());
        self.poll.registry().register(&mut stream, Token(token), Interest::READABLE | Interest::WRITABLE)?;
        Ok(MioStream::new(stream))
    }
}

impl Drop for MioKernel {
    fn drop(&mut self) {
        if let Some(t) = self.timed.take() {
            t.stop();
        }
    }
}

/// The thread that starts timed connects ([`Kernel::open_at`]): it sleeps until the earliest
/// is due and starts it, unless the driver has started or closed it meanwhile. One per client
/// that needs it (started by its first timed connect), stopped with the client.
struct Timed {
    shared: Arc<TimedShared>,
}

#[derive(Default)]
struct TimedShared {
    jobs: Mutex<TimedJobs>,
    wake: Condvar,
}

#[derive(Default)]
struct TimedJobs {
    due: Vec<Arc<Job>>,
    quit: bool,
}

/// One timed connect. Its state's lock is held across the `connect` that starts it, by
/// whichever side starts it, and by a close that calls it off: the duplicate descriptor is
/// used or closed under it, never after.
pub(crate) struct Job {
    at: Instant,
    state: Mutex<JobState>,
}

enum JobState {
    /// Not started: a duplicate of the socket's descriptor and where to connect it.
    Pending { sock: Socket, addr: socket2::SockAddr },
    /// `connect` was called (in progress, or done).
    Started,
    /// `connect` failed at once, when the thread called it: the error, until reported.
    Failed(Option<io::Error>),
    /// The driver closed the socket first.
    Cancelled,
}

/// A poisoned lock (a panic while holding it, which nothing here can cause) is still usable:
/// the states are plain values.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        locked(&self.state)
    }

    /// Starts the connect now if it has not started: `Err` if this start failed, or the
    /// thread's did (reported once).
    fn start(&self) -> io::Result<()> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, JobState::Started) {
            JobState::Pending { sock, addr } => match connect_started(sock.connect(&addr)) {
                Ok(()) => Ok(()),
                Err(e) => {
                    *state = JobState::Failed(None);
                    Err(e)
                }
            },
            JobState::Failed(e) => {
                *state = JobState::Failed(None);
                Err(e.unwrap_or_else(|| io::ErrorKind::NotConnected.into()))
            }
            JobState::Started => Ok(()),
            JobState::Cancelled => {
                *state = JobState::Cancelled;
                Ok(())
            }
        }
    }

    /// The thread's start, when the job is due: an error waits for the driver.
    fn start_due(&self) {
        let mut state = self.lock();
        if let JobState::Pending { sock, addr } = std::mem::replace(&mut *state, JobState::Started)
            && let Err(e) = connect_started(sock.connect(&addr))
        {
            log::debug!("timed connect failed at once: {e}");
            *state = JobState::Failed(Some(e));
        }
    }

    /// `None` while not started; the start's failure (reported once), or `Ok` once started.
    fn outcome(&self) -> Option<io::Result<()>> {
        match &mut *self.lock() {
            JobState::Pending { .. } => None,
            JobState::Failed(e) => Some(Err(e.take().unwrap_or_else(|| io::ErrorKind::NotConnected.into()))),
            JobState::Started | JobState::Cancelled => Some(Ok(())),
        }
    }

    fn cancel(&self) {
        *self.lock() = JobState::Cancelled;
    }
}

impl Timed {
    fn start() -> io::Result<Timed> {
        let shared = Arc::new(TimedShared::default());
        let theirs = Arc::clone(&shared);
        // Detached: stopping it is telling it to (it holds only its share of the list), and a
        // join could wait for a thread that a `fork` did not copy.
        drop(std::thread::Builder::new().name("finwatch-connect".into()).spawn(move || Timed::run(&theirs))?);
        Ok(Timed { shared })
    }

    /// Lets go of the jobs the driver started or closed meanwhile, so that the list stays as
    /// long as the connects set for later, and those jobs can be reused ([`MioKernel::job`]).
    fn prune(&self) {
        locked(&self.shared.jobs).due.retain(|j| matches!(*j.lock(), JobState::Pending { .. }));
    }

    fn push(&self, job: Arc<Job>) {
        locked(&self.shared.jobs).due.push(job);
        self.shared.wake.notify_one();
    }

    fn run(shared: &TimedShared) {
        let mut jobs = locked(&shared.jobs);
        loop {
            if jobs.quit {
                return;
            }
            let now = Instant::now();
            let next = jobs.due.iter().enumerate().min_by_key(|(_, j)| j.at).map(|(i, j)| (i, j.at));
            jobs = match next {
                Some((i, at)) if at <= now => {
                    let job = jobs.due.swap_remove(i);
                    drop(jobs);
                    job.start_due();
                    locked(&shared.jobs)
                }
                Some((_, at)) => {
                    shared.wake.wait_timeout(jobs, at - now).map_or_else(|e| e.into_inner().0, |(g, _)| g)
                }
                None => shared.wake.wait(jobs).unwrap_or_else(std::sync::PoisonError::into_inner),
            };
        }
    }

    /// The thread ends at its next wake-up, now; jobs not yet due go with it (their
    /// descriptors closed: the driver closed, or is closing, the sockets).
    fn stop(self) {
        locked(&self.shared.jobs).quit = true;
        self.shared.wake.notify_one();
    }
}

/// A non-blocking connect's result: in progress is started.
fn connect_started(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        r => r,
    }
}

/// Starts the non-blocking connect of `socket` to `addr`.
fn start_connect(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    connect_started(socket.connect(&addr.into()))
}

/// A non-blocking TCP socket, bound if `opts` says so; not connected.
fn new_socket(addr: SocketAddr, opts: &OpenOpts<'_>) -> io::Result<Socket> {
    #[cfg(target_os = "linux")]
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    #[cfg(not(target_os = "linux"))]
    let socket = {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_nonblocking(true)?;
        s
    };
    socket.set_tcp_nodelay(opts.nodelay)?;
    if let Some(device) = opts.device {
        // SO_BINDTODEVICE: CAP_NET_RAW before Linux 5.7; since, unprivileged on a socket not yet
        // bound to a device (as here). A missing interface is ENODEV.
        #[cfg(target_os = "linux")]
        socket.bind_device(Some(device.as_bytes()))?;
        #[cfg(not(target_os = "linux"))]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("binding to an interface ({device:?}) is supported on Linux only"),
        ));
    }
    if let Some(local) = opts.local {
        // Port 0: the kernel picks an ephemeral port at the bind, unique for the local address
        // (without IP_BIND_ADDRESS_NO_PORT, which socket2 does not offer, it cannot wait for
        // the destination): a few tens of thousands of connections at once, plenty for a
        // controller.
        socket.bind(&SocketAddr::new(local, 0).into())?;
    }
    Ok(socket)
}

/// The seam over real sockets on loopback, where a socket that [`Kernel::read_wait`] made
/// blocking meets every other call: none of them may block.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair: the kernel's socket and the peer's (blocking, with timeouts, so a
    /// failing test cannot hang).
    fn pair(k: &mut MioKernel) -> (MioStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = k.open(l.local_addr().unwrap(), &OpenOpts::default(), 0).unwrap();
        let (peer, _) = l.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !k.connect_result(&mut s).unwrap() {
            assert!(Instant::now() < deadline, "connect did not complete");
            k.wait(&mut Vec::new(), Some(Duration::from_millis(10))).unwrap();
        }
        (s, peer)
    }

    /// Fails if `f` took a second or more: a call that should return at once blocked (until the
    /// guard timeouts set on the socket ended it).
    fn at_once<T>(what: &str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        assert!(t.elapsed() < Duration::from_secs(1), "{what} blocked for {:?}", t.elapsed());
        r
    }

    #[test]
    fn after_a_wait_in_recv_no_other_call_blocks() {
        let mut k = MioKernel::new(16).unwrap();
        let (mut s, mut peer) = pair(&mut k);
        // Guards: a call that wrongly blocks returns after 3 s instead of hanging the test.
        socket2::SockRef::from(&s.io).set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        peer.write_all(b"abc").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(k.read_wait(&mut s, &mut buf, Duration::from_secs(3)).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        assert!(s.blocking, "the first read_wait clears O_NONBLOCK");
        let kind = |r: io::Result<usize>| r.map_err(|e| e.kind());
        assert_eq!(kind(at_once("read", || k.read(&mut s, &mut buf))), Err(io::ErrorKind::WouldBlock));
        assert_eq!(kind(at_once("peek", || k.peek(&mut s))), Err(io::ErrorKind::WouldBlock));
        // A write larger than both socket buffers: a blocking send would wait for the peer.
        let big = vec![b'x'; 32 << 20];
        let n = at_once("write", || k.write(&mut s, &big)).unwrap();
        assert!(n < big.len(), "{n}");
        assert_eq!(kind(at_once("write", || k.write(&mut s, &big))), Err(io::ErrorKind::WouldBlock));
        // Nothing arrives: the wait ends by its timeout, as WouldBlock.
        let t = Instant::now();
        assert_eq!(
            kind(k.read_wait(&mut s, &mut buf, Duration::from_millis(30))),
            Err(io::ErrorKind::WouldBlock)
        );
        assert!(t.elapsed() >= Duration::from_millis(25), "{:?}", t.elapsed());
        // The peer's FIN ends a wait with 0.
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(k.read_wait(&mut s, &mut buf, Duration::from_secs(3)).unwrap(), 0);
        assert_eq!(at_once("peek", || k.peek(&mut s)).unwrap(), 0);
    }

    /// Waits (bounded) until `s`'s connect is reported complete: `Ok(true)`, or its error.
    fn connected(k: &mut MioKernel, s: &mut MioStream, within: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + within;
        let mut ready = Vec::new();
        while Instant::now() < deadline {
            k.wait(&mut ready, Some(Duration::from_millis(5)))?;
            if !ready.is_empty() && k.connect_result(s)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A connect set for later starts then, on the kernel's thread, with nobody driving the
    /// poller; before that the socket is not connecting (nothing reaches the listener), and what
    /// a wait reports of it (an unconnected socket is hung up to epoll) is not taken for a
    /// connect.
    #[test]
    fn a_timed_connect_starts_at_its_time() {
        let mut k = MioKernel::new(16).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let at = Instant::now() + Duration::from_millis(100);
        let mut s = k.open_at(l.local_addr().unwrap(), &OpenOpts::default(), 0, at).unwrap();
        let mut ready = Vec::new();
        k.wait(&mut ready, Some(Duration::ZERO)).unwrap();
        assert!(ready.iter().all(|r| r.closing), "an unconnected socket reads as hung up: {ready:?}");
        assert!(!k.connect_result(&mut s).unwrap(), "not connecting yet");
        assert_eq!(l.accept().map(|_| ()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        // Nobody drives the poller until well after its time: the thread started it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let peer = loop {
            match l.accept() {
                Ok((peer, _)) => break peer,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the timed connect never started");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert!(Instant::now() >= at, "started before its time");
        assert!(connected(&mut k, &mut s, Duration::from_secs(5)).unwrap());
        k.write(&mut s, b"ping").unwrap();
        let mut got = [0u8; 4];
        peer.set_nonblocking(false).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (&peer).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        k.close(s);
    }

    /// The driver starts a timed connect itself when a request waits for it; a close before its
    /// time calls it off (nothing reaches the listener, ever); a start that fails is reported.
    #[test]
    fn a_timed_connect_started_early_called_off_or_failing() {
        let mut k = MioKernel::new(16).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let later = Instant::now() + Duration::from_secs(60);
        let mut s = k.open_at(l.local_addr().unwrap(), &OpenOpts::default(), 0, later).unwrap();
        k.start_now(&mut s).unwrap();
        assert!(connected(&mut k, &mut s, Duration::from_secs(5)).unwrap());
        assert!(l.accept().is_ok());
        k.close(s);

        let soon = Instant::now() + Duration::from_millis(30);
        let s = k.open_at(l.local_addr().unwrap(), &OpenOpts::default(), 1, soon).unwrap();
        k.close(s);
        // Past its time, and then some: the thread found it called off.
        let quiet_until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < quiet_until {
            assert_eq!(l.accept().map(|_| ()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
            std::thread::sleep(Duration::from_millis(5));
        }

        // Nothing listens: refused, whether the start fails at once or by the SYN's RST.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut s = k.open_at(closed, &OpenOpts::default(), 2, later).unwrap();
        let outcome = k.start_now(&mut s).and_then(|()| connected(&mut k, &mut s, Duration::from_secs(5)));
        assert_eq!(outcome.map_err(|e| e.kind()), Err(io::ErrorKind::ConnectionRefused));
        k.close(s);
    }

    /// A timed connect the driver is done with is reused by the next one (a timed spare per
    /// command allocates nothing), but never while the connecting thread still holds it: there
    /// a new one is made, and the reused one connects as a new one does.
    #[test]
    fn finished_timed_connects_are_reused_once_the_thread_lets_go() {
        let mut k = MioKernel::new(16).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let later = Instant::now() + Duration::from_secs(60);
        let job_of = |s: &MioStream| Arc::as_ptr(s.timed.as_ref().unwrap());
        // Started by the driver: the thread's list still holds it (until the next timed connect).
        let mut s = k.open_at(addr, &OpenOpts::default(), 0, later).unwrap();
        let first = job_of(&s);
        k.start_now(&mut s).unwrap();
        assert!(connected(&mut k, &mut s, Duration::from_secs(5)).unwrap());
        k.close(s);
        assert_eq!(k.spare_jobs.len(), 1);
        // The next timed connect first has the thread let go of it, and reuses it; it connects
        // at its time.
        let soon = Instant::now() + Duration::from_millis(20);
        let mut s = k.open_at(addr, &OpenOpts::default(), 1, soon).unwrap();
        assert_eq!(job_of(&s), first, "a finished job was not reused");
        assert!(connected(&mut k, &mut s, Duration::from_secs(5)).unwrap());
        assert!(Instant::now() >= soon, "the reused job connected before its time");
        // Connected, it went back to the pool. One still shared (a clone stands for a thread
        // that has not let go) is not reused.
        assert!(s.timed.is_none());
        let held = Arc::clone(&k.spare_jobs[0]);
        k.close(s);
        let mut s = k.open_at(addr, &OpenOpts::default(), 2, later).unwrap();
        assert!(!std::ptr::eq(job_of(&s), Arc::as_ptr(&held)), "a job still shared was reused");
        drop(held);
        k.start_now(&mut s).unwrap();
        assert!(connected(&mut k, &mut s, Duration::from_secs(5)).unwrap());
        let accepted = std::iter::from_fn(|| l.accept().ok()).count();
        assert_eq!(accepted, 3, "every connect reached the listener once");
        k.close(s);
        // Called off before its time, it is kept too, and the pool stays bounded.
        for i in 0..2 * SPARE_JOBS {
            let s = k.open_at(addr, &OpenOpts::default(), 3 + i, later).unwrap();
            k.close(s);
        }
        assert!(k.spare_jobs.len() <= SPARE_JOBS);
    }

    /// A RST with unread bytes behind it: the bytes are read first (Linux), then the reset, by
    /// a wait in `recv` as by a plain read.
    #[test]
    fn a_rst_behind_unread_bytes_reaches_a_wait_in_recv_after_them() {
        let mut k = MioKernel::new(16).unwrap();
        let (mut s, mut peer) = pair(&mut k);
        let mut buf = [0u8; 16];
        // Made blocking by a first wait.
        peer.write_all(b"1").unwrap();
        assert_eq!(k.read_wait(&mut s, &mut buf, Duration::from_secs(3)).unwrap(), 1);
        k.write(&mut s, b"GET").unwrap(); // unread by the peer: its close sends a RST
        let mut got = [0u8; 3];
        peer.read_exact(&mut got).unwrap();
        peer.write_all(b"late").unwrap();
        socket2::SockRef::from(&peer).set_linger(Some(Duration::ZERO)).unwrap();
        drop(peer);
        let mut read = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = loop {
            assert!(Instant::now() < deadline, "no reset");
            match k.read_wait(&mut s, &mut buf, Duration::from_secs(1)) {
                Ok(0) => panic!("a FIN, not the reset, after {read:?}"),
                Ok(n) => read.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => break e,
            }
        };
        assert_eq!(read, b"late");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}
