//! The `encap` stage: wraps packets the route stage sent to the tunnel port, in place,
//! for the peer their next hop names (see the [overlay docs](super)).

use std::net::Ipv4Addr;

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

use super::{Encap, OUTER_ETH_IP, OverlayConfig, OverlayPeer};
use crate::buf::{Batch, L3Kind, PktFlags, PktId};
use crate::pipeline::{Context, DropReason, Stage, StageEvent};
use crate::wire::checksum::{Sum, fold32, pseudo_v4};
use crate::wire::flow::FlowKey;

/// See the [module docs](self).
#[derive(Debug)]
pub struct EncapStage {
    cfg: OverlayConfig,
    peers: HashMap<Ipv4Addr, Prepared, FxBuildHasher>,
}

/// A peer with its outer headers written out once (VPP's rewrite string): per packet
/// they are copied and the lengths, ID, ECN, checksums and source port patched. This
/// took the encapsulation from 490 to about 150 instructions per packet (callgrind).
#[derive(Clone, Copy, Debug)]
struct Prepared {
    peer: OverlayPeer,
    /// Outer Ethernet (MACs left to the neighbour stage), IPv4, and for VXLAN the UDP
    /// and VXLAN headers and the inner Ethernet header: 64 bytes (IPIP uses 34).
    header: [u8; 64],
    /// The one's-complement sum of the template's IPv4 header (its zero TOS, length
    /// and ID words left out), so that the checksum needs only the patched words.
    ip_sum: u32,
    /// Over an IPv6 underlay: outer Ethernet, IPv6, UDP, VXLAN and inner Ethernet (84
    /// bytes), and the sum of the UDP checksum's fixed part (the pseudo-header's
    /// addresses and next header, the destination port and the VXLAN header).
    header6: Option<([u8; 84], u32)>,
}

/// ECN of the outer header from the inner TOS (RFC 6040 normal mode, Linux's
/// `INET_ECN_encapsulate`): copied, but CE becomes ECT(0).
fn outer_ecn(inner_tos: u8) -> u8 {
    match inner_tos & 3 {
        3 => 2,
        e => e,
    }
}

/// Linux's `udp_flow_src_port()`: the flow hash scaled into `lo..=hi`.
fn src_port(hash: u64, lo: u16, hi: u16) -> u16 {
    let span = u64::from(hi.saturating_sub(lo));
    let h = hash >> 32;
    u16::try_from(((h * span) >> 32) + u64::from(lo)).unwrap_or(lo)
}

/// Move the start of `pkt` (now at `head`) to `written` bytes before its inner IP
/// header at `l3`, growing into the headroom, or shrinking when a VLAN tag or more
/// stood in front; returns the new start.
fn start_at(cx: &mut Context<'_>, pkt: PktId, head: usize, l3: usize, written: usize) -> Result<usize, DropReason> {
    let new_head = l3.checked_sub(written).ok_or(DropReason::EncapNoHeadroom)?;
    let moved = if new_head > head {
        cx.pool.pull_front(pkt, new_head - head)
    } else {
        cx.pool.push_front(pkt, head - new_head).map(|_| ())
    };
    moved.map(|()| new_head).map_err(|_| DropReason::EncapNoHeadroom)
}

