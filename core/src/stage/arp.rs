//! The `arp` stage: the node's ARP and neighbour table. It answers ARP requests for
//! the node's own addresses and, Calico style, proxy-ARP requests on pod ports; learns
//! neighbours from ARP; and gives routed packets their MAC addresses, resolving next
//! hops by ARP and holding packets while it waits.
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
//! equal to target) and replies are consumed (`arp_processed`).
//!
//! # Neighbours (net/core/neighbour.c, net/ipv4/arp.c)
//! The sender of an ARP request for one of our addresses, of a reply, or of an
//! announcement is learned (`arp_process()` creates or updates the entry). A routed
//! packet whose next hop is known gets destination = the neighbour's MAC, source = the
//! egress interface's MAC; on a bridge interface it then re-enters the bridge from the
//! interface's virtual port (VPP's BVI), which picks the pod port. An unknown next hop
//! gets an entry in INCOMPLETE, an ARP request (broadcast, from the interface's MAC
//! and address, target MAC zero, as Linux's `arp_solicit()`), and the packet waits in
//! a bounded per-neighbour queue (`unres_qlen`: [`QUEUE_LEN`] = 101 as Linux; queues
//! are lent from a fixed set of [`QUEUES`] to unresolved entries); the reply
//! releases the queue in order. A request is re-sent at most once a second
//! (`retrans_time`), and after [`MAX_PROBES`] unanswered requests the waiting packets
//! are dropped (`neigh_failed`), as `mcast_solicit` = 3 has Linux give up.
//!
//! An entry not confirmed for [`REACHABLE_TIME`] is STALE: it is still used, and the
//! next packet through it sends an ARP request (at most one a second); after
//! [`MAX_PROBES`] of them go unanswered the entry is dropped and packets wait for a
//! fresh answer, so a pod re-created with a new MAC is found again.
//!
//! Differences from Linux: re-probes are broadcast, not unicast then broadcast
//! (`ucast_solicit`); timing is driven by packets, not by timers between batches; a
//! FAILED entry is probed again by the next packet.
//!
//! # IPv6
//! Neighbour discovery lives in [`nd`]: solicitations for the node's addresses are
//! answered, solicitations and advertisements teach the table, and IPv6 next hops are
//! resolved by solicitations, with the same states, queue and probing as ARP. One
//! table holds both families, keyed by (interface, address).
//!
//! # The resolved-next-hop cache
//! In front of the table sits a 64-entry direct-mapped cache of next hops recently
//! found reachable (and the last one, checked first), valid until their entry would
//! turn stale; any learning clears it. Packets to a gateway or a busy peer then skip
//! the table (`benches/callgrind.sh`: route + neighbour 459 → 386 instructions per
//! packet with the interface tables and batch counters).
//!
//! # Differences from Linux
//! - Linux's proxy ARP answers for any target it has a route to through another
//!   interface; here the port lists its targets (or answers for any target but the
//!   requester's own address), which is what Calico relies on.
//! - DAD probes (sender 0.0.0.0) for one of our addresses are answered to the prober's
//!   MAC, not broadcast.

mod held;
pub mod nd;

use held::HeldQueues;
pub use held::{QUEUE_LEN, QUEUES};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

use super::route::{IfIndex, L3If, link_local};
use crate::buf::{Batch, L3Kind, PktFlags, PktId, PortId};
use crate::pipeline::{Context, DropReason, Stage, StageEvent, TraceNote};
use crate::stage::fastpath::FAST_PATH_LIFE;
use crate::time::{Duration, Instant};
use crate::wire::EthernetAddress;
use crate::wire::arp::{self, ArpOperation, ArpPacket, ArpRepr};
use crate::wire::ethernet::{EtherType, EthernetRepr};

/// Unanswered ARP requests before the waiting packets are dropped.
pub const MAX_PROBES: u8 = 3;
/// Time between ARP requests for one neighbour (`retrans_time`).
pub const RETRANS: Duration = Duration::from_secs(1);
/// How long an ARP answer keeps an entry fresh (Linux `base_reachable_time`, 30 s).
pub const REACHABLE_TIME: Duration = Duration::from_secs(30);
/// Most neighbour entries.
pub const MAX_NEIGHBOURS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NeighState {
    Incomplete,
    Reachable,
}

