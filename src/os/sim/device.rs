//! A scripted device inside the simulated kernel: it accepts connections, parses request heads
//! with httparse, reads bodies by `Content-Length`, answers, and closes as its [`Script`] says.
//!
//! It keeps a [`Ledger`] of the requests it *acted on*. A device acts on a request once its
//! complete head has arrived, as real devices do (a valve opens on `POST /open` before the body
//! is read, and an early `413` proves the device looked at the head): the harness holds the
//! client's error reports against this ledger. Requests are named by the `X-Cmd: <n>` header
//! the harness adds.
//!
//! Bytes from the client land in the device kernel's receive queue (`Link::inbox`); its kernel
//! acknowledges them while they fit in [`DEVICE_RCVBUF`] (the window), and its application reads
//! them in chunks of at most [`READ_CHUNK`] at [`Script::read_rate`], so a large body drains the
//! client's send buffer at the device's read rate, over virtual time, while the client writes.
//!
//! No threads: everything happens in the kernel's event queue ([`Net`]), in virtual time.

use std::collections::VecDeque;
use std::time::Duration;

use super::{Answer, Ev, Net, Ns, Timer};

/// The largest request head a device buffers; a longer one is answered with RST.
const MAX_HEAD: usize = 16 * 1024;
/// The device kernel's receive buffer: what it acknowledges beyond what its application read.
const DEVICE_RCVBUF: usize = 128 * 1024;
/// The most the device's application reads at once (one `recv`).
const READ_CHUNK: usize = 16 * 1024;

/// How a device closes connections on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterResponse {
    /// Keep-alive: the connection stays open.
    Keep,
    /// FIN after every response, without saying `Connection: close`.
    Fin,
    /// RST after every response (`SO_LINGER` 0, or a close with unread bytes).
    Rst,
}

/// Where a device cuts a connection short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Which request (counted from 0 over all connections) the cut hits.
    pub exchange: u32,
    /// In the request (after this many of its bytes arrived) or in the response (after this
    /// many of its bytes were sent).
    pub in_response: bool,
    /// The offset, in the request's or the response's bytes.
    pub at: usize,
    /// RST instead of FIN.
    pub rst: bool,
}

/// How a device answers a connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Accepts (after [`Script::accept_delay`]).
    Accept,
    /// Nothing listens: the device's kernel answers the SYN with RST (`ECONNREFUSED` later).
    Refuse,
    /// `connect` fails at once with `ECONNREFUSED` (loopback-style).
    RefuseAtOnce,
    /// `connect` fails at once with `ENETUNREACH` (no route).
    UnreachableAtOnce,
    /// An ICMP unreachable answers the SYN (`EHOSTUNREACH` later).
    UnreachableLater,
    /// The SYN is never answered: only the connect timeout ends it.
    Silent,
}

/// What a device does; decoded from fuzz input by `scenario.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// How it answers connects.
    pub listen: Listen,
    /// How long the device's application takes to accept a connection (the handshake itself
    /// completes in its kernel; bytes wait, unread, until then).
    pub accept_delay: Duration,
    /// How long it takes to answer a complete request.
    pub respond_delay: Duration,
    /// What it does after each response.
    pub after_response: AfterResponse,
    /// Closes a connection idle this long after a response...
    pub idle_close: Option<Duration>,
    /// ... at most this many times in all (`None`: always), ...
    pub idle_close_limit: Option<u32>,
    /// ... with RST instead of FIN.
    pub idle_close_rst: bool,
    /// Announces `Keep-Alive: timeout=N` (seconds) on every response.
    pub keep_alive_timeout: Option<u32>,
    /// Answers with this status after reading this many body bytes of a longer body, then
    /// closes with the rest unread (so its kernel sends RST): fault #1 of the issue.
    pub early_answer: Option<(u16, usize)>,
    /// Where it cuts one exchange short.
    pub cut: Option<Cut>,
    /// Resets every connection at this virtual time after the start.
    pub reboot_at: Option<Duration>,
    /// Response body length.
    pub body_len: usize,
    /// How fast its application reads what arrived, in bytes per microsecond (1,000: 1 GB/s).
    pub read_rate: u32,
    /// Commands (bit `n`: command `n`) whose connection the device closes (FIN) when it has
    /// been idle for `CLOSE_AFTER` after their response, whatever else the script says.
    pub close_after: u128,
}

