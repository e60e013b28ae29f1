//! Workloads on simulated hosts: TCP bulk transfer with byte-exact verification,
//! HTTP-like request/response, DNS-like UDP query/answer, and ping. Each workload is
//! one or two [`App`]s driving smoltcp sockets, and fills a [`FlowResult`]: bytes,
//! completion time on the virtual clock, retransmissions seen on the wire, and whether
//! every byte arrived intact.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use podplane::wire::flow::FlowKey;
use podplane::{Duration, Instant};
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::wire::{IpAddress, IpEndpoint};

/// What the simulator hands an app on every step.
pub struct AppCx<'a> {
    /// Virtual time.
    pub now: Instant,
    /// The host's interface (for `connect`'s context and addresses).
    pub iface: &'a mut Interface,
    /// The host's sockets.
    pub sockets: &'a mut SocketSet<'static>,
}

impl fmt::Debug for AppCx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCx").field("now", &self.now).finish_non_exhaustive()
    }
}

/// A program on a host. The simulator calls `start` once, then `step` after every
/// poll of the host's interface, and polls again while `step` reports progress.
pub trait App {
    /// Create sockets, connect or listen.
    fn start(&mut self, cx: &mut AppCx<'_>);
    /// Move data; return true when it changed socket state (so the host is polled again).
    fn step(&mut self, cx: &mut AppCx<'_>) -> bool;
    /// When the app wants to run next even if no packet arrives (a ping interval, a
    /// UDP retry timeout).
    fn next_wake(&self) -> Option<Instant> {
        None
    }
}

/// The kind of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKind {
    /// TCP bulk transfer.
    TcpBulk,
    /// HTTP-like request and response over TCP.
    Http,
    /// DNS-like UDP queries.
    UdpQuery,
    /// ICMP echo.
    Ping,
    /// UDP probes with rising TTL (traceroute).
    Traceroute,
}

/// The outcome of one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowResult {
    /// Name given when the workload was added.
    pub name: String,
    /// Kind.
    pub kind: FlowKind,
    /// Finished (successfully or not).
    pub done: bool,
    /// Finished and every byte / answer / reply was right.
    pub ok: bool,
    /// Payload bytes delivered to the receiving application.
    pub bytes: u64,
    /// When it started.
    pub started: Instant,
    /// When it finished.
    pub finished: Option<Instant>,
    /// TCP segments the sender sent again (seen on its link).
    pub retransmissions: u64,
    /// Human-readable detail (RTTs, answers, the first bad byte).
    pub detail: String,
    /// The TCP flow (client to server), for retransmission accounting.
    pub tcp: Option<FlowKey>,
}

impl FlowResult {
    pub(crate) fn new(name: &str, kind: FlowKind) -> Self {
        FlowResult {
            name: name.to_owned(),
            kind,
            done: false,
            ok: false,
            bytes: 0,
            started: Instant::ZERO,
            finished: None,
            retransmissions: 0,
            detail: String::new(),
            tcp: None,
        }
    }

    /// Time from start to finish, if finished.
    pub fn duration(&self) -> Option<Duration> {
        self.finished.map(|f| f - self.started)
    }

    fn finish(&mut self, now: Instant, ok: bool, detail: String) {
        if !self.done {
            self.done = true;
            self.ok = ok;
            self.finished = Some(now);
            self.detail = detail;
        }
    }
}

pub(crate) type Shared = Rc<RefCell<FlowResult>>;

