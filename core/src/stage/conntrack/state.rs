//! A worker's connection tracking state, shared by its `conntrack` (lookup) and
//! `ct_commit` stages: the IPv4 and IPv6 tables and the connections pending in the
//! current batch.
//!
//! A new connection is not inserted when its first packet is looked up but when the
//! packet has passed every verdict (`ct_commit`, the last stage before egress), as
//! netfilter confirms an entry only at the end of POSTROUTING; until then it is
//! *pending*, and later packets of the same batch find it in either direction: two
//! packets of one new connection in one batch (a resolver's A and AAAA queries from
//! one socket) share one entry, and a reply in the same batch finds it. This is the
//! kernel's insert race (kubernetes#56903) made impossible: there is one worker per
//! flow and a pending entry is visible at once. A pending entry whose packets were all
//! dropped later is forgotten, so a dropped packet leaves no connection behind.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use super::proto::{OtherTimeouts, ProtoState};
use super::tcp::{Dir, TcpConfig};
use crate::table::conntrack::{CtEntry, CtId, CtTable, InsertError, Tuple, status};
use crate::time::{Duration, Instant};
use crate::wire::flow::FlowKey;

/// `PktMeta::ct_info` bits.
pub mod info {
    /// The packet goes in the reply direction.
    pub const REPLY: u8 = 1;
    /// The first direction, no reply seen yet (`IP_CT_NEW`).
    pub const NEW: u8 = 2;
    /// Part of a connection that has seen both directions (`IP_CT_ESTABLISHED`).
    pub const ESTABLISHED: u8 = 4;
    /// `PktMeta::ct` names a pending entry of this batch, not a table entry.
    pub const PENDING: u8 = 8;
    /// An ICMP error about the connection (`IP_CT_RELATED`); `REPLY` when it goes
    /// back towards the connection's originator.
    pub const RELATED: u8 = 16;
}

/// How connections are tracked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtConfig {
    /// Most connections per family (kube-proxy sizes the table max(32768 x cores,
    /// 131072)).
    pub capacity: usize,
    /// TCP tracking and timeouts.
    pub tcp: TcpConfig,
    /// UDP, ICMP and generic timeouts.
    pub other: OtherTimeouts,
    /// Seed of the tables' hash.
    pub seed: u64,
    /// Most slots (per family) the expiry sweep looks at in one batch.
    pub sweep_per_batch: usize,
    /// The sweep passes over the whole table about once per this much clock time, a
    /// share of the table per batch in proportion to the time since the last (at
    /// most `sweep_per_batch` slots).
    pub sweep_every: Duration,
    /// Fix switches (tests).
    pub fixes: CtFixes,
}

/// Test-only switches that turn one of conntrack's fixes off, so that a test can show
/// the kernel bug it prevents. All `true` (fixed) by default; never turn them off
/// outside a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtFixes {
    /// Later packets of a batch see the connections its earlier packets started.
    /// Off, each packet starts its own, and the second of two simultaneous packets of
    /// one new connection loses at commit (`ct_clash`): the kernel's insert race
    /// behind 5-second DNS timeouts (kubernetes#56903).
    pub pending_visible: bool,
    /// Drop INVALID packets, as kube-proxy's `ct state invalid drop` rule does. Off,
    /// they pass untracked and so untranslated (kubernetes#74839: an out-of-window
    /// segment leaves with the backend's address and the client answers with a RST).
    pub drop_invalid: bool,
}

impl Default for CtFixes {
    fn default() -> Self {
        CtFixes { pending_visible: true, drop_invalid: true }
    }
}

