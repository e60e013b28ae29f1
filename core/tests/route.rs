//! The route stage and neighbour resolution against Linux: the ICMP time-exceeded a
//! Linux router sends (captured in network namespaces) is reproduced byte for byte
//! but for the IP ID and the checksum that covers it; unreachable kinds, fragmentation
//! needed, TTL decrement with a valid checksum, RFC 1812's no-error rules, and ARP
//! resolution with held packets.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::Instant;
use podplane::buf::{Batch, BufPool, PortId};
use podplane::pipeline::{DropReason, Pipeline, StageEvent};
use podplane::stage::RouteStage;
use podplane::stage::route::{L3If, NextHop, RouteConfig, RouteSpec};
use podplane::testutil::{self, CounterExpect, hex};
use podplane::wire::EthernetAddress;
use podplane::wire::ipv4::Ipv4Packet;

/// Linux 6.18 as a router (10.98.0.1 on `ra` 82:63:5c:2e:8e:95, forwarding to
/// 10.97.0.0/24) answering a UDP packet with TTL 1 and TOS 0x10 from 10.98.0.2
/// (82:61:cf:15:26:10): ICMP time exceeded, captured with an AF_PACKET socket on the
/// sender's veth. TOS 0xd0, ID 0xa282, DF clear, TTL 64, the whole packet quoted.
const LINUX_TIME_EXCEEDED: &str = "8261cf15261082635c2e8e95080045d00046a28200004001c29e0a6200010a6200020b00baa3000000004510002a44554000011120980a6200020a610002af17829a001614ee68656c6c6f2d706f64706c616e65";

const R_MAC: EthernetAddress = EthernetAddress([0x82, 0x63, 0x5c, 0x2e, 0x8e, 0x95]);
const A_MAC: EthernetAddress = EthernetAddress([0x82, 0x61, 0xcf, 0x15, 0x26, 0x10]);
const RB_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x97, 0x01]);

fn router(routes: Vec<RouteSpec>, mtu_b: u16) -> Pipeline {
    let ifs = vec![
        L3If::routed(PortId(0), R_MAC, Ipv4Addr::new(10, 98, 0, 1), 24, 1500),
        L3If::routed(PortId(1), RB_MAC, Ipv4Addr::new(10, 97, 0, 1), 24, mtu_b),
    ];
    testutil::routed_pipeline(ifs, routes, vec![], 9)
}

/// The packet Linux was sent: UDP 10.98.0.2:44823 -> 10.97.0.2:33434, TTL 1, TOS 0x10.
fn linux_probe() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&R_MAC.0);
    f.extend_from_slice(&A_MAC.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&hex(LINUX_TIME_EXCEEDED)[14 + 20 + 8..]);
    f
}

fn arp_from_a(target: Ipv4Addr) -> Vec<u8> {
    let mut f = testutil::arp_request(Ipv4Addr::new(10, 98, 0, 2), target);
    f[6..12].copy_from_slice(&A_MAC.0);
    f[14 + 8..14 + 14].copy_from_slice(&A_MAC.0);
    f
}

fn run(pl: &mut Pipeline, pool: &mut BufPool, frames: &[(u16, Vec<u8>)]) -> Vec<(PortId, Vec<u8>)> {
    run_at(pl, pool, frames, 1)
}

fn run_at(pl: &mut Pipeline, pool: &mut BufPool, frames: &[(u16, Vec<u8>)], secs: u64) -> Vec<(PortId, Vec<u8>)> {
    testutil::run(pl, pool, Instant::from_nanos(secs * 1_000_000_000), frames).tx
}

