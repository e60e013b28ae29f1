//! The stage pipeline: runs stages in order over a batch, skipping final packets,
//! then settles every packet's disposition.
//!
//! ```text
//!  driver rx ──> [ingress: count rx, flag traced packets]
//!                  │
//!                  ▼
//!   stage 1 ──> stage 2 ──> ... ──> stage n     (each skips final packets)
//!                  │   stages may inject generated / released packets
//!                  ▼
//!            [settle: Drop → free slot; Tx → output.tx (grouped by port);
//!             Host → output.host; Held → the stage keeps it;
//!             still Continue → drop `no_disposition`]
//!                  │
//!                  ▼
//!            generated packets run as their own batches, from the stage they
//!            asked for, at most MAX_ROUNDS rounds (then `generate_loop`)
//! ```
//!
//! Packets in `output` belong to the driver: it transmits and frees them. Dropped
//! packets are freed here. Nothing in [`Pipeline::process`] allocates: every queue is
//! reserved at construction for the worst case.

mod context;
mod counters;
mod disposition;
mod drop_reason;
mod event;
mod stage;
pub mod trace;

pub use context::{Context, DIRECT_MAX, GENERATED_MAX, Rng};
pub use counters::{CounterSnapshot, Counters, DropCount, EventCount, PIPELINE_STAGE, Totals};
pub use disposition::Disposition;
pub use drop_reason::{DropReason, Severity};
pub use event::StageEvent;
pub use stage::Stage;
pub use trace::{Trace, TraceNote, TraceRecord};

use rand_core::SeedableRng;

use crate::buf::{BATCH_MAX, Batch, BufPool, PktFlags, PktId, PortId};
use crate::time::Instant;
use crate::wire::ChecksumPolicy;

/// Rounds of generated packets run after a batch before the rest are dropped as
/// `generate_loop` (an ICMP error about an ICMP error is never sent, so two suffice
/// in practice; four leaves margin).
pub const MAX_ROUNDS: usize = 4;

/// The configuration snapshot stages read through the [`Context`]. Later issues grow
/// it into the node's table snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Which checksums the receive path verifies.
    pub checksum: ChecksumPolicy,
}

/// Where the packets of a processed batch go. The driver transmits `tx` and delivers
/// `host`, then frees those slots.
#[derive(Debug, Default)]
pub struct Output {
    tx: Vec<(PortId, u32, PktId)>,
    host: Vec<PktId>,
    /// Set when a packet was queued for a lower port than the one before it: only
    /// then does `tx` need sorting (most batches leave on one port, in order).
    unsorted: bool,
    /// The port of the last packet queued.
    last_port: PortId,
}

impl Output {
    fn with_capacity(n: usize) -> Self {
        Output { tx: Vec::with_capacity(n), host: Vec::with_capacity(n), unsorted: false, last_port: PortId(0) }
    }

    /// Queue `pkt` for `port` as the `order`-th packet of the batch.
    #[inline]
    fn push_tx(&mut self, port: PortId, order: u32, pkt: PktId) {
        self.unsorted |= port < self.last_port;
        self.last_port = port;
        self.tx.push((port, order, pkt));
    }

    /// Packets to transmit as `(port, packet)`, grouped by port, in arrival order
    /// within a port.
    pub fn tx(&self) -> impl ExactSizeIterator<Item = (PortId, PktId)> + '_ {
        self.tx.iter().map(|&(port, _, pkt)| (port, pkt))
    }

    /// Packets for the host stack, in order.
    pub fn host(&self) -> &[PktId] {
        &self.host
    }

    fn clear(&mut self) {
        self.tx.clear();
        self.host.clear();
        self.unsorted = false;
        self.last_port = PortId(0);
    }
}

/// An ordered list of stages with their counters, trace and RNG: one per worker.
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
    /// Per stage, the first stage from it on that does not skip final batches
    /// ([`Stage::skips_final_batches`], asked once when a stage joins): a batch whose
    /// packets are all decided goes straight there (a call or a check per stage and
    /// batch showed in the fast path's figures).
    next_kept: Vec<usize>,
    counters: Counters,
    trace: Trace,
    rng: Rng,
    config: PipelineConfig,
    generated: Vec<(PktId, usize)>,
    pending: Vec<(PktId, usize)>,
    direct: Vec<(PktId, PortId)>,
    gen_batch: Batch,
    output: Output,
    order: u32,
    /// Moves on every reconfiguration and every change of learned forwarding state
    /// ([`Context::generation`]).
    generation: u64,
}

