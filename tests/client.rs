//! The client's promises over loopback: retries without double effects, typed errors that say
//! whether the device may have acted, deadlines that hold, order per device, bad input refused.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use finwatch::{Client, Error, LostCause, Method, Request, Stage};
use support::*;

fn client() -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    Client::builder().request_timeout(Duration::from_secs(5)).build().unwrap()
}

/// A device that answers the first request on each connection and drops the connection (with
/// `after`) on reading the second, without answering it: the keep-alive race, made certain.
fn drops_second_request(after: After) -> DeviceServer {
    DeviceServer::start(move |r| {
        if r.index_on_conn == 1 { Reply::raw(Vec::new()).then(after) } else { Reply::ok_for(r, b"{}") }
    })
}

#[test]
fn idempotent_request_lost_on_a_reused_connection_is_retried_once() {
    for after in [After::Rst, After::Fin] {
        let dev = drops_second_request(after);
        let mut c = client();
        c.put(&dev.url("/io"), "1").unwrap();
        let resp = c.get(&dev.url("/io-state")).unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!((resp.meta().retries, resp.meta().reused), (1, false));
        assert_eq!(dev.count_matching(|r| r.method == "GET"), 2, "{after:?}: sent, lost, sent again");
        assert_eq!(c.stats().retries, 1);
    }
}

#[test]
fn non_idempotent_request_is_never_applied_twice() {
    for (after, cause) in [(After::Rst, LostCause::Reset), (After::Fin, LostCause::PeerClosed)] {
        let dev = drops_second_request(after);
        let mut c = client();
        c.post(&dev.url("/counter"), "1").unwrap();
        let err = c.post(&dev.url("/counter"), "2").unwrap_err();
        match &err {
            Error::ConnectionLost { cause: got, stage: Stage::AwaitingResponse, .. } => {
                assert_eq!(*got, cause)
            }
            other => panic!("{after:?}: {other:?}"),
        }
        assert!(err.may_have_been_processed(), "the device read it: it may have acted");
        assert_eq!(dev.count_matching(|r| r.body == b"2"), 1, "{after:?}: the POST reached the device once");
        // The client is still usable.
        assert_eq!(c.post(&dev.url("/counter"), "3").unwrap().status(), 200);
    }
}

#[test]
fn caller_marked_retryable_post_is_retried() {
    let dev = drops_second_request(After::Rst);
    let mut c = client();
    c.post(&dev.url("/counter"), "1").unwrap();
    let req = Request::post(&dev.url("/counter"), "dedup-id=7").retryable(true).build().unwrap();
    assert_eq!(c.send(req).unwrap().meta().retries, 1);
}

#[test]
fn no_retry_after_a_response_byte() {
    let dev = DeviceServer::start(|_| {
        Reply::raw(&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"[..]).then(After::Rst)
    });
    let mut c = client();
    let err = c.get(&dev.url("/")).unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { stage: Stage::ReadingResponse, .. }), "{err:?}");
    assert_eq!(dev.request_count(), 1);
}

#[test]
fn request_on_a_fresh_connection_is_not_retried_after_it_was_sent() {
    let dev = DeviceServer::start(|_| Reply::raw(Vec::new()).then(After::Rst));
    let mut c = client();
    let err = c.get(&dev.url("/")).unwrap_err();
    assert!(matches!(err, Error::ConnectionLost { stage: Stage::AwaitingResponse, .. }), "{err:?}");
    assert_eq!(dev.request_count(), 1);
}

#[test]
fn deadline_holds_against_a_stalled_device_and_others_are_not_blocked() {
    let stalled = DeviceServer::start(|_| Reply::stall());
    let good = DeviceServer::keep_alive();
    let mut c = client();
    let slow = c.submit(Request::get(&stalled.url("/")).timeout(Duration::from_millis(300)).build().unwrap());
    let fast = c.submit(Request::get(&good.url("/")).build().unwrap());
    let mut done = Vec::new();
    while done.len() < 2 {
        c.poll(Some(Duration::from_secs(2)), &mut done).unwrap();
    }
    assert_eq!(done[0].id, fast, "the healthy device answered first");
    assert_eq!(done[1].id, slow);
    let err = done[1].result.as_ref().unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded { stage: Stage::AwaitingResponse }), "{err:?}");
    assert!(err.may_have_been_processed());
    // The stalled connection was retired; the next request to that device goes on a new one.
    let again = c.send(Request::get(&stalled.url("/")).timeout(Duration::from_millis(50)).build().unwrap());
    assert!(matches!(again, Err(Error::DeadlineExceeded { .. })));
    assert!(wait_until(Duration::from_secs(3), || stalled.connections_accepted() == 2));
}

