//! NAT in a pipeline: parse → conntrack → dnat → snat → ct_commit → xconnect, port 0
//! the pod side and port 1 the world. Every packet that leaves has its checksums
//! checked by etherparse; each kernel bug NAT prevents has a test that turns the fix
//! off and sees the symptom.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::buf::{Batch, BufPool, Owner, PktId, PortId};
use crate::pipeline::{DropReason, Pipeline, PipelineConfig, Stage, StageEvent};
use crate::stage::conntrack::{CommitStage, Conntrack, ConntrackStage, CtConfig, CtFixes, SharedConntrack};
use crate::stage::{ParseStage, XconnectStage};
use crate::testutil::{icmp4_echo, tcp4_seq, udp4};
use crate::time::{Duration, Instant};
use crate::wire::checksum::{checksum, pseudo_v4};
use crate::wire::cidr::Cidr;
use crate::wire::tcp::TcpFlags;

const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 3);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const WORLD: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn masq_config() -> NatConfig {
    NatConfig {
        masquerade: Some(Masquerade {
            sources: vec![Cidr::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap()],
            except: vec![Cidr::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap()],
        }),
        fallback: Some(NODE),
        dnat: vec![
            DnatRule { proto: 6, dst: IpAddr::V4(VIP), port: 80, to: IpAddr::V4(POD_B), to_port: 8080 },
            DnatRule { proto: 17, dst: IpAddr::V4(VIP), port: 53, to: IpAddr::V4(POD_B), to_port: 5353 },
        ],
        ..NatConfig::default()
    }
}

struct Node {
    pl: Pipeline,
    ct: SharedConntrack,
    pool: BufPool,
}

impl Node {
    fn new(cfg: NatConfig, ct_cfg: CtConfig) -> Self {
        let ct = Conntrack::shared(ct_cfg);
        let mut x = XconnectStage::new();
        x.connect(PortId(0), PortId(1)).unwrap();
        let stages: Vec<Box<dyn Stage>> = vec![
            Box::new(ParseStage::new()),
            Box::new(ConntrackStage::new(ct.clone())),
            Box::new(NatStage::dnat(ct.clone(), cfg.clone())),
            Box::new(NatStage::snat(ct.clone(), cfg)),
            Box::new(CommitStage::new(ct.clone())),
            Box::new(x),
        ];
        Node { pl: Pipeline::new(stages, PipelineConfig::default(), 7), ct, pool: BufPool::with_slots(64).unwrap() }
    }

    /// Send `frames` (port, bytes) as one batch; every frame that left, in input
    /// order, with its checksums checked.
    fn run(&mut self, now: Instant, frames: &[(u16, Vec<u8>)]) -> Vec<Vec<u8>> {
        let mut batch = Batch::new();
        for (port, f) in frames {
            let p = self.pool.alloc(Owner::Pipeline).unwrap();
            self.pool.set_data(p, f).unwrap();
            self.pool.meta_mut(p).in_port = PortId(*port);
            batch.push(p).unwrap();
        }
        let mut out: Vec<PktId> = self.pl.process(&mut self.pool, now, &mut batch).tx().map(|(_, p)| p).collect();
        out.sort_unstable();
        let got: Vec<Vec<u8>> = out.iter().map(|&p| self.pool.data(p).to_vec()).collect();
        for p in out {
            self.pool.free(p).unwrap();
        }
        for f in got.iter().filter(|f| f[12..14] == [0x08, 0x00]) {
            check_sums(f);
        }
        got
    }

    fn one(&mut self, now: Instant, port: u16, f: Vec<u8>) -> Option<Vec<u8>> {
        let mut v = self.run(now, &[(port, f)]);
        assert!(v.len() <= 1);
        v.pop()
    }

    fn drops(&self, stage: &str, r: DropReason) -> u64 {
        self.pl.counters().drops(stage, r)
    }

    fn events(&self, stage: &str, e: StageEvent) -> u64 {
        self.pl.counters().events(stage, e)
    }
}

