//! `podplane replay`: pcap files in per port, the node's pipeline in between, pcap
//! files out per port, the clock taken from the packet timestamps.
//!
//! Inputs are merged by timestamp (ties: the order of `--in`, then file order) and fed
//! in batches of `--batch` consecutive frames (default 1: one packet at a time, as the
//! kernel sees them), each batch at the time of its first frame. Every port of the
//! node gets `DIR/PORT.pcap` (Ethernet, nanosecond timestamps) and what the node's own
//! stack receives goes to `DIR/host.pcap`; an output frame carries the timestamp of the
//! batch that caused it. The connections left at the end are listed in
//! `DIR/conntrack.txt` as `conntrack -L` prints them. Same inputs, same outputs, byte
//! for byte.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use podplane::Instant;
use podplane::buf::{Batch, BufPool, DEFAULT_HEADROOM, Owner, PortId};
use podplane::config::{Dataplane, HOST_OUTPUT};
use podplane::pipeline::{CounterSnapshot, DropReason};
use podplane_sim::capture::Capture;

use crate::pcap_in;

/// What to replay.
#[derive(Debug)]
pub(crate) struct Replay {
    /// `(port name, pcap file)`, in command-line order.
    pub inputs: Vec<(String, PathBuf)>,
    /// Output directory.
    pub out_dir: PathBuf,
    /// Trace the first N packets.
    pub trace: u32,
    /// Frames per batch.
    pub batch: usize,
}

/// Per-port traffic as the driver saw it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PortCount {
    pub rx: u64,
    pub rx_bytes: u64,
    pub tx: u64,
    pub tx_bytes: u64,
}

/// The result of a replay.
#[derive(Debug)]
pub(crate) struct Report {
    pub counters: CounterSnapshot,
    /// Per port, in the node's port order, then `host`.
    pub ports: Vec<(String, PortCount)>,
    pub trace: String,
    pub frames: usize,
}

