//! The parse stage end to end through a pipeline: every malformed kind is dropped
//! with its own reason and counted, valid frames get exact metadata, and the counters
//! balance. Expected metadata is cross-checked against etherparse as an independent
//! parser.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::buf::{Batch, BufPool, L3Kind, PktFlags, PortId};
use podplane::pipeline::{Disposition, DropReason, Pipeline, PipelineConfig, Stage};
use podplane::stage::ParseStage;
use podplane::testutil::{self, CounterExpect};
use podplane::wire::ChecksumPolicy;
use podplane::wire::flow::FlowKey;
use podplane::wire::tcp::TcpFlags;
use podplane::{Context, Instant};

/// Sends every parsed packet out of port 1 so the pipeline gives it a disposition.
struct TxAll;
impl Stage for TxAll {
    fn name(&self) -> &'static str {
        "txall"
    }
    fn process(&mut self, _cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if batch.is_live(i) {
                batch.transmit(i, PortId(1));
            }
        }
    }
}

fn pipeline(policy: ChecksumPolicy) -> Pipeline {
    Pipeline::new(vec![Box::new(ParseStage::new()), Box::new(TxAll)], PipelineConfig { checksum: policy }, 1)
}

fn a() -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 2)
}
fn b() -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 2, 3)
}

/// Run one frame; return its disposition and the pipeline.
fn run_one(frame: Vec<u8>, policy: ChecksumPolicy) -> (Disposition, Pipeline, BufPool, podplane::PktId) {
    let mut pool = BufPool::with_slots(8).unwrap();
    let mut batch = Batch::new();
    let pkts = testutil::load(&mut pool, &mut batch, PortId(0), &[frame]);
    let mut pl = pipeline(policy);
    pl.process(&mut pool, Instant::from_nanos(1), &mut batch);
    (batch.disposition(0), pl, pool, pkts[0])
}

fn expect_drop(frame: Vec<u8>, reason: DropReason, policy: ChecksumPolicy) {
    let (d, pl, pool, _) = run_one(frame, policy);
    assert_eq!(d, Disposition::Drop(reason));
    CounterExpect::new().drop("parse", reason, 1).check(&pl.counters().snapshot());
    assert_eq!(pool.available(), pool.capacity(), "dropped packet not freed");
}

fn strict() -> ChecksumPolicy {
    ChecksumPolicy { ipv4: true, l4: true }
}

#[test]
fn every_malformed_kind_has_its_own_reason() {
    let udp = testutil::udp4(a(), b(), 1234, 53, b"query");
    let p = ChecksumPolicy::default();

    expect_drop(udp[..13].to_vec(), DropReason::RuntFrame, p);
    let mut tagged = udp[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00]);
    expect_drop(tagged, DropReason::RuntFrame, p);

    let mut f = udp.clone();
    f[6] |= 1; // multicast source MAC
    expect_drop(f, DropReason::InvalidSrcMac, p);
    let mut f = udp.clone();
    f[6..12].fill(0);
    expect_drop(f, DropReason::InvalidSrcMac, p);

    let arp = testutil::arp_request(a(), b());
    expect_drop(arp[..14 + 27].to_vec(), DropReason::ArpTruncated, p);
    let mut f = arp.clone();
    f[14 + 1] = 6; // hardware type IEEE 802
    expect_drop(f, DropReason::ArpUnsupported, p);

    expect_drop(udp[..14 + 19].to_vec(), DropReason::Ipv4Truncated, p);
    expect_drop(udp[..udp.len() - 1].to_vec(), DropReason::Ipv4Truncated, p);
    let mut f = udp.clone();
    f[14] = 0x55;
    expect_drop(f, DropReason::Ipv4BadVersion, p);
    let mut f = udp.clone();
    f[14] = 0x44;
    expect_drop(f, DropReason::Ipv4BadHeaderLen, p);
    let mut f = udp.clone();
    f[14 + 2] = 0;
    f[14 + 3] = 19;
    expect_drop(f, DropReason::Ipv4BadTotalLen, p);
    let mut f = udp.clone();
    f[14 + 8] = 1; // TTL changed, checksum not updated
    expect_drop(f, DropReason::Ipv4BadChecksum, p);

    let mut f = udp.clone();
    f[14 + 20 + 4] = 0;
    f[14 + 20 + 5] = 7;
    expect_drop(f, DropReason::UdpBadLength, p);
    let mut f = udp.clone();
    f[14 + 20 + 5] = 200;
    expect_drop(f, DropReason::UdpTruncated, p);
    let mut f = udp.clone();
    *f.last_mut().unwrap() ^= 0xff;
    expect_drop(f.clone(), DropReason::UdpBadChecksum, strict());
    let (d, ..) = run_one(f, p);
    assert_eq!(d, Disposition::Tx(PortId(1)), "l4 checksums are not checked by default");

    // UDP over IPv6 with a zero checksum is invalid (RFC 8200 8.1).
    let mut f = testutil::udp6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 1, 2, b"x");
    f[14 + 40 + 6] = 0;
    f[14 + 40 + 7] = 0;
    expect_drop(f, DropReason::UdpBadChecksum, strict());

    let tcp = testutil::tcp4(a(), b(), 40000, 80, TcpFlags::SYN, b"");
    expect_drop(shrink_ipv4(&tcp, 19), DropReason::TcpTruncated, p);
    let mut f = tcp.clone();
    f[14 + 20 + 12] = 0x40;
    expect_drop(f, DropReason::TcpBadHeaderLen, p);
    let mut f = tcp.clone();
    f[14 + 20 + 14] ^= 1; // window
    expect_drop(f, DropReason::TcpBadChecksum, strict());

    let icmp = testutil::icmp4_echo(a(), b(), 7, 1);
    expect_drop(shrink_ipv4(&icmp, 7), DropReason::IcmpTruncated, p);
    let mut f = icmp.clone();
    f[14 + 20 + 4] ^= 1;
    expect_drop(f, DropReason::IcmpBadChecksum, strict());

    let v6 = testutil::udp6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 1, 2, b"x");
    expect_drop(v6[..14 + 39].to_vec(), DropReason::Ipv6Truncated, p);
    let mut f = v6.clone();
    f[14] = 0x40;
    expect_drop(f, DropReason::Ipv6BadVersion, p);
    // Next header hop-by-hop claiming 16 bytes where only 9 follow.
    let mut f = v6.clone();
    f[14 + 6] = 0;
    f[14 + 40] = 17;
    f[14 + 40 + 1] = 1;
    expect_drop(f, DropReason::Ipv6BadExtHeader, p);
    expect_drop(v6_ext_chain(9), DropReason::Ipv6TooManyExtHeaders, p);
}

