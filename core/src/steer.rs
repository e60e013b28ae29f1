//! Which worker a frame belongs to by its flow, so that both directions of every
//! connection meet on one worker's connection tracking.
//!
//! A multiqueue TAP spreads the frames the kernel sends by a symmetric flow hash, and
//! then by what it learned: `tun_get_user()` records "this flow's hash → the queue
//! that wrote it" (`tun_flow_update()`) for each frame podplane writes. Two cases
//! escape that:
//!
//! - Encapsulated traffic. A VXLAN or IPIP frame on the uplink is spread by its
//!   *outer* flow, a pod's reply by the *inner* one: the two directions of one pod
//!   connection are hashed on different headers.
//! - A flow's first reply. `tun_flow_update()` runs after `netif_receive_skb()` has
//!   delivered the frame, so a pod whose stack answers at once (a SYN-ACK, an echo
//!   reply) sends before the kernel has learned anything: the answer takes the
//!   hash-spread queue, not the one the request came in on.
//!
//! A reply that reaches a worker without the connection is INVALID there (a SYN-ACK
//! with no entry, as in `nf_conntrack_proto_tcp.c`) and dropped: measured on two
//! podplane nodes joined by VXLAN, node 1 with two workers, 29 such drops in a run of
//! 18 TCP connections, and a connect that waited for the SYN-ACK's retransmission a
//! second later. So every frame that no NAT rule names a worker for goes to the
//! worker of its flow: a symmetric hash of its endpoints (the inner packet's for
//! VXLAN or IPIP to the node, the quoted packet's for an ICMP error), the same on
//! every worker. Once the owner writes a frame of the flow, the kernel's learning
//! sends the rest of the pod's side there on its own; over VXLAN between podplane
//! nodes the outer source port is a symmetric hash of the inner flow too, so the
//! uplink learns the same way.
//!
//! Fragments are steered by their addresses and protocol only (the later ones carry
//! no ports), as the kernel's own flow hash does (`__skb_flow_dissect()` stops at a
//! fragment unless asked to parse the first).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::stage::overlay::{Encap, OverlayConfig};
use crate::wire::flow::FlowKey;

/// Encapsulated traffic for the node, which steering looks inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// VXLAN: UDP to `port` at one of the node's underlay addresses.
    Vxlan {
        /// The VXLAN UDP port.
        port: u16,
        /// The IPv4 underlay address.
        local: Ipv4Addr,
        /// The IPv6 underlay address, if any.
        local6: Option<Ipv6Addr>,
    },
    /// IPIP: IPv4 protocol 4 to the underlay address.
    Ipip {
        /// The IPv4 underlay address.
        local: Ipv4Addr,
    },
}

impl Tunnel {
    /// What arrives encapsulated for a node with overlay `cfg`.
    pub fn of(cfg: &OverlayConfig) -> Self {
        match cfg.encap {
            Encap::Vxlan { port, .. } => Tunnel::Vxlan { port, local: cfg.local_ip, local6: cfg.local_ip6 },
            Encap::Ipip => Tunnel::Ipip { local: cfg.local_ip },
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(*b.get(at..)?.first_chunk::<2>()?))
}

fn v4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(*b.get(at..)?.first_chunk::<4>()?))
}

fn v6(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    Some(Ipv6Addr::from(*b.get(at..)?.first_chunk::<16>()?))
}

/// The worker of Ethernet frame `frame` among `workers` by its flow (see the module
/// docs); `None` for a frame without an IP flow (ARP, a truncated header).
pub fn flow_owner(frame: &[u8], tunnel: Option<&Tunnel>, workers: usize) -> Option<usize> {
    let key = frame_key(frame, tunnel)?;
    let w = u64::try_from(workers.max(1)).ok()?;
    // The cheap symmetric hash VXLAN source ports use (one multiply), scaled by its
    // high half as the kernel's `reciprocal_scale()` does: its low bits follow the
    // endpoints' low bits alone.
    usize::try_from(((key.spread_hash() >> 32) * w) >> 32).ok()
}

/// The flow key steering uses for an Ethernet frame (one VLAN tag allowed).
fn frame_key(frame: &[u8], tunnel: Option<&Tunnel>) -> Option<FlowKey> {
    let (ethertype, ip) = match be16(frame, 12)? {
        0x8100 => (be16(frame, 16)?, frame.get(18..)?),
        t => (t, frame.get(14..)?),
    };
    match ethertype {
        0x0800 => key4(ip, tunnel, true),
        0x86dd => key6(ip, tunnel, true),
        _ => None,
    }
}

/// The ports of a transport header `l4` of protocol `proto` (ICMP echo: the
/// identifier for both, as conntrack keys it), or zeros.
fn ports(proto: u8, l4: &[u8]) -> (u16, u16) {
    match proto {
        6 | 17 | 132 | 136 => (be16(l4, 0).unwrap_or(0), be16(l4, 2).unwrap_or(0)),
        // Echo request/reply (ICMP 8/0, ICMPv6 128/129): the identifier.
        1 | 58 if matches!(l4.first(), Some(0 | 8 | 128 | 129)) => {
            let id = be16(l4, 4).unwrap_or(0);
            (id, id)
        }
        _ => (0, 0),
    }
}

