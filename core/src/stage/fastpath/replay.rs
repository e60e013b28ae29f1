//! The `fastpath` stage: replays learned flows (see the [module docs](super)).

use super::cache::{Entry, FlowCache, Key, SharedFlows, transport_csum};
use crate::buf::{Batch, BufPool, CsumState, L3Kind, PktFlags, PktId, PktMeta, PortId};
use crate::pipeline::{Context, Stage, StageEvent};
use crate::wire::checksum::{fold32, update_delta};
use std::net::Ipv4Addr;

use crate::stage::conntrack::SharedConntrack;
use crate::stage::conntrack::lookup::segment;
use crate::stage::conntrack::proto::ProtoState;
use crate::stage::conntrack::tcp::{Dir, TcpConfig, TcpState, Verdict};
use crate::stage::overlay::{Encap, OverlayConfig};
use crate::table::conntrack::CtEntry;
use crate::table::conntrack::status;
use crate::time::Duration;

/// See the [module docs](super).
#[derive(Debug)]
pub struct FastPathStage {
    flows: SharedFlows,
    ct: SharedConntrack,
    /// First in the pipeline, ahead of `parse`: it reads the frames itself.
    before_parse: bool,
    /// Ahead of `parse` on a node that decapsulates: its tunnel (the VXLAN UDP port,
    /// none for IPIP), whose frames it leaves to the stage after decap.
    tunnel: Option<Option<u16>>,
    /// After `decap` on such a node: only packets that came out of the tunnel (this
    /// ingress port) are replayed here; the others were looked up before parse.
    only_from: Option<PortId>,
    /// The keys (ports aside) of this batch's packets that took the slow path so far.
    slow: Vec<Key>,
}

impl FastPathStage {
    /// The replaying stage over a worker's cache and conntrack state (the same as its
    /// [`OffloadStage`](super::OffloadStage)'s and conntrack stages').
    pub fn new(flows: SharedFlows, ct: SharedConntrack) -> Self {
        FastPathStage {
            flows,
            ct,
            before_parse: false,
            tunnel: None,
            only_from: None,
            slow: Vec::with_capacity(crate::buf::BATCH_MAX),
        }
    }

    /// The same, to run first, ahead of `parse` (and of `source_check`, which a hit
    /// does not need: the entry matches the source MAC, address and port it passed).
    /// It checks what `parse` would drop a frame for and leaves such frames to it.
    /// On a node that decapsulates, see [`Self::tunnel`].
    #[must_use]
    pub fn before_parse(mut self) -> Self {
        self.before_parse = true;
        self
    }

    /// On a node that decapsulates (through `overlay`), the stage ahead of `parse`
    /// leaves the tunnel's frames (VXLAN to its port, or IPIP) as it leaves anything it
    /// cannot replay, and a second one after `decap` replays only what came out of the
    /// tunnel (its port): give this to both (`before_parse` to the first), sharing one
    /// cache. A tunnelled frame cannot be replayed ahead of decap (its flow is the
    /// inner one), and the second stage sees the packets the first let through in
    /// order, so the rules on overtaking hold across the two.
    #[must_use]
    pub fn tunnel(mut self, overlay: &OverlayConfig) -> Self {
        if self.before_parse {
            self.tunnel = Some(match overlay.encap {
                Encap::Vxlan { port, .. } => Some(port),
                Encap::Ipip => None,
            });
        } else {
            self.only_from = Some(overlay.tunnel_port);
        }
        self
    }

    /// The cache it replays from (for inspection).
    pub fn flows(&self) -> SharedFlows {
        self.flows.clone()
    }
}

/// Flags a candidate must have, among those it must not.
const CHECKED: PktFlags = PktFlags::PARSED
    .union(PktFlags::HAS_FLOW)
    .union(PktFlags::HAS_L4)
    .union(PktFlags::FRAGMENT)
    .union(PktFlags::VLAN)
    .union(PktFlags::GENERATED)
    .union(PktFlags::TRACE)
    .union(PktFlags::L2_MULTI);