/// Assert every checksum of an Ethernet/IPv4 frame against etherparse (TCP, UDP) or a
/// whole-message sum (ICMP), inner headers of ICMP errors included.
fn check_sums(f: &[u8]) {
    let ip = &f[14..];
    let (h, rest) = etherparse::Ipv4Header::from_slice(ip).unwrap();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum of {f:02x?}");
    let payload = &rest[..usize::from(h.total_len) - h.header_len()];
    if h.more_fragments || h.fragment_offset.value() != 0 {
        // A fragment: its transport checksum covers the whole datagram (`reassemble`).
        return;
    }
    match h.protocol {
        etherparse::IpNumber::TCP => {
            let (t, data) = etherparse::TcpHeader::from_slice(payload).unwrap();
            assert_eq!(t.checksum, t.calc_checksum_ipv4(&h, data).unwrap(), "TCP checksum");
        }
        etherparse::IpNumber::UDP => {
            let (u, data) = etherparse::UdpHeader::from_slice(payload).unwrap();
            if u.checksum != 0 {
                assert_eq!(u.checksum, u.calc_checksum_ipv4(&h, data).unwrap(), "UDP checksum");
            }
        }
        etherparse::IpNumber::ICMP => {
            assert_eq!(checksum(payload), 0, "ICMP checksum");
            if matches!(payload[0], 3 | 11) {
                // The quoted IP header's checksum, and its UDP checksum.
                let q = &payload[8..];
                let qh = etherparse::Ipv4Header::from_slice(q).unwrap().0;
                assert_eq!(qh.header_checksum, qh.calc_header_checksum(), "quoted IPv4 header checksum");
                if qh.protocol == etherparse::IpNumber::UDP {
                    let u = &q[qh.header_len()..];
                    let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
                    if u.len() >= len && u16::from_be_bytes([u[6], u[7]]) != 0 {
                        let mut s = pseudo_v4(qh.source.into(), qh.destination.into(), 17, u16::try_from(len).unwrap());
                        s.add_bytes(&u[..len]);
                        assert_eq!(s.fold(), 0xffff, "quoted UDP checksum");
                    }
                }
            }
        }
        _ => {}
    }
}

fn src(f: &[u8]) -> (Ipv4Addr, u16) {
    (Ipv4Addr::new(f[26], f[27], f[28], f[29]), u16::from_be_bytes([f[34], f[35]]))
}

fn dst(f: &[u8]) -> (Ipv4Addr, u16) {
    (Ipv4Addr::new(f[30], f[31], f[32], f[33]), u16::from_be_bytes([f[36], f[37]]))
}

const T0: Instant = Instant::ZERO;

#[test]
fn masquerade_translates_both_ways_with_correct_checksums() {
    let mut n = Node::new(masq_config(), CtConfig::default());
    let out = n.one(T0, 0, udp4(POD, WORLD, 40000, 53, b"query")).unwrap();
    let (a, port) = src(&out);
    assert_eq!(a, NODE);
    assert!(port >= 1024, "{port}");
    assert_eq!(dst(&out), (WORLD, 53));
    assert_eq!(n.events("snat", StageEvent::SnatNew), 1);
    // The reply comes back to the node's port and reaches the pod.
    let back = n.one(T0 + Duration::from_millis(1), 1, udp4(WORLD, NODE, 53, port, b"answer")).unwrap();
    assert_eq!(src(&back), (WORLD, 53));
    assert_eq!(dst(&back), (POD, 40000));
    let ct = n.ct.lock().unwrap();
    let (_, e) = ct.v4().iter(T0).next().unwrap();
    assert_eq!((e.original.src, e.original.sport, e.reply.dst, e.reply.dport), (POD, 40000, NODE, port));
    // Pod-to-pod traffic inside the cluster is not masqueraded.
    drop(ct);
    let inside = n.one(T0, 0, udp4(POD, POD_B, 40001, 53, b"q")).unwrap();
    assert_eq!(src(&inside), (POD, 40001));
}

