//! Requests: building, validating, encoding.
//!
//! Everything a caller can put on the wire is checked here, before anything is sent: a CR, LF or
//! NUL in a method, target, header name or value would let one request smuggle another
//! (header injection), so it is an [`Error::InvalidRequest`], never escaped or stripped.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::proto::digest::{self, Credentials, DigestPolicy};
use crate::url::Url;

/// An HTTP method. Any token is allowed (RFC 9110 §9.1); the common ones have constants.
///
/// Whether a method is idempotent decides whether a request lost with its connection may be
/// retried ([`Method::is_idempotent`]).
///
/// ```
/// use finwatch::Method;
/// assert_eq!(Method::PUT.as_str(), "PUT");
/// let propfind = Method::new("PROPFIND")?;
/// assert!(!propfind.is_idempotent());
/// assert!(Method::new("GET /x").is_err()); // not a token
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Method(std::borrow::Cow<'static, str>);

impl Method {
    /// `GET`
    pub const GET: Method = Method::from_static("GET");
    /// `HEAD`
    pub const HEAD: Method = Method::from_static("HEAD");
    /// `POST`
    pub const POST: Method = Method::from_static("POST");
    /// `PUT`
    pub const PUT: Method = Method::from_static("PUT");
    /// `DELETE`
    pub const DELETE: Method = Method::from_static("DELETE");
    /// `OPTIONS`
    pub const OPTIONS: Method = Method::from_static("OPTIONS");
    /// `PATCH`
    pub const PATCH: Method = Method::from_static("PATCH");
    /// `TRACE`
    pub const TRACE: Method = Method::from_static("TRACE");

    const fn from_static(s: &'static str) -> Method {
        Method(std::borrow::Cow::Borrowed(s))
    }

    /// A method from its name; it must be an RFC 9110 token. Method names are case-sensitive.
    /// `CONNECT` is refused (finwatch does not tunnel), as is anything that is not a token
    /// ([`Error::InvalidRequest`]).
    ///
    /// ```
    /// use finwatch::Method;
    /// assert_eq!(Method::new("GET")?, Method::GET);
    /// assert_eq!(Method::new("REBOOT")?.as_str(), "REBOOT");
    /// assert!(Method::new("").is_err());
    /// assert!(Method::new("GET\r\nX-Evil: 1").is_err());
    /// assert!(Method::new("CONNECT").is_err());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn new(name: &str) -> Result<Method> {
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(Error::invalid_request(format!("invalid method {name:?}")));
        }
        if name == "CONNECT" {
            return Err(Error::invalid_request("CONNECT (tunnelling) is not supported"));
        }
        Ok(Method(std::borrow::Cow::Owned(name.to_string())))
    }

    /// The method's name.
    ///
    /// ```
    /// assert_eq!(finwatch::Method::DELETE.as_str(), "DELETE");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Idempotent per RFC 9110 §9.2.2: applying it twice has the effect of applying it once,
    /// so a retry after a lost connection cannot double a command. `GET`, `HEAD`, `OPTIONS`,
    /// `TRACE`, `PUT` and `DELETE` are; `POST`, `PATCH` and unknown methods are not (mark such a
    /// request [`RequestBuilder::retryable`] if the device de-duplicates it).
    ///
    /// ```
    /// use finwatch::Method;
    /// assert!(Method::PUT.is_idempotent());
    /// assert!(!Method::POST.is_idempotent());
    /// ```
    pub fn is_idempotent(&self) -> bool {
        matches!(self.as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
    }

    /// Whether the method defines a meaning for enclosed content, so a `Content-Length: 0`
    /// is sent even for an empty body (RFC 9110 §8.6).
    fn expects_content(&self) -> bool {
        matches!(self.as_str(), "POST" | "PUT" | "PATCH")
    }
}

/// The method's name, as on the wire.
///
/// ```
/// assert_eq!(finwatch::Method::PATCH.to_string(), "PATCH");
/// ```
impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`Method::new`]: a case-sensitive RFC 9110 token (`get` is not `GET`), extension methods
/// included; `CONNECT` and anything that is not a token are refused.
///
/// ```
/// use finwatch::Method;
/// assert_eq!("GET".parse::<Method>()?, Method::GET);
/// assert_eq!("get".parse::<Method>()?.as_str(), "get"); // an extension method, not GET
/// assert!(!"get".parse::<Method>()?.is_idempotent());
/// assert_eq!("M-SEARCH".parse::<Method>()?.to_string(), "M-SEARCH");
/// assert!("GET /".parse::<Method>().is_err());
/// # Ok::<(), finwatch::Error>(())
/// ```
impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(name: &str) -> Result<Method> {
        Method::new(name)
    }
}

