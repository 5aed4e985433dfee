//! The incident, reproduced over loopback: a device that closes (FIN) after every response
//! without `Connection: close`, or after a short idle time. The next command must go out on a
//! new connection, and not one byte may arrive on the closed one.

mod support;

use std::time::Duration;

use finwatch::Client;
use support::*;

const PUT_PATH: &str = "/unico/v1/interface/io";
const GET_PATH: &str = "/unico/v1/interface/io-state?ioId=25602";
const SETTLE: Duration = Duration::from_secs(3);

/// Waits for the device to see the client close `n` connections after its FIN. The client is
/// caller-driven: it learns of a FIN when it is next driven, so drive it while waiting.
fn closed_after_fin(client: &mut Client, dev: &DeviceServer, n: impl Fn() -> usize) -> bool {
    let mut sink = Vec::new();
    wait_until(SETTLE, || {
        client.poll(Some(Duration::from_millis(1)), &mut sink).unwrap();
        dev.clients_closed_after_fin() == n()
    })
}

/// How many connections carried requests (the device also counts warm spares it accepted).
fn distinct_connections(dev: &DeviceServer) -> usize {
    dev.requests().iter().map(|r| r.conn).collect::<std::collections::HashSet<_>>().len()
}

fn client() -> Client {
    let _ = env_logger::builder().is_test(true).try_init();
    Client::builder().request_timeout(Duration::from_secs(5)).build().unwrap()
}

#[test]
fn get_after_fin_goes_to_a_new_connection_at_every_gap() {
    let mut client = client();
    // The incident's gap was 100 µs; cover the window up to 5 ms. Its FIN came in a segment of
    // its own after the `200 OK`; many devices send it with the response's last bytes: both.
    let shapes: [fn() -> DeviceServer; 2] =
        [DeviceServer::close_after_response_apart, DeviceServer::close_after_response];
    for (gap_us, shape) in
        [100, 200, 500, 1_000, 2_000, 5_000].into_iter().flat_map(|g| shapes.map(|s| (g, s)))
    {
        let dev = shape();
        let put = client.put(&dev.url(PUT_PATH), r#"{"ioId":25602,"value":1}"#).unwrap();
        assert_eq!(put.status(), 200);
        // The FIN is on its way (loopback: queued at the client) before the gap starts.
        assert!(wait_until(SETTLE, || dev.fins_completed() == 1));
        std::thread::sleep(Duration::from_micros(gap_us));
        let get = client.get(&dev.url(GET_PATH)).unwrap();
        assert_eq!(get.status(), 200);
        assert!(!get.meta().reused, "gap {gap_us} µs: the GET reused the half-closed connection");

        let reqs = dev.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!((reqs[0].method.as_str(), reqs[0].conn), ("PUT", 0));
        assert_eq!((reqs[1].method.as_str(), reqs[1].target.as_str(), reqs[1].conn), ("GET", GET_PATH, 1));
        // The client closed the half-closed socket instead of writing into it.
        assert!(closed_after_fin(&mut client, &dev, || 2));
        assert_eq!(dev.bytes_after_fin(), 0, "gap {gap_us} µs: bytes were written after the device's FIN");
    }
    let stats = client.stats();
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.retries, 0, "no command needed a retry: none was written into a dead socket");
    assert!(stats.fins_seen_idle >= 12);
}

#[test]
fn control_loop_against_close_after_every_response_loses_nothing() {
    let mut client = client();
    let dev = DeviceServer::close_after_response();
    for i in 0..200 {
        let resp =
            if i % 2 == 0 { client.put(&dev.url(PUT_PATH), "1") } else { client.get(&dev.url(GET_PATH)) };
        assert_eq!(resp.unwrap().status(), 200, "command {i}");
        assert!(wait_until(SETTLE, || dev.fins_completed() == i + 1));
    }
    assert_eq!(dev.request_count(), 200);
    assert_eq!(distinct_connections(&dev), 200, "one fresh connection per command");
    assert!(dev.connections_accepted() <= 201, "plus at most one warm spare");
    assert!(closed_after_fin(&mut client, &dev, || 200));
    assert_eq!(dev.bytes_after_fin(), 0);
    assert_eq!(client.stats().failed, 0);
}

#[test]
fn idle_close_device_never_receives_bytes_after_its_fin() {
    let mut client = client();
    let idle = Duration::from_millis(20);
    let dev = DeviceServer::idle_close(idle);
    let mut fins = 0;
    // Gaps on both sides of the device's idle timeout; after a longer gap the FIN has arrived.
    for (i, gap_ms) in [1u64, 5, 30, 2, 40, 10, 25, 0, 35].into_iter().enumerate() {
        let resp =
            if i % 2 == 0 { client.put(&dev.url(PUT_PATH), "1") } else { client.get(&dev.url(GET_PATH)) };
        assert_eq!(resp.unwrap().status(), 200);
        if Duration::from_millis(gap_ms) > idle {
            fins += 1;
            assert!(wait_until(SETTLE, || dev.fins_completed() == fins));
        } else {
            std::thread::sleep(Duration::from_millis(gap_ms));
        }
    }
    assert_eq!(dev.request_count(), 9);
    assert!(dev.connections_accepted() > 1);
    assert!(closed_after_fin(&mut client, &dev, || dev.fins_completed()));
    assert_eq!(dev.bytes_after_fin(), 0);
    assert_eq!(client.stats().failed, 0);
}

#[test]
fn keep_alive_device_is_served_on_one_connection() {
    let mut client = client();
    let dev = DeviceServer::keep_alive();
    for i in 0..100 {
        let resp =
            if i % 2 == 0 { client.put(&dev.url(PUT_PATH), "1") } else { client.get(&dev.url(GET_PATH)) };
        assert_eq!(resp.unwrap().status(), 200);
    }
    assert_eq!(dev.connections_accepted(), 1);
    let stats = client.stats();
    assert_eq!((stats.connects, stats.reuses, stats.succeeded), (1, 99, 100));
    let conns = client.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!((conns[0].state, conns[0].served), ("Open(Idle)", 100));
}

#[test]
fn rst_after_response_is_survived_on_a_new_connection() {
    let mut client = client();
    let dev = DeviceServer::rst_after_response();
    for i in 0..20 {
        let resp = client.get(&dev.url(GET_PATH)).unwrap();
        assert_eq!(resp.status(), 200, "command {i}");
        assert!(wait_until(SETTLE, || dev.rsts_sent() == i + 1));
    }
    assert_eq!(distinct_connections(&dev), 20);
    assert!(dev.connections_accepted() <= 21, "plus at most one warm spare");
    assert_eq!(client.stats().failed, 0);
}