/// Byte `i` of the deterministic stream a transfer with `seed` sends: the receiver
/// recomputes it, so every byte is checked, not a sum.
pub fn pattern_byte(seed: u64, i: u64) -> u8 {
    let mut z = seed ^ (i / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.to_le_bytes()[(i % 8) as usize]
}

fn local_v4(iface: &Interface) -> Option<std::net::IpAddr> {
    iface.ip_addrs().iter().find_map(|c| match c.address() {
        IpAddress::Ipv4(a) => Some(std::net::IpAddr::V4(a)),
        #[allow(unreachable_patterns)]
        _ => None,
    })
}

fn tcp_key(local: Option<std::net::IpAddr>, lport: u16, remote: IpEndpoint) -> Option<FlowKey> {
    match (local, remote.addr) {
        (Some(std::net::IpAddr::V4(l)), IpAddress::Ipv4(r)) => Some(FlowKey::v4(l, r, 6, lport, remote.port)),
        (Some(std::net::IpAddr::V6(l)), IpAddress::Ipv6(r)) => Some(FlowKey::v6(l, r, 6, lport, remote.port)),
        _ => None,
    }
}

fn new_tcp(sockets: &mut SocketSet<'static>, rx: usize, tx: usize) -> SocketHandle {
    sockets.add(tcp::Socket::new(tcp::SocketBuffer::new(vec![0; rx]), tcp::SocketBuffer::new(vec![0; tx])))
}

/// Sends `total` pattern bytes to `remote`, then closes.
pub(crate) struct TcpBulkClient {
    pub(crate) remote: IpEndpoint,
    pub(crate) local_port: u16,
    pub(crate) total: u64,
    pub(crate) seed: u64,
    pub(crate) sent: u64,
    pub(crate) handle: Option<SocketHandle>,
    pub(crate) closed: bool,
    pub(crate) flow: Shared,
}

impl App for TcpBulkClient {
    fn start(&mut self, cx: &mut AppCx<'_>) {
        let h = new_tcp(cx.sockets, 4096, 65535);
        let s = cx.sockets.get_mut::<tcp::Socket<'_>>(h);
        let mut f = self.flow.borrow_mut();
        f.started = cx.now;
        f.tcp = tcp_key(local_v4(cx.iface), self.local_port, self.remote);
        if let Err(e) = s.connect(cx.iface.context(), self.remote, self.local_port) {
            f.finish(cx.now, false, format!("connect: {e}"));
        }
        self.handle = Some(h);
    }

    fn step(&mut self, cx: &mut AppCx<'_>) -> bool {
        let Some(h) = self.handle else { return false };
        let s = cx.sockets.get_mut::<tcp::Socket<'_>>(h);
        let mut progress = false;
        while s.can_send() && self.sent < self.total {
            let (seed, start, left) = (self.seed, self.sent, self.total - self.sent);
            let n = s
                .send(|buf| {
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    for (k, b) in buf[..n].iter_mut().enumerate() {
                        *b = pattern_byte(seed, start + k as u64);
                    }
                    (n, n)
                })
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            self.sent += n as u64;
            progress = true;
        }
        if self.sent == self.total && !self.closed {
            s.close();
            self.closed = true;
            progress = true;
        }
        if s.state() == tcp::State::Closed && self.sent < self.total {
            self.flow.borrow_mut().finish(cx.now, false, format!("connection closed after {} bytes sent", self.sent));
        }
        progress
    }
}

/// Receives a pattern stream and checks every byte.
pub(crate) struct TcpSink {
    pub(crate) port: u16,
    pub(crate) expected: u64,
    pub(crate) seed: u64,
    pub(crate) received: u64,
    pub(crate) bad_at: Option<u64>,
    pub(crate) handle: Option<SocketHandle>,
    pub(crate) flow: Shared,
}

impl App for TcpSink {
    fn start(&mut self, cx: &mut AppCx<'_>) {
        let h = new_tcp(cx.sockets, 65535, 4096);
        if let Err(e) = cx.sockets.get_mut::<tcp::Socket<'_>>(h).listen(self.port) {
            self.flow.borrow_mut().finish(cx.now, false, format!("listen: {e}"));
        }
        self.handle = Some(h);
    }

    fn step(&mut self, cx: &mut AppCx<'_>) -> bool {
        let Some(h) = self.handle else { return false };
        let s = cx.sockets.get_mut::<tcp::Socket<'_>>(h);
        let mut progress = false;
        while s.can_recv() {
            let (seed, start) = (self.seed, self.received);
            let mut bad = self.bad_at;
            let n = s
                .recv(|buf| {
                    for (k, b) in buf.iter().enumerate() {
                        let at = start + k as u64;
                        if bad.is_none() && *b != pattern_byte(seed, at) {
                            bad = Some(at);
                        }
                    }
                    (buf.len(), buf.len())
                })
                .unwrap_or(0);
            self.bad_at = bad;
            if n == 0 {
                break;
            }
            self.received += n as u64;
            progress = true;
        }
        let mut f = self.flow.borrow_mut();
        f.bytes = self.received;
        if self.received >= self.expected && !f.done {
            let ok = self.bad_at.is_none() && self.received == self.expected;
            let detail = match self.bad_at {
                Some(at) => format!("byte {at} differs from what was sent"),
                None => format!("{} bytes, every byte verified", self.received),
            };
            f.finish(cx.now, ok, detail);
        }
        if !s.may_recv() && s.state() == tcp::State::CloseWait {
            s.close();
            progress = true;
        }
        progress
    }
}

