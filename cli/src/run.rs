//! `podplane run`: the node's pipeline on TAP devices, one per `tap` port, until
//! SIGINT or SIGTERM.
//!
//! One worker: a [`podplane_tap::Driver`] (io_uring, or poll + read/write with
//! `--io poll` or where io_uring is unavailable) reads up to 32 frames per TAP per
//! round straight into pool slots, the pipeline runs on them with the monotonic
//! clock, and the driver writes what it transmits. Once a second the config and
//! object files are checked for changes and reloaded: a valid change is applied
//! between batches (only what differs is rebuilt; TAPs of new pod ports are created,
//! those of removed ones deleted), an invalid one is reported and changes nothing. A
//! TAP that disappears (its pod's namespace deleted) is reported and created again,
//! ready for the pod's next namespace; the other pods are not disturbed. `--metrics
//! ADDR` serves the counters in Prometheus text format on a loopback address.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use podplane::Instant;
use podplane::buf::{Batch, PortId};
use podplane::config::Dataplane;
use podplane::config::file::PortKind;
use podplane_sim::capture::Capture;
use podplane_tap::{Driver, IoMode, TapDevice, TapFlags};

use crate::metrics;

/// What to run.
#[derive(Debug)]
pub(crate) struct Run {
    pub config: PathBuf,
    pub objects: Vec<PathBuf>,
    pub metrics: Option<SocketAddr>,
    pub seed: u64,
    /// Write every TAP port's frames, both directions, to DIR/PORT.pcap.
    pub capture: Option<PathBuf>,
    /// Trace the first N packets; the trace is printed on exit.
    pub trace: u32,
    /// The I/O backend.
    pub io: IoMode,
    /// Open TAPs with `IFF_VNET_HDR` and checksum/TSO offloads.
    pub offload: bool,
}

/// Per-port traffic seen by the driver.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PortTraffic {
    pub rx: u64,
    pub rx_bytes: u64,
    pub tx: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub rx_super_frames: u64,
    pub rx_offload_errors: u64,
}