/// How long after a response in [`Script::close_after`] the device closes its connection.
pub const CLOSE_AFTER: Duration = Duration::from_millis(1);

impl Default for Script {
    fn default() -> Script {
        Script {
            listen: Listen::Accept,
            accept_delay: Duration::ZERO,
            respond_delay: Duration::ZERO,
            after_response: AfterResponse::Keep,
            idle_close: None,
            idle_close_limit: None,
            idle_close_rst: false,
            keep_alive_timeout: None,
            early_answer: None,
            cut: None,
            reboot_at: None,
            body_len: 2,
            read_rate: 1000,
            close_after: 0,
        }
    }
}

/// One request a device acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Act {
    /// The `X-Cmd` header's value (`u64::MAX` if it had none).
    pub cmd: u64,
    /// The request method.
    pub method: String,
    /// Virtual time since the start, in nanoseconds.
    pub at: Ns,
    /// The simulated connection it came on.
    pub conn: usize,
}

/// Every request the device acted on, in order.
pub type Ledger = Vec<Act>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Handshake done, the application has not accepted yet.
    Accepting,
    Open,
    /// The device closed (or reset, or the client did): more data from the client gets RST.
    Closed,
}

/// The device's end of one connection.
#[derive(Debug)]
struct Link {
    state: LinkState,
    /// The request head being received.
    head: Vec<u8>,
    /// The request in progress: its exchange number, received bytes, body bytes still due,
    /// whether it is a HEAD.
    req: Option<Req>,
    /// The device kernel's receive queue: bytes arrived, not read by the application (before
    /// the accept, or while it is busy, or for ever once it stopped reading). A close with any
    /// of them is a RST.
    inbox: VecDeque<u8>,
    /// Bytes arrived in all, read by the application in all, and acknowledged in all: the kernel
    /// acknowledges up to `read + DEVICE_RCVBUF` (the window).
    arrived: usize,
    read: usize,
    acked: usize,
    /// A read of the application is scheduled ([`Timer::Read`]).
    reading: bool,
    /// The application stopped reading: bytes came while a response is due (the client does not
    /// pipeline); it reads on once the response is out.
    stalled: bool,
    /// Bumped on every activity: a timer of an older generation is stale.
    epoch: u32,
    /// The command of the last request head.
    last_cmd: u64,
}

#[derive(Debug, Clone, Copy)]
struct Req {
    exchange: u32,
    received: usize,
    body_left: usize,
    body_read: usize,
    head_request: bool,
}

/// One scripted device.
#[derive(Debug)]
pub(crate) struct Device {
    pub script: Script,
    links: Vec<Option<Link>>,
    pub ledger: Ledger,
    /// Requests whose heads arrived, over all connections (numbers the exchanges for cuts).
    exchanges: u32,
    idle_closes: u32,
}

impl Device {
    pub(crate) fn new(script: Script) -> Device {
        Device { script, links: Vec::new(), ledger: Vec::new(), exchanges: 0, idle_closes: 0 }
    }

    fn link(&mut self, conn: usize) -> Option<&mut Link> {
        self.links.get_mut(conn).and_then(|l| l.as_mut())
    }

    /// A SYN for `conn` arrived: answer it as the script says.
    pub(crate) fn on_syn(&mut self, net: &mut Net, conn: usize) {
        match self.script.listen {
            Listen::Accept => {
                if self.links.len() <= conn {
                    self.links.resize_with(conn + 1, || None);
                }
                let state =
                    if self.script.accept_delay.is_zero() { LinkState::Open } else { LinkState::Accepting };
                self.links[conn] = Some(Link {
                    state,
                    head: Vec::new(),
                    req: None,
                    inbox: VecDeque::new(),
                    arrived: 0,
                    read: 0,
                    acked: 0,
                    reading: false,
                    stalled: false,
                    epoch: 0,
                    last_cmd: u64::MAX,
                });
                if state == LinkState::Accepting {
                    net.at(
                        net.now + ns(self.script.accept_delay),
                        Ev::Timer { conn, epoch: 0, timer: Timer::Accept },
                    );
                }
                net.after_latency(Ev::Connected { conn });
            }
            Listen::Refuse => net.after_latency(Ev::ClientRst { conn }),
            Listen::UnreachableLater => {
                net.after_latency(Ev::ConnectFailed { conn, kind: std::io::ErrorKind::HostUnreachable })
            }
            // At once: handled by `open`. Silent: nothing ever comes back.
            Listen::RefuseAtOnce | Listen::UnreachableAtOnce | Listen::Silent => {}
        }
    }

