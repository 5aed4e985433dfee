//! Python bindings of finwatch: the extension module `finwatch._finwatch`, re-exported by the
//! Python package `finwatch` (python/python/finwatch/__init__.py).
//!
//! One [`finwatch::Client`] per `finwatch.Client`, behind a `Mutex`: a Python thread that sends a
//! request takes the lock and runs the client's event loop **with the GIL released**, so other
//! Python threads run while it waits; a second thread using the same `finwatch.Client` waits
//! for the lock (its requests are serialised, never interleaved). The lock is only ever taken
//! with the GIL released, so a thread waiting for it never holds the GIL.

use std::sync::Mutex;
use std::time::Duration;

use finwatch::{Client, ClientBuilder, Limits, Method, Request, Response};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyMemoryView, PyString};

create_exception!(
    finwatch,
    Error,
    PyException,
    "A request that did not end with a response, or was refused before anything was sent.\n\n\
     Attributes:\n\n\
     - kind (str): what happened, a short stable name (finwatch's Error::kind(): 'invalid_url', \
     'invalid_request', 'resolve', 'connect_failed', 'connect_timed_out', 'deadline_exceeded', \
     'connection_closed', 'connection_reset', 'malformed_response', 'limit_exceeded', ...).\n\
     - may_have_been_processed (bool): whether the device may have acted on the request. False is \
     a guarantee: the device did not receive the whole request, so sending it again cannot apply \
     it twice."
);

/// Every option `finwatch.Client(**options)` takes, for the message of an unknown one.
const OPTIONS: &[&str] = &[
    "connect_timeout",
    "request_timeout",
    "idle_timeout",
    "max_retries",
    "max_in_flight_per_host",
    "max_connections_per_host",
    "nodelay",
    "busy_poll",
    "adaptive_spin",
    "warm_spares",
    "user_agent",
    "max_head_bytes",
    "max_headers",
    "max_body_bytes",
    "max_interim_responses",
];

/// Why a call on the client failed, before it is turned into a Python exception (which needs the
/// GIL, so it is done after the wait).
enum Failure {
    /// The request's own failure, or finwatch refused it.
    Core(finwatch::Error),
    /// `close()` was called.
    Closed,
    /// An earlier call panicked while it held the client.
    Poisoned,
    /// A signal handler raised (Ctrl-C: `KeyboardInterrupt`) while the call waited; the request
    /// was aborted, with this error.
    Interrupted { interrupt: PyErr, aborted: Option<finwatch::Error> },
}

impl Failure {
    fn into_py(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Core(e) => core_error(py, &e),
            Failure::Closed => PyValueError::new_err("the finwatch.Client is closed"),
            Failure::Poisoned => PyRuntimeError::new_err(
                "the finwatch.Client is unusable: an earlier call panicked while it held the client",
            ),
            Failure::Interrupted { interrupt, aborted } => {
                interrupt.set_cause(py, aborted.map(|e| core_error(py, &e)));
                interrupt
            }
        }
    }
}

impl From<finwatch::Error> for Failure {
    fn from(e: finwatch::Error) -> Failure {
        Failure::Core(e)
    }
}

/// `finwatch.Error` for a core error: its `Display` as the message, `kind` and
/// `may_have_been_processed` as attributes.
fn core_error(py: Python<'_>, e: &finwatch::Error) -> PyErr {
    let err = Error::new_err(e.to_string());
    let value = err.value(py);
    // Setting an attribute on a fresh exception instance cannot fail short of a MemoryError, and
    // then the error to raise is still this one.
    let _ = value.setattr("kind", e.kind());
    let _ = value.setattr("may_have_been_processed", e.may_have_been_processed());
    err
}

/// A duration in seconds (an `int` or a `float`), finite and not negative.
fn seconds(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Duration> {
    if value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!("{what} must be a number of seconds, not a bool")));
    }
    let secs: f64 = value
        .extract()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a number of seconds (int or float)")))?;
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a non-negative, finite (and not huge) number of seconds, not {secs}"
        ))
    })
}

/// A count (`int`, not `bool`).
fn count<T: for<'a, 'py> FromPyObject<'a, 'py>>(value: &Bound<'_, PyAny>, what: &str) -> PyResult<T> {
    if value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!("{what} must be an int, not a bool")));
    }
    value.extract().map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a non-negative int that fits the platform, not {value}"
        ))
    })
}

