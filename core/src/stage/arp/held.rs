//! Packets waiting for a next hop to answer ARP or neighbour discovery. A fixed set of
//! queues is lent to unresolved neighbour entries and returned when the entry resolves
//! or gives up, so a neighbour entry stays small (the table is looked up for every
//! routed packet) while each queue can be as long as Linux's (`unres_qlen` = 101).

use crate::buf::PktId;

/// Packets held per unresolved neighbour (Linux's `unres_qlen` default).
pub const QUEUE_LEN: usize = 101;
/// Neighbours that can have packets waiting at once; packets for another unresolved
/// neighbour are dropped (`neigh_queue_full`) until a queue is returned.
pub const QUEUES: usize = 64;

/// The queues (about 26 KiB, allocated once).
#[derive(Debug)]
pub(crate) struct HeldQueues {
    slots: Vec<PktId>,
    lens: Vec<u8>,
    free: Vec<u16>,
}

impl Default for HeldQueues {
    fn default() -> Self {
        HeldQueues {
            slots: vec![PktId::default(); QUEUES * QUEUE_LEN],
            lens: vec![0; QUEUES],
            // Popped from the end: queue 0 is lent first.
            free: (0..u16::try_from(QUEUES).unwrap_or(0)).rev().collect(),
        }
    }
}

impl HeldQueues {
    /// Hold `pkt` in `queue`, lending the entry a queue if it has none. False when the
    /// queue is full or none is free.
    pub(crate) fn push(&mut self, queue: &mut Option<u16>, pkt: PktId) -> bool {
        let q = match *queue {
            Some(q) => q,
            None => {
                let Some(q) = self.free.pop() else { return false };
                *queue = Some(q);
                q
            }
        };
        let Some(len) = self.lens.get_mut(usize::from(q)) else { return false };
        if usize::from(*len) >= QUEUE_LEN {
            return false;
        }
        if let Some(s) = self.slots.get_mut(usize::from(q) * QUEUE_LEN + usize::from(*len)) {
            *s = pkt;
        }
        *len += 1;
        true
    }

    /// Hand the packets of `queue` to `f` in the order they came, and return the queue.
    pub(crate) fn drain(&mut self, queue: &mut Option<u16>, mut f: impl FnMut(PktId)) {
        let Some(q) = queue.take() else { return };
        let len = self.lens.get(usize::from(q)).copied().unwrap_or(0);
        let start = usize::from(q) * QUEUE_LEN;
        for p in self.slots.get(start..start + usize::from(len)).unwrap_or(&[]) {
            f(*p);
        }
        if let Some(l) = self.lens.get_mut(usize::from(q)) {
            *l = 0;
        }
        self.free.push(q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_lent_filled_drained_in_order_and_returned() {
        let mut pool = crate::buf::BufPool::with_slots(QUEUE_LEN + 2).unwrap();
        let ids: Vec<PktId> = (0..QUEUE_LEN + 2).map(|_| pool.alloc(crate::buf::Owner::Pipeline).unwrap()).collect();
        let mut h = HeldQueues::default();
        let mut a = None;
        for p in &ids[..QUEUE_LEN] {
            assert!(h.push(&mut a, *p));
        }
        assert!(!h.push(&mut a, ids[QUEUE_LEN]), "full");
        let mut out = Vec::new();
        h.drain(&mut a, |p| out.push(p));
        assert_eq!(out, ids[..QUEUE_LEN]);
        assert_eq!(a, None);
        // Every queue can be lent; one more neighbour finds none until one returns.
        let mut qs = vec![None; QUEUES];
        for q in &mut qs {
            assert!(h.push(q, ids[0]));
        }
        let mut extra = None;
        assert!(!h.push(&mut extra, ids[1]));
        h.drain(&mut qs[5], |_| {});
        assert!(h.push(&mut extra, ids[1]));
        assert_eq!(extra, Some(5), "the returned queue is lent again");
    }
}
