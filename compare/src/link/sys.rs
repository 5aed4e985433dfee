//! Safe wrappers around the Linux calls the emulated link needs: network namespaces, TUN
//! devices, the interface ioctls, `ppoll`, `eventfd` and the timer slack. Every `unsafe` block
//! of the link is in this file.

use std::ffi::{c_char, c_short};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// A `-1` return of a libc call as the thread's `errno`.
fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Moves the calling thread, and only it, into a new and empty network namespace (threads it
/// starts afterwards inherit it). Needs CAP_SYS_ADMIN.
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: unshare(2) takes flags only; CLONE_NEWNET changes nothing but the calling
    // thread's network namespace, which no Rust object depends on.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(drop)
}

/// The calling thread's network namespace, as an fd that keeps it alive.
pub fn current_net() -> io::Result<OwnedFd> {
    Ok(File::open("/proc/thread-self/ns/net")?.into())
}

/// Moves the calling thread into the network namespace `ns` (from [`current_net`]).
pub fn enter_net(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `ns` is an open descriptor for the whole call; setns(2) with CLONE_NEWNET only
    // changes the calling thread's network namespace.
    cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// A zeroed `struct ifreq` naming interface `name`.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {name:?}")));
    }
    // SAFETY: ifreq is plain data (a name array and a union of integers, sockaddrs and a raw
    // pointer), for which all-zero bytes are a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in r.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as c_char;
    }
    Ok(r)
}

/// The ioctls used here on an fd: TUNSETIFF and SIOC[GS]IF*, all of which take a `struct ifreq`.
#[derive(Debug, Clone, Copy)]
enum IfreqIoctl {
    TunSetIff,
    GetFlags,
    SetFlags,
    SetAddr,
    SetDstAddr,
}

impl IfreqIoctl {
    fn request(self) -> libc::Ioctl {
        match self {
            IfreqIoctl::TunSetIff => libc::TUNSETIFF,
            IfreqIoctl::GetFlags => libc::SIOCGIFFLAGS,
            IfreqIoctl::SetFlags => libc::SIOCSIFFLAGS,
            IfreqIoctl::SetAddr => libc::SIOCSIFADDR,
            IfreqIoctl::SetDstAddr => libc::SIOCSIFDSTADDR,
        }
    }
}

fn ifreq_ioctl(fd: BorrowedFd<'_>, op: IfreqIoctl, r: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: each request of `IfreqIoctl` reads, and at most writes back, one `struct ifreq`
    // through the pointer, and `r` is a valid, exclusively borrowed ifreq for the whole call;
    // `fd` is open for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), op.request(), r as *mut libc::ifreq) };
    cvt(rc).map(drop).map_err(|e| io::Error::new(e.kind(), format!("{op:?}: {e}")))
}

/// `addr` as the `struct sockaddr` of an AF_INET interface ioctl (a `sockaddr_in` with port 0).
fn inet_sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let mut data = [0 as c_char; 14];
    // sockaddr_in after the family: the port (2 bytes, 0 here), then the address.
    for (dst, src) in data[2..6].iter_mut().zip(addr.octets()) {
        *dst = src as c_char;
    }
    libc::sockaddr { sa_family: libc::AF_INET as libc::sa_family_t, sa_data: data }
}

/// A handle for configuring interfaces of the network namespace it was created in (an
/// AF_INET datagram socket, the usual target of SIOCSIF* ioctls).
pub struct IfCtl(Socket);

impl IfCtl {
    pub fn new() -> io::Result<IfCtl> {
        Ok(IfCtl(Socket::new(Domain::IPV4, Type::DGRAM, None)?))
    }

    /// Sets IFF_UP on interface `name`.
    pub fn up(&self, name: &str) -> io::Result<()> {
        let mut r = ifreq(name)?;
        ifreq_ioctl(self.0.as_fd(), IfreqIoctl::GetFlags, &mut r)?;
        // SAFETY: SIOCGIFFLAGS has filled `ifru_flags`; any bit pattern is a valid c_short.
        let flags = unsafe { r.ifr_ifru.ifru_flags };
        r.ifr_ifru.ifru_flags = flags | libc::IFF_UP as c_short;
        ifreq_ioctl(self.0.as_fd(), IfreqIoctl::SetFlags, &mut r)
    }

