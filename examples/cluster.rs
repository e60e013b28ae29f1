//! The cluster demo: a small Kubernetes-style cluster in the deterministic simulator.
//! Pods are smoltcp hosts with real TCP/UDP/ICMP; each node runs a real podplane
//! pipeline; links have latency, bandwidth and (on one link) loss and corruption.
//! It runs ping, DNS-like UDP, HTTP-like and bulk TCP workloads and prints per-flow
//! results and per-node counters with drop reasons.
//!
//! Run: `cargo run --release -p podplane-examples --bin cluster [-- --seed N --pcap DIR --mode routed]`
//!
//! Each node bridges its pods as Flannel's `cni0` does and routes other nodes' pod
//! CIDRs via their underlay addresses, as Flannel's host-gw does
//! (`parse → bridge → route → arp → egress`). Routed /32 pods and overlays follow
//! their stages.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use podplane::Duration;
use podplane::pipeline::PipelineConfig;
use podplane::wire::ChecksumPolicy;
use podplane_sim::cluster::{ClusterSpec, NetworkMode, build};
use podplane_sim::{LinkConfig, Sim};

#[derive(Parser, Debug)]
#[command(about = "Run a small simulated cluster through podplane pipelines")]
struct Args {
    /// Seed for every random choice (same seed, same output).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write a pcap of every link into this directory.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// `bridge` (Flannel host-gw style) or `routed` (Calico style: /32 pods behind
    /// proxy ARP for 169.254.1.1).
    #[arg(long, default_value = "bridge")]
    mode: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Wall time is reported, never used by the simulation.
    #[allow(clippy::disallowed_methods)]
    let wall = std::time::Instant::now();
    let plan = ClusterSpec::default().with_node("node-a", 3).with_node("node-b", 3).plan()?;
    let mut sim = Sim::new(args.seed);

    println!(
        "podplane cluster demo: seed {}, cluster CIDR {}, services {}",
        args.seed, plan.cluster_cidr, plan.service_cidr
    );
    if args.mode == "routed" {
        println!("Calico style: /32 pods routed behind proxy ARP for 169.254.1.1, nodes routing each");
        println!("other's pod CIDRs over a switched underlay: parse -> route -> arp -> egress\n");
    } else {
        println!("each node bridges its pods like Flannel's cni0 and routes to the other node's pod CIDR");
        println!("over a switched underlay (host-gw): parse -> bridge -> route -> arp -> egress\n");
    }
    println!("{:<8} {:<16} {:<11} pods", "node", "pod CIDR", "gateway");
    for node in &plan.nodes {
        let names: Vec<String> = node.pods.iter().map(|p| format!("{} {}", p.name, p.ip)).collect();
        println!(
            "{:<8} {:<16} {:<11} {}",
            node.name,
            node.pod_cidr.to_string(),
            node.gateway.to_string(),
            names.join(", ")
        );
    }
    let link = LinkConfig::default().with_latency(Duration::from_nanos(20_000)).with_bandwidth(10_000_000_000);
    let mode = match args.mode.as_str() {
        "bridge" => NetworkMode::Bridge,
        "routed" => NetworkMode::Routed,
        other => anyhow::bail!("--mode {other:?}: expected `bridge` or `routed`"),
    };
    let h = build(&mut sim, &plan, mode, link)?;
    // Loss and bit corruption on one pod's cable: TCP recovers, and the node's parse
    // stage counts what it catches (node-b verifies TCP/UDP/ICMP checksums too).
    let faulty = sim.link_id("node-b/node-b-pod-1").context("link name")?;
    sim.set_link_config(faulty, link.with_faults(0.01, 0.0, 0.0).with_corruption(0.01));
    if let Some(n) = sim.node_mut(h.nodes[1]) {
        n.pipeline_mut().set_config(PipelineConfig { checksum: ChecksumPolicy { ipv4: true, l4: true } });
    }
    if let Some(dir) = &args.pcap {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for node in &plan.nodes {
            for pod in &node.pods {
                let name = format!("{}/{}", node.name, pod.name);
                if let Some(l) = sim.link_id(&name) {
                    sim.capture(l, &dir.join(format!("{}.pcap", name.replace('/', "_"))))?;
                }
            }
        }
    }

    for (ni, node) in plan.nodes.iter().enumerate() {
        let (a, b, c) = (h.pods[ni][0], h.pods[ni][1], h.pods[ni][2]);
        let b_ip = IpAddr::V4(node.pods[1].ip);
        sim.ping(&format!("{}/ping", node.name), a, b_ip, 5, Duration::from_millis(100))?;
        sim.udp_query(&format!("{}/dns", node.name), c, a, 53, 5)?;
        sim.http(&format!("{}/http", node.name), c, b, 80, 64 * 1024)?;
        sim.tcp_bulk(&format!("{}/bulk", node.name), a, b, 5001, 1 << 20)?;
    }
    // Across nodes: node-a's pods to node-b's, routed over the underlay (host-gw).
    let remote = IpAddr::V4(plan.nodes[1].pods[0].ip);
    sim.ping("a->b/ping", h.pods[0][1], remote, 5, Duration::from_millis(100))?;
    sim.tcp_bulk("a->b/bulk", h.pods[0][2], h.pods[1][0], 5002, 1 << 20)?;
    sim.http("b->a/http", h.pods[1][2], h.pods[0][0], 8080, 64 * 1024)?;
    sim.traceroute("a->b/trace", h.pods[0][0], remote, 8)?;