    /// The client's bytes arrived: into the receive queue, acknowledged while they fit; the
    /// application reads them now if it is idle.
    pub(crate) fn on_bytes(&mut self, net: &mut Net, conn: usize, bytes: &[u8]) {
        let Some(link) = self.link(conn) else {
            return net.after_latency(Ev::ClientRst { conn });
        };
        if link.state == LinkState::Closed {
            return net.after_latency(Ev::ClientRst { conn });
        }
        link.inbox.extend(bytes);
        link.arrived += bytes.len();
        if link.state == LinkState::Open {
            link.epoch = link.epoch.wrapping_add(1);
        }
        self.ack(net, conn);
        self.kick(net, conn);
    }

    /// The device's kernel acknowledges what arrived, up to its window.
    fn ack(&mut self, net: &mut Net, conn: usize) {
        let Some(link) = self.link(conn) else { return };
        let to = link.arrived.min(link.read + DEVICE_RCVBUF);
        if to > link.acked {
            let n = to - link.acked;
            link.acked = to;
            net.after_latency(Ev::Ack { conn, n });
        }
    }

    /// Starts the application's reading if it is idle and something waits.
    fn kick(&mut self, net: &mut Net, conn: usize) {
        let Some(link) = self.link(conn) else { return };
        if link.state == LinkState::Open && !link.reading && !link.stalled && !link.inbox.is_empty() {
            link.reading = true;
            net.at(net.now, Ev::Timer { conn, epoch: 0, timer: Timer::Read });
        }
    }

    /// One `recv` of the application: a chunk of the receive queue, read (acting on heads,
    /// answering), then busy for the chunk's time at the read rate before the next one.
    fn read_chunk(&mut self, net: &mut Net, conn: usize) {
        let rate = u64::from(self.script.read_rate.max(1));
        let Some(link) = self.link(conn) else { return };
        link.reading = false;
        if link.state != LinkState::Open || link.stalled {
            return;
        }
        let n = link.inbox.len().min(READ_CHUNK);
        if n == 0 {
            return;
        }
        let chunk: Vec<u8> = link.inbox.drain(..n).collect();
        let used = self.consume(net, conn, &chunk);
        let Some(link) = self.link(conn) else { return };
        link.read += used;
        if used < n {
            // Not read after all: back in the queue, in order.
            for &b in chunk[used..].iter().rev() {
                link.inbox.push_front(b);
            }
            link.stalled = link.state == LinkState::Open;
        }
        self.ack(net, conn);
        let Some(link) = self.link(conn) else { return };
        if link.state == LinkState::Open && !link.stalled && !link.inbox.is_empty() {
            link.reading = true;
            let busy = (used as u64 * 1000).div_ceil(rate).max(1);
            net.at(net.now + busy, Ev::Timer { conn, epoch: 0, timer: Timer::Read });
        }
    }

    /// The client closed its end (FIN or RST): the device closes too.
    pub(crate) fn on_client_close(&mut self, conn: usize) {
        if let Some(link) = self.link(conn) {
            link.state = LinkState::Closed;
        }
    }

