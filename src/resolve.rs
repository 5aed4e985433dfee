//! Host names to addresses, without stopping the loop.
//!
//! The system resolver (`getaddrinfo`) blocks, for seconds when a name server or an mDNS
//! responder does not answer (a `device.local` that is switched off). Run on the loop thread,
//! that would hold up the commands to every other device and wait past every deadline. So a
//! lookup runs on a short-lived thread of its own; the connection waits for it in `Connecting`,
//! under its connect timeout like any handshake, while the loop goes on, and the thread's
//! answer comes back through a channel, with a wake-up through the client's waker (an eventfd
//! on Linux: no extra descriptor, and no `SIGPIPE` if the client is gone when the answer comes).
//! The thread holds the waker weakly: a lookup that never returns keeps nothing of a dropped
//! client open (the thread itself ends when the lookup does; it is not joined).
//!
//! Answers are cached per host key (`name:port`) with all their addresses. A cached name is
//! looked up again (in the background, the cached address used meanwhile) once its answer is
//! older than [`REFRESH_AFTER`], and at once (new connections wait for the answer) when every
//! one of its addresses has failed to connect in a row: a device that came back from a reboot
//! with a new DHCP lease is found again without restarting the client. A failed lookup of a name
//! that has addresses keeps them (a name server that is down does not take working devices
//! with it); a failed lookup of a new name fails the connections waiting for it, and the next
//! connect asks again.
//!
//! IP literals never get here. Should the waker or a thread not be available, the lookup runs
//! on the loop thread, as before.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::driver::Wake;
use crate::proto::slab::Key;

/// How long an answer is used before the name is looked up again (in the background).
pub(crate) const REFRESH_AFTER: Duration = Duration::from_secs(60);

/// A resolver: a name and a port to addresses (blocking; called off the loop thread).
pub(crate) type LookupFn = Arc<dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync>;

/// The system resolver.
pub(crate) fn system_lookup() -> LookupFn {
    Arc::new(|name: &str, port: u16| Ok((name, port).to_socket_addrs()?.collect()))
}

/// What [`Resolver::resolve`] has for a connection.
pub(crate) enum Answer {
    /// Connect to this address (the name's others are tried if it fails).
    Addr(SocketAddr),
    /// A lookup is running; the connection is parked until [`Resolver::take_done`] returns it.
    Pending,
}

/// A lookup that finished, with the connections that were waiting for it.
pub(crate) struct Done {
    pub label: Arc<str>,
    /// The address to connect to, or why there is none.
    pub result: io::Result<SocketAddr>,
    pub waiting: Vec<Key>,
}

/// A name's cached answer.
struct Entry {
    name: String,
    port: u16,
    addrs: Vec<SocketAddr>,
    /// The address new connections start with: the last that worked, or the one after the
    /// last that failed.
    next: usize,
    resolved_at: Option<Instant>,
    in_flight: bool,
    /// Connects that failed in a row (any address) since the last lookup; as many as there are
    /// addresses: look up again.
    failures: usize,
    /// Connections parked until the running lookup answers.
    waiting: Vec<Key>,
}

impl Entry {
    fn all_failed(&self) -> bool {
        !self.addrs.is_empty() && self.failures >= self.addrs.len()
    }
}

/// What a lookup thread sends back.
struct Finished {
    label: Arc<str>,
    result: io::Result<Vec<SocketAddr>>,
}

pub(crate) struct Resolver {
    entries: HashMap<Arc<str>, Entry>,
    lookup: LookupFn,
    /// Connections parked across all entries (0: closing a socket need not look for one).
    parked: usize,
    /// Answers of lookups that ran on the loop thread (no background possible), not yet filed.
    inline: Vec<Finished>,
    /// Where lookup threads send their answers.
    tx: mpsc::Sender<Finished>,
    rx: mpsc::Receiver<Finished>,
}

impl Resolver {
    pub(crate) fn new(lookup: LookupFn) -> Resolver {
        let (tx, rx) = mpsc::channel();
        Resolver { entries: HashMap::new(), lookup, parked: 0, inline: Vec::new(), tx, rx }
    }

