//! Arbitrary frames through VXLAN, IP-in-IP and directly routed nodes built from
//! configuration (the whole node path, flow fast path included), with the peers from
//! Node objects. The first input byte picks the encapsulation; the rest are records as in
//! `drive.rs` (port 0 is the uplink, 1 and 2 pods). Nothing panics; accounting and
//! slots are checked at every batch boundary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use podplane::config::{Dataplane, NodeSetup, Source, load};

#[path = "drive.rs"]
mod drive;

const NODE: &str = "\
name: w1
podCIDR: 10.244.1.0/24
ports:
  - {name: eth0, kind: pcap, role: uplink, address: 192.168.0.11/24, mtu: 1400}
  - {name: a, kind: pcap, role: pod, ip: 10.244.1.2}
  - {name: b, kind: pcap, role: pod, ip: 10.244.1.3}
routes:
  - {dst: 0.0.0.0/0, via: 192.168.0.1}
overlay: {mode: MODE}
";

const NODES: &str = "\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: w2}, spec: {podCIDR: 10.244.2.0/24}, status: {addresses: [{type: InternalIP, address: 192.168.0.12}]}}
- {apiVersion: v1, kind: Node, metadata: {name: w3}, spec: {podCIDR: 10.244.3.0/24}, status: {addresses: [{type: InternalIP, address: 10.9.0.13}]}}
- {apiVersion: v1, kind: Node, metadata: {name: w4}, spec: {podCIDR: 10.244.4.0/24}, status: {addresses: [{type: InternalIP, address: 192.168.0.11}]}}
";

/// The three nodes' setups, read once (YAML and Kubernetes types are slow to parse):
/// VXLAN, IPIP, and direct routing (where the flow fast path reads frames before
/// parse).
fn setups() -> &'static [NodeSetup; 3] {
    static SETUPS: OnceLock<[NodeSetup; 3]> = OnceLock::new();
    SETUPS.get_or_init(|| {
        // w4 claims this node's own address: refused, so it is left out.
        let nodes: String = NODES.lines().filter(|l| !l.contains("w4")).collect::<Vec<_>>().join("\n");
        // Direct routing needs its peers on-link: w3 is not.
        let on_link: String = nodes.lines().filter(|l| !l.contains("w3")).collect::<Vec<_>>().join("\n");
        ["vxlan", "ipip", "none"].map(|mode| {
            let nodes = if mode == "none" { &on_link } else { &nodes };
            let node = if mode == "none" {
                NODE.lines().filter(|l| !l.starts_with("overlay")).map(|l| format!("{l}\n")).collect()
            } else {
                NODE.replace("MODE", mode)
            };
            load(Source { name: "node.yaml", text: &node }, &[Source { name: "nodes.yaml", text: nodes }])
                .expect("the fuzz node's configuration is valid")
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let setup = setups()[usize::from(mode % 3)].clone();
    let mut dp = Dataplane::new(setup, 7);
    drive::drive(dp.pipeline(), rest, 3);
});
