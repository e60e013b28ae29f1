//! Property tests of the wire layer:
//! - emit → parse gives back the same value, for every header;
//! - no parser (nor the parse stage, nor the pretty printer) panics on any bytes;
//! - RFC 1624 incremental updates equal full recomputation for random rewrites;
//! - our parse agrees with etherparse (an independent implementation) on packets
//!   etherparse builds.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use podplane::buf::{BufPool, L3Kind, Owner, PktFlags};
use podplane::stage::parse::parse_one;
use podplane::wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use podplane::wire::checksum::{self, Sum, pseudo_v4, update_bytes, update16, update32};
use podplane::wire::display::PrettyFrame;
use podplane::wire::ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr};
use podplane::wire::flow::FlowKey;
use podplane::wire::icmp::IcmpPacket;
use podplane::wire::icmpv4::{Icmpv4Repr, Icmpv4Type};
use podplane::wire::icmpv6::{Icmpv6Repr, Icmpv6Type};
use podplane::wire::ip::IpProtocol;
use podplane::wire::ipip;
use podplane::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use podplane::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use podplane::wire::tcp::{TcpFlags, TcpPacket, TcpRepr};
use podplane::wire::udp::{UdpPacket, UdpRepr};
use podplane::wire::vxlan::{VxlanPacket, VxlanRepr};
use podplane::wire::{ChecksumPolicy, checksum::pseudo_v6};

