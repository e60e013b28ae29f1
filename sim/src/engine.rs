//! The discrete-event engine: one virtual clock, one seeded RNG, one ordered event
//! queue, and the hosts, nodes and links the events act on.
//!
//! # Determinism
//! Events are ordered by (time, insertion number), so two events at the same instant
//! run in the order they were scheduled; every random choice (link faults, jitter,
//! smoltcp's seeds) comes from the one RNG in a fixed order; no map whose iteration
//! order varies is used. The same seed and scenario therefore give the same event log,
//! and [`Sim::event_log_hash`] proves it (a word-at-a-time hash over every event and frame).
//!
//! # A step
//! Pop the earliest event, move the clock to it, act: deliver a frame (to a host, which
//! is polled at once; to a node, which runs its pipeline once for everything that
//! arrived at this instant), fire a host timer, or change a link. Whatever is sent in
//! reaction is scheduled on its link with that link's delays. Runs are bounded in steps
//! and virtual time and report the seed when they stop short.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::IpAddr;
use std::path::Path;
use std::rc::Rc;

use podplane::pipeline::Pipeline;
use podplane::wire::flow::FlowKey;
use podplane::{Duration, Instant};
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::capture::Capture;
use crate::error::SimError;
use crate::host::{Host, HostConfig, smol_now};
use crate::link::{Endpoint, EntityId, Link, LinkConfig, LinkStats};
use crate::node::Node;
use crate::workload::{
    App, AppCx, FlowKind, FlowResult, HttpClient, HttpServer, Pinger, Shared, TcpBulkClient, TcpSink, Traceroute,
    UdpAnswer, UdpQuery,
};

/// Index of a workload's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowId(pub usize);

#[derive(Debug)]
enum Event {
    Deliver { link: usize, to: usize, frame: Vec<u8> },
    PollHost { host: usize, generation: u64 },
    RunNode { node: usize },
    SetLink { link: usize, up: bool },
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    // BinaryHeap is a max-heap: reverse so the earliest (then first-scheduled) pops first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The event log's hash: fixed and seedless, eight bytes a step (a multiply-xorshift
/// mix per word, then the length). Hashing every frame byte by byte (FNV-1a) took a
/// fifth of the all-pairs scale run; this takes a few percent.
#[derive(Clone, Copy, Debug)]
struct LogHash(u64);

impl LogHash {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn word(&mut self, w: u64) {
        let x = (self.0 ^ w).wrapping_mul(Self::K);
        self.0 = x ^ (x >> 29);
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 8];
        if let Some(d) = w.get_mut(..rest.len()) {
            d.copy_from_slice(rest);
        }
        self.word(u64::from_le_bytes(w) ^ ((bytes.len() as u64) << 56));
    }

    fn u64(&mut self, v: u64) {
        self.word(v);
    }
}

/// The seed to use: `PODPLANE_SEED` from the environment if set (to replay a failed
/// run), else `default`.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var("PODPLANE_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

