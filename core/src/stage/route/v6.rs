//! IPv6 forwarding in the route stage, as Linux's `ip6_route_input()` and
//! `ip6_forward()` do it, and the ICMPv6 errors a router sends (`icmp6_send()`).
//!
//! Per packet, in Linux's order: the lookup (no route and unreachable routes →
//! destination unreachable code 0 "no route", prohibit → code 1, blackhole → silent);
//! a source that must never be forwarded (unspecified, multicast, loopback) → dropped;
//! a link-local source → destination unreachable code 2 "beyond scope"; hop limit ≤ 1
//! → time exceeded code 0; larger than the egress MTU → packet too big with the MTU
//! (routers never fragment IPv6, RFC 8200 5); then the hop limit is decremented (no
//! header checksum in IPv6) and the neighbour stage resolves the next hop by NDP.
//! Neighbour discovery messages (ICMPv6 133..=137) are left to the neighbour stage.
//!
//! # ICMPv6 errors, checked against Linux 6.18 in network namespaces
//! Traffic class 0, hop limit 64, source = the IPv6 address of the interface the
//! packet came in on, the quote = the offending packet from its IPv6 header, cut so the
//! error is at most 1280 bytes (RFC 4443 2.4(c)). None about an ICMPv6 error, from an
//! unspecified or multicast source, or to a multicast destination (packet too big
//! excepted; RFC 4443 2.4(e)). Rate limits: the global bucket the IPv4 errors use
//! (Linux shares `icmp_global_allow`), and per destination `icmpv6_time` = 1 s scaled
//! down by the length of the route to it (`tmo >>= (128 - plen) >> 5`, so 250 ms for a
//! /64), bursts of 6; packet too big is never limited (`icmpv6_xrlim_allow`).
//!
//! Differences from Linux on purpose: the flow label of an error is 0 (Linux hashes
//! one, `auto_flowlabels`; RFC 6437 allows 0), so errors are reproducible byte for
//! byte.

use std::net::{IpAddr, Ipv6Addr};

use super::{Hdr, L3If, RouteStage, queue_icmp_error};
use crate::buf::{Batch, L3Kind, PktFlags, PktId, PortId};
use crate::pipeline::{Context, DropReason, StageEvent, TraceNote};
use crate::wire::checksum::pseudo_v6;
use crate::wire::icmpv6::{Icmpv6Repr, Icmpv6Type};
use crate::wire::ip::IpProtocol;
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};

/// Where an IPv6 route sends packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextHop6 {
    /// On-link through the interface on `PortId`.
    Connected(PortId),
    /// Through the gateway (often a link-local address), on the interface on `PortId`.
    Via(Ipv6Addr, PortId),
    /// ECMP: one of the paths of group `u16` in `RouteConfig::multipath6`, chosen per
    /// flow as for IPv4 (rendezvous hashing over the symmetric flow hash).
    Multipath(u16),
    /// One of the node's addresses: deliver to the host.
    Local,
    /// Drop silently.
    Blackhole,
    /// Drop with ICMPv6 destination unreachable, code 0 (Linux's `ip6_pkt_discard`).
    Unreachable,
    /// Drop with ICMPv6 destination unreachable, code 1 (administratively prohibited).
    Prohibit,
}

/// An IPv6 route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec6 {
    /// Destination prefix.
    pub dst: Ipv6Addr,
    /// Prefix length.
    pub len: u8,
    /// Where it goes.
    pub next_hop: NextHop6,
}

/// Hop limit of packets the node originates (`net.ipv6.conf.*.hop_limit`).
pub const DEFAULT_HOP_LIMIT: u8 = 64;
/// Largest ICMPv6 error: the IPv6 minimum MTU (RFC 4443 2.4(c)).
pub const ICMPV6_ERROR_MAX: usize = 1280;

/// ICMPv6 destination unreachable codes (RFC 4443 3.1).
pub mod unreachable6 {
    /// No route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Beyond scope of source address.
    pub const BEYOND_SCOPE: u8 = 2;
    /// Port unreachable.
    pub const PORT: u8 = 4;
}

/// The EUI-64 link-local address Linux gives an interface with `mac`
/// (`addr_gen_mode` 0): fe80::, the MAC split by ff:fe, universal/local bit flipped.
pub fn link_local(mac: crate::wire::EthernetAddress) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]])
}

/// True for fe80::/10.
pub(crate) fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// True for an ICMPv6 neighbour discovery message (router/neighbour solicitation and
/// advertisement, redirect): the neighbour stage's business.
pub(crate) fn is_nd(icmp_type: Option<u8>) -> bool {
    matches!(icmp_type, Some(133..=137))
}

/// The fields of the IPv6 header and first ICMPv6 byte the forwarding path reads.
struct V6 {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop: u8,
    total: usize,
    icmp_type: Option<u8>,
}