/// A request, validated and ready to submit.
///
/// Made with a [`RequestBuilder`] ([`Request::get`], [`Request::put`], [`Request::post`],
/// [`Request::delete`], [`Request::head`], [`Request::builder`]), which refuses anything that could not be sent exactly as written.
/// A `Request` can be sent many times: [`crate::Client::execute`] borrows it.
///
/// ```
/// use std::time::Duration;
/// use finwatch::{Client, Request};
/// # let base = finwatch::__doc_device();
/// let req = Request::put(&format!("{base}/unico/v1/interface/io"), r#"{"ioId":25602,"value":1}"#)
///     .header("Content-Type", "application/json")
///     .timeout(Duration::from_millis(500))
///     .build()?;
/// assert_eq!(req.url().target(), "/unico/v1/interface/io");
/// let resp = Client::new()?.send(req)?;
/// assert_eq!(resp.status(), 200);
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Clone)]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) url: Url,
    /// Header fields in order: name, value, and whether the caller marked the value sensitive
    /// ([`RequestBuilder::sensitive_header`]; names [`is_sensitive_header`] matches are
    /// redacted whatever the flag says).
    pub(crate) headers: Vec<(String, String, bool)>,
    pub(crate) body: Vec<u8>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retryable: bool,
    /// Digest credentials: the engine answers the device's challenge with them.
    pub(crate) digest: Option<Arc<Credentials>>,
    /// The policy for `digest` (kept apart so that the builder methods work in any order).
    pub(crate) digest_policy: DigestPolicy,
    /// The request line and header fields as they go on the wire, without the
    /// `Content-Length` finwatch adds (it follows the body, which `get`/`put` swap per command)
    /// and the empty line: encoded once, by [`RequestBuilder::build`], and copied for every
    /// send (encoding them piece by piece cost ~250 instructions a command, callgrind).
    pub(crate) wire_head: Box<[u8]>,
    /// What the engine asks of every request it is given, worked out once by `build` from the
    /// method and fields, which cannot change after it (string comparisons per send before).
    pub(crate) traits: Traits,
}

/// A built request's facts that the engine and the encoder use per send.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Traits {
    /// The caller set a `Content-Length` field (checked against the body by `build`).
    pub(crate) declares_length: bool,
    /// [`Method::expects_content`].
    pub(crate) expects_content: bool,
    /// `HEAD`: the response has no body, whatever its fields say.
    pub(crate) head: bool,
    /// [`Request::is_retryable`].
    pub(crate) retryable: bool,
    /// [`Request::wants_close`].
    pub(crate) wants_close: bool,
}

/// Credentials stay out of logs and panic messages: the value of a header field that carries
/// one ([`is_sensitive_header`]) or that the caller marked ([`RequestBuilder::sensitive_header`])
/// shows as `<redacted>`, Digest credentials as the user name only. The body shows as its length.
///
/// ```
/// let req = finwatch::Request::get("http://10.0.0.5/io")
///     .header("X-Api-Key", "k-123")
///     .sensitive_header("X-Device-Pin", "0451")
///     .header("Accept", "application/json")
///     .build()?;
/// let shown = format!("{req:?}");
/// assert!(!shown.contains("k-123") && !shown.contains("0451"));
/// assert!(shown.contains(r#"("X-Api-Key", "<redacted>")"#) && shown.contains("application/json"));
/// # Ok::<(), finwatch::Error>(())
/// ```
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v, sensitive)| {
                let v = if *sensitive || is_sensitive_header(n) { REDACTED } else { v.as_str() };
                (n.as_str(), v)
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .field("timeout", &self.timeout)
            .field("retryable", &self.retryable)
            .field("digest_user", &self.digest.as_ref().map(|c| c.user.as_str()))
            .field("digest_policy", &self.digest_policy)
            .finish()
    }
}

impl Request {
    /// Starts a request with any method. An invalid URL is reported by
    /// [`RequestBuilder::build`].
    ///
    /// ```
    /// use finwatch::{Client, Method, Request};
    /// # let base = finwatch::__doc_device();
    /// let req = Request::builder(Method::HEAD, &format!("{base}/unico/v1/interface/io")).build()?;
    /// let resp = Client::new()?.send(req)?;
    /// assert_eq!(resp.header("Content-Length"), Some("11"));
    /// assert!(resp.body().is_empty()); // a HEAD response has no body
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn builder(method: Method, url: &str) -> RequestBuilder {
        match Url::parse(url) {
            Ok(url) => RequestBuilder {
                inner: Ok(Request {
                    method,
                    url,
                    headers: Vec::new(),
                    body: Vec::new(),
                    timeout: None,
                    retryable: false,
                    digest: None,
                    digest_policy: DigestPolicy::new(),
                    wire_head: Box::default(),
                    traits: Traits::default(),
                }),
            },
            Err(e) => RequestBuilder { inner: Err(e) },
        }
    }

