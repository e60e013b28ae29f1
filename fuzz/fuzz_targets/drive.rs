//! The fuzz targets' driver: records of [len_hi, len_lo, port, time_step, bytes[len]...]
//! fed in batches of up to 16 through a pipeline. Nothing may panic; at every batch
//! boundary the accounting identity holds and every slot is either free or held by a
//! stage (`held - released`) once the output is freed.

use podplane::buf::{Batch, BufPool, Owner, PortId};
use podplane::pipeline::Pipeline;
use podplane::{Duration, Instant};

/// Run `data` through `pl`, frames arriving on ports `0..ports`.
pub fn drive(pl: &mut Pipeline, data: &[u8], ports: u8) {
    let Ok(mut pool) = BufPool::with_slots(512) else { return };
    let mut batch = Batch::new();
    let mut rest = data;
    let mut t = Instant::from_nanos(1);
    while !rest.is_empty() {
        batch.clear();
        while batch.len() < 16 {
            let [hi, lo, port, step, tail @ ..] = rest else {
                rest = &[];
                break;
            };
            let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
            let (frame, next) = tail.split_at(len);
            rest = next;
            t = t + Duration::from_millis(u64::from(*step) * 10);
            let Some(p) = pool.alloc(Owner::Pipeline) else { break };
            if pool.set_data(p, frame).is_err() {
                let _ = pool.free(p);
                continue;
            }
            pool.meta_mut(p).in_port = PortId(u16::from(*port % ports.max(1)));
            let _ = batch.push(p);
        }
        let out = pl.process(&mut pool, t, &mut batch);
        let sent: Vec<_> = out.tx().map(|(_, p)| p).chain(out.host().iter().copied()).collect();
        for p in sent {
            assert!(pool.free(p).is_ok(), "an output packet was already free");
        }
        let snap = pl.counters().snapshot();
        assert!(snap.balanced(), "accounting identity broken:\n{snap}");
        let held_now = snap.totals.held - snap.totals.released;
        assert_eq!((pool.capacity() - pool.available()) as u64, held_now, "slots in use != packets held:\n{snap}");
    }
}
