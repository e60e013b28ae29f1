//! Embedding podplane in a node agent: build a pipeline from the library's stages plus
//! one of your own, feed it frames, read the output and the counters.
//!
//! Run: `cargo run -p podplane-examples --bin embed`
//!
//! The custom stage here is a toy policy ("no UDP to port 9 (discard)") that shows the
//! stage contract: skip final packets, decide each live one, drop only through
//! `cx.drop` so every drop is counted with a reason.

use std::net::Ipv4Addr;

use podplane::buf::{Batch, BufPool, Owner, PortId};
use podplane::pipeline::{DropReason, Pipeline, PipelineConfig, TraceNote};
use podplane::stage::{ParseStage, XconnectStage};
use podplane::testutil;
use podplane::{Context, Instant, Stage};

/// Drops UDP to port 9. (A real policy stage gets its own `DropReason`; this example
/// borrows `no_xconnect` so that it needs no change to the library.)
struct NoDiscard;

impl Stage for NoDiscard {
    fn name(&self) -> &'static str {
        "no_discard"
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            let flow = cx.pool.meta(pkt).flow;
            if flow.proto == 17 && flow.dst_port == 9 {
                cx.trace_note(pkt, TraceNote::Value("udp to discard port", 9));
                cx.drop(batch, i, DropReason::NoXconnect);
            }
        }
    }
}

fn main() {
    let mut xconnect = XconnectStage::new();
    xconnect.connect(PortId(0), PortId(1)).expect("ports below 256");
    let mut pipeline = Pipeline::new(
        vec![Box::new(ParseStage::new()), Box::new(NoDiscard), Box::new(xconnect)],
        PipelineConfig::default(),
        7,
    );
    pipeline.trace_add(2);

    let mut pool = BufPool::with_slots(64).expect("pool");
    let mut batch = Batch::new();
    let (a, b) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 3));
    for frame in [testutil::udp4(a, b, 40000, 53, b"dns?"), testutil::udp4(a, b, 40001, 9, b"junk")] {
        let p = pool.alloc(Owner::Pipeline).expect("free slot");
        pool.set_data(p, &frame).expect("fits a slot");
        pool.meta_mut(p).in_port = PortId(0);
        batch.push(p).expect("batch has room");
    }

    let out = pipeline.process(&mut pool, Instant::from_nanos(1_000), &mut batch);
    let sent: Vec<_> = out.tx().collect();
    for (port, p) in &sent {
        println!("tx {port}: {}", podplane::wire::display::PrettyFrame(pool.data(*p)));
    }
    for (_, p) in sent {
        pool.free(p).expect("was allocated");
    }
    println!("\n{}", pipeline.counters().snapshot());
    println!("{}", pipeline.trace());
}
