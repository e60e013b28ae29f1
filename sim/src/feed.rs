//! Feeding frames through a pipeline in batches, as a driver does: take slots from
//! the pool, copy frames in, process, then "transmit" (count) and free the output.
//! The virtual clock advances a fixed step per batch.

use podplane::buf::{BATCH_MAX, Batch, BufPool, Owner, PortId};
use podplane::pipeline::{DropReason, Pipeline};
use podplane::{Duration, Instant};

use crate::clock::VirtualClock;

/// Drives one pipeline with one pool.
#[derive(Debug)]
pub struct Feeder {
    /// The pool frames are loaded into.
    pub pool: BufPool,
    /// The clock each batch is stamped with.
    pub clock: VirtualClock,
    /// Packets per batch (1..=256).
    pub batch_size: usize,
    /// Clock step per batch.
    pub step: Duration,
    /// Port the frames arrive on.
    pub in_port: PortId,
    batch: Batch,
}

impl Feeder {
    /// A feeder with a pool of `slots` default slots and batches of `batch_size`
    /// (clamped to 1..=256), stepping the clock 10 µs per batch.
    ///
    /// # Panics
    /// If a pool of `slots` slots cannot be made (0 or more than 2^24 slots).
    pub fn new(slots: usize, batch_size: usize) -> Self {
        #[allow(clippy::expect_used)] // documented: a caller error, not packet input
        let pool = BufPool::with_slots(slots).expect("pool geometry");
        Feeder {
            pool,
            clock: VirtualClock::new(Instant::from_nanos(1_000_000_000)),
            batch_size: batch_size.clamp(1, BATCH_MAX),
            step: Duration::from_nanos(10_000),
            in_port: PortId(0),
            batch: Batch::new(),
        }
    }

    /// Run every frame through `pipeline`; returns packets transmitted per port
    /// (index = port number) and the number delivered to the host.
    pub fn run<'a>(&mut self, pipeline: &mut Pipeline, frames: impl IntoIterator<Item = &'a [u8]>) -> FeedResult {
        let mut result = FeedResult::default();
        let mut frames = frames.into_iter().peekable();
        while frames.peek().is_some() {
            self.batch.clear();
            while self.batch.len() < self.batch_size {
                let Some(f) = frames.next() else { break };
                let Some(p) = self.pool.alloc(Owner::Pipeline) else {
                    pipeline.count_driver_drop(DropReason::PoolExhausted, f.len());
                    continue;
                };
                if self.pool.set_data(p, f).is_err() {
                    // Larger than a slot: a driver would count it the same way.
                    pipeline.count_driver_drop(DropReason::RuntFrame, f.len());
                    let _ = self.pool.free(p);
                    continue;
                }
                self.pool.meta_mut(p).in_port = self.in_port;
                let _ = self.batch.push(p);
            }
            let now = self.clock.advance(self.step);
            let out = pipeline.process(&mut self.pool, now, &mut self.batch);
            for (port, p) in out.tx() {
                let i = usize::from(port.0);
                if result.tx_per_port.len() <= i {
                    result.tx_per_port.resize(i + 1, 0);
                }
                result.tx_per_port[i] += 1;
                let _ = self.pool.free(p);
            }
            for &p in out.host() {
                result.host += 1;
                let _ = self.pool.free(p);
            }
            result.batches += 1;
        }
        result
    }
}

/// What a [`Feeder::run`] delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedResult {
    /// Batches processed.
    pub batches: u64,
    /// Packets transmitted, by port number.
    pub tx_per_port: Vec<u64>,
    /// Packets delivered to the host.
    pub host: u64,
}
