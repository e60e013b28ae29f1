//! What a stage may use besides the packet: the batch's time, the buffer pool, the
//! seeded RNG, the counters (only through [`Context::drop`]), the trace and the
//! configuration snapshot.

use rand_xoshiro::Xoshiro256PlusPlus;

use super::PipelineConfig;
use super::counters::Counters;
use super::drop_reason::DropReason;
use super::event::StageEvent;
use super::trace::{Trace, TraceNote, TraceRecord};
use crate::buf::{Batch, BufPool, Owner, PktFlags, PktId, PortId};
use crate::time::Instant;

/// The RNG every random choice in a pipeline comes from (NAT ports, hash salts).
/// Seeded by the driver, so the same seed and input give the same output.
pub type Rng = Xoshiro256PlusPlus;

/// Most packets stages may generate per batch (ARP requests, ICMP errors, ...).
pub const GENERATED_MAX: usize = crate::buf::BATCH_MAX;

/// Most packets stages may transmit directly per batch round (flood copies, ARP
/// requests on routed ports): a batch of 32 broadcasts on a 64-port bridge fits
/// (32 × 63 = 2016). Past it, copies are dropped as `generate_overflow`. Drivers
/// should keep batches small on nodes with large bridges.
pub const DIRECT_MAX: usize = 4096;

/// The per-batch context handed to each stage.
#[derive(Debug)]
pub struct Context<'a> {
    /// Time of this batch on the driver's clock.
    pub now: Instant,
    /// The worker's buffer pool.
    pub pool: &'a mut BufPool,
    /// The seeded RNG.
    pub rng: &'a mut Rng,
    /// The configuration in force for this batch.
    pub config: &'a PipelineConfig,
    pub(super) counters: &'a mut Counters,
    pub(super) trace: &'a mut Trace,
    pub(super) generated: &'a mut Vec<(PktId, usize)>,
    pub(super) direct: &'a mut Vec<(PktId, PortId)>,
    pub(super) stage: usize,
    pub(super) stage_name: &'static str,
    pub(super) tracing: bool,
    pub(super) generation: &'a mut u64,
}

