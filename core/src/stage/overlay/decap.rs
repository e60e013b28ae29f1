//! The `decap` stage: unwraps VXLAN and IP-in-IP traffic that arrives on an uplink for
//! the node's underlay address, in place, and hands the inner frame on as received
//! on the tunnel port (see the [overlay docs](super)).

use std::net::Ipv4Addr;

use hashbrown::HashSet;
use rustc_hash::FxBuildHasher;

use super::{Encap, OverlayConfig};
use crate::buf::{Batch, L3Kind, PktFlags, PktId};
use crate::pipeline::{Context, DropReason, Stage, StageEvent};
use crate::stage::parse::parse_one;

/// See the [module docs](self).
#[derive(Debug)]
pub struct DecapStage {
    cfg: OverlayConfig,
    peers: HashSet<Ipv4Addr, FxBuildHasher>,
}

/// What an outer packet for the node is.
enum Outer {
    /// Not overlay traffic: leave it alone.
    Other,
    /// Overlay traffic to unwrap: the offset where the inner frame (VXLAN) or the inner
    /// IP packet (IPIP) starts.
    Inner(usize),
}

impl DecapStage {
    /// A stage for `cfg`.
    pub fn new(cfg: OverlayConfig) -> Self {
        let peers = cfg.peers.iter().map(|p| p.node_ip).collect();
        DecapStage { cfg, peers }
    }

    /// Accept IPIP from `node_ip` too (O(1)).
    pub fn add_peer(&mut self, node_ip: Ipv4Addr) {
        self.peers.insert(node_ip);
    }

    /// Stop accepting IPIP from `node_ip` (O(1)).
    pub fn remove_peer(&mut self, node_ip: Ipv4Addr) {
        self.peers.remove(&node_ip);
    }

