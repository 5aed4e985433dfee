//! Binding before the connect (`ClientBuilder::local_address`, and on Linux `bind_device`), for
//! controllers with several network interfaces: the device sees the connection come from the
//! bound address, a host name's addresses of the other family are skipped, and a device with no
//! address of the bound family fails with a typed error before any socket is opened.
//!
//! The device here is a few lines of std: it records each accepted connection's peer address (the
//! proof of the bind) and what it received. Every wait is bounded: the device gives up after
//! [`DEVICE_LIFE`], the client's connect and request timeouts are short.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use finwatch::{Client, ClientBuilder, Error};

/// How long a device accepts connections at most (a test that fails must not hang).
const DEVICE_LIFE: Duration = Duration::from_secs(5);

const V4_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6_LOOPBACK: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A device on `ip` (port `port`, 0 for any) that answers every request `200 ok` and records
/// the peer of each connection it accepts, until [`DEVICE_LIFE`] has passed. With `close`, it
/// closes each connection after its first response (`Connection: close`).
struct Device {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl Device {
    fn on(ip: IpAddr, port: u16) -> io::Result<Device> {
        Device::start(ip, port, false)
    }

    fn start(ip: IpAddr, port: u16, close: bool) -> io::Result<Device> {
        let listener = TcpListener::bind(SocketAddr::new(ip, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&peers);
        let thread = thread::spawn(move || {
            let end = Instant::now() + DEVICE_LIFE;
            while Instant::now() < end {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        seen.lock().unwrap().push(peer);
                        // A thread per connection: a keep-alive one must not hold up the next.
                        thread::spawn(move || serve(&mut conn, end, close));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Device { addr, peers, thread: Some(thread) })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // The accept loop ends by itself within DEVICE_LIFE; the tests do not wait for it.
        drop(self.thread.take());
    }
}

/// Answers the requests of one connection (`200 ok`) until it closes or `end`; with `close`,
/// one request only.
fn serve(conn: &mut std::net::TcpStream, end: Instant, close: bool) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while Instant::now() < end {
        let n = match conn.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..at + 4);
            if close {
                conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")?;
                return Ok(());
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
        }
    }
    Ok(())
}

fn builder() -> ClientBuilder {
    Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(3))
        .max_retries(0)
}

/// The error is `ConnectFailed` whose source has `kind`; returns the source's message.
fn connect_failed(result: Result<finwatch::Response, Error>, kind: io::ErrorKind) -> String {
    match result {
        Err(Error::ConnectFailed { source, .. }) => {
            assert_eq!(source.kind(), kind, "{source}");
            source.to_string()
        }
        other => panic!("expected ConnectFailed ({kind:?}), got {other:?}"),
    }
}

#[test]
fn a_connection_bound_to_127_0_0_1_comes_from_it() {
    let device = Device::on(V4_LOOPBACK, 0).unwrap();
    let mut client = builder().local_address(V4_LOOPBACK).build().unwrap();
    for _ in 0..2 {
        assert!(client.get(&device.url("/io-state")).unwrap().is_success());
    }
    let peers = device.peers();
    assert_eq!(peers.len(), 1, "one keep-alive connection: {peers:?}");
    assert_eq!(peers[0].ip(), V4_LOOPBACK);
}

/// All of 127.0.0.0/8 is loopback on Linux (only 127.0.0.1 is configured on macOS's `lo0`):
/// without the bind the connection would come from 127.0.0.1, the route's source address.
#[cfg(target_os = "linux")]
#[test]
fn a_connection_bound_to_127_0_0_2_comes_from_it() {
    let second = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let device = Device::on(V4_LOOPBACK, 0).unwrap();
    let mut client = builder().local_address(second).build().unwrap();
    assert!(client.get(&device.url("/io-state")).unwrap().is_success());
    // The unbound client, for contrast: the route's source.
    let mut plain = builder().build().unwrap();
    assert!(plain.get(&device.url("/io-state")).unwrap().is_success());
    let peers: Vec<IpAddr> = device.peers().iter().map(|p| p.ip()).collect();
    assert_eq!(peers, [second, V4_LOOPBACK]);
}

/// A name resolving to `::1` first and `127.0.0.1` second, with a local IPv4 address: `::1` is
/// skipped without a socket (a device listening there sees nothing), `127.0.0.1` is used, and
/// new connections start with it.
#[test]
fn a_name_with_both_families_is_reached_at_the_bound_family() {
    // Closing after each response: every request takes a new connection.
    let device = Device::start(V4_LOOPBACK, 0, true).unwrap();
    let port = device.addr.port();
    // The same port on ::1, if this host has IPv6 (and the port is free there): it must see
    // nothing.
    let v6 = Device::on(V6_LOOPBACK, port).ok();
    let mut client = builder()
        .local_address(V4_LOOPBACK)
        .warm_spares(false)
        .resolver(move |_name, port| {
            Ok(vec![SocketAddr::new(V6_LOOPBACK, port), SocketAddr::new(V4_LOOPBACK, port)])
        })
        .build()
        .unwrap();
    let url = format!("http://valve-7:{port}/io-state");
    for _ in 0..3 {
        assert!(client.get(&url).unwrap().is_success());
    }
    let peers = device.peers();
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert!(peers.iter().all(|p| p.ip() == V4_LOOPBACK), "{peers:?}");
    if let Some(v6) = v6 {
        assert_eq!(v6.peers(), [], "the IPv6 address was not to be tried");
    }
}

/// A device with no address of the bound family: `ConnectFailed`, `AddrNotAvailable`, saying
/// which families differ; no socket was opened, so the device saw nothing.
#[test]
fn the_wrong_family_fails_typed_and_sends_nothing() {
    // An IPv6 literal from a local IPv4 address.
    let v6 = Device::on(V6_LOOPBACK, 0).ok();
    let port = v6.as_ref().map_or(9, |d| d.addr.port());
    let mut client = builder().local_address(V4_LOOPBACK).build().unwrap();
    let msg = connect_failed(client.get(&format!("http://[::1]:{port}/io")), io::ErrorKind::AddrNotAvailable);
    assert!(msg.contains("IPv4") && msg.contains("IPv6"), "{msg}");
    // A name whose only address is IPv6: the same.
    let mut named = builder()
        .local_address(V4_LOOPBACK)
        .resolver(|_, port| Ok(vec![SocketAddr::new(V6_LOOPBACK, port)]))
        .build()
        .unwrap();
    connect_failed(named.get(&format!("http://valve-7:{port}/io")), io::ErrorKind::AddrNotAvailable);
    if let Some(v6) = v6 {
        assert_eq!(v6.peers(), []);
    }
    // An IPv4 device from a local IPv6 address (no IPv6 needed: nothing is opened).
    let v4 = Device::on(V4_LOOPBACK, 0).unwrap();
    let mut client = builder().local_address(V6_LOOPBACK).build().unwrap();
    let msg = connect_failed(client.get(&v4.url("/io")), io::ErrorKind::AddrNotAvailable);
    assert!(msg.contains("is IPv6") && msg.contains("is IPv4"), "{msg}");
    assert_eq!(v4.peers(), []);
}

/// A local address this host does not have (TEST-NET-1): the bind fails, `ConnectFailed`.
#[test]
fn an_address_this_host_does_not_have_fails_at_the_bind() {
    let device = Device::on(V4_LOOPBACK, 0).unwrap();
    let mut client = builder().local_address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))).build().unwrap();
    connect_failed(client.get(&device.url("/io")), io::ErrorKind::AddrNotAvailable);
    assert_eq!(device.peers(), []);
}

