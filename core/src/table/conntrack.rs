//! The connection table: fixed capacity, both directions of a connection indexed,
//! expiry by an incremental sweep, early drop of unassured entries when full.
//!
//! Entries live in a slab allocated once (`capacity` of them; a free slot holds the
//! free list's link) and are found through an index of small handles (entry index
//! and direction), two per live entry: one for the original tuple, one for the reply
//! tuple (which differs from the reversed original when NAT changed it). The keys
//! themselves are not stored twice: a probe compares the tuple against the entry.
//! That keeps an IPv4 connection at 124 bytes with its index ([`CtTable::memory`]
//! over the capacity at a power of two: a 104-byte entry and 20 of index), against
//! about 300 for the kernel's `nf_conn`.
//!
//! The index is 256 hashbrown tables, each with twice the buckets of the handles it
//! holds, whose tombstones the sweep clears one table at a time (see `index.rs`):
//! one table sized so stopped the world for 100 ms once its tombstones filled it.
//!
//! Like netfilter: a lookup in either direction finds the entry and says which
//! (`Dir`); inserting a connection whose original or reply tuple is already taken by
//! a live entry fails (`Clash`), so NAT can never produce two connections with one
//! tuple; expired entries are invisible at once and their slots are reclaimed by
//! [`CtTable::sweep`], a bounded number of slots per call, so there is no
//! stop-the-world scan; when the table is full, an entry that is not assured (or a
//! TCP connection already closing) is dropped to make room, as `early_drop()` and the
//! gc at 95 % do,
//! and otherwise the new connection is refused: established connections are never
//! evicted by a flood of new ones.

use core::hash::{BuildHasher, Hash};
use std::net::{Ipv4Addr, Ipv6Addr};

use foldhash::fast::FixedState;

use self::index::Index;

use crate::stage::conntrack::tcp::Dir;
use crate::time::Instant;

/// A connection tuple in one direction: addresses, protocol and ports (for ICMP echo,
/// the identifier in both port fields, as netfilter keys it), in a zone.
///
/// Laid out without padding (`repr(C)`, an explicit zero byte at the end) so that
/// everything past the addresses is one 8-byte word: a probe compares it with one
/// load (the field-by-field compare cost a conntrack hit 10 instructions more,
/// `benches/callgrind.sh`).
#[derive(Clone, Copy, Debug, Eq, PartialOrd, Ord)]
#[repr(C)]
pub struct Tuple<A> {
    /// Source address.
    pub src: A,
    /// Destination address.
    pub dst: A,
    /// Source port (ICMP: the echo identifier).
    pub sport: u16,
    /// Destination port (ICMP: the echo identifier).
    pub dport: u16,
    /// Conntrack zone.
    pub zone: u16,
    /// IP protocol.
    pub proto: u8,
    /// Always 0: what would be padding, made a field so the word is whole.
    pad: u8,
}

impl<A> Tuple<A> {
    /// The tuple of a packet from `src`:`sport` to `dst`:`dport` with IP protocol
    /// `proto`, in `zone`.
    #[inline(always)]
    pub fn new(src: A, dst: A, sport: u16, dport: u16, proto: u8, zone: u16) -> Self {
        Tuple { src, dst, sport, dport, zone, proto, pad: 0 }
    }

    /// Ports, zone and protocol in one word, in memory order (one load where the
    /// tuple is in memory).
    #[inline(always)]
    fn l4(&self) -> u64 {
        u64::from(self.sport)
            | (u64::from(self.dport) << 16)
            | (u64::from(self.zone) << 32)
            | (u64::from(self.proto) << 48)
            | (u64::from(self.pad) << 56)
    }
}

impl<A: Copy> Tuple<A> {
    /// The same connection seen from the other end.
    pub fn reversed(&self) -> Self {
        Tuple { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, ..*self }
    }
}

impl<A: PartialEq> PartialEq for Tuple<A> {
    #[inline(always)]
    fn eq(&self, o: &Self) -> bool {
        self.l4() == o.l4() && self.src == o.src && self.dst == o.dst
    }
}