#[test]
fn time_exceeded_matches_linux_but_for_the_ip_id() {
    let mut pl = router(vec![], 1500);
    let mut pool = BufPool::with_slots(64).unwrap();
    // A resolved its gateway first, as it had before Linux answered it.
    let r = run(&mut pl, &mut pool, &[(0, arp_from_a(Ipv4Addr::new(10, 98, 0, 1)))]);
    assert_eq!(r.len(), 1, "ARP reply");
    let probe = linux_probe();
    assert_eq!(&probe[14..][..20], &hex(LINUX_TIME_EXCEEDED)[42..62], "probe rebuilt from the quote");
    let r = run(&mut pl, &mut pool, &[(0, probe)]);
    assert_eq!(r.len(), 1);
    let (port, ours) = &r[0];
    assert_eq!(*port, PortId(0));
    let mut want = hex(LINUX_TIME_EXCEEDED);
    assert_eq!(ours.len(), want.len());
    let mut got = ours.clone();
    // The IP ID is Linux's own counter; the header checksum covers it.
    for b in [&mut got, &mut want] {
        b[18..20].fill(0);
        b[24..26].fill(0);
    }
    assert_eq!(got, want);
    assert!(Ipv4Packet::new_checked(&ours[14..]).unwrap().verify_checksum());
    let c = pl.counters();
    assert_eq!(c.events("route", StageEvent::IcmpErrorSent), 1);
    CounterExpect::new().drop("route", DropReason::TtlExceeded, 1).check(&c.snapshot());
}

fn udp_to(dst: Ipv4Addr, ttl: u8, len: usize, df: bool) -> Vec<u8> {
    let mut f = testutil::udp4(Ipv4Addr::new(10, 98, 0, 2), dst, 4000, 53, &vec![7; len]);
    f[..6].copy_from_slice(&R_MAC.0);
    f[6..12].copy_from_slice(&A_MAC.0);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_ttl(ttl);
    ip.set_flags_offset(df, false, 0);
    ip.fill_checksum();
    f
}

fn icmp_of(frame: &[u8]) -> (u8, u8, [u8; 4]) {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    let p = ip.payload();
    (p[0], p[1], [p[4], p[5], p[6], p[7]])
}

#[test]
fn unreachable_kinds_and_fragmentation_needed() {
    let routes = vec![
        RouteSpec { dst: Ipv4Addr::new(10, 1, 0, 0), len: 16, next_hop: NextHop::Unreachable },
        RouteSpec { dst: Ipv4Addr::new(10, 2, 0, 0), len: 16, next_hop: NextHop::Prohibit },
        RouteSpec { dst: Ipv4Addr::new(10, 3, 0, 0), len: 16, next_hop: NextHop::Blackhole },
    ];
    let mut pl = router(routes, 1400);
    let mut pool = BufPool::with_slots(64).unwrap();
    run(&mut pl, &mut pool, &[(0, arp_from_a(Ipv4Addr::new(10, 98, 0, 1)))]);
    let r = run(
        &mut pl,
        &mut pool,
        &[
            (0, udp_to(Ipv4Addr::new(8, 8, 8, 8), 64, 10, true)),
            (0, udp_to(Ipv4Addr::new(10, 1, 2, 3), 64, 10, true)),
            (0, udp_to(Ipv4Addr::new(10, 2, 2, 3), 64, 10, true)),
            (0, udp_to(Ipv4Addr::new(10, 3, 2, 3), 64, 10, true)),
            (0, udp_to(Ipv4Addr::new(10, 97, 0, 2), 64, 1400, true)),
        ],
    );
    let kinds: Vec<_> = r.iter().map(|(_, f)| icmp_of(f)).collect();
    // net unreachable, host unreachable, admin prohibited, frag needed with MTU 1400.
    assert_eq!(kinds, vec![(3, 0, [0; 4]), (3, 1, [0; 4]), (3, 13, [0; 4]), (3, 4, [0, 0, 0x05, 0x78])]);
    CounterExpect::new()
        .drop("route", DropReason::NoRoute, 1)
        .drop("route", DropReason::RouteUnreachable, 1)
        .drop("route", DropReason::RouteProhibit, 1)
        .drop("route", DropReason::RouteBlackhole, 1)
        .drop("route", DropReason::FragNeeded, 1)
        .check(&pl.counters().snapshot());
}

