//! `http://host[:port]/path?query` — the only URLs finwatch speaks.
//!
//! Deliberately small: a device URL has a scheme, an authority and a target. Anything else
//! (`https`, user info, a malformed port) is rejected with [`Error::InvalidUrl`] instead of being
//! guessed at, because a guessed URL sends a command to the wrong place.

use crate::error::{Error, Result};

/// A parsed `http` URL: host, port and request target; an IPv6 host may name the interface
/// to reach it through (`[fe80::1%25eth0]`, RFC 6874). Every request carries one
/// ([`crate::Request::url`]); requests to the same host and port share connections and one
/// ordered queue.
///
/// ```
/// use finwatch::Url;
/// let url = Url::parse("http://[fe80::1]:8080/unico/v1/interface/io-state?ioId=25602#ignored")?;
/// assert_eq!(url.host(), "fe80::1");
/// assert_eq!(url.port(), 8080);
/// assert_eq!(url.authority(), "[fe80::1]:8080");
/// assert_eq!(url.target(), "/unico/v1/interface/io-state?ioId=25602");
/// # Ok::<(), finwatch::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host as written, without brackets for IPv6 (`10.0.0.5`, `::1`, `device.local`), an IPv6
    /// zone in the RFC 4007 text form (`fe80::1%eth0`).
    host: String,
    port: u16,
    /// The `Host` header value: the authority without user info, default port omitted.
    authority: String,
    /// Origin-form request target: `/path?query` (at least `/`).
    target: String,
    /// The pool key `host:port` (lowercase host), shared by every request to the device.
    key: std::sync::Arc<str>,
}

impl Url {
    /// Parses `http://host[:port][/path][?query][#fragment]`; the fragment is dropped
    /// (RFC 9110 §4.2.1: it is never sent). The target must be visible ASCII (percent-encode
    /// the rest). Refused with [`Error::InvalidUrl`] (or [`Error::InvalidRequest`] for the
    /// target): other schemes (`https` included), user info, a port that is not 1–65535, an
    /// invalid host or IPv6 literal.
    ///
    /// ```
    /// use finwatch::Url;
    /// let url = Url::parse("HTTP://Device.local?x=1")?;
    /// assert_eq!((url.host(), url.port(), url.target()), ("Device.local", 80, "/?x=1"));
    /// assert!(Url::parse("https://10.0.0.5/").is_err());
    /// assert!(Url::parse("http://admin@10.0.0.5/").is_err());
    /// assert!(Url::parse("http://10.0.0.5/a b").is_err());
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn parse(url: &str) -> Result<Url> {
        let bad = |reason| Error::InvalidUrl { url: url.to_string(), reason };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme (http://)"))?;
        if scheme.eq_ignore_ascii_case("https") {
            return Err(bad("https is not supported (finwatch speaks plain HTTP/1.1)"));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("unsupported scheme: only http is supported"));
        }
        let rest = rest.split('#').next().unwrap_or("");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad("user info in URLs is not supported"));
        }
        // An IPv6 literal may carry a zone (RFC 6874: `[fe80::1%25eth0]`; the RFC 4007 text form
        // `[fe80::1%eth0]` is taken too): a link-local device is reached through an interface.
        let mut zone: Option<&str> = None;
        let (host, port_str) = if let Some(after) = authority.strip_prefix('[') {
            let close = after.find(']').ok_or_else(|| bad("unterminated IPv6 literal"))?;
            let mut host = &after[..close];
            if let Some((addr, z)) = host.split_once('%') {
                let z = z.strip_prefix("25").unwrap_or(z);
                let valid = !z.is_empty()
                    && z != "."
                    && z != ".."
                    && z.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
                if !valid {
                    return Err(bad("invalid IPv6 zone (an interface name or index)"));
                }
                host = addr;
                zone = Some(z);
            }
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("invalid IPv6 literal"));
            }
            let tail = &after[close + 1..];
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or_else(|| bad("junk after IPv6 literal"))?),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        if !authority.starts_with('[') && !host.bytes().all(is_reg_name_byte) {
            return Err(bad("invalid character in host"));
        }
        let port = match port_str {
            None | Some("") => 80,
            Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("port out of range")),
                Ok(n) => n,
            },
            Some(_) => return Err(bad("invalid port")),
        };
        let target = if target.is_empty() {
            "/".to_string()
        } else if target.starts_with('?') {
            format!("/{target}")
        } else {
            target.to_string()
        };
        if crate::request::check_target(&target).is_err() {
            return Err(bad("invalid path or query: visible ASCII only (percent-encode the rest)"));
        }
        // The `Host` header never carries the zone: it means something only on this machine
        // (RFC 6874 §4; curl and browsers leave it out too).
        let bracketed = if authority.starts_with('[') { format!("[{host}]") } else { host.to_string() };
        let authority = if port == 80 { bracketed } else { format!("{bracketed}:{port}") };
        // `host:port`, the host lowercased (not the zone: interface names are case-sensitive)
        // and, if IPv6, bracketed: it also names the device in error messages and
        // `ConnectionInfo`, where `::1:80` would be ambiguous. The same address through two
        // interfaces is two devices.
        let zoned = |h: String| match zone {
            Some(z) => format!("{h}%{z}"),
            None => h,
        };
        let key = if authority.starts_with('[') {
            format!("[{}]:{port}", zoned(host.to_ascii_lowercase()))
        } else {
            format!("{}:{port}", host.to_ascii_lowercase())
        }
        .into();
        Ok(Url { host: zoned(host.to_string()), port, authority, target, key })
    }

    /// The host as written, without IPv6 brackets; an IPv6 zone follows a `%`, decoded
    /// (`http://[fe80::1%25eth0]/` has host `fe80::1%eth0`: the address on interface `eth0`).
    ///
    /// ```
    /// assert_eq!(finwatch::Url::parse("http://[::1]:9000/")?.host(), "::1");
    /// assert_eq!(finwatch::Url::parse("http://[fe80::1%25eth0]/")?.host(), "fe80::1%eth0");
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (80 when the URL names none).
    ///
    /// ```
    /// assert_eq!(finwatch::Url::parse("http://10.0.0.5/io")?.port(), 80);
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `Host` header value: host (bracketed if IPv6, without a zone) and port, the port
    /// omitted when it is 80.
    ///
    /// ```
    /// use finwatch::Url;
    /// assert_eq!(Url::parse("http://10.0.0.5:80/")?.authority(), "10.0.0.5");
    /// assert_eq!(Url::parse("http://[::1]:8080/")?.authority(), "[::1]:8080");
    /// assert_eq!(Url::parse("http://[fe80::1%25eth0]:8080/")?.authority(), "[fe80::1]:8080");
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The origin-form request target (`/path?query`, at least `/`), as it goes on the wire.
    ///
    /// ```
    /// use finwatch::Url;
    /// assert_eq!(Url::parse("http://10.0.0.5")?.target(), "/");
    /// assert_eq!(Url::parse("http://10.0.0.5/io?id=1#frag")?.target(), "/io?id=1");
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The pool key: requests with equal keys share connections and one ordered queue.
    pub(crate) fn host_key(&self) -> &std::sync::Arc<str> {
        &self.key
    }
}

