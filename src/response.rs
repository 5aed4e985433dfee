//! Responses as the caller sees them.

use std::ops::Range;

/// An HTTP response: status, header fields, body, and which connection carried it.
///
/// `Response::default()` is an empty response (status 0), a buffer for [`crate::Client::execute`].
/// Interim (1xx) responses are skipped; a `Response` is always the final one.
///
/// ```
/// # let base = finwatch::__doc_device();
/// let mut client = finwatch::Client::new()?;
/// let resp = client.get(&format!("{base}/unico/v1/interface/io-state?ioId=25602"))?;
/// assert!(resp.is_success());
/// assert_eq!(resp.header("content-type"), Some("application/json"));
/// assert_eq!(resp.body(), br#"{"value":1}"#);
/// println!("{} {} {}", resp.version(), resp.status(), resp.reason()); // HTTP/1.1 200 OK
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Response {
    pub(crate) minor_version: u8,
    pub(crate) status: u16,
    /// The final response head as received (obs-fold already replaced by spaces), then the
    /// body from `body_at` on: one buffer, one allocation where two would cost a `malloc` and a
    /// `free` more per response handed out (the head is read into it with the bytes that
    /// follow it, so the body is usually already there: no second copy either).
    pub(crate) buf: Vec<u8>,
    /// Where the body starts in `buf`: the head's length.
    pub(crate) body_at: usize,
    pub(crate) reason: Range<usize>,
    pub(crate) headers: Vec<(Range<usize>, Range<usize>)>,
    pub(crate) meta: Meta,
}

/// Status, header fields and the body's length, the fields that carry credentials
/// (`Set-Cookie`, any name [`crate::is_sensitive_header`] matches) as `<redacted>`: a response
/// in a log or a panic message must not hand out a session. (The raw head is not shown: it
/// holds those values too.)
///
/// ```
/// # let device = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let url = format!("http://{}/login", device.local_addr()?);
/// # std::thread::spawn(move || -> std::io::Result<()> {
/// #     use std::io::{Read as _, Write as _};
/// #     let (mut s, _) = device.accept()?;
/// #     let _ = s.read(&mut [0; 4096])?;
/// #     s.write_all(b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=s3cret\r\nContent-Length: 0\r\n\r\n")
/// # });
/// let resp = finwatch::Client::new()?.get(&url)?;
/// assert_eq!(resp.header("set-cookie"), Some("sid=s3cret")); // the caller can read it
/// let shown = format!("{resp:?}");
/// assert!(!shown.contains("s3cret") && shown.contains(r#"("Set-Cookie", "<redacted>")"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, std::borrow::Cow<'_, str>)> = self
            .headers()
            .map(|(name, value)| {
                let value = if crate::is_sensitive_header(name) {
                    std::borrow::Cow::Borrowed(crate::request::REDACTED)
                } else {
                    String::from_utf8_lossy(value)
                };
                (name, value)
            })
            .collect();
        f.debug_struct("Response")
            .field("version", &self.version())
            .field("status", &self.status)
            .field("reason", &self.reason())
            .field("headers", &headers)
            .field("body_len", &self.body().len())
            .field("meta", &self.meta)
            .finish()
    }
}

/// How the response travelled; for diagnosis and the `ctl` tool.
///
/// ```
/// # let base = finwatch::__doc_device();
/// let mut client = finwatch::Client::new()?;
/// let first = client.get(&format!("{base}/io-state"))?.meta();
/// let second = client.get(&format!("{base}/io-state"))?.meta();
/// assert!(!first.reused && second.reused);
/// assert_eq!(first.connection_id, second.connection_id);
/// assert_eq!(second.retries, 0);
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Meta {
    /// The id of the connection that carried the final attempt (as in the debug log).
    pub connection_id: u64,
    /// Whether that connection had carried an earlier exchange.
    pub reused: bool,
    /// How many times the request was retried on a fresh connection after a lost one.
    pub retries: u32,
    /// The device answered a first attempt with a Digest challenge (`401`), and this is the
    /// response to the request sent again with the answer: one round trip more (see
    /// [`crate::RequestBuilder::digest_auth`]).
    pub reauthenticated: bool,
}

