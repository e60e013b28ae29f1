//! The `arp` stage: answers ARP requests for the node's own addresses and, Calico
//! style, proxy-ARP requests on pod ports; consumes other ARP addressed to the node.
//!
//! A reply is built in place from the request, field by field as Linux's `arp_send()`
//! from `arp_process()` builds it (checked against a capture from Linux 6.18 in a
//! network namespace, kept as the golden frame in the tests): Ethernet destination =
//! the requester's sender MAC from the ARP body, source = the answering interface's
//! MAC; ARP op 2, sender = (our MAC, the requested address), target = (the requester's
//! MAC and address); 42 bytes (28 + Ethernet; a VLAN tag, if any, is kept), no padding,
//! as veth and TAP deliver it. It goes back out of the port the request came in on.
//!
//! Which requests it takes: those the bridge handed to the node (`L2_LOCAL`) and those
//! on ports that are not bridged. A request is answered when its target is a local
//! address reachable on the ingress port, or the ingress port does proxy-ARP for that
//! target (Calico: `proxy_arp=1` on each `cali*` veth, pods routed via 169.254.1.1,
//! answered with the veth's MAC ee:ee:ee:ee:ee:ee). Announcements (sender address
//! equal to target) and replies are consumed (`arp_processed`); the neighbour table
//! that learns from them comes with the route stage.
//!
//! # Differences from Linux
//! - Linux's proxy ARP answers for any target it has a route to through another
//!   interface; here the port lists its targets (or answers for any target but the
//!   requester's own address), which is what Calico relies on.
//! - DAD probes (sender 0.0.0.0) for one of our addresses are answered to the prober's
//!   MAC, not broadcast.

use std::net::Ipv4Addr;

use crate::buf::{Batch, L3Kind, PktFlags, PortId};
use crate::pipeline::{Context, DropReason, Stage, StageEvent};
use crate::wire::EthernetAddress;
use crate::wire::arp::{self, ArpOperation, ArpPacket};

/// An address the node owns and the ports it answers ARP on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAddr {
    /// The address.
    pub ip: Ipv4Addr,
    /// The MAC to answer with (the interface's).
    pub mac: EthernetAddress,
    /// Ports where requests for it are answered (a bridge domain's ports, an uplink).
    pub ports: Vec<PortId>,
}

/// Proxy-ARP on one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyArp {
    /// The port (a pod's).
    pub port: PortId,
    /// The MAC to answer with (Calico: ee:ee:ee:ee:ee:ee).
    pub mac: EthernetAddress,
    /// Targets to answer for; empty = any address but the requester's own.
    pub targets: Vec<Ipv4Addr>,
}

/// The ARP stage's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArpConfig {
    /// The node's addresses.
    pub local: Vec<LocalAddr>,
    /// Proxy-ARP ports.
    pub proxy: Vec<ProxyArp>,
}

/// Calico's pod gateway address.
pub const CALICO_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The MAC Calico gives the host side of every pod veth.
pub const CALICO_MAC: EthernetAddress = EthernetAddress([0xee; 6]);

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct ArpStage {
    config: ArpConfig,
}

impl ArpStage {
    /// A stage answering per `config`.
    pub fn new(config: ArpConfig) -> Self {
        ArpStage { config }
    }

    fn answer_mac(&self, port: PortId, sender: Ipv4Addr, target: Ipv4Addr) -> Option<(EthernetAddress, StageEvent)> {
        if let Some(l) = self.config.local.iter().find(|l| l.ip == target && l.ports.contains(&port)) {
            return Some((l.mac, StageEvent::ArpReplied));
        }
        self.config
            .proxy
            .iter()
            .find(|p| p.port == port && target != sender && (p.targets.is_empty() || p.targets.contains(&target)))
            .map(|p| (p.mac, StageEvent::ProxyArpReplied))
    }
}

impl Stage for ArpStage {
    fn name(&self) -> &'static str {
        "arp"
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            let m = *cx.pool.meta(pkt);
            if m.l3_kind != L3Kind::Arp {
                continue;
            }
            if m.flags.contains(PktFlags::BRIDGED) && !m.flags.contains(PktFlags::L2_LOCAL) {
                continue; // between pods on a bridge: not ours
            }
            let (l2, l3) = (usize::from(m.l2), usize::from(m.l3));
            let (op, sha, spa, tpa) = {
                let Some(a) = cx.pool.slot(pkt).get(l3..).and_then(|b| ArpPacket::new_checked(b).ok()) else {
                    // parse checked it; a packet that fails now is malformed all the same.
                    cx.drop(batch, i, DropReason::ArpTruncated);
                    continue;
                };
                (a.operation(), a.sender_mac(), a.sender_ip(), a.target_ip())
            };
            if op != ArpOperation::Request || spa == tpa {
                cx.drop(batch, i, DropReason::ArpProcessed);
                continue;
            }
            let Some((mac, event)) = self.answer_mac(m.in_port, spa, tpa) else {
                cx.drop(batch, i, DropReason::ArpNotForUs);
                continue;
            };
            // Turn the request into the reply, in place.
            let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
            let reply = arp::ArpRepr {
                operation: ArpOperation::Reply,
                sender_mac: mac,
                sender_ip: tpa,
                target_mac: sha,
                target_ip: spa,
            };
            let eth_ok = match slot.get_mut(l2..l2 + 12).and_then(|e| e.split_first_chunk_mut::<6>()) {
                Some((dst, src)) => {
                    dst.copy_from_slice(&sha.0);
                    src.copy_from_slice(&mac.0);
                    true
                }
                None => false,
            };
            let ok = eth_ok && slot.get_mut(l3..).is_some_and(|b| reply.emit(b).is_ok());
            if !ok {
                cx.drop(batch, i, DropReason::ArpTruncated);
                continue;
            }
            let new_len = l3 - usize::from(meta.head()) + arp::PACKET_LEN;
            meta.trim(u16::try_from(new_len).unwrap_or(u16::MAX));
            meta.out_port = meta.in_port;
            meta.flags.remove(PktFlags::L2_LOCAL | PktFlags::BRIDGED);
            cx.count(event);
        }
    }
}
