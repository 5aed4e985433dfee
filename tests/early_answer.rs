//! The faults issue's first fault, as it was measured: 60 POSTs of 2 MiB to a device that reads
//! each request's head and ~96 KiB of its body, acts on it, answers at once (`200`, or `413
//! Payload Too Large` as nginx and many embedded servers do) and closes with the rest unread,
//! so that its kernel resets the connection under the client's write.
//!
//! Before the fix, 30 of the POSTs were applied twice (answering `200`; 45 answering `413`), and
//! 21 (42) failed with `may_have_been_processed() == false` although the device had applied
//! them: the write error was reported before the answer waiting in the socket was read, and a
//! partly written body counted as unsent. Now every answer is the outcome, and nothing is sent
//! twice.

mod support;

use std::time::Duration;

use finwatch::{Client, Request};
use support::*;

const POSTS: usize = 60;
const BODY: usize = 2 << 20;
const READ_BEFORE_ANSWER: usize = 96 << 10;

fn early_answer(status_line: &'static [u8]) {
    let _ = env_logger::builder().is_test(true).try_init();
    let cut = CutRequest {
        after_requests: 0,
        once: false,
        after_bytes: READ_BEFORE_ANSWER,
        respond: status_line,
        then: Cut::Close,
    };
    let device =
        DeviceServer::with_options(ServerOptions { cut_request: Some(cut), ..Default::default() }, seq_reply);
    let mut client = Client::builder().request_timeout(Duration::from_secs(5)).build().unwrap();
    let want: u16 = std::str::from_utf8(&status_line[9..12]).unwrap().parse().unwrap();
    let body = vec![b'x'; BODY];
    for i in 0..POSTS {
        let req = Request::post(&device.url(&format!("/counter/{i}")), body.clone()).build().unwrap();
        match client.send(req) {
            Ok(resp) => assert_eq!(resp.status(), want, "POST {i}"),
            Err(e) => panic!("POST {i}: the device answered {want}, the client reported {e} ({e:?})"),
        }
    }
    assert_eq!(client.stats().retries, 0, "a POST was sent again");
    // Every POST reached the device once: one cut (one head acted on) per POST.
    assert_eq!(device.requests_cut_after_reading(), POSTS, "the device acted on a POST more than once");
}

#[test]
fn an_early_200_then_rst_is_the_answer_and_no_post_is_applied_twice() {
    early_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

#[test]
fn an_early_413_then_rst_is_returned_as_a_response_not_an_error() {
    early_answer(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}
