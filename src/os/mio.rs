//! The real kernel: mio's poller and socket2's sockets. The only file of the crate that names
//! either.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::{Caps, Kernel, Notify, OpenOpts, Ready, Waited};

/// `EINPROGRESS`: a non-blocking connect has started (`io::ErrorKind::InProgress` is unstable).
#[cfg(target_os = "linux")]
const EINPROGRESS: i32 = 115;
#[cfg(not(target_os = "linux"))]
const EINPROGRESS: i32 = 36;

/// The token of the client's waker: never a socket's (slab indices stay below `u32::MAX`, which
/// is `usize::MAX` on 32-bit targets: `slab::MAX_SLOTS`).
const WAKE: Token = Token(usize::MAX);

/// mio's `Poll` and its event buffer.
pub(crate) struct MioKernel {
    poll: Poll,
    events: Events,
}

impl MioKernel {
    /// A poller whose event buffer holds `events` events per wait.
    pub(crate) fn new(events: usize) -> io::Result<MioKernel> {
        Ok(MioKernel { poll: Poll::new()?, events: Events::with_capacity(events) })
    }

    /// The poller's file descriptor, for embedding in another event loop.
    #[cfg(unix)]
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.poll.as_raw_fd()
    }
}

impl std::fmt::Debug for MioKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MioKernel").finish_non_exhaustive()
    }
}

impl Notify for mio::Waker {
    fn notify(&self) -> io::Result<()> {
        self.wake()
    }
}

impl Kernel for MioKernel {
    type Stream = mio::net::TcpStream;

    fn caps(&self) -> Caps {
        Caps {
            // epoll re-polls a socket before it reports it (ep_item_poll); kqueue and IOCP as
            // mio drives them make no such promise.
            zero_wait_is_exact: cfg!(target_os = "linux"),
            writable_means_connected: cfg!(target_os = "linux"),
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn open(&mut self, addr: SocketAddr, opts: &OpenOpts<'_>, token: usize) -> io::Result<Self::Stream> {
        let mut stream = open_socket(addr, opts)?;
        self.poll.registry().register(&mut stream, Token(token), Interest::READABLE | Interest::WRITABLE)?;
        Ok(stream)
    }

    fn connect_result(&mut self, s: &mut Self::Stream) -> io::Result<bool> {
        match s.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match s.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false), // spurious wake-up
                Err(e) => Err(e),
            },
        }
    }

    fn read(&mut self, s: &mut Self::Stream, buf: &mut [u8]) -> io::Result<usize> {
        s.read(buf)
    }

    fn write(&mut self, s: &mut Self::Stream, buf: &[u8]) -> io::Result<usize> {
        s.write(buf)
    }

    fn peek(&mut self, s: &mut Self::Stream) -> io::Result<usize> {
        let mut byte = [0u8; 1];
        s.peek(&mut byte)
    }

    /// Linux: `TCP_QUICKACK`, which sends the pending ACK and leaves delayed-ACK mode until our
    /// next write. Elsewhere nothing.
    fn ack_now(&mut self, s: &mut Self::Stream) {
        #[cfg(target_os = "linux")]
        if let Err(e) = socket2::SockRef::from(&*s).set_tcp_quickack(true) {
            log::debug!("TCP_QUICKACK: {e}");
        }
        #[cfg(not(target_os = "linux"))]
        let _ = s;
    }

    fn close(&mut self, s: Self::Stream) {
        // Dropping the stream closes the socket; on Linux closing the last descriptor also
        // removes it from the epoll set, so no EPOLL_CTL_DEL (a syscall per connection).
        #[cfg(not(target_os = "linux"))]
        let mut s = s;
        #[cfg(not(target_os = "linux"))]
        let _ = self.poll.registry().deregister(&mut s);
        drop(s);
    }

    #[inline]
    fn wait(&mut self, ready: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<Waited> {
        ready.clear();
        self.poll.poll(&mut self.events, timeout)?;
        let mut waited = Waited::default();
        let mut n = 0;
        for e in self.events.iter() {
            n += 1;
            if e.token() == WAKE {
                waited.woken = true;
                continue;
            }
            ready.push(Ready {
                token: e.token().0,
                readable: e.is_readable() || e.is_read_closed() || e.is_error(),
                closing: e.is_read_closed() || e.is_error(),
                writable: e.is_writable(),
            });
        }
        waited.full = n == self.events.capacity();
        Ok(waited)
    }

    fn notifier(&mut self) -> io::Result<Box<dyn Notify>> {
        Ok(Box::new(mio::Waker::new(self.poll.registry(), WAKE)?))
    }
}

/// A non-blocking TCP socket with its connect started (bound first, if `opts` says so).
fn open_socket(addr: SocketAddr, opts: &OpenOpts<'_>) -> io::Result<mio::net::TcpStream> {
    #[cfg(target_os = "linux")]
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    #[cfg(not(target_os = "linux"))]
    let socket = {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_nonblocking(true)?;
        s
    };
    socket.set_tcp_nodelay(opts.nodelay)?;
    if let Some(device) = opts.device {
        // SO_BINDTODEVICE: CAP_NET_RAW before Linux 5.7; since, unprivileged on a socket not yet
        // bound to a device (as here). A missing interface is ENODEV.
        #[cfg(target_os = "linux")]
        socket.bind_device(Some(device.as_bytes()))?;
        #[cfg(not(target_os = "linux"))]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("binding to an interface ({device:?}) is supported on Linux only"),
        ));
    }
    if let Some(local) = opts.local {
        // Port 0: the kernel picks an ephemeral port at the bind, unique for the local address
        // (without IP_BIND_ADDRESS_NO_PORT, which socket2 does not offer, it cannot wait for
        // the destination): a few tens of thousands of connections at once, plenty for a
        // controller.
        socket.bind(&SocketAddr::new(local, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}
