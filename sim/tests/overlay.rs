//! Three nodes, pods on each, joined by an overlay (VXLAN as Flannel, IPIP as Calico,
//! and VXLAN cross-subnet with the nodes on two subnets behind a router):
//! every pod sends TCP to every pod of the other nodes, every byte checked; the
//! underlay carries only encapsulated pod traffic; a node taken out of a peer table
//! stops receiving from it.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use podplane::Duration;
use podplane::pipeline::{DropReason, StageEvent};
use podplane::stage::EncapStage;
use podplane_sim::cluster::{ClusterSpec, NetworkMode, build};
use podplane_sim::{LinkConfig, Sim, seed_from_env};

fn cluster(seed: u64, mode: NetworkMode) -> (Sim, podplane_sim::cluster::ClusterHandles) {
    let plan = ClusterSpec::default().with_node("n0", 2).with_node("n1", 2).with_node("n2", 2).plan().unwrap();
    let mut sim = Sim::new(seed);
    let h = build(&mut sim, &plan, mode, LinkConfig::default()).unwrap();
    (sim, h)
}

#[test]
fn all_pairs_tcp_across_nodes_over_vxlan_and_ipip() {
    for mode in [NetworkMode::Vxlan, NetworkMode::Ipip, NetworkMode::VxlanCrossSubnet] {
        let seed = seed_from_env(11);
        let (mut sim, h) = cluster(seed, mode);
        let mut port = 6000;
        for (ni, pods) in h.pods.iter().enumerate() {
            for (pi, &from) in pods.iter().enumerate() {
                for (nj, others) in h.pods.iter().enumerate() {
                    if nj == ni {
                        continue;
                    }
                    for &to in others {
                        port += 1;
                        sim.tcp_bulk(&format!("n{ni}p{pi}->{to}"), from, to, port, 48 * 1024).unwrap();
                    }
                }
            }
        }
        sim.run_until_done(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{mode:?} seed {seed}: {e}"));
        let flows = sim.flows();
        assert_eq!(flows.len(), 24);
        for f in &flows {
            assert!(f.ok, "{mode:?}, seed {seed} (PODPLANE_SEED={seed} to re-run): {f:?}");
        }
        if mode == NetworkMode::VxlanCrossSubnet {
            // n0 and n2 share 192.168.0.0/24: routed directly; n1 (192.168.1.0/24) is
            // reached through VXLAN via the router, which saw only tunnel traffic.
            let router = sim.nodes().iter().find(|n| n.name() == "router").unwrap();
            assert!(router.pipeline().counters().events("route", StageEvent::Routed) > 0);
            let n0 = sim.nodes()[h.nodes[0]].pipeline().counters();
            let (routed, wrapped) =
                (n0.events("route", StageEvent::Routed), n0.events("encap", StageEvent::Encapsulated));
            assert!(wrapped > 0 && wrapped < routed / 2, "n0 wraps only its traffic for n1: {wrapped} of {routed}");
        }
        for n in sim.nodes().iter().filter(|n| n.name() != "router") {
            let c = n.pipeline().counters();
            assert!(c.events("encap", StageEvent::Encapsulated) > 0, "{mode:?} {}", n.name());
            assert!(c.events("decap", StageEvent::Decapsulated) > 0, "{mode:?} {}", n.name());
            assert!(c.snapshot().balanced(), "{mode:?}: {}", c.snapshot());
            assert_eq!(c.drops("route", DropReason::FragNeeded), 0, "pods have the tunnel's MTU");
        }
    }
}

#[test]
fn a_node_removed_from_the_peer_table_stops_receiving() {
    let seed = seed_from_env(12);
    let (mut sim, h) = cluster(seed, NetworkMode::Vxlan);
    let n2_ip = h.node_ips[2];
    // n0 forgets n2: its pods' traffic for n2 is dropped at n0's encap, counted.
    if let Some(enc) = sim.node_mut(h.nodes[0]).and_then(|n| n.pipeline_mut().stage_mut::<EncapStage>()) {
        assert!(enc.remove_peer(n2_ip));
    }
    let to_n2 = std::net::IpAddr::V4(sim.hosts()[h.pods[2][0]].config().ipv4.unwrap().0);
    let to_n1 = std::net::IpAddr::V4(sim.hosts()[h.pods[1][0]].config().ipv4.unwrap().0);
    sim.ping("to-n2", h.pods[0][0], to_n2, 3, Duration::from_millis(100)).unwrap();
    sim.ping("to-n1", h.pods[0][1], to_n1, 3, Duration::from_millis(100)).unwrap();
    let _ = sim.run_until_done(Duration::from_secs(10));
    let flows = sim.flows();
    let get = |n: &str| flows.iter().find(|f| f.name == n).unwrap().clone();
    assert!(get("to-n1").ok, "seed {seed}: {:?}", get("to-n1"));
    assert!(!get("to-n2").ok && get("to-n2").detail.starts_with("0/3"), "seed {seed}: {:?}", get("to-n2"));
    let c = sim.nodes()[h.nodes[0]].pipeline().counters();
    assert_eq!(c.drops("encap", DropReason::OverlayNoPeer), 3, "seed {seed}");
    assert_eq!(sim.nodes()[h.nodes[2]].pipeline().counters().events("decap", StageEvent::Decapsulated), 0);
}
