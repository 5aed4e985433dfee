//! Moving bytes: reads until `WouldBlock`, 0 (the FIN) or an error, writes of exactly what the
//! engine has for a socket, and closes. The rule of this file: a write's error is reported only
//! after what the socket still holds has been read (see `flush`).

use super::*;

impl<K: Kernel> Driver<K> {
    /// Reads what arrived. A busy connection is read until its response is complete (by a read
    /// that did not fill the buffer); anything else until `WouldBlock`, 0 (the FIN) or an error.
    /// `closing`: the event already reported FIN or an error, so the read must go on to consume
    /// it now. Stopping at a complete response saves a syscall per command and loses nothing:
    /// the socket was empty, so whatever arrives later raises a new event, which the pre-write
    /// poll (or peek) reports.
    ///
    /// `write_error`: a write on this socket just failed (its error not yet reported). The reset
    /// that failed it was consumed by the write, so a read then returns 0 as if for a FIN: that
    /// 0 is reported as the write's error, the connection's true end.
    pub(super) fn read_all(
        &mut self,
        engine: &mut Engine,
        key: Key,
        closing: bool,
        write_error: &mut Option<io::Error>,
        now: Instant,
    ) {
        #[cfg(feature = "tls")]
        if self.sock(key).is_some_and(|s| s.tls.is_some()) {
            return self.tls_read_all(engine, key, closing, write_error, now);
        }
        let Some(s) = self.socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key)
        else {
            return;
        };
        let was_busy = engine.is_busy(key);
        // Stop once the engine has let go of the connection (an error, a limit): a flooding
        // server must not keep the loop reading. Stop at the budget too, and resume next turn,
        // so timers (a deadline) run even while a server sends without pause.
        for _ in 0..READ_BUDGET {
            if !engine.knows(key) {
                return;
            }
            match self.k.read(&mut s.stream, &mut self.scratch) {
                Ok(0) => {
                    return match write_error.take() {
                        Some(e) => engine.on_error(key, e, now),
                        None => engine.on_fin(key, now),
                    };
                }
                Ok(n) => {
                    engine.on_data(key, &self.scratch[..n], now);
                    // The socket is empty and the response is not complete: acknowledge what
                    // came at once, or a device holding the rest until then waits 40 ms.
                    if n < self.scratch.len() && engine.is_busy(key) {
                        self.k.ack_now(&mut s.stream);
                    }
                    // A short read emptied the socket: anything that arrives later raises a new
                    // event, which the pre-write poll relies on. A full buffer may have left
                    // bytes behind the response (unsolicited), so the read goes on.
                    if was_busy && !closing && !engine.is_busy(key) && n < self.scratch.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return engine.on_error(key, e, now),
            }
        }
        if engine.knows(key) {
            self.unfinished.push((key, closing, write_error.take()));
        }
    }

    /// The wait of a turn whose only business is the response on `key` ([`Driver::direct_wait`]):
    /// one `recv` that blocks up to `timeout`, where the poller's wait and a read would be two
    /// syscalls and the poller's bookkeeping. What it returns is handled as `read_all` handles a
    /// read; a full buffer may have more behind it, which `read_all` goes on to read. The poller
    /// still holds the socket's event for these bytes, so the next pre-write check of this
    /// socket peeks it rather than polling (`read_around_poller`, as after a busy-poll spin).
    pub(super) fn read_direct(&mut self, engine: &mut Engine, key: Key, timeout: Duration) {
        let Some(s) = self.socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key)
        else {
            return;
        };
        self.read_around_poller = true;
        let result = self.k.read_wait(&mut s.stream, &mut self.scratch, timeout);
        let now = self.k.now();
        match result {
            Ok(0) => engine.on_fin(key, now),
            Ok(n) => {
                engine.on_data(key, &self.scratch[..n], now);
                if n == self.scratch.len() {
                    self.read_all(engine, key, false, &mut None, now);
                } else if engine.is_busy(key) {
                    // As in `read_all`: the rest may wait for our ACK.
                    self.k.ack_now(&mut s.stream);
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => engine.on_error(key, e, now),
        }
        self.after_io(engine, now, false);
    }

    /// Writes what the engine has for `key` until it is all out or the socket is full.
    ///
    /// A write error is reported only after what the socket still holds has been read: a device
    /// that reads a request's head, answers early (`200`, `413`) and closes with the body unread
    /// resets the connection under our write, and its answer sits in our receive queue ahead of
    /// the RST (Linux returns queued data before the reset's error). That answer is the outcome;
    /// reported first, the error made the engine retry a POST the device had acted on, or fail
    /// it as "not processed".
    pub(super) fn flush(&mut self, engine: &mut Engine, key: Key, now: Instant) {
        #[cfg(feature = "tls")]
        let failed = if self.sock(key).is_some_and(|s| s.tls.is_some()) {
            self.tls_write_out(engine, key, now)
        } else {
            self.write_out(engine, key, now)
        };
        #[cfg(not(feature = "tls"))]
        let failed = self.write_out(engine, key, now);
        let Some(err) = failed else { return };
        let mut err = Some(err);
        self.read_all(engine, key, true, &mut err, now);
        // The read found the outcome (a response, the reset), or paused at its budget (the
        // error went with it, for the resumed read); otherwise the write's error is the news.
        if let Some(err) = err
            && engine.knows(key)
        {
            engine.on_error(key, err, now);
        }
    }

    /// Writes until the engine has nothing more for `key` or the socket is full (`None`), or a
    /// write fails (its error, for `flush` to judge).
    fn write_out(&mut self, engine: &mut Engine, key: Key, now: Instant) -> Option<io::Error> {
        let s = self.socks.get_mut(key.index()).and_then(|s| s.as_mut()).filter(|s| s.key == key)?;
        loop {
            let out = engine.output(key);
            if out.is_empty() {
                return None;
            }
            match self.k.write(&mut s.stream, out) {
                Ok(0) => return Some(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => engine.on_written(key, n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(e),
            }
        }
    }

    pub(super) fn close(&mut self, key: Key) {
        if let Some(slot) = self.socks.get_mut(key.index())
            && slot.as_ref().is_some_and(|s| s.key == key)
            && let Some(s) = slot.take()
        {
            // A connect the engine gave up on (its timeout): new connections start elsewhere.
            if s.attempt.is_some() {
                self.resolver.failed(&s.host, usize::MAX);
            }
            #[cfg(feature = "tls")]
            let mut s = s;
            #[cfg(feature = "tls")]
            if let Some(sess) = s.tls.as_deref_mut() {
                Self::tls_goodbye(&mut self.k, &mut s.stream, sess);
            }
            self.k.close(s.stream);
        } else {
            // Not connecting yet: parked for a name lookup, perhaps.
            self.resolver.forget(key);
        }
    }
}
