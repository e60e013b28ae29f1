//! The overlay stages: VXLAN and IP-in-IP encapsulation with exact outer headers,
//! decapsulation back to the original frame (proptest over random frames), and the
//! counted drops for bad input.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::buf::{Batch, BufPool, PktFlags, PortId};
use podplane::pipeline::{Context, DropReason, Pipeline, PipelineConfig, Stage, StageEvent};
use podplane::stage::overlay::{DecapStage, Encap, EncapStage, OverlayConfig, OverlayPeer};
use podplane::stage::{EgressStage, ParseStage};
use podplane::testutil::{Run, run, udp4};
use podplane::wire::EthernetAddress;
use podplane::wire::ipv4::Ipv4Packet;
use proptest::prelude::*;

const UPLINK: PortId = PortId(0);
const TUNNEL: PortId = PortId(9);
const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 12);
const VTEP_A: EthernetAddress = EthernetAddress([0x36, 0xaa, 0, 0, 0, 0x0a]);
const VTEP_B: EthernetAddress = EthernetAddress([0x36, 0xbb, 0, 0, 0, 0x0b]);
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

/// Stands in for the route stage: every IPv4 packet routed to the tunnel, next hop B.
#[derive(Debug)]
struct ToTunnel(Ipv4Addr);

impl Stage for ToTunnel {
    fn name(&self) -> &'static str {
        "route"
    }
    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if batch.is_live(i) {
                let m = cx.pool.meta_mut(batch.pkt(i));
                m.out_port = TUNNEL;
                m.next_hop = self.0;
                m.flags |= PktFlags::ROUTED;
            }
        }
    }
}

/// After decap: send what came out of the tunnel back out of the tunnel port.
#[derive(Debug)]
struct FromTunnel;

impl Stage for FromTunnel {
    fn name(&self) -> &'static str {
        "route"
    }
    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if batch.is_live(i) {
                let m = cx.pool.meta_mut(batch.pkt(i));
                if m.in_port == TUNNEL {
                    m.out_port = TUNNEL;
                }
            }
        }
    }
}

fn config(encap: Encap, local: Ipv4Addr, vtep: EthernetAddress, peer: (Ipv4Addr, EthernetAddress)) -> OverlayConfig {
    OverlayConfig {
        encap,
        tunnel_port: TUNNEL,
        vtep_mac: vtep,
        local_ip: local,
        local_ip6: None,
        uplinks: vec![UPLINK],
        ttl: 64,
        dont_fragment: false,
        peers: vec![OverlayPeer { node_ip: peer.0, underlay6: None, vtep_mac: peer.1, next_hop: peer.0, port: UPLINK }],
    }
}

const NODE_A6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0xff, 0, 0, 0, 0, 0, 0x11);
const NODE_B6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0xff, 0, 0, 0, 0, 0, 0x12);
/// The IPv4 key routes use for the peer over IPv6 (its pod network's .0).
const KEY_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 0);
const KEY_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 0);

/// VXLAN over an IPv6 underlay from `local6` to `peer6`, the peer known by `key`.
fn config6(
    local6: std::net::Ipv6Addr,
    vtep: EthernetAddress,
    key: Ipv4Addr,
    peer6: std::net::Ipv6Addr,
    peer_vtep: EthernetAddress,
) -> OverlayConfig {
    let mut c = config(Encap::flannel(), Ipv4Addr::UNSPECIFIED, vtep, (key, peer_vtep));
    c.local_ip6 = Some(local6);
    if let Some(p) = c.peers.first_mut() {
        p.underlay6 = Some((peer6, peer6));
    }
    c
}

fn pipeline(stages: Vec<Box<dyn Stage>>) -> Pipeline {
    Pipeline::new(stages, PipelineConfig::default(), 7)
}

fn sender6() -> Pipeline {
    let cfg = config6(NODE_A6, VTEP_A, KEY_B, NODE_B6, VTEP_B);
    pipeline(vec![
        Box::new(ParseStage::new()),
        Box::new(ToTunnel(KEY_B)),
        Box::new(EncapStage::new(cfg)),
        Box::new(EgressStage),
    ])
}

fn receiver6() -> Pipeline {
    let cfg = config6(NODE_B6, VTEP_B, KEY_A, NODE_A6, VTEP_A);
    pipeline(vec![
        Box::new(ParseStage::new()),
        Box::new(DecapStage::new(cfg)),
        Box::new(FromTunnel),
        Box::new(EgressStage),
    ])
}