fn flag(value: &Bound<'_, PyAny>, what: &str) -> PyResult<bool> {
    value.extract().map_err(|_| PyTypeError::new_err(format!("{what} must be a bool")))
}

/// A request body given as `bytes`, `bytearray`, `memoryview` or `str` (UTF-8).
fn body_bytes(value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = value.cast::<PyBytes>() {
        Ok(b.as_bytes().to_vec())
    } else if let Ok(b) = value.cast::<PyByteArray>() {
        Ok(b.to_vec())
    } else if value.is_instance_of::<PyMemoryView>() {
        let b = value.py().get_type::<PyBytes>().call1((value,))?;
        Ok(b.cast::<PyBytes>()?.as_bytes().to_vec())
    } else if value.is_instance_of::<PyString>() {
        Ok(value.extract::<String>()?.into_bytes())
    } else {
        Err(PyTypeError::new_err(format!(
            "body must be bytes, bytearray, memoryview or str, not {}",
            value.get_type().name()?
        )))
    }
}

/// Header fields given as a mapping (`dict`, or anything with `items()`) or an iterable of
/// `(name, value)` pairs of `str`.
fn header_list(value: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let pairs = if value.hasattr("items")? { value.call_method0("items")? } else { value.clone() };
    let bad =
        || PyTypeError::new_err("headers must be a mapping or an iterable of (name, value) pairs of str");
    let mut out = Vec::new();
    for item in pairs.try_iter().map_err(|_| bad())? {
        out.push(item?.extract::<(String, String)>().map_err(|_| bad())?);
    }
    Ok(out)
}

/// A response: status, headers and body, copied out of the Rust response.
#[pyclass(module = "finwatch", name = "Response", frozen)]
struct PyResponse {
    /// The status code, e.g. 200.
    #[pyo3(get)]
    status: u16,
    /// The reason phrase, e.g. "OK" (may be empty).
    #[pyo3(get)]
    reason: String,
    /// "HTTP/1.1" or "HTTP/1.0".
    #[pyo3(get)]
    version: &'static str,
    /// Header fields in the order received, values decoded as ISO-8859-1 (every byte kept).
    fields: Vec<(String, String)>,
    body: Py<PyBytes>,
    /// The id of the connection that carried the response.
    #[pyo3(get)]
    connection_id: u64,
    /// Whether that connection had carried an earlier exchange.
    #[pyo3(get)]
    reused: bool,
    /// How many times the request was sent again on a fresh connection after a lost one.
    #[pyo3(get)]
    retries: u32,
}

impl PyResponse {
    fn new(py: Python<'_>, r: &Response) -> PyResponse {
        // Header values are bytes on the wire; ISO-8859-1 maps each to one code point, as
        // `http.client` does, so nothing is lost (`value.encode("latin-1")` gives the bytes).
        let fields =
            r.headers().map(|(n, v)| (n.to_string(), v.iter().map(|&b| char::from(b)).collect())).collect();
        let meta = r.meta();
        PyResponse {
            status: r.status(),
            reason: r.reason().to_string(),
            version: r.version(),
            fields,
            body: PyBytes::new(py, r.body()).unbind(),
            connection_id: meta.connection_id,
            reused: meta.reused,
            retries: meta.retries,
        }
    }
}

#[pymethods]
impl PyResponse {
    /// The header fields as a list of (name, value) tuples of str, in the order received, with
    /// repeated fields repeated. Values are decoded as ISO-8859-1.
    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.fields.clone()
    }

    /// The body, as bytes.
    #[getter]
    fn body(&self, py: Python<'_>) -> Py<PyBytes> {
        self.body.clone_ref(py)
    }

    /// Whether the status is 2xx.
    #[getter]
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The value of the first header field called `name` (case-insensitive), or `default`.
    #[pyo3(signature = (name, default=None))]
    fn header(&self, name: &str, default: Option<String>) -> Option<String> {
        self.fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).or(default)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<finwatch.Response [{} {}] {} bytes>",
            self.status,
            self.reason,
            self.body.bind(py).as_bytes().len()
        )
    }
}

/// An HTTP/1.1 client for embedded devices; see the package's docstring.
#[pyclass(module = "finwatch", name = "Client", frozen)]
struct PyClient {
    /// `None` once closed.
    inner: Mutex<Option<Client>>,
    /// Sent as `User-Agent` on every request that does not set one.
    user_agent: Option<String>,
}

