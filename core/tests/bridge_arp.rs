//! The node's L2 path: parse → bridge → arp → egress, checked packet by packet against
//! what a Linux bridge (cni0) with the node's address on it does: learning, flooding,
//! hairpin, moves, ageing, static entries, ARP replies (byte for byte against a Linux
//! capture) and Calico-style proxy ARP.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::buf::{BufPool, PortId};
use podplane::pipeline::{Disposition, DropReason, Pipeline, PipelineConfig, StageEvent};
use podplane::stage::arp::{ArpConfig, CALICO_GATEWAY, CALICO_MAC, LocalAddr, ProxyArp};
use podplane::stage::bridge::{BridgeConfig, BridgeConfigError, BridgeDomain, BridgePort};
use podplane::stage::{ArpStage, BridgeStage, EgressStage, ParseStage};
use podplane::testutil::{self, CounterExpect, Run, hex};
use podplane::wire::EthernetAddress;
use podplane::wire::arp::{ArpOperation, ArpRepr};
use podplane::wire::ethernet::{EtherType, EthernetRepr};
use podplane::{Duration, Instant};

const GW_MAC: EthernetAddress = EthernetAddress([0x02, 0x00, 0x00, 0x99, 0x00, 0x01]);
const POD_A: EthernetAddress = EthernetAddress([0x02, 0x00, 0x00, 0x99, 0x00, 0x02]);
const POD_B: EthernetAddress = EthernetAddress([0x02, 0x00, 0x00, 0x99, 0x00, 0x03]);
const POD_C: EthernetAddress = EthernetAddress([0x02, 0x00, 0x00, 0x99, 0x00, 0x04]);
const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// Linux 6.18's ARP reply from 10.99.0.1 (02:00:00:99:00:01) to a request from
/// 10.99.0.2 (02:00:00:99:00:02), captured with an AF_PACKET socket on a veth in a
/// network namespace (`ip netns`, `python3` raw socket), 42 bytes, no padding.
const LINUX_ARP_REPLY: &str = "020000990002020000990001080600010800060400020200009900010a6300010200009900020a630002";

fn node(hairpin0: bool) -> Pipeline {
    let ports = (0..3).map(|p| BridgePort { port: PortId(p), hairpin: p == 0 && hairpin0 }).collect();
    let bridge = BridgeStage::new(&BridgeConfig {
        domains: vec![BridgeDomain {
            name: "cni0".into(),
            ports,
            gateway_mac: Some(GW_MAC),
            static_fdb: vec![],
            bvi: None,
        }],
        ..BridgeConfig::default()
    })
    .unwrap();
    let arp = ArpStage::new(ArpConfig {
        local: vec![LocalAddr { ip: GW_IP, mac: GW_MAC, ports: vec![PortId(0), PortId(1), PortId(2)] }],
        proxy: vec![ProxyArp { port: PortId(5), mac: CALICO_MAC, targets: vec![CALICO_GATEWAY] }],
        interfaces: vec![],
    });
    Pipeline::new(
        vec![Box::new(ParseStage::new()), Box::new(bridge), Box::new(arp), Box::new(EgressStage)],
        PipelineConfig::default(),
        1,
    )
}

fn frame(src: EthernetAddress, dst: EthernetAddress) -> Vec<u8> {
    let mut f = testutil::udp4(Ipv4Addr::new(10, 99, 0, 2), Ipv4Addr::new(10, 99, 0, 3), 1000, 2000, b"x");
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f
}

fn arp_request(src: EthernetAddress, sip: Ipv4Addr, tip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    EthernetRepr { src, dst: EthernetAddress::BROADCAST, vlan_tci: None, ethertype: EtherType::Arp }
        .emit(&mut f)
        .unwrap();
    ArpRepr {
        operation: ArpOperation::Request,
        sender_mac: src,
        sender_ip: sip,
        target_mac: EthernetAddress::default(),
        target_ip: tip,
    }
    .emit(&mut f[14..])
    .unwrap();
    f
}