impl Default for CtConfig {
    fn default() -> Self {
        CtConfig {
            capacity: 131_072,
            tcp: TcpConfig::default(),
            other: OtherTimeouts::default(),
            seed: 0x9e37_79b9_7f4a_7c15,
            // A pass a second: the shortest interval of Linux's conntrack GC
            // (GC_SCAN_INTERVAL_MIN in nf_conntrack_core.c; it stretches to 60 s on
            // a quiet table). Expired entries are invisible at once anyway and an
            // insert reclaims what it meets, so the sweep only gives back room and
            // NAT ports. At load this is a slot or two per batch: sweeping 32 slots
            // per batch cost the established service path 7 instructions a packet.
            sweep_per_batch: 32,
            sweep_every: Duration::from_secs(1),
            fixes: CtFixes::default(),
        }
    }
}

/// A connection created in the current batch, not yet in a table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    pub(crate) key: FlowKey,
    /// The tuple replies will carry: `key` reversed, then changed by NAT decisions.
    pub(crate) reply: FlowKey,
    pub(crate) proto: ProtoState,
    pub(crate) expires: Instant,
    pub(crate) status: u8,
    /// Removed again in the batch (an RST answering the first packet), or replayed.
    pub(crate) dead: bool,
    /// Batch index of the packet that created it.
    pub(crate) first: u16,
    /// The table's hash ([`Conntrack::hash_of`]) of `key` (given by the lookup that
    /// missed) and of `reply` (kept with it by `push_pending` and `set_reply`): the
    /// pending index and the commit's insert use them, so each tuple of a new
    /// connection is hashed once.
    pub(crate) key_hash: u64,
    pub(crate) reply_hash: u64,
    /// What the look-up that missed met in the table by the original tuple.
    pub(crate) met: Met,
    /// The NAT decision found no entry at all, even expired, with the reply tuple,
    /// nor a pending connection (the `snat` hook's port search checked it).
    pub(crate) reply_free: bool,
}

/// What the look-up of a new connection's first packet met in its table by the
/// packet's tuple, for the commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Met {
    /// Not told (the general look-up, IPv6).
    #[default]
    Unknown,
    /// No entry had the tuple (or only one met by its reply tuple, removed then).
    Nothing,
    /// An expired connection with the same original tuple (its slot and serial):
    /// the commit puts the new one in its place ([`CtTable::replace_expired`]).
    Expired(CtId, u32),
}

/// The pending index's chain for a table hash (bits the table's own probe does not
/// start from).
fn chain(h: u64) -> usize {
    (h >> 32) as usize % PENDING_BUCKETS
}

impl Met {
    /// What a look-up that missed met: the expired connection to take over that
    /// [`CtTable::lookup_mut_or_expired`] handed back, or nothing.
    #[inline(always)]
    pub(crate) fn after_miss(expired: Option<(CtId, u32)>) -> Self {
        expired.map_or(Met::Nothing, |(id, serial)| Met::Expired(id, serial))
    }
}

/// Who has a tuple ([`Conntrack::holder4`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A live connection, committed or pending.
    Live,
    /// Only an expired connection in the table (which the commit removes).
    Expired,
    /// No entry at all.
    Nobody,
}

/// Where a packet's connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtRef {
    /// In the IPv4 table.
    V4(CtId),
    /// In the IPv6 table.
    V6(CtId),
    /// Pending in this batch (index).
    Pending(u16),
}

/// Most connections one batch round may create.
pub const PENDING_MAX: usize = 512;

/// Chains of the pending index.
const PENDING_BUCKETS: usize = 256;
const NO_LINK: u16 = u16::MAX;

