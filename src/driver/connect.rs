//! Connecting: a host's name to an address (IP literals directly, names through the resolver),
//! the walk through a name's addresses when one refuses, and the handshake's result.

use super::*;
use crate::os::OpenOpts;

impl<K: Kernel> Driver<K> {
    /// `label`: the host's key (`host:port`), which names it in errors and in the resolver.
    pub(super) fn connect(
        &mut self,
        engine: &mut Engine,
        key: Key,
        host: &str,
        port: u16,
        label: Arc<str>,
        now: Instant,
    ) {
        match ip_literal(host, port) {
            Some(Ok(addr)) => return self.connect_to(engine, key, addr, label, None, now),
            Some(Err(source)) => {
                return engine.on_connect_failed(
                    key,
                    Error::Resolve { host: label.to_string(), source },
                    now,
                );
            }
            None => {}
        }
        // A lookup off the loop wakes it through the client's waker; without one, it runs here.
        let wake = self.waker().map_err(|e| log::warn!("no waker for background name lookups: {e}")).ok();
        match self.resolver.resolve(wake, &label, host, port, key, now) {
            Answer::Addr(addr) => self.connect_to(engine, key, addr, label, Some(Attempt { tried: 1 }), now),
            // Parked until the lookup answers (under the engine's connect timeout); a lookup
            // that could not go to the background has answered already.
            Answer::Pending => {
                engine.on_resolving(key, true, now);
                if self.resolver.has_inline() {
                    self.finish_lookups(engine, now);
                }
            }
        }
    }

    /// Starts the connect of `key` to `addr`: an IP literal (`attempt` `None`), or the first
    /// address tried for a host name.
    pub(super) fn connect_to(
        &mut self,
        engine: &mut Engine,
        key: Key,
        addr: SocketAddr,
        label: Arc<str>,
        attempt: Option<Attempt>,
        now: Instant,
    ) {
        if let Err((source, attempt)) = self.open(engine, key, addr, Arc::clone(&label), attempt) {
            self.connect_failed(engine, key, label, source, attempt, now);
        }
    }