const WANTED: PktFlags = PktFlags::PARSED.union(PktFlags::HAS_FLOW).union(PktFlags::HAS_L4);

/// The flow key and header offsets of a packet the fast path could carry: whole
/// IPv4 UDP or TCP without options or tag (from `only_from` when given: after decap,
/// a packet from elsewhere missed ahead of parse, and counts as unknown here).
#[inline]
fn candidate(m: &PktMeta, only_from: Option<PortId>) -> Option<(Key, u16)> {
    if m.flags & CHECKED != WANTED
        || only_from.is_some_and(|p| m.in_port != p)
        || m.l3_kind != L3Kind::Ipv4
        || (m.flow.proto != 17 && m.flow.proto != 6)
        || m.l3 != m.l2 + 14
        || m.l4 != m.l3 + 20
    {
        return None;
    }
    let partial = if matches!(m.csum, CsumState::Partial { .. }) { Key::PARTIAL } else { 0 };
    let f = &m.flow;
    let (s, d) = (&f.src, &f.dst);
    let mut key =
        Key::new(m.in_port, [s[0], s[1], s[2], s[3]], [d[0], d[1], d[2], d[3]], f.src_port, f.dst_port, f.proto);
    key.rest |= partial;
    Some((key, m.l2))
}

/// [`candidate`] ahead of `parse`, from the frame's bytes: also `None` for anything
/// `parse` would drop or look at more closely (a bad IPv4 header checksum, lengths
/// that do not add up), which then takes the slow path. (With L4 checksums to
/// verify, the stage replays nothing ahead of parse.)
#[inline]
fn candidate_raw(slot: &[u8], m: &PktMeta) -> Option<(Key, u16)> {
    if m.flags.intersects(PktFlags::TRACE | PktFlags::GENERATED) {
        return None;
    }
    let (head, len) = (m.head(), m.len());
    let f = slot.get(usize::from(head)..usize::from(head) + usize::from(len))?;
    let h = f.first_chunk::<42>()?;
    let ip = h.get(14..34)?.first_chunk::<20>()?;
    let proto = ip[9];
    // IPv4 without options (ethertype, version and header length in one masked
    // word), not a fragment (MF and offset), TCP or UDP.
    let (start, frag) = (h.get(12..16)?.first_chunk::<4>()?, ip.get(6..8)?.first_chunk::<2>()?);
    if u32::from_le_bytes(*start) & 0x00ff_ffff != 0x0045_0008
        || u16::from_le_bytes(*frag) & 0xff3f != 0
        || !matches!(proto, 6 | 17)
    {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    // The header checksum is verified in `replay`, against the entry's fixed words.
    if total < 28 || total > f.len() - 14 {
        return None;
    }
    let l4 = f.get(34..14 + total)?;
    let ok = if proto == 17 {
        let ulen = usize::from(u16::from_be_bytes([h[38], h[39]]));
        (8..=l4.len()).contains(&ulen)
    } else {
        let hl = usize::from(*l4.get(12)? >> 4) * 4;
        hl >= 20 && hl <= l4.len()
    };
    if !ok {
        return None;
    }
    let partial = if matches!(m.csum, CsumState::Partial { .. }) { Key::PARTIAL } else { 0 };
    let (addrs, ports) = (ip.get(12..20)?.first_chunk::<8>()?, h.get(34..38)?.first_chunk::<4>()?);
    let mut key = Key::from_wire(m.in_port, *addrs, *ports, proto);
    key.rest |= partial;
    Some((key, head))
}

/// For a frame of the tunnel (VXLAN to `vxlan_port`, or IPIP without one): the
/// inner connection (ingress port aside) when it carries an IPv4 UDP or TCP packet
/// without options and not a fragment, else `Some(None)`; `None` for any other frame.
fn tunnelled(slot: &[u8], m: &PktMeta, vxlan_port: Option<u16>) -> Option<Option<Key>> {
    let f = slot.get(usize::from(m.head())..usize::from(m.head()) + usize::from(m.len()))?;
    let outer = f.get(12..34)?;
    if outer.get(..3)? != [0x08, 0x00, 0x45] {
        return None;
    }
    let inner = match (vxlan_port, outer.get(11)?) {
        (Some(port), 17) if f.get(36..38)? == port.to_be_bytes() => {
            f.get(62..64).filter(|t| *t == [0x08, 0x00]).and_then(|_| f.get(64..))
        }
        (None, 4) => f.get(34..),
        _ => return None,
    };
    let Some(h) = inner.and_then(|i| i.first_chunk::<24>()) else { return Some(None) };
    let proto = h[9];
    if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 || !matches!(proto, 6 | 17) {
        return Some(None);
    }
    let (Some(addrs), Some(ports)) =
        (h.get(12..20).and_then(|a| a.first_chunk::<8>()), h.get(20..24).and_then(|p| p.first_chunk::<4>()))
    else {
        return Some(None);
    };
    Some(Some(Key::from_wire(PortId(0), *addrs, *ports, proto).connection()))
}

/// True when a packet of `e`'s connection, in either direction, took the slow path
/// earlier in this batch (`slow`: their keys, ports aside).
/// Out of line: only after a slow packet, and the replay loop keeps its registers.
#[cold]
#[inline(never)]
fn slow_before(slow: &[Key], e: &Entry, c: &CtEntry<Ipv4Addr, ProtoState>) -> bool {
    // Packets the other way arrive with the other direction's tuple.
    let t = if e.reply_dir { &c.original } else { &c.reply };
    let other = Key::new(PortId(0), t.src.octets(), t.dst.octets(), t.sport, t.dport, t.proto).connection();
    let own = e.key.connection();
    slow.iter().any(|k| *k == own || *k == other)
}

/// Track TCP segment `pkt` (IPv4 header of 20 bytes after the Ethernet header at
/// `l2`) on a copy of connection `c`'s state: the state and timeout to keep when the
/// tracker accepts it and the connection stays established with the same status;
/// `None` (the slow path decides) otherwise.
#[inline]
fn track_tcp(
    slot: &[u8],
    l2: u16,
    c: &CtEntry<Ipv4Addr, ProtoState>,
    reply_dir: bool,
    cfg: &TcpConfig,
) -> Option<Option<(ProtoState, Duration)>> {
    let l3 = usize::from(l2) + 14;
    let seg = segment(slot, l3, l3 + 20, false)?;
    let mut proto = c.proto;
    let dir = if reply_dir { Dir::Reply } else { Dir::Original };
    let seen = if reply_dir { status::SEEN_REPLY } else { 0 };
    match proto.tcp_packet(dir, &seg, cfg, c.status) {
        Some(Verdict::Accept { state: TcpState::Established, timeout, assured })
            if (!assured || c.status & status::ASSURED != 0) && c.status & seen == seen =>
        {
            Some(Some((proto, timeout)))
        }
        _ => None,
    }
}

/// Bytes 1..9 of the IPv4 header read as a little-endian word: TOS (byte 0 of the
/// word), the flags byte (5) and the TTL (7) kept; length, ID and fragment offset
/// masked out (the offset is zero on every candidate).
const HDR_MASK: u64 = 0xff00_ff00_0000_00ff;

/// The word [`HDR_MASK`] selects, for a TOS, flags byte and TTL.
pub(crate) fn hdr_word(tos: u8, flags: u8, ttl: u8) -> u64 {
    u64::from_le_bytes([tos, 0, 0, 0, 0, flags, 0, ttl])
}

/// The low 16 bits of `x`.
#[inline(always)]
fn low16(x: u64) -> u16 {
    u16::try_from(x & 0xffff).unwrap_or(0)
}

/// Apply `e` to the packet whose Ethernet header is at `l2`: rewrite the inner IPv4
/// and UDP headers, put the prefix in front. False (packet untouched) when the frame
/// does not match what was learned.
#[inline]
fn replay(slot: &mut [u8], meta: &mut PktMeta, l2: u16, e: &Entry, verify: bool) -> bool {
    // One body per prefix size (Ethernet, IPIP, VXLAN), so that every offset is a
    // constant and the compiler drops the bounds checks.
    match e.prefix_len {
        14 => replay_fixed::<14, 54>(slot, meta, l2, e, verify),
        64 => replay_fixed::<64, 104>(slot, meta, l2, e, verify),
        34 => replay_fixed::<34, 74>(slot, meta, l2, e, verify),
        _ => false,
    }
}

/// [`replay`] for a prefix of `P` bytes; `N` = `P` + 40 (inner IPv4 and the first 20
/// bytes of the transport header, inside the slot whatever the packet's length).
#[inline(always)]
fn replay_fixed<const P: usize, const N: usize>(
    slot: &mut [u8],
    meta: &mut PktMeta,
    l2: u16,
    e: &Entry,
    verify: bool,
) -> bool {
    let Some(new_head) = l2.checked_add(14).and_then(|l3| l3.checked_sub(e.prefix_len.into())) else { return false };
    let Some(frame) = slot.get_mut(usize::from(new_head)..).and_then(|s| s.first_chunk_mut::<N>()) else {
        return false;
    };
    let (pre, rest) = frame.split_at_mut(P);
    let (Ok(pre), Some(ip)) = (<&mut [u8; P]>::try_from(pre), rest.first_chunk_mut::<40>()) else { return false };
    // The Ethernet header as received ends the prefix's room.
    let Some(eth) = pre.last_chunk::<14>().and_then(|h| h.first_chunk::<12>()) else { return false };
    // TOS, flags byte and TTL in one masked word (bytes 1..9: the length and ID vary).
    let Some(w) = ip.get(1..9).and_then(|w| w.first_chunk::<8>()) else { return false };
    let w = u64::from_le_bytes(*w);
    if *eth != e.eth || w & HDR_MASK != e.hdr_word {
        return false;
    }
    // The length, ID and header checksum as they lie: the entry's sums are in wire
    // order (see `Entry::ip_fixed`), so the checksum work needs no byte swap.
    let (total_w, id_w) = (low16(w >> 8), low16(w >> 24));
    let csum_w = u16::from_le_bytes([ip[10], ip[11]]);
    // The header checksum as parse verifies it (ip_rcv): every word but the length,
    // the ID and the checksum itself is the entry's (matched above and by the key),
    // so their sum is precomputed.
    if verify && fold32(e.ip_fixed + u32::from(total_w) + u32::from(id_w) + u32::from(csum_w)) != 0xffff {
        return false;
    }
    let total = total_w.swap_bytes();
    // `max_len` is below 64 KiB - 64: the tunnel's 50 bytes cannot overflow the
    // outer length.
    if total > e.max_len || usize::from(total) + 14 > usize::from(meta.len()) {
        return false;
    }
    // The prefix, then the inner packet without Ethernet padding (parse trims it; a
    // no-op after parse): from `new_head` (N bytes there, above) to the inner packet's
    // end, inside the old window (checked above).
    meta.set_window(new_head, total + u16::from(e.prefix_len));
    // Inner IPv4: TTL, addresses and the header checksum.
    ip[8] = e.new_ttl;
    ip[12..16].copy_from_slice(&e.src);
    ip[16..20].copy_from_slice(&e.dst);
    ip[10..12].copy_from_slice(&update_delta(csum_w, e.ip_delta).to_le_bytes());
    // Ports and the transport checksum (UDP: zero stays zero).
    ip[20..24].copy_from_slice(&e.ports);
    let at = if e.tcp { 36 } else { 26 };
    if let Some(f) = ip.get_mut(at..).and_then(|f| f.first_chunk_mut::<2>()) {
        *f = transport_csum(u16::from_le_bytes(*f), e.l4_delta, e.key.partial(), e.tcp).to_le_bytes();
    }
    if let Some(src) = e.prefix.first_chunk::<P>() {
        *pre = *src;
    }
    // An Ethernet prefix has no outer header; VXLAN's is 64 bytes, IPIP's 34 (tests
    // on the constant: no branch per packet).
    if P > 14 {
        let o = e.outer;
        // The outer IPv4 header at 14: its length, ID and checksum, as encap writes them.
        let outer_total = total + u16::from(e.prefix_len) - 14;
        let id = (id_w.swap_bytes() & o.id_mask).wrapping_add(o.salt);
        let (total_w, id_w) = (outer_total.swap_bytes(), id.swap_bytes());
        let c = !fold32(o.fixed + u32::from(total_w) + u32::from(id_w));
        if let Some(h) = pre.get_mut(14..).and_then(|h| h.first_chunk_mut::<20>()) {
            h[2..4].copy_from_slice(&total_w.to_le_bytes());
            h[4..6].copy_from_slice(&id_w.to_le_bytes());
            h[10..12].copy_from_slice(&c.to_le_bytes());
        }
        if P == 64
            && let Some(u) = pre.get_mut(38..).and_then(|u| u.first_chunk_mut::<2>())
        {
            *u = (outer_total - 20).to_be_bytes();
        }
        meta.ip_proto = if P == 64 { 17 } else { 4 };
    }
    meta.l2 = new_head;
    meta.l3 = new_head + 14;
    meta.l4 = new_head + 34;
    meta.out_port = e.out_port;
    true
}

/// A packet left to the slow path (`found`: its flow key and Ethernet header offset,
/// when it is IPv4 UDP or TCP): keep its connection in `slow` and its snapshot for
/// the offload stage. A tunnelled IPv4 UDP or TCP packet counts as the slow packet
/// of its inner connection, as it will be after decap (and is learned there). False
/// when it may change what any later packet sees (anything else), so that nothing
/// more of the batch is replayed. Out of line: the replay loop keeps its registers.
#[cold]
#[inline(never)]
fn pass_on(
    flows: &mut FlowCache,
    pool: &mut BufPool,
    slow: &mut Vec<Key>,
    tunnel: Option<Option<u16>>,
    pkt: PktId,
    found: Option<(Key, u16)>,
) -> bool {
    match (found, tunnel.and_then(|t| tunnelled(pool.slot(pkt), pool.meta(pkt), t))) {
        (_, Some(Some(inner))) => slow.push(inner),
        (_, Some(None)) | (None, None) => return false,
        (Some((key, l2)), None) => {
            slow.push(key.connection());
            snapshot(flows, pool, pkt, key, l2);
        }
    }
    true
}

/// Keep what the offload stage compares a slow packet against: its key and headers
/// as they arrived. Out of line (the slow path's): the replay loop keeps its registers.
#[cold]
#[inline(never)]
fn snapshot(flows: &mut FlowCache, pool: &mut BufPool, pkt: PktId, key: Key, l2: u16) {
    let tag = u32::try_from(pkt.index() + 1).unwrap_or(0);
    let Some(h) = pool.slot(pkt).get(usize::from(l2)..).and_then(|h| h.first_chunk::<54>()).copied() else {
        return;
    };
    if let Some(s) = flows.snap_slot(pkt) {
        s.tag = tag;
        s.key = key;
        s.l3 = l2 + 14;
        s.eth.copy_from_slice(&h[..12]);
        s.ip.copy_from_slice(&h[14..34]);
        s.l4.copy_from_slice(&h[34..54]);
        pool.meta_mut(pkt).flags |= PktFlags::OFFLOAD;
        flows.snaps_taken += 1;
    }
}

impl Stage for FastPathStage {
    fn name(&self) -> &'static str {
        if self.only_from.is_some() { "fastpath_tunnel" } else { "fastpath" }
    }

    /// The stage after decap has nothing to do once every packet is decided; the
    /// first starts each batch's round.
    fn skips_final_batches(&self) -> bool {
        self.only_from.is_some()
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        let FastPathStage { flows, ct, before_parse, tunnel, only_from, slow } = self;
        let tunnel = *tunnel;
        let policy = cx.config.checksum;
        // Before parse, the replay verifies the IPv4 header checksum parse would.
        let (raw, verify) = (*before_parse, *before_parse && policy.ipv4);
        let Ok(mut flows) = flows.lock() else { return };
        let Ok(mut ct) = ct.lock() else { return };
        slow.clear();
        let (now, generation) = (cx.now, cx.generation());
        let tcp_cfg = ct.cfg.tcp;
        // The round (the batch's snapshots, the generation they were taken in) starts
        // at the first fast path stage; the one after decap adds to it.
        if only_from.is_none() {
            flows.round_generation = generation;
            flows.snaps_taken = 0;
        }
        // Ahead of parse, with L4 checksums to verify, every packet is parse's to
        // check: nothing is replayed, and nothing taken for learning.
        if raw && policy.l4 {
            return;
        }
        let (mut hits, mut tcp_hits) = (0u64, 0u64);
        // Replayed packets must not overtake a slow one that could change what they
        // see: the kernel handles packets one at a time. After a packet that is neither
        // IPv4 UDP nor TCP (an ARP reply may bring a new MAC), nothing more is replayed
        // in this batch. After a UDP or TCP packet that takes the slow path, only
        // assured connections are (the first reply that assures a connection, or a new
        // connection early-dropping an unassured one, can change the others): assured
        // UDP ones always, as their refresh sets the same expiry in any order; TCP ones
        // unless a slow packet of the same connection came before, which the tracker
        // must see first.
        let mut replaying = true;
        let mut replaying_assured = true;
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            // One look-up of the slot and its metadata serves the whole replay.
            let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
            let found = if raw { candidate_raw(slot, meta) } else { candidate(meta, *only_from) };
            let Some((key, l2)) = found else {
                replaying = false;
                replaying_assured &= pass_on(&mut flows, cx.pool, slow, tunnel, pkt, None);
                continue;
            };
            if let Some(e) = flows.get(key).filter(|e| {
                (replaying || (replaying_assured && e.ct_status & status::ASSURED != 0))
                    && e.generation == generation
                    && now < e.until
            }) {
                // The connection must still be the one learned (its insert's serial
                // number: a slot may hold a later connection that reuses a translated
                // tuple), alive, in the same state.
                let live = ct
                    .v4
                    .get_mut_if(crate::table::conntrack::CtId(e.ct_id), e.ct_serial)
                    .filter(|c| c.expires > now && c.status == e.ct_status);
                if let Some(c) = live.filter(|c| replaying || !e.tcp || !slow_before(slow, e, c)) {
                    // TCP: the tracker on a copy of the connection's state; anything
                    // but an accepted segment that leaves it established (and assured,
                    // with the same status) goes to the slow path untouched.
                    let tracked = if e.tcp { track_tcp(slot, l2, c, e.reply_dir, &tcp_cfg) } else { Some(None) };
                    if let Some(after) = tracked
                        && replay(slot, meta, l2, e, verify)
                    {
                        // What conntrack does for a steady connection.
                        match after {
                            Some((proto, timeout)) => {
                                c.proto = proto;
                                c.expires = now + timeout;
                                tcp_hits += 1;
                            }
                            None => c.expires = now + e.timeout,
                        }
                        batch.transmit(i, e.out_port);
                        hits += 1;
                        continue;
                    }
                }
            }
            replaying = false;
            replaying_assured &= pass_on(&mut flows, cx.pool, slow, tunnel, pkt, Some((key, l2)));
        }
        flows.tcp_replayed += tcp_hits;
        cx.count_n(StageEvent::FastPathHit, hits);
    }
}