    /// `GET url`
    ///
    /// ```
    /// let req = finwatch::Request::get("http://10.0.0.5/unico/v1/interface/io-state?ioId=25602").build()?;
    /// assert_eq!(req.method(), &finwatch::Method::GET);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn get(url: &str) -> RequestBuilder {
        Request::builder(Method::GET, url)
    }

    /// `PUT url` with a body (sent with a `Content-Length`, also when empty).
    ///
    /// ```
    /// let req = finwatch::Request::put("http://10.0.0.5/unico/v1/interface/io", "1").build()?;
    /// assert_eq!(req.body(), b"1");
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn put(url: &str, body: impl Into<Vec<u8>>) -> RequestBuilder {
        Request::builder(Method::PUT, url).body(body)
    }

    /// `POST url` with a body. POST is not idempotent: it is retried after a lost connection
    /// only where the device provably did not receive it all, unless marked
    /// [`RequestBuilder::retryable`].
    ///
    /// ```
    /// let req = finwatch::Request::post("http://10.0.0.5/api/pulse", "dedup=41").build()?;
    /// assert!(!req.is_retryable());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn post(url: &str, body: impl Into<Vec<u8>>) -> RequestBuilder {
        Request::builder(Method::POST, url).body(body)
    }

    /// `DELETE url` (idempotent: retried after a lost connection like `GET` and `PUT`).
    ///
    /// ```
    /// let req = finwatch::Request::delete("http://10.0.0.5/unico/v1/schedule/7").build()?;
    /// assert_eq!(req.method(), &finwatch::Method::DELETE);
    /// assert!(req.body().is_empty() && req.is_retryable());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn delete(url: &str) -> RequestBuilder {
        Request::builder(Method::DELETE, url)
    }

    /// `HEAD url`: the status and headers a `GET` would have; its response has no body.
    ///
    /// ```
    /// use finwatch::{Client, Method, Request};
    /// # let base = finwatch::__doc_device();
    /// let req = Request::head(&format!("{base}/unico/v1/firmware")).build()?;
    /// assert_eq!(req.method(), &Method::HEAD);
    /// let resp = Client::new()?.send(req)?;
    /// assert_eq!(resp.header("Content-Length"), Some("11"));
    /// assert!(resp.body().is_empty());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn head(url: &str) -> RequestBuilder {
        Request::builder(Method::HEAD, url)
    }

    /// The method.
    ///
    /// ```
    /// let req = finwatch::Request::post("http://10.0.0.5/api/pulse", "1").build()?;
    /// assert_eq!(req.method().as_str(), "POST");
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URL.
    ///
    /// ```
    /// let req = finwatch::Request::get("http://10.0.0.5:8080/io-state?ioId=25602").build()?;
    /// assert_eq!((req.url().host(), req.url().port()), ("10.0.0.5", 8080));
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The body.
    ///
    /// ```
    /// let req = finwatch::Request::get("http://10.0.0.5/io").build()?;
    /// assert!(req.body().is_empty());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Whether a lost connection may lead to a retry: idempotent methods, or marked retryable.
    /// (A request the device provably did not receive whole may be retried whatever this says.)
    ///
    /// ```
    /// use finwatch::Request;
    /// assert!(Request::put("http://10.0.0.5/io", "1").build()?.is_retryable());
    /// assert!(!Request::post("http://10.0.0.5/io", "1").build()?.is_retryable());
    /// assert!(Request::post("http://10.0.0.5/io", "1").retryable(true).build()?.is_retryable());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.retryable || self.method.is_idempotent()
    }

    /// Whether the caller asked for the connection to be closed after this exchange.
    pub(crate) fn wants_close(&self) -> bool {
        self.headers
            .iter()
            .any(|(n, v, _)| n.eq_ignore_ascii_case("connection") && has_token(v.as_bytes(), b"close"))
    }

    /// Appends the request's wire form to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let length = !self.traits.declares_length && (!self.body.is_empty() || self.traits.expects_content);
        out.reserve(self.wire_head.len() + if length { 40 } else { 2 } + self.body.len());
        out.extend_from_slice(&self.wire_head);
        if length {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, self.body.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    /// Appends the head of the request with `Content-Length: len` in place of any the caller
    /// set, and no body: the body is streamed after it (`Client::send_streaming`).
    pub(crate) fn encode_streamed_head(&self, out: &mut Vec<u8>, len: u64) {
        self.encode_fields(out, false);
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, len);
        out.extend_from_slice(b"\r\n\r\n");
    }

    /// The request line, `Host` (unless the caller set one) and the caller's header fields, with
    /// or without a `Content-Length` the caller set.
    fn encode_fields(&self, out: &mut Vec<u8>, keep_length: bool) {
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.url.target().as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !self.headers.iter().any(|(n, ..)| n.eq_ignore_ascii_case("host")) {
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(self.url.authority().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for (name, value, _) in &self.headers {
            if !keep_length && name.eq_ignore_ascii_case("content-length") {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Appends `n` in decimal: `write!` through `core::fmt` cost ~330 instructions a request
/// (callgrind, a PUT per command), this a few dozen.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Builds a [`Request`]; the first invalid input is reported by [`RequestBuilder::build`].
///
/// Nothing is escaped, stripped or guessed: a URL, method, header or length that could not go on
/// the wire exactly as given is an [`Error::InvalidUrl`] or [`Error::InvalidRequest`], before
/// anything is sent.
///
/// ```
/// use finwatch::{Error, Request};
/// let req = Request::put("http://10.0.0.5/unico/v1/interface/io", "1")
///     .header("Content-Type", "application/json")
///     .build()?;
/// assert_eq!(req.body(), b"1");
///
/// // Header injection is refused, not escaped:
/// let bad = Request::get("http://10.0.0.5/io").header("X-Id", "1\r\nX-Evil: 1").build();
/// assert!(matches!(bad, Err(Error::InvalidRequest { .. })));
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until built and sent"]
pub struct RequestBuilder {
    inner: Result<Request>,
}

impl RequestBuilder {
    /// Adds a header field. Names must be tokens; values must not contain CR, LF, NUL or other
    /// control characters except tab. `Transfer-Encoding` is refused (finwatch sends bodies with
    /// Content-Length); a `Content-Length` must match the body. Leading and trailing spaces and
    /// tabs of the value are dropped. Without a `Host` header, finwatch sends the URL's.
    ///
    /// ```
    /// use finwatch::Request;
    /// let req = Request::get("http://10.0.0.5/io-state").header("Accept", "application/json").build()?;
    /// # let _ = req;
    /// assert!(Request::get("http://10.0.0.5/").header("Transfer-Encoding", "chunked").build().is_err());
    /// assert!(Request::put("http://10.0.0.5/", "abc").header("Content-Length", "4").build().is_err());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn header(self, name: &str, value: &str) -> RequestBuilder {
        self.push_header(name, value, false)
    }

    /// Adds a header field whose value is a secret, like `http`'s
    /// `HeaderValue::set_sensitive`: it goes on the wire as [`RequestBuilder::header`] would
    /// send it, and the request's `Debug` shows `<redacted>` in its place. Fields that carry
    /// credentials by name are redacted without it ([`is_sensitive_header`]); this is for the
    /// rest (a device PIN, a one-time code, a key under a name of the vendor's choosing).
    ///
    /// ```
    /// use finwatch::Request;
    /// let req = Request::put("http://10.0.0.5/unico/v1/interface/io", "1")
    ///     .sensitive_header("X-Unico-Pin", "0451")
    ///     .build()?;
    /// assert!(!format!("{req:?}").contains("0451"));
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn sensitive_header(self, name: &str, value: &str) -> RequestBuilder {
        self.push_header(name, value, true)
    }

    fn push_header(mut self, name: &str, value: &str, sensitive: bool) -> RequestBuilder {
        if let Ok(req) = &mut self.inner {
            match check_header(name, value) {
                Ok(()) => {
                    let value = value.trim_matches([' ', '\t']).to_string();
                    req.headers.push((name.to_string(), value, sensitive));
                }
                Err(e) => self.inner = Err(e),
            }
        }
        self
    }

    /// Adds HTTP Basic credentials (RFC 7617): `Authorization: Basic base64(user:password)`,
    /// UTF-8. The user id must not contain `:`, and neither part a control character. Basic
    /// sends the password in the clear: only on a network you trust (finwatch has no TLS).
    /// Credentials in the URL (`http://user:pw@host/`) are refused; use this instead.
    ///
    /// ```
    /// use finwatch::Request;
    /// let req = Request::get("http://10.0.0.5/io-state").basic_auth("Aladdin", "open sesame").build()?;
    /// # let _ = req;
    /// assert!(Request::get("http://10.0.0.5/").basic_auth("a:b", "c").build().is_err());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn basic_auth(mut self, user: &str, password: &str) -> RequestBuilder {
        if let Ok(req) = &mut self.inner {
            if user.contains(':') {
                self.inner = Err(Error::invalid_request("a Basic user id must not contain ':' (RFC 7617)"));
            } else if user.chars().chain(password.chars()).any(char::is_control) {
                self.inner =
                    Err(Error::invalid_request("Basic credentials must not contain control characters"));
            } else {
                let mut value = String::from("Basic ");
                base64_into(&mut value, format!("{user}:{password}").as_bytes());
                req.headers.retain(|(n, ..)| !n.eq_ignore_ascii_case("authorization"));
                req.headers.push(("Authorization".to_string(), value, true));
                req.digest = None;
            }
        }
        self
    }

    /// Answers the device's HTTP Digest challenge (RFC 7616) with these credentials: the
    /// first request to a device goes without, the device's `401` with
    /// `WWW-Authenticate: Digest …` is answered by sending the request once more with an
    /// `Authorization` (the device refused the first, so that is safe even for a POST), and
    /// later requests to the device carry one from the start (the nonce is kept per device
    /// and counted), so a control loop pays the extra round trip once, and again only when
    /// the device changes its nonce. A second `401` is the caller's (wrong credentials). A
    /// response to a request sent again says so ([`crate::Meta::reauthenticated`]).
    /// Algorithms `SHA-256` (preferred) and `MD5`, with or without `-sess`; `qop=auth` or none.
    /// Neither part may contain control characters, and the URL's target neither `"` nor `\`
    /// (percent-encode them: `%22`, `%5C`; [`RequestBuilder::build`] refuses them, because
    /// Digest repeats the target in a quoted parameter, and a device that does not undo the
    /// escapes there would refuse the answer). A device is never downgraded: see
    /// [`DigestPolicy`], and [`RequestBuilder::digest_policy`] to require more. Each send
    /// computes its answer (a few
    /// hashes and small strings: microseconds, and not allocation-free like the rest of
    /// [`crate::Client::execute`]).
    ///
    /// ```
    /// # let base = finwatch::__doc_device();
    /// use finwatch::{Client, Request};
    /// let req = Request::get(&format!("{base}/io-state")).digest_auth("admin", "secret").build()?;
    /// assert_eq!(Client::new()?.send(req)?.status(), 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn digest_auth(mut self, user: &str, password: &str) -> RequestBuilder {
        if let Ok(req) = &mut self.inner {
            if user.chars().chain(password.chars()).any(char::is_control) {
                self.inner =
                    Err(Error::invalid_request("Digest credentials must not contain control characters"));
            } else {
                req.headers.retain(|(n, ..)| !n.eq_ignore_ascii_case("authorization"));
                req.digest = Some(Arc::new(Credentials {
                    user: user.to_string(),
                    password: password.to_string(),
                    policy: req.digest_policy,
                }));
            }
        }
        self
    }

    /// Which Digest challenges [`RequestBuilder::digest_auth`]'s credentials may answer (before
    /// or after it, either order): for example only `SHA-256` with `qop=auth`, for a device
    /// known to offer them. A challenge the policy refuses is not answered, and no answer to
    /// the device's current challenge is sent in advance: the device's `401` is the response
    /// (with a warning in the log). Without Digest credentials it has no effect.
    ///
    /// ```
    /// use finwatch::{DigestPolicy, Request};
    /// let req = Request::put("http://10.0.0.5/io", "1")
    ///     .digest_auth("admin", "secret")
    ///     .digest_policy(DigestPolicy::new().require_sha256(true))
    ///     .build()?;
    /// # let _ = req;
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn digest_policy(mut self, policy: DigestPolicy) -> RequestBuilder {
        if let Ok(req) = &mut self.inner {
            req.digest_policy = policy;
            if let Some(c) = &mut req.digest {
                Arc::make_mut(c).policy = policy;
            }
        }
        self
    }

    /// Sets the body; it is sent with a `Content-Length`.
    ///
    /// ```
    /// use finwatch::{Method, Request};
    /// let req = Request::builder(Method::PATCH, "http://10.0.0.5/config").body(r#"{"mode":2}"#).build()?;
    /// assert_eq!(req.body(), br#"{"mode":2}"#);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> RequestBuilder {
        if let Ok(req) = &mut self.inner {
            req.body = body.into();
        }
        self
    }

    /// A deadline for the whole exchange, counted from submission (queueing, connecting,
    /// sending, receiving). Overrides the client's default request timeout
    /// ([`crate::ClientBuilder::request_timeout`]). When it passes, the request fails with
    /// [`Error::DeadlineExceeded`], whose stage says how far it had got; it is never retried.
    ///
    /// ```
    /// use std::time::Duration;
    /// use finwatch::{Client, Request};
    /// # let base = finwatch::__doc_device();
    /// let req = Request::get(&format!("{base}/io-state")).timeout(Duration::from_millis(50)).build()?;
    /// assert_eq!(Client::new()?.send(req)?.status(), 200);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> RequestBuilder {
        if let Ok(req) = &mut self.inner {
            req.timeout = Some(timeout);
        }
        self
    }

    /// Marks a non-idempotent request as safe to send twice (for example a POST the device
    /// de-duplicates), so it may be retried like a GET after a lost connection.
    ///
    /// ```
    /// let req = finwatch::Request::post("http://10.0.0.5/api/pulse", "dedup=41").retryable(true).build()?;
    /// assert!(req.is_retryable());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn retryable(mut self, retryable: bool) -> RequestBuilder {
        if let Ok(req) = &mut self.inner {
            req.retryable = retryable;
        }
        self
    }

    /// Validates and returns the request, or the first error met while building it: an invalid
    /// URL ([`Error::InvalidUrl`]), header or `Content-Length` ([`Error::InvalidRequest`]).
    ///
    /// ```
    /// use finwatch::{Error, Request};
    /// assert!(Request::get("http://10.0.0.5/io").build().is_ok());
    /// let err = Request::get("ftp://10.0.0.5/io").build().unwrap_err();
    /// assert!(matches!(err, Error::InvalidUrl { .. }));
    /// assert!(!err.may_have_been_processed());
    /// ```
    pub fn build(self) -> Result<Request> {
        let mut req = self.inner?;
        if req.digest.is_some() && req.headers.iter().any(|(n, ..)| n.eq_ignore_ascii_case("authorization")) {
            return Err(Error::invalid_request(
                "an Authorization header and digest_auth cannot be combined (the answer to the challenge is the \
                 Authorization)",
            ));
        }
        // Digest repeats the target in a quoted `uri` parameter (see `digest::check_target`).
        if req.digest.is_some()
            && let Err(why) = digest::check_target(req.url.target())
        {
            return Err(Error::invalid_request(why));
        }
        let mut declared = None;
        for (name, value, _) in &req.headers {
            if name.eq_ignore_ascii_case("content-length") {
                // RFC 9110 §8.6: 1*DIGIT. `u64::from_str` alone would also take a leading `+`.
                let n: u64 = Some(value)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| Error::invalid_request(format!("invalid Content-Length {value:?}")))?;
                if declared.is_some_and(|d| d != n) {
                    return Err(Error::invalid_request("conflicting Content-Length headers"));
                }
                declared = Some(n);
            }
        }
        if let Some(n) = declared
            && n != req.body.len() as u64
        {
            return Err(Error::invalid_request(format!(
                "Content-Length {n} disagrees with the body length {}",
                req.body.len()
            )));
        }
        req.traits = Traits {
            declares_length: declared.is_some(),
            expects_content: req.method.expects_content(),
            head: req.method == Method::HEAD,
            retryable: req.is_retryable(),
            wants_close: req.wants_close(),
        };
        let mut head = Vec::new();
        req.encode_fields(&mut head, true);
        req.wire_head = head.into_boxed_slice();
        Ok(req)
    }
}