    /// The address to connect `key` (a connection to `name:port`, host key `label`) to, or
    /// `Pending` when it must wait for a lookup. `wake`: how a lookup on its own thread wakes
    /// the loop (without it, the lookup runs here).
    pub(crate) fn resolve(
        &mut self,
        wake: Option<Arc<Wake>>,
        label: &Arc<str>,
        name: &str,
        port: u16,
        key: Key,
        now: Instant,
    ) -> Answer {
        let entry = self.entries.entry(Arc::clone(label)).or_insert_with(|| Entry {
            name: name.to_string(),
            port,
            addrs: Vec::new(),
            next: 0,
            resolved_at: None,
            in_flight: false,
            failures: 0,
            waiting: Vec::new(),
        });
        let cached = (!entry.addrs.is_empty() && !entry.all_failed()).then(|| entry.addrs[entry.next]);
        let stale = entry.resolved_at.is_none_or(|t| now.saturating_duration_since(t) >= REFRESH_AFTER);
        if let Some(addr) = cached
            && !stale
        {
            return Answer::Addr(addr);
        }
        // Stale but working: used while the new answer is fetched. Else the connection waits.
        if cached.is_none() {
            entry.waiting.push(key);
            self.parked += 1;
        }
        if !entry.in_flight {
            entry.in_flight = true;
            self.start(wake, Arc::clone(label));
        }
        cached.map_or(Answer::Pending, Answer::Addr)
    }

    /// A lookup ran on the loop thread (no background possible): its answer waits in
    /// [`Resolver::take_done`], to be taken at once.
    pub(crate) fn has_inline(&self) -> bool {
        !self.inline.is_empty()
    }

    /// Starts a lookup of `label`'s name: on a thread of its own, which wakes the loop when it
    /// is done; where that is not possible, here.
    fn start(&mut self, wake: Option<Arc<Wake>>, label: Arc<str>) {
        let Some(e) = self.entries.get(&label) else { return };
        let (name, port) = (e.name.clone(), e.port);
        if let Some(wake) = wake {
            let (tx, lookup) = (self.tx.clone(), Arc::clone(&self.lookup));
            let (label2, name2) = (Arc::clone(&label), name.clone());
            // Weak: a lookup that hangs (an mDNS name nobody answers, a caller's resolver that
            // blocks) must not keep a dropped client's eventfd open until it returns.
            let wake = Arc::downgrade(&wake);
            let job = move || {
                let result = lookup(&name2, port);
                // The client is gone if the channel or the waker is: nobody to wake.
                if tx.send(Finished { label: label2, result }).is_ok()
                    && let Some(wake) = wake.upgrade()
                {
                    let _ = wake.lookup_done();
                }
            };
            match std::thread::Builder::new().name("finwatch-resolve".into()).spawn(job) {
                Ok(_) => return,
                Err(e) => log::warn!("{label}: no thread for the name lookup ({e}); looking up here"),
            }
        }
        let result = (self.lookup)(&name, port);
        self.inline.push(Finished { label, result });
    }

    /// The lookups that finished (the loop was woken for one, or one ran inline).
    pub(crate) fn take_done(&mut self, now: Instant) -> Vec<Done> {
        let mut finished: Vec<Finished> = std::mem::take(&mut self.inline);
        finished.extend(self.rx.try_iter());
        finished.into_iter().map(|f| self.finish(f, now)).collect()
    }