/// Sends ICMP (v4) or ICMPv6 echo requests to a list of targets, `count` to each in
/// turn, from one socket, and matches replies by sequence number and source. One
/// socket for any number of targets is what lets a pod ping every other pod of a
/// 3000-pod cluster.
pub(crate) struct Pinger {
    pub(crate) targets: Vec<IpAddress>,
    pub(crate) count: u16,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) ident: u16,
    pub(crate) next_seq: u16,
    pub(crate) next_send: Instant,
    /// Send time of each sequence number.
    pub(crate) sent_at: Vec<Instant>,
    /// Sequence numbers answered (a duplicate reply counts once).
    pub(crate) answered: Vec<bool>,
    pub(crate) rtts: Vec<Duration>,
    pub(crate) handle: Option<SocketHandle>,
    pub(crate) flow: Shared,
}

impl Pinger {
    /// Echo requests in all: `count` to each target.
    fn total(&self) -> usize {
        self.targets.len() * usize::from(self.count)
    }

    /// Target of sequence number `seq`.
    fn target_of(&self, seq: usize) -> Option<IpAddress> {
        self.targets.get(seq / usize::from(self.count.max(1))).copied()
    }

    /// Writes the echo request `seq` to `target` into `buf` (16 bytes). ICMPv6's
    /// checksum covers a pseudo-header with the source address, which smoltcp's ICMP
    /// socket leaves to the application.
    fn emit_echo(&self, iface: &Interface, target: IpAddress, seq: u16, buf: &mut [u8]) {
        use podplane::wire::checksum::{Sum, pseudo_v6};
        use podplane::wire::{icmpv4, icmpv6};
        let Some(payload) = buf.get_mut(8..) else { return };
        payload.copy_from_slice(b"podplane");
        let _ = match target {
            IpAddress::Ipv4(_) => {
                icmpv4::Icmpv4Repr::echo(icmpv4::Icmpv4Type::EchoRequest, self.ident, seq).emit(buf, Sum::new())
            }
            IpAddress::Ipv6(dst) => {
                let src = iface.ip_addrs().iter().find_map(|c| match c.address() {
                    IpAddress::Ipv6(a) if !a.is_unicast_link_local() => Some(a),
                    _ => None,
                });
                let pseudo = pseudo_v6(src.unwrap_or(std::net::Ipv6Addr::UNSPECIFIED), dst, 58, 16);
                icmpv6::Icmpv6Repr::echo(icmpv6::Icmpv6Type::EchoRequest, self.ident, seq).emit(buf, pseudo)
            }
        };
    }
}

