//! A batch: up to [`BATCH_MAX`] packet handles and the disposition of each.
//!
//! The disposition array is private. Stages forward, deliver or hold through the
//! methods here; the only way to drop is [`Context::drop`](crate::pipeline::Context::drop),
//! which counts the drop by stage and reason, so nothing is dropped silently.

use super::handle::{PktId, PortId};
use crate::pipeline::{Disposition, DropReason};

/// Most packets in one batch (VPP's `VLIB_FRAME_SIZE`); drivers use 32–64.
pub const BATCH_MAX: usize = 256;

/// Packet handles with their dispositions.
#[derive(Clone)]
pub struct Batch {
    len: usize,
    /// Packets still `Continue` (kept as dispositions change, so that stages can skip
    /// a batch with nothing left to decide).
    live: usize,
    pkts: [PktId; BATCH_MAX],
    disp: [Disposition; BATCH_MAX],
}

impl core::fmt::Debug for Batch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch.
    pub const fn new() -> Self {
        Batch { len: 0, live: 0, pkts: [PktId(0); BATCH_MAX], disp: [Disposition::Continue; BATCH_MAX] }
    }

    /// Packets in the batch. (Never above [`BATCH_MAX`]; said here so that a loop over
    /// `0..len()` indexes the arrays without a bounds check per packet.)
    #[inline]
    pub const fn len(&self) -> usize {
        if self.len < BATCH_MAX { self.len } else { BATCH_MAX }
    }

    /// True when the batch holds no packet.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when no more packets fit.
    #[inline]
    pub const fn is_full(&self) -> bool {
        self.len == BATCH_MAX
    }

    /// Add a packet, `Continue`.
    ///
    /// # Errors
    /// Gives the packet back when the batch is full.
    #[inline]
    pub fn push(&mut self, pkt: PktId) -> Result<(), PktId> {
        let i = self.len;
        match (self.pkts.get_mut(i), self.disp.get_mut(i)) {
            (Some(p), Some(d)) => {
                *p = pkt;
                *d = Disposition::Continue;
                self.len += 1;
                self.live += 1;
                Ok(())
            }
            _ => Err(pkt),
        }
    }

    /// Take the last packet off the batch (whatever its disposition).
    #[inline]
    pub fn pop(&mut self) -> Option<PktId> {
        let i = self.len.checked_sub(1)?;
        if self.is_live(i) {
            self.live -= 1;
        }
        self.len = i;
        self.pkts.get(i).copied()
    }

    /// Forget every packet (their slots are not freed: that is the driver's job).
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
        self.live = 0;
    }

    /// The packet at `i` (`i < len`).
    #[inline]
    pub fn pkt(&self, i: usize) -> PktId {
        debug_assert!(i < self.len);
        self.pkts.get(i).copied().unwrap_or_default()
    }

    /// The packets and their dispositions, side by side (a loop over them needs no
    /// bounds check per packet).
    #[inline]
    pub(crate) fn entries(&self) -> (&[PktId], &[Disposition]) {
        let n = self.len();
        (self.pkts.get(..n).unwrap_or(&[]), self.disp.get(..n).unwrap_or(&[]))
    }

    /// The disposition of the packet at `i`.
    #[inline]
    pub fn disposition(&self, i: usize) -> Disposition {
        debug_assert!(i < self.len);
        self.disp.get(i).copied().unwrap_or(Disposition::Continue)
    }

    /// True when the packet at `i` is still `Continue`.
    #[inline]
    pub fn is_live(&self, i: usize) -> bool {
        matches!(self.disp.get(i), Some(Disposition::Continue))
    }

    /// Count of packets still `Continue`.
    #[inline]
    pub fn live_count(&self) -> usize {
        debug_assert_eq!(self.live, self.disp.iter().take(self.len).filter(|d| **d == Disposition::Continue).count());
        self.live
    }

    #[inline]
    fn set(&mut self, i: usize, d: Disposition) {
        debug_assert!(i < self.len);
        if let Some(slot) = self.disp.get_mut(i).filter(|_| i < self.len) {
            let was = *slot == Disposition::Continue;
            let is = d == Disposition::Continue;
            if was && !is {
                self.live -= 1;
            } else if is && !was {
                self.live += 1;
            }
            *slot = d;
        }
    }

    /// Final: transmit the packet at `i` on `port`.
    #[inline]
    pub fn transmit(&mut self, i: usize, port: PortId) {
        self.set(i, Disposition::Tx(port));
    }

    /// Final: deliver the packet at `i` to the node's host stack.
    #[inline]
    pub fn deliver_host(&mut self, i: usize) {
        self.set(i, Disposition::Host);
    }

    /// Final for this batch: a stage keeps the packet (waiting for ARP, say) and will
    /// release or drop it later. The pipeline does not free a held packet.
    #[inline]
    pub fn hold(&mut self, i: usize) {
        self.set(i, Disposition::Held);
    }

    /// Drop. Only the pipeline calls this, through `Context::drop`, which counts it.
    #[inline]
    pub(crate) fn set_dropped(&mut self, i: usize, reason: DropReason) {
        self.set(i, Disposition::Drop(reason));
    }

    /// Iterate over `(packet, disposition)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (PktId, Disposition)> + '_ {
        self.pkts.iter().copied().zip(self.disp.iter().copied()).take(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_until_full_then_refuse() {
        let mut b = Batch::new();
        for i in 0..BATCH_MAX {
            b.push(PktId(u32::try_from(i).unwrap())).unwrap();
        }
        assert!(b.is_full());
        assert_eq!(b.push(PktId(999)), Err(PktId(999)));
        b.transmit(3, PortId(1));
        b.deliver_host(4);
        b.hold(5);
        assert_eq!(b.live_count(), BATCH_MAX - 3);
        assert_eq!(b.disposition(3), Disposition::Tx(PortId(1)));
        assert!(!b.is_live(5));
        assert_eq!(b.pop(), Some(PktId(u32::try_from(BATCH_MAX - 1).unwrap())));
        assert_eq!(b.len(), BATCH_MAX - 1);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.pop(), None);
        b.push(PktId(7)).unwrap();
        assert_eq!(b.disposition(0), Disposition::Continue);
    }
}