    /// Gives point-to-point interface `name` the address `local` (a /32) and the peer `peer`:
    /// once up, the kernel routes `peer` through it.
    pub fn set_point_to_point(&self, name: &str, local: Ipv4Addr, peer: Ipv4Addr) -> io::Result<()> {
        let mut r = ifreq(name)?;
        r.ifr_ifru.ifru_addr = inet_sockaddr(local);
        ifreq_ioctl(self.0.as_fd(), IfreqIoctl::SetAddr, &mut r)?;
        let mut r = ifreq(name)?;
        r.ifr_ifru.ifru_dstaddr = inet_sockaddr(peer);
        ifreq_ioctl(self.0.as_fd(), IfreqIoctl::SetDstAddr, &mut r)
    }
}

/// A TUN device (layer 3, no packet-information header) and its non-blocking queue fd: every
/// `recv` is one IP packet the kernel routed to the device, every `send` one packet it
/// receives from it.
pub struct Tun {
    file: File,
}

impl Tun {
    /// Creates TUN device `name` in the calling thread's network namespace (down, without an
    /// address); it disappears when the returned value is dropped.
    pub fn create(name: &str) -> io::Result<Tun> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
        let mut r = ifreq(name)?;
        r.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as c_short;
        ifreq_ioctl(file.as_fd(), IfreqIoctl::TunSetIff, &mut r)?;
        Ok(Tun { file })
    }

    /// Reads one packet (`WouldBlock` when none is queued).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Injects one packet.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// A non-blocking eventfd, to wake a thread sleeping in [`ppoll`].
pub struct EventFd(File);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd(2) takes an initial value and flags only.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by eventfd, is open, and nothing else owns it.
        Ok(EventFd(unsafe { File::from_raw_fd(fd) }))
    }

    /// Makes the eventfd readable.
    pub fn signal(&self) -> io::Result<()> {
        (&self.0).write_all(&1u64.to_ne_bytes())
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A `pollfd` waiting for `fd` to become readable.
pub fn poll_in(fd: BorrowedFd<'_>) -> libc::pollfd {
    libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }
}

/// ppoll(2): waits until one of `fds` is ready or `timeout` (ns resolution; `None`: forever)
/// has passed. Returns the number of ready entries; an interrupted wait is `Interrupted`.
pub fn ppoll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as _,
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds; `ts_ptr` is
    // null or points to `ts`, alive until after the call; a null sigmask keeps the mask.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ts_ptr, std::ptr::null()) };
    cvt(n).map(|n| n as usize)
}

/// Sets the calling thread's timer slack (how late the kernel may fire its timers to batch
/// wake-ups; 50 µs by default).
pub fn set_timer_slack(slack: Duration) -> io::Result<()> {
    let ns = slack.as_nanos().clamp(1, libc::c_ulong::MAX as u128) as libc::c_ulong;
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long by value and affects only the calling
    // thread.
    cvt(unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_names_and_addresses() {
        let r = ifreq("fwlink-c").unwrap();
        assert_eq!(r.ifr_name[..9].iter().map(|&c| c as u8).collect::<Vec<_>>(), b"fwlink-c\0");
        assert!(ifreq("").is_err());
        assert!(ifreq("a-name-of-16-chr").is_err());
        let sa = inet_sockaddr(Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(sa.sa_data[..6].iter().map(|&c| c as u8).collect::<Vec<_>>(), [0, 0, 10, 77, 0, 2]);
    }

    #[test]
    fn ppoll_times_out_and_wakes() {
        let ev = EventFd::new().unwrap();
        let mut fds = [poll_in(ev.as_fd())];
        let t = std::time::Instant::now();
        assert_eq!(ppoll(&mut fds, Some(Duration::from_micros(300))).unwrap(), 0);
        assert!(t.elapsed() >= Duration::from_micros(300));
        ev.signal().unwrap();
        assert_eq!(ppoll(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
        assert_ne!(fds[0].revents & libc::POLLIN, 0);
    }
}