/// What `Debug` shows in place of a secret header value.
pub(crate) const REDACTED: &str = "<redacted>";

/// Whether a header field of this name carries a secret by its name, so that finwatch never
/// shows its value (in the `Debug` of a [`Request`] or a [`crate::Response`]) whether or not it
/// was marked with [`RequestBuilder::sensitive_header`]. Case-insensitive; the rule is:
///
/// - `Authorization` and `Proxy-Authorization` (RFC 9110 §11.6.2, §11.7.2), `Cookie` and
///   `Set-Cookie` (RFC 6265: session identifiers are credentials);
/// - any name containing `token`, `secret`, `password`, `passwd`, `credential`, `apikey`,
///   `api-key` or `api_key` (`X-Auth-Token`, `X-CSRF-Token`, `X-Api-Key`, `Api-Key`,
///   `X-Client-Secret`, …): the names vendors give keys.
///
/// It is deliberately a name rule, so it cannot know every vendor's key header: mark the others
/// with [`RequestBuilder::sensitive_header`].
///
/// ```
/// use finwatch::is_sensitive_header;
/// assert!(is_sensitive_header("proxy-authorization") && is_sensitive_header("X-Auth-Token"));
/// assert!(is_sensitive_header("x-apikey") && is_sensitive_header("Set-Cookie"));
/// assert!(!is_sensitive_header("Content-Type") && !is_sensitive_header("X-Request-Id"));
/// ```
pub fn is_sensitive_header(name: &str) -> bool {
    const EXACT: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "set-cookie"];
    const PARTS: [&str; 8] =
        ["token", "secret", "password", "passwd", "credential", "apikey", "api-key", "api_key"];
    let contains =
        |part: &str| name.as_bytes().windows(part.len()).any(|w| w.eq_ignore_ascii_case(part.as_bytes()));
    EXACT.iter().any(|e| name.eq_ignore_ascii_case(e)) || PARTS.iter().any(|p| contains(p))
}

