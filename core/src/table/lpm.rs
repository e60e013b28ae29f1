//! Longest-prefix match for IPv4 (`u32` keys) and IPv6 (`u128` keys).
//!
//! # Design
//! One hash table per prefix length, probed from the longest present length down: the
//! first hit is the longest match. Updates are O(1) per route. The route stage uses
//! it for IPv6; for IPv4 it uses the faster [`Poptrie4`](super::poptrie::Poptrie4),
//! and [`Lpm4`] (the same tables behind a /16 directory of the lengths present, the
//! first IPv4 FIB) stays as the measured alternative in `benches/benches/lpm.rs`.

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

use super::interner::Interner;

/// An address type usable as an LPM key.
pub trait Key: Copy + Eq + core::hash::Hash + core::fmt::Debug {
    /// Address width in bits.
    const BITS: u8;
    /// The address with all bits past `len` cleared.
    fn mask(self, len: u8) -> Self;
}

impl Key for u32 {
    const BITS: u8 = 32;
    #[inline]
    fn mask(self, len: u8) -> Self {
        if len == 0 { 0 } else { self & (u32::MAX << (32 - u32::from(len.min(32)))) }
    }
}

impl Key for u128 {
    const BITS: u8 = 128;
    #[inline]
    fn mask(self, len: u8) -> Self {
        if len == 0 { 0 } else { self & (u128::MAX << (128 - u32::from(len.min(128)))) }
    }
}

/// A longest-prefix-match table from prefixes of `K` to values `V`.
#[derive(Clone, Debug)]
pub struct Lpm<K: Key, V: Copy> {
    by_len: Vec<HashMap<K, V, FxBuildHasher>>,
    /// Lengths that have at least one prefix, longest first.
    present: Vec<u8>,
    len: usize,
}

