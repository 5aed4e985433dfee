//! Out of file descriptors: `socket()` fails at once with `EMFILE`. Its own test binary, because
//! it lowers the process's descriptor limit.
//!
//! Before, with more than one request in flight per host, each synchronous failure was replaced
//! by another connect in the same batch of driver actions: the loop never returned and no
//! deadline fired (100 % CPU, hung until killed). Now a failure that happens at once is handled
//! like one that happens later: the request it was for fails with the connect error, and the
//! client works again once descriptors are free.

#![cfg(target_os = "linux")]

mod support;

use std::fs::File;
use std::os::raw::{c_int, c_ulong};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use finwatch::{Client, Error, Request};
use support::*;

#[repr(C)]
struct RLimit {
    cur: c_ulong,
    max: c_ulong,
}

unsafe extern "C" {
    fn getrlimit(resource: c_int, rlim: *mut RLimit) -> c_int;
    fn setrlimit(resource: c_int, rlim: *const RLimit) -> c_int;
}

const RLIMIT_NOFILE: c_int = 7;

#[test]
fn socket_failing_at_once_fails_the_requests_and_the_client_recovers() {
    let device = DeviceServer::keep_alive();
    let url = device.url("/io");
    let (tx, rx) = mpsc::channel();
    // A thread of its own, so that a regression (a loop that never returns) fails the test at a
    // deadline instead of hanging it.
    thread::spawn(move || {
        let mut client = Client::builder()
            .max_in_flight_per_host(2)
            .request_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        // A low soft limit, then every descriptor under it taken.
        let mut old = RLimit { cur: 0, max: 0 };
        assert_eq!(unsafe { getrlimit(RLIMIT_NOFILE, &mut old) }, 0);
        let low = RLimit { cur: 256.min(old.cur), max: old.max };
        assert_eq!(unsafe { setrlimit(RLIMIT_NOFILE, &low) }, 0);
        let mut hog = Vec::new();
        while let Ok(f) = File::open("/dev/null") {
            hog.push(f);
        }
        let ids: Vec<_> = (0..4).map(|_| client.submit(Request::get(&url).build().unwrap())).collect();
        let mut done = Vec::new();
        while done.len() < ids.len() {
            client.poll(Some(Duration::from_millis(100)), &mut done).unwrap();
        }
        let errors: Vec<String> = done
            .iter()
            .map(|c| match &c.result {
                Err(e @ Error::ConnectFailed { source, .. }) if source.raw_os_error() == Some(24) => {
                    assert!(!e.may_have_been_processed());
                    String::new()
                }
                other => format!("{other:?}"),
            })
            .filter(|s| !s.is_empty())
            .collect();
        let connects = client.stats().connects;
        // Descriptors free again: the same client works.
        drop(hog);
        assert_eq!(unsafe { setrlimit(RLIMIT_NOFILE, &old) }, 0);
        let ok = client.send(Request::get(&url).build().unwrap()).map(|r| r.status());
        tx.send((errors, connects, ok.map_err(|e| e.to_string()))).unwrap();
    });
    let (errors, connects, ok) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the client's loop did not return: it spins on EMFILE");
    assert!(errors.is_empty(), "requests that did not fail with EMFILE: {errors:?}");
    assert!(connects <= 4, "{connects} connects for 4 requests");
    assert_eq!(ok, Ok(200));
}