    /// Reads `bytes` as the device's application does: heads, then bodies, acting on each head;
    /// returns how many it read (it stops at an early answer, a cut, or a response due).
    fn consume(&mut self, net: &mut Net, conn: usize, mut bytes: &[u8]) -> usize {
        let mut consumed = 0;
        while !bytes.is_empty() {
            let script = self.script.clone();
            let exchanges = self.exchanges;
            let Some(link) = self.link(conn) else { return consumed };
            if link.state != LinkState::Open {
                break;
            }
            let Some(mut req) = link.req else {
                // In a head: up to its end.
                let start = link.head.len().saturating_sub(3);
                link.head.extend_from_slice(bytes);
                let Some(end) = find_end(&link.head[start..]).map(|e| start + e) else {
                    consumed += bytes.len();
                    if link.head.len() > MAX_HEAD {
                        self.close(net, conn, true);
                    }
                    break;
                };
                let over = link.head.len() - end;
                let taken = bytes.len() - over;
                consumed += taken;
                bytes = &bytes[taken..];
                link.head.truncate(end);
                let head = std::mem::take(&mut link.head);
                let Some(parsed) = parse_head(&head) else {
                    self.close(net, conn, true);
                    break;
                };
                link.req = Some(Req {
                    exchange: exchanges,
                    received: end,
                    body_left: parsed.content_length,
                    body_read: 0,
                    head_request: parsed.method == "HEAD",
                });
                link.last_cmd = parsed.cmd;
                self.exchanges += 1;
                log::trace!(
                    "sim t={}us device acts on cmd {} ({}) conn={conn}",
                    net.now / 1000,
                    parsed.cmd,
                    parsed.method
                );
                self.ledger.push(Act { cmd: parsed.cmd, method: parsed.method, at: net.now, conn });
                if self.cut_request(net, conn, exchanges, end, &script) {
                    break;
                }
                self.maybe_complete(net, conn);
                continue;
            };
            if req.body_left == 0 {
                // Bytes while a response is due (the client does not pipeline): left unread.
                break;
            }
            // In a body: up to the early answer, the cut, or its end.
            let mut take = bytes.len().min(req.body_left);
            if let Some((_, after)) = script.early_answer
                && req.body_read + req.body_left > after
            {
                take = take.min(after - req.body_read.min(after));
            }
            if let Some(c) = script.cut.filter(|c| !c.in_response && c.exchange == req.exchange)
                && c.at > req.received
            {
                take = take.min(c.at - req.received);
            }
            req.body_left -= take;
            req.body_read += take;
            req.received += take;
            link.req = Some(req);
            consumed += take;
            bytes = &bytes[take..];
            if let Some((status, after)) = script.early_answer
                && req.body_left > 0
                && req.body_read >= after
            {
                // Fault #1: answer now, close with the rest unread (its kernel sends RST).
                self.respond(net, conn, status);
                self.close(net, conn, !bytes.is_empty());
                break;
            }
            if self.cut_request(net, conn, req.exchange, req.received, &script) {
                break;
            }
            if req.body_left == 0 {
                self.maybe_complete(net, conn);
            } else if take == 0 {
                break;
            }
        }
        // Bytes the application does not read stay in the receive queue and hold the window:
        // the client keeps writing into a connection whose device has stopped reading (and is
        // about to reset it) until the window is full.
        consumed
    }

    /// Applies a cut inside request `exchange` after `received` of its bytes; whether it did.
    fn cut_request(
        &mut self,
        net: &mut Net,
        conn: usize,
        exchange: u32,
        received: usize,
        s: &Script,
    ) -> bool {
        match s.cut {
            Some(c) if !c.in_response && c.exchange == exchange && received >= c.at => {
                self.close(net, conn, c.rst);
                true
            }
            _ => false,
        }
    }

    /// A request fully read: answer now or after the script's delay.
    fn maybe_complete(&mut self, net: &mut Net, conn: usize) {
        let delay = self.script.respond_delay;
        let Some(link) = self.link(conn) else { return };
        if link.req.is_none_or(|r| r.body_left != 0) {
            return;
        }
        if delay.is_zero() {
            self.respond(net, conn, 200);
            self.after_response(net, conn);
        } else {
            let epoch = link.epoch;
            net.at(net.now + ns(delay), Ev::Timer { conn, epoch, timer: Timer::Respond });
        }
    }