    let result = sim.run_until_done(Duration::from_secs(300));

    print!("\n{}", podplane_sim::report::flows(&sim));
    print!("{}", podplane_sim::report::nodes(&sim));
    let links: Vec<String> =
        plan.nodes.iter().flat_map(|n| n.pods.iter().map(move |p| format!("{}/{}", n.name, p.name))).collect();
    print!("\n{}", podplane_sim::report::links(&sim, links.iter().map(String::as_str)));
    println!(
        "\nvirtual time {}, {} events, event-log hash {:016x}, wall {} ms",
        sim.now(),
        sim.events(),
        sim.event_log_hash(),
        wall.elapsed().as_millis()
    );
    if let Some(dir) = &args.pcap {
        println!("pcaps in {} (tcpdump -r, tshark -r)", dir.display());
    }
    result.map_err(anyhow::Error::from)?;
    anyhow::ensure!(sim.flows().iter().all(|f| f.ok), "some flows failed (seed {})", args.seed);
    services(args.seed)
}

/// Services: three nodes built from node files and Service/EndpointSlice objects
/// (the whole node path, VXLAN between them), pods calling a ClusterIP, an outside
/// client calling a NodePort, and a DNS endpoint replaced while a resolver queries it.
fn services(seed: u64) -> anyhow::Result<()> {
    use podplane_sim::k8s;
    use std::net::Ipv4Addr;
    const BODY: u64 = 0x5e41_11ce;
    let slice = |name: &str, port: u16, proto: &str, eps: &[(&str, u8)]| {
        let eps: String =
            eps.iter().map(|(a, n)| format!("  - {{addresses: ['{a}'], nodeName: worker-{n}}}\n")).collect();
        format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: p, port: {port}, protocol: {proto}}}]\nendpoints:\n{eps}"
        )
    };
    let dns = |ep: &str, node: u8| slice("dns", 5353, "UDP", &[(ep, node)]);
    let objects = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default, annotations: {{podplane.io/lb-scheduler: rr}}}}
spec: {{type: NodePort, clusterIP: 10.96.0.80, ports: [{{name: p, port: 80, protocol: TCP, nodePort: 30080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: dns, namespace: default}}
spec: {{clusterIP: 10.96.0.10, ports: [{{name: p, port: 53, protocol: UDP}}]}}
{}{}",
        slice("web", 8080, "TCP", &[("10.244.1.2", 1), ("10.244.2.2", 2), ("10.244.3.2", 3)]),
        dns("10.244.3.3", 3)
    );
    let mut sim = Sim::new(seed);
    let mut c = k8s::build(&mut sim, 3, 2, &objects, k8s::default_link())?;
    for pods in &c.pods {
        sim.serve_http(pods[0], 8080, 16 * 1024, BODY, 32)?;
        sim.serve_udp(pods[1], 5353)?;
    }
    println!("\n--- services: 3 nodes over VXLAN, built from node files and Service/EndpointSlice objects ---");
    println!("web: ClusterIP 10.96.0.80:80, NodePort 30080, endpoints 10.244.1.2 10.244.2.2 10.244.3.2 (rr)");
    println!("dns: ClusterIP 10.96.0.10:53/UDP, endpoint 10.244.3.3, replaced by 10.244.2.3 while queried\n");
    let vip = |last: u8| IpAddr::V4(Ipv4Addr::new(10, 96, 0, last));
    for n in 0..12 {
        sim.http_to(&format!("svc/pod->clusterip-{n}"), c.pods[0][1], vip(80), 80, BODY)?;
    }
    let node1 = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 11));
    for n in 0..6 {
        sim.http_to(&format!("svc/client->nodeport-{n}"), c.client, node1, 30080, BODY)?;
    }
    sim.udp_query_to("svc/dns", c.pods[0][0], vip(10), 53, 40)?;
    sim.run_for(Duration::from_millis(6));
    let (old, new) = (c.pods[2][1], c.pods[1][1]);
    let before = sim.served(old, 5353);
    let flushed = c.update(&mut sim, &dns("10.244.2.3", 2))?;
    let result = sim.run_until_done(Duration::from_secs(60));
    println!("{:<20} {:>24}", "web backend", "requests served");
    for (k, pods) in c.pods.iter().enumerate() {
        println!("{:<20} {:>24}", format!("10.244.{}.2", k + 1), sim.served(pods[0], 8080));
    }
    let masq: Vec<String> = c
        .conntrack(&mut sim, 0)
        .iter()
        .filter(|l| l.original.dst_port == 30080)
        .map(|l| l.reply.dst_addr().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    println!("NodePort connections from 192.168.0.200 reached the backends as [{}] (masqueraded)", masq.join(", "));
    println!(
        "dns: {before} queries answered by 10.244.3.3 before the change; after it {} by 10.244.3.3 (in flight), {} by 10.244.2.3; {flushed} stale UDP entry flushed",
        sim.served(old, 5353) - before,
        sim.served(new, 5353)
    );
    let svc_flows: Vec<_> = sim.flows().into_iter().filter(|f| f.name.starts_with("svc/")).collect();
    let ok = svc_flows.iter().filter(|f| f.ok).count();
    println!("service flows: {ok}/{} ok", svc_flows.len());
    result.map_err(anyhow::Error::from)?;
    anyhow::ensure!(ok == svc_flows.len(), "some service flows failed (seed {seed})");
    Ok(())
}
