//! An IPv4 longest-prefix-match table built as a poptrie (Asai and Ohara, "Poptrie: A
//! Compressed Trie with Population Count for Fast and Scalable Software IP Routing
//! Table Lookup", SIGCOMM 2015): the FIB the route stage looks up per packet.
//!
//! # Lookup structure (the FIB)
//! - A direct table of 262,144 entries indexed by the top 18 address bits (the
//!   paper's `s` = 18: a /24, the commonest length in real tables, is then a leaf of
//!   the first node level). Each holds the best route of length ≤ 18 covering that
//!   slot (`short`) and, when the slot has longer routes, the root node of its
//!   subtree.
//! - Subtree nodes consume 6, 6 and then 2 bits. A node has two 64-bit maps: `vector`
//!   marks children that are nodes, `leafvec` marks where a run of equal leaves
//!   starts among the children that are leaves. Children nodes sit contiguous from
//!   `base1`, leaves from `base0`, so the child of index `c` is found with one
//!   population count over the map bits below `c`. A leaf holds the longest route
//!   of length 19..=32 covering it, or 0: then the slot's `short` route answers.
//!   Short routes are not pushed into the subtrees, so changing one (a default route)
//!   touches only direct-table entries, never a subtree.
//! - A lookup is one direct-table load plus at most three node loads and one leaf
//!   load (`benches/benches/lpm.rs` compares it with the per-length hash tables it
//!   replaced; the figures are in the route stage's docs).
//!
//! # Updates (the RIB)
//! Routes are also kept as they were given: those of length ≤ 18 in a hash table per
//! length, longer ones in a list per slot. Adding or removing a long route rebuilds
//! the subtree of its slot only (its routes: four on average for a million random
//! routes), at the end of the node and leaf arrays; the old ranges become garbage,
//! and when garbage outweighs live entries everything is rebuilt compactly
//! ([`Poptrie4::compact`], also worth calling after loading a large table). Adding or
//! removing a short route of length `l` rewrites 2^(18 − l) direct entries. Updates
//! run on the control path; the packet path only reads.

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

use super::interner::Interner;
use super::lpm::Key;

/// No subtree (in a direct-table entry; node indices are stored plus one, so that a
/// fresh table is all zeros and the allocator hands out untouched pages).
const NO_NODE: u32 = 0;
/// Address bits the direct table consumes (the paper's `s`; 18 puts a /24 in a leaf
/// of the first node level, the most common length in real tables).
const DIRECT_LEN: u8 = 18;
/// [`DIRECT_LEN`] as a shift amount.
const DIRECT: u32 = DIRECT_LEN as u32;
/// Bits below the direct table: strides of 6, 6 and then the rest.
const SUFFIX: u8 = 32 - DIRECT_LEN;
/// The last stride.
const LAST_STRIDE: u32 = SUFFIX as u32 % 6;
/// Direct-table entries.
const SLOTS: usize = 1 << DIRECT;

/// A direct-table entry: the root of the slot's subtree (index + 1, or [`NO_NODE`]) and
/// its best short route.
#[derive(Clone, Copy, Debug)]
struct Dir {
    node: u32,
    short: u32,
}

/// A trie node (24 bytes).
#[derive(Clone, Copy, Debug, Default)]
struct Node {
    vector: u64,
    leafvec: u64,
    base0: u32,
    base1: u32,
}

/// A leaf: 0 for none, else `(value index + 1) << 6 | length`.
/// Lengths in a subtree count from the slot's prefix length.
const SUFFIX_LEN_BASE: u8 = DIRECT_LEN;

/// The address bits below the slot.
#[inline]
fn low_bits(p: u32) -> u16 {
    (p & ((1 << SUFFIX) - 1)) as u16
}

#[inline]
fn leaf_code(vi: u32, len: u8) -> u32 {
    ((vi + 1) << 6) | u32::from(len)
}

/// A prefix, for range tests in [`Poptrie4::refresh_short`].
#[derive(Clone, Copy)]
struct Cidr32 {
    prefix: u32,
    len: u8,
}

impl Cidr32 {
    fn contains(&self, a: u32) -> bool {
        a.mask(self.len) == self.prefix
    }
}

/// A long route as kept in the RIB: the address bits below the slot, the length and
/// the value index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Long {
    low: u16,
    len: u8,
    vi: u32,
}