/// The fixed part of `peer`'s outer headers.
fn prepare(cfg: &OverlayConfig, peer: OverlayPeer) -> Prepared {
    let [s0, s1, s2, s3] = cfg.local_ip.octets();
    let [d0, d1, d2, d3] = peer.node_ip.octets();
    let (proto, ttl, df) = match cfg.encap {
        Encap::Vxlan { .. } => (17, cfg.ttl, if cfg.dont_fragment { 0x40 } else { 0 }),
        // Per packet for IPIP (ttl inherit, DF copied).
        Encap::Ipip => (4, 0, 0),
    };
    let ([a, b, c, d, e, f], [g, hh, i, j, k, l]) = (peer.vtep_mac.0, cfg.vtep_mac.0);
    let (port, vni) = match cfg.encap {
        Encap::Vxlan { port, vni, .. } => (port.to_be_bytes(), vni.to_be_bytes()),
        Encap::Ipip => ([0, 0], [0; 4]),
    };
    let header = [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00, // outer Ethernet
        0x45, 0, 0, 0, 0, 0, df, 0, ttl, proto, 0, 0, s0, s1, s2, s3, d0, d1, d2, d3, // IPv4
        0, 0, port[0], port[1], 0, 0, 0, 0, // UDP
        0x08, 0, 0, 0, vni[1], vni[2], vni[3], 0, // VXLAN
        a, b, c, d, e, f, g, hh, i, j, k, l, 0x08, 0x00, // inner Ethernet
    ];
    let ip_sum = header
        .get(14..34)
        .map(|ip| {
            ip.chunks_exact(2).filter_map(|w| w.first_chunk::<2>()).map(|w| u32::from(u16::from_be_bytes(*w))).sum()
        })
        .unwrap_or(0);
    let header6 = match (peer.underlay6, cfg.local_ip6, &cfg.encap) {
        (Some((dst, _)), Some(src), Encap::Vxlan { port, vni, .. }) => {
            let mut h = [0u8; 84];
            h[12] = 0x86;
            h[13] = 0xdd;
            h[14] = 0x60;
            h[20] = 17;
            h[21] = cfg.ttl;
            h[22..38].copy_from_slice(&src.octets());
            h[38..54].copy_from_slice(&dst.octets());
            h[56..58].copy_from_slice(&port.to_be_bytes());
            let v = vni.to_be_bytes();
            h[62..70].copy_from_slice(&[0x08, 0, 0, 0, v[1], v[2], v[3], 0]);
            h[70..76].copy_from_slice(&peer.vtep_mac.0);
            h[76..82].copy_from_slice(&cfg.vtep_mac.0);
            h[82..84].copy_from_slice(&[0x08, 0x00]);
            // Pseudo-header addresses and next header, UDP destination port, VXLAN.
            let words = |b: &[u8]| -> u32 {
                b.chunks_exact(2).filter_map(|w| w.first_chunk::<2>()).map(|w| u32::from(u16::from_be_bytes(*w))).sum()
            };
            let fixed = words(&h[22..54]) + 17 + words(&h[56..58]) + words(&h[62..70]);
            Some((h, fixed))
        }
        _ => None,
    };
    Prepared { peer, header, ip_sum, header6 }
}

/// The IPv4 header checksum from the template's sum and the words patched in.
#[inline]
fn ip_checksum(base: u32, words: [u16; 5]) -> u16 {
    !fold32(base + words.iter().map(|&w| u32::from(w)).sum::<u32>())
}

impl EncapStage {
    /// A stage for `cfg`.
    pub fn new(cfg: OverlayConfig) -> Self {
        let peers = cfg.peers.iter().map(|p| (p.node_ip, prepare(&cfg, *p))).collect();
        EncapStage { cfg, peers }
    }

    /// Add or replace a peer (O(1)).
    pub fn set_peer(&mut self, peer: OverlayPeer) {
        self.peers.insert(peer.node_ip, prepare(&self.cfg, peer));
    }

    /// Remove a peer (O(1)); returns whether it was there.
    pub fn remove_peer(&mut self, node_ip: Ipv4Addr) -> bool {
        self.peers.remove(&node_ip).is_some()
    }

    /// Peers known.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Wrap `pkt` for `p` over the IPv6 underlay (VXLAN); the drop reason otherwise.
    fn wrap6(
        &self,
        cx: &mut Context<'_>,
        pkt: PktId,
        p: &Prepared,
        tmpl: &[u8; 84],
        fixed: u32,
    ) -> Result<(), DropReason> {
        let Some((dst, next_hop)) = p.peer.underlay6 else { return Err(DropReason::OverlayNoPeer) };
        if Some(dst) == self.cfg.local_ip6 {
            return Err(DropReason::OverlayLoop);
        }
        let Encap::Vxlan { ref src_ports, .. } = self.cfg.encap else { return Err(DropReason::OverlayNoPeer) };
        let (head, l3, end, hash) = {
            let m = cx.pool.meta(pkt);
            let hash = if m.flags.contains(PktFlags::HAS_FLOW) { flow_spread(m) } else { 0 };
            (usize::from(m.head()), usize::from(m.l3), usize::from(m.head()) + usize::from(m.len()), hash)
        };
        let new_head = start_at(cx, pkt, head, l3, 84)?;
        let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
        let frame = slot.get_mut(new_head..end).ok_or(DropReason::EncapNoHeadroom)?;
        let (hdr, inner) = frame.split_first_chunk_mut::<84>().ok_or(DropReason::EncapNoHeadroom)?;
        let inner_tos = inner.get(1).copied().ok_or(DropReason::Ipv4Truncated)?;
        *hdr = *tmpl;
        // Traffic class: the inner ECN (ip6_tclass with ip_tunnel_ecn_encap).
        let tc = outer_ecn(inner_tos);
        hdr[14] = 0x60 | (tc >> 4);
        hdr[15] = tc << 4;
        let ulen = u16::try_from(end - new_head - 54).map_err(|_| DropReason::EncapNoHeadroom)?;
        let [l0, l1] = ulen.to_be_bytes();
        hdr[18] = l0;
        hdr[19] = l1;
        let sport = src_port(hash, *src_ports.start(), *src_ports.end());
        let [s0, s1] = sport.to_be_bytes();
        hdr[54] = s0;
        hdr[55] = s1;
        hdr[58] = l0;
        hdr[59] = l1;
        // UDP over IPv6 always carries a checksum (RFC 8200 8.1; Linux's udp6zerocsumtx
        // is off by default): pseudo-header length and the source port and length here,
        // the fixed words from the template, then the inner frame.
        let mut sum = Sum::new();
        sum.add_bytes(&hdr[70..84]);
        sum.add_bytes(inner);
        let mut s = fixed + 2 * u32::from(ulen) + u32::from(sport) + u32::from(sum.fold());
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        let c = match !u16::try_from(s).unwrap_or(0) {
            0 => 0xffff,
            c => c,
        };
        let [c0, c1] = c.to_be_bytes();
        hdr[60] = c0;
        hdr[61] = c1;
        meta.l2 = u16::try_from(new_head).unwrap_or(u16::MAX);
        meta.l3 = meta.l2 + 14;
        meta.l4 = meta.l3 + 40;
        meta.l3_kind = L3Kind::Ipv6;
        meta.ip_proto = 17;
        meta.flags.remove(PktFlags::VLAN | PktFlags::FRAGMENT | PktFlags::LATER_FRAGMENT);
        meta.next_hop6 = next_hop;
        meta.out_port = p.peer.port;
        Ok(())
    }

