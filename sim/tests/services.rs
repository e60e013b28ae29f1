//! Services end to end: three podplane nodes built from node files and the
//! cluster's Service and EndpointSlice objects, VXLAN between them, real TCP and UDP
//! in smoltcp pods, and an outside client on the underlay.
//!
//! Layout: node `worker-i` (i = 1..3) at 192.168.0.1i, pod CIDR 10.244.i.0/24, pods
//! `a` (10.244.i.2) and `b` (10.244.i.3) on its bridge; `client` 192.168.0.200 on the
//! underlay, outside the cluster. Every `a` pod serves HTTP on 8080, 8081 and 8082;
//! `b` pods answer UDP on 5353.
//!
//! Seed: fixed per test, printed on failure; `PODPLANE_SEED=<n>` replays another.
#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::{IpAddr, Ipv4Addr};

use podplane::Duration;
use podplane::pipeline::{DropReason, StageEvent};
use podplane_sim::k8s::{self, K8sCluster};
use podplane_sim::{Sim, seed_from_env};

const BODY_SEED: u64 = 0x5e41_11ce;

/// A Service with its slice: `ports` is `[(name, port, protocol, target, nodePort)]`,
/// `eps` the endpoints as `(address, node, conditions)`.
fn service(
    name: &str,
    spec_extra: &str,
    cluster_ip: &str,
    port: (u16, &str, u16, u16),
    eps: &[(&str, u8, &str)],
) -> String {
    let (p, proto, target, node_port) = port;
    let np = if node_port == 0 { String::new() } else { format!(", nodePort: {node_port}") };
    let kind = if node_port == 0 { "ClusterIP" } else { "NodePort" };
    let endpoints: String = eps
        .iter()
        .map(|(a, n, c)| format!("  - {{addresses: ['{a}'], nodeName: worker-{n}, conditions: {{{c}}}}}\n"))
        .collect();
    format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default, annotations: {{podplane.io/lb-scheduler: rr}}}}
spec: {{type: {kind}, clusterIP: {cluster_ip}, ports: [{{name: p, port: {p}, protocol: {proto}{np}}}]{spec_extra}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: p, port: {target}, protocol: {proto}}}]
endpoints:
{endpoints}"
    )
}

fn all_services() -> String {
    let ready = "ready: true";
    let a = |i: u8| format!("10.244.{i}.2");
    let (a1, a2, a3) = (a(1), a(2), a(3));
    [
        service(
            "web",
            "",
            "10.96.0.80",
            (80, "TCP", 8080, 30080),
            &[(&a1, 1, ready), (&a2, 2, ready), (&a3, 3, ready)],
        ),
        service(
            "local",
            ", externalTrafficPolicy: Local",
            "10.96.0.81",
            (53, "UDP", 5353, 30081),
            &[("10.244.2.3", 2, ready)],
        ),
        service("dns", "", "10.96.0.10", (53, "UDP", 5353, 0), &[("10.244.3.3", 3, ready)]),
        service(
            "draining",
            "",
            "10.96.0.82",
            (80, "TCP", 8082, 0),
            &[
                (&a2, 2, "ready: false, serving: true, terminating: true"),
                (&a3, 3, "ready: false, serving: false, terminating: true"),
            ],
        ),
        service(
            "sticky",
            ", sessionAffinity: ClientIP",
            "10.96.0.83",
            (80, "TCP", 8081, 0),
            &[(&a1, 1, ready), (&a2, 2, ready), (&a3, 3, ready)],
        ),
        service("solo", "", "10.96.0.84", (80, "TCP", 8082, 0), &[(&a1, 1, ready)]),
    ]
    .concat()
}

/// The simulator and its cluster: `k8s.pods[i][k]` is pod k (0 = a, 1 = b) of
/// worker-(i+1).
struct Cluster {
    sim: Sim,
    seed: u64,
    k8s: K8sCluster,
}

fn cluster(default_seed: u64) -> Cluster {
    let seed = seed_from_env(default_seed);
    let mut sim = Sim::new(seed);
    let k8s = k8s::build(&mut sim, 3, 2, &all_services(), k8s::default_link()).unwrap();
    for pod in &k8s.pods {
        for port in [8080, 8081, 8082] {
            sim.serve_http(pod[0], port, 2048, BODY_SEED, 64).unwrap();
        }
        sim.serve_udp(pod[1], 5353).unwrap();
    }
    Cluster { seed, k8s, sim }
}

