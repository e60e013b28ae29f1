//! A SYN flood of 1,000,000 new flows against a full conntrack table does not evict
//! one established connection (the counters prove it): early drop takes only
//! connections that are not assured (half-open ones, the flood's own), as the
//! kernel's `early_drop()` does, and refuses the rest (`ct_table_full`).

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::buf::{Batch, BufPool, Owner, PortId};
use podplane::pipeline::{DropReason, Pipeline, PipelineConfig, Stage, StageEvent};
use podplane::stage::conntrack::{CommitStage, Conntrack, ConntrackStage, CtConfig, SharedConntrack};
use podplane::stage::{ParseStage, XconnectStage};
use podplane::testutil::tcp4_seq;
use podplane::wire::tcp::TcpFlags;
use podplane::{Duration, Instant};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const CAPACITY: usize = 4096;

fn node() -> (Pipeline, SharedConntrack) {
    let ct = Conntrack::shared(CtConfig { capacity: CAPACITY, ..CtConfig::default() });
    let mut x = XconnectStage::new();
    x.connect(PortId(0), PortId(1)).unwrap();
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(ParseStage::new()),
        Box::new(ConntrackStage::new(ct.clone())),
        Box::new(CommitStage::new(ct.clone())),
        Box::new(x),
    ];
    (Pipeline::new(stages, PipelineConfig::default(), 1), ct)
}

/// Run frames (port, bytes) in batches of 256 at `now`; returns how many left.
fn send(pl: &mut Pipeline, pool: &mut BufPool, now: Instant, frames: &[(u16, Vec<u8>)]) -> usize {
    let mut sent = 0;
    for chunk in frames.chunks(256) {
        let mut batch = Batch::new();
        for (port, f) in chunk {
            let p = pool.alloc(Owner::Pipeline).unwrap();
            pool.set_data(p, f).unwrap();
            pool.meta_mut(p).in_port = PortId(*port);
            batch.push(p).unwrap();
        }
        let out: Vec<_> = pl.process(pool, now, &mut batch).tx().map(|(_, p)| p).collect();
        sent += out.len();
        for p in out {
            pool.free(p).unwrap();
        }
    }
    sent
}

fn client(i: usize) -> (Ipv4Addr, u16) {
    let i = u32::try_from(i).unwrap();
    (Ipv4Addr::from(0x0af4_0000 | (i >> 8)), 10_000 + u16::try_from(i & 0xff).unwrap())
}

#[test]
fn a_million_syns_against_a_full_table_evict_no_established_connection() {
    let (mut pl, ct) = node();
    let mut pool = BufPool::with_slots(512).unwrap();
    let t0 = Instant::ZERO + Duration::from_secs(1);
    // Half the table: established connections (three-way handshakes, assured).
    let est = CAPACITY / 2;
    let server = (SERVER, 80);
    let mut hs = Vec::new();
    for i in 0..est {
        hs.push((0, tcp4_seq(client(i), server, TcpFlags::SYN, 1000, 0, b"")));
    }
    assert_eq!(send(&mut pl, &mut pool, t0, &hs), est);
    let synacks: Vec<_> =
        (0..est).map(|i| (1, tcp4_seq(server, client(i), TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b""))).collect();
    assert_eq!(send(&mut pl, &mut pool, t0, &synacks), est);
    let acks: Vec<_> = (0..est).map(|i| (0, tcp4_seq(client(i), server, TcpFlags::ACK, 1001, 5001, b""))).collect();
    assert_eq!(send(&mut pl, &mut pool, t0, &acks), est);
    // The flood: 1,000,000 SYNs from addresses never seen, in batches of 256.
    let mut flooded = 0usize;
    let mut passed = 0usize;
    while flooded < 1_000_000 {
        let n = (1_000_000 - flooded).min(4096);
        let syns: Vec<_> = (flooded..flooded + n)
            .map(|k| {
                let src = (Ipv4Addr::from(0xc000_0000 | u32::try_from(k).unwrap()), 40_000);
                (0, tcp4_seq(src, server, TcpFlags::SYN, 7, 0, b""))
            })
            .collect();
        passed += send(&mut pl, &mut pool, t0 + Duration::from_millis(1), &syns);
        flooded += n;
    }
    let c = pl.counters();
    let (early, full) = (c.events("ct_commit", StageEvent::CtEarlyDrop), c.drops("ct_commit", DropReason::CtTableFull));
    println!("flood: {passed} SYNs admitted, {early} early drops, {full} refused as ct_table_full");
    // Every SYN either took the place of a connection that is not assured or was
    // refused; the table stayed full; no established connection went.
    assert_eq!(u64::try_from(passed).unwrap(), c.events("ct_commit", StageEvent::CtNew) - u64::try_from(est).unwrap());
    // The first SYNs took the free half; each later one evicted an unassured entry.
    let free = u64::try_from(CAPACITY - est).unwrap();
    assert_eq!(early + free, u64::try_from(passed).unwrap(), "each admitted SYN past the free slots evicted one");
    assert_eq!(full + u64::try_from(passed).unwrap(), 1_000_000, "the others were refused, counted");
    assert!(early > 900_000, "the flood mostly replaces its own half-open entries: {early}");
    let guard = ct.lock().unwrap();
    assert_eq!(guard.len().0, CAPACITY);
    let listed = guard.list(t0);
    let alive = listed.iter().filter(|l| l.state == "ESTABLISHED").count();
    assert_eq!(alive, est, "every established connection survived");
    drop(guard);
    // And each still carries traffic.
    let data: Vec<_> = (0..est).map(|i| (0, tcp4_seq(client(i), server, TcpFlags::ACK, 1001, 5001, b""))).collect();
    assert_eq!(send(&mut pl, &mut pool, t0 + Duration::from_millis(2), &data), est);
}