#[test]
fn connection_refused_is_a_typed_error_and_nothing_was_processed() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = client();
    let err = c.get(&format!("http://127.0.0.1:{port}/")).unwrap_err();
    assert!(matches!(err, Error::ConnectFailed { .. }), "{err:?}");
    assert!(!err.may_have_been_processed());
    assert_eq!(err.kind(), "connect_failed");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "the io::Error is kept");
}

#[test]
fn connect_timeout_holds() {
    // A listener whose accept queue is full drops further SYNs: the handshake never completes.
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => fillers.push(s),
            Err(_) => break, // the queue is full
        }
    }
    let mut c = Client::builder().connect_timeout(Duration::from_millis(200)).build().unwrap();
    let start = Instant::now();
    let err = c.get(&format!("http://{addr}/")).unwrap_err();
    assert!(matches!(err, Error::ConnectTimedOut { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3), "the wait was bounded by the connect timeout");
}

#[test]
fn requests_to_one_device_arrive_in_submission_order() {
    let dev = DeviceServer::keep_alive();
    let mut c = client();
    let ids: Vec<_> = (0..20)
        .map(|i| {
            let m = if i % 2 == 0 { Method::PUT } else { Method::GET };
            c.submit(Request::builder(m, &dev.url(&format!("/cmd/{i}"))).build().unwrap())
        })
        .collect();
    let mut done = Vec::new();
    while done.len() < ids.len() {
        c.poll(Some(Duration::from_secs(2)), &mut done).unwrap();
    }
    assert_eq!(done.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
    let targets: Vec<_> = dev.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, (0..20).map(|i| format!("/cmd/{i}")).collect::<Vec<_>>());
}

#[test]
fn bad_input_is_refused_before_anything_is_sent() {
    let dev = DeviceServer::keep_alive();
    let mut c = client();
    // `https` needs the `tls` feature (built with it, the URL is fine and the plain device is
    // not a TLS one: tls-tests/ covers that).
    if !cfg!(feature = "tls") {
        assert!(matches!(c.get("https://127.0.0.1/"), Err(Error::InvalidUrl { .. })));
    }
    assert!(matches!(c.get("ftp://127.0.0.1/"), Err(Error::InvalidUrl { .. })));
    assert!(matches!(c.get("not a url"), Err(Error::InvalidUrl { .. })));
    let injected = Request::get(&dev.url("/")).header("X-Cmd", "1\r\nContent-Length: 5").build();
    assert!(matches!(injected, Err(Error::InvalidRequest { .. })));
    assert!(Method::new("PU T").is_err());
    assert_eq!(dev.request_count(), 0);
    assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200, "the client stays usable");
}

