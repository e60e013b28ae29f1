//! Instruction-count harness: pushes batches of frames through one configuration of
//! the dataplane so that `callgrind.sh` can turn callgrind's instruction totals into
//! instructions per packet.
//!
//! `icount <mode> <batches> [--batch N] [--mix udp64|mixed]`
//!
//! Every mode does the same driver work per batch (take slots, copy the frames in,
//! free what comes out); the modes differ only in what runs in between:
//! - `baseline`: nothing (the driver work alone);
//! - `parse_one`: the parse stage's per-packet function, called directly;
//! - `xconnect`: a pipeline with only the `xconnect` stage;
//! - `parse_xconnect`: a pipeline with `parse` then `xconnect`.
//!
//! So `parse_xconnect - xconnect` is the parse stage inside a pipeline, and
//! `parse_one - baseline` is its per-packet function alone. The script runs each mode
//! at two batch counts and divides the difference, which cancels start-up costs.

use std::process::ExitCode;

use podplane::buf::{Batch, BufPool, Owner, PortId};
use podplane::pipeline::{Pipeline, PipelineConfig, Stage};
use podplane::stage::parse::parse_one;
use podplane::stage::{ParseStage, XconnectStage};
use podplane::wire::ChecksumPolicy;
use podplane_sim::traffic::{Mix, Traffic};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: icount <baseline|parse_one|xconnect|parse_xconnect> <batches> [--batch N] [--mix udp64|mixed]";
    let (Some(mode), Some(batches)) = (args.get(1), args.get(2).and_then(|s| s.parse::<usize>().ok())) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let mut batch_size = 32usize;
    let mut mix = Mix::Udp64;
    let mut i = 3;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1).map(String::as_str)) {
            ("--batch", Some(n)) => batch_size = n.parse().unwrap_or(32).clamp(1, 256),
            ("--mix", Some("mixed")) => mix = Mix::Mixed,
            ("--mix", Some("udp64")) => mix = Mix::Udp64,
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
        i += 2;
    }

    // 64 different batches of frames, reused round-robin: warm tables, varied flows.
    let mut traffic = Traffic::new(1, mix);
    let frames: Vec<Vec<u8>> = (0..64 * batch_size).map(|_| traffic.next_frame()).collect();
    let mut pool = BufPool::with_slots(4 * 256).expect("pool");
    let mut xconnect = XconnectStage::new();
    xconnect.connect(PortId(0), PortId(1)).expect("ports");
    let stages: Vec<Box<dyn Stage>> = match mode.as_str() {
        "xconnect" => vec![Box::new(xconnect)],
        "parse_xconnect" => vec![Box::new(ParseStage::new()), Box::new(xconnect)],
        "baseline" | "parse_one" => vec![],
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let use_pipeline = !stages.is_empty();
    let mut pipeline = Pipeline::new(stages, PipelineConfig::default(), 1);
    let policy = ChecksumPolicy::default();
    let mut batch = Batch::new();
    let mut out_pkts = Vec::with_capacity(1024);
    let mut sink = 0u64;

    for b in 0..batches {
        batch.clear();
        let base = (b % 64) * batch_size;
        for f in &frames[base..base + batch_size] {
            let Some(p) = pool.alloc(Owner::Pipeline) else { break };
            let _ = pool.set_data(p, f);
            pool.meta_mut(p).in_port = PortId(0);
            let _ = batch.push(p);
        }
        out_pkts.clear();
        if use_pipeline {
            let out = pipeline.process(&mut pool, podplane::Instant::from_nanos(b as u64), &mut batch);
            out_pkts.extend(out.tx().map(|(_, p)| p));
            out_pkts.extend_from_slice(out.host());
        } else {
            for k in 0..batch.len() {
                let p = batch.pkt(k);
                if mode == "parse_one" {
                    let (slot, meta) = pool.slot_and_meta_mut(p);
                    sink += u64::from(parse_one(slot, meta, policy).is_ok());
                }
                out_pkts.push(p);
            }
        }
        for &p in &out_pkts {
            let _ = pool.free(p);
        }
    }
    let snap = pipeline.counters().snapshot();
    println!(
        "mode={mode} batches={batches} batch={batch_size} rx={} tx={} dropped={} ok={sink}",
        snap.totals.rx, snap.totals.tx, snap.totals.dropped
    );
    ExitCode::SUCCESS
}
