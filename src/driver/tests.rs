//! The driver over the real kernel, on loopback.
use super::connect::ip_literal;
use super::*;
use crate::Request;
use crate::proto::engine::Config;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Reads one request head (no body) from `s`, within a deadline.
fn read_head(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "request cut short");
        head.push(b[0]);
    }
}

/// Turns the loop until `id` completes (bounded: the request's own deadline).
fn run_until_done(d: &mut Driver, e: &mut Engine) -> crate::Result<crate::Response> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no completion");
        d.turn(e, Some(Instant::now() + Duration::from_millis(10)), false).unwrap();
        if let Some(c) = e.poll_completion() {
            return c.result;
        }
    }
}

/// Accepts one connection within a deadline (never blocks a failing test for ever).
fn accept_within(l: &TcpListener, within: Duration) -> Option<TcpStream> {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return Some(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

/// A host name whose first address refuses the connection (a `localhost` that resolves to
/// `::1` first, with the device listening on 127.0.0.1 only): the connect moves on to the
/// next address within the same connection, and later connections start with the one that
/// worked.
#[test]
fn a_refused_address_of_a_name_falls_back_to_the_next() {
    let mut d = Driver::new().unwrap();
    let mut e = Engine::new(Config::default());
    let device = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = device.local_addr().unwrap().port();
    let refusing = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed again
    let label = format!("multi.test:{port}");
    d.resolver.insert(
        &label,
        "multi.test",
        port,
        vec![refusing, device.local_addr().unwrap()],
        Instant::now(),
    );
    e.submit(&Request::get(&format!("http://multi.test:{port}/io")).build().unwrap(), Instant::now());
    let server = std::thread::spawn(move || {
        let mut s = accept_within(&device, Duration::from_secs(5)).expect("no connection came");
        read_head(&mut s);
        s.write_all(OK).unwrap();
        s
    });
    assert_eq!(run_until_done(&mut d, &mut e).unwrap().status(), 200, "{:?}", e.stats());
    server.join().unwrap();
    assert_eq!((e.stats().connects, e.stats().connect_failures), (1, 0));
    assert_eq!(d.resolver.next_of(&label), Some(1), "new connections start with the address that worked");
}

#[test]
fn ip_literals_with_zones() {
    let v6 = |r: Option<io::Result<SocketAddr>>| match r {
        Some(Ok(SocketAddr::V6(a))) => (a.ip().to_string(), a.port(), a.scope_id()),
        other => panic!("{other:?}"),
    };
    assert_eq!(v6(ip_literal("fe80::1%7", 80)), ("fe80::1".to_string(), 80, 7));
    assert!(matches!(ip_literal("10.0.0.5", 8080), Some(Ok(SocketAddr::V4(_)))));
    assert!(ip_literal("device.local", 80).is_none(), "a name is the resolver's");
    assert!(ip_literal("10.0.0.5%eth0", 80).is_none(), "zones are IPv6 only");
    if cfg!(target_os = "linux") {
        let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/ifindex").unwrap().trim().parse().unwrap();
        assert_eq!(v6(ip_literal("fe80::1%lo", 80)).2, lo);
        match ip_literal("fe80::1%nosuchif0", 80) {
            Some(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }
}

/// Turns the loop until `n` requests have completed (bounded by a deadline).
fn run_until_n(d: &mut Driver, e: &mut Engine, n: usize) -> Vec<crate::proto::engine::Completion> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut done = Vec::new();
    while done.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} completions", done.len());
        d.turn(e, Some(Instant::now() + Duration::from_millis(10)), false).unwrap();
        while let Some(c) = e.poll_completion() {
            done.push(c);
        }
    }
    done
}

/// A device that answers one request on its own thread.
fn answer_one(device: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut s = accept_within(&device, Duration::from_secs(5)).expect("no connection came");
        read_head(&mut s);
        s.write_all(OK).unwrap();
    })
}