#[test]
fn request_headers_body_and_host_reach_the_device() {
    let dev = DeviceServer::keep_alive();
    let mut c = client();
    let req = Request::put(&dev.url("/unico/v1/interface/io?ioId=25602"), r#"{"value":1}"#)
        .header("Content-Type", "application/json")
        .header("X-Token", "abc")
        .build()
        .unwrap();
    c.send(req).unwrap();
    let r = &dev.requests()[0];
    assert_eq!((r.method.as_str(), r.target.as_str()), ("PUT", "/unico/v1/interface/io?ioId=25602"));
    assert_eq!(r.header("host"), Some(format!("127.0.0.1:{}", dev.addr().port()).as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-token"), Some("abc"));
    assert_eq!(r.header("content-length"), Some("11"));
    assert_eq!(r.body, br#"{"value":1}"#);
}

#[test]
fn ipv6_literal_urls_work() {
    // Without a zone, and with one (RFC 6874; on Linux the interface by name, elsewhere by
    // index): the connect goes through the zone's interface, the Host header leaves it out.
    let zone = if cfg!(target_os = "linux") { "%25lo".to_string() } else { "%251".to_string() };
    for zone in ["", zone.as_str()] {
        let listener = TcpListener::bind("[::1]:0").expect("IPv6 loopback");
        let port = listener.local_addr().unwrap().port();
        let head = answer_v6(listener, &format!("http://[::1{zone}]:{port}/state"));
        assert!(head.contains(&format!("Host: [::1]:{port}\r\n")), "{zone}: {head}");
    }
}

/// Sends a GET to `url` through `listener` (on [::1]); returns the request head the device saw.
fn answer_v6(listener: TcpListener, url: &str) -> String {
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6").unwrap();
        String::from_utf8(buf).unwrap()
    });
    let mut c = client();
    let resp = c.get(url).unwrap();
    assert_eq!(resp.body(), b"v6");
    server.join().unwrap()
}

#[test]
fn poll_with_nothing_pending_returns_at_once() {
    let mut c = client();
    let mut done = Vec::new();
    assert_eq!(c.poll(None, &mut done).unwrap(), 0);
    assert_eq!(c.pending(), 0);
}

#[test]
fn device_that_closes_every_connection_at_once_gets_bounded_attempts() {
    let opts = ServerOptions { close_on_accept: true, ..ServerOptions::default() };
    let dev = DeviceServer::with_options(opts, seq_reply);
    let good = DeviceServer::keep_alive();
    let mut c = client();
    for _ in 0..3 {
        let err = c.get(&dev.url("/")).unwrap_err();
        assert!(matches!(err, Error::ConnectionLost { .. } | Error::RetryFailed { .. }), "{err:?}");
    }
    // One connection per attempt, at most one retry per request.
    assert!(dev.connections_accepted() <= 6, "{} connections", dev.connections_accepted());
    assert_eq!(c.get(&good.url("/")).unwrap().status(), 200);
}

#[test]
fn client_can_move_to_the_control_loop_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Client>();
    assert_send::<Error>();
}

/// This thread's CPU time (user + system), from /proc/thread-self/stat, in clock ticks.
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name (which ends at the last ')'): utime is the 12th, stime 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// CPU ticks (10 ms each) `c` spends on its thread in a 600 ms wait for a device that never
/// answers: a client that spun through the whole wait would burn ~60. The wait counts as one
/// spun in vain (`Stats::spins_missed`).
fn ticks_in_a_600_ms_stall(mut c: Client) -> u64 {
    let stalled = DeviceServer::start(|_| Reply::stall());
    let before = thread_cpu_ticks();
    let start = Instant::now();
    let err = c.send(Request::get(&stalled.url("/")).timeout(Duration::from_millis(600)).build().unwrap());
    assert!(matches!(err, Err(Error::DeadlineExceeded { .. })), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(600));
    let spent = thread_cpu_ticks() - before;
    let s = c.stats();
    assert_eq!((s.spins_caught, s.spins_missed), (0, 1), "one wait, spun in vain: {s:?}");
    spent
}

#[test]
fn busy_poll_spins_for_its_budget_then_sleeps() {
    let spent =
        ticks_in_a_600_ms_stall(Client::builder().busy_poll(Duration::from_millis(5)).build().unwrap());
    assert!(spent <= 20, "{spent} ticks of CPU in a 600 ms wait with a 5 ms spin budget");
}

/// The default client's adaptive spin is bounded by its cap (100 µs): a wait for a device that
/// does not answer sleeps, it does not spin through it.
#[test]
fn the_default_adaptive_spin_sleeps_through_a_long_wait() {
    let spent = ticks_in_a_600_ms_stall(Client::new().unwrap());
    assert!(spent <= 20, "{spent} ticks of CPU in a 600 ms wait");
}

/// A deadline that falls inside the spin budget ends the spin on time (the spin reads the
/// awaited socket directly, around the poller, and must still run the timers). The connection
/// is reused: the spin reads the socket directly only then.
#[test]
fn a_deadline_inside_the_busy_poll_budget_ends_the_spin_on_time() {
    let dev =
        DeviceServer::start(|req| if req.target == "/stall" { Reply::stall() } else { Reply::ok(b"{}") });
    let mut c = Client::builder().busy_poll(Duration::from_secs(30)).build().unwrap();
    assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200);
    for timeout in [Duration::from_millis(20), Duration::from_millis(150)] {
        let start = Instant::now();
        let err = c.send(Request::get(&dev.url("/stall")).timeout(timeout).build().unwrap());
        let took = start.elapsed();
        assert!(matches!(err, Err(Error::DeadlineExceeded { .. })), "{err:?}");
        assert!(took >= timeout && took < timeout + Duration::from_secs(1), "{timeout:?}: {took:?}");
        assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200, "the client stays usable");
    }
}