impl PyClient {
    /// Runs `f` on the client with the GIL released (the lock is only ever taken so: a thread
    /// waiting for it never holds the GIL).
    fn with_client<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Client) -> Result<T, Failure> + Send,
    ) -> Result<T, Failure> {
        py.detach(|| {
            let mut guard = self.inner.lock().map_err(|_| Failure::Poisoned)?;
            f(guard.as_mut().ok_or(Failure::Closed)?)
        })
    }

    /// The request a call sends, from its Python arguments.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        py: Python<'_>,
        method: &str,
        url: &str,
        body: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        retryable: bool,
    ) -> PyResult<Request> {
        let body = body.filter(|b| !b.is_none()).map(body_bytes).transpose()?;
        let headers = headers.filter(|h| !h.is_none()).map(header_list).transpose()?.unwrap_or_default();
        let timeout = timeout.filter(|t| !t.is_none()).map(|t| seconds(t, "timeout")).transpose()?;
        build_request(method, url, body, &headers, timeout, retryable, self.user_agent.as_deref())
            .map_err(|e| core_error(py, &e))
    }

    /// Sends a request built from Python's arguments (`prepare`, with the GIL), without the GIL.
    fn call(&self, py: Python<'_>, request: PyResult<Request>) -> PyResult<PyResponse> {
        let request = request?;
        let result = self.with_client(py, |client| {
            let id = client.submit(request);
            wait_interruptibly(client, id)
        });
        match result {
            Ok(response) => Ok(PyResponse::new(py, &response)),
            Err(failure) => Err(failure.into_py(py)),
        }
    }
}

/// A Python object with `read(n)` as the body of [`Client::submit_streaming`]. Each read takes
/// the GIL, and runs Python's signal handlers first, so Ctrl-C ends an upload at the next read
/// (or, while the device takes nothing, at the wait's next slice).
struct PyReader {
    file: Py<PyAny>,
    raised: Raised,
}

/// The Python exception a reader or writer raised (or a signal handler, during one: `true`),
/// kept for the caller: the core reports it as a body-stream error, whose `__cause__` it becomes
/// (a signal's exception, Ctrl-C's `KeyboardInterrupt`, is raised itself instead).
type Raised = std::sync::Arc<Mutex<Option<(PyErr, bool)>>>;

/// Keeps `e` in `raised` and gives the core an `io::Error` saying what it was. An exception that
/// is not an `Exception` (`KeyboardInterrupt` from a `read` that slept, `SystemExit`) counts as
/// a signal's: it is raised itself.
fn keep(py: Python<'_>, raised: &Raised, e: PyErr, signal: bool) -> std::io::Error {
    let signal = signal || !e.is_instance_of::<PyException>(py);
    let io = py_io_error(py, &e);
    if let Ok(mut slot) = raised.lock() {
        slot.get_or_insert((e, signal));
    }
    io
}

impl std::io::Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        Python::attach(|py| {
            py.check_signals().map_err(|e| keep(py, &self.raised, e, true))?;
            let data = self
                .file
                .call_method1(py, "read", (buf.len(),))
                .map_err(|e| keep(py, &self.raised, e, false))?;
            let data = data.bind(py);
            let Ok(bytes) = data.cast::<PyBytes>().map(|b| b.as_bytes()) else {
                let kind = data.get_type().name().map(|n| n.to_string()).unwrap_or_default();
                let e = PyTypeError::new_err(format!("the reader's read() returned {kind}, not bytes"));
                return Err(keep(py, &self.raised, e, false));
            };
            if bytes.len() > buf.len() {
                let e = PyValueError::new_err("the reader's read(n) returned more than n bytes");
                return Err(keep(py, &self.raised, e, false));
            }
            buf[..bytes.len()].copy_from_slice(bytes);
            Ok(bytes.len())
        })
    }
}

/// A Python object with `write(bytes)` as the sink of [`Client::submit_to`]; as [`PyReader`], each
/// write takes the GIL and runs the signal handlers first.
struct PyWriter {
    file: Py<PyAny>,
    raised: Raised,
}