/// See the [module docs](self).
#[derive(Debug)]
pub struct Conntrack {
    pub(crate) v4: CtTable<Ipv4Addr, ProtoState>,
    pub(crate) v6: CtTable<Ipv6Addr, ProtoState>,
    pub(crate) pending: Vec<Pending>,
    /// The pending connections by tuple: [`PENDING_BUCKETS`] chain heads into `links`
    /// (`(index << 1) | reply`, next link), so that a lookup does not scan the batch's
    /// new connections (a scan costs O(batch) per packet, O(batch²) per batch).
    heads: [u16; PENDING_BUCKETS],
    links: Vec<(u32, u16)>,
    pub(crate) cfg: CtConfig,
    /// First fragments' tuples, for the later fragments.
    pub(crate) frags: super::frag::FragMap,
    /// The last batch's new connections that were not committed (their packets were
    /// dropped): (original, reply, status), for the ICMP errors the node made about
    /// those packets, which run after the batch.
    dropped: Vec<(FlowKey, FlowKey, u8)>,
    /// New destination-NAT connections never committed, until drained.
    uncommitted_dnat: Vec<FlowKey>,
    /// The clock reading of the last batch looked up.
    pub(crate) last: Instant,
    /// What the look-up of the packet being tracked met ([`Met`]), for the pending
    /// connection it starts (`Pending::met`); set before that packet's tracking and
    /// reset after it. Handed over here, not through the tracking calls: as one more
    /// argument of theirs it cost a TCP hit 14 instructions and a new connection 7
    /// (registers, `benches/callgrind.sh`).
    pub(crate) met: Met,
    /// A pending connection's reply tuple changed in this batch without a check
    /// against the other pending connections (destination NAT, a replay at commit):
    /// the commit then checks every tuple in the table again, whatever was found
    /// free (see [`Conntrack::commit`]). Also set when a connection is started after
    /// a NAT decision of the batch (whose checks could not see it).
    unchecked: bool,
    /// A NAT decision was recorded in this batch.
    decided: bool,
    /// The clock reading (ns) up to which the sweep has kept pace, and the time
    /// (ns, at least 1) that one slot's sweep stands for: `sweep_every / capacity`.
    sweep_next: u64,
    sweep_step: u64,
}

/// The state shared by a worker's two conntrack stages. Only that worker's stages
/// lock it, once per batch each: nothing contends for it.
pub type SharedConntrack = Arc<Mutex<Conntrack>>;

fn v4(a: &[u8; 16]) -> Ipv4Addr {
    Ipv4Addr::new(a[0], a[1], a[2], a[3])
}

/// The flow key of an IPv4 tuple.
pub(crate) fn key4(t: &Tuple<Ipv4Addr>) -> FlowKey {
    FlowKey::v4(t.src, t.dst, t.proto, t.sport, t.dport)
}

/// The flow key of an IPv6 tuple.
pub(crate) fn key6(t: &Tuple<Ipv6Addr>) -> FlowKey {
    FlowKey::v6(t.src, t.dst, t.proto, t.sport, t.dport)
}

/// The tuple of a flow key.
pub(crate) fn tuple4(k: &FlowKey) -> Tuple<Ipv4Addr> {
    Tuple::new(v4(&k.src), v4(&k.dst), k.src_port, k.dst_port, k.proto, 0)
}

pub(crate) fn tuple6(k: &FlowKey) -> Tuple<Ipv6Addr> {
    Tuple::new(Ipv6Addr::from(k.src), Ipv6Addr::from(k.dst), k.src_port, k.dst_port, k.proto, 0)
}

impl Conntrack {
    /// Empty tables sized by `cfg` (allocated now, nothing later).
    pub fn new(cfg: CtConfig) -> Self {
        // The tables hold at most `MAX_CAPACITY` (2^27) each, so their handles pack
        // into the 30 bits of `PktMeta::ct`; the sweep paces itself by what they hold.
        let (v4, v6) = (CtTable::new(cfg.capacity, cfg.seed), CtTable::new(cfg.capacity, cfg.seed ^ 0x6));
        let step = sweep_step(cfg.sweep_every, v4.capacity());
        Conntrack {
            v4,
            v6,
            pending: Vec::with_capacity(PENDING_MAX),
            heads: [NO_LINK; PENDING_BUCKETS],
            links: Vec::with_capacity(4 * PENDING_MAX),
            cfg,
            frags: super::frag::FragMap::default(),
            dropped: Vec::with_capacity(PENDING_MAX),
            uncommitted_dnat: Vec::with_capacity(crate::table::conntrack::ENDED_MAX),
            last: Instant::ZERO,
            met: Met::Unknown,
            unchecked: false,
            decided: false,
            sweep_next: 0,
            sweep_step: step,
        }
    }