/// Busy-polling spins on the socket that awaits the only pending response: responses, a FIN
/// and a reset that arrive during the spin are all handled as without it, promptly.
#[test]
fn busy_poll_on_the_awaited_socket_sees_responses_fins_and_resets() {
    let busy = || Client::builder().busy_poll(Duration::from_millis(2)).build().unwrap();
    let dev = DeviceServer::keep_alive();
    let mut c = busy();
    for _ in 0..200 {
        assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200);
    }
    assert_eq!((c.stats().connects, c.stats().reuses), (1, 199));

    // A device that closes after every response, answering a client that turns around in
    // microseconds: the second command can be written before the device has even sent the FIN
    // of the first connection (the race no check can see; the device counts those bytes as
    // "after its FIN" all the same). That one crossing teaches finwatch the device's habit;
    // the GET is retried; after it, nothing is ever written into a closing connection.
    let dev = DeviceServer::close_after_response();
    let mut c = busy();
    for _ in 0..50 {
        assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200);
    }
    let s = c.stats();
    assert!(dev.conns_with_bytes_after_fin() <= 1, "{} connections; {s:?}", dev.conns_with_bytes_after_fin());
    assert!(s.retries <= 1 && s.failed == 0, "{s:?}");
    assert!(s.reuses <= 1, "single-use once learned: {s:?}");

    // The device reads the request, then closes (FIN) or resets without answering: a lost
    // exchange, reported at once rather than at the end of the spin budget or the deadline.
    for after in [After::Fin, After::Rst] {
        let dev = DeviceServer::start(move |_| Reply::raw(Vec::new()).then(after));
        let mut c = busy();
        let req = Request::post(&dev.url("/pulse"), "1").timeout(Duration::from_secs(5)).build().unwrap();
        let start = Instant::now();
        let err = c.send(req).unwrap_err();
        assert!(matches!(err, Error::ConnectionLost { .. }), "{after:?}: {err:?}");
        assert!(err.may_have_been_processed(), "{after:?}: the device had the request");
        assert!(start.elapsed() < Duration::from_secs(1), "{after:?}: {:?}", start.elapsed());
    }
}

