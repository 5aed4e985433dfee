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
//!
//! Everything here is bounded, because names come from the caller (who may feed the client
//! arbitrary host names) and lookups from a resolver that may hang:
//!
//! - at most [`MAX_NAMES`] names are cached; a new name beyond that evicts the least recently
//!   used one with no connection waiting for it, and a name unused for [`IDLE_EXPIRY`] is
//!   dropped (swept at most every [`SWEEP_EVERY`]);
//! - a lookup still running after [`LOOKUP_GIVE_UP`] is abandoned: the next connect to the
//!   name starts a new one (the connections already waiting keep waiting, now for either); a
//!   late answer from the abandoned lookup is used only if it found addresses and no newer
//!   answer has been filed for the name since (see [`Resolver::take_done`]);
//! - at most [`MAX_LOOKUP_THREADS`] lookup threads are alive at once, abandoned ones included
//!   (each is a thread stuck in `getaddrinfo` until it returns: it cannot be cancelled); when
//!   they are all taken, a lookup a connection would wait for fails at once with an
//!   [`io::ErrorKind::ResourceBusy`] error instead of spawning another, and a background
//!   refresh is skipped (the cached addresses stay in use).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::driver::Wake;
use crate::proto::slab::Key;

/// How long an answer is used before the name is looked up again (in the background).
pub(crate) const REFRESH_AFTER: Duration = Duration::from_secs(60);

/// Names cached at most (per client). A control loop talks to tens of devices, a plant to a
/// few hundred: 1024 keeps every one of them, while a caller feeding the client arbitrary
/// names (or a bug that builds a new name per request) costs at most about 1024 entries of a
/// few hundred bytes. Beyond it, the least recently used name without a connection waiting
/// for its lookup is evicted (its next connect looks it up again).
pub(crate) const MAX_NAMES: usize = 1024;

/// A name not used for this long is dropped from the cache. Its answer was refreshed at most
/// [`REFRESH_AFTER`] after its last use, so by now it is old; kept, it would only serve as the
/// fallback when a later lookup fails. An hour keeps the devices of a loop that polls every
/// few minutes, and forgets names used once.
pub(crate) const IDLE_EXPIRY: Duration = Duration::from_secs(60 * 60);

/// How often (at most) the cache is swept for names past [`IDLE_EXPIRY`]: a sweep walks every
/// entry, so not on every connect.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A lookup running longer than this is abandoned: the next connect to the name starts a new
/// one. A constant, not the connect timeout of the connections waiting: the resolver does not
/// know it (the engine enforces it on each waiting connection, which fails on its own
/// timeout meanwhile), and a lookup is shared by connections with different timeouts. 10 s
/// is twice glibc's default per-query timeout (`options timeout:5` in resolv.conf, RES_TIMEOUT)
/// and twice nss-mdns' 5 s: a lookup that gets past one dead name server and is answered by
/// the next is not abandoned, while one stuck on an mDNS name nobody answers, or in a
/// caller's resolver that blocks, stops holding up its name after 10 s instead of until it
/// returns (minutes, or never). Starting a new lookup sooner would mostly ask the same dead
/// server again, at the cost of another thread.
pub(crate) const LOOKUP_GIVE_UP: Duration = Duration::from_secs(10);

/// Lookup threads alive at once (per client), abandoned ones included. A thread stuck in
/// `getaddrinfo` cannot be cancelled: without a bound, a resolver that hangs would make the
/// client spawn a thread per name (and one per name every [`LOOKUP_GIVE_UP`]) without end.
/// 64 lets that many distinct names be looked up at once (a loop starting up with all its
/// devices) and caps a hung resolver's cost at 64 parked threads.
pub(crate) const MAX_LOOKUP_THREADS: usize = 64;

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
    /// The lookup running for the name (the newest, if older ones were abandoned).
    running: Option<Running>,
    /// The sequence number of the lookup whose answer was filed last (0: none yet): an older
    /// lookup's late answer never replaces it.
    filed: u64,
    /// When a connection last asked for the name (for eviction and expiry).
    last_used: Instant,
    /// Connects that failed in a row (any address) since the last lookup; as many as there are
    /// addresses: look up again.
    failures: usize,
    /// Connections parked until the running lookup answers.
    waiting: Vec<Key>,
}

/// A lookup on its way.
#[derive(Clone, Copy)]
struct Running {
    seq: u64,
    started: Instant,
}

