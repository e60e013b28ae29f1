//! The `encap` stage: wraps packets the route stage sent to the tunnel port, in place,
//! for the peer their next hop names (see the [overlay docs](super)).

use std::net::Ipv4Addr;

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

use super::{Encap, OUTER_ETH_IP, OverlayConfig, OverlayPeer};
use crate::buf::{Batch, L3Kind, PktFlags, PktMeta};
use crate::pipeline::{Context, DropReason, Stage, StageEvent};
use crate::wire::checksum::{Sum, fold32, pseudo_v4};
use crate::wire::flow::FlowKey;

/// See the [module docs](self).
#[derive(Debug)]
pub struct EncapStage {
    cfg: OverlayConfig,
    peers: HashMap<Ipv4Addr, Prepared, FxBuildHasher>,
    /// The VXLAN source port range (`cfg.encap`'s), read per packet.
    src_lo: u16,
    src_hi: u16,
}

/// Bytes VXLAN writes in front of the inner IP header: outer Ethernet and IPv4, UDP,
/// VXLAN and the inner Ethernet header.
const VXLAN_FRONT: usize = OUTER_ETH_IP + 16 + 14;
/// Bytes IPIP writes in front of the inner IP header: outer Ethernet and IPv4.
const IPIP_FRONT: usize = OUTER_ETH_IP;

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
#[inline]
fn src_port(hash: u64, lo: u16, hi: u16) -> u16 {
    let span = u64::from(hi.saturating_sub(lo));
    let h = hash >> 32;
    // Below `span` (h < 2^32), so it fits and `lo` plus it is at most `hi`.
    #[allow(clippy::cast_possible_truncation)]
    let off = ((h * span) >> 32) as u16;
    lo.wrapping_add(off)
}

/// The packet's window moved to start `written` bytes before its inner IP header (at
/// `meta.l3`), growing into the headroom, or shrinking when a VLAN tag stood in front:
/// the new start, the bytes in front of the inner header and the inner packet (at
/// least 20 bytes). The metadata is only changed by the caller, once the headers are
/// written.
#[inline(always)]
fn frame_at<'a, const P: usize>(
    slot: &'a mut [u8],
    meta: &PktMeta,
) -> Result<(u16, &'a mut [u8; P], &'a mut [u8]), DropReason> {
    let (l3, end) = (usize::from(meta.l3), usize::from(meta.head()) + usize::from(meta.len()));
    let new_head = l3.checked_sub(P).ok_or(DropReason::EncapNoHeadroom)?;
    if end < l3 + 20 {
        return Err(DropReason::Ipv4Truncated);
    }
    let (front, back) = slot.split_at_mut_checked(l3).ok_or(DropReason::EncapNoHeadroom)?;
    let hdr = front.last_chunk_mut::<P>().ok_or(DropReason::EncapNoHeadroom)?;
    let inner = back.get_mut(..end - l3).ok_or(DropReason::EncapNoHeadroom)?;
    Ok((u16::try_from(new_head).map_err(|_| DropReason::EncapNoHeadroom)?, hdr, inner))
}