    /// The same, ready to share between a worker's two stages.
    pub fn shared(cfg: CtConfig) -> SharedConntrack {
        Arc::new(Mutex::new(Conntrack::new(cfg)))
    }

    /// The configuration.
    pub fn config(&self) -> &CtConfig {
        &self.cfg
    }

    /// Take new timeouts and tracking options; the capacity and hash seed stay as the
    /// tables were built (a restart applies them). Existing connections keep their
    /// expiry until their next packet.
    pub fn set_config(&mut self, cfg: &CtConfig) {
        self.cfg = CtConfig { capacity: self.cfg.capacity, seed: self.cfg.seed, ..cfg.clone() };
        self.sweep_step = sweep_step(self.cfg.sweep_every, self.v4.capacity());
    }

    /// The clock reading of the last batch (what listings and flushes outside the
    /// packet path take as now).
    pub fn last_seen(&self) -> Instant {
        self.last
    }

    /// Connections in the tables (IPv4, IPv6).
    pub fn len(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// True when both tables are empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The IPv4 table (listing, tests).
    pub fn v4(&self) -> &CtTable<Ipv4Addr, ProtoState> {
        &self.v4
    }

    /// The IPv6 table.
    pub fn v6(&self) -> &CtTable<Ipv6Addr, ProtoState> {
        &self.v6
    }

    /// The connection of `key`, committed or pending, and the packet's direction.
    #[inline(always)]
    pub(crate) fn find(&self, key: &FlowKey, now: Instant) -> Option<(CtRef, Dir)> {
        self.find_hashed(key, self.hash_of(key), now)
    }

    /// The table's hash of a flow key (that of the table of its family).
    #[inline(always)]
    pub(crate) fn hash_of(&self, key: &FlowKey) -> u64 {
        if key.v6 { self.v6.hash(&tuple6(key)) } else { self.v4.hash(&tuple4(key)) }
    }

    /// [`Self::find`] of a key whose [`Self::hash_of`] is `h`.
    #[inline(always)]
    pub(crate) fn find_hashed(&self, key: &FlowKey, h: u64, now: Instant) -> Option<(CtRef, Dir)> {
        let hit = if key.v6 {
            self.v6.lookup_hashed(&tuple6(key), h, now).map(|(id, d)| (CtRef::V6(id), d))
        } else {
            self.v4.lookup_hashed(&tuple4(key), h, now).map(|(id, d)| (CtRef::V4(id), d))
        };
        if hit.is_some() {
            return hit;
        }
        self.find_pending_only(key, h)
    }

    /// [`Self::find_hashed`] for a key the caller missed in the table already.
    #[inline(always)]
    pub(crate) fn find_pending_only(&self, key: &FlowKey, h: u64) -> Option<(CtRef, Dir)> {
        if !self.cfg.fixes.pending_visible || self.pending.is_empty() {
            return None;
        }
        // Most chains are empty (a batch's connections over 256 of them): told here,
        // without the call (25 instructions a new connection, `benches/callgrind.sh`).
        let head = self.heads.get(chain(h)).copied().unwrap_or(NO_LINK);
        if head == NO_LINK {
            return None;
        }
        self.find_pending(key, h, head)
    }

    /// The pending connection of `key` (hash `h`, its chain starting at link `head`)
    /// and the packet's direction (out of line: most batches have none).
    #[inline(never)]
    fn find_pending(&self, key: &FlowKey, h: u64, head: u16) -> Option<(CtRef, Dir)> {
        {
            let mut at = head;
            while let Some(&(handle, next)) = self.links.get(usize::from(at)) {
                at = next;
                let (i, reply) = ((handle >> 1) as usize, handle & 1 == 1);
                let Some(p) = self.pending.get(i).filter(|p| !p.dead) else { continue };
                let hit = if reply { p.reply_hash == h && p.reply == *key } else { p.key_hash == h && p.key == *key };
                if hit {
                    let i = u16::try_from(i).ok()?;
                    return Some((CtRef::Pending(i), if reply { Dir::Reply } else { Dir::Original }));
                }
            }
            None
        }
    }

    /// Link `handle` into the chain of hash `h`.
    fn link(&mut self, h: u64, handle: u32) {
        let Ok(n) = u16::try_from(self.links.len()) else { return };
        if let Some(head) = self.heads.get_mut(chain(h)) {
            self.links.push((handle, *head));
            *head = n;
        }
    }

    /// Add a pending connection (at most [`PENDING_MAX`] per batch; its `key_hash`
    /// given, its `reply_hash` computed here): its index.
    pub(crate) fn push_pending(&mut self, mut p: Pending) -> Option<u16> {
        if self.pending.len() >= PENDING_MAX {
            return None;
        }
        let i = u16::try_from(self.pending.len()).ok()?;
        debug_assert_eq!(p.key_hash, self.hash_of(&p.key), "stale key hash");
        p.reply_hash = self.hash_of(&p.reply);
        let (hk, hr) = (p.key_hash, p.reply_hash);
        self.unchecked |= self.decided;
        self.pending.push(p);
        self.link(hk, u32::from(i) << 1);
        self.link(hr, (u32::from(i) << 1) | 1);
        Some(i)
    }

    /// New connections of the last batch that were not committed.
    pub(crate) fn recently_dropped(&self) -> &[(FlowKey, FlowKey, u8)] {
        &self.dropped
    }

    /// Keep the not committed ones of this batch's pending connections
    /// (`committed(i)` false) for [`Conntrack::recently_dropped`].
    pub(crate) fn keep_dropped(&mut self, committed: impl Fn(usize) -> bool) {
        self.dropped.clear();
        for (i, p) in self.pending.iter().enumerate() {
            if !committed(i) {
                self.dropped.push((p.key, p.reply, p.status));
                if p.status & status::DST_NAT != 0 && self.uncommitted_dnat.len() < crate::table::conntrack::ENDED_MAX {
                    self.uncommitted_dnat.push(p.reply);
                }
            }
        }
    }

    /// The backends of destination-NAT connections that ended since the last call
    /// (removed from a table, or never committed), as (address, port, protocol).
    pub fn drain_ended(&mut self, mut f: impl FnMut(std::net::IpAddr, u16, u8)) {
        self.v4.drain_ended(|t| f(t.src.into(), t.sport, t.proto));
        self.v6.drain_ended(|t| f(t.src.into(), t.sport, t.proto));
        for reply in self.uncommitted_dnat.drain(..) {
            f(reply.src_addr(), reply.src_port, reply.proto);
        }
    }

    /// Forget the last batch's not committed connections (a new batch begins).
    pub(crate) fn forget_dropped(&mut self) {
        self.dropped.clear();
    }

    /// Forget the batch's pending connections.
    pub(crate) fn clear_pending(&mut self) {
        self.pending.clear();
        self.unchecked = false;
        self.decided = false;
        self.links.clear();
        self.heads = [NO_LINK; PENDING_BUCKETS];
    }

    /// Protocol state, status and expiry of a connection, writable.
    pub(crate) fn parts(&mut self, r: CtRef) -> Option<(&mut ProtoState, &mut u8, &mut Instant)> {
        match r {
            CtRef::V4(id) => self.v4.get_mut(id).map(|e| (&mut e.proto, &mut e.status, &mut e.expires)),
            CtRef::V6(id) => self.v6.get_mut(id).map(|e| (&mut e.proto, &mut e.status, &mut e.expires)),
            CtRef::Pending(i) => {
                self.pending.get_mut(usize::from(i)).map(|p| (&mut p.proto, &mut p.status, &mut p.expires))
            }
        }
    }

    /// What NAT needs for a packet of a connection going one way: the status bits and
    /// the *other* direction's tuple (the packet is made the inverse of it): the
    /// original tuple for a reply, the reply tuple otherwise.
    pub(crate) fn nat_view(&self, r: CtRef, reply_dir: bool) -> Option<(u8, FlowKey)> {
        match r {
            CtRef::V4(id) => self.v4.get(id).map(|e| (e.status, key4(if reply_dir { &e.original } else { &e.reply }))),
            CtRef::V6(id) => self.v6.get(id).map(|e| (e.status, key6(if reply_dir { &e.original } else { &e.reply }))),
            CtRef::Pending(i) => {
                self.pending.get(usize::from(i)).map(|p| (p.status, if reply_dir { p.key } else { p.reply }))
            }
        }
    }

    /// Both tuples of a connection and its status bits.
    pub fn tuples(&self, r: CtRef) -> Option<(FlowKey, FlowKey, u8)> {
        match r {
            CtRef::V4(id) => self.v4.get(id).map(|e| (key4(&e.original), key4(&e.reply), e.status)),
            CtRef::V6(id) => self.v6.get(id).map(|e| (key6(&e.original), key6(&e.reply), e.status)),
            CtRef::Pending(i) => self.pending.get(usize::from(i)).map(|p| (p.key, p.reply, p.status)),
        }
    }

    /// Pending connection `i`, read in place.
    #[inline(always)]
    pub(crate) fn pending_ref(&self, i: u16) -> Option<&Pending> {
        self.pending.get(usize::from(i))
    }

    /// Add status bits to pending connection `i` (a NAT decision that changes no
    /// tuple).
    #[inline(always)]
    pub(crate) fn add_status(&mut self, i: u16, bits: u8) {
        self.decided = true;
        if let Some(p) = self.pending.get_mut(usize::from(i)) {
            p.status |= bits;
        }
    }

    /// Record a NAT decision on a pending connection: the tuple its replies will
    /// carry, and status bits to add (`SRC_NAT`, `DST_NAT`, the `*_DONE` bits). NAT
    /// decides on a connection's first packet only, before it is committed.
    pub(crate) fn set_reply(&mut self, i: u16, reply: FlowKey, bits: u8) {
        let h = self.hash_of(&reply);
        self.unchecked = true;
        self.set_reply_hashed(i, reply, h, bits, false);
    }

    /// A pending connection's tuples may now clash with another's in ways the checks
    /// so far did not see (a replay at commit).
    pub(crate) fn mark_unchecked(&mut self) {
        self.unchecked = true;
    }

    /// [`Self::set_reply`] with the reply tuple's [`Self::hash_of`], `h`, for a
    /// reply tuple checked against the table and the other pending connections
    /// ([`Self::holder4`]): `free` when no entry at all had it.
    pub(crate) fn set_reply_hashed(&mut self, i: u16, reply: FlowKey, h: u64, bits: u8, free: bool) {
        debug_assert_eq!(h, self.hash_of(&reply), "stale reply hash");
        self.decided = true;
        let Some(p) = self.pending.get_mut(usize::from(i)) else { return };
        p.status |= bits;
        p.reply_free = free;
        if p.reply == reply {
            return;
        }
        p.reply = reply;
        p.reply_hash = h;
        // The old link stays in its chain and no longer matches (the hash or the
        // tuple differ); the new one joins the new chain.
        self.link(h, (u32::from(i) << 1) | 1);
    }

    /// Who has IPv4 tuple `t` (flow key `key`, [`Self::hash_of`] `h`) as its
    /// original or reply tuple: a live connection, committed or pending, makes a NAT
    /// choice giving a new connection that reply tuple a clash (`nf_nat_used_tuple`).
    /// (Masquerade is IPv4 only.)
    #[inline(always)]
    pub(crate) fn holder4(&self, t: &Tuple<Ipv4Addr>, key: &FlowKey, h: u64, now: Instant) -> Holder {
        let found = self.v4.find_any_hashed(t, h).map(|(id, _)| self.v4.get(id).is_some_and(|e| e.expires > now));
        match found {
            Some(true) => Holder::Live,
            _ if self.find_pending_only(key, h).is_some() => Holder::Live,
            Some(false) => Holder::Expired,
            None => Holder::Nobody,
        }
    }

    /// Forget a connection (a TCP reopen, a RST answering the first packet).
    pub(crate) fn remove(&mut self, r: CtRef) {
        match r {
            CtRef::V4(id) => {
                self.v4.remove(id);
            }
            CtRef::V6(id) => {
                self.v6.remove(id);
            }
            CtRef::Pending(i) => {
                if let Some(p) = self.pending.get_mut(usize::from(i)) {
                    p.dead = true;
                }
            }
        }
    }

    /// Commit pending connection `i` (one of its packets survived every verdict);
    /// `None` when it was ended in the batch (a RST answering its first packet).
    ///
    /// A tuple its look-up or its source NAT found in no entry at all is not looked
    /// for in the table again (a new connection on a flow never seen: 21
    /// instructions less, `benches/callgrind.sh`): since then only this batch's
    /// connections were inserted, and each of their tuples was checked against this
    /// one's, unless a reply tuple changed unchecked or a connection started after a
    /// NAT decision (then every tuple is looked for, as without the pending index).
    pub(crate) fn commit(&mut self, i: usize, now: Instant) -> Result<Option<CtRef>, InsertError> {
        let trusted = self.cfg.fixes.pending_visible && !self.unchecked;
        let Some(p) = self.pending.get(i).filter(|p| !p.dead) else { return Ok(None) };
        let free = (trusted && p.met == Met::Nothing, trusted && p.reply_free);
        if p.key.v6 {
            let (o, r) = (tuple6(&p.key), tuple6(&p.reply));
            let e = CtEntry { original: o, reply: r, expires: p.expires, status: p.status, serial: 0, proto: p.proto };
            self.v6
                .insert_known(e, (p.key_hash, p.reply_hash), now, |e| e.proto.closing(), free)
                .map(|id| Some(CtRef::V6(id)))
        } else {
            let (o, r) = (tuple4(&p.key), tuple4(&p.reply));
            let e = CtEntry { original: o, reply: r, expires: p.expires, status: p.status, serial: 0, proto: p.proto };
            let hashes = (p.key_hash, p.reply_hash);
            if let Met::Expired(id, serial) = p.met
                && let Some(done) = self.v4.replace_expired((id, serial), e, (hashes.1, free.1), now)
            {
                return done.map(|id| Some(CtRef::V4(id)));
            }
            self.v4.insert_known(e, hashes, now, |e| e.proto.closing(), free).map(|id| Some(CtRef::V4(id)))
        }
    }

    /// Insert an assured connection for `key` that lives until `expires` (tests,
    /// benches and a restart's state reload): no pending step. False when the table
    /// refuses it (full or a clash).
    pub fn preload(&mut self, key: &FlowKey, expires: Instant) -> bool {
        let proto = match key.proto {
            17 => ProtoState::Udp { stream_at: Instant::ZERO },
            1 | 58 => ProtoState::Icmp,
            _ => ProtoState::Generic,
        };
        let st = status::ASSURED | status::SEEN_REPLY;
        if key.v6 {
            let o = tuple6(key);
            let e = CtEntry { original: o, reply: o.reversed(), expires, status: st, serial: 0, proto };
            self.v6.insert(e, Instant::ZERO, |_| false).is_ok()
        } else {
            let o = tuple4(key);
            let e = CtEntry { original: o, reply: o.reversed(), expires, status: st, serial: 0, proto };
            self.v4.insert(e, Instant::ZERO, |_| false).is_ok()
        }
    }

    /// Mark every committed connection answered and assured, as replies both ways
    /// after two seconds would (benches that send one direction only, to measure the
    /// established path).
    pub fn assure_all(&mut self) {
        let bits = status::SEEN_REPLY | status::ASSURED;
        self.v4.for_each_mut(|e| {
            e.status |= bits;
            if let ProtoState::Udp { stream_at } = &mut e.proto {
                *stream_at = Instant::ZERO;
            }
        });
        self.v6.for_each_mut(|e| {
            e.status |= bits;
            if let ProtoState::Udp { stream_at } = &mut e.proto {
                *stream_at = Instant::ZERO;
            }
        });
    }

    /// Reclaim expired entries (a bounded amount per call, in proportion to the time
    /// since the last call: see [`CtConfig::sweep_every`]); returns how many. Inline
    /// up to the budget, which is nothing on most batches under load: the call to a
    /// function that saves six registers cost a hit 0.5 instructions a packet.
    #[inline]
    pub(crate) fn sweep(&mut self, now: Instant) -> usize {
        let n = self.sweep_budget(now);
        if n == 0 {
            return 0;
        }
        self.sweep_tables(now, n)
    }

    /// Reclaim expired entries among the next `n` slots of each table.
    #[inline(never)]
    fn sweep_tables(&mut self, now: Instant, n: usize) -> usize {
        // An empty table has nothing to reclaim (the IPv6 one, on most nodes).
        let v6 = if self.v6.is_empty() { 0 } else { self.v6.sweep(now, n) };
        self.v4.sweep(now, n) + v6
    }

    /// The slots (per family) the sweep looks at now: one per `capacity`-th of
    /// `sweep_every` that passed since the sweep last kept pace, at most
    /// `sweep_per_batch`, and none until [`SWEEP_CHUNK`] are owed. Batches closer
    /// together than that (any load) pay one compare.
    #[inline]
    pub(crate) fn sweep_budget(&mut self, now: Instant) -> usize {
        let (now, step) = (now.as_nanos(), self.sweep_step);
        if now < self.sweep_next.saturating_add(step.saturating_mul(SWEEP_CHUNK)) {
            return 0;
        }
        // At most one pass is owed, however long the table was idle.
        let next = self.sweep_next.max(now.saturating_sub(self.cfg.sweep_every.as_nanos()));
        let n = (now.saturating_sub(next) / step).min(self.cfg.sweep_per_batch as u64);
        self.sweep_next = next.saturating_add(n.saturating_mul(step));
        usize::try_from(n).unwrap_or(0)
    }

    /// Early drops so far (both tables).
    pub fn early_drops(&self) -> u64 {
        self.v4.early_drops + self.v6.early_drops
    }
}

/// Pack a [`CtRef`] into `PktMeta::ct` (0 stays "none"): tag in the top two bits.
pub(crate) fn pack(r: CtRef) -> u32 {
    match r {
        CtRef::V4(id) => (1 << 30) | (id.0 & 0x3fff_ffff),
        CtRef::V6(id) => (2 << 30) | (id.0 & 0x3fff_ffff),
        CtRef::Pending(i) => (3 << 30) | u32::from(i),
    }
}

/// Unpack `PktMeta::ct`.
pub fn unpack(v: u32) -> Option<CtRef> {
    match v >> 30 {
        1 => Some(CtRef::V4(CtId(v & 0x3fff_ffff))),
        2 => Some(CtRef::V6(CtId(v & 0x3fff_ffff))),
        3 => u16::try_from(v & 0xffff).ok().map(CtRef::Pending),
        _ => None,
    }
}

/// Slots the sweep looks at together, at least (when `sweep_per_batch` allows): a
/// call costs about 80 instructions besides its slots, which a slot a batch (1M
/// entries at 30 Mpkt/s) paid per batch.
const SWEEP_CHUNK: u64 = 8;

/// The clock time one slot's sweep stands for (ns, at least 1): a pass over
/// `capacity` slots per `every`.
fn sweep_step(every: Duration, capacity: usize) -> u64 {
    (every.as_nanos() / u64::try_from(capacity.max(1)).unwrap_or(u64::MAX)).max(1)
}

/// `status` bits a packet in `dir` adds (a reply seen).
pub(crate) fn seen_bits(dir: Dir) -> u8 {
    if dir == Dir::Reply { status::SEEN_REPLY } else { 0 }
}
