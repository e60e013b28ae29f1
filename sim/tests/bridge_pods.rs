//! Two pods on one node through the node's bridge (Flannel's cni0 in podplane):
//! 1. pod-0 ARPs for pod-1: the bridge floods it to pod-1's port (and the node's own
//!    interface, which does not answer: not its address);
//! 2. pod-1 answers; the bridge has learned both MACs;
//! 3. a 1 MiB TCP transfer and an HTTP-like GET run through `parse → bridge → arp →
//!    egress`, every byte checked;
//! 4. pod-0 pings the gateway 10.244.0.1: the node answers ARP for it, and the echo
//!    itself goes to the host (the node's stack), which the simulator does not run yet,
//!    so the ping is not answered.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::IpAddr;

use podplane::Duration;
use podplane::pipeline::{DropReason, StageEvent};
use podplane::testutil::CounterExpect;
use podplane_sim::cluster::{ClusterSpec, NetworkMode, build};
use podplane_sim::{LinkConfig, Sim, seed_from_env};

#[test]
fn tcp_between_two_pods_through_the_bridge() {
    let seed = seed_from_env(41);
    let plan = ClusterSpec::default().with_node("node-a", 3).plan().unwrap();
    let mut sim = Sim::new(seed);
    let h = build(&mut sim, &plan, NetworkMode::Bridge, LinkConfig::default()).unwrap();
    let (p0, p1) = (h.pods[0][0], h.pods[0][1]);
    sim.tcp_bulk("bulk", p0, p1, 5001, 1 << 20).unwrap();
    sim.http("http", p1, p0, 80, 10_000).unwrap();
    sim.run_until_done(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    for f in sim.flows() {
        assert!(f.ok, "seed {seed}: {f:?}");
        assert_eq!(f.retransmissions, 0, "seed {seed}: clean links: {f:?}");
    }
    let c = sim.nodes()[h.nodes[0]].pipeline().counters();
    // Each pod ARPs for the other once: two broadcasts, each flooded to two other pod
    // ports and seen (and not answered) by the node.
    assert_eq!(c.events("bridge", StageEvent::Flooded), 2, "seed {seed}");
    assert_eq!(c.events("bridge", StageEvent::FdbLearned), 2, "seed {seed}");
    CounterExpect::new().drop("arp", DropReason::ArpNotForUs, 2).check(&c.snapshot());
    // The third pod saw only the two ARP broadcasts.
    let third = sim.link_id("node-a/node-a-pod-2").unwrap();
    assert_eq!(sim.link_stats(third).unwrap().delivered, 2, "seed {seed}");
}

#[test]
fn the_gateway_answers_arp_and_takes_traffic_for_itself() {
    let seed = seed_from_env(42);
    let plan = ClusterSpec::default().with_node("node-a", 2).plan().unwrap();
    let gw = plan.nodes[0].gateway;
    let mut sim = Sim::new(seed);
    let h = build(&mut sim, &plan, NetworkMode::Bridge, LinkConfig::default()).unwrap();
    sim.ping_timeout = Duration::from_millis(500);
    sim.ping("gw", h.pods[0][0], IpAddr::V4(gw), 2, Duration::from_millis(100)).unwrap();
    let _ = sim.run_until_done(Duration::from_secs(5));
    let f = &sim.flows()[0];
    assert!(f.done && !f.ok, "seed {seed}: the node has no host stack in the simulator yet: {f:?}");
    let c = sim.nodes()[0].pipeline().counters();
    assert_eq!(c.events("arp", StageEvent::ArpReplied), 1, "seed {seed}");
    let snap = c.snapshot();
    assert_eq!(snap.totals.host, 2, "seed {seed}: both echo requests delivered to the node's host");
    CounterExpect::new().check(&snap);
}

/// Pods on two nodes through direct routing (Flannel host-gw):
/// 1. pod A (10.244.0.2 on node-a) sends to pod B (10.244.1.2 on node-b): A ARPs for its
///    gateway 10.244.0.1, which node-a answers;
/// 2. node-a routes 10.244.1.0/24 via node-b's underlay address 192.168.0.11: it ARPs
///    for it on the uplink, node-b answers, the held packets go out;
/// 3. node-b routes to its connected pod CIDR on cni0: it ARPs for B through its bridge,
///    B answers, the packets enter the bridge from the bridge interface to B's port;
/// 4. a 1 MiB TCP transfer and pings complete, TTL one lower on arrival (64 - 2 hops);
///    both nodes balance their counters and drop nothing but ARP: broadcasts not for
///    them and the replies they consumed.
#[test]
fn pods_on_two_nodes_through_direct_routing() {
    let seed = seed_from_env(43);
    let plan = ClusterSpec::default().with_node("node-a", 2).with_node("node-b", 2).plan().unwrap();
    let mut sim = Sim::new(seed);
    let h = build(&mut sim, &plan, NetworkMode::Bridge, LinkConfig::default()).unwrap();
    let (a, b) = (h.pods[0][0], h.pods[1][0]);
    let b_ip = IpAddr::V4(plan.nodes[1].pods[0].ip);
    sim.ping("ping", a, b_ip, 3, Duration::from_millis(10)).unwrap();
    sim.tcp_bulk("bulk", a, b, 5001, 1 << 20).unwrap();
    sim.http("http", b, a, 80, 4096).unwrap();
    sim.run_until_done(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    for f in sim.flows() {
        assert!(f.ok, "seed {seed}: {f:?}");
    }
    for (i, n) in h.nodes.iter().enumerate() {
        let c = sim.nodes()[*n].pipeline().counters();
        let snap = c.snapshot();
        assert!(snap.balanced(), "seed {seed}");
        assert!(
            c.events("route", StageEvent::Routed) > 700,
            "seed {seed}: node {i} routed {}",
            c.events("route", StageEvent::Routed)
        );
        assert!(c.events("arp", StageEvent::ArpRequestSent) >= 1, "seed {seed}");
        for d in &snap.drops {
            assert!(
                matches!(d.reason, DropReason::ArpNotForUs | DropReason::ArpProcessed),
                "seed {seed}: node {i} dropped {d:?}\n{snap}"
            );
        }
        if i == 0 {
            println!("node-a:\n{snap}");
        }
    }
}

/// Dual-stack pods on one bridge: IPv6 neighbour discovery (multicast solicitations,
/// flooded by the bridge) and a TCP transfer over IPv6 through the node.
#[test]
fn ipv6_pods_on_one_bridge() {
    let seed = seed_from_env(44);
    // Dual-stack smoltcp hosts on a node that only bridges (no IPv6 routing yet).
    let mut sim = Sim::new(seed);
    let bridge = podplane::stage::BridgeStage::new(&podplane::stage::bridge::BridgeConfig {
        domains: vec![podplane::stage::bridge::BridgeDomain {
            name: "cni0".into(),
            ports: vec![
                podplane::stage::bridge::BridgePort { port: podplane::PortId(0), hairpin: false },
                podplane::stage::bridge::BridgePort { port: podplane::PortId(1), hairpin: false },
            ],
            ..Default::default()
        }],
        ..Default::default()
    })
    .unwrap();
    let pl = podplane::Pipeline::new(
        vec![Box::new(podplane::stage::ParseStage::new()), Box::new(bridge), Box::new(podplane::stage::EgressStage)],
        podplane::pipeline::PipelineConfig::default(),
        seed,
    );
    let n = sim.add_node("node", &["pod0", "pod1"], pl).unwrap();
    let mut hosts = Vec::new();
    for i in 0..2u8 {
        let mut cfg = podplane_sim::HostConfig::v4(&format!("p{i}"), std::net::Ipv4Addr::new(10, 244, 0, 2 + i), 24);
        cfg.ipv6 = Some((format!("fd00:10:244::{}", 2 + i).parse().unwrap(), 64));
        let hst = sim.add_host(cfg).unwrap();
        let ends = [sim.host_end(hst), sim.node_end(n, &format!("pod{i}")).unwrap()];
        sim.link(&format!("l{i}"), &ends, LinkConfig::default()).unwrap();
        hosts.push(hst);
    }
    sim.tcp_bulk6("bulk6", hosts[0], hosts[1], 5001, 256 * 1024).unwrap();
    // ICMPv6 echo both ways.
    let to1: IpAddr = "fd00:10:244::3".parse().unwrap();
    let to0: IpAddr = "fd00:10:244::2".parse().unwrap();
    sim.ping("ping6", hosts[0], to1, 3, Duration::from_millis(10)).unwrap();
    sim.ping_sweep("sweep6", hosts[1], &[to0], 2, Duration::from_millis(1)).unwrap();
    sim.run_until_done(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let flows = sim.flows();
    let f = &flows[0];
    assert!(f.ok && f.bytes == 256 * 1024, "seed {seed}: {f:?}");
    assert!(flows[1].ok && flows[1].detail.starts_with("3/3 replies"), "seed {seed}: {:?}", flows[1]);
    assert!(flows[2].ok && flows[2].detail.starts_with("2/2 replies"), "seed {seed}: {:?}", flows[2]);
    let c = sim.nodes()[n].pipeline().counters();
    assert!(c.events("bridge", StageEvent::Flooded) >= 1, "seed {seed}: the neighbour solicitation was flooded");
    assert_eq!(c.snapshot().totals.dropped, 0, "seed {seed}");
}

/// Traceroute across two nodes: TTL 1 expires at node-a (answered from the pod's
/// gateway 10.244.0.1, the address of the interface the probe came in on), TTL 2 at
/// node-b (answered from its uplink 192.168.0.11), TTL 3 reaches the pod, which answers
/// port unreachable — what Linux routers in the same places would say.
#[test]
fn traceroute_across_two_nodes() {
    let seed = seed_from_env(45);
    let plan = ClusterSpec::default().with_node("node-a", 1).with_node("node-b", 1).plan().unwrap();
    let mut sim = Sim::new(seed);
    let h = build(&mut sim, &plan, NetworkMode::Bridge, LinkConfig::default()).unwrap();
    let dst = plan.nodes[1].pods[0].ip;
    sim.traceroute("trace", h.pods[0][0], IpAddr::V4(dst), 8).unwrap();
    sim.run_until_done(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let f = &sim.flows()[0];
    assert!(f.ok, "seed {seed}: {f:?}");
    assert_eq!(f.detail, format!("1 10.244.0.1, 2 192.168.0.11, 3 {dst}"), "seed {seed}");
    let a = sim.nodes()[h.nodes[0]].pipeline().counters();
    assert_eq!(a.drops("route", DropReason::TtlExceeded), 1, "seed {seed}");
    assert_eq!(a.events("route", StageEvent::IcmpErrorSent), 1, "seed {seed}");
}