/// Point the metadata at the outer headers written in front of the inner packet.
#[inline(always)]
fn set_outer(meta: &mut PktMeta, new_head: u16, kind: L3Kind, proto: u8, l4_at: u16) -> Result<(), DropReason> {
    if !meta.move_head(new_head) {
        return Err(DropReason::EncapNoHeadroom);
    }
    meta.l2 = new_head;
    meta.l3 = new_head + 14;
    meta.l4 = new_head + l4_at;
    meta.l3_kind = kind;
    meta.ip_proto = proto;
    meta.flags.remove(PktFlags::VLAN | PktFlags::FRAGMENT | PktFlags::LATER_FRAGMENT);
    Ok(())
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
        let (src_lo, src_hi) = match &cfg.encap {
            Encap::Vxlan { src_ports, .. } => (*src_ports.start(), *src_ports.end()),
            Encap::Ipip => (0, 0),
        };
        EncapStage { cfg, peers, src_lo, src_hi }
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

    /// Wrap the packet for `p` over the IPv6 underlay (VXLAN); the drop reason otherwise.
    fn wrap6(
        &self,
        slot: &mut [u8],
        meta: &mut PktMeta,
        p: &Prepared,
        tmpl: &[u8; 84],
        fixed: u32,
    ) -> Result<(), DropReason> {
        let Some((dst, next_hop)) = p.peer.underlay6 else { return Err(DropReason::OverlayNoPeer) };
        if Some(dst) == self.cfg.local_ip6 {
            return Err(DropReason::OverlayLoop);
        }
        if !matches!(self.cfg.encap, Encap::Vxlan { .. }) {
            return Err(DropReason::OverlayNoPeer);
        }
        let hash = flow_spread(meta);
        let (new_head, hdr, inner) = frame_at::<84>(slot, meta)?;
        let inner_tos = inner.get(1).copied().ok_or(DropReason::Ipv4Truncated)?;
        *hdr = *tmpl;
        // Traffic class: the inner ECN (ip6_tclass with ip_tunnel_ecn_encap).
        let tc = outer_ecn(inner_tos);
        hdr[14] = 0x60 | (tc >> 4);
        hdr[15] = tc << 4;
        // The UDP length: VXLAN, inner Ethernet and the inner packet (below 64 KiB: it
        // fits the slot).
        let ulen = u16::try_from(inner.len() + 30).map_err(|_| DropReason::EncapNoHeadroom)?;
        let [l0, l1] = ulen.to_be_bytes();
        hdr[18] = l0;
        hdr[19] = l1;
        let sport = src_port(hash, self.src_lo, self.src_hi);
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
        set_outer(meta, new_head, L3Kind::Ipv6, 17, 54)?;
        meta.next_hop6 = next_hop;
        meta.out_port = p.peer.port;
        Ok(())
    }

    /// Wrap the packet for `p` over the IPv4 underlay, writing `P` bytes in front of
    /// the inner IP header (VXLAN 64: outer Ethernet, IPv4, UDP, VXLAN and the inner
    /// Ethernet header; IPIP 34); the drop reason otherwise.
    #[inline(always)]
    fn wrap<const P: usize>(&self, slot: &mut [u8], meta: &mut PktMeta, p: &Prepared) -> Result<(), DropReason> {
        let peer = &p.peer;
        if peer.node_ip == self.cfg.local_ip {
            return Err(DropReason::OverlayLoop);
        }
        let vxlan = P == VXLAN_FRONT;
        let hash = flow_spread(meta);
        let (new_head, h, inner) = frame_at::<P>(slot, meta)?;
        let Some(ih) = inner.first_chunk::<20>() else { return Err(DropReason::Ipv4Truncated) };
        let (inner_tos, inner_ttl, inner_df) = (ih[1], ih[8], ih[6] & 0x40);
        let inner_id = u16::from_be_bytes([ih[4], ih[5]]);
        // The outer IPv4 length: everything after the outer Ethernet header (below
        // 64 KiB: it fits the slot).
        let total = u16::try_from(inner.len() + P - 14).map_err(|_| DropReason::EncapNoHeadroom)?;
        let Some(tmpl) = p.header.first_chunk::<P>() else { return Err(DropReason::EncapNoHeadroom) };
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
        if let (Encap::Vxlan { udp_checksum, .. }, Some(udp)) =
            (&self.cfg.encap, h.get_mut(34..).and_then(|u| u.first_chunk_mut::<30>()))
        {
            let ulen = total - 20;
            let [s0, s1] = src_port(hash, self.src_lo, self.src_hi).to_be_bytes();
            let [l0, l1] = ulen.to_be_bytes();
            udp[0] = s0;
            udp[1] = s1;
            udp[4] = l0;
            udp[5] = l1;
            if *udp_checksum {
                let mut sum = pseudo_v4(self.cfg.local_ip, peer.node_ip, 17, ulen);
                sum.add_bytes(&udp[..]);
                sum.add_bytes(inner);
                let [c0, c1] = match Sum::checksum(sum) {
                    0 => 0xffff,
                    c => c,
                }
                .to_be_bytes();
                udp[6] = c0;
                udp[7] = c1;
            }
        }
        set_outer(meta, new_head, L3Kind::Ipv4, if vxlan { 17 } else { 4 }, 34)?;
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
        let vxlan = matches!(self.cfg.encap, Encap::Vxlan { .. });
        let mut done = 0u64;
        // The last peer looked up: a batch mostly goes to one or a few nodes.
        let mut memo: Option<(Ipv4Addr, &Prepared)> = None;
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
            if meta.out_port != tunnel || !meta.flags.contains(PktFlags::ROUTED) {
                continue;
            }
            let next_hop = meta.next_hop;
            let peer = match memo {
                Some((ip, p)) if ip == next_hop => Some(p),
                _ => self.peers.get(&next_hop),
            };
            let r = match peer {
                // IPv6 pods over an IPv4 underlay are not built yet.
                _ if meta.l3_kind != L3Kind::Ipv4 => Err(DropReason::OverlayNoPeer),
                None => Err(DropReason::OverlayNoPeer),
                Some(p) => {
                    memo = Some((next_hop, p));
                    match &p.header6 {
                        Some((t, fixed)) => self.wrap6(slot, meta, p, t, *fixed),
                        None if vxlan => self.wrap::<VXLAN_FRONT>(slot, meta, p),
                        None => self.wrap::<IPIP_FRONT>(slot, meta, p),
                    }
                }
            };
            match r {
                Ok(()) => done += 1,
                Err(r) => cx.drop(batch, i, r),
            }
        }
        cx.count_n(StageEvent::Encapsulated, done);
    }
}

/// The per-flow part of an outer IPv4 ID.
fn id_salt(hash: u64) -> u16 {
    u16::try_from((hash >> 16) & 0xffff).unwrap_or(0)
}

/// The spread hash of a packet's flow for the VXLAN source port (0 without a flow): a
/// fragment's on its addresses and protocol only, so that every fragment of a datagram
/// takes the same outer flow (the first carries ports, the others do not).
#[inline]
fn flow_spread(m: &PktMeta) -> u64 {
    if !m.flags.contains(PktFlags::HAS_FLOW) {
        0
    } else if m.flags.contains(PktFlags::FRAGMENT) {
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
