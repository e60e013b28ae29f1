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

/// `n` ClusterIP services (UDP 53, DNS-like), ClusterIPs
/// 10.96.0.0 + k (the whole /12 holds a million), each with `per` endpoints in
/// 10.244.0.0/16 on port 5353: the service table of the scale benches.
pub fn service_ports(n: usize, per: usize) -> Vec<podplane::stage::lb::ServicePort> {
    use podplane::stage::lb::{Backend, Scheduler, ServicePort};
    use std::net::{IpAddr, Ipv4Addr};
    (0..n)
        .map(|k| {
            let k32 = u32::try_from(k).unwrap_or(0);
            let cluster = (0..per)
                .map(|e| {
                    let e32 = u32::try_from(e).unwrap_or(0);
                    let a = u32::from(Ipv4Addr::new(10, 244, 0, 0)) + ((k32.wrapping_mul(7) + e32 * 131) & 0xffff);
                    Backend { addr: IpAddr::V4(Ipv4Addr::from(a)), port: 5353, weight: 1 }
                })
                .collect();
            ServicePort {
                name: format!("bench/svc-{k}:dns"),
                proto: 17,
                cluster_ip: Some(IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + k32))),
                port: 53,
                node_port: 0,
                external_ips: vec![],
                cluster,
                local: vec![],
                has_endpoints: per > 0,
                internal_local: false,
                external_local: false,
                scheduler: Scheduler::Random,
                affinity: None,
                lb_ips: vec![],
                source_ranges: vec![],
            }
        })
        .collect()
}

/// The service table the scale benches build: `service_ports(n, per)` in a table
/// for a node whose service CIDR is 10.96.0.0/12 and pod range 10.244.0.0/16.
pub fn service_table(ports: &[podplane::stage::lb::ServicePort]) -> podplane::stage::lb::ServiceTable {
    use podplane::stage::lb::{LbSettings, Prefix, ServiceTable};
    use std::net::{IpAddr, Ipv4Addr};
    let mut t = ServiceTable::new(LbSettings {
        service_cidrs: vec![Prefix { addr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 0)), len: 12 }],
        node_port_addrs: vec![],
        cluster_cidrs: vec![Prefix { addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), len: 8 }],
        node_addrs: vec![],
        affinity_max: 65536,
    });
    for p in ports {
        let _ = t.upsert(p.clone());
    }
    t
}