/// Run frames (each on its port) at time `t`: no slot may leak on a bridge.
fn run(pl: &mut Pipeline, pool: &mut BufPool, t: Instant, frames: &[(u16, Vec<u8>)]) -> Run {
    let r = testutil::run(pl, pool, t, frames);
    assert_eq!(pool.available(), pool.capacity(), "a slot leaked");
    r
}

fn ports(r: &Run) -> Vec<u16> {
    r.tx.iter().map(|(p, _)| p.0).collect()
}

#[test]
fn learns_floods_unknown_then_forwards_known() {
    let mut pl = node(false);
    let mut pool = BufPool::with_slots(64).unwrap();
    let t = Instant::from_nanos(1);
    // A (port 0) -> B unknown: out of port 1 (the packet) and port 2 (a copy).
    let r = run(&mut pl, &mut pool, t, &[(0, frame(POD_A, POD_B))]);
    assert_eq!(ports(&r), vec![1, 2]);
    assert_eq!(r.tx[0].1, r.tx[1].1, "the copy is the same frame");
    // B answers from port 1: A is known on port 0 now.
    let r = run(&mut pl, &mut pool, t, &[(1, frame(POD_B, POD_A))]);
    assert_eq!(ports(&r), vec![0]);
    // And A -> B goes to port 1 only.
    let r = run(&mut pl, &mut pool, t, &[(0, frame(POD_A, POD_B))]);
    assert_eq!(ports(&r), vec![1]);
    let c = pl.counters();
    assert_eq!(c.events("bridge", StageEvent::FdbLearned), 2);
    assert_eq!(c.events("bridge", StageEvent::Flooded), 1);
    assert_eq!(c.events("bridge", StageEvent::FloodCopy), 1);
    CounterExpect::new().check(&c.snapshot());
}

/// The bridge remembers its last FDB answer within a batch; learning must override
/// it for the next frame of the same batch. (B announces itself with broadcasts, so
/// nothing else is looked up in between.)
#[test]
fn learning_in_a_batch_takes_effect_for_the_next_frame() {
    let mut pl = node(false);
    let mut pool = BufPool::with_slots(64).unwrap();
    let t = Instant::from_nanos(1);
    let bcast = EthernetAddress::BROADCAST;
    // A -> B (unknown: port 1 and a copy to 2), B -> all from port 1 (B learned; to 0
    // and a copy to 2), A -> B (port 1 only). Output is by port; a stale answer would
    // flood the third frame again: 0,1,1,2,2,2.
    let r = run(&mut pl, &mut pool, t, &[(0, frame(POD_A, POD_B)), (1, frame(POD_B, bcast)), (0, frame(POD_A, POD_B))]);
    assert_eq!(ports(&r), vec![0, 1, 1, 2, 2]);
    // B moves to port 2 in the middle of a batch of frames to B: a stale answer would
    // send the third frame to port 1 again (0,1,1,1).
    let r = run(&mut pl, &mut pool, t, &[(0, frame(POD_A, POD_B)), (2, frame(POD_B, bcast)), (0, frame(POD_A, POD_B))]);
    assert_eq!(ports(&r), vec![0, 1, 1, 2]);
    assert_eq!(pl.counters().events("bridge", StageEvent::FdbMoved), 1);
}