/// The newest modification time among the files (a change triggers a reload).
fn stamp(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

/// Open a TAP for every tap port of the setup not driven yet; drop those gone from it.
fn sync_taps(dp: &Dataplane, drv: &mut Driver, flags: TapFlags) -> anyhow::Result<()> {
    let setup = dp.setup();
    let driven: Vec<String> = drv.devices().map(|(n, ..)| n.to_owned()).collect();
    for name in &driven {
        if !setup.ports.iter().any(|p| &p.name == name && p.kind == PortKind::Tap) {
            drv.remove(name);
            eprintln!("podplane run: port {name} removed; its TAP closed");
        }
    }
    for p in setup.ports.iter().filter(|p| p.kind == PortKind::Tap) {
        if driven.contains(&p.name) {
            drv.set_port(&p.name, p.id);
        } else {
            open_tap(drv, &p.name, p.id, flags).with_context(|| format!("Port/{}", p.name))?;
        }
    }
    Ok(())
}

fn open_tap(drv: &mut Driver, name: &str, port: PortId, flags: TapFlags) -> anyhow::Result<()> {
    let t = TapDevice::open(name, flags)?;
    eprintln!("podplane run: port {name} is TAP device {}", t.name());
    drv.add(t, port)?;
    Ok(())
}

/// Run until a signal.
#[allow(clippy::too_many_lines)]
pub(crate) fn run(r: &Run) -> anyhow::Result<()> {
    let setup = match crate::load(&r.config, &r.objects)? {
        Ok(s) => s,
        Err(e) => bail!("{e}"),
    };
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
    let mut dp = Dataplane::new(setup, r.seed);
    dp.pipeline().trace_add(r.trace);
    let mut drv = Driver::new(r.io, 8192)?;
    let flags = TapFlags { vnet_hdr: r.offload, ..TapFlags::default() };
    sync_taps(&dp, &mut drv, flags)?;
    let mut files = vec![r.config.clone()];
    files.extend(crate::object_files(&r.objects)?);
    let mut seen = stamp(&files);
    let mut unrouted = 0u64;
    let mut batch = Batch::new();
    // The driver's clock: monotonic nanoseconds since start (core reads no clock).
    #[allow(clippy::disallowed_methods)]
    let t0 = std::time::Instant::now();
    let mut next_check = 1_000_000_000u64;
    // Captures are stamped with the wall clock, as tcpdump stamps them.
    #[allow(clippy::disallowed_methods)]
    let epoch_ns = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let epoch_ns = u64::try_from(epoch_ns).unwrap_or(0);
    let mut captures: BTreeMap<u16, Capture> = BTreeMap::new();
    if let Some(dir) = &r.capture {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        for p in dp.setup().ports.iter().filter(|p| p.kind == PortKind::Tap) {
            // Written through at every frame: the capture can be read while it grows.
            captures.insert(p.id.0, Capture::create_buffered(&dir.join(format!("{}.pcap", p.name)), 0)?);
        }
        eprintln!("podplane run: capturing every TAP port to {}", dir.display());
    }
    let offload = if r.offload { ", TAP offloads on (checksum, TSO)" } else { ", TAP offloads off" };
    eprintln!("podplane run: {} running on {}{offload}; SIGINT or SIGTERM stops it", dp.setup().name, drv.kind());

    // Reused every round: the driver loop allocates nothing per batch.
    let mut tx: Vec<(PortId, podplane::PktId)> = Vec::with_capacity(4096);
    let mut host: Vec<podplane::PktId> = Vec::with_capacity(4096);
    let mut gone: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        drv.recv(&mut batch, std::time::Duration::from_millis(100))?;
        let now_ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if !batch.is_empty() {
            if !captures.is_empty() {
                let at = Instant::from_nanos(epoch_ns + now_ns);
                for i in 0..batch.len() {
                    let p = batch.pkt(i);
                    if let Some(w) = captures.get_mut(&drv.pool().meta(p).in_port.0) {
                        let _ = w.write(at, drv.pool().data(p));
                    }
                }
            }
            let out = dp.pipeline().process(drv.pool_mut(), Instant::from_nanos(now_ns), &mut batch);
            tx.clear();
            tx.extend(out.tx());
            host.clear();
            host.extend_from_slice(out.host());
            for &(port, p) in &tx {
                if let Some(w) = captures.get_mut(&port.0) {
                    let _ = w.write(Instant::from_nanos(epoch_ns + now_ns), drv.pool().data(p));
                }
            }
            unrouted += drv.send(&tx) as u64;
            // No host port yet: what the node's own stack would receive is freed.
            drv.free(&host);
        }
        drv.take_gone(&mut gone);
        for name in gone.drain(..) {
            eprintln!("podplane run: TAP {name} went away (its pod's namespace deleted?); the other ports go on");
            let port = dp.setup().ports.iter().find(|p| p.name == name).map(|p| p.id);
            drv.remove(&name);
            if let Some(port) = port {
                match open_tap(&mut drv, &name, port, flags) {
                    Ok(()) => eprintln!("podplane run: TAP {name} created again for the pod's next namespace"),
                    Err(e) => eprintln!("podplane run: TAP {name}: {e:#}"),
                }
            }
        }
        if let Some(l) = &listener {
            while let Ok((mut conn, _)) = l.accept() {
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_millis(200)));
                let mut req = [0u8; 1024];
                let _ = conn.read(&mut req);
                let snap = dp.pipeline().counters().snapshot();
                let tables = dp.table_sizes();
                let traffic = traffic(&drv, unrouted);
                let driver = [
                    (
                        "podplane_pool_exhausted_total",
                        "Reads not posted because the buffer pool was empty (the frames wait in the kernel's queue).",
                        drv.pool().exhausted(),
                    ),
                    ("podplane_unrouted_tx_total", "Packets sent to a port without a device (freed).", unrouted),
                ];
                let body = metrics::render(&snap, dp.setup(), &traffic, &tables, &driver);
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        }
        if now_ns >= next_check {
            next_check = now_ns + 1_000_000_000;
            let now = stamp(&files);
            if now != seen {
                seen = now;
                match crate::load(&r.config, &r.objects) {
                    Ok(Ok(new)) => match dp.apply(new) {
                        Ok(a) if a.is_empty() => eprintln!("podplane run: reload: no change"),
                        Ok(a) => {
                            eprintln!(
                                "podplane run: reload applied: {} route change(s), reconfigured [{}]{}",
                                a.route_changes,
                                a.reconfigured.join(", "),
                                if a.new_pipeline { ", new pipeline" } else { "" }
                            );
                            if let Err(e) = sync_taps(&dp, &mut drv, flags) {
                                eprintln!("podplane run: reload: {e:#}");
                            }
                        }
                        Err(e) => eprintln!("podplane run: reload refused: {e}"),
                    },
                    Ok(Err(errors)) => {
                        eprintln!("podplane run: reload refused, the running configuration stays:\n{errors}")
                    }
                    Err(e) => eprintln!("podplane run: reload: {e:#}"),
                }
                if let Ok(f) = crate::object_files(&r.objects) {
                    files.truncate(1);
                    files.extend(f);
                    seen = stamp(&files);
                }
            }
        }
    }
    let snap = dp.pipeline().counters().snapshot();
    eprintln!("podplane run: stopping\n{snap}");
    if r.trace > 0 {
        eprintln!("trace:\n{}", dp.pipeline().trace());
    }
    for (_, w) in captures {
        w.finish()?;
    }
    Ok(())
}

/// Per-port traffic for the metrics: the driver's counters by pipeline port, and the
/// packets sent to ports without a TAP as errors of port `u16::MAX`.
fn traffic(drv: &Driver, unrouted: u64) -> BTreeMap<u16, PortTraffic> {
    let mut m: BTreeMap<u16, PortTraffic> = drv
        .devices()
        .map(|(_, port, s, _)| {
            let t = PortTraffic {
                rx: s.rx,
                rx_bytes: s.rx_bytes,
                tx: s.tx,
                tx_bytes: s.tx_bytes,
                tx_errors: s.tx_errors,
                rx_super_frames: s.rx_super_frames,
                rx_offload_errors: s.rx_offload_errors,
            };
            (port.0, t)
        })
        .collect();
    if unrouted > 0 {
        m.entry(u16::MAX).or_default().tx_errors += unrouted;
    }
    m
}
