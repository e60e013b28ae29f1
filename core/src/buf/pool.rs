//! The buffer pool: fixed-size slots in one page-aligned region, allocated once.
//!
//! # Design
//! The region is one zeroed, page-aligned allocation (what `IORING_REGISTER_BUFFERS`
//! wants), made once and never grown or moved. It is held by a raw pointer, not a
//! `Vec<u8>`, because a driver lends slots to the kernel: while an io_uring read
//! is in flight the kernel writes that slot behind Rust's back, so no Rust reference
//! may span it. Every accessor therefore makes a slice of *one* slot from the raw
//! pointer, and never a reference to the whole region. The free list is a stack of
//! slot indexes with capacity for every slot, so alloc and free are O(1) and never
//! allocate. Metadata lives in a separate array, one entry per slot.
//!
//! # The ownership contract with drivers
//! A slot whose [`Owner`] is `Driver` belongs to the kernel: the driver got its
//! address from [`BufPool::io_buffer`] and must not put it in a batch, read it or
//! free it until the kernel is done with it. Slot accessors do not check the owner
//! (they are on the hot path); the driver keeps the contract, and keeps the pool alive
//! until every operation it started has completed or been cancelled.

// The region's slot slices are made from a raw pointer (see the module docs); every
// `unsafe` block below says why it is sound.
#![allow(unsafe_code)]

use core::ptr::NonNull;
use std::alloc::Layout;

use thiserror::Error;

use super::handle::PktId;
use super::meta::{Owner, PktMeta};

/// Default slot size: a 1500-byte MTU frame plus headroom, VPP's 2 KiB buffer.
pub const DEFAULT_SLOT_SIZE: usize = 2048;
/// Default headroom: room for an outer Ethernet + IPv6 + UDP + VXLAN header (70 bytes)
/// with margin, VPP's 128-byte `pre_data`.
pub const DEFAULT_HEADROOM: usize = 128;
/// Alignment of the region.
pub const PAGE_SIZE: usize = 4096;

/// Why a buffer operation could not be done. The packet is left unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum BufError {
    /// Not enough headroom in front of the packet.
    #[error("not enough headroom")]
    NoHeadroom,
    /// Not enough tailroom behind the packet.
    #[error("not enough tailroom")]
    NoTailroom,
    /// The packet is shorter than the bytes to remove.
    #[error("packet shorter than requested")]
    TooShort,
    /// The slot is already free (double free or use after free).
    #[error("slot is not allocated")]
    NotAllocated,
    /// Pool geometry out of range.
    #[error("invalid pool geometry: {0}")]
    Geometry(&'static str),
}

/// A per-worker pool of packet slots. See the [module docs](super).
#[derive(Debug)]
pub struct BufPool {
    /// Start of the page-aligned region of `meta.len() * slot_size` bytes (owned).
    region: NonNull<u8>,
    layout: Layout,
    slot_size: usize,
    headroom: usize,
    meta: Vec<PktMeta>,
    /// Where a foreign handle's metadata writes go (never read back as a packet's):
    /// `meta_mut` needs one bounds check and no clamping.
    sink: PktMeta,
    free: Vec<PktId>,
    exhausted: u64,
}

impl BufPool {
    /// A pool of `slots` slots of `slot_size` bytes with `headroom` bytes reserved in
    /// front of each fresh packet.
    ///
    /// # Errors
    /// [`BufError::Geometry`] unless `slot_size` is a multiple of 64 in 256..=65472,
    /// `headroom` is at least 128 and leaves at least 128 bytes of data, and `slots` is in
    /// 1..=2^24.
    pub fn new(slots: usize, slot_size: usize, headroom: usize) -> Result<Self, BufError> {
        if !(256..=65472).contains(&slot_size) || !slot_size.is_multiple_of(64) {
            return Err(BufError::Geometry("slot_size must be a multiple of 64 in 256..=65472"));
        }
        if headroom < DEFAULT_HEADROOM || headroom + 128 > slot_size {
            return Err(BufError::Geometry("headroom must be >= 128 and leave 128 bytes of data"));
        }
        if slots == 0 || slots > 1 << 24 {
            return Err(BufError::Geometry("slots must be in 1..=16777216"));
        }
        let bytes = slots * slot_size;
        let layout = Layout::from_size_align(bytes, PAGE_SIZE).map_err(|_| BufError::Geometry("region size"))?;
        let head = u16::try_from(headroom).map_err(|_| BufError::Geometry("headroom"))?;
        let meta = vec![PktMeta::fresh(head, Owner::Free); slots];
        // Lowest index on top, so a fresh pool hands out slot 0 first (deterministic).
        let free = (0..slots).rev().map(|i| PktId(u32::try_from(i).unwrap_or(u32::MAX))).collect();
        // SAFETY: `layout` has a non-zero size (slots >= 1, slot_size >= 256).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(region) = NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        let sink = PktMeta::fresh(head, Owner::Free);
        Ok(BufPool { region, layout, slot_size, headroom, meta, sink, free, exhausted: 0 })
    }