#[test]
fn zero_udp_checksum_stays_zero_and_keep_port_keeps_the_port() {
    let cfg = NatConfig { mode: PortMode::KeepPort, ..masq_config() };
    let mut n = Node::new(cfg, CtConfig::default());
    let mut f = udp4(POD, WORLD, 40000, 53, b"q");
    f[40..42].fill(0);
    let out = n.one(T0, 0, f).unwrap();
    assert_eq!(src(&out), (NODE, 40000));
    assert_eq!(&out[40..42], &[0, 0]);
}

#[test]
fn dnat_translates_a_tcp_handshake_and_the_reply_back() {
    let mut n = Node::new(masq_config(), CtConfig::default());
    let client = (POD, 41000);
    let syn = n.one(T0, 0, tcp4_seq(client, (VIP, 80), TcpFlags::SYN, 1000, 0, b"")).unwrap();
    assert_eq!(dst(&syn), (POD_B, 8080));
    assert_eq!(src(&syn), client);
    let synack = n.one(T0, 1, tcp4_seq((POD_B, 8080), client, TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b"")).unwrap();
    assert_eq!(src(&synack), (VIP, 80));
    assert_eq!(dst(&synack), client);
    let ack = n.one(T0, 0, tcp4_seq(client, (VIP, 80), TcpFlags::ACK, 1001, 5001, b"")).unwrap();
    assert_eq!(dst(&ack), (POD_B, 8080));
    assert_eq!(n.events("dnat", StageEvent::DnatNew), 1);
    assert_eq!(n.events("ct_commit", StageEvent::CtNew), 1);
}

#[test]
fn icmp_echo_identifier_is_translated_and_restored() {
    let mut n = Node::new(masq_config(), CtConfig::default());
    let out = n.one(T0, 0, icmp4_echo(POD, WORLD, 77, 1)).unwrap();
    assert_eq!(src(&out).0, NODE);
    let id = u16::from_be_bytes([out[38], out[39]]);
    // The far end answers with the translated identifier.
    let mut reply = icmp4_echo(WORLD, NODE, id, 1);
    reply[34] = 0;
    reply[36..38].fill(0);
    let c = checksum(&reply[34..]);
    reply[36..38].copy_from_slice(&c.to_be_bytes());
    let back = n.one(T0, 1, reply).unwrap();
    assert_eq!(dst(&back).0, POD);
    assert_eq!(u16::from_be_bytes([back[38], back[39]]), 77);
}

/// An ICMP error from `from` to `to` quoting `quoted` (an Ethernet frame), as a
/// router sends it: type 3 code 4 with the next-hop MTU.
fn frag_needed(from: Ipv4Addr, to: Ipv4Addr, quoted: &[u8], mtu: u16) -> Vec<u8> {
    let q = &quoted[14..quoted.len().min(14 + 28)];
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(q);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = udp4(from, to, 1, 1, &[]);
    f.truncate(34);
    f[23] = 1;
    let total = u16::try_from(20 + icmp.len()).unwrap();
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[24..26].fill(0);
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&icmp);
    f
}

fn frag_needed_through_masquerade(fixes: NatFixes) -> Vec<u8> {
    let mut n = Node::new(NatConfig { fixes, ..masq_config() }, CtConfig::default());
    let out = n.one(T0, 0, udp4(POD, WORLD, 40000, 53, b"a large datagram")).unwrap();
    n.one(T0, 1, frag_needed(ROUTER, NODE, &out, 1400)).unwrap()
}

#[test]
fn icmp_errors_about_masqueraded_packets_reach_the_pod_translated() {
    // cilium#47755, calico#8854: frag-needed must reach the sender quoting its own
    // packet, or PMTU discovery stalls.
    let e = frag_needed_through_masquerade(NatFixes::default());
    assert_eq!(src(&e).0, ROUTER);
    assert_eq!(dst(&e).0, POD);
    let inner = &e[42..];
    assert_eq!(Ipv4Addr::new(inner[12], inner[13], inner[14], inner[15]), POD);
    assert_eq!(u16::from_be_bytes([inner[20], inner[21]]), 40000);
    assert_eq!(u16::from_be_bytes([e[40], e[41]]), 1400, "the MTU is untouched");
}