/// A direct-table slot's long routes and the size of its subtree (which becomes
/// garbage when the slot is rebuilt).
#[derive(Clone, Debug, Default)]
struct Slot {
    routes: Vec<Long>,
    nodes: u32,
    leaves: u32,
}

/// The leaf array: 16-bit leaf codes while every code fits (fewer than 1023 distinct
/// values: a node's next hops), 32-bit from the first that does not. Leaves are most
/// of a real table, so this takes the BGP-shaped million from 10.3 to 7.8 MiB; the
/// branch on the width is the same one every lookup (predicted).
#[derive(Clone, Debug)]
enum Leaves {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl Leaves {
    #[inline(always)]
    fn get(&self, i: usize) -> Option<u32> {
        match self {
            Leaves::Narrow(v) => v.get(i).map(|&c| u32::from(c)),
            Leaves::Wide(v) => v.get(i).copied(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Leaves::Narrow(v) => v.len(),
            Leaves::Wide(v) => v.len(),
        }
    }

    /// Append a leaf code, widening the array the first time one does not fit.
    fn push(&mut self, code: u32) {
        match self {
            Leaves::Narrow(v) => match u16::try_from(code) {
                Ok(c) => v.push(c),
                Err(_) => {
                    let mut w: Vec<u32> = v.iter().map(|&c| u32::from(c)).collect();
                    w.push(code);
                    *self = Leaves::Wide(w);
                }
            },
            Leaves::Wide(v) => v.push(code),
        }
    }

    /// An empty array of the same width.
    fn empty_with_capacity(&self, n: usize) -> Leaves {
        match self {
            Leaves::Narrow(_) => Leaves::Narrow(Vec::with_capacity(n)),
            Leaves::Wide(_) => Leaves::Wide(Vec::with_capacity(n)),
        }
    }

    fn shrink_to_fit(&mut self) {
        match self {
            Leaves::Narrow(v) => v.shrink_to_fit(),
            Leaves::Wide(v) => v.shrink_to_fit(),
        }
    }

    fn memory_bytes(&self) -> usize {
        match self {
            Leaves::Narrow(v) => v.capacity() * 2,
            Leaves::Wide(v) => v.capacity() * 4,
        }
    }
}

/// An IPv4 poptrie from prefixes to values `V` (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct Poptrie4<V: Copy + Eq + core::hash::Hash> {
    /// [`Dir`] entries as `[node, short]`.
    dir: Vec<[u32; 2]>,
    nodes: Vec<Node>,
    leaves: Leaves,
    garbage: usize,
    short: Vec<HashMap<u32, u32, FxBuildHasher>>,
    /// The slots that have long routes (a map, not an array per slot: a node with a
    /// few routes should not pay for 262,144 empty lists).
    slots: HashMap<u32, Slot, FxBuildHasher>,
    values: Interner<V>,
    len: usize,
}

impl<V: Copy + Eq + core::hash::Hash> Default for Poptrie4<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Copy + Eq + core::hash::Hash> Poptrie4<V> {
    /// An empty table (the direct table is allocated up front: 2 MiB).
    pub fn new() -> Self {
        Poptrie4 {
            // `[u32; 2]` and not `Dir` so that `vec!` can take zeroed pages (calloc): a
            // node with a handful of routes touches a few of the 512 pages.
            dir: vec![[0u32; 2]; SLOTS],
            nodes: Vec::new(),
            leaves: Leaves::Narrow(Vec::new()),
            garbage: 0,
            short: (0..=DIRECT).map(|_| HashMap::with_hasher(FxBuildHasher)).collect(),
            slots: HashMap::with_hasher(FxBuildHasher),
            values: Interner::default(),
            len: 0,
        }
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn decode(&self, code: u32) -> Option<(u8, V)> {
        if code == 0 {
            return None;
        }
        let v = self.values.get((code >> 6) - 1)?;
        Some(u8::try_from(code & 63).map_or((32, v), |l| (l, v)))
    }

    /// The value stored for exactly `prefix/len`.
    pub fn get(&self, prefix: u32, len: u8) -> Option<V> {
        let len = len.min(32);
        let p = prefix.mask(len);
        let vi = if u32::from(len) <= DIRECT {
            *self.short.get(usize::from(len))?.get(&p)?
        } else {
            let low = low_bits(p);
            self.slots.get(&(p >> SUFFIX))?.routes.iter().find(|l| l.low == low && l.len == len)?.vi
        };
        self.values.get(vi)
    }

    /// Insert or replace `prefix/len` (host bits ignored, `len` clamped to 32);
    /// returns the old value.
    pub fn insert(&mut self, prefix: u32, len: u8, value: V) -> Option<V> {
        let len = len.min(32);
        let p = prefix.mask(len);
        let vi = self.values.intern(value);
        let old = if u32::from(len) <= DIRECT {
            let old = self.short.get_mut(usize::from(len))?.insert(p, vi);
            self.paint_short(p, len, leaf_code(vi, len));
            old
        } else {
            let s = p >> SUFFIX;
            let low = low_bits(p);
            let list = &mut self.slots.entry(s).or_default().routes;
            let old = match list.iter_mut().find(|l| l.low == low && l.len == len) {
                Some(l) => Some(core::mem::replace(&mut l.vi, vi)),
                None => {
                    list.push(Long { low, len, vi });
                    None
                }
            };
            self.rebuild(s);
            old
        };
        if old.is_none() {
            self.len += 1;
        }
        old.and_then(|i| self.values.get(i))
    }

    /// Insert or replace many routes at once (a later duplicate wins): each slot's
    /// subtree is built once and the direct table's short routes are refreshed once. Loading a million routes this way costs a
    /// fraction of inserting them one by one.
    pub fn extend<I: IntoIterator<Item = (u32, u8, V)>>(&mut self, routes: I) {
        let mut pending: Vec<(u32, Long)> = Vec::new();
        let mut short_changed = false;
        for (prefix, len, value) in routes {
            let len = len.min(32);
            let p = prefix.mask(len);
            let vi = self.values.intern(value);
            if u32::from(len) <= DIRECT {
                if let Some(t) = self.short.get_mut(usize::from(len))
                    && t.insert(p, vi).is_none()
                {
                    self.len += 1;
                }
                short_changed = true;
            } else {
                pending.push((p >> SUFFIX, Long { low: low_bits(p), len, vi }));
            }
        }
        // Stable: routes of one slot keep their order, so a later duplicate wins.
        pending.sort_by_key(|(s, _)| *s);
        let mut dirty = Vec::new();
        for group in pending.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(s, _)) = group.first() else { continue };
            let list = &mut self.slots.entry(s).or_default().routes;
            for (_, r) in group {
                match list.iter_mut().find(|l| l.low == r.low && l.len == r.len) {
                    Some(l) => l.vi = r.vi,
                    None => {
                        list.push(*r);
                        self.len += 1;
                    }
                }
            }
            dirty.push(s);
        }
        if short_changed {
            self.refresh_short(0, 0);
        }
        // Many changed slots: one compacting pass builds every subtree once.
        if dirty.len() > 1024 {
            self.compact();
        } else {
            for s in dirty {
                self.rebuild(s);
            }
        }
    }