fn read_v6(cx: &Context<'_>, pkt: PktId, l3: usize) -> Option<V6> {
    let m = cx.pool.meta(pkt);
    let b = cx.pool.slot(pkt).get(l3..)?;
    let ip = Ipv6Packet::new_checked(b).ok()?;
    let icmp_type = if m.ip_proto == 58 && m.flags.contains(PktFlags::HAS_L4) {
        cx.pool.slot(pkt).get(usize::from(m.l4)).copied()
    } else {
        None
    };
    Some(V6 {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        hop: ip.hop_limit(),
        total: ipv6::HEADER_LEN + usize::from(ip.payload_len()),
        icmp_type,
    })
}

impl RouteStage {
    /// The IPv6 forwarding decision for `dst` (for tests and the CLI).
    pub fn lookup6(&self, dst: Ipv6Addr) -> Option<(u8, NextHop6)> {
        self.fib6.lookup(u128::from(dst))
    }

    /// Forward the IPv6 packet at `i` (see the module docs). `in_if` is the interface
    /// it came in on.
    pub(super) fn forward6<const TRACE: bool>(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut Batch,
        i: usize,
        m: Hdr,
        in_if: Option<(Ipv6Addr, PortId)>,
    ) {
        let pkt = batch.pkt(i);
        let l3 = usize::from(m.l3);
        let Some(h) = read_v6(cx, pkt, l3) else { return };
        if is_nd(h.icmp_type) && h.hop == 255 {
            return; // the neighbour stage's
        }
        if m.flags.contains(PktFlags::L2_MULTI) || h.dst.is_multicast() {
            // Multicast (MLD, router solicitations...): the node's stack's business.
            batch.deliver_host(i);
            return;
        }
        let Some((in_ip, in_port)) = in_if else { return };
        let forwarded = !m.flags.contains(PktFlags::GENERATED);
        // Link-local scope is the link: an error the node makes for a link-local
        // sender goes back out the interface it came in on; forwarding one is not done.
        let lookup = if is_link_local(h.dst) {
            if forwarded {
                cx.drop(batch, i, DropReason::BeyondScope);
                return;
            }
            Some((128, NextHop6::Connected(in_port)))
        } else {
            self.fib6.lookup(u128::from(h.dst))
        };
        let Some((_, hop)) = lookup else {
            self.icmp6_error(cx, pkt, (in_ip, in_port), Icmpv6Type::DstUnreachable, unreachable6::NO_ROUTE, [0; 4]);
            cx.drop(batch, i, DropReason::NoRoute);
            return;
        };
        let (next_hop, port) = match hop {
            // A reject for the node's own address runs in the input hook.
            NextHop6::Local if m.flags.intersects(PktFlags::REJECT_NO_ENDPOINTS | PktFlags::REJECT_UNKNOWN_PORT) => {
                self.icmp6_error(cx, pkt, (in_ip, in_port), Icmpv6Type::DstUnreachable, unreachable6::PORT, [0; 4]);
                super::reject(cx, batch, i, m.flags);
                return;
            }
            NextHop6::Local => {
                batch.deliver_host(i);
                return;
            }
            NextHop6::Blackhole => {
                cx.drop(batch, i, DropReason::RouteBlackhole);
                return;
            }
            NextHop6::Unreachable => {
                self.icmp6_error(cx, pkt, (in_ip, in_port), Icmpv6Type::DstUnreachable, unreachable6::NO_ROUTE, [0; 4]);
                cx.drop(batch, i, DropReason::RouteUnreachable);
                return;
            }
            NextHop6::Prohibit => {
                self.icmp6_error(
                    cx,
                    pkt,
                    (in_ip, in_port),
                    Icmpv6Type::DstUnreachable,
                    unreachable6::ADMIN_PROHIBITED,
                    [0; 4],
                );
                cx.drop(batch, i, DropReason::RouteProhibit);
                return;
            }
            NextHop6::Connected(p) => (h.dst, p),
            NextHop6::Via(gw, p) => (gw, p),
            NextHop6::Multipath(g) => {
                let frag = m.flags.contains(PktFlags::FRAGMENT);
                let flow = cx.pool.meta(pkt).flow;
                match self.pick_path6(g, &flow, frag) {
                    Some(path) => path,
                    None => {
                        cx.drop(batch, i, DropReason::RouteBlackhole);
                        return;
                    }
                }
            }
        };
        if forwarded {
            if h.src.is_unspecified() || h.src.is_multicast() || h.src.is_loopback() {
                cx.drop(batch, i, DropReason::Ipv6BadSource);
                return;
            }
            if is_link_local(h.src) {
                self.icmp6_error(
                    cx,
                    pkt,
                    (in_ip, in_port),
                    Icmpv6Type::DstUnreachable,
                    unreachable6::BEYOND_SCOPE,
                    [0; 4],
                );
                cx.drop(batch, i, DropReason::BeyondScope);
                return;
            }
            if h.hop <= 1 {
                self.icmp6_error(cx, pkt, (in_ip, in_port), Icmpv6Type::TimeExceeded, 0, [0; 4]);
                cx.drop(batch, i, DropReason::TtlExceeded);
                return;
            }
        }
        let mtu = self.iface(port).map_or(1500, |f| f.mtu);
        if h.total > usize::from(mtu) {
            let b = u32::from(mtu).to_be_bytes();
            self.icmp6_error(cx, pkt, (in_ip, in_port), Icmpv6Type::PacketTooBig, 0, b);
            cx.drop(batch, i, DropReason::PacketTooBig);
            return;
        }
        if forwarded && let Some(b) = cx.pool.slot_mut(pkt).get_mut(l3..l3 + ipv6::HEADER_LEN) {
            Ipv6Packet::new_unchecked(b).set_hop_limit(h.hop - 1);
        }
        // kube-proxy's reject runs in the forward hook, after ip6_forward() has
        // checked and decremented the hop limit (as for IPv4).
        if m.flags.intersects(PktFlags::REJECT_NO_ENDPOINTS | PktFlags::REJECT_UNKNOWN_PORT) {
            self.icmp6_error(cx, pkt, (in_ip, in_port), Icmpv6Type::DstUnreachable, unreachable6::PORT, [0; 4]);
            super::reject(cx, batch, i, m.flags);
            return;
        }
        let meta = cx.pool.meta_mut(pkt);
        meta.next_hop6 = next_hop;
        meta.out_port = port;
        meta.flags.remove(PktFlags::L2_LOCAL);
        meta.flags |= PktFlags::ROUTED;
        cx.count(StageEvent::Routed);
        if TRACE {
            cx.trace_note(pkt, TraceNote::Port("routed out", port));
        }
    }

