//! Pods behind two podplane nodes reach a server outside the cluster through
//! masquerade, with real TCP, while the underlay drops, duplicates and reorders.
//!
//! Flow:
//! 1. two nodes built from node files (the real node path: `parse → source_check →
//!    bridge → conntrack → dnat → route → snat → ct_commit → arp → egress`), each with
//!    two pods on its bridge, joined by a switched underlay 192.168.0.0/24 that also
//!    holds `server` (192.168.0.200, outside the cluster CIDR);
//! 2. every pod sends 256 KiB to the server over TCP, and one pod sends 64 KiB to a
//!    pod on the other node (inside the cluster: not masqueraded);
//! 3. the underlay loses 1 %, duplicates 1 % and reorders 2 % of frames.
//!
//! Checks: every byte arrives (the server checks the pattern); each node masqueraded
//! exactly its own two connections (`snat_new`), to its own address, each to a
//! different port; the pod-to-pod connection kept its addresses; the loss was real.
//!
//! Seed: fixed, printed on failure; `PODPLANE_SEED=<n>` replays another.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::Duration;
use podplane::config::{NodeSetup, Source, load};
use podplane::pipeline::StageEvent;
use podplane::stage::conntrack::ConntrackStage;
use podplane_sim::{HostConfig, LinkConfig, Sim, seed_from_env};

fn node_file(i: u8) -> String {
    let other = 3 - i;
    format!(
        "name: worker-{i}
addresses: [192.168.0.1{i}]
podCIDR: 10.244.{i}.0/24
ports:
  - {{name: eth0, kind: pcap, role: uplink, address: 192.168.0.1{i}/24}}
  - {{name: pod-a, kind: pcap, role: pod, ip: 10.244.{i}.2}}
  - {{name: pod-b, kind: pcap, role: pod, ip: 10.244.{i}.3}}
routes:
  - {{dst: 10.244.{other}.0/24, via: 192.168.0.1{other}}}
conntrack:
  max: 4096
"
    )
}

fn setup(i: u8) -> NodeSetup {
    load(Source { name: "node.yaml", text: &node_file(i) }, &[]).unwrap()
}

struct Scenario {
    sim: Sim,
    nodes: [usize; 2],
}

fn scenario(seed: u64) -> Scenario {
    let mut sim = Sim::new(seed);
    let link = LinkConfig::default().with_latency(Duration::from_nanos(50_000)).with_bandwidth(1_000_000_000);
    let mut nodes = [0; 2];
    let mut pods = Vec::new();
    let mut underlay = Vec::new();
    for i in 1..=2u8 {
        let s = setup(i);
        let n = sim.add_node(&s.name, &["eth0", "pod-a", "pod-b"], s.pipeline(seed ^ u64::from(i))).unwrap();
        nodes[usize::from(i - 1)] = n;
        for (k, port) in ["pod-a", "pod-b"].iter().enumerate() {
            let ip = Ipv4Addr::new(10, 244, i, 2 + u8::try_from(k).unwrap());
            let mut cfg = HostConfig::v4(&format!("{port}-{i}"), ip, 24).gateway(Ipv4Addr::new(10, 244, i, 1));
            cfg.mac = [0x0a, 0x58, 10, 244, i, ip.octets()[3]];
            let h = sim.add_host(cfg).unwrap();
            let ends = [sim.host_end(h), sim.node_end(n, port).unwrap()];
            sim.link(&format!("worker-{i}/{port}"), &ends, link).unwrap();
            pods.push(h);
        }
        underlay.push(sim.node_end(n, "eth0").unwrap());
    }
    let server = sim.add_host(HostConfig::v4("server", Ipv4Addr::new(192, 168, 0, 200), 24)).unwrap();
    underlay.push(sim.host_end(server));
    sim.link("underlay", &underlay, link.with_faults(0.01, 0.01, 0.02)).unwrap();
    for (k, &p) in pods.iter().enumerate() {
        // A port per flow: the server checks each connection against its own flow.
        sim.tcp_bulk(&format!("pod{k}-server"), p, server, 5001 + u16::try_from(k).unwrap(), 256 << 10).unwrap();
    }
    sim.tcp_bulk("pod0-to-pod3", pods[0], pods[3], 6001, 64 << 10).unwrap();
    Scenario { sim, nodes }
}

#[test]
fn pods_reach_an_outside_server_through_masquerade_over_a_lossy_underlay() {
    let seed = seed_from_env(11);
    let mut s = scenario(seed);
    if let Err(e) = s.sim.run_until_done(Duration::from_secs(300)) {
        panic!("seed {seed}: {e}");
    }
    for f in s.sim.flows() {
        assert!(f.ok, "seed {seed}: {f:?}");
    }
    let l = s.sim.link_stats(s.sim.link_id("underlay").unwrap()).unwrap();
    assert!(l.dropped_loss > 0 && l.reordered > 0, "seed {seed}: faults must be real: {l:?}");
    let now = s.sim.now();
    for (i, &n) in s.nodes.iter().enumerate() {
        let node = s.sim.node_mut(n).unwrap();
        let pl = node.pipeline_mut();
        assert_eq!(pl.counters().events("snat", StageEvent::SnatNew), 2, "seed {seed}: node {i}");
        let ct = pl.stage::<ConntrackStage>().unwrap().shared();
        let ct = ct.lock().unwrap();
        let list = ct.list(now);
        let node_ip = Ipv4Addr::new(192, 168, 0, 11 + u8::try_from(i).unwrap());
        let masq: Vec<_> = list.iter().filter(|l| l.src_nat).collect();
        assert_eq!(masq.len(), 2, "seed {seed}: node {i}: {list:?}");
        for l in &masq {
            assert_eq!(l.reply.dst_addr(), node_ip, "seed {seed}");
            assert_eq!(l.original.dst_addr(), Ipv4Addr::new(192, 168, 0, 200), "seed {seed}");
        }
        assert_ne!(masq[0].reply.dst_port, masq[1].reply.dst_port, "seed {seed}");
        // The pod-to-pod connection is tracked but not translated.
        let inside = list.iter().filter(|l| l.original.dst_port == 6001).count();
        assert_eq!(inside, 1, "seed {seed}: node {i}: {list:?}");
        assert!(list.iter().filter(|l| l.original.dst_port == 6001).all(|l| !l.src_nat && !l.dst_nat));
    }
    println!("seed {seed}: done at {:?}, underlay {l:?}", s.sim.now());
}
