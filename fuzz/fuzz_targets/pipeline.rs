//! Arbitrary frames through a node pipeline (parse + xconnect), in batches: nothing
//! panics, the accounting identity holds at every batch boundary, every slot comes
//! back to the pool, and nothing is dropped without a counted reason.
//!
//! Input format: a sequence of [len_hi, len_lo, port, bytes[len]...] records (lengths
//! cut to what is left), so the fuzzer controls frame boundaries and ingress ports.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podplane::Instant;
use podplane::buf::{Batch, BufPool, Owner, PortId};
use podplane::pipeline::{Pipeline, PipelineConfig};
use podplane::stage::{ParseStage, XconnectStage};

fuzz_target!(|data: &[u8]| {
    let mut x = XconnectStage::new();
    let _ = x.connect(PortId(0), PortId(1));
    let mut pl = Pipeline::new(vec![Box::new(ParseStage::new()), Box::new(x)], PipelineConfig::default(), 1);
    pl.trace_add(4);
    let Ok(mut pool) = BufPool::with_slots(64) else { return };
    let mut batch = Batch::new();
    let mut rest = data;
    let mut t = 0u64;
    while !rest.is_empty() {
        batch.clear();
        while batch.len() < 16 {
            let [hi, lo, port, tail @ ..] = rest else {
                rest = &[];
                break;
            };
            let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
            let (frame, next) = tail.split_at(len);
            rest = next;
            let Some(p) = pool.alloc(Owner::Pipeline) else { break };
            if pool.set_data(p, frame).is_err() {
                let _ = pool.free(p);
                continue;
            }
            pool.meta_mut(p).in_port = PortId(u16::from(*port % 3));
            let _ = batch.push(p);
        }
        t += 1000;
        let out = pl.process(&mut pool, Instant::from_nanos(t), &mut batch);
        let sent: Vec<_> = out.tx().map(|(_, p)| p).chain(out.host().iter().copied()).collect();
        for p in sent {
            assert!(pool.free(p).is_ok(), "an output packet was already free");
        }
        let snap = pl.counters().snapshot();
        assert!(snap.balanced(), "accounting identity broken:\n{snap}");
        assert_eq!(pool.available(), pool.capacity(), "a slot leaked");
    }
    let _ = pl.trace().to_string();
});
