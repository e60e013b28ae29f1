//! The pipeline's contract: final packets skip later stages, undecided packets are
//! counted `no_disposition`, generated packets run after the batch from the stage they
//! ask for, output is grouped by port in arrival order, and the accounting identity
//! `rx + generated + released = tx + host + dropped + held` holds.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::buf::{Batch, BufPool, PortId};
use podplane::pipeline::{Disposition, DropReason, Pipeline, PipelineConfig, Stage};
use podplane::testutil::{self, CounterExpect};
use podplane::{Context, Instant};

/// Sends packets whose UDP destination port is even to port (dport % 3), odd ones to
/// the host; every packet with destination port 7 makes the stage generate a copy that
/// enters at the next stage.
struct Steer {
    seen: usize,
}

impl Stage for Steer {
    fn name(&self) -> &'static str {
        "steer"
    }
    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            self.seen += 1;
            let pkt = batch.pkt(i);
            let dport = cx.pool.meta(pkt).flow.dst_port;
            if dport == 7 {
                if let Some(copy) = cx.alloc() {
                    let data = cx.pool.data(pkt).to_vec();
                    cx.pool.set_data(copy, &data).unwrap();
                    let at = cx.stage_index() + 1;
                    cx.inject(copy, at);
                }
                cx.drop(batch, i, DropReason::NoDisposition);
            } else if dport == 9 {
                // left undecided on purpose
            } else if dport.is_multiple_of(2) {
                batch.transmit(i, PortId(dport % 3));
            } else {
                batch.deliver_host(i);
            }
        }
    }
}

/// Transmits everything on port 5 (for the generated copies).
struct Last;
impl Stage for Last {
    fn name(&self) -> &'static str {
        "last"
    }
    fn process(&mut self, _cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if batch.is_live(i) {
                batch.transmit(i, PortId(5));
            }
        }
    }
}

fn frame(dport: u16) -> Vec<u8> {
    testutil::udp4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 1000, dport, b"")
}

#[test]
fn dispositions_output_and_accounting() {
    let mut pool = BufPool::with_slots(32).unwrap();
    let mut batch = Batch::new();
    let frames: Vec<Vec<u8>> = [4, 2, 3, 6, 7, 9, 8].iter().map(|&p| frame(p)).collect();
    let pkts = testutil::load(&mut pool, &mut batch, PortId(0), &frames);
    let mut pl = Pipeline::new(
        vec![Box::new(podplane::stage::ParseStage::new()), Box::new(Steer { seen: 0 }), Box::new(Last)],
        PipelineConfig::default(),
        7,
    );
    let out = pl.process(&mut pool, Instant::from_nanos(42), &mut batch);
    // Grouped by port, arrival order within a port: 6 -> port0; 4 -> port1; 2, 8 -> port2;
    // the generated copy of dport 7 -> port5; dport 9 was transmitted by `last` on port5 first.
    let tx: Vec<(PortId, usize)> =
        out.tx().map(|(port, p)| (port, pkts.iter().position(|q| *q == p).unwrap_or(99))).collect();
    assert_eq!(
        tx,
        vec![(PortId(0), 3), (PortId(1), 0), (PortId(2), 1), (PortId(2), 6), (PortId(5), 5), (PortId(5), 99)]
    );
    assert_eq!(out.host(), &[pkts[2]]);
    assert_eq!(pool.meta(pkts[2]).timestamp, Instant::from_nanos(42), "stamped with the batch time");
    assert_eq!(batch.disposition(4), Disposition::Drop(DropReason::NoDisposition));
    let snap = pl.counters().snapshot();
    assert_eq!(snap.totals.rx, 7);
    assert_eq!(snap.totals.generated, 1);
    assert_eq!(snap.totals.tx, 6);
    assert_eq!(snap.totals.host, 1);
    CounterExpect::new().drop("steer", DropReason::NoDisposition, 1).check(&snap);
    // 7 received + 1 generated - 1 dropped (freed) = 7 slots with the driver.
    assert_eq!(pool.available(), 32 - 7);
}

#[test]
fn undecided_after_last_stage_is_counted_and_freed() {
    let mut pool = BufPool::with_slots(4).unwrap();
    let mut batch = Batch::new();
    testutil::load(&mut pool, &mut batch, PortId(0), &[frame(9)]);
    let mut pl = Pipeline::new(
        vec![Box::new(podplane::stage::ParseStage::new()), Box::new(Steer { seen: 0 })],
        PipelineConfig::default(),
        7,
    );
    pl.process(&mut pool, Instant::ZERO, &mut batch);
    CounterExpect::new().drop("pipeline", DropReason::NoDisposition, 1).check(&pl.counters().snapshot());
    assert_eq!(pool.available(), 4);
}

/// Generates a packet for every packet it sees, entering at itself: a loop the
/// pipeline must cut after MAX_ROUNDS.
struct Echo;
impl Stage for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if batch.is_live(i) {
                if let Some(p) = cx.alloc() {
                    cx.pool.set_data(p, &[0u8; 20]).unwrap();
                    let here = cx.stage_index();
                    cx.inject(p, here);
                }
                batch.deliver_host(i);
            }
        }
    }
}

#[test]
fn generation_loops_are_cut_and_counted() {
    let mut pool = BufPool::with_slots(16).unwrap();
    let mut batch = Batch::new();
    testutil::load(&mut pool, &mut batch, PortId(0), &[frame(1)]);
    let mut pl = Pipeline::new(vec![Box::new(Echo)], PipelineConfig::default(), 7);
    let out = pl.process(&mut pool, Instant::ZERO, &mut batch);
    assert_eq!(out.host().len(), 1 + podplane::pipeline::MAX_ROUNDS);
    let snap = pl.counters().snapshot();
    assert_eq!(snap.totals.generated, 1 + podplane::pipeline::MAX_ROUNDS as u64);
    CounterExpect::new().drop("pipeline", DropReason::GenerateLoop, 1).check(&snap);
}

#[test]
fn pool_exhaustion_while_generating_is_a_counted_drop() {
    let mut pool = BufPool::with_slots(1).unwrap();
    let mut batch = Batch::new();
    testutil::load(&mut pool, &mut batch, PortId(0), &[frame(1)]);
    let mut pl = Pipeline::new(vec![Box::new(Echo)], PipelineConfig::default(), 7);
    pl.process(&mut pool, Instant::ZERO, &mut batch);
    CounterExpect::new().drop("echo", DropReason::PoolExhausted, 1).check(&pl.counters().snapshot());
    assert_eq!(pool.exhausted(), 1);
}