/// An address family of a [`CtTable`]: how a probe compares two tuples.
pub trait TupleAddr: Copy + Eq + Hash {
    /// The unspecified address (what a free slot's tuples hold).
    const UNSPECIFIED: Self;

    /// True when `a` and `b` are the same tuple.
    fn tuple_eq(a: &Tuple<Self>, b: &Tuple<Self>) -> bool {
        a == b
    }
}

impl TupleAddr for Ipv4Addr {
    const UNSPECIFIED: Self = Ipv4Addr::UNSPECIFIED;

    /// Both addresses as one 8-byte word, in memory order: one load where the tuple
    /// is in memory (5 instructions less a hit than two compares,
    /// `benches/callgrind.sh`).
    #[inline(always)]
    fn tuple_eq(a: &Tuple<Self>, b: &Tuple<Self>) -> bool {
        let addrs = |t: &Tuple<Self>| {
            u64::from(u32::from_ne_bytes(t.src.octets())) | (u64::from(u32::from_ne_bytes(t.dst.octets())) << 32)
        };
        a.l4() == b.l4() && addrs(a) == addrs(b)
    }
}

impl TupleAddr for Ipv6Addr {
    const UNSPECIFIED: Self = Ipv6Addr::UNSPECIFIED;
}

impl<A: Hash> Hash for Tuple<A> {
    #[inline(always)]
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        self.src.hash(h);
        self.dst.hash(h);
        h.write_u64(self.l4());
    }
}

/// Status bits of an entry (`IPS_*`).
pub mod status {
    /// A packet in the reply direction has been seen.
    pub const SEEN_REPLY: u8 = 1;
    /// The connection is assured: never early-dropped.
    pub const ASSURED: u8 = 2;
    /// Source NAT applied.
    pub const SRC_NAT: u8 = 4;
    /// Destination NAT applied.
    pub const DST_NAT: u8 = 8;
    /// The source NAT decision has been made (applied or not).
    pub const SRC_NAT_DONE: u8 = 16;
    /// The destination NAT decision has been made.
    pub const DST_NAT_DONE: u8 = 32;
}

/// One connection. `P` is the protocol state (TCP tracking, UDP/ICMP nothing).
///
/// Laid out in this order: what a hit reads and writes (the tuples, expiry, status,
/// serial, and the start of the protocol state, where its variant is told) comes
/// first, within 64 bytes for IPv4, so a cold hit misses fewer cache lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CtEntry<A, P> {
    /// The tuple of the first packet.
    pub original: Tuple<A>,
    /// The tuple replies carry (the reversed original, translated by NAT).
    pub reply: Tuple<A>,
    /// When the entry expires.
    pub expires: Instant,
    /// [`status`] bits.
    pub status: u8,
    /// Which insert put it in its slot, set by [`CtTable::insert`] (what the caller
    /// gives is replaced): a cache that names a slot (the flow fast path) checks with
    /// one compare, in the slot it reads anyway, that it is still the same
    /// connection. It lies in what would be padding.
    pub serial: u32,
    /// Protocol state.
    pub proto: P,
}

impl<A, P> CtEntry<A, P> {
    /// True when it has a status bit.
    pub fn has(&self, bit: u8) -> bool {
        self.status & bit != 0
    }
}

/// A handle to an entry (its slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtId(pub u32);

/// Why an insert failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The table is full of entries that may not be dropped.
    Full,
    /// A live entry already has the original or the reply tuple.
    Clash,
}

/// Most connections a table holds (134 million: 13 GiB of entries): a handle keeps
/// the slot above its 5 low bits (see `handle`).
pub const MAX_CAPACITY: usize = 1 << 27;

/// The end of the free list (no slot has this index: [`MAX_CAPACITY`] is less).
const NO_SLOT: u32 = 0x7fff_ffff;

/// The bit of a free slot's serial: inserts give serials below it.
const FREE: u32 = 1 << 31;