#[derive(Clone, Copy, Debug)]
struct Neigh {
    state: NeighState,
    mac: EthernetAddress,
    /// When ARP last confirmed the entry.
    confirmed: Instant,
    probes: u8,
    last_probe: Instant,
    /// The held-packet queue lent to this entry while it is unresolved.
    queue: Option<u16>,
}

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
    /// The layer-3 interfaces (the route stage's), for resolving next hops.
    pub interfaces: Vec<L3If>,
}

/// Calico's pod gateway address.
pub const CALICO_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The MAC Calico gives the host side of every pod veth.
pub const CALICO_MAC: EthernetAddress = EthernetAddress([0xee; 6]);

/// See the [module docs](self).
#[derive(Debug)]
pub struct ArpStage {
    config: ArpConfig,
    index: IfIndex,
    neigh: HashMap<(PortId, IpAddr), Neigh, FxBuildHasher>,
    /// Queues of packets waiting for unresolved entries.
    held: HeldQueues,
    /// Recently resolved next hops and until when their entries stay fresh, in a small
    /// direct-mapped cache in front of the table: packets to a next hop seen recently
    /// (the default gateway, a busy peer) skip the big table and its cache misses.
    /// Cleared whenever an entry changes.
    memo: [Option<Memo>; MEMO_SLOTS],
    /// The last next hop resolved (checked before hashing into `memo`: a run of
    /// packets to one gateway costs a compare).
    last: Option<Memo>,
    /// The last IPv4 next hop resolved on a routed port, with its Ethernet header
    /// precomputed (VPP's adjacency rewrite string): a run of packets to one gateway
    /// is rewritten without building a neighbour key. Cleared with `memo`.
    rewrite4: Option<Rewrite4>,
}

/// A precomputed Ethernet rewrite for IPv4 packets to one next hop on one port.
#[derive(Clone, Copy, Debug)]
struct Rewrite4 {
    port: PortId,
    next_hop: Ipv4Addr,
    /// Destination then source MAC.
    eth: [u8; 12],
    fresh_until: Instant,
}

/// Entries of the resolved-next-hop cache (about 3 KiB).
const MEMO_SLOTS: usize = 64;

/// The cache slot of a neighbour key.
#[inline]
fn memo_slot(key: &(PortId, IpAddr)) -> usize {
    use core::hash::BuildHasher;
    (FxBuildHasher.hash_one(key) >> 32) as usize % MEMO_SLOTS
}

/// A resolved next hop remembered by [`ArpStage`].
#[derive(Clone, Copy, Debug)]
struct Memo {
    key: (PortId, IpAddr),
    mac: EthernetAddress,
    fresh_until: Instant,
}

impl Default for ArpStage {
    fn default() -> Self {
        ArpStage::new(ArpConfig::default())
    }
}

impl ArpStage {
    /// A stage answering per `config`.
    pub fn new(config: ArpConfig) -> Self {
        let index = IfIndex::new(&config.interfaces);
        ArpStage {
            config,
            index,
            neigh: HashMap::with_capacity_and_hasher(MAX_NEIGHBOURS, FxBuildHasher),
            memo: [None; MEMO_SLOTS],
            last: None,
            rewrite4: None,
            held: HeldQueues::default(),
        }
    }

    /// Take a new configuration between batches. Learned neighbours and the packets
    /// waiting for them stay (learned state survives configuration changes); the
    /// resolved-next-hop memos are cleared, since an interface's MAC may have changed.
    pub fn reconfigure(&mut self, config: ArpConfig) {
        self.index = IfIndex::new(&config.interfaces);
        self.config = config;
        self.memo = [None; MEMO_SLOTS];
        self.last = None;
        self.rewrite4 = None;
    }

    /// Neighbour entries (all states), for the table-size counters.
    pub fn neighbours(&self) -> usize {
        self.neigh.len()
    }

    /// The MAC of a reachable neighbour on interface `port` (for tests and the CLI).
    pub fn neighbour(&self, port: PortId, ip: IpAddr) -> Option<EthernetAddress> {
        self.neigh.get(&(port, ip)).filter(|n| n.state == NeighState::Reachable).map(|n| n.mac)
    }

    fn iface_for_port(&self, port: PortId) -> Option<&L3If> {
        self.config.interfaces.get(self.index.of(port).or_else(|| self.index.at(port))?)
    }

