//! IPv6 forwarding and neighbour discovery against Linux 6.18 as a router (captured
//! with AF_PACKET sockets in network namespaces: router `ra` 02:00:00:00:01:01 with
//! fd00:1::1/64, `rb` 02:00:00:00:02:01 with fd00:2::1/64 and MTU 1280, forwarding on;
//! sender fd00:1::2 at 02:00:00:00:00:0a). Errors are compared byte for byte but for
//! the flow label (Linux hashes one; podplane sends 0) and the checksum it changes.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(clippy::cast_possible_truncation, clippy::too_many_arguments)] // frame builders with small constants

use std::net::{Ipv4Addr, Ipv6Addr};

use podplane::Instant;
use podplane::buf::{BufPool, PortId};
use podplane::pipeline::{DropReason, Pipeline, StageEvent};
use podplane::stage::arp::nd;
use podplane::stage::route::{L3If, NextHop6, RouteSpec6};
use podplane::testutil::{self, CounterExpect, hex};
use podplane::wire::EthernetAddress;
use podplane::wire::checksum::pseudo_v6;

const A_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x0a]);
const R_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 1]);
const RB_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 2, 1]);
const B_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x0b]);

/// Time exceeded for a UDP packet (32 bytes of payload, hop limit 1, traffic class
/// 0xb8, flow label 0x12345) to fd00:2::2.
const LINUX_TIME_EXCEEDED: &str = "02000000000a02000000010186dd60019b7500583a40fd000001000000000000000000000001fd000001000000000000000000000002030062b0000000006b81234500281101fd000001000000000000000000000002fd0000020000000000000000000000029c40829a0028f5b9000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// No route to fd00:9::1.
const LINUX_NO_ROUTE: &str = "02000000000a02000000010186dd6004bf6300583a40fd000001000000000000000000000001fd00000100000000000000000000000201009337000000006000000000281140fd000001000000000000000000000002fd0000090000000000000000000000019c40829a0028f5b3000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// A prohibit route for fd00:7::/64.
const LINUX_PROHIBIT: &str = "02000000000a02000000010186dd6004f41a00583a40fd000001000000000000000000000001fd00000100000000000000000000000201019336000000006000000000281140fd000001000000000000000000000002fd0000070000000000000000000000019c40829a0028f5b5000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn router(mtu_b: u16) -> Pipeline {
    let ifs = vec![
        L3If::routed(PortId(0), R_MAC, Ipv4Addr::new(10, 98, 0, 1), 24, 1500).with_ip6(a6("fd00:1::1"), 64),
        L3If::routed(PortId(1), RB_MAC, Ipv4Addr::new(10, 97, 0, 1), 24, mtu_b).with_ip6(a6("fd00:2::1"), 64),
    ];
    let routes6 = vec![
        RouteSpec6 { dst: a6("fd00:8::"), len: 64, next_hop: NextHop6::Unreachable },
        RouteSpec6 { dst: a6("fd00:7::"), len: 64, next_hop: NextHop6::Prohibit },
        RouteSpec6 { dst: a6("fd00:6::"), len: 64, next_hop: NextHop6::Blackhole },
        RouteSpec6 { dst: a6("fd00:5::"), len: 64, next_hop: NextHop6::Via(a6("fe80::b"), PortId(1)) },
    ];
    testutil::routed_pipeline(ifs, vec![], routes6, 9)
}

