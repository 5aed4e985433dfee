//! What the [`SharedClient`]'s loop thread costs: the same sequential requests through
//! `Client::send` and `SharedClient::send`, interleaved in blocks of 100 so both see the same
//! machine load, against `tests/support`'s keep-alive device on loopback.
//!
//! `cargo run --release --example thread_hop [requests per client, default 3000]`

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use finwatch::{Client, Request, SharedClient};
use support::DeviceServer;

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    let slow = v.iter().filter(|d| **d > Duration::from_millis(1)).count();
    format!(
        "p50 {:>6.1?}  p90 {:>6.1?}  p99 {:>6.1?}  max {:>6.1?}  over 1 ms: {slow}/{}",
        at(0.5),
        at(0.9),
        at(0.99),
        v[v.len() - 1],
        v.len()
    )
}

fn main() -> Result<(), finwatch::Error> {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3000).max(1);
    let dev = DeviceServer::keep_alive();
    let url = dev.url("/state");
    let get = || Request::get(&url).timeout(Duration::from_secs(2)).build();
    let mut direct = Client::new()?;
    let shared = SharedClient::new()?;
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for round in 0..2 * n {
        let req = get()?;
        let t0 = Instant::now();
        if (round / 100) % 2 == 0 {
            direct.send(req)?;
            a.push(t0.elapsed());
        } else {
            shared.send(req)?;
            b.push(t0.elapsed());
        }
    }
    println!("Client::send       {}", summary(a));
    println!("SharedClient::send {}", summary(b));
    shared.shutdown(Duration::from_secs(1));
    Ok(())
}
