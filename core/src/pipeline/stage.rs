//! The `Stage` trait: one step of packet processing over a batch (a VPP graph node).

use super::context::Context;
use crate::buf::Batch;

/// A pipeline stage. `process` sees the whole batch, skips packets that are already
/// final (`batch.is_live(i)` is false) and leaves each live packet `Continue` or final.
///
/// Dispatch through `dyn Stage` happens once per batch, never per packet. Stages are
/// `Any` so that the configuration code can reach a stage of a running pipeline
/// ([`Pipeline::stage_mut`](super::Pipeline::stage_mut)) to change it between batches.
pub trait Stage: Send + core::any::Any {
    /// The stage's name: its module name (`"parse"`, `"route"`), used in counters,
    /// traces and the CLI.
    fn name(&self) -> &'static str;

    /// Process the live packets of `batch`.
    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch);

    /// True when the stage does nothing for a batch whose packets are all final
    /// (transmitted, dropped, held by the flow fast path or another stage): the
    /// pipeline then does not call it. Stages with work per batch (expiry sweeps,
    /// queues to drain) keep the default. Asked once, when the stage joins a
    /// pipeline: the answer must not change.
    fn skips_final_batches(&self) -> bool {
        false
    }
}