impl<A: TupleAddr, P: Default> CtEntry<A, P> {
    /// What a free slot holds: tuples marked free (`pad` 1), which no probe's tuple
    /// equals, so a probe reads a slot without asking whether it is taken; in the
    /// serial, [`FREE`] and the free list's next link (the next free slot, [`NO_SLOT`]
    /// at the end), so the list costs no memory and a cache that names a slot and a
    /// serial (the flow fast path's, `get_mut_if`) never takes a free slot for a
    /// connection with one compare (no insert gives a serial with that bit); and no
    /// expiry, so the sweep passes it by.
    fn free(next: u32) -> Self {
        let t = Tuple { pad: 1, ..Tuple::new(A::UNSPECIFIED, A::UNSPECIFIED, 0, 0, 0, 0) };
        CtEntry { original: t, reply: t, expires: Instant::MAX, status: 0, serial: FREE | next, proto: P::default() }
    }
}

impl<A, P> CtEntry<A, P> {
    /// True for a free slot's content ([`CtEntry::free`]).
    #[inline(always)]
    fn is_free(&self) -> bool {
        self.original.pad != 0
    }
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct CtTable<A, P> {
    slots: Vec<CtEntry<A, P>>,
    /// The first free slot ([`NO_SLOT`]: none).
    free: u32,
    index: Index,
    hasher: FixedState,
    live: usize,
    cursor: usize,
    /// Entries dropped early to make room.
    pub early_drops: u64,
    /// Reply tuples of removed entries that had destination NAT (their source is
    /// the backend), for the connection-counting schedulers; at most [`ENDED_MAX`]
    /// until drained.
    ended: Vec<Tuple<A>>,
    /// The serial number the next insert gives its entry (1 to 2^31 - 1).
    next_serial: u32,
}

/// Most ended destination-NAT connections kept until [`CtTable::drain_ended`].
pub const ENDED_MAX: usize = 4096;

/// Handle of `(slot, dir)` in the index: the direction in bit 4, so that the tuple's
/// offset in the entry (the reply tuple is 16 bytes after the original) is one mask
/// away (2 instructions a probe less than the direction in bit 0).
fn handle(slot: u32, dir: Dir) -> u32 {
    (slot << 5) | ((dir as u32) << 4)
}

fn unhandle(h: u32) -> (usize, Dir) {
    let dir = if h & 16 == 0 { Dir::Original } else { Dir::Reply };
    ((h >> 5) as usize, dir)
}

/// How many slots an insert into a full table looks at for one to drop (the kernel
/// looks at a few hash buckets).
const EARLY_DROP_SCAN: usize = 64;

impl<A: TupleAddr, P: Copy + Default> CtTable<A, P> {
    /// A table for `capacity` connections (at most [`MAX_CAPACITY`]), indexed
    /// with hash `seed`.
    /// Allocates everything now; nothing later.
    pub fn new(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        // Slot i links to i + 1: the first inserts take slots 0, 1, 2...
        let slots = (1..=capacity)
            .map(|next| CtEntry::free(if next == capacity { NO_SLOT } else { u32::try_from(next).unwrap_or(NO_SLOT) }))
            .collect();
        CtTable {
            slots,
            free: 0,
            index: Index::new(2 * capacity),
            hasher: FixedState::with_seed(seed),
            live: 0,
            cursor: 0,
            early_drops: 0,
            ended: Vec::with_capacity(ENDED_MAX),
            next_serial: 1,
        }
    }

    /// Connections held (expired ones not swept yet included).
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Most connections.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The index's hash of a tuple: callers that look a tuple up and then insert it
    /// compute it once and hand it to the `_hashed` calls.
    #[inline(always)]
    pub fn hash(&self, t: &Tuple<A>) -> u64 {
        self.hasher.hash_one(t)
    }

    #[inline(always)]
    fn tuple_of(slots: &[CtEntry<A, P>], h: u32) -> Option<&Tuple<A>> {
        let (i, dir) = unhandle(h);
        // A free slot (which no handle names) has tuples that match nothing.
        let e = slots.get(i)?;
        Some(if dir == Dir::Original { &e.original } else { &e.reply })
    }

    /// The live entry with tuple `t` in either direction, and that direction.
    #[inline(always)]
    pub fn lookup(&self, t: &Tuple<A>, now: Instant) -> Option<(CtId, Dir)> {
        self.lookup_hashed(t, self.hash(t), now)
    }