/// `SO_BINDTODEVICE`: bound to `lo` the device is reached; a missing interface fails every
/// connect (`ENODEV`) and nothing is sent; a name no interface can have fails `build()`.
#[cfg(target_os = "linux")]
#[test]
fn bind_device_lo_works_and_a_missing_interface_fails_typed() {
    let device = Device::on(V4_LOOPBACK, 0).unwrap();
    let mut client = builder().bind_device("lo").build().unwrap();
    match client.get(&device.url("/io-state")) {
        Ok(resp) => assert!(resp.is_success()),
        // Linux before 5.7 without CAP_NET_RAW: the documented failure.
        Err(Error::ConnectFailed { source, .. }) if source.kind() == io::ErrorKind::PermissionDenied => {
            eprintln!("SO_BINDTODEVICE not permitted here (Linux < 5.7 without CAP_NET_RAW): {source}");
            return;
        }
        Err(e) => panic!("bound to lo: {e:?}"),
    }
    assert_eq!(device.peers().len(), 1);

    let mut missing = builder().bind_device("finwatch-nx0").build().unwrap();
    match missing.get(&device.url("/io-state")) {
        Err(Error::ConnectFailed { source, .. }) => assert_eq!(source.raw_os_error(), Some(19), "{source}"), // ENODEV
        other => panic!("expected ConnectFailed (ENODEV), got {other:?}"),
    }
    assert_eq!(device.peers().len(), 1, "nothing reached the device");

    for bad in ["", "a/b", "eth0:1", "has space", "sixteen-bytes-xx"] {
        match Client::builder().bind_device(bad).build() {
            Err(Error::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {e}"),
            other => panic!("{bad:?}: expected Error::Io(InvalidInput), got {other:?}"),
        }
    }
}
