//! `podplane run`: the node's pipeline on TAP devices, one per `tap` port, until
//! SIGINT or SIGTERM.
//!
//! The control thread (this module) owns what is not on the packet path: the
//! signals, the metrics listener, the configuration files and the TAP devices'
//! lifecycle. `--workers N` threads move the packets ([`crate::worker`]): each has
//! its own [`podplane_tap::Driver`] (io_uring, or poll + read/write with `--io poll`
//! or where io_uring is unavailable), its own pool and its own pipeline, and reads
//! queue `k` of every TAP (with more than one worker the TAPs are multiqueue and the
//! kernel spreads flows over the queues by a symmetric hash).
//!
//! Once a second the config and object files are checked for changes and reloaded:
//! a valid change goes to every worker, which applies it between batches (only what
//! differs is rebuilt); TAPs of new pod ports are created and those of removed ones
//! deleted; an invalid change is reported and changes nothing. A TAP that disappears
//! (its pod's namespace deleted) is reported and created again, ready for the pod's
//! next namespace; the other pods are not disturbed. `--metrics ADDR` serves the
//! workers' counters, summed, in Prometheus text format on a loopback address.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use crossbeam_channel::{Receiver, Sender};
use podplane::buf::PortId;
use podplane::config::file::PortKind;
use podplane::config::{Dataplane, NodeSetup};
use podplane::pipeline::CounterSnapshot;
use podplane_tap::{Driver, IoMode, PortStats, TapDevice, TapFlags};

use crate::metrics;
use crate::worker::{Ctl, Gone, Handoff, Report, Shared, Worker};

/// What to run.
#[derive(Debug)]
pub(crate) struct Run {
    pub config: PathBuf,
    pub objects: Vec<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub seed: u64,
    /// Write every TAP port's frames, both directions, to DIR/PORT.pcap (worker k > 0:
    /// DIR/PORT.wk.pcap).
    pub capture: Option<PathBuf>,
    /// Trace the first N packets (of worker 0); the trace is printed on exit.
    pub trace: u32,
    /// The I/O backend.
    pub io: IoMode,
    /// Open TAPs with `IFF_VNET_HDR` and checksum/TSO offloads.
    pub offload: bool,
    /// Worker threads (TAP queues).
    pub workers: usize,
}

/// The newest modification time among the files (a change triggers a reload).
fn stamp(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

/// The control thread's view of the workers and the TAPs they drive.
struct Control {
    ctl: Vec<Sender<Ctl>>,
    flags: TapFlags,
    /// TAP name -> (pipeline port, generation).
    taps: BTreeMap<String, (PortId, u64)>,
    next_generation: u64,
}

impl Control {
    /// Create TAP `name` (one queue per worker) and hand queue k to worker k.
    fn open(&mut self, name: &str, port: PortId) -> anyhow::Result<()> {
        let mut queues = Vec::with_capacity(self.ctl.len());
        for _ in 0..self.ctl.len() {
            queues.push(TapDevice::open(name, self.flags).with_context(|| format!("Port/{name}"))?);
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        for (tx, dev) in self.ctl.iter().zip(queues) {
            let _ = tx.send(Ctl::Add { name: name.to_owned(), port, dev, generation });
        }
        self.taps.insert(name.to_owned(), (port, generation));
        Ok(())
    }

    fn remove(&mut self, name: &str) {
        for tx in &self.ctl {
            let _ = tx.send(Ctl::Remove { name: name.to_owned() });
        }
        self.taps.remove(name);
    }

    /// Open a TAP for every tap port of the setup not driven yet; drop those gone from it.
    fn sync(&mut self, setup: &NodeSetup) -> anyhow::Result<()> {
        let driven: Vec<String> = self.taps.keys().cloned().collect();
        for name in &driven {
            if !setup.ports.iter().any(|p| &p.name == name && p.kind == PortKind::Tap) {
                self.remove(name);
                eprintln!("podplane run: port {name} removed; its TAP closed");
            }
        }
        for p in setup.ports.iter().filter(|p| p.kind == PortKind::Tap) {
            match self.taps.get_mut(&p.name) {
                Some((port, _)) if *port != p.id => {
                    *port = p.id;
                    for tx in &self.ctl {
                        let _ = tx.send(Ctl::SetPort { name: p.name.clone(), port: p.id });
                    }
                }
                Some(_) => {}
                None => {
                    self.open(&p.name, p.id)?;
                    eprintln!("podplane run: port {} is TAP device {}", p.name, p.name);
                }
            }
        }
        Ok(())
    }

    /// A worker saw TAP `g.name` go: if it is the TAP driven now (not an older one),
    /// take it from every worker and create it again.
    fn gone(&mut self, g: &Gone) {
        let Some(&(port, generation)) = self.taps.get(&g.name) else { return };
        if generation != g.generation {
            return;
        }
        eprintln!("podplane run: TAP {} went away (its pod's namespace deleted?); the other ports go on", g.name);
        self.remove(&g.name);
        match self.open(&g.name, port) {
            Ok(()) => eprintln!("podplane run: TAP {} created again for the pod's next namespace", g.name),
            Err(e) => eprintln!("podplane run: TAP {}: {e:#}", g.name),
        }
    }
}

/// 64 random bits from the OS, for a run's seed.
pub(crate) fn os_seed() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_ne_bytes(b))
}