/// RFC 3986 reg-name characters (unreserved, sub-delims, pct-encoded).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_with_port_path_and_query() {
        let u = Url::parse("http://10.0.0.5:8080/unico/v1/interface/io-state?ioId=25602").unwrap();
        assert_eq!(u.host(), "10.0.0.5");
        assert_eq!(u.port(), 8080);
        assert_eq!(u.authority(), "10.0.0.5:8080");
        assert_eq!(u.target(), "/unico/v1/interface/io-state?ioId=25602");
    }

    #[test]
    fn default_port_and_path() {
        let u = Url::parse("HTTP://Device.local").unwrap();
        assert_eq!(
            (u.host(), u.port(), u.authority(), u.target()),
            ("Device.local", 80, "Device.local", "/")
        );
        assert_eq!(&**u.host_key(), "device.local:80");
        assert_eq!(Url::parse("http://h?x=1").unwrap().target(), "/?x=1");
        assert_eq!(Url::parse("http://h/a#frag").unwrap().target(), "/a");
    }

    #[test]
    fn ipv6_literals() {
        let u = Url::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((u.host(), u.port(), u.authority()), ("::1", 9000, "[::1]:9000"));
        assert_eq!(&**u.host_key(), "[::1]:9000");
        assert_eq!(&**Url::parse("http://[FE80::1]/").unwrap().host_key(), "[fe80::1]:80");
        let u = Url::parse("http://[fe80::1]/").unwrap();
        assert_eq!((u.host(), u.port(), u.authority()), ("fe80::1", 80, "[fe80::1]"));
        assert!(Url::parse("http://[::1/x").is_err());
        assert!(Url::parse("http://[nothex]/").is_err());
        assert!(Url::parse("http://[::1]x/").is_err());
    }

    #[test]
    fn ipv6_zones() {
        let u = Url::parse("http://[FE80::1%25eth0]:8080/x").unwrap();
        assert_eq!((u.host(), u.port(), u.authority()), ("FE80::1%eth0", 8080, "[FE80::1]:8080"));
        assert_eq!(&**u.host_key(), "[fe80::1%eth0]:8080");
        // The RFC 4007 text form, as `ip` prints it.
        let u = Url::parse("http://[fe80::1%eth0]/x").unwrap();
        assert_eq!(
            (u.host(), u.authority(), &*u.host_key().clone()),
            ("fe80::1%eth0", "[fe80::1]", "[fe80::1%eth0]:80")
        );
        // The zone keeps its case; the same address on another interface is another device.
        assert_eq!(&**Url::parse("http://[fe80::1%25ETH0]/").unwrap().host_key(), "[fe80::1%ETH0]:80");
        assert_eq!(Url::parse("http://[fe80::1%253]/").unwrap().host(), "fe80::1%3");
        for bad in [
            "http://[fe80::1%25]/",
            "http://[fe80::1%]/",
            "http://[fe80::1%25eth/0]/",
            "http://[fe80::1%25..]/",
            "http://[fe80::1%25e%20x]/",
            "http://[10.0.0.5%25eth0]/",
            "http://fe80::1%25eth0/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rejects_what_it_cannot_speak() {
        for bad in [
            "https://10.0.0.5/",
            "ftp://h/",
            "10.0.0.5/io",
            "http:///path",
            "http://user@h/",
            "http://h:0/",
            "http://h:65536/",
            "http://h:80x/",
            "http://h h/",
            "http://h/a b",
            "http://h/a\r\nX: y",
            "http://h/\0",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