impl<K: Key, V: Copy> Default for Lpm<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Key, V: Copy> Lpm<K, V> {
    /// An empty table.
    pub fn new() -> Self {
        Lpm {
            by_len: (0..=K::BITS).map(|_| HashMap::with_hasher(FxBuildHasher)).collect(),
            present: Vec::new(),
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

    fn refresh(&mut self) {
        self.present =
            (0..=K::BITS).rev().filter(|l| self.by_len.get(usize::from(*l)).is_some_and(|t| !t.is_empty())).collect();
    }

    /// Insert or replace `prefix/len` (host bits are ignored); returns the old value.
    /// `len` above the width is clamped.
    pub fn insert(&mut self, prefix: K, len: u8, value: V) -> Option<V> {
        let len = len.min(K::BITS);
        let t = self.by_len.get_mut(usize::from(len))?;
        let old = t.insert(prefix.mask(len), value);
        if old.is_none() {
            self.len += 1;
            if t.len() == 1 {
                self.refresh();
            }
        }
        old
    }

    /// Remove `prefix/len`; returns its value.
    pub fn remove(&mut self, prefix: K, len: u8) -> Option<V> {
        let len = len.min(K::BITS);
        let t = self.by_len.get_mut(usize::from(len))?;
        let old = t.remove(&prefix.mask(len));
        if old.is_some() {
            self.len -= 1;
            if t.is_empty() {
                self.refresh();
            }
        }
        old
    }

    /// The value of the exact prefix `prefix/len`.
    pub fn get(&self, prefix: K, len: u8) -> Option<V> {
        self.by_len.get(usize::from(len.min(K::BITS)))?.get(&prefix.mask(len)).copied()
    }

    /// True when some prefix has length `len`.
    pub fn has_length(&self, len: u8) -> bool {
        self.by_len.get(usize::from(len)).is_some_and(|t| !t.is_empty())
    }

    /// The value of `prefix/len` where `prefix` is already masked to `len`.
    #[inline]
    pub fn get_masked(&self, prefix: K, len: u8) -> Option<V> {
        self.by_len.get(usize::from(len))?.get(&prefix).copied()
    }

    /// The longest prefix containing `addr`: its length and value.
    #[inline]
    pub fn lookup(&self, addr: K) -> Option<(u8, V)> {
        for &l in &self.present {
            if let Some(v) = self.by_len.get(usize::from(l)).and_then(|t| t.get(&addr.mask(l))) {
                return Some((l, *v));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_wins_and_removal_falls_back() {
        let mut t: Lpm<u32, u8> = Lpm::new();
        t.insert(0, 0, 1);
        t.insert(0x0af4_0000, 16, 2);
        t.insert(0x0af4_0100, 24, 3);
        assert_eq!(t.lookup(0x0af4_0105), Some((24, 3)));
        assert_eq!(t.lookup(0x0af4_0205), Some((16, 2)));
        assert_eq!(t.lookup(0x0800_0808), Some((0, 1)));
        assert_eq!(t.remove(0x0af4_01ff, 24), Some(3), "host bits ignored");
        assert_eq!(t.lookup(0x0af4_0105), Some((16, 2)));
        assert_eq!(t.len(), 2);
    }
}

/// IPv4 longest-prefix match with a /16 directory in front of the per-length tables.
///
/// # Design
/// For each of the 65,536 /16 slots the directory holds the best route of length ≤ 16
/// covering it (leaf-pushed) and a bitmap of which lengths 17..=32 have routes inside
/// it. A lookup reads the directory entry and probes only the lengths its bitmap names,
/// longest first: usually one or two probes instead of one per length in the table.
/// Values are interned: tables store a `u32` index into one value list, so an entry
/// is 8 bytes.
///
/// Memory: 512 KiB of directory, 2.2 MiB of per-(slot, length) counts (so a removal
/// knows when a length empties in a slot), plus about 9 bytes per route in the hash
/// tables (`benches/callgrind.sh` and the closing notes give the measured figure).
///
/// Updates: a route of length ≥ 17 costs O(1); a route of length ≤ 16 rewrites the
/// directory entries it covers (up to 65,536 for a default route), each in at most
/// 17 probes: control-path work, done once per route change.
#[derive(Clone, Debug)]
pub struct Lpm4<V: Copy + Eq + core::hash::Hash> {
    by_len: Vec<HashMap<u32, u32, FxBuildHasher>>,
    values: Interner<V>,
    dir_short: Vec<u32>,
    dir_short_len: Vec<u8>,
    dir_bits: Vec<u32>,
    counts: Vec<[u16; 16]>,
    len: usize,
}

/// "No route" in the directory.
const NONE: u32 = u32::MAX;

impl<V: Copy + Eq + core::hash::Hash> Default for Lpm4<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Copy + Eq + core::hash::Hash> Lpm4<V> {
    /// An empty table (allocates the directory: about 2.7 MiB).
    pub fn new() -> Self {
        Lpm4 {
            by_len: (0..=32).map(|_| HashMap::with_hasher(FxBuildHasher)).collect(),
            values: Interner::default(),
            dir_short: vec![NONE; 1 << 16],
            dir_short_len: vec![0; 1 << 16],
            dir_bits: vec![0; 1 << 16],
            counts: vec![[0; 16]; 1 << 16],
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

    /// The best route of length ≤ 16 covering slot `s` (by probing the short tables).
    fn best_short(&self, s: u32) -> (u32, u8) {
        let addr = s << 16;
        for l in (0..=16u8).rev() {
            if let Some(v) = self.by_len.get(usize::from(l)).and_then(|t| t.get(&addr.mask(l))) {
                return (*v, l);
            }
        }
        (NONE, 0)
    }

    fn refresh_short(&mut self, prefix: u32, len: u8) {
        let first = prefix >> 16;
        let n = 1u32 << (16 - u32::from(len.min(16)));
        for s in first..first + n {
            let (best, l) = self.best_short(s);
            if let Some(d) = self.dir_short.get_mut(s as usize) {
                *d = best;
            }
            if let Some(d) = self.dir_short_len.get_mut(s as usize) {
                *d = l;
            }
        }
    }

    /// Insert or replace `prefix/len`; returns the old value. Lengths above 32 clamp.
    pub fn insert(&mut self, prefix: u32, len: u8, value: V) -> Option<V> {
        let len = len.min(32);
        let p = prefix.mask(len);
        let vi = self.values.intern(value);
        let old = self.by_len.get_mut(usize::from(len))?.insert(p, vi);
        if old.is_none() {
            self.len += 1;
            if len > 16 {
                let s = (p >> 16) as usize;
                if let (Some(c), Some(b)) = (self.counts.get_mut(s), self.dir_bits.get_mut(s)) {
                    if let Some(k) = c.get_mut(usize::from(len - 17)) {
                        *k = k.saturating_add(1);
                    }
                    *b |= 1 << (len - 17);
                }
            }
        }
        if len <= 16 {
            self.refresh_short(p, len);
        }
        old.and_then(|i| self.values.get(i))
    }

    /// Remove `prefix/len`; returns its value.
    pub fn remove(&mut self, prefix: u32, len: u8) -> Option<V> {
        let len = len.min(32);
        let p = prefix.mask(len);
        let old = self.by_len.get_mut(usize::from(len))?.remove(&p)?;
        self.len -= 1;
        if len > 16 {
            let s = (p >> 16) as usize;
            if let (Some(c), Some(b)) = (self.counts.get_mut(s), self.dir_bits.get_mut(s))
                && let Some(k) = c.get_mut(usize::from(len - 17))
            {
                *k = k.saturating_sub(1);
                if *k == 0 {
                    *b &= !(1 << (len - 17));
                }
            }
        } else {
            self.refresh_short(p, len);
        }
        self.values.get(old)
    }

    /// The longest prefix containing `addr`: its length and value. Never allocates.
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<(u8, V)> {
        let s = (addr >> 16) as usize;
        let mut bits = self.dir_bits.get(s).copied().unwrap_or(0);
        while bits != 0 {
            // Highest set bit = longest length present in this /16.
            let b = 31 - bits.leading_zeros();
            let l = u8::try_from(17 + b).unwrap_or(32);
            if let Some(v) = self.by_len.get(usize::from(l)).and_then(|t| t.get(&addr.mask(l))) {
                return self.values.get(*v).map(|x| (l, x));
            }
            bits &= !(1 << b);
        }
        let short = self.dir_short.get(s).copied().unwrap_or(NONE);
        if short == NONE {
            return None;
        }
        let len = self.dir_short_len.get(s).copied().unwrap_or(0);
        self.values.get(short).map(|x| (len, x))
    }

    /// Bytes the table holds (directory, counts, hash tables at their capacity).
    pub fn memory_bytes(&self) -> usize {
        let tables: usize = self.by_len.iter().map(|t| t.capacity() * (8 + 1)).sum();
        self.dir_short.len() * 5
            + self.dir_bits.len() * 4
            + self.counts.len() * 32
            + tables
            + self.values.memory_bytes()
    }
}

/// An IPv6 longest-prefix-match table: the per-length hash tables of [`Lpm`] behind a
/// directory, keyed by the top 32 address bits, of the lengths 33..=128 present
/// under each /32. Most IPv6 routes are /32 or longer (allocations, /48 sites, /64
/// subnets, /128 hosts), so a lookup probes the directory and then only the lengths
/// that exist under its /32, longest first, before the few lengths ≤ 32: with 100k
/// random /32../64 routes, two or three probes instead of one per length present.
#[derive(Clone, Debug)]
pub struct Lpm6<V: Copy> {
    tables: Lpm<u128, V>,
    /// Bit `len - 33` set when some prefix of that length lies under the /32.
    dir: HashMap<u32, u128, FxBuildHasher>,
    /// Prefixes per (/32, length), to clear a directory bit when the last one goes.
    counts: HashMap<(u32, u8), u32, FxBuildHasher>,
    /// Lengths ≤ 32 that have a prefix, longest first.
    short: Vec<u8>,
}

impl<V: Copy> Default for Lpm6<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Copy> Lpm6<V> {
    /// An empty table.
    pub fn new() -> Self {
        Lpm6 {
            tables: Lpm::new(),
            dir: HashMap::with_hasher(FxBuildHasher),
            counts: HashMap::with_hasher(FxBuildHasher),
            short: Vec::new(),
        }
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    fn top(p: u128) -> u32 {
        u32::try_from(p >> 96).unwrap_or(0)
    }

    fn refresh_short(&mut self) {
        self.short = (0..=32u8).rev().filter(|l| self.tables.has_length(*l)).collect();
    }

    /// Insert or replace `prefix/len`; returns the old value.
    pub fn insert(&mut self, prefix: u128, len: u8, value: V) -> Option<V> {
        let len = len.min(128);
        let old = self.tables.insert(prefix, len, value);
        if old.is_none() {
            if len > 32 {
                let top = Self::top(prefix);
                *self.counts.entry((top, len)).or_insert(0) += 1;
                *self.dir.entry(top).or_insert(0) |= 1u128 << (len - 33);
            } else {
                self.refresh_short();
            }
        }
        old
    }

    /// Remove `prefix/len`; returns its value.
    pub fn remove(&mut self, prefix: u128, len: u8) -> Option<V> {
        let len = len.min(128);
        let old = self.tables.remove(prefix, len)?;
        if len > 32 {
            let top = Self::top(prefix);
            if let Some(c) = self.counts.get_mut(&(top, len)) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&(top, len));
                    if let Some(b) = self.dir.get_mut(&top) {
                        *b &= !(1u128 << (len - 33));
                        if *b == 0 {
                            self.dir.remove(&top);
                        }
                    }
                }
            }
        } else {
            self.refresh_short();
        }
        Some(old)
    }

    /// The value stored for exactly `prefix/len`.
    pub fn get(&self, prefix: u128, len: u8) -> Option<V> {
        self.tables.get(prefix, len)
    }

    /// The longest prefix covering `addr`: its length and value.
    #[inline]
    pub fn lookup(&self, addr: u128) -> Option<(u8, V)> {
        let mut bits = self.dir.get(&Self::top(addr)).copied().unwrap_or(0);
        while bits != 0 {
            let b = 127 - bits.leading_zeros();
            let l = u8::try_from(33 + b).unwrap_or(128);
            if let Some(v) = self.tables.get_masked(addr.mask(l), l) {
                return Some((l, v));
            }
            bits &= !(1u128 << b);
        }
        self.short.iter().find_map(|&l| self.tables.get_masked(addr.mask(l), l).map(|v| (l, v)))
    }
}
