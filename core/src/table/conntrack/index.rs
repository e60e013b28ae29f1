//! The connection table's index: 32-bit handles found by their tuple's hash, in 256
//! hashbrown tables (shards) chosen by a byte of the hash that hashbrown does not
//! use, each rebuilt on its own before its tombstones fill it.
//!
//! hashbrown's erase leaves a tombstone when the 16 slots around are all taken, and
//! clears tombstones only by rebuilding the whole table inside an insert that finds
//! no room left, at twice the size when more than half its capacity is used. One
//! table sized for the handles alone (half its buckets in use) did that after about
//! 9.5 million replacements in a full table of a million connections: one insert
//! took 100 ms and the index doubled (`icount ct_churn`). Here [`Index::maintain`]
//! (called by each sweep of the table, which runs on a batch whenever a share of the
//! table is owed: a pass a second, 8 to 32 slots at a time, so tens of thousands of
//! times a second under load at a million connections) looks at a few shards in
//! turn, and
//! one with a quarter of its room taken by tombstones is rebuilt in place (its
//! handles copied out to a scratch list allocated with the index, cleared, put
//! back): nothing is allocated, the index stays at 20 bytes a connection, and a
//! rebuild touches 1/256 of the connections (20 million replacements at a full
//! million: 837 rebuilds, none slower than 0.9 ms). The check is not made at
//! removal: a call there that may rebuild kept the compiler from holding the index
//! in registers across a batch's hits (5 instructions a hit more). Choosing the
//! shard costs a probe 3-4 instructions; the smaller index misses the cache less (a
//! new connection took 6-18 % less time than with one table of twice the size, in
//! two interleaved runs).

use hashbrown::HashTable;

/// Shards: as many as one byte of the hash tells apart, so the array needs no bounds
/// check (and no mask to load: a table of any size has them all).
const SHARDS: usize = 256;

/// Shards [`Index::maintain`] looks at a call: each is looked at every 128 sweeps,
/// long before its remaining room can fill (at the default capacity, at most 300
/// removals from a shard between two looks under a SYN flood of 2.6 million
/// connections a second, a few per cent of which leave tombstones, against room for
/// 320).
const CHECKS_PER_CALL: usize = 2;

/// See the [module docs](self).
#[derive(Debug)]
pub(super) struct Index {
    shards: [HashTable<u32>; SHARDS],
    /// A shard whose capacity (handles + room left) is under this is rebuilt: a
    /// quarter of its room is tombstones.
    rebuild_below: usize,
    /// The shard [`Self::maintain`] looks at next.
    next_check: u8,
    /// The handles of the shard being rebuilt.
    scratch: Vec<u32>,
    /// Shards rebuilt so far.
    pub rebuilds: u64,
}

impl Index {
    /// An index for `handles` handles at most, allocated now.
    pub(super) fn new(handles: usize) -> Self {
        let mean = handles.div_ceil(SHARDS);
        // Hashes spread the handles over the shards binomially: room for four
        // standard deviations more than the mean, in three quarters of the room (the
        // last quarter is for tombstones); hashbrown rounds up further, to a power of
        // two buckets of which it fills 7/8.
        let per = (mean + 4 * mean.isqrt() + 16) * 4 / 3;
        let shards: [HashTable<u32>; SHARDS] = core::array::from_fn(|_| HashTable::with_capacity(per));
        let full = shards.first().map_or(0, HashTable::capacity);
        Index { shards, rebuild_below: full - full / 4, next_check: 0, scratch: Vec::with_capacity(full), rebuilds: 0 }
    }

    /// The shard of `hash`: bits 32..40, which hashbrown uses for neither the bucket
    /// (the low bits) nor the tag (the top seven). A byte: always within the array,
    /// so `get` compiles without a check.
    #[inline(always)]
    fn shard(hash: u64) -> usize {
        usize::from(hash.to_le_bytes()[4])
    }

    /// The handle with hash `hash` that `eq` accepts.
    #[inline(always)]
    pub(super) fn find(&self, hash: u64, eq: impl FnMut(&u32) -> bool) -> Option<u32> {
        self.shards.get(Self::shard(hash))?.find(hash, eq).copied()
    }

    /// Add handle `h` with hash `hash`; `rehash` gives any handle's hash (hashbrown
    /// calls it only if the shard must grow, which its sizing makes rare).
    #[inline(always)]
    pub(super) fn insert(&mut self, hash: u64, h: u32, rehash: impl Fn(&u32) -> u64) {
        if let Some(shard) = self.shards.get_mut(Self::shard(hash)) {
            shard.insert_unique(hash, h, rehash);
        }
    }

    /// Remove handle `h`, whose hash is `hash`.
    #[inline(always)]
    pub(super) fn remove(&mut self, hash: u64, h: u32) {
        if let Some(Ok(o)) = self.shards.get_mut(Self::shard(hash)).map(|t| t.find_entry(hash, |&x| x == h)) {
            o.remove();
        }
    }

    /// Look at the next few shards and rebuild those that tombstones have taken a
    /// quarter of the room of; `rehash` gives any handle's hash.
    pub(super) fn maintain(&mut self, rehash: impl Fn(&u32) -> u64) {
        for _ in 0..CHECKS_PER_CALL {
            let s = usize::from(self.next_check);
            self.next_check = self.next_check.wrapping_add(1);
            if self.shards.get(s).is_some_and(|t| t.capacity() < self.rebuild_below) {
                self.rebuild(s, &rehash);
            }
        }
    }

    /// Put shard `s`'s handles back into it, emptied: no tombstones left.
    #[cold]
    fn rebuild(&mut self, s: usize, rehash: impl Fn(&u32) -> u64) {
        let Some(shard) = self.shards.get_mut(s) else { return };
        self.scratch.clear();
        self.scratch.extend(shard.iter().copied());
        shard.clear();
        for &h in &self.scratch {
            shard.insert_unique(rehash(&h), h, &rehash);
        }
        self.rebuilds += 1;
    }

    /// Handles held (tests: two per entry, none left behind).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(HashTable::len).sum()
    }

    /// Bytes allocated: the shards as hashbrown sized them and the scratch list.
    pub(super) fn memory(&self) -> usize {
        self.shards.iter().map(HashTable::allocation_size).sum::<usize>() + self.scratch.capacity() * size_of::<u32>()
    }
}
