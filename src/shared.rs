//! [`SharedClient`]: a `Send + Sync + Clone` handle on a [`Client`] whose event loop runs on a
//! background thread. The user-facing documentation (when to choose it, what it costs, order,
//! shutdown) is on the type, since this module is private.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientBuilder, Streamed, Waker};
use crate::error::{Error, Result, Stage};
use crate::proto::engine::{Completion, ConnectionInfo, RequestId, Stats};
use crate::request::{Method, Request};
use crate::response::Response;

/// The longest the loop thread sleeps in one [`Client::poll`]. The loop is woken by readiness,
/// by the client's timers and by [`Waker::wake`] whenever a request or query is queued (a wake
/// that arrives before `poll` is called is honoured too), so this is only a backstop.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// How long the loop thread leaves the client's sockets to the callers after a direct
/// [`SharedClient::send`] (see [`Watch`]) before it watches them again: long enough that a
/// caller sending back to back never meets the loop thread, short enough that a FIN on an idle
/// connection is still processed soon after the caller went away.
#[cfg(unix)]
const LINGER: Duration = Duration::from_micros(250);

/// The longest the loop thread sleeps while callers keep calling back to back (see `linger` in
/// the loop): after a burst, it watches the sockets again within this.
#[cfg(unix)]
const MAX_LINGER: Duration = Duration::from_millis(8);

/// How long [`SharedClient::stats`] and [`SharedClient::connections`] wait for the loop thread to
/// answer before they read the client themselves (the loop is then blocked in a callback).
const QUERY_WAIT: Duration = Duration::from_secs(1);

/// How long [`SharedClient::shutdown`] waits, after the grace period, for the loop thread to
/// finish (its last callbacks run in that time) before it gives up and detaches it.
const JOIN_WAIT: Duration = Duration::from_secs(1);

/// A completion callback, run on the loop thread.
type Callback = Box<dyn FnOnce(Result<Response>) + Send + 'static>;

/// Where a request's outcome goes.
enum Reply {
    /// A caller blocked in [`SharedClient::send`].
    Blocking(mpsc::SyncSender<Result<Response>>),
    /// [`SharedClient::submit_with`] and [`SharedClient::submit_to`].
    Callback(Callback),
    /// [`SharedClient::send_async`]: the outcome goes into the future's slot, and its task is
    /// woken.
    Async(Arc<Slot>),
}

impl Reply {
    fn deliver(self, result: Result<Response>) {
        match self {
            // The caller waits in `recv` until it gets this: it cannot have gone away.
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Reply::Callback(f) => {
                if panic::catch_unwind(AssertUnwindSafe(|| f(result))).is_err() {
                    log::error!("a SharedClient completion callback panicked; the loop goes on");
                }
            }
            Reply::Async(slot) => {
                let waker = {
                    let mut st = lock(&slot.state);
                    st.result = Some(result);
                    st.waker.take()
                };
                // Woken outside the lock: a waker may run the task inline (some executors do).
                if let Some(w) = waker
                    && panic::catch_unwind(AssertUnwindSafe(|| w.wake())).is_err()
                {
                    log::error!("a SharedClient future's waker panicked; the loop goes on");
                }
            }
        }
    }
}

/// Where [`ResponseFuture`]'s outcome lands.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<Response>>,
    waker: Option<std::task::Waker>,
    /// The future has returned its outcome.
    done: bool,
}

/// The outcome of [`SharedClient::send_async`]: a [`Future`] that any executor can poll (tokio,
/// async-std, smol, a hand-written `block_on`); finwatch depends on none of them. The request
/// runs on the client's loop thread, which wakes the future's task when the outcome is there.
///
/// Dropping it does **not** cancel the request: it may already be on the wire, and a command
/// the device may have received is not taken back silently. It completes (or fails) as if the
/// future were still there, and its outcome is discarded. Polled again after it returned its
/// outcome, it returns [`Error::InvalidRequest`] rather than panic.
#[must_use = "the request is sent whether or not the future is polled; poll it for the outcome"]
pub struct ResponseFuture {
    slot: Arc<Slot>,
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.slot.state);
        f.debug_struct("ResponseFuture").field("ready", &st.result.is_some()).field("done", &st.done).finish()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Response>> {
        let mut st = lock(&self.slot.state);
        if let Some(result) = st.result.take() {
            st.done = true;
            st.waker = None;
            return Poll::Ready(result);
        }
        if st.done {
            return Poll::Ready(Err(Error::InvalidRequest {
                reason: "a SharedClient ResponseFuture polled after it returned its outcome".into(),
            }));
        }
        // The latest task's waker (a future may move between tasks).
        match &mut st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Work for the loop thread. `Submit` is nearly every job: boxing its request to shrink the
/// rare others would cost an allocation per command.
#[allow(clippy::large_enum_variant)]
enum Job {
    Submit(Outbound, Reply),
    Stats(mpsc::SyncSender<Stats>),
    Connections(mpsc::SyncSender<Vec<ConnectionInfo>>),
}

struct State {
    /// Jobs in submission order; the loop takes them all at once.
    jobs: VecDeque<Job>,
    /// Set by `shutdown`: the grace period's end. From then on requests are refused.
    closing: Option<Instant>,
    /// The loop thread has delivered every outcome and will run no more callbacks.
    finished: bool,
    /// A caller runs its request on the client itself ([`SharedClient::send`]'s direct path).
    direct_active: bool,
    /// When the last direct request ended.
    direct_end: Option<Instant>,
}

impl State {
    /// How long ago a caller last ran a request on the client itself: zero while one does,
    /// `None` if none ever did.
    fn since_direct(&self, now: Instant) -> Option<Duration> {
        if self.direct_active {
            return Some(Duration::ZERO);
        }
        self.direct_end.map(|end| now.saturating_duration_since(end))
    }
}

/// What the handles and the loop thread share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when `State::finished` is set.
    finished: Condvar,
    /// Wakes the loop thread (a job, a shutdown) on unix: its own poller's waker.
    #[cfg(unix)]
    notify: mio::Waker,
    /// The client's waker: wakes whoever runs the client's loop (the loop thread sleeping in it,
    /// elsewhere than unix; a caller's direct request, for a shutdown).
    waker: Waker,
    /// unix: whether the loop thread watches the client's sockets (see [`Watch`]).
    #[cfg(unix)]
    watch: Watch,
    /// Held by the loop thread while it works on the client (never while it sleeps, on unix),
    /// released while it runs callbacks (so a callback can read `stats`/`connections`) and once
    /// it has finished; held by a caller for a direct request.
    client: Mutex<Client>,
    /// Where the outcomes of the requests in the client go (taken by the loop thread as they
    /// complete; a direct request handed over to the loop thread joins them).
    waiting: Mutex<HashMap<RequestId, Reply>>,
    loop_thread: OnceLock<ThreadId>,
    join: Mutex<Option<JoinHandle<()>>>,
}

