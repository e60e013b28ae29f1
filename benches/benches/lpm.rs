//! LPM lookup time with 1M routes, for the structure choice the route stage rests on:
//! the per-length hash tables (`Lpm`), the same with a /16 directory of lengths in
//! front (`Lpm4`, the first FIB), and the poptrie (`Poptrie4`, the FIB now). Two
//! tables: 1M random prefixes of lengths 16..=32 (no shared paths: the worst case for
//! a trie) and 1M prefixes shaped like an Internet BGP table. Destinations are random
//! over the whole address space, and random inside the routes for the BGP table.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use podplane::table::lpm::{Key, Lpm, Lpm4, Lpm6};
use podplane::table::poptrie::Poptrie4;
use podplane_benches::{bgp_like_routes_1m, lcg, random_routes_1m, random_routes6_100k};
use std::hint::black_box;

fn bench_table(c: &mut Criterion, name: &str, routes: &[(u32, u8)], inside: bool) {
    let mut plain: Lpm<u32, u32> = Lpm::new();
    let mut dir: Lpm4<u32> = Lpm4::new();
    let mut pop: Poptrie4<u32> = Poptrie4::new();
    for (i, (a, l)) in routes.iter().enumerate() {
        let v = u32::try_from(i % 64).unwrap_or(0);
        plain.insert(a.mask(*l), *l, v);
        dir.insert(*a, *l, v);
        pop.insert(*a, *l, v);
    }
    plain.insert(0, 0, 99);
    dir.insert(0, 0, 99);
    pop.insert(0, 0, 99);
    let mut x: u64 = 7;
    let dsts: Vec<u32> = (0..4096)
        .map(|_| {
            let r = u32::try_from(lcg(&mut x) >> 32).unwrap_or(0);
            match routes.get(usize::try_from(lcg(&mut x) % routes.len() as u64).unwrap_or(0)) {
                Some((a, l)) if inside => a.mask(*l) | (r >> l.min(&31)),
                _ => r,
            }
        })
        .collect();
    for d in &dsts {
        assert_eq!(pop.lookup(*d), dir.lookup(*d), "{d:#x}");
    }
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(dsts.len() as u64));
    g.bench_function("per_length_tables", |b| {
        b.iter(|| dsts.iter().map(|d| plain.lookup(black_box(*d)).map_or(0, |v| v.1)).sum::<u32>())
    });
    g.bench_function("dir16_per_length_tables", |b| {
        b.iter(|| dsts.iter().map(|d| dir.lookup(black_box(*d)).map_or(0, |v| v.1)).sum::<u32>())
    });
    g.bench_function("poptrie", |b| {
        b.iter(|| dsts.iter().map(|d| pop.lookup(black_box(*d)).map_or(0, |v| v.1)).sum::<u32>())
    });
    g.finish();
}

/// IPv6, 100k routes: per-length tables against the same behind a /32 directory
/// (`Lpm6`, the route stage's IPv6 FIB); destinations inside the routes' /32s.
fn bench_v6(c: &mut Criterion) {
    let routes = random_routes6_100k();
    let mut plain: Lpm<u128, u32> = Lpm::new();
    let mut dir: Lpm6<u32> = Lpm6::new();
    for (i, (a, l)) in routes.iter().enumerate() {
        let v = u32::try_from(i % 64).unwrap_or(0);
        plain.insert(a.mask(*l), *l, v);
        dir.insert(*a, *l, v);
    }
    plain.insert(0, 0, 99);
    dir.insert(0, 0, 99);
    let mut x: u64 = 11;
    let dsts: Vec<u128> = (0..4096)
        .map(|_| {
            let (a, _) =
                routes.get(usize::try_from(lcg(&mut x) % routes.len() as u64).unwrap_or(0)).copied().unwrap_or((0, 0));
            (a & !(u128::MAX >> 32)) | u128::from(lcg(&mut x))
        })
        .collect();
    for d in &dsts {
        assert_eq!(plain.lookup(*d), dir.lookup(*d));
    }
    let mut g = c.benchmark_group("lpm6_100k_routes");
    g.throughput(Throughput::Elements(dsts.len() as u64));
    g.bench_function("per_length_tables", |b| {
        b.iter(|| dsts.iter().map(|d| plain.lookup(black_box(*d)).map_or(0, |v| v.1)).sum::<u32>())
    });
    g.bench_function("dir32_per_length_tables", |b| {
        b.iter(|| dsts.iter().map(|d| dir.lookup(black_box(*d)).map_or(0, |v| v.1)).sum::<u32>())
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    bench_table(c, "lpm_1m_random_routes", &random_routes_1m(), false);
    bench_table(c, "lpm_1m_bgp_like_routes", &bgp_like_routes_1m(), true);
    bench_v6(c);
}

criterion_group!(benches, bench);
criterion_main!(benches);
