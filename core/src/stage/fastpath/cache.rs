//! The flow cache: a fixed-size two-way set-associative table of replayable flows, and
//! the per-packet snapshots the learning side compares against.

use std::sync::{Arc, Mutex};

use crate::buf::{PktId, PortId};
use crate::time::{Duration, Instant};
use crate::wire::checksum::{update_delta, update_delta_partial, update_delta_udp};

/// How long a learned entry is replayed before the slow path sees the flow again.
pub const FAST_PATH_LIFE: Duration = Duration::from_secs(1);

/// Entries per worker by default (about 3.3 MiB): 2,048 busy flows leave about one
/// set of four overfull.
pub const DEFAULT_CAPACITY: usize = 16384;

/// Entries per set: four keys sharing a set all stay (2-way thrashed a few of 2,048
/// bench flows, and a miss sends the rest of its batch down the slow path).
const WAYS: usize = 4;

/// Snapshots kept per round (one per packet slot index modulo this).
const SNAPS: usize = 512;

/// The cache shared by a worker's `fastpath` and `offload` stages.
pub type SharedFlows = Arc<Mutex<FlowCache>>;

/// What identifies a flow: ingress port and the IPv4 5-tuple as parsed, packed in
/// two words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) addrs: u64,
    pub(crate) rest: u64,
}

impl Key {
    /// No flow: protocol 255 and ports 0xffff, which no candidate has.
    const EMPTY: Key = Key { addrs: 0, rest: u64::MAX };

    /// Set in `rest` for packets whose transport checksum is partial (vnet_hdr's
    /// NEEDS_CSUM): their field is updated differently, so they get entries of their own.
    pub(crate) const PARTIAL: u64 = 1 << 24;

    /// True for a key of partial-checksum packets.
    pub(crate) fn partial(self) -> bool {
        self.rest & Self::PARTIAL != 0
    }

    pub(crate) fn new(in_port: PortId, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> Self {
        let ([a, b, c, d], [e, f, g, h]) = (src, dst);
        let ([s0, s1], [d0, d1]) = (sport.to_be_bytes(), dport.to_be_bytes());
        Self::from_wire(in_port, [a, b, c, d, e, f, g, h], [s0, s1, d0, d1], proto)
    }

    /// The key from the bytes as they are on the wire: the addresses (the 8 bytes at
    /// 12 in the IPv4 header) and ports (the first 4 of the transport header) loaded
    /// as they lie, with no byte swapping (the fast path reads them straight from
    /// the frame: a few instructions per packet).
    #[inline(always)]
    pub(crate) fn from_wire(in_port: PortId, addrs: [u8; 8], ports: [u8; 4], proto: u8) -> Self {
        let rest = (u64::from(u32::from_le_bytes(ports)) << 32) | (u64::from(proto) << 16) | u64::from(in_port.0);
        Key { addrs: u64::from_le_bytes(addrs), rest }
    }

    /// The key without its ingress port: the connection a packet belongs to, seen
    /// from one direction.
    pub(crate) fn connection(self) -> Key {
        Key { addrs: self.addrs, rest: self.rest & !(0xffff | Self::PARTIAL) }
    }

    /// Each word multiplied by its own odd constant (Fibonacci hashing): the set index
    /// takes the product's top bits, which every bit of the word reaches (its low bits
    /// see only the word's low bits, so the ports, high in `rest`, would not count).
    /// One multiply over the xor of both words left sequential ClusterIPs with
    /// sequential source ports in a few sets (the 100k-service bench thrashed);
    /// MurmurHash3's finaliser spreads as well at 12 more instructions per packet.
    #[inline(always)]
    fn hash(self) -> u64 {
        self.addrs.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.rest.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
    }
}

/// An IPv4 tunnel prefix's per-packet fields (all zero, unused, for an Ethernet
/// prefix). The prefix's length tells VXLAN (64) from IPIP (34).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outer {
    /// Sum of the outer IPv4 header's words but total length, ID and checksum, in
    /// wire order (see [`Entry::ip_fixed`]).
    pub(crate) fixed: u32,
    /// The outer ID is (inner ID & `id_mask`) + `salt`: both 0 when DF is set (the
    /// ID is 0), else all ones and the learned difference. No branch per packet.
    pub(crate) id_mask: u16,
    pub(crate) salt: u16,
}

