//! Checksum costs: a 20-byte IPv4 header, a 1500-byte payload, and the RFC 1624
//! incremental update a NAT rewrite or TTL decrement uses instead.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use podplane::wire::checksum::{checksum, update16, update32};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let hdr = [0x45u8, 0, 0, 0x54, 0x3a, 0x5c, 0x40, 0, 0x40, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    let payload = vec![0xa5u8; 1500];
    let mut g = c.benchmark_group("checksum");
    g.throughput(Throughput::Bytes(20));
    g.bench_function("ipv4_header_20B", |b| b.iter(|| checksum(black_box(&hdr))));
    g.throughput(Throughput::Bytes(1500));
    g.bench_function("payload_1500B", |b| b.iter(|| checksum(black_box(&payload))));
    g.throughput(Throughput::Elements(1));
    g.bench_function("incremental_addr_and_port", |b| {
        b.iter(|| update16(update32(black_box(0x1234), black_box(0x0a00_0001), 0x0a60_000a), black_box(40000), 80))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