    /// Record `ip` at `mac` behind the interface of `in_port`; release its queue.
    fn learn(&mut self, cx: &mut Context<'_>, in_port: PortId, ip: IpAddr, mac: EthernetAddress) {
        let Some(ifport) = self.iface_for_port(in_port).map(|i| i.port) else { return };
        let fresh = Neigh {
            state: NeighState::Reachable,
            mac,
            confirmed: cx.now,
            probes: 0,
            last_probe: Instant::ZERO,
            queue: None,
        };
        let room = self.neigh.len() < MAX_NEIGHBOURS;
        self.memo = [None; MEMO_SLOTS];
        self.last = None;
        self.rewrite4 = None;
        let mut waiting = match self.neigh.get_mut(&(ifport, ip)) {
            Some(n) => {
                let q = n.queue;
                // A confirmation of what is known changes no forwarding decision.
                if n.mac != mac || n.state != NeighState::Reachable {
                    cx.forwarding_changed();
                }
                *n = fresh;
                q
            }
            None if room => {
                self.neigh.insert((ifport, ip), fresh);
                cx.forwarding_changed();
                None
            }
            None => return,
        };
        cx.count(StageEvent::NeighLearned);
        let here = cx.stage_index();
        self.held.drain(&mut waiting, |p| cx.release(p, here));
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

impl ArpStage {
    /// Give a routed packet its MACs, or hold it and ask ARP.
    fn resolve(&mut self, cx: &mut Context<'_>, batch: &mut Batch, i: usize) {
        let pkt = batch.pkt(i);
        let m = {
            let mr = cx.pool.meta(pkt);
            let next_hop = if mr.l3_kind == L3Kind::Ipv6 { IpAddr::V6(mr.next_hop6) } else { IpAddr::V4(mr.next_hop) };
            Routed { out_port: mr.out_port, next_hop }
        };
        // Copy the four fields needed: cloning the interface would allocate.
        let Some(iface) = self.index.at(m.out_port).and_then(|k| self.config.interfaces.get(k)).map(|f| IfAddr {
            port: f.port,
            mac: f.mac,
            ip: f.ip,
            ip6: f.ip6.map(|(a, _)| a),
            bvi: f.bvi,
        }) else {
            cx.drop(batch, i, DropReason::NeighFailed);
            return;
        };
        let key = (iface.port, m.next_hop);
        let now = cx.now;
        // A reachable entry unconfirmed for REACHABLE_TIME is STALE: still used, but
        // re-asked once a second; after MAX_PROBES unanswered it is forgotten and
        // packets wait for a fresh answer (a pod re-created with a new MAC).
        let mut stale_probe = false;
        let fresh = |k: &Memo| k.key == key && now <= k.fresh_until;
        let mut slot = None;
        // Until when the answer holds (the fast path may replay it that long).
        let mut fresh_until = Instant::ZERO;
        let memo = match self.last.filter(fresh) {
            Some(k) => {
                fresh_until = k.fresh_until;
                Some(k.mac)
            }
            None => {
                let s = memo_slot(&key);
                slot = Some(s);
                let hit = self.memo.get(s).copied().flatten().filter(fresh);
                if let Some(k) = hit {
                    self.last = hit;
                    fresh_until = k.fresh_until;
                }
                hit.map(|k| k.mac)
            }
        };
        // One lookup for both the stale check and the MAC.
        let found = if memo.is_some() { None } else { self.neigh.get_mut(&key) };
        let known = match found.filter(|n| n.state == NeighState::Reachable) {
            _ if memo.is_some() => memo,
            Some(n) => {
                if now.saturating_since(n.confirmed) > REACHABLE_TIME && now.saturating_since(n.last_probe) >= RETRANS {
                    if n.probes >= MAX_PROBES {
                        n.state = NeighState::Incomplete;
                        n.probes = 0;
                    } else {
                        n.probes += 1;
                        n.last_probe = now;
                        stale_probe = true;
                    }
                } else {
                    fresh_until = n.confirmed + REACHABLE_TIME;
                    let m = Memo { key, mac: n.mac, fresh_until };
                    if let Some(c) = slot.and_then(|s| self.memo.get_mut(s)) {
                        *c = Some(m);
                    }
                    self.last = Some(m);
                    if let (IpAddr::V4(next_hop), false) = (m.key.1, iface.bvi) {
                        let ([a, b, c, d, e, f], [g, h, i, j, k, l]) = (n.mac.0, iface.mac.0);
                        let eth = [a, b, c, d, e, f, g, h, i, j, k, l];
                        self.rewrite4 = Some(Rewrite4 { port: iface.port, next_hop, eth, fresh_until });
                    }
                }
                (n.state == NeighState::Reachable).then_some(n.mac)
            }
            None => None,
        };
        if stale_probe {
            solicit(cx, &iface, m.next_hop);
        }
        if let Some(mac) = known {
            let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
            let l2 = usize::from(meta.l2);
            if let Some((d, s)) = slot.get_mut(l2..l2 + 12).and_then(|e| e.split_first_chunk_mut::<6>()) {
                d.copy_from_slice(&mac.0);
                if !meta.flags.contains(PktFlags::KEEP_SRC_MAC) {
                    s.copy_from_slice(&iface.mac.0);
                }
            }
            meta.flags.remove(PktFlags::ROUTED);
            if iface.bvi || now + FAST_PATH_LIFE > fresh_until {
                // Into a bridge, or a next hop turning stale soon: not for the fast
                // path. (The bridge's decision depends only on its FDB, whose changes
                // move the pipeline's generation, but a packet into the bridge is held
                // and leaves after the batch's other packets: a replayed one would leave
                // before the held packets of its flow that came earlier.)
                meta.flags.remove(PktFlags::OFFLOAD);
            }
            if iface.bvi {
                // Into the bridge from its own interface: the bridge picks the port.
                meta.in_port = iface.port;
                meta.out_port = PortId::NONE;
                if let Some(bridge) = cx.stage_by_name("bridge") {
                    batch.hold(i);
                    cx.release(pkt, bridge);
                } else {
                    cx.drop(batch, i, DropReason::NeighFailed);
                }
            }
            cx.trace_note(pkt, TraceNote::Msg("neighbour known"));
            return;
        }
        // Unknown: queue the packet and ask (a full table takes no new entry).
        if !self.neigh.contains_key(&key) && self.neigh.len() >= MAX_NEIGHBOURS {
            cx.drop(batch, i, DropReason::NeighFailed);
            return;
        }
        let entry = self.neigh.entry(key).or_insert(Neigh {
            state: NeighState::Incomplete,
            mac: EthernetAddress::default(),
            confirmed: Instant::ZERO,
            probes: 0,
            last_probe: Instant::ZERO,
            queue: None,
        });
        let probe_due = entry.probes == 0 || now.saturating_since(entry.last_probe) >= RETRANS;
        if probe_due && entry.probes >= MAX_PROBES {
            // Given up: drop what waited and start over with this packet.
            entry.probes = 0;
            self.held.drain(&mut entry.queue, |p| cx.drop_held(p, DropReason::NeighFailed));
        }
        if self.held.push(&mut entry.queue, pkt) {
            batch.hold(i);
        } else {
            cx.drop(batch, i, DropReason::NeighQueueFull);
        }
        if entry.probes == 0 || now.saturating_since(entry.last_probe) >= RETRANS {
            entry.probes += 1;
            entry.last_probe = now;
            solicit(cx, &iface, m.next_hop);
        }
    }
}

/// An ARP request for `target` from `iface`, as Linux's `arp_solicit()`: broadcast,
/// sender = the interface's MAC and address, target MAC zero. On a bridge interface it
/// enters the bridge (flooded to the pods); on a routed port it goes straight out.
/// The metadata fields `resolve` reads (not a copy of the whole metadata per packet).
#[derive(Clone, Copy)]
struct Routed {
    out_port: PortId,
    next_hop: IpAddr,
}

/// What the neighbour code needs of an interface (a `Copy` view of [`L3If`]).
#[derive(Clone, Copy, Debug)]
struct IfAddr {
    port: PortId,
    mac: EthernetAddress,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    bvi: bool,
}

/// Ask for `target`: ARP for IPv4, a neighbour solicitation for IPv6.
fn solicit(cx: &mut Context<'_>, iface: &IfAddr, target: IpAddr) {
    match target {
        IpAddr::V4(t) => send_request(cx, iface, t),
        IpAddr::V6(t) => send_solicit6(cx, iface, t),
    }
}

/// A neighbour solicitation for `target` (see [`nd`]), from the interface's address of
/// the target's scope.
fn send_solicit6(cx: &mut Context<'_>, iface: &IfAddr, target: Ipv6Addr) {
    let src = if super::route::is_link_local6(target) { Some(link_local(iface.mac)) } else { iface.ip6 };
    let Some(src) = src else { return };
    let Some(q) = cx.build(nd::frame_len(true), |buf| nd::write_solicit(buf, iface.mac, src, target)) else {
        return;
    };
    nd_meta(cx, q, iface.port, PktFlags::L2_MULTI);
    cx.count(StageEvent::NdSolicitSent);
    send_out(cx, q, iface);
}

/// Metadata of an ND frame the stage built: Ethernet, IPv6, ICMPv6, parsed.
fn nd_meta(cx: &mut Context<'_>, q: PktId, in_port: PortId, extra: PktFlags) {
    let m = cx.pool.meta_mut(q);
    m.l3 = m.l2 + 14;
    m.l4 = m.l2 + 54;
    m.l3_kind = L3Kind::Ipv6;
    m.ip_proto = 58;
    m.flags = PktFlags::PARSED | PktFlags::HAS_L4 | extra;
    m.in_port = in_port;
}

/// Send a frame the stage made from `iface`: into the bridge for a bridge interface
/// (flooded to its ports), straight out of a routed port.
fn send_out(cx: &mut Context<'_>, q: PktId, iface: &IfAddr) {
    if iface.bvi {
        match cx.stage_by_name("bridge") {
            Some(b) => cx.inject(q, b),
            None => {
                let _ = cx.pool.free(q);
            }
        }
    } else {
        cx.transmit_generated(q, iface.port);
    }
}

fn send_request(cx: &mut Context<'_>, iface: &IfAddr, target: Ipv4Addr) {
    let eth =
        EthernetRepr { src: iface.mac, dst: EthernetAddress::BROADCAST, vlan_tci: None, ethertype: EtherType::Arp };
    let req = ArpRepr {
        operation: ArpOperation::Request,
        sender_mac: iface.mac,
        sender_ip: iface.ip,
        target_mac: EthernetAddress::default(),
        target_ip: target,
    };
    let Some(q) = cx.build(42, |buf| {
        eth.emit(buf).ok()?;
        req.emit(buf.get_mut(14..)?).ok()
    }) else {
        return;
    };
    let m = cx.pool.meta_mut(q);
    m.l3 = m.l2 + 14;
    m.l3_kind = L3Kind::Arp;
    m.flags = PktFlags::PARSED | PktFlags::L2_MULTI;
    m.in_port = iface.port;
    cx.count(StageEvent::ArpRequestSent);
    send_out(cx, q, iface);
}

impl ArpStage {
    /// A neighbour solicitation or advertisement for the node (see [`nd`]); other IPv6
    /// packets pass.
    fn neighbour_discovery(&mut self, cx: &mut Context<'_>, batch: &mut Batch, i: usize, m: &crate::buf::PktMeta) {
        let pkt = batch.pkt(i);
        let (l2, l3, l4) = (usize::from(m.l2), usize::from(m.l3), usize::from(m.l4));
        let end = usize::from(m.head()) + usize::from(m.len());
        let slot = cx.pool.slot(pkt);
        let icmp_type =
            if m.ip_proto == 58 && m.flags.contains(PktFlags::HAS_L4) { slot.get(l4).copied() } else { None };
        if !matches!(icmp_type, Some(nd::NS | nd::NA)) || slot.get(l3 + 7) != Some(&255) {
            return;
        }
        let eth_src = slot.get(l2 + 6..l2 + 12).map(EthernetAddress::from_bytes).unwrap_or_default();
        let msg = match slot.get(l3..end).map(nd::check) {
            Some(Ok(msg)) => msg,
            Some(Err(r)) => {
                cx.drop(batch, i, r);
                return;
            }
            None => {
                cx.drop(batch, i, DropReason::NdInvalid);
                return;
            }
        };
        if msg.kind == nd::NA {
            // RFC 4861 7.2.5: without a target link-layer address, nothing to learn.
            if let Some(mac) = msg.lladdr {
                self.learn(cx, m.in_port, IpAddr::V6(msg.target), mac);
            }
            cx.drop(batch, i, DropReason::NdProcessed);
            return;
        }
        let mine = self
            .iface_for_port(m.in_port)
            .filter(|f| f.ip6.is_some_and(|(a, _)| a == msg.target) || link_local(f.mac) == msg.target);
        let Some(mac) = mine.map(|f| f.mac) else {
            cx.drop(batch, i, DropReason::NdNotForUs);
            return;
        };
        if let (false, Some(sl)) = (msg.src.is_unspecified(), msg.lladdr) {
            self.learn(cx, m.in_port, IpAddr::V6(msg.src), sl);
        }
        let mut with_opt = false;
        let built = cx.build(nd::frame_len(true), |buf| {
            with_opt = nd::write_advert(buf, &msg, mac, eth_src)?;
            Some(())
        });
        if let Some(q) = built {
            cx.pool.meta_mut(q).trim(u16::try_from(nd::frame_len(with_opt)).unwrap_or(0));
            nd_meta(cx, q, m.in_port, PktFlags::empty());
            cx.count(StageEvent::NdAdvertSent);
            cx.transmit_generated(q, m.in_port);
        }
        cx.drop(batch, i, DropReason::NdProcessed);
    }
}

impl Stage for ArpStage {
    fn name(&self) -> &'static str {
        "arp"
    }

    fn skips_final_batches(&self) -> bool {
        true
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        // The shortcut's conditions that do not depend on the packet, taken once: fresh
        // now, and fresh for the fast path's lifetime (else the packets after this one
        // must see the next hop turn stale, so none is offloaded). Taken again after
        // any packet that went another way (resolving or ARP handling may change the
        // shortcut), so that every packet sees what the ones before it did.
        let now = cx.now;
        let current = |this: &Self, cx: &Context<'_>| {
            let r = this.rewrite4.filter(|r| now <= r.fresh_until && !cx.tracing());
            (r, r.is_some_and(|r| now + FAST_PATH_LIFE <= r.fresh_until))
        };
        let (mut shortcut, mut offload_ok) = current(self, cx);
        let mut stale = false;
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            if stale {
                (shortcut, offload_ok) = current(self, cx);
                stale = false;
            }
            let pkt = batch.pkt(i);
            // One look-up for the frame and the metadata.
            let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
            let (flags, kind) = (meta.flags, meta.l3_kind);
            if flags.contains(PktFlags::ROUTED) {
                if let Some(r) = &shortcut
                    && kind == L3Kind::Ipv4
                    && r.next_hop == meta.next_hop
                    && r.port == meta.out_port
                    && let Some(e) = slot.get_mut(usize::from(meta.l2)..).and_then(|e| e.first_chunk_mut::<12>())
                {
                    *e = r.eth;
                    meta.flags.remove(PktFlags::ROUTED);
                    if !offload_ok {
                        meta.flags.remove(PktFlags::OFFLOAD);
                    }
                    continue;
                }
                stale = true;
                self.resolve(cx, batch, i);
                continue;
            }
            stale = true;
            if kind != L3Kind::Arp && kind != L3Kind::Ipv6 {
                continue;
            }
            let m = *cx.pool.meta(pkt);
            if m.flags.contains(PktFlags::BRIDGED) && !m.flags.contains(PktFlags::L2_LOCAL) {
                continue; // between pods on a bridge: not ours
            }
            if kind == L3Kind::Ipv6 {
                self.neighbour_discovery(cx, batch, i, &m);
                continue;
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
                if !spa.is_unspecified() {
                    self.learn(cx, m.in_port, IpAddr::V4(spa), sha);
                }
                cx.drop(batch, i, DropReason::ArpProcessed);
                continue;
            }
            let Some((mac, event)) = self.answer_mac(m.in_port, spa, tpa) else {
                cx.drop(batch, i, DropReason::ArpNotForUs);
                continue;
            };
            // Linux's arp_process() records the asker (neigh_event_ns) before it answers,
            // for its own addresses and for proxied ones alike: a Calico host knows a
            // pod's MAC from the pod's ARP for 169.254.1.1.
            if !spa.is_unspecified() {
                self.learn(cx, m.in_port, IpAddr::V4(spa), sha);
            }
            // Turn the request into the reply, in place.
            let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
            let reply = ArpRepr {
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