#[test]
fn forwarding_resolves_the_next_hop_holds_then_decrements_ttl() {
    let mut pl = router(vec![], 1500);
    let mut pool = BufPool::with_slots(64).unwrap();
    let pkt = udp_to(Ipv4Addr::new(10, 97, 0, 2), 64, 10, true);
    // First packet: the next hop is unknown: an ARP request goes out of port 1, the
    // packet waits.
    let r = run(&mut pl, &mut pool, &[(0, pkt.clone())]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, PortId(1));
    assert_eq!(&r[0].1[..6], &[0xff; 6]);
    assert_eq!(&r[0].1[12..14], &[0x08, 0x06]);
    assert_eq!(&r[0].1[14 + 24..14 + 28], &[10, 97, 0, 2], "asks for the next hop");
    assert_eq!(&r[0].1[14 + 14..14 + 18], &[10, 97, 0, 1], "from the egress interface's address");
    assert_eq!(pool.available(), pool.capacity() - 1, "the packet is held");
    // B answers; the held packet goes out with B's MAC and TTL 63.
    let b_mac = [0x02, 0, 0, 0, 0x97, 0x02];
    let r = run(&mut pl, &mut pool, &[(1, b_reply())]);
    assert_eq!(r.len(), 1);
    let (port, out) = &r[0];
    assert_eq!(*port, PortId(1));
    assert_eq!(&out[..6], &b_mac);
    assert_eq!(&out[6..12], &RB_MAC.0);
    let ip = Ipv4Packet::new_checked(&out[14..]).unwrap();
    assert_eq!(ip.ttl(), 63);
    assert!(ip.verify_checksum());
    assert_eq!(&out[14 + 20..], &pkt[14 + 20..], "payload untouched");
    let c = pl.counters();
    assert_eq!(c.events("arp", StageEvent::ArpRequestSent), 1);
    assert_eq!(c.events("arp", StageEvent::NeighLearned), 1);
    let snap = c.snapshot();
    assert_eq!((snap.totals.held, snap.totals.released), (1, 1));
    CounterExpect::new().drop("arp", DropReason::ArpProcessed, 1).check(&snap);
}

/// The queue of packets waiting for one unresolved next hop is bounded
/// (`QUEUE_LEN`); the rest are counted drops, and the answer releases the held ones
/// in the order they came.
#[test]
fn a_full_neighbour_queue_counts_its_drops_and_releases_in_order() {
    use podplane::stage::arp::QUEUE_LEN;
    let mut pl = router(vec![], 1500);
    let mut pool = BufPool::with_slots(256).unwrap();
    let n = QUEUE_LEN + 3;
    let pkts: Vec<(u16, Vec<u8>)> = (0..n)
        .map(|k| {
            let mut p = udp_to(Ipv4Addr::new(10, 97, 0, 2), 64, 10, true);
            p[14 + 28] = u8::try_from(k).unwrap(); // the first payload byte numbers it
            (0, p)
        })
        .collect();
    let r = run(&mut pl, &mut pool, &pkts);
    assert_eq!(r.len(), 1, "one ARP request, nothing else");
    assert_eq!(pl.counters().drops("arp", DropReason::NeighQueueFull), 3);
    let r = run(&mut pl, &mut pool, &[(1, b_reply())]);
    let order: Vec<u8> = r.iter().map(|(_, f)| f[14 + 28]).collect();
    assert_eq!(order, (0..u8::try_from(QUEUE_LEN).unwrap()).collect::<Vec<_>>());
    let snap = pl.counters().snapshot();
    assert_eq!((snap.totals.held, snap.totals.released), (QUEUE_LEN as u64, QUEUE_LEN as u64));
    CounterExpect::new()
        .drop("arp", DropReason::NeighQueueFull, 3)
        .drop("arp", DropReason::ArpProcessed, 1)
        .check(&snap);
    assert_eq!(pool.available(), pool.capacity());
}

#[test]
fn no_icmp_error_about_an_icmp_error_and_local_goes_to_host() {
    let mut pl = router(vec![], 1500);
    let mut pool = BufPool::with_slots(64).unwrap();
    // An ICMP time exceeded (an error) with TTL 1 through the router: dropped, no reply.
    let mut err = hex(LINUX_TIME_EXCEEDED);
    err[..6].copy_from_slice(&R_MAC.0);
    err[6..12].copy_from_slice(&A_MAC.0);
    err[14 + 16..14 + 20].copy_from_slice(&[10, 97, 0, 2]);
    err[14 + 8] = 1;
    Ipv4Packet::new_unchecked(&mut err[14..]).fill_checksum();
    let to_me = udp_to(Ipv4Addr::new(10, 98, 0, 1), 64, 4, true);
    let mut batch = Batch::new();
    testutil::load(&mut pool, &mut batch, PortId(0), &[err, to_me]);
    let out = pl.process(&mut pool, Instant::from_nanos(5), &mut batch);
    assert_eq!(out.tx().len(), 0);
    assert_eq!(out.host().len(), 1);
    assert_eq!(pl.counters().events("route", StageEvent::IcmpErrorSuppressed), 1);
    CounterExpect::new().drop("route", DropReason::TtlExceeded, 1).check(&pl.counters().snapshot());
}