impl Entry {
    fn new(name: &str, port: u16, now: Instant) -> Entry {
        Entry {
            name: name.to_string(),
            port,
            addrs: Vec::new(),
            next: 0,
            resolved_at: None,
            running: None,
            filed: 0,
            last_used: now,
            failures: 0,
            waiting: Vec::new(),
        }
    }

    fn all_failed(&self) -> bool {
        !self.addrs.is_empty() && self.failures >= self.addrs.len()
    }
}

/// What a lookup thread sends back.
struct Finished {
    label: Arc<str>,
    /// Which lookup of the name this is (see [`Entry::running`], [`Entry::filed`]).
    seq: u64,
    result: io::Result<Vec<SocketAddr>>,
}

/// Counts a lookup thread as alive until dropped (when the lookup returns, or unwinds).
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) struct Resolver {
    entries: HashMap<Arc<str>, Entry>,
    lookup: LookupFn,
    /// Connections parked across all entries (0: closing a socket need not look for one).
    parked: usize,
    /// Answers of lookups that ran on the loop thread (no background possible), or that could
    /// not start (no thread left), not yet filed.
    inline: Vec<Finished>,
    /// Connections refused at once (the cache is full of names with connections waiting).
    refused: Vec<Done>,
    /// Where lookup threads send their answers.
    tx: mpsc::Sender<Finished>,
    rx: mpsc::Receiver<Finished>,
    /// The last lookup's sequence number.
    seq: u64,
    /// Lookup threads alive (see [`MAX_LOOKUP_THREADS`]).
    threads: Arc<AtomicUsize>,
    /// When the cache is next swept for expired names.
    next_sweep: Option<Instant>,
}

