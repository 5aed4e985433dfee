//! finwatch's C ABI: `libfinwatch.a`, `libfinwatch.so` and `include/finwatch.h` (generated from
//! this file by cbindgen; `.ci/ffi` fails if the committed header is not what it generates).
//!
//! Every entry point:
//!
//! - checks its pointers and strings: a NULL pointer or a string that is not UTF-8 is an error of
//!   kind `"invalid_argument"` (nothing is sent), never a crash;
//! - runs under `catch_unwind`: a panic never crosses into C; it becomes an error of kind
//!   `"panic"` (where the function has an error out-parameter) or the function's "nothing"
//!   value (NULL, 0, -1);
//! - accepts NULL in the `*_free` functions.
//!
//! Errors come back through a `finwatch_error **error` out-parameter: when `error` is not NULL,
//! `*error` is set to NULL on success and to a new `finwatch_error` (which the caller frees) on
//! failure. When `error` is NULL, the error is dropped.

#![allow(non_camel_case_types)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use finwatch_core as fw;

/// An error: what went wrong with a call or a request.
///
/// Threads: immutable once made; its accessors may be called from any thread, concurrently. It may
/// be freed (`finwatch_error_free`) from any thread, once no other call is using it. The strings
/// it returns stay valid until it is freed.
pub struct finwatch_error {
    kind: CString,
    message: CString,
    may_have_been_processed: bool,
}

/// A client that commands devices from one thread at a time, with no thread of its own
/// (`finwatch::Client`): the lowest-latency choice for a control loop.
///
/// Threads: **not thread-safe**. Use it from one thread at a time; it may move to another thread
/// between calls (it is `Send`), but two calls on it must never run at the same time (no call on
/// it is made while another is in progress, including `finwatch_client_free`). To share one
/// client between threads, use a `finwatch_shared_client`.
pub struct finwatch_client {
    client: fw::Client,
    /// Completions `finwatch_poll` collected, for `finwatch_take_completion`.
    done: VecDeque<fw::Completion>,
    /// `fw::Client::poll`'s output buffer, kept to avoid an allocation per poll.
    scratch: Vec<fw::Completion>,
}

/// A client whose event loop runs on a background thread (`finwatch::SharedClient`).
///
/// Threads: **thread-safe**. Any number of threads may call `finwatch_shared_client_send` and
/// `finwatch_shared_client_send_request` on one handle at the same time. `finwatch_shared_client_free`
/// must be called once, when no other call on the handle is in progress; it shuts the loop down
/// (requests still pending get 100 ms to complete, then fail with kind `"shutdown"`).
pub struct finwatch_shared_client {
    client: fw::SharedClient,
}

/// A prepared request: method, URL, header fields, body, deadline, retry permission. It is
/// validated as it is built (every setter fails at once, leaving the request as it was), and can
/// be sent any number of times.
///
/// Threads: the setters and `finwatch_request_free` need exclusive use (one thread, no other call
/// on it in progress); `finwatch_send_request`, `finwatch_submit` and
/// `finwatch_shared_client_send_request` only read it, and may run on several threads at once
/// while no setter runs. It may move between threads.
pub struct finwatch_request {
    parts: Parts,
    request: fw::Request,
}

/// A response: status, header fields, body.
///
/// Threads: immutable; its accessors may be called from any thread, concurrently. It may be freed
/// from any thread, once no other call is using it. The pointers it returns stay valid until it is
/// freed.
pub struct finwatch_response {
    response: fw::Response,
}

// The threading rules above, checked.
const _: () = {
    const fn send<T: Send>() {}
    const fn send_sync<T: Send + Sync>() {}
    send::<finwatch_client>();
    send_sync::<finwatch_shared_client>();
    send_sync::<finwatch_request>();
    send_sync::<finwatch_response>();
    send_sync::<finwatch_error>();
};

/// What a request is built from, kept so that a setter can rebuild it.
#[derive(Clone)]
struct Parts {
    method: fw::Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
    retryable: bool,
}

impl Parts {
    fn build(&self) -> fw::Result<fw::Request> {
        let mut b = fw::Request::builder(self.method.clone(), &self.url);
        for (name, value) in &self.headers {
            b = b.header(name, value);
        }
        b = b.body(self.body.clone()).retryable(self.retryable);
        if let Some(t) = self.timeout {
            b = b.timeout(t);
        }
        b.build()
    }
}

impl finwatch_error {
    fn new(kind: &str, message: &str, may_have_been_processed: bool) -> finwatch_error {
        finwatch_error { kind: c_string(kind), message: c_string(message), may_have_been_processed }
    }

