//! The `offload` stage: learns replayable flows from what the slow path transmitted
//! (see the [module docs](super)).

use super::cache::{Entry, FAST_PATH_LIFE, Outer, SharedFlows, Snap, transport_csum};
use crate::buf::{Batch, BufPool, L3Kind, PktFlags, PktId};
use crate::pipeline::{Context, Disposition, Stage, StageEvent};
use crate::stage::conntrack::Conntrack;
use crate::stage::conntrack::proto::ProtoState;
use crate::stage::conntrack::state::{info, unpack};
use crate::stage::conntrack::tcp::TcpState;
use crate::stage::conntrack::{CtRef, SharedConntrack};
use crate::table::conntrack::status;
use crate::time::Instant;
use crate::wire::checksum::{fold32, update_delta};

/// See the [module docs](super).
#[derive(Debug)]
pub struct OffloadStage {
    flows: SharedFlows,
    ct: SharedConntrack,
}

impl OffloadStage {
    /// The learning stage over a worker's cache and conntrack state (the same as its
    /// [`FastPathStage`](super::FastPathStage)'s).
    pub fn new(flows: SharedFlows, ct: SharedConntrack) -> Self {
        OffloadStage { flows, ct }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b.get(at).copied().unwrap_or(0), b.get(at + 1).copied().unwrap_or(0)])
}

/// A one's complement sum of big-endian words, folded and byte-swapped: the same sum
/// in wire order, as the entry keeps it (see `Entry::ip_fixed`).
fn wire(sum: u32) -> u32 {
    u32::from(fold32(sum).swap_bytes())
}

/// Sum of (~old + new) over the 16-bit words of `old` and `new` at the given offsets.
fn delta(old: &[u8], new: &[u8], words: &[usize]) -> u32 {
    words.iter().map(|&w| u32::from(!be16(old, w)) + u32::from(be16(new, w))).sum()
}

