//! `podplane run`: the node's pipeline on TAP devices, one per `tap` port, until
//! SIGINT or SIGTERM.
//!
//! One thread: `poll(2)` on every TAP, read what is ready in batches of up to 32
//! frames per port into pool slots, run the pipeline with the monotonic clock, write
//! what it transmits. Once a second the config and object files are checked for
//! changes and reloaded: a valid change is applied between batches (only what differs
//! is rebuilt), an invalid one is reported and changes nothing. `--metrics ADDR`
//! serves the counters in Prometheus text format on a loopback address.
//! (io_uring batching, vnet_hdr offloads and workers come with the TAP driver issue.)

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::io::AsRawFd as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use podplane::Instant;
use podplane::buf::{Batch, BufPool, PortId};
use podplane::config::Dataplane;
use podplane::config::file::PortKind;
use podplane_sim::capture::Capture;
use podplane_tap::TapPort;

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
}

/// Per-port traffic seen by the driver.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PortTraffic {
    pub rx: u64,
    pub rx_bytes: u64,
    pub tx: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// The newest modification time among the files (a change triggers a reload).
fn stamp(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

/// Open a TAP for every tap port of the setup not open yet; close those gone.
fn sync_taps(dp: &Dataplane, taps: &mut BTreeMap<String, TapPort>) -> anyhow::Result<()> {
    let setup = dp.setup();
    taps.retain(|name, _| setup.ports.iter().any(|p| &p.name == name && p.kind == PortKind::Tap));
    for p in &setup.ports {
        match taps.get_mut(&p.name) {
            Some(t) => t.set_port(p.id),
            None if p.kind == PortKind::Tap => {
                let t = TapPort::open(&p.name, p.id).with_context(|| format!("Port/{}", p.name))?;
                eprintln!("podplane run: port {} is TAP device {}", p.name, t.name());
                taps.insert(p.name.clone(), t);
            }
            None => {}
        }
    }
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
    let mut taps: BTreeMap<String, TapPort> = BTreeMap::new();
    sync_taps(&dp, &mut taps)?;
    let mut files = vec![r.config.clone()];
    files.extend(crate::object_files(&r.objects)?);
    let mut seen = stamp(&files);
    let mut pool = BufPool::with_slots(8192).context("buffer pool")?;
    let mut traffic: BTreeMap<u16, PortTraffic> = BTreeMap::new();
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
    eprintln!("podplane run: {} running; SIGINT or SIGTERM stops it", dp.setup().name);

    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(64);
    // The TAPs' names in the map's order (the order of `fds`); refreshed when they change.
    let mut names: Vec<String> = taps.keys().cloned().collect();
    let mut tx: Vec<(PortId, podplane::PktId)> = Vec::with_capacity(4096);
    let mut host: Vec<podplane::PktId> = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        // Reused every round: the driver loop allocates nothing per batch.
        fds.clear();
        fds.extend(taps.values().map(|t| libc::pollfd { fd: t.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        // SAFETY: `fds` is a live, correctly sized array of pollfd for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        let now_ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if n > 0 {
            for (name, fd) in names.iter().zip(&fds) {
                if fd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    eprintln!("podplane run: TAP {name} reports an error or went away");
                }
                if fd.revents & libc::POLLIN == 0 {
                    continue;
                }
                let Some(t) = taps.get_mut(name) else { continue };
                batch.clear();
                t.recv_batch(&mut pool, &mut batch);
                let c = traffic.entry(t.port().0).or_default();
                let at = Instant::from_nanos(epoch_ns + now_ns);
                for i in 0..batch.len() {
                    c.rx += 1;
                    c.rx_bytes += u64::from(pool.meta(batch.pkt(i)).len());
                    if let Some(w) = captures.get_mut(&t.port().0) {
                        let _ = w.write(at, pool.data(batch.pkt(i)));
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let out = dp.pipeline().process(&mut pool, Instant::from_nanos(now_ns), &mut batch);
                tx.clear();
                tx.extend(out.tx());
                host.clear();
                host.extend_from_slice(out.host());
                for &(port, p) in &tx {
                    if let Some(w) = captures.get_mut(&port.0) {
                        let _ = w.write(Instant::from_nanos(epoch_ns + now_ns), pool.data(p));
                    }
                }
                send(&taps, &mut pool, &tx, &mut traffic);
                for &p in &host {
                    // No host port yet: what the node's own stack would receive is freed.
                    let _ = pool.free(p);
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
                let body = metrics::render(&snap, dp.setup(), &traffic, &tables);
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
                            if let Err(e) = sync_taps(&dp, &mut taps) {
                                eprintln!("podplane run: reload: {e:#}");
                            }
                            names = taps.keys().cloned().collect();
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

/// Write the transmitted packets to their TAPs and free them.
fn send(
    taps: &BTreeMap<String, TapPort>,
    pool: &mut BufPool,
    tx: &[(PortId, podplane::PktId)],
    traffic: &mut BTreeMap<u16, PortTraffic>,
) {
    for &(port, p) in tx {
        let c = traffic.entry(port.0).or_default();
        // A handful of ports per node: a scan beats a map here.
        match taps.values().find(|t| t.port() == port) {
            Some(t) => match t.send(pool, p) {
                Ok(()) => {
                    c.tx += 1;
                    c.tx_bytes += u64::from(pool.meta(p).len());
                }
                Err(_) => c.tx_errors += 1,
            },
            None => c.tx_errors += 1,
        }
        let _ = pool.free(p);
    }
}