    fn from_core(e: &fw::Error) -> finwatch_error {
        finwatch_error::new(e.kind(), &e.to_string(), e.may_have_been_processed())
    }

    /// A bad argument: nothing was sent.
    fn invalid_argument(message: &str) -> finwatch_error {
        finwatch_error::new("invalid_argument", message, false)
    }

    /// A panic inside finwatch. Whether the device may have acted on the request is unknown, so
    /// it is assumed (as the core does for `Error::Io`).
    fn panic(payload: &(dyn std::any::Any + Send)) -> finwatch_error {
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        finwatch_error::new("panic", &format!("finwatch panicked: {what}"), true)
    }
}

impl From<fw::Error> for finwatch_error {
    fn from(e: fw::Error) -> finwatch_error {
        finwatch_error::from_core(&e)
    }
}

type FfiResult<T> = Result<T, finwatch_error>;

/// `s` as a C string; a NUL inside (which finwatch's messages never contain) becomes U+FFFD.
fn c_string(s: &str) -> CString {
    CString::new(s).unwrap_or_else(|_| CString::new(s.replace('\0', "\u{fffd}")).unwrap_or_default())
}

/// Runs `f` with panics caught, and reports its error through `error` (see the crate docs).
///
/// # Safety
/// `error` is NULL or valid for a write of one pointer.
unsafe fn guard<T>(error: *mut *mut finwatch_error, f: impl FnOnce() -> FfiResult<T>) -> Option<T> {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(finwatch_error::panic(&*p)));
    let (value, err) = match outcome {
        Ok(v) => (Some(v), std::ptr::null_mut()),
        Err(e) => (None, Box::into_raw(Box::new(e))),
    };
    if error.is_null() {
        if !err.is_null() {
            // SAFETY: made by `Box::into_raw` just above, and not handed out.
            drop(unsafe { Box::from_raw(err) });
        }
    } else {
        // SAFETY: the caller's contract.
        unsafe { error.write(err) };
    }
    value
}

/// Runs `f` with panics caught, for the functions that have no error out-parameter: a panic
/// gives `nothing`.
fn quiet<T>(nothing: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(nothing)
}

/// `p` as a reference, or an `invalid_argument` error naming it.
///
/// # Safety
/// `p` is NULL or points to a live `T` that nothing mutates for `'a`.
unsafe fn arg<'a, T>(p: *const T, name: &str) -> FfiResult<&'a T> {
    // SAFETY: the caller's contract.
    unsafe { p.as_ref() }.ok_or_else(|| finwatch_error::invalid_argument(&format!("{name} is NULL")))
}

/// `p` as a mutable reference, or an `invalid_argument` error naming it.
///
/// # Safety
/// `p` is NULL or points to a live `T` that nothing else uses for `'a`.
unsafe fn arg_mut<'a, T>(p: *mut T, name: &str) -> FfiResult<&'a mut T> {
    // SAFETY: the caller's contract.
    unsafe { p.as_mut() }.ok_or_else(|| finwatch_error::invalid_argument(&format!("{name} is NULL")))
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for `'a`.
unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> FfiResult<&'a str> {
    if p.is_null() {
        return Err(finwatch_error::invalid_argument(&format!("{name} is NULL")));
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| finwatch_error::invalid_argument(&format!("{name} is not valid UTF-8")))
}

/// A byte-buffer argument: `len` bytes at `p`; NULL is allowed for an empty buffer.
///
/// # Safety
/// `p` is NULL or valid for reads of `len` bytes for `'a`.
unsafe fn bytes_arg<'a>(p: *const c_void, len: usize, name: &str) -> FfiResult<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(finwatch_error::invalid_argument(&format!("{name} is NULL but its length is {len}")));
    }
    if len > isize::MAX as usize {
        return Err(finwatch_error::invalid_argument(&format!("{name}'s length {len} is too large")));
    }
    // SAFETY: the caller's contract; non-NULL, and `len` fits an allocation.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// Writes `value` through an optional out-pointer.
///
/// # Safety
/// `p` is NULL or valid for a write of one `T`.
unsafe fn out<T>(p: *mut T, value: T) {
    if !p.is_null() {
        // SAFETY: the caller's contract.
        unsafe { p.write(value) };
    }
}

fn boxed<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Frees a `Box` made by `boxed`, with panics (in a destructor) caught.
///
/// # Safety
/// `p` is NULL or came from `boxed` and was not freed yet.
unsafe fn free<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: the caller's contract.
        let b = unsafe { Box::from_raw(p) };
        quiet((), move || drop(b));
    }
}

fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