    /// Wrap `pkt` for `p`; the drop reason otherwise.
    fn wrap(&self, cx: &mut Context<'_>, pkt: PktId, p: &Prepared) -> Result<(), DropReason> {
        let peer = &p.peer;
        if peer.node_ip == self.cfg.local_ip {
            return Err(DropReason::OverlayLoop);
        }
        let vxlan = matches!(self.cfg.encap, Encap::Vxlan { .. });
        let (head, l3, end, hash) = {
            let m = cx.pool.meta(pkt);
            let hash = if m.flags.contains(PktFlags::HAS_FLOW) { flow_spread(m) } else { 0 };
            (usize::from(m.head()), usize::from(m.l3), usize::from(m.head()) + usize::from(m.len()), hash)
        };
        // The outer headers end where the inner IP packet starts (VXLAN: after the
        // rewritten inner Ethernet header).
        let written = if vxlan { OUTER_ETH_IP + 16 + 14 } else { OUTER_ETH_IP };
        let new_head = start_at(cx, pkt, head, l3, written)?;
        let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
        let frame = slot.get_mut(new_head..end).ok_or(DropReason::EncapNoHeadroom)?;
        let (hdr, inner) = frame.split_at_mut_checked(written).ok_or(DropReason::EncapNoHeadroom)?;
        let Some(ih) = inner.first_chunk::<20>() else { return Err(DropReason::Ipv4Truncated) };
        let (inner_tos, inner_ttl, inner_df) = (ih[1], ih[8], ih[6] & 0x40);
        let inner_id = u16::from_be_bytes([ih[4], ih[5]]);
        let total = u16::try_from(end - new_head - 14).map_err(|_| DropReason::EncapNoHeadroom)?;
        let h = hdr.first_chunk_mut::<34>().ok_or(DropReason::EncapNoHeadroom)?;
        let Some(tmpl) = p.header.first_chunk::<34>() else { return Err(DropReason::EncapNoHeadroom) };
        *h = *tmpl;
        let df = if vxlan {
            h[20] != 0
        } else {
            // ipip with Linux's defaults: `ttl inherit` (the inner TTL, already
            // decremented by the route stage) and DF copied from the inner packet.
            h[20] = inner_df;
            h[22] = inner_ttl;
            inner_df != 0
        };
        // Linux gives DF tunnel packets ID 0 (no socket to count with), others one
        // from ip_select_ident (a counter per destination bucket, perturbed by time).
        // Here: the inner packet's ID plus a per-flow salt, which depends on neither
        // batching nor the order of flows, so the fast path replays it exactly. The
        // outer packet is never fragmented (the route stage fits the inner packet to
        // the tunnel MTU), so the ID only has to look like Linux's.
        let id = if df { 0 } else { inner_id.wrapping_add(id_salt(hash)) };
        let ecn = outer_ecn(inner_tos);
        let [t0, t1] = total.to_be_bytes();
        let [i0, i1] = id.to_be_bytes();
        h[15] = ecn;
        h[16] = t0;
        h[17] = t1;
        h[18] = i0;
        h[19] = i1;
        // The IPIP words patched above (DF, TTL) were zero in the template.
        let (df_word, ttl_word) =
            if vxlan { (0, 0) } else { (u16::from_be_bytes([h[20], 0]), u16::from_be_bytes([h[22], 0])) };
        let [c0, c1] = ip_checksum(p.ip_sum, [u16::from(ecn), total, id, df_word, ttl_word]).to_be_bytes();
        h[24] = c0;
        h[25] = c1;
        if let Encap::Vxlan { ref src_ports, udp_checksum, .. } = self.cfg.encap {
            let rest = hdr.get_mut(34..).and_then(|b| b.first_chunk_mut::<30>()).ok_or(DropReason::EncapNoHeadroom)?;
            let Some(t) = p.header.get(34..).and_then(|b| b.first_chunk::<30>()) else {
                return Err(DropReason::EncapNoHeadroom);
            };
            *rest = *t;
            let ulen = total.saturating_sub(20);
            let [s0, s1] = src_port(hash, *src_ports.start(), *src_ports.end()).to_be_bytes();
            let [l0, l1] = ulen.to_be_bytes();
            rest[0] = s0;
            rest[1] = s1;
            rest[4] = l0;
            rest[5] = l1;
            if udp_checksum {
                let mut sum = pseudo_v4(self.cfg.local_ip, peer.node_ip, 17, ulen);
                sum.add_bytes(&rest[..]);
                sum.add_bytes(inner);
                let [c0, c1] = match Sum::checksum(sum) {
                    0 => 0xffff,
                    c => c,
                }
                .to_be_bytes();
                rest[6] = c0;
                rest[7] = c1;
            }
        }
        let proto = if vxlan { 17 } else { 4 };
        meta.l2 = u16::try_from(new_head).unwrap_or(u16::MAX);
        meta.l3 = meta.l2 + 14;
        meta.l4 = meta.l3 + 20;
        meta.l3_kind = L3Kind::Ipv4;
        meta.ip_proto = proto;
        meta.flags.remove(PktFlags::VLAN | PktFlags::FRAGMENT | PktFlags::LATER_FRAGMENT);
        meta.next_hop = peer.next_hop;
        meta.out_port = peer.port;
        Ok(())
    }
}