/// A caller-driven client that lets the loop run during its pauses (`poll` with a short
/// timeout) gets what `SharedClient` gets: connections retired before the device's idle close,
/// and a warm spare connected ahead of the next command instead of a handshake on its path.
#[test]
fn polling_during_pauses_retires_ahead_of_the_device_and_keeps_a_spare_ready() {
    const IDLE: Duration = Duration::from_millis(20);
    // The spare is opened when the previous connection is retired (~7/8 of the learned idle
    // close) and retired itself ~7/8 later: a command 1.2× the idle close after the previous
    // one falls between the two even when load makes the learned value 25 % short (a response
    // read late shortens the response-to-FIN time seen here).
    const GAP: Duration = Duration::from_millis(24);
    const COMMANDS: u64 = 12;
    let dev = DeviceServer::idle_close(IDLE);
    let mut c = client();
    let mut done = Vec::new();
    // One `poll` to the next command's time: it sleeps in the poller, waking for the timers
    // (retire, connect) and the device's packets, and returns when the time is up.
    let mut pause = |c: &mut Client, until: Instant| {
        while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            c.poll(Some(left), &mut done).unwrap();
        }
    };
    // Learn the idle close: one connection left idle past it, with the loop watching (until the
    // device's FIN is seen: a loaded machine can run the device's timer late; bounded).
    assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200);
    let give_up = Instant::now() + Duration::from_secs(2);
    while c.learned_idle_close(&dev.url("/")).is_none() && Instant::now() < give_up {
        pause(&mut c, Instant::now() + GAP);
    }
    let learned = c.learned_idle_close(&dev.url("/")).expect("an idle close was seen");
    assert!(learned < GAP + GAP, "{learned:?}");
    // A connection kept from now on says when it goes and why.
    assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200);
    let kept = c.connections().into_iter().find(|i| i.state == "Open(Idle)").expect("an idle connection");
    assert_eq!(kept.retire_reason, Some(finwatch::RetireReason::LearnedIdleClose), "{kept:?}");
    assert!(kept.retire_in.is_some_and(|t| t < learned), "{kept:?}");
    pause(&mut c, Instant::now() + GAP);
    let before = c.stats();
    for _ in 0..COMMANDS {
        assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200);
        pause(&mut c, Instant::now() + GAP);
    }
    let s = c.stats();
    let retired = s.retired_before_idle_close - before.retired_before_idle_close;
    let spares_used = s.warm_spares_used - before.warm_spares_used;
    let device_closes = s.fins_seen_idle - before.fins_seen_idle;
    // Each pause: the used connection retired ahead of the device, a spare opened in its place
    // and used by the next command (on an idle machine all 12). Slack for a loaded one, where
    // a poll or the device's close can come late.
    assert!(retired >= COMMANDS / 2, "retired ahead: {retired} of {COMMANDS}; {s:?}");
    assert!(spares_used >= COMMANDS / 2, "spares used: {spares_used} of {COMMANDS}; {s:?}");
    assert!(device_closes <= COMMANDS / 4, "device closed {device_closes} idle connections first; {s:?}");
    assert_eq!((s.failed, s.retries), (0, 0));
}

#[test]
fn a_wake_before_poll_makes_it_return_at_once() {
    let dev = DeviceServer::keep_alive();
    let mut c = client();
    let waker = c.waker().unwrap();
    waker.wake().unwrap();
    let start = Instant::now();
    let mut done = Vec::new();
    c.poll(Some(Duration::from_secs(2)), &mut done).unwrap();
    assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
    // A wake that arrives while a blocking call runs is kept for the next poll.
    let other = std::thread::spawn(move || waker.wake().unwrap());
    c.get(&dev.url("/")).unwrap();
    other.join().unwrap();
    let start = Instant::now();
    c.poll(Some(Duration::from_secs(2)), &mut done).unwrap();
    assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
}

#[test]
fn poll_waits_for_at_least_its_timeout_even_below_a_millisecond() {
    let mut c = client();
    let mut done = Vec::new();
    for micros in [300, 1_500] {
        let start = Instant::now();
        c.poll(Some(Duration::from_micros(micros)), &mut done).unwrap();
        assert!(start.elapsed() >= Duration::from_micros(micros), "{micros} µs: {:?}", start.elapsed());
    }
}

/// A caller away past both a connection's retire time and the device's idle close: when it
/// comes back, the device's FIN (already in the socket) is read before the overdue retire
/// timer acts, so the close counts as the device's, not as a connection "retired ahead" of it.
#[test]
fn after_a_long_pause_a_device_close_is_seen_as_such_not_as_retired_ahead() {
    const IDLE: Duration = Duration::from_millis(20);
    const PAUSE: Duration = Duration::from_millis(80); // the caller's pause: the scenario, not a sync
    let dev = DeviceServer::idle_close(IDLE);
    let mut c = client();
    assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200);
    std::thread::sleep(PAUSE);
    // The FIN is found before the write; the pause is learned as an upper bound of the idle close.
    assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200);
    let learned = c.learned_idle_close(&dev.url("/")).expect("a close was seen");
    assert!(learned < PAUSE + PAUSE, "{learned:?}");
    std::thread::sleep(PAUSE); // past the retire time (~7/8 of the learned value) and the close
    assert_eq!(c.get(&dev.url("/")).unwrap().status(), 200);
    let s = c.stats();
    assert_eq!(s.retired_before_idle_close, 0, "the device had closed it first: {s:?}");
    assert_eq!((s.fins_seen_idle, s.failed, s.retries), (2, 0, 0), "{s:?}");
    assert_eq!(dev.bytes_after_fin(), 0);
}

