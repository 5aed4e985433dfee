//! `SharedClient` over loopback: one client shared by threads, its event loop on a background
//! thread that handles FINs without any caller, three ways to get an outcome, and a shutdown
//! that is bounded however the devices behave.

mod support;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use finwatch::{Client, Error, Request, Response, SharedClient, Stage};
use support::*;

/// Generous bound for things that take milliseconds on an idle machine.
const SETTLE: Duration = Duration::from_secs(3);

fn shared() -> SharedClient {
    let _ = env_logger::builder().is_test(true).try_init();
    SharedClient::from_builder(Client::builder().request_timeout(Duration::from_secs(5))).unwrap()
}

fn get(url: &str) -> Request {
    Request::get(url).build().unwrap()
}

fn is_shutdown_at(r: &Result<Response, Error>, stage: Stage) -> bool {
    matches!(r, Err(Error::Shutdown { stage: s }) if *s == stage)
}

#[test]
fn handle_is_send_sync_clone() {
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    assert_send_sync_clone::<SharedClient>();
}

#[test]
fn concurrent_sends_from_several_threads_all_succeed_and_nothing_is_written_after_a_fin() {
    const THREADS: usize = 4;
    const EACH: usize = 25;
    let keep = DeviceServer::keep_alive();
    let fin = DeviceServer::close_after_response();
    let c = shared();
    // One command first, so the client sees the device close after a response and learns to use
    // its connections once: a request written while the device's FIN is on the wire cannot be
    // saved by any check, and back-to-back requests would otherwise race the first FIN.
    c.send(get(&fin.url("/warm-up"))).unwrap();
    assert!(wait_until(SETTLE, || fin.clients_closed_after_fin() == 1), "the loop closed it by itself");

    let bases = (keep.url(""), fin.url(""));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (c, bases) = (c.clone(), bases.clone());
            thread::spawn(move || {
                for i in 0..EACH {
                    for base in [&bases.0, &bases.1] {
                        let resp = c.send(get(&format!("{base}/t{t}/{i}"))).unwrap();
                        assert_eq!(resp.status(), 200, "{base}/t{t}/{i}");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }

    for dev in [&keep, &fin] {
        let reqs = dev.requests();
        for t in 0..THREADS {
            let prefix = format!("/t{t}/");
            let seen: Vec<usize> =
                reqs.iter().filter_map(|r| r.target.strip_prefix(&prefix)?.parse().ok()).collect();
            assert_eq!(seen, (0..EACH).collect::<Vec<_>>(), "thread {t}: each once, in its order");
        }
    }
    assert_eq!(keep.connections_accepted(), 1, "the threads shared one keep-alive connection");
    let stats = c.stats();
    assert_eq!((stats.succeeded, stats.failed, stats.retries), (2 * (THREADS * EACH) as u64 + 1, 0, 0));
    c.shutdown(Duration::from_secs(1));
    assert_eq!(fin.bytes_after_fin(), 0, "no byte was written on a connection after the device's FIN");
}

#[test]
fn fin_on_an_idle_connection_is_handled_without_any_caller() {
    let dev = DeviceServer::idle_close(Duration::from_millis(30));
    let c = shared();
    let conn = c.send(get(&dev.url("/state"))).unwrap().meta().connection_id;
    assert_eq!(c.connections().iter().map(|i| i.id).collect::<Vec<_>>(), [conn]);
    // Nobody calls the client now; the loop thread sees the FIN and closes the socket.
    assert!(wait_until(SETTLE, || dev.clients_closed_after_fin() == 1), "the client closed its side");
    // (It may have opened a warm spare, having learned that the device closes idle connections.)
    let conns = c.connections();
    assert!(conns.iter().all(|i| i.id != conn && i.served == 0), "{conns:?}");
    let stats = c.stats();
    assert_eq!((stats.fins_seen_idle, stats.fins_caught_by_peek), (1, 0), "seen by the loop, not by a peek");
    // The next command goes on a fresh connection.
    assert!(!c.send(get(&dev.url("/state"))).unwrap().meta().reused);
    assert_eq!(dev.bytes_after_fin(), 0);
}

#[test]
fn channel_form_delivers_tagged_outcomes_in_completion_order() {
    let dev = DeviceServer::keep_alive();
    let c = shared();
    let (tx, rx) = mpsc::channel();
    for i in 0..20 {
        c.submit_to(get(&dev.url(&format!("/cmd/{i}"))), i, &tx);
    }
    let tags: Vec<usize> = (0..20)
        .map(|_| {
            let (tag, result) = rx.recv_timeout(SETTLE).unwrap();
            assert_eq!(result.unwrap().status(), 200);
            tag
        })
        .collect();
    assert_eq!(tags, (0..20).collect::<Vec<_>>(), "one device, one in flight: submission order");
    let targets: Vec<_> = dev.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, (0..20).map(|i| format!("/cmd/{i}")).collect::<Vec<_>>());
}

#[test]
fn callback_runs_on_the_loop_thread_and_may_queue_more_work() {
    let dev = DeviceServer::keep_alive();
    let c = shared();
    let (tx, rx) = mpsc::channel();
    let (c2, url, tx2) = (c.clone(), dev.url("/follow-up"), tx.clone());
    c.submit_with(get(&dev.url("/first")), move |result| {
        let on = thread::current().name().map(String::from);
        tx.send((on, result.map(|r| r.status()).ok())).unwrap();
        // Inside a callback: queueing is fine, reading counters is fine, blocking is refused.
        assert!(c2.stats().succeeded >= 1);
        assert!(matches!(c2.send(get(&url)), Err(Error::InvalidRequest { .. })));
        c2.submit_with(get(&url), move |r| tx2.send((None, r.map(|r| r.status()).ok())).unwrap());
    });
    assert_eq!(rx.recv_timeout(SETTLE).unwrap(), (Some("finwatch-loop".to_string()), Some(200)));
    assert_eq!(rx.recv_timeout(SETTLE).unwrap(), (None, Some(200)));
    assert_eq!(dev.count_matching(|r| r.target == "/follow-up"), 1, "the refused send sent nothing");
}

#[test]
fn a_panicking_callback_does_not_stop_the_loop() {
    let dev = DeviceServer::keep_alive();
    let c = shared();
    c.submit_with(get(&dev.url("/")), |_| panic!("a callback bug (expected in this test)"));
    assert_eq!(c.send(get(&dev.url("/"))).unwrap().status(), 200);
}

#[test]
fn shutdown_aborts_a_stalled_request_after_the_grace_period_and_refuses_new_ones() {
    let stalled = DeviceServer::start(|_| Reply::stall());
    let c = shared();
    let (c2, url) = (c.clone(), stalled.url("/stalled"));
    let waiter = thread::spawn(move || c2.send(get(&url)));
    assert!(wait_until(SETTLE, || stalled.request_count() == 1));
    // Queued behind the stalled one (one request in flight per device).
    let (tx, rx) = mpsc::channel();
    c.submit_to(get(&stalled.url("/queued")), "queued", &tx);

    let grace = Duration::from_millis(200);
    let t0 = Instant::now();
    c.shutdown(grace);
    let took = t0.elapsed();
    assert!(took >= grace, "the in-flight request had its grace period: {took:?}");
    assert!(took < grace + Duration::from_secs(1), "bounded: {took:?}");

    let sent = waiter.join().unwrap();
    assert!(is_shutdown_at(&sent, Stage::AwaitingResponse), "{sent:?}");
    assert!(sent.unwrap_err().may_have_been_processed());
    let (tag, queued) = rx.recv_timeout(SETTLE).unwrap();
    assert!(tag == "queued" && is_shutdown_at(&queued, Stage::Queued), "{queued:?}");

    // After the shutdown: refused at once, every way, and nothing reaches the device.
    assert!(is_shutdown_at(&c.send(get(&stalled.url("/late"))), Stage::Queued));
    let (tx2, rx2) = mpsc::channel();
    let tx3 = tx2.clone();
    c.submit_with(get(&stalled.url("/late")), move |r| tx3.send(("with", r)).unwrap());
    c.submit_to(get(&stalled.url("/late")), "to", &tx2);
    for expected in ["with", "to"] {
        let (how, r) = rx2.try_recv().expect("reported before the call returned");
        assert!(how == expected && is_shutdown_at(&r, Stage::Queued), "{how}: {r:?}");
    }
    assert_eq!(stalled.request_count(), 1);
    assert!(c.connections().is_empty());
    let stats = c.stats();
    assert_eq!((stats.submitted, stats.succeeded), (2, 0));
    assert!(wait_until(SETTLE, || stalled.connections_closed_by_client() == 1), "its socket was closed");
    c.shutdown(grace); // again: harmless, immediate
}

#[test]
fn shutdown_lets_in_flight_requests_finish_within_the_grace_period() {
    let slow = DeviceServer::start(|r| Reply::ok_for(r, b"{}").delayed(Duration::from_millis(100)));
    let c = shared();
    let (tx, rx) = mpsc::channel();
    c.submit_to(get(&slow.url("/a")), 1, &tx);
    c.submit_to(get(&slow.url("/b")), 2, &tx);
    let t0 = Instant::now();
    c.shutdown(Duration::from_secs(10));
    assert!(t0.elapsed() < Duration::from_secs(3), "returned once nothing was pending: {:?}", t0.elapsed());
    for tag in [1, 2] {
        let (got, r) = rx.try_recv().unwrap();
        assert_eq!((got, r.unwrap().status()), (tag, 200));
    }
}

#[test]
fn dropping_the_last_handle_shuts_down_without_hanging() {
    let stalled = DeviceServer::start(|_| Reply::stall());
    let c = shared();
    let (tx, rx) = mpsc::channel();
    c.submit_to(get(&stalled.url("/")), (), &tx);
    assert!(wait_until(SETTLE, || stalled.request_count() == 1));
    // Dropping a clone changes nothing.
    drop(c.clone());
    assert_eq!(c.connections().len(), 1);
    let t0 = Instant::now();
    drop(c);
    assert!(t0.elapsed() < SharedClient::DROP_GRACE + Duration::from_secs(1), "{:?}", t0.elapsed());
    let ((), r) = rx.recv_timeout(SETTLE).unwrap();
    assert!(is_shutdown_at(&r, Stage::AwaitingResponse), "{r:?}");
    assert!(wait_until(SETTLE, || stalled.connections_closed_by_client() == 1));
}

#[test]
fn shutdown_from_a_callback_does_not_deadlock() {
    let dev = DeviceServer::keep_alive();
    let c = shared();
    let (tx, rx) = mpsc::channel();
    let c2 = c.clone();
    c.submit_with(get(&dev.url("/")), move |r| {
        c2.shutdown(Duration::from_secs(5));
        tx.send(r.map(|r| r.status()).ok()).unwrap();
    });
    assert_eq!(rx.recv_timeout(SETTLE).unwrap(), Some(200));
    let t0 = Instant::now();
    c.shutdown(Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(1), "nothing was pending: {:?}", t0.elapsed());
    assert!(is_shutdown_at(&c.send(get(&dev.url("/"))), Stage::Queued));
}

/// A blocking call runs on the caller's thread when nothing else is pending (no thread hop);
/// when another thread then queues work (here: a request to another device, and a query), the
/// caller hands its request to the loop thread, so nobody waits for a stalled device they do
/// not use, and the stalled request still ends by its own deadline, typed.
#[test]
fn a_direct_request_to_a_stalled_device_holds_up_no_other_device() {
    let stalled = DeviceServer::start(|_| Reply::stall());
    let fast = DeviceServer::keep_alive();
    let c = SharedClient::from_builder(Client::builder().request_timeout(Duration::from_secs(2))).unwrap();
    let (c2, url) = (c.clone(), stalled.url("/stalled"));
    let waiter = thread::spawn(move || c2.get(&url));
    assert!(wait_until(SETTLE, || stalled.request_count() == 1));
    let t0 = Instant::now();
    assert_eq!(c.get(&fast.url("/other")).unwrap().status(), 200);
    assert!(t0.elapsed() < Duration::from_millis(500), "waited for the stalled device: {:?}", t0.elapsed());
    let t0 = Instant::now();
    assert!(c.stats().succeeded >= 1);
    assert!(t0.elapsed() < Duration::from_millis(500), "stats waited: {:?}", t0.elapsed());
    let stalled_outcome = waiter.join().unwrap().unwrap_err();
    assert_eq!(stalled_outcome.kind(), "deadline_exceeded", "{stalled_outcome:?}");
    assert!(stalled_outcome.may_have_been_processed());
    // Back to direct calls afterwards.
    for _ in 0..10 {
        assert_eq!(c.get(&fast.url("/again")).unwrap().status(), 200);
    }
}

/// Between a caller's direct requests the loop thread watches the sockets again: it sees the
/// device's idle close coming (learned), retires the connection ahead of it and has a warm
/// spare ready for the next command. (A direct request that took the client's fd out of the
/// loop thread's poller once left the loop asleep for its whole backstop: no spare was ever
/// opened, and every command after a pause paid a connect.)
#[test]
///
/// The times are long enough for a loaded machine (nextest beside other work): the idle close
/// (40 ms) lies far beyond the 2 ms within which a FIN after the response teaches "closes
/// after every response", which a loop thread descheduled for a few ms learned with a 5 ms
/// idle close; and a pause overshot by up to ~25 ms still finds the spare (opened ~35 ms after
/// the response) alive.
fn between_direct_requests_the_loop_retires_ahead_and_keeps_a_spare() {
    let dev = DeviceServer::idle_close(Duration::from_millis(40));
    let c = shared();
    for _ in 0..12 {
        assert_eq!(c.get(&dev.url("/x")).unwrap().status(), 200);
        // A pause past the device's idle close; a sleep here is the scenario, not a wait for it.
        thread::sleep(Duration::from_millis(50));
    }
    let s = c.stats();
    assert!(s.warm_spares_used >= 3, "{s:?}");
    assert!(s.retired_before_idle_close >= 3, "{s:?}");
}

/// Streamed bodies through the shared client: uploads and downloads from several threads at
/// once, beside plain requests to another device, each exact; the direct path (nothing else
/// pending) and the loop thread (others queued) both carry them.
#[test]
fn streamed_bodies_go_up_and_down_from_several_threads() {
    let image: std::sync::Arc<Vec<u8>> = std::sync::Arc::new(pattern_bytes(2 * 1024 * 1024 + 7));
    let served = std::sync::Arc::clone(&image);
    let firmware = DeviceServer::start(move |req| match req.method.as_str() {
        // The upload's answer: its length and whether it is the image, byte for byte.
        "PUT" => Reply::ok(format!("{} {}", req.body.len(), req.body == *served).as_bytes()),
        _ => Reply::raw(content_length_response(&served)),
    });
    let other = DeviceServer::keep_alive();
    let client =
        SharedClient::from_builder(Client::builder().request_timeout(Duration::from_secs(20))).unwrap();
    // Alone: the caller's thread runs it.
    let put = Request::put(&firmware.url("/fw"), "").build().unwrap();
    let len = image.len() as u64;
    let resp = client.send_streaming(put, std::io::Cursor::new(image.to_vec()), len).unwrap();
    assert_eq!(resp.body(), format!("{len} true").as_bytes());
    let (resp, got) = client.send_to(get(&firmware.url("/fw")), Vec::new()).unwrap();
    assert!(resp.body().is_empty() && got == *image);
    // Beside each other and beside plain requests: some go through the loop thread.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (client, image) = (client.clone(), std::sync::Arc::clone(&image));
            let (fw, plain) = (firmware.url("/fw"), other.url("/io"));
            thread::spawn(move || {
                for _ in 0..3 {
                    if i % 2 == 0 {
                        let put = Request::put(&fw, "").build().unwrap();
                        let len = image.len() as u64;
                        let resp =
                            client.send_streaming(put, std::io::Cursor::new(image.to_vec()), len).unwrap();
                        assert_eq!(resp.body(), format!("{len} true").as_bytes());
                    } else {
                        let (_, got) = client.send_to(get(&fw), Vec::new()).unwrap();
                        assert!(got == *image, "{} bytes", got.len());
                    }
                    assert_eq!(client.send(get(&plain)).unwrap().status(), 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = client.stats();
    assert_eq!((s.failed, s.retries), (0, 0), "{s:?}");
    // Refused before anything is sent, as on a Client: a body of its own.
    let with_body = Request::put(&firmware.url("/fw"), "x").build().unwrap();
    let err = client.send_streaming(with_body, std::io::empty(), 0).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
}
