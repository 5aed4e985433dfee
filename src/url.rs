//! `http://host[:port]/path?query` — the only URLs finwatch speaks.
//!
//! Deliberately small: a device URL has a scheme, an authority and a target. Anything else
//! (`https`, user info, a malformed port, a host the resolver would read as a number other than a
//! dotted quad) is rejected with [`Error::InvalidUrl`] instead of being guessed at, because a
//! guessed URL sends a command to the wrong place. The module also owns how a URL is shown in an
//! error: never with the password of its user info ([`redact_userinfo`]).

use std::borrow::Cow;

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
    /// The pool key `host:port` (lowercase host), shared by every request to the device, its
    /// hash computed once here rather than at every submit.
    key: crate::proto::hash::HostKey,
    /// `https`: the connection is TLS.
    tls: bool,
}

impl Url {
    /// Parses `http://host[:port][/path][?query][#fragment]`; the fragment is dropped
    /// (RFC 9110 §4.2.1: it is never sent). The target must be visible ASCII (percent-encode
    /// the rest). Refused with [`Error::InvalidUrl`] (or [`Error::InvalidRequest`] for the
    /// target): other schemes (`https` included), user info, a port that is not 1–65535, an
    /// invalid host or IPv6 literal, and a host that looks like an IPv4 address but is not a
    /// dotted quad of four decimal octets 0–255 without leading zeros.
    ///
    /// That last rule is there because the system resolver (`getaddrinfo`, through
    /// `inet_aton`) reads many other forms as an address: `10.0.5` is 10.0.0.5, `127.1` is
    /// 127.0.0.1, `0x7f.0.0.1` and `2130706433` too, and `192.168.001.010` is 192.168.1.8
    /// (a leading `0` is octal). A typo would command another device, and an allow-list that
    /// checks [`Url::host`] would be bypassed. The trigger is the URL Standard's (WHATWG URL
    /// §3.5 "ends in a number"): the host's last label, after one trailing dot, is decimal
    /// digits, or `0x`/`0X` and hex digits (none included). Every form glibc reads as a number
    /// is such a host; a real name never is (RFC 3696 §2: a top-level domain is not
    /// all-numeric), so `device-01`, `cafe`, `deadbeef.local` and `123.example.com` go to the
    /// resolver as before. Such a host is taken only as RFC 3986 §3.2.2 `IPv4address`: exactly
    /// four decimal octets 0–255, no leading zeros (`0` itself is one), no trailing dot. IPv6
    /// literals are parsed by the standard library, which is as strict (`[::ffff:10.0.5]` is
    /// refused).
    ///
    /// The URL in the error never shows the password of user info ([`Error::InvalidUrl`]).
    ///
    /// ```
    /// use finwatch::Url;
    /// let url = Url::parse("HTTP://Device.local?x=1")?;
    /// assert_eq!((url.host(), url.port(), url.target()), ("Device.local", 80, "/?x=1"));
    /// assert_eq!(Url::parse("https://10.0.0.5/").is_ok(), cfg!(feature = "tls"));
    /// assert!(Url::parse("http://admin@10.0.0.5/").is_err());
    /// assert!(Url::parse("http://10.0.0.5/a b").is_err());
    /// // Read by the resolver as 10.0.0.5 and 192.168.1.8: refused.
    /// assert!(Url::parse("http://10.0.5/").is_err());
    /// assert!(Url::parse("http://192.168.001.010/").is_err());
    /// assert_eq!(Url::parse("http://192.168.1.8/")?.host(), "192.168.1.8");
    /// # Ok::<(), finwatch::Error>(())
    /// ```
    pub fn parse(url: &str) -> Result<Url> {
        let bad = |reason| Error::InvalidUrl { url: redact_userinfo(url).into_owned(), reason };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme (http://)"))?;
        let tls = if scheme.eq_ignore_ascii_case("https") {
            if !cfg!(feature = "tls") {
                return Err(bad("https needs finwatch's `tls` feature"));
            }
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(bad("unsupported scheme: only http and https are supported"));
        };
        let default_port = if tls { 443 } else { 80 };
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
        if !authority.starts_with('[') && ends_in_a_number(host) && !is_dotted_quad(host) {
            let mut labels = host.strip_suffix('.').unwrap_or(host).split('.');
            return Err(bad(if labels.all(|l| l.is_empty() || is_numeric_label(l)) {
                "host looks like an IPv4 address but is not a dotted quad of four decimal octets 0-255 \
                 without leading zeros: the system resolver reads such a host as a number (a leading 0 \
                 as octal, 0x as hex, missing octets as zeros), which reaches another device"
            } else {
                "host ends in a number, as only an IPv4 address does (no top-level domain is \
                 numeric), but is not a dotted quad of four decimal octets 0-255 without leading zeros"
            }));
        }
        let port = match port_str {
            None | Some("") => default_port,
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
        let authority = if port == default_port { bracketed } else { format!("{bracketed}:{port}") };
        // `host:port`, the host lowercased (not the zone: interface names are case-sensitive)
        // and, if IPv6, bracketed: it also names the device in error messages and
        // `ConnectionInfo`, where `::1:80` would be ambiguous. The same address through two
        // interfaces is two devices.
        let zoned = |h: String| match zone {
            Some(z) => format!("{h}%{z}"),
            None => h,
        };
        // Over TLS the key says so: `https://host:port` is another device than `host:port` (its
        // connections are not interchangeable with plain ones).
        let scheme = if tls { "https://" } else { "" };
        let key = if authority.starts_with('[') {
            format!("{scheme}[{}]:{port}", zoned(host.to_ascii_lowercase()))
        } else {
            format!("{scheme}{}:{port}", host.to_ascii_lowercase())
        };
        let key = crate::proto::hash::HostKey::new(key.into());
        Ok(Url { host: zoned(host.to_string()), port, authority, target, key, tls })
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
    pub(crate) fn host_key(&self) -> &crate::proto::hash::HostKey {
        &self.key
    }

    /// Whether the URL is `https` (TLS; needs the `tls` feature).
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

/// The URL as it can be parsed again: scheme, host (an IPv6 one bracketed, its zone as `%25`),
/// the port unless it is the scheme's default, and the target; no fragment. `Url::parse` of it
/// gives an equal `Url`.
///
/// ```
/// use finwatch::Url;
/// let url: Url = "HTTP://Device.local:80?x=1#top".parse()?;
/// assert_eq!(url.to_string(), "http://Device.local/?x=1");
/// let url: Url = "http://[fe80::1%eth0]:8080/io".parse()?;
/// assert_eq!(url.to_string(), "http://[fe80::1%25eth0]:8080/io");
/// assert_eq!(url.to_string().parse::<Url>()?, url);
/// # Ok::<(), finwatch::Error>(())
/// ```
impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, default_port) = if self.tls { ("https", 443) } else { ("http", 80) };
        write!(f, "{scheme}://")?;
        if self.host.contains(':') {
            match self.host.split_once('%') {
                Some((addr, zone)) => write!(f, "[{addr}%25{zone}]")?,
                None => write!(f, "[{}]", self.host)?,
            }
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != default_port {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.target)
    }
}

/// [`Url::parse`].
///
/// ```
/// let url: finwatch::Url = "http://10.0.0.5:8080/io".parse()?;
/// assert_eq!((url.host(), url.port()), ("10.0.0.5", 8080));
/// assert!("ftp://10.0.0.5/".parse::<finwatch::Url>().is_err());
/// # Ok::<(), finwatch::Error>(())
/// ```
impl std::str::FromStr for Url {
    type Err = Error;

    fn from_str(url: &str) -> Result<Url> {
        Url::parse(url)
    }
}

/// RFC 3986 reg-name characters (unreserved, sub-delims, pct-encoded).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)
}

/// Whether a URL parser would take `host` for an IPv4 address: the URL Standard's "ends in a
/// number" (WHATWG URL §3.5): its last label, after one trailing dot, is numeric.
fn ends_in_a_number(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.rsplit('.').next().is_some_and(is_numeric_label)
}

/// A label `inet_aton` or the URL Standard's IPv4 number parser reads as a number: decimal
/// digits (octal with a leading `0`), or `0x`/`0X` and hex digits, none included (the URL
/// Standard reads a bare `0x` as 0).
fn is_numeric_label(label: &str) -> bool {
    match label.strip_prefix("0x").or_else(|| label.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// RFC 3986 §3.2.2 `IPv4address`: four `dec-octet`s (0–255, no leading zeros), nothing else.
fn is_dotted_quad(host: &str) -> bool {
    let dec_octet = |label: &str| match label.as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => {
            rest.len() <= 2 && rest.iter().all(u8::is_ascii_digit) && label.parse::<u8>().is_ok()
        }
        _ => false,
    };
    let mut labels = 0;
    host.split('.').all(|label| {
        labels += 1;
        dec_octet(label)
    }) && labels == 4
}

/// `url` as it may be shown in an error or a log line: the password of its user info replaced
/// by `***` (`http://admin:***@10.0.0.5/`), the user name kept (it says which credentials were
/// meant, and is not a secret). finwatch refuses user info, so this is for error messages only.
///
/// A password may hold `/`, `?`, `#` or `@` unencoded, and then no parser can tell where the
/// authority ends; so the rule is wide rather than exact: everything from the first `:` after
/// `://` (after the `]` of an IPv6 literal) to the last `@` of the URL is replaced. A URL with
/// an `@` in its path and a port (`http://h:8080/a@b`) loses its port and path in the message
/// (`http://h:***@b`); it never shows a password. Without `://`, the rule applies to the whole
/// string.
pub(crate) fn redact_userinfo(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let Some(at) = rest.rfind('@') else { return Cow::Borrowed(url) };
    let from = match rest.strip_prefix('[').and_then(|r| r.find(']')) {
        Some(close) if close + 1 < at => close + 2,
        _ => 0,
    };
    match rest[from..at].find(':') {
        Some(colon) => {
            let colon = start + from + colon;
            Cow::Owned(format!("{}:***{}", &url[..colon], &url[start + at..]))
        }
        None => Cow::Borrowed(url),
    }
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
        assert_eq!(u.host_key().as_str(), "device.local:80");
        assert_eq!(Url::parse("http://h?x=1").unwrap().target(), "/?x=1");
        assert_eq!(Url::parse("http://h/a#frag").unwrap().target(), "/a");
    }

    #[test]
    fn ipv6_literals() {
        let u = Url::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((u.host(), u.port(), u.authority()), ("::1", 9000, "[::1]:9000"));
        assert_eq!(u.host_key().as_str(), "[::1]:9000");
        assert_eq!(Url::parse("http://[FE80::1]/").unwrap().host_key().as_str(), "[fe80::1]:80");
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
        assert_eq!(u.host_key().as_str(), "[fe80::1%eth0]:8080");
        // The RFC 4007 text form, as `ip` prints it.
        let u = Url::parse("http://[fe80::1%eth0]/x").unwrap();
        assert_eq!(
            (u.host(), u.authority(), u.host_key().as_str()),
            ("fe80::1%eth0", "[fe80::1]", "[fe80::1%eth0]:80")
        );
        // The zone keeps its case; the same address on another interface is another device.
        assert_eq!(Url::parse("http://[fe80::1%25ETH0]/").unwrap().host_key().as_str(), "[fe80::1%ETH0]:80");
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
        // `https` needs the `tls` feature.
        assert_eq!(Url::parse("https://10.0.0.5/").is_err(), !cfg!(feature = "tls"));
        for bad in [
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

    /// The reason of the `InvalidUrl` that `url` is refused with.
    fn refusal(url: &str) -> &'static str {
        match Url::parse(url) {
            Err(Error::InvalidUrl { reason, .. }) => reason,
            other => panic!("{url:?} should be refused as an invalid URL, got {other:?}"),
        }
    }

    #[test]
    fn hosts_the_resolver_reads_as_other_numbers_are_refused() {
        // Each checked on this machine (glibc 2.36): inet_aton and getaddrinfo read all of these
        // as the address on the right.
        for (host, glibc_reads) in [
            ("10.0.5", "10.0.0.5"),
            ("127.1", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("0X7F.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("127.0.0.01", "127.0.0.1"),
            ("192.168.001.010", "192.168.1.8"),
            ("0xcafe", "0.0.202.254"),
            ("1.2.65535", "1.2.255.255"),
            ("0", "0.0.0.0"),
            ("00", "0.0.0.0"),
            ("0xffffffff", "255.255.255.255"),
            ("0000000000000000000001", "0.0.0.1"),
        ] {
            let reason = refusal(&format!("http://{host}/io"));
            assert!(
                reason.starts_with("host looks like an IPv4 address but is not a dotted quad")
                    && reason.contains("leading zeros")
                    && reason.contains("octal"),
                "{host:?} (glibc: {glibc_reads}): {reason}"
            );
        }
        // Forms glibc refuses but the URL Standard reads as IPv4 (or fails on): never a name.
        for host in [
            "1.2.3.4.5",
            "192.168.1.8.",
            "127.0.0.1.",
            "0x",
            "0X",
            "0x.0.0.1",
            "1.2.3.0x",
            "1..2",
            ".1.2.3",
            "256.1.1.1",
            "1.2.3.256",
            "4294967296",
            "09.1.1.1",
            "08",
            "999.1.1.1",
        ] {
            let reason = refusal(&format!("http://{host}:8080/"));
            assert!(reason.starts_with("host looks like an IPv4 address"), "{host:?}: {reason}");
        }
        // A name ending in a number: the URL Standard takes it for an IPv4 address.
        for host in ["device.123", "a.0x1f", "example.01.", "x.0x"] {
            let reason = refusal(&format!("http://{host}/"));
            assert!(reason.starts_with("host ends in a number"), "{host:?}: {reason}");
        }
        // The message in full, through Display.
        let err = Url::parse("http://10.0.5/io").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid URL \"http://10.0.5/io\": host looks like an IPv4 address but is not a dotted quad \
             of four decimal octets 0-255 without leading zeros: the system resolver reads such a host as \
             a number (a leading 0 as octal, 0x as hex, missing octets as zeros), which reaches another \
             device"
        );
        assert!(!err.may_have_been_processed());
    }

    #[test]
    fn strict_dotted_quads_are_taken() {
        for host in ["192.168.1.8", "0.0.0.0", "255.255.255.255", "10.0.0.5", "127.0.0.1", "1.10.100.200"] {
            let u = Url::parse(&format!("http://{host}:8080/io")).unwrap();
            assert_eq!((u.host(), u.port()), (host, 8080));
            assert_eq!(u.host().parse::<std::net::Ipv4Addr>().unwrap().to_string(), host);
        }
    }

    #[test]
    fn names_still_go_to_the_resolver() {
        for host in [
            "device-01",
            "a1.b2",
            "1a.example",
            "cafe",
            "CAFE",
            "deadbeef",
            "deadbeef.local",
            "123.example.com",
            "10.0.0.5.nip.io",
            "0x7f.example",
            "device.local.",
            "localhost",
            "x0",
            "0xg",
            "1e3",
        ] {
            let u = Url::parse(&format!("http://{host}/")).unwrap_or_else(|e| panic!("{host:?}: {e}"));
            assert_eq!(u.host(), host);
        }
    }

    #[test]
    fn ipv6_literals_with_embedded_ipv4_are_strict() {
        assert_eq!(Url::parse("http://[::ffff:10.0.0.5]/").unwrap().host(), "::ffff:10.0.0.5");
        for bad in [
            "http://[::ffff:10.0.5]/",
            "http://[::ffff:010.0.0.5]/",
            "http://[::ffff:0x7f.0.0.1]/",
            "http://[::ffff:2130706433]/",
            "http://[::ffff:256.0.0.1]/",
            "http://[::ffff:1.2.3.4.]/",
        ] {
            assert_eq!(refusal(bad), "invalid IPv6 literal", "{bad:?}");
        }
    }

    #[test]
    fn passwords_never_reach_an_error() {
        // Refused for its user info; also when a password's `#`, `/` or `@` confuses the parser.
        for (url, shown) in [
            ("http://admin:s3cret@10.0.0.5/io", "http://admin:***@10.0.0.5/io"),
            ("http://admin:s3cr#t@10.0.0.5/io", "http://admin:***@10.0.0.5/io"),
            ("http://admin:s3/cret@10.0.0.5/io", "http://admin:***@10.0.0.5/io"),
            ("http://admin:s3@c?ret@10.0.0.5/", "http://admin:***@10.0.0.5/"),
            ("https://admin:s3cret@10.0.0.5/", "https://admin:***@10.0.0.5/"),
            ("admin:s3cret@10.0.0.5/io", "admin:***@10.0.0.5/io"),
            ("http://[::1]:s3cret@h/", "http://[::1]:***@h/"),
        ] {
            let err = Url::parse(url).unwrap_err();
            let (display, debug) = (err.to_string(), format!("{err:?}"));
            for text in [&display, &debug] {
                assert!(!text.contains("s3") && !text.contains("cret"), "{url:?}: {text}");
            }
            assert!(display.contains(&format!("{shown:?}")), "{url:?}: {display}");
            assert!(matches!(&err, Error::InvalidUrl { url, .. } if url == shown), "{err:?}");
        }
        // A user name alone is kept; a URL without user info is shown as given.
        let user_only = Url::parse("http://admin@10.0.0.5/").unwrap_err().to_string();
        assert!(user_only.contains("\"http://admin@10.0.0.5/\""), "{user_only}");
        assert_eq!(redact_userinfo("http://10.0.5/a@b"), "http://10.0.5/a@b");
        assert_eq!(redact_userinfo("http://h:8080/a@b"), "http://h:***@b");
        assert_eq!(redact_userinfo("http://a:***@h/"), "http://a:***@h/");
        assert_eq!(redact_userinfo("http://h/"), "http://h/");
        assert_eq!(redact_userinfo(""), "");
        assert_eq!(redact_userinfo("@:"), "@:");
        assert_eq!(redact_userinfo("http://[::1@:x"), "http://[:***@:x");
        assert_eq!(redact_userinfo("http://é:ü@h/"), "http://é:***@h/");
    }

    /// `https` (feature `tls`): port 443 by default, a host key of its own (an `https` device is
    /// not the plain one on the same address).
    #[cfg(feature = "tls")]
    #[test]
    fn https_urls() {
        let u = Url::parse("https://10.0.0.5/io").unwrap();
        assert!(u.is_tls());
        assert_eq!(
            (u.port(), u.authority(), u.host_key().as_str()),
            (443, "10.0.0.5", "https://10.0.0.5:443")
        );
        let u = Url::parse("HTTPS://[fe80::1%25eth0]:8443/").unwrap();
        assert_eq!(u.host_key().as_str(), "https://[fe80::1%eth0]:8443");
        assert!(!Url::parse("http://10.0.0.5/").unwrap().is_tls());
    }
}