    /// Remove `prefix/len`; returns its value.
    pub fn remove(&mut self, prefix: u32, len: u8) -> Option<V> {
        let len = len.min(32);
        let p = prefix.mask(len);
        let old = if u32::from(len) <= DIRECT {
            let old = self.short.get_mut(usize::from(len))?.remove(&p)?;
            self.refresh_short(p, len);
            old
        } else {
            let s = p >> SUFFIX;
            let low = low_bits(p);
            let list = &mut self.slots.get_mut(&s)?.routes;
            let at = list.iter().position(|l| l.low == low && l.len == len)?;
            let old = list.swap_remove(at).vi;
            self.rebuild(s);
            old
        };
        self.len -= 1;
        self.values.get(old)
    }

    /// A short route `prefix/len` (len ≤ [`DIRECT`]) was added or replaced: it becomes
    /// the short route of every slot it covers whose current one is not longer. One
    /// compare per slot, no table lookups.
    fn paint_short(&mut self, prefix: u32, len: u8, code: u32) {
        let first = (prefix >> SUFFIX) as usize;
        let n = 1usize << (DIRECT - u32::from(len));
        for d in self.dir.iter_mut().skip(first).take(n) {
            if d[1] == 0 || (d[1] & 63) <= u32::from(len) {
                d[1] = code;
            }
        }
    }

