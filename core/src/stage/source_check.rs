//! The `source_check` stage: a pod port accepts only its own address, so a pod
//! cannot pose as another pod, the node or a service (Calico's and Cilium's
//! anti-spoofing; the kernel's `rp_filter` only covers routes, not neighbours on a
//! bridge). IPv4 packets must come from the port's pod address; ARP must speak for it
//! (or be a probe from 0.0.0.0, RFC 5227). Dropped as `spoofed_source`.
//!
//! IPv6 is not checked yet (pod ports have no IPv6 address in the node file), nor the
//! pod's MAC (the node file does not know it; the bridge learns it).

use std::net::Ipv4Addr;

use crate::buf::{Batch, L3Kind, PortId};
use crate::pipeline::{Context, DropReason, Stage};

/// See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct SourceCheckStage {
    /// The pod address of each port, by port number (`None`: not a pod port).
    pods: Vec<Option<Ipv4Addr>>,
}

impl SourceCheckStage {
    /// A check of the pod ports `pods` (port, the pod's address).
    pub fn new(pods: &[(PortId, Ipv4Addr)]) -> Self {
        let n = pods.iter().map(|(p, _)| usize::from(p.0) + 1).max().unwrap_or(0);
        let mut v = vec![None; n];
        for (p, ip) in pods {
            if let Some(slot) = v.get_mut(usize::from(p.0)) {
                *slot = Some(*ip);
            }
        }
        SourceCheckStage { pods: v }
    }
}

impl Stage for SourceCheckStage {
    fn name(&self) -> &'static str {
        "source_check"
    }

    fn skips_final_batches(&self) -> bool {
        true
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            let m = cx.pool.meta(pkt);
            let Some(Some(pod)) = self.pods.get(usize::from(m.in_port.0)) else { continue };
            let l3 = usize::from(m.l3);
            let b = cx.pool.slot(pkt);
            let field = |at: usize| b.get(at..at + 4).and_then(|s| <[u8; 4]>::try_from(s).ok()).map(Ipv4Addr::from);
            let ok = match m.l3_kind {
                L3Kind::Ipv4 => field(l3 + 12) == Some(*pod),
                // The sender protocol address of an Ethernet/IPv4 ARP packet.
                L3Kind::Arp => field(l3 + 14).is_some_and(|s| s == *pod || s.is_unspecified()),
                _ => true,
            };
            if !ok {
                cx.drop(batch, i, DropReason::SpoofedSource);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::pipeline::{Pipeline, PipelineConfig};
    use crate::stage::{ParseStage, XconnectStage};
    use crate::testutil::{arp_request, run, udp4};

    #[test]
    fn a_pod_port_accepts_only_its_own_address() {
        let pod = Ipv4Addr::new(10, 244, 1, 2);
        let mut x = XconnectStage::new();
        x.connect(PortId(0), PortId(1)).unwrap();
        let stages: Vec<Box<dyn Stage>> =
            vec![Box::new(ParseStage::new()), Box::new(SourceCheckStage::new(&[(PortId(0), pod)])), Box::new(x)];
        let mut pl = Pipeline::new(stages, PipelineConfig::default(), 1);
        let mut pool = crate::buf::BufPool::with_slots(16).unwrap();
        let other = Ipv4Addr::new(10, 244, 1, 3);
        let dst = Ipv4Addr::new(10, 244, 2, 3);
        let r = run(
            &mut pl,
            &mut pool,
            crate::Instant::ZERO,
            &[
                (0, udp4(pod, dst, 1, 2, b"ok")),
                (0, udp4(other, dst, 1, 2, b"spoofed")),
                (0, arp_request(pod, dst)),
                (0, arp_request(other, dst)),
                (0, arp_request(Ipv4Addr::UNSPECIFIED, dst)),
                // Another port is not a pod port: anything goes.
                (1, udp4(other, dst, 1, 2, b"uplink")),
            ],
        );
        assert_eq!(r.tx.len(), 4);
        assert_eq!(pl.counters().drops("source_check", DropReason::SpoofedSource), 2);
    }
}