/// Run `r` through `dp`.
pub(crate) fn run(dp: &mut Dataplane, r: &Replay) -> anyhow::Result<Report> {
    if !(1..=256).contains(&r.batch) {
        bail!("--batch {}: expected 1..=256", r.batch);
    }
    let ports: Vec<(String, PortId)> = dp.setup().ports.iter().map(|p| (p.name.clone(), p.id)).collect();
    // Read and merge the inputs.
    let mut merged: Vec<(u64, usize, usize, PortId, Vec<u8>)> = Vec::new();
    for (k, (name, path)) in r.inputs.iter().enumerate() {
        let Some(&(_, id)) = ports.iter().find(|(n, _)| n == name) else {
            let names: Vec<&str> = ports.iter().map(|(n, _)| n.as_str()).collect();
            bail!("--in {name}={}: the node has no port {name:?} (ports: {})", path.display(), names.join(", "));
        };
        let frames = pcap_in::read(path)?;
        for (i, (ts, data)) in frames.into_iter().enumerate() {
            merged.push((ts, k, i, id, data));
        }
    }
    merged.sort_by_key(|f| (f.0, f.1, f.2));

    // Slots big enough for the largest input frame (jumbo captures too), at least 2 KiB.
    let largest = merged.iter().map(|f| f.4.len()).max().unwrap_or(0);
    let slot = (DEFAULT_HEADROOM + largest.max(1920)).div_ceil(64) * 64;
    let slot = slot.min(65472);
    let mut pool = BufPool::new(4096, slot, DEFAULT_HEADROOM).context("buffer pool")?;

    std::fs::create_dir_all(&r.out_dir).with_context(|| format!("{}: cannot create", r.out_dir.display()))?;
    let mut outs: BTreeMap<u16, Capture> = BTreeMap::new();
    for (name, id) in &ports {
        outs.insert(id.0, Capture::create(&r.out_dir.join(format!("{name}.pcap")))?);
    }
    let mut host = Capture::create(&r.out_dir.join(format!("{HOST_OUTPUT}.pcap")))?;
    let mut counts: BTreeMap<u16, PortCount> = BTreeMap::new();
    let mut host_count = PortCount::default();

    let pipeline = dp.pipeline();
    pipeline.trace_add(r.trace);
    let mut batch = Batch::new();
    let mut k = 0;
    while k < merged.len() {
        batch.clear();
        let now = Instant::from_nanos(merged.get(k).map_or(0, |f| f.0));
        while let Some((ts, _, _, port, data)) = merged.get(k) {
            if batch.len() >= r.batch {
                break;
            }
            k += 1;
            let c = counts.entry(port.0).or_default();
            c.rx += 1;
            c.rx_bytes += data.len() as u64;
            let Some(p) = pool.alloc(Owner::Pipeline) else {
                pipeline.count_driver_drop(DropReason::PoolExhausted, data.len());
                continue;
            };
            if pool.set_data(p, data).is_err() {
                let _ = pool.free(p);
                pipeline.count_driver_drop(DropReason::FrameTooLong, data.len());
                continue;
            }
            let m = pool.meta_mut(p);
            m.in_port = *port;
            m.timestamp = Instant::from_nanos(*ts);
            let _ = batch.push(p);
        }
        if batch.is_empty() {
            continue;
        }
        let out = pipeline.process(&mut pool, now, &mut batch);
        let tx: Vec<_> = out.tx().collect();
        let to_host = out.host().to_vec();
        for (port, p) in tx {
            let data = pool.data(p);
            if let Some(w) = outs.get_mut(&port.0) {
                w.write(now, data)?;
                let c = counts.entry(port.0).or_default();
                c.tx += 1;
                c.tx_bytes += data.len() as u64;
            }
            let _ = pool.free(p);
        }
        for p in to_host {
            let data = pool.data(p);
            host.write(now, data)?;
            host_count.tx += 1;
            host_count.tx_bytes += data.len() as u64;
            let _ = pool.free(p);
        }
    }
    for (_, w) in outs {
        w.finish()?;
    }
    host.finish()?;
    if let Some(ct) = dp.conntrack()
        && let Ok(ct) = ct.lock()
    {
        let listing = crate::conntrack::render(&ct.list(ct.last_seen()), false);
        let path = r.out_dir.join("conntrack.txt");
        std::fs::write(&path, listing).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    let mut per_port: Vec<(String, PortCount)> =
        ports.iter().map(|(n, id)| (n.clone(), counts.get(&id.0).copied().unwrap_or_default())).collect();
    per_port.push((HOST_OUTPUT.to_string(), host_count));
    let pipeline = dp.pipeline();
    Ok(Report {
        counters: pipeline.counters().snapshot(),
        ports: per_port,
        trace: pipeline.trace().to_string(),
        frames: merged.len(),
    })
}

/// The report as a table.
pub(crate) fn table(rep: &Report, out_dir: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "replayed {} frames; outputs in {}\n", rep.frames, out_dir.display());
    let _ = writeln!(s, "{:<16} {:>10} {:>12} {:>10} {:>12}", "port", "rx", "rx bytes", "tx", "tx bytes");
    for (name, c) in &rep.ports {
        let _ = writeln!(s, "{name:<16} {:>10} {:>12} {:>10} {:>12}", c.rx, c.rx_bytes, c.tx, c.tx_bytes);
    }
    let _ = writeln!(s);
    let _ = write!(s, "{}", rep.counters);
    if !rep.trace.is_empty() {
        let _ = write!(s, "\ntrace:\n{}", rep.trace);
    }
    s
}

/// The report as JSON (stable keys; see the README).
pub(crate) fn json(rep: &Report) -> serde_json::Value {
    let t = &rep.counters.totals;
    serde_json::json!({
        "frames": rep.frames,
        "totals": {
            "rx": t.rx, "rx_bytes": t.rx_bytes, "generated": t.generated, "tx": t.tx,
            "tx_bytes": t.tx_bytes, "host": t.host, "held": t.held, "released": t.released,
            "dropped": t.dropped,
        },
        "ports": rep.ports.iter().map(|(n, c)| serde_json::json!({
            "name": n, "rx": c.rx, "rx_bytes": c.rx_bytes, "tx": c.tx, "tx_bytes": c.tx_bytes,
        })).collect::<Vec<_>>(),
        "drops": rep.counters.drops.iter().map(|d| serde_json::json!({
            "stage": d.stage, "reason": d.reason.as_str(), "code": d.reason.code(),
            "packets": d.packets, "bytes": d.bytes,
        })).collect::<Vec<_>>(),
        "events": rep.counters.events.iter().map(|e| serde_json::json!({
            "stage": e.stage, "event": e.event.as_str(), "count": e.count,
        })).collect::<Vec<_>>(),
        "trace": rep.trace.lines().collect::<Vec<_>>(),
    })
}