impl App for Pinger {
    fn start(&mut self, cx: &mut AppCx<'_>) {
        // Room for a window of requests in flight and their replies.
        let buf = || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 64], vec![0; 64 * 16]);
        let mut s = icmp::Socket::new(buf(), buf());
        if self.total() > usize::from(u16::MAX) || s.bind(icmp::Endpoint::Ident(self.ident)).is_err() {
            self.flow.borrow_mut().finish(cx.now, false, "bind failed or more than 65535 requests".into());
        }
        self.handle = Some(cx.sockets.add(s));
        self.next_send = cx.now;
        self.flow.borrow_mut().started = cx.now;
    }

    fn step(&mut self, cx: &mut AppCx<'_>) -> bool {
        // A finished ping has nothing to do (its socket may still receive late replies).
        if self.flow.borrow().done {
            return false;
        }
        let Some(h) = self.handle else { return false };
        let mut progress = false;
        while let Ok((data, from)) = cx.sockets.get_mut::<icmp::Socket<'_>>(h).recv() {
            let Ok(p) = podplane::wire::icmp::IcmpPacket::new_checked(data) else { continue };
            let seq = usize::from(p.echo_seq());
            // Echo reply: type 0 in ICMP, 129 in ICMPv6.
            let reply = matches!((from, p.msg_type()), (IpAddress::Ipv4(_), 0) | (IpAddress::Ipv6(_), 129));
            if reply
                && p.echo_ident() == self.ident
                && self.target_of(seq) == Some(from)
                && let (Some(sent), Some(seen)) = (self.sent_at.get(seq), self.answered.get_mut(seq))
                && !*seen
            {
                *seen = true;
                self.rtts.push(cx.now - *sent);
            }
        }
        while usize::from(self.next_seq) < self.total()
            && cx.now >= self.next_send
            && cx.sockets.get_mut::<icmp::Socket<'_>>(h).can_send()
        {
            let seq = self.next_seq;
            let Some(target) = self.target_of(usize::from(seq)) else { break };
            let mut echo = [0u8; 16];
            self.emit_echo(cx.iface, target, seq, &mut echo);
            if cx.sockets.get_mut::<icmp::Socket<'_>>(h).send_slice(&echo, target).is_err() {
                break;
            }
            self.sent_at.push(cx.now);
            self.answered.push(false);
            self.next_seq += 1;
            self.next_send = cx.now + self.interval;
            progress = true;
            if self.interval != Duration::ZERO {
                break;
            }
        }
        let total = self.total();
        let all_sent = usize::from(self.next_seq) == total;
        let last = self.sent_at.last().copied().unwrap_or(cx.now);
        let mut f = self.flow.borrow_mut();
        f.bytes = self.rtts.len() as u64 * 8;
        if all_sent && (self.rtts.len() == total || cx.now >= last + self.timeout) {
            let n = self.rtts.len();
            let detail = if n == 0 {
                format!("0/{total} replies")
            } else {
                let us = |d: Duration| d.as_nanos() / 1000;
                let min = self.rtts.iter().map(|d| us(*d)).min().unwrap_or(0);
                let max = self.rtts.iter().map(|d| us(*d)).max().unwrap_or(0);
                let avg = self.rtts.iter().map(|d| us(*d)).sum::<u64>() / n as u64;
                format!("{n}/{total} replies, rtt min/avg/max {min}/{avg}/{max} us")
            };
            let missing = self.answered.iter().position(|a| !*a).and_then(|seq| self.target_of(seq));
            let detail = match missing {
                Some(t) if n > 0 => format!("{detail}; first unanswered {t}"),
                _ => detail,
            };
            f.finish(cx.now, n == total, detail);
        }
        progress
    }

    fn next_wake(&self) -> Option<Instant> {
        if self.flow.borrow().done {
            None
        } else if usize::from(self.next_seq) < self.total() {
            Some(self.next_send)
        } else {
            self.sent_at.last().map(|t| *t + self.timeout)
        }
    }
}

/// Answers every UDP datagram on `port` with `"answer:" + query`.
pub(crate) struct UdpAnswer {
    pub(crate) port: u16,
    pub(crate) handle: Option<SocketHandle>,
    /// Answers given, for [`crate::Sim::served`].
    pub(crate) served: Option<Rc<Cell<u64>>>,
}

fn new_udp(sockets: &mut SocketSet<'static>) -> SocketHandle {
    let buf = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 8192]);
    sockets.add(udp::Socket::new(buf(), buf()))
}

impl App for UdpAnswer {
    fn start(&mut self, cx: &mut AppCx<'_>) {
        let h = new_udp(cx.sockets);
        let _ = cx.sockets.get_mut::<udp::Socket<'_>>(h).bind(self.port);
        self.handle = Some(h);
    }