fn builder(
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    adaptive_spin_us: Option<u64>,
) -> fw::ClientBuilder {
    let mut b = fw::Client::builder();
    if let Some(t) = millis(connect_timeout_ms) {
        b = b.connect_timeout(t);
    }
    if let Some(t) = millis(request_timeout_ms) {
        b = b.request_timeout(t);
    }
    if let Some(us) = adaptive_spin_us {
        b = b.adaptive_spin(Duration::from_micros(us));
    }
    b
}

/// The request `method url` with `body`, built.
///
/// # Safety
/// As for `finwatch_send`.
unsafe fn simple_request(
    method: *const c_char,
    url: *const c_char,
    body: *const c_void,
    body_len: usize,
) -> FfiResult<fw::Request> {
    // SAFETY: the caller's contract.
    let (method, url, body) =
        unsafe { (str_arg(method, "method")?, str_arg(url, "url")?, bytes_arg(body, body_len, "body")?) };
    Ok(fw::Request::builder(fw::Method::new(method)?, url).body(body).build()?)
}

// ---------------------------------------------------------------------------------------------
// Version

/// The version of finwatch-ffi, a static string (never freed).
#[unsafe(no_mangle)]
pub extern "C" fn finwatch_version() -> *const c_char {
    c"finwatch-ffi 0.0.0".as_ptr()
}

// ---------------------------------------------------------------------------------------------
// finwatch_client

/// A client with default settings (connect timeout 3 s, request timeout 10 s). NULL on failure
/// (the poller could not be created).
#[unsafe(no_mangle)]
pub extern "C" fn finwatch_client_new() -> *mut finwatch_client {
    // SAFETY: NULL `error`.
    unsafe { finwatch_client_new_with_timeouts(0, 0, std::ptr::null_mut()) }
}

/// A client with these timeouts, in milliseconds (0: the default, 3 s to connect, 10 s per
/// request from submission to the last response byte). NULL on failure, with `*error` set.
///
/// # Safety
/// `error` is NULL or valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_client_new_with_timeouts(
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_client {
    // SAFETY: the caller's contract.
    unsafe { new_client(builder(connect_timeout_ms, request_timeout_ms, None), error) }
}

/// A client with these timeouts (as `finwatch_client_new_with_timeouts`) and this cap of the
/// adaptive spin, in microseconds: how long a wait for a response may spin before it sleeps,
/// while the device's answers come within it (the other constructors: 100; 0: never spin, every
/// wait sleeps, for a loop that must not spend CPU on waits; Rust's
/// `ClientBuilder::adaptive_spin`). NULL on failure, with `*error` set.
///
/// # Safety
/// `error` is NULL or valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_client_new_with_spin(
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    adaptive_spin_us: u64,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_client {
    // SAFETY: the caller's contract.
    unsafe { new_client(builder(connect_timeout_ms, request_timeout_ms, Some(adaptive_spin_us)), error) }
}

/// A client from `b`, or NULL with `*error` set.
///
/// # Safety
/// `error` is NULL or valid for a write of one pointer.
unsafe fn new_client(b: fw::ClientBuilder, error: *mut *mut finwatch_error) -> *mut finwatch_client {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let client = b.build()?;
            Ok(boxed(finwatch_client { client, done: VecDeque::new(), scratch: Vec::new() }))
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

/// Frees a client: closes its connections; requests still pending are dropped. NULL is allowed.
///
/// # Safety
/// `c` is NULL or a client from `finwatch_client_new*` not yet freed, with no call on it in
/// progress.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_client_free(c: *mut finwatch_client) {
    // SAFETY: the caller's contract.
    unsafe { free(c) }
}