    /// Recompute the short route of every slot that `prefix/len` (len ≤ [`DIRECT`])
    /// covers (after a removal, or a bulk load): the best shorter route covering the
    /// whole range first, then each present length from `len` up painted over it, each
    /// length by whichever is smaller, its table or the prefixes of that length in the
    /// range. A default route's change costs the 262,144 slots plus the short routes,
    /// not a probe of every length per slot.
    fn refresh_short(&mut self, prefix: u32, len: u8) {
        let first = (prefix >> SUFFIX) as usize;
        let n = 1usize << (DIRECT - u32::from(len));
        let present: Vec<u8> =
            (0..=DIRECT_LEN).filter(|l| self.short.get(usize::from(*l)).is_some_and(|t| !t.is_empty())).collect();
        let base = present.iter().rev().filter(|l| **l < len).find_map(|&l| {
            self.short.get(usize::from(l)).and_then(|t| t.get(&prefix.mask(l))).map(|vi| leaf_code(*vi, l))
        });
        for d in self.dir.iter_mut().skip(first).take(n) {
            d[1] = base.unwrap_or(0);
        }
        let range = Cidr32 { prefix: prefix.mask(len), len };
        for &l in present.iter().filter(|l| **l >= len) {
            let Some(t) = self.short.get(usize::from(l)) else { continue };
            let subs = 1usize << (l - len);
            let paint = |p: u32, vi: u32, dir: &mut [[u32; 2]]| {
                let code = leaf_code(vi, l);
                let f = (p >> SUFFIX) as usize;
                for d in dir.iter_mut().skip(f).take(1usize << (DIRECT - u32::from(l))) {
                    d[1] = code;
                }
            };
            if subs <= t.len() {
                for k in 0..subs {
                    let p = range.prefix | u32::try_from(k).unwrap_or(0).checked_shl(32 - u32::from(l)).unwrap_or(0);
                    if let Some(vi) = t.get(&p) {
                        paint(p, *vi, &mut self.dir);
                    }
                }
            } else {
                for (p, vi) in t.iter().filter(|(p, _)| range.contains(**p)) {
                    paint(*p, *vi, &mut self.dir);
                }
            }
        }
    }

    /// Rebuild the subtree of slot `s` from its long routes.
    fn rebuild(&mut self, s: u32) {
        let Some(slot) = self.slots.get_mut(&s) else { return };
        self.garbage += slot.nodes as usize + slot.leaves as usize;
        let mut routes: Vec<(u32, u8, u32)> = slot
            .routes
            .iter()
            .map(|r| (u32::from(r.low) << DIRECT, r.len - SUFFIX_LEN_BASE, leaf_code(r.vi, r.len)))
            .collect();
        let node = if routes.is_empty() {
            self.slots.remove(&s);
            NO_NODE
        } else {
            // Shorter first, so longer routes paint over them.
            routes.sort_unstable_by_key(|r| r.1);
            let (n0, l0) = (self.nodes.len(), self.leaves.len());
            self.nodes.push(Node::default());
            let root = build(&routes, 0, 0, &mut self.nodes, &mut self.leaves);
            if let Some(n) = self.nodes.get_mut(n0) {
                *n = root;
            }
            if let Some(slot) = self.slots.get_mut(&s) {
                slot.nodes = u32::try_from(self.nodes.len() - n0).unwrap_or(0);
                slot.leaves = u32::try_from(self.leaves.len() - l0).unwrap_or(0);
            }
            u32::try_from(n0 + 1).unwrap_or(NO_NODE)
        };
        if let Some(d) = self.dir.get_mut(s as usize) {
            d[0] = node;
        }
        if self.garbage > 1024 && self.garbage > self.nodes.len() + self.leaves.len() - self.garbage {
            self.compact();
        }
    }

    /// Rebuild every subtree into fresh arrays, dropping the garbage and spare
    /// capacity. Updates call it when garbage outweighs live entries; call it after
    /// loading a large table.
    pub fn compact(&mut self) {
        let live = (self.nodes.len() + self.leaves.len()).saturating_sub(self.garbage);
        self.nodes = Vec::with_capacity(live / 3);
        self.leaves = self.leaves.empty_with_capacity(live - live / 3);
        self.garbage = 0;
        // In address order, so neighbouring slots' subtrees are neighbours in memory.
        self.slots.shrink_to_fit();
        let mut keys: Vec<u32> = self.slots.keys().copied().collect();
        keys.sort_unstable();
        for s in keys {
            if let Some(slot) = self.slots.get_mut(&s) {
                (slot.nodes, slot.leaves) = (0, 0);
                slot.routes.shrink_to_fit();
            }
            self.rebuild(s);
        }
        self.nodes.shrink_to_fit();
        self.leaves.shrink_to_fit();
    }

