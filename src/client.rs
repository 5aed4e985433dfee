//! The public client: blocking calls on the caller's thread, or submit + poll for a loop the
//! caller owns. Either way there is no background thread and no thread hop on the hot path.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::proto::engine::{
    BodySink, BodySource, Completion, Config, ConnectionInfo, Engine, RequestId, Stats,
};
use crate::proto::framing::{Limits, MAX_HEADERS_CAP};
use crate::request::{Method, Request};
use crate::response::Response;

/// An HTTP/1.1 client that never writes a request on a connection the server has closed.
///
/// A `Client` owns its sockets and its event loop; it is driven by the calls made on it
/// ([`Client::send`] and friends, or [`Client::poll`]). It is `Send`, so it can move to the
/// thread that runs the control loop. To share one client between threads, or to have idle
/// connections watched while no call is running, use a [`crate::SharedClient`].
///
/// ```
/// use std::time::Duration;
/// use finwatch::Client;
/// # let base = finwatch::__doc_device();
/// let mut client = Client::builder().request_timeout(Duration::from_secs(1)).build()?;
/// let resp = client.put(&format!("{base}/unico/v1/interface/io"), r#"{"ioId":25602,"value":1}"#)?;
/// assert!(resp.is_success());
/// let state = client.get(&format!("{base}/unico/v1/interface/io-state?ioId=25602"))?;
/// assert_eq!(state.body(), br#"{"value":1}"#);
/// assert_eq!(client.stats().connects, 1); // the second request reused the connection
/// # Ok::<(), finwatch::Error>(())
/// ```
pub struct Client {
    engine: Engine,
    driver: Driver,
    /// Completions collected while a blocking call waited for its own.
    ready: VecDeque<Completion>,
    /// The requests `get`, `put`, `post` and `delete` built lately, for the next call with the
    /// same method and URL.
    recent: Recent,
}

/// The engine's handle on a [`Client::send_to`] sink, which the caller takes back when the
/// request has completed.
struct SinkSlot<W>(std::sync::Arc<std::sync::Mutex<Option<W>>>);

/// A request with a streamed body or a sink for its response body, checked and ready for the
/// engine: what [`Client::send_streaming`] and [`Client::send_to`] send, on a `Client` or
/// through a `SharedClient`.
pub(crate) struct Streamed {
    request: Request,
    source: Option<BodySource>,
    sink: Option<BodySink>,
}

impl Streamed {
    /// `request` with `len` bytes of `body` as its body; refused if it has a body of its own or
    /// digest authentication (a challenge would need the body again).
    pub(crate) fn upload(
        request: Request,
        body: impl std::io::Read + Send + 'static,
        len: u64,
    ) -> Result<Streamed> {
        if !request.body.is_empty() {
            return Err(Error::invalid_request(
                "a request sent with a streamed body must not have a body of its own",
            ));
        }
        Self::refuse_digest(&request)?;
        let source = Some(BodySource::new(Box::new(body), len));
        Ok(Streamed { request, source, sink: None })
    }

    /// `request`, its response body to go to `sink`, and the handle that gives `sink` back once
    /// the request is over.
    pub(crate) fn download<W: std::io::Write + Send + 'static>(
        request: Request,
        sink: W,
    ) -> Result<(Streamed, SinkHandle<W>)> {
        Self::refuse_digest(&request)?;
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(sink)));
        let sink = Some(BodySink(Box::new(SinkSlot(std::sync::Arc::clone(&slot)))));
        Ok((Streamed { request, source: None, sink }, SinkHandle(slot)))
    }

    fn refuse_digest(request: &Request) -> Result<()> {
        if request.digest.is_some() {
            return Err(Error::invalid_request(
                "digest_auth cannot be combined with a streamed body (a challenge would need the body again)",
            ));
        }
        Ok(())
    }
}

/// The writer of a response body submitted with [`Client::submit_to`], for when its request
/// has completed.
pub struct SinkHandle<W>(std::sync::Arc<std::sync::Mutex<Option<W>>>);

impl<W> std::fmt::Debug for SinkHandle<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandle").finish_non_exhaustive()
    }
}

impl<W: std::io::Write> SinkHandle<W> {
    /// The writer, flushed. Take it once the request has completed (its [`Completion`] came
    /// out of [`Client::poll`]): taken earlier, the response's next bytes find no writer and
    /// the request fails with [`Error::BodyStream`]. An error if the writer cannot be flushed,
    /// or was already dropped with a request the client gave up on.
    pub fn take(self) -> Result<W> {
        let sink = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let Some(mut sink) = sink else {
            let source = std::io::Error::other("the response body's writer was not handed back");
            return Err(Error::BodyStream { stage: crate::Stage::ReadingResponse, source });
        };
        sink.flush().map_err(|source| Error::BodyStream { stage: crate::Stage::ReadingResponse, source })?;
        Ok(sink)
    }
}

impl<W: std::io::Write> std::io::Write for SinkSlot<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut sink = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match sink.as_mut() {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("the response body's writer is gone")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many requests [`Recent`] keeps: a control loop talks to a few URLs over and over.
const RECENT: usize = 8;

/// The requests the convenience methods built lately, by method and URL string. A control
/// loop calls `get(url)` with the same few URLs many times a second; parsing the URL and
/// building the request again each time was most of what `get` cost over `execute` (it
/// allocated 12 times per command, 3 of them for the response). A hit puts the call's body in
/// the kept request and sends it: what goes on the wire is what a fresh `Request` would have
/// been. Bounded: `RECENT` entries (URL and request, no body), replaced in turn.
#[derive(Default)]
struct Recent {
    entries: Vec<(String, Request)>,
    next: usize,
}

impl Recent {
    /// The kept request for `method url`, built now if it is not kept (the oldest entry makes
    /// way); an invalid URL is the builder's error, and nothing is kept.
    fn get(&mut self, method: Method, url: &str) -> Result<&mut Request> {
        let found = self.entries.iter().position(|(u, r)| r.method == method && u == url);
        let i = match found {
            Some(i) => i,
            None => {
                let entry = (url.to_string(), Request::builder(method, url).build()?);
                if self.entries.len() < RECENT {
                    self.entries.push(entry);
                    self.entries.len() - 1
                } else {
                    let i = self.next;
                    self.next = (i + 1) % RECENT;
                    self.entries[i] = entry;
                    i
                }
            }
        };
        Ok(&mut self.entries[i].1)
    }
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
    /// A client with default settings (see [`ClientBuilder`]). Fails only if the poller cannot
    /// be created ([`Error::Io`]); nothing connects until a request is sent.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// assert_eq!(client.get(&format!("{base}/"))?.status(), 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn new() -> Result<Client> {
        ClientBuilder::new().build()
    }