    /// A request waits for `key`, a connect set for later: the kernel starts it now if it has
    /// not yet; a start that failed in the kernel is the connect's failure.
    pub(super) fn connect_now(&mut self, engine: &mut Engine, key: Key, now: Instant) {
        let Some(s) = self.socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key)
        else {
            return;
        };
        if let Err(e) = self.k.start_now(&mut s.stream) {
            let (label, attempt) = (Arc::clone(&s.host), s.attempt.take());
            self.connect_failed(engine, key, label, e, attempt, now);
        }
    }

    /// Name lookups that finished: their parked connections connect, or fail with the lookup's
    /// error. A connection the engine gave up on meanwhile (its connect timeout) is skipped.
    pub(super) fn finish_lookups(&mut self, engine: &mut Engine, now: Instant) {
        for done in self.resolver.take_done(now) {
            for key in done.waiting {
                if !engine.is_connecting(key) || self.sock(key).is_some() {
                    continue;
                }
                engine.on_resolving(key, false, now);
                match &done.result {
                    Ok(addr) => {
                        let attempt = Some(Attempt { tried: 1 });
                        self.connect_to(engine, key, *addr, Arc::clone(&done.label), attempt, now)
                    }
                    Err(e) => {
                        let source = io::Error::new(e.kind(), e.to_string());
                        engine.on_connect_failed(
                            key,
                            Error::Resolve { host: done.label.to_string(), source },
                            now,
                        );
                    }
                }
            }
        }
    }

    /// Opens a socket to `addr` under `key` and starts its connect, or has the kernel start it
    /// at the time the engine set ([`Engine::connect_at`], a timed warm spare; a kernel given a
    /// time already past starts it now). On failure the attempt is handed back with the error.
    pub(super) fn open(
        &mut self,
        engine: &Engine,
        key: Key,
        addr: SocketAddr,
        host: Arc<str>,
        attempt: Option<Attempt>,
    ) -> Result<(), (io::Error, Option<Attempt>)> {
        let cfg = engine.config();
        if let Some(local) = cfg.local_address
            && local.is_ipv4() != addr.is_ipv4()
        {
            // No socket: a bind of one family and a connect to the other would fail anyway
            // (EINVAL, EAFNOSUPPORT), less clearly. A host name's next address is tried.
            let family = |ip: IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            let e = io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!(
                    "the local address {local} is {}, the device's address {addr} is {}",
                    family(local),
                    family(addr.ip())
                ),
            );
            return Err((e, attempt));
        }
        let opts =
            OpenOpts { nodelay: cfg.nodelay, local: cfg.local_address, device: cfg.bind_device.as_deref() };
        let opened = match engine.connect_at(key) {
            Some(at) => self.k.open_at(addr, &opts, key.index(), at),
            None => self.k.open(addr, &opts, key.index()),
        };
        let stream = match opened {
            Ok(s) => s,
            Err(e) => return Err((e, attempt)),
        };
        if self.socks.len() <= key.index() {
            self.socks.resize_with(key.index() + 1, || None);
        }
        self.socks[key.index()] = Some(Sock {
            key,
            stream,
            host,
            attempt,
            #[cfg(feature = "tls")]
            tls: None,
        });
        log::trace!("conn={} connecting to {addr}", engine.conn_id(key));
        Ok(())
    }

    /// A connect failed (refused, unreachable, ...). If the host name has addresses this
    /// connection has not tried, the next one is tried under the same key: the engine sees one
    /// connect, bounded by its connect timeout. Otherwise the engine is told; either way new
    /// connections to the name start with the next address (and once all of them have failed
    /// in a row, with a new lookup of the name).
    pub(super) fn connect_failed(
        &mut self,
        engine: &mut Engine,
        key: Key,
        label: Arc<str>,
        mut source: io::Error,
        mut attempt: Option<Attempt>,
        now: Instant,
    ) {
        while let Some(mut a) = attempt.take() {
            let Some(addr) = self.resolver.failed(&label, a.tried) else { break };
            a.tried += 1;
            log::debug!("conn={} {label}: {source}; trying {addr}", engine.conn_id(key));
            match self.open(engine, key, addr, Arc::clone(&label), Some(a)) {
                Ok(()) => return,
                Err((e, back)) => (source, attempt) = (e, back),
            }
        }
        engine.on_connect_failed(key, Error::ConnectFailed { host: label.to_string(), source }, now);
    }

    /// A connecting socket became writable (or failed): did the handshake succeed?
    pub(super) fn check_connect(&mut self, engine: &mut Engine, r: &Event, now: Instant) {
        let key = r.key;
        #[cfg(feature = "tls")]
        if self.tls_handshaking(key) {
            return self.tls_handshake(engine, key, now);
        }
        let writable_means_connected = self.k.caps().writable_means_connected;
        let Some(s) = self.socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key)
        else {
            return;
        };
        // Linux reports a socket in SYN_SENT neither readable nor writable (`tcp_poll`), and a
        // failed connect with `EPOLLERR`: writable without an error or a hang-up means
        // connected, and `SO_ERROR` and `getpeername` would only confirm it (two syscalls per
        // connection). Elsewhere, and for any other event, ask.
        let outcome = if writable_means_connected && r.writable && !r.closing {
            Ok(true)
        } else {
            self.k.connect_result(&mut s.stream)
        };
        match outcome {
            Ok(true) => {
                if s.attempt.take().is_some() {
                    let label = Arc::clone(&s.host);
                    self.resolver.connected(&label);
                }
                #[cfg(feature = "tls")]
                if crate::tls::is_tls_label(&s.host) {
                    return self.tls_start(engine, key, now);
                }
                engine.on_connected(key, now)
            }
            Ok(false) => {}
            Err(e) => {
                let (label, attempt) = (Arc::clone(&s.host), s.attempt.take());
                self.connect_failed(engine, key, label, e, attempt, now);
            }
        }
    }
}

/// An IP literal as a URL gives it: IPv4, IPv6, or IPv6 with a zone (`fe80::1%eth0`: the
/// interface's name or index; a name is looked up in `/sys/class/net`, so on Linux only, and
/// elsewhere the index is needed). `None`: a host name, for the resolver.
pub(super) fn ip_literal(host: &str, port: u16) -> Option<io::Result<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Ok(SocketAddr::new(ip, port)));
    }
    let (addr, zone) = host.split_once('%')?;
    let addr = addr.parse::<std::net::Ipv6Addr>().ok()?;
    let scope = match zone.parse::<u32>() {
        Ok(index) => Ok(index),
        // `Url::parse` let only unreserved characters through, and not `.` or `..`: no path.
        Err(_) if cfg!(target_os = "linux") => {
            std::fs::read_to_string(format!("/sys/class/net/{zone}/ifindex"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("no network interface {zone:?}"))
                })
        }
        Err(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("interface names in IPv6 zones are read on Linux only; give the index of {zone:?}"),
        )),
    };
    Some(scope.map(|scope| SocketAddr::V6(std::net::SocketAddrV6::new(addr, port, 0, scope))))
}