/// An Ethernet + IPv6 + UDP frame from `src` (at `eth_src`) to `dst` with `n` bytes
/// 0, 1, 2... of payload, as the capture script sent.
fn udp6(
    eth_dst: EthernetAddress,
    eth_src: EthernetAddress,
    src: &str,
    dst: &str,
    n: usize,
    hop: u8,
    tc: u8,
    fl: u32,
) -> Vec<u8> {
    let (s, d) = (a6(src), a6(dst));
    let body: Vec<u8> = (0..n).map(|i| (i % 256) as u8).collect();
    let ulen = 8 + n;
    let mut u = vec![0x9c, 0x40, 0x82, 0x9a];
    u.extend_from_slice(&(ulen as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(&body);
    let mut ph = Vec::new();
    ph.extend_from_slice(&s.octets());
    ph.extend_from_slice(&d.octets());
    ph.extend_from_slice(&(ulen as u32).to_be_bytes());
    ph.extend_from_slice(&[0, 0, 0, 17]);
    ph.extend_from_slice(&u);
    let c = match podplane::wire::checksum::checksum(&ph) {
        0 => 0xffff,
        c => c,
    };
    u[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst.0);
    f.extend_from_slice(&eth_src.0);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&((6u32 << 28) | (u32::from(tc) << 20) | fl).to_be_bytes());
    f.extend_from_slice(&(ulen as u16).to_be_bytes());
    f.push(17);
    f.push(hop);
    f.extend_from_slice(&s.octets());
    f.extend_from_slice(&d.octets());
    f.extend_from_slice(&u);
    f
}

/// A multicast solicitation from `src` at `mac` for `target`.
fn ns_from(mac: EthernetAddress, src: &str, target: &str) -> Vec<u8> {
    let mut b = vec![0u8; nd::frame_len(true)];
    nd::write_solicit(&mut b, mac, a6(src), a6(target)).unwrap();
    b
}

/// The advertisement `who` at `mac` sends answering a solicitation, to `to` at `to_mac`.
fn na_from(mac: EthernetAddress, who: &str, to_mac: EthernetAddress, to: &str) -> Vec<u8> {
    let (group, _) = nd::solicited_node(a6(who));
    let ns = nd::NdMsg { kind: nd::NS, src: a6(to), dst: group, target: a6(who), lladdr: Some(to_mac), flags: 0 };
    let mut b = vec![0u8; nd::frame_len(true)];
    nd::write_advert(&mut b, &ns, mac, to_mac).unwrap();
    b
}

fn run(pl: &mut Pipeline, pool: &mut BufPool, frames: &[(u16, Vec<u8>)], secs: u64) -> Vec<(PortId, Vec<u8>)> {
    testutil::run(pl, pool, Instant::from_nanos(secs * 1_000_000_000), frames).tx
}

/// Linux's error with the flow label set to podplane's 0 and the checksum left alone
/// (no checksum covers the IPv6 header).
fn linux_with_flow_label_zero(s: &str) -> Vec<u8> {
    let mut f = hex(s);
    f[15] &= 0xf0;
    f[16] = 0;
    f[17] = 0;
    f
}

/// A router that has learned fd00:1::2 from its solicitation (the sender resolved its
/// gateway first, as it had before Linux answered it).
fn learned(mtu_b: u16) -> (Pipeline, BufPool) {
    let mut pl = router(mtu_b);
    let mut pool = BufPool::with_slots(64).unwrap();
    let r = run(&mut pl, &mut pool, &[(0, ns_from(A_MAC, "fd00:1::2", "fd00:1::1"))], 1);
    assert_eq!(r.len(), 1, "one advertisement: {r:?}");
    let want = hex(
        "02000000000a02000000010186dd6000000000203afffd000001000000000000000000000001fd00000100000000000000000000000288009b98e0000000fd0000010000000000000000000000010201020000000101",
    );
    assert_eq!(r[0], (PortId(0), want), "the advertisement Linux sends");
    (pl, pool)
}

#[test]
fn errors_match_linux_but_for_the_flow_label() {
    let (mut pl, mut pool) = learned(1280);
    let probe = udp6(R_MAC, A_MAC, "fd00:1::2", "fd00:2::2", 32, 1, 0xb8, 0x12345);
    let r = run(&mut pl, &mut pool, &[(0, probe)], 2);
    assert_eq!(r, vec![(PortId(0), linux_with_flow_label_zero(LINUX_TIME_EXCEEDED))]);
    let r = run(&mut pl, &mut pool, &[(0, udp6(R_MAC, A_MAC, "fd00:1::2", "fd00:9::1", 32, 64, 0, 0))], 3);
    assert_eq!(r, vec![(PortId(0), linux_with_flow_label_zero(LINUX_NO_ROUTE))]);
    let r = run(&mut pl, &mut pool, &[(0, udp6(R_MAC, A_MAC, "fd00:1::2", "fd00:7::1", 32, 64, 0, 0))], 4);
    assert_eq!(r, vec![(PortId(0), linux_with_flow_label_zero(LINUX_PROHIBIT))]);
    // An unreachable route answers as "no route" (Linux's ip6_pkt_discard), code 0.
    let r = run(&mut pl, &mut pool, &[(0, udp6(R_MAC, A_MAC, "fd00:1::2", "fd00:8::1", 32, 64, 0, 0))], 5);
    assert_eq!((r.len(), r[0].1[54], r[0].1[55]), (1, 1, 0));
    // Blackhole: silence.
    let r = run(&mut pl, &mut pool, &[(0, udp6(R_MAC, A_MAC, "fd00:1::2", "fd00:6::1", 32, 64, 0, 0))], 6);
    assert!(r.is_empty());
    let c = pl.counters();
    CounterExpect::new()
        .drop("route", DropReason::TtlExceeded, 1)
        .drop("route", DropReason::NoRoute, 1)
        .drop("route", DropReason::RouteProhibit, 1)
        .drop("route", DropReason::RouteUnreachable, 1)
        .drop("route", DropReason::RouteBlackhole, 1)
        .drop("arp", DropReason::NdProcessed, 1)
        .check(&c.snapshot());
    assert_eq!(c.events("route", StageEvent::IcmpErrorSent), 4);
    assert_eq!(c.events("arp", StageEvent::NdAdvertSent), 1);
    assert_eq!(c.events("arp", StageEvent::NeighLearned), 1);
}

#[test]
fn packet_too_big_quotes_up_to_1280_bytes() {
    let (mut pl, mut pool) = learned(1280);
    // 1348 bytes of IPv6 for a 1280-byte link: packet too big, MTU 1280, the error
    // itself 1280 bytes (Linux's capture: 1294 with Ethernet), never rate-limited.
    for t in 0..10 {
        let big = udp6(R_MAC, A_MAC, "fd00:1::2", "fd00:2::2", 1300, 64, 0xb8, 0x12345);
        let r = run(&mut pl, &mut pool, &[(0, big.clone())], 2 + t);
        assert_eq!(r.len(), 1, "round {t}");
        let e = &r[0].1;
        assert_eq!(e.len(), 1294);
        assert_eq!(&e[54..62], &[2, 0, e[56], e[57], 0, 0, 5, 0], "type 2 code 0, MTU 1280");
        assert_eq!(&e[62..], &big[14..14 + 1232], "the quote");
        let mut ph = pseudo_v6(a6("fd00:1::1"), a6("fd00:1::2"), 58, 1240);
        ph.add_bytes(&e[54..]);
        assert_eq!(ph.fold(), 0xffff, "checksum");
    }
    assert_eq!(pl.counters().drops("route", DropReason::PacketTooBig), 10);
}

#[test]
fn forwarding_resolves_by_solicitation_and_decrements_the_hop_limit() {
    let (mut pl, mut pool) = learned(1500);
    let p = udp6(R_MAC, A_MAC, "fd00:1::2", "fd00:2::2", 32, 64, 0, 0);
    // Unknown next hop: a solicitation to its solicited-node group, the packet held.
    let r = run(&mut pl, &mut pool, &[(0, p.clone())], 2);
    let mut want = vec![0u8; nd::frame_len(true)];
    nd::write_solicit(&mut want, RB_MAC, a6("fd00:2::1"), a6("fd00:2::2")).unwrap();
    assert_eq!(r, vec![(PortId(1), want.clone())]);
    assert_eq!(&want[..6], &[0x33, 0x33, 0xff, 0, 0, 2]);
    // B answers; the held packet leaves with hop limit 63 and B's MAC.
    let r = run(&mut pl, &mut pool, &[(1, na_from(B_MAC, "fd00:2::2", RB_MAC, "fd00:2::1"))], 2);
    let mut fwd = p.clone();
    fwd[..6].copy_from_slice(&B_MAC.0);
    fwd[6..12].copy_from_slice(&RB_MAC.0);
    fwd[21] = 63;
    assert_eq!(r, vec![(PortId(1), fwd.clone())]);
    // Now known: straight through.
    let r = run(&mut pl, &mut pool, &[(0, p)], 3);
    assert_eq!(r, vec![(PortId(1), fwd)]);
    // Via a link-local gateway: solicited from the interface's link-local address.
    let r = run(&mut pl, &mut pool, &[(0, udp6(R_MAC, A_MAC, "fd00:1::2", "fd00:5::9", 8, 64, 0, 0))], 3);
    assert_eq!(r.len(), 1);
    assert_eq!(&r[0].1[22..38], &podplane::stage::route::link_local(RB_MAC).octets());
    assert_eq!(&r[0].1[62..78], &a6("fe80::b").octets(), "target");
}

#[test]
fn scope_and_source_rules() {
    let (mut pl, mut pool) = learned(1500);
    // A link-local source is never forwarded: beyond scope (code 2), back to the sender
    // on its link. Like Linux, the node first solicits it, from its own link-local
    // address (byte for byte the solicitation Linux sent in the same place).
    let r = run(&mut pl, &mut pool, &[(0, udp6(R_MAC, A_MAC, "fe80::a", "fd00:2::2", 8, 64, 0, 0))], 2);
    let linux_ns = "3333ff00000a02000000010186dd6000000000203afffe80000000000000000000fffe000101ff0200000000000000000001ff00000a8700798700000000fe80000000000000000000000000000a0101020000000101";
    assert_eq!(r, vec![(PortId(0), hex(linux_ns))]);
    let r = run(&mut pl, &mut pool, &[(0, na_from(A_MAC, "fe80::a", R_MAC, "fe80::ff:fe00:101"))], 2);
    assert_eq!(r.len(), 1, "{r:?}");
    let e = &r[0].1;
    assert_eq!((&e[..6], e[54], e[55]), (&A_MAC.0[..], 1, 2), "to fe80::a, beyond scope");
    assert_eq!(&e[22..38], &a6("fe80::ff:fe00:101").octets(), "from the interface's link-local address");
    // Multicast source: dropped without an error.
    let r = run(&mut pl, &mut pool, &[(0, udp6(R_MAC, A_MAC, "ff02::1", "fd00:2::2", 8, 64, 0, 0))], 3);
    assert!(r.is_empty());
    // No error about an ICMPv6 error: a time exceeded with hop limit 1 is just dropped.
    let mut te = hex(LINUX_TIME_EXCEEDED);
    te[..6].copy_from_slice(&R_MAC.0);
    te[6..12].copy_from_slice(&A_MAC.0);
    te[18..22].copy_from_slice(&[0, 0x58, 0x3a, 1]);
    te[22..38].copy_from_slice(&a6("fd00:1::2").octets());
    te[38..54].copy_from_slice(&a6("fd00:2::2").octets());
    let r = run(&mut pl, &mut pool, &[(0, te)], 4);
    assert!(r.is_empty(), "{r:?}");
    let c = pl.counters();
    assert_eq!(c.drops("route", DropReason::BeyondScope), 1);
    assert_eq!(c.drops("route", DropReason::Ipv6BadSource), 1);
    assert_eq!(c.events("route", StageEvent::IcmpErrorSuppressed), 1);
    // A solicitation for an address the node does not have.
    let r = run(&mut pl, &mut pool, &[(0, ns_from(A_MAC, "fd00:1::2", "fd00:1::77"))], 5);
    assert!(r.is_empty());
    assert_eq!(pl.counters().drops("arp", DropReason::NdNotForUs), 1);
    // Its link-local address is answered too.
    let r = run(&mut pl, &mut pool, &[(0, ns_from(A_MAC, "fd00:1::2", "fe80::ff:fe00:101"))], 5);
    assert_eq!(r.len(), 1);
    assert_eq!(&r[0].1[22..38], &a6("fe80::ff:fe00:101").octets());
}

mod ecmp6 {
    use super::*;
    use podplane::stage::RouteStage;
    use podplane::stage::route::RouteConfig;
    use podplane::wire::flow::FlowKey;

    fn stage(paths: u16) -> RouteStage {
        let group = (0..paths).map(|k| (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x100 + k), PortId(1))).collect();
        RouteStage::new(&RouteConfig {
            routes6: vec![RouteSpec6 { dst: a6("fd00:b::"), len: 48, next_hop: NextHop6::Multipath(0) }],
            multipath6: vec![group],
            ..RouteConfig::default()
        })
    }

    fn flows() -> Vec<FlowKey> {
        (0..2000u128)
            .map(|k| {
                FlowKey::v6(
                    Ipv6Addr::from((0xfd00_000a_u128 << 96) + k),
                    a6("fd00:b::1"),
                    6,
                    30000 + (k % 1000) as u16,
                    443,
                )
            })
            .collect()
    }

    #[test]
    fn both_directions_agree_spread_and_adding_a_path_moves_few() {
        let (four, five) = (stage(4), stage(5));
        let mut per_path = [0u32; 4];
        let mut moved = 0;
        for f in flows() {
            let a = four.pick_path6(0, &f, false).unwrap();
            assert_eq!(a, four.pick_path6(0, &f.reversed(), false).unwrap(), "{f}");
            per_path[usize::from(a.0.segments()[7] - 0x100)] += 1;
            let b = five.pick_path6(0, &f, false).unwrap();
            if a != b {
                assert_eq!(b.0.segments()[7], 0x104, "a flow moved between old paths");
                moved += 1;
            }
        }
        for n in per_path {
            assert!((400..=600).contains(&n), "uneven spread {per_path:?}");
        }
        assert!((300..=500).contains(&moved), "{moved} of 2000 moved");
        assert_eq!(four.lookup6(a6("fd00:b::9")), Some((48, NextHop6::Multipath(0))));
    }
}