    /// [`Self::lookup`] of a tuple whose [`Self::hash`] is `hash`.
    #[inline(always)]
    pub fn lookup_hashed(&self, t: &Tuple<A>, hash: u64, now: Instant) -> Option<(CtId, Dir)> {
        let (id, dir) = self.find_any_hashed(t, hash)?;
        // What a probe finds is taken (a free slot's tuples match nothing).
        (self.slots.get(id.0 as usize)?.expires > now).then_some((id, dir))
    }

    /// [`Self::lookup_hashed`] with the entry, writable (tuples and serial must not
    /// be changed): what a hit is refreshed through. An expired entry is a miss and
    /// stays (a look-up that may start a connection takes
    /// [`Self::lookup_mut_or_expired`]).
    #[inline(always)]
    pub fn lookup_live_mut(
        &mut self,
        t: &Tuple<A>,
        hash: u64,
        now: Instant,
    ) -> Option<(CtId, Dir, &mut CtEntry<A, P>)> {
        let (id, dir) = self.find_any_hashed(t, hash)?;
        let e = self.slots.get_mut(id.0 as usize)?;
        if e.expires <= now {
            return None;
        }
        Some((id, dir, e))
    }

    /// [`Self::lookup_live_mut`] for a look-up that starts a connection when it
    /// misses: an expired entry met by its original tuple (the new connection's) is
    /// handed back, its slot and serial, for the new connection to take over at
    /// commit ([`Self::replace_expired`]); one met by its reply tuple is removed now,
    /// as the kernel's `nf_conntrack_find()` reaps one it meets.
    ///
    /// # Errors
    /// A miss, with the expired entry to take over if there is one.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    pub fn lookup_mut_or_expired(
        &mut self,
        t: &Tuple<A>,
        hash: u64,
        now: Instant,
    ) -> Result<(CtId, Dir, &mut CtEntry<A, P>), Option<(CtId, u32)>> {
        let Some((id, dir)) = self.find_any_hashed(t, hash) else { return Err(None) };
        // What a probe finds is taken (a free slot's tuples match nothing).
        if self.slots.get(id.0 as usize).is_none_or(|e| e.expires <= now) {
            return Err(self.met_expired(id, dir, hash));
        }
        match self.slots.get_mut(id.0 as usize) {
            Some(e) => Ok((id, dir, e)),
            None => Err(None),
        }
    }

    /// [`Self::lookup_mut_or_expired`]'s expired entry `id`, met through its `dir`
    /// tuple of hash `hash`: handed back when met by its original tuple, else
    /// removed, as the kernel's `nf_conntrack_find()` reaps one it meets. (Out of
    /// line, it cost a new connection 37 instructions, `benches/callgrind.sh`.)
    #[inline(always)]
    fn met_expired(&mut self, id: CtId, dir: Dir, hash: u64) -> Option<(CtId, u32)> {
        if dir == Dir::Original {
            return self.get(id).map(|e| (id, e.serial));
        }
        self.remove_known(id, Some((dir, hash)));
        None
    }

