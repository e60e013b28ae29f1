//! Route tables the benches share: the same million routes for the criterion lookup
//! bench, the callgrind harness and the memory report.

/// One step of the benches' linear congruential generator.
pub fn lcg(x: &mut u64) -> u64 {
    *x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *x
}

/// One million IPv4 prefixes, lengths 16..=32 uniformly, anywhere in the address
/// space (the worst case for a trie: nothing shares a path), as (address, length).
pub fn random_routes_1m() -> Vec<(u32, u8)> {
    let mut x: u64 = 0x1234_5678;
    let mut v = Vec::with_capacity(1_000_000);
    while v.len() < 1_000_000 {
        lcg(&mut x);
        let len = 16 + u8::try_from((x >> 59) % 17).unwrap_or(0);
        let addr = u32::try_from((x >> 16) & 0xffff_ffff).unwrap_or(0);
        v.push((addr, len));
    }
    v
}

/// One million IPv4 prefixes shaped like an Internet routing table: lengths in the
/// proportions of a 2024 full BGP table (/24 about 60 %, /22 11 %, /23 9 %, /21 5 %,
/// /20 3.5 %, /16..=/19 6 %, /8..=/15 under 1 %, longer than /24 rare), inside 200
/// allocated /8s, with more-specifics clustered under a set of covering blocks (an
/// ISP's /16 or /20 split into /24s) rather than uniformly spread.
pub fn bgp_like_routes_1m() -> Vec<(u32, u8)> {
    // Cumulative per-mille of lengths 8..=32.
    const LEN_PERMILLE: [(u8, u32); 17] = [
        (8, 1),
        (12, 3),
        (14, 5),
        (15, 7),
        (16, 20),
        (17, 28),
        (18, 41),
        (19, 66),
        (20, 101),
        (21, 146),
        (22, 256),
        (23, 346),
        (24, 994),
        (25, 996),
        (26, 998),
        (28, 999),
        (32, 1000),
    ];
    let mut x: u64 = 0xb6b6_1234;
    // 20,000 covering blocks (a /12..=/20 each) in the allocated /8s 1..=223 minus a few.
    let blocks: Vec<(u32, u8)> = (0..20_000)
        .map(|_| {
            let top = 1 + u32::try_from(lcg(&mut x) % 223).unwrap_or(1);
            let len = 12 + u8::try_from(lcg(&mut x) % 9).unwrap_or(0);
            let a = (top << 24) | (u32::try_from(lcg(&mut x) >> 40).unwrap_or(0) & 0x00ff_ffff);
            (a & (u32::MAX << (32 - u32::from(len))), len)
        })
        .collect();
    let mut v = Vec::with_capacity(1_000_000);
    while v.len() < 1_000_000 {
        let r = u32::try_from(lcg(&mut x) % 1000).unwrap_or(0);
        let len = LEN_PERMILLE.iter().find(|(_, c)| r < *c).map_or(24, |(l, _)| *l);
        let (base, blen) = blocks.get(usize::try_from(lcg(&mut x) % 20_000).unwrap_or(0)).copied().unwrap_or((0, 8));
        let addr = if len > blen {
            base | (u32::try_from(lcg(&mut x) >> 32).unwrap_or(0) >> blen)
        } else {
            u32::try_from(lcg(&mut x) >> 32).unwrap_or(0)
        };
        v.push((addr, len));
    }
    v
}

/// 100,000 IPv6 prefixes of lengths 32..=64 (allocations to subnets) in 2000::/4.
pub fn random_routes6_100k() -> Vec<(u128, u8)> {
    let mut x: u64 = 0x5eed;
    (0..100_000)
        .map(|_| {
            let len = 32 + u8::try_from(lcg(&mut x) % 33).unwrap_or(0);
            ((0x2u128 << 124) | (u128::from(lcg(&mut x)) << 60 >> 4), len)
        })
        .collect()
}