#[test]
fn same_port_needs_hairpin_and_moves_are_followed() {
    let t = Instant::from_nanos(1);
    for hairpin in [false, true] {
        let mut pl = node(hairpin);
        let mut pool = BufPool::with_slots(64).unwrap();
        run(&mut pl, &mut pool, t, &[(0, frame(POD_A, POD_B)), (1, frame(POD_B, POD_A))]);
        // C, also behind port 0, sends to A (behind port 0).
        let r = run(&mut pl, &mut pool, t, &[(0, frame(POD_C, POD_A))]);
        if hairpin {
            assert_eq!(ports(&r), vec![0]);
            CounterExpect::new().check(&pl.counters().snapshot());
        } else {
            assert_eq!(r.disp, vec![Disposition::Drop(DropReason::BridgeSamePort)]);
            CounterExpect::new().drop("bridge", DropReason::BridgeSamePort, 1).check(&pl.counters().snapshot());
        }
        // A moves to port 2.
        run(&mut pl, &mut pool, t, &[(2, frame(POD_A, POD_B))]);
        assert_eq!(pl.counters().events("bridge", StageEvent::FdbMoved), 1);
        let r = run(&mut pl, &mut pool, t, &[(1, frame(POD_B, POD_A))]);
        assert_eq!(ports(&r), vec![2]);
    }
}

#[test]
fn entries_age_after_300_seconds() {
    let mut pl = node(false);
    let mut pool = BufPool::with_slots(64).unwrap();
    let t0 = Instant::from_nanos(1);
    run(&mut pl, &mut pool, t0, &[(1, frame(POD_B, POD_A))]);
    let r = run(&mut pl, &mut pool, t0 + Duration::from_secs(300), &[(0, frame(POD_A, POD_B))]);
    assert_eq!(ports(&r), vec![1], "still known at exactly 300 s");
    let r = run(&mut pl, &mut pool, t0 + Duration::from_secs(601), &[(2, frame(POD_C, POD_B))]);
    assert_eq!(ports(&r), vec![0, 1], "aged out: flooded");
    assert!(pl.counters().events("bridge", StageEvent::FdbAged) >= 1);
}

#[test]
fn arp_for_the_gateway_is_answered_exactly_as_linux_and_still_flooded() {
    let mut pl = node(false);
    let mut pool = BufPool::with_slots(64).unwrap();
    let req = arp_request(POD_A, Ipv4Addr::new(10, 99, 0, 2), GW_IP);
    let r = run(&mut pl, &mut pool, Instant::from_nanos(1), &[(0, req.clone())]);
    // Copies of the broadcast to the other ports, and the reply back out of port 0.
    assert_eq!(ports(&r), vec![0, 1, 2]);
    assert_eq!(r.tx[0].1, hex(LINUX_ARP_REPLY), "reply differs from Linux's");
    assert_eq!(r.tx[1].1, req);
    assert_eq!(pl.counters().events("arp", StageEvent::ArpReplied), 1);
    CounterExpect::new().check(&pl.counters().snapshot());
}

#[test]
fn arp_for_another_pod_is_flooded_and_not_answered() {
    let mut pl = node(false);
    let mut pool = BufPool::with_slots(64).unwrap();
    let req = arp_request(POD_A, Ipv4Addr::new(10, 99, 0, 2), Ipv4Addr::new(10, 99, 0, 3));
    let r = run(&mut pl, &mut pool, Instant::from_nanos(1), &[(0, req)]);
    assert_eq!(ports(&r), vec![1, 2]);
    CounterExpect::new().drop("arp", DropReason::ArpNotForUs, 1).check(&pl.counters().snapshot());
}

#[test]
fn calico_proxy_arp_answers_for_169_254_1_1_only() {
    let mut pl = node(false);
    let mut pool = BufPool::with_slots(64).unwrap();
    let pod = Ipv4Addr::new(10, 244, 3, 7);
    let r = run(
        &mut pl,
        &mut pool,
        Instant::from_nanos(1),
        &[
            (5, arp_request(POD_A, pod, CALICO_GATEWAY)),
            (5, arp_request(POD_A, pod, Ipv4Addr::new(10, 244, 3, 9))),
            (6, arp_request(POD_A, pod, CALICO_GATEWAY)),
        ],
    );
    assert_eq!(ports(&r), vec![5]);
    let reply = &r.tx[0].1;
    assert_eq!(&reply[..6], &POD_A.0);
    assert_eq!(&reply[6..12], &CALICO_MAC.0);
    assert_eq!(&reply[20..22], &[0, 2]);
    assert_eq!(&reply[22..28], &CALICO_MAC.0);
    assert_eq!(&reply[28..32], &CALICO_GATEWAY.octets());
    assert_eq!(&reply[38..42], &pod.octets());
    assert_eq!(pl.counters().events("arp", StageEvent::ProxyArpReplied), 1);
    CounterExpect::new().drop("arp", DropReason::ArpNotForUs, 2).check(&pl.counters().snapshot());
}