/// The steering key of an IPv4 packet: the inner packet's when it is tunnelled to the
/// node (`tunnel`), the quoted packet's for an ICMP error (`outer`: not inside a
/// quote already).
fn key4(ip: &[u8], tunnel: Option<&Tunnel>, outer: bool) -> Option<FlowKey> {
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if *ip.first()? >> 4 != 4 || ihl < 20 {
        return None;
    }
    let (src, dst, proto) = (v4(ip, 12)?, v4(ip, 16)?, *ip.get(9)?);
    // A fragment (MF or an offset): addresses and protocol only.
    if be16(ip, 6)? & 0x3fff != 0 {
        return Some(FlowKey::v4(src, dst, proto, 0, 0));
    }
    let l4 = ip.get(ihl..)?;
    match (tunnel, proto) {
        (Some(Tunnel::Vxlan { port, local, .. }), 17) if dst == *local && be16(l4, 2) == Some(*port) => {
            if let Some(k) = frame_key(l4.get(16..)?, None) {
                return Some(k);
            }
        }
        (Some(Tunnel::Ipip { local }), 4) if dst == *local => {
            if let Some(k) = key4(l4, None, true) {
                return Some(k);
            }
        }
        _ => {}
    }
    // ICMP errors: destination unreachable, source quench, redirect, time exceeded,
    // parameter problem go with the connection they quote.
    if outer && proto == 1 && matches!(l4.first(), Some(3 | 4 | 5 | 11 | 12)) {
        return key4(l4.get(8..)?, None, false);
    }
    let (sp, dp) = ports(proto, l4);
    Some(FlowKey::v4(src, dst, proto, sp, dp))
}

