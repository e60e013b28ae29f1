//! The `route` stage: IPv4 forwarding as the Linux FIB and `ip_forward()` do it (IPv6,
//! as `ip6_forward()`, is in [`v6`]'s module docs).
//!
//! It takes IPv4 packets addressed to the node at L2 (the bridge marked them
//! `L2_LOCAL`, or they came in on a routed port to its MAC) and:
//! 1. delivers to the host what is for one of the node's addresses (local routes);
//! 2. looks up the longest prefix: no route → ICMP net unreachable (`no_route`);
//!    blackhole → dropped silently; unreachable → ICMP host unreachable; prohibit →
//!    ICMP administratively prohibited (code 13), as Linux's `ip_error()` maps them;
//! 3. checks the TTL after the lookup, as `ip_forward()` does: TTL ≤ 1 → ICMP time
//!    exceeded (`ttl_exceeded`);
//! 4. checks the egress MTU: larger with DF → ICMP fragmentation needed carrying the
//!    next-hop MTU (`frag_needed`); without DF it fragments as Linux's
//!    `ip_do_fragment()` does (see [`fragment`](RouteStage) below);
//! 5. decrements the TTL with an RFC 1624 checksum update, records the next hop and the
//!    egress interface, and leaves L2 to the `arp` (neighbour) stage.
//!
//! # ICMP errors (net/ipv4/icmp.c `__icmp_send`)
//! Built field by field as Linux does: TOS = the offending packet's TOS bits | 0xc0
//! (`IPTOS_PREC_INTERNETCONTROL`), TTL 64, DF clear, ID from the RNG, source = the
//! address of the interface the packet came in on, the quote = the offending IP packet
//! from its header, cut so the error is at most 576 bytes. None is sent about an ICMP
//! error, a non-first fragment, or a packet from 0.0.0.0, a multicast or a broadcast
//! address (RFC 1812 4.3.2.7). A global token bucket of 1000 per second, burst 50,
//! follows `icmp_msgs_per_sec` / `icmp_msgs_burst`, and a per-destination one follows
//! `icmp_ratelimit` (1 per second, bursts of 6); fragmentation-needed is never limited
//! (`icmpv4_xrlim_allow`).
//! The error enters the pipeline at this stage, so it is routed back like any packet.
//!
//! # The FIB
//! IPv4 routes live in a [`Poptrie4`], chosen by measurement at a million routes
//! (`cargo bench -p podplane-benches --bench lpm`, two runs on the 2-core CI machine):
//! per lookup, 21-22 ns against 63-65 ns for per-length hash tables behind a /16
//! directory (the first FIB, [`crate::table::lpm::Lpm4`]) and 89-90 ns for plain
//! per-length tables with 1M random prefixes of lengths 16..=32; 16-17 ns against 17-18
//! and 28 ns with 1M prefixes shaped like a BGP table. Its memory: 7.8 MiB of lookup
//! structure for the BGP-shaped table, 22.9 MiB for the random one (random long
//! prefixes share no trie path; the hash tables took 14.2 and 16.8 MiB), plus the
//! routes kept for updates (`icount lpm_memory`). IPv6 routes use [`Lpm6`]:
//! per-length hash tables behind a /32 directory of the lengths present, 29 ns per
//! lookup against 236 ns without the directory at 100k routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub mod update;
pub mod v6;

pub use update::{RouteChange, RouteError};

pub(crate) use v6::is_link_local as is_link_local6;
pub use v6::{DEFAULT_HOP_LIMIT, ICMPV6_ERROR_MAX, NextHop6, RouteSpec6, link_local, unreachable6};

use crate::buf::{Batch, L3Kind, PktFlags, PktId, PortId};
use crate::pipeline::{Context, DropReason, Stage, StageEvent, TraceNote};
use crate::table::lpm::Lpm6;
use crate::table::poptrie::Poptrie4;
use crate::time::Instant;
use crate::wire::checksum::Sum;
use crate::wire::ethernet::{MAC_MASK, mac64};
use crate::wire::icmpv4::{Icmpv4Repr, Icmpv4Type, unreachable};
use crate::wire::ip::IpProtocol;
use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use crate::wire::{EthernetAddress, ethernet};

/// A layer-3 interface of the node: a routed port, or a bridge's own interface (VPP's
/// BVI) whose packets re-enter the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L3If {
    /// The interface's port: a real port, or a virtual one for a bridge interface.
    pub port: PortId,
    /// Its MAC.
    pub mac: EthernetAddress,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Prefix length of its subnet (a connected route is installed for it).
    pub prefix: u8,
    /// IP MTU.
    pub mtu: u16,
    /// True for a bridge interface: forwarded packets go back into the bridge.
    pub bvi: bool,
    /// Its IPv6 address and prefix length, if it has one (a connected and a local
    /// route are installed; it also has the EUI-64 link-local address of its MAC).
    pub ip6: Option<(Ipv6Addr, u8)>,
    /// The pipeline ports packets arrive on for this interface (a bridge's ports; the
    /// port itself for a routed port). The ICMP source address comes from here.
    pub ports: Vec<PortId>,
}