    /// A pool with the default slot size and headroom.
    ///
    /// # Errors
    /// As [`BufPool::new`].
    pub fn with_slots(slots: usize) -> Result<Self, BufError> {
        Self::new(slots, DEFAULT_SLOT_SIZE, DEFAULT_HEADROOM)
    }

    /// Number of slots: one metadata entry each (never resized).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Slots currently free.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Headroom of a fresh packet.
    pub fn default_headroom(&self) -> usize {
        self.headroom
    }

    /// How many allocations failed because the pool was empty.
    pub fn exhausted(&self) -> u64 {
        self.exhausted
    }

    /// The handle of slot `index`, if the pool has that many slots (drivers carry
    /// slot indexes through the kernel, as io_uring's `user_data`).
    pub fn handle_of(&self, index: u32) -> Option<PktId> {
        (usize::try_from(index).ok()? < self.capacity()).then_some(PktId(index))
    }

    /// Start and length of the whole slot region, for registering it with io_uring
    /// (`IORING_REGISTER_BUFFERS`). A pointer, not a slice: slots lent to the kernel
    /// are written behind Rust's back (see the module docs).
    pub fn region_raw(&self) -> (*mut u8, usize) {
        (self.region.as_ptr(), self.capacity() * self.slot_size)
    }

    /// Where the kernel may write (a read) or read (a write) the bytes of a slot lent
    /// to a driver: the address `offset` bytes into the slot and the bytes from there
    /// to the slot's end. `None` unless the slot is owned by [`Owner::Driver`] and
    /// `offset` is inside it. The address stays valid while the pool lives; the
    /// driver must keep the contract in the module docs.
    pub fn io_buffer(&self, pkt: PktId, offset: usize) -> Option<(*mut u8, usize)> {
        let i = pkt.index();
        if i >= self.capacity() || offset >= self.slot_size || self.meta.get(i)?.owner != Owner::Driver {
            return None;
        }
        // SAFETY: `i < slots` and `offset < slot_size`, so the address is inside the
        // region's allocation; `add` on the raw pointer creates no reference.
        let p = unsafe { self.region.as_ptr().add(i * self.slot_size + offset) };
        Some((p, self.slot_size - offset))
    }

    /// Take a free slot for `owner`; the packet in it is empty with default headroom.
    /// Returns `None` (and counts it) when the pool is exhausted. Never allocates.
    #[inline]
    pub fn alloc(&mut self, owner: Owner) -> Option<PktId> {
        let Some(id) = self.free.pop() else {
            self.exhausted += 1;
            return None;
        };
        if let Some(m) = self.meta.get_mut(id.index()) {
            // The headroom fits u16: checked in `new`.
            *m = PktMeta::fresh(u16::try_from(self.headroom).unwrap_or(u16::MAX), owner);
        }
        Some(id)
    }

    /// Return a slot to the pool.
    ///
    /// # Errors
    /// [`BufError::NotAllocated`] if the slot is already free; the pool is unchanged.
    #[inline]
    pub fn free(&mut self, pkt: PktId) -> Result<(), BufError> {
        let m = self.meta.get_mut(pkt.index()).ok_or(BufError::NotAllocated)?;
        if m.owner == Owner::Free {
            return Err(BufError::NotAllocated);
        }
        m.owner = Owner::Free;
        // Cannot exceed capacity: each slot is on the list at most once (owner check).
        self.free.push(pkt);
        Ok(())
    }

    /// Hand a slot to another owner (for example from driver to pipeline).
    ///
    /// # Errors
    /// [`BufError::NotAllocated`] for a free slot.
    pub fn set_owner(&mut self, pkt: PktId, owner: Owner) -> Result<(), BufError> {
        let m = self.meta.get_mut(pkt.index()).ok_or(BufError::NotAllocated)?;
        if m.owner == Owner::Free || owner == Owner::Free {
            return Err(BufError::NotAllocated);
        }
        m.owner = owner;
        Ok(())
    }

