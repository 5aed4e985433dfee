//! For code that already speaks [`http`]'s `Request` and `Response`. The feature is off by
//! default: without it, finwatch does not depend on `http`.
//!
//! | from | to | with | fails when |
//! | --- | --- | --- | --- |
//! | `http::Request<B>` | [`Request`] | `Request::try_from` | see below |
//! | [`Response`] | `http::Response<Vec<u8>>` | `http::Response::try_from` | status outside `100..=999` |
//! | `http::Method` | [`Method`] | `Method::try_from` | `CONNECT` |
//! | [`Method`] | `http::Method` | `http::Method::from` | never |
//! | [`Response`] | `StatusCode`, `Version`, `HeaderMap` | [`ResponseExt`] | as the response |
//! | `http::Request<B>` on a [`Client`] | `http::Response<Vec<u8>>` | [`HttpClientExt::send_http`] | as both |
//!
//! The conversions are strict, in both directions: a part that finwatch cannot send or represent
//! exactly is an error, never dropped, rewritten or guessed at, because a command that goes out
//! differently from how it was written is worse than one that does not go out.
//!
//! An `http::Request` is refused with
//! - [`Error::InvalidUrl`] when its URI is not an absolute `http://host[:port]/path?query` (a
//!   relative URI such as `/io` has no device to go to; `https` is not supported);
//! - [`Error::InvalidRequest`] when its version is not HTTP/1.1 (the default of
//!   `http::Request::builder`; finwatch speaks HTTP/1.1 only), its method is `CONNECT`, a header
//!   value is not UTF-8, or finwatch's own checks refuse it (`Transfer-Encoding`, a
//!   `Content-Length` that disagrees with the body, …; see [`crate::RequestBuilder::header`]).
//!
//! Its body is any [`IntoRequestBody`]: `()`, `Vec<u8>`, `String`, `&[u8]`, `&str`, … (map other
//! body types first: `request.map(Vec::from)` for `bytes::Bytes`). finwatch's per-request settings
//! travel as a [`RequestOptions`] extension; other extensions are not looked at. A header value
//! marked with `HeaderValue::set_sensitive` becomes a
//! [`crate::RequestBuilder::sensitive_header`]: redacted in the request's `Debug`.
//!
//! An `http::Response` made from a [`Response`] has its status, version (HTTP/1.0 or HTTP/1.1),
//! header fields (names lowercased, as `http` stores them; values as received, byte for byte;
//! repeated fields kept in order; those [`crate::is_sensitive_header`] matches marked sensitive)
//! and body. Its extensions hold the [`Meta`] (which connection
//! carried it, retries) and, if the device sent one, the [`ReasonPhrase`]. Converting fails with
//! [`Error::MalformedResponse`] only for a status code that `http` cannot represent: the parser
//! accepts any three digits, so a device answering `099` gets this error. That error says the
//! device may have acted on the request, as it did: it answered.
//!
//! ```
//! use finwatch::http_interop::HttpClientExt as _;
//! # let base = finwatch::__doc_device();
//! let mut client = finwatch::Client::new()?;
//! let put = http::Request::put(format!("{base}/unico/v1/interface/io"))
//!     .header(http::header::CONTENT_TYPE, "application/json")
//!     .body(r#"{"ioId":25602,"value":1}"#)?;
//! let resp: http::Response<Vec<u8>> = client.send_http(put)?;
//! assert_eq!(resp.status(), http::StatusCode::OK);
//! assert_eq!(resp.headers()["content-type"], "application/json");
//! assert_eq!(resp.body(), br#"{"value":1}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`ResponseExt`]: crate::http_interop::ResponseExt
//! [`HttpClientExt::send_http`]: crate::http_interop::HttpClientExt::send_http
//! [`IntoRequestBody`]: crate::http_interop::IntoRequestBody
//! [`RequestOptions`]: crate::http_interop::RequestOptions
//! [`ReasonPhrase`]: crate::http_interop::ReasonPhrase

use std::borrow::Cow;
use std::time::Duration;

use crate::{Client, Error, Meta, Method, Request, Response, Result};

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Client {}
    impl Sealed for crate::Response {}
}

