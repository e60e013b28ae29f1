//! `podplane`: the command-line front end.
//!
//! - `podplane sim`: runs seeded pod traffic (with malformed frames mixed in) through a
//!   node's pipeline in the simulator and prints counters and a packet trace. No root.
//! - `podplane reasons`: lists every drop reason with its code and severity.
//!
//! `run`, `replay`, `check`, `stats` and `conntrack` arrive with the issues that build
//! their parts.

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use podplane::buf::PortId;
use podplane::pipeline::{DropReason, Pipeline, PipelineConfig};
use podplane::stage::{ParseStage, XconnectStage};
use podplane_sim::feed::Feeder;
use podplane_sim::traffic::{Mix, Traffic};

#[derive(Parser, Debug)]
#[command(name = "podplane", version, about = "Userspace packet dataplane for Kubernetes nodes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run seeded pod traffic through a node pipeline in the simulator; print counters and a trace.
    Sim {
        /// Frames to send.
        #[arg(long, default_value_t = 10_000)]
        packets: usize,
        /// Seed for the traffic and the pipeline RNG (same seed, same output).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Packets per batch (1..=256).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Trace the first N packets through every stage.
        #[arg(long, default_value_t = 4)]
        trace: u32,
        /// Traffic: `mixed` (pod traffic with ~10% malformed frames) or `udp64`.
        #[arg(long, default_value = "mixed")]
        mix: String,
        /// Verify TCP/UDP/ICMP checksums too (off by default, as Linux when forwarding).
        #[arg(long)]
        verify_l4: bool,
    },
    /// List every drop reason: code, name, severity and meaning.
    Reasons,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Sim { packets, seed, batch, trace, mix, verify_l4 } => {
            sim(packets, seed, batch, trace, &mix, verify_l4)
        }
        Command::Reasons => {
            println!("{:>4}  {:<28} {:<6} meaning", "code", "reason", "level");
            for r in DropReason::ALL {
                println!(
                    "{:>4}  {:<28} {:<6} {}",
                    r.code(),
                    r.as_str(),
                    format!("{:?}", r.severity()),
                    r.description()
                );
            }
            Ok(())
        }
    }
}

fn sim(packets: usize, seed: u64, batch: usize, trace: u32, mix: &str, verify_l4: bool) -> anyhow::Result<()> {
    let mix = match mix {
        "mixed" => Mix::Mixed,
        "udp64" => Mix::Udp64,
        other => bail!("--mix {other:?}: expected `mixed` or `udp64`"),
    };
    if !(1..=256).contains(&batch) {
        bail!("--batch {batch}: expected 1..=256");
    }
    let mut config = PipelineConfig::default();
    config.checksum.l4 = verify_l4;
    // A node with a pod port (0) patched to an uplink (1): the forwarding stages
    // (bridge, route, overlay, NAT, LB) slot in between as their issues land.
    let mut xconnect = XconnectStage::new();
    xconnect.connect(PortId(0), PortId(1)).map_err(|p| anyhow::anyhow!("port {p} out of range"))?;
    let mut pipeline = Pipeline::new(vec![Box::new(ParseStage::new()), Box::new(xconnect)], config, seed);
    pipeline.trace_add(trace);

    let mut traffic = Traffic::new(seed, mix);
    let frames: Vec<Vec<u8>> = (0..packets).map(|_| traffic.next_frame()).collect();
    let mut feeder = Feeder::new(1024, batch);
    let result = feeder.run(&mut pipeline, frames.iter().map(Vec::as_slice));

    println!("podplane sim: {packets} frames ({mix:?}, seed {seed}) in {} batches of up to {batch}", result.batches);
    println!("pipeline: port0 -> {} -> port1\n", pipeline.stage_names().join(" -> "));
    let snap = pipeline.counters().snapshot();
    print!("{snap}");
    for (port, n) in result.tx_per_port.iter().enumerate() {
        if *n > 0 {
            println!("  tx port{port:<21} {n:>12}");
        }
    }
    if !snap.balanced() {
        bail!("accounting identity broken: rx + generated + released != tx + host + dropped + held");
    }
    println!("\naccounting: rx + generated + released = tx + host + dropped + held  ✓");
    if trace > 0 {
        println!("\ntrace (first {trace} packets):\n{}", pipeline.trace());
    }
    let leaked = feeder.pool.capacity() - feeder.pool.available();
    if leaked != 0 {
        return Err(anyhow::anyhow!("{leaked} buffers not returned to the pool")).context("after the run");
    }
    Ok(())
}