/// A [`Client`] shared by the threads of an application: `Send + Sync + Clone`, with the event
/// loop on a background thread.
///
/// Each request can be waited for ([`SharedClient::send`]), handed a callback
/// ([`SharedClient::submit_with`]) or have its outcome sent to a channel
/// ([`SharedClient::submit_to`]). Clones share one client, one connection pool and one loop
/// thread; dropping the last one shuts the loop down ([`SharedClient::shutdown`]).
///
/// # `Client` or `SharedClient`?
///
/// [`Client`] is driven by its caller: every call ([`Client::send`], [`Client::poll`], …) runs
/// the event loop on the calling thread, and between calls nothing runs. It is the lowest-latency
/// way to command a device (no thread hop: the thread that waits for the response is the one the
/// kernel wakes), and the right choice for a control loop that owns one thread. A FIN that a
/// device sends on an idle connection is processed at the next call; until then it waits in the
/// socket (and the pre-write check still catches it before a command could be written there).
///
/// `SharedClient` runs the same event loop on a thread of its own (`finwatch-loop`), so
///
/// - any number of threads share one client (one pool of connections, one queue per device)
///   through cheap clones of a `Send + Sync` handle;
/// - the loop waits on the sockets, so a FIN on an idle connection is processed (the connection
///   closed and forgotten) soon after it arrives (see below), even while every caller is busy
///   elsewhere.
///
/// A blocking call ([`SharedClient::send`], [`SharedClient::get`], …) that finds nothing
/// queued and nothing in flight runs its request on the client itself, on the caller's own
/// thread (unix): no thread hop, the cost of [`Client::send`] (`compare/`, scenario (a), every
/// thread on one CPU: 5.6 µs against `Client`'s 5.6 µs; it was 9.7 µs with two hops). While it
/// does, and for 250 µs after (so that back-to-back calls never meet the loop thread), the
/// loop thread does not watch the sockets; then it watches them again, so a FIN on an idle
/// connection is processed, and a connection retired ahead of the device's learned idle close,
/// within about 250 µs of the last call (up to 8 ms after a long burst of calls, which the
/// loop thread then checks on less and less often), and at once at any other time. (The
/// pre-write check stands either way: no request is written on such a connection.)
/// Otherwise (requests in flight from other threads, callbacks, futures; other systems than
/// unix) a request goes to the loop thread through a queue and a wake-up, and its outcome
/// comes back the same way: a thread hop each way, measured on loopback against the simulated
/// device, sequential requests from one thread, 2-core KVM guest (`cargo run --release
/// --example thread_hop`), at 24 µs for `Client::send` and 39 µs for `SharedClient::send`
/// with the machine busy, 24–29 against 96–108 µs with it idle (each wake-up then costs a
/// sleeping CPU's exit from its idle state).
///
/// # Order
///
/// Requests enter one queue, under one lock, and the loop submits them to the client in that
/// order; requests to one device then go out in submission order (and, with the default
/// [`ClientBuilder::max_in_flight_per_host`] of 1, complete in that order). With several threads,
/// "submission order" is the order in which the calls (`send`, `submit_with`, `submit_to`) took
/// that lock: calls made one after the other by one thread keep their order, and so do calls on
/// different threads that are ordered by other means (the second one starts after the first one
/// returned, or after a message from its thread); calls that really race are put in some order,
/// the same for every device.
///
/// # Shutdown
///
/// [`SharedClient::shutdown`] stops accepting requests (they fail at once with
/// [`Error::Shutdown`] at [`Stage::Queued`]), lets the requests already accepted complete until
/// the grace period ends, then aborts the rest ([`Client::abort_all`]: they fail with
/// [`Error::Shutdown`], saying how far they had got), closes every connection and joins the loop
/// thread. Dropping the last handle does the same with [`SharedClient::DROP_GRACE`]. Every wait
/// in it is bounded, even if a completion callback blocks the loop thread.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use finwatch::{Request, SharedClient};
///
/// let client = SharedClient::new()?;
/// let workers: Vec<_> = (0..4)
///     .map(|i| {
///         let client = client.clone();
///         std::thread::spawn(move || {
///             let url = format!("http://10.0.0.5/unico/v1/interface/io-state?ioId={}", 25600 + i);
///             client.send(Request::get(&url).build()?)
///         })
///     })
///     .collect();
/// for w in workers {
///     println!("{}", w.join().unwrap()?.status());
/// }
/// // Or fire and forget, with the outcome delivered on the loop thread:
/// client.submit_with(Request::put("http://10.0.0.5/unico/v1/interface/io", "1").build()?, |r| {
///     if let Err(e) = r {
///         eprintln!("command failed: {e}");
///     }
/// });
/// client.shutdown(Duration::from_millis(500));
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedClient {
    handle: Arc<Handle>,
}

/// Shuts the loop down when the last [`SharedClient`] goes. (The loop thread holds a `Shared`,
/// not a `Handle`, so it does not keep itself alive.)
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown(SharedClient::DROP_GRACE);
    }
}

/// The loop thread sleeps on a poller of its own (unix), which watches the client's poller fd
/// when `armed` and a waker always. It takes the client only to run a turn, so a caller of
/// [`SharedClient::send`] who finds nothing queued or pending runs its request on the client
/// itself, on its own thread: no thread hop either way, the cost of [`Client::send`]. For that
/// time (and [`LINGER`] after, so that a caller sending back to back never meets the loop
/// thread) the client's fd is taken out of the loop thread's poller, so a response the caller
/// waits for does not wake the loop thread too. Armed and disarmed only under the client's
/// lock.
#[cfg(unix)]
struct Watch {
    registry: mio::Registry,
    fd: std::os::fd::RawFd,
    armed: std::sync::atomic::AtomicBool,
}

#[cfg(unix)]
impl Watch {
    const CLIENT: mio::Token = mio::Token(0);
    const NOTIFY: mio::Token = mio::Token(1);

