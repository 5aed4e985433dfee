//! TLS on the driver's sockets (feature `tls`; see `crate::tls` for what it promises): the
//! handshake before the engine is told a connection is up, reads and writes through rustls,
//! and the pre-write check reading through TLS.

use super::*;
use crate::error::TlsFailure;
use crate::tls::{KernelWriter, Session};

/// How reading a socket's plaintext ended.
enum Drained {
    /// No more plaintext for now.
    Open,
    /// A `close_notify` arrived: the device closed, properly.
    CloseNotify,
    /// The engine let go of the connection (an error, a limit, a complete response retired).
    Gone,
    /// rustls refused what arrived (a bad record, an alert).
    Failed(io::Error),
}

impl<K: Kernel> Driver<K> {
    /// The client's TLS settings (`ClientBuilder::tls`).
    pub(crate) fn set_tls(&mut self, connector: Arc<crate::tls::Connector>) {
        self.tls = Some(connector);
    }

    /// The client's TLS settings: the caller's, or (an `https://` URL without them) ones that
    /// trust nothing, so that every device is refused with a reason that says what to add.
    fn connector(&mut self) -> Result<Arc<crate::tls::Connector>, Error> {
        if let Some(c) = &self.tls {
            return Ok(Arc::clone(c));
        }
        let c = crate::tls::TlsConfig::new().connector()?;
        self.tls = Some(Arc::clone(&c));
        Ok(c)
    }

    /// The TCP handshake of `key` completed: start its TLS handshake (the engine hears of the
    /// connection only once that is done).
    pub(super) fn tls_start(&mut self, engine: &mut Engine, key: Key, now: Instant) {
        let Some(label) = self.sock(key).map(|s| Arc::clone(&s.host)) else { return };
        let session = match self.connector().and_then(|c| c.session(&label)) {
            Ok(s) => s,
            Err(e) => return engine.on_connect_failed(key, e, now),
        };
        if let Some(s) = self.socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key) {
            s.tls = Some(Box::new(session));
        }
        log::trace!("conn={} {label}: TLS handshake", engine.conn_id(key));
        engine.on_tls_handshaking(key);
        self.tls_handshake(engine, key, now);
    }

    /// Moves the handshake of `key` on: reads what arrived, writes what rustls has, and once it
    /// is complete tells the engine the connection is up.
    pub(super) fn tls_handshake(&mut self, engine: &mut Engine, key: Key, now: Instant) {
        let Driver { k, socks, scratch, tls, .. } = self;
        let Some(s) = socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key) else {
            return;
        };
        let Some(sess) = s.tls.as_deref_mut() else { return };
        // A session exists only once `tls_start` has had the connector.
        let Some(connector) = tls.as_deref() else { return };
        let outcome = handshake_io(k, &mut s.stream, sess, scratch, connector, &s.host);
        match outcome {
            Err(e) => engine.on_connect_failed(key, e, now),
            Ok(()) if !sess.conn.is_handshaking() && !sess.handshaken => {
                sess.handshaken = true;
                let handshake = sess.handshake();
                log::debug!("conn={} {}: {handshake:?}", engine.conn_id(key), s.host);
                engine.trace_event(key, now, handshake);
                engine.on_connected(key, now);
            }
            Ok(()) => {}
        }
    }

    /// Whether `key`'s socket carries TLS whose handshake is under way (events go to
    /// [`Driver::tls_handshake`], not to the TCP connect check).
    pub(super) fn tls_handshaking(&self, key: Key) -> bool {
        self.sock(key).and_then(|s| s.tls.as_deref()).is_some_and(|t| !t.handshaken)
    }

    /// [`Driver::read_all`] for a TLS socket: ciphertext in, plaintext to the engine. A
    /// `close_notify` is the device's FIN; a FIN without one is a FIN for an idle connection and
    /// a truncation (an error, RFC 8446 §6.1) for a response being read. Records that carry no
    /// application data (NewSessionTicket, KeyUpdate) reach nobody.
    pub(super) fn tls_read_all(
        &mut self,
        engine: &mut Engine,
        key: Key,
        closing: bool,
        write_error: &mut Option<io::Error>,
        now: Instant,
    ) {
        let Driver { k, socks, scratch, plain, unfinished, .. } = self;
        let Some(s) = socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key) else {
            return;
        };
        let Some(sess) = s.tls.as_deref_mut() else { return };
        let was_busy = engine.is_busy(key);
        for _ in 0..READ_BUDGET {
            if !engine.knows(key) {
                return;
            }
            match k.read(&mut s.stream, scratch) {
                Ok(0) => {
                    sess.tcp_eof = true;
                    let _ = sess.conn.read_tls(&mut &[][..]);
                    let _ = sess.conn.process_new_packets();
                    match drain(sess, engine, key, plain, now) {
                        Drained::Gone | Drained::CloseNotify => return,
                        Drained::Failed(e) => return engine.on_error(key, e, now),
                        Drained::Open => {}
                    }
                    if let Some(e) = write_error.take() {
                        return engine.on_error(key, e, now);
                    }
                    engine.trace_event(key, now, crate::TraceKind::TlsClosed { close_notify: false });
                    if engine.response_started(key) {
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the device closed the connection without close_notify: the response may be truncated",
                        );
                        return engine.on_error(key, e, now);
                    }
                    return engine.on_fin(key, now);
                }
                Ok(n) => {
                    let mut rd = &scratch[..n];
                    while !rd.is_empty() {
                        if let Err(e) = sess.conn.read_tls(&mut rd) {
                            return engine.on_error(key, e, now);
                        }
                        if let Err(e) = sess.conn.process_new_packets() {
                            let _ = push_records(k, &mut s.stream, sess); // the alert, if it can go
                            return engine.on_error(key, io::Error::new(io::ErrorKind::InvalidData, e), now);
                        }
                        match drain(sess, engine, key, plain, now) {
                            Drained::Open => {}
                            Drained::Gone | Drained::CloseNotify => return,
                            Drained::Failed(e) => return engine.on_error(key, e, now),
                        }
                    }
                    // A KeyUpdate asks for one back (a write in progress carries it; a failure
                    // here is reported by the next write or read).
                    if sess.credit == 0 {
                        let _ = push_records(k, &mut s.stream, sess);
                    }
                    if n < scratch.len() && engine.is_busy(key) {
                        k.ack_now(&mut s.stream);
                    }
                    if was_busy && !closing && !engine.is_busy(key) && n < scratch.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return engine.on_error(key, e, now),
            }
        }
        if engine.knows(key) {
            unfinished.push((key, closing, write_error.take()));
        }
    }

    /// `write_out` for a TLS socket (`Driver::flush` judges a failure). Plaintext counts as
    /// written only once its records are all in the socket (`Session::credit`), so that a
    /// request's stage says what the device can have; at most one record's worth is taken from
    /// the engine at a time.
    pub(super) fn tls_write_out(&mut self, engine: &mut Engine, key: Key, now: Instant) -> Option<io::Error> {
        let Driver { k, socks, .. } = self;
        let s = socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key)?;
        let sess = s.tls.as_deref_mut().filter(|t| t.handshaken)?;
        loop {
            match push_records(k, &mut s.stream, sess) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(e),
            }
            if sess.credit > 0 {
                let n = std::mem::take(&mut sess.credit);
                engine.on_written(key, n, now);
            }
            let out = engine.output(key);
            if out.is_empty() {
                return None;
            }
            let chunk = &out[..out.len().min(TLS_CHUNK)];
            match io::Write::write(&mut sess.conn.writer(), chunk) {
                Ok(n) => sess.credit = n,
                Err(e) => return Some(e),
            }
        }
    }

    /// A `close_notify` before the socket closes, where the connection is still sound: the
    /// device learns the close was ours, not a truncation.
    pub(super) fn tls_goodbye(k: &mut K, stream: &mut K::Stream, sess: &mut Session) {
        if sess.handshaken && !sess.tcp_eof {
            sess.conn.send_close_notify();
            let _ = sess.conn.write_tls(&mut KernelWriter { k, s: stream });
        }
    }
}