impl Stage for EncapStage {
    fn name(&self) -> &'static str {
        "encap"
    }

    fn skips_final_batches(&self) -> bool {
        true
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        let tunnel = self.cfg.tunnel_port;
        let mut done = 0u64;
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            let (next_hop, kind) = {
                let m = cx.pool.meta(pkt);
                if m.out_port != tunnel || !m.flags.contains(PktFlags::ROUTED) {
                    continue;
                }
                (m.next_hop, m.l3_kind)
            };
            if kind != L3Kind::Ipv4 {
                // IPv6 pods over an IPv4 underlay are not built yet.
                cx.drop(batch, i, DropReason::OverlayNoPeer);
                continue;
            }
            let Some(peer) = self.peers.get(&next_hop) else {
                cx.drop(batch, i, DropReason::OverlayNoPeer);
                continue;
            };
            let r = match &peer.header6 {
                Some((t, fixed)) => self.wrap6(cx, pkt, peer, t, *fixed),
                None => self.wrap(cx, pkt, peer),
            };
            match r {
                Ok(()) => done += 1,
                Err(r) => cx.drop(batch, i, r),
            }
        }
        cx.count_n(StageEvent::Encapsulated, done);
    }
}

/// The spread hash of a packet's flow for the VXLAN source port: a fragment's on its
/// addresses and protocol only, so that every fragment of a datagram takes the same
/// outer flow (the first carries ports, the others do not).
/// The per-flow part of an outer IPv4 ID.
fn id_salt(hash: u64) -> u16 {
    u16::try_from((hash >> 16) & 0xffff).unwrap_or(0)
}

fn flow_spread(m: &crate::buf::PktMeta) -> u64 {
    if m.flags.contains(PktFlags::FRAGMENT) {
        FlowKey { src_port: 0, dst_port: 0, ..m.flow }.spread_hash()
    } else {
        m.flow.spread_hash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ports_spread_over_the_range_like_linux() {
        assert_eq!(src_port(0, 32768, 60999), 32768);
        assert_eq!(src_port(u64::MAX, 32768, 60999), 60998);
        assert_eq!(src_port(1 << 63, 32768, 60999), 32768 + (60999 - 32768) / 2);
    }

    #[test]
    fn ecn_is_copied_but_ce_becomes_ect0() {
        assert_eq!([outer_ecn(0), outer_ecn(1), outer_ecn(2), outer_ecn(0xb3)], [0, 1, 2, 2]);
    }
}
