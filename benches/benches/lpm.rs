//! LPM lookup time with 1M routes: the per-length hash tables (`Lpm`) against the same
//! with a /16 directory in front (`Lpm4`, what the route stage uses). Destinations are
//! random in the routed space.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use podplane::table::lpm::{Key, Lpm, Lpm4};
use std::hint::black_box;

fn routes() -> Vec<(u32, u8, u32)> {
    let mut x: u64 = 0x1234_5678;
    let mut v = Vec::with_capacity(1_000_000);
    while v.len() < 1_000_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let len = 16 + u8::try_from((x >> 59) % 17).unwrap_or(0);
        let addr = u32::try_from((x >> 16) & 0xffff_ffff).unwrap_or(0).mask(len);
        v.push((addr, len, u32::try_from(v.len() % 64).unwrap_or(0)));
    }
    v
}

fn bench(c: &mut Criterion) {
    let rs = routes();
    let mut plain: Lpm<u32, u32> = Lpm::new();
    let mut dir: Lpm4<u32> = Lpm4::new();
    for (a, l, v) in &rs {
        plain.insert(*a, *l, *v);
        dir.insert(*a, *l, *v);
    }
    plain.insert(0, 0, 99);
    dir.insert(0, 0, 99);
    let mut x: u64 = 7;
    let dsts: Vec<u32> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            u32::try_from(x >> 32).unwrap_or(0)
        })
        .collect();
    let mut g = c.benchmark_group("lpm_1m_routes");
    g.throughput(Throughput::Elements(dsts.len() as u64));
    g.bench_function("per_length_tables", |b| {
        b.iter(|| dsts.iter().map(|d| plain.lookup(black_box(*d)).map_or(0, |v| v.1)).sum::<u32>())
    });
    g.bench_function("dir16_per_length_tables", |b| {
        b.iter(|| dsts.iter().map(|d| dir.lookup(black_box(*d)).map_or(0, |v| v.1)).sum::<u32>())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
