//! The `encap` stage: wraps packets the route stage sent to the tunnel port, in place,
//! for the peer their next hop names (see the [overlay docs](super)).

use std::net::Ipv4Addr;

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

use super::{Encap, OUTER_ETH_IP, OverlayConfig, OverlayPeer};
use crate::buf::{Batch, L3Kind, PktFlags, PktId};
use crate::pipeline::{Context, DropReason, Stage, StageEvent};
use crate::wire::checksum::{Sum, checksum, pseudo_v4};

/// See the [module docs](self).
#[derive(Debug)]
pub struct EncapStage {
    cfg: OverlayConfig,
    peers: HashMap<Ipv4Addr, OverlayPeer, FxBuildHasher>,
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

impl EncapStage {
    /// A stage for `cfg`.
    pub fn new(cfg: OverlayConfig) -> Self {
        let peers = cfg.peers.iter().map(|p| (p.node_ip, *p)).collect();
        EncapStage { cfg, peers }
    }

    /// Add or replace a peer (O(1)).
    pub fn set_peer(&mut self, peer: OverlayPeer) {
        self.peers.insert(peer.node_ip, peer);
    }

    /// Remove a peer (O(1)); returns whether it was there.
    pub fn remove_peer(&mut self, node_ip: Ipv4Addr) -> bool {
        self.peers.remove(&node_ip).is_some()
    }

    /// Peers known.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Wrap packet `i`; the drop reason otherwise.
    fn wrap(&self, cx: &mut Context<'_>, pkt: PktId, peer: &OverlayPeer) -> Result<(), DropReason> {
        if peer.node_ip == self.cfg.local_ip {
            return Err(DropReason::OverlayLoop);
        }
        let ident = u16::try_from(rand_core::RngCore::next_u32(cx.rng) & 0xffff).unwrap_or(0);
        let (head, l3, end, hash) = {
            let m = cx.pool.meta(pkt);
            let hash = if m.flags.contains(PktFlags::HAS_FLOW) { m.flow.symmetric_hash(0x7678_6c61_6e00) } else { 0 };
            (usize::from(m.head()), usize::from(m.l3), usize::from(m.head()) + usize::from(m.len()), hash)
        };
        // What the outer headers go in front of: the inner Ethernet header (VXLAN) or
        // the inner IP header (IPIP), and how long the outer part is.
        let (inner, outer_len) = match self.cfg.encap {
            Encap::Vxlan { .. } => (l3.checked_sub(14).ok_or(DropReason::EncapNoHeadroom)?, OUTER_ETH_IP + 16),
            Encap::Ipip => (l3, OUTER_ETH_IP),
        };
        let new_head = inner.checked_sub(outer_len).ok_or(DropReason::EncapNoHeadroom)?;
        if new_head > head {
            // A VLAN tag or more in front of the inner packet: drop what is not needed.
            cx.pool.pull_front(pkt, new_head - head).map_err(|_| DropReason::EncapNoHeadroom)?;
        } else {
            cx.pool.push_front(pkt, head - new_head).map_err(|_| DropReason::EncapNoHeadroom)?;
        }
        let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
        let frame = slot.get_mut(new_head..end).ok_or(DropReason::EncapNoHeadroom)?;
        let inner_ip = frame.get(outer_len + if matches!(self.cfg.encap, Encap::Vxlan { .. }) { 14 } else { 0 }..);
        let (inner_tos, inner_ttl, inner_df) = match inner_ip.and_then(|b| b.first_chunk::<20>()) {
            Some(h) => (h[1], h[8], h[6] & 0x40 != 0),
            None => return Err(DropReason::Ipv4Truncated),
        };
        let total = end - new_head - 14;
        let total16 = u16::try_from(total).map_err(|_| DropReason::EncapNoHeadroom)?;
        let (proto, ttl, df) = match self.cfg.encap {
            Encap::Vxlan { .. } => (17u8, self.cfg.ttl, self.cfg.dont_fragment),
            // ipip with Linux's defaults: `ttl inherit` (the inner TTL, already
            // decremented by the route stage) and DF copied from the inner packet.
            Encap::Ipip => (4u8, inner_ttl, inner_df),
        };
        // Linux gives DF tunnel packets ID 0 (no socket to count with), others one
        // from ip_select_ident; ours come from the seeded RNG.
        let id = if df { 0 } else { ident };
        let (eth, rest) = frame.split_first_chunk_mut::<14>().ok_or(DropReason::EncapNoHeadroom)?;
        *eth = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00];
        let (ip, rest) = rest.split_first_chunk_mut::<20>().ok_or(DropReason::EncapNoHeadroom)?;
        let [t0, t1] = total16.to_be_bytes();
        let [i0, i1] = id.to_be_bytes();
        let [s0, s1, s2, s3] = self.cfg.local_ip.octets();
        let [d0, d1, d2, d3] = peer.node_ip.octets();
        let fl = if df { 0x40 } else { 0 };
        *ip = [0x45, outer_ecn(inner_tos), t0, t1, i0, i1, fl, 0, ttl, proto, 0, 0, s0, s1, s2, s3, d0, d1, d2, d3];
        let [c0, c1] = checksum(&ip[..]).to_be_bytes();
        ip[10] = c0;
        ip[11] = c1;
        if let Encap::Vxlan { port, vni, ref src_ports, udp_checksum } = self.cfg.encap {
            let (udp, rest) = rest.split_first_chunk_mut::<8>().ok_or(DropReason::EncapNoHeadroom)?;
            let ulen = total16.saturating_sub(20);
            let sport = src_port(hash, *src_ports.start(), *src_ports.end()).to_be_bytes();
            let [p0, p1] = port.to_be_bytes();
            let [l0, l1] = ulen.to_be_bytes();
            let [s0, s1] = sport;
            *udp = [s0, s1, p0, p1, l0, l1, 0, 0];
            let [_, v1, v2, v3] = vni.to_be_bytes();
            let (vx, rest) = rest.split_first_chunk_mut::<8>().ok_or(DropReason::EncapNoHeadroom)?;
            *vx = [0x08, 0, 0, 0, v1, v2, v3, 0];
            // The inner Ethernet header, as Flannel's neighbour entry on flannel.1 has it.
            let ieth = rest.first_chunk_mut::<14>().ok_or(DropReason::Ipv4Truncated)?;
            let ([a, b, c, d, e, f], [g, h, i, j, k, l]) = (peer.vtep_mac.0, self.cfg.vtep_mac.0);
            *ieth = [a, b, c, d, e, f, g, h, i, j, k, l, 0x08, 0x00];
            if udp_checksum {
                let mut sum = pseudo_v4(self.cfg.local_ip, peer.node_ip, 17, ulen);
                sum.add_bytes(&udp[..]);
                sum.add_bytes(&vx[..]);
                sum.add_bytes(rest);
                let [c0, c1] = match Sum::checksum(sum) {
                    0 => 0xffff,
                    c => c,
                }
                .to_be_bytes();
                udp[6] = c0;
                udp[7] = c1;
            }
        }
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
            let Some(peer) = self.peers.get(&next_hop).copied() else {
                cx.drop(batch, i, DropReason::OverlayNoPeer);
                continue;
            };
            match self.wrap(cx, pkt, &peer) {
                Ok(()) => done += 1,
                Err(r) => cx.drop(batch, i, r),
            }
        }
        cx.count_n(StageEvent::Encapsulated, done);
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