mod ecmp {
    use super::*;
    use podplane::wire::flow::FlowKey;

    fn stage(paths: usize) -> RouteStage {
        let group =
            (0..paths).map(|k| (Ipv4Addr::new(192, 168, 0, 100 + u8::try_from(k).unwrap()), PortId(1))).collect();
        RouteStage::new(&RouteConfig {
            interfaces: vec![],
            routes: vec![RouteSpec { dst: Ipv4Addr::new(10, 0, 0, 0), len: 8, next_hop: NextHop::Multipath(0) }],
            multipath: vec![group],
            routes6: vec![],
            multipath6: vec![],
        })
    }

    fn flows() -> Vec<FlowKey> {
        (0..2000u32)
            .map(|k| {
                FlowKey::v4(
                    Ipv4Addr::from(0x0a00_0000 + k),
                    Ipv4Addr::new(10, 200, 0, 1),
                    6,
                    30000 + (k % 1000) as u16,
                    443,
                )
            })
            .collect()
    }

    #[test]
    fn both_directions_agree_and_load_spreads() {
        let s = stage(4);
        let mut per_path = [0u32; 4];
        for f in flows() {
            let a = s.pick_path(0, &f, false).unwrap();
            assert_eq!(a, s.pick_path(0, &f.reversed(), false).unwrap(), "{f}");
            per_path[usize::from(a.0.octets()[3] - 100)] += 1;
        }
        for n in per_path {
            assert!((400..=600).contains(&n), "uneven spread {per_path:?}");
        }
    }

    #[test]
    fn adding_a_path_moves_only_flows_to_it() {
        let (four, five) = (stage(4), stage(5));
        let mut moved = 0;
        for f in flows() {
            let (a, b) = (four.pick_path(0, &f, false).unwrap(), five.pick_path(0, &f, false).unwrap());
            if a != b {
                assert_eq!(b.0, Ipv4Addr::new(192, 168, 0, 104), "a flow moved between old paths");
                moved += 1;
            }
        }
        // About a fifth of the flows move to the new path.
        assert!((300..=500).contains(&moved), "{moved} of 2000 moved");
    }

    #[test]
    fn fragments_ignore_ports() {
        let s = stage(8);
        let f = FlowKey::v4(Ipv4Addr::new(10, 1, 1, 1), Ipv4Addr::new(10, 2, 2, 2), 17, 5000, 53);
        let mut no_ports = f;
        no_ports.src_port = 0;
        no_ports.dst_port = 0;
        assert_eq!(s.pick_path(0, &f, true), s.pick_path(0, &no_ports, true));
    }
}

fn b_reply() -> Vec<u8> {
    let b_mac = [0x02, 0, 0, 0, 0x97, 0x02];
    let mut reply = testutil::arp_request(Ipv4Addr::new(10, 97, 0, 2), Ipv4Addr::new(10, 97, 0, 1));
    reply[..6].copy_from_slice(&RB_MAC.0);
    reply[6..12].copy_from_slice(&b_mac);
    reply[21] = 2;
    reply[14 + 8..14 + 14].copy_from_slice(&b_mac);
    reply
}