impl std::io::Write for PyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Python::attach(|py| {
            py.check_signals().map_err(|e| keep(py, &self.raised, e, true))?;
            let wrote = self
                .file
                .call_method1(py, "write", (PyBytes::new(py, buf),))
                .map_err(|e| keep(py, &self.raised, e, false))?;
            // A raw file may write less than it was given and say so; text-less sinks that
            // return None (or nothing useful) took it all.
            match wrote.extract::<usize>(py) {
                Ok(n) if n <= buf.len() => Ok(n),
                _ => Ok(buf.len()),
            }
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Python::attach(|py| {
            if self.file.bind(py).hasattr("flush").unwrap_or(false) {
                self.file.call_method0(py, "flush").map_err(|e| keep(py, &self.raised, e, false))?;
            }
            Ok(())
        })
    }
}

/// The outcome of a streamed call: a body-stream error caused by a Python exception has it as
/// its `__cause__`; one caused by a signal handler (Ctrl-C) raises that handler's exception
/// (`KeyboardInterrupt`) with the request's `finwatch.Error` as its cause.
fn streamed(py: Python<'_>, result: Result<Response, Failure>, raised: &Raised) -> PyResult<PyResponse> {
    let error = match result {
        Ok(response) => return Ok(PyResponse::new(py, &response)),
        Err(Failure::Core(e)) => core_error(py, &e),
        Err(other) => return Err(other.into_py(py)),
    };
    match raised.lock().ok().and_then(|mut slot| slot.take()) {
        Some((interrupt, true)) => {
            interrupt.set_cause(py, Some(error));
            Err(interrupt)
        }
        Some((exception, false)) => {
            error.set_cause(py, Some(exception));
            Err(error)
        }
        None => Err(error),
    }
}

/// A Python exception raised by a reader or writer, as the `io::Error` the core reports as the
/// body stream's failure (its message: the exception's type and text).
fn py_io_error(py: Python<'_>, e: &PyErr) -> std::io::Error {
    let name = e.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "exception".into());
    std::io::Error::other(format!("{name}: {}", e.value(py)))
}

/// How often a waiting call takes the GIL to look for a signal (Ctrl-C).
const SIGNAL_CHECK_EVERY: Duration = Duration::from_millis(50);

/// Waits for request `id` (just submitted) in slices of [`SIGNAL_CHECK_EVERY`]: between them the
/// GIL is taken for `check_signals`, so a `KeyboardInterrupt` ends the wait within a slice
/// instead of at the request's deadline. The interrupted request is aborted (its connection
/// closed, the client stays usable) and its `finwatch.Error` (`Shutdown`: whether the device may
/// have acted) is the interrupt's `__cause__`. Off the main thread `check_signals` never raises.
fn wait_interruptibly(client: &mut Client, id: finwatch::RequestId) -> Result<Response, Failure> {
    let mut done = Vec::new();
    loop {
        if let Err(e) = client.poll(Some(SIGNAL_CHECK_EVERY), &mut done) {
            // The poller failed: no request is left running behind the error.
            client.abort_all();
            return Err(e.into());
        }
        // The client's mutex serialises calls: the only request pending is this one.
        if let Some(at) = done.iter().position(|c| c.id == id) {
            return Ok(done.swap_remove(at).result?);
        }
        if let Err(interrupt) = Python::attach(|py| py.check_signals()) {
            client.abort_all();
            let _ = client.poll(Some(Duration::ZERO), &mut done);
            let aborted = done.into_iter().find(|c| c.id == id).and_then(|c| c.result.err());
            return Err(Failure::Interrupted { interrupt, aborted });
        }
    }
}

fn build_request(
    method: &str,
    url: &str,
    body: Option<Vec<u8>>,
    headers: &[(String, String)],
    timeout: Option<Duration>,
    retryable: bool,
    user_agent: Option<&str>,
) -> finwatch::Result<Request> {
    let mut b = Request::builder(Method::new(method)?, url);
    for (name, value) in headers {
        b = b.header(name, value);
    }
    if let Some(ua) = user_agent
        && !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
    {
        b = b.header("User-Agent", ua);
    }
    if let Some(body) = body {
        b = b.body(body);
    }
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.retryable(retryable).build()
}