/// Sends `method url` with `body_len` bytes of `body` (NULL allowed when `body_len` is 0), and
/// blocks until the response or an error; never past the client's request timeout. NULL on
/// failure, with `*error` set: then `finwatch_error_may_have_been_processed` says whether the
/// device may have acted on the command. A 4xx or 5xx status is a response, not an error.
///
/// # Safety
/// `c` is NULL or a live client not in use by another thread; `method` and `url` are NULL or
/// NUL-terminated strings; `body` is NULL or valid for reads of `body_len` bytes; `error` is NULL
/// or valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_send(
    c: *mut finwatch_client,
    method: *const c_char,
    url: *const c_char,
    body: *const c_void,
    body_len: usize,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_response {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let c = arg_mut(c, "client")?;
            let request = simple_request(method, url, body, body_len)?;
            let response = c.client.send(request)?;
            Ok(boxed(finwatch_response { response }))
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

/// Sends a prepared request (not consumed) with the contents of the file at `path` as its body,
/// and blocks until the response or an error, as `finwatch_send_request`. The file is streamed
/// 64 KiB at a time, never held whole (a firmware image), behind `Content-Length` = its size when
/// opened; the request must have no body of its own. The request's timeout covers the whole
/// upload: give a large one its own (`finwatch_request_set_timeout_ms`).
///
/// A file that cannot be opened is an error of kind `"file"` (nothing sent); a read that fails
/// or a file that shrinks while it is sent is `"body_stream"` (the device had the head: it may
/// have acted). A streamed body is never sent twice.
///
/// # Safety
/// `c` is NULL or a live client not in use by another thread; `request` is NULL or a live
/// request; `path` is NULL or a NUL-terminated string; `error` is NULL or valid for a write of
/// one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_send_file(
    c: *mut finwatch_client,
    request: *const finwatch_request,
    path: *const c_char,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_response {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let (c, request) = (arg_mut(c, "client")?, arg(request, "request")?);
            upload_file(str_arg(path, "path")?, |file, len| {
                c.client.send_streaming(request.request.clone(), file, len)
            })
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

/// Sends a prepared request (not consumed) and writes the response body into the file at `path`
/// (created, or truncated) as it arrives, never held whole; blocks until the response or an
/// error, as `finwatch_send_request`. The returned response has an **empty** body; the client's
/// body-size limit does not apply to the file. After an error the file holds what arrived.
///
/// A file that cannot be created is an error of kind `"file"` (nothing sent); a write that fails
/// is `"body_stream"` (the device had the request: it may have acted).
///
/// # Safety
/// As `finwatch_send_file`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_send_to_file(
    c: *mut finwatch_client,
    request: *const finwatch_request,
    path: *const c_char,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_response {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let (c, request) = (arg_mut(c, "client")?, arg(request, "request")?);
            download_file(str_arg(path, "path")?, |file| c.client.send_to(request.request.clone(), file))
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

/// Opens the file at `path` and has `send` send it as a body (with its size): the four file
/// functions differ only in the client that sends.
fn upload_file(
    path: &str,
    send: impl FnOnce(std::fs::File, u64) -> fw::Result<fw::Response>,
) -> FfiResult<*mut finwatch_response> {
    let file = std::fs::File::open(path).map_err(|e| file_error("open", path, &e))?;
    let len = file.metadata().map_err(|e| file_error("read the size of", path, &e))?.len();
    Ok(boxed(finwatch_response { response: send(file, len)? }))
}

/// Creates (or truncates) the file at `path` and has `send` write a response body into it.
fn download_file(
    path: &str,
    send: impl FnOnce(std::fs::File) -> fw::Result<(fw::Response, std::fs::File)>,
) -> FfiResult<*mut finwatch_response> {
    let file = std::fs::File::create(path).map_err(|e| file_error("create", path, &e))?;
    let (response, _) = send(file)?;
    Ok(boxed(finwatch_response { response }))
}

/// A file that could not be opened or created: nothing was sent.
fn file_error(what: &str, path: &str, e: &std::io::Error) -> finwatch_error {
    finwatch_error::new("file", &format!("could not {what} {path:?}: {e}"), false)
}

/// Sends a prepared request (which is not consumed: send it again later) and blocks until the
/// response or an error, as `finwatch_send`.
///
/// # Safety
/// `c` is NULL or a live client not in use by another thread; `request` is NULL or a live
/// request; `error` is NULL or valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_send_request(
    c: *mut finwatch_client,
    request: *const finwatch_request,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_response {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let c = arg_mut(c, "client")?;
            let request = arg(request, "request")?;
            let mut response = fw::Response::default();
            c.client.execute(&request.request, &mut response)?;
            Ok(boxed(finwatch_response { response }))
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

/// Queues a prepared request without blocking and returns its id (ids count up from 1 per
/// client); 0 on failure, with `*error` set. Nothing is sent, and the client's fd announces
/// nothing, before the next call that runs the loop (`finwatch_poll`, `finwatch_send`,
/// `finwatch_send_request`): in a host event loop, call `finwatch_poll` with a timeout of 0 after
/// submitting. The outcome is taken with `finwatch_take_completion` after a `finwatch_poll`.
///
/// # Safety
/// As for `finwatch_send_request`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_submit(
    c: *mut finwatch_client,
    request: *const finwatch_request,
    error: *mut *mut finwatch_error,
) -> u64 {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let c = arg_mut(c, "client")?;
            let request = arg(request, "request")?;
            Ok(c.client.submit_ref(&request.request).get())
        })
    }
    .unwrap_or(0)
}