#[test]
fn without_the_inner_rewrite_the_pod_gets_an_error_about_a_packet_it_never_sent() {
    let e = frag_needed_through_masquerade(NatFixes { icmp_inner: false, ..NatFixes::default() });
    assert_eq!(dst(&e).0, POD);
    let inner = &e[42..];
    // The symptom users reported: the quote still names the node's address and port,
    // so the pod's stack finds no socket and ignores it.
    assert_eq!(Ipv4Addr::new(inner[12], inner[13], inner[14], inner[15]), NODE);
    assert_ne!(u16::from_be_bytes([inner[20], inner[21]]), 40000);
}

#[test]
fn an_icmp_error_from_a_backend_about_a_dnat_flow_comes_from_the_service() {
    let mut n = Node::new(masq_config(), CtConfig::default());
    let q = n.one(T0, 0, udp4(POD, VIP, 40000, 53, b"q")).unwrap();
    assert_eq!(dst(&q), (POD_B, 5353));
    let mut unreach = frag_needed(POD_B, POD, &q, 0);
    unreach[35] = 3; // port unreachable
    unreach[36..38].fill(0);
    let c = checksum(&unreach[34..]);
    unreach[36..38].copy_from_slice(&c.to_be_bytes());
    let e = n.one(T0, 1, unreach).unwrap();
    assert_eq!(src(&e).0, VIP);
    assert_eq!(dst(&e).0, POD);
    let inner = &e[42..];
    assert_eq!(Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]), VIP);
    assert_eq!(u16::from_be_bytes([inner[22], inner[23]]), 53);
}

fn hairpin(on: bool) -> Vec<u8> {
    let cfg = NatConfig {
        hairpin: on,
        dnat: vec![DnatRule { proto: 6, dst: IpAddr::V4(VIP), port: 80, to: IpAddr::V4(POD), to_port: 8080 }],
        ..masq_config()
    };
    let mut n = Node::new(cfg, CtConfig::default());
    let syn = n.one(T0, 0, tcp4_seq((POD, 41000), (VIP, 80), TcpFlags::SYN, 1000, 0, b"")).unwrap();
    assert_eq!(dst(&syn), (POD, 8080));
    if on {
        assert_eq!(n.events("snat", StageEvent::NatHairpin), 1);
        // The pod answers the node, and the answer goes back through both reverse
        // translations.
        let (a, p) = src(&syn);
        let synack =
            n.one(T0, 1, tcp4_seq((POD, 8080), (a, p), TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b"")).unwrap();
        assert_eq!(src(&synack), (VIP, 80));
        assert_eq!(dst(&synack), (POD, 41000));
    }
    syn
}

#[test]
fn a_pod_reaching_itself_through_a_service_is_masqueraded() {
    let syn = hairpin(true);
    assert_eq!(src(&syn).0, NODE);
}

#[test]
fn without_hairpin_masquerade_the_pod_would_answer_itself() {
    // kubernetes#20475: the SYN reaches the pod from its own address, so its stack
    // answers over loopback and the answer never meets the reverse DNAT.
    let syn = hairpin(false);
    assert_eq!(src(&syn), (POD, 41000));
}

#[test]
fn port_exhaustion_is_a_counted_drop_and_ports_are_unique_per_destination() {
    // cilium#23604: SNAT exhaustion must drop, never reuse a live tuple.
    let cfg = NatConfig { ports: 2000..=2001, ..masq_config() };
    let mut n = Node::new(cfg, CtConfig::default());
    let mut ports = Vec::new();
    for sport in [40000, 40001] {
        let out = n.one(T0, 0, udp4(POD, WORLD, sport, 53, b"q")).unwrap();
        ports.push(src(&out).1);
    }
    ports.sort_unstable();
    assert_eq!(ports, [2000, 2001]);
    assert!(n.one(T0, 0, udp4(POD, WORLD, 40002, 53, b"q")).is_none());
    assert_eq!(n.drops("snat", DropReason::NatPortExhausted), 1);
    // Another destination can use the same ports.
    let other = n.one(T0, 0, udp4(POD, Ipv4Addr::new(1, 0, 0, 1), 40002, 53, b"q")).unwrap();
    assert!((2000..=2001).contains(&src(&other).1));
    assert_eq!(n.ct.lock().unwrap().len().0, 3);
}