/// The entry that replays what happened to `pkt` since `snap` was taken, if the
/// difference is one the fast path reproduces exactly.
fn learn(pool: &BufPool, pkt: PktId, snap: &Snap, ct: &Conntrack, now: Instant) -> Option<Entry> {
    let m = pool.meta(pkt);
    if m.path_mtu == 0 || m.ct_info & (info::RELATED | info::PENDING) != 0 {
        return None;
    }
    let Some(CtRef::V4(id)) = unpack(m.ct) else { return None };
    let c = ct.v4.get(id)?;
    // Steady states only. UDP: each packet sets the same timeout and no status bit
    // (unreplied, or assured). TCP: established and assured; the replay runs the
    // tracker on each segment and leaves anything else to the slow path.
    let tcp = match (c.original.proto, &c.proto) {
        (17, _) if c.status & status::SEEN_REPLY == 0 || c.status & status::ASSURED != 0 => false,
        (6, ProtoState::Tcp(t)) if t.state == TcpState::Established && c.status & status::ASSURED != 0 => true,
        _ => return None,
    };
    if c.expires <= now {
        return None;
    }
    let src = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(snap.ip.get(12..16)?).ok()?);
    let dst = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(snap.ip.get(16..20)?).ok()?);
    let (sport, dport) = (be16(&snap.l4, 0), be16(&snap.l4, 2));
    let as_tuple = |t: &crate::table::conntrack::Tuple<std::net::Ipv4Addr>| {
        t.src == src && t.dst == dst && t.sport == sport && t.dport == dport
    };
    let reply = m.ct_info & info::REPLY != 0;
    if !as_tuple(if reply { &c.reply } else { &c.original }) {
        return None;
    }
    let head = usize::from(m.head());
    let l3 = usize::from(snap.l3);
    let slot = pool.slot(pkt);
    let out = slot.get(l3..)?.first_chunk::<40>()?;
    let (ip, rest) = out.split_first_chunk::<20>()?;
    let l4 = rest.first_chunk::<20>()?;
    let (o, ol4) = (&snap.ip, &snap.l4);
    // Only addresses, TTL (by at most one), ports and checksums may have changed.
    let ttl_ok = ip[8] == o[8] || ip[8].wrapping_add(1) == o[8];
    let l4_same = if tcp { l4[4..16] == ol4[4..16] && l4[18..] == ol4[18..] } else { l4[4..6] == ol4[4..6] };
    if ip[..8] != o[..8] || ip[9] != o[9] || !ttl_ok || !l4_same {
        return None;
    }
    let ip_delta = delta(o, ip, &[8, 12, 14, 16, 18]);
    let mut l4_words = [0u8; 12];
    let mut o_words = [0u8; 12];
    l4_words[..8].copy_from_slice(&ip[12..20]);
    l4_words[8..].copy_from_slice(&l4[..4]);
    o_words[..8].copy_from_slice(&o[12..20]);
    o_words[8..].copy_from_slice(&ol4[..4]);
    // A partial checksum holds the pseudo-header sum: the addresses only.
    let partial = snap.key.partial();
    let words: &[usize] = if partial { &[0, 2, 4, 6] } else { &[0, 2, 4, 6, 8, 10] };
    let l4_delta = delta(&o_words, &l4_words, words);
    let (ip_delta, l4_delta) = (u32::from(fold32(ip_delta)), u32::from(fold32(l4_delta)));
    let at = if tcp { 16 } else { 6 };
    let l4_ok = transport_csum(be16(ol4, at), l4_delta, partial, tcp) == be16(l4, at);
    if update_delta(be16(o, 10), ip_delta) != be16(ip, 10) || !l4_ok {
        return None;
    }
    // What now stands in front of the inner header.
    let p = l3.checked_sub(head)?;
    let pre = slot.get(head..l3)?;
    let mut prefix = [0u8; 64];
    prefix.get_mut(..p)?.copy_from_slice(pre);
    let inner_total = be16(o, 2);
    let outer = match p {
        14 if be16(pre, 12) == 0x0800 => Outer::default(),
        34 | 64 if usize::from(m.l3) == head + 14 && m.l3_kind == L3Kind::Ipv4 && pre.get(14) == Some(&0x45) => {
            let h = pre.get(14..34)?.first_chunk::<20>()?;
            let udp = p == 64 && m.ip_proto == 17 && h[9] == 17 && be16(pre, 40) == 0;
            let ipip = p == 34 && m.ip_proto == 4 && h[9] == 4;
            if !(udp || ipip) {
                return None;
            }
            let total = be16(h, 2);
            let id = be16(h, 4);
            let df = h[6] & 0x40 != 0;
            if usize::from(total) != p - 14 + usize::from(inner_total)
                || (df && id != 0)
                || (udp && usize::from(be16(pre, 38)) != usize::from(total) - 20)
            {
                return None;
            }
            let fixed: u32 = [0, 6, 8, 12, 14, 16, 18].iter().map(|&w| u32::from(be16(h, w))).sum();
            if !fold32(fixed + u32::from(total) + u32::from(id)) != be16(h, 10) {
                return None;
            }
            let (id_mask, salt) = if df { (0, 0) } else { (u16::MAX, id.wrapping_sub(be16(o, 4))) };
            Outer { fixed: wire(fixed), id_mask, salt }
        }
        _ => return None,
    };
    let timeout = c.expires.saturating_since(now);
    Some(Entry {
        key: snap.key,
        eth: snap.eth,
        hdr_word: super::replay::hdr_word(o[1], o[6], o[8]),
        ip_fixed: wire([0, 6, 8, 12, 14, 16, 18].iter().map(|&w| u32::from(be16(o, w))).sum()),
        until: now + FAST_PATH_LIFE,
        generation: 0,
        ct_id: id.0,
        ct_serial: ct.v4.serial(id),
        ct_status: c.status,
        tcp,
        reply_dir: reply,
        timeout,
        out_port: m.out_port,
        // At most 64 KiB - 65: with a tunnel's 50 bytes in front the outer length
        // cannot overflow (the replay relies on it).
        max_len: m.path_mtu.min(u16::MAX - 64),
        src: <[u8; 4]>::try_from(ip.get(12..16)?).ok()?,
        dst: <[u8; 4]>::try_from(ip.get(16..20)?).ok()?,
        new_ttl: ip[8],
        ports: <[u8; 4]>::try_from(l4.get(..4)?).ok()?,
        // Folded once here, not per packet.
        ip_delta: wire(ip_delta),
        l4_delta: wire(l4_delta),
        prefix,
        prefix_len: u8::try_from(p).ok()?,
        outer,
    })
}

impl Stage for OffloadStage {
    fn name(&self) -> &'static str {
        "offload"
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        let Ok(mut flows) = self.flows.lock() else { return };
        if flows.snaps_taken == 0 {
            return;
        }
        let Ok(ct) = self.ct.lock() else { return };
        let (now, generation) = (cx.now, cx.generation());
        // Something learned or reconfigured since the fast path stage ran: what the
        // slow path did this round may already be out of date.
        let current = flows.round_generation == generation;
        let mut learned = 0u64;
        for i in 0..batch.len() {
            let pkt = batch.pkt(i);
            if !cx.pool.meta(pkt).flags.contains(PktFlags::OFFLOAD) {
                continue;
            }
            cx.pool.meta_mut(pkt).flags.remove(PktFlags::OFFLOAD);
            let Some(snap) = flows.take_snap(pkt) else { continue };
            if !matches!(batch.disposition(i), Disposition::Tx(p) if p == cx.pool.meta(pkt).out_port) {
                continue;
            }
            if !current {
                continue;
            }
            if let Some(mut e) = learn(cx.pool, pkt, &snap, &ct, now) {
                e.generation = generation;
                flows.insert(e);
                learned += 1;
            }
        }
        cx.count_n(StageEvent::FastPathLearned, learned);
    }
}