/// Runs the client's event loop until at least one request completes or `timeout_ms` passes
/// (0: do the pending work without blocking; negative: until a completion, which returns at once
/// when nothing is pending and never waits past the nearest request deadline). Returns how many
/// requests completed in this call (take them with `finwatch_take_completion`), or -1 on failure
/// with `*error` set (the poller failed, or a bad argument).
///
/// For a host event loop: wait for `finwatch_client_fd` to be readable, bounded by
/// `finwatch_client_next_deadline_ms`, then call this with a timeout of 0.
///
/// # Safety
/// `c` is NULL or a live client not in use by another thread; `error` is NULL or valid for a
/// write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_poll(
    c: *mut finwatch_client,
    timeout_ms: i64,
    error: *mut *mut finwatch_error,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let c = arg_mut(c, "client")?;
            let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
            let n = c.client.poll(timeout, &mut c.scratch)?;
            c.done.extend(c.scratch.drain(..));
            Ok(c_int::try_from(n).unwrap_or(c_int::MAX))
        })
    }
    .unwrap_or(-1)
}

/// Takes the oldest completion collected by `finwatch_poll`. Returns 1 when one was taken: its
/// id goes to `*id`, and either `*response` (the caller frees it) or `*error` (its failure; the
/// caller frees it) is set, the other to NULL. Returns 0 when there is none. Returns -1 when the
/// call itself failed (`c` is NULL), with `*error` set and `*id` 0. Any of `id`, `response` and
/// `error` may be NULL (an outcome with nowhere to go is freed).
///
/// # Safety
/// `c` is NULL or a live client not in use by another thread; `id`, `response` and `error` are
/// NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_take_completion(
    c: *mut finwatch_client,
    id: *mut u64,
    response: *mut *mut finwatch_response,
    error: *mut *mut finwatch_error,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        out(id, 0);
        out(response, std::ptr::null_mut());
    }
    let mut taken = None;
    // SAFETY: the caller's contract.
    let outcome = unsafe {
        guard(error, || {
            let c = arg_mut(c, "client")?;
            taken = c.done.pop_front();
            Ok(())
        })
    };
    if outcome.is_none() {
        return -1;
    }
    let Some(done) = taken else { return 0 };
    // SAFETY: the caller's contract.
    unsafe {
        out(id, done.id.get());
        match done.result {
            Ok(r) => {
                let r = boxed(finwatch_response { response: r });
                if response.is_null() {
                    free(r);
                } else {
                    response.write(r);
                }
            }
            Err(e) => {
                let e = boxed(finwatch_error::from_core(&e));
                if error.is_null() {
                    free(e);
                } else {
                    error.write(e);
                }
            }
        }
    }
    1
}

/// Requests submitted and not yet taken with `finwatch_take_completion` (0 for NULL).
///
/// # Safety
/// `c` is NULL or a live client not in use by another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_pending(c: *const finwatch_client) -> usize {
    // SAFETY: the caller's contract.
    quiet(0, || unsafe { c.as_ref() }.map_or(0, |c| c.client.pending() + c.done.len()))
}

/// The fd of the client's poller (epoll on Linux), to register for readability in a host event
/// loop (epoll, poll, select, a Dart/Flutter isolate's loop, …): it becomes readable when any of
/// the client's sockets has an event. Deadlines are timers, not fds: wake up by
/// `finwatch_client_next_deadline_ms` too. -1 for NULL, or where there is no such fd (not Unix).
/// The fd belongs to the client: do not close it or read from it.
///
/// # Safety
/// `c` is NULL or a live client not in use by another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_client_fd(c: *const finwatch_client) -> c_int {
    // SAFETY: the caller's contract.
    let Some(c) = (unsafe { c.as_ref() }) else { return -1 };
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        quiet(-1, || c.client.as_raw_fd())
    }
    #[cfg(not(unix))]
    {
        let _ = c;
        -1
    }
}