/// A simulation. See the [module docs](self).
pub struct Sim {
    seed: u64,
    rng: Xoshiro256PlusPlus,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    hosts: Vec<Host>,
    nodes: Vec<Node>,
    links: Vec<Link>,
    names: BTreeSet<(&'static str, String)>,
    flows: Vec<Shared>,
    captures: BTreeMap<usize, Capture>,
    tcp_seen: BTreeMap<FlowKey, (u32, u64)>,
    done_prefix: usize,
    log: LogHash,
    events: u64,
    /// Most events one `run_*` call may process.
    pub max_events: u64,
    /// Requests and queries each host answered as a backend (`serve_*`).
    served: BTreeMap<(usize, u16), Rc<core::cell::Cell<u64>>>,
    /// How long a ping waits for its last reply (default 2 s). smoltcp sends at most one
    /// ARP request per second per host, so a host that pings many new neighbours at
    /// once needs longer.
    pub ping_timeout: Duration,
}

impl core::fmt::Debug for Sim {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("hosts", &self.hosts.len())
            .field("nodes", &self.nodes.len())
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// An empty simulation at virtual time zero.
    pub fn new(seed: u64) -> Self {
        Sim {
            seed,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            now: Instant::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            hosts: Vec::new(),
            nodes: Vec::new(),
            links: Vec::new(),
            names: BTreeSet::new(),
            flows: Vec::new(),
            captures: BTreeMap::new(),
            tcp_seen: BTreeMap::new(),
            done_prefix: 0,
            log: LogHash(0xcbf2_9ce4_8422_2325),
            events: 0,
            max_events: 200_000_000,
            ping_timeout: Duration::from_secs(2),
            served: BTreeMap::new(),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Hash of every event processed so far (time, kind, place, frame bytes).
    pub fn event_log_hash(&self) -> u64 {
        self.log.0
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    fn claim(&mut self, kind: &'static str, name: &str) -> Result<(), SimError> {
        if !self.names.insert((kind, name.to_owned())) {
            return Err(SimError::DuplicateName { kind, name: name.to_owned() });
        }
        Ok(())
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, event });
    }

    fn chance(&mut self, p: f64) -> bool {
        // Draw only for a configured fault, so a fault-free link consumes no randomness.
        p > 0.0 && ((self.rng.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }

    /// Add a host; returns its index.
    ///
    /// # Errors
    /// A duplicate name, or a configuration smoltcp cannot take ([`SimError::BadHost`]).
    pub fn add_host(&mut self, config: HostConfig) -> Result<usize, SimError> {
        self.claim("host", &config.name)?;
        let seed = self.rng.next_u64();
        let host = Host::new(config, seed, self.now)?;
        self.hosts.push(host);
        Ok(self.hosts.len() - 1)
    }

    /// Add a node running `pipeline` with the named ports; returns its index.
    ///
    /// # Errors
    /// A duplicate node name, or no ports.
    pub fn add_node(&mut self, name: &str, ports: &[&str], pipeline: Pipeline) -> Result<usize, SimError> {
        self.claim("node", name)?;
        let node = Node::new(name, ports, pipeline, 4096)
            .ok_or_else(|| SimError::BadLink { link: name.to_owned(), reason: "node buffer pool".into() })?;
        if ports.is_empty() {
            return Err(SimError::BadLink { link: name.to_owned(), reason: "a node needs at least one port".into() });
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// The host's link end.
    pub fn host_end(&self, host: usize) -> Endpoint {
        Endpoint { entity: EntityId::Host(host), port: 0 }
    }

    /// A node's port by name.
    ///
    /// # Errors
    /// [`SimError::BadLink`] if the node or port does not exist.
    pub fn node_end(&self, node: usize, port: &str) -> Result<Endpoint, SimError> {
        let n = self
            .nodes
            .get(node)
            .ok_or_else(|| SimError::BadLink { link: port.into(), reason: "no such node".into() })?;
        let p = n.ports.iter().position(|p| p == port).ok_or_else(|| SimError::BadLink {
            link: port.into(),
            reason: format!("node {:?} has no port {port:?}", n.name),
        })?;
        Ok(Endpoint { entity: EntityId::Node(node), port: u16::try_from(p).unwrap_or(u16::MAX) })
    }

    /// Wire `ends` together: two ends make a cable, more a shared segment (a hub: every
    /// frame reaches every other end). Returns the link index.
    ///
    /// # Errors
    /// A duplicate link name, fewer than two ends, an end that does not exist or is
    /// already wired.
    pub fn link(&mut self, name: &str, ends: &[Endpoint], config: LinkConfig) -> Result<usize, SimError> {
        let bad = |reason: String| SimError::BadLink { link: name.to_owned(), reason };
        if ends.len() < 2 {
            return Err(bad("needs at least two ends".into()));
        }
        let id = self.links.len();
        for e in ends {
            let slot = match e.entity {
                EntityId::Host(h) => self.hosts.get(h).map(|h| h.link),
                EntityId::Node(n) => self.nodes.get(n).and_then(|n| n.links.get(usize::from(e.port)).copied()),
            };
            match slot {
                None => return Err(bad(format!("{e:?} does not exist"))),
                Some(Some((other, _))) => {
                    return Err(bad(format!("{e:?} is already on link {:?}", self.links.get(other).map(|l| &l.name))));
                }
                Some(None) => {}
            }
        }
        if let Some(e) = ends.iter().enumerate().find_map(|(i, e)| ends.get(..i)?.contains(e).then_some(e)) {
            return Err(bad(format!("{e:?} is on it twice")));
        }
        self.claim("link", name)?;
        for (i, e) in ends.iter().enumerate() {
            match e.entity {
                EntityId::Host(h) => {
                    if let Some(h) = self.hosts.get_mut(h) {
                        h.link = Some((id, i));
                    }
                }
                EntityId::Node(n) => {
                    if let Some(s) = self.nodes.get_mut(n).and_then(|n| n.links.get_mut(usize::from(e.port))) {
                        *s = Some((id, i));
                    }
                }
            }
        }
        self.links.push(Link::new(name.to_owned(), config, ends.to_vec()));
        Ok(id)
    }

    /// Index of a link by name.
    pub fn link_id(&self, name: &str) -> Option<usize> {
        self.links.iter().position(|l| l.name == name)
    }

    /// Counters of a link.
    pub fn link_stats(&self, link: usize) -> Option<LinkStats> {
        self.links.get(link).map(|l| l.stats)
    }

    /// Change a link's behaviour now (faults, latency, MTU).
    pub fn set_link_config(&mut self, link: usize, config: LinkConfig) {
        if let Some(l) = self.links.get_mut(link) {
            l.config = config;
        }
    }

    /// Take a link down or up at virtual time `at`.
    pub fn set_link_up_at(&mut self, link: usize, up: bool, at: Instant) {
        self.schedule(at.max(self.now), Event::SetLink { link, up });
    }

    /// Capture every frame sent on `link` into a pcap file.
    ///
    /// # Errors
    /// [`SimError::Capture`] if the file cannot be created.
    pub fn capture(&mut self, link: usize, path: &Path) -> Result<(), SimError> {
        let c = Capture::create(path)?;
        self.captures.insert(link, c);
        Ok(())
    }

    /// The hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A node, mutable (to arm a trace).
    pub fn node_mut(&mut self, node: usize) -> Option<&mut Node> {
        self.nodes.get_mut(node)
    }

    fn install(&mut self, host: usize, mut app: Box<dyn App>) {
        let now = self.now;
        if let Some(h) = self.hosts.get_mut(host) {
            let mut cx = AppCx { now, iface: &mut h.iface, sockets: &mut h.sockets };
            app.start(&mut cx);
            h.apps.push(app);
            h.poll_gen += 1;
            h.poll_at = Some(now);
            let generation = h.poll_gen;
            self.schedule(now, Event::PollHost { host, generation });
        }
    }

    fn new_flow(&mut self, name: &str, kind: FlowKind) -> Result<(FlowId, Shared), SimError> {
        self.claim("flow", name)?;
        let f = Rc::new(RefCell::new(FlowResult::new(name, kind)));
        self.flows.push(f.clone());
        Ok((FlowId(self.flows.len() - 1), f))
    }

    fn host_v4(&self, host: usize) -> Result<IpAddress, SimError> {
        let h = self
            .hosts
            .get(host)
            .ok_or_else(|| SimError::BadHost { host: format!("#{host}"), reason: "no such host".into() })?;
        h.config
            .ipv4
            .map(|(a, _)| IpAddress::Ipv4(a))
            .ok_or_else(|| SimError::BadHost { host: h.config.name.clone(), reason: "has no IPv4 address".into() })
    }

    fn ephemeral_port(&mut self) -> u16 {
        // Linux's default ephemeral range, 32768..=60999.
        32768 + u16::try_from(self.rng.next_u64() % 28232).unwrap_or(0)
    }

    /// TCP bulk transfer of `bytes` pattern bytes from `client` to `server:port`; the
    /// server checks every byte.
    ///
    /// # Errors
    /// Duplicate flow name, unknown host or a host without IPv4.
    pub fn tcp_bulk(
        &mut self,
        name: &str,
        client: usize,
        server: usize,
        port: u16,
        bytes: u64,
    ) -> Result<FlowId, SimError> {
        let dst = self.host_v4(server)?;
        self.host_v4(client)?;
        self.tcp_bulk_to(name, client, server, dst, port, bytes)
    }

    /// [`tcp_bulk`](Self::tcp_bulk) over IPv6: both hosts need an IPv6 address;
    /// neighbour discovery runs in smoltcp.
    ///
    /// # Errors
    /// Duplicate flow name, unknown host or a host without IPv6.
    pub fn tcp_bulk6(
        &mut self,
        name: &str,
        client: usize,
        server: usize,
        port: u16,
        bytes: u64,
    ) -> Result<FlowId, SimError> {
        let v6 = |s: &Self, h: usize| {
            s.hosts.get(h).and_then(|x| x.config.ipv6).map(|(a, _)| IpAddress::Ipv6(a)).ok_or_else(|| {
                SimError::BadHost {
                    host: s.hosts.get(h).map_or(format!("#{h}"), |x| x.config.name.clone()),
                    reason: "has no IPv6 address".into(),
                }
            })
        };
        let dst = v6(self, server)?;
        v6(self, client)?;
        self.tcp_bulk_to(name, client, server, dst, port, bytes)
    }

    fn tcp_bulk_to(
        &mut self,
        name: &str,
        client: usize,
        server: usize,
        dst: IpAddress,
        port: u16,
        bytes: u64,
    ) -> Result<FlowId, SimError> {
        let (id, flow) = self.new_flow(name, FlowKind::TcpBulk)?;
        let seed = self.rng.next_u64();
        let local_port = self.ephemeral_port();
        let sink = TcpSink { port, expected: bytes, seed, received: 0, bad_at: None, handle: None, flow: flow.clone() };
        self.install(server, Box::new(sink));
        let c = TcpBulkClient {
            remote: IpEndpoint::new(dst, port),
            local_port,
            total: bytes,
            seed,
            sent: 0,
            handle: None,
            closed: false,
            flow,
        };
        self.install(client, Box::new(c));
        Ok(id)
    }

    /// `count` pings from `from` to `to` (IPv4 or IPv6), `interval` apart, the last
    /// waited for [`ping_timeout`](Self::ping_timeout).
    ///
    /// # Errors
    /// Duplicate flow name, unknown host, or a host without an address of `to`'s family.
    pub fn ping(
        &mut self,
        name: &str,
        from: usize,
        to: IpAddr,
        count: u16,
        interval: Duration,
    ) -> Result<FlowId, SimError> {
        self.ping_sweep(name, from, &[to], count, interval)
    }

    /// One flow that pings every address of `targets` in turn, `count` times each,
    /// `interval` apart (zero: as fast as the socket's buffer allows), from a single
    /// ICMP socket; ok when every request got its reply from the right address.
    ///
    /// # Errors
    /// Duplicate flow name, unknown host, a host without an address of a target's
    /// family, or more than 65535 requests (the echo sequence number is 16 bits).
    pub fn ping_sweep(
        &mut self,
        name: &str,
        from: usize,
        targets: &[IpAddr],
        count: u16,
        interval: Duration,
    ) -> Result<FlowId, SimError> {
        let host = self
            .hosts
            .get(from)
            .ok_or_else(|| SimError::BadHost { host: format!("#{from}"), reason: "no such host".into() })?;
        for t in targets {
            let has = match t {
                IpAddr::V4(_) => host.config.ipv4.is_some(),
                IpAddr::V6(_) => host.config.ipv6.is_some(),
            };
            if !has {
                return Err(SimError::BadHost {
                    host: host.config.name.clone(),
                    reason: format!("has no address of the family of ping target {t}"),
                });
            }
        }
        if targets.len() * usize::from(count) > usize::from(u16::MAX) {
            return Err(SimError::BadHost {
                host: host.config.name.clone(),
                reason: format!(
                    "{} echo requests exceed the 16-bit sequence space",
                    targets.len() * usize::from(count)
                ),
            });
        }
        let (id, flow) = self.new_flow(name, FlowKind::Ping)?;
        let ident = u16::try_from(self.rng.next_u64() & 0xffff).unwrap_or(1);
        let p = Pinger {
            targets: targets.iter().map(|t| IpAddress::from(*t)).collect(),
            count,
            interval,
            timeout: self.ping_timeout,
            ident,
            next_seq: 0,
            next_send: self.now,
            sent_at: Vec::new(),
            answered: Vec::new(),
            rtts: Vec::new(),
            handle: None,
            flow,
        };
        self.install(from, Box::new(p));
        Ok(id)
    }

    /// `queries` DNS-like UDP queries from `client` to `server:port`, 500 ms timeout,
    /// 3 retries each.
    ///
    /// # Errors
    /// Duplicate flow name or unknown host.
    pub fn udp_query(
        &mut self,
        name: &str,
        client: usize,
        server: usize,
        port: u16,
        queries: u16,
    ) -> Result<FlowId, SimError> {
        let dst = self.host_v4(server)?;
        self.host_v4(client)?;
        let (id, flow) = self.new_flow(name, FlowKind::UdpQuery)?;
        self.install(server, Box::new(UdpAnswer { port, handle: None, served: None }));
        self.start_udp_query(client, IpEndpoint::new(dst, port), queries, flow);
        Ok(id)
    }

    /// Start a UDP query client on `client` to `remote` (one socket, an ephemeral port).
    fn start_udp_query(&mut self, client: usize, remote: IpEndpoint, queries: u16, flow: Shared) {
        let local_port = self.ephemeral_port();
        let q = UdpQuery {
            remote,
            local_port,
            queries,
            timeout: Duration::from_millis(500),
            retries: 3,
            current: 0,
            tries: 0,
            sent_at: None,
            answered: 0,
            handle: None,
            flow,
        };
        self.install(client, Box::new(q));
    }

    /// Start an HTTP-like client on `client` for `remote`, checking a body of `seed`.
    fn start_http_client(&mut self, name: &str, client: usize, remote: IpEndpoint, seed: u64, flow: Shared) {
        let local_port = self.ephemeral_port();
        let c = HttpClient {
            remote,
            local_port,
            path: format!("/{name}"),
            seed,
            handle: None,
            sent: false,
            response: Vec::new(),
            flow,
        };
        self.install(client, Box::new(c));
    }

    /// The counter of what `host` answered as a backend.
    fn served_cell(&mut self, host: usize, port: u16) -> Rc<core::cell::Cell<u64>> {
        self.served.entry((host, port)).or_default().clone()
    }

    /// Requests and queries `host` answered on `port` as a backend
    /// ([`serve_http`](Self::serve_http), [`serve_udp`](Self::serve_udp)): the
    /// per-backend spread of a service.
    pub fn served(&self, host: usize, port: u16) -> u64 {
        self.served.get(&(host, port)).map_or(0, |c| c.get())
    }

    /// Make `host` a backend answering HTTP-like GETs on `port` with `body_len`
    /// pattern bytes of `body_seed`, for up to `listeners` connections.
    ///
    /// # Errors
    /// Unknown host.
    pub fn serve_http(
        &mut self,
        host: usize,
        port: u16,
        body_len: u64,
        body_seed: u64,
        listeners: usize,
    ) -> Result<(), SimError> {
        let served = self.served_cell(host, port);
        let h = self
            .hosts
            .get_mut(host)
            .ok_or_else(|| SimError::BadHost { host: format!("#{host}"), reason: "no such host".into() })?;
        let mut srv = HttpServer::new(&mut h.sockets, port, body_len, body_seed, listeners);
        srv.served = Some(served);
        self.install(host, Box::new(srv));
        Ok(())
    }

    /// Make `host` a backend answering UDP queries on `port`.
    ///
    /// # Errors
    /// Unknown host.
    pub fn serve_udp(&mut self, host: usize, port: u16) -> Result<(), SimError> {
        self.host_v4(host)?;
        let served = self.served_cell(host, port);
        self.install(host, Box::new(UdpAnswer { port, handle: None, served: Some(served) }));
        Ok(())
    }

    /// One HTTP-like GET from `client` to `dst:port` (a service address), expecting
    /// `body_len` bytes of `body_seed` from whichever backend answers.
    ///
    /// # Errors
    /// Duplicate flow name or unknown host.
    pub fn http_to(
        &mut self,
        name: &str,
        client: usize,
        dst: IpAddr,
        port: u16,
        body_seed: u64,
    ) -> Result<FlowId, SimError> {
        self.host_v4(client)?;
        let (id, flow) = self.new_flow(name, FlowKind::Http)?;
        self.start_http_client(name, client, IpEndpoint::new(dst.into(), port), body_seed, flow);
        Ok(id)
    }

    /// `queries` UDP queries from one socket of `client` to `dst:port` (a service
    /// address), 500 ms timeout, 3 retries each; backends answer with
    /// [`serve_udp`](Self::serve_udp).
    ///
    /// # Errors
    /// Duplicate flow name or unknown host.
    pub fn udp_query_to(
        &mut self,
        name: &str,
        client: usize,
        dst: IpAddr,
        port: u16,
        queries: u16,
    ) -> Result<FlowId, SimError> {
        self.host_v4(client)?;
        let (id, flow) = self.new_flow(name, FlowKind::UdpQuery)?;
        self.start_udp_query(client, IpEndpoint::new(dst.into(), port), queries, flow);
        Ok(id)
    }

    /// One HTTP-like GET from `client` to `server:port`, answered with `body_len`
    /// pattern bytes that the client checks.
    ///
    /// # Errors
    /// Duplicate flow name or unknown host.
    pub fn http(
        &mut self,
        name: &str,
        client: usize,
        server: usize,
        port: u16,
        body_len: u64,
    ) -> Result<FlowId, SimError> {
        let dst = self.host_v4(server)?;
        self.host_v4(client)?;
        let (id, flow) = self.new_flow(name, FlowKind::Http)?;
        let seed = self.rng.next_u64();
        if let Some(h) = self.hosts.get_mut(server) {
            let srv = HttpServer::new(&mut h.sockets, port, body_len, seed, 1);
            self.install(server, Box::new(srv));
        }
        self.start_http_client(name, client, IpEndpoint::new(dst, port), seed, flow);
        Ok(id)
    }

    /// Traceroute from `from` to `to` (IPv4), at most `max_ttl` hops; the hops are in
    /// the result's detail.
    ///
    /// # Errors
    /// Duplicate flow name, unknown host or an IPv6 target.
    pub fn traceroute(&mut self, name: &str, from: usize, to: IpAddr, max_ttl: u8) -> Result<FlowId, SimError> {
        self.host_v4(from)?;
        let IpAddr::V4(t) = to else {
            return Err(SimError::BadHost { host: name.into(), reason: "IPv6 traceroute is not supported yet".into() });
        };
        let (id, flow) = self.new_flow(name, FlowKind::Traceroute)?;
        let local_port = self.ephemeral_port();
        let app = Traceroute {
            target: IpAddress::Ipv4(t),
            local_port,
            max_ttl,
            ttl: 1,
            sent_at: None,
            hops: Vec::new(),
            udp: None,
            icmp: None,
            flow,
        };
        self.install(from, Box::new(app));
        Ok(id)
    }

    /// Every workload's result, with retransmissions filled in.
    pub fn flows(&self) -> Vec<FlowResult> {
        self.flows
            .iter()
            .map(|f| {
                let mut r = f.borrow().clone();
                if let Some(k) = r.tcp {
                    r.retransmissions = self.tcp_seen.get(&k).map_or(0, |v| v.1);
                }
                r
            })
            .collect()
    }

    /// The result of one workload.
    pub fn flow(&self, id: FlowId) -> Option<FlowResult> {
        self.flows().into_iter().nth(id.0)
    }

    /// Run until every workload is done, or `limit` of virtual time passes.
    ///
    /// # Errors
    /// [`SimError::Unfinished`] (with the seed) when the limit, the event bound, or an
    /// empty queue stops it first.
    pub fn run_until_done(&mut self, limit: Duration) -> Result<(), SimError> {
        let deadline = self.now + limit;
        let mut budget = self.max_events;
        loop {
            // Flows never become undone: skip the finished prefix once (amortised O(1),
            // where checking every flow after every event was quadratic).
            while self.flows.get(self.done_prefix).is_some_and(|f| f.borrow().done) {
                self.done_prefix += 1;
            }
            if self.done_prefix == self.flows.len() {
                return Ok(());
            }
            let Some(next) = self.queue.peek().map(|s| s.at) else {
                return Err(self.unfinished("the event queue ran empty"));
            };
            if next > deadline {
                return Err(self.unfinished(&format!("virtual deadline {deadline} reached")));
            }
            if budget == 0 {
                return Err(self.unfinished("event bound reached"));
            }
            budget -= 1;
            self.step();
        }
    }

    /// Run every event up to `now + d`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        let mut budget = self.max_events;
        while budget > 0 && self.queue.peek().is_some_and(|s| s.at <= until) {
            budget -= 1;
            self.step();
        }
        self.now = self.now.max(until);
    }

    fn unfinished(&self, why: &str) -> SimError {
        let pending: Vec<String> =
            self.flows.iter().filter(|f| !f.borrow().done).map(|f| f.borrow().name.clone()).collect();
        SimError::Unfinished { seed: self.seed, reason: format!("{why}; unfinished: {}", pending.join(", ")) }
    }

    fn step(&mut self) {
        let Some(s) = self.queue.pop() else { return };
        self.now = s.at;
        self.events += 1;
        self.log.u64(s.at.as_nanos());
        match s.event {
            Event::Deliver { link, to, frame } => {
                self.log.write(b"D");
                self.log.u64(link as u64);
                self.log.u64(to as u64);
                self.log.write(&frame);
                self.deliver(link, to, frame);
            }
            Event::PollHost { host, generation } => {
                let current = self.hosts.get_mut(host).filter(|h| h.poll_gen == generation);
                if let Some(h) = current {
                    h.poll_at = None;
                    self.log.write(b"P");
                    self.log.u64(host as u64);
                    self.service_host(host);
                }
            }
            Event::RunNode { node } => {
                self.log.write(b"N");
                self.log.u64(node as u64);
                self.run_node(node);
            }
            Event::SetLink { link, up } => {
                self.log.write(if up { b"U" } else { b"X" });
                if let Some(l) = self.links.get_mut(link) {
                    l.config.up = up;
                }
            }
        }
    }

    fn deliver(&mut self, link: usize, to: usize, frame: Vec<u8>) {
        let Some(end) = self.links.get(link).and_then(|l| l.ends.get(to)).copied() else { return };
        if let Some(l) = self.links.get_mut(link) {
            l.stats.delivered += 1;
            l.stats.delivered_bytes += frame.len() as u64;
        }
        match end.entity {
            EntityId::Host(h) => {
                if let Some(host) = self.hosts.get_mut(h) {
                    host.device.rx.push_back(frame);
                }
                self.service_host(h);
            }
            EntityId::Node(n) => {
                let now = self.now;
                let mut schedule = false;
                if let Some(node) = self.nodes.get_mut(n) {
                    node.rx.push_back((podplane::PortId(end.port), frame));
                    schedule = !node.scheduled;
                    node.scheduled = true;
                }
                if schedule {
                    self.schedule(now, Event::RunNode { node: n });
                }
            }
        }
    }

    fn run_node(&mut self, n: usize) {
        let now = self.now;
        let out = match self.nodes.get_mut(n) {
            Some(node) => {
                node.scheduled = false;
                node.run(now)
            }
            None => return,
        };
        for (port, frame) in out {
            self.transmit(Endpoint { entity: EntityId::Node(n), port: port.0 }, frame);
        }
    }

    fn service_host(&mut self, h: usize) {
        let now = self.now;
        let Some(host) = self.hosts.get_mut(h) else { return };
        let Host { iface, device, sockets, apps, .. } = host;
        // Poll, let the apps act, poll again while they make progress (bounded).
        for _ in 0..64 {
            iface.poll(smol_now(now), device, sockets);
            let mut progress = false;
            for app in apps.iter_mut() {
                let mut cx = AppCx { now, iface: &mut *iface, sockets: &mut *sockets };
                progress |= app.step(&mut cx);
            }
            if !progress {
                break;
            }
        }
        let frames = std::mem::take(&mut device.tx);
        let mut wake = iface
            .poll_at(smol_now(now), sockets)
            .map(|t| Instant::from_nanos(u64::try_from(t.total_micros()).unwrap_or(0) * 1000));
        // An app's wake-up at or before now has just been served by the steps above;
        // only future ones schedule a poll (else a stale timer would spin the clock).
        for w in apps.iter().filter_map(|a| a.next_wake()).filter(|w| *w > now) {
            wake = Some(wake.map_or(w, |x| x.min(w)));
        }
        // One pending timer poll per host: an earlier wake-up replaces it (the old
        // event goes stale by generation), a later one waits for it. Scheduling one
        // per poll filled the event heap with stale polls (a third of the all-pairs
        // scale run went to sifting them).
        if let Some(w) = wake {
            // smoltcp's clock has microsecond resolution: never wake in the past.
            let at = w.max(now + Duration::from_nanos(1000));
            if host.poll_at.is_none_or(|p| at < p) {
                host.poll_gen += 1;
                host.poll_at = Some(at);
                let generation = host.poll_gen;
                self.schedule(at, Event::PollHost { host: h, generation });
            }
        }
        for f in frames {
            self.transmit(Endpoint { entity: EntityId::Host(h), port: 0 }, f);
        }
    }

    /// Note TCP segments a host sends again (sequence space already sent).
    fn track_tcp(&mut self, frame: &[u8]) {
        use podplane::wire::{EthernetFrame, Ipv4Packet, tcp::TcpPacket};
        let Ok(e) = EthernetFrame::new_checked(frame) else { return };
        let Ok(ip) = Ipv4Packet::new_checked(e.payload()) else { return };
        if ip.protocol() != podplane::wire::IpProtocol::Tcp {
            return;
        }
        let Ok(t) = TcpPacket::new_checked(ip.payload()) else { return };
        let flags = t.flags();
        let len = u32::try_from(t.payload().len()).unwrap_or(0)
            + u32::from(flags.contains(podplane::wire::tcp::TcpFlags::SYN))
            + u32::from(flags.contains(podplane::wire::tcp::TcpFlags::FIN));
        if len == 0 {
            return;
        }
        let key = FlowKey::v4(ip.src_addr(), ip.dst_addr(), 6, t.src_port(), t.dst_port());
        let end = t.seq().wrapping_add(len);
        match self.tcp_seen.get_mut(&key) {
            None => {
                self.tcp_seen.insert(key, (end, 0));
            }
            Some((max_end, retrans)) => {
                // RFC 1982 serial arithmetic: not beyond what was sent = a resend.
                if end.wrapping_sub(*max_end).cast_signed() <= 0 {
                    *retrans += 1;
                } else {
                    *max_end = end;
                }
            }
        }
    }

    fn transmit(&mut self, from: Endpoint, frame: Vec<u8>) {
        let link = match from.entity {
            EntityId::Host(h) => self.hosts.get(h).and_then(|h| h.link),
            EntityId::Node(n) => self.nodes.get(n).and_then(|n| n.links.get(usize::from(from.port)).copied().flatten()),
        };
        let Some((l, from_i)) = link else { return };
        if matches!(from.entity, EntityId::Host(_)) {
            self.track_tcp(&frame);
        }
        let now = self.now;
        if let Some(c) = self.captures.get_mut(&l) {
            // A capture that cannot be written stops capturing, not the run.
            if c.write(now, &frame).is_err() {
                self.captures.remove(&l);
            }
        }
        let Some(link) = self.links.get(l) else { return };
        let cfg = link.config;
        let n_ends = link.ends.len();
        let ser = link.serialisation(frame.len());
        let tagged = frame.get(12..14) == Some(&[0x81, 0x00]);
        let max_frame = cfg.mtu + 14 + if tagged { 4 } else { 0 };
        if let Some(link) = self.links.get_mut(l) {
            link.stats.sent += 1;
        }
        let verdict = if !cfg.up {
            Some(0)
        } else if frame.len() > max_frame {
            Some(1)
        } else if self.chance(cfg.loss) {
            Some(2)
        } else {
            None
        };
        if let Some(v) = verdict {
            if let Some(link) = self.links.get_mut(l) {
                match v {
                    0 => link.stats.dropped_down += 1,
                    1 => link.stats.dropped_mtu += 1,
                    _ => link.stats.dropped_loss += 1,
                }
            }
            return;
        }
        let mut frame = frame;
        if self.chance(cfg.corrupt) && !frame.is_empty() {
            let bit = self.rng.next_u64() % (frame.len() as u64 * 8);
            let (byte, shift) = (usize::try_from(bit / 8).unwrap_or(0), bit % 8);
            if let Some(b) = frame.get_mut(byte) {
                *b ^= 1 << shift;
            }
            if let Some(link) = self.links.get_mut(l) {
                link.stats.corrupted += 1;
            }
        }
        let copies = if self.chance(cfg.duplicate) { 2 } else { 1 };
        let reorder = self.chance(cfg.reorder);
        let jitter = if cfg.jitter.as_nanos() > 0 { self.rng.next_u64() % (cfg.jitter.as_nanos() + 1) } else { 0 };
        let Some(link) = self.links.get_mut(l) else { return };
        if copies == 2 {
            link.stats.duplicated += 1;
        }
        let start = now.max(link.busy_until.get(from_i).copied().unwrap_or(now));
        let done = start + ser;
        if let Some(b) = link.busy_until.get_mut(from_i) {
            *b = done;
        }
        let mut at = done + cfg.latency + Duration::from_nanos(jitter);
        if reorder {
            link.stats.reordered += 1;
            at = at + cfg.reorder_delay;
        } else if let Some(last) = link.last_delivery.get_mut(from_i) {
            at = at.max(*last);
            *last = at;
        }
        // A switched segment learns the sender's MAC and sends known unicast to one end.
        let mut only = None;
        if cfg.switched && n_ends > 2 && frame.len() >= 12 {
            let mut src = [0u8; 6];
            src.copy_from_slice(&frame[6..12]);
            let mut dst = [0u8; 6];
            dst.copy_from_slice(&frame[..6]);
            if src[0] & 1 == 0 {
                link.macs.insert(src, from_i);
            }
            if dst[0] & 1 == 0 {
                only = link.macs.get(&dst).copied();
            }
        }
        for to in (0..n_ends).filter(|&t| t != from_i && only.is_none_or(|o| o == t)) {
            for _ in 0..copies {
                self.schedule(at, Event::Deliver { link: l, to, frame: frame.clone() });
            }
        }
    }
}