/// A request body type that an `http::Request` can carry into a finwatch [`Request`].
///
/// Implemented for `()` (no body), `Vec<u8>`, `String`, `&[u8]`, `&str`, `Box<[u8]>`,
/// `Cow<[u8]>`, `Cow<str>`, `[u8; N]` and `&[u8; N]`; implement it for your own body types, or
/// map the request first (`request.map(Vec::from)` for `bytes::Bytes`). finwatch sends bodies
/// with a `Content-Length`, so the body is one buffer.
///
/// ```
/// use finwatch::http_interop::IntoRequestBody;
/// assert_eq!(().into_request_body(), b"");
/// assert_eq!("on".into_request_body(), b"on");
/// assert_eq!(vec![1, 2].into_request_body(), [1, 2]);
/// ```
pub trait IntoRequestBody {
    /// The body's bytes.
    ///
    /// ```
    /// use finwatch::http_interop::IntoRequestBody;
    /// assert_eq!(String::from("1").into_request_body(), b"1");
    /// ```
    fn into_request_body(self) -> Vec<u8>;
}

impl IntoRequestBody for () {
    fn into_request_body(self) -> Vec<u8> {
        Vec::new()
    }
}

macro_rules! into_vec_bodies {
    ($($(#[$lt:lifetime])? $t:ty),* $(,)?) => {$(
        impl<$($lt)?> IntoRequestBody for $t {
            fn into_request_body(self) -> Vec<u8> {
                self.into()
            }
        }
    )*};
}

into_vec_bodies!(Vec<u8>, String, Box<[u8]>, #['a] &'a [u8], #['a] &'a str, #['a] Cow<'a, [u8]>);

impl IntoRequestBody for Cow<'_, str> {
    fn into_request_body(self) -> Vec<u8> {
        self.into_owned().into_bytes()
    }
}

impl<const N: usize> IntoRequestBody for [u8; N] {
    fn into_request_body(self) -> Vec<u8> {
        self.to_vec()
    }
}

impl<const N: usize> IntoRequestBody for &[u8; N] {
    fn into_request_body(self) -> Vec<u8> {
        self.to_vec()
    }
}

/// finwatch's per-request settings for an `http::Request`, carried in its extensions: the
/// request's deadline ([`crate::RequestBuilder::timeout`]) and whether a non-idempotent request
/// may be retried ([`crate::RequestBuilder::retryable`]). Without it, the client's defaults
/// apply.
///
/// ```
/// use std::time::Duration;
/// use finwatch::http_interop::RequestOptions;
/// let post = http::Request::post("http://10.0.0.5/unico/v1/interface/io")
///     .extension(RequestOptions::new().timeout(Duration::from_millis(50)).retryable(true))
///     .body("1")?;
/// let req = finwatch::Request::try_from(post)?;
/// assert!(req.is_retryable());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct RequestOptions {
    timeout: Option<Duration>,
    retryable: bool,
}

impl RequestOptions {
    /// No deadline of its own, not marked retryable.
    ///
    /// ```
    /// let opts = finwatch::http_interop::RequestOptions::new();
    /// assert_eq!(opts, Default::default());
    /// ```
    pub fn new() -> RequestOptions {
        RequestOptions::default()
    }

    /// A deadline for the whole exchange, as [`crate::RequestBuilder::timeout`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// let opts = finwatch::http_interop::RequestOptions::new().timeout(Duration::from_millis(20));
    /// assert_eq!(opts.get_timeout(), Some(Duration::from_millis(20)));
    /// ```
    pub fn timeout(self, timeout: Duration) -> RequestOptions {
        RequestOptions { timeout: Some(timeout), ..self }
    }

    /// Marks a non-idempotent request as safe to send twice, as
    /// [`crate::RequestBuilder::retryable`].
    ///
    /// ```
    /// let opts = finwatch::http_interop::RequestOptions::new().retryable(true);
    /// assert!(opts.is_retryable());
    /// ```
    pub fn retryable(self, retryable: bool) -> RequestOptions {
        RequestOptions { retryable, ..self }
    }

