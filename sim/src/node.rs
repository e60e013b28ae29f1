//! Simulated nodes: a real podplane [`Pipeline`] with its own buffer pool and named
//! ports. Frames that reach a node at one virtual instant are processed together, in
//! batches of [`SIM_BATCH`], with the pipeline's clock set to that instant.

use std::collections::VecDeque;

use podplane::Instant;
use podplane::buf::{Batch, BufPool, Owner, PortId};

/// Frames per batch a simulated node takes: what a TAP driver reads at once (design.md:
/// drivers use 32–64), and small enough that a burst of broadcasts on a large bridge
/// fits the pipeline's direct-transmit queue.
pub const SIM_BATCH: usize = 32;
use podplane::pipeline::{DropReason, Pipeline};

/// A node in the simulation.
#[derive(Debug)]
pub struct Node {
    pub(crate) name: String,
    pub(crate) ports: Vec<String>,
    pub(crate) pipeline: Pipeline,
    pub(crate) pool: BufPool,
    pub(crate) rx: VecDeque<(PortId, Vec<u8>)>,
    pub(crate) scheduled: bool,
    pub(crate) links: Vec<Option<(usize, usize)>>,
    batch: Batch,
}

impl Node {
    pub(crate) fn new(name: &str, ports: &[&str], pipeline: Pipeline, pool_slots: usize) -> Option<Self> {
        Some(Node {
            name: name.to_owned(),
            ports: ports.iter().map(|p| (*p).to_owned()).collect(),
            pipeline,
            pool: BufPool::with_slots(pool_slots).ok()?,
            rx: VecDeque::new(),
            scheduled: false,
            links: vec![None; ports.len()],
            batch: Batch::new(),
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Port names, index = port number.
    pub fn ports(&self) -> &[String] {
        &self.ports
    }

    /// The node's pipeline (counters, trace).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The node's pipeline, to arm a trace or change config between runs.
    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// Process every queued frame; returns `(port, frame)` to transmit and the count of
    /// packets delivered to the host port (the simulated node has no host stack yet;
    /// they are counted and freed).
    pub(crate) fn run(&mut self, now: Instant) -> Vec<(PortId, Vec<u8>)> {
        let mut out = Vec::new();
        while !self.rx.is_empty() {
            self.batch.clear();
            while self.batch.len() < SIM_BATCH {
                let Some((port, frame)) = self.rx.pop_front() else { break };
                let Some(p) = self.pool.alloc(Owner::Pipeline) else {
                    self.pipeline.count_driver_drop(DropReason::PoolExhausted, frame.len());
                    continue;
                };
                if self.pool.set_data(p, &frame).is_err() {
                    // A frame larger than a slot: no link MTU here allows it, but count it.
                    self.pipeline.count_driver_drop(DropReason::RuntFrame, frame.len());
                    let _ = self.pool.free(p);
                    continue;
                }
                self.pool.meta_mut(p).in_port = port;
                let _ = self.batch.push(p);
            }
            let o = self.pipeline.process(&mut self.pool, now, &mut self.batch);
            let sent: Vec<(PortId, podplane::PktId)> = o.tx().collect();
            let host: Vec<podplane::PktId> = o.host().to_vec();
            for (port, p) in sent {
                out.push((port, self.pool.data(p).to_vec()));
                let _ = self.pool.free(p);
            }
            for p in host {
                let _ = self.pool.free(p);
            }
        }
        out
    }
}
