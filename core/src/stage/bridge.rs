//! The `bridge` stage: a Linux bridge (Flannel's `cni0`) in a stage. MAC learning per
//! bridge domain with ageing, static FDB entries, flooding, hairpin, and the node's
//! own interface on the bridge.
//!
//! For each live packet that arrived on a bridge port:
//! 1. learn the source MAC on the ingress port (parse already dropped invalid sources);
//! 2. destination = the domain's gateway MAC (the node's interface, like cni0's
//!    address): mark `L2_LOCAL` and leave it to the ARP and route stages;
//! 3. broadcast or multicast: a copy to every other port of the domain, and the
//!    packet itself goes local when the domain has a gateway (Linux passes a bridge
//!    broadcast up to the bridge device too), else out of the first port;
//! 4. known unicast: `out_port` = the learned port, unless that is the ingress port
//!    and the port is not in hairpin mode (`bridge_same_port`, as `should_deliver()`);
//! 5. unknown unicast: flooded like a broadcast, but never local.
//!
//! The bridge records its decision in metadata (`out_port`, `BRIDGED`) and leaves the
//! packet `Continue`: IP frames bridged between pods still pass conntrack and NAT
//! (`bridge-nf-call-iptables=1`, which Kubernetes requires), and the `egress` stage
//! transmits. Flood copies go straight out (`Context::transmit_copy`).
//!
//! # Differences from Linux
//! - Flood copies are full copies in fresh slots, not shared-data clones: slot
//!   ownership stays simple, and only floods pay for it.
//! - The FDB is bounded (`fdb_capacity`); Linux's `fdb_max_learned` defaults to no
//!   limit. Frames to MACs not learned for lack of room flood, as in Linux at its limit.
//! - No STP, no VLAN filtering yet: a domain is one broadcast domain.
//!
//! Batch order matters as in Linux's per-packet order: a source learned from packet i
//! is known to packet i+1 of the same batch.

use thiserror::Error;

use crate::buf::{Batch, PktFlags, PortId};
use crate::pipeline::{Context, DropReason, Stage, StageEvent, TraceNote};
use crate::table::fdb::{DEFAULT_AGEING, Fdb, Learn};
use crate::time::{Duration, Instant};
use crate::wire::EthernetAddress;
use crate::wire::ethernet::{MAC_MASK, mac64};

/// The MAC the CNI plugins (bridge, Flannel's cni0) give an address: `0a:58:` and the
/// IPv4 address (containernetworking/plugins `hwaddr.GenerateHardwareAddr4`).
pub fn cni_mac(ip: std::net::Ipv4Addr) -> EthernetAddress {
    let [a, b, c, d] = ip.octets();
    EthernetAddress([0x0a, 0x58, a, b, c, d])
}

/// Most ports the bridge maps (port numbers `0..MAX_PORTS`).
pub const MAX_PORTS: usize = 4096;

/// A port of a bridge domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgePort {
    /// The pipeline port.
    pub port: PortId,
    /// Linux `hairpin_mode`: frames may go back out the port they came in on.
    pub hairpin: bool,
}

/// One bridge (broadcast domain).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeDomain {
    /// Name, for errors (`cni0`).
    pub name: String,
    /// Its ports.
    pub ports: Vec<BridgePort>,
    /// The MAC of the node's own interface on this bridge, if it has one.
    pub gateway_mac: Option<EthernetAddress>,
    /// Static FDB entries.
    pub static_fdb: Vec<(EthernetAddress, PortId)>,
    /// The virtual port of the node's own interface on this bridge (VPP's BVI): packets
    /// the node routes into the bridge enter from it. Not learned, never flooded to.
    pub bvi: Option<PortId>,
}

/// The bridge stage's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The domains.
    pub domains: Vec<BridgeDomain>,
    /// FDB ageing time (Linux default 300 s).
    pub ageing: Duration,
    /// Most learned entries over all domains.
    pub fdb_capacity: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig { domains: Vec::new(), ageing: DEFAULT_AGEING, fdb_capacity: 16384 }
    }
}