/// Run until a signal.
#[allow(clippy::too_many_lines)]
pub(crate) fn run(r: &Run) -> anyhow::Result<()> {
    let mut setup = match crate::load(&r.config, &r.objects)? {
        Ok(s) => s,
        Err(e) => bail!("{e}"),
    };
    // The connection tables' hash is keyed by the run's seed too (the tables keep it
    // across reloads): a fixed key would let crafted tuples collide.
    setup.conntrack.seed ^= r.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    if !(1..=64).contains(&r.workers) {
        bail!("--workers {}: must be between 1 and 64", r.workers);
    }
    if let Some(p) = setup.ports.iter().find(|p| p.kind != PortKind::Tap) {
        eprintln!("podplane run: Port/{}: kind {:?}: not opened (run drives tap ports)", p.name, p.kind);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing the signal handlers")?;
    }
    let listener = match r.metrics {
        Some(a) if !a.ip().is_loopback() => bail!("--metrics {a}: serve metrics on a loopback address only"),
        Some(a) => {
            let l = TcpListener::bind(a).with_context(|| format!("--metrics {a}"))?;
            l.set_nonblocking(true)?;
            eprintln!("podplane run: metrics on http://{a}/metrics");
            Some(l)
        }
        None => None,
    };
    if let Some(dir) = &r.capture {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        eprintln!("podplane run: capturing every TAP port to {}", dir.display());
    }
    // The driver's clock: monotonic nanoseconds since start (core reads no clock).
    #[allow(clippy::disallowed_methods)]
    let t0 = std::time::Instant::now();
    // Captures are stamped with the wall clock, as tcpdump stamps them.
    #[allow(clippy::disallowed_methods)]
    let epoch_ns = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let epoch_ns = u64::try_from(epoch_ns).unwrap_or(0);

    let n = r.workers;
    let (gone_tx, gone_rx): (Sender<Gone>, Receiver<Gone>) = crossbeam_channel::unbounded();
    let shares: Vec<(Sender<Shared>, Receiver<Shared>)> = (0..n).map(|_| crossbeam_channel::bounded(1024)).collect();
    // Masquerade replies for another worker's ports: 256 frames of 2 KiB queued each.
    let handoffs: Vec<(Sender<Handoff>, Receiver<Handoff>)> =
        (0..n).map(|_| crossbeam_channel::bounded(if n > 1 { 256 } else { 1 })).collect();
    let reports: Vec<Arc<Mutex<Report>>> = (0..n).map(|_| Arc::new(Mutex::new(Report::default()))).collect();
    let worker_stop = Arc::new(AtomicBool::new(false));
    let mut ctl = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    let mut kind = String::new();
    // Each worker's connection table, for `podplane conntrack`.
    let mut tables = Vec::with_capacity(n);
    for k in 0..n {
        let (tx, rx) = crossbeam_channel::unbounded();
        ctl.push(tx);
        let mut dp = Dataplane::for_worker(setup.clone(), r.seed, k, n);
        tables.extend(dp.conntrack());
        if k == 0 {
            dp.pipeline().trace_add(r.trace);
        }
        let drv = Driver::new(r.io, 8192)?;
        kind = drv.kind().to_string();
        let w = Worker {
            index: k,
            dp,
            drv,
            ctl: rx,
            gone: gone_tx.clone(),
            share_in: shares[k].1.clone(),
            share_out: shares.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, s)| s.0.clone()).collect(),
            handoff_in: handoffs[k].1.clone(),
            handoff_out: if n > 1 { handoffs.iter().map(|h| h.0.clone()).collect() } else { Vec::new() },
            report: Arc::clone(&reports[k]),
            stop: Arc::clone(&worker_stop),
            capture: r.capture.clone(),
            t0,
            epoch_ns,
        };
        let h = std::thread::Builder::new().name(format!("podplane-w{k}")).spawn(move || w.run())?;
        handles.push(h);
    }
    let flags = TapFlags { vnet_hdr: r.offload, multi_queue: n > 1 };
    let mut control = Control { ctl, flags, taps: BTreeMap::new(), next_generation: 0 };
    let mut current = setup;
    let started = control.sync(&current);
    let mut files = vec![r.config.clone()];
    files.extend(crate::object_files(&r.objects)?);
    let mut seen = stamp(&files);
    if started.is_ok() {
        let offload = if r.offload { ", TAP offloads on (checksum, TSO)" } else { ", TAP offloads off" };
        let workers = if n == 1 { String::new() } else { format!(", {n} workers") };
        eprintln!("podplane run: {} running on {kind}{offload}{workers}; SIGINT or SIGTERM stops it", current.name);
    }
    let mut next_check = 1_000_000_000u64;
    while started.is_ok() && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        while let Ok(g) = gone_rx.try_recv() {
            control.gone(&g);
        }
        if let Some(l) = &listener {
            while let Ok((mut conn, _)) = l.accept() {
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_millis(200)));
                let mut req = [0u8; 1024];
                let n = conn.read(&mut req).unwrap_or(0);
                let req = String::from_utf8_lossy(req.get(..n).unwrap_or(&[]));
                // "GET /path HTTP/1.0"
                let path = req.split_whitespace().nth(1).unwrap_or("/metrics");
                let (status, kind, body) = match crate::conntrack::serve(path, &tables) {
                    Some(Ok(b)) => ("200 OK", "text/plain", b),
                    Some(Err(e)) => ("400 Bad Request", "text/plain", format!("{e}\n")),
                    None => ("200 OK", "text/plain; version=0.0.4", render(&reports, &current)),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        }
        let now_ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if now_ns >= next_check {
            next_check = now_ns + 1_000_000_000;
            let now = stamp(&files);
            if now != seen {
                seen = now;
                reload(r, &mut current, &mut control);
                if let Ok(f) = crate::object_files(&r.objects) {
                    files.truncate(1);
                    files.extend(f);
                    seen = stamp(&files);
                }
            }
        }
    }
    worker_stop.store(true, Ordering::Relaxed);
    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(anyhow::anyhow!("a worker panicked")),
        }
    }
    started?;
    let (snap, _) = merged(&reports);
    eprintln!("podplane run: stopping\n{snap}");
    if r.trace > 0
        && let Some(rep) = reports.first().and_then(|m| m.lock().ok())
    {
        eprintln!("trace:\n{}", rep.trace);
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Check the changed files and send a valid setup to the workers.
fn reload(r: &Run, current: &mut NodeSetup, control: &mut Control) {
    match crate::load(&r.config, &r.objects) {
        Ok(Ok(new)) => {
            // Checked against the running setup on a scratch dataplane first, so that a
            // change every worker would refuse is refused here, once, with its reason.
            let mut scratch = Dataplane::new(current.clone(), r.seed);
            match scratch.apply(new.clone()) {
                Ok(a) if a.is_empty() => eprintln!("podplane run: reload: no change"),
                Ok(a) => {
                    // Every worker applies it between two batches; wait (bounded) until
                    // all have, so that "applied" is true when it is printed.
                    let (done_tx, done_rx) = crossbeam_channel::bounded(control.ctl.len());
                    for tx in &control.ctl {
                        let _ = tx.send(Ctl::Apply(Box::new(new.clone()), done_tx.clone()));
                    }
                    let all =
                        (0..control.ctl.len()).all(|_| done_rx.recv_timeout(std::time::Duration::from_secs(2)).is_ok());
                    eprintln!(
                        "podplane run: reload applied{}: {} route change(s), reconfigured [{}]{}",
                        if all { "" } else { " (not yet by every worker)" },
                        a.route_changes,
                        a.reconfigured.join(", "),
                        if a.new_pipeline { ", new pipeline" } else { "" }
                    );
                    if let Err(e) = control.sync(&new) {
                        eprintln!("podplane run: reload: {e:#}");
                    }
                    *current = new;
                }
                Err(e) => eprintln!("podplane run: reload refused: {e}"),
            }
        }
        Ok(Err(errors)) => eprintln!("podplane run: reload refused, the running configuration stays:\n{errors}"),
        Err(e) => eprintln!("podplane run: reload: {e:#}"),
    }
}

/// The workers' counters summed, and their per-port traffic by pipeline port.
fn merged(reports: &[Arc<Mutex<Report>>]) -> (CounterSnapshot, BTreeMap<u16, PortStats>) {
    let mut snap = CounterSnapshot::default();
    let mut traffic: BTreeMap<u16, PortStats> = BTreeMap::new();
    for r in reports {
        let Ok(r) = r.lock() else { continue };
        snap.merge(&r.counters);
        for (_, port, s, _) in &r.devices {
            *traffic.entry(port.0).or_default() += *s;
        }
    }
    (snap, traffic)
}

/// The metrics page.
fn render(reports: &[Arc<Mutex<Report>>], setup: &NodeSetup) -> String {
    let (snap, traffic) = merged(reports);
    let (mut exhausted, mut unrouted, mut shared, mut shared_dropped) = (0, 0, 0, 0);
    let (mut handoff, mut handoff_dropped) = (0, 0);
    let mut tables: Vec<(&str, usize)> = Vec::new();
    for (k, r) in reports.iter().enumerate() {
        let Ok(r) = r.lock() else { continue };
        exhausted += r.pool_exhausted;
        unrouted += r.unrouted;
        shared += r.shared_out;
        shared_dropped += r.shared_dropped;
        handoff += r.handoff_out;
        handoff_dropped += r.handoff_dropped;
        if k == 0 {
            // Learned tables are per worker; worker 0's are shown.
            tables.clone_from(&r.tables);
        }
    }
    let driver = [
        (
            "podplane_pool_exhausted_total",
            "Reads not posted because a buffer pool was empty (the frames wait in the kernel's queue).",
            exhausted,
        ),
        ("podplane_unrouted_tx_total", "Packets sent to a port without a device (freed).", unrouted),
        (
            "podplane_workers_shared_neighbour_frames_total",
            "ARP replies / neighbour advertisements to the node passed to the other workers.",
            shared,
        ),
        (
            "podplane_workers_shared_dropped_total",
            "Neighbour frames not passed to another worker (its queue was full).",
            shared_dropped,
        ),
        (
            "podplane_workers_handoff_total",
            "Frames handed to the worker owning their connection (masquerade port, service client or flow).",
            handoff,
        ),
        (
            "podplane_workers_handoff_dropped_total",
            "Frames not handed over (the owner's queue was full).",
            handoff_dropped,
        ),
    ];
    let mut page = metrics::render(&snap, setup, &traffic, &tables, &driver);
    page.push_str("# HELP podplane_worker_rx_packets_total Packets each worker's pipeline received.\n");
    page.push_str("# TYPE podplane_worker_rx_packets_total counter\n");
    for (k, r) in reports.iter().enumerate() {
        if let Ok(r) = r.lock() {
            page.push_str(&format!("podplane_worker_rx_packets_total{{worker=\"{k}\"}} {}\n", r.counters.totals.rx));
        }
    }
    page
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_seed_differs_from_run_to_run() {
        // Two reads of 64 bits from the OS agree once in 2^64.
        let (a, b) = (super::os_seed().unwrap(), super::os_seed().unwrap());
        assert_ne!(a, b);
        assert_ne!(a, 1, "not the old fixed default");
    }
}