impl Context<'_> {
    /// Drop the packet at `i`: the only way to drop, so every drop is counted under
    /// this stage and `reason`, with its bytes.
    #[inline]
    pub fn drop(&mut self, batch: &mut Batch, i: usize, reason: DropReason) {
        let pkt = batch.pkt(i);
        let len = usize::from(self.pool.meta(pkt).len());
        self.counters.count_drop(self.stage, reason, len);
        batch.set_dropped(i, reason);
    }

    /// The pipeline's generation: it moves whenever a stage is reconfigured or a
    /// stage reports learned state that changes forwarding (see
    /// [`Context::forwarding_changed`]). The flow fast path replays only what was
    /// learned in the current generation.
    #[inline]
    pub fn generation(&self) -> u64 {
        *self.generation
    }

    /// Say that learned state which decides forwarding changed (a neighbour's or an
    /// FDB entry's MAC or port, an entry learned or aged): cached flows are relearned.
    #[inline]
    pub fn forwarding_changed(&mut self) {
        *self.generation += 1;
    }

    /// Count an event (not a drop) under this stage.
    #[inline]
    pub fn count(&mut self, event: StageEvent) {
        self.counters.count_event(self.stage, event);
    }

    /// Count `event` `n` times (a stage counting a whole batch at once).
    #[inline]
    pub fn count_n(&mut self, event: StageEvent, n: u64) {
        self.counters.count_event_n(self.stage, event, n);
    }

    /// The 1-based index of the stage named `name` in this pipeline (for
    /// [`inject`](Self::inject) into another stage, as the neighbour stage re-enters
    /// the bridge).
    pub fn stage_by_name(&self, name: &str) -> Option<usize> {
        self.counters.stage_names().iter().position(|s| *s == name)
    }

    /// Index of the running stage in the pipeline (1-based; 0 is the pipeline itself).
    #[inline]
    pub fn stage_index(&self) -> usize {
        self.stage
    }

    /// True when some packet of this batch is traced: check once per batch and run
    /// the traced or untraced loop (VPP's `do_trace` argument).
    #[inline]
    pub fn tracing(&self) -> bool {
        self.tracing
    }

    /// Record a note about `pkt` if it is traced.
    #[inline]
    pub fn trace_note(&mut self, pkt: PktId, note: TraceNote) {
        if !self.tracing {
            return;
        }
        let m = self.pool.meta(pkt);
        if m.flags.contains(PktFlags::TRACE) {
            let id = m.trace_id;
            self.trace.push(TraceRecord::Note { id, stage: self.stage_name, note });
        }
    }

    /// A fresh packet from the pool for a stage to build (an ICMP error, an ARP
    /// request). Exhaustion is counted as `pool_exhausted` under this stage.
    #[inline]
    pub fn alloc(&mut self) -> Option<PktId> {
        let p = self.pool.alloc(Owner::Pipeline);
        if p.is_none() {
            self.counters.count_drop(self.stage, DropReason::PoolExhausted, 0);
            // A packet that was never made was not generated either: keep the
            // accounting identity by counting it as generated and dropped.
            self.counters.totals.generated += 1;
        }
        p
    }

    /// A fresh packet of `len` bytes, written by `write`; freed again (and `None`) when
    /// the pool is empty, the slot too small, or `write` fails. Its `l2` is set to the
    /// start of the data.
    pub fn build(&mut self, len: usize, write: impl FnOnce(&mut [u8]) -> Option<()>) -> Option<PktId> {
        let q = self.alloc()?;
        let ok = match self.pool.push_back(q, len) {
            Ok(buf) => write(buf).is_some(),
            Err(_) => false,
        };
        if !ok {
            let _ = self.pool.free(q);
            return None;
        }
        let head = self.pool.meta(q).head();
        self.pool.meta_mut(q).l2 = head;
        Some(q)
    }

    /// Queue a packet this stage made to run through the pipeline after the current
    /// batch, entering at stage `at` (use [`stage_index`](Self::stage_index) `+ 1` for
    /// "the next stage"). Generated packets pass every later stage, so an ICMP error
    /// about a NATed flow is translated like the kernel's.
    ///
    /// When the generated queue is full the packet is freed and counted as
    /// `generate_overflow`.
    #[inline]
    pub fn inject(&mut self, pkt: PktId, at: usize) {
        self.pool.meta_mut(pkt).flags |= PktFlags::GENERATED;
        self.counters.totals.generated += 1;
        self.enqueue(pkt, at);
    }

    /// Queue for the next round, or free and count `generate_overflow` when full.
    #[inline]
    fn enqueue(&mut self, pkt: PktId, at: usize) {
        if self.generated.len() < GENERATED_MAX {
            self.generated.push((pkt, at));
        } else {
            let len = usize::from(self.pool.meta(pkt).len());
            self.counters.count_drop(self.stage, DropReason::GenerateOverflow, len);
            let _ = self.pool.free(pkt);
        }
    }

    /// Transmit a copy of `pkt` on `port` directly, past the later stages (the bridge's
    /// flood). The copy is a fresh slot; it counts as generated and then as tx. Pool
    /// exhaustion or a full queue drops the copy, counted.
    #[inline]
    pub fn transmit_copy(&mut self, pkt: PktId, port: PortId) {
        let Some(q) = self.pool.clone_packet(pkt, Owner::Pipeline) else {
            self.counters.totals.generated += 1;
            self.counters.count_drop(self.stage, DropReason::PoolExhausted, 0);
            return;
        };
        self.pool.meta_mut(q).flags.remove(PktFlags::TRACE);
        self.transmit_generated(q, port);
    }

    /// Transmit a packet this stage made (an ARP request) on `port` directly, past the
    /// later stages. Counts as generated, then as tx; a full queue drops it, counted.
    #[inline]
    pub fn transmit_generated(&mut self, pkt: PktId, port: PortId) {
        self.counters.totals.generated += 1;
        let m = self.pool.meta_mut(pkt);
        m.flags |= PktFlags::GENERATED;
        m.out_port = port;
        if self.direct.len() < DIRECT_MAX {
            self.direct.push((pkt, port));
        } else {
            let len = usize::from(self.pool.meta(pkt).len());
            self.counters.count_drop(self.stage, DropReason::GenerateOverflow, len);
            let _ = self.pool.free(pkt);
        }
    }

    /// Put a packet this stage held back into the pipeline at stage `at` (the ARP
    /// reply came). Counted as `released`.
    #[inline]
    pub fn release(&mut self, pkt: PktId, at: usize) {
        self.counters.totals.released += 1;
        self.enqueue(pkt, at);
    }

    /// Drop a packet this stage holds (outside any batch), counted like [`drop`](Self::drop).
    /// It leaves the held state, so it also counts as released: the accounting identity
    /// keeps `held - released` = packets held right now.
    pub fn drop_held(&mut self, pkt: PktId, reason: DropReason) {
        self.counters.totals.released += 1;
        let len = usize::from(self.pool.meta(pkt).len());
        self.counters.count_drop(self.stage, reason, len);
        let _ = self.pool.free(pkt);
    }
}
