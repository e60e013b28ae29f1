//! Scale run: a 100-node × 30-pod cluster plan (3000 smoltcp pods, 100 podplane
//! nodes) built in the simulator, then an all-pairs ping among the pods of each node.
//!
//! Run: `cargo run --release -p podplane-examples --bin scale [-- --nodes N --pods M]`
//!
//! Until the bridge and route stages land there is no cross-node path: each node's
//! pods share a plain switched L2 segment with the node's port, so every ping crosses
//! the segment (the node's pipeline sees the broadcasts and unknown unicast), and
//! "all pairs" means all pairs on a node: N × M × (M − 1) pings. The cross-node
//! all-pairs run comes with the routing stage.

use std::net::IpAddr;

use clap::Parser;
use podplane::Duration;
use podplane::pipeline::{Pipeline, PipelineConfig};
use podplane::stage::{ParseStage, XconnectStage};
use podplane_sim::cluster::ClusterSpec;
use podplane_sim::{HostConfig, LinkConfig, Sim};

#[derive(Parser, Debug)]
#[command(about = "Build a large simulated cluster and ping all pairs of pods on each node")]
struct Args {
    /// Nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 30)]
    pods: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Wall time is reported, never used by the simulation.
    #[allow(clippy::disallowed_methods)]
    let wall = std::time::Instant::now();
    let mut spec = ClusterSpec::default();
    for n in 0..args.nodes {
        spec = spec.with_node(&format!("node-{n}"), args.pods);
    }
    let plan = spec.plan()?;
    let mut sim = Sim::new(args.seed);
    let mut hosts = Vec::new();
    for node in &plan.nodes {
        // The node taps the segment: its pipeline parses every frame and, with no
        // cross-connect, drops it as `no_xconnect` (counted).
        let pl = Pipeline::new(
            vec![Box::new(ParseStage::new()), Box::new(XconnectStage::new())],
            PipelineConfig::default(),
            args.seed,
        );
        let n = sim.add_node(&node.name, &["segment"], pl)?;
        let mut ends = vec![sim.node_end(n, "segment")?];
        let mut hs = Vec::new();
        for pod in &node.pods {
            let mut cfg = HostConfig::v4(&pod.name, pod.ip, node.pod_cidr.prefix).gateway(node.gateway);
            cfg.mac = pod.mac;
            let h = sim.add_host(cfg)?;
            ends.push(sim.host_end(h));
            hs.push((h, pod.ip));
        }
        sim.link(&format!("{}-segment", node.name), &ends, LinkConfig::default().switched())?;
        hosts.push(hs);
    }
    #[allow(clippy::disallowed_methods)]
    let built = wall.elapsed();
    // smoltcp resolves one new neighbour per second per host: 29 neighbours each take
    // up to 29 s of virtual time to reach.
    sim.ping_timeout = Duration::from_secs(60);
    let mut pings = 0u64;
    for (ni, hs) in hosts.iter().enumerate() {
        for (i, (from, _)) in hs.iter().enumerate() {
            for (j, (_, to)) in hs.iter().enumerate() {
                if i != j {
                    sim.ping(&format!("{ni}/{i}->{j}"), *from, IpAddr::V4(*to), 1, Duration::from_millis(1))?;
                    pings += 1;
                }
            }
        }
    }
    let res = sim.run_until_done(Duration::from_secs(300));
    let flows = sim.flows();
    let ok = flows.iter().filter(|f| f.ok).count();
    let node_rx: u64 = sim.nodes().iter().map(|n| n.pipeline().counters().snapshot().totals.rx).sum();
    println!(
        "{} nodes x {} pods: built in {:.2} s; {pings} pings, {ok} answered, in {} virtual; {} events; nodes parsed {node_rx} frames",
        args.nodes,
        args.pods,
        built.as_secs_f64(),
        sim.now(),
        sim.events()
    );
    #[allow(clippy::disallowed_methods)]
    let total = wall.elapsed();
    println!("wall time {:.2} s in all (one core: the simulator is single-threaded)", total.as_secs_f64());
    res?;
    anyhow::ensure!(ok as u64 == pings, "{} pings unanswered (seed {})", pings - ok as u64, args.seed);
    Ok(())
}