/// Cut an IPv4 frame's transport to `l4_len` bytes, fixing total length and checksum.
fn shrink_ipv4(frame: &[u8], l4_len: usize) -> Vec<u8> {
    let mut f = frame[..14 + 20 + l4_len].to_vec();
    let total = u16::try_from(20 + l4_len).unwrap();
    f[16..18].copy_from_slice(&total.to_be_bytes());
    let mut ip = podplane::wire::Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.fill_checksum();
    f
}

/// An IPv6 frame with `n` empty destination-options headers before UDP.
fn v6_ext_chain(n: usize) -> Vec<u8> {
    let base = testutil::udp6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 1, 2, b"");
    let mut f = base[..14 + 40].to_vec();
    f[14 + 6] = 60;
    for k in 0..n {
        let next = if k + 1 == n { 17 } else { 60 };
        f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    f.extend_from_slice(&base[14 + 40..]);
    let plen = u16::try_from(f.len() - 54).unwrap();
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f
}

#[test]
fn eight_extension_headers_are_walked() {
    let (d, pl, pool, pkt) = run_one(v6_ext_chain(8), ChecksumPolicy::default());
    assert_eq!(d, Disposition::Tx(PortId(1)));
    let m = pool.meta(pkt);
    assert_eq!(m.ip_proto, 17);
    assert_eq!(m.l4 - m.l3, 40 + 8 * 8);
    CounterExpect::new().check(&pl.counters().snapshot());
}

#[test]
fn valid_frames_get_exact_metadata_matching_etherparse() {
    let frames = vec![
        testutil::udp4(a(), b(), 1234, 53, b"query"),
        testutil::tcp4(a(), b(), 40000, 80, TcpFlags::SYN | TcpFlags::ACK, b"GET /"),
        testutil::icmp4_echo(a(), b(), 0x4242, 3),
        testutil::udp6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 5353, 53, b"q6"),
    ];
    for frame in frames {
        let (d, pl, pool, pkt) = run_one(frame.clone(), ChecksumPolicy { ipv4: true, l4: true });
        assert_eq!(d, Disposition::Tx(PortId(1)));
        CounterExpect::new().check(&pl.counters().snapshot());
        let m = pool.meta(pkt);
        let head = usize::from(m.head());
        let sliced = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        let (l3_kind, src, dst) = match sliced.net.as_ref().unwrap() {
            etherparse::NetSlice::Ipv4(v4) => {
                let h = v4.header();
                (L3Kind::Ipv4, std::net::IpAddr::V4(h.source_addr()), std::net::IpAddr::V4(h.destination_addr()))
            }
            etherparse::NetSlice::Ipv6(v6) => {
                let h = v6.header();
                (L3Kind::Ipv6, std::net::IpAddr::V6(h.source_addr()), std::net::IpAddr::V6(h.destination_addr()))
            }
            etherparse::NetSlice::Arp(_) => unreachable!(),
        };
        assert_eq!(m.l3_kind, l3_kind);
        assert_eq!(usize::from(m.l3) - head, 14);
        let (sport, dport, l4_off, proto) = match sliced.transport.as_ref().unwrap() {
            etherparse::TransportSlice::Udp(u) => (u.source_port(), u.destination_port(), u.slice().as_ptr(), 17),
            etherparse::TransportSlice::Tcp(t) => (t.source_port(), t.destination_port(), t.slice().as_ptr(), 6),
            etherparse::TransportSlice::Icmpv4(i) => {
                let id = u16::from_be_bytes([i.slice()[4], i.slice()[5]]);
                (id, id, i.slice().as_ptr(), 1)
            }
            etherparse::TransportSlice::Icmpv6(i) => (0, 0, i.slice().as_ptr(), 58),
        };
        let l4_expected = l4_off as usize - frame.as_ptr() as usize;
        assert_eq!(usize::from(m.l4) - head, l4_expected);
        assert_eq!(m.ip_proto, proto);
        assert_eq!(m.flow.src_addr(), src);
        assert_eq!(m.flow.dst_addr(), dst);
        assert_eq!((m.flow.src_port, m.flow.dst_port), (sport, dport));
        assert!(m.flags.contains(PktFlags::PARSED | PktFlags::HAS_L4 | PktFlags::HAS_FLOW));
    }
}