    /// A builder for the settings.
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = finwatch::Client::builder()
    ///     .connect_timeout(Duration::from_millis(500))
    ///     .request_timeout(Duration::from_secs(2))
    ///     .build()?;
    /// # drop(client);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// `GET url`, blocking until the response or an error.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let state = client.get(&format!("{base}/unico/v1/interface/io-state?ioId=25602"))?;
    /// assert_eq!(state.body(), br#"{"value":1}"#);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn get(&mut self, url: &str) -> Result<Response> {
        self.send_recent(Method::GET, url, Vec::new())
    }

    /// `PUT url` with `body`, blocking. PUT is idempotent, so it may be retried after a lost
    /// connection (see the [crate docs](crate#when-a-request-fails)).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let resp = client.put(&format!("{base}/unico/v1/interface/io"), r#"{"ioId":25602,"value":1}"#)?;
    /// assert!(resp.is_success());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn put(&mut self, url: &str, body: impl Into<Vec<u8>>) -> Result<Response> {
        self.send_recent(Method::PUT, url, body.into())
    }

    /// `POST url` with `body`, blocking. POST is not idempotent: it is retried only if the
    /// device provably did not receive it (use [`Client::send`] with
    /// [`crate::RequestBuilder::retryable`] for a POST the device de-duplicates).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// match client.post(&format!("{base}/api/pulse"), "ms=20") {
    ///     Ok(resp) => assert_eq!(resp.status(), 200),
    ///     Err(e) if !e.may_have_been_processed() => println!("not applied; safe to send again: {e}"),
    ///     Err(e) => println!("may have been applied; check before sending again: {e}"),
    /// }
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn post(&mut self, url: &str, body: impl Into<Vec<u8>>) -> Result<Response> {
        self.send_recent(Method::POST, url, body.into())
    }

    /// `DELETE url`, blocking.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// assert!(client.delete(&format!("{base}/unico/v1/schedule/7"))?.is_success());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn delete(&mut self, url: &str) -> Result<Response> {
        self.send_recent(Method::DELETE, url, Vec::new())
    }

    /// `HEAD url`, blocking: the status and headers a `GET` would have, without the body (a
    /// HEAD response has none, whatever its `Content-Length` says).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let resp = client.head(&format!("{base}/unico/v1/firmware"))?;
    /// assert_eq!((resp.status(), resp.header("Content-Length")), (200, Some("11")));
    /// assert!(resp.body().is_empty());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn head(&mut self, url: &str) -> Result<Response> {
        self.send_recent(Method::HEAD, url, Vec::new())
    }

    /// `method url` with `body`, through the request kept from an earlier call with the same
    /// method and URL (see [`Recent`]).
    fn send_recent(&mut self, method: Method, url: &str, body: Vec<u8>) -> Result<Response> {
        let now = self.driver.now();
        let id = self.submit_recent_at(method, url, body, now)?;
        self.wait_for_from(id, now)
    }

    /// Submits `method url` with `body` through the cache of recently used URLs (no parse, no
    /// allocation for a URL seen before), as `get`/`put`/… do (for `SharedClient`'s direct path).
    #[cfg(unix)]
    pub(crate) fn submit_recent(&mut self, method: Method, url: &str, body: Vec<u8>) -> Result<RequestId> {
        let now = self.driver.now();
        self.submit_recent_at(method, url, body, now)
    }

    fn submit_recent_at(
        &mut self,
        method: Method,
        url: &str,
        body: Vec<u8>,
        now: Instant,
    ) -> Result<RequestId> {
        let request = self.recent.get(method, url)?;
        request.body = body;
        let id = self.engine.submit(request, now);
        // Encoded: the body is not kept (it may be large, and it is the caller's data).
        request.body = Vec::new();
        Ok(id)
    }

    /// Sends a request and blocks until its response or error. It queues behind requests
    /// submitted earlier to the same host; their completions are kept for [`Client::poll`].
    /// Never blocks past the request's deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use finwatch::{Client, Request};
    /// # let base = finwatch::__doc_device();
    /// let mut client = Client::new()?;
    /// let req = Request::post(&format!("{base}/api/pulse"), "dedup=41")
    ///     .header("Content-Type", "text/plain")
    ///     .timeout(Duration::from_millis(200))
    ///     .retryable(true)
    ///     .build()?;
    /// let resp = client.send(req)?;
    /// assert_eq!(resp.status(), 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn send(&mut self, request: Request) -> Result<Response> {
        let now = self.driver.now();
        let id = self.engine.submit(&request, now);
        self.wait_for_from(id, now)
    }

    /// Sends `request` with a body of exactly `len` bytes read from `body` as the socket takes
    /// them, and blocks until the response: a firmware image goes out from a file without being
    /// held in memory. At most one buffer of 64 KiB of the body is held at a time, whatever
    /// `len` is.
    ///
    /// The head announces `Content-Length: len` (replacing any the request has); the request's
    /// own body must be empty ([`Error::InvalidRequest`] otherwise, as with
    /// [`RequestBuilder::digest_auth`](crate::RequestBuilder::digest_auth): answering a
    /// challenge would need the body again). The body is read on the caller's thread, in the
    /// event loop, once the head is written, with blocking reads of up to 64 KiB; it is never
    /// read past `len`.
    ///
    /// - The request's deadline ([`RequestBuilder::timeout`](crate::RequestBuilder::timeout),
    ///   or the client's `request_timeout`) covers the whole transfer: give a large upload one
    ///   long enough for it.
    /// - A reader that fails, or ends before `len` bytes, fails the request with
    ///   [`Error::BodyStream`] at [`Stage::SendingBody`](crate::Stage::SendingBody) (the device
    ///   has the head: [`Error::may_have_been_processed`] is `true`), and the connection is
    ///   closed, since the device would wait for the rest. The client stays usable.
    /// - It is sent again after a lost connection only while no body byte has been read (its
    ///   head was not all written, under the usual rules); after that, a loss is reported,
    ///   never re-sent.
    /// - A device that answers before reading the whole body (`413`, or an early `200`) gives
    ///   the response; the rest of the body is not read, and the connection is closed.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let image = std::io::Cursor::new(vec![0xA5u8; 300_000]); // a `File` in real life
    /// let put = finwatch::Request::put(&format!("{base}/unico/v1/firmware"), "")
    ///     .timeout(std::time::Duration::from_secs(60))
    ///     .build()?;
    /// assert_eq!(client.send_streaming(put, image, 300_000)?.status(), 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn send_streaming(
        &mut self,
        request: Request,
        body: impl std::io::Read + Send + 'static,
        len: u64,
    ) -> Result<Response> {
        let id = self.submit_streaming(request, body, len)?;
        self.wait_for(id)
    }

    /// Sends `request` and blocks until its response, whose body is written to `sink` as it
    /// arrives instead of being kept: a firmware image or a log comes down into a file
    /// without being held in memory. Returns the response (status and headers, an **empty**
    /// body) and the sink, flushed.
    ///
    /// The body is framed as for any response (`Content-Length`, chunked, or until the device
    /// closes); [`Limits::max_body_bytes`] does not apply to it (the sink takes it as it comes:
    /// bound it there if it must be), the other limits do. Each write to the sink is at most
    /// one read from the socket (64 KiB), on the caller's thread, in the event loop. The
    /// request's deadline covers the whole transfer: give a large download one long enough for
    /// it. A request with [`RequestBuilder::digest_auth`](crate::RequestBuilder::digest_auth) is
    /// refused ([`Error::InvalidRequest`]): the challenge's body would go to the sink.
    ///
    /// A sink that fails fails the request with [`Error::BodyStream`] at
    /// [`Stage::ReadingResponse`](crate::Stage::ReadingResponse) (the device has acted on the
    /// request: [`Error::may_have_been_processed`] is `true`) and closes the connection; the
    /// client stays usable. On any error the sink is dropped with what it had been given: to
    /// keep a file open after an error, pass a handle to it (`file.try_clone()?`, or a
    /// `&'static` or shared writer). A request whose response has begun is never sent again,
    /// so no byte reaches the sink twice.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let get = finwatch::Request::get(&format!("{base}/unico/v1/firmware")).build()?;
    /// let (resp, image) = client.send_to(get, Vec::new())?; // a `File` in real life
    /// assert_eq!(resp.status(), 200);
    /// assert!(resp.body().is_empty());
    /// assert_eq!(image.len(), 11);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn send_to<W: std::io::Write + Send + 'static>(
        &mut self,
        request: Request,
        sink: W,
    ) -> Result<(Response, W)> {
        let (id, sink) = self.submit_to(request, sink)?;
        let resp = self.wait_for(id)?;
        Ok((resp, sink.take()?))
    }

    /// [`Client::send_streaming`] without blocking: queues the request, whose completion comes
    /// out of [`Client::poll`] as any other's (a host loop uploads firmware to one device while
    /// it keeps commanding the others). The reader is read in `poll`, a buffer at a time as
    /// the socket takes it. Refused at once (not queued) as `send_streaming` refuses.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let put = finwatch::Request::put(&format!("{base}/unico/v1/firmware"), "").build()?;
    /// let id = client.submit_streaming(put, std::io::Cursor::new(vec![0xA5u8; 300_000]), 300_000)?;
    /// let mut done = Vec::new();
    /// while done.is_empty() {
    ///     client.poll(Some(Duration::from_millis(10)), &mut done)?; // other work between polls
    /// }
    /// assert_eq!(done[0].id, id);
    /// assert_eq!(done.pop().unwrap().result?.status(), 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn submit_streaming(
        &mut self,
        request: Request,
        body: impl std::io::Read + Send + 'static,
        len: u64,
    ) -> Result<RequestId> {
        Ok(self.submit_streamed(Streamed::upload(request, body, len)?))
    }

    /// [`Client::send_to`] without blocking: queues the request; its completion comes out of
    /// [`Client::poll`] (the response, with an empty body), and then the writer out of the
    /// returned handle ([`SinkHandle::take`]). The writer is written in `poll`.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let get = finwatch::Request::get(&format!("{base}/unico/v1/firmware")).build()?;
    /// let (id, sink) = client.submit_to(get, Vec::new())?;
    /// let mut done = Vec::new();
    /// while done.is_empty() {
    ///     client.poll(Some(Duration::from_millis(10)), &mut done)?;
    /// }
    /// assert_eq!(done[0].id, id);
    /// assert!(done.pop().unwrap().result?.body().is_empty());
    /// assert_eq!(sink.take()?.len(), 11);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn submit_to<W: std::io::Write + Send + 'static>(
        &mut self,
        request: Request,
        sink: W,
    ) -> Result<(RequestId, SinkHandle<W>)> {
        let (streamed, sink) = Streamed::download(request, sink)?;
        Ok((self.submit_streamed(streamed), sink))
    }

    /// Queues a request with a streamed body or response sink (`Client::send_streaming`,
    /// `Client::send_to`, and `SharedClient`'s).
    pub(crate) fn submit_streamed(&mut self, s: Streamed) -> RequestId {
        self.engine.submit_streamed(&s.request, s.source, s.sink, self.driver.now())
    }

    /// Runs the loop until request `id` completes; other completions are kept for `poll`.
    fn wait_for(&mut self, id: RequestId) -> Result<Response> {
        let now = self.driver.now();
        self.wait_for_from(id, now)
    }

    /// [`Client::wait_for`], its first turn from `now`, the submit's clock reading (one clock
    /// read less per command).
    fn wait_for_from(&mut self, id: RequestId, now: Instant) -> Result<Response> {
        let mut first = Some(now);
        loop {
            match first.take() {
                Some(now) => self.driver.turn_at(&mut self.engine, None, false, now)?,
                None => self.driver.turn(&mut self.engine, None, false)?,
            }
            while let Some(c) = self.engine.poll_completion() {
                if c.id == id {
                    return c.result;
                }
                self.ready.push_back(c);
            }
        }
    }

    /// [`Client::send`]'s wait for `id`, which also returns (`None`, the request still pending)
    /// when the client's waker fires or `until` passes: for [`crate::SharedClient`]'s direct
    /// path, which must hear a shutdown.
    #[cfg(unix)]
    pub(crate) fn wait_until(
        &mut self,
        id: RequestId,
        until: Option<Instant>,
    ) -> Result<Option<Result<Response>>> {
        // Completed already (`abort_all` files its completions here).
        if let Some(i) = self.ready.iter().position(|c| c.id == id) {
            return Ok(self.ready.remove(i).map(|c| c.result));
        }
        loop {
            if self.driver.take_woken() {
                return Ok(None);
            }
            self.driver.turn(&mut self.engine, until, true)?;
            while let Some(c) = self.engine.poll_completion() {
                if c.id == id {
                    return Ok(Some(c.result));
                }
                self.ready.push_back(c);
            }
            if self.driver.take_woken() || until.is_some_and(|u| self.driver.now() >= u) {
                return Ok(None);
            }
        }
    }

    /// Queues a request without blocking. Requests to one host go out in submission order;
    /// the outcome arrives through [`Client::poll`]. Nothing is sent before the next call that
    /// runs the loop (`poll`, `send`, …). An invalid request cannot be submitted: building it
    /// already failed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use finwatch::{Client, Request};
    /// # let base = finwatch::__doc_device();
    /// let mut client = Client::new()?;
    /// let on = client.submit(Request::put(&format!("{base}/io"), "1").build()?);
    /// let state = client.submit(Request::get(&format!("{base}/io-state")).build()?);
    /// let mut done = Vec::new();
    /// while client.pending() > 0 {
    ///     client.poll(Some(Duration::from_millis(5)), &mut done)?;
    /// }
    /// // One device, one request in flight at a time: completed in submission order.
    /// assert_eq!(done.iter().map(|c| c.id).collect::<Vec<_>>(), [on, state]);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn submit(&mut self, request: Request) -> RequestId {
        self.engine.submit(&request, self.driver.now())
    }

    /// Queues a borrowed request without blocking (its bytes are encoded at once, into a
    /// reused buffer): the allocation-free form of [`Client::submit`] for a loop that sends the
    /// same prepared requests again and again. Give responses back with [`Client::recycle`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use finwatch::{Client, Request};
    /// # let base = finwatch::__doc_device();
    /// let mut client = Client::new()?;
    /// let query = Request::get(&format!("{base}/io-state")).build()?;
    /// let mut done = Vec::new();
    /// for _ in 0..3 {
    ///     client.submit_ref(&query);
    ///     while client.pending() > 0 {
    ///         client.poll(Some(Duration::from_millis(5)), &mut done)?;
    ///     }
    ///     for c in done.drain(..) {
    ///         client.recycle(c.result?);
    ///     }
    /// }
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn submit_ref(&mut self, request: &Request) -> RequestId {
        self.engine.submit(request, self.driver.now())
    }

    /// Gives a response the caller is done with back to the client, whose buffers then carry a
    /// later response: with [`Client::submit_ref`], the non-blocking API allocates nothing per
    /// command once warm. (Responses with very large bodies are simply dropped.)
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let resp = client.get(&format!("{base}/io-state"))?;
    /// let value = resp.body() == br#"{"value":1}"#;
    /// client.recycle(resp); // its buffers carry a later response
    /// assert!(value);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn recycle(&mut self, response: Response) {
        self.engine.recycle(response);
    }

    /// Sends `request` and blocks until its response, which replaces `response`; the
    /// allocation-free way to run a command loop. The request is borrowed, so one prepared
    /// request can be sent again and again, and the buffers of the response it replaces are
    /// reused for a later one: once warm, a command on a reused connection allocates nothing.
    /// On an error, `response` is left as it was.
    ///
    /// ```
    /// # use finwatch::{Client, Request, Response};
    /// # let base = finwatch::__doc_device();
    /// let mut client = Client::new()?;
    /// let poll_io = Request::get(&format!("{base}/unico/v1/interface/io-state?ioId=25602")).build()?;
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
        let now = self.driver.now();
        let id = self.engine.submit(request, now);
        let old = std::mem::replace(response, self.wait_for_from(id, now)?);
        self.engine.recycle(old);
        Ok(())
    }

    /// Runs the event loop until at least one request completes or `timeout` passes, and
    /// appends the completions to `out`. Returns how many were appended. `None` waits until a
    /// completion (returns at once if nothing is pending; never past the earliest deadline of a
    /// pending request, which always has one). A [`Waker`] makes it return at once, also when
    /// it was woken before the call. `Some(Duration::ZERO)` does the pending work without
    /// blocking. Completions that a blocking call ([`Client::send`], [`Client::execute`]) met
    /// while it waited for its own are returned here too.
    ///
    /// An error is the poller's own failure ([`Error::Io`]); a request's failure is in its
    /// [`Completion`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use finwatch::{Client, Request};
    /// # let base = finwatch::__doc_device();
    /// let mut client = Client::new()?;
    /// let mut done = Vec::new();
    /// assert_eq!(client.poll(None, &mut done)?, 0); // nothing pending: returns at once
    /// client.submit(Request::get(&format!("{base}/io-state")).build()?);
    /// let mut periods = 0;
    /// while done.is_empty() {
    ///     // A 1 ms control period: wait for completions until its end, then do the period's work.
    ///     client.poll(Some(Duration::from_millis(1)), &mut done)?;
    ///     periods += 1;
    /// }
    /// println!("answered within {periods} periods");
    /// assert!(done[0].result.is_ok());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> Result<usize> {
        let start = out.len();
        out.extend(self.ready.drain(..));
        // A timeout too long to represent (`Duration::MAX`) is no limit.
        let until = timeout.and_then(|t| self.driver.now().checked_add(t));
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
            if self.driver.take_woken() || until.is_some_and(|u| self.driver.now() >= u) {
                return Ok(out.len() - start);
            }
        }
    }

    /// A waker for this client's loop: `wake()` from any thread makes a [`Client::poll`] in
    /// progress return at once (with what it has), or the next one if none is in progress. For a
    /// loop that also waits on other input (a channel of commands, say). All wakers of a client
    /// are the same one.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use finwatch::{Client, Request};
    /// # let base = finwatch::__doc_device();
    /// let mut client = Client::new()?;
    /// let waker = client.waker()?;
    /// let (commands, inbox) = mpsc::channel::<String>();
    /// std::thread::spawn(move || {
    ///     commands.send("/unico/v1/interface/io-state?ioId=25602".to_string()).unwrap();
    ///     waker.wake().unwrap(); // the loop below stops waiting on the sockets
    /// });
    /// let mut done = Vec::new();
    /// loop {
    ///     client.poll(Some(Duration::from_secs(5)), &mut done)?;
    ///     if let Ok(path) = inbox.try_recv() {
    ///         let resp = client.get(&format!("{base}{path}"))?;
    ///         assert_eq!(resp.status(), 200);
    ///         break;
    ///     }
    /// }
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn waker(&mut self) -> Result<Waker> {
        self.driver.waker().map(Waker).map_err(Error::Io)
    }

    /// The instant by which [`Client::poll`] must be called again even if the poller's fd shows
    /// nothing: the nearest request deadline, connect timeout or idle retirement, or now when
    /// the client has work its fd will not announce (a request submitted since the last poll,
    /// whose connect or write the next poll starts; completions not yet collected; reads
    /// paused at their per-turn budget, a full event buffer). `None` when nothing is pending and
    /// no connection is open.
    /// For embedding in another event loop (see `AsRawFd` for `Client`); read it again before
    /// each wait, as it can move earlier whenever the client is used.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use finwatch::{Client, Request};
    /// # let base = finwatch::__doc_device();
    /// let mut client = Client::new()?;
    /// assert_eq!(client.next_deadline(), None); // nothing to do
    /// let req = Request::get(&format!("{base}/io-state")).timeout(Duration::from_millis(100)).build()?;
    /// client.submit(req);
    /// // Submitted, not yet started: the next poll has work at once (its fd shows nothing yet).
    /// assert!(client.next_deadline().unwrap() <= Instant::now());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn next_deadline(&mut self) -> Option<Instant> {
        if self.driver.has_backlog() || self.engine.has_actions() || self.engine.has_completions() {
            // Work the fd will not signal (a submitted request not yet started, completions to
            // collect, a paused read, a full event buffer): now.
            return Some(self.driver.now());
        }
        self.engine.poll_timeout()
    }

    /// Gives up on every pending request: each completes (through [`Client::poll`]) with
    /// [`Error::Shutdown`], saying how far it had got, and every connection is closed. Returns
    /// how many requests were aborted. The client stays usable.
    ///
    /// ```
    /// use std::time::Duration;
    /// use finwatch::{Client, Error, Request};
    /// # let base = finwatch::__doc_device();
    /// let mut client = Client::new()?;
    /// client.submit(Request::put(&format!("{base}/io"), "1").build()?);
    /// assert_eq!(client.abort_all(), 1);
    /// let mut done = Vec::new();
    /// client.poll(Some(Duration::ZERO), &mut done)?;
    /// let err = done.pop().unwrap().result.unwrap_err();
    /// assert!(matches!(err, Error::Shutdown { .. }));
    /// assert!(!err.may_have_been_processed()); // it had not been sent yet
    /// assert!(client.get(&format!("{base}/io-state"))?.is_success()); // still usable
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn abort_all(&mut self) -> usize {
        let n = self.engine.pending();
        let now = self.driver.now();
        self.engine.abort_all(now);
        self.driver.run_actions(&mut self.engine, now);
        while let Some(c) = self.engine.poll_completion() {
            self.ready.push_back(c);
        }
        n
    }

    /// Requests submitted and not yet completed or returned by [`Client::poll`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use finwatch::{Client, Request};
    /// # let base = finwatch::__doc_device();
    /// let mut client = Client::new()?;
    /// client.submit(Request::get(&format!("{base}/a")).build()?);
    /// client.submit(Request::get(&format!("{base}/b")).build()?);
    /// assert_eq!(client.pending(), 2);
    /// let mut done = Vec::new();
    /// while client.pending() > 0 {
    ///     client.poll(Some(Duration::from_millis(5)), &mut done)?;
    /// }
    /// assert_eq!(done.len(), 2);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn pending(&self) -> usize {
        self.engine.pending() + self.ready.len()
    }

    /// Counters since the client was created: connects, reuses, FINs seen on idle connections
    /// (and how many only the pre-write check caught), resets, retries, warm spares.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// for _ in 0..3 {
    ///     client.get(&format!("{base}/io-state"))?;
    /// }
    /// let s = client.stats();
    /// assert_eq!((s.succeeded, s.connects, s.reuses, s.retries), (3, 1, 2, 0));
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// What the client has learned of a device's idle-close time: the shortest time, after a
    /// response, at which the device was seen to close that connection. Connections to it are
    /// retired a margin before it; a value of a millisecond or two means the device closes after
    /// every response, and its connections are used once. `None` until the device has been
    /// seen to close an idle connection (or for a URL that does not parse).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// client.get(&format!("{base}/io-state"))?;
    /// // This device keeps connections open: nothing learned.
    /// assert_eq!(client.learned_idle_close(&base), None);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn learned_idle_close(&self, url: &str) -> Option<Duration> {
        let url = crate::url::Url::parse(url).ok()?;
        self.engine.learned_idle_close(url.host_key())
    }

    /// The recorded trace, if [`ClientBuilder::trace`] turned recording on.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::builder().trace(64).build()?;
    /// client.get(&format!("{base}/io-state"))?;
    /// assert!(!client.trace().unwrap().is_empty());
    /// assert!(finwatch::Client::new()?.trace().is_none()); // off by default
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn trace(&self) -> Option<&crate::Trace> {
        self.engine.trace()
    }

    /// Takes the recorded trace and starts a new one (`None` if recording is off).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::builder().trace(64).build()?;
    /// client.get(&format!("{base}/io-state"))?;
    /// let trace = client.take_trace().unwrap();
    /// println!("{}", trace.to_mermaid("controller"));
    /// assert!(client.trace().unwrap().is_empty());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn take_trace(&mut self) -> Option<crate::Trace> {
        self.engine.take_trace()
    }

    /// A snapshot of the live connections: state, requests served, idle time, time to
    /// retirement.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// client.get(&format!("{base}/io-state"))?;
    /// for c in client.connections() {
    ///     println!("conn {} {} {} served={} idle={:?}", c.id, c.host, c.state, c.served, c.idle_for);
    /// }
    /// assert_eq!(client.connections()[0].state, "Open(Idle)");
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.engine.connections(self.driver.now())
    }
}