impl Response {
    /// The status code (`0` only for a `Response::default()` that has not been filled).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let resp = finwatch::Client::new()?.get(&format!("{base}/"))?;
    /// assert_eq!(resp.status(), 200);
    /// assert_eq!(finwatch::Response::default().status(), 0);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase (may be empty; never rely on it). Empty if it is not UTF-8.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let resp = finwatch::Client::new()?.get(&format!("{base}/"))?;
    /// assert_eq!(resp.reason(), "OK");
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn reason(&self) -> &str {
        std::str::from_utf8(&self.buf[self.reason.clone()]).unwrap_or("")
    }

    /// `"HTTP/1.1"` or `"HTTP/1.0"` (an HTTP/1.0 response retires its connection unless it
    /// says `Connection: keep-alive`).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let resp = finwatch::Client::new()?.get(&format!("{base}/"))?;
    /// assert_eq!(resp.version(), "HTTP/1.1");
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn version(&self) -> &'static str {
        if self.minor_version == 0 { "HTTP/1.0" } else { "HTTP/1.1" }
    }

    /// The first value of a header field (case-insensitive name), if present and UTF-8.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let resp = finwatch::Client::new()?.get(&format!("{base}/"))?;
    /// assert_eq!(resp.header("Content-Length"), Some("11"));
    /// assert_eq!(resp.header("content-length"), Some("11"));
    /// assert_eq!(resp.header("ETag"), None);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        let (_, v) =
            self.headers.iter().find(|(n, _)| self.buf[n.clone()].eq_ignore_ascii_case(name.as_bytes()))?;
        std::str::from_utf8(&self.buf[v.clone()]).ok()
    }

    /// All values of a header field (case-insensitive name) in the order received, as raw bytes.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let resp = finwatch::Client::new()?.get(&format!("{base}/"))?;
    /// let types: Vec<&[u8]> = resp.header_bytes("content-type").collect();
    /// assert_eq!(types, [b"application/json"]);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn header_bytes<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| self.buf[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.buf[v.clone()])
    }

    /// All header fields in order, as (name as received, raw value).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let resp = finwatch::Client::new()?.get(&format!("{base}/"))?;
    /// for (name, value) in resp.headers() {
    ///     println!("{name}: {}", String::from_utf8_lossy(value));
    /// }
    /// assert!(resp.headers().any(|(n, v)| n.eq_ignore_ascii_case("content-length") && v == b"11"));
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers.iter().map(|(n, v)| {
            // Names were validated as tokens by the parser, so they are ASCII.
            (std::str::from_utf8(&self.buf[n.clone()]).unwrap_or(""), &self.buf[v.clone()])
        })
    }

    /// The body, decoded from the transfer coding (chunked or not); empty for a response to
    /// `HEAD`, and for 204 and 304.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let resp = finwatch::Client::new()?.get(&format!("{base}/"))?;
    /// assert_eq!(resp.body(), br#"{"value":1}"#);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn body(&self) -> &[u8] {
        self.buf.get(self.body_at..).unwrap_or_default()
    }

    /// Takes ownership of the body.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let body: Vec<u8> = finwatch::Client::new()?.get(&format!("{base}/"))?.into_body();
    /// assert_eq!(String::from_utf8(body).unwrap(), r#"{"value":1}"#);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn into_body(self) -> Vec<u8> {
        let mut buf = self.buf;
        // The head goes; the body moves to the front of the same allocation.
        buf.drain(..self.body_at.min(buf.len()));
        buf
    }

    /// Whether the status is 2xx. (A 4xx or 5xx is a response, not an [`crate::Error`]: the
    /// device answered.)
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// assert!(finwatch::Client::new()?.get(&format!("{base}/"))?.is_success());
    /// assert!(!finwatch::Response::default().is_success());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// How the response travelled: which connection carried it, whether that connection was
    /// reused, how many retries it took.
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// let resp = finwatch::Client::new()?.get(&format!("{base}/"))?;
    /// assert!(!resp.meta().reused); // a new client's first request needs a new connection
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn meta(&self) -> Meta {
        self.meta
    }
}