    /// The deadline set with [`RequestOptions::timeout`].
    ///
    /// ```
    /// assert_eq!(finwatch::http_interop::RequestOptions::new().get_timeout(), None);
    /// ```
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether [`RequestOptions::retryable`] marked the request.
    ///
    /// ```
    /// assert!(!finwatch::http_interop::RequestOptions::new().is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// The reason phrase of a response (`OK` in `HTTP/1.1 200 OK`), in the extensions of an
/// `http::Response` converted from a [`Response`] when the device sent a non-empty one. Never
/// rely on it for decisions; it is for logs.
///
/// ```
/// use finwatch::http_interop::ReasonPhrase;
/// # let device = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let url = format!("http://{}/", device.local_addr()?);
/// # std::thread::spawn(move || -> std::io::Result<()> {
/// #     use std::io::{Read as _, Write as _};
/// #     let (mut s, _) = device.accept()?;
/// #     let _ = s.read(&mut [0; 4096])?;
/// #     s.write_all(b"HTTP/1.1 503 Busy Writing Flash\r\nContent-Length: 0\r\n\r\n")
/// # });
/// let resp = finwatch::Client::new()?.get(&url)?;
/// let resp = http::Response::try_from(resp)?;
/// assert_eq!(resp.status(), 503);
/// assert_eq!(resp.extensions().get::<ReasonPhrase>().unwrap().as_str(), "Busy Writing Flash");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonPhrase(Box<str>);

impl ReasonPhrase {
    /// The phrase.
    ///
    /// ```
    /// use finwatch::http_interop::ReasonPhrase;
    /// # let base = finwatch::__doc_device();
    /// let resp = http::Response::try_from(finwatch::Client::new()?.get(&base)?)?;
    /// let phrase = resp.extensions().get::<ReasonPhrase>().map(|r| r.as_str());
    /// assert_eq!(phrase, Some("OK"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `http::Request<B>` → [`Request`]: method, absolute `http://` URI, header fields in order,
/// body, and the [`RequestOptions`] extension if present. See the [module docs](self) for what
/// is refused.
///
/// ```
/// let req = http::Request::get("http://10.0.0.5:8080/unico/v1/interface/io-state?ioId=25602")
///     .header("Accept", "application/json")
///     .body(())?;
/// let req = finwatch::Request::try_from(req)?;
/// assert_eq!(req.method(), &finwatch::Method::GET);
/// assert_eq!(req.url().target(), "/unico/v1/interface/io-state?ioId=25602");
///
/// // A relative URI names no device.
/// let relative = http::Request::get("/unico/v1/interface/io").body(())?;
/// assert!(matches!(finwatch::Request::try_from(relative), Err(finwatch::Error::InvalidUrl { .. })));
/// // finwatch speaks HTTP/1.1 only.
/// let h2 = http::Request::get("http://10.0.0.5/").version(http::Version::HTTP_2).body(())?;
/// assert!(matches!(finwatch::Request::try_from(h2), Err(finwatch::Error::InvalidRequest { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<B: IntoRequestBody> TryFrom<http::Request<B>> for Request {
    type Error = Error;

    fn try_from(request: http::Request<B>) -> Result<Request> {
        let (parts, body) = request.into_parts();
        if parts.version != http::Version::HTTP_11 {
            return Err(Error::invalid_request(format!(
                "{:?} requests are not supported (finwatch speaks HTTP/1.1 only)",
                parts.version
            )));
        }
        let method = Method::try_from(&parts.method)?;
        let url = parts.uri.to_string();
        if parts.uri.scheme().is_none() {
            return Err(Error::InvalidUrl {
                // `user:pw@host:80` is an authority-form URI, without a scheme.
                url: crate::url::redact_userinfo(&url).into_owned(),
                reason: "relative URI: finwatch needs an absolute http://host[:port]/path URI",
            });
        }
        let mut builder = Request::builder(method, &url);
        for (name, value) in &parts.headers {
            let value_is_sensitive = value.is_sensitive();
            let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
                Error::invalid_request(format!(
                    "header {name} is not UTF-8 (finwatch header values are text)"
                ))
            })?;
            // `http`'s mark for a secret value (`HeaderValue::set_sensitive`, HPACK's "never
            // indexed", RFC 7541 §7.1.3) carries over: the value stays out of the `Debug`.
            builder = if value_is_sensitive {
                builder.sensitive_header(name.as_str(), value)
            } else {
                builder.header(name.as_str(), value)
            };
        }
        if let Some(options) = parts.extensions.get::<RequestOptions>() {
            if let Some(timeout) = options.timeout {
                builder = builder.timeout(timeout);
            }
            builder = builder.retryable(options.retryable);
        }
        builder.body(body.into_request_body()).build()
    }
}