/// Milliseconds until `finwatch_poll` must be called even if the fd shows nothing (the nearest
/// request deadline, connect timeout or idle retirement; rounded up), 0 if that is now, or -1 when
/// nothing is pending and no connection is open (or for NULL). Read it again before each wait.
///
/// # Safety
/// `c` is NULL or a live client not in use by another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_client_next_deadline_ms(c: *mut finwatch_client) -> i64 {
    // SAFETY: the caller's contract.
    let Some(c) = (unsafe { c.as_mut() }) else { return -1 };
    quiet(-1, || match c.client.next_deadline() {
        None => -1,
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            let ms = left.as_nanos().div_ceil(1_000_000);
            i64::try_from(ms).unwrap_or(i64::MAX)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// finwatch_shared_client

/// A thread-safe client with default settings, its event loop on a thread of its own. NULL on
/// failure.
#[unsafe(no_mangle)]
pub extern "C" fn finwatch_shared_client_new() -> *mut finwatch_shared_client {
    // SAFETY: NULL `error`.
    unsafe { finwatch_shared_client_new_with_timeouts(0, 0, std::ptr::null_mut()) }
}

/// A thread-safe client with these timeouts in milliseconds (0: the default, as for
/// `finwatch_client_new_with_timeouts`). NULL on failure, with `*error` set.
///
/// # Safety
/// `error` is NULL or valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_shared_client_new_with_timeouts(
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_shared_client {
    // SAFETY: the caller's contract.
    unsafe { new_shared_client(builder(connect_timeout_ms, request_timeout_ms, None), error) }
}

/// A thread-safe client with these timeouts and this cap of the adaptive spin in microseconds
/// (as `finwatch_client_new_with_spin`: 0 never spins). NULL on failure, with `*error` set.
///
/// # Safety
/// `error` is NULL or valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_shared_client_new_with_spin(
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    adaptive_spin_us: u64,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_shared_client {
    // SAFETY: the caller's contract.
    unsafe {
        new_shared_client(builder(connect_timeout_ms, request_timeout_ms, Some(adaptive_spin_us)), error)
    }
}

/// A shared client from `b`, or NULL with `*error` set.
///
/// # Safety
/// `error` is NULL or valid for a write of one pointer.
unsafe fn new_shared_client(
    b: fw::ClientBuilder,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_shared_client {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let client = fw::SharedClient::from_builder(b)?;
            Ok(boxed(finwatch_shared_client { client }))
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

/// Shuts a shared client down and frees it: pending requests get 100 ms to complete, then fail
/// with kind `"shutdown"`. NULL is allowed.
///
/// # Safety
/// `c` is NULL or a shared client not yet freed, with no call on it in progress.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_shared_client_free(c: *mut finwatch_shared_client) {
    // SAFETY: the caller's contract.
    unsafe { free(c) }
}

/// As `finwatch_send`, through a shared client: callable from any number of threads at once.
///
/// # Safety
/// `c` is NULL or a live shared client; the other arguments as for `finwatch_send`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_shared_client_send(
    c: *const finwatch_shared_client,
    method: *const c_char,
    url: *const c_char,
    body: *const c_void,
    body_len: usize,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_response {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let c = arg(c, "shared client")?;
            let request = simple_request(method, url, body, body_len)?;
            let response = c.client.send(request)?;
            Ok(boxed(finwatch_response { response }))
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

/// As `finwatch_send_request`, through a shared client: callable from any number of threads at
/// once (the request is only read).
///
/// # Safety
/// `c` is NULL or a live shared client; `request` is NULL or a live request no setter is
/// changing; `error` is NULL or valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_shared_client_send_request(
    c: *const finwatch_shared_client,
    request: *const finwatch_request,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_response {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let c = arg(c, "shared client")?;
            let request = arg(request, "request")?;
            let response = c.client.send(request.request.clone())?;
            Ok(boxed(finwatch_response { response }))
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

/// `finwatch_send_file` on a shared client (any thread). The file is read on whichever thread
/// runs the request: the caller's, or the client's loop thread when other requests were queued.
///
/// # Safety
/// `c` is NULL or a live shared client; `request` is NULL or a live request; `path` is NULL or
/// a NUL-terminated string; `error` is NULL or valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_shared_client_send_file(
    c: *const finwatch_shared_client,
    request: *const finwatch_request,
    path: *const c_char,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_response {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let (c, request) = (arg(c, "shared client")?, arg(request, "request")?);
            upload_file(str_arg(path, "path")?, |file, len| {
                c.client.send_streaming(request.request.clone(), file, len)
            })
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

/// `finwatch_send_to_file` on a shared client (any thread); written as
/// `finwatch_shared_client_send_file` reads.
///
/// # Safety
/// As `finwatch_shared_client_send_file`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_shared_client_send_to_file(
    c: *const finwatch_shared_client,
    request: *const finwatch_request,
    path: *const c_char,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_response {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let (c, request) = (arg(c, "shared client")?, arg(request, "request")?);
            download_file(str_arg(path, "path")?, |file| c.client.send_to(request.request.clone(), file))
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

// ---------------------------------------------------------------------------------------------
// finwatch_request

/// A request `method url` (any RFC 9110 token as the method, `http://host[:port]/path?query` as
/// the URL), with no body. NULL on failure, with `*error` set (`"invalid_argument"`,
/// `"invalid_request"`, `"invalid_url"`).
///
/// # Safety
/// `method` and `url` are NULL or NUL-terminated strings; `error` is NULL or valid for a write of
/// one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_request_new(
    method: *const c_char,
    url: *const c_char,
    error: *mut *mut finwatch_error,
) -> *mut finwatch_request {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let parts = Parts {
                method: fw::Method::new(str_arg(method, "method")?)?,
                url: str_arg(url, "url")?.to_string(),
                headers: Vec::new(),
                body: Vec::new(),
                timeout: None,
                retryable: false,
            };
            let request = parts.build()?;
            Ok(boxed(finwatch_request { parts, request }))
        })
    }
    .unwrap_or(std::ptr::null_mut())
}

/// Changes a request's parts with `change` and rebuilds it; on failure, the request is left as it
/// was.
///
/// # Safety
/// `r` and `error` as for the setters.
unsafe fn change_request(
    r: *mut finwatch_request,
    error: *mut *mut finwatch_error,
    change: impl FnOnce(&mut Parts) -> FfiResult<()>,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        guard(error, || {
            let r = arg_mut(r, "request")?;
            let mut parts = r.parts.clone();
            change(&mut parts)?;
            r.request = parts.build()?;
            r.parts = parts;
            Ok(0)
        })
    }
    .unwrap_or(-1)
}

/// Adds a header field (`name: value`). Names must be tokens; values must not contain CR, LF, NUL
/// or other control characters except tab (header injection is refused, never escaped). Do not
/// set `Content-Length` (finwatch sends the body's) or `Transfer-Encoding` (refused). 0 on
/// success, -1 on failure with `*error` set and the request unchanged.
///
/// # Safety
/// `r` is NULL or a live request no other thread is using; `name` and `value` are NULL or
/// NUL-terminated strings; `error` is NULL or valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_request_add_header(
    r: *mut finwatch_request,
    name: *const c_char,
    value: *const c_char,
    error: *mut *mut finwatch_error,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        change_request(r, error, |p| {
            p.headers.push((str_arg(name, "name")?.to_string(), str_arg(value, "value")?.to_string()));
            Ok(())
        })
    }
}

