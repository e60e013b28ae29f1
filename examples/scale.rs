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
    /// Time between one pod's echo requests.
    #[arg(long, default_value = "1000", value_parser = parse_interval)]
    interval: Duration,
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
    sim.ping_timeout = Duration::from_secs(120);
    // All pairs of pods: every pod pings every other pod of the cluster, once, from one
    // ICMP socket. Pods on the same node meet through its bridge; the rest are routed
    // node to node over the underlay.
    let all: Vec<IpAddr> = plan.nodes.iter().flat_map(|n| n.pods.iter().map(|p| IpAddr::V4(p.ip))).collect();
    //
    // smoltcp sends no queued packet while it resolves a neighbour and resolves one
    // neighbour per second, and the echo replies its interface makes are dropped while
    // the gateway is unresolved (Linux would queue them, up to unres_qlen). So each pod
    // starts with another node's pods, which resolves its gateway in the first
    // microseconds, and ends with its own node's pods. Pods of a node start on
    // different nodes: 30 first requests to one node would overflow the sending
    // node's queue for the not yet resolved next hop (16 packets, counted as
    // `neigh_queue_full`), as the same burst would on Linux.
    let first: Vec<usize> = h.pods.iter().scan(0, |acc, p| Some(std::mem::replace(acc, *acc + p.len()))).collect();
    let n_nodes = h.pods.len();
    let mut pings = 0u64;
    let mut k = 0usize;
    for (ni, hosts) in h.pods.iter().enumerate() {
        for (i, from) in hosts.iter().enumerate() {
            let other = if n_nodes > 1 { (ni + 1 + i % (n_nodes - 1)) % n_nodes } else { ni };
            let start = first.get(other).copied().unwrap_or(0);
            let targets: Vec<IpAddr> = (0..all.len())
                .map(|j| (start + j) % all.len())
                .filter(|j| *j != k)
                .filter_map(|j| all.get(j).copied())
                .collect();
            sim.ping_sweep(&format!("pod-{k}"), *from, &targets, 1, args.interval)?;
            pings += targets.len() as u64;
            k += 1;
        }
    }
    let res = sim.run_until_done(Duration::from_secs(300));
    let flows = sim.flows();
    if std::env::var("DBG").is_ok() { for f in flows.iter().take(40) { eprintln!("{} {}", f.name, f.detail); } for n in sim.nodes().iter().take(3) { eprintln!("{}", n.pipeline().counters().snapshot()); } }
    let ok: u64 = flows.iter().map(|f| f.bytes / 8).sum();
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
    anyhow::ensure!(ok == pings, "{} pings unanswered (seed {})", pings - ok, args.seed);
    Ok(())
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    s.parse::<u64>().map(Duration::from_micros).map_err(|e| format!("{s}: {e} (microseconds)"))
}