#[test]
fn padding_is_trimmed_and_vlan_tag_read() {
    let mut f = testutil::udp4(a(), b(), 1, 2, b"");
    let unpadded = f.len();
    f.resize(60, 0); // Ethernet minimum frame, padded
    let (_, _, pool, pkt) = run_one(f, ChecksumPolicy::default());
    assert_eq!(usize::from(pool.meta(pkt).len()), unpadded);

    let plain = testutil::udp4(a(), b(), 1, 2, b"x");
    let mut tagged = plain[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x20, 0x0a]); // PCP 1, VID 10
    tagged.extend_from_slice(&plain[12..]);
    let (d, _, pool, pkt) = run_one(tagged, ChecksumPolicy::default());
    assert_eq!(d, Disposition::Tx(PortId(1)));
    let m = pool.meta(pkt);
    assert!(m.flags.contains(PktFlags::VLAN));
    assert_eq!(m.vlan_tci, 0x200a);
    assert_eq!(m.l3 - m.head(), 18);
    assert_eq!(m.flow, FlowKey::v4(a(), b(), 17, 1, 2));
}

#[test]
fn later_fragment_has_flow_without_ports() {
    let mut f = testutil::udp4(a(), b(), 1, 2, b"abcdefgh");
    // offset 8 bytes (1 unit), MF clear
    f[14 + 6] = 0x00;
    f[14 + 7] = 0x01;
    podplane::wire::Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
    let (d, _, pool, pkt) = run_one(f, ChecksumPolicy::default());
    assert_eq!(d, Disposition::Tx(PortId(1)));
    let m = pool.meta(pkt);
    assert!(m.flags.contains(PktFlags::FRAGMENT | PktFlags::LATER_FRAGMENT | PktFlags::HAS_FLOW));
    assert!(!m.flags.contains(PktFlags::HAS_L4));
    assert_eq!(m.flow, FlowKey::v4(a(), b(), 17, 0, 0));
}

#[test]
fn unknown_ethertype_passes_as_l2_only() {
    let mut f = testutil::udp4(a(), b(), 1, 2, b"");
    f[12] = 0x88;
    f[13] = 0xcc; // LLDP
    let (d, _, pool, pkt) = run_one(f, ChecksumPolicy::default());
    assert_eq!(d, Disposition::Tx(PortId(1)));
    assert_eq!(pool.meta(pkt).l3_kind, L3Kind::None);
}

#[test]
fn trace_records_each_stage_decision() {
    let mut pool = BufPool::with_slots(8).unwrap();
    let mut batch = Batch::new();
    let good = testutil::udp4(a(), b(), 1234, 53, b"q");
    let mut bad = good.clone();
    bad[14 + 8] = 9;
    testutil::load(&mut pool, &mut batch, PortId(0), &[good, bad, testutil::udp4(a(), b(), 1, 1, b"")]);
    let mut pl = pipeline(ChecksumPolicy::default());
    pl.trace_add(2);
    pl.process(&mut pool, Instant::from_nanos(1_000_000_000), &mut batch);
    let text = pl.trace().to_string();
    let expected = "\
Packet 1
  1.000000000 ingress port0 43 bytes: 02:00:00:00:00:0a > 02:00:00:00:00:0b Ipv4, IP 10.244.1.2 > 10.244.2.3 Udp ttl 64 len 29, UDP 1234 > 53 len 9
  parse: flow 10.244.1.2:1234 > 10.244.2.3:53 proto 17
  parse -> continue
  txall -> tx port1
Packet 2
  1.000000000 ingress port0 43 bytes: 02:00:00:00:00:0a > 02:00:00:00:00:0b Ipv4, IP 10.244.1.2 > 10.244.2.3 Udp ttl 9 len 29, UDP 1234 > 53 len 9
  parse -> drop ipv4_bad_checksum
";
    assert_eq!(text, expected);
    assert_eq!(pl.trace().budget(), 0);
}