    fn arm(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        if self.armed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let fd = &self.fd;
        self.registry.register(&mut mio::unix::SourceFd(fd), Self::CLIENT, mio::Interest::READABLE)?;
        self.armed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether it was armed.
    fn disarm(&self) -> bool {
        use std::sync::atomic::Ordering;
        let was = self.armed.swap(false, Ordering::Relaxed);
        if was {
            let _ = self.registry.deregister(&mut mio::unix::SourceFd(&self.fd));
        }
        was
    }

    fn armed(&self) -> bool {
        self.armed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A request for the queue: plain, or with a streamed body or response sink (boxed: rare, and
/// boxing the plain one instead would cost an allocation per command, as for `Job`).
#[allow(clippy::large_enum_variant)]
enum Outbound {
    Plain(Request),
    Streamed(Box<Streamed>),
}

impl Outbound {
    fn submit_to(self, client: &mut Client) -> RequestId {
        match self {
            Outbound::Plain(request) => client.submit(request),
            Outbound::Streamed(s) => client.submit_streamed(*s),
        }
    }
}

/// A blocking call's request: built, a method and URL for the client's cache of recent URLs
/// (`SharedClient::get` and the like), or streamed (`SharedClient::send_streaming`, `send_to`;
/// boxed, as in `Outbound`).
#[allow(clippy::large_enum_variant)]
enum Outgoing<'u> {
    Built(Request),
    Recent(Method, &'u str, Vec<u8>),
    Streamed(Box<Streamed>),
}

impl Outgoing<'_> {
    /// The request itself, for the queue (a URL from the cache is parsed here).
    fn into_outbound(self) -> Result<Outbound> {
        match self {
            Outgoing::Built(request) => Ok(Outbound::Plain(request)),
            Outgoing::Recent(method, url, body) => {
                Request::builder(method, url).body(body).build().map(Outbound::Plain)
            }
            Outgoing::Streamed(s) => Ok(Outbound::Streamed(s)),
        }
    }
}

/// What became of it.
#[cfg(unix)]
enum Direct<'u> {
    /// Run on the caller's thread: its outcome.
    Done(Result<Response>),
    /// Not run (someone else has the client's attention): given back, for the queue.
    Declined(Outgoing<'u>),
}

/// Ends a direct request (also if it panicked): the loop thread may take over again. If this
/// request took the client's fd out of the loop thread's poller, the loop thread is woken once
/// it is over: it sleeps on a timeout it chose while it watched, and must now come back after
/// the linger to watch again (the first request of a burst pays this wake-up, not the others).
#[cfg(unix)]
struct DirectGuard<'a> {
    shared: &'a Shared,
    disarmed: bool,
}

#[cfg(unix)]
impl Drop for DirectGuard<'_> {
    fn drop(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            st.direct_active = false;
            st.direct_end = Some(Instant::now());
        }
        if self.disarmed
            && let Err(e) = self.shared.wake_loop()
        {
            log::error!("could not wake the finwatch loop thread: {e}");
        }
    }
}

impl std::fmt::Debug for SharedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.handle.shared.state);
        f.debug_struct("SharedClient")
            .field("queued", &st.jobs.len())
            .field("closing", &st.closing.is_some())
            .field("finished", &st.finished)
            .finish()
    }
}

impl SharedClient {
    /// The grace period of the shutdown that dropping the last handle performs.
    pub const DROP_GRACE: Duration = Duration::from_millis(100);

