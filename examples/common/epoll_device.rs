//! A single-threaded device for the examples that measure finwatch's hot path: one `mio` event
//! loop on its own thread that sleeps in `epoll_wait` between requests (as `compare/`'s device
//! and most embedded HTTP servers do), accepting and answering on the same thread. It answers
//! each GET (a request ends with its blank line) with a fixed response, then keeps the
//! connection or closes it (FIN). Stopped and joined on drop.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

pub struct EpollDevice {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl EpollDevice {
    /// Listens on an ephemeral loopback port; answers every GET with `response`, and closes
    /// the connection after each answer if `close_after_response`.
    pub fn start(response: &'static [u8], close_after_response: bool) -> io::Result<EpollDevice> {
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
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(_) => done = true,
                        }
                        break;
                    }
                    // GETs only: a request ends with its blank line.
                    while let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        req.drain(..end + 4);
                        if s.write_all(response).is_err() || close_after_response {
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
        Ok(EpollDevice { addr, stop, thread: Some(thread) })
    }
}

impl Drop for EpollDevice {
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
