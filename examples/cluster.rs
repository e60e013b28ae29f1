//! The cluster demo: a small Kubernetes-style cluster in the deterministic simulator.
//! Pods are smoltcp hosts with real TCP/UDP/ICMP; each node runs a real podplane
//! pipeline; links have latency, bandwidth and (on one link) loss and corruption.
//! It runs ping, DNS-like UDP, HTTP-like and bulk TCP workloads and prints per-flow
//! results and per-node counters with drop reasons.
//!
//! Run: `cargo run --release -p podplane-examples --bin cluster [-- --seed N --pcap DIR]`
//!
//! Until the bridge and route stages land, a node's two pods are patched through its
//! pipeline (`parse → xconnect`), so traffic stays on its node; cross-node modes
//! (bridge, routed /32 with proxy-ARP, overlays) arrive with those stages.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use podplane::Duration;
use podplane::buf::PortId;
use podplane::pipeline::{Pipeline, PipelineConfig};
use podplane::stage::{ParseStage, XconnectStage};
use podplane::wire::ChecksumPolicy;
use podplane_sim::cluster::ClusterSpec;
use podplane_sim::{FlowResult, HostConfig, LinkConfig, Sim};

#[derive(Parser, Debug)]
#[command(about = "Run a small simulated cluster through podplane pipelines")]
struct Args {
    /// Seed for every random choice (same seed, same output).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write a pcap of every link into this directory.
    #[arg(long)]
    pcap: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Wall time is reported, never used by the simulation.
    #[allow(clippy::disallowed_methods)]
    let wall = std::time::Instant::now();
    let plan = ClusterSpec::default().with_node("node-a", 2).with_node("node-b", 2).plan()?;
    let mut sim = Sim::new(args.seed);

    println!(
        "podplane cluster demo: seed {}, cluster CIDR {}, services {}",
        args.seed, plan.cluster_cidr, plan.service_cidr
    );
    println!("pods on a node are patched through the node's pipeline (parse -> xconnect)\n");
    println!("{:<8} {:<16} {:<8} pods", "node", "pod CIDR", "gateway");

    let mut pods = Vec::new();
    for (ni, node) in plan.nodes.iter().enumerate() {
        let names: Vec<String> = node.pods.iter().map(|p| format!("{} {}", p.name, p.ip)).collect();
        println!(
            "{:<8} {:<16} {:<8} {}",
            node.name,
            node.pod_cidr.to_string(),
            node.gateway.to_string(),
            names.join(", ")
        );
        let mut x = XconnectStage::new();
        x.connect(PortId(0), PortId(1)).map_err(|p| anyhow::anyhow!("port {p}"))?;
        // node-b verifies TCP/UDP/ICMP checksums too, so the corruption on its link
        // shows up as drops with their reasons.
        let checksum = ChecksumPolicy { ipv4: true, l4: ni == 1 };
        let pipeline = Pipeline::new(
            vec![Box::new(ParseStage::new()), Box::new(x)],
            PipelineConfig { checksum },
            args.seed + ni as u64,
        );
        let n = sim.add_node(&node.name, &["pod0", "pod1"], pipeline)?;
        let mut hs = Vec::new();
        for (pi, pod) in node.pods.iter().enumerate() {
            let mut cfg = HostConfig::v4(&pod.name, pod.ip, node.pod_cidr.prefix).gateway(node.gateway);
            cfg.mac = pod.mac;
            let h = sim.add_host(cfg)?;
            let mut link =
                LinkConfig::default().with_latency(Duration::from_nanos(20_000)).with_bandwidth(10_000_000_000);
            if ni == 1 && pi == 1 {
                link = link.with_faults(0.01, 0.0, 0.0).with_corruption(0.01);
            }
            let name = format!("{}:pod{pi}", node.name);
            let ends = [sim.host_end(h), sim.node_end(n, &format!("pod{pi}"))?];
            let l = sim.link(&name, &ends, link)?;
            if let Some(dir) = &args.pcap {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                sim.capture(l, &dir.join(format!("{}-pod{pi}.pcap", node.name)))?;
            }
            hs.push(h);
        }
        pods.push(hs);
    }

    for (ni, node) in plan.nodes.iter().enumerate() {
        let (a, b) = (pods[ni][0], pods[ni][1]);
        let b_ip = IpAddr::V4(node.pods[1].ip);
        sim.ping(&format!("{}/ping", node.name), a, b_ip, 5, Duration::from_millis(100))?;
        sim.udp_query(&format!("{}/dns", node.name), a, b, 53, 5)?;
        sim.http(&format!("{}/http", node.name), a, b, 80, 64 * 1024)?;
        sim.tcp_bulk(&format!("{}/bulk", node.name), a, b, 5001, 1 << 20)?;
    }

    let result = sim.run_until_done(Duration::from_secs(300));

    println!("\n{:<14} {:<5} {:<6} {:>9} {:>12} {:>7}  detail", "flow", "kind", "result", "bytes", "time", "retrans");
    for f in sim.flows() {
        print_flow(&f);
    }
    for node in sim.nodes() {
        println!("\n{} counters:", node.name());
        let snap = node.pipeline().counters().snapshot();
        let t = snap.totals;
        println!("  rx {}  tx {}  dropped {}  (rx {} bytes)", t.rx, t.tx, t.dropped, t.rx_bytes);
        for d in &snap.drops {
            println!(
                "  drop {:<30} {:>6} packets {:>9} bytes",
                format!("{}/{}", d.stage, d.reason),
                d.packets,
                d.bytes
            );
        }
    }
    println!("\n{:<14} {:>7} {:>9} {:>6} {:>9}", "link", "sent", "delivered", "lost", "corrupted");
    for name in ["node-a:pod0", "node-a:pod1", "node-b:pod0", "node-b:pod1"] {
        if let Some(s) = sim.link_id(name).and_then(|l| sim.link_stats(l)) {
            println!("{name:<14} {:>7} {:>9} {:>6} {:>9}", s.sent, s.delivered, s.dropped_loss, s.corrupted);
        }
    }
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

fn print_flow(f: &FlowResult) {
    let time = f.duration().map_or("-".to_owned(), |d| format!("{:.1} ms", d.as_nanos() as f64 / 1e6));
    let kind = match f.kind {
        podplane_sim::FlowKind::TcpBulk => "tcp",
        podplane_sim::FlowKind::Http => "http",
        podplane_sim::FlowKind::UdpQuery => "udp",
        podplane_sim::FlowKind::Ping => "icmp",
    };
    let result = if f.ok {
        "ok"
    } else if f.done {
        "FAIL"
    } else {
        "open"
    };
    let retrans = if f.tcp.is_some() { f.retransmissions.to_string() } else { "-".into() };
    println!("{:<14} {kind:<5} {result:<6} {:>9} {time:>12} {retrans:>7}  {}", f.name, f.bytes, f.detail);
}