/// A resolver the test controls: `name` resolves to what the test sends (each lookup takes
/// the next answer, waiting for it up to 10 s); it counts the lookups.
fn scripted_lookup(
    name: &'static str,
) -> (LookupFn, mpsc::Sender<io::Result<Vec<SocketAddr>>>, Arc<AtomicUsize>) {
    let (tx, rx) = mpsc::channel::<io::Result<Vec<SocketAddr>>>();
    let rx = Arc::new(Mutex::new(rx));
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    let lookup: LookupFn = Arc::new(move |host: &str, _port: u16| {
        assert_eq!(host, name);
        counted.fetch_add(1, Ordering::SeqCst);
        let answer = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
        answer.unwrap_or_else(|_| Err(io::Error::other("the test sent no answer")))
    });
    (lookup, tx, count)
}

/// A name lookup that hangs (an mDNS name of a device that is switched off) holds up
/// neither the commands to other devices nor its own deadline: it runs off the loop, and
/// the connection waiting for it fails at its connect timeout. Its late answer is kept for
/// the next connection to the name.
#[test]
fn a_hanging_name_lookup_holds_up_neither_other_devices_nor_its_deadline() {
    const CONNECT_TIMEOUT: Duration = Duration::from_millis(150);
    let (lookup, answer, lookups) = scripted_lookup("device.local");
    let mut d = Driver::with(64, lookup).unwrap();
    let mut e = Engine::new(Config { connect_timeout: CONNECT_TIMEOUT, ..Config::default() });
    let (named, other) =
        (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
    let named_port = named.local_addr().unwrap().port();
    let start = Instant::now();
    let stuck =
        e.submit(&Request::get(&format!("http://device.local:{named_port}/io")).build().unwrap(), start);
    let ok = e
        .submit(&Request::get(&format!("http://{}/io", other.local_addr().unwrap())).build().unwrap(), start);
    let server = answer_one(other);
    let done = run_until_n(&mut d, &mut e, 2);
    server.join().unwrap();
    let result = |id| &done.iter().find(|c| c.id == id).unwrap().result;
    assert_eq!(result(ok).as_ref().map(|r| r.status()).ok(), Some(200));
    match result(stuck) {
        Err(Error::Resolve { host, source }) => {
            assert_eq!(host, &format!("device.local:{named_port}"));
            assert_eq!(source.kind(), io::ErrorKind::TimedOut);
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < CONNECT_TIMEOUT * 10, "the deadline held: {:?}", start.elapsed());

    // The answer comes late; the next connection to the name uses it, without a new lookup.
    answer.send(Ok(vec![named.local_addr().unwrap()])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.resolver.has_pending_lookup() {
        assert!(Instant::now() < deadline, "the late answer never arrived");
        d.turn(&mut e, Some(Instant::now() + Duration::from_millis(10)), false).unwrap();
    }
    assert!(!d.take_woken(), "a lookup's wake-up is not the caller's");
    e.submit(&Request::get(&format!("http://device.local:{named_port}/io")).build().unwrap(), Instant::now());
    let server = answer_one(named);
    assert_eq!(run_until_done(&mut d, &mut e).unwrap().status(), 200, "{:?}", e.stats());
    server.join().unwrap();
    assert_eq!(lookups.load(Ordering::SeqCst), 1);
}

/// The first connection to `device.local` gets `first` from the resolver and fails (its
/// error returned); the second gets a working address: it must ask the resolver again.
fn fails_then_is_looked_up_again(first: io::Result<Vec<SocketAddr>>) -> Error {
    let (lookup, answer, lookups) = scripted_lookup("device.local");
    let mut d = Driver::with(64, lookup).unwrap();
    let mut e = Engine::new(Config::default());
    let device = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = "http://device.local:8080/io";
    answer.send(first).unwrap();
    e.submit(&Request::get(url).build().unwrap(), Instant::now());
    let err = run_until_done(&mut d, &mut e).expect_err("the first connection must fail");
    assert_eq!(lookups.load(Ordering::SeqCst), 1);

    answer.send(Ok(vec![device.local_addr().unwrap()])).unwrap();
    e.submit(&Request::get(url).build().unwrap(), Instant::now());
    let server = answer_one(device);
    assert_eq!(run_until_done(&mut d, &mut e).unwrap().status(), 200, "{:?}", e.stats());
    server.join().unwrap();
    assert_eq!(lookups.load(Ordering::SeqCst), 2, "looked up again");
    err
}

/// A device that comes back with a new address (a reboot, a new DHCP lease) is found
/// again: once every address of its name has failed to connect, the next connection waits
/// for a new lookup instead of trying the old address for ever.
#[test]
fn a_name_is_looked_up_again_when_its_addresses_stop_answering() {
    let gone = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed again: refuses
    let err = fails_then_is_looked_up_again(Ok(vec![gone]));
    assert!(matches!(err, Error::ConnectFailed { .. }), "{err:?}");
}

/// A lookup that fails is reported as such (`Error::Resolve`, naming the host), and the
/// next connection to the name asks again.
#[test]
fn a_failed_lookup_is_reported_and_the_next_connection_asks_again() {
    match fails_then_is_looked_up_again(Err(io::Error::new(io::ErrorKind::NotFound, "no such name"))) {
        Error::Resolve { host, source } => {
            assert_eq!((host.as_str(), source.kind()), ("device.local:8080", io::ErrorKind::NotFound));
        }
        other => panic!("{other:?}"),
    }
}

/// A caller that is away for longer than the connect timeout after its request's connect
/// started (here the loop never ran after `connect`) finds, when it comes back, the
/// connection established: the poller's news counts before the overdue connect timer.
#[test]
fn a_connect_that_completed_while_the_caller_was_away_is_not_timed_out() {
    const CONNECT_TIMEOUT: Duration = Duration::from_millis(30);
    let mut d = Driver::new().unwrap();
    let mut e = Engine::new(Config { connect_timeout: CONNECT_TIMEOUT, ..Config::default() });
    let device = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/io-state", device.local_addr().unwrap());
    e.submit(&Request::get(&url).build().unwrap(), Instant::now());
    d.run_actions(&mut e, Instant::now()); // the connect starts; nothing is polled
    let (mut s, _) = device.accept().unwrap(); // the handshake is done
    let server = std::thread::spawn(move || {
        read_head(&mut s);
        s.write_all(OK).unwrap();
        s
    });
    // The caller's pause (the situation under test, not a synchronisation).
    std::thread::sleep(CONNECT_TIMEOUT * 3);
    let resp = run_until_done(&mut d, &mut e);
    assert_eq!(resp.map(|r| r.status()).ok(), Some(200), "{:?}", e.stats());
    server.join().unwrap();
    assert_eq!(e.stats().connect_failures, 0);
}

/// When the pre-write poll cannot vouch for the chosen socket (here: its event buffer is
/// full with another socket's event, ahead of the FIN in epoll's ready list), the socket is
/// peeked, and its FIN stops the write as surely as if the poll had reported it.
#[test]
fn a_full_event_buffer_falls_back_to_the_peek_and_still_stops_the_write() {
    let mut d = Driver::with(1, crate::resolve::system_lookup()).unwrap();
    let mut e = Engine::new(Config { warm_spares: false, ..Config::default() });
    let device = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = |l: &TcpListener, p: &str| format!("http://{}{p}", l.local_addr().unwrap());
    // One idle connection to each listener.
    let mut conns = Vec::new();
    for l in [&device, &other] {
        e.submit(&Request::get(&url(l, "/")).build().unwrap(), Instant::now());
        d.turn(&mut e, Some(Instant::now()), false).unwrap();
        let (mut s, _) = l.accept().unwrap();
        // Turn until the request is out, then answer it.
        let t = std::thread::spawn(move || {
            read_head(&mut s);
            s.write_all(OK).unwrap();
            s
        });
        assert_eq!(run_until_done(&mut d, &mut e).unwrap().status(), 200);
        conns.push(t.join().unwrap());
    }
    let [dev_conn, mut other_conn] = <[TcpStream; 2]>::try_from(conns).unwrap();
    // First a stray byte on the other connection, then the device's FIN on its own: both
    // queued in the client's kernel before the next command (on loopback, by the time
    // these calls return).
    other_conn.write_all(b"x").unwrap();
    dev_conn.shutdown(Shutdown::Write).unwrap();

    let next = url(&device, "/next");
    let s = next_request_on_a_new_connection(&mut d, &mut e, &next, device, dev_conn);
    assert_eq!((s.connects, s.fins_caught_by_peek, s.retries, s.failed), (3, 1, 0, 0), "{s:?}");
}

/// Sends `url` after the device closed `dev_conn` (FIN): the device must get nothing on
/// `dev_conn` but the client's close, and the request on a new connection, which it answers.
fn next_request_on_a_new_connection(
    d: &mut Driver,
    e: &mut Engine,
    url: &str,
    device: TcpListener,
    mut dev_conn: TcpStream,
) -> crate::Stats {
    e.submit(&Request::get(url).build().unwrap(), Instant::now());
    let server = std::thread::spawn(move || {
        dev_conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = dev_conn.read_to_end(&mut rest);
        let (mut s, _) = device.accept().unwrap();
        read_head(&mut s);
        s.write_all(OK).unwrap();
        rest
    });
    assert_eq!(run_until_done(d, e).unwrap().status(), 200);
    let written_after_fin = server.join().unwrap();
    assert!(written_after_fin.is_empty(), "{:?}", String::from_utf8_lossy(&written_after_fin));
    e.stats()
}

/// Busy-poll, and the adaptive spin, read the awaited socket around the poller, so the pre-write
/// check peeks the chosen socket instead of polling (epoll's ready list still holds it): a FIN
/// that arrived after the response stops the write just the same.
#[test]
fn after_a_busy_poll_read_the_pre_write_peek_stops_the_write_on_a_fin() {
    let busy = Config { warm_spares: false, busy_poll: Some(Duration::from_secs(2)), ..Config::default() };
    after_a_spin_read_the_pre_write_peek_stops_the_write_on_a_fin(busy);
}

/// The same with the adaptive spin (default on; a cap of 2 s here, so that the first wait spins
/// as long as busy-poll's budget does).
#[test]
fn after_an_adaptive_spin_read_the_pre_write_peek_stops_the_write_on_a_fin() {
    let adaptive = Config { warm_spares: false, adaptive_spin: Duration::from_secs(2), ..Config::default() };
    after_a_spin_read_the_pre_write_peek_stops_the_write_on_a_fin(adaptive);
}

fn after_a_spin_read_the_pre_write_peek_stops_the_write_on_a_fin(cfg: Config) {
    let mut d = Driver::new().unwrap();
    let mut e = Engine::new(cfg);
    let device = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = |p: &str| format!("http://{}{p}", device.local_addr().unwrap());
    e.submit(&Request::get(&url("/")).build().unwrap(), Instant::now());
    d.turn(&mut e, Some(Instant::now()), false).unwrap();
    let (mut s, _) = device.accept().unwrap();
    let (got_request, go) = (mpsc::channel(), mpsc::channel::<()>());
    let t = std::thread::spawn(move || {
        read_head(&mut s);
        got_request.0.send(()).unwrap();
        go.1.recv().unwrap();
        s.write_all(OK).unwrap();
        s
    });
    // Turn until the request is out (no response can arrive yet), then have the response
    // queued in the client's socket (on loopback, by the time `write_all` returns), so the
    // spin's first pass reads it directly (not its every-64th pass through the poller).
    let deadline = Instant::now() + Duration::from_secs(5);
    while got_request.1.try_recv().is_err() {
        assert!(Instant::now() < deadline, "the request never arrived");
        d.turn(&mut e, Some(Instant::now() + Duration::from_millis(1)), false).unwrap();
    }
    go.0.send(()).unwrap();
    let dev_conn = t.join().unwrap();
    assert_eq!(run_until_done(&mut d, &mut e).unwrap().status(), 200);
    assert!(d.read_around_poller, "the response was read by the spin, not through the poller");
    dev_conn.shutdown(Shutdown::Write).unwrap();

    let next = url("/next");
    let s = next_request_on_a_new_connection(&mut d, &mut e, &next, device, dev_conn);
    assert_eq!((s.connects, s.fins_caught_by_peek, s.retries, s.failed), (2, 1, 0, 0), "{s:?}");
}