/// [`Response`] → `http::Response<Vec<u8>>`: status, version, header fields, body, with the
/// [`Meta`] and [`ReasonPhrase`] as extensions. Fails only for a status code outside
/// `100..=999` ([`Error::MalformedResponse`]).
///
/// ```
/// # let device = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let url = format!("http://{}/io-state", device.local_addr()?);
/// # std::thread::spawn(move || -> std::io::Result<()> {
/// #     use std::io::{Read as _, Write as _};
/// #     let (mut s, _) = device.accept()?;
/// #     let _ = s.read(&mut [0; 4096])?;
/// #     s.write_all(b"HTTP/1.0 200 OK\r\nX-Io: 1\r\nX-Io: 2\r\nContent-Length: 2\r\n\r\non")
/// # });
/// let resp = finwatch::Client::new()?.get(&url)?;
/// let resp = http::Response::try_from(resp)?;
/// assert_eq!(resp.version(), http::Version::HTTP_10);
/// let io: Vec<_> = resp.headers().get_all("x-io").iter().collect();
/// assert_eq!(io, ["1", "2"]);
/// assert!(!resp.extensions().get::<finwatch::Meta>().unwrap().reused);
/// assert_eq!(resp.into_body(), b"on");
///
/// // `Response::default()` is an empty buffer with status 0: not a response.
/// assert!(http::Response::try_from(finwatch::Response::default()).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl TryFrom<Response> for http::Response<Vec<u8>> {
    type Error = Error;

    fn try_from(response: Response) -> Result<http::Response<Vec<u8>>> {
        let status = response.status_code()?;
        let headers = response.header_map()?;
        let mut out = http::Response::new(Vec::new());
        *out.status_mut() = status;
        *out.version_mut() = response.http_version();
        *out.headers_mut() = headers;
        if !response.reason().is_empty() {
            out.extensions_mut().insert(ReasonPhrase(response.reason().into()));
        }
        out.extensions_mut().insert::<Meta>(response.meta());
        *out.body_mut() = response.into_body();
        Ok(out)
    }
}

/// `http::Method` → [`Method`]; fails for `CONNECT`, which finwatch does not support (every
/// other `http::Method` is a token, so it is a valid finwatch method).
///
/// ```
/// use finwatch::Method;
/// assert_eq!(Method::try_from(&http::Method::PUT)?, Method::PUT);
/// let propfind = http::Method::from_bytes(b"PROPFIND")?;
/// assert_eq!(Method::try_from(&propfind)?.as_str(), "PROPFIND");
/// assert!(Method::try_from(&http::Method::CONNECT).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl TryFrom<&http::Method> for Method {
    type Error = Error;

    fn try_from(method: &http::Method) -> Result<Method> {
        // The common methods without an allocation.
        Ok(match method.as_str() {
            "GET" => Method::GET,
            "HEAD" => Method::HEAD,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            "OPTIONS" => Method::OPTIONS,
            "PATCH" => Method::PATCH,
            "TRACE" => Method::TRACE,
            other => Method::new(other)?,
        })
    }
}

/// `http::Method` → [`Method`], as for `&http::Method`.
///
/// ```
/// assert_eq!(finwatch::Method::try_from(http::Method::GET)?, finwatch::Method::GET);
/// # Ok::<(), finwatch::Error>(())
/// ```
impl TryFrom<http::Method> for Method {
    type Error = Error;

    fn try_from(method: http::Method) -> Result<Method> {
        Method::try_from(&method)
    }
}

/// [`Method`] → `http::Method`; never fails: a finwatch method is an RFC 9110 token, and `http`
/// accepts every token.
///
/// ```
/// let m = finwatch::Method::new("PROPFIND")?;
/// assert_eq!(http::Method::from(&m).as_str(), "PROPFIND");
/// assert_eq!(http::Method::from(&finwatch::Method::PUT), http::Method::PUT);
/// # Ok::<(), finwatch::Error>(())
/// ```
impl From<&Method> for http::Method {
    fn from(method: &Method) -> http::Method {
        http::Method::from_bytes(method.as_str().as_bytes())
            .expect("a finwatch method is an RFC 9110 token, which http::Method accepts")
    }
}

/// [`Method`] → `http::Method`, as for `&Method`.
///
/// ```
/// assert_eq!(http::Method::from(finwatch::Method::DELETE), http::Method::DELETE);
/// ```
impl From<Method> for http::Method {
    fn from(method: Method) -> http::Method {
        http::Method::from(&method)
    }
}

