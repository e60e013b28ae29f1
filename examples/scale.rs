//! Scale run: a 100-node × 30-pod cluster (3000 smoltcp pods, 100 podplane nodes
//! bridging their pods and routing between each other, host-gw style) built in the
//! simulator, then an all-pairs ping: every pod pings every other pod once
//! (3000 × 2999 = 8,997,000 echo requests), each from one ICMP socket. Pods on the same
//! node meet through its bridge; the rest are routed node to node over the underlay.
//!
//! Run: `cargo run --release -p podplane-examples --bin scale [-- --nodes N --pods M --shards S]`
//!
//! The simulator is single-threaded. `--shards S` (default 2, the cores CI has) runs S
//! copies of the cluster on S threads, each pinging from every S-th pod: together
//! they cover every pair once, each shard is deterministic for its seed
//! (`seed + shard`), and `--shards 1` runs it all in one simulator.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Context as _;
use clap::Parser;
use podplane::Duration;
use podplane_sim::cluster::{ClusterPlan, ClusterSpec, NetworkMode, build};
use podplane_sim::{LinkConfig, Sim};

#[derive(Parser, Debug)]
#[command(about = "Build a large simulated cluster and ping all pairs of its pods")]
struct Args {
    /// Nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pods per node.
    #[arg(long, default_value_t = 30)]
    pods: usize,
    /// Time between one pod's echo requests, in microseconds.
    #[arg(long, default_value = "1000", value_parser = parse_interval)]
    interval: Duration,
    /// Simulators run side by side, one thread each.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Seed (shard s uses seed + s).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What one shard saw.
#[derive(Debug, Default)]
struct ShardResult {
    pings: u64,
    answered: u64,
    virtual_time: String,
    events: u64,
    event_hash: u64,
    node_rx: u64,
    /// Node drops summed over the cluster, by `stage/reason`.
    drops: BTreeMap<String, u64>,
    /// The first unanswered flows (name and detail).
    failures: Vec<String>,
    wall_s: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.shards >= 1, "--shards must be at least 1");
    let mut spec = ClusterSpec::default();
    for n in 0..args.nodes {
        spec = spec.with_node(&format!("node-{n}"), args.pods);
    }
    let plan = spec.plan()?;
    // Wall time is reported, never used by the simulation.
    #[allow(clippy::disallowed_methods)]
    let wall = std::time::Instant::now();
    let results: Vec<anyhow::Result<ShardResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.shards)
            .map(|shard| {
                s.spawn({
                    let (plan, args) = (&plan, &args);
                    move || run_shard(args, plan, shard)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("shard panicked")))).collect()
    });
    #[allow(clippy::disallowed_methods)]
    let total = wall.elapsed();
    let mut pings = 0;
    let mut answered = 0;
    let mut drops: BTreeMap<String, u64> = BTreeMap::new();
    for (shard, r) in results.into_iter().enumerate() {
        let r = r.with_context(|| format!("shard {shard} (seed {})", args.seed + shard as u64))?;
        println!(
            "shard {shard}/{}: {} pings, {} answered, {} virtual, {} events (log hash {:016x}), nodes processed {} frames, {:.2} s wall",
            args.shards, r.pings, r.answered, r.virtual_time, r.events, r.event_hash, r.node_rx, r.wall_s
        );
        for f in &r.failures {
            println!("  unanswered: {f}");
        }
        pings += r.pings;
        answered += r.answered;
        for (k, v) in r.drops {
            *drops.entry(k).or_default() += v;
        }
    }
    println!(
        "\n{} nodes x {} pods, all pairs: {pings} pings, {answered} answered; wall time {:.2} s on {} thread(s)",
        args.nodes,
        args.pods,
        total.as_secs_f64(),
        args.shards
    );
    println!("node drops, all nodes and shards (ARP requests between pods reach the node too):");
    for (k, v) in &drops {
        println!("  {k:<32} {v:>10}");
    }
    anyhow::ensure!(answered == pings, "{} pings unanswered (seed {})", pings - answered, args.seed);
    Ok(())
}

/// Builds the cluster and pings from every pod `k` with `k % shards == shard`.
fn run_shard(args: &Args, plan: &ClusterPlan, shard: usize) -> anyhow::Result<ShardResult> {
    #[allow(clippy::disallowed_methods)]
    let wall = std::time::Instant::now();
    let mut sim = Sim::new(args.seed + shard as u64);
    let h = build(&mut sim, plan, NetworkMode::Bridge, LinkConfig::default())?;
    // smoltcp resolves one new neighbour per second per host: a pod that talks to many
    // neighbours on its bridge needs time for ARP.
    sim.ping_timeout = Duration::from_secs(120);
    let all: Vec<IpAddr> = plan.nodes.iter().flat_map(|n| n.pods.iter().map(|p| IpAddr::V4(p.ip))).collect();
    // smoltcp sends no queued packet while it resolves a neighbour and resolves one
    // neighbour per second, and the echo replies its interface makes are dropped while
    // the gateway is unresolved (Linux would queue them, up to unres_qlen). So each pod
    // starts with another node's pods, which resolves its gateway in the first
    // microseconds, and ends with its own node's pods. Pods of a node start on
    // different nodes, which spreads the first burst over the next hops the nodes
    // are still resolving (each holds up to 101 packets, Linux's unres_qlen).
    let first: Vec<usize> = h.pods.iter().scan(0, |acc, p| Some(std::mem::replace(acc, *acc + p.len()))).collect();
    let n_nodes = h.pods.len();
    let mut r = ShardResult::default();
    let mut k = 0usize;
    for (ni, hosts) in h.pods.iter().enumerate() {
        for (i, from) in hosts.iter().enumerate() {
            if k % args.shards == shard {
                let other = if n_nodes > 1 { (ni + 1 + i % (n_nodes - 1)) % n_nodes } else { ni };
                let start = first.get(other).copied().unwrap_or(0);
                let targets: Vec<IpAddr> = (0..all.len())
                    .map(|j| (start + j) % all.len())
                    .filter(|j| *j != k)
                    .filter_map(|j| all.get(j).copied())
                    .collect();
                sim.ping_sweep(&format!("pod-{k}"), *from, &targets, 1, args.interval)?;
                r.pings += targets.len() as u64;
            }
            k += 1;
        }
    }
    let res = sim.run_until_done(Duration::from_secs(300));
    for f in sim.flows() {
        // A ping flow's bytes are 8 per reply.
        r.answered += f.bytes / 8;
        if !f.ok && r.failures.len() < 10 {
            r.failures.push(format!("{}: {}", f.name, f.detail));
        }
    }
    for n in sim.nodes() {
        let c = n.pipeline().counters().snapshot();
        r.node_rx += c.totals.rx;
        for d in c.drops {
            *r.drops.entry(format!("{}/{}", d.stage, d.reason)).or_default() += d.packets;
        }
    }
    r.virtual_time = sim.now().to_string();
    r.events = sim.events();
    r.event_hash = sim.event_log_hash();
    r.wall_s = wall.elapsed().as_secs_f64();
    res?;
    Ok(r)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    s.parse::<u64>().map(Duration::from_micros).map_err(|e| format!("{s}: {e} (microseconds)"))
}
