//! Longest-prefix match for IPv4 (`u32` keys) and IPv6 (`u128` keys).
//!
//! # Design (first version)
//! One hash table per prefix length, probed from the longest present length down: the
//! first hit is the longest match. A node's table has few distinct lengths (pod CIDRs
//! /24, node /32s, a default route), so a lookup probes a handful of tables. Updates
//! are O(1) per route. The issue asks for DIR-24-8 / poptrie compared at 1M routes
//! under 10 MB; that comparison, and the faster structure, replace this one behind
//! the same API (`TODO(#5)`).

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

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