fn sender(encap: Encap) -> Pipeline {
    let cfg = config(encap, NODE_A, VTEP_A, (NODE_B, VTEP_B));
    Pipeline::new(
        vec![
            Box::new(ParseStage::new()),
            Box::new(ToTunnel(NODE_B)),
            Box::new(EncapStage::new(cfg)),
            Box::new(EgressStage),
        ],
        PipelineConfig::default(),
        7,
    )
}

fn receiver(encap: Encap) -> Pipeline {
    let cfg = config(encap, NODE_B, VTEP_B, (NODE_A, VTEP_A));
    Pipeline::new(
        vec![Box::new(ParseStage::new()), Box::new(DecapStage::new(cfg)), Box::new(FromTunnel), Box::new(EgressStage)],
        PipelineConfig::default(),
        7,
    )
}

/// A pod's UDP frame with the given TOS, TTL and DF, checksums right.
fn pod_frame(tos: u8, ttl: u8, df: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = udp4(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 3), 40000, 53, payload);
    f[15] = tos;
    f[22] = ttl;
    f[20] = if df { 0x40 } else { 0 };
    Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
    f
}

fn go(pl: &mut Pipeline, pool: &mut BufPool, port: u16, f: &[u8]) -> Run {
    run(pl, pool, podplane::Instant::from_nanos(1), &[(port, f.to_vec())])
}

#[test]
fn vxlan_outer_headers_are_exact() {
    let mut pl = sender(Encap::flannel());
    let mut pool = BufPool::with_slots(16).unwrap();
    let inner = pod_frame(0xb9, 63, true, b"hello vxlan");
    let r = go(&mut pl, &mut pool, 1, &inner);
    assert_eq!(r.tx.len(), 1);
    let (port, o) = &r.tx[0];
    assert_eq!(*port, UPLINK);
    assert_eq!(o.len(), inner.len() + 50);
    assert_eq!(&o[12..14], &[0x08, 0x00]);
    let ip = Ipv4Packet::new_checked(&o[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(usize::from(ip.total_len()), inner.len() + 36);
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl(), u8::from(ip.protocol())), (NODE_A, NODE_B, 64, 17));
    assert_eq!(o[15], 0x01, "TOS 0 with the inner ECN (ECT(1)) copied");
    assert!(!ip.dont_frag(), "DF clear, as Linux's vxlan by default");
    let sport = u16::from_be_bytes([o[34], o[35]]);
    assert!((32768..=60999).contains(&sport));
    assert_eq!(u16::from_be_bytes([o[36], o[37]]), 8472);
    assert_eq!(usize::from(u16::from_be_bytes([o[38], o[39]])), inner.len() + 16);
    assert_eq!(&o[40..42], &[0, 0], "UDP checksum zero over IPv4");
    assert_eq!(&o[42..50], &[0x08, 0, 0, 0, 0, 0, 1, 0], "I flag, VNI 1");
    assert_eq!(&o[50..56], &VTEP_B.0, "inner destination: the peer's VTEP");
    assert_eq!(&o[56..62], &VTEP_A.0, "inner source: ours");
    assert_eq!(&o[62..], &inner[12..], "the rest of the inner frame untouched");
    assert_eq!(pl.counters().events("encap", StageEvent::Encapsulated), 1);
    // Both directions of a flow hash to the same source port; another flow may not.
    let mut back = udp4(Ipv4Addr::new(10, 244, 2, 3), Ipv4Addr::new(10, 244, 1, 2), 53, 40000, b"x");
    Ipv4Packet::new_unchecked(&mut back[14..]).fill_checksum();
    let r2 = go(&mut pl, &mut pool, 1, &back);
    assert_eq!(u16::from_be_bytes([r2.tx[0].1[34], r2.tx[0].1[35]]), sport);
}