    /// A shared client with default settings; starts the loop thread.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let client = finwatch::SharedClient::new()?;
    /// let resp = client.send(finwatch::Request::get(&format!("{base}/state")).build()?)?;
    /// assert_eq!(resp.status(), 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn new() -> Result<SharedClient> {
        SharedClient::from_builder(ClientBuilder::new())
    }

    /// A shared client with the builder's settings; starts the loop thread. Fails if the client
    /// cannot be built or the thread cannot be started.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = finwatch::Client::builder().request_timeout(Duration::from_secs(2));
    /// let client = finwatch::SharedClient::from_builder(builder)?;
    /// assert_eq!(client.stats().submitted, 0);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn from_builder(builder: ClientBuilder) -> Result<SharedClient> {
        let mut client = builder.build()?;
        let waker = client.waker()?;
        #[cfg(unix)]
        let (outer, notify, watch) = {
            use std::os::fd::AsRawFd;
            let outer = mio::Poll::new()?;
            let notify = mio::Waker::new(outer.registry(), Watch::NOTIFY)?;
            let watch = Watch {
                registry: outer.registry().try_clone()?,
                fd: client.as_raw_fd(),
                armed: std::sync::atomic::AtomicBool::new(false),
            };
            watch.arm()?;
            (outer, notify, watch)
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closing: None,
                finished: false,
                direct_active: false,
                direct_end: None,
            }),
            finished: Condvar::new(),
            #[cfg(unix)]
            notify,
            waker,
            #[cfg(unix)]
            watch,
            client: Mutex::new(client),
            waiting: Mutex::new(HashMap::new()),
            loop_thread: OnceLock::new(),
            join: Mutex::new(None),
        });
        let for_loop = Arc::clone(&shared);
        #[cfg(test)]
        let panic_after = PANIC_AFTER_JOBS.with(|p| p.take());
        let join = thread::Builder::new().name("finwatch-loop".into()).spawn(move || {
            #[cfg(test)]
            PANIC_AFTER_JOBS.with(|p| p.set(panic_after));
            #[cfg(unix)]
            run(&for_loop, outer);
            #[cfg(not(unix))]
            run(&for_loop);
        })?;
        *lock(&shared.join) = Some(join);
        Ok(SharedClient { handle: Arc::new(Handle { shared }) })
    }

    /// Sends a request and blocks the calling thread until its response or error. The wait is
    /// bounded by the request's deadline, which the loop enforces (and by a shutdown's grace
    /// period).
    ///
    /// Fails at once with [`Error::Shutdown`] at [`Stage::Queued`] after a shutdown began, and
    /// with [`Error::InvalidRequest`] (nothing sent) when called on the loop thread itself, from
    /// a completion callback, where waiting would deadlock: use
    /// [`SharedClient::submit_with`] there.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// # let client = finwatch::SharedClient::new()?;
    /// let handles: Vec<_> = (0..4)
    ///     .map(|i| {
    ///         let client = client.clone();
    ///         let url = format!("{base}/io?i={i}");
    ///         std::thread::spawn(move || client.send(finwatch::Request::put(&url, "1").build()?))
    ///     })
    ///     .collect();
    /// for h in handles {
    ///     assert_eq!(h.join().unwrap()?.status(), 200);
    /// }
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn send(&self, request: Request) -> Result<Response> {
        self.handle.shared.send_blocking(Outgoing::Built(request))
    }

    /// `GET url`, blocking: [`SharedClient::send`] of `Request::get(url)`, but a URL used
    /// before is not parsed again (the client keeps the recent ones, as [`Client::get`] does).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let client = finwatch::SharedClient::new()?;
    /// assert_eq!(client.get(&format!("{base}/state"))?.status(), 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn get(&self, url: &str) -> Result<Response> {
        self.handle.shared.send_blocking(Outgoing::Recent(Method::GET, url, Vec::new()))
    }

    /// `PUT url` with `body`, blocking (see [`SharedClient::get`] and [`Client::put`]).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let client = finwatch::SharedClient::new()?;
    /// assert!(client.put(&format!("{base}/io"), "1")?.is_success());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn put(&self, url: &str, body: impl Into<Vec<u8>>) -> Result<Response> {
        self.handle.shared.send_blocking(Outgoing::Recent(Method::PUT, url, body.into()))
    }

    /// `POST url` with `body`, blocking (see [`SharedClient::get`] and [`Client::post`]: POST
    /// is not idempotent and is retried only where the device provably did not receive it).
    pub fn post(&self, url: &str, body: impl Into<Vec<u8>>) -> Result<Response> {
        self.handle.shared.send_blocking(Outgoing::Recent(Method::POST, url, body.into()))
    }

    /// `DELETE url`, blocking (see [`SharedClient::get`]).
    pub fn delete(&self, url: &str) -> Result<Response> {
        self.handle.shared.send_blocking(Outgoing::Recent(Method::DELETE, url, Vec::new()))
    }

    /// [`Client::send_streaming`] through the shared client: `len` bytes of `body` as the
    /// request's body, streamed, never held whole. Blocking, as [`SharedClient::send`]; the
    /// reader runs on whichever thread runs the request (the caller's, or the loop thread's,
    /// where it holds up the other devices' requests while it reads: keep it quick).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let client = finwatch::SharedClient::new()?;
    /// let image = std::io::Cursor::new(vec![0xA5u8; 300_000]); // a `File` in real life
    /// let put = finwatch::Request::put(&format!("{base}/unico/v1/firmware"), "").build()?;
    /// assert_eq!(client.send_streaming(put, image, 300_000)?.status(), 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn send_streaming(
        &self,
        request: Request,
        body: impl std::io::Read + Send + 'static,
        len: u64,
    ) -> Result<Response> {
        let streamed = Streamed::upload(request, body, len)?;
        self.handle.shared.send_blocking(Outgoing::Streamed(Box::new(streamed)))
    }

    /// [`Client::send_to`] through the shared client: the response body goes to `sink` as it
    /// arrives; returns the response (an empty body) and the sink, flushed. Blocking, as
    /// [`SharedClient::send`]; the sink runs on whichever thread runs the request (see
    /// [`SharedClient::send_streaming`]).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let client = finwatch::SharedClient::new()?;
    /// let get = finwatch::Request::get(&format!("{base}/unico/v1/firmware")).build()?;
    /// let (resp, image) = client.send_to(get, Vec::new())?; // a `File` in real life
    /// assert_eq!((resp.status(), resp.body().len(), image.len()), (200, 0, 11));
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn send_to<W: std::io::Write + Send + 'static>(
        &self,
        request: Request,
        sink: W,
    ) -> Result<(Response, W)> {
        let (streamed, sink) = Streamed::download(request, sink)?;
        let resp = self.handle.shared.send_blocking(Outgoing::Streamed(Box::new(streamed)))?;
        Ok((resp, sink.take()?))
    }

    /// Sends a request and returns a [`Future`] of its outcome, for async code: the calling task
    /// is not blocked, the loop thread does the I/O and wakes the task when the response (or
    /// the error) is there. Runtime-agnostic: no executor is assumed (see [`ResponseFuture`];
    /// `examples/async_tokio.rs` uses it under tokio). The same order, deadlines and errors as
    /// [`SharedClient::send`]; after a shutdown began, the future is ready at once with
    /// [`Error::Shutdown`] at [`Stage::Queued`]. It may be called from a completion callback
    /// (it does not wait).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// # let client = finwatch::SharedClient::new()?;
    /// let future = client.send_async(finwatch::Request::get(&format!("{base}/state")).build()?);
    /// // In async code: `let resp = future.await?;`. Here, a minimal executor:
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl std::task::Wake for Unpark { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// let resp = block_on(future)?;
    /// assert_eq!(resp.status(), 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn send_async(&self, request: Request) -> ResponseFuture {
        let slot = Arc::new(Slot::default());
        if let Err(refused) =
            self.handle.shared.submit(Outbound::Plain(request), Reply::Async(Arc::clone(&slot)))
        {
            refused.deliver(Err(Error::Shutdown { stage: Stage::Queued }));
        }
        ResponseFuture { slot }
    }

    /// Queues a request without blocking; `on_done` receives its outcome.
    ///
    /// `on_done` runs **on the loop thread**, which serves every request and every socket of the
    /// client: keep it short (hand the result to a channel, set a flag, queue a follow-up
    /// request), and never block in it. A panic in it is caught and logged. If the request is
    /// refused (after a shutdown began), `on_done` runs at once on the calling thread, with
    /// [`Error::Shutdown`] at [`Stage::Queued`]. Either way it runs exactly once.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// # let client = finwatch::SharedClient::new()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// client.submit_with(finwatch::Request::get(&format!("{base}/state")).build()?, move |result| {
    ///     let _ = tx.send(result.map(|r| r.status()));
    /// });
    /// assert_eq!(rx.recv().unwrap()?, 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn submit_with(&self, request: Request, on_done: impl FnOnce(Result<Response>) + Send + 'static) {
        if let Err(refused) =
            self.handle.shared.submit(Outbound::Plain(request), Reply::Callback(Box::new(on_done)))
        {
            refused.deliver(Err(Error::Shutdown { stage: Stage::Queued }));
        }
    }

    /// Queues a request without blocking; its outcome is sent to `tx` as `(tag, result)`, so one
    /// receiver can collect many requests (the tag tells them apart: a device index, a command
    /// number, …). Outcomes arrive in completion order. If the receiver is gone, the outcome is
    /// dropped. A refused request (after a shutdown began) is reported on `tx` at once.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// # let client = finwatch::SharedClient::new()?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// for device in 0..3 {
    ///     client.submit_to(finwatch::Request::get(&format!("{base}/d{device}")).build()?, device, &tx);
    /// }
    /// let mut seen: Vec<u32> = (0..3).map(|_| rx.recv().unwrap().0).collect();
    /// seen.sort();
    /// assert_eq!(seen, vec![0, 1, 2]);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn submit_to<T: Send + 'static>(
        &self,
        request: Request,
        tag: T,
        tx: &mpsc::Sender<(T, Result<Response>)>,
    ) {
        let tx = tx.clone();
        self.submit_with(request, move |result| drop(tx.send((tag, result))));
    }

    /// The client's counters, taken by the loop thread between two turns (so they count every
    /// outcome already delivered).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// # let client = finwatch::SharedClient::new()?;
    /// client.send(finwatch::Request::get(&format!("{base}/state")).build()?)?;
    /// assert_eq!(client.stats().succeeded, 1);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.handle.shared.query(Job::Stats, Client::stats)
    }

    /// A snapshot of the live connections, taken by the loop thread between two turns. A FIN on
    /// an idle connection removes it from this list without any caller having to do anything.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// # let client = finwatch::SharedClient::new()?;
    /// client.send(finwatch::Request::get(&format!("{base}/state")).build()?)?;
    /// assert!(client.connections().iter().all(|c| c.state != "Connecting"));
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.handle.shared.query(Job::Connections, Client::connections)
    }

    /// Shuts the client down: new requests fail at once with [`Error::Shutdown`] at
    /// [`Stage::Queued`]; requests already accepted may complete until `grace` has passed; then
    /// the rest are aborted (they fail with [`Error::Shutdown`]), every connection is closed, and
    /// the loop thread is joined. Returns once that is done, or at most about a second after the
    /// grace period (if a completion callback blocks the loop thread, which is then detached).
    ///
    /// Returns as soon as nothing is pending, if that comes first. Affects every clone. Calling
    /// it again is harmless (a shorter grace period wins). Called from a completion callback, it
    /// starts the shutdown and returns without waiting (the loop cannot wait for itself).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// use std::time::Duration;
    /// let client = finwatch::SharedClient::new()?;
    /// client.shutdown(Duration::from_millis(100));
    /// let refused = client.send(finwatch::Request::get(&format!("{base}/state")).build()?);
    /// assert!(matches!(refused, Err(finwatch::Error::Shutdown { .. })));
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn shutdown(&self, grace: Duration) {
        self.handle.shared.shutdown(grace);
    }
}

