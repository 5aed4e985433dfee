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

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use finwatch::{Client, Request, Response};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const COMMANDS: usize = 2_000;
const WARMUP: usize = 20;
const GAP: Duration = Duration::from_micros(500);
const LISTENER: Token = Token(usize::MAX);
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"state\":true}";

/// A single-threaded device: answers each GET, then keeps the connection or closes it (FIN).
struct Device {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Device {
    fn start(close_after_response: bool) -> io::Result<Device> {
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("address"))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || -> io::Result<()> {
            let mut poll = Poll::new()?;
            poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
            let mut events = Events::with_capacity(64);
            let mut conns: Vec<Option<(TcpStream, Vec<u8>)>> = Vec::new();
            let mut buf = [0u8; 4096];
            while !stopping.load(Ordering::Relaxed) {
                poll.poll(&mut events, Some(Duration::from_millis(20)))?;
                for e in events.iter() {
                    if e.token() == LISTENER {
                        while let Ok((mut s, _)) = listener.accept() {
                            s.set_nodelay(true)?;
                            let slot = conns.iter().position(Option::is_none).unwrap_or(conns.len());
                            poll.registry().register(&mut s, Token(slot), Interest::READABLE)?;
                            match conns.get_mut(slot) {
                                Some(c) => *c = Some((s, Vec::new())),
                                None => conns.push(Some((s, Vec::new()))),
                            }
                        }
                        continue;
                    }
                    let slot = e.token().0;
                    let Some(Some((s, req))) = conns.get_mut(slot) else { continue };
                    let mut done = false;
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => done = true,
                            Ok(n) => {
                                req.extend_from_slice(&buf[..n]);
                                continue;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(_) => done = true,
                        }
                        break;
                    }
                    // GETs only: a request ends with its blank line.
                    while let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        req.drain(..end + 4);
                        if s.write_all(RESPONSE).is_err() || close_after_response {
                            done = true;
                            break;
                        }
                    }
                    if done {
                        conns[slot] = None; // dropping the stream closes it: FIN
                    }
                }
            }
            Ok(())
        });
        Ok(Device { addr, stop, thread: Some(thread) })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("device: {e}"),
                Err(_) => eprintln!("device thread panicked"),
            }
        }
    }
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_micros();
    format!("p50 {:>4} µs   p99 {:>5} µs", p(0.5), p(0.99))
}

fn run(close_after_response: bool, spares: bool) -> Result<String, Box<dyn std::error::Error>> {
    let dev = Device::start(close_after_response)?;
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
