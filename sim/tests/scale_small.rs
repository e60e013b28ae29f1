//! A small version of the scale run (`cargo run --release -p podplane-examples --bin
//! scale` does 100 × 30): a 10-node × 10-pod plan, each node's pods on a switched
//! segment tapped by the node's pipeline, all pairs of pods on a node ping each other.
//! Every ping must be answered, the same seed must give the same event log, and each
//! node's pipeline must balance its accounting.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::IpAddr;

use podplane::Duration;
use podplane::pipeline::{DropReason, Pipeline, PipelineConfig};
use podplane::stage::{ParseStage, XconnectStage};
use podplane_sim::cluster::ClusterSpec;
use podplane_sim::{HostConfig, LinkConfig, Sim, seed_from_env};

fn run(seed: u64) -> Sim {
    let mut spec = ClusterSpec::default();
    for n in 0..10 {
        spec = spec.with_node(&format!("node-{n}"), 10);
    }
    let plan = spec.plan().unwrap();
    let mut sim = Sim::new(seed);
    sim.ping_timeout = Duration::from_secs(30);
    for node in &plan.nodes {
        let pl = Pipeline::new(
            vec![Box::new(ParseStage::new()), Box::new(XconnectStage::new())],
            PipelineConfig::default(),
            seed,
        );
        let n = sim.add_node(&node.name, &["segment"], pl).unwrap();
        let mut ends = vec![sim.node_end(n, "segment").unwrap()];
        let mut hs = Vec::new();
        for pod in &node.pods {
            let mut cfg = HostConfig::v4(&pod.name, pod.ip, node.pod_cidr.prefix).gateway(node.gateway);
            cfg.mac = pod.mac;
            let h = sim.add_host(cfg).unwrap();
            ends.push(sim.host_end(h));
            hs.push((h, pod.ip));
        }
        sim.link(&format!("{}-segment", node.name), &ends, LinkConfig::default().switched()).unwrap();
        for (i, (from, _)) in hs.iter().enumerate() {
            for (j, (_, to)) in hs.iter().enumerate() {
                if i != j {
                    sim.ping(&format!("{}/{i}->{j}", node.name), *from, IpAddr::V4(*to), 1, Duration::from_millis(1))
                        .unwrap();
                }
            }
        }
    }
    sim.run_until_done(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    sim
}

#[test]
fn all_pairs_on_each_node_answer_deterministically() {
    let seed = seed_from_env(31);
    let a = run(seed);
    let flows = a.flows();
    assert_eq!(flows.len(), 900);
    let failed: Vec<_> = flows.iter().filter(|f| !f.ok).map(|f| &f.name).collect();
    assert!(failed.is_empty(), "seed {seed}: unanswered {failed:?}");
    for n in a.nodes() {
        let snap = n.pipeline().counters().snapshot();
        assert!(snap.balanced(), "seed {seed}");
        // The tap has no cross-connect: everything it sees is counted as no_xconnect.
        assert_eq!(n.pipeline().counters().drops("xconnect", DropReason::NoXconnect), snap.totals.rx, "seed {seed}");
    }
    let b = run(seed);
    assert_eq!(a.event_log_hash(), b.event_log_hash(), "seed {seed}: same seed, different event log");
}