/// RFC 9110 §5.6.2 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_header(name: &str, value: &str) -> Result<()> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(Error::invalid_request(format!("invalid header name {name:?}")));
    }
    // field-value: VCHAR, SP, HTAB, obs-text. Anything else (CR, LF, NUL, other CTLs) is refused.
    if let Some(b) = value.bytes().find(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Error::invalid_request(format!("header {name} contains the control byte 0x{b:02x}")));
    }
    if name.eq_ignore_ascii_case("transfer-encoding") {
        return Err(Error::invalid_request(
            "Transfer-Encoding is not supported on requests; bodies are sent with Content-Length",
        ));
    }
    Ok(())
}

/// Appends the standard base64 (RFC 4648 §4, with padding) of `bytes` to `out`.
fn base64_into(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

/// An origin-form target (`/path?query`) of visible ASCII, or `*`.
pub(crate) fn check_target(target: &str) -> Result<()> {
    let ok = (target.starts_with('/') || target == "*") && target.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_request(format!(
            "invalid request target {target:?} (must be /path?query of visible ASCII; percent-encode the rest)"
        )))
    }
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {

    #[test]
    fn push_decimal_writes_every_magnitude() {
        for n in [0u64, 7, 10, 99, 100, 12_345, u32::MAX as u64, u64::MAX] {
            let mut out = b"x".to_vec();
            super::push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    use super::*;

    fn wire(req: &Request) -> String {
        let mut out = Vec::new();
        req.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = String::new();
            base64_into(&mut out, input.as_bytes());
            assert_eq!(out, expected, "{input:?}");
        }
    }

    #[test]
    fn basic_auth_follows_rfc_7617() {
        // RFC 7617 §2 and §2.1 (UTF-8).
        let req = Request::get("http://h/").basic_auth("Aladdin", "open sesame").build().unwrap();
        assert!(
            wire(&req).contains("\r\nAuthorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"),
            "{}",
            wire(&req)
        );
        let req = Request::get("http://h/").basic_auth("test", "123\u{a3}").build().unwrap();
        assert!(wire(&req).contains("Authorization: Basic dGVzdDoxMjPCow==\r\n"));
        // Set twice (or over a hand-made header): one Authorization, the last.
        let req = Request::get("http://h/")
            .header("authorization", "Bearer x")
            .basic_auth("a", "1")
            .basic_auth("b", "2")
            .build()
            .unwrap();
        assert_eq!(wire(&req).matches("uthorization").count(), 1, "{}", wire(&req));
        // Digest replaces an earlier Authorization; a later one is refused.
        let dig = Request::get("http://h/").basic_auth("a", "1").digest_auth("b", "2").build().unwrap();
        assert!(!wire(&dig).contains("Authorization"), "{}", wire(&dig));
        let err =
            Request::get("http://h/").digest_auth("b", "2").header("Authorization", "x").build().unwrap_err();
        assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
        // Debug shows neither the Authorization value nor a password.
        let shown =
            format!("{:?} {:?}", Request::get("http://h/").basic_auth("a", "1").build().unwrap(), dig);
        assert!(!shown.contains("YToxIg") && !shown.contains("YTox") && !shown.contains("\"2\""), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("digest_user: Some(\"b\")"), "{shown}");
        assert!(wire(&req).contains("Authorization: Basic Yjoy\r\n"));
        for (user, password) in [("a:b", "c"), ("a", "line\r\nX-Evil: 1"), ("a\u{0}", "b")] {
            let err = Request::get("http://h/").basic_auth(user, password).build().unwrap_err();
            assert!(matches!(err, Error::InvalidRequest { .. }), "{user:?} {password:?}: {err:?}");
        }
    }

    #[test]
    fn debug_never_shows_a_secret_header_value() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "Set-Cookie",
            "X-Api-Key",
            "Api-Key",
            "x-apikey",
            "X-API_KEY",
            "X-Auth-Token",
            "X-CSRF-TOKEN",
            "Private-Token",
            "X-Client-Secret",
            "X-Device-Password",
            "X-Passwd",
            "X-Credentials",
        ] {
            let req = Request::get("http://h/").header(name, "v4lue-s3cret").build().unwrap();
            let shown = format!("{req:?}");
            assert!(!shown.contains("v4lue") && !shown.contains("s3cret"), "{name}: {shown}");
            assert!(shown.contains(&format!("({name:?}, \"<redacted>\")")), "{name}: {shown}");
            // Redacted in `Debug` only: the device gets the value.
            assert!(wire(&req).contains(&format!("\r\n{name}: v4lue-s3cret\r\n")), "{name}");
            // And through the builder's `Debug` too.
            let builder = Request::get("http://h/").header(name, "v4lue-s3cret");
            assert!(!format!("{builder:?}").contains("s3cret"), "{name}");
        }
        // Ordinary fields stay readable.
        for name in ["Accept", "Content-Type", "X-Request-Id", "X-Keycode", "Host"] {
            let req = Request::get("http://h/").header(name, "plain").build().unwrap();
            assert!(format!("{req:?}").contains(&format!("({name:?}, \"plain\")")), "{name}");
        }
    }

    #[test]
    fn a_header_the_caller_marks_sensitive_is_redacted_but_sent() {
        let req = Request::put("http://h/io", "1")
            .sensitive_header("X-Unico-Pin", " 0451 ")
            .header("X-Unico-Pin", "visible")
            .build()
            .unwrap();
        let shown = format!("{req:?}");
        assert!(!shown.contains("0451"), "{shown}");
        // The mark is per field: a second, unmarked field of that name is shown.
        assert!(shown.contains(r#"("X-Unico-Pin", "<redacted>"), ("X-Unico-Pin", "visible")"#), "{shown}");
        assert_eq!(
            wire(&req),
            "PUT /io HTTP/1.1\r\nHost: h\r\nX-Unico-Pin: 0451\r\nX-Unico-Pin: visible\r\nContent-Length: 1\r\n\r\n1"
        );
        // Checked like any header: no injection through the sensitive path either.
        let err = Request::get("http://h/").sensitive_header("X-Pin", "1\r\nX-Evil: 1").build().unwrap_err();
        assert!(matches!(err, Error::InvalidRequest { .. }) && !err.to_string().contains("Evil"), "{err}");
    }

    #[test]
    fn encodes_put_with_host_and_length() {
        let req = Request::put("http://10.0.0.5:8080/io?x=1", "on").build().unwrap();
        assert_eq!(wire(&req), "PUT /io?x=1 HTTP/1.1\r\nHost: 10.0.0.5:8080\r\nContent-Length: 2\r\n\r\non");
    }

    #[test]
    fn get_has_no_content_length_and_empty_put_has_zero() {
        let get = Request::get("http://h/").header("Accept", "*/*").build().unwrap();
        assert_eq!(wire(&get), "GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n");
        let put = Request::put("http://h/", "").build().unwrap();
        assert!(wire(&put).contains("Content-Length: 0\r\n"));
    }

    #[test]
    fn caller_host_and_matching_content_length_are_kept() {
        let req = Request::put("http://h/", "abc")
            .header("Host", "other")
            .header("Content-Length", "3")
            .build()
            .unwrap();
        assert_eq!(wire(&req), "PUT / HTTP/1.1\r\nHost: other\r\nContent-Length: 3\r\n\r\nabc");
    }

    /// The request line and fields are encoded once, by `build`; what depends on the body is
    /// written per send: a body swapped in later (as `get`/`put` do with their cached requests)
    /// gets its own length, and a streamed head replaces a length the caller set.
    #[test]
    fn the_length_follows_the_body_sent_not_the_one_built() {
        let mut req = Request::put("http://h/io", "").header("Accept", "*/*").build().unwrap();
        req.body = b"{\"value\":1}".to_vec();
        assert_eq!(
            wire(&req),
            "PUT /io HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nContent-Length: 11\r\n\r\n{\"value\":1}"
        );
        req.body = Vec::new();
        assert_eq!(wire(&req), "PUT /io HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n");
        let declared =
            Request::put("http://h/", "abc").header("Content-Length", "3").header("X", "y").build().unwrap();
        let mut head = Vec::new();
        declared.encode_streamed_head(&mut head, 70_000);
        assert_eq!(head, b"PUT / HTTP/1.1\r\nHost: h\r\nX: y\r\nContent-Length: 70000\r\n\r\n");
    }

    #[test]
    fn header_injection_is_impossible() {
        for (n, v) in [
            ("X", "a\r\nEvil: 1"),
            ("X", "a\nb"),
            ("X", "a\rb"),
            ("X", "a\0b"),
            ("X", "a\x7fb"),
            ("X\r\nEvil", "1"),
            ("X Y", "1"),
            ("", "1"),
            ("X:", "1"),
        ] {
            let r = Request::get("http://h/").header(n, v).build();
            assert!(matches!(r, Err(Error::InvalidRequest { .. })), "{n:?}: {v:?} accepted");
        }
        assert!(Request::get("http://h/").header("X", "tab\tok").build().is_ok());
    }

    #[test]
    fn invalid_methods_targets_and_lengths_are_rejected() {
        assert!(Method::new("GE T").is_err());
        assert!(Method::new("GET\r\n").is_err());
        assert!(Method::new("").is_err());
        assert!(Method::new("CONNECT").is_err());
        assert!(Method::new("PROPFIND").is_ok());
        assert!(check_target("/a b").is_err());
        assert!(check_target("/caf\u{e9}").is_err());
        assert!(check_target("*").is_ok());
        for bad in ["4", "+3", "0x3", "-3", ""] {
            let r = Request::put("http://h/", "abc").header("Content-Length", bad).build();
            assert!(matches!(r, Err(Error::InvalidRequest { .. })), "{bad:?}");
        }
        let r = Request::get("http://h/").header("Transfer-Encoding", "chunked").build();
        assert!(matches!(r, Err(Error::InvalidRequest { .. })));
    }

    #[test]
    fn idempotency_follows_rfc_9110() {
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE, Method::OPTIONS, Method::TRACE] {
            assert!(m.is_idempotent(), "{m:?}");
        }
        assert!(!Method::POST.is_idempotent());
        assert!(!Method::PATCH.is_idempotent());
        let post = Request::post("http://h/", "x").build().unwrap();
        assert!(!post.is_retryable());
        let post = Request::post("http://h/", "x").retryable(true).build().unwrap();
        assert!(post.is_retryable());
    }

    /// xorshift64*: deterministic pseudo-random values without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// A short string biased towards the bytes that break HTTP framing.
        fn nasty(&mut self) -> String {
            const POOL: &[&str] = &[
                "a", "Z", "0", "-", " ", "\t", "\r", "\n", "\0", ":", "/", "?", "%", "\u{7f}", "\u{e9}",
                "\r\n",
            ];
            // Half the strings are drawn from the harmless part of the pool only.
            let pool = if self.next().is_multiple_of(2) { &POOL[..6] } else { POOL };
            let len = self.next() % 8;
            (0..len).map(|_| pool[(self.next() % pool.len() as u64) as usize]).collect()
        }
    }

    /// Property: whatever the API is given, either it refuses (InvalidRequest / InvalidUrl), or
    /// the bytes it would send parse back as exactly one request with exactly the caller's
    /// method, target, headers and body: no injected header, no second request, no panic.
    #[test]
    fn no_input_the_api_accepts_can_inject_anything() {
        let mut rng = Rng(0x5eed);
        let mut accepted = 0;
        for _ in 0..60_000 {
            let method = format!("P{}", rng.nasty());
            let url = format!("http://10.0.0.5:8080/{}", rng.nasty());
            let headers: Vec<(String, String)> =
                (0..rng.next() % 3).map(|_| (format!("X{}", rng.nasty()), rng.nasty())).collect();
            let body = rng.nasty();
            let declared = match rng.next() % 3 {
                0 => Some(body.len().to_string()),
                1 => Some(rng.nasty()),
                _ => None,
            };
            let Ok(method) = Method::new(&method) else { continue };
            let mut b = Request::builder(method.clone(), &url).body(body.clone());
            for (n, v) in &headers {
                b = b.header(n, v);
            }
            if let Some(cl) = &declared {
                b = b.header("Content-Length", cl);
            }
            let req = match b.build() {
                Ok(r) => r,
                Err(Error::InvalidRequest { .. } | Error::InvalidUrl { .. }) => continue,
                Err(e) => panic!("unexpected error {e:?}"),
            };
            accepted += 1;
            let wire = wire(&req);
            let mut parsed_headers = [httparse::EMPTY_HEADER; 16];
            let mut parsed = httparse::Request::new(&mut parsed_headers);
            let len = match parsed.parse(wire.as_bytes()) {
                Ok(httparse::Status::Complete(len)) => len,
                other => panic!("{wire:?} does not parse: {other:?}"),
            };
            assert_eq!(parsed.method, Some(method.as_str()));
            assert_eq!(parsed.path, Some(req.url().target()));
            let names: Vec<String> = parsed.headers.iter().map(|h| h.name.to_ascii_lowercase()).collect();
            let mut expected: Vec<String> = vec!["host".into()];
            expected.extend(headers.iter().map(|(n, _)| n.to_ascii_lowercase()));
            // The caller's own Content-Length, or the one finwatch adds for a body.
            if declared.is_some() || !body.is_empty() || method.expects_content() {
                expected.push("content-length".into());
            }
            assert_eq!(names, expected, "{wire:?}");
            assert_eq!(&wire.as_bytes()[len..], body.as_bytes(), "the body is exactly what follows the head");
        }
        assert!(accepted > 1000, "the generator must exercise the accepting path too ({accepted})");
    }
}