#[test]
fn vxlan_over_ipv6_outer_headers_are_exact() {
    let mut pl = sender6();
    let mut pool = BufPool::with_slots(16).unwrap();
    let inner = pod_frame(0x03, 63, true, b"over ipv6");
    let r = go(&mut pl, &mut pool, 1, &inner);
    assert_eq!(r.tx.len(), 1, "{:?}", pl.counters().snapshot());
    let o = &r.tx[0].1;
    assert_eq!(o.len(), inner.len() + 70);
    assert_eq!(&o[12..14], &[0x86, 0xdd]);
    assert_eq!(&o[14..18], &[0x60, 0x20, 0, 0], "version 6, traffic class ECT(0) (CE re-marked), flow label 0");
    assert_eq!(usize::from(u16::from_be_bytes([o[18], o[19]])), inner.len() + 16, "payload length");
    assert_eq!((o[20], o[21]), (17, 64), "UDP, hop limit 64");
    assert_eq!(&o[22..38], &NODE_A6.octets());
    assert_eq!(&o[38..54], &NODE_B6.octets());
    assert_eq!(&o[56..58], &8472u16.to_be_bytes());
    assert_eq!(&o[58..60], &o[18..20], "UDP length = payload length");
    assert_ne!(&o[60..62], &[0, 0], "a UDP checksum over IPv6");
    let mut sum =
        podplane::wire::checksum::pseudo_v6(NODE_A6, NODE_B6, 17, u32::from(u16::from_be_bytes([o[18], o[19]])));
    sum.add_bytes(&o[54..]);
    assert_eq!(sum.fold(), 0xffff, "the UDP checksum verifies");
    assert_eq!(&o[62..70], &[0x08, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(&o[70..82], &[VTEP_B.0, VTEP_A.0].concat()[..]);
    assert_eq!(&o[82..], &inner[12..]);
}

#[test]
fn vxlan_udp_checksum_when_asked() {
    let encap = Encap::Vxlan { port: 4789, vni: 4096, src_ports: 10000..=10000, udp_checksum: true };
    let mut pl = sender(encap);
    let mut pool = BufPool::with_slots(16).unwrap();
    let r = go(&mut pl, &mut pool, 1, &pod_frame(0, 64, false, b"calico"));
    let o = &r.tx[0].1;
    assert_eq!(&o[34..38], &[0x27, 0x10, 0x12, 0xb5], "source 10000, IANA port 4789");
    assert_eq!(&o[42..50], &[0x08, 0, 0, 0, 0, 0x10, 0, 0], "VNI 4096");
    let mut sum = podplane::wire::checksum::pseudo_v4(NODE_A, NODE_B, 17, u16::try_from(o.len() - 34).unwrap());
    sum.add_bytes(&o[34..]);
    assert_eq!(sum.fold(), 0xffff, "the UDP checksum verifies");
}

#[test]
fn ipip_outer_header_follows_linux_tunl0_defaults() {
    let mut pl = sender(Encap::Ipip);
    let mut pool = BufPool::with_slots(16).unwrap();
    let inner = pod_frame(0x02, 63, true, b"hello ipip");
    let r = go(&mut pl, &mut pool, 1, &inner);
    let o = &r.tx[0].1;
    assert_eq!(o.len(), inner.len() + 20);
    let ip = Ipv4Packet::new_checked(&o[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr(), u8::from(ip.protocol())), (NODE_A, NODE_B, 4));
    assert_eq!(ip.ttl(), 63, "ttl inherit");
    assert!(ip.dont_frag(), "DF copied from the inner packet (pmtudisc)");
    assert_eq!(ip.ident(), 0, "ID 0 on DF tunnel packets, as Linux");
    assert_eq!(o[15], 0x02, "ECN ECT(0) copied");
    assert_eq!(&o[34..], &inner[14..], "the inner IP packet follows, untouched");
}

#[test]
fn to_ourselves_or_to_no_peer_is_a_counted_drop() {
    let mut pool = BufPool::with_slots(16).unwrap();
    let mut pl = Pipeline::new(
        vec![
            Box::new(ParseStage::new()),
            Box::new(ToTunnel(NODE_A)),
            Box::new(EncapStage::new(config(Encap::flannel(), NODE_A, VTEP_A, (NODE_A, VTEP_B)))),
            Box::new(EgressStage),
        ],
        PipelineConfig::default(),
        1,
    );
    assert!(go(&mut pl, &mut pool, 1, &pod_frame(0, 64, false, b"loop")).tx.is_empty());
    assert_eq!(pl.counters().drops("encap", DropReason::OverlayLoop), 1);
    let mut pl = Pipeline::new(
        vec![
            Box::new(ParseStage::new()),
            Box::new(ToTunnel(Ipv4Addr::new(192, 168, 0, 99))),
            Box::new(EncapStage::new(config(Encap::flannel(), NODE_A, VTEP_A, (NODE_B, VTEP_B)))),
            Box::new(EgressStage),
        ],
        PipelineConfig::default(),
        1,
    );
    assert!(go(&mut pl, &mut pool, 1, &pod_frame(0, 64, false, b"?")).tx.is_empty());
    assert_eq!(pl.counters().drops("encap", DropReason::OverlayNoPeer), 1);
}

/// A VXLAN frame as node A sends it to B, with `edit` applied to its bytes.
fn vxlan_frame(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut pl = sender(Encap::flannel());
    let mut pool = BufPool::with_slots(16).unwrap();
    let mut o = go(&mut pl, &mut pool, 1, &pod_frame(0, 64, false, b"payload")).tx.remove(0).1;
    o[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0b]);
    o[6..12].copy_from_slice(&GW_MAC);
    edit(&mut o);
    o
}

#[test]
fn bad_outer_headers_are_counted_drops() {
    let fix_ip = |o: &mut Vec<u8>| Ipv4Packet::new_unchecked(&mut o[14..]).fill_checksum();
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vxlan_frame(|o| o[42] = 0x00), DropReason::VxlanBadFlags),
        (vxlan_frame(|o| o[43] = 0x01), DropReason::VxlanBadFlags),
        (vxlan_frame(|o| o[49] = 0x01), DropReason::VxlanBadFlags),
        (vxlan_frame(|o| o[48] = 0x02), DropReason::VxlanUnknownVni),
        (vxlan_frame(|o| o[50..56].copy_from_slice(&[0x36, 0xcc, 0, 0, 0, 1])), DropReason::OverlayNotForUs),
        (
            vxlan_frame(|o| {
                // Cut right after the VXLAN header (+ 4 bytes): no inner Ethernet header.
                o.truncate(54);
                o[16..18].copy_from_slice(&40u16.to_be_bytes());
                o[38..40].copy_from_slice(&20u16.to_be_bytes());
                fix_ip(o);
            }),
            DropReason::VxlanTruncated,
        ),
        (
            vxlan_frame(|o| {
                o[20] = 0x20; // MF: a first fragment
                fix_ip(o);
            }),
            DropReason::OverlayFragment,
        ),
    ];
    for (k, (frame, reason)) in cases.into_iter().enumerate() {
        let mut pl = receiver(Encap::flannel());
        let mut pool = BufPool::with_slots(16).unwrap();
        let r = go(&mut pl, &mut pool, 0, &frame);
        assert!(r.tx.is_empty(), "case {k}");
        assert_eq!(pl.counters().drops("decap", reason), 1, "case {k}: {reason}");
        assert!(pl.counters().snapshot().balanced());
    }
    // IPIP from a stranger.
    let mut pl = sender(Encap::Ipip);
    let mut pool = BufPool::with_slots(16).unwrap();
    let mut o = go(&mut pl, &mut pool, 1, &pod_frame(0, 64, false, b"x")).tx.remove(0).1;
    o[6..12].copy_from_slice(&GW_MAC);
    o[26..30].copy_from_slice(&[192, 168, 0, 77]);
    Ipv4Packet::new_unchecked(&mut o[14..]).fill_checksum();
    let mut rx = receiver(Encap::Ipip);
    assert!(go(&mut rx, &mut pool, 0, &o).tx.is_empty());
    assert_eq!(rx.counters().drops("decap", DropReason::OverlayUnknownPeer), 1);
    // Traffic that is not for the tunnel passes untouched (another UDP port).
    let mut rx = receiver(Encap::flannel());
    let plain = vxlan_frame(|o| o[36..38].copy_from_slice(&53u16.to_be_bytes()));
    let r = go(&mut rx, &mut pool, 0, &plain);
    assert!(r.tx.is_empty());
    assert_eq!(rx.counters().snapshot().totals.dropped, 1, "no_disposition only: decap left it alone");
    assert_eq!(rx.counters().drops("pipeline", DropReason::NoDisposition), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Encapsulating then decapsulating gives back the frame (with VXLAN's inner MACs
    /// set to the VTEPs; with IPIP, the IP packet itself).
    #[test]
    fn encap_then_decap_is_the_identity(
        tos in any::<u8>(),
        ttl in 1u8..=255,
        df in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1400),
        mode in 0u8..3,
    ) {
        let ipip = mode == 1;
        let (mut tx, mut rx) = match mode {
            0 => (sender(Encap::flannel()), receiver(Encap::flannel())),
            1 => (sender(Encap::Ipip), receiver(Encap::Ipip)),
            _ => (sender6(), receiver6()),
        };
        let mut pool = BufPool::with_slots(16).unwrap();
        let frame = pod_frame(tos, ttl, df, &payload);
        let mut out = go(&mut tx, &mut pool, 1, &frame).tx;
        prop_assert_eq!(out.len(), 1);
        let mut wire = out.remove(0).1;
        wire[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0b]);
        wire[6..12].copy_from_slice(&GW_MAC);
        let back = go(&mut rx, &mut pool, 0, &wire).tx;
        prop_assert_eq!(back.len(), 1);
        let (port, inner) = &back[0];
        prop_assert_eq!(*port, TUNNEL);
        prop_assert_eq!(&inner[..6], &VTEP_B.0[..]);
        let src: &[u8] = if ipip { &GW_MAC } else { &VTEP_A.0 };
        prop_assert_eq!(&inner[6..12], src);
        prop_assert_eq!(&inner[12..], &frame[12..]);
        prop_assert_eq!(rx.counters().events("decap", StageEvent::Decapsulated), 1);
    }
}
