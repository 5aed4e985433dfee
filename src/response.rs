//! Responses as the caller sees them.

use std::ops::Range;

/// An HTTP response: status, header fields, body, and which connection carried it.
///
/// `Response::default()` is an empty response (status 0), a buffer for [`crate::Client::execute`].
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub(crate) minor_version: u8,
    pub(crate) status: u16,
    /// The final response head, as received (obs-fold already replaced by spaces).
    pub(crate) head: Vec<u8>,
    pub(crate) reason: Range<usize>,
    pub(crate) headers: Vec<(Range<usize>, Range<usize>)>,
    pub(crate) body: Vec<u8>,
    pub(crate) meta: Meta,
}

/// How the response travelled; for diagnosis and the `ctl` tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// The id of the connection that carried the final attempt (as in the debug log).
    pub connection_id: u64,
    /// Whether that connection had carried an earlier exchange.
    pub reused: bool,
    /// How many times the request was retried on a fresh connection after a lost one.
    pub retries: u32,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase (may be empty; never rely on it).
    pub fn reason(&self) -> &str {
        std::str::from_utf8(&self.head[self.reason.clone()]).unwrap_or("")
    }

    /// `"HTTP/1.1"` or `"HTTP/1.0"`.
    pub fn version(&self) -> &'static str {
        if self.minor_version == 0 { "HTTP/1.0" } else { "HTTP/1.1" }
    }

    /// The first value of a header field (case-insensitive name), if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        let (_, v) =
            self.headers.iter().find(|(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name.as_bytes()))?;
        std::str::from_utf8(&self.head[v.clone()]).ok()
    }

    /// All values of a header field, as raw bytes.
    pub fn header_bytes<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.head[v.clone()])
    }

    /// All header fields in order, as (name, raw value).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers.iter().map(|(n, v)| {
            // Names were validated as tokens by the parser, so they are ASCII.
            (std::str::from_utf8(&self.head[n.clone()]).unwrap_or(""), &self.head[v.clone()])
        })
    }

    /// The body, decoded from the transfer coding.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Takes ownership of the body.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// How the response travelled.
    pub fn meta(&self) -> Meta {
        self.meta
    }
}
