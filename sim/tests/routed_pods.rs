//! Calico-style routed /32 pods (no bridge, no encapsulation):
//! 1. each pod has a /32 and a default route via 169.254.1.1; it ARPs for 169.254.1.1
//!    and the node answers with ee:ee:ee:ee:ee:ee (proxy ARP on the pod's port);
//! 2. the node routes the destination pod's /32 to its port, ARPs for it from the
//!    node's address, and forwards;
//! 3. across nodes it routes the other node's pod CIDR via that node's underlay address;
//! 4. TCP, HTTP-like and ping complete on one node and across two, every byte checked.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::IpAddr;

use podplane::Duration;
use podplane::pipeline::{DropReason, StageEvent};
use podplane_sim::cluster::{ClusterSpec, NetworkMode, build};
use podplane_sim::{LinkConfig, Sim, seed_from_env};

#[test]
fn routed_pods_on_one_node_and_across_two() {
    let seed = seed_from_env(51);
    let plan = ClusterSpec::default().with_node("node-a", 2).with_node("node-b", 1).plan().unwrap();
    let mut sim = Sim::new(seed);
    let h = build(&mut sim, &plan, NetworkMode::Routed, LinkConfig::default()).unwrap();
    let (a0, a1, b0) = (h.pods[0][0], h.pods[0][1], h.pods[1][0]);
    sim.tcp_bulk("same-node", a0, a1, 5001, 256 * 1024).unwrap();
    sim.tcp_bulk("cross-node", a1, b0, 5002, 256 * 1024).unwrap();
    sim.http("http", b0, a0, 80, 8192).unwrap();
    sim.ping("ping", a0, IpAddr::V4(plan.nodes[1].pods[0].ip), 3, Duration::from_millis(10)).unwrap();
    sim.run_until_done(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    for f in sim.flows() {
        assert!(f.ok, "seed {seed}: {f:?}");
    }
    let c = sim.nodes()[h.nodes[0]].pipeline().counters();
    assert_eq!(c.events("arp", StageEvent::ProxyArpReplied), 2, "seed {seed}: each pod asked for 169.254.1.1 once");
    let snap = c.snapshot();
    assert!(snap.balanced(), "seed {seed}");
    for d in &snap.drops {
        assert!(matches!(d.reason, DropReason::ArpProcessed | DropReason::ArpNotForUs), "seed {seed}: {d:?}\n{snap}");
    }
}