    fn step(&mut self, cx: &mut AppCx<'_>) -> bool {
        let Some(h) = self.handle else { return false };
        let s = cx.sockets.get_mut::<udp::Socket<'_>>(h);
        let mut progress = false;
        let mut buf = [0u8; 512];
        while let Ok((n, meta)) = s.recv_slice(&mut buf) {
            let mut answer = b"answer:".to_vec();
            answer.extend_from_slice(&buf[..n]);
            let _ = s.send_slice(&answer, meta.endpoint);
            if let Some(c) = &self.served {
                c.set(c.get() + 1);
            }
            progress = true;
        }
        progress
    }
}

/// Sends `queries` numbered queries one at a time, retrying each after `timeout` up to
/// `retries` times, and checks each answer.
pub(crate) struct UdpQuery {
    pub(crate) remote: IpEndpoint,
    pub(crate) local_port: u16,
    pub(crate) queries: u16,
    pub(crate) timeout: Duration,
    pub(crate) retries: u16,
    pub(crate) current: u16,
    pub(crate) tries: u16,
    pub(crate) sent_at: Option<Instant>,
    pub(crate) answered: u16,
    pub(crate) handle: Option<SocketHandle>,
    pub(crate) flow: Shared,
}

impl UdpQuery {
    fn query(&self) -> Vec<u8> {
        format!("query {}", self.current).into_bytes()
    }
}

impl App for UdpQuery {
    fn start(&mut self, cx: &mut AppCx<'_>) {
        let h = new_udp(cx.sockets);
        let _ = cx.sockets.get_mut::<udp::Socket<'_>>(h).bind(self.local_port);
        self.handle = Some(h);
        self.flow.borrow_mut().started = cx.now;
    }

    fn step(&mut self, cx: &mut AppCx<'_>) -> bool {
        if self.flow.borrow().done {
            return false;
        }
        let Some(h) = self.handle else { return false };
        let s = cx.sockets.get_mut::<udp::Socket<'_>>(h);
        let mut progress = false;
        let mut buf = [0u8; 512];
        while let Ok((n, _)) = s.recv_slice(&mut buf) {
            let mut want = b"answer:".to_vec();
            want.extend_from_slice(&self.query());
            if buf[..n] == want[..] && self.sent_at.is_some() {
                self.answered += 1;
                self.flow.borrow_mut().bytes += n as u64;
                self.current += 1;
                self.tries = 0;
                self.sent_at = None;
            }
        }
        if self.current < self.queries {
            let due = match self.sent_at {
                None => true,
                Some(t) => cx.now >= t + self.timeout,
            };
            if due {
                if self.sent_at.is_some() {
                    self.tries += 1;
                }
                if self.tries > self.retries {
                    // Give up on this query, go to the next.
                    self.current += 1;
                    self.tries = 0;
                    self.sent_at = None;
                } else if s.send_slice(&self.query(), self.remote).is_ok() {
                    self.sent_at = Some(cx.now);
                    progress = true;
                }
            }
        }
        if self.current >= self.queries {
            let ok = self.answered == self.queries;
            self.flow.borrow_mut().finish(cx.now, ok, format!("{}/{} answered", self.answered, self.queries));
        }
        progress
    }

    fn next_wake(&self) -> Option<Instant> {
        self.sent_at.map(|t| t + self.timeout)
    }
}

/// HTTP-like server: `listeners` connections, each reads one request ending in a
/// blank line and answers `200 OK` with `body_len` pattern bytes, then closes.
pub(crate) struct HttpServer {
    pub(crate) port: u16,
    pub(crate) body_len: u64,
    pub(crate) seed: u64,
    pub(crate) conns: Vec<HttpConn>,
    /// Requests answered, for [`crate::Sim::served`].
    pub(crate) served: Option<Rc<Cell<u64>>>,
}

pub(crate) struct HttpConn {
    handle: SocketHandle,
    request: Vec<u8>,
    response: Option<Vec<u8>>,
    written: usize,
}

impl App for HttpServer {
    fn start(&mut self, cx: &mut AppCx<'_>) {
        for c in &mut self.conns {
            let _ = cx.sockets.get_mut::<tcp::Socket<'_>>(c.handle).listen(self.port);
        }
    }