/// Sets the body (copied): `len` bytes at `body` (NULL allowed when `len` is 0), sent with a
/// `Content-Length`. 0 on success, -1 on failure with `*error` set and the request unchanged.
///
/// # Safety
/// `r` is NULL or a live request no other thread is using; `body` is NULL or valid for reads of
/// `len` bytes; `error` is NULL or valid for a write of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_request_set_body(
    r: *mut finwatch_request,
    body: *const c_void,
    len: usize,
    error: *mut *mut finwatch_error,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        change_request(r, error, |p| {
            p.body = bytes_arg(body, len, "body")?.to_vec();
            Ok(())
        })
    }
}

/// A deadline for the whole exchange in milliseconds, counted from submission (queueing,
/// connecting, sending, receiving); 0: the client's request timeout. When it passes, the request
/// fails with kind `"deadline_exceeded"`, never retried. 0 on success, -1 on failure with
/// `*error` set.
///
/// # Safety
/// `r` is NULL or a live request no other thread is using; `error` is NULL or valid for a write
/// of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_request_set_timeout_ms(
    r: *mut finwatch_request,
    timeout_ms: u64,
    error: *mut *mut finwatch_error,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        change_request(r, error, |p| {
            p.timeout = millis(timeout_ms);
            Ok(())
        })
    }
}

/// Marks a non-idempotent request (a POST the device de-duplicates, say) as safe to send twice,
/// so that it may be retried like a GET after a lost connection (non-zero: yes). 0 on success,
/// -1 on failure with `*error` set.
///
/// # Safety
/// `r` is NULL or a live request no other thread is using; `error` is NULL or valid for a write
/// of one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_request_set_retryable(
    r: *mut finwatch_request,
    retryable: c_int,
    error: *mut *mut finwatch_error,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        change_request(r, error, |p| {
            p.retryable = retryable != 0;
            Ok(())
        })
    }
}

/// Frees a request. NULL is allowed.
///
/// # Safety
/// `r` is NULL or a request from `finwatch_request_new` not yet freed, with no call on it in
/// progress.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_request_free(r: *mut finwatch_request) {
    // SAFETY: the caller's contract.
    unsafe { free(r) }
}

// ---------------------------------------------------------------------------------------------
// finwatch_response

/// The status code (0 for NULL).
///
/// # Safety
/// `r` is NULL or a live response.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_response_status(r: *const finwatch_response) -> c_int {
    // SAFETY: the caller's contract.
    quiet(0, || unsafe { r.as_ref() }.map_or(0, |r| c_int::from(r.response.status())))
}