fn dns_pair(fixes: CtFixes) -> (Node, Vec<Vec<u8>>) {
    let mut n = Node::new(masq_config(), CtConfig { fixes, ..CtConfig::default() });
    let out = n.run(T0, &[(0, udp4(POD, VIP, 40000, 53, b"A?")), (0, udp4(POD, VIP, 40000, 53, b"AAAA?"))]);
    (n, out)
}

#[test]
fn two_queries_of_one_new_connection_in_one_batch_both_go_through_dnat() {
    let (n, out) = dns_pair(CtFixes::default());
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|f| dst(f) == (POD_B, 5353)));
    assert_eq!(n.ct.lock().unwrap().len().0, 1);
}

#[test]
fn without_pending_visibility_the_second_query_loses_the_insert_race() {
    // kubernetes#56903: each query makes its own unconfirmed entry and the second
    // one clashes at confirm: dropped, and the resolver waits 5 s to retry.
    let (n, out) = dns_pair(CtFixes { pending_visible: false, ..CtFixes::default() });
    assert_eq!(out.len(), 1);
    assert_eq!(n.drops("ct_commit", DropReason::CtClash), 1);
}

fn out_of_window(fixes: CtFixes) -> (Node, Option<Vec<u8>>) {
    let mut n = Node::new(masq_config(), CtConfig { fixes, ..CtConfig::default() });
    let client = (POD, 41000);
    let backend = (POD_B, 8080);
    n.one(T0, 0, tcp4_seq(client, (VIP, 80), TcpFlags::SYN, 1000, 0, b"")).unwrap();
    n.one(T0, 1, tcp4_seq(backend, client, TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b"")).unwrap();
    n.one(T0, 0, tcp4_seq(client, (VIP, 80), TcpFlags::ACK, 1001, 5001, b"")).unwrap();
    // A segment from the backend beyond the client's window (65535 from 5001) by more
    // than a window: INVALID.
    // (One under the window, a late retransmission, is only ignored since Linux 6.0,
    // and translated; before, it was INVALID too.)
    let late = n.one(T0, 1, tcp4_seq(backend, client, TcpFlags::ACK, 5001 + 200_000, 1001, b""));
    (n, late)
}

#[test]
fn an_out_of_window_segment_is_dropped_not_sent_untranslated() {
    let (n, late) = out_of_window(CtFixes::default());
    assert!(late.is_none());
    assert_eq!(n.drops("conntrack", DropReason::CtInvalid), 1);
}

#[test]
fn without_dropping_invalid_the_segment_leaves_with_the_backends_address() {
    // kubernetes#74839: the client gets a segment from an address it never talked to
    // and answers with a RST that kills the real connection.
    let (_, late) = out_of_window(CtFixes { drop_invalid: false, ..CtFixes::default() });
    let late = late.unwrap();
    assert_eq!(src(&late), (POD_B, 8080));
}

#[test]
fn a_new_connection_dropped_after_nat_leaves_nothing_behind() {
    // No egress address: masquerade refuses, and the entry is never committed.
    let cfg = NatConfig { fallback: None, ..masq_config() };
    let mut n = Node::new(cfg, CtConfig::default());
    assert!(n.one(T0, 0, udp4(POD, WORLD, 40000, 53, b"q")).is_none());
    assert_eq!(n.drops("snat", DropReason::NatNoAddress), 1);
    assert!(n.ct.lock().unwrap().is_empty());
}