/// Wakes a [`Client::poll`] in progress from another thread. Cheap to clone; made by
/// [`Client::waker`].
///
/// ```
/// use std::time::{Duration, Instant};
/// # let base = finwatch::__doc_device();
/// let mut client = finwatch::Client::new()?;
/// let waker = client.waker()?;
/// waker.wake()?; // before the poll: the poll returns at once all the same
/// let start = Instant::now();
/// client.poll(Some(Duration::from_secs(10)), &mut Vec::new())?;
/// assert!(start.elapsed() < Duration::from_secs(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Waker(std::sync::Arc<crate::driver::Wake>);

impl Waker {
    /// Makes the client's current or next `poll` return at once.
    ///
    /// ```
    /// let mut client = finwatch::Client::new()?;
    /// let waker = client.waker()?;
    /// std::thread::spawn(move || waker.wake()).join().unwrap()?;
    /// client.poll(None, &mut Vec::new())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wake(&self) -> std::io::Result<()> {
        self.0.wake()
    }
}

/// The fd of the client's poller (epoll on Linux): readable when any of its sockets has an event
/// or its waker fired. Register it in another event loop (`mio::unix::SourceFd`, epoll, …), and
/// call [`Client::poll`] with a zero timeout when it is readable **or** when
/// [`Client::next_deadline`] has passed: deadlines are timers, not fds. (`examples/embed_mio.rs`
/// does this with the application's own `mio::Poll`.)
///
/// Unix only (the kqueue fd on macOS): on Windows mio's poller is an I/O completion port, with
/// no fd to register elsewhere; drive the client with its own [`Client::poll`] there, or use a
/// [`crate::SharedClient`].
///
/// ```
/// use std::os::fd::AsRawFd;
/// use std::time::Duration;
/// # let base = finwatch::__doc_device();
/// let mut client = finwatch::Client::new()?;
/// let fd = client.as_raw_fd(); // register it for readability in the host loop
/// assert!(fd >= 0);
/// client.submit(finwatch::Request::get(&format!("{base}/io-state")).build()?);
/// let mut done = Vec::new();
/// while done.is_empty() {
///     // The host loop's wait on `fd`, bounded by `client.next_deadline()`, would go here.
///     client.poll(Some(Duration::ZERO), &mut done)?;
/// }
/// # Ok::<(), finwatch::Error>(())
/// ```
#[cfg(unix)]
impl std::os::fd::AsRawFd for Client {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.driver.raw_fd()
    }
}