impl L3If {
    /// A routed port (not a bridge interface) on `port` with one IPv4 address.
    pub fn routed(port: PortId, mac: EthernetAddress, ip: Ipv4Addr, prefix: u8, mtu: u16) -> Self {
        L3If { port, mac, ip, prefix, mtu, bvi: false, ip6: None, ports: vec![port] }
    }

    /// The same with an IPv6 address too.
    #[must_use]
    pub fn with_ip6(mut self, ip: Ipv6Addr, prefix: u8) -> Self {
        self.ip6 = Some((ip, prefix));
        self
    }
}

/// The interface of each port as tables indexed by port number: `at` the interface on
/// that port, `of` the interface whose `ports` include it. Replaces linear scans of
/// the interface list in the per-packet path of the route and neighbour stages.
#[derive(Clone, Debug, Default)]
pub(crate) struct IfIndex {
    at: Vec<u8>,
    of: Vec<u8>,
}

impl IfIndex {
    const NONE: u8 = u8::MAX;

    pub(crate) fn new(ifs: &[L3If]) -> Self {
        let top = ifs.iter().flat_map(|f| f.ports.iter().chain([&f.port])).map(|p| usize::from(p.0)).max();
        let n = top.map_or(0, |t| t + 1);
        let (mut at, mut of) = (vec![Self::NONE; n], vec![Self::NONE; n]);
        for (k, f) in ifs.iter().enumerate().take(usize::from(Self::NONE)) {
            let k = u8::try_from(k).unwrap_or(Self::NONE);
            if let Some(a) = at.get_mut(usize::from(f.port.0)).filter(|a| **a == Self::NONE) {
                *a = k;
            }
            for p in &f.ports {
                if let Some(o) = of.get_mut(usize::from(p.0)).filter(|o| **o == Self::NONE) {
                    *o = k;
                }
            }
        }
        IfIndex { at, of }
    }

    /// Index of the interface on `port`.
    #[inline]
    pub(crate) fn at(&self, port: PortId) -> Option<usize> {
        self.at.get(usize::from(port.0)).filter(|k| **k != Self::NONE).map(|k| usize::from(*k))
    }

    /// Index of the interface `port` belongs to.
    #[inline]
    pub(crate) fn of(&self, port: PortId) -> Option<usize> {
        self.of.get(usize::from(port.0)).filter(|k| **k != Self::NONE).map(|k| usize::from(*k))
    }
}

/// What the IPv4 forwarding path needs of the interfaces of one port, in one small
/// `Copy` record indexed by port number (two index lookups and two reads of a 100-byte
/// [`L3If`] per packet cost about 25 instructions).
#[derive(Clone, Copy, Debug)]
struct PortIf {
    /// Address of the routed (non-bridge) interface on the port, if `at_routed`.
    at_ip: Ipv4Addr,
    /// Address of the interface the port belongs to, if `of_some`.
    of_ip: Ipv4Addr,
    /// MTU of the interface on the port (1500 when there is none).
    mtu: u16,
    at_routed: bool,
    of_some: bool,
    /// MAC of the routed interface on the port as a [`mac64`] word (frames to another
    /// unicast MAC are another host's).
    at_mac: u64,
}

impl PortIf {
    fn table(ifs: &[L3If], index: &IfIndex) -> Vec<PortIf> {
        let n = index.at.len().max(index.of.len());
        (0..n)
            .map(|p| {
                let port = PortId(u16::try_from(p).unwrap_or(u16::MAX));
                let at = index.at(port).and_then(|k| ifs.get(k));
                let of = index.of(port).and_then(|k| ifs.get(k));
                PortIf {
                    at_ip: at.map_or(Ipv4Addr::UNSPECIFIED, |f| f.ip),
                    of_ip: of.map_or(Ipv4Addr::UNSPECIFIED, |f| f.ip),
                    mtu: at.map_or(1500, |f| f.mtu),
                    at_routed: at.is_some_and(|f| !f.bvi),
                    of_some: of.is_some(),
                    at_mac: at.map_or(0, |f| mac64(&f.mac.0)),
                }
            })
            .collect()
    }

    /// The address packets from this port are answered from (ICMP errors), if the
    /// packet is routed here at all: a frame the bridge handed up (`L2_LOCAL`) belongs
    /// to the bridge's interface, any other to the routed interface on the port.
    #[inline]
    fn in_ip(&self, l2_local: bool) -> Option<Ipv4Addr> {
        if l2_local { self.of_some.then_some(self.of_ip) } else { self.at_routed.then_some(self.at_ip) }
    }
}