#[pymethods]
impl PyClient {
    /// `Client(**options)`: see the package's docstring for the options. Nothing connects until
    /// a request is sent.
    #[new]
    #[pyo3(signature = (**options))]
    fn new(py: Python<'_>, options: Option<&Bound<'_, PyDict>>) -> PyResult<PyClient> {
        let mut builder = ClientBuilder::new();
        let mut limits = Limits::default();
        let mut user_agent = None;
        for (key, value) in options.into_iter().flat_map(|d| d.iter()) {
            let key: String = key.extract()?;
            let v = &value;
            builder = match key.as_str() {
                "connect_timeout" => builder.connect_timeout(seconds(v, &key)?),
                "request_timeout" => builder.request_timeout(seconds(v, &key)?),
                "idle_timeout" => builder.idle_timeout(seconds(v, &key)?),
                "max_retries" => builder.max_retries(count(v, &key)?),
                "max_in_flight_per_host" => builder.max_in_flight_per_host(count(v, &key)?),
                "max_connections_per_host" => builder.max_connections_per_host(count(v, &key)?),
                "nodelay" => builder.nodelay(flag(v, &key)?),
                "busy_poll" => builder.busy_poll(seconds(v, &key)?),
                "adaptive_spin" => builder.adaptive_spin(seconds(v, &key)?),
                "warm_spares" => builder.warm_spares(flag(v, &key)?),
                "user_agent" => {
                    if !v.is_none() {
                        let ua: String =
                            v.extract().map_err(|_| PyTypeError::new_err("user_agent must be a str"))?;
                        // Refused now, as a request's header would be, rather than on every request.
                        build_request("GET", "http://127.0.0.1/", None, &[], None, false, Some(&ua))
                            .map_err(|e| core_error(py, &e))?;
                        user_agent = Some(ua);
                    }
                    builder
                }
                "max_head_bytes" => {
                    limits.max_head_bytes = count(v, &key)?;
                    builder
                }
                "max_headers" => {
                    limits.max_headers = count(v, &key)?;
                    builder
                }
                "max_body_bytes" => {
                    limits.max_body_bytes = count(v, &key)?;
                    builder
                }
                "max_interim_responses" => {
                    limits.max_interim_responses = count(v, &key)?;
                    builder
                }
                _ => {
                    return Err(PyTypeError::new_err(format!(
                        "Client() got an unexpected option '{key}' (options: {})",
                        OPTIONS.join(", ")
                    )));
                }
            };
        }
        let client = builder.limits(limits).build().map_err(|e| core_error(py, &e))?;
        Ok(PyClient { inner: Mutex::new(Some(client)), user_agent })
    }