/// One learned flow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub(crate) key: Key,
    /// Destination and source MAC as received.
    pub(crate) eth: [u8; 12],
    /// IPv4 TOS, flags byte and TTL as received, as `replay::hdr_word` packs them.
    pub(crate) hdr_word: u64,
    /// The received IPv4 header's words other than length, ID and checksum, summed:
    /// what verifying a later packet's header checksum needs beside those three.
    /// Folded and in wire order, as are the other sums of an entry: the sum of the
    /// words as little-endian loads of their bytes give them, which is the usual
    /// (big-endian) sum byte-swapped (RFC 1071 2(B): a one's complement sum does not
    /// depend on byte order), so the replay loads, sums and stores without swapping.
    pub(crate) ip_fixed: u32,
    pub(crate) until: Instant,
    pub(crate) generation: u64,
    /// The connection: slot, the serial number of its insert (the same connection,
    /// not a later one in its slot) and status as learned, the timeout each packet
    /// sets.
    pub(crate) ct_id: u32,
    pub(crate) ct_serial: u32,
    pub(crate) ct_status: u8,
    pub(crate) timeout: Duration,
    pub(crate) out_port: PortId,
    /// Longest IPv4 packet the route stage let through whole (below 64 KiB - 64).
    pub(crate) max_len: u16,
    /// TCP (checksum at 16 of the transport header, the tracker runs per segment)
    /// rather than UDP; and whether the packets go in the connection's reply
    /// direction.
    pub(crate) tcp: bool,
    pub(crate) reply_dir: bool,
    /// The inner header as it leaves: addresses, TTL, ports.
    pub(crate) src: [u8; 4],
    pub(crate) dst: [u8; 4],
    pub(crate) new_ttl: u8,
    pub(crate) ports: [u8; 4],
    /// RFC 1624 sums of (~old + new) over the changed words, folded, in wire order:
    /// IPv4 header, transport.
    pub(crate) ip_delta: u32,
    pub(crate) l4_delta: u32,
    /// What goes in front of the inner IPv4 header: Ethernet, or a whole tunnel.
    pub(crate) prefix: [u8; 64],
    pub(crate) prefix_len: u8,
    pub(crate) outer: Outer,
}

/// The state of the packet as the `fastpath` stage saw it on a miss.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Snap {
    /// Slot index + 1 of the packet (0: none).
    pub(crate) tag: u32,
    pub(crate) key: Key,
    pub(crate) eth: [u8; 12],
    pub(crate) ip: [u8; 20],
    /// The transport header's first 20 bytes (UDP: 8 and what follows).
    pub(crate) l4: [u8; 20],
    pub(crate) l3: u16,
}

/// See the [module docs](super).
#[derive(Debug)]
pub struct FlowCache {
    /// The keys of `slots`, apart, so that a lookup reads one cache line per set.
    keys: Vec<[Key; WAYS]>,
    slots: Vec<[Option<Entry>; WAYS]>,
    /// 64 - log2(sets): the hash's top bits name the set.
    shift: u32,
    snaps: Vec<Snap>,
    /// Flows learned so far.
    pub(crate) learned: u64,
    /// The pipeline generation when the `fastpath` stage last ran.
    pub(crate) round_generation: u64,
    /// Snapshots taken since then (none: the `offload` stage has nothing to learn).
    pub(crate) snaps_taken: usize,
    /// TCP segments replayed so far.
    pub(crate) tcp_replayed: u64,
}