impl Cluster {
    fn run(&mut self) {
        if let Err(e) = self.sim.run_until_done(Duration::from_secs(120)) {
            panic!("seed {}: {e}", self.seed);
        }
    }

    fn served(&self, port: u16) -> [u64; 3] {
        [0, 1, 2].map(|k| self.sim.served(self.k8s.pods[k][0], port))
    }

    fn ok(&self, prefix: &str) -> usize {
        self.sim.flows().iter().filter(|f| f.name.starts_with(prefix) && f.ok).count()
    }

    fn conntrack(&mut self, node: usize) -> Vec<podplane::stage::conntrack::Listing> {
        self.k8s.conntrack(&mut self.sim, node)
    }
}

fn vip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, 0, last))
}

#[test]
fn pods_call_a_cluster_ip_served_by_pods_on_three_nodes_over_vxlan() {
    let mut c = cluster(21);
    for n in 0..30 {
        c.sim.http_to(&format!("web-{n}"), c.k8s.pods[0][1], vip(80), 80, BODY_SEED).unwrap();
    }
    c.run();
    let seed = c.seed;
    assert_eq!(c.ok("web-"), 30, "seed {seed}: {:#?}", c.sim.flows());
    // Round robin on worker-1: exactly a third each, two of them across the tunnel.
    assert_eq!(c.served(8080), [10, 10, 10], "seed {seed}");
    let pl = c.sim.node_mut(c.k8s.nodes[0]).unwrap().pipeline_mut();
    assert_eq!(pl.counters().events("dnat", StageEvent::SvcNew), 30, "seed {seed}");
    assert!(pl.counters().events("encap", StageEvent::Encapsulated) > 0, "seed {seed}");
    // Pod to service keeps the pod's address (no masquerade).
    assert_eq!(pl.counters().events("snat", StageEvent::SnatNew), 0, "seed {seed}");
}

#[test]
fn an_outside_client_reaches_a_node_port_with_cluster_policy_masqueraded_to_the_node() {
    let mut c = cluster(22);
    let node1 = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 11));
    for n in 0..12 {
        c.sim.http_to(&format!("np-{n}"), c.k8s.client, node1, 30080, BODY_SEED).unwrap();
    }
    c.run();
    let seed = c.seed;
    assert_eq!(c.ok("np-"), 12, "seed {seed}: {:#?}", c.sim.flows());
    assert_eq!(c.served(8080), [4, 4, 4], "seed {seed}");
    // Backends on worker-2 see worker-1's tunnel address (flannel.1's 10.244.1.0),
    // as the kernel's masquerade picks the egress interface's address.
    let seen: Vec<_> =
        c.conntrack(1).iter().filter(|l| l.original.dst_port == 8080).map(|l| l.original.src_addr()).collect();
    assert_eq!(seen, vec![IpAddr::V4(Ipv4Addr::new(10, 244, 1, 0)); 4], "seed {seed}");
    // The one on worker-1 itself sees the bridge's address.
    let local: Vec<_> = c.conntrack(0).iter().filter(|l| l.dst_nat && l.src_nat).map(|l| l.reply.dst_addr()).collect();
    assert_eq!(local.len(), 12, "seed {seed}");
    assert_eq!(local.iter().filter(|a| **a == IpAddr::V4(Ipv4Addr::new(10, 244, 1, 1))).count(), 4, "seed {seed}");
}

#[test]
fn local_policy_keeps_the_client_address_and_a_node_without_endpoints_drops() {
    let mut c = cluster(23);
    let node = |k: u8| IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10 + k));
    c.sim.udp_query_to("here", c.k8s.client, node(2), 30081, 3).unwrap();
    c.sim.udp_query_to("elsewhere", c.k8s.client, node(1), 30081, 1).unwrap();
    c.run();
    let seed = c.seed;
    assert_eq!(c.ok("here"), 1, "seed {seed}: {:#?}", c.sim.flows());
    assert_eq!(c.ok("elsewhere"), 0, "seed {seed}: worker-1 has no endpoint");
    assert_eq!(c.sim.served(c.k8s.pods[1][1], 5353), 3, "seed {seed}");
    // The pod sees the client's own address: not masqueraded.
    let seen: Vec<_> = c
        .conntrack(1)
        .iter()
        .filter(|l| l.original.dst_port == 30081)
        .map(|l| (l.original.src_addr(), l.src_nat))
        .collect();
    assert_eq!(seen, [(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 200)), false)], "seed {seed}");
    // worker-1 dropped the query and its three retries.
    let pl = c.sim.node_mut(c.k8s.nodes[0]).unwrap().pipeline_mut();
    assert_eq!(pl.counters().drops("dnat", DropReason::SvcNoLocalEndpoints), 4, "seed {seed}");
}

