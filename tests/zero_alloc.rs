//! Heap allocations per command on a reused connection, counted by a global allocator that
//! counts only the calling thread's allocations (the device server's threads are not ours).
//! With `Client::execute` and a prepared request, the steady path allocates nothing.

mod support;

use finwatch::{Client, Request, Response};
use support::DeviceServer;

#[path = "support/alloc_count.rs"]
mod alloc_count;

use alloc_count::count;

const COMMANDS: u64 = 200;

#[test]
fn execute_with_reused_buffers_allocates_nothing_per_command() {
    let dev = DeviceServer::keep_alive();
    let mut client = Client::new().unwrap();
    let put =
        Request::put(&dev.url("/unico/v1/interface/io"), r#"{"ioId":25602,"value":1}"#).build().unwrap();
    let get = Request::get(&dev.url("/unico/v1/interface/io-state?ioId=25602")).build().unwrap();
    let mut resp = Response::default();
    // Warm up: connection, pools, buffers and the timer heap reach their steady size.
    for _ in 0..100 {
        client.execute(&put, &mut resp).unwrap();
        client.execute(&get, &mut resp).unwrap();
    }
    let allocs = count(|| {
        for _ in 0..COMMANDS / 2 {
            client.execute(&put, &mut resp).unwrap();
            client.execute(&get, &mut resp).unwrap();
        }
    });
    assert_eq!(resp.status(), 200);
    assert_eq!(client.stats().connects, 1);
    assert_eq!(allocs, 0, "{allocs} allocations in {COMMANDS} commands");
}

#[test]
fn convenience_api_allocation_count_is_small_and_bounded() {
    let dev = DeviceServer::keep_alive();
    let mut client = Client::new().unwrap();
    let url = dev.url("/unico/v1/interface/io-state?ioId=25602");
    for _ in 0..10 {
        client.get(&url).unwrap();
    }
    let allocs = count(|| {
        for _ in 0..COMMANDS {
            client.get(&url).unwrap();
        }
    });
    let per_command = allocs as f64 / COMMANDS as f64;
    println!("client.get(url): {per_command:.1} allocations per command");
    // The response the call returns: one buffer for its head and body, and its header index
    // (the caller owns them; a head that arrives in two reads grows once more). The request for
    // a URL used before is kept, not parsed and built again (before: 12 per command; 3 while
    // head and body had a buffer each).
    assert!(per_command < 2.5, "{per_command} allocations per command");

    // A PUT's body is the caller's (`Into<Vec<u8>>`: a `Vec` moves in, a `&str` is copied).
    let put_url = dev.url("/unico/v1/interface/io");
    client.put(&put_url, vec![b'1'; 16]).unwrap();
    let allocs = count(|| {
        for _ in 0..COMMANDS {
            client.put(&put_url, "{\"ioId\":25602,\"value\":1}").unwrap();
        }
    });
    let per_command = allocs as f64 / COMMANDS as f64;
    println!("client.put(url, &str): {per_command:.1} allocations per command");
    assert!(per_command < 3.5, "{per_command} allocations per command");
}

#[test]
fn submit_ref_poll_and_recycle_allocate_nothing_per_command() {
    let dev = DeviceServer::keep_alive();
    let mut client = Client::new().unwrap();
    let get = Request::get(&dev.url("/unico/v1/interface/io-state?ioId=25602")).build().unwrap();
    let mut done = Vec::with_capacity(8);
    let mut one = |client: &mut Client| {
        let id = client.submit_ref(&get);
        while done.is_empty() {
            client.poll(Some(std::time::Duration::from_secs(2)), &mut done).unwrap();
        }
        let c = done.pop().unwrap();
        assert_eq!(c.id, id);
        client.recycle(c.result.unwrap());
    };
    for _ in 0..200 {
        one(&mut client);
    }
    let allocs = count(|| {
        for _ in 0..COMMANDS {
            one(&mut client);
        }
    });
    assert_eq!(allocs, 0, "{allocs} allocations in {COMMANDS} commands");
}

/// A device that closes after every response: a fresh connection (a warm spare) per command,
/// and still no allocation per command (the connect's host name is shared, not copied).
#[test]
fn a_connection_per_command_allocates_nothing_per_command() {
    let dev = DeviceServer::close_after_response();
    let mut client = Client::new().unwrap();
    let get = Request::get(&dev.url("/unico/v1/interface/io-state?ioId=25602")).build().unwrap();
    let mut resp = Response::default();
    // Warm up: pools, buffers and the timer heap reach their steady size.
    for _ in 0..200 {
        client.execute(&get, &mut resp).unwrap();
    }
    let connects = client.stats().connects;
    let allocs = count(|| {
        for _ in 0..200 {
            client.execute(&get, &mut resp).unwrap();
        }
    });
    assert_eq!(resp.status(), 200);
    assert!(client.stats().connects >= connects + 190, "{:?}", client.stats());
    assert_eq!(allocs, 0, "{allocs} allocations in 200 commands");
}