/// Moves a handshake on: what arrived into rustls, then what rustls has to send out.
fn handshake_io<K: Kernel>(
    k: &mut K,
    stream: &mut K::Stream,
    sess: &mut Session,
    scratch: &mut [u8],
    connector: &crate::tls::Connector,
    host: &str,
) -> Result<(), Error> {
    let err = |reason: String| Error::Tls { host: host.to_string(), failure: TlsFailure::Handshake, reason };
    loop {
        match k.read(stream, scratch) {
            Ok(0) => return Err(err("the device closed the connection during the handshake".into())),
            Ok(n) => {
                let mut rd = &scratch[..n];
                while !rd.is_empty() {
                    sess.conn.read_tls(&mut rd).map_err(|e| err(e.to_string()))?;
                    if let Err(e) = sess.conn.process_new_packets() {
                        let _ = push_records(k, stream, sess); // the alert, if it can go
                        return Err(connector.error(host, e));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e.to_string())),
        }
    }
    push_records(k, stream, sess).map(|_| ()).map_err(|e| err(e.to_string()))
}

/// Writes the records rustls has for the socket: `Ok(true)` all out, `Ok(false)` the socket is
/// full (the rest goes on its next writable event).
fn push_records<K: Kernel>(k: &mut K, stream: &mut K::Stream, sess: &mut Session) -> io::Result<bool> {
    while sess.conn.wants_write() {
        match sess.conn.write_tls(&mut KernelWriter { k, s: stream }) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A TLS record's plaintext at most: what is taken from the engine at a time.
const TLS_CHUNK: usize = 16 * 1024;

/// Hands the plaintext rustls has to the engine.
fn drain(sess: &mut Session, engine: &mut Engine, key: Key, plain: &mut Vec<u8>, now: Instant) -> Drained {
    if plain.is_empty() {
        plain.resize(TLS_CHUNK, 0);
    }
    loop {
        match io::Read::read(&mut sess.conn.reader(), plain) {
            Ok(0) => {
                engine.trace_event(key, now, crate::TraceKind::TlsClosed { close_notify: true });
                engine.on_fin(key, now);
                return Drained::CloseNotify;
            }
            Ok(m) => {
                engine.on_data(key, &plain[..m], now);
                if !engine.knows(key) {
                    return Drained::Gone;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Open,
            // The TCP FIN came without close_notify: the caller decides what it means.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Drained::Open,
            Err(e) => return Drained::Failed(e),
        }
    }
}