#[test]
fn a_new_connection_whose_tuple_another_took_by_dnat_in_the_same_batch_clashes() {
    // The backend's packet to the client's port is looked up before the query's DNAT
    // gives the query's connection that tuple as its reply: the commit must still
    // find the clash (the commit skips looking for tuples found free only while no
    // reply changed unchecked in the batch; without that rule it inserted both).
    let mut n = Node::new(masq_config(), CtConfig::default());
    let frames = [(0, udp4(POD, VIP, 40000, 53, b"q")), (1, udp4(POD_B, POD, 5353, 40000, b"not an answer"))];
    let out = n.run(T0, &frames);
    assert_eq!(out.iter().map(|f| dst(f)).collect::<Vec<_>>(), vec![(POD_B, 5353)]);
    assert_eq!(n.drops("ct_commit", DropReason::CtClash), 1);
    let c = n.ct.lock().unwrap();
    assert_eq!(c.len(), (1, 0));
    // Each tuple in the table once: the query's reply tuple is its own.
    let reply = crate::table::conntrack::Tuple::new(POD_B, POD, 5353, 40000, 17, 0);
    assert_eq!(c.v4().lookup(&reply, T0).map(|(_, d)| d), Some(crate::stage::conntrack::tcp::Dir::Reply));
}

#[test]
fn connections_are_listed_as_conntrack_l_prints_them_and_flushed_by_filter() {
    let cfg = NatConfig { mode: PortMode::KeepPort, ..masq_config() };
    let mut n = Node::new(cfg, CtConfig::default());
    let client = (POD, 41000);
    n.one(T0, 0, tcp4_seq(client, (VIP, 80), TcpFlags::SYN, 1000, 0, b"")).unwrap();
    n.one(T0, 1, tcp4_seq((POD_B, 8080), client, TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b"")).unwrap();
    n.one(T0, 0, tcp4_seq(client, (VIP, 80), TcpFlags::ACK, 1001, 5001, b"")).unwrap();
    n.one(T0, 0, udp4(POD, WORLD, 40000, 53, b"q")).unwrap();
    let later = T0 + Duration::from_secs(1);
    let lines: Vec<String> = n.ct.lock().unwrap().list(later).iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "tcp      6 86399 ESTABLISHED src=10.244.1.2 dst=10.96.0.10 sport=41000 dport=80 \
             src=10.244.2.3 dst=10.244.1.2 sport=8080 dport=41000 [ASSURED] mark=0 use=1",
            "udp      17 29 src=10.244.1.2 dst=1.1.1.1 sport=40000 dport=53 [UNREPLIED] \
             src=1.1.1.1 dst=192.168.1.10 sport=53 dport=40000 mark=0 use=1",
        ]
    );
    let udp_only = crate::stage::conntrack::Filter { proto: Some(17), ..Default::default() };
    assert_eq!(n.ct.lock().unwrap().flush(&udp_only, later), 1);
    assert_eq!(n.ct.lock().unwrap().len(), (1, 0));
}

/// A UDP datagram of `len` payload bytes from `s` to `d`, cut into IPv4 fragments of
/// at most 1480 bytes of IP payload (identification 0x1234), as frames.
fn fragments(s: (Ipv4Addr, u16), d: (Ipv4Addr, u16), len: usize) -> Vec<Vec<u8>> {
    let payload: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
    let whole = udp4(s.0, d.0, s.1, d.1, &payload);
    let l4 = &whole[34..];
    let mut out = Vec::new();
    for (k, chunk) in l4.chunks(1480).enumerate() {
        let mut f = whole[..34].to_vec();
        let total = u16::try_from(20 + chunk.len()).unwrap();
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[18..20].copy_from_slice(&0x1234u16.to_be_bytes());
        let more = (k + 1) * 1480 < l4.len();
        let off = u16::try_from(k * 1480 / 8).unwrap() | if more { 0x2000 } else { 0 };
        f[20..22].copy_from_slice(&off.to_be_bytes());
        f[24..26].fill(0);
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(chunk);
        out.push(f);
    }
    out
}