/// The parts of a [`Response`] as `http` types, without consuming it. Sealed: implemented for
/// [`Response`] only.
///
/// ```
/// use finwatch::http_interop::ResponseExt as _;
/// # let device = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let url = format!("http://{}/", device.local_addr()?);
/// # std::thread::spawn(move || -> std::io::Result<()> {
/// #     use std::io::{Read as _, Write as _};
/// #     let (mut s, _) = device.accept()?;
/// #     let _ = s.read(&mut [0; 4096])?;
/// #     s.write_all(b"HTTP/1.1 204 No Content\r\nETag: \"7\"\r\n\r\n")
/// # });
/// let resp = finwatch::Client::new()?.get(&url)?;
/// assert_eq!(resp.status_code()?, http::StatusCode::NO_CONTENT);
/// assert_eq!(resp.http_version(), http::Version::HTTP_11);
/// assert_eq!(resp.header_map()?[http::header::ETAG], "\"7\"");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait ResponseExt: sealed::Sealed {
    /// The status as an `http::StatusCode`; [`Error::MalformedResponse`] outside `100..=999`.
    ///
    /// ```
    /// use finwatch::http_interop::ResponseExt as _;
    /// // An empty response buffer has status 0.
    /// let err = finwatch::Response::default().status_code().unwrap_err();
    /// assert!(matches!(err, finwatch::Error::MalformedResponse { .. }));
    /// ```
    fn status_code(&self) -> Result<http::StatusCode>;

    /// `HTTP_10` or `HTTP_11`.
    ///
    /// ```
    /// use finwatch::http_interop::ResponseExt as _;
    /// // An empty response buffer has minor version 0.
    /// assert_eq!(finwatch::Response::default().http_version(), http::Version::HTTP_10);
    /// ```
    fn http_version(&self) -> http::Version;

    /// The header fields as an `http::HeaderMap`: names lowercased, values byte for byte,
    /// repeated fields in order; the values of fields that carry credentials
    /// ([`crate::is_sensitive_header`]: `Set-Cookie`, …) are marked sensitive, so the map's
    /// `Debug` does not show them. [`Error::MalformedResponse`] for a field `http` cannot hold
    /// (none that finwatch's parser accepts).
    ///
    /// ```
    /// use finwatch::http_interop::ResponseExt as _;
    /// assert!(finwatch::Response::default().header_map()?.is_empty());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    fn header_map(&self) -> Result<http::HeaderMap>;
}

impl ResponseExt for Response {
    fn status_code(&self) -> Result<http::StatusCode> {
        http::StatusCode::from_u16(self.status())
            .map_err(|_| Error::malformed(format!("status code {:03} is outside 100..=999", self.status())))
    }

    fn http_version(&self) -> http::Version {
        match self.version() {
            "HTTP/1.1" => http::Version::HTTP_11,
            _ => http::Version::HTTP_10,
        }
    }

    fn header_map(&self) -> Result<http::HeaderMap> {
        let mut map = http::HeaderMap::with_capacity(self.headers().count());
        for (name, value) in self.headers() {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::malformed(format!("header name {name:?} is not a token")))?;
            let mut value = http::HeaderValue::from_bytes(value)
                .map_err(|_| Error::malformed(format!("header {name} has a value http cannot hold")))?;
            // `Set-Cookie` and the like stay out of the `HeaderMap`'s `Debug` too.
            value.set_sensitive(crate::is_sensitive_header(name.as_str()));
            map.try_append(name, value).map_err(|_| Error::malformed("too many header fields"))?;
        }
        Ok(map)
    }
}

/// Sending `http::Request`s with a finwatch [`Client`]. Sealed: implemented for [`Client`] only.
///
/// ```
/// use finwatch::http_interop::HttpClientExt as _;
/// # let base = finwatch::__doc_device();
/// let mut client = finwatch::Client::new()?;
/// let resp = client.send_http(http::Request::head(&base).body(())?)?;
/// assert_eq!(resp.headers()[http::header::CONTENT_LENGTH], "11");
/// assert!(resp.body().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait HttpClientExt: sealed::Sealed {
    /// Converts `request` ([`Request::try_from`]), sends it with [`Client::send`], and converts
    /// the response (`http::Response::try_from`). Errors are finwatch's, so
    /// [`Error::may_have_been_processed`] still tells whether the device may have acted on the
    /// command; a conversion error before sending is `false`, after the response `true`.
    ///
    /// ```
    /// use finwatch::http_interop::HttpClientExt as _;
    /// # let base = finwatch::__doc_device();
    /// let mut client = finwatch::Client::new()?;
    /// let get = http::Request::get(format!("{base}/unico/v1/interface/io-state?ioId=25602"))
    ///     .body(())?;
    /// let state = client.send_http(get)?;
    /// assert!(state.status().is_success());
    ///
    /// // Refused before anything is sent.
    /// let err = client.send_http(http::Request::get("/io-state").body(())?).unwrap_err();
    /// assert!(!err.may_have_been_processed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn send_http<B: IntoRequestBody>(&mut self, request: http::Request<B>)
    -> Result<http::Response<Vec<u8>>>;
}

impl HttpClientExt for Client {
    fn send_http<B: IntoRequestBody>(
        &mut self,
        request: http::Request<B>,
    ) -> Result<http::Response<Vec<u8>>> {
        let request = Request::try_from(request)?;
        http::Response::try_from(self.send(request)?)
    }
}