impl core::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stages", &self.stage_names())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline running `stages` in order, with the RNG seeded from `seed`.
    pub fn new(stages: Vec<Box<dyn Stage>>, config: PipelineConfig, seed: u64) -> Self {
        let names: Vec<&'static str> = stages.iter().map(|s| s.name()).collect();
        let out_cap = BATCH_MAX + (GENERATED_MAX + DIRECT_MAX) * (MAX_ROUNDS + 1);
        Pipeline {
            next_kept: next_kept(&stages),
            stages,
            counters: Counters::new(&names),
            trace: Trace::default(),
            rng: Rng::seed_from_u64(seed),
            config,
            generated: Vec::with_capacity(GENERATED_MAX),
            pending: Vec::with_capacity(GENERATED_MAX),
            direct: Vec::with_capacity(DIRECT_MAX),
            gen_batch: Batch::new(),
            output: Output::with_capacity(out_cap),
            order: 0,
            generation: 0,
        }
    }

    /// Stage names in order.
    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// The 1-based index of a stage by name, for [`Context::inject`].
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name() == name).map(|i| i + 1)
    }

    /// The first stage of type `T`, to read (a shared handle, a table size). Unlike
    /// [`Pipeline::stage_mut`] this does not count as a reconfiguration.
    pub fn stage<T: Stage>(&self) -> Option<&T> {
        self.stages.iter().find_map(|s| (s.as_ref() as &dyn core::any::Any).downcast_ref::<T>())
    }

    /// The first stage of type `T`, to change its configuration between batches. It
    /// counts as a reconfiguration: the flow fast path relearns every flow.
    pub fn stage_mut<T: Stage>(&mut self) -> Option<&mut T> {
        self.generation += 1;
        self.stages.iter_mut().find_map(|s| (s.as_mut() as &mut dyn core::any::Any).downcast_mut::<T>())
    }

    /// Call `f` on every stage of type `T` (the two NAT stages share one type).
    pub fn each_stage_mut<T: Stage>(&mut self, mut f: impl FnMut(&mut T)) {
        self.generation += 1;
        for s in &mut self.stages {
            if let Some(t) = (s.as_mut() as &mut dyn core::any::Any).downcast_mut::<T>() {
                f(t);
            }
        }
    }

    /// Put `stage` in place of the stage with the same name, keeping the counters;
    /// returns the old one (`None`, and nothing changed, when there is no such stage).
    pub fn replace_stage(&mut self, stage: Box<dyn Stage>) -> Option<Box<dyn Stage>> {
        self.generation += 1;
        let slot = self.stages.iter_mut().find(|s| s.name() == stage.name())?;
        let old = core::mem::replace(slot, stage);
        self.next_kept = next_kept(&self.stages);
        Some(old)
    }

    /// Take the stages out (to move learned state into a pipeline of another shape).
    pub fn into_stages(self) -> Vec<Box<dyn Stage>> {
        self.stages
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The trace buffer.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Trace the next `n` packets received (VPP `trace add`).
    pub fn trace_add(&mut self, n: u32) {
        self.trace.add(n);
    }

    /// Replace the configuration; takes effect from the next batch.
    pub fn set_config(&mut self, config: PipelineConfig) {
        self.generation += 1;
        self.config = config;
    }

    /// Count a packet the driver dropped before the pipeline saw it (no buffer, a
    /// read error): it is received and dropped under the `pipeline` stage.
    pub fn count_driver_drop(&mut self, reason: DropReason, bytes: usize) {
        self.counters.totals.rx += 1;
        self.counters.totals.rx_bytes += bytes as u64;
        self.counters.count_drop(0, reason, bytes);
    }

    /// Run a batch through every stage and settle each packet. Returns where the
    /// packets go; the batch is left as processed (dispositions readable) and the
    /// driver clears it. Never allocates.
    pub fn process(&mut self, pool: &mut BufPool, now: Instant, batch: &mut Batch) -> &Output {
        self.output.clear();
        self.order = 0;
        let mut tracing = false;
        let mut rx_bytes = 0u64;
        // Most batches are not traced: their loop only stamps and counts.
        let traced = if self.trace.budget() > 0 { batch.len() } else { 0 };
        let (pkts, _) = batch.entries();
        let metas = pool.metas_mut();
        for &pkt in pkts {
            // Handles come only from this pool (a foreign one is skipped).
            let Some(m) = metas.get_mut(pkt.index()) else { continue };
            // A driver that knows the exact receive time sets it; otherwise the
            // packet is stamped with the batch time.
            if m.timestamp == Instant::ZERO {
                m.timestamp = now;
            }
            rx_bytes += u64::from(m.len());
        }
        for i in 0..traced {
            let pkt = batch.pkt(i);
            let Some(id) = self.trace.take() else { break };
            let m = pool.meta_mut(pkt);
            m.flags |= PktFlags::TRACE;
            m.trace_id = id;
            let (port, len) = (m.in_port, m.len());
            let data = pool.data(pkt);
            let n = data.len().min(trace::SNAP_LEN);
            let mut snap = [0u8; trace::SNAP_LEN];
            if let (Some(dst), Some(src)) = (snap.get_mut(..n), data.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.trace.push(TraceRecord::Ingress {
                id,
                port,
                at: now,
                len,
                snap_len: u16::try_from(n).unwrap_or(0),
                snap,
            });
            tracing = true;
        }
        // Once per batch, not per packet.
        self.counters.totals.rx += batch.len() as u64;
        self.counters.totals.rx_bytes += rx_bytes;
        self.run_from(pool, now, batch, 1, tracing);
        self.settle(pool, batch);

        for _ in 0..MAX_ROUNDS {
            if self.generated.is_empty() {
                break;
            }
            core::mem::swap(&mut self.generated, &mut self.pending);
            // Group by entry stage, keeping queue order within a stage.
            stable_sort_by_stage(&mut self.pending);
            let mut k = 0;
            while k < self.pending.len() {
                let at = self.pending.get(k).map_or(0, |e| e.1);
                let mut gb = core::mem::take(&mut self.gen_batch);
                gb.clear();
                let mut traced = false;
                while let Some(&(pkt, a)) = self.pending.get(k) {
                    if a != at || gb.is_full() {
                        break;
                    }
                    traced |= pool.meta(pkt).flags.contains(PktFlags::TRACE);
                    let _ = gb.push(pkt);
                    k += 1;
                }
                self.run_from(pool, now, &mut gb, at, traced);
                self.settle(pool, &mut gb);
                self.gen_batch = gb;
            }
            self.pending.clear();
        }
        // Whatever is still queued after the last round was generated in a loop.
        while let Some((pkt, _)) = self.generated.pop() {
            let len = usize::from(pool.meta(pkt).len());
            self.counters.count_drop(0, DropReason::GenerateLoop, len);
            let _ = pool.free(pkt);
        }
        // Most batches leave on one port, in order: sorted already (orders only grow
        // along `tx`, so a port sequence that never falls is sorted).
        if self.output.unsorted {
            self.output.tx.sort_unstable_by_key(|&(port, order, _)| (port, order));
        }
        &self.output
    }

    fn run_from(&mut self, pool: &mut BufPool, now: Instant, batch: &mut Batch, first: usize, tracing: bool) {
        let Pipeline { stages, next_kept, counters, trace, rng, config, generated, direct, generation, .. } = self;
        // One context for the whole walk: each stage gets it with its own number and
        // name (building it per stage showed, about 20 instructions each).
        let mut cx = Context {
            now,
            pool,
            rng,
            config,
            counters,
            trace,
            generated,
            direct,
            stage: 0,
            stage_name: "",
            tracing,
            generation,
        };
        let mut s = first.saturating_sub(1);
        while let Some(stage) = stages.get_mut(s) {
            if batch.live_count() == 0 {
                let kept = next_kept.get(s).copied().unwrap_or(usize::MAX);
                if kept != s {
                    s = kept;
                    continue;
                }
            }
            // The name is for trace records only.
            let name = if tracing { stage.name() } else { "" };
            // Which packets this stage sees, for its trace records (only when tracing).
            let live_before: Option<[bool; BATCH_MAX]> = tracing.then(|| {
                let mut l = [false; BATCH_MAX];
                for (i, v) in l.iter_mut().enumerate().take(batch.len()) {
                    *v = batch.is_live(i);
                }
                l
            });
            (cx.stage, cx.stage_name) = (s + 1, name);
            stage.process(&mut cx, batch);
            if let Some(live_before) = live_before {
                for (i, was_live) in live_before.iter().enumerate().take(batch.len()) {
                    let m = cx.pool.meta(batch.pkt(i));
                    if *was_live && m.flags.contains(PktFlags::TRACE) {
                        cx.trace.push(TraceRecord::Verdict {
                            id: m.trace_id,
                            stage: name,
                            disposition: batch.disposition(i),
                        });
                    }
                }
            }
            s += 1;
        }
    }

    fn settle(&mut self, pool: &mut BufPool, batch: &mut Batch) {
        // Copies stages transmitted directly (floods) go out first: they were made
        // while this batch ran.
        for k in 0..self.direct.len() {
            let Some(&(pkt, port)) = self.direct.get(k) else { break };
            self.counters.totals.tx += 1;
            self.counters.totals.tx_bytes += u64::from(pool.meta(pkt).len());
            self.output.push_tx(port, self.order, pkt);
            self.order += 1;
        }
        self.direct.clear();
        // Totals kept in locals and added once (a counter update per packet shows),
        // as is the output queue's order.
        let (mut tx, mut tx_bytes, mut host, mut held) = (0u64, 0u64, 0u64, 0u64);
        let mut undecided = false;
        let (pkts, disps) = batch.entries();
        let out = &mut self.output;
        let mut order = self.order;
        for (&pkt, &d) in pkts.iter().zip(disps) {
            match d {
                Disposition::Tx(port) => {
                    // One metadata access for both fields (a foreign handle, which
                    // no stage transmits, is left alone).
                    if let Some(m) = pool.metas_mut().get_mut(pkt.index()) {
                        m.out_port = port;
                        tx_bytes += u64::from(m.len());
                    }
                    tx += 1;
                    out.push_tx(port, order, pkt);
                    order += 1;
                }
                Disposition::Drop(_) => {
                    let _ = pool.free(pkt);
                }
                Disposition::Host => {
                    host += 1;
                    out.host.push(pkt);
                }
                Disposition::Held => held += 1,
                Disposition::Continue => undecided = true,
            }
        }
        self.order = order;
        if undecided {
            for i in 0..batch.len() {
                if batch.disposition(i) == Disposition::Continue {
                    // Nobody decided: a counted drop, and the batch says so too.
                    let pkt = batch.pkt(i);
                    batch.set_dropped(i, DropReason::NoDisposition);
                    let len = usize::from(pool.meta(pkt).len());
                    self.counters.count_drop(0, DropReason::NoDisposition, len);
                    let _ = pool.free(pkt);
                }
            }
        }
        let t = &mut self.counters.totals;
        t.tx += tx;
        t.tx_bytes += tx_bytes;
        t.host += host;
        t.held += held;
    }
}

/// For each stage, the index of the first stage from it on that does not skip final
/// batches (the stage count when none does).
fn next_kept(stages: &[Box<dyn Stage>]) -> Vec<usize> {
    let mut next = vec![stages.len(); stages.len()];
    let mut kept = stages.len();
    for (i, st) in stages.iter().enumerate().rev() {
        if !st.skips_final_batches() {
            kept = i;
        }
        if let Some(n) = next.get_mut(i) {
            *n = kept;
        }
    }
    next
}

/// Stable insertion sort by entry stage: no allocation (std's stable sort allocates),
/// and the queue holds at most [`GENERATED_MAX`] entries, usually a handful.
fn stable_sort_by_stage(v: &mut [(PktId, usize)]) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && v.get(j - 1).map_or(0, |e| e.1) > v.get(j).map_or(0, |e| e.1) {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}
