//! What a warm spare saves: a device that closes after every response (FIN, no
//! `Connection: close`), commands 500 µs apart as in a control loop, with warm spares on and off,
//! against a keep-alive device as the reference. `cargo run --release --example warm_spares`.
//!
//! With spares on, the next connection is opened the moment the previous one is known to be
//! ending, so it is connected by the time the next command comes; with them off, every command
//! pays the handshake. The simulated device is `tests/support`'s (a thread per connection).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use finwatch::{Client, Request, Response};
use support::DeviceServer;

const COMMANDS: usize = 2_000;
const WARMUP: usize = 20;
const GAP: Duration = Duration::from_micros(500);

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_micros();
    format!("p50 {:>4} µs   p99 {:>5} µs", p(0.5), p(0.99))
}

fn run(dev: &DeviceServer, spares: bool) -> String {
    let mut client = Client::builder().warm_spares(spares).build().expect("client");
    let req = Request::get(&dev.url("/unico/v1/interface/io-state?ioId=25602")).build().expect("request");
    let mut resp = Response::default();
    let mut latencies = Vec::with_capacity(COMMANDS);
    for i in 0..COMMANDS {
        let t = Instant::now();
        client.execute(&req, &mut resp).expect("command");
        if i >= WARMUP {
            latencies.push(t.elapsed());
        }
        std::thread::sleep(GAP);
    }
    let s = client.stats();
    format!(
        "{}   connects {:>4}   warm spares used {:>4}",
        percentiles(latencies),
        s.connects,
        s.warm_spares_used
    )
}

fn main() {
    println!("{COMMANDS} GETs, {} µs apart, prepared requests (Client::execute)", GAP.as_micros());
    println!("keep-alive device:                      {}", run(&DeviceServer::keep_alive(), true));
    println!("FIN after every response, spares on:    {}", run(&DeviceServer::close_after_response(), true));
    println!("FIN after every response, spares off:   {}", run(&DeviceServer::close_after_response(), false));
}