#[test]
fn unicast_to_the_gateway_goes_to_the_host_and_arp_replies_are_consumed() {
    let mut pl = node(false);
    let mut pool = BufPool::with_slots(64).unwrap();
    let mut reply = arp_request(POD_A, Ipv4Addr::new(10, 99, 0, 2), GW_IP);
    reply[..6].copy_from_slice(&GW_MAC.0);
    reply[21] = 2;
    let r = run(&mut pl, &mut pool, Instant::from_nanos(1), &[(0, frame(POD_A, GW_MAC)), (0, reply)]);
    assert_eq!(r.host, 1);
    assert!(r.tx.is_empty());
    CounterExpect::new().drop("arp", DropReason::ArpProcessed, 1).check(&pl.counters().snapshot());
}

#[test]
fn static_entries_and_config_errors() {
    let cfg = |domains| BridgeConfig { domains, ..BridgeConfig::default() };
    let p = |n| BridgePort { port: PortId(n), hairpin: false };
    let dom = |name: &str, ports: Vec<BridgePort>| BridgeDomain { name: name.into(), ports, ..BridgeDomain::default() };
    let err = BridgeStage::new(&cfg(vec![dom("cni0", vec![p(0), p(1)]), dom("br1", vec![p(1)])])).unwrap_err();
    assert_eq!(err, BridgeConfigError::PortTaken { bridge: "br1".into(), port: 1, other: "cni0".into() });
    assert_eq!(err.to_string(), "bridge \"br1\": ports: port 1 is already in bridge \"cni0\"");
    let mut d = dom("cni0", vec![p(0)]);
    d.static_fdb = vec![(POD_A, PortId(3))];
    let err = BridgeStage::new(&cfg(vec![d])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bridge \"cni0\": static_fdb: 02:00:00:99:00:02 -> port 3: the port is not in this bridge"
    );

    let mut d = dom("cni0", vec![p(0), p(1), p(2)]);
    d.static_fdb = vec![(POD_B, PortId(2))];
    let bridge = BridgeStage::new(&cfg(vec![d])).unwrap();
    let mut pl = Pipeline::new(
        vec![Box::new(ParseStage::new()), Box::new(bridge), Box::new(EgressStage)],
        PipelineConfig::default(),
        1,
    );
    let mut pool = BufPool::with_slots(16).unwrap();
    // B's static entry wins over learning it on port 1.
    let r = run(&mut pl, &mut pool, Instant::from_nanos(1), &[(1, frame(POD_B, POD_A)), (0, frame(POD_A, POD_B))]);
    assert_eq!(ports(&r), vec![0, 2, 2], "flood of B->A to ports 0 and 2, then A->B to the static port 2");
}

#[test]
fn a_batch_of_broadcasts_on_a_64_port_bridge_is_flooded_completely() {
    let ports = (0..64).map(|p| BridgePort { port: PortId(p), hairpin: false }).collect();
    let bridge = BridgeStage::new(&BridgeConfig {
        domains: vec![BridgeDomain { name: "big".into(), ports, gateway_mac: None, static_fdb: vec![], bvi: None }],
        ..BridgeConfig::default()
    })
    .unwrap();
    let mut pl = Pipeline::new(
        vec![Box::new(ParseStage::new()), Box::new(bridge), Box::new(EgressStage)],
        PipelineConfig::default(),
        1,
    );
    let mut pool = BufPool::with_slots(4096).unwrap();
    let frames: Vec<(u16, Vec<u8>)> = (0..32u8)
        .map(|k| {
            let src = EthernetAddress([0x02, 0, 0, 0, 1, k]);
            (u16::from(k), frame(src, EthernetAddress::BROADCAST))
        })
        .collect();
    let r = run(&mut pl, &mut pool, Instant::from_nanos(1), &frames);
    assert_eq!(r.tx.len(), 32 * 63);
    assert_eq!(pl.counters().events("bridge", StageEvent::FloodCopy), 32 * 62);
    CounterExpect::new().check(&pl.counters().snapshot());
}

