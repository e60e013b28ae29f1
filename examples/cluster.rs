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
    Ok(())
}
