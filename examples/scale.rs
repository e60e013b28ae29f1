//! Scale run: a 100-node × 30-pod cluster (3000 smoltcp pods, 100 podplane nodes
//! bridging their pods and routing between each other, host-gw style) built in the
//! simulator, then pings: all pairs of pods on each node (N × M × (M − 1), through the
//! node's bridge) and all pairs of nodes (N × (N − 1), pod 0 to pod 0, routed over the
//! underlay).
//!
//! Run: `cargo run --release -p podplane-examples --bin scale [-- --nodes N --pods M]`
//!
//! All pairs of the 3000 pods (9 million pings) is not what this runs: each smoltcp
//! host would need thousands of sockets; the node-pair sweep covers every route.

use std::net::IpAddr;

use clap::Parser;
use podplane::Duration;
use podplane_sim::cluster::{ClusterSpec, NetworkMode, build};
use podplane_sim::{LinkConfig, Sim};

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
    let h = build(&mut sim, &plan, NetworkMode::Bridge, LinkConfig::default())?;
    #[allow(clippy::disallowed_methods)]
    let built = wall.elapsed();
    // smoltcp resolves one new neighbour per second per host: a pod that talks to many
    // neighbours on its bridge needs time for ARP.
    sim.ping_timeout = Duration::from_secs(60);
    let mut pings = 0u64;
    // All pairs of pods on each node, through its bridge.
    for (ni, node) in plan.nodes.iter().enumerate() {
        for (i, from) in h.pods[ni].iter().enumerate() {
            for (j, pod) in node.pods.iter().enumerate() {
                if i != j {
                    sim.ping(&format!("{ni}/{i}->{j}"), *from, IpAddr::V4(pod.ip), 1, Duration::from_millis(1))?;
                    pings += 1;
                }
            }
        }
    }
    // All pairs of nodes, routed: pod 0 of every node pings pod 0 of every other node.
    for (ni, hosts) in h.pods.iter().enumerate() {
        for (nj, node) in plan.nodes.iter().enumerate() {
            if ni != nj && !hosts.is_empty() && !node.pods.is_empty() {
                sim.ping(&format!("{ni}->{nj}"), hosts[0], IpAddr::V4(node.pods[0].ip), 1, Duration::from_millis(1))?;
                pings += 1;
            }
        }
    }
    let res = sim.run_until_done(Duration::from_secs(300));
    let flows = sim.flows();
    let ok = flows.iter().filter(|f| f.ok).count();
    let node_rx: u64 = sim.nodes().iter().map(|n| n.pipeline().counters().snapshot().totals.rx).sum();
    let drops: u64 = sim.nodes().iter().map(|n| n.pipeline().counters().snapshot().totals.dropped).sum();
    println!(
        "{} nodes x {} pods: built in {:.2} s; {pings} pings, {ok} answered, in {} virtual; {} events; nodes processed {node_rx} frames, dropped {drops}",
        args.nodes,
        args.pods,
        built.as_secs_f64(),
        sim.now(),
        sim.events()
    );
    #[allow(clippy::disallowed_methods)]
    let total = wall.elapsed();
    println!("wall time {:.2} s in all (one core: the simulator is single-threaded)", total.as_secs_f64());
    println!(
        "\n{} counters:\n{}",
        plan.nodes.first().map_or("", |n| n.name.as_str()),
        sim.nodes().first().map(|n| n.pipeline().counters().snapshot()).unwrap_or_default()
    );
    res?;
    anyhow::ensure!(ok as u64 == pings, "{} pings unanswered (seed {})", pings - ok as u64, args.seed);
    Ok(())
}
