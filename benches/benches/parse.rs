//! Parse cost on a 64-byte Ethernet/IPv4/UDP frame: podplane's views and parse stage
//! against etherparse's per-layer slices and `SlicedPacket` (the comparison behind
//! the "why our own views" note in `core/src/wire/mod.rs`), plus the whole pipeline
//! at batch 32.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use podplane::buf::{Batch, BufPool, Owner, PortId};
use podplane::pipeline::{Pipeline, PipelineConfig};
use podplane::stage::parse::parse_one;
use podplane::stage::{ParseStage, XconnectStage};
use podplane::testutil;
use podplane::wire::ipv4::Ipv4Packet;
use podplane::wire::udp::UdpPacket;
use podplane::wire::{ChecksumPolicy, EthernetFrame};
use std::hint::black_box;

fn frame() -> Vec<u8> {
    let f = testutil::udp4_sized(64);
    assert_eq!(f.len(), 64);
    f
}

fn views(c: &mut Criterion) {
    let f = frame();
    let mut g = c.benchmark_group("parse_64B_udp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("podplane_views", |b| {
        b.iter(|| {
            let e = EthernetFrame::new_checked(black_box(&f[..])).unwrap();
            let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
            let ok = ip.verify_checksum();
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            (ok, u.src_port(), u.dst_port(), ip.src_addr(), ip.dst_addr())
        })
    });
    g.bench_function("etherparse_slices", |b| {
        b.iter(|| {
            let e = etherparse::Ethernet2HeaderSlice::from_slice(black_box(&f[..])).unwrap();
            let ip = etherparse::Ipv4HeaderSlice::from_slice(&f[e.slice().len()..]).unwrap();
            // etherparse does not verify the header checksum itself: compute it.
            let ok = ip.to_header().calc_header_checksum() == ip.header_checksum();
            let u = etherparse::UdpHeaderSlice::from_slice(&f[14 + ip.slice().len()..]).unwrap();
            (ok, u.source_port(), u.destination_port(), ip.source_addr(), ip.destination_addr())
        })
    });
    g.bench_function("etherparse_sliced_packet", |b| {
        b.iter(|| etherparse::SlicedPacket::from_ethernet(black_box(&f[..])).map(|p| p.transport.is_some()).unwrap())
    });
    let mut pool = BufPool::with_slots(1).unwrap();
    let p = pool.alloc(Owner::Pipeline).unwrap();
    pool.set_data(p, &f).unwrap();
    g.bench_function("podplane_parse_one", |b| {
        b.iter(|| {
            let (slot, meta) = pool.slot_and_meta_mut(p);
            parse_one(black_box(slot), meta, ChecksumPolicy::default())
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let f = frame();
    let mut g = c.benchmark_group("pipeline_batch32_64B_udp");
    g.throughput(Throughput::Elements(32));
    let mut x = XconnectStage::new();
    x.connect(PortId(0), PortId(1)).unwrap();
    let mut pl = Pipeline::new(vec![Box::new(ParseStage::new()), Box::new(x)], PipelineConfig::default(), 1);
    let mut pool = BufPool::with_slots(64).unwrap();
    let mut batch = Batch::new();
    let pkts: Vec<_> = (0..32)
        .map(|_| {
            let p = pool.alloc(Owner::Pipeline).unwrap();
            pool.set_data(p, &f).unwrap();
            pool.meta_mut(p).in_port = PortId(0);
            p
        })
        .collect();
    g.bench_function("parse_xconnect", |b| {
        b.iter(|| {
            batch.clear();
            for &p in &pkts {
                batch.push(p).unwrap();
            }
            pl.process(&mut pool, podplane::Instant::ZERO, &mut batch).tx().len()
        })
    });
    g.finish();
}

criterion_group!(benches, views, pipeline);
criterion_main!(benches);