/// Where a route sends packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// On-link through the interface on `PortId`: the destination is the next hop.
    Connected(PortId),
    /// Through the gateway, reached on the interface on `PortId`.
    Via(Ipv4Addr, PortId),
    /// ECMP: one of the paths of group `u16` in [`RouteConfig::multipath`], chosen
    /// per flow (see [`RouteStage::pick_path`]).
    Multipath(u16),
    /// One of the node's addresses: deliver to the host.
    Local,
    /// Drop silently.
    Blackhole,
    /// Drop with ICMP host unreachable.
    Unreachable,
    /// Drop with ICMP administratively prohibited.
    Prohibit,
}

/// A route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination prefix.
    pub dst: Ipv4Addr,
    /// Prefix length.
    pub len: u8,
    /// Where it goes.
    pub next_hop: NextHop,
}

/// The route stage's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteConfig {
    /// Interfaces (connected and local routes are derived from them).
    pub interfaces: Vec<L3If>,
    /// Other routes.
    pub routes: Vec<RouteSpec>,
    /// ECMP groups: the (gateway, interface port) paths of each group.
    pub multipath: Vec<Vec<(Ipv4Addr, PortId)>>,
    /// IPv6 routes (connected and local ones come from the interfaces' `ip6`).
    pub routes6: Vec<RouteSpec6>,
    /// IPv6 ECMP groups, for [`NextHop6::Multipath`].
    pub multipath6: Vec<Vec<(Ipv6Addr, PortId)>>,
}

/// Default TTL of packets the node originates (`net.ipv4.ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;
/// Largest ICMP error (RFC 1812 4.3.2.3, Linux `icmp_send`).
pub const ICMP_ERROR_MAX: usize = 576;

/// See the [module docs](self).
#[derive(Debug)]
pub struct RouteStage {
    ifs: Vec<L3If>,
    index: IfIndex,
    ports: Vec<PortIf>,
    fib: Poptrie4<NextHop>,
    fib6: Lpm6<NextHop6>,
    groups: Vec<Vec<(Ipv4Addr, PortId, u64)>>,
    groups6: Vec<Vec<(Ipv6Addr, PortId, u64)>>,
    tokens: u64,
    last_refill: Instant,
    peers: hashbrown::HashMap<IpAddr, (u64, Instant), rustc_hash::FxBuildHasher>,
}

impl RouteStage {
    /// Build the FIB: a local /32 and a connected route per interface, then `routes`.
    pub fn new(config: &RouteConfig) -> Self {
        let mut fib = Poptrie4::new();
        for i in &config.interfaces {
            fib.insert(u32::from(i.ip), i.prefix, NextHop::Connected(i.port));
            fib.insert(u32::from(i.ip), 32, NextHop::Local);
        }
        fib.extend(config.routes.iter().map(|r| (u32::from(r.dst), r.len, r.next_hop)));
        let mut fib6 = Lpm6::new();
        for i in &config.interfaces {
            if let Some((ip, len)) = i.ip6 {
                fib6.insert(u128::from(ip), len, NextHop6::Connected(i.port));
                fib6.insert(u128::from(ip), 128, NextHop6::Local);
            }
            fib6.insert(u128::from(link_local(i.mac)), 128, NextHop6::Local);
        }
        for r in &config.routes6 {
            fib6.insert(u128::from(r.dst), r.len, r.next_hop);
        }
        let groups = config
            .multipath
            .iter()
            .map(|g| g.iter().map(|(gw, p)| (*gw, *p, path_key(u128::from(u32::from(*gw)), *p))).collect())
            .collect();
        let groups6 = config
            .multipath6
            .iter()
            .map(|g| g.iter().map(|(gw, p)| (*gw, *p, path_key(u128::from(*gw), *p))).collect())
            .collect();
        let index = IfIndex::new(&config.interfaces);
        RouteStage {
            ports: PortIf::table(&config.interfaces, &index),
            ifs: config.interfaces.clone(),
            index,
            fib,
            fib6,
            groups,
            groups6,
            tokens: ICMP_BURST,
            last_refill: Instant::ZERO,
            peers: hashbrown::HashMap::with_capacity_and_hasher(PEERS_MAX, rustc_hash::FxBuildHasher),
        }
    }

    /// The path of ECMP group `group` for a flow: rendezvous (highest-random-weight)
    /// hashing over the flow's symmetric hash, so both directions of a flow choose the
    /// same path, and adding or removing a path moves only the flows that must move
    /// (about 1/(n+1) of them when a path is added). Fragments hash without ports, so
    /// all pieces of a packet go the same way.
    ///
    /// Linux's default (`fib_multipath_hash_policy` = 0) hashes source and destination
    /// address only, not symmetrically, and rebalances with hash-threshold ranges,
    /// which moves more flows when a path is added; we differ on purpose.
    pub fn pick_path(
        &self,
        group: u16,
        flow: &crate::wire::flow::FlowKey,
        fragment: bool,
    ) -> Option<(Ipv4Addr, PortId)> {
        rendezvous(self.groups.get(usize::from(group))?, flow, fragment)
    }