/// Settings for a [`Client`]. The defaults suit a controller talking to devices on a LAN.
///
/// | setting | default |
/// | --- | --- |
/// | [`connect_timeout`](ClientBuilder::connect_timeout) | 3 s |
/// | [`request_timeout`](ClientBuilder::request_timeout) | 10 s |
/// | [`idle_timeout`](ClientBuilder::idle_timeout) | 30 s |
/// | [`max_retries`](ClientBuilder::max_retries) | 1 |
/// | [`max_in_flight_per_host`](ClientBuilder::max_in_flight_per_host) | 1 |
/// | [`max_connections_per_host`](ClientBuilder::max_connections_per_host) | 4 |
/// | [`nodelay`](ClientBuilder::nodelay) | on |
/// | [`local_address`](ClientBuilder::local_address) | any (the route decides) |
/// | `bind_device` (Linux) | none (the route decides) |
/// | [`busy_poll`](ClientBuilder::busy_poll) | off |
/// | [`adaptive_spin`](ClientBuilder::adaptive_spin) | on, cap 100 µs |
/// | [`warm_spares`](ClientBuilder::warm_spares) | on |
/// | [`trace`](ClientBuilder::trace) | off |
/// | [`limits`](ClientBuilder::limits) | [`Limits::default`] |
///
/// ```
/// use std::time::Duration;
/// use finwatch::ClientBuilder;
/// # let base = finwatch::__doc_device();
/// let mut client = ClientBuilder::new()
///     .connect_timeout(Duration::from_millis(200))
///     .request_timeout(Duration::from_millis(500))
///     .idle_timeout(Duration::from_secs(5))
///     .build()?;
/// assert!(client.get(&format!("{base}/io-state"))?.is_success());
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ClientBuilder {
    cfg: Config,
    lookup: Option<Lookup>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConfig>,
}