    /// Metadata of a packet.
    #[inline]
    pub fn meta(&self, pkt: PktId) -> &PktMeta {
        debug_assert!(pkt.index() < self.meta.len());
        // Handles come only from this pool, so the index is in range; the fallback
        // keeps a foreign handle from panicking in release builds.
        self.meta.get(pkt.index()).unwrap_or(&FOREIGN)
    }

    /// Every slot's metadata, by slot index ([`PktId::index`]): for a loop over a
    /// batch, which then keeps the table's address in a register (through
    /// [`Self::meta_mut`] it is reloaded after each write).
    #[inline]
    pub(crate) fn metas_mut(&mut self) -> &mut [PktMeta] {
        &mut self.meta
    }

    /// Mutable metadata of a packet.
    #[inline]
    pub fn meta_mut(&mut self, pkt: PktId) -> &mut PktMeta {
        debug_assert!(pkt.index() < self.meta.len());
        // Handles come only from this pool; a foreign one writes to the sink.
        match self.meta.get_mut(pkt.index()) {
            Some(m) => m,
            None => &mut self.sink,
        }
    }

    /// Start of slot `pkt` in the region, or `None` for a handle from another pool.
    #[inline]
    fn slot_ptr(&self, pkt: PktId) -> Option<*mut u8> {
        let i = pkt.index();
        if i >= self.capacity() {
            return None;
        }
        // SAFETY: `i < slots`, so `i * slot_size` is inside the region's allocation.
        Some(unsafe { self.region.as_ptr().add(i * self.slot_size) })
    }

    /// The whole slot of a packet (headroom, data and tailroom), for stages that work
    /// with the absolute offsets in [`PktMeta`].
    #[inline]
    pub fn slot(&self, pkt: PktId) -> &[u8] {
        match self.slot_ptr(pkt) {
            // SAFETY: the pointer starts a slot of `slot_size` initialised (zeroed at
            // allocation) bytes inside the region; slots never overlap, and `&self`
            // excludes every `&mut` made by this pool for the borrow's life. Slots lent
            // to the kernel are not read by contract (module docs).
            Some(p) => unsafe { core::slice::from_raw_parts(p, self.slot_size) },
            None => &[],
        }
    }

    /// The whole slot of a packet, writable.
    #[inline]
    pub fn slot_mut(&mut self, pkt: PktId) -> &mut [u8] {
        match self.slot_ptr(pkt) {
            // SAFETY: as in `slot`; `&mut self` makes this the only live slice of the
            // region made by this pool.
            Some(p) => unsafe { core::slice::from_raw_parts_mut(p, self.slot_size) },
            None => &mut [],
        }
    }

    /// Slot and metadata together, for stages that read offsets and write bytes.
    #[inline]
    pub fn slot_and_meta_mut(&mut self, pkt: PktId) -> (&mut [u8], &mut PktMeta) {
        let i = pkt.index();
        let slot_size = self.slot_size;
        let region = self.region.as_ptr();
        // One check for both: there is a metadata entry per slot.
        match self.meta.get_mut(i) {
            Some(meta) => {
                // SAFETY: `i < meta.len()`, the slot count, so the slot lies inside the
                // region; as in `slot_mut`, `&mut self` makes this the only live slice
                // of the region made by this pool, and the metadata is a separate
                // allocation.
                let slot = unsafe { core::slice::from_raw_parts_mut(region.add(i * slot_size), slot_size) };
                (slot, meta)
            }
            None => (&mut [], &mut self.sink),
        }
    }

    /// The packet bytes.
    #[inline]
    pub fn data(&self, pkt: PktId) -> &[u8] {
        let m = self.meta(pkt);
        let (h, l) = (usize::from(m.head), usize::from(m.len));
        self.slot(pkt).get(h..h + l).unwrap_or(&[])
    }

    /// The packet bytes, writable.
    #[inline]
    pub fn data_mut(&mut self, pkt: PktId) -> &mut [u8] {
        let (slot, m) = self.slot_and_meta_mut(pkt);
        let (h, l) = (usize::from(m.head), usize::from(m.len));
        slot.get_mut(h..h + l).unwrap_or(&mut [])
    }