/// The steering key of an IPv6 packet (see [`key4`]). Extension headers are not
/// walked: such a packet goes by its addresses alone.
fn key6(ip: &[u8], tunnel: Option<&Tunnel>, outer: bool) -> Option<FlowKey> {
    if *ip.first()? >> 4 != 6 {
        return None;
    }
    let (src, dst, next) = (v6(ip, 8)?, v6(ip, 24)?, *ip.get(6)?);
    let l4 = ip.get(40..)?;
    if let (Some(Tunnel::Vxlan { port, local6: Some(local6), .. }), 17) = (tunnel, next)
        && dst == *local6
        && be16(l4, 2) == Some(*port)
        && let Some(k) = frame_key(l4.get(16..)?, None)
    {
        return Some(k);
    }
    // ICMPv6 errors (types 1-4) go with the connection they quote.
    if outer && next == 58 && matches!(l4.first(), Some(1..=4)) {
        return key6(l4.get(8..)?, None, false);
    }
    if !matches!(next, 6 | 17 | 58 | 132 | 136) {
        return Some(FlowKey::v6(src, dst, 0, 0, 0));
    }
    let (sp, dp) = ports(next, l4);
    Some(FlowKey::v6(src, dst, next, sp, dp))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::testutil::{icmp4_echo, icmp4_frag_needed_unchecked, tcp4, udp4, udp6};
    use crate::wire::tcp::TcpFlags;

    const NODE1: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);
    const NODE2: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 12);

    fn vxlan() -> Tunnel {
        Tunnel::Vxlan { port: 8472, local: NODE1, local6: None }
    }

    /// `inner` (an Ethernet frame) in VXLAN from node 2 to node 1, outer source port
    /// `sport`.
    fn in_vxlan(inner: &[u8], sport: u16) -> Vec<u8> {
        let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        payload.extend_from_slice(inner);
        udp4(NODE2, NODE1, sport, 8472, &payload)
    }

    /// `inner` (an Ethernet frame's IPv4 packet) in IPIP from node 2 to node 1.
    fn in_ipip(inner: &[u8]) -> Vec<u8> {
        let mut f = udp4(NODE2, NODE1, 1, 1, b"");
        f.truncate(34);
        f.extend_from_slice(&inner[14..]);
        f[23] = 4;
        let total = u16::try_from(f.len() - 14).unwrap();
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f
    }

    fn owner_of(f: &[u8], tunnel: Option<&Tunnel>) -> usize {
        flow_owner(f, tunnel, 8).unwrap()
    }

    #[test]
    fn both_directions_of_a_pod_connection_meet_whatever_carries_them() {
        let (a, b) = (Ipv4Addr::new(10, 244, 2, 2), Ipv4Addr::new(10, 244, 1, 2));
        let t = vxlan();
        let mut seen = [0usize; 8];
        for k in 0..64u16 {
            let sport = 40000 + k;
            let syn = tcp4(a, b, sport, 5400, TcpFlags::SYN, b"");
            let synack = tcp4(b, a, 5400, sport, TcpFlags::SYN | TcpFlags::ACK, b"");
            let w = owner_of(&syn, Some(&t));
            assert_eq!(owner_of(&synack, Some(&t)), w, "the reply, as the pod sends it");
            // The request as it arrives on the uplink, whatever outer port the other
            // node chose: the inner flow decides.
            for outer in [32768, 50000 + k] {
                assert_eq!(owner_of(&in_vxlan(&syn, outer), Some(&t)), w, "VXLAN from port {outer}");
            }
            let ipip = Tunnel::Ipip { local: NODE1 };
            assert_eq!(owner_of(&in_ipip(&syn), Some(&ipip)), w, "IPIP");
            seen[w] += 1;
        }
        assert!(seen.iter().all(|&n| n > 2), "flows spread over the workers: {seen:?}");
        // Two workers: the source port alone spreads them too.
        let on_0 = (0..64u16)
            .filter(|k| flow_owner(&tcp4(a, b, 40000 + k, 5400, TcpFlags::SYN, b""), None, 2) == Some(0))
            .count();
        assert!((16..=48).contains(&on_0), "{on_0} of 64 flows on worker 0");
        // Not for the node, or not the tunnel's port: the outer packet is the flow.
        let syn = tcp4(a, b, 40000, 5400, TcpFlags::SYN, b"");
        let to_other = {
            let mut f = in_vxlan(&syn, 33333);
            f[30..34].copy_from_slice(&Ipv4Addr::new(192, 168, 0, 13).octets());
            f
        };
        let outer_key = frame_key(&to_other, Some(&t)).unwrap();
        assert_eq!(outer_key.dst_port, 8472);
        assert_eq!(frame_key(&in_vxlan(&syn, 33333), None).unwrap().dst_port, 8472, "no tunnel configured");
    }

    #[test]
    fn echo_errors_and_fragments_go_with_their_flow() {
        let (a, b) = (Ipv4Addr::new(10, 244, 2, 2), Ipv4Addr::new(10, 244, 1, 2));
        let req = icmp4_echo(a, b, 7, 1);
        let mut reply = icmp4_echo(b, a, 7, 1);
        reply[34] = 0;
        assert_eq!(frame_key(&req, None), frame_key(&reply, None).map(|k| k.reversed()));
        assert_eq!(frame_key(&req, None).unwrap().src_port, 7);
        // A router's error about b's UDP datagram to a: with the datagram's flow.
        let dgram = udp4(b, a, 5353, 53, b"q");
        let err = icmp4_frag_needed_unchecked(Ipv4Addr::new(10, 244, 9, 1), b, &dgram);
        assert_eq!(frame_key(&err, None), frame_key(&dgram, None));
        for w in 2..9 {
            assert_eq!(flow_owner(&err, None, w), flow_owner(&udp4(a, b, 53, 5353, b"a"), None, w));
        }
        // Fragments: addresses and protocol, both the first and a later one.
        let mut first = udp4(a, b, 5353, 53, &[0; 64]);
        first[20] = 0x20; // MF
        let mut later = first.clone();
        later[20] = 0x00;
        later[21] = 9; // offset 72
        assert_eq!(frame_key(&first, None), Some(FlowKey::v4(a, b, 17, 0, 0)));
        assert_eq!(frame_key(&later, None), frame_key(&first, None));
    }

    #[test]
    fn ipv6_flows_and_what_carries_no_flow() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00::2:2".parse().unwrap(), "fd00::1:2".parse().unwrap());
        let q = udp6(a, b, 4000, 53, b"q");
        let r = udp6(b, a, 53, 4000, b"r");
        assert_eq!(flow_owner(&q, None, 8), flow_owner(&r, None, 8));
        assert_eq!(frame_key(&q, None), Some(FlowKey::v6(a, b, 17, 4000, 53)));
        // A pod's datagram in VXLAN over an IPv6 underlay: its inner flow.
        let (n1, n2): (Ipv6Addr, Ipv6Addr) = ("fd99::11".parse().unwrap(), "fd99::12".parse().unwrap());
        let t6 = Tunnel::Vxlan { port: 8472, local: NODE1, local6: Some(n1) };
        let inner = udp4(Ipv4Addr::new(10, 244, 2, 2), Ipv4Addr::new(10, 244, 1, 2), 4000, 53, b"q");
        let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        payload.extend_from_slice(&inner);
        let outer = udp6(n2, n1, 40000, 8472, &payload);
        assert_eq!(frame_key(&outer, Some(&t6)), frame_key(&inner, None));
        assert_eq!(frame_key(&outer, Some(&vxlan())).unwrap().dst_port, 8472, "no IPv6 underlay address");
        let arp = crate::testutil::arp_request(NODE1, NODE2);
        assert_eq!(flow_owner(&arp, Some(&vxlan()), 8), None);
        assert_eq!(flow_owner(&q[..40], None, 8), None, "cut short");
    }
}