#[test]
fn without_df_packets_are_fragmented_as_linux_does() {
    let mut pl = router(vec![], 576);
    let mut pool = BufPool::with_slots(64).unwrap();
    run(&mut pl, &mut pool, &[(1, b_reply())]);
    let pkt = udp_to(Ipv4Addr::new(10, 97, 0, 2), 64, 1400, false);
    let orig = Ipv4Packet::new_checked(&pkt[14..]).unwrap();
    let (orig_id, orig_payload) = (orig.ident(), orig.payload().to_vec());
    let r = run(&mut pl, &mut pool, &[(0, pkt.clone())]);
    // 1408 bytes of IP payload (8 UDP + 1400): 552 + 552 + 304.
    assert_eq!(r.len(), 3);
    let mut reassembled = vec![0u8; orig_payload.len()];
    for (k, (port, f)) in r.iter().enumerate() {
        assert_eq!(*port, PortId(1));
        assert_eq!(&f[..6], &[0x02, 0, 0, 0, 0x97, 0x02]);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum(), "fragment {k}");
        assert!(ip.total_len() <= 576, "fragment {k} too big");
        assert_eq!(ip.ident(), orig_id);
        assert_eq!(ip.ttl(), 63);
        assert!(!ip.dont_frag());
        assert_eq!(ip.more_frags(), k < 2, "fragment {k}");
        let off = usize::from(ip.frag_offset());
        assert_eq!(off, [0, 552, 1104][k]);
        reassembled[off..off + ip.payload().len()].copy_from_slice(ip.payload());
    }
    assert_eq!(reassembled, orig_payload, "fragments reassemble to the packet");
    let snap = pl.counters().snapshot();
    assert_eq!(snap.totals.generated, 2);
    CounterExpect::new().drop("arp", DropReason::ArpProcessed, 1).check(&snap);
}

#[test]
fn icmp_errors_are_limited_per_destination_like_linux() {
    let mut pl = router(vec![], 1500);
    let mut pool = BufPool::with_slots(128).unwrap();
    run(&mut pl, &mut pool, &[(0, arp_from_a(Ipv4Addr::new(10, 98, 0, 1)))]);
    let expired = || udp_to(Ipv4Addr::new(10, 97, 0, 2), 1, 10, true);
    // Ten at once from one source: a burst of 6 answered, 4 suppressed.
    let frames: Vec<_> = (0..10).map(|_| (0u16, expired())).collect();
    let r = run(&mut pl, &mut pool, &frames);
    assert_eq!(r.len(), 6);
    let c = pl.counters();
    assert_eq!(c.events("route", StageEvent::IcmpErrorSuppressed), 4);
    // The same instant again: nothing left for this destination.
    let r = run(&mut pl, &mut pool, &[(0, expired())]);
    assert_eq!(r.len(), 0);
}

#[test]
fn a_stale_neighbour_is_re_asked_and_a_new_mac_found() {
    let mut pl = router(vec![], 1500);
    let mut pool = BufPool::with_slots(64).unwrap();
    run_at(&mut pl, &mut pool, &[(1, b_reply())], 1);
    let to_b = || (0u16, udp_to(Ipv4Addr::new(10, 97, 0, 2), 64, 10, true));
    let is_arp = |f: &Vec<u8>| f[12..14] == [0x08, 0x06];
    // Fresh: forwarded, no ARP.
    let r = run_at(&mut pl, &mut pool, &[to_b()], 10);
    assert_eq!(r.len(), 1);
    assert!(!is_arp(&r[0].1));
    // Stale after 30 s: still forwarded to the old MAC, and asked again, once a second.
    for t in [40, 41, 42] {
        let r = run_at(&mut pl, &mut pool, &[to_b()], t);
        assert_eq!(r.len(), 2, "t={t}");
        assert!(is_arp(&r[0].1) && !is_arp(&r[1].1), "t={t}: an ARP request and the packet");
        assert_eq!(&r[1].1[..6], &[0x02, 0, 0, 0, 0x97, 0x02]);
    }
    // Three unanswered: the entry goes; the packet waits and a new request goes out.
    let r = run_at(&mut pl, &mut pool, &[to_b()], 43);
    assert_eq!(r.len(), 1);
    assert!(is_arp(&r[0].1));
    // B was re-created with a new MAC and answers: the waiting packet goes to it.
    let mut reply = b_reply();
    let new_mac = [0x02, 0, 0, 0, 0x97, 0x99];
    reply[6..12].copy_from_slice(&new_mac);
    reply[14 + 8..14 + 14].copy_from_slice(&new_mac);
    let r = run_at(&mut pl, &mut pool, &[(1, reply)], 43);
    assert_eq!(r.len(), 1);
    assert_eq!(&r[0].1[..6], &new_mac);
}