    /// Bytes free in front of the packet.
    #[inline]
    pub fn headroom(&self, pkt: PktId) -> usize {
        usize::from(self.meta(pkt).head)
    }

    /// Bytes free behind the packet.
    #[inline]
    pub fn tailroom(&self, pkt: PktId) -> usize {
        let m = self.meta(pkt);
        self.slot_size - usize::from(m.head) - usize::from(m.len)
    }

    /// Grow the packet at the front by `n` bytes and return them for the caller to
    /// fill (an outer header). The returned bytes hold whatever the slot held before:
    /// the caller must overwrite all of them.
    ///
    /// # Errors
    /// [`BufError::NoHeadroom`] if fewer than `n` bytes are free in front; the packet is
    /// unchanged.
    #[inline]
    pub fn push_front(&mut self, pkt: PktId, n: usize) -> Result<&mut [u8], BufError> {
        let (slot, m) = self.slot_and_meta_mut(pkt);
        let head = usize::from(m.head);
        if n > head {
            return Err(BufError::NoHeadroom);
        }
        let new_head = head - n;
        // Both fit u16: new_head < head, len + n <= slot_size <= 65472.
        m.head = u16::try_from(new_head).map_err(|_| BufError::NoHeadroom)?;
        m.len = u16::try_from(usize::from(m.len) + n).map_err(|_| BufError::NoHeadroom)?;
        slot.get_mut(new_head..head).ok_or(BufError::NoHeadroom)
    }

    /// Remove `n` bytes from the front (strip an outer header).
    ///
    /// # Errors
    /// [`BufError::TooShort`] if the packet has fewer than `n` bytes; unchanged then.
    #[inline]
    pub fn pull_front(&mut self, pkt: PktId, n: usize) -> Result<(), BufError> {
        let m = self.meta_mut(pkt);
        let n16 = u16::try_from(n).map_err(|_| BufError::TooShort)?;
        if n16 > m.len {
            return Err(BufError::TooShort);
        }
        m.head += n16;
        m.len -= n16;
        Ok(())
    }

    /// Grow the packet at the back by `n` zeroed bytes and return them.
    ///
    /// # Errors
    /// [`BufError::NoTailroom`] if fewer than `n` bytes are free behind the packet.
    pub fn push_back(&mut self, pkt: PktId, n: usize) -> Result<&mut [u8], BufError> {
        let slot_size = self.slot_size;
        let (slot, m) = self.slot_and_meta_mut(pkt);
        let end = usize::from(m.head) + usize::from(m.len);
        if end + n > slot_size {
            return Err(BufError::NoTailroom);
        }
        m.len = u16::try_from(usize::from(m.len) + n).map_err(|_| BufError::NoTailroom)?;
        let tail = slot.get_mut(end..end + n).ok_or(BufError::NoTailroom)?;
        // SECURITY: the slot may hold an earlier packet's bytes; never emit them.
        tail.fill(0);
        Ok(tail)
    }

    /// Shorten the packet to `len` bytes (Ethernet padding, trailing garbage).
    ///
    /// # Errors
    /// [`BufError::TooShort`] if the packet is shorter than `len`.
    #[inline]
    pub fn truncate(&mut self, pkt: PktId, len: usize) -> Result<(), BufError> {
        let m = self.meta_mut(pkt);
        let len = u16::try_from(len).map_err(|_| BufError::TooShort)?;
        if len > m.len {
            return Err(BufError::TooShort);
        }
        m.len = len;
        Ok(())
    }

    /// The bytes a driver may receive a frame into: the slot from the default headroom
    /// to its end. Follow with [`set_rx_len`](Self::set_rx_len).
    #[inline]
    pub fn rx_buffer(&mut self, pkt: PktId) -> &mut [u8] {
        let headroom = self.headroom;
        self.slot_mut(pkt).get_mut(headroom..).unwrap_or(&mut [])
    }

    /// Declare that a driver received `len` bytes into [`rx_buffer`](Self::rx_buffer).
    ///
    /// # Errors
    /// [`BufError::NoTailroom`] if `len` exceeds the receive buffer.
    #[inline]
    pub fn set_rx_len(&mut self, pkt: PktId, len: usize) -> Result<(), BufError> {
        let headroom = self.headroom;
        if headroom + len > self.slot_size {
            return Err(BufError::NoTailroom);
        }
        let m = self.meta_mut(pkt);
        m.head = u16::try_from(headroom).map_err(|_| BufError::NoTailroom)?;
        m.len = u16::try_from(len).map_err(|_| BufError::NoTailroom)?;
        m.l2 = m.head;
        Ok(())
    }