    /// Put a new connection in the slot of the expired connection `id` (inserted
    /// with `serial`) that has the same original tuple, as a look-up of that tuple
    /// found it: the original tuple's index entry stays as it is, and the reply
    /// tuple's is moved only when the reply differs: of the 6 index operations of a
    /// removal and an insert, 2 at most, with the same outcome (a new masqueraded
    /// connection that replaces an expired one took 146 instructions less,
    /// `benches/callgrind.sh`). `hr` is the [`Self::hash`] of
    /// `entry.reply`, and `free` true when the caller knows no entry at all has it
    /// (it is not looked for then). `None` when the slot no longer holds that expired
    /// connection (removed, replaced, or refreshed since): [`Self::insert_hashed`]
    /// then.
    ///
    /// # Errors
    /// [`InsertError::Clash`] when a live entry has the new reply tuple.
    pub fn replace_expired(
        &mut self,
        (id, serial): (CtId, u32),
        entry: CtEntry<A, P>,
        (hr, free): (u64, bool),
        now: Instant,
    ) -> Option<Result<CtId, InsertError>> {
        let old = self.slots.get(id.0 as usize)?;
        if old.serial != serial || old.expires > now || !A::tuple_eq(&old.original, &entry.original) {
            return None;
        }
        let (old_reply, dnat) = (old.reply, old.has(status::DST_NAT));
        if !A::tuple_eq(&old_reply, &entry.reply) {
            debug_assert_eq!(hr, self.hash(&entry.reply), "stale reply hash");
            // The new reply tuple must be free: a live holder clashes, an expired one
            // goes (this entry itself holds it only as its original: kept).
            debug_assert!(!free || self.find_any_hashed(&entry.reply, hr).is_none(), "reply tuple held");
            if !free
                && let Some((other, _)) = self.find_any_hashed(&entry.reply, hr)
                && other != id
            {
                if self.get(other).is_some_and(|e| e.expires > now) {
                    return Some(Err(InsertError::Clash));
                }
                self.remove(other);
            }
            let h_old = self.hash(&old_reply);
            self.index.remove(h_old, handle(id.0, Dir::Reply));
            self.index_insert(hr, handle(id.0, Dir::Reply));
        }
        let serial = self.take_serial();
        if let Some(s) = self.slots.get_mut(id.0 as usize) {
            *s = CtEntry { serial, ..entry };
        }
        // The expired connection ended, as a removal would have said.
        if dnat && self.ended.len() < ENDED_MAX {
            self.ended.push(old_reply);
        }
        Some(Ok(id))
    }

    /// The entry `id`.
    pub fn get(&self, id: CtId) -> Option<&CtEntry<A, P>> {
        self.slots.get(id.0 as usize).filter(|e| !e.is_free())
    }

    /// The entry `id`, writable (tuples must not be changed: they are indexed; nor
    /// the serial).
    pub fn get_mut(&mut self, id: CtId) -> Option<&mut CtEntry<A, P>> {
        self.slots.get_mut(id.0 as usize).filter(|e| !e.is_free())
    }

    /// Add a connection. An expired entry holding either tuple is removed first; a
    /// live one makes it a [`InsertError::Clash`]. A full table drops an entry that is
    /// not assured (`early_drop()`), or an assured one `closing` says is ending (TCP
    /// in FIN_WAIT..CLOSE: what the kernel's gc drops once the table is 95 % full,
    /// `tcp_can_early_drop`), else refuses with [`InsertError::Full`].
    ///
    /// # Errors
    /// See [`InsertError`].
    pub fn insert(
        &mut self,
        entry: CtEntry<A, P>,
        now: Instant,
        closing: impl Fn(&CtEntry<A, P>) -> bool,
    ) -> Result<CtId, InsertError> {
        let hashes = (self.hash(&entry.original), self.hash(&entry.reply));
        self.insert_hashed(entry, hashes, now, closing)
    }

    /// [`Self::insert`] with the [`Self::hash`]es of the original and reply tuples,
    /// which the caller computed when it looked them up.
    ///
    /// # Errors
    /// See [`InsertError`].
    pub fn insert_hashed(
        &mut self,
        entry: CtEntry<A, P>,
        hashes: (u64, u64),
        now: Instant,
        closing: impl Fn(&CtEntry<A, P>) -> bool,
    ) -> Result<CtId, InsertError> {
        self.insert_known(entry, hashes, now, closing, (false, false))
    }