    /// Classify packet `pkt`: leave it, unwrap it, or drop it with a reason.
    fn classify(&self, cx: &Context<'_>, pkt: PktId) -> Result<Outer, DropReason> {
        let m = cx.pool.meta(pkt);
        if !self.cfg.uplinks.contains(&m.in_port) {
            return Ok(Outer::Other);
        }
        if m.l3_kind == L3Kind::Ipv6 {
            return self.classify6(cx, pkt);
        }
        if m.l3_kind != L3Kind::Ipv4 {
            return Ok(Outer::Other);
        }
        let (l3, end) = (usize::from(m.l3), usize::from(m.head()) + usize::from(m.len()));
        let slot = cx.pool.slot(pkt);
        let Some(ip) = slot.get(l3..).and_then(|b| b.first_chunk::<20>()) else { return Ok(Outer::Other) };
        if ip[16..20] != self.cfg.local_ip.octets() {
            return Ok(Outer::Other);
        }
        let fragment = m.flags.contains(PktFlags::FRAGMENT);
        match (&self.cfg.encap, ip[9]) {
            (Encap::Vxlan { .. }, 17) => {
                if fragment {
                    // The UDP header is only in the first fragment; the kernel would
                    // reassemble first. We do not.
                    return Err(DropReason::OverlayFragment);
                }
                self.vxlan(cx, pkt)
            }
            (Encap::Ipip, 4) => {
                if !self.peers.contains(&Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])) {
                    return Err(DropReason::OverlayUnknownPeer);
                }
                if fragment {
                    return Err(DropReason::OverlayFragment);
                }
                let inner = l3 + usize::from(ip[0] & 0x0f) * 4;
                if end < inner + 20 {
                    return Err(DropReason::Ipv4Truncated);
                }
                Ok(Outer::Inner(inner))
            }
            _ => Ok(Outer::Other),
        }
    }

    /// VXLAN over IPv6 to the node's IPv6 underlay address.
    fn classify6(&self, cx: &Context<'_>, pkt: PktId) -> Result<Outer, DropReason> {
        let (Some(local6), Encap::Vxlan { .. }) = (self.cfg.local_ip6, &self.cfg.encap) else {
            return Ok(Outer::Other);
        };
        let m = cx.pool.meta(pkt);
        let l3 = usize::from(m.l3);
        let slot = cx.pool.slot(pkt);
        if slot.get(l3 + 24..l3 + 40) != Some(&local6.octets()[..]) || m.ip_proto != 17 {
            return Ok(Outer::Other);
        }
        if m.flags.contains(PktFlags::FRAGMENT) {
            return Err(DropReason::OverlayFragment);
        }
        self.vxlan(cx, pkt)
    }

    /// The VXLAN checks on a UDP packet for the node (either family).
    fn vxlan(&self, cx: &Context<'_>, pkt: PktId) -> Result<Outer, DropReason> {
        let Encap::Vxlan { port, vni, .. } = &self.cfg.encap else { return Ok(Outer::Other) };
        let m = cx.pool.meta(pkt);
        if !m.flags.contains(PktFlags::HAS_L4) {
            return Err(DropReason::VxlanTruncated);
        }
        let (l4, end) = (usize::from(m.l4), usize::from(m.head()) + usize::from(m.len()));
        let slot = cx.pool.slot(pkt);
        let udp = slot.get(l4..end).ok_or(DropReason::VxlanTruncated)?;
        let Some(h) = udp.first_chunk::<16>() else { return Ok(Outer::Other) };
        if u16::from_be_bytes([h[2], h[3]]) != *port {
            return Ok(Outer::Other);
        }
        if udp.len() < 16 + 14 {
            return Err(DropReason::VxlanTruncated);
        }
        // Linux's vxlan_rcv(): the I flag required, and without extensions any other
        // flag or reserved bit makes the packet invalid (stricter than RFC 7348, which
        // says to ignore them).
        if h[8..12] != [0x08, 0, 0, 0] || h[15] != 0 {
            return Err(DropReason::VxlanBadFlags);
        }
        if u32::from_be_bytes([0, h[12], h[13], h[14]]) != *vni {
            return Err(DropReason::VxlanUnknownVni);
        }
        let inner = l4 + 16;
        if slot.get(inner..inner + 6) != Some(&self.cfg.vtep_mac.0[..]) {
            return Err(DropReason::OverlayNotForUs);
        }
        Ok(Outer::Inner(inner))
    }

    /// Strip the outer headers of `pkt` so that it starts at its inner Ethernet frame
    /// (VXLAN) or at a fresh Ethernet header in front of its inner IP packet (IPIP),
    /// then parse it again.
    fn unwrap(&self, cx: &mut Context<'_>, pkt: PktId, inner: usize) -> Result<(), DropReason> {
        let head = usize::from(cx.pool.meta(pkt).head());
        let start = match self.cfg.encap {
            Encap::Vxlan { .. } => inner,
            // The IP packet gets an Ethernet header made of the outer one's last 14
            // bytes' room: to the tunnel's MAC, from the outer sender's MAC.
            Encap::Ipip => inner.checked_sub(14).ok_or(DropReason::Ipv4Truncated)?,
        };
        let outer_src = {
            let s = cx.pool.slot(pkt);
            s.get(head + 6..head + 12).and_then(|b| b.first_chunk::<6>()).copied().unwrap_or([2, 0, 0, 0, 0, 1])
        };
        cx.pool.pull_front(pkt, start - head).map_err(|_| DropReason::Ipv4Truncated)?;
        let policy = cx.config.checksum;
        let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
        if matches!(self.cfg.encap, Encap::Ipip) {
            let eth = slot
                .get_mut(start..start + 14)
                .and_then(|b| b.first_chunk_mut::<14>())
                .ok_or(DropReason::Ipv4Truncated)?;
            let ([a, b, c, d, e, f], [g, h, i, j, k, l]) = (self.cfg.vtep_mac.0, outer_src);
            *eth = [a, b, c, d, e, f, g, h, i, j, k, l, 0x08, 0x00];
        }
        meta.in_port = self.cfg.tunnel_port;
        meta.out_port = crate::buf::PortId::NONE;
        parse_one(slot, meta, policy)
    }
}

impl Stage for DecapStage {
    fn name(&self) -> &'static str {
        "decap"
    }

    fn skips_final_batches(&self) -> bool {
        true
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        let mut done = 0u64;
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            let r = match self.classify(cx, pkt) {
                Ok(Outer::Other) => continue,
                Ok(Outer::Inner(inner)) => self.unwrap(cx, pkt, inner),
                Err(r) => Err(r),
            };
            match r {
                Ok(()) => done += 1,
                Err(r) => cx.drop(batch, i, r),
            }
        }
        cx.count_n(StageEvent::Decapsulated, done);
    }
}