    /// A copy of `pkt` in a fresh slot for `owner`: the same bytes at the same offset,
    /// the same metadata. `None` (counted as exhaustion) when the pool is empty.
    pub fn clone_packet(&mut self, pkt: PktId, owner: Owner) -> Option<PktId> {
        let src_meta = *self.meta(pkt);
        let src = self.slot_ptr(pkt);
        let q = self.alloc(owner)?;
        let (h, l) = (usize::from(src_meta.head), usize::from(src_meta.len));
        if let (Some(s), Some(d)) = (src, self.slot_ptr(q))
            && h + l <= self.slot_size
            && s != d
        {
            // SAFETY: two different slots of the region (so the ranges do not
            // overlap), each `h + l <= slot_size` bytes from its start.
            unsafe { core::ptr::copy_nonoverlapping(s.add(h), d.add(h), l) };
        }
        let m = self.meta_mut(q);
        *m = PktMeta { owner, ..src_meta };
        Some(q)
    }

    /// Replace the packet with a copy of `frame`, starting at the default headroom.
    /// Drivers and tests use it to load a received frame.
    ///
    /// # Errors
    /// [`BufError::NoTailroom`] if `frame` does not fit behind the default headroom.
    pub fn set_data(&mut self, pkt: PktId, frame: &[u8]) -> Result<(), BufError> {
        let headroom = self.headroom;
        let (slot, m) = self.slot_and_meta_mut(pkt);
        let dst = slot.get_mut(headroom..headroom + frame.len()).ok_or(BufError::NoTailroom)?;
        dst.copy_from_slice(frame);
        m.head = u16::try_from(headroom).map_err(|_| BufError::NoTailroom)?;
        m.len = u16::try_from(frame.len()).map_err(|_| BufError::NoTailroom)?;
        m.l2 = m.head;
        Ok(())
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed only here.
        unsafe { std::alloc::dealloc(self.region.as_ptr(), self.layout) };
    }
}

// SAFETY: the pool owns its region exclusively (nothing else holds the pointer but
// the kernel for slots lent through `io_buffer`, which is the driver's contract), and
// all access to slot bytes goes through `&self` / `&mut self`, so moving the pool to
// another thread or sharing `&BufPool` is as safe as for a `Vec<u8>`.
unsafe impl Send for BufPool {}
// SAFETY: as for `Send`: `&BufPool` only ever gives shared slices.
unsafe impl Sync for BufPool {}

