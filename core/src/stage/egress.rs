//! The `egress` stage, last in the node path: transmits packets whose `out_port` an
//! earlier stage chose (the bridge, the route stage), and delivers to the host those
//! addressed to the node itself (`L2_LOCAL`) that no stage consumed. Anything else is
//! left undecided and the pipeline counts it `no_disposition`.

use crate::buf::{Batch, PktFlags, PortId};
use crate::pipeline::{Context, Stage};

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct EgressStage;

impl Stage for EgressStage {
    fn name(&self) -> &'static str {
        "egress"
    }

    fn skips_final_batches(&self) -> bool {
        true
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let m = cx.pool.meta(batch.pkt(i));
            if m.out_port != PortId::NONE {
                batch.transmit(i, m.out_port);
            } else if m.flags.contains(PktFlags::L2_LOCAL) {
                batch.deliver_host(i);
            }
        }
    }
}