    /// [`Self::insert_hashed`] when the caller knows that no entry at all (not even
    /// an expired one) has the original tuple (`free.0`) or the reply tuple
    /// (`free.1`): that tuple is not looked for.
    ///
    /// # Errors
    /// See [`InsertError`].
    pub fn insert_known(
        &mut self,
        entry: CtEntry<A, P>,
        (ho, hr): (u64, u64),
        now: Instant,
        closing: impl Fn(&CtEntry<A, P>) -> bool,
        free: (bool, bool),
    ) -> Result<CtId, InsertError> {
        debug_assert_eq!((ho, hr), (self.hash(&entry.original), self.hash(&entry.reply)), "stale tuple hashes");
        debug_assert!(!free.0 || self.find_any_hashed(&entry.original, ho).is_none(), "original tuple held");
        debug_assert!(!free.1 || self.find_any_hashed(&entry.reply, hr).is_none(), "reply tuple held");
        for (t, h, free) in [(entry.original, ho, free.0), (entry.reply, hr, free.1)] {
            if free {
                continue;
            }
            if let Some((id, _)) = self.find_any_hashed(&t, h) {
                match self.get(id) {
                    Some(e) if e.expires > now => return Err(InsertError::Clash),
                    _ => {
                        self.remove(id);
                    }
                }
            }
        }
        if self.free == NO_SLOT && !self.early_drop(now, &closing) {
            return Err(InsertError::Full);
        }
        let slot = self.free;
        let serial = self.take_serial();
        let Some(s) = self.slots.get_mut(slot as usize).filter(|e| e.is_free()) else {
            return Err(InsertError::Full);
        };
        self.free = s.serial & !FREE;
        *s = CtEntry { serial, ..entry };
        self.index_insert(ho, handle(slot, Dir::Original));
        self.index_insert(hr, handle(slot, Dir::Reply));
        self.live += 1;
        Ok(CtId(slot))
    }

    /// The serial the next insert gives its entry, and the one after it ready:
    /// serials run from 1 to 2^31 - 1 and round again, below [`FREE`], never 0.
    #[inline(always)]
    fn take_serial(&mut self) -> u32 {
        let serial = self.next_serial;
        self.next_serial = if serial >= FREE - 1 { 1 } else { serial + 1 };
        serial
    }