/// The UDP datagram the fragments make, checked: its checksum over the addresses
/// of the first fragment's header; returns (source, destination) of the datagram.
fn reassemble(frags: &[Vec<u8>]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let mut frags = frags.to_vec();
    frags.sort_by_key(|f| u16::from_be_bytes([f[20], f[21]]) & 0x1fff);
    let mut l4 = Vec::new();
    for f in &frags {
        assert_eq!(&f[26..34], &frags[0][26..34], "every fragment has the same addresses");
        assert_eq!(&f[18..20], &0x1234u16.to_be_bytes(), "identification kept");
        l4.extend_from_slice(&f[34..]);
    }
    let (s, d) = (src(&frags[0]).0, dst(&frags[0]).0);
    let mut sum = pseudo_v4(s, d, 17, u16::try_from(l4.len()).unwrap());
    sum.add_bytes(&l4);
    assert_eq!(sum.fold(), 0xffff, "the reassembled datagram's UDP checksum");
    (src(&frags[0]), dst(&frags[0]))
}

#[test]
fn fragmented_udp_goes_through_masquerade_and_dnat_whole() {
    let mut n = Node::new(masq_config(), CtConfig::default());
    let out = n.run(T0, &fragments((POD, 40000), (WORLD, 53), 2500).into_iter().map(|f| (0, f)).collect::<Vec<_>>());
    assert_eq!(out.len(), 2, "{}", n.pl.counters().snapshot());
    let (s, d) = reassemble(&out);
    assert_eq!((s.0, d), (NODE, (WORLD, 53)));
    // The answer, fragmented too, comes back to the pod whole.
    let back = n.run(T0, &fragments((WORLD, 53), (NODE, s.1), 2000).into_iter().map(|f| (1, f)).collect::<Vec<_>>());
    assert_eq!(reassemble(&back), ((WORLD, 53), (POD, 40000)));
    // Destination NAT: every fragment goes to the endpoint.
    let out = n.run(T0, &fragments((POD, 41000), (VIP, 53), 3000).into_iter().map(|f| (0, f)).collect::<Vec<_>>());
    assert_eq!(out.len(), 3);
    assert_eq!(reassemble(&out), ((POD, 41000), (POD_B, 5353)));
    assert_eq!(n.ct.lock().unwrap().len().0, 2, "one connection per datagram flow, none for fragments");
}

#[test]
fn a_later_fragment_without_its_first_is_dropped() {
    let mut n = Node::new(masq_config(), CtConfig::default());
    let frags = fragments((POD, 40000), (WORLD, 53), 2500);
    assert!(n.one(T0, 0, frags[1].clone()).is_none());
    assert_eq!(n.drops("conntrack", DropReason::CtFragmentUnknown), 1);
}

/// The UDP checksum of an Ethernet/IPv6/UDP frame, checked against its pseudo-header.
fn check_udp6(f: &[u8]) {
    let src = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap());
    let dst = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
    let l4 = &f[54..];
    let mut sum = crate::wire::checksum::pseudo_v6(src, dst, 17, u32::try_from(l4.len()).unwrap());
    sum.add_bytes(l4);
    assert_eq!(sum.fold(), 0xffff, "UDP over IPv6 checksum");
}

#[test]
fn ipv6_destination_nat_both_ways() {
    let (client, vip, ep): (std::net::Ipv6Addr, std::net::Ipv6Addr, std::net::Ipv6Addr) =
        ("fd00::2".parse().unwrap(), "fd00:96::10".parse().unwrap(), "fd00::20".parse().unwrap());
    let cfg = NatConfig {
        dnat: vec![DnatRule { proto: 17, dst: IpAddr::V6(vip), port: 53, to: IpAddr::V6(ep), to_port: 5353 }],
        ..masq_config()
    };
    let mut n = Node::new(cfg, CtConfig::default());
    let out = n.one(T0, 0, crate::testutil::udp6(client, vip, 40000, 53, b"query")).unwrap();
    assert_eq!(&out[38..54], &ep.octets(), "to the endpoint");
    assert_eq!(u16::from_be_bytes([out[56], out[57]]), 5353);
    check_udp6(&out);
    let back = n.one(T0, 1, crate::testutil::udp6(ep, client, 5353, 40000, b"answer")).unwrap();
    assert_eq!(&back[22..38], &vip.octets(), "from the service");
    assert_eq!(u16::from_be_bytes([back[54], back[55]]), 53);
    check_udp6(&back);
    assert_eq!(n.ct.lock().unwrap().len(), (0, 1));
}