    /// Sends the response to the request in progress (or the part of it the cut allows).
    fn respond(&mut self, net: &mut Net, conn: usize, status: u16) {
        let script = self.script.clone();
        let Some(link) = self.link(conn) else { return };
        let Some(req) = link.req.take() else { return };
        let reason = if status == 413 { "Content Too Large" } else { "OK" };
        // `X-Exchange` names the exchange, so the harness knows which response the client
        // completed a command with (invariant (h)).
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nX-Exchange: {}\r\n",
            script.body_len, req.exchange
        );
        if let Some(t) = script.keep_alive_timeout {
            out.push_str(&format!("Keep-Alive: timeout={t}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !req.head_request {
            out.resize(out.len() + script.body_len, b'v');
        }
        let cut = script.cut.filter(|c| c.in_response && c.exchange == req.exchange);
        let whole = cut.is_none_or(|c| c.at >= out.len());
        if let Some(c) = cut {
            out.truncate(c.at);
        }
        let answer = whole.then_some(Answer { cmd: link.last_cmd, status, exchange: req.exchange });
        if !out.is_empty() {
            net.after_latency(Ev::ToClient { conn, bytes: out, answer });
        }
        if let Some(c) = cut {
            self.close(net, conn, c.rst);
        }
    }

    /// What the device does once a response is out: keep, FIN, RST, or arm its idle close.
    fn after_response(&mut self, net: &mut Net, conn: usize) {
        let s = &self.script;
        let idle = s.idle_close.filter(|_| s.idle_close_limit.is_none_or(|l| self.idle_closes < l));
        let close_after = s.close_after;
        if let Some(link) = self.link(conn)
            && link.state == LinkState::Open
            && link.last_cmd < 128
            && close_after >> link.last_cmd & 1 == 1
        {
            let epoch = link.epoch;
            net.at(net.now + ns(CLOSE_AFTER), Ev::Timer { conn, epoch, timer: Timer::Quit });
        }
        let s = &self.script;
        match s.after_response {
            AfterResponse::Fin => self.close(net, conn, false),
            AfterResponse::Rst => self.close(net, conn, true),
            AfterResponse::Keep => {
                if let Some(d) = idle
                    && let Some(link) = self.link(conn)
                    && link.state == LinkState::Open
                {
                    let epoch = link.epoch;
                    net.at(net.now + ns(d), Ev::Timer { conn, epoch, timer: Timer::Idle });
                }
            }
        }
    }

    /// A device timer fired (stale ones are ignored).
    pub(crate) fn on_timer(&mut self, net: &mut Net, conn: usize, epoch: u32, timer: Timer) {
        let Some(link) = self.link(conn) else { return };
        match timer {
            Timer::Accept if link.state == LinkState::Accepting => {
                link.state = LinkState::Open;
                link.epoch = link.epoch.wrapping_add(1);
                self.kick(net, conn);
            }
            Timer::Read => self.read_chunk(net, conn),
            Timer::Respond if link.state == LinkState::Open => {
                self.respond(net, conn, 200);
                self.after_response(net, conn);
                if let Some(link) = self.link(conn) {
                    link.stalled = false;
                }
                self.kick(net, conn);
            }
            Timer::Quit if link.epoch == epoch && link.state == LinkState::Open && link.req.is_none() => {
                self.close(net, conn, false);
            }
            Timer::Idle if link.epoch == epoch && link.state == LinkState::Open && link.req.is_none() => {
                self.idle_closes += 1;
                let rst = self.script.idle_close_rst;
                self.close(net, conn, rst);
            }
            _ => {}
        }
    }

    /// Resets every connection (a reboot).
    pub(crate) fn reboot(&mut self, net: &mut Net) {
        log::trace!("sim t={}us device reboots", net.now / 1000);
        for conn in 0..self.links.len() {
            if self.links[conn].as_ref().is_some_and(|l| l.state != LinkState::Closed) {
                self.close(net, conn, true);
            }
        }
    }

    /// The device closes `conn`: FIN, or RST if asked or if bytes it never read are left
    /// (Linux `tcp_close`: unread data turns the close into a reset).
    fn close(&mut self, net: &mut Net, conn: usize, rst: bool) {
        let Some(link) = self.link(conn) else { return };
        if link.state == LinkState::Closed {
            return;
        }
        let rst = rst || !link.inbox.is_empty();
        log::trace!(
            "sim t={}us device closes conn={conn} with {}",
            net.now / 1000,
            if rst { "RST" } else { "FIN" }
        );
        link.state = LinkState::Closed;
        link.req = None;
        link.head = Vec::new();
        link.inbox = VecDeque::new();
        net.after_latency(if rst { Ev::ClientRst { conn } } else { Ev::ClientFin { conn } });
    }
}

/// The end of a request head in `buf` (the index after `\r\n\r\n`).
fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

struct Head {
    method: String,
    cmd: u64,
    content_length: usize,
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut fields);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let mut h = Head { method: req.method?.to_string(), cmd: u64::MAX, content_length: 0 };
    for f in req.headers.iter() {
        let value = std::str::from_utf8(f.value).ok()?.trim();
        if f.name.eq_ignore_ascii_case("content-length") {
            h.content_length = value.parse().ok()?;
        } else if f.name.eq_ignore_ascii_case("x-cmd") {
            h.cmd = value.parse().ok()?;
        }
    }
    Some(h)
}

pub(crate) fn ns(d: Duration) -> Ns {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