    /// Index handle `h` under `hash` (hashbrown asks any handle's hash, from the
    /// tuple its entry holds, only when a shard must grow).
    #[inline(always)]
    fn index_insert(&mut self, hash: u64, h: u32) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert(hash, h, |&x| Self::tuple_of(slots, x).map_or(0, |t| hasher.hash_one(t)));
    }

    /// The entry holding `t` (whose hash is `hash`), expired or not.
    #[inline(always)]
    pub(crate) fn find_any_hashed(&self, t: &Tuple<A>, hash: u64) -> Option<(CtId, Dir)> {
        let slots = &self.slots;
        let h = self.index.find(hash, |&h| Self::tuple_of(slots, h).is_some_and(|x| A::tuple_eq(x, t)))?;
        let (i, dir) = unhandle(h);
        Some((CtId(u32::try_from(i).unwrap_or(u32::MAX)), dir))
    }

    /// Remove entry `id`; false when there was none. Only the tuples are read out:
    /// copying the whole 112-byte entry (to return it) cost a new connection that
    /// replaces an expired one 70 instructions (`benches/callgrind.sh`).
    pub fn remove(&mut self, id: CtId) -> bool {
        self.remove_known(id, None)
    }

    /// [`Self::remove`] when the hash of one of the entry's tuples is known: `(dir,
    /// hash)`, not computed again.
    fn remove_known(&mut self, id: CtId, known: Option<(Dir, u64)>) -> bool {
        let Some(e) = self.get(id) else { return false };
        let (original, reply, dnat) = (e.original, e.reply, e.has(status::DST_NAT));
        for (t, dir) in [(original, Dir::Original), (reply, Dir::Reply)] {
            let want = handle(id.0, dir);
            let h = match known {
                Some((d, h)) if d == dir => {
                    debug_assert_eq!(h, self.hash(&t), "stale tuple hash");
                    h
                }
                _ => self.hash(&t),
            };
            self.index.remove(h, want);
        }
        if let Some(e) = self.slots.get_mut(id.0 as usize) {
            *e = CtEntry::free(self.free);
            self.free = id.0;
        }
        self.live -= 1;
        if dnat && self.ended.len() < ENDED_MAX {
            self.ended.push(reply);
        }
        true
    }

    /// Find an entry to drop for room: expired, not assured, or assured but closing.
    fn early_drop(&mut self, now: Instant, closing: &impl Fn(&CtEntry<A, P>) -> bool) -> bool {
        let n = self.slots.len();
        for k in 0..EARLY_DROP_SCAN.min(n) {
            let i = (self.cursor + k) % n;
            let Some(e) = self.slots.get(i).filter(|e| !e.is_free()).copied() else { continue };
            if e.expires <= now || !e.has(status::ASSURED) || closing(&e) {
                self.remove(CtId(u32::try_from(i).unwrap_or(u32::MAX)));
                if e.expires > now {
                    self.early_drops += 1;
                }
                self.cursor = (i + 1) % n;
                return true;
            }
        }
        // Nothing to drop here: the next attempt looks further on, so a run of
        // assured connections does not refuse every new one while droppable entries
        // wait elsewhere (the kernel looks at other random buckets each time).
        self.cursor = (self.cursor + EARLY_DROP_SCAN.min(n)) % n;
        false
    }

    /// Reclaim expired entries among the next `budget` slots (round robin); returns
    /// how many were removed. Call it once per batch with a small budget: it also
    /// clears the tombstones of the index's shards, a few shards a call (without
    /// that, hashbrown rebuilds a shard at twice its size when they fill it).
    pub fn sweep(&mut self, now: Instant, budget: usize) -> usize {
        let slots = &self.slots;
        let hasher = &self.hasher;
        self.index.maintain(|&h| Self::tuple_of(slots, h).map_or(0, |t| hasher.hash_one(t)));
        let n = self.slots.len();
        let start = self.cursor.min(n);
        let end = start.saturating_add(budget).min(n);
        // Wrapping is one step of its own: a batch that reaches the end sweeps no
        // further (the next one starts at slot 0).
        self.cursor = if end >= n { 0 } else { end };
        let mut removed = 0;
        let mut i = start;
        // A scan of the window (a compare per slot, no bounds checks), then the rare
        // removal.
        while let Some(off) = self.slots.get(i..end).and_then(|w| w.iter().position(|e| e.expires <= now)) {
            let k = i + off;
            self.remove(CtId(u32::try_from(k).unwrap_or(u32::MAX)));
            removed += 1;
            i = k + 1;
        }
        removed
    }

    /// Hand over the reply tuples of destination-NAT entries removed since the last
    /// call.
    pub fn drain_ended(&mut self, mut f: impl FnMut(&Tuple<A>)) {
        for t in self.ended.drain(..) {
            f(&t);
        }
    }

    /// Change every entry in place (status and protocol state only: the tuples, which
    /// the index hashes, must not change).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut CtEntry<A, P>)) {
        self.slots.iter_mut().filter(|e| !e.is_free()).for_each(|e| {
            let (o, r) = (e.original, e.reply);
            f(e);
            e.original = o;
            e.reply = r;
        });
    }

    /// Every live entry, in slot order (for `conntrack -L`-style listings).
    pub fn iter(&self, now: Instant) -> impl Iterator<Item = (CtId, &CtEntry<A, P>)> + '_ {
        self.slots.iter().enumerate().filter_map(move |(i, e)| {
            let e = Some(e).filter(|e| !e.is_free() && e.expires > now)?;
            Some((CtId(u32::try_from(i).unwrap_or(u32::MAX)), e))
        })
    }

    /// The live connection in slot `id` with the serial number of its insert, if it
    /// is still there (not replaced, not removed).
    #[inline]
    pub fn get_mut_if(&mut self, id: CtId, serial: u32) -> Option<&mut CtEntry<A, P>> {
        // A free slot's serial has the bit [`FREE`], which no insert gives.
        self.slots.get_mut(id.0 as usize).filter(|e| e.serial == serial)
    }

    /// The serial number of the insert that put the connection in slot `id`.
    pub fn serial(&self, id: CtId) -> u32 {
        self.get(id).map_or(0, |e| e.serial)
    }

    /// Shards of the index rebuilt so far to clear hashbrown's tombstones (see
    /// `index.rs`).
    pub fn index_rebuilds(&self) -> u64 {
        self.index.rebuilds
    }

    /// Bytes the table holds, all allocated by [`Self::new`]: the entries, the free
    /// list, the index as hashbrown sized it, and the list of ended destination-NAT
    /// connections ([`ENDED_MAX`] tuples a table, whatever its capacity).
    pub fn memory(&self) -> usize {
        self.slots.capacity() * size_of::<CtEntry<A, P>>()
            + self.index.memory()
            + self.ended.capacity() * size_of::<Tuple<A>>()
    }
}

mod index;
#[cfg(test)]
mod tests;