#[test]
fn a_mac_moving_back_and_forth_within_a_second_is_followed() {
    let mut pl = node(false);
    let mut pool = BufPool::with_slots(64).unwrap();
    let t = Instant::from_nanos(1);
    // A on port 0, then port 2, then port 0 again, all in the same instant.
    run(&mut pl, &mut pool, t, &[(0, frame(POD_A, POD_B))]);
    run(&mut pl, &mut pool, t, &[(2, frame(POD_A, POD_B))]);
    run(&mut pl, &mut pool, t, &[(0, frame(POD_A, POD_B))]);
    let r = run(&mut pl, &mut pool, t, &[(1, frame(POD_B, POD_A))]);
    assert_eq!(ports(&r), vec![0], "A is back on port 0");
    assert_eq!(pl.counters().events("bridge", StageEvent::FdbMoved), 2);
}

#[test]
fn a_frame_on_a_port_no_stage_knows_is_counted_not_lost() {
    let mut pl = node(false);
    let mut pool = BufPool::with_slots(16).unwrap();
    let r = run(&mut pl, &mut pool, Instant::from_nanos(1), &[(9, frame(POD_A, POD_B))]);
    assert!(r.tx.is_empty());
    assert_eq!(r.disp, vec![Disposition::Drop(DropReason::NoDisposition)]);
    CounterExpect::new().drop("pipeline", DropReason::NoDisposition, 1).check(&pl.counters().snapshot());
}

/// Runs of identical frames (a bulk flow) take the previous frame's decision; a frame
/// with the same MACs from another port (a move) or between two runs must not.
#[test]
fn runs_of_one_flow_follow_moves_in_the_same_batch() {
    let mut pl = node(false);
    let mut pool = BufPool::with_slots(64).unwrap();
    let t = Instant::from_nanos(1);
    // B known on port 1; C known on port 2.
    run(
        &mut pl,
        &mut pool,
        t,
        &[(1, frame(POD_B, EthernetAddress::BROADCAST)), (2, frame(POD_C, EthernetAddress::BROADCAST))],
    );
    // A -> B three times from port 0, then A -> C, A -> B again, then A -> B from
    // port 2 (A moved there: to port 1 still), then C -> A from port 2 (C is on the
    // port A moved to: same port without hairpin, dropped) and B -> A from port 1
    // (to port 2, where A is now).
    let frames = [
        (0, frame(POD_A, POD_B)),
        (0, frame(POD_A, POD_B)),
        (0, frame(POD_A, POD_B)),
        (0, frame(POD_A, POD_C)),
        (0, frame(POD_A, POD_B)),
        (2, frame(POD_A, POD_B)),
        (2, frame(POD_C, POD_A)),
        (1, frame(POD_B, POD_A)),
    ];
    let r = run(&mut pl, &mut pool, t, &frames);
    // By port, in arrival order within a port: four frames to B and one (B -> A) to
    // port 2 with A's move, A -> C to port 2.
    assert_eq!(ports(&r), vec![1, 1, 1, 1, 1, 2, 2]);
    let c = pl.counters();
    assert_eq!(c.events("bridge", StageEvent::FdbMoved), 1);
    assert_eq!(c.drops("bridge", DropReason::BridgeSamePort), 1);
}