impl FlowCache {
    /// An empty cache of `capacity` entries (rounded up to a power of two, at least
    /// two sets).
    pub fn new(capacity: usize) -> Self {
        let sets = (capacity.clamp(2 * WAYS, 1 << 24).next_power_of_two()) / WAYS;
        FlowCache {
            keys: vec![[Key::EMPTY; WAYS]; sets],
            slots: vec![[None; WAYS]; sets],
            shift: 64 - sets.trailing_zeros(),
            snaps: vec![Snap::default(); SNAPS],
            learned: 0,
            round_generation: 0,
            snaps_taken: 0,
            tcp_replayed: 0,
        }
    }

    /// The same, ready to share between a worker's two stages.
    pub fn shared(capacity: usize) -> SharedFlows {
        Arc::new(Mutex::new(FlowCache::new(capacity)))
    }

    /// Entries held (live or not yet overwritten).
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().filter(|s| s.is_some()).count()
    }

    /// True when nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flows learned so far.
    pub fn learned(&self) -> u64 {
        self.learned
    }

    /// TCP segments replayed so far (the `fastpath_hit` counter counts all).
    pub fn tcp_replayed(&self) -> u64 {
        self.tcp_replayed
    }

    /// Forget every entry (tests; a generation change does it lazily).
    pub fn clear(&mut self) {
        self.slots.fill([None; WAYS]);
        self.keys.fill([Key::EMPTY; WAYS]);
    }

    /// Bytes the cache holds.
    pub fn memory(&self) -> usize {
        self.slots.len() * WAYS * (size_of::<Option<Entry>>() + size_of::<Key>()) + SNAPS * size_of::<Snap>()
    }

    /// The first of the two sets of [`WAYS`] slots `key` may be in, and the hash
    /// that names the second ([`Self::second`]). The hash's top log2(sets) bits name
    /// the first. Two choices keep a few busy flows that hash alike from thrashing
    /// one set: at 2,048 bench flows in 4,096 sets of four, one set had five, and its
    /// misses cost the 10-service bench 13 instructions per packet.
    #[inline(always)]
    fn first(&self, key: Key) -> (usize, u64) {
        let h = key.hash();
        // Below `sets` (at most 22 bits, so they fit usize): there are at least two
        // sets, so the shift is below 64.
        #[allow(clippy::cast_possible_truncation)]
        let first = h.wrapping_shr(self.shift) as usize;
        (first, h)
    }

    /// The second set: the first xor some of the hash's middle bits, odd so that it
    /// differs from the first.
    #[inline(always)]
    fn second(&self, first: usize, h: u64) -> usize {
        #[allow(clippy::cast_possible_truncation)]
        let bits = (h >> 20) as usize | 1;
        first ^ (bits & self.keys.len().saturating_sub(1))
    }

    #[inline]
    pub(crate) fn get(&self, key: Key) -> Option<&Entry> {
        let (first, h) = self.first(key);
        let (at, w) = match self.keys.get(first)?.iter().position(|k| *k == key) {
            Some(w) => (first, w),
            None => {
                let second = self.second(first, h);
                (second, self.keys.get(second)?.iter().position(|k| *k == key)?)
            }
        };
        self.slots.get(at)?.get(w)?.as_ref()
    }

    /// Insert `e`, over its own old entry, an empty slot (its first set's before its
    /// second's), or the entry of its two sets that ends soonest.
    pub(crate) fn insert(&mut self, e: Entry) {
        let (first, h) = self.first(e.key);
        let second = self.second(first, h);
        let rank = |s: &Option<Entry>, alt: u64| match s {
            Some(x) if x.key == e.key => (0, 0),
            None => (1, alt),
            Some(x) => (2, x.until.as_nanos()),
        };
        let best =
            |at: usize, alt: u64| self.slots.get(at)?.iter().enumerate().map(|(w, s)| (rank(s, alt), at, w)).min();
        let Some((_, at, w)) = best(first, 0).into_iter().chain(best(second, 1)).min() else { return };
        if let (Some(s), Some(k)) =
            (self.slots.get_mut(at).and_then(|s| s.get_mut(w)), self.keys.get_mut(at).and_then(|k| k.get_mut(w)))
        {
            *k = e.key;
            *s = Some(e);
            self.learned += 1;
        }
    }

    /// Where the `fastpath` stage keeps `pkt`'s snapshot (one per slot index modulo
    /// [`SNAPS`]).
    pub(crate) fn snap_slot(&mut self, pkt: PktId) -> Option<&mut Snap> {
        self.snaps.get_mut(pkt.index() % SNAPS)
    }

    /// The snapshot of `pkt`, taken this round, if it survived.
    pub(crate) fn take_snap(&mut self, pkt: PktId) -> Option<Snap> {
        let s = self.snaps.get_mut(pkt.index() % SNAPS)?;
        let tag = u32::try_from(pkt.index() + 1).ok()?;
        if s.tag != tag {
            return None;
        }
        s.tag = 0;
        Some(*s)
    }
}