fn mac() -> impl Strategy<Value = EthernetAddress> {
    any::<[u8; 6]>().prop_map(EthernetAddress)
}
fn v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}
fn v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}
fn opts() -> impl Strategy<Value = Vec<u8>> {
    (0usize..=10).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 4))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ethernet_round_trips(src in mac(), dst in mac(), tci in proptest::option::of(any::<u16>()), et in any::<u16>()) {
        // A payload EtherType of 0x8100/0x88a8 would read as a second tag: exclude.
        prop_assume!(et != 0x8100 && et != 0x88a8);
        let r = EthernetRepr { src, dst, vlan_tci: tci, ethertype: EtherType::from(et) };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b).unwrap();
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&f), r);
    }

    #[test]
    fn arp_round_trips(op in 1u16..=2, sm in mac(), si in v4(), tm in mac(), ti in v4()) {
        let r = ArpRepr { operation: ArpOperation::from(op), sender_mac: sm, sender_ip: si, target_mac: tm, target_ip: ti };
        let mut b = [0u8; 28];
        r.emit(&mut b).unwrap();
        prop_assert_eq!(ArpRepr::parse(&ArpPacket::new_checked(&b[..]).unwrap()), r);
    }

    #[test]
    fn ipv4_round_trips_with_options(src in v4(), dst in v4(), proto in any::<u8>(), plen in 0u16..1400,
                                     ttl in any::<u8>(), tos in any::<u8>(), id in any::<u16>(), df in any::<bool>(),
                                     mf in any::<bool>(), off in 0u16..8191, o in opts()) {
        let mut r = Ipv4Repr::new(src, dst, IpProtocol::from(proto), plen, ttl);
        r.dscp_ecn = tos; r.ident = id; r.dont_frag = df; r.more_frags = mf; r.frag_offset = off * 8;
        r.set_options(&o).unwrap();
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b).unwrap();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(Ipv4Repr::parse(&p), r);
        // etherparse agrees on every field.
        let (h, _) = etherparse::Ipv4Header::from_slice(&b).unwrap();
        prop_assert_eq!(h.source, src.octets());
        prop_assert_eq!(h.total_len, u16::try_from(r.buffer_len()).unwrap());
        prop_assert_eq!(h.header_checksum, p.checksum());
        prop_assert_eq!(h.options.as_slice(), &o[..]);
        prop_assert_eq!(h.fragment_offset.value() * 8, off * 8);
    }

    #[test]
    fn ipv6_round_trips(src in v6(), dst in v6(), nh in any::<u8>(), plen in 0u16..1400, hl in any::<u8>(),
                        tc in any::<u8>(), fl in 0u32..(1 << 20)) {
        let r = Ipv6Repr { src, dst, next_header: IpProtocol::from(nh), payload_len: plen, hop_limit: hl, traffic_class: tc, flow_label: fl };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b).unwrap();
        prop_assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_checked(&b[..]).unwrap()), r);
        let (h, _) = etherparse::Ipv6Header::from_slice(&b).unwrap();
        prop_assert_eq!(h.flow_label.value(), fl);
        prop_assert_eq!(h.traffic_class, tc);
    }

    #[test]
    fn udp_round_trips_and_checksums(src in v4(), dst in v4(), sp in any::<u16>(), dp in any::<u16>(),
                                     payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let len = 8 + payload.len();
        let pseudo = pseudo_v4(src, dst, 17, u16::try_from(len).unwrap());
        let mut b = vec![0u8; len];
        b[8..].copy_from_slice(&payload);
        let r = UdpRepr { src_port: sp, dst_port: dp };
        r.emit(&mut b, payload.len(), Some(pseudo)).unwrap();
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum(pseudo, true));
        prop_assert!(p.checksum() != 0, "a computed zero is sent as 0xffff");
        prop_assert_eq!(UdpRepr::parse(&p), r);
        let eh = etherparse::UdpHeader::with_ipv4_checksum(sp, dp, &etherparse::Ipv4Header::new(
            u16::try_from(len).unwrap(), 64, etherparse::IpNumber::UDP, src.octets(), dst.octets()).unwrap(), &payload).unwrap();
        prop_assert_eq!(eh.checksum, p.checksum());
    }

    #[test]
    fn tcp_round_trips_with_options(sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(),
                                    flags in 0u16..0x200, win in any::<u16>(), urg in any::<u16>(), o in opts(),
                                    payload in proptest::collection::vec(any::<u8>(), 0..100), src in v6(), dst in v6()) {
        let mut r = TcpRepr::new(sp, dp, seq, ack, TcpFlags::from_bits_truncate(flags), win);
        r.urgent = urg;
        r.set_options(&o).unwrap();
        let len = r.header_len() + payload.len();
        let pseudo = pseudo_v6(src, dst, 6, u32::try_from(len).unwrap());
        let mut b = vec![0u8; len];
        b[r.header_len()..].copy_from_slice(&payload);
        r.emit(&mut b, pseudo).unwrap();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum(pseudo));
        prop_assert_eq!(TcpRepr::parse(&p), r);
        prop_assert_eq!(p.payload(), &payload[..]);
        let (h, _) = etherparse::TcpHeader::from_slice(&b).unwrap();
        prop_assert_eq!(h.header_len(), r.header_len());
        prop_assert_eq!(h.syn, r.flags.contains(TcpFlags::SYN));
        prop_assert_eq!(h.sequence_number, seq);
    }

    #[test]
    fn icmp_round_trips(t in any::<u8>(), code in any::<u8>(), rest in any::<[u8; 4]>(),
                        body in proptest::collection::vec(any::<u8>(), 0..64), src in v6(), dst in v6()) {
        let mut b = vec![0u8; 8 + body.len()];
        b[8..].copy_from_slice(&body);
        let r4 = Icmpv4Repr { msg_type: Icmpv4Type::from(t), code, rest };
        r4.emit(&mut b, Sum::new()).unwrap();
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum(Sum::new()));
        prop_assert_eq!(Icmpv4Repr::parse(&p), r4);
        let pseudo = pseudo_v6(src, dst, 58, u32::try_from(b.len()).unwrap());
        let r6 = Icmpv6Repr { msg_type: Icmpv6Type::from(t), code, rest };
        r6.emit(&mut b, pseudo).unwrap();
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum(pseudo));
        prop_assert_eq!(Icmpv6Repr::parse(&p), r6);
    }

    #[test]
    fn vxlan_round_trips(vni in 0u32..(1 << 24)) {
        let r = VxlanRepr { vni };
        let mut b = [0u8; 8];
        r.emit(&mut b).unwrap();
        prop_assert_eq!(VxlanRepr::parse(&VxlanPacket::new_checked(&b[..]).unwrap()), r);
        // RFC 7348 layout, independently: I flag in byte 0, VNI big-endian in 4..7.
        prop_assert_eq!(b[0], 0x08);
        prop_assert_eq!(u32::from_be_bytes([0, b[4], b[5], b[6]]), vni);
        prop_assert_eq!([b[1], b[2], b[3], b[7]], [0, 0, 0, 0]);
    }

    #[test]
    fn ipip_round_trips(osrc in v4(), odst in v4(), isrc in v4(), idst in v4(), ttl in 1u8.., v6_inner in any::<bool>()) {
        let inner_len = if v6_inner { 40 } else { 20 };
        let mut b = vec![0u8; 20 + inner_len];
        if v6_inner {
            let r = Ipv6Repr { src: Ipv6Addr::LOCALHOST, dst: Ipv6Addr::UNSPECIFIED, next_header: IpProtocol::NoNext, payload_len: 0, hop_limit: ttl, traffic_class: 0, flow_label: 0 };
            r.emit(&mut b[20..]).unwrap();
        } else {
            Ipv4Repr::new(isrc, idst, IpProtocol::Udp, 0, ttl).emit(&mut b[20..]).unwrap();
        }
        let o = ipip::outer_repr(osrc, odst, v6_inner, inner_len, ttl, 0, true).unwrap();
        o.emit(&mut b).unwrap();
        let outer = Ipv4Packet::new_checked(&b[..]).unwrap();
        prop_assert_eq!(Ipv4Repr::parse(&outer), o);
        match ipip::inner(&outer).unwrap() {
            ipip::InnerPacket::V4(p) => { prop_assert!(!v6_inner); prop_assert_eq!(p.src_addr(), isrc); }
            ipip::InnerPacket::V6(p) => { prop_assert!(v6_inner); prop_assert_eq!(p.hop_limit(), ttl); }
        }
    }

    #[test]
    fn no_parser_panics_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        touch_all(&b);
    }

    #[test]
    fn incremental_equals_full_recompute_ipv4(src in v4(), dst in v4(), nsrc in v4(), ndst in v4(), ttl in 1u8..,
                                              o in opts(), id in any::<u16>()) {
        let mut r = Ipv4Repr::new(src, dst, IpProtocol::Tcp, 0, ttl);
        r.ident = id;
        r.set_options(&o).unwrap();
        let mut b = vec![0u8; r.header_len()];
        r.emit(&mut b).unwrap();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        let c0 = p.checksum();
        let c1 = update32(c0, u32::from(src), u32::from(nsrc));
        let c2 = update32(c1, u32::from(dst), u32::from(ndst));
        p.set_src_addr(nsrc);
        p.set_dst_addr(ndst);
        p.set_checksum(c2);
        p.decrement_ttl();
        prop_assert!(p.verify_checksum());
        let inc = p.checksum();
        p.fill_checksum();
        prop_assert_eq!(inc, p.checksum());
    }

    #[test]
    fn incremental_equals_full_recompute_tcp_nat(src in v6(), dst in v6(), nsrc in v6(), sp in any::<u16>(),
                                                 nsp in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        // SNAT of an IPv6 TCP segment: source address (pseudo-header) and port change.
        let r = TcpRepr::new(sp, 80, 1, 2, TcpFlags::ACK, 1000);
        let len = 20 + payload.len();
        let mut b = vec![0u8; len];
        b[20..].copy_from_slice(&payload);
        r.emit(&mut b, pseudo_v6(src, dst, 6, u32::try_from(len).unwrap())).unwrap();
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        let c = update_bytes(p.checksum(), &src.octets(), &nsrc.octets());
        let c = update16(c, sp, nsp);
        p.set_src_port(nsp);
        p.set_checksum(c);
        let pseudo = pseudo_v6(nsrc, dst, 6, u32::try_from(len).unwrap());
        prop_assert!(p.verify_checksum(pseudo));
        let inc = p.checksum();
        p.fill_checksum(pseudo);
        prop_assert_eq!(inc, p.checksum());
    }

    #[test]
    fn full_checksum_matches_plain_model(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        // RFC 1071 done the obvious way: big-endian words, end-around carry.
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            s = (s & 0xffff) + (s >> 16);
        }
        let model = !(u16::try_from(s & 0xffff).unwrap());
        prop_assert_eq!(checksum::checksum(&data), model);
    }

    #[test]
    fn parse_stage_agrees_with_etherparse(src in v4(), dst in v4(), sp in any::<u16>(), dp in any::<u16>(),
                                          tcp in any::<bool>(), payload in proptest::collection::vec(any::<u8>(), 0..64),
                                          src6 in v6(), dst6 in v6(), use_v6 in any::<bool>()) {
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let (mut frame, key) = (Vec::new(), if use_v6 {
            FlowKey::v6(src6, dst6, if tcp { 6 } else { 17 }, sp, dp)
        } else {
            FlowKey::v4(src, dst, if tcp { 6 } else { 17 }, sp, dp)
        });
        let ip = if use_v6 { builder.ipv6(src6.octets(), dst6.octets(), 64) } else { builder.ipv4(src.octets(), dst.octets(), 64) };
        if tcp {
            let t = ip.tcp(sp, dp, 1, 1000);
            t.write(&mut frame, &payload).unwrap();
        } else {
            ip.udp(sp, dp).write(&mut frame, &payload).unwrap();
        }
        let mut pool = BufPool::with_slots(1).unwrap();
        let pkt = pool.alloc(Owner::Pipeline).unwrap();
        pool.set_data(pkt, &frame).unwrap();
        let (slot, meta) = pool.slot_and_meta_mut(pkt);
        parse_one(slot, meta, ChecksumPolicy { ipv4: true, l4: true }).unwrap();
        let m = pool.meta(pkt);
        prop_assert_eq!(m.flow, key);
        prop_assert_eq!(m.l3_kind, if use_v6 { L3Kind::Ipv6 } else { L3Kind::Ipv4 });
        prop_assert!(m.flags.contains(PktFlags::HAS_L4));
        prop_assert_eq!(key.symmetric_hash(3), key.reversed().symmetric_hash(3));
    }
}

