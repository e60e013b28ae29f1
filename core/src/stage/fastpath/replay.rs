//! The `fastpath` stage: replays learned flows (see the [module docs](super)).

use super::cache::{Entry, Key, SharedFlows, apply_delta, apply_delta_udp, fold};
use crate::buf::{Batch, BufPool, CsumState, L3Kind, PktFlags, PktId};
use crate::pipeline::{Context, Stage, StageEvent};
use crate::stage::conntrack::SharedConntrack;
use crate::table::conntrack::status;

/// See the [module docs](super).
#[derive(Debug)]
pub struct FastPathStage {
    flows: SharedFlows,
    ct: SharedConntrack,
}

impl FastPathStage {
    /// The replaying stage over a worker's cache and conntrack state (the same as its
    /// [`OffloadStage`](super::OffloadStage)'s and conntrack stages').
    pub fn new(flows: SharedFlows, ct: SharedConntrack) -> Self {
        FastPathStage { flows, ct }
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
/// IPv4 UDP without options or tag, its checksum not partial.
#[inline]
fn candidate(pool: &BufPool, pkt: PktId) -> Option<(Key, usize)> {
    let m = pool.meta(pkt);
    if m.flags & CHECKED != WANTED
        || m.l3_kind != L3Kind::Ipv4
        || m.flow.proto != 17
        || m.l3 != m.l2 + 14
        || m.l4 != m.l3 + 20
        || matches!(m.csum, CsumState::Partial { .. })
    {
        return None;
    }
    let f = &m.flow;
    let (s, d) = (&f.src, &f.dst);
    let key = Key::new(m.in_port, [s[0], s[1], s[2], s[3]], [d[0], d[1], d[2], d[3]], f.src_port, f.dst_port, 17);
    Some((key, usize::from(m.l2)))
}

/// Apply `e` to the packet whose Ethernet header is at `l2`: rewrite the inner IPv4
/// and UDP headers, put the prefix in front. False (packet untouched) when the frame
/// does not match what was learned.
#[inline]
fn replay(pool: &mut BufPool, pkt: PktId, l2: usize, e: &Entry) -> bool {
    let l3 = l2 + 14;
    let p = usize::from(e.prefix_len);
    let (slot, meta) = pool.slot_and_meta_mut(pkt);
    let Some(new_head) = l3.checked_sub(p) else { return false };
    let Some(frame) = slot.get_mut(new_head..l3 + 28) else { return false };
    let (pre, ip) = frame.split_at_mut(p);
    let Some(ip) = ip.first_chunk_mut::<28>() else { return false };
    // The Ethernet header as received is the end of the prefix's room.
    let Some(eth) = pre.get(p - 14..p) else { return false };
    let Some(eth) = eth.first_chunk::<12>() else { return false };
    if *eth != e.eth || ip[1] != e.tos || ip[6] != e.flags || ip[8] != e.ttl {
        return false;
    }
    let (total, inner_id) = (u16::from_be_bytes([ip[2], ip[3]]), u16::from_be_bytes([ip[4], ip[5]]));
    if total > e.max_len || !meta.move_head(u16::try_from(new_head).unwrap_or(u16::MAX)) {
        return false;
    }
    // Inner IPv4: TTL, addresses and the header checksum.
    ip[8] = e.new_ttl;
    ip[12..16].copy_from_slice(&e.src);
    ip[16..20].copy_from_slice(&e.dst);
    let c = apply_delta(u16::from_be_bytes([ip[10], ip[11]]), e.ip_delta);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    // UDP: ports and the checksum (zero stays zero).
    ip[20..24].copy_from_slice(&e.ports);
    let c = apply_delta_udp(u16::from_be_bytes([ip[26], ip[27]]), e.l4_delta);
    ip[26..28].copy_from_slice(&c.to_be_bytes());
    // Fixed-size copies for the two common prefixes (a call to memcpy otherwise).
    if let Ok(d) = <&mut [u8; 64]>::try_from(&mut *pre) {
        *d = e.prefix;
    } else if let (Ok(d), Some(s)) = (<&mut [u8; 14]>::try_from(&mut *pre), e.prefix.first_chunk::<14>()) {
        *d = *s;
    } else if let Some(src) = e.prefix.get(..p) {
        pre.copy_from_slice(src);
    }
    if let Some(o) = e.outer {
        // The outer IPv4 header at 14: its length, ID and checksum, as encap writes them.
        let outer_total = total + u16::from(e.prefix_len) - 14;
        let id = if o.df { 0 } else { inner_id.wrapping_add(o.salt) };
        let c = !fold(o.fixed + u32::from(outer_total) + u32::from(id));
        if let Some(h) = pre.get_mut(14..34).and_then(|h| h.first_chunk_mut::<20>()) {
            h[2..4].copy_from_slice(&outer_total.to_be_bytes());
            h[4..6].copy_from_slice(&id.to_be_bytes());
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        if o.udp
            && let Some(u) = pre.get_mut(38..40)
        {
            u.copy_from_slice(&(outer_total - 20).to_be_bytes());
        }
        meta.ip_proto = if o.udp { 17 } else { 4 };
    }
    let l2_new = u16::try_from(new_head).unwrap_or(u16::MAX);
    meta.l2 = l2_new;
    meta.l3 = l2_new + 14;
    meta.l4 = l2_new + 34;
    meta.out_port = e.out_port;
    true
}

impl Stage for FastPathStage {
    fn name(&self) -> &'static str {
        "fastpath"
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        let Ok(mut flows) = self.flows.lock() else { return };
        let Ok(mut ct) = self.ct.lock() else { return };
        let (now, generation) = (cx.now, cx.generation());
        flows.round_generation = generation;
        flows.snaps_taken = 0;
        let mut hits = 0u64;
        // Replayed packets must not overtake a slow one that could change what they
        // see: the kernel handles packets one at a time. After a packet that is not
        // IPv4 UDP (an ARP reply may bring a new MAC), nothing more is replayed in this
        // batch. After an IPv4 UDP packet that takes the slow path, only assured
        // connections are: such a packet cannot change them (the first reply that
        // assures a connection, or a new connection early-dropping an unassured one,
        // can change the others), and their refresh sets the same expiry in any order.
        let mut replaying = true;
        let mut replaying_assured = true;
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            let Some((key, l2)) = candidate(cx.pool, pkt) else {
                replaying = false;
                replaying_assured = false;
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
                    .filter(|(c, _)| c.expires > now && c.status == e.ct_status);
                if let Some((c, _)) = live {
                    if replay(cx.pool, pkt, l2, e) {
                        // What conntrack's refresh does for a steady connection.
                        c.expires = now + e.timeout;
                        batch.transmit(i, e.out_port);
                        hits += 1;
                        continue;
                    }
                }
            }
            // The slow path: remember the packet as it is, for the offload stage.
            replaying = false;
            let tag = u32::try_from(pkt.index() + 1).unwrap_or(0);
            let Some(h) = cx.pool.slot(pkt).get(l2..l2 + 42).and_then(|h| h.first_chunk::<42>()).copied() else {
                continue;
            };
            if let Some(s) = flows.snap_slot(pkt) {
                s.tag = tag;
                s.key = key;
                s.l3 = u16::try_from(l2 + 14).unwrap_or(u16::MAX);
                s.eth.copy_from_slice(&h[..12]);
                s.ip.copy_from_slice(&h[14..34]);
                s.l4.copy_from_slice(&h[34..42]);
                cx.pool.meta_mut(pkt).flags |= PktFlags::OFFLOAD;
                flows.snaps_taken += 1;
            }
        }
        cx.count_n(StageEvent::FastPathHit, hits);
    }
}