impl Resolver {
    pub(crate) fn new(lookup: LookupFn) -> Resolver {
        let (tx, rx) = mpsc::channel();
        Resolver {
            entries: HashMap::new(),
            lookup,
            parked: 0,
            inline: Vec::new(),
            refused: Vec::new(),
            tx,
            rx,
            seq: 0,
            threads: Arc::new(AtomicUsize::new(0)),
            next_sweep: None,
        }
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
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.sweep(now);
        }
        if !self.entries.contains_key(label) && !self.make_room() {
            // Every cached name has connections waiting for its lookup (more names than there
            // can be lookup threads: not expected, but bounded all the same).
            log::warn!("{label}: {MAX_NAMES} names are being looked up; not caching another");
            let source =
                io::Error::new(io::ErrorKind::ResourceBusy, "too many host names being looked up at once");
            self.refused.push(Done { label: Arc::clone(label), result: Err(source), waiting: vec![key] });
            return Answer::Pending;
        }
        let entry = self.entries.entry(Arc::clone(label)).or_insert_with(|| Entry::new(name, port, now));
        entry.last_used = now;
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
        // A lookup that hangs gives up its name after a while: a new one may start.
        if let Some(run) = entry.running
            && now.saturating_duration_since(run.started) >= LOOKUP_GIVE_UP
        {
            log::warn!(
                "{label}: the name lookup has not answered in {:?}; starting another",
                now.saturating_duration_since(run.started)
            );
            entry.running = None;
        }
        if entry.running.is_none() {
            self.seq += 1;
            entry.running = Some(Running { seq: self.seq, started: now });
            self.start(wake, Arc::clone(label), self.seq);
        }
        cached.map_or(Answer::Pending, Answer::Addr)
    }

    /// A lookup ran on the loop thread (no background possible), or a connection was refused
    /// at once: the answer waits in [`Resolver::take_done`], to be taken at once.
    pub(crate) fn has_inline(&self) -> bool {
        !self.inline.is_empty() || !self.refused.is_empty()
    }

    /// Starts lookup `seq` of `label`'s name: on a thread of its own, which wakes the loop when
    /// it is done; where that is not possible, here. With [`MAX_LOOKUP_THREADS`] alive, a
    /// lookup connections wait for fails at once, and a refresh is not started.
    fn start(&mut self, wake: Option<Arc<Wake>>, label: Arc<str>, seq: u64) {
        let Some(e) = self.entries.get_mut(&label) else { return };
        let (name, port) = (e.name.clone(), e.port);
        if let Some(wake) = wake {
            if self.threads.load(Ordering::SeqCst) >= MAX_LOOKUP_THREADS {
                if e.waiting.is_empty() {
                    // A refresh: the cached addresses stay in use; the next connect asks again.
                    log::debug!("{label}: {MAX_LOOKUP_THREADS} name lookups running; not refreshing now");
                    e.running = None;
                } else {
                    log::warn!(
                        "{label}: {MAX_LOOKUP_THREADS} name lookups running (some hung?); not starting another"
                    );
                    let result = Err(io::Error::new(
                        io::ErrorKind::ResourceBusy,
                        format!("{MAX_LOOKUP_THREADS} name lookups already running (a resolver that hangs?)"),
                    ));
                    self.inline.push(Finished { label, seq, result });
                }
                return;
            }
            let (tx, lookup) = (self.tx.clone(), Arc::clone(&self.lookup));
            let (label2, name2) = (Arc::clone(&label), name.clone());
            // Weak: a lookup that hangs (an mDNS name nobody answers, a caller's resolver that
            // blocks) must not keep a dropped client's eventfd open until it returns.
            let wake = Arc::downgrade(&wake);
            self.threads.fetch_add(1, Ordering::SeqCst);
            let alive = Alive(Arc::clone(&self.threads));
            let job = move || {
                // Counted until the lookup returns (or panics): a thread that is only sending
                // its answer is not the kind the bound is for.
                let result = {
                    let _alive = alive;
                    lookup(&name2, port)
                };
                // The client is gone if the channel or the waker is: nobody to wake.
                if tx.send(Finished { label: label2, seq, result }).is_ok()
                    && let Some(wake) = wake.upgrade()
                {
                    let _ = wake.lookup_done();
                }
            };
            // A failed spawn drops `job`, and `alive` with it: the count is given back.
            match std::thread::Builder::new().name("finwatch-resolve".into()).spawn(job) {
                Ok(_) => return,
                Err(e) => log::warn!("{label}: no thread for the name lookup ({e}); looking up here"),
            }
        }
        let result = (self.lookup)(&name, port);
        self.inline.push(Finished { label, seq, result });
    }

    /// The lookups that finished (the loop was woken for one, or one ran inline). A late
    /// answer from an abandoned lookup ([`LOOKUP_GIVE_UP`]) is filed only if it found
    /// addresses and no newer lookup of the name has answered since: it is then the freshest
    /// answer there is, and the connections waiting need not wait for the newer lookup (which
    /// may hang just the same); its failure, or an answer older than the one filed, is dropped.
    /// So a resolver that is slow, not stuck, still gets its names resolved.
    pub(crate) fn take_done(&mut self, now: Instant) -> Vec<Done> {
        let mut done = std::mem::take(&mut self.refused);
        let mut finished: Vec<Finished> = std::mem::take(&mut self.inline);
        finished.extend(self.rx.try_iter());
        done.extend(finished.into_iter().filter_map(|f| self.finish(f, now)));
        done
    }

    /// Files a lookup's answer and hands back the connections that waited for it; `None` for
    /// an answer nobody is waiting for (see [`Resolver::take_done`]).
    fn finish(&mut self, f: Finished, now: Instant) -> Option<Done> {
        let Some(e) = self.entries.get_mut(&f.label) else {
            log::debug!("{}: a lookup answered for a name no longer cached", f.label);
            return None;
        };
        if e.running.is_some_and(|r| r.seq == f.seq) {
            e.running = None;
        } else {
            let useful = f.seq > e.filed && f.result.as_ref().is_ok_and(|a| !a.is_empty());
            log::debug!(
                "{}: an abandoned lookup answered late ({}); {}",
                f.label,
                if f.result.is_ok() { "found" } else { "failed" },
                if useful { "used" } else { "ignored" }
            );
            if !useful {
                return None;
            }
        }
        e.filed = e.filed.max(f.seq);
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
        Some(Done { label: f.label, result, waiting })
    }

    /// Drops the names unused for [`IDLE_EXPIRY`] (but none a connection waits for).
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = Some(now + SWEEP_EVERY);
        self.entries
            .retain(|_, e| !e.waiting.is_empty() || now.saturating_duration_since(e.last_used) < IDLE_EXPIRY);
    }

    /// Makes room for one more name: evicts the least recently used name that no connection
    /// waits for, if the cache is full. `false`: full of names connections wait for.
    fn make_room(&mut self) -> bool {
        if self.entries.len() < MAX_NAMES {
            return true;
        }
        // A walk over at most MAX_NAMES entries, only when a new name meets a full cache: a
        // fraction of what the new name's lookup costs (a thread, a query).
        let oldest = self
            .entries
            .iter()
            .filter(|(_, e)| e.waiting.is_empty())
            .min_by_key(|(_, e)| e.last_used)
            .map(|(label, _)| Arc::clone(label));
        match oldest {
            Some(label) => {
                log::debug!("{label}: evicted from the name cache ({MAX_NAMES} names)");
                self.entries.remove(&label);
                true
            }
            None => false,
        }
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
        self.entries.values().any(|e| e.running.is_some())
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
        let mut e = Entry::new(name, port, now);
        e.addrs = addrs;
        e.resolved_at = Some(now);
        self.entries.insert(Arc::from(label), e);
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
        let wake = Arc::new(Wake::new(Box::new(mio::Waker::new(poll.registry(), TOKEN).unwrap())));
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

    /// A lookup that blocks until the test opens its gate (bounded: a failing test does not
    /// leave threads behind for long). The gate is shared by every call.
    struct Gate(Mutex<bool>, std::sync::Condvar);

    impl Gate {
        fn new() -> Arc<Gate> {
            Arc::new(Gate(Mutex::new(false), std::sync::Condvar::new()))
        }

        fn wait(&self) {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut open = self.0.lock().unwrap();
            while !*open && Instant::now() < deadline {
                open = self.1.wait_timeout(open, Duration::from_millis(100)).unwrap().0;
            }
        }

        fn open(&self) {
            *self.0.lock().unwrap() = true;
            self.1.notify_all();
        }
    }

    /// Waits (bounded) for one wake-up of the resolver and takes what finished: possibly
    /// nothing (an answer that was ignored).
    fn wait_wake(poll: &mut mio::Poll, r: &mut Resolver) -> Vec<Done> {
        let mut events = mio::Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "no lookup answered");
            poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
            if events.iter().any(|e| e.token() == TOKEN) {
                return r.take_done(Instant::now());
            }
        }
    }

    /// Waits (bounded) until `calls` lookups have started (so that which lookup hangs does not
    /// depend on which thread runs first).
    fn wait_calls(calls: &AtomicUsize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while calls.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the lookup did not start");
            std::thread::yield_now();
        }
    }

    /// Waits (bounded) until no lookup thread is alive.
    fn wait_threads_gone(r: &Resolver) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.threads.load(Ordering::SeqCst) > 0 {
            assert!(Instant::now() < deadline, "lookup threads still alive");
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let f: LookupFn = Arc::new(|_: &str, port: u16| Ok(vec![addr(port)]));
        let (_poll, wake) = poller();
        let gate = Gate::new();
        let g = Arc::clone(&gate);
        let hung: LookupFn = Arc::new(move |_: &str, _: u16| {
            g.wait();
            Ok(vec![addr(9)])
        });
        // One name whose lookup hangs, with a connection waiting: never evicted.
        let mut r = Resolver::new(hung);
        let held: Arc<str> = Arc::from("held.local:80");
        let kh = Key::for_test(1, 0);
        let t0 = Instant::now();
        assert!(matches!(
            r.resolve(Some(Arc::clone(&wake)), &held, "held.local", 80, kh, t0),
            Answer::Pending
        ));
        r.lookup = f;
        for i in 0..10_000u32 {
            let label: Arc<str> = Arc::from(format!("d{i}.local:80"));
            let k = Key::for_test(2, 0);
            // Inline lookups (no waker): no thread per name.
            let now = t0 + Duration::from_millis(u64::from(i));
            assert!(matches!(r.resolve(None, &label, &format!("d{i}.local"), 80, k, now), Answer::Pending));
            let done = r.take_done(now);
            assert_eq!((done.len(), done[0].waiting.as_slice()), (1, &[k][..]));
            assert!(r.entries.len() <= MAX_NAMES, "{} names cached", r.entries.len());
        }
        assert_eq!(r.entries.len(), MAX_NAMES);
        assert!(r.entries.contains_key(&held), "the name a connection waits for stays");
        // The most recent names are the ones kept.
        assert!(r.entries.contains_key("d9999.local:80") && !r.entries.contains_key("d0.local:80"));
        gate.open();
        wait_threads_gone(&r);
    }

    #[test]
    fn names_unused_for_a_long_while_expire() {
        let (f, count) = answers(vec![Ok(vec![addr(1)]), Ok(vec![addr(2)]), Ok(vec![addr(3)])]);
        let mut r = Resolver::new(f);
        let t0 = Instant::now();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a.local:80"), Arc::from("b.local:80"));
        let k = Key::for_test(1, 0);
        let _ = r.resolve(None, &a, "a.local", 80, k, t0);
        let _ = r.resolve(None, &b, "b.local", 80, k, t0);
        r.take_done(t0);
        // `a` is used again within the hour (a refresh: stale), `b` is not.
        let t1 = t0 + IDLE_EXPIRY / 2;
        assert!(matches!(r.resolve(None, &a, "a.local", 80, k, t1), Answer::Addr(x) if x == addr(1)));
        r.take_done(t1);
        let t2 = t0 + IDLE_EXPIRY + SWEEP_EVERY;
        assert!(matches!(r.resolve(None, &a, "a.local", 80, k, t2), Answer::Addr(_)));
        assert!(r.entries.contains_key(&a) && !r.entries.contains_key(&b), "b expired");
        // a, b, a's two refreshes.
        assert_eq!(count.load(Ordering::SeqCst), 4);
        // `b` is looked up afresh: the connection waits for it.
        assert!(matches!(r.resolve(None, &b, "b.local", 80, k, t2), Answer::Pending));
    }

    /// The first lookup of a name hangs; after [`LOOKUP_GIVE_UP`] a connect to the name starts
    /// a second, whose answer reaches every connection waiting (those that came before it
    /// too). The hung lookup's late answer is older than the one filed: ignored.
    #[test]
    fn a_hung_lookup_does_not_hold_up_its_name_past_the_limit() {
        let gate = Gate::new();
        let (g, calls) = (Arc::clone(&gate), Arc::new(AtomicUsize::new(0)));
        let c = Arc::clone(&calls);
        let f: LookupFn = Arc::new(move |_: &str, _: u16| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                g.wait();
                return Ok(vec![addr(1)]);
            }
            Ok(vec![addr(2)])
        });
        let (mut poll, wake) = poller();
        let mut r = Resolver::new(f);
        let label: Arc<str> = Arc::from("d.local:80");
        let (k1, k2, k3) = (Key::for_test(1, 0), Key::for_test(2, 0), Key::for_test(3, 0));
        let t0 = Instant::now();
        let w = || Some(Arc::clone(&wake));
        assert!(matches!(r.resolve(w(), &label, "d.local", 80, k1, t0), Answer::Pending));
        wait_calls(&calls, 1);
        // Before the limit: the second connection waits on the same lookup.
        let early = t0 + LOOKUP_GIVE_UP - Duration::from_millis(1);
        assert!(matches!(r.resolve(w(), &label, "d.local", 80, k2, early), Answer::Pending));
        assert_eq!(r.threads.load(Ordering::SeqCst), 1, "no second lookup yet");
        // At the limit: a new lookup, which answers.
        assert!(matches!(r.resolve(w(), &label, "d.local", 80, k3, t0 + LOOKUP_GIVE_UP), Answer::Pending));
        let done = wait_done(&mut poll, &mut r);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].waiting, vec![k1, k2, k3]);
        assert_eq!(done[0].result.as_ref().ok(), Some(&addr(2)));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // The hung lookup returns at last: its answer is older than the one filed.
        gate.open();
        assert!(wait_wake(&mut poll, &mut r).is_empty(), "the late answer is ignored");
        let later = t0 + LOOKUP_GIVE_UP;
        assert!(matches!(r.resolve(w(), &label, "d.local", 80, k1, later), Answer::Addr(a) if a == addr(2)));
        assert!(!r.has_pending_lookup());
        wait_threads_gone(&r);
    }

    /// Both lookups hang; the first (abandoned) answers first: nothing newer was filed, so
    /// its addresses serve the waiting connections, and the second's answer, later, too.
    #[test]
    fn a_late_answer_is_used_when_nothing_newer_came() {
        let (first, second) = (Gate::new(), Gate::new());
        let (g1, g2, calls) = (Arc::clone(&first), Arc::clone(&second), Arc::new(AtomicUsize::new(0)));
        let c = Arc::clone(&calls);
        let f: LookupFn = Arc::new(move |_: &str, _: u16| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                g1.wait();
                Ok(vec![addr(1)])
            } else {
                g2.wait();
                Ok(vec![addr(2)])
            }
        });
        let (mut poll, wake) = poller();
        let mut r = Resolver::new(f);
        let label: Arc<str> = Arc::from("d.local:80");
        let (k1, k2) = (Key::for_test(1, 0), Key::for_test(2, 0));
        let t0 = Instant::now();
        let _ = r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k1, t0);
        wait_calls(&calls, 1);
        let _ = r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k2, t0 + LOOKUP_GIVE_UP);
        assert_eq!(r.threads.load(Ordering::SeqCst), 2);
        first.open();
        let done = wait_done(&mut poll, &mut r);
        assert_eq!(
            (done[0].waiting.as_slice(), done[0].result.as_ref().ok()),
            (&[k1, k2][..], Some(&addr(1)))
        );
        assert!(r.has_pending_lookup(), "the newer lookup still runs");
        second.open();
        let done = wait_done(&mut poll, &mut r);
        assert!(done[0].waiting.is_empty());
        assert_eq!(r.next_of("d.local:80"), Some(0));
        assert!(matches!(
            r.resolve(Some(Arc::clone(&wake)), &label, "d.local", 80, k1, t0 + LOOKUP_GIVE_UP),
            Answer::Addr(a) if a == addr(2)
        ));
        wait_threads_gone(&r);
    }

    /// With every lookup thread taken by a hung resolver, a new name fails at once (no new
    /// thread), a name with a stale answer keeps using it, and once the threads return new
    /// lookups start again.
    #[test]
    fn lookup_threads_are_bounded() {
        let gate = Gate::new();
        let g = Arc::clone(&gate);
        let f: LookupFn = Arc::new(move |_: &str, port: u16| {
            g.wait();
            Ok(vec![addr(port)])
        });
        let (mut poll, wake) = poller();
        let mut r = Resolver::new(f);
        let t0 = Instant::now();
        // A name answered long ago (stale): refreshed in the background when used.
        r.insert("old.local:80", "old.local", 80, vec![addr(80)], t0);
        for i in 0..MAX_LOOKUP_THREADS {
            let label: Arc<str> = Arc::from(format!("d{i}.local:{}", i + 1));
            let k = Key::for_test(i as u32, 0);
            let port = u16::try_from(i + 1).unwrap();
            let a = r.resolve(Some(Arc::clone(&wake)), &label, &format!("d{i}.local"), port, k, t0);
            assert!(matches!(a, Answer::Pending) && !r.has_inline());
        }
        assert_eq!(r.threads.load(Ordering::SeqCst), MAX_LOOKUP_THREADS);
        // One more name: refused at once, with a clear error, and no thread.
        let extra: Arc<str> = Arc::from("extra.local:80");
        let k = Key::for_test(1000, 0);
        let a = r.resolve(Some(Arc::clone(&wake)), &extra, "extra.local", 80, k, t0);
        assert!(matches!(a, Answer::Pending) && r.has_inline());
        let done = r.take_done(t0);
        assert_eq!(done[0].waiting, vec![k]);
        let err = done[0].result.as_ref().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
        assert!(err.to_string().contains("name lookups already running"), "{err}");
        assert_eq!(r.threads.load(Ordering::SeqCst), MAX_LOOKUP_THREADS);
        // A stale name is not refreshed now, but its address is used.
        let old: Arc<str> = Arc::from("old.local:80");
        let later = t0 + REFRESH_AFTER;
        let a = r.resolve(Some(Arc::clone(&wake)), &old, "old.local", 80, k, later);
        assert!(matches!(a, Answer::Addr(x) if x == addr(80)) && !r.has_inline());
        assert_eq!(r.threads.load(Ordering::SeqCst), MAX_LOOKUP_THREADS);
        // The resolver comes back: every waiting connection gets its answer.
        gate.open();
        let mut answered = 0;
        while answered < MAX_LOOKUP_THREADS {
            answered += wait_wake(&mut poll, &mut r).iter().filter(|d| d.result.is_ok()).count();
        }
        wait_threads_gone(&r);
        let a = r.resolve(Some(Arc::clone(&wake)), &extra, "extra.local", 80, k, t0);
        assert!(matches!(a, Answer::Pending) && !r.has_inline());
        let done = wait_done(&mut poll, &mut r);
        assert_eq!(done[0].result.as_ref().ok(), Some(&addr(80)));
    }
}