/// A bridge configuration the stage cannot take; names the bridge and the field.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BridgeConfigError {
    /// A port number at or above [`MAX_PORTS`].
    #[error("bridge {bridge:?}: ports: port {port} is out of range (max {max})", max = MAX_PORTS - 1)]
    PortOutOfRange {
        /// Bridge name.
        bridge: String,
        /// The port.
        port: u16,
    },
    /// A port in two domains, or twice in one.
    #[error("bridge {bridge:?}: ports: port {port} is already in bridge {other:?}")]
    PortTaken {
        /// Bridge name.
        bridge: String,
        /// The port.
        port: u16,
        /// Where it already is.
        other: String,
    },
    /// A static entry for a port outside the domain, or for a group address.
    #[error("bridge {bridge:?}: static_fdb: {mac} -> port {port}: {reason}")]
    BadStatic {
        /// Bridge name.
        bridge: String,
        /// The MAC.
        mac: EthernetAddress,
        /// The port.
        port: u16,
        /// Why.
        reason: &'static str,
    },
    /// A gateway MAC that is not unicast.
    #[error("bridge {bridge:?}: gateway_mac: {mac} is not a unicast address")]
    BadGateway {
        /// Bridge name.
        bridge: String,
        /// The MAC.
        mac: EthernetAddress,
    },
}

#[derive(Clone, Copy, Debug)]
struct PortState {
    domain: Option<u16>,
    hairpin: bool,
    bvi: bool,
    /// The domain's gateway MAC ([`mac64`]), [`NO_MAC`] if it has none: read here, the
    /// unicast path needs no domain lookup.
    gateway: u64,
    /// The last source MAC learned on this port and when. A frame from the same MAC
    /// within a second skips the FDB write, as Linux's `br_fdb_update()` only writes
    /// when `jiffies` moved; ageing stays exact to a second.
    recent: u64,
    /// Until when `recent` needs no FDB write (a second after it was written).
    recent_until: Instant,
}

impl Default for PortState {
    fn default() -> Self {
        PortState {
            domain: None,
            hairpin: false,
            bvi: false,
            gateway: NO_MAC,
            recent: NO_MAC,
            recent_until: Instant::ZERO,
        }
    }
}

/// No MAC: above every 48-bit address.
const NO_MAC: u64 = u64::MAX;