    /// The per-destination ICMPv6 limit: `icmpv6_time` (1 s) scaled by the length of
    /// the route to `dst`, as `icmpv6_xrlim_allow()`.
    fn cost6(&self, dst: Ipv6Addr) -> u64 {
        let plen = self.fib6.lookup(u128::from(dst)).map_or(0, |(l, _)| u32::from(l));
        super::PEER_COST_MS >> ((128 - plen.min(128)) >> 5)
    }

    /// Generate an ICMPv6 error about `pkt` (see the module docs) and queue it at this
    /// stage, so it is routed back like any packet.
    fn icmp6_error(
        &mut self,
        cx: &mut Context<'_>,
        pkt: PktId,
        in_if: (Ipv6Addr, PortId),
        kind: Icmpv6Type,
        code: u8,
        rest: [u8; 4],
    ) {
        let m = *cx.pool.meta(pkt);
        let l3 = usize::from(m.l3);
        let end = usize::from(m.head()) + usize::from(m.len());
        let Some(h) = read_v6(cx, pkt, l3) else { return };
        // Source address selection (RFC 6724 rule 2, prefer the matching scope): the
        // interface's link-local address toward a link-local sender, else its address.
        let src_ip =
            if is_link_local(h.src) { self.iface(in_if.1).map_or(in_if.0, |f| link_local(f.mac)) } else { in_if.0 };
        let is_error = h.icmp_type.is_some_and(|t| t < 128);
        let too_big = kind == Icmpv6Type::PacketTooBig;
        let suppressed = is_error
            || h.src.is_unspecified()
            || h.src.is_multicast()
            || (h.dst.is_multicast() && !too_big)
            || !(too_big || {
                let cost = self.cost6(h.src);
                self.icmp_allowed(cx.now) && self.peer_allowed_cost(IpAddr::V6(h.src), cost, cx.now)
            });
        if suppressed {
            cx.count(StageEvent::IcmpErrorSuppressed);
            return;
        }
        let quote_len = end.saturating_sub(l3).min(h.total).min(ICMPV6_ERROR_MAX - ipv6::HEADER_LEN - 8);
        let icmp_len = 8 + quote_len;
        let mut quote = [0u8; ICMPV6_ERROR_MAX];
        if let (Some(d), Some(s)) = (quote.get_mut(..quote_len), cx.pool.slot(pkt).get(l3..l3 + quote_len)) {
            d.copy_from_slice(s);
        }
        let repr = Ipv6Repr {
            src: src_ip,
            dst: h.src,
            next_header: IpProtocol::Icmpv6,
            payload_len: u16::try_from(icmp_len).unwrap_or(0),
            hop_limit: DEFAULT_HOP_LIMIT,
            traffic_class: 0,
            flow_label: 0,
        };
        let write = |ip: &mut [u8]| {
            repr.emit(ip).ok()?;
            let icmp = ip.get_mut(ipv6::HEADER_LEN..)?;
            icmp.get_mut(8..)?.copy_from_slice(quote.get(..quote_len)?);
            let pseudo = pseudo_v6(src_ip, h.src, 58, u32::try_from(icmp_len).ok()?);
            Icmpv6Repr { msg_type: kind, code, rest }.emit(icmp, pseudo).ok()
        };
        queue_icmp_error(cx, m.in_port, L3Kind::Ipv6, ipv6::HEADER_LEN + icmp_len, write);
    }
}

/// The interface's IPv6 address (the source of errors) and port.
pub(super) fn if_addr6(f: &L3If) -> Option<(Ipv6Addr, PortId)> {
    f.ip6.map(|(a, _)| (a, f.port))
}