/// A response that ends exactly where the client's 64 KiB read buffer does, with stray bytes
/// right behind it: the client must not stop reading at the response (the socket is not empty,
/// and no new event would announce the rest), or the next command would read those bytes as
/// its response. The stray bytes retire the connection; the next command gets a fresh one.
#[test]
fn stray_bytes_behind_a_response_that_fills_the_read_buffer_are_not_taken_for_the_next_answer() {
    const READ_BUFFER: usize = 64 * 1024;
    let head = |len: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {len:010}\r\n\r\n");
    let body_len = READ_BUFFER - head(0).len();
    let mut wire = head(body_len).into_bytes();
    wire.resize(READ_BUFFER, b'b');
    wire.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale");
    let dev = DeviceServer::start(move |req| {
        if req.target == "/big" { Reply::raw(wire.clone()) } else { Reply::ok(b"fresh") }
    });
    let mut c = client();
    let big = c.get(&dev.url("/big")).unwrap();
    assert_eq!(big.body().len(), body_len);
    let next = c.get(&dev.url("/next")).unwrap();
    assert_eq!(next.body(), b"fresh", "the stray bytes were taken for the answer");
    assert!(!next.meta().reused, "the connection with stray bytes was retired");
}

/// A host name goes through the system resolver (on a thread of its own, its answer waking the
/// loop) and then the cache: `localhost` reaches a device on 127.0.0.1 even where it resolves to
/// `::1` first, and later commands reuse the connection.
#[test]
fn a_host_name_is_looked_up_and_reaches_the_device() {
    let dev = DeviceServer::keep_alive();
    let mut c = client();
    let url = format!("http://localhost:{}/io-state", dev.addr().port());
    for _ in 0..3 {
        assert_eq!(c.get(&url).unwrap().status(), 200);
    }
    assert_eq!((c.stats().connects, dev.connections_accepted()), (1, 1));
}

/// Digest authentication end to end: the device challenges the first request (a PUT), the
/// client answers and sends it once more, and the next command carries its answer from the
/// start (one round trip more in all, not one per command). The device applies the PUT once.
/// (The hashes themselves are checked against RFC 7616's example in `src/proto/digest.rs`.)
#[test]
fn digest_authentication_costs_one_round_trip_in_all() {
    let dev = DeviceServer::start(|r| match r.header("Authorization") {
        None => Reply::raw(
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"io\", qop=\"auth\", \
             algorithm=SHA-256, nonce=\"abc\"\r\nContent-Length: 0\r\n\r\n",
        ),
        Some(a) if a.starts_with("Digest username=\"op\", realm=\"io\"") && a.contains("nonce=\"abc\"") => {
            Reply::ok_for(r, b"{}")
        }
        Some(_) => Reply::raw("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"),
    });
    let mut c = client();
    let put = Request::put(&dev.url("/io"), "1").digest_auth("op", "pw").build().unwrap();
    let resp = c.send(put).unwrap();
    assert_eq!((resp.status(), resp.meta().reauthenticated), (200, true), "the PUT was challenged");
    let get = Request::get(&dev.url("/io-state")).digest_auth("op", "pw").build().unwrap();
    let resp = c.send(get).unwrap();
    assert_eq!((resp.status(), resp.meta().reauthenticated), (200, false), "answered in advance");
    let seen: Vec<(String, Option<String>)> = dev
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.header("Authorization").map(|a| a.to_string())))
        .collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!((seen[0].0.as_str(), seen[0].1.is_none()), ("PUT", true));
    assert_eq!(seen[1].0, "PUT");
    assert!(seen[1].1.as_deref().unwrap().contains("nc=00000001"), "{seen:?}");
    assert_eq!(seen[2].0, "GET");
    assert!(seen[2].1.as_deref().unwrap().contains("nc=00000002"), "{seen:?}");
    assert_eq!(dev.count_matching(|r| r.method == "PUT" && r.header("Authorization").is_some()), 1);
    assert_eq!(dev.connections_accepted(), 1);
}