/// The bytes of a [`mac64`] word.
#[inline]
fn mac_bytes(v: u64) -> [u8; 6] {
    let [a, b, c, d, e, f, _, _] = v.to_le_bytes();
    [a, b, c, d, e, f]
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct BridgeStage {
    ports: Vec<PortState>,
    domains: Vec<(Vec<PortId>, Option<[u8; 6]>)>,
    fdb: Fdb,
    next_sweep: Instant,
}

impl BridgeStage {
    /// Build from `config`.
    ///
    /// # Errors
    /// [`BridgeConfigError`] naming the bridge and field; nothing is built then.
    pub fn new(config: &BridgeConfig) -> Result<Self, BridgeConfigError> {
        let mut ports: Vec<PortState> = Vec::new();
        let mut domains = Vec::new();
        let mut fdb = Fdb::new(config.fdb_capacity, config.ageing);
        for (d, dom) in config.domains.iter().enumerate() {
            let di = u16::try_from(d).unwrap_or(u16::MAX);
            if let Some(mac) = dom.gateway_mac.filter(|m| !m.is_unicast() || m.0 == [0; 6]) {
                return Err(BridgeConfigError::BadGateway { bridge: dom.name.clone(), mac });
            }
            let mut list = Vec::new();
            for p in &dom.ports {
                let i = usize::from(p.port.0);
                if i >= MAX_PORTS {
                    return Err(BridgeConfigError::PortOutOfRange { bridge: dom.name.clone(), port: p.port.0 });
                }
                if ports.len() <= i {
                    ports.resize(i + 1, PortState::default());
                }
                if let Some(other) = ports.get(i).and_then(|s| s.domain) {
                    let other = config.domains.get(usize::from(other)).map(|o| o.name.clone()).unwrap_or_default();
                    return Err(BridgeConfigError::PortTaken { bridge: dom.name.clone(), port: p.port.0, other });
                }
                if let Some(s) = ports.get_mut(i) {
                    *s = PortState { domain: Some(di), hairpin: p.hairpin, ..PortState::default() };
                }
                list.push(p.port);
            }
            if let Some(b) = dom.bvi {
                let i = usize::from(b.0);
                if i >= MAX_PORTS {
                    return Err(BridgeConfigError::PortOutOfRange { bridge: dom.name.clone(), port: b.0 });
                }
                if ports.len() <= i {
                    ports.resize(i + 1, PortState::default());
                }
                if let Some(other) = ports.get(i).and_then(|s| s.domain) {
                    let other = config.domains.get(usize::from(other)).map(|o| o.name.clone()).unwrap_or_default();
                    return Err(BridgeConfigError::PortTaken { bridge: dom.name.clone(), port: b.0, other });
                }
                if let Some(s) = ports.get_mut(i) {
                    *s = PortState { domain: Some(di), bvi: true, ..PortState::default() };
                }
            }
            for (mac, port) in &dom.static_fdb {
                let bad =
                    |reason| BridgeConfigError::BadStatic { bridge: dom.name.clone(), mac: *mac, port: port.0, reason };
                if !mac.is_unicast() {
                    return Err(bad("not a unicast address"));
                }
                if !list.contains(port) {
                    return Err(bad("the port is not in this bridge"));
                }
                fdb.add_static(di, mac.0, *port);
            }
            domains.push((list, dom.gateway_mac.map(|m| m.0)));
        }
        for st in &mut ports {
            if let Some(g) = st.domain.and_then(|d| domains.get(usize::from(d))).and_then(|(_, g)| *g) {
                st.gateway = mac64(&g);
            }
        }
        Ok(BridgeStage { ports, domains, fdb, next_sweep: Instant::ZERO })
    }

    /// Take a new configuration between batches. Learned FDB entries survive when every
    /// domain keeps its name, ports and static entries and the ageing and capacity are
    /// unchanged (a hairpin or gateway change); otherwise the FDB starts empty, as Linux
    /// flushes a port's entries when it leaves a bridge.
    ///
    /// # Errors
    /// As [`BridgeStage::new`]; the running configuration stays.
    pub fn reconfigure(&mut self, old: &BridgeConfig, new: &BridgeConfig) -> Result<(), BridgeConfigError> {
        let mut fresh = BridgeStage::new(new)?;
        let same = old.ageing == new.ageing
            && old.fdb_capacity == new.fdb_capacity
            && old.domains.len() == new.domains.len()
            && old.domains.iter().zip(&new.domains).all(|(a, b)| {
                a.name == b.name
                    && a.static_fdb == b.static_fdb
                    && a.bvi == b.bvi
                    && a.ports.iter().map(|p| p.port).eq(b.ports.iter().map(|p| p.port))
            });
        if same {
            core::mem::swap(&mut fresh.fdb, &mut self.fdb);
            fresh.next_sweep = self.next_sweep;
        }
        *self = fresh;
        Ok(())
    }

    /// The FDB (for inspection and tests).
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// Learn `src` on `in_port`, and remember it as the port's last source for a
    /// second. Out of line: a busy source skips it (`recent`), and the loop around
    /// keeps its registers (`benches/callgrind.sh`: a few instructions per packet).
    #[cold]
    #[inline(never)]
    fn learn(&mut self, dom: u16, src: u64, in_port: PortId, now: Instant) -> Learn {
        let port = usize::from(in_port.0);
        if let Some(r) = self.ports.get_mut(port) {
            r.recent = src;
            r.recent_until = now + LEARN_REFRESH;
        }
        let learned = self.fdb.learn(dom, mac_bytes(src), in_port, now);
        if learned == Learn::Moved {
            // The MAC left another port: that port's shortcut is stale.
            for (k, r) in self.ports.iter_mut().enumerate() {
                if r.recent == src && k != port {
                    r.recent = NO_MAC;
                }
            }
        }
        learned
    }

    fn run<const TRACE: bool>(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        let now = cx.now;
        // This batch's unicast lookups: frames to a MAC looked up already skip the
        // FDB; learning that changes an entry clears them. Eight entries, by the MAC's
        // last byte, each keyed by the domain above the MAC's 48 bits in one word;
        // `u64::MAX` (a multicast MAC, never looked up) for none. (With one entry, a
        // pod sending to four others in turn cost the bridge 125 instructions per
        // frame instead of 96: `icount parse_bridge_pairs`.)
        // Keys and answers apart: one array of pairs measured 8 instructions more per
        // frame (`icount parse_bridge_pairs`).
        let mut memo_key = [u64::MAX; MEMO];
        let mut memo_hit: [Option<PortId>; MEMO] = [None; MEMO];
        // FDB changes, counted once per batch (the flow fast path learns only after
        // the last stage, so it sees the change all the same).
        let (mut learned, mut moved, mut full) = (0u64, 0u64, 0u64);
        // The previous packet, when it was forwarded as known unicast: its ingress
        // port, its MAC words and where it went. The next packet from that port with
        // the same MACs gets the same decision without a look at the port or the FDB
        // (its source is then fresh, the memo holds its destination, nothing came in
        // between): a bulk flow's run costs a compare per packet.
        let mut last: Option<(PortId, u64, u64, PortId)> = None;
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            // One look-up for the frame and its metadata; two fields read.
            let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
            let (in_port, l2) = (meta.in_port, usize::from(meta.l2));
            // Two 8-byte loads instead of twelve byte loads: the destination in the
            // low 48 bits of the first, the source in the high 48 of the second (the
            // same words `mac64` makes).
            let Some((w0, w1)) = slot.get(l2..).and_then(|h| h.first_chunk::<12>()).and_then(|h| {
                Some((u64::from_le_bytes(*h.first_chunk::<8>()?), u64::from_le_bytes(*h.last_chunk::<8>()?)))
            }) else {
                // parse guarantees the header; a packet without one is not ours.
                last = None;
                continue;
            };
            if let Some((p, l0, l1, out)) = last
                && (p, l0, l1) == (in_port, w0, w1)
                && !TRACE
            {
                meta.out_port = out;
                meta.flags |= PktFlags::BRIDGED;
                continue;
            }
            last = None;
            let (dst, src) = (w0 & MAC_MASK, w1 >> 16);
            let port = usize::from(in_port.0);
            // The port's fields the frame needs, not a copy of its whole state.
            let Some(state) = self.ports.get(port) else { continue };
            let Some(dom) = state.domain else { continue };
            let (hairpin, bvi, gateway) = (state.hairpin, state.bvi, state.gateway);
            let fresh = state.recent == src && now < state.recent_until;
            if !bvi && !fresh {
                match self.learn(dom, src, in_port, now) {
                    Learn::Learned => {
                        memo_key = [u64::MAX; MEMO];
                        learned += 1;
                    }
                    Learn::Moved => {
                        memo_key = [u64::MAX; MEMO];
                        moved += 1;
                    }
                    Learn::Full => full += 1,
                    Learn::Refreshed | Learn::Static => {}
                }
            }
            if dst & 1 != 0 {
                // Broadcast / multicast: every other port, and the node itself (unless
                // the node sent it).
                let Some((dom_ports, gateway)) = self.domains.get(usize::from(dom)) else { continue };
                let to_local = gateway.is_some() && !bvi;
                if !flood(cx, batch, i, dom_ports, in_port, to_local) {
                    continue;
                }
                if to_local {
                    cx.pool.meta_mut(pkt).flags |= PktFlags::L2_LOCAL;
                }
                if TRACE {
                    cx.trace_note(pkt, TraceNote::Msg("flood (broadcast/multicast)"));
                }
            } else if dst == gateway && !bvi {
                meta.flags |= PktFlags::L2_LOCAL;
                if TRACE {
                    cx.trace_note(pkt, TraceNote::Msg("to the node's bridge interface"));
                }
            } else {
                let key = dst | (u64::from(dom) << 48);
                // The MAC's last byte (bits 40..48 of the word), modulo the entries.
                #[allow(clippy::cast_possible_truncation)]
                let m = (dst >> 40) as usize % MEMO;
                let hit = match (memo_key.get(m), memo_hit.get(m)) {
                    (Some(&k), Some(&hit)) if k == key => hit,
                    _ => {
                        let hit = self.fdb.lookup(dom, mac_bytes(dst), now);
                        if let (Some(k), Some(h)) = (memo_key.get_mut(m), memo_hit.get_mut(m)) {
                            (*k, *h) = (key, hit);
                        }
                        hit
                    }
                };
                match hit {
                    Some(p) if p == in_port && !hairpin => cx.drop(batch, i, DropReason::BridgeSamePort),
                    Some(p) => {
                        meta.out_port = p;
                        meta.flags |= PktFlags::BRIDGED;
                        last = Some((in_port, w0, w1, p));
                        if TRACE {
                            cx.trace_note(pkt, TraceNote::Port("fdb hit", p));
                        }
                    }
                    None => {
                        let Some((dom_ports, _)) = self.domains.get(usize::from(dom)) else { continue };
                        if flood(cx, batch, i, dom_ports, in_port, false) && TRACE {
                            cx.trace_note(pkt, TraceNote::Msg("flood (unknown unicast)"));
                        }
                    }
                }
            }
        }
        if learned + moved > 0 {
            cx.forwarding_changed();
        }
        for (event, n) in
            [(StageEvent::FdbLearned, learned), (StageEvent::FdbMoved, moved), (StageEvent::FdbFull, full)]
        {
            if n > 0 {
                cx.count_n(event, n);
            }
        }
        if now >= self.next_sweep {
            let aged = self.fdb.sweep(now);
            if aged > 0 {
                cx.forwarding_changed();
            }
            for _ in 0..aged {
                cx.count(StageEvent::FdbAged);
            }
            self.next_sweep = now + Duration::from_secs(1);
        }
    }
}

/// Entries of the per-batch memo of FDB answers.
const MEMO: usize = 8;

/// How often a busy source refreshes its FDB entry.
const LEARN_REFRESH: Duration = Duration::from_secs(1);

/// Send copies to every port of `ports` but `ingress`; the packet itself goes to the
/// first of them unless it stays local. Returns false when it was dropped (nowhere to go).
fn flood(cx: &mut Context<'_>, batch: &mut Batch, i: usize, ports: &[PortId], ingress: PortId, local: bool) -> bool {
    let pkt = batch.pkt(i);
    let mut others = ports.iter().copied().filter(|p| *p != ingress);
    cx.count(StageEvent::Flooded);
    if !local {
        let Some(first) = others.next() else {
            cx.drop(batch, i, DropReason::BridgeNoPort);
            return false;
        };
        let m = cx.pool.meta_mut(pkt);
        m.out_port = first;
        m.flags |= PktFlags::BRIDGED;
    }
    for p in others {
        cx.count(StageEvent::FloodCopy);
        cx.transmit_copy(pkt, p);
    }
    true
}

impl Stage for BridgeStage {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        if cx.tracing() { self.run::<true>(cx, batch) } else { self.run::<false>(cx, batch) }
    }
}