#[test]
fn dns_to_a_cluster_ip_follows_its_endpoint_when_the_pod_is_replaced() {
    let mut c = cluster(24);
    let (old, new) = (c.k8s.pods[2][1], c.k8s.pods[1][1]);
    c.sim.udp_query_to("dns", c.k8s.pods[0][0], vip(10), 53, 60).unwrap();
    c.sim.run_for(Duration::from_millis(8));
    let before = c.sim.served(old, 5353);
    let seed = c.seed;
    assert!(before > 0 && before < 60, "seed {seed}: change mid-flow ({before} answered)");
    // The endpoint moves from 10.244.3.3 to 10.244.2.3; the old pod keeps answering
    // whatever still reaches it (a terminating pod does), so a stale entry would show.
    let services = all_services().replace("10.244.3.3'], nodeName: worker-3", "10.244.2.3'], nodeName: worker-2");
    let flushed = c.k8s.update(&mut c.sim, &services).unwrap();
    assert_eq!(flushed, 1, "seed {seed}: worker-1's entry to the old endpoint");
    c.run();
    assert_eq!(c.ok("dns"), 1, "seed {seed}: {:#?}", c.sim.flows());
    // At most the one query already on its way to the old pod when the change came
    // (the client sends one at a time); every query sent after it went to the new.
    let late = c.sim.served(old, 5353) - before;
    assert!(late <= 1, "seed {seed}: {late} answers from the old pod after the change");
    // (That late answer reaches the client from the pod's own address, its entry
    // gone, as in the kernel; this test client does not check the source, a
    // resolver would drop it.)
    assert_eq!(c.sim.served(new, 5353) + before + late, 60, "seed {seed}");
}

#[test]
fn terminating_endpoints_serve_when_none_is_ready() {
    let mut c = cluster(25);
    for n in 0..4 {
        c.sim.http_to(&format!("drain-{n}"), c.k8s.pods[0][1], vip(82), 80, BODY_SEED).unwrap();
    }
    c.run();
    let seed = c.seed;
    assert_eq!(c.ok("drain-"), 4, "seed {seed}");
    // Only the serving one (worker-2's); the not-serving one gets nothing.
    assert_eq!(c.served(8082), [0, 4, 0], "seed {seed}");
}

#[test]
fn session_affinity_keeps_a_client_on_one_backend_over_many_connections() {
    let mut c = cluster(26);
    for n in 0..20 {
        c.sim.http_to(&format!("sticky-{n}"), c.k8s.pods[0][1], vip(83), 80, BODY_SEED).unwrap();
    }
    c.run();
    let seed = c.seed;
    assert_eq!(c.ok("sticky-"), 20, "seed {seed}");
    let s = c.served(8081);
    assert_eq!(s.iter().sum::<u64>(), 20, "seed {seed}");
    assert_eq!(s.iter().filter(|&&x| x == 20).count(), 1, "seed {seed}: one backend took all: {s:?}");
    let pl = c.sim.node_mut(c.k8s.nodes[0]).unwrap().pipeline_mut();
    assert_eq!(pl.counters().events("dnat", StageEvent::SvcAffinity), 19, "seed {seed}");
}

#[test]
fn a_pod_reaches_itself_through_its_service() {
    let mut c = cluster(27);
    for n in 0..3 {
        c.sim.http_to(&format!("self-{n}"), c.k8s.pods[0][0], vip(84), 80, BODY_SEED).unwrap();
    }
    c.run();
    let seed = c.seed;
    assert_eq!(c.ok("self-"), 3, "seed {seed}: {:#?}", c.sim.flows());
    assert_eq!(c.served(8082), [3, 0, 0], "seed {seed}");
    let pl = c.sim.node_mut(c.k8s.nodes[0]).unwrap().pipeline_mut();
    assert_eq!(pl.counters().events("snat", StageEvent::NatHairpin), 3, "seed {seed}");
}
