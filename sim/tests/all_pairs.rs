//! All pairs of pods in a small cluster ping each other, each pod from one ICMP socket
//! (`ping_sweep`), through real `parse → bridge → route → arp → egress` pipelines:
//! the scale example's run (`--bin scale`, 3000 pods) at a size a test can afford.
//! Every request must be answered by the right pod, and the same seed must give the
//! same event log.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::IpAddr;

use podplane::Duration;
use podplane_sim::cluster::{ClusterSpec, NetworkMode, build};
use podplane_sim::{LinkConfig, Sim, SimError, seed_from_env};

fn run(seed: u64, mode: NetworkMode) -> Sim {
    let mut spec = ClusterSpec::default();
    for n in 0..4 {
        spec = spec.with_node(&format!("node-{n}"), 5);
    }
    let plan = spec.plan().unwrap();
    let mut sim = Sim::new(seed);
    let h = build(&mut sim, &plan, mode, LinkConfig::default()).unwrap();
    sim.ping_timeout = Duration::from_secs(30);
    let all: Vec<IpAddr> = plan.nodes.iter().flat_map(|n| n.pods.iter().map(|p| IpAddr::V4(p.ip))).collect();
    let mut k = 0;
    for (ni, hosts) in h.pods.iter().enumerate() {
        for from in hosts {
            // Start with the next node's pods (resolves the pod's gateway first; see
            // examples/scale.rs), end with this node's.
            let start = ((ni + 1) % h.pods.len()) * 5;
            let targets: Vec<IpAddr> =
                (0..all.len()).map(|j| (start + j) % all.len()).filter(|j| *j != k).map(|j| all[j]).collect();
            sim.ping_sweep(&format!("pod-{k}"), *from, &targets, 1, Duration::from_millis(1)).unwrap();
            k += 1;
        }
    }
    sim.run_until_done(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    sim
}

#[test]
fn every_pod_answers_every_other_pod() {
    for mode in [NetworkMode::Bridge, NetworkMode::Routed] {
        let seed = seed_from_env(7);
        let sim = run(seed, mode);
        let flows = sim.flows();
        assert_eq!(flows.len(), 20);
        for f in &flows {
            assert!(f.ok, "{mode:?}, seed {seed} (PODPLANE_SEED={seed} to re-run): {f:?}");
            assert!(f.detail.starts_with("19/19 replies"), "{mode:?}, seed {seed}: {}", f.detail);
        }
        for n in sim.nodes() {
            let c = n.pipeline().counters().snapshot();
            assert!(c.balanced(), "{mode:?}, seed {seed}: {c}");
        }
        let again = run(seed, mode);
        assert_eq!(sim.event_log_hash(), again.event_log_hash(), "{mode:?}, seed {seed}");
    }
}

#[test]
fn a_sweep_checks_its_targets() {
    let mut sim = Sim::new(1);
    let h = sim.add_host(podplane_sim::HostConfig::v4("p", "10.0.0.2".parse().unwrap(), 24)).unwrap();
    let v6: IpAddr = "fd00::1".parse().unwrap();
    let err = sim.ping_sweep("six", h, &[v6], 1, Duration::ZERO).unwrap_err();
    assert!(matches!(err, SimError::BadHost { .. }) && err.to_string().contains("fd00::1"), "{err}");
    let many = vec![IpAddr::from([10, 0, 0, 3]); 70_000];
    let err = sim.ping_sweep("many", h, &many, 1, Duration::ZERO).unwrap_err();
    assert!(err.to_string().contains("70000 echo requests"), "{err}");
}
