//! Values stored once and referred to by a `u32` index: the LPM tables keep next hops
//! this way, so a leaf or a hash slot holds four bytes however large the value is.

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

/// Distinct values, each with a stable index. Values are never removed (a FIB has a
/// handful of distinct next hops; routes come and go, next hops rarely).
#[derive(Clone, Debug)]
pub struct Interner<V: Copy + Eq + core::hash::Hash> {
    values: Vec<V>,
    index: HashMap<V, u32, FxBuildHasher>,
}

impl<V: Copy + Eq + core::hash::Hash> Default for Interner<V> {
    fn default() -> Self {
        Interner { values: Vec::new(), index: HashMap::with_hasher(FxBuildHasher) }
    }
}

impl<V: Copy + Eq + core::hash::Hash> Interner<V> {
    /// The index of `v`, added if new.
    pub fn intern(&mut self, v: V) -> u32 {
        if let Some(i) = self.index.get(&v) {
            return *i;
        }
        let i = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.values.push(v);
        self.index.insert(v, i);
        i
    }

    /// The value at index `i`.
    #[inline]
    pub fn get(&self, i: u32) -> Option<V> {
        self.values.get(i as usize).copied()
    }

    /// Bytes used.
    pub fn memory_bytes(&self) -> usize {
        self.values.capacity() * size_of::<V>() + self.index.capacity() * (size_of::<V>() + 5)
    }
}