    fn step(&mut self, cx: &mut AppCx<'_>) -> bool {
        let mut progress = false;
        for c in &mut self.conns {
            let s = cx.sockets.get_mut::<tcp::Socket<'_>>(c.handle);
            if c.response.is_none() {
                while s.can_recv() {
                    let _ = s.recv(|b| {
                        c.request.extend_from_slice(b);
                        (b.len(), ())
                    });
                }
                if c.request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", self.body_len).into_bytes();
                    r.extend((0..self.body_len).map(|i| pattern_byte(self.seed, i)));
                    c.response = Some(r);
                    if let Some(n) = &self.served {
                        n.set(n.get() + 1);
                    }
                    progress = true;
                }
            }
            if let Some(r) = &c.response {
                while s.can_send() && c.written < r.len() {
                    match s.send_slice(&r[c.written..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            c.written += n;
                            progress = true;
                        }
                    }
                }
                if c.written == r.len() && s.is_open() && s.state() != tcp::State::FinWait1 {
                    s.close();
                    progress = true;
                }
            }
        }
        progress
    }
}

impl HttpServer {
    pub(crate) fn new(sockets: &mut SocketSet<'static>, port: u16, body_len: u64, seed: u64, listeners: usize) -> Self {
        let conns = (0..listeners)
            .map(|_| HttpConn {
                handle: new_tcp(sockets, 4096, 65535),
                request: Vec::new(),
                response: None,
                written: 0,
            })
            .collect();
        HttpServer { port, body_len, seed, conns, served: None }
    }
}

/// HTTP-like client: one GET, reads the response to the end, checks status, length
/// and every body byte.
pub(crate) struct HttpClient {
    pub(crate) remote: IpEndpoint,
    pub(crate) local_port: u16,
    pub(crate) path: String,
    pub(crate) seed: u64,
    pub(crate) handle: Option<SocketHandle>,
    pub(crate) sent: bool,
    pub(crate) response: Vec<u8>,
    pub(crate) flow: Shared,
}

impl App for HttpClient {
    fn start(&mut self, cx: &mut AppCx<'_>) {
        let h = new_tcp(cx.sockets, 65535, 4096);
        let mut f = self.flow.borrow_mut();
        f.started = cx.now;
        f.tcp = tcp_key(local_v4(cx.iface), self.local_port, self.remote);
        if let Err(e) =
            cx.sockets.get_mut::<tcp::Socket<'_>>(h).connect(cx.iface.context(), self.remote, self.local_port)
        {
            f.finish(cx.now, false, format!("connect: {e}"));
        }
        self.handle = Some(h);
    }

    fn step(&mut self, cx: &mut AppCx<'_>) -> bool {
        if self.flow.borrow().done {
            return false;
        }
        let Some(h) = self.handle else { return false };
        let s = cx.sockets.get_mut::<tcp::Socket<'_>>(h);
        let mut progress = false;
        if !self.sent && s.can_send() {
            let req = format!("GET {} HTTP/1.1\r\nHost: sim\r\n\r\n", self.path);
            if s.send_slice(req.as_bytes()).is_ok() {
                self.sent = true;
                progress = true;
            }
        }
        while s.can_recv() {
            let _ = s.recv(|b| {
                self.response.extend_from_slice(b);
                (b.len(), ())
            });
            progress = true;
        }
        if self.sent && !s.may_recv() {
            if s.state() == tcp::State::CloseWait {
                s.close();
            }
            let (ok, detail) = check_response(&self.response, self.seed);
            let mut f = self.flow.borrow_mut();
            f.bytes = self.response.len() as u64;
            f.finish(cx.now, ok, detail);
        }
        progress
    }
}

fn check_response(r: &[u8], seed: u64) -> (bool, String) {
    let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (false, format!("no complete header in {} bytes", r.len()));
    };
    let head = String::from_utf8_lossy(&r[..end]);
    let body = &r[end + 4..];
    let len: Option<usize> =
        head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).and_then(|v| v.trim().parse().ok());
    if !head.starts_with("HTTP/1.1 200 OK") {
        return (false, format!("status line {:?}", head.lines().next().unwrap_or("")));
    }
    if len != Some(body.len()) {
        return (false, format!("body {} bytes, Content-Length {len:?}", body.len()));
    }
    if let Some(i) = body.iter().enumerate().position(|(i, b)| *b != pattern_byte(seed, i as u64)) {
        return (false, format!("body byte {i} differs"));
    }
    (true, format!("200 OK, {} body bytes verified", body.len()))
}