/// Run every view's checked constructor and, when it succeeds, every accessor.
fn touch_all(b: &[u8]) {
    if let Ok(f) = EthernetFrame::new_checked(b) {
        let _ = (f.src_addr(), f.dst_addr(), f.vlan_tci(), f.ethertype(), f.payload().len());
    }
    if let Ok(p) = ArpPacket::new_checked(b) {
        let _ = ArpRepr::parse(&p);
    }
    if let Ok(p) = Ipv4Packet::new_checked(b) {
        let _ = (Ipv4Repr::parse(&p), p.verify_checksum(), p.payload().len(), p.to_string());
        let _ = ipip::inner(&p);
    }
    if let Ok(p) = Ipv6Packet::new_checked(b) {
        let _ = (Ipv6Repr::parse(&p), p.transport(), p.to_string());
    }
    if let Ok(p) = UdpPacket::new_checked(b) {
        let _ = (UdpRepr::parse(&p), p.payload().len(), p.verify_checksum(Sum::new(), false));
    }
    if let Ok(p) = TcpPacket::new_checked(b) {
        let _ = (TcpRepr::parse(&p), p.payload().len(), p.to_string());
    }
    if let Ok(p) = IcmpPacket::new_checked(b) {
        let _ = (Icmpv4Repr::parse(&p), p.body().len(), p.to_string());
    }
    if let Ok(p) = VxlanPacket::new_checked(b) {
        let _ = (p.vni(), p.payload().len());
    }
    let _ = PrettyFrame(b).to_string();
    let mut pool = BufPool::with_slots(1).unwrap();
    let pkt = pool.alloc(Owner::Pipeline).unwrap();
    pool.set_data(pkt, b).unwrap();
    for policy in [ChecksumPolicy::default(), ChecksumPolicy { ipv4: false, l4: true }] {
        let (slot, meta) = pool.slot_and_meta_mut(pkt);
        let _ = parse_one(slot, meta, policy);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Structured garbage: a valid Ethernet+IP prefix with random bytes after it
    /// reaches the deeper parsers far more often than uniform bytes do.
    #[test]
    fn no_panic_on_mutated_valid_frames(et in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x8100)],
                                        vhl in any::<u8>(), rest in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut b = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        b.extend_from_slice(&et.to_be_bytes());
        b.push(vhl);
        b.extend_from_slice(&rest);
        touch_all(&b);
    }
}