/// A device that closes the connection after its 401 (many embedded servers do): the answer
/// goes out on a fresh connection, never on the closed one.
#[test]
fn a_digest_challenge_with_connection_close_is_answered_on_a_fresh_connection() {
    let dev = DeviceServer::start(|r| match r.header("Authorization") {
        None => Reply::raw(
            "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nWWW-Authenticate: Digest realm=\"io\", \
             nonce=\"abc\"\r\nContent-Length: 0\r\n\r\n",
        )
        .then(After::Fin),
        Some(_) => Reply::ok_for(r, b"{}"),
    });
    let mut c = client();
    let post = Request::post(&dev.url("/api/pulse"), "ms=20").digest_auth("op", "pw").build().unwrap();
    assert_eq!(c.send(post).unwrap().status(), 200);
    let reqs = dev.requests();
    assert_eq!(reqs.len(), 2);
    assert_ne!(reqs[0].conn, reqs[1].conn, "the answer goes on a new connection");
    assert!(reqs[1].header("Authorization").unwrap().starts_with("Digest username=\"op\""));
    assert_eq!(dev.bytes_after_fin(), 0);
    assert_eq!(dev.count_matching(|r| r.body == b"ms=20" && r.header("Authorization").is_some()), 1);
}

/// A caller's resolver (a table of devices, a registry) replaces the system's: called once
/// per name (then cached), off the loop, and its refusal is `Error::Resolve`.
#[test]
fn a_callers_resolver_names_the_devices() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dev = DeviceServer::keep_alive();
    let addr = dev.addr();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let mut c = Client::builder()
        .request_timeout(Duration::from_secs(5))
        .resolver(move |name, port| {
            counted.fetch_add(1, Ordering::SeqCst);
            match (name, port) {
                ("valve-7", 80) => Ok(vec![addr]),
                _ => Ok(vec![]),
            }
        })
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("http://valve-7/io-state").unwrap().status(), 200);
    }
    match c.get("http://valve-8/io-state") {
        Err(Error::Resolve { host, .. }) => assert_eq!(host, "valve-8:80"),
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one lookup per name");
    assert_eq!(dev.requests()[0].header("Host"), Some("valve-7"));
}

/// `get`, `put`, `post` and `delete` keep the requests they built for the next call with the
/// same method and URL (a bounded set, replaced in turn): whatever was kept or replaced, every
/// call puts exactly its own method, target and body on the wire, and `Content-Length` is the
/// body's.
#[test]
fn convenience_calls_send_their_own_method_target_and_body_whatever_was_kept() {
    let dev = DeviceServer::keep_alive();
    let mut c = client();
    let mut sent = Vec::new();
    // 12 URLs (more than are kept) × 4 methods, in an order that keeps replacing entries, twice.
    for round in 0..2 {
        for i in 0..12 {
            let target = format!("/io/{i}?round={}", round % 2);
            let url = dev.url(&target);
            let body = format!("{{\"io\":{i},\"round\":{round}}}");
            let (method, resp) = match (i + round) % 4 {
                0 => ("GET", c.get(&url)),
                1 => ("PUT", c.put(&url, body.clone())),
                2 => ("POST", c.post(&url, body.as_str())),
                _ => ("DELETE", c.delete(&url)),
            };
            assert_eq!(resp.unwrap().status(), 200);
            let body = if matches!(method, "PUT" | "POST") { body.into_bytes() } else { Vec::new() };
            sent.push((method.to_string(), target, body));
        }
    }
    let got: Vec<_> = dev
        .requests()
        .into_iter()
        .map(|r| {
            let length = r.header("content-length").map(str::to_string);
            ((r.method, r.target, r.body), length)
        })
        .collect();
    assert_eq!(got.len(), sent.len());
    for ((got, length), want) in got.into_iter().zip(sent) {
        assert_eq!(got, want);
        let want_length =
            if matches!(want.0.as_str(), "PUT" | "POST") { Some(want.2.len().to_string()) } else { None };
        assert_eq!(length, want_length, "{} {}", want.0, want.1);
    }
    // An invalid URL is refused, and leaves the kept requests as they were.
    assert!(matches!(c.get("http://[::1"), Err(Error::InvalidUrl { .. })));
    assert_eq!(c.get(&dev.url("/io/3?round=1")).unwrap().status(), 200);
}