    /// [`pick_path`](Self::pick_path) for IPv6 group `group`.
    pub fn pick_path6(
        &self,
        group: u16,
        flow: &crate::wire::flow::FlowKey,
        fragment: bool,
    ) -> Option<(Ipv6Addr, PortId)> {
        rendezvous(self.groups6.get(usize::from(group))?, flow, fragment)
    }

    /// Routes in the FIB, IPv4 and IPv6 (the interfaces' own included), for the
    /// table-size counters.
    pub fn fib_len(&self) -> (usize, usize) {
        (self.fib.len(), self.fib6.len())
    }

    /// The forwarding decision for `dst` (for tests and the CLI).
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<(u8, NextHop)> {
        self.fib.lookup(u32::from(dst))
    }

    fn iface_for_port(&self, port: PortId) -> Option<&L3If> {
        self.ifs.get(self.index.of(port)?)
    }

    fn iface(&self, port: PortId) -> Option<&L3If> {
        self.ifs.get(self.index.at(port)?)
    }

    /// `icmp_msgs_per_sec` = 1000, `icmp_msgs_burst` = 50: a global token bucket.
    fn icmp_allowed(&mut self, now: Instant) -> bool {
        let elapsed_ms = now.saturating_since(self.last_refill).as_nanos() / 1_000_000;
        if elapsed_ms > 0 {
            self.tokens = (self.tokens + elapsed_ms * ICMP_PER_SEC / 1000).min(ICMP_BURST);
            self.last_refill = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Both limits: the global one, then the destination's.
    fn rate_allows(&mut self, dst: Ipv4Addr, now: Instant) -> bool {
        self.icmp_allowed(now) && self.peer_allowed_cost(IpAddr::V4(dst), PEER_COST_MS, now)
    }

    /// Linux's per-destination limit (`icmp_ratelimit` = 1000 ms, `inet_peer_xrlim_allow`
    /// with `XRLIM_BURST_FACTOR` 6): a token bucket in milliseconds per destination,
    /// refilled by elapsed time up to 6 s, each message costing 1 s. The table is
    /// bounded; when full it starts over (Linux's inet_peer cache evicts by age).
    /// `cost` is what one message costs in milliseconds (IPv6 scales it by prefix).
    fn peer_allowed_cost(&mut self, dst: IpAddr, cost: u64, now: Instant) -> bool {
        if !self.peers.contains_key(&dst) && self.peers.len() >= PEERS_MAX {
            self.peers.clear();
        }
        let (tokens, last) = self.peers.entry(dst).or_insert((cost * 6, now));
        let elapsed = now.saturating_since(*last).as_nanos() / 1_000_000;
        // Bursts of up to `XRLIM_BURST_FACTOR` = 6 messages.
        let burst = cost * 6;
        *tokens = (*tokens + elapsed).min(burst);
        *last = now;
        if *tokens < cost {
            return false;
        }
        *tokens -= cost;
        true
    }

    fn run<const TRACE: bool>(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        // Counted once per batch: a counter update per packet is measurable here.
        let mut routed = 0u64;
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            // One look-up for the slot and the metadata (a reference: the fields needed
            // are read into locals, not the whole metadata copied).
            let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
            let v6 = match meta.l3_kind {
                L3Kind::Ipv4 => false,
                L3Kind::Ipv6 => true,
                _ => continue,
            };
            if meta.flags.intersects(PktFlags::BRIDGED | PktFlags::ROUTED) {
                continue;
            }
            let m = Hdr { in_port: meta.in_port, l3: meta.l3, flags: meta.flags };
            let pif = self.ports.get(usize::from(m.in_port.0));
            // A unicast frame on a routed port for another MAC is another host's: the
            // kernel drops it in ip_rcv() (PACKET_OTHERHOST), a NIC before that. On a
            // shared segment (a hub, a TAP) forwarding it would duplicate it. (The
            // destination MAC is the low 48 bits of the frame's first 8 bytes.)
            if !m.flags.intersects(PktFlags::L2_LOCAL | PktFlags::L2_MULTI | PktFlags::GENERATED)
                && let Some(p) = pif.filter(|p| p.at_routed)
                && slot
                    .get(usize::from(meta.l2)..)
                    .and_then(|d| d.first_chunk::<8>())
                    .is_some_and(|d| u64::from_le_bytes(*d) & MAC_MASK != p.at_mac)
            {
                cx.drop(batch, i, DropReason::OtherHost);
                continue;
            }
            if v6 {
                let in_if = if m.flags.contains(PktFlags::L2_LOCAL) {
                    self.iface_for_port(m.in_port)
                } else {
                    self.iface(m.in_port).filter(|f| !f.bvi)
                };
                let in6 = in_if.and_then(v6::if_addr6);
                if in_if.is_some() {
                    self.forward6::<TRACE>(cx, batch, i, m, in6);
                }
                continue;
            }
            // The ICMP source address: the address of the interface it came in on.
            let Some(in_ip) = pif.and_then(|p| p.in_ip(m.flags.contains(PktFlags::L2_LOCAL))) else {
                continue;
            };
            if m.flags.contains(PktFlags::L2_MULTI) {
                // A broadcast or multicast frame for the node: its stack's business.
                batch.deliver_host(i);
                continue;
            }
            let l3 = usize::from(m.l3);
            let Some(h) = slot.get_mut(l3..).and_then(|h| h.first_chunk_mut::<20>()) else { continue };
            let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            let (ttl, total, df) = (h[8], u16::from_be_bytes([h[2], h[3]]), h[6] & 0x40 != 0);
            let Some((_, hop)) = self.fib.lookup(u32::from(dst)) else {
                self.icmp_error(cx, pkt, in_ip, Icmpv4Type::DstUnreachable, unreachable::NET, [0; 4]);
                cx.drop(batch, i, DropReason::NoRoute);
                continue;
            };
            let rejected = m.flags.intersects(PktFlags::REJECT_NO_ENDPOINTS | PktFlags::REJECT_UNKNOWN_PORT);
            let (next_hop, port) = match hop {
                // kube-proxy's reject for the node's own addresses (a NodePort without
                // endpoints) runs in the input hook: no TTL change.
                NextHop::Local if rejected => {
                    self.icmp_error(cx, pkt, in_ip, Icmpv4Type::DstUnreachable, unreachable::PORT, [0; 4]);
                    reject(cx, batch, i, m.flags);
                    continue;
                }
                NextHop::Local => {
                    batch.deliver_host(i);
                    continue;
                }
                NextHop::Blackhole => {
                    cx.drop(batch, i, DropReason::RouteBlackhole);
                    continue;
                }
                NextHop::Unreachable => {
                    self.icmp_error(cx, pkt, in_ip, Icmpv4Type::DstUnreachable, unreachable::HOST, [0; 4]);
                    cx.drop(batch, i, DropReason::RouteUnreachable);
                    continue;
                }
                NextHop::Prohibit => {
                    self.icmp_error(cx, pkt, in_ip, Icmpv4Type::DstUnreachable, unreachable::ADMIN_PROHIBITED, [0; 4]);
                    cx.drop(batch, i, DropReason::RouteProhibit);
                    continue;
                }
                NextHop::Connected(p) => (dst, p),
                NextHop::Via(gw, p) => (gw, p),
                NextHop::Multipath(g) => {
                    let frag = m.flags.contains(PktFlags::FRAGMENT);
                    match self.pick_path(g, &meta.flow, frag) {
                        Some(path) => path,
                        None => {
                            cx.drop(batch, i, DropReason::RouteBlackhole);
                            continue;
                        }
                    }
                }
            };
            // br_netfilter's bridged DNAT (br_nf_pre_routing_finish): a frame that came
            // in on a bridge and whose new destination is on that same bridge is
            // forwarded at L2, not routed: no TTL check or change, the sender's MAC
            // kept. (Kubernetes sees this for a pod calling a service whose endpoint
            // is a pod on the same node.) A hairpin goes back out the port it came
            // in on, so it needs the port's hairpin mode, as in the kernel (kubelet
            // turns it on; `cli/tests/services_kernel.rs` compares).
            if m.flags.contains(PktFlags::L2_LOCAL | PktFlags::DNATED)
                && self.iface_for_port(m.in_port).is_some_and(|f| f.port == port)
            {
                meta.next_hop = next_hop;
                meta.out_port = port;
                meta.flags.remove(PktFlags::L2_LOCAL);
                meta.flags |= PktFlags::ROUTED | PktFlags::KEEP_SRC_MAC;
                routed += 1;
                continue;
            }
            // Packets the node made itself (ICMP errors) leave with their own TTL, as
            // from ip_output(); only forwarded packets age.
            let forwarded = !m.flags.contains(PktFlags::GENERATED);
            if forwarded && ttl <= 1 {
                self.icmp_error(cx, pkt, in_ip, Icmpv4Type::TimeExceeded, 0, [0; 4]);
                cx.drop(batch, i, DropReason::TtlExceeded);
                continue;
            }
            let mtu = self.ports.get(usize::from(port.0)).map_or(1500, |p| p.mtu);
            let too_big = total > mtu;
            if too_big && df {
                let m = mtu.to_be_bytes();
                self.icmp_error(
                    cx,
                    pkt,
                    in_ip,
                    Icmpv4Type::DstUnreachable,
                    unreachable::FRAG_NEEDED,
                    [0, 0, m[0], m[1]],
                );
                cx.drop(batch, i, DropReason::FragNeeded);
                continue;
            }
            if forwarded {
                Ipv4Packet::new_unchecked(&mut h[..]).decrement_ttl();
            }
            if rejected {
                // kube-proxy's reject for a forwarded packet runs in the forward hook,
                // after ip_forward() has checked the TTL and the MTU and decremented
                // the TTL: the error quotes the packet one hop older.
                self.icmp_error(cx, pkt, in_ip, Icmpv4Type::DstUnreachable, unreachable::PORT, [0; 4]);
                reject(cx, batch, i, m.flags);
                continue;
            }
            meta.next_hop = next_hop;
            meta.out_port = port;
            meta.flags.remove(PktFlags::L2_LOCAL);
            meta.flags |= PktFlags::ROUTED;
            meta.path_mtu = if too_big || !forwarded { 0 } else { mtu };
            // Decremented first (ip_forward), then fragmented (ip_output).
            if too_big && fragment(cx, pkt, mtu).is_err() {
                cx.drop(batch, i, DropReason::FragFailed);
                continue;
            }
            routed += 1;
            if TRACE {
                cx.trace_note(pkt, TraceNote::Port("routed out", port));
            }
        }
        cx.count_n(StageEvent::Routed, routed);
    }

    /// Generate an ICMP error about `pkt` (see the module docs) and queue it at this stage.
    fn icmp_error(
        &mut self,
        cx: &mut Context<'_>,
        pkt: PktId,
        src_ip: Ipv4Addr,
        kind: Icmpv4Type,
        code: u8,
        rest: [u8; 4],
    ) {
        let m = *cx.pool.meta(pkt);
        let l3 = usize::from(m.l3);
        let end = usize::from(m.head()) + usize::from(m.len());
        let (orig_src, tos, is_error, later_fragment, dst_bcast) = {
            let Some(b) = cx.pool.slot(pkt).get(l3..end) else { return };
            let Ok(ip) = Ipv4Packet::new_checked(b) else { return };
            let icmp_err = ip.protocol() == IpProtocol::Icmp
                && ip.payload().first().is_some_and(|t| Icmpv4Type::from(*t).is_error());
            (ip.src_addr(), ip.dscp_ecn(), icmp_err, ip.frag_offset() != 0, ip.dst_addr().is_broadcast())
        };
        let frag_needed = kind == Icmpv4Type::DstUnreachable && code == unreachable::FRAG_NEEDED;
        if is_error
            || later_fragment
            || dst_bcast
            || orig_src.is_unspecified()
            || orig_src.is_multicast()
            || orig_src.is_broadcast()
            || !(frag_needed || self.rate_allows(orig_src, cx.now))
        {
            cx.count(StageEvent::IcmpErrorSuppressed);
            return;
        }
        let quote_len = (end - l3).min(ICMP_ERROR_MAX - 20 - 8);
        let ident = u16::try_from(rand_core::RngCore::next_u32(cx.rng) & 0xffff).unwrap_or(0);
        let icmp_len = 8 + quote_len;
        let mut repr =
            Ipv4Repr::new(src_ip, orig_src, IpProtocol::Icmp, u16::try_from(icmp_len).unwrap_or(0), DEFAULT_TTL);
        repr.dscp_ecn = (tos & 0x1e) | 0xc0;
        repr.dont_frag = false;
        repr.ident = ident;
        // Copy the quote first (the source slot is another slot: no overlap).
        let mut quote = [0u8; ICMP_ERROR_MAX];
        if let (Some(dst), Some(src)) = (quote.get_mut(..quote_len), cx.pool.slot(pkt).get(l3..l3 + quote_len)) {
            dst.copy_from_slice(src);
        }
        let write = |ip: &mut [u8]| {
            repr.emit(ip).ok()?;
            let icmp = ip.get_mut(20..)?;
            icmp.get_mut(8..)?.copy_from_slice(quote.get(..quote_len)?);
            Icmpv4Repr { msg_type: kind, code, rest }.emit(icmp, Sum::new()).ok()
        };
        queue_icmp_error(cx, m.in_port, L3Kind::Ipv4, 20 + icmp_len, write);
    }
}

/// Build an ICMP or ICMPv6 error of `ip_len` bytes (IP header on), written by
/// `write_ip` after a zeroed Ethernet header (the neighbour stage writes it), and queue
/// it at this stage so it is routed back like any packet.
fn queue_icmp_error(
    cx: &mut Context<'_>,
    in_port: PortId,
    kind: L3Kind,
    ip_len: usize,
    write_ip: impl FnOnce(&mut [u8]) -> Option<()>,
) {
    let (ethertype, ip_hdr, proto) = if kind == L3Kind::Ipv6 { (0x86dd_u16, 40, 58) } else { (0x0800, 20, 1) };
    let built = cx.build(ethernet::HEADER_LEN + ip_len, |buf| {
        let (eth, ip) = buf.split_at_mut_checked(ethernet::HEADER_LEN)?;
        eth.fill(0);
        eth.get_mut(12..14)?.copy_from_slice(&ethertype.to_be_bytes());
        write_ip(ip)
    });
    let Some(q) = built else { return };
    let qm = cx.pool.meta_mut(q);
    qm.l3 = qm.l2 + 14;
    qm.l4 = qm.l3 + ip_hdr;
    qm.l3_kind = kind;
    qm.ip_proto = proto;
    qm.in_port = in_port;
    qm.flags = PktFlags::PARSED | PktFlags::HAS_L4 | PktFlags::L2_LOCAL;
    cx.count(StageEvent::IcmpErrorSent);
    let here = cx.stage_index();
    cx.inject(q, here);
}

/// Drop a packet the service stage marked for rejection (the ICMP error is queued
/// already), with the reason its flag names.
fn reject(cx: &mut Context<'_>, batch: &mut Batch, i: usize, flags: PktFlags) {
    cx.count(StageEvent::SvcRejected);
    let reason = if flags.contains(PktFlags::REJECT_NO_ENDPOINTS) {
        DropReason::SvcNoEndpoints
    } else {
        DropReason::SvcPortUnknown
    };
    cx.drop(batch, i, reason);
}

/// The metadata fields the route stage reads per packet.
#[derive(Clone, Copy)]
struct Hdr {
    in_port: PortId,
    l3: u16,
    flags: PktFlags,
}

/// Most fragments one packet is cut into.
pub const MAX_FRAGMENTS: usize = 128;

/// Cut the routed packet `pkt` (IPv4 at `meta.l3`, TTL already decremented) into
/// fragments that fit `mtu`, as Linux's `ip_do_fragment()` (byte-identical to a Linux
/// 6.18 capture: `core/tests/route.rs`): every fragment but the
/// last carries a multiple of 8 payload bytes, as many as fit; all keep the header
/// length, the first with all options and the others with only the options whose
/// "copied" bit is set (the rest become NOPs, `ip_options_fragment()`); ID, TTL and TOS
/// stay; MF is set on all but the last (and on the last too when the packet was itself
/// a non-final fragment); offsets add to the packet's own. The packet becomes the first
/// fragment and goes on; the others enter at the neighbour stage right after, in
/// order, so they leave in order.
///
/// # Errors
/// `Err(())` when buffers run out or more than [`MAX_FRAGMENTS`] would be needed;
/// fragments already made are freed, and the caller drops the packet.
#[allow(clippy::result_unit_err)]
pub fn fragment(cx: &mut Context<'_>, pkt: PktId, mtu: u16) -> Result<(), ()> {
    let m = *cx.pool.meta(pkt);
    let (head, l3) = (usize::from(m.head()), usize::from(m.l3));
    let end = head + usize::from(m.len());
    let l2_len = l3 - head;
    let (hlen, total, orig_off, orig_mf) = {
        let b = cx.pool.slot(pkt).get(l3..end).ok_or(())?;
        let ip = Ipv4Packet::new_checked(b).map_err(|_| ())?;
        (ip.header_len(), usize::from(ip.total_len()), ip.frag_offset(), ip.more_frags())
    };
    let per = (usize::from(mtu).saturating_sub(hlen)) & !7;
    let data = total - hlen;
    if per == 0 || data.div_ceil(per) > MAX_FRAGMENTS {
        return Err(());
    }
    // Header for the later fragments: non-copied options become NOPs.
    let mut later_hdr = [0u8; 60];
    if let (Some(d), Some(s)) = (later_hdr.get_mut(..hlen), cx.pool.slot(pkt).get(l3..l3 + hlen)) {
        d.copy_from_slice(s);
    }
    nop_uncopied_options(later_hdr.get_mut(20..hlen).unwrap_or(&mut []));
    let arp = cx.stage_index() + 1;
    let mut off = per;
    let mut made = 0usize;
    while off < data {
        let len = per.min(data - off);
        let last = off + len >= data;
        let Some(q) = cx.alloc() else { return Err(()) };
        let frame_len = l2_len + hlen + len;
        let payload_at = l3 + hlen + off;
        let mut tmp = [0u8; 2048];
        let src = cx.pool.slot(pkt);
        let filled = (|| {
            let t = tmp.get_mut(..frame_len)?;
            let (a, rest) = t.split_at_mut_checked(l2_len)?;
            let (b, c) = rest.split_at_mut_checked(hlen)?;
            a.copy_from_slice(src.get(head..l3)?);
            b.copy_from_slice(later_hdr.get(..hlen)?);
            c.copy_from_slice(src.get(payload_at..payload_at + len)?);
            Some(())
        })();
        let pushed = filled.is_some()
            && match (cx.pool.push_back(q, frame_len), tmp.get(..frame_len)) {
                (Ok(b), Some(t)) => {
                    b.copy_from_slice(t);
                    true
                }
                _ => false,
            };
        if !pushed {
            let _ = cx.pool.free(q);
            return Err(());
        }
        let qhead = usize::from(cx.pool.meta(q).head());
        {
            let (slot, qm) = cx.pool.slot_and_meta_mut(q);
            let l3q = qhead + l2_len;
            if let Some(b) = slot.get_mut(l3q..l3q + hlen) {
                let mut ip = Ipv4Packet::new_unchecked(b);
                ip.set_total_len(u16::try_from(hlen + len).unwrap_or(0));
                ip.set_flags_offset(false, !last || orig_mf, orig_off + u16::try_from(off).unwrap_or(0));
                ip.fill_checksum();
            }
            qm.inherit(&m);
            let h = u16::try_from(qhead).unwrap_or(0);
            qm.l2 = h;
            qm.l3 = h + u16::try_from(l2_len).unwrap_or(0);
            qm.l4 = 0;
        }
        cx.pool.meta_mut(q).flags |= PktFlags::FRAGMENT | PktFlags::LATER_FRAGMENT;
        cx.pool.meta_mut(q).flags.remove(PktFlags::HAS_L4 | PktFlags::TRACE);
        cx.inject(q, arp);
        made += 1;
        off += len;
    }
    // The packet itself becomes the first fragment.
    let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
    if let Some(b) = slot.get_mut(l3..l3 + hlen) {
        let mut ip = Ipv4Packet::new_unchecked(b);
        ip.set_total_len(u16::try_from(hlen + per).unwrap_or(0));
        ip.set_flags_offset(false, true, orig_off);
        ip.fill_checksum();
    }
    meta.trim(u16::try_from(l2_len + hlen + per).unwrap_or(0));
    meta.flags |= PktFlags::FRAGMENT;
    debug_assert!(made < MAX_FRAGMENTS);
    Ok(())
}

/// Replace options without the "copied" flag (0x80 in the type) with NOPs, as Linux's
/// `ip_options_fragment()`; EOL ends the list.
fn nop_uncopied_options(opts: &mut [u8]) {
    let mut i = 0;
    while let Some(&t) = opts.get(i) {
        match t {
            0 => break,
            1 => i += 1,
            _ => {
                let len = usize::from(opts.get(i + 1).copied().unwrap_or(0)).max(2);
                if t & 0x80 == 0 {
                    for b in opts.iter_mut().skip(i).take(len) {
                        *b = 1;
                    }
                }
                i += len;
            }
        }
    }
}

/// The path of `paths` with the highest weight for the flow (see
/// [`RouteStage::pick_path`]).
fn rendezvous<A: Copy>(
    paths: &[(A, PortId, u64)],
    flow: &crate::wire::flow::FlowKey,
    fragment: bool,
) -> Option<(A, PortId)> {
    let mut key = *flow;
    if fragment {
        key.src_port = 0;
        key.dst_port = 0;
    }
    let h = key.symmetric_hash(0x6563_6d70);
    paths.iter().max_by_key(|(_, _, k)| splitmix(h ^ k)).map(|(gw, p, _)| (*gw, *p))
}

/// A path's identity for rendezvous hashing: the gateway (an IPv4 address as the low
/// 32 bits) and the port.
fn path_key(gw: u128, port: PortId) -> u64 {
    let [hi, lo] = [(gw >> 64), gw & u128::from(u64::MAX)].map(|h| u64::try_from(h).unwrap_or(0));
    let folded = lo ^ splitmix(hi);
    splitmix((folded << 16) ^ (folded >> 48) ^ u64::from(port.0))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const ICMP_PER_SEC: u64 = 1000;
/// `icmp_ratelimit`: one message per second per destination...
pub(crate) const PEER_COST_MS: u64 = 1000;
/// Destinations tracked for the per-destination limit.
const PEERS_MAX: usize = 4096;
const ICMP_BURST: u64 = 50;

impl Stage for RouteStage {
    fn name(&self) -> &'static str {
        "route"
    }

    fn skips_final_batches(&self) -> bool {
        true
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        if cx.tracing() { self.run::<true>(cx, batch) } else { self.run::<false>(cx, batch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_fragments_keep_only_copied_options() {
        // Router alert (0x94, copied), record route (0x07, not copied), EOL.
        let mut o = [0x94, 4, 0, 0, 0x07, 7, 4, 0, 0, 0, 0, 0];
        nop_uncopied_options(&mut o);
        assert_eq!(o, [0x94, 4, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0]);
        // A length byte of 0 or 1 cannot stall the walk.
        let mut bad = [0x07, 0, 0x07, 1];
        nop_uncopied_options(&mut bad);
        assert_eq!(bad, [1, 1, 1, 1]);
    }
}