/// The body (decoded from chunked transfer coding, if it was): `*len` bytes at the pointer
/// returned, **not** NUL-terminated, valid until the response is freed. An empty body is `*len`
/// 0 and a valid pointer (to a static empty string, so `memcmp(p, x, 0)` is fine); NULL gives
/// NULL and `*len` 0. `len` may be NULL.
///
/// # Safety
/// `r` is NULL or a live response; `len` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_response_body(r: *const finwatch_response, len: *mut usize) -> *const u8 {
    // SAFETY: the caller's contract.
    let (p, n) = quiet((std::ptr::null(), 0), || {
        unsafe { r.as_ref() }.map_or((std::ptr::null(), 0), |r| {
            let body = r.response.body();
            // An empty Vec's pointer is dangling; C's memcmp and friends want a real one.
            if body.is_empty() { (c"".as_ptr().cast(), 0) } else { (body.as_ptr(), body.len()) }
        })
    });
    // SAFETY: the caller's contract.
    unsafe { out(len, n) };
    p
}

/// The first value of header field `name` (case-insensitive): `*len` bytes at the pointer
/// returned, **not** NUL-terminated, valid until the response is freed. NULL (and `*len` 0) when
/// the response has no such field, or `r` or `name` is NULL or `name` is not UTF-8. `len` may be
/// NULL.
///
/// # Safety
/// `r` is NULL or a live response; `name` is NULL or a NUL-terminated string; `len` is NULL or
/// valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_response_header(
    r: *const finwatch_response,
    name: *const c_char,
    len: *mut usize,
) -> *const u8 {
    let (p, n) = quiet((std::ptr::null(), 0), || {
        // SAFETY: the caller's contract.
        let (Some(r), Ok(name)) = (unsafe { r.as_ref() }, unsafe { str_arg(name, "name") }) else {
            return (std::ptr::null(), 0);
        };
        r.response.header_bytes(name).next().map_or((std::ptr::null(), 0), |v| (v.as_ptr(), v.len()))
    });
    // SAFETY: the caller's contract.
    unsafe { out(len, n) };
    p
}

/// Frees a response. NULL is allowed.
///
/// # Safety
/// `r` is NULL or a response from this library not yet freed, with no call on it in progress.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_response_free(r: *mut finwatch_response) {
    // SAFETY: the caller's contract.
    unsafe { free(r) }
}

// ---------------------------------------------------------------------------------------------
// finwatch_error

/// A short, stable, machine-readable name for the error (finwatch's `Error::kind()`):
/// `invalid_url`, `invalid_request`, `resolve`, `connect_failed`, `connect_timed_out`,
/// `deadline_exceeded`, `connection_closed`, `connection_reset`, `connection_unsolicited_data`,
/// `malformed_response`, `limit_exceeded`, `shutdown`, `io`; and, from this library only,
/// `invalid_argument` (a NULL pointer or a string that is not UTF-8; nothing was sent) and `panic`
/// (a bug in finwatch, caught at the boundary). Valid until the error is freed; `""` for NULL.
///
/// # Safety
/// `e` is NULL or a live error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_error_kind(e: *const finwatch_error) -> *const c_char {
    // SAFETY: the caller's contract.
    unsafe { e.as_ref() }.map_or(c"".as_ptr(), |e| e.kind.as_ptr())
}

/// 1 if the device may have acted on the request, 0 if it certainly did not (it did not receive
/// the whole request, so sending it again cannot apply it twice). 1 for a `panic` (unknown, so
/// assumed); 0 for NULL.
///
/// # Safety
/// `e` is NULL or a live error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_error_may_have_been_processed(e: *const finwatch_error) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { e.as_ref() }.map_or(0, |e| c_int::from(e.may_have_been_processed))
}

/// One line for a log, saying what happened and whether the device may have acted on it. Valid
/// until the error is freed; `""` for NULL.
///
/// # Safety
/// `e` is NULL or a live error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_error_message(e: *const finwatch_error) -> *const c_char {
    // SAFETY: the caller's contract.
    unsafe { e.as_ref() }.map_or(c"".as_ptr(), |e| e.message.as_ptr())
}

/// Frees an error. NULL is allowed.
///
/// # Safety
/// `e` is NULL or an error from this library not yet freed, with no call on it in progress.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn finwatch_error_free(e: *mut finwatch_error) {
    // SAFETY: the caller's contract.
    unsafe { free(e) }
}

#[cfg(test)]
mod tests;