/// A device whose stack runs Nagle's algorithm (TCP_NODELAY off, lwIP's default) and writes each
/// response in two pieces, head then body, as many embedded servers do: its body leaves only
/// once the head is acknowledged. Serves keep-alive connections one after the other, each until
/// the client closes it; every read is bounded.
#[cfg(target_os = "linux")]
fn nagle_device() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        const BODY: &[u8] = br#"{"ioId":25602,"value":1}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            BODY.len()
        );
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..end + 4);
                    s.write_all(head.as_bytes()).unwrap();
                    s.write_all(BODY).unwrap();
                }
            }
        }
    });
    (addr, handle)
}

/// With such a device Linux's delayed ACK (40 ms at least, once a connection carries requests
/// and responses) holds every response after the first: a plain client, measured first against
/// the same device, shows it. finwatch acknowledges a response that stopped short at once, so
/// the device's body follows at once. (Not a speed goal: the difference is the kernel's 40 ms
/// timer per command, which the bound below leaves a factor of 4 of room.)
#[cfg(target_os = "linux")]
#[test]
fn a_response_split_by_the_devices_nagle_does_not_wait_for_a_delayed_ack() {
    const N: usize = 8;
    let (addr, device) = nagle_device();
    let get = format!("GET /io-state HTTP/1.1\r\nHost: {addr}\r\n\r\n");

    let plain = {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let start = Instant::now();
        for _ in 0..N {
            s.write_all(get.as_bytes()).unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 1024];
            while !got.ends_with(b"}") {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "the device closed");
                got.extend_from_slice(&chunk[..n]);
            }
        }
        start.elapsed()
    };
    assert!(
        plain >= Duration::from_millis(35) * (N as u32 - 2),
        "this kernel did not delay the ACKs ({plain:?} for {N} GETs): nothing to show"
    );

    let mut c = client();
    let url = format!("http://{addr}/io-state");
    let req = Request::get(&url).build().unwrap();
    let start = Instant::now();
    for _ in 0..N {
        let resp = c.send(req.clone()).unwrap();
        assert_eq!(resp.body(), br#"{"ioId":25602,"value":1}"#);
    }
    let fin = start.elapsed();
    assert_eq!(c.stats().connects, 1, "one keep-alive connection");
    assert!(fin * 4 < plain, "finwatch took {fin:?} for {N} GETs, a plain client {plain:?}");
    drop(c);
    device.join().unwrap();
}

/// Node.js and Apache announce a keep-alive timeout under a second as `Keep-Alive: timeout=0`
/// (whole seconds, rounded down). Each new connection used to be past its retire time as it
/// connected, so a request opened connection after connection until its deadline (1.5 million
/// in 30 s against Node.js). Now: one connection, reused.
#[test]
fn keep_alive_timeout_zero_neither_storms_nor_forbids_reuse() {
    let dev = DeviceServer::start(|r| {
        let mut reply = Reply::raw(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=0\r\nContent-Length: 2\r\n\r\nok",
        );
        if r.method == "HEAD" {
            reply.bytes.truncate(reply.bytes.len() - 2);
        }
        reply
    });
    let mut c = Client::builder().request_timeout(Duration::from_secs(2)).build().unwrap();
    for _ in 0..5 {
        assert_eq!(c.get(&dev.url("/io-state")).unwrap().body(), b"ok");
    }
    assert_eq!((c.stats().connects, c.stats().reuses), (1, 4));
}