    /// Files a lookup's answer and hands back the connections that waited for it.
    fn finish(&mut self, f: Finished, now: Instant) -> Done {
        let Some(e) = self.entries.get_mut(&f.label) else {
            return Done {
                label: f.label,
                result: Err(io::Error::other("lookup of a forgotten name")),
                waiting: Vec::new(),
            };
        };
        e.in_flight = false;
        let waiting = std::mem::take(&mut e.waiting);
        self.parked -= waiting.len();
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let result = match f.result {
            Ok(found) => {
                for a in found {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
                if addrs.is_empty() {
                    Err(io::Error::new(io::ErrorKind::NotFound, "no address for host"))
                } else {
                    Ok(())
                }
            }
            Err(err) => Err(err),
        };
        let result = match result {
            Ok(()) => {
                // Keep starting with the address that worked if the name still has it.
                let current = e.addrs.get(e.next).copied();
                e.next = current.and_then(|c| addrs.iter().position(|&a| a == c)).unwrap_or(0);
                if e.addrs != addrs {
                    log::debug!("{}: resolved to {addrs:?}", f.label);
                }
                // Every address gets its chance again (and the name its next lookup only after
                // they have all failed once more).
                e.failures = 0;
                e.addrs = addrs;
                e.resolved_at = Some(now);
                Ok(e.addrs[e.next])
            }
            // A name server that is down does not take a known device with it: the old
            // addresses stay (and are asked again next time).
            Err(err) if !e.addrs.is_empty() => {
                log::warn!("{}: lookup failed ({err}); keeping {:?}", f.label, e.addrs);
                e.failures = 0;
                e.resolved_at = Some(now);
                Ok(e.addrs[e.next])
            }
            Err(err) => Err(err),
        };
        Done { label: f.label, result, waiting }
    }

    /// A parked connection went away (its connect timed out, the client gave up on it).
    pub(crate) fn forget(&mut self, key: Key) {
        if self.parked == 0 {
            return;
        }
        for (label, e) in &mut self.entries {
            if let Some(i) = e.waiting.iter().position(|&k| k == key) {
                e.waiting.swap_remove(i);
                self.parked -= 1;
                log::debug!("{label}: the name lookup was still running when the connection gave up");
                return;
            }
        }
    }

    /// A connect to `label`'s address succeeded: new connections keep starting there.
    pub(crate) fn connected(&mut self, label: &str) {
        if let Some(e) = self.entries.get_mut(label) {
            e.failures = 0;
        }
    }

    /// A connect to `label`'s current address failed (refused, unreachable, timed out): new
    /// connections start with the next address. `tried`: addresses this connection has tried.
    /// Returns the next address for this connection, if it has not tried them all.
    pub(crate) fn failed(&mut self, label: &str, tried: usize) -> Option<SocketAddr> {
        let e = self.entries.get_mut(label)?;
        if e.addrs.is_empty() {
            return None;
        }
        e.failures += 1;
        e.next = (e.next + 1) % e.addrs.len();
        (tried < e.addrs.len()).then(|| e.addrs[e.next])
    }

    #[cfg(test)]
    pub(crate) fn has_pending_lookup(&self) -> bool {
        self.entries.values().any(|e| e.in_flight)
    }

    #[cfg(test)]
    pub(crate) fn next_of(&self, label: &str) -> Option<usize> {
        self.entries.get(label).map(|e| e.next)
    }

    #[cfg(test)]
    pub(crate) fn insert(
        &mut self,
        label: &str,
        name: &str,
        port: u16,
        addrs: Vec<SocketAddr>,
        now: Instant,
    ) {
        self.entries.insert(
            Arc::from(label),
            Entry {
                name: name.to_string(),
                port,
                addrs,
                next: 0,
                resolved_at: Some(now),
                in_flight: false,
                failures: 0,
                waiting: Vec::new(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers in the order given, counting the lookups.
    fn answers(list: Vec<io::Result<Vec<SocketAddr>>>) -> (LookupFn, Arc<AtomicUsize>) {
        let list = Arc::new(Mutex::new(list.into_iter()));
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        let f: LookupFn = Arc::new(move |_: &str, _: u16| {
            counted.fetch_add(1, Ordering::SeqCst);
            list.lock().unwrap().next().unwrap_or_else(|| Err(io::Error::other("no more answers")))
        });
        (f, count)
    }

    const TOKEN: mio::Token = mio::Token(7);

    fn poller() -> (mio::Poll, Arc<Wake>) {
        let poll = mio::Poll::new().unwrap();
        let wake = Arc::new(Wake::new(poll.registry(), TOKEN).unwrap());
        (poll, wake)
    }

    /// Waits (bounded) for the resolver's wake-up and takes what finished.
    fn wait_done(poll: &mut mio::Poll, r: &mut Resolver) -> Vec<Done> {
        let mut events = mio::Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "no lookup finished");
            poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
            if events.iter().any(|e| e.token() == TOKEN) {
                let done = r.take_done(Instant::now());
                if !done.is_empty() {
                    return done;
                }
            }
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn parked_connections_get_the_answer_and_others_use_the_cache() {
        let (f, count) = answers(vec![Ok(vec![addr(1), addr(1), addr(2)])]);
        let (mut poll, wake) = poller();
        let mut r = Resolver::new(f);
        let label: Arc<str> = Arc::from("d.local:80");
        let (k1, k2) = (Key::for_test(1, 0), Key::for_test(2, 0));
        let now = Instant::now();
        assert!(matches!(
            r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k1, now),
            Answer::Pending
        ));
        assert!(matches!(
            r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k2, now),
            Answer::Pending
        ));
        let done = wait_done(&mut poll, &mut r);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].waiting, vec![k1, k2]);
        assert_eq!(done[0].result.as_ref().ok(), Some(&addr(1)));
        // Cached (duplicates dropped): no second lookup.
        let k3 = Key::for_test(3, 0);
        assert!(
            matches!(r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k3, now), Answer::Addr(a) if a == addr(1))
        );
        assert_eq!(r.failed("d.local:80", 1), Some(addr(2)), "the second address is next");
        assert_eq!(r.failed("d.local:80", 2), None, "both tried");
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // Both failed in a row: the next connection waits for a new lookup.
        assert!(matches!(
            r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k3, now),
            Answer::Pending
        ));
        assert!(r.has_pending_lookup());
        let done = wait_done(&mut poll, &mut r);
        assert_eq!((done[0].waiting.as_slice(), count.load(Ordering::SeqCst)), (&[k3][..], 2));
    }

    #[test]
    fn a_stale_answer_is_used_while_it_is_refreshed_and_kept_if_the_refresh_fails() {
        let (f, count) = answers(vec![Ok(vec![addr(1)]), Err(io::Error::other("name server down"))]);
        let (mut poll, wake) = poller();
        let mut r = Resolver::new(f);
        let label: Arc<str> = Arc::from("d.local:80");
        let k = Key::for_test(1, 0);
        let t0 = Instant::now();
        assert!(matches!(r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k, t0), Answer::Pending));
        wait_done(&mut poll, &mut r);
        // Past the refresh age: the cached address now, a lookup in the background.
        let later = Instant::now() + REFRESH_AFTER;
        assert!(
            matches!(r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k, later), Answer::Addr(a) if a == addr(1))
        );
        let done = wait_done(&mut poll, &mut r);
        assert!(done[0].waiting.is_empty());
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // The refresh failed: the address stays, and counts as fresh again.
        assert!(
            matches!(r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k, later), Answer::Addr(a) if a == addr(1))
        );
        assert!(!r.has_pending_lookup());
    }

    /// A lookup that hangs holds nothing of its client's: once the client lets go of its
    /// waker, the eventfd is closed, though the thread still waits in the lookup.
    #[test]
    fn a_hanging_lookup_does_not_keep_the_waker_alive() {
        let (release, hold) = mpsc::channel::<()>();
        let hold = Mutex::new(hold);
        let f: LookupFn = Arc::new(move |_: &str, _: u16| {
            let _ = hold.lock().unwrap().recv_timeout(Duration::from_secs(10));
            Ok(vec![addr(1)])
        });
        let (_poll, wake) = poller();
        let mut r = Resolver::new(f);
        let label: Arc<str> = Arc::from("d.local:80");
        let k = Key::for_test(1, 0);
        assert!(matches!(
            r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k, Instant::now()),
            Answer::Pending
        ));
        assert!(r.has_pending_lookup());
        assert_eq!(Arc::strong_count(&wake), 1, "the lookup thread holds no strong reference");
        let weak = Arc::downgrade(&wake);
        drop((r, wake));
        assert!(weak.upgrade().is_none(), "the waker (and its eventfd) is gone");
        release.send(()).unwrap();
    }

    #[test]
    fn without_a_waker_the_lookup_runs_here() {
        let (f, count) = answers(vec![Ok(vec![addr(1)])]);
        let mut r = Resolver::new(f);
        let label: Arc<str> = Arc::from("d.local:80");
        let k = Key::for_test(1, 0);
        assert!(matches!(r.resolve(None, &label, "d.local", 80, k, Instant::now()), Answer::Pending));
        assert!(r.has_inline());
        let done = r.take_done(Instant::now());
        assert_eq!((done[0].waiting.as_slice(), done[0].result.as_ref().ok()), (&[k][..], Some(&addr(1))));
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_forgotten_connection_is_not_handed_back() {
        let (f, _) = answers(vec![Ok(vec![addr(1)])]);
        let (mut poll, wake) = poller();
        let mut r = Resolver::new(f);
        let label: Arc<str> = Arc::from("d.local:80");
        let (k1, k2) = (Key::for_test(1, 0), Key::for_test(2, 0));
        let now = Instant::now();
        let _ = r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k1, now);
        let _ = r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k2, now);
        r.forget(k1);
        let done = wait_done(&mut poll, &mut r);
        assert_eq!(done[0].waiting, vec![k2]);
        assert_eq!(r.parked, 0);
    }
}