/// A caller's resolver ([`ClientBuilder::resolver`]).
#[derive(Clone)]
struct Lookup(crate::resolve::LookupFn);

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lookup(<fn>)")
    }
}

impl ClientBuilder {
    /// Default settings (the same as [`Client::builder`]).
    ///
    /// ```
    /// let client = finwatch::ClientBuilder::new().build()?;
    /// # drop(client);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// How `https://` devices are authenticated (feature `tls`): a CA, a pin of the device's
    /// public key, or (dangerously) nothing. Without it, every TLS device is refused with
    /// [`Error::Tls`], saying what to add. The connect timeout covers the TLS handshake too: a
    /// connection is up, for a request or as a warm spare, once its handshake is complete.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long a TCP handshake may take (default 3 s). When it passes, the first request waiting
    /// for the connection fails with [`Error::ConnectTimedOut`] (nothing was sent; it is not
    /// retried), unless its own deadline passed first.
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = finwatch::Client::builder().connect_timeout(Duration::from_millis(200)).build()?;
    /// # drop(client);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.cfg.connect_timeout = t;
        self
    }

    /// The default deadline of a request, from submission to the last response byte
    /// (default 10 s); a request can set its own with [`crate::RequestBuilder::timeout`]. When it
    /// passes, the request fails with [`Error::DeadlineExceeded`].
    ///
    /// ```
    /// use std::time::Duration;
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::builder().request_timeout(Duration::from_millis(250)).build()?;
    /// assert!(client.get(&format!("{base}/io-state"))?.is_success());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.cfg.request_timeout = t;
        self
    }

    /// How long an idle connection is kept for reuse (default 30 s). A server's
    /// `Keep-Alive: timeout=N` shortens it, with a margin, and so does an idle-close time
    /// learned from the device ([`Client::learned_idle_close`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::builder().idle_timeout(Duration::from_secs(2)).build()?;
    /// client.get(&format!("{base}/io-state"))?;
    /// let retire_in = client.connections()[0].retire_in.unwrap();
    /// assert!(retire_in <= Duration::from_secs(2));
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.cfg.idle_timeout = t;
        self
    }

    /// How many times a request may be retried on a fresh connection after a lost one, where
    /// that is safe (default 1; 0 disables retries). When retries are spent, the request fails
    /// with the last error, or [`Error::RetryFailed`] if an earlier loss may have been
    /// processed.
    ///
    /// ```
    /// let client = finwatch::Client::builder().max_retries(0).build()?;
    /// # drop(client);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn max_retries(mut self, n: u32) -> Self {
        self.cfg.max_retries = n;
        self
    }

    /// Requests in flight at once per host (default 1, which keeps the device's commands in
    /// submission order end to end). More is opt-in: requests still *leave* in order, but may
    /// complete out of order. `0` counts as 1.
    ///
    /// ```
    /// use std::time::Duration;
    /// use finwatch::{Client, Request};
    /// # let base = finwatch::__doc_device();
    /// let mut client = Client::builder().max_in_flight_per_host(2).build()?;
    /// client.submit(Request::get(&format!("{base}/a")).build()?);
    /// client.submit(Request::get(&format!("{base}/b")).build()?);
    /// let mut done = Vec::new();
    /// while client.pending() > 0 {
    ///     client.poll(Some(Duration::from_millis(5)), &mut done)?;
    /// }
    /// assert!(done.iter().all(|c| c.result.is_ok()));
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn max_in_flight_per_host(mut self, n: usize) -> Self {
        self.cfg.max_in_flight_per_host = n.max(1);
        self
    }

    /// Connections per host, idle or busy (default 4). `0` counts as 1.
    ///
    /// ```
    /// let client = finwatch::Client::builder().max_connections_per_host(2).build()?;
    /// # drop(client);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn max_connections_per_host(mut self, n: usize) -> Self {
        self.cfg.max_connections_per_host = n.max(1);
        self
    }

    /// `TCP_NODELAY` (default on: a command is one small write that must not wait for Nagle).
    ///
    /// ```
    /// let client = finwatch::Client::builder().nodelay(true).build()?;
    /// # drop(client);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn nodelay(mut self, on: bool) -> Self {
        self.cfg.nodelay = on;
        self
    }

    /// Binds every connection to a local address before it connects (port 0: the kernel picks
    /// the port), for a controller with several network interfaces whose devices must be
    /// reached from one of them: the source address the devices see, and (with the host's
    /// source-based routing) the interface. Default: unbound, the routing table decides.
    ///
    /// The address decides the family: a host name's addresses of the other family are skipped
    /// (a name resolving to `::1` and `127.0.0.1` is reached at `127.0.0.1` from a local IPv4
    /// address). A device with no address of that family fails with [`Error::ConnectFailed`]
    /// whose source is [`std::io::ErrorKind::AddrNotAvailable`], saying which families
    /// differ; nothing was sent. An address this host does not have fails the same way, at the
    /// bind (`EADDRNOTAVAIL`).
    ///
    /// ```
    /// use std::net::{IpAddr, Ipv4Addr};
    /// # let base = finwatch::__doc_device();
    /// let mut client =
    ///     finwatch::Client::builder().local_address(IpAddr::V4(Ipv4Addr::LOCALHOST)).build()?;
    /// assert!(client.get(&format!("{base}/io-state"))?.is_success());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn local_address(mut self, addr: std::net::IpAddr) -> Self {
        self.cfg.local_address = Some(addr);
        self
    }

    /// Linux only: binds every connection to a network interface by name (`SO_BINDTODEVICE`,
    /// e.g. `"eth1"`) before it connects: its packets leave through that interface whatever
    /// the routing table says, and only what arrives on it is accepted. Combine with
    /// [`ClientBuilder::local_address`] to set the source address too. Default: none.
    ///
    /// Linux before 5.7 requires `CAP_NET_RAW` for it (run as root, or `setcap
    /// cap_net_raw+ep` the binary); since 5.7 an unprivileged process may bind a socket that is
    /// not bound to a device yet, as finwatch's are. Without the privilege, or for an interface
    /// that does not exist (or is gone, a USB adapter unplugged), every connect fails with
    /// [`Error::ConnectFailed`] (`EPERM`, `ENODEV`); nothing was sent. The name itself is
    /// checked by [`ClientBuilder::build`]: empty, longer than 15 bytes, or containing `/`,
    /// `:`, whitespace or a NUL, and it fails with [`Error::Io`] of kind
    /// [`std::io::ErrorKind::InvalidInput`]. The method does not exist on other systems.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// // `lo`: the loopback interface, where the documentation's device listens.
    /// let mut client = finwatch::Client::builder().bind_device("lo").build()?;
    /// assert!(client.get(&format!("{base}/io-state"))?.is_success());
    /// assert!(finwatch::Client::builder().bind_device("no such interface").build().is_err());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    #[cfg(target_os = "linux")]
    pub fn bind_device(mut self, interface: &str) -> Self {
        self.cfg.bind_device = Some(interface.into());
        self
    }

    /// Busy-poll mode, for a control loop that owns a core: while waiting for a response, spin
    /// for up to `budget` before sleeping in the poller. While one response is all that is
    /// pending, the spin reads that socket directly (one `recv` per pass) and looks at the
    /// poller (other sockets, a [`Waker`]) every 64th pass; otherwise it spins on zero-timeout
    /// polls. Every write is still preceded by the pre-write check.
    ///
    /// Waking a sleeping thread costs more than a loopback or LAN round trip on ordinary
    /// machines (on the 2-core VM of PERFORMANCE.md, whose idle vCPU halts, a keep-alive command
    /// took 70 µs sleeping and 18 µs spinning); spinning avoids that wake-up at the price of one
    /// core at 100 % while a request is in flight (up to `budget` per wait), yielding it between
    /// passes to any thread that shares it. Off by default; a zero `budget` turns it off. Where
    /// set, it takes the place of the
    /// [`adaptive_spin`](Self::adaptive_spin) (on by default), whose limit follows the waits:
    /// busy-poll spins for its whole budget whatever the device's answers took.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::builder().busy_poll(Duration::from_micros(200)).build()?;
    /// assert!(client.get(&format!("{base}/io-state"))?.is_success());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn busy_poll(mut self, budget: Duration) -> Self {
        self.cfg.busy_poll = (!budget.is_zero()).then_some(budget);
        self
    }

    /// The adaptive spin (default on, `cap` 100 µs): a wait for a response spins for a while
    /// before it sleeps in the poller, and how long follows what the waits were, by the rule
    /// the guest kernel's halt polling uses. A wait the spin caught keeps the limit; one that
    /// ended after the limit but within `cap` doubles it (at least `cap / 4`, at most `cap`);
    /// one that ended after `cap` halves it, and under `cap / 4` turns spinning off until a
    /// response comes within `cap` again. So a device that answers within tens of µs (on the
    /// same host, through a VM's vCPU wake-up) is served without the sleeping thread's
    /// wake-up (on the VM of PERFORMANCE.md, a loopback keep-alive command 18 µs instead of
    /// 68), and a device that answers in 300 µs costs 175 µs of spinning in all, over its
    /// first three commands, then none.
    ///
    /// The spin reads the awaited socket directly (as [`busy_poll`](Self::busy_poll) does) and
    /// yields the CPU between passes, so a thread that shares the CPU (on one vCPU, a device
    /// on the same host) is not kept waiting by it. While it spins, the thread is busy:
    /// a control loop that must not spend CPU on waits turns it off with a zero `cap`.
    /// [`busy_poll`](Self::busy_poll), if set, takes its place.
    ///
    /// ```
    /// use std::time::Duration;
    /// # let base = finwatch::__doc_device();
    /// let mut frugal = finwatch::Client::builder().adaptive_spin(Duration::ZERO).build()?;
    /// assert!(frugal.get(&format!("{base}/io-state"))?.is_success());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn adaptive_spin(mut self, cap: Duration) -> Self {
        self.cfg.adaptive_spin = cap;
        self
    }

    /// Warm spares (default on): when a connection is known to be ending (`Connection: close`,
    /// HTTP/1.0, `Keep-Alive` limits, or a device observed to close after every response or
    /// after a short idle time), open the next connection ahead of need — as soon as the
    /// request that ends it is written, where that is known in advance — so the next command
    /// does not wait for a TCP handshake. Costs at most one extra connection per device.
    ///
    /// ```
    /// let client = finwatch::Client::builder().warm_spares(false).build()?;
    /// # drop(client);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn warm_spares(mut self, on: bool) -> Self {
        self.cfg.warm_spares = on;
        self
    }

    /// Records a [`crate::Trace`] of connection events (connects, requests, responses, FIN,
    /// RST, closes) with timestamps, keeping the last `capacity` events; read it with
    /// [`Client::trace`], render it with [`crate::Trace::to_mermaid`]. Off by default.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::builder().trace(1024).build()?;
    /// client.get(&format!("{base}/io-state"))?;
    /// let diagram = client.take_trace().unwrap().to_mermaid("controller");
    /// assert!(diagram.contains("GET /io-state"));
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn trace(mut self, capacity: usize) -> Self {
        self.cfg.trace = Some(capacity);
        self
    }

    /// Response limits (head bytes, header count, body bytes, interim responses); see [`Limits`].
    /// A `max_headers` above [`MAX_HEADERS_CAP`] is lowered to it.
    ///
    /// ```
    /// use finwatch::{Client, Limits};
    /// let client = Client::builder().limits(Limits { max_body_bytes: 4096, ..Limits::default() }).build()?;
    /// # drop(client);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.cfg.limits = limits;
        self
    }

    /// Builds the client (creates its poller; fails with [`Error::Io`] only if that fails, or
    /// if the name given to `bind_device` cannot be an interface's).
    ///
    /// ```
    /// let client = finwatch::Client::builder().build()?;
    /// # drop(client);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn build(self) -> Result<Client> {
        let mut cfg = self.cfg;
        cfg.limits.max_headers = cfg.limits.max_headers.min(MAX_HEADERS_CAP);
        if let Some(name) = &cfg.bind_device {
            check_interface_name(name).map_err(Error::Io)?;
        }
        let lookup = self.lookup.map_or_else(crate::resolve::system_lookup, |Lookup(f)| f);
        #[allow(unused_mut)]
        let mut driver = Driver::with_lookup(lookup).map_err(Error::Io)?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            driver.set_tls(tls.connector()?);
        }
        Ok(Client { engine: Engine::new(cfg), driver, ready: VecDeque::new(), recent: Recent::default() })
    }

    /// Looks host names up with `lookup` instead of the system resolver: a table of devices, a
    /// service registry, an mDNS browser. It is called as the system resolver is, on a thread
    /// of its own (so it may block) and bounded by the connect timeout, with the host and
    /// port of the URL; its answer is cached like the system's (looked up again after a
    /// minute, or once every address has failed). An error or an empty list is
    /// [`Error::Resolve`]. IP literals never reach it.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// # let base = finwatch::__doc_device();
    /// # let device: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    /// let mut client = finwatch::Client::builder()
    ///     .resolver(move |name, _port| match name {
    ///         "valve-7" => Ok(vec![device]),
    ///         _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "unknown device")),
    ///     })
    ///     .build()?;
    /// assert!(client.get("http://valve-7/io-state")?.is_success());
    /// assert!(client.get("http://valve-8/io-state").is_err());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn resolver(
        mut self,
        lookup: impl Fn(&str, u16) -> std::io::Result<Vec<std::net::SocketAddr>> + Send + Sync + 'static,
    ) -> ClientBuilder {
        self.lookup = Some(Lookup(std::sync::Arc::new(lookup)));
        self
    }
}

/// A name Linux could give an interface (`dev_valid_name`): 1 to 15 bytes (`IFNAMSIZ` less
/// the NUL), not `.` or `..`, without `/`, `:`, whitespace or a NUL.
fn check_interface_name(name: &str) -> std::io::Result<()> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} cannot be a network interface's name (1-15 bytes, no '/', ':' or spaces)"),
        ));
    }
    Ok(())
}
