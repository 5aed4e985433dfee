//! The simulated device the C and C++ examples talk to: the tests' own `DeviceServer`
//! (tests/support), on an ephemeral loopback port.
//!
//! `cargo run -p finwatch-ffi --example sim_device` prints two lines on stdout, then serves until
//! its stdin closes (or for at most 120 s):
//!
//! 1. the device's base URL, `http://127.0.0.1:PORT`;
//! 2. the URL of a loopback port on which nothing listens (bound, then closed): a refused connect.
//!
//! What it answers, by path:
//!
//! - `/fin…`: `200 OK`, body `{"seq":N}`, then FIN (in the response's last segment), without
//!   `Connection: close`: the incident's device, which closes after every response;
//! - `/echo…`: `200 OK`, the request body as the body, the request's method in `X-Method` and its
//!   `X-Command-Id` field (if any) in `X-Command-Id`;
//! - `/slow…`: `200 OK` after 2 s (for a request deadline to pass first);
//! - `/missing…`: `404 Not Found`;
//! - anything else: `200 OK`, body `{"value":1}`, keep-alive.
//!
//! When stdin closes it prints its counters on stderr and exits with status 1 if the client ever
//! wrote a byte on a connection after the device had closed it (the incident's signature), 0
//! otherwise.

// tests/support names the core crate `finwatch`; here that name is this package's own library.
extern crate finwatch_core as finwatch;

#[path = "../../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use support::{After, DeviceServer, Received, Reply};

/// The longest the device serves, whether or not its stdin closes.
const LIFETIME: Duration = Duration::from_secs(120);

fn reply(req: &Received) -> Reply {
    let path = req.target.as_str();
    if path.starts_with("/fin") {
        Reply::ok_for(req, format!("{{\"seq\":{}}}", req.seq).as_bytes()).then(After::Fin)
    } else if path.starts_with("/echo") {
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nX-Method: {}\r\n",
            req.body.len(),
            req.method
        );
        if let Some(id) = req.header("x-command-id") {
            bytes.push_str(&format!("X-Command-Id: {id}\r\n"));
        }
        bytes.push_str("\r\n");
        let mut bytes = bytes.into_bytes();
        bytes.extend_from_slice(&req.body);
        Reply::raw(bytes)
    } else if path.starts_with("/slow") {
        Reply::ok_for(req, br#"{"slow":true}"#).delayed(Duration::from_secs(2))
    } else if path.starts_with("/missing") {
        Reply::raw(&b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"[..])
    } else {
        Reply::ok_for(req, br#"{"value":1}"#)
    }
}

fn main() -> ExitCode {
    let device = DeviceServer::start(reply);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let closed = match closed {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("sim_device: cannot bind a loopback port: {e}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "http://{}\nhttp://{closed}", device.addr()).and_then(|()| stdout.flush()).is_err() {
        return ExitCode::from(2);
    }
    drop(stdout);

    let (eof, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        let _ = eof.send(());
    });
    if wait.recv_timeout(LIFETIME).is_err() {
        eprintln!("sim_device: stdin still open after {LIFETIME:?}; stopping");
    }

    let late = device.bytes_after_fin();
    eprintln!(
        "sim_device: {} requests on {} connections, {} FINs sent, {} bytes after FIN",
        device.request_count(),
        device.connections_accepted(),
        device.fins_sent(),
        late
    );
    drop(device);
    if late > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