    /// The longest prefix covering `addr`: its length and value.
    // Always inlined: as a call it spilled five registers and returned through the
    // stack, 15 of its 66 instructions per lookup (callgrind).
    #[inline(always)]
    pub fn lookup(&self, addr: u32) -> Option<(u8, V)> {
        let d = *self.dir.get((addr >> SUFFIX) as usize)?;
        let d = Dir { node: d[0], short: d[1] };
        if d.node != NO_NODE {
            let mut n = self.nodes.get(d.node as usize - 1)?;
            let mut shift = u32::from(SUFFIX) - 6; // bits below the current stride
            loop {
                let stride_mask = if shift == 0 { (1 << LAST_STRIDE) - 1 } else { 0x3f };
                let c = (addr >> shift) & stride_mask;
                let bit = 1u64 << c;
                if n.vector & bit != 0 {
                    let i = n.base1 + (n.vector & (bit - 1)).count_ones();
                    n = self.nodes.get(i as usize)?;
                    shift = shift.saturating_sub(6);
                    continue;
                }
                let i = n.base0 + (n.leafvec & ((bit << 1).wrapping_sub(1))).count_ones() - 1;
                let leaf = self.leaves.get(i as usize)?;
                if leaf != 0 {
                    return self.decode(leaf);
                }
                break;
            }
        }
        self.decode(d.short)
    }

    /// Nodes and leaves in use (for the memory report).
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.nodes.len(), self.leaves.len(), self.garbage)
    }

    /// Bytes used: the lookup structure (direct table, nodes, leaves) and the route
    /// store kept for updates, reported apart.
    pub fn memory_bytes(&self) -> (usize, usize) {
        let fib = self.dir.len() * size_of::<[u32; 2]>()
            + self.nodes.capacity() * size_of::<Node>()
            + self.leaves.memory_bytes()
            + self.values.memory_bytes();
        let rib = self.slots.capacity() * (5 + size_of::<Slot>())
            + self.slots.values().map(|l| l.routes.capacity() * size_of::<Long>()).sum::<usize>()
            + self.short.iter().map(|t| t.capacity() * 9).sum::<usize>();
        (fib, rib)
    }
}

/// Build the node at `depth` bits into a slot's [`SUFFIX`]-bit suffix for `routes`
/// (address suffix in the top bits, length below the slot, sorted by length), every
/// child starting from `inherited` (the leaf covering the whole node), pushing its
/// children and leaves. Strides are 6, 6 and the rest, as [`Poptrie4::lookup`] walks
/// them.
fn build(routes: &[(u32, u8, u32)], depth: u8, inherited: u32, nodes: &mut Vec<Node>, leaves: &mut Leaves) -> Node {
    let stride = 6u8.min(SUFFIX - depth);
    let end = depth + stride;
    let width = 1usize << stride;
    let child_of = |a: u32| ((a >> (32 - u32::from(end))) as usize) & (width - 1);
    let mut child_leaf = [inherited; 64];
    let mut sub = 0u64;
    for &(a, len, code) in routes {
        if len <= end {
            let span = 1usize << (end - len);
            let first = child_of(a) & !(span - 1);
            for l in child_leaf.iter_mut().skip(first).take(span) {
                *l = code;
            }
        } else {
            sub |= 1 << child_of(a);
        }
    }
    let mut node = Node { vector: sub, leafvec: 0, base0: u32::try_from(leaves.len()).unwrap_or(0), base1: 0 };
    let mut last = None;
    for (c, l) in child_leaf.iter().enumerate().take(width) {
        if sub & (1 << c) == 0 && last != Some(*l) {
            node.leafvec |= 1 << c;
            leaves.push(*l);
            last = Some(*l);
        }
    }
    let first_child = nodes.len();
    node.base1 = u32::try_from(first_child).unwrap_or(0);
    nodes.resize(first_child + sub.count_ones() as usize, Node::default());
    let mut k = first_child;
    for c in 0..width {
        if sub & (1 << c) == 0 {
            continue;
        }
        let below: Vec<(u32, u8, u32)> = routes.iter().filter(|r| r.1 > end && child_of(r.0) == c).copied().collect();
        let child = build(&below, end, child_leaf.get(c).copied().unwrap_or(0), nodes, leaves);
        if let Some(slot) = nodes.get_mut(k) {
            *slot = child;
        }
        k += 1;
    }
    node
}
