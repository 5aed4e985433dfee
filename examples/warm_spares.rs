//! What a warm spare does with a gap between commands: a device that closes after every
//! response (FIN, no `Connection: close`), commands 500 µs apart as in a control loop, with warm
//! spares on and off, against a keep-alive device as the reference.
//! `cargo run --release --example warm_spares`.
//!
//! With spares on, the next connection is opened while the previous one's request is in flight
//! (the device is known to close after every response), so it is connected by the time the next
//! command comes (`warm spares used` counts them); with them off, every command waits for its
//! handshake. The device is the kind most embedded HTTP servers are: one thread, one event loop,
//! accepting and answering on the same thread.
//!
//! What it shows on loopback (PERFORMANCE.md has the figures): a spare takes the handshake's
//! *wait* off the critical path, but on loopback that wait is a few microseconds of CPU; what a
//! fresh connection really costs here, spare or not, is the setup and teardown work in both
//! kernels during the exchange, and that stays. Across a link with a real round trip the spare
//! saves the whole round trip: `compare/run.sh --link-delay-us 500`, scenario (b).

#[path = "common/epoll_device.rs"]
mod epoll_device;

use std::time::{Duration, Instant};

use epoll_device::EpollDevice;
use finwatch::{Client, Request, Response};

const COMMANDS: usize = 2_000;
const WARMUP: usize = 20;
const GAP: Duration = Duration::from_micros(500);
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"state\":true}";

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_micros();
    format!("p50 {:>4} µs   p99 {:>5} µs", p(0.5), p(0.99))
}

fn run(close_after_response: bool, spares: bool) -> Result<String, Box<dyn std::error::Error>> {
    let dev = EpollDevice::start(RESPONSE, close_after_response)?;
    let mut client = Client::builder().warm_spares(spares).build()?;
    let url = format!("http://{}/unico/v1/interface/io-state?ioId=25602", dev.addr);
    let req = Request::get(&url).build()?;
    let mut resp = Response::default();
    let mut latencies = Vec::with_capacity(COMMANDS);
    for i in 0..COMMANDS {
        let t = Instant::now();
        client.execute(&req, &mut resp)?;
        if i >= WARMUP {
            latencies.push(t.elapsed());
        }
        std::thread::sleep(GAP);
    }
    let s = client.stats();
    Ok(format!(
        "{}   connects {:>4}   warm spares used {:>4}",
        percentiles(latencies),
        s.connects,
        s.warm_spares_used
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("{COMMANDS} GETs, {} µs apart, prepared requests (Client::execute)", GAP.as_micros());
    println!("keep-alive device:                      {}", run(false, true)?);
    println!("FIN after every response, spares on:    {}", run(true, true)?);
    println!("FIN after every response, spares off:   {}", run(true, false)?);
    Ok(())
}
