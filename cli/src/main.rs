//! `podplane`: the command-line front end.
//!
//! - `podplane sim`: runs seeded pod traffic (with malformed frames mixed in) through a
//!   node's pipeline in the simulator and prints counters and a packet trace. No root.
//! - `podplane reasons`: lists every drop reason with its code and severity.
//! - `podplane check`: validates a node file with Kubernetes objects and prints what
//!   would be installed.
//! - `podplane replay`: runs pcap files through the node's pipeline into pcap files.
//! - `podplane run`: runs the node on TAP devices, reloading its files when they change
//!   and serving counters to Prometheus; `podplane stats` prints them.
//!
//! Kubernetes objects are read with k8s-openapi's `v1_37` types.
//! `conntrack` arrives with the conntrack stage.

mod conntrack;
mod metrics;
mod pcap_in;
mod replay;
mod run;
mod worker;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
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

/// `podplane run --io`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum IoArg {
    /// io_uring where the kernel allows it, else poll.
    Auto,
    /// io_uring (fail without it).
    Uring,
    /// io_uring without registered buffers (to measure what registration gains).
    UringUnregistered,
    /// poll + read/write.
    Poll,
}

/// A switch.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// `podplane conntrack` actions.
#[derive(Subcommand, Debug)]
enum ConntrackAction {
    /// One line per connection, as `conntrack -L` (or a JSON array with --json).
    List {
        /// The address `podplane run --metrics` serves on.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: std::net::SocketAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete the connections every given filter matches (all without filters).
    Flush {
        /// The address `podplane run --metrics` serves on.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: std::net::SocketAddr,
        #[command(flatten)]
        filter: conntrack::FilterArgs,
    },
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a simulator scenario file (a cluster, its links, its flows) and print the summary;
    /// without --scenario, push seeded pod traffic through one node pipeline.
    ///
    /// Example: podplane sim --scenario examples/scenario.yaml --capture /tmp/caps
    Sim {
        /// A scenario file (YAML; see examples/scenario.yaml).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// With --scenario: write every link (each pod's port, the underlay) as DIR/LINK.pcap.
        #[arg(long)]
        capture: Option<PathBuf>,
        /// Frames to send.
        #[arg(long, default_value_t = 10_000)]
        packets: usize,
        /// Seed for the traffic and the pipeline RNG (same seed, same output); overrides
        /// the scenario's.
        #[arg(long)]
        seed: Option<u64>,
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
    /// Run the node on TAP devices (one per `kind: tap` port; needs root) until SIGINT or
    /// SIGTERM, reloading the files when they change.
    ///
    /// Example: podplane run --config node.yaml --objects nodes.yaml --metrics 127.0.0.1:9464
    Run {
        /// The node file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Kubernetes objects (files or directories); reloaded when they change.
        #[arg(long, num_args = 1..)]
        objects: Vec<PathBuf>,
        /// Serve the counters in Prometheus text format here (a loopback address).
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<std::net::SocketAddr>,
        /// Seed of the pipeline's RNG (NAT's port choice, load balancing) and of the
        /// connection tables' hash. Default: 8 bytes from /dev/urandom at start, as
        /// the kernel seeds its conntrack hash and port randomisation, so that ports
        /// cannot be predicted nor the tables flooded with colliding tuples. Give
        /// one only to reproduce a run.
        #[arg(long)]
        seed: Option<u64>,
        /// Capture every TAP port, both directions, to DIR/PORT.pcap.
        #[arg(long)]
        capture: Option<PathBuf>,
        /// Trace the first N packets through every stage; printed on exit.
        #[arg(long, default_value_t = 0)]
        trace: u32,
        /// I/O backend: io_uring, poll + read/write, or auto (io_uring where the
        /// kernel allows it).
        #[arg(long, value_enum, default_value_t = IoArg::Auto)]
        io: IoArg,
        /// TAP offloads (IFF_VNET_HDR with checksum and TSO): pods hand over 64 KiB
        /// TCP super-frames, which podplane segments.
        #[arg(long, value_enum, default_value_t = OnOff::On)]
        offload: OnOff,
        /// Worker threads, each with its own pipeline reading one queue of every
        /// (multiqueue) TAP.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Print a running instance's counters (read from its --metrics address).
    ///
    /// Example: podplane stats --metrics 127.0.0.1:9464
    Stats {
        /// The address `podplane run --metrics` serves on.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: std::net::SocketAddr,
    },
    /// List or flush a running instance's connections (over its --metrics address),
    /// as `conntrack -L` / `conntrack -D` do.
    ///
    /// Example: podplane conntrack list --metrics 127.0.0.1:9464
    /// Example: podplane conntrack flush --metrics 127.0.0.1:9464 -p udp --orig-dst 10.96.0.10
    Conntrack {
        #[command(subcommand)]
        action: ConntrackAction,
    },
    /// Check a node file and Kubernetes objects; print what would be installed.
    ///
    /// Exits 1 and prints every error (file, object, field) when anything is wrong.
    ///
    /// Example: podplane check --config node.yaml --objects nodes.yaml
    Check {
        /// The node file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Kubernetes objects as `kubectl get -o yaml` prints them: files, or
        /// directories whose *.yaml / *.yml files are read in name order.
        #[arg(long, num_args = 1..)]
        objects: Vec<PathBuf>,
    },
    /// Run pcap files through the node's pipeline; write each port's output as pcap.
    ///
    /// Inputs are merged by timestamp and the clock follows the timestamps, so timeouts
    /// replay exactly. Writes DIR/PORT.pcap for every port and DIR/host.pcap (what the
    /// node's own stack receives), then prints counters and drop reasons. Same inputs,
    /// same outputs, byte for byte.
    ///
    /// Example: podplane replay --config node.yaml --in pod-a=a.pcap --out-dir out --trace 4
    Replay {
        /// The node file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Kubernetes objects (files or directories).
        #[arg(long, num_args = 1..)]
        objects: Vec<PathBuf>,
        /// An input: PORT=FILE.pcap (pcap or pcapng, Ethernet). Repeat for more ports.
        #[arg(long = "in", value_name = "PORT=FILE", required = true)]
        inputs: Vec<String>,
        /// Where the output pcaps go (created if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// Trace the first N packets through every stage.
        #[arg(long, default_value_t = 0)]
        trace: u32,
        /// Print the counters as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Frames per batch (1..=256; 1 feeds one packet at a time, as the kernel sees them).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Seed of the pipeline's RNG (IP IDs of the ICMP errors it sends).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> std::process::ExitCode {
    match run_cli() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("podplane: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli() -> anyhow::Result<std::process::ExitCode> {
    let ok = std::process::ExitCode::SUCCESS;
    match Cli::parse().command {
        Command::Run { config, objects, metrics, seed, capture, trace, io, offload, workers } => {
            let io = match io {
                IoArg::Auto => podplane_tap::IoMode::Auto,
                IoArg::Uring => podplane_tap::IoMode::Uring,
                IoArg::UringUnregistered => podplane_tap::IoMode::UringUnregistered,
                IoArg::Poll => podplane_tap::IoMode::Poll,
            };
            let offload = matches!(offload, OnOff::On);
            let seed = match seed {
                Some(s) => s,
                None => run::os_seed().context("podplane run: no seed from /dev/urandom (give --seed)")?,
            };
            run::run(&run::Run { config, objects, metrics, seed, capture, trace, io, offload, workers })?;
            Ok(ok)
        }
        Command::Conntrack { action: ConntrackAction::List { metrics, json } } => {
            print!("{}", conntrack::list(metrics, json)?);
            Ok(ok)
        }
        Command::Conntrack { action: ConntrackAction::Flush { metrics, filter } } => {
            print!("{}", conntrack::flush(metrics, &filter)?);
            Ok(ok)
        }
        Command::Stats { metrics } => {
            print!("{}", metrics::fetch(metrics)?);
            Ok(ok)
        }
        Command::Check { config, objects } => {
            let dp = load(&config, &objects)?;
            match dp {
                Ok(setup) => {
                    print!("{}", setup.summary());
                    println!("ok");
                    Ok(ok)
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    Ok(std::process::ExitCode::FAILURE)
                }
            }
        }
        Command::Replay { config, objects, inputs, out_dir, trace, json, batch, seed } => {
            let setup = match load(&config, &objects)? {
                Ok(s) => s,
                Err(errors) => {
                    eprintln!("{errors}");
                    return Ok(std::process::ExitCode::FAILURE);
                }
            };
            let inputs = inputs
                .iter()
                .map(|i| {
                    i.split_once('=')
                        .map(|(p, f)| (p.to_string(), PathBuf::from(f)))
                        .ok_or_else(|| anyhow::anyhow!("--in {i:?}: expected PORT=FILE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut dp = podplane::config::Dataplane::new(setup, seed);
            let r = replay::Replay { inputs, out_dir: out_dir.clone(), trace, batch };
            let report = replay::run(&mut dp, &r)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&replay::json(&report))?);
            } else {
                print!("{}", replay::table(&report, &out_dir));
            }
            if !report.counters.balanced() {
                bail!("accounting identity broken: rx + generated + released != tx + host + dropped + held");
            }
            Ok(ok)
        }
        Command::Sim { scenario: Some(file), capture, seed, .. } => scenario(&file, capture.as_deref(), seed),
        Command::Sim { scenario: None, capture: Some(_), .. } => bail!("--capture goes with --scenario"),
        Command::Sim { scenario: None, packets, seed, batch, trace, mix, verify_l4, .. } => {
            sim(packets, seed.unwrap_or(1), batch, trace, &mix, verify_l4).map(|()| ok)
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
            Ok(ok)
        }
    }
}

/// `podplane sim --scenario`: build, run, summarise; fails when a flow failed.
fn scenario(file: &Path, capture: Option<&Path>, seed: Option<u64>) -> anyhow::Result<std::process::ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let mut sc = podplane_sim::scenario::Scenario::parse(&file.display().to_string(), &text)?;
    if let Some(s) = seed {
        sc.seed = s;
    }
    let mut sim = sc.start(capture)?;
    let run = sim.run_until_done(sc.limit());
    println!("podplane sim: {} (seed {}, {:?} mode)\n", file.display(), sc.seed, sc.mode);
    print!("{}", podplane_sim::report::flows(&sim));
    print!("{}", podplane_sim::report::nodes(&sim));
    println!("\nvirtual time {}, {} events, event-log hash {:016x}", sim.now(), sim.events(), sim.event_log_hash());
    if let Some(dir) = capture {
        println!("pcaps of every link in {}", dir.display());
    }
    run?;
    let failed: Vec<String> = sim.flows().into_iter().filter(|f| !f.ok).map(|f| f.name).collect();
    if !failed.is_empty() {
        eprintln!("podplane sim: flows failed: {}", failed.join(", "));
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Read the node file and the objects (files, or directories of *.yaml / *.yml in name
/// order) and check them. I/O errors are the outer error; configuration errors the inner.
fn load(
    config: &Path,
    objects: &[PathBuf],
) -> anyhow::Result<Result<podplane::config::NodeSetup, podplane::config::ConfigErrors>> {
    let node = std::fs::read_to_string(config).with_context(|| format!("{}: cannot read", config.display()))?;
    let files = object_files(objects)?;
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|t| (f.display().to_string(), t))
                .with_context(|| format!("{}: cannot read", f.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let name = config.display().to_string();
    let sources: Vec<podplane::config::Source<'_>> =
        texts.iter().map(|(n, t)| podplane::config::Source { name: n, text: t }).collect();
    Ok(podplane::config::load(podplane::config::Source { name: &name, text: &node }, &sources))
}

/// The object files named: files as they are, directories as their *.yaml / *.yml
/// files in name order.
fn object_files(objects: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for o in objects {
        if o.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(o)
                .with_context(|| format!("{}: cannot list", o.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(o.clone());
        }
    }
    Ok(files)
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