/// Traceroute as the classic UDP tool does it: probes to port 33434 + TTL with TTL
/// 1, 2, 3..., each answered by ICMP time exceeded from a router on the way or, at the
/// end, ICMP port unreachable from the destination. The hops land in the result's
/// detail as `1 a.b.c.d, 2 ..., 3 *` (a `*` for a probe with no answer in 3 s).
pub(crate) struct Traceroute {
    pub(crate) target: IpAddress,
    pub(crate) local_port: u16,
    pub(crate) max_ttl: u8,
    pub(crate) ttl: u8,
    pub(crate) sent_at: Option<Instant>,
    pub(crate) hops: Vec<String>,
    pub(crate) udp: Option<SocketHandle>,
    pub(crate) icmp: Option<SocketHandle>,
    pub(crate) flow: Shared,
}

impl App for Traceroute {
    fn start(&mut self, cx: &mut AppCx<'_>) {
        let u = new_udp(cx.sockets);
        let _ = cx.sockets.get_mut::<udp::Socket<'_>>(u).bind(self.local_port);
        let buf = || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 2048]);
        let mut i = icmp::Socket::new(buf(), buf());
        let _ = i.bind(icmp::Endpoint::Udp(self.local_port.into()));
        self.udp = Some(u);
        self.icmp = Some(cx.sockets.add(i));
        self.ttl = 1;
        self.flow.borrow_mut().started = cx.now;
    }

    fn step(&mut self, cx: &mut AppCx<'_>) -> bool {
        let (Some(u), Some(i)) = (self.udp, self.icmp) else { return false };
        if self.flow.borrow().done {
            return false;
        }
        let mut progress = false;
        let mut reached = false;
        let mut answer = None;
        {
            let s = cx.sockets.get_mut::<icmp::Socket<'_>>(i);
            while let Ok((data, from)) = s.recv() {
                // Match the answer to its probe by the quoted UDP destination port
                // (33434 + TTL): a late answer to an earlier probe is not this hop.
                let kind = data.first().copied().unwrap_or(0);
                let ihl = usize::from(data.get(8).map_or(0, |b| b & 0x0f)) * 4;
                let dport = data.get(8 + ihl + 2..8 + ihl + 4).map(|p| u16::from_be_bytes([p[0], p[1]]));
                if dport == Some(33434 + u16::from(self.ttl)) {
                    answer = Some(from);
                    reached |= kind == 3;
                }
            }
        }
        if let (Some(from), Some(_)) = (answer, self.sent_at) {
            self.hops.push(format!("{} {from}", self.ttl));
            self.sent_at = None;
            self.ttl += 1;
        } else if self.sent_at.is_some_and(|t| cx.now >= t + TRACE_WAIT) {
            self.hops.push(format!("{} *", self.ttl));
            self.sent_at = None;
            self.ttl += 1;
        }
        if reached || self.ttl > self.max_ttl {
            self.flow.borrow_mut().finish(cx.now, reached, self.hops.join(", "));
            return false;
        }
        if self.sent_at.is_none() {
            let s = cx.sockets.get_mut::<udp::Socket<'_>>(u);
            s.set_hop_limit(Some(self.ttl));
            let dst = IpEndpoint::new(self.target, 33434 + u16::from(self.ttl));
            if s.send_slice(b"podplane-traceroute", dst).is_ok() {
                self.sent_at = Some(cx.now);
                progress = true;
            }
        }
        progress
    }

    fn next_wake(&self) -> Option<Instant> {
        self.sent_at.map(|t| t + TRACE_WAIT)
    }
}

/// How long a traceroute probe waits for its answer (Linux traceroute waits 5 s; smoltcp
/// may hold the first probe up to 1 s for ARP).
const TRACE_WAIT: Duration = Duration::from_secs(3);