#[test]
fn a_gratuitous_arp_redirects_packets_at_once() {
    let mut pl = router(vec![], 1500);
    let mut pool = BufPool::with_slots(64).unwrap();
    run_at(&mut pl, &mut pool, &[(1, b_reply())], 1);
    let to_b = || (0u16, udp_to(Ipv4Addr::new(10, 97, 0, 2), 64, 10, true));
    // Two batches to B: the second is rewritten from the remembered header.
    for _ in 0..2 {
        let r = run_at(&mut pl, &mut pool, &[to_b(), to_b()], 2);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|(_, f)| f[..12] == [0x02, 0, 0, 0, 0x97, 0x02, 0x02, 0, 0, 0, 0x97, 0x01]));
    }
    // B announces a new MAC (a gratuitous ARP reply): the next packet goes there.
    let mut garp = b_reply();
    let new_mac = [0x02, 0, 0, 0, 0x97, 0x77];
    garp[6..12].copy_from_slice(&new_mac);
    garp[14 + 8..14 + 14].copy_from_slice(&new_mac);
    run_at(&mut pl, &mut pool, &[(1, garp)], 3);
    let r = run_at(&mut pl, &mut pool, &[to_b()], 3);
    assert_eq!(r.len(), 1);
    assert_eq!(&r[0].1[..6], &new_mac);
}

/// Linux 6.18 forwarding a 1400-byte UDP datagram (DF clear, TTL 64, 10.98.0.2 ->
/// 10.97.0.2) out of a 576-byte-MTU veth: the three fragments as captured on the
/// receiver with an AF_PACKET socket, one hex frame per line.
const LINUX_FRAGMENTS: &str = include_str!("data/linux_fragments.hex");

#[test]
fn fragments_are_byte_identical_to_linux() {
    let linux: Vec<Vec<u8>> = LINUX_FRAGMENTS.lines().map(hex).collect();
    assert_eq!(linux.len(), 3);
    // Rebuild the datagram Linux received: the first fragment's header with the whole
    // length, no MF, TTL 64, and the three payloads in order.
    let mut ip = linux[0][14..34].to_vec();
    let mut payload = Vec::new();
    for f in &linux {
        payload.extend_from_slice(&f[34..]);
    }
    ip[2..4].copy_from_slice(&u16::try_from(20 + payload.len()).unwrap().to_be_bytes());
    ip[6] = 0;
    ip[7] = 0;
    ip[8] = 64;
    let mut frame = Vec::new();
    frame.extend_from_slice(&R_MAC.0);
    frame.extend_from_slice(&A_MAC.0);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&payload);
    Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();

    let mut pl = router(vec![], 576);
    let mut pool = BufPool::with_slots(64).unwrap();
    run(&mut pl, &mut pool, &[(1, b_reply())]);
    let r = run(&mut pl, &mut pool, &[(0, frame)]);
    let ours: Vec<Vec<u8>> = r.into_iter().map(|(_, f)| f).collect();
    assert_eq!(ours, linux, "fragments differ from Linux's");
}

/// The neighbour stage remembers the last next hop it resolved; an ARP update for that
/// neighbour must take effect for the very next packet, in the same batch or the next.
#[test]
fn a_changed_neighbour_mac_is_used_at_once() {
    let mut pl = router(vec![], 1500);
    let mut pool = BufPool::with_slots(64).unwrap();
    run(&mut pl, &mut pool, &[(1, b_reply())]);
    let pkt = udp_to(Ipv4Addr::new(10, 97, 0, 2), 64, 20, false);
    let r = run(&mut pl, &mut pool, &[(0, pkt.clone()), (0, pkt.clone())]);
    assert!(r.iter().all(|(_, f)| f[..6] == [0x02, 0, 0, 0, 0x97, 0x02]), "{r:?}");
    // B moves to a new MAC and says so (a gratuitous reply), between two packets.
    let new_mac = [0x02, 0, 0, 0, 0x97, 0x99];
    let mut moved = b_reply();
    moved[6..12].copy_from_slice(&new_mac);
    moved[14 + 8..14 + 14].copy_from_slice(&new_mac);
    let r = run(&mut pl, &mut pool, &[(0, pkt.clone()), (1, moved), (0, pkt)]);
    let macs: Vec<_> = r.iter().map(|(_, f)| f[..6].to_vec()).collect();
    assert_eq!(macs, vec![vec![0x02, 0, 0, 0, 0x97, 0x02], new_mac.to_vec()]);
}