/// The transport checksum after a replayed rewrite whose word changes sum to `delta`
/// (folded): partial (vnet_hdr) fields take the address changes only, a zero UDP
/// checksum stays zero. Learning and replay both use it, so they cannot disagree.
/// Always inlined, with the `wire::checksum` updates it calls: as plain `#[inline]`
/// the replay cost 23 instructions more per packet (`benches/callgrind.sh`).
#[inline(always)]
pub(crate) fn transport_csum(csum: u16, delta: u32, partial: bool, tcp: bool) -> u16 {
    match (partial, tcp) {
        (true, _) => update_delta_partial(csum, delta),
        (false, true) => update_delta(csum, delta),
        (false, false) => update_delta_udp(csum, delta),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(k: Key, until: u64) -> Entry {
        Entry {
            key: k,
            eth: [0; 12],
            hdr_word: 0,
            ip_fixed: 0,
            until: Instant::from_nanos(until),
            generation: 0,
            ct_id: 0,
            ct_serial: 1,
            ct_status: 0,
            tcp: false,
            reply_dir: false,
            timeout: Duration::from_secs(30),
            out_port: PortId(1),
            max_len: 1500,
            src: [0; 4],
            dst: [0; 4],
            new_ttl: 63,
            ports: [0; 4],
            ip_delta: 0,
            l4_delta: 0,
            prefix: [0; 64],
            prefix_len: 14,
            outer: Outer::default(),
        }
    }

    #[test]
    fn an_entry_replaces_its_own_then_the_one_ending_soonest() {
        let mut c = FlowCache::new(8);
        let key = |p: u16| Key::new(PortId(p), [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 17);
        // Two sets of four: every key may go in either, so eight flows all stay.
        for k in 1..=8 {
            c.insert(entry(key(k), 10 + u64::from(k)));
        }
        assert_eq!(c.len(), 8);
        assert!((1..=8).all(|k| c.get(key(k)).is_some()));
        c.insert(entry(key(1), 30));
        assert_eq!(c.len(), 8);
        assert_eq!(c.get(key(1)).map(|e| e.until.as_nanos()), Some(30));
        // A ninth flow takes the slot of the one ending soonest (key 2, at 12).
        c.insert(entry(key(9), 40));
        assert_eq!(c.len(), 8);
        assert!(c.get(key(2)).is_none());
        assert!([1, 3, 4, 5, 6, 7, 8, 9].iter().all(|&k| c.get(key(k)).is_some()));
    }

    #[test]
    fn five_flows_of_one_first_set_all_stay() {
        let mut c = FlowCache::new(1 << 10);
        // Keys whose first set is the same: the fifth goes to its second set.
        let first = |k: Key| c.first(k).0;
        let keys: Vec<Key> = (0..u16::MAX)
            .map(|p| Key::new(PortId(1), [10, 0, 0, 1], [10, 0, 0, 2], p, 53, 17))
            .filter(|&k| first(k) == first(Key::new(PortId(1), [10, 0, 0, 1], [10, 0, 0, 2], 0, 53, 17)))
            .take(5)
            .collect();
        assert_eq!(keys.len(), 5);
        for (i, &k) in keys.iter().enumerate() {
            c.insert(entry(k, 10 + i as u64));
        }
        assert!(keys.iter().all(|&k| c.get(k).is_some()));
        assert_eq!(c.len(), 5);
    }
}
