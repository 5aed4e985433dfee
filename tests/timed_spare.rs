//! A caller that pauses longer than the device keeps a connection, over loopback, with the real
//! kernel: without being driven between commands, the client has a warm spare connected before
//! each command comes (the kernel's side of the seam starts its connect at a set time, on a
//! thread of its own), and no command is lost or pays a handshake once the device is learned.

mod support;

use std::thread;
use std::time::Duration;

use finwatch::Client;
use support::*;

/// The caller's pace, and the device's idle close (after a response; an unused connection
/// waits for its request). The pause is the scenario, not a synchronisation.
const PAUSE: Duration = Duration::from_millis(30);
const IDLE: Duration = Duration::from_millis(20);
const COMMANDS: usize = 8;

#[test]
fn a_spare_connects_while_the_caller_is_away() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dev = DeviceServer::idle_close(IDLE);
    let mut client = Client::new().unwrap();
    let url = dev.url("/unico/v1/interface/io-state?ioId=25602");
    let mut accepted_before = Vec::new();
    for k in 0..COMMANDS {
        if k > 0 {
            thread::sleep(PAUSE);
        }
        accepted_before.push(dev.connections_accepted());
        let resp = client.get(&url).unwrap_or_else(|e| panic!("command {k}: {e}"));
        assert_eq!(resp.status(), 200, "command {k}");
    }
    let s = client.stats();
    // Command 0 connects; command 1 finds the device's FIN (learning that it closes idle
    // connections, and how soon at most) and connects; from then on each command's write sets
    // a spare for the next, which the kernel connects during the pause.
    assert!(s.warm_spares_timed as usize >= COMMANDS - 2, "{s:?}");
    assert!(s.warm_spares_used as usize >= COMMANDS - 2, "{s:?}");
    for (k, &n) in accepted_before.iter().enumerate().skip(2) {
        assert!(
            n > k,
            "command {k}: {n} connections accepted before it was sent, so it had none ready: \
             {accepted_before:?}, {s:?}"
        );
    }
    assert_eq!(s.failed, 0, "{s:?}");
    assert_eq!(dev.bytes_after_fin(), 0, "no request written after the device's FIN");
    drop(client);
}

/// The same caller, with warm spares turned off: no thread, no timed connect, a handshake per
/// command after the first pause.
#[test]
fn no_timed_spare_without_warm_spares() {
    let dev = DeviceServer::idle_close(IDLE);
    let mut client = Client::builder().warm_spares(false).build().unwrap();
    let url = dev.url("/x");
    for k in 0..4 {
        if k > 0 {
            thread::sleep(PAUSE);
        }
        assert_eq!(client.get(&url).unwrap().status(), 200);
    }
    let s = client.stats();
    assert_eq!((s.warm_spares_timed, s.warm_spares_opened, s.failed), (0, 0, 0), "{s:?}");
    assert_eq!(dev.connections_accepted(), 4);
}