impl Shared {
    fn on_loop_thread(&self) -> bool {
        self.loop_thread.get() == Some(&thread::current().id())
    }

    /// Every blocking call: refused on the loop thread, run on the caller's thread where it can
    /// be (`send_direct`), else queued for the loop thread and waited for.
    fn send_blocking(&self, out: Outgoing<'_>) -> Result<Response> {
        if self.on_loop_thread() {
            return Err(on_loop_thread());
        }
        #[cfg(unix)]
        let out = match self.send_direct(out) {
            Direct::Done(outcome) => return outcome,
            Direct::Declined(out) => out,
        };
        let request = out.into_outbound()?;
        let (tx, rx) = mpsc::sync_channel(1);
        if self.submit(request, Reply::Blocking(tx)).is_err() {
            return Err(Error::Shutdown { stage: Stage::Queued });
        }
        rx.recv().unwrap_or_else(|_| Err(loop_lost()))
    }

    /// Wakes the loop thread.
    fn wake_loop(&self) -> std::io::Result<()> {
        #[cfg(unix)]
        return self.notify.wake();
        #[cfg(not(unix))]
        return self.waker.wake();
    }

    /// [`SharedClient::send`]'s direct path: when nothing is queued and the client has nothing
    /// pending (so no other request's order or outcome is at stake), the calling thread runs
    /// the request on the client itself, as [`Client::send`] does. Gives the request back when
    /// it cannot (another direct request, queued work, requests in flight, a shutdown).
    #[cfg(unix)]
    fn send_direct<'u>(&self, request: Outgoing<'u>) -> Direct<'u> {
        {
            let mut st = lock(&self.state);
            if st.finished || st.closing.is_some() || !st.jobs.is_empty() || st.direct_active {
                return Direct::Declined(request);
            }
            st.direct_active = true;
        }
        let mut end = DirectGuard { shared: self, disarmed: false };
        let mut client = lock(&self.client);
        // Requests submitted through the loop (callbacks, futures, queued sends) are in flight:
        // their outcomes belong to the loop thread.
        if client.pending() > 0 {
            return Direct::Declined(request);
        }
        end.disarmed = self.watch.disarm();
        let id = match request {
            Outgoing::Built(request) => client.submit(request),
            Outgoing::Streamed(s) => client.submit_streamed(*s),
            Outgoing::Recent(method, url, body) => match client.submit_recent(method, url, body) {
                Ok(id) => id,
                Err(e) => return Direct::Done(Err(e)),
            },
        };
        loop {
            // A shutdown wakes the client (see `shutdown`): the grace period holds here too.
            let closing = lock(&self.state).closing;
            if closing.is_some_and(|until| Instant::now() >= until) && client.pending() > 0 {
                client.abort_all();
            }
            match client.wait_until(id, closing) {
                Ok(Some(outcome)) => return Direct::Done(outcome),
                Ok(None) => {}
                Err(e) => return Direct::Done(Err(e)),
            }
            // Another thread queued work (a request, possibly to another device; a query): the
            // loop thread takes the client back, with this request, so that nobody waits for
            // this one to finish. Its outcome comes through the loop as any other's.
            if !lock(&self.state).jobs.is_empty() {
                let (tx, rx) = mpsc::sync_channel(1);
                lock(&self.waiting).insert(id, Reply::Blocking(tx));
                drop(client);
                drop(end);
                if let Err(e) = self.wake_loop() {
                    log::error!("could not wake the finwatch loop thread: {e}");
                }
                return Direct::Done(rx.recv().unwrap_or_else(|_| Err(loop_lost())));
            }
        }
    }

    /// Queues a job and wakes the loop; gives the job back, refused, if the client is closing
    /// (or, with `refuse_when_closing` false, only once it has finished).
    fn enqueue(&self, job: Job, refuse_when_closing: bool) -> Option<Job> {
        let mut st = lock(&self.state);
        if st.finished || (refuse_when_closing && st.closing.is_some()) {
            return Some(job);
        }
        let was_empty = st.jobs.is_empty();
        let direct = st.direct_active;
        st.jobs.push_back(job);
        drop(st);
        // A caller runs a request on the client itself: it hands that request to the loop
        // thread, which then serves this job too (see `send_direct`).
        if direct && let Err(e) = self.waker.wake() {
            log::error!("could not wake the finwatch client: {e}");
        }
        // The loop takes the whole queue at once: if it was not empty, the wake that came with
        // its first job has not been acted on yet, and covers this one too.
        if was_empty && let Err(e) = self.wake_loop() {
            log::error!("could not wake the finwatch loop thread: {e}");
        }
        None
    }

    /// Queues a request; gives its reply back if it was refused.
    fn submit(&self, request: Outbound, reply: Reply) -> Result<(), Reply> {
        match self.enqueue(Job::Submit(request, reply), true) {
            None => Ok(()),
            Some(Job::Submit(_, reply)) => Err(reply),
            Some(_) => unreachable!("enqueue gives back the job it was given"),
        }
    }

    /// Asks the loop thread for something about the client and waits for the answer (bounded);
    /// reads the client directly where the loop cannot answer (on the loop thread itself, after
    /// it finished, or while a callback blocks it).
    fn query<T>(&self, job: fn(mpsc::SyncSender<T>) -> Job, read: fn(&Client) -> T) -> T {
        if self.on_loop_thread() {
            // Callbacks run while the loop does not hold the client.
            return read(&lock(&self.client));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        if self.enqueue(job(tx), false).is_none() {
            match rx.recv_timeout(QUERY_WAIT) {
                Ok(answer) => return answer,
                // Finished before it got to the query: the client is free now.
                Err(RecvTimeoutError::Disconnected) => {}
                Err(RecvTimeoutError::Timeout) => {
                    log::warn!("the finwatch loop thread did not answer within {QUERY_WAIT:?}");
                }
            }
        }
        // The loop is finished, or blocked in a callback (then it does not hold the client), or
        // (rarely) in a poll bounded by MAX_SLEEP.
        read(&lock(&self.client))
    }

    fn shutdown(&self, grace: Duration) {
        let until = crate::proto::time::after(Instant::now(), grace);
        {
            let mut st = lock(&self.state);
            if !st.finished {
                st.closing = Some(st.closing.map_or(until, |c| c.min(until)));
            }
        }
        if let Err(e) = self.wake_loop() {
            log::error!("could not wake the finwatch loop thread: {e}");
        }
        // A caller's direct request runs the client on its own thread: it hears the shutdown
        // through the client's waker.
        #[cfg(unix)]
        if let Err(e) = self.waker.wake() {
            log::error!("could not wake the finwatch client: {e}");
        }
        if self.on_loop_thread() {
            return; // the loop finishes by itself once this callback returns
        }
        let limit = crate::proto::time::after(until, JOIN_WAIT);
        let mut st = lock(&self.state);
        while !st.finished {
            let left = limit.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self.finished.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        let finished = st.finished;
        drop(st);
        if !finished {
            log::warn!("the finwatch loop thread did not stop in time (a callback blocks it?); detached");
            return;
        }
        // It has delivered everything and is returning: joining takes no time.
        if let Some(join) = lock(&self.join).take()
            && join.join().is_err()
        {
            log::error!("the finwatch loop thread panicked");
        }
    }
}

/// The loop thread: takes queued jobs, turns the client's event loop, delivers outcomes. Once
/// it ends, for whatever reason (a shutdown, a failed poll, or a panic in the client: a bug),
/// every request it holds is answered and the handles refuse new ones: no caller ever waits on
/// a dead loop.
fn run(shared: &Shared, #[cfg(unix)] outer: mio::Poll) {
    let _ = shared.loop_thread.set(thread::current().id());
    // Kept out here, so that a panic inside the loop loses no reply: the jobs taken but not yet
    // submitted, and the one being submitted.
    let mut jobs = VecDeque::new();
    let mut in_hand: Option<Reply> = None;
    #[cfg(unix)]
    let turns = || turn_until_finished(shared, &mut jobs, &mut in_hand, outer);
    #[cfg(not(unix))]
    let turns = || turn_until_finished(shared, &mut jobs, &mut in_hand);
    let outcome = panic::catch_unwind(AssertUnwindSafe(turns));
    // From here on, callers are refused (a direct request too) before any outcome is delivered.
    lock(&shared.state).closing.get_or_insert_with(Instant::now);
    if outcome.is_err() {
        log::error!(
            "the finwatch loop thread panicked (a bug; please report it); {} pending request(s) fail, \
             and the SharedClient refuses new ones",
            lock(&shared.waiting).len()
        );
    }
    // Taken from the queue, never submitted: never processed.
    let unsent = in_hand.into_iter().chain(jobs.into_iter().filter_map(|j| match j {
        Job::Submit(_, reply) => Some(reply),
        Job::Stats(_) | Job::Connections(_) => None,
    }));
    for reply in unsent {
        reply.deliver(Err(Error::Shutdown { stage: Stage::Queued }));
    }
    let waiting: Vec<Reply> = lock(&shared.waiting).drain().map(|(_, reply)| reply).collect();
    for reply in waiting {
        // After a shutdown never (`abort_all` completes every request); after a panic, the
        // requests that were in the client: the device may have received them.
        reply.deliver(Err(loop_lost()));
    }
    // Requests can still be queued only after a failed poll or a panic (`closing` was set, or
    // the loop died, after it last took the queue); they were never submitted. Taken in the
    // same lock that marks the loop finished, so none can slip in between and be dropped.
    let left = {
        let mut st = lock(&shared.state);
        st.finished = true;
        st.closing.get_or_insert_with(Instant::now);
        std::mem::take(&mut st.jobs)
    };
    for job in left {
        match job {
            Job::Submit(_, reply) => reply.deliver(Err(Error::Shutdown { stage: Stage::Queued })),
            // Their callers see the channel close and read the client themselves.
            Job::Stats(_) | Job::Connections(_) => {}
        }
    }
    shared.finished.notify_all();
}

/// The loop proper: returns once the client has shut down. On unix each pass runs one
/// non-blocking turn of the client and then sleeps, without the client, on `outer` (the
/// client's fd while watched, and the waker); elsewhere it sleeps in the client's own poll.
fn turn_until_finished(
    shared: &Shared,
    jobs: &mut VecDeque<Job>,
    in_hand: &mut Option<Reply>,
    #[cfg(unix)] mut outer: mio::Poll,
) {
    let mut done: Vec<Completion> = Vec::new();
    #[cfg(unix)]
    let mut events = mio::Events::with_capacity(4);
    // How long to sleep while callers keep the client to themselves (see `LINGER`): doubled at
    // each wake-up that finds them still at it, so a long burst of calls meets the loop thread
    // about once per `MAX_LINGER` instead of once per `LINGER`.
    #[cfg(unix)]
    let mut linger = LINGER;
    #[cfg(test)]
    let mut panic_after = PANIC_AFTER_JOBS.with(|p| p.take());
    loop {
        // Callers run their requests themselves and nothing is queued: no need to touch the
        // client (its lock, a poll); sleep again.
        #[cfg(unix)]
        if !shared.watch.armed() {
            let st = lock(&shared.state);
            // A call within the last LINGER: callers are still at it.
            let lingering = st.since_direct(Instant::now()).is_some_and(|d| d < LINGER);
            if lingering && st.jobs.is_empty() && st.closing.is_none() && !st.finished {
                drop(st);
                wait(shared, &mut outer, &mut events, linger);
                linger = (linger * 2).min(MAX_LINGER);
                continue;
            }
        }
        #[cfg(unix)]
        if shared.watch.armed() {
            linger = LINGER;
        }
        let mut client = lock(&shared.client);
        let now = Instant::now();
        #[cfg_attr(not(unix), allow(unused_variables))]
        let (closing, since_direct) = {
            let mut st = lock(&shared.state);
            std::mem::swap(&mut st.jobs, jobs);
            (st.closing, st.since_direct(now))
        };
        while let Some(job) = jobs.pop_front() {
            match job {
                Job::Submit(request, reply) => {
                    *in_hand = Some(reply);
                    #[cfg(test)]
                    if let Some(n) = &mut panic_after {
                        if *n == 0 {
                            panic!("a bug in the loop (test)");
                        }
                        *n -= 1;
                    }
                    let id = request.submit_to(&mut client);
                    if let Some(reply) = in_hand.take() {
                        lock(&shared.waiting).insert(id, reply);
                    }
                }
                Job::Stats(tx) => drop(tx.send(client.stats())),
                Job::Connections(tx) => drop(tx.send(client.connections())),
            }
        }
        let mut finish = closing.is_some_and(|until| now >= until || client.pending() == 0);
        if finish {
            let aborted = client.abort_all();
            log::debug!("SharedClient shutting down: {aborted} request(s) aborted");
        }
        // No request pending: `poll` still sleeps on the sockets (so a FIN on an idle connection
        // is handled at once) and on the client's own timers (idle retirement), until a wake-up
        // or the timeout.
        #[cfg_attr(not(unix), allow(unused_mut))]
        let mut timeout = match closing {
            _ if finish => Duration::ZERO,
            Some(until) => until.saturating_duration_since(now).min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        #[cfg(unix)]
        let polled = client.poll(Some(Duration::ZERO), &mut done);
        #[cfg(not(unix))]
        let polled = client.poll(Some(timeout), &mut done);
        if let Err(e) = polled {
            log::error!("the finwatch event loop failed ({e}); shutting the SharedClient down");
            lock(&shared.state).closing.get_or_insert(now);
            client.abort_all();
            // The aborted requests' completions are ready: this returns them without polling.
            let _ = client.poll(Some(Duration::ZERO), &mut done);
            finish = true;
        }
        // unix: what the sleep below waits for. The client's fd is watched again once callers
        // have left it alone for LINGER, and at once when the loop has requests of its own in
        // flight (their responses must wake it).
        // A sub-millisecond wait before a timer, slept rather than spun (see below).
        #[cfg(unix)]
        let mut sub_ms_sleep = None;
        #[cfg(unix)]
        {
            let lingering = since_direct.is_some_and(|d| d < LINGER);
            if (!lingering || client.pending() > 0)
                && let Err(e) = shared.watch.arm()
            {
                log::error!("the finwatch loop thread cannot watch the client ({e}); shutting down");
                lock(&shared.state).closing.get_or_insert(now);
            }
            if let Some(at) = client.next_deadline() {
                // Measured after the turn: a deadline is met to the microsecond.
                timeout = timeout.min(at.saturating_duration_since(Instant::now()));
            }
            if shared.watch.armed() {
                // The poller counts whole milliseconds (mio rounds a shorter wait up): wait the
                // whole ones, so that a timer (retiring a connection ahead of the device's
                // learned idle close) fires on time, not up to a millisecond after the device
                // closed it. The last fraction: with requests in flight, spun on zero-timeout
                // passes (as `Client::poll` does: their responses must not wait); with none, slept
                // (nothing but idle sockets to watch, and a spin would burn up to a millisecond
                // of CPU before every timer).
                if timeout < Duration::from_millis(1) {
                    if client.pending() == 0 && !timeout.is_zero() {
                        sub_ms_sleep = Some(timeout);
                    }
                    timeout = Duration::ZERO;
                } else {
                    timeout = Duration::from_millis(timeout.as_millis() as u64);
                }
            } else {
                // Until the linger is over (a caller still in its request: look again then);
                // no need for precision: a caller is about.
                let since = since_direct.unwrap_or(LINGER);
                timeout = timeout.min(LINGER.saturating_sub(since).max(Duration::from_micros(1)));
            }
        }
        drop(client);
        for c in done.drain(..) {
            let reply = lock(&shared.waiting).remove(&c.id);
            match reply {
                Some(reply) => reply.deliver(c.result),
                None => log::error!("SharedClient: completion for unknown request {}", c.id.get()),
            }
        }
        if finish {
            break;
        }
        #[cfg(unix)]
        {
            if let Some(d) = sub_ms_sleep {
                thread::sleep(d);
            }
            wait(shared, &mut outer, &mut events, timeout);
        }
    }
}

/// The loop thread's sleep on its own poller (unix): until the client's fd (when watched) or
/// the waker has news, or `timeout`. A poller that cannot wait shuts the client down.
#[cfg(unix)]
fn wait(shared: &Shared, outer: &mut mio::Poll, events: &mut mio::Events, timeout: Duration) {
    if let Err(e) = outer.poll(events, Some(timeout))
        && e.kind() != std::io::ErrorKind::Interrupted
    {
        log::error!("the finwatch loop thread cannot wait ({e}); shutting the SharedClient down");
        lock(&shared.state).closing.get_or_insert_with(Instant::now);
    }
}

#[cfg(test)]
thread_local! {
    /// Tests only: the next loop thread started from this thread panics before its (n+1)th job
    /// (set on the thread that builds the client, handed to the loop thread it starts).
    static PANIC_AFTER_JOBS: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// A blocking call from a completion callback, where it would wait for itself.
fn on_loop_thread() -> Error {
    Error::InvalidRequest {
        reason: "a blocking SharedClient call (send, get, put, …) from a completion callback (the \
                 loop thread), where it would wait for itself; use submit_with"
            .into(),
    }
}

/// The outcome of a request whose reply was lost with the loop thread (a bug): the device may
/// have acted on it, as far as anyone knows.
fn loop_lost() -> Error {
    Error::Io(std::io::Error::other("the SharedClient loop thread stopped without an answer"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop thread that dies (here: a panic standing for a bug) answers the request it held
    /// and refuses every later one at once: nobody blocks on a dead loop. (Before, a panic in
    /// the loop left every later `send` waiting for ever.)
    #[test]
    fn no_caller_blocks_on_a_dead_loop_thread() {
        let base = crate::__doc_device();
        PANIC_AFTER_JOBS.with(|p| p.set(Some(0)));
        let client = SharedClient::new().unwrap();
        let ok = client.send(Request::get(&format!("{base}/a")).build().unwrap());
        assert_eq!(ok.unwrap().status(), 200);
        // The loop panics on taking this one (queued: a callback's request goes through the
        // loop; `send` runs on the caller's thread when nothing else is pending): its owner
        // gets an error, not a hang.
        let (tx, rx) = mpsc::channel();
        client.submit_with(Request::get(&format!("{base}/b")).build().unwrap(), move |r| drop(tx.send(r)));
        let second =
            rx.recv_timeout(Duration::from_secs(10)).expect("the request's owner waits on a dead loop");
        assert!(second.is_err(), "{second:?}");
        // Every later request fails at once, typed: never submitted, so never processed.
        let third = client.send(Request::get(&format!("{base}/c")).build().unwrap()).unwrap_err();
        assert!(matches!(third, Error::Shutdown { stage: Stage::Queued }), "{third:?}");
        assert!(!third.may_have_been_processed());
        let (tx, rx) = mpsc::channel();
        client.submit_with(Request::get(&format!("{base}/d")).build().unwrap(), move |r| drop(tx.send(r)));
        assert!(rx.recv_timeout(Duration::from_secs(10)).expect("callback never ran").is_err());
        // Queries still answer (from the client itself).
        let _ = client.stats();
    }

    /// A minimal executor: polls on this thread, parks until the waker unparks it (bounded).
    fn block_on<F: Future>(f: F) -> F::Output {
        struct Unpark(thread::Thread, std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.0.unpark();
            }
        }
        let unpark = Arc::new(Unpark(thread::current(), Default::default()));
        let waker = Arc::clone(&unpark).into();
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the future was never woken");
            thread::park_timeout(left);
        }
    }

    /// The future completes through its waker (the loop thread wakes the task), with no
    /// runtime; requests keep their order; a refused one is ready at once, typed; polled
    /// again after its outcome, it answers with an error instead of a panic.
    #[test]
    fn send_async_is_woken_by_the_loop_thread() {
        let base = crate::__doc_device();
        let client = SharedClient::new().unwrap();
        let futures: Vec<ResponseFuture> = (0..5)
            .map(|i| client.send_async(Request::put(&format!("{base}/io?i={i}"), "1").build().unwrap()))
            .collect();
        for f in futures {
            assert_eq!(block_on(f).unwrap().status(), 200);
        }
        // Polled after its outcome: an error, not a panic.
        let mut f = client.send_async(Request::get(&format!("{base}/state")).build().unwrap());
        assert_eq!(block_on(&mut f).unwrap().status(), 200);
        let again = block_on(&mut f).unwrap_err();
        assert!(matches!(again, Error::InvalidRequest { .. }), "{again:?}");
        // A dropped future does not cancel: the request is still sent and answered.
        let before = client.stats().succeeded;
        drop(client.send_async(Request::get(&format!("{base}/dropped")).build().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.stats().succeeded == before {
            assert!(Instant::now() < deadline, "the dropped future's request never completed");
            thread::sleep(Duration::from_millis(1));
        }
        client.shutdown(Duration::from_millis(100));
        let refused = block_on(client.send_async(Request::get(&format!("{base}/late")).build().unwrap()));
        assert!(matches!(refused, Err(Error::Shutdown { stage: Stage::Queued })), "{refused:?}");
    }

    /// `get`/`put` run on the caller's thread when nothing else is pending, through the queue
    /// when something is (a callback's request in flight): both answer, in order; from a
    /// callback, a blocking call is refused, typed, instead of waiting for itself.
    #[test]
    fn get_and_put_direct_and_queued() {
        let base = crate::__doc_device();
        let client = SharedClient::new().unwrap();
        for i in 0..20 {
            assert_eq!(client.put(&format!("{base}/io?i={i}"), "1").unwrap().status(), 200);
            assert_eq!(client.get(&format!("{base}/state")).unwrap().status(), 200);
        }
        // Many threads at once: some direct, the others queued behind them.
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let c = client.clone();
                let url = format!("{base}/t{t}");
                thread::spawn(move || (0..25).all(|_| c.get(&url).is_ok_and(|r| r.status() == 200)))
            })
            .collect();
        assert!(workers.into_iter().all(|w| w.join().unwrap()));
        // From a callback: refused at once, nothing sent.
        let (tx, rx) = mpsc::channel();
        let inner = client.clone();
        let url = format!("{base}/from-callback");
        client.submit_with(Request::get(&format!("{base}/outer")).build().unwrap(), move |_| {
            drop(tx.send(inner.get(&url)));
        });
        let refused = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap_err();
        assert!(matches!(refused, Error::InvalidRequest { .. }), "{refused:?}");
        assert!(!refused.may_have_been_processed());
        // An invalid URL is an error, direct or not.
        assert!(matches!(client.get("http://"), Err(Error::InvalidUrl { .. })));
        let s = client.stats();
        assert_eq!(s.succeeded, 141, "{s:?}");
    }

    /// `Duration::MAX`, the natural "no limit", as every timeout: no panic, and the request
    /// completes (before, `submit` panicked on `Instant + Duration` and killed the loop thread).
    #[test]
    fn duration_max_timeouts_do_not_kill_the_loop() {
        let base = crate::__doc_device();
        let builder = Client::builder()
            .connect_timeout(Duration::MAX)
            .request_timeout(Duration::MAX)
            .idle_timeout(Duration::MAX)
            .busy_poll(Duration::MAX);
        let client = SharedClient::from_builder(builder).unwrap();
        for _ in 0..3 {
            let req = Request::get(&format!("{base}/x")).timeout(Duration::MAX).build().unwrap();
            assert_eq!(client.send(req).unwrap().status(), 200);
        }
        client.shutdown(Duration::MAX);
    }
}