proptest! {
    /// The unrolled `verify_ipv4_20` agrees with the generic `verify` on random
    /// headers, valid (fixed up) or not.
    #[test]
    fn fixed_ipv4_verify_matches_generic(mut h in any::<[u8; 20]>(), fix in any::<bool>()) {
        h[0] = 0x45;
        if fix {
            h[10] = 0;
            h[11] = 0;
            let c = checksum::checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        prop_assert_eq!(checksum::verify_ipv4_20(&h), checksum::verify(&h));
        if fix {
            prop_assert!(checksum::verify_ipv4_20(&h));
        }
    }
}

/// Every LPM structure against one model: a list of (prefix, len, value), longest
/// match by linear scan, after random inserts and removes.
mod lpm_model {
    use podplane::table::lpm::{Key, Lpm, Lpm4, Lpm6};
    use podplane::table::poptrie::Poptrie4;
    use proptest::prelude::*;

    /// What the model checks of each structure.
    trait Table<K> {
        fn insert(&mut self, p: K, l: u8, v: u16) -> Option<u16>;
        fn remove(&mut self, p: K, l: u8) -> Option<u16>;
        fn lookup(&self, a: K) -> Option<(u8, u16)>;
        fn len(&self) -> usize;
    }

    macro_rules! table {
        ($t:ty, $k:ty) => {
            impl Table<$k> for $t {
                fn insert(&mut self, p: $k, l: u8, v: u16) -> Option<u16> {
                    <$t>::insert(self, p, l, v)
                }
                fn remove(&mut self, p: $k, l: u8) -> Option<u16> {
                    <$t>::remove(self, p, l)
                }
                fn lookup(&self, a: $k) -> Option<(u8, u16)> {
                    <$t>::lookup(self, a)
                }
                fn len(&self) -> usize {
                    <$t>::len(self)
                }
            }
        };
    }
    table!(Lpm<u32, u16>, u32);
    table!(Lpm<u128, u16>, u128);
    table!(Lpm4<u16>, u32);
    table!(Poptrie4<u16>, u32);
    table!(Lpm6<u16>, u128);

    fn model_lookup<K: Key>(routes: &[(K, u8, u16)], addr: K) -> Option<(u8, u16)> {
        routes.iter().filter(|(p, l, _)| addr.mask(*l) == *p).max_by_key(|(_, l, _)| *l).map(|(_, l, v)| (*l, *v))
    }

    #[derive(Clone, Debug)]
    enum Op<K> {
        Insert(K, u8, u16),
        Remove(K, u8),
    }

    fn ops<K: Key + 'static>(
        addr: impl Strategy<Value = K> + Clone + 'static,
        len: impl Strategy<Value = u8> + Clone + 'static,
    ) -> impl Strategy<Value = Vec<Op<K>>> {
        proptest::collection::vec(
            prop_oneof![
                3 => (addr.clone(), len.clone(), 0u16..8).prop_map(|(p, l, v)| Op::Insert(p, l, v)),
                1 => (addr, len).prop_map(|(p, l)| Op::Remove(p, l)),
            ],
            0..96,
        )
    }

    /// Apply `ops` to `t` and the model; then every stored value, every route's first
    /// address and `lookups` must agree.
    fn check<K: Key, T: Table<K>>(mut t: T, ops: Vec<Op<K>>, lookups: Vec<K>) -> Result<(), TestCaseError> {
        let mut model: Vec<(K, u8, u16)> = Vec::new();
        for op in ops {
            match op {
                Op::Insert(p, l, v) => {
                    let p = p.mask(l);
                    let had = model.iter().find(|(q, m, _)| *q == p && *m == l).map(|x| x.2);
                    prop_assert_eq!(t.insert(p, l, v), had);
                    model.retain(|(q, m, _)| !(*q == p && *m == l));
                    model.push((p, l, v));
                }
                Op::Remove(p, l) => {
                    let p = p.mask(l);
                    let had = model.iter().find(|(q, m, _)| *q == p && *m == l).map(|x| x.2);
                    prop_assert_eq!(t.remove(p, l), had);
                    model.retain(|(q, m, _)| !(*q == p && *m == l));
                }
            }
        }
        prop_assert_eq!(t.len(), model.len());
        for a in lookups.into_iter().chain(model.iter().map(|r| r.0)) {
            prop_assert_eq!(t.lookup(a), model_lookup(&model, a), "lookup {:?}", a);
        }
        Ok(())
    }

    // Addresses drawn from small spaces so that prefixes overlap and lookups hit.
    fn v4() -> impl Strategy<Value = u32> + Clone {
        (0u32..16, any::<u8>()).prop_map(|(hi, lo)| (0x0a00_0000 | (hi << 12)) + u32::from(lo))
    }
    fn v6() -> impl Strategy<Value = u128> + Clone {
        // Two /32s, sixteen /64s, 256 hosts: prefixes overlap across the /32 boundary.
        (0u128..2, 0u128..16, any::<u8>())
            .prop_map(|(t, hi, lo)| (0xfd00u128 << 112) | (t << 96) | (hi << 64) | u128::from(lo))
    }
    /// A few /16s, and inside them either a few /24s or anywhere, so prefixes overlap
    /// at every level of the poptrie (18 bits direct, then 6, 6 and 2).
    fn v4_trie() -> impl Strategy<Value = u32> + Clone {
        (0u32..3, prop_oneof![(0u32..3, any::<u8>()).prop_map(|(b, lo)| (b << 8) | u32::from(lo)), 0u32..0x10000])
            .prop_map(|(a, low)| 0x0a00_0000 | (a << 16) | low)
    }
    fn len4() -> impl Strategy<Value = u8> + Clone {
        prop_oneof![0u8..=32, 17u8..=32, 26u8..=32]
    }
    fn len6() -> impl Strategy<Value = u8> + Clone {
        prop_oneof![0u8..=128, 30u8..=34, 60u8..=68]
    }

    proptest! {
        #[test]
        fn ipv4_per_length_tables(ops in ops(v4(), 0u8..=32), lookups in proptest::collection::vec(v4(), 0..64)) {
            check(Lpm::<u32, u16>::new(), ops, lookups)?;
        }

        #[test]
        fn ipv6_per_length_tables(ops in ops(v6(), 0u8..=128), lookups in proptest::collection::vec(v6(), 0..64)) {
            check(Lpm::<u128, u16>::new(), ops, lookups)?;
        }

        #[test]
        fn lpm4(ops in ops(v4_trie(), len4()), lookups in proptest::collection::vec(v4_trie(), 0..64)) {
            check(Lpm4::<u16>::new(), ops, lookups)?;
        }

        #[test]
        fn lpm6(ops in ops(v6(), len6()), lookups in proptest::collection::vec(v6(), 0..64)) {
            check(Lpm6::<u16>::new(), ops, lookups)?;
        }
    }

    proptest! {
        // The poptrie's empty table is 2 MiB of direct table: fewer, larger cases.
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn poptrie(ops in ops(v4_trie(), len4()), lookups in proptest::collection::vec(v4_trie(), 0..96)) {
            // Also each route's last address.
            let mut probes = lookups;
            for op in &ops {
                if let Op::Insert(p, l, _) = op {
                    probes.push(*p | !u32::MAX.checked_shl(32 - u32::from(*l)).unwrap_or(0));
                }
            }
            check(Poptrie4::<u16>::new(), ops, probes)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Loading routes in bulk gives the same table as inserting them one by one
        /// (later duplicates win), on top of routes already there.
        #[test]
        fn poptrie_extend_equals_inserts(
            before in proptest::collection::vec((v4_trie(), len4(), 0u16..8), 0..16),
            routes in proptest::collection::vec((v4_trie(), len4(), 0u16..8), 0..96),
            lookups in proptest::collection::vec(v4_trie(), 0..96),
        ) {
            let mut bulk: Poptrie4<u16> = Poptrie4::new();
            let mut one: Poptrie4<u16> = Poptrie4::new();
            for (p, l, v) in &before {
                bulk.insert(*p, *l, *v);
                one.insert(*p, *l, *v);
            }
            bulk.extend(routes.iter().copied());
            for (p, l, v) in &routes {
                one.insert(*p, *l, *v);
            }
            prop_assert_eq!(bulk.len(), one.len());
            for a in lookups.into_iter().chain(routes.iter().map(|(p, l, _)| p.mask(*l))) {
                prop_assert_eq!(bulk.lookup(a), one.lookup(a), "lookup {:#x}", a);
            }
        }
    }

    #[test]
    fn poptrie_leaves_widen_past_1022_values_and_keep_answers() {
        // Leaf codes are 16-bit until a value's code does not fit (value index 1023 and
        // up); the switch happens in the middle of a subtree build and must not move
        // any answer.
        let mut t: Poptrie4<u32> = Poptrie4::new();
        let route = |k: u32| (0x0a00_0000 | (k << 3), 29u8);
        for k in 0..3000u32 {
            let (p, l) = route(k);
            t.insert(p, l, k);
            if k == 1000 || k == 1030 {
                for j in (0..=k).step_by(7) {
                    assert_eq!(t.lookup(route(j).0 | 5), Some((29, j)), "after {k}: route {j}");
                }
            }
        }
        t.compact();
        for j in 0..3000u32 {
            assert_eq!(t.lookup(route(j).0 | 7), Some((29, j)), "route {j}");
        }
    }

    #[test]
    fn poptrie_compaction_keeps_answers() {
        // Many rebuilds of the same slots make garbage; compaction must not change
        // any answer.
        let mut t: Poptrie4<u32> = Poptrie4::new();
        for round in 0..50u32 {
            for k in 0..64u32 {
                let p = 0x0a00_0000 | ((k % 4) << 16) | (k << 9) | (round << 2);
                t.insert(p, 30, round * 100 + k);
            }
        }
        for round in 0..50u32 {
            for k in 0..64u32 {
                let p = 0x0a00_0000 | ((k % 4) << 16) | (k << 9) | (round << 2);
                assert_eq!(t.lookup(p | 1), Some((30, round * 100 + k)));
            }
        }
        let (fib, _) = t.memory_bytes();
        assert!(fib < 4 << 20, "garbage was compacted: {fib}");
    }
}

mod fdb_model {
    use std::collections::BTreeMap;

    use podplane::PortId;
    use podplane::table::fdb::{Fdb, Learn};
    use podplane::{Duration, Instant};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Learn(u16, u8, u16),
        Static(u16, u8, u16),
        Advance(u64),
        Sweep,
        Lookup(u16, u8),
    }

    const AGE: u64 = 10;
    const CAP: usize = 6;

    /// The model: (domain, mac) -> (port, last_seen, static), explicit time, capacity.
    #[derive(Default)]
    struct Model {
        m: BTreeMap<(u16, u8), (u16, u64, bool)>,
    }

    impl Model {
        fn expired(e: &(u16, u64, bool), now: u64) -> bool {
            !e.2 && now.saturating_sub(e.1) > AGE
        }
        fn learn(&mut self, d: u16, mac: u8, p: u16, now: u64) -> Learn {
            if let Some(e) = self.m.get_mut(&(d, mac)) {
                if e.2 {
                    return Learn::Static;
                }
                let was_expired = Self::expired(e, now);
                e.1 = now;
                if e.0 != p {
                    e.0 = p;
                    return if was_expired { Learn::Learned } else { Learn::Moved };
                }
                return if was_expired { Learn::Learned } else { Learn::Refreshed };
            }
            if self.m.len() >= CAP {
                return Learn::Full;
            }
            self.m.insert((d, mac), (p, now, false));
            Learn::Learned
        }
    }

    fn mac(b: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, b]
    }

    proptest! {
        #[test]
        fn fdb_matches_a_map_with_explicit_time(ops in proptest::collection::vec(prop_oneof![
            (0u16..2, 0u8..8, 0u16..4).prop_map(|(d, m, p)| Op::Learn(d, m, p)),
            (0u16..2, 0u8..8, 0u16..4).prop_map(|(d, m, p)| Op::Static(d, m, p)),
            (0u64..8).prop_map(Op::Advance),
            Just(Op::Sweep),
            (0u16..2, 0u8..8).prop_map(|(d, m)| Op::Lookup(d, m)),
        ], 0..80)) {
            let mut f = Fdb::new(CAP, Duration::from_secs(AGE));
            let mut model = Model::default();
            let mut now = 0u64;
            let t = |s: u64| Instant::from_nanos(s * 1_000_000_000);
            for op in ops {
                match op {
                    Op::Learn(d, m, p) => prop_assert_eq!(f.learn(d, mac(m), PortId(p), t(now)), model.learn(d, m, p, now)),
                    Op::Static(d, m, p) => {
                        f.add_static(d, mac(m), PortId(p));
                        model.m.insert((d, m), (p, 0, true));
                    }
                    Op::Advance(s) => now += s,
                    Op::Sweep => {
                        let before = model.m.len();
                        model.m.retain(|_, e| !Model::expired(e, now));
                        prop_assert_eq!(f.sweep(t(now)), before - model.m.len());
                    }
                    Op::Lookup(d, m) => {
                        let want = model.m.get(&(d, m)).filter(|e| !Model::expired(e, now)).map(|e| PortId(e.0));
                        prop_assert_eq!(f.lookup(d, mac(m), t(now)), want);
                    }
                }
                prop_assert_eq!(f.len(), model.m.len());
            }
        }
    }
}