    /// Sends `method url` and waits for the response, with the GIL released.
    ///
    /// `body`: bytes, bytearray, memoryview or str (UTF-8); `headers`: a mapping or an iterable
    /// of (name, value) pairs of str; `timeout`: seconds for the whole exchange, overriding the
    /// client's request_timeout; `retryable`: the request may be sent twice (a POST the device
    /// de-duplicates). Returns a `finwatch.Response` whatever its status; raises
    /// `finwatch.Error` when there is no response.
    #[pyo3(signature = (method, url, body=None, headers=None, timeout=None, retryable=false))]
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        py: Python<'_>,
        method: &str,
        url: &str,
        body: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        retryable: bool,
    ) -> PyResult<PyResponse> {
        self.call(py, self.prepare(py, method, url, body, headers, timeout, retryable))
    }

    /// `GET url`.
    #[pyo3(signature = (url, headers=None, timeout=None))]
    fn get(
        &self,
        py: Python<'_>,
        url: &str,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyResponse> {
        self.call(py, self.prepare(py, "GET", url, None, headers, timeout, false))
    }

    /// `PUT url` with `body`.
    #[pyo3(signature = (url, body, headers=None, timeout=None))]
    fn put(
        &self,
        py: Python<'_>,
        url: &str,
        body: &Bound<'_, PyAny>,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyResponse> {
        self.call(py, self.prepare(py, "PUT", url, Some(body), headers, timeout, false))
    }

    /// `POST url` with `body` (not idempotent: retried only where the device provably did not
    /// receive it, unless `retryable=True`).
    #[pyo3(signature = (url, body, headers=None, timeout=None, retryable=false))]
    fn post(
        &self,
        py: Python<'_>,
        url: &str,
        body: &Bound<'_, PyAny>,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
        retryable: bool,
    ) -> PyResult<PyResponse> {
        self.call(py, self.prepare(py, "POST", url, Some(body), headers, timeout, retryable))
    }

    /// `DELETE url`.
    #[pyo3(signature = (url, headers=None, timeout=None))]
    fn delete(
        &self,
        py: Python<'_>,
        url: &str,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyResponse> {
        self.call(py, self.prepare(py, "DELETE", url, None, headers, timeout, false))
    }

    /// Sends `method url` with a body of exactly `length` bytes read from `reader` (any object
    /// with `read(n)` returning bytes: an open file, `io.BytesIO`), through one 64 KiB buffer,
    /// never held whole: a firmware image goes up without being loaded. Returns the response.
    ///
    /// A reader that raises, or ends before `length` bytes, fails the request with a
    /// `finwatch.Error` of kind `body_stream` (the device had the head: it may have acted), and
    /// the connection is closed. A streamed body is never sent twice: once any of it was read,
    /// a lost connection is an error, not a retry. Ctrl-C ends it within 50 ms.
    #[pyo3(signature = (method, url, reader, length, headers=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn send_streaming(
        &self,
        py: Python<'_>,
        method: &str,
        url: &str,
        reader: Bound<'_, PyAny>,
        length: u64,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyResponse> {
        let request = self.prepare(py, method, url, None, headers, timeout, false)?;
        let raised = Raised::default();
        let reader = PyReader { file: reader.unbind(), raised: raised.clone() };
        let result = self.with_client(py, |client| {
            let id = client.submit_streaming(request, reader, length)?;
            wait_interruptibly(client, id)
        });
        streamed(py, result, &raised)
    }

    /// Sends `method url` (with `body`, if given) and writes the response body into `writer`
    /// (any object with `write(bytes)`: an open file, `io.BytesIO`) as it arrives, never held
    /// whole: a log or an image comes down without being loaded. Returns the response, whose
    /// `body` is empty. `max_body_bytes` does not apply to it.
    ///
    /// A writer that raises fails the request with a `finwatch.Error` of kind `body_stream`, and
    /// the connection is closed. Ctrl-C ends it within 50 ms.
    #[pyo3(signature = (method, url, writer, body=None, headers=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn send_to(
        &self,
        py: Python<'_>,
        method: &str,
        url: &str,
        writer: Bound<'_, PyAny>,
        body: Option<&Bound<'_, PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyResponse> {
        let request = self.prepare(py, method, url, body, headers, timeout, false)?;
        let raised = Raised::default();
        let writer = PyWriter { file: writer.unbind(), raised: raised.clone() };
        let result = self.with_client(py, |client| {
            let (id, writer) = client.submit_to(request, writer)?;
            let response = wait_interruptibly(client, id)?;
            writer.take()?;
            Ok(response)
        });
        streamed(py, result, &raised)
    }

    /// The client's counters (connects, reuses, FINs seen while idle, retries, warm spares, …)
    /// as a dict of ints.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.with_client(py, |client| Ok(client.stats())).map_err(|f| f.into_py(py))?;
        let d = PyDict::new(py);
        for (name, value) in [
            ("submitted", stats.submitted),
            ("succeeded", stats.succeeded),
            ("failed", stats.failed),
            ("connects", stats.connects),
            ("connect_failures", stats.connect_failures),
            ("reuses", stats.reuses),
            ("fins_seen_idle", stats.fins_seen_idle),
            ("fins_caught_by_peek", stats.fins_caught_by_peek),
            ("fins_while_busy", stats.fins_while_busy),
            ("resets", stats.resets),
            ("retries", stats.retries),
            ("retired", stats.retired),
            ("retired_before_idle_close", stats.retired_before_idle_close),
            ("warm_spares_opened", stats.warm_spares_opened),
            ("warm_spares_used", stats.warm_spares_used),
            ("warm_spares_withheld", stats.warm_spares_withheld),
            ("warm_spares_timed", stats.warm_spares_timed),
            ("spins_caught", stats.spins_caught),
            ("spins_missed", stats.spins_missed),
        ] {
            d.set_item(name, value)?;
        }
        Ok(d)
    }

    /// Closes every connection; later requests raise ValueError. Waits for a request in progress
    /// on another thread. Closing twice is harmless.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            let client = match self.inner.lock() {
                Ok(mut guard) => guard.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            drop(client); // closes its sockets and its poller
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.close(py);
    }
}

/// The extension module, imported by the `finwatch` package.
#[pymodule]
#[pyo3(name = "_finwatch")]
fn finwatch_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let error = py.get_type::<Error>();
    // Defaults for an `Error` made by Python code: kind unknown, and so possibly processed.
    error.setattr("kind", py.None())?;
    error.setattr("may_have_been_processed", true)?;
    m.add("Error", error)?;
    m.add_class::<PyClient>()?;
    m.add_class::<PyResponse>()?;
    Ok(())
}