/// Metadata returned for a handle that is not from this pool (never in correct code).
static FOREIGN: PktMeta = PktMeta::fresh(0, Owner::Free);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_is_page_aligned_and_contiguous() {
        let mut pool = BufPool::with_slots(8).unwrap();
        let (p, len) = pool.region_raw();
        assert_eq!(p as usize % PAGE_SIZE, 0);
        assert_eq!(len, 8 * DEFAULT_SLOT_SIZE);
        let a = pool.alloc(Owner::Driver).unwrap();
        let b = pool.alloc(Owner::Pipeline).unwrap();
        assert_eq!(pool.io_buffer(a, 10), Some((p.wrapping_add(10), DEFAULT_SLOT_SIZE - 10)));
        assert_eq!(pool.slot(b).as_ptr(), p.wrapping_add(DEFAULT_SLOT_SIZE).cast_const());
        // Only slots lent to a driver, and only inside the slot.
        assert_eq!(pool.io_buffer(b, 0), None);
        assert_eq!(pool.io_buffer(a, DEFAULT_SLOT_SIZE), None);
        assert_eq!(pool.io_buffer(PktId(8), 0), None);
        assert!(pool.slot(PktId(8)).is_empty());
    }

    #[test]
    fn clone_copies_bytes_and_metadata_into_a_new_slot() {
        let mut pool = BufPool::with_slots(2).unwrap();
        let a = pool.alloc(Owner::Pipeline).unwrap();
        pool.set_data(a, &[1, 2, 3]).unwrap();
        pool.push_front(a, 1).unwrap()[0] = 9;
        let b = pool.clone_packet(a, Owner::Pipeline).unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.data(b), &[9, 1, 2, 3]);
        assert_eq!(pool.headroom(b), 127);
        assert_eq!(pool.clone_packet(a, Owner::Pipeline), None);
    }

    #[test]
    fn a_foreign_handle_touches_no_packet() {
        let mut pool = BufPool::with_slots(2).unwrap();
        let a = pool.alloc(Owner::Pipeline).unwrap();
        pool.set_data(a, &[1, 2, 3]).unwrap();
        let before = *pool.meta(a);
        // A handle past this pool's slots (another pool's): no slot, and metadata
        // writes land in the sink, not in a packet of this pool. (`meta_mut` does the
        // same in release builds; debug builds assert instead.)
        let foreign = PktId(2);
        let (slot, meta) = pool.slot_and_meta_mut(foreign);
        assert!(slot.is_empty());
        meta.l2 = 77;
        meta.l3 = 99;
        assert_eq!((pool.meta(a).l2, pool.meta(a).l3), (before.l2, before.l3));
        assert_eq!((pool.meta(PktId(1)).l2, pool.meta(PktId(1)).l3), (128, 0), "the free slot is untouched");
        assert_eq!(pool.data(a), &[1, 2, 3]);
    }

    #[test]
    fn geometry_is_checked() {
        assert_eq!(
            BufPool::new(4, 100, 128).unwrap_err(),
            BufError::Geometry("slot_size must be a multiple of 64 in 256..=65472")
        );
        assert!(matches!(BufPool::new(4, 2048, 64), Err(BufError::Geometry(_))));
        assert!(matches!(BufPool::new(0, 2048, 128), Err(BufError::Geometry(_))));
    }

    #[test]
    fn exhaustion_is_counted_and_free_is_checked() {
        let mut pool = BufPool::with_slots(2).unwrap();
        let a = pool.alloc(Owner::Pipeline).unwrap();
        let b = pool.alloc(Owner::Pipeline).unwrap();
        assert_eq!((a.index(), b.index()), (0, 1));
        assert_eq!(pool.alloc(Owner::Pipeline), None);
        assert_eq!(pool.exhausted(), 1);
        pool.free(a).unwrap();
        assert_eq!(pool.free(a), Err(BufError::NotAllocated));
        assert_eq!(pool.available(), 1);
        assert_eq!(pool.alloc(Owner::Driver), Some(a));
        assert_eq!(pool.meta(a).owner(), Owner::Driver);
    }

    #[test]
    fn push_pull_truncate_move_the_window_and_fail_cleanly() {
        let mut pool = BufPool::with_slots(1).unwrap();
        let p = pool.alloc(Owner::Pipeline).unwrap();
        pool.set_data(p, &[1, 2, 3, 4]).unwrap();
        assert_eq!(pool.headroom(p), 128);
        pool.push_front(p, 2).unwrap().copy_from_slice(&[9, 8]);
        assert_eq!(pool.data(p), &[9, 8, 1, 2, 3, 4]);
        assert_eq!(pool.push_front(p, 127), Err(BufError::NoHeadroom));
        assert_eq!(pool.data(p), &[9, 8, 1, 2, 3, 4]);
        pool.pull_front(p, 3).unwrap();
        assert_eq!(pool.data(p), &[2, 3, 4]);
        assert_eq!(pool.pull_front(p, 4), Err(BufError::TooShort));
        pool.truncate(p, 1).unwrap();
        assert_eq!(pool.data(p), &[2]);
        assert_eq!(pool.truncate(p, 2), Err(BufError::TooShort));
        let room = pool.tailroom(p);
        assert_eq!(room, 2048 - 129 - 1);
        assert_eq!(pool.push_back(p, room + 1), Err(BufError::NoTailroom));
        assert_eq!(pool.push_back(p, 2).unwrap(), &[0, 0]);
        assert_eq!(pool.data(p), &[2, 0, 0]);
        assert_eq!(pool.set_data(p, &[0; 2048]), Err(BufError::NoTailroom));
    }

    #[test]
    fn reused_slot_does_not_leak_old_bytes_through_push_back() {
        let mut pool = BufPool::with_slots(1).unwrap();
        let p = pool.alloc(Owner::Pipeline).unwrap();
        pool.set_data(p, &[0xaa; 64]).unwrap();
        pool.free(p).unwrap();
        let q = pool.alloc(Owner::Pipeline).unwrap();
        assert!(pool.data(q).is_empty());
        assert!(pool.push_back(q, 64).unwrap().iter().all(|&b| b == 0));
    }
}
