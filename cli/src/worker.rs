//! One worker of `podplane run`: a thread with its own [`Driver`] (queue `index` of
//! every TAP, its own buffer pool and io_uring) and its own pipeline (a [`Dataplane`]
//! built from the same node setup), so that nothing on the packet path is shared or
//! locked. The kernel steers each flow to one queue by a symmetric hash of its
//! addresses and ports, so both directions of a flow meet the same worker, whose
//! bridge learns the MACs from the flow's own frames.
//!
//! What one worker learns that others need is a neighbour: the node's ARP request
//! goes out from one worker but the reply may arrive on another's queue. A worker
//! that reads an ARP reply or IPv6 neighbour advertisement addressed to the node
//! therefore passes a copy (a fixed-size record, no allocation) to every other
//! worker over a bounded crossbeam channel, which feeds it to its own pipeline: each
//! learns the neighbour and releases the packets it held for it.
//!
//! The control thread talks to a worker over a crossbeam channel ([`Ctl`]: a new
//! setup, a TAP queue to add or remove); the worker reads it between batches. Every
//! 100 ms the worker copies its counters into its [`Report`] (one uncontended lock
//! per 100 ms, never per packet).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use podplane::Instant;
use podplane::buf::{Batch, Owner, PortId};
use podplane::config::file::PortKind;
use podplane::config::{Dataplane, NodeSetup};
use podplane::pipeline::CounterSnapshot;
use podplane_sim::capture::Capture;
use podplane_tap::{Driver, PortStats, TapDevice};

/// A message from the control thread.
#[derive(Debug)]
pub(crate) enum Ctl {
    /// Apply a new node setup (already checked), then say so on the sender.
    Apply(Box<NodeSetup>, Sender<()>),
    /// Drive this queue of TAP `name` as `port`; `generation` tells its re-creations apart.
    Add { name: String, port: PortId, dev: TapDevice, generation: u64 },
    /// Stop driving TAP `name`.
    Remove { name: String },
    /// TAP `name` is now pipeline port `port`.
    SetPort { name: String, port: PortId },
}

/// A TAP that went away, as a worker saw it.
#[derive(Debug)]
pub(crate) struct Gone {
    pub name: String,
    pub generation: u64,
}

/// A neighbour frame passed between workers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shared {
    port: PortId,
    len: u8,
    bytes: [u8; SHARED_MAX],
}

/// ARP (42-60 bytes) and neighbour advertisements with options (86-100 bytes) fit.
const SHARED_MAX: usize = 128;

/// A frame handed to the worker that owns its connection (a reply to masquerade, or
/// a frame of a flow that the kernel's queue choice brought to another worker).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handoff {
    port: PortId,
    len: u16,
    bytes: [u8; HANDOFF_MAX],
}

/// The largest frame a pool slot holds.
const HANDOFF_MAX: usize = 2048;

/// What a worker last published.
#[derive(Clone, Debug, Default)]
pub(crate) struct Report {
    pub counters: CounterSnapshot,
    pub devices: Vec<(String, PortId, PortStats, bool)>,
    pub tables: Vec<(&'static str, usize)>,
    pub pool_exhausted: u64,
    pub unrouted: u64,
    /// Neighbour frames passed to the other workers, and those dropped (channel full).
    pub shared_out: u64,
    pub shared_dropped: u64,
    /// Frames handed to the worker owning their connection, and those dropped (its
    /// queue full).
    pub handoff_out: u64,
    pub handoff_dropped: u64,
    pub trace: String,
}

/// A worker and everything it owns.
pub(crate) struct Worker {
    pub index: usize,
    pub dp: Dataplane,
    pub drv: Driver,
    pub ctl: Receiver<Ctl>,
    pub gone: Sender<Gone>,
    pub share_in: Receiver<Shared>,
    pub share_out: Vec<Sender<Shared>>,
    /// Frames other workers hand over, and one sender per worker (own index unused).
    pub handoff_in: Receiver<Handoff>,
    pub handoff_out: Vec<Sender<Handoff>>,
    pub report: Arc<Mutex<Report>>,
    pub stop: Arc<AtomicBool>,
    pub capture: Option<std::path::PathBuf>,
    pub t0: std::time::Instant,
    pub epoch_ns: u64,
}

/// True for an ARP reply or an IPv6 neighbour advertisement sent to one of `macs`.
fn is_neighbour_reply(f: &[u8], macs: &[[u8; 6]]) -> bool {
    let Some(dst) = f.get(0..6) else { return false };
    if !macs.iter().any(|m| m == dst) {
        return false;
    }
    match (f.get(12..14), f.get(20..22)) {
        (Some([0x08, 0x06]), Some([0, 2])) => true,
        (Some([0x86, 0xdd]), _) => f.get(20) == Some(&58) && f.get(54) == Some(&136),
        _ => false,
    }
}

fn node_macs(setup: &NodeSetup) -> Vec<[u8; 6]> {
    let mut m: Vec<[u8; 6]> = setup.route.interfaces.iter().map(|i| i.mac.0).collect();
    m.sort_unstable();
    m.dedup();
    m
}

impl Worker {
    /// Run until the stop flag is set; publish a last report.
    #[allow(clippy::too_many_lines)]
    pub(crate) fn run(mut self) -> anyhow::Result<()> {
        let mut generations: BTreeMap<String, u64> = BTreeMap::new();
        let mut macs = node_macs(self.dp.setup());
        let mut captures = self.open_captures()?;
        let mut batch = Batch::new();
        let mut tx: Vec<(PortId, podplane::PktId)> = Vec::with_capacity(4096);
        let mut host: Vec<podplane::PktId> = Vec::with_capacity(4096);
        let mut gone: Vec<String> = Vec::new();
        let (mut unrouted, mut shared_out, mut shared_dropped) = (0u64, 0u64, 0u64);
        let (mut handoff_out, mut handoff_dropped) = (0u64, 0u64);
        let mut nat = self.nat_config();
        let mut tunnel = self.tunnel();
        let (mut keep, mut handed): (Vec<podplane::PktId>, Vec<podplane::PktId>) =
            (Vec::with_capacity(256), Vec::with_capacity(256));
        let mut next_report = 0u64;
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            if self.control(&mut generations, &mut macs) {
                nat = self.nat_config();
                tunnel = self.tunnel();
            }
            let now_ns = u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if stopping || now_ns >= next_report {
                next_report = now_ns + 100_000_000;
                self.publish(unrouted, (shared_out, shared_dropped), (handoff_out, handoff_dropped), stopping);
                if stopping {
                    for (_, w) in captures {
                        w.finish()?;
                    }
                    return Ok(());
                }
            }
            batch.clear();
            self.drv.recv(&mut batch, Duration::from_millis(50))?;
            // A change that came in during the wait applies to what the wait brought.
            if self.control(&mut generations, &mut macs) {
                nat = self.nat_config();
                tunnel = self.tunnel();
            }
            // Frames of another worker's connections go to that worker: replies to its
            // masquerade, service connections of its clients, and every other flow by
            // its endpoints (`podplane::steer`: the kernel's queue choice does not keep
            // an encapsulated flow, or a flow's first reply, on one queue).
            if !self.handoff_out.is_empty() && nat.worker.1 > 1 {
                keep.clear();
                handed.clear();
                let empty = podplane::stage::lb::ServiceTable::default();
                let services = self.dp.services().unwrap_or(&empty);
                for i in 0..batch.len() {
                    let p = batch.pkt(i);
                    let d = self.drv.pool().data(p);
                    let owner = podplane::stage::nat::steer::owner(d, &nat, services, tunnel.as_ref())
                        .filter(|_| d.len() <= HANDOFF_MAX);
                    let Some(w) = owner else {
                        keep.push(p);
                        continue;
                    };
                    let mut h = Handoff { port: self.drv.pool().meta(p).in_port, len: 0, bytes: [0; HANDOFF_MAX] };
                    h.len = u16::try_from(d.len()).unwrap_or(0);
                    h.bytes[..d.len()].copy_from_slice(d);
                    let sent = self.handoff_out.get(w).is_some_and(|tx| tx.try_send(h).is_ok());
                    if sent {
                        handoff_out += 1;
                    } else {
                        handoff_dropped += 1;
                    }
                    handed.push(p);
                }
                if !handed.is_empty() {
                    self.drv.free(&handed);
                    batch.clear();
                    for &p in &keep {
                        let _ = batch.push(p);
                    }
                }
            }
            while !batch.is_full() {
                let Ok(h) = self.handoff_in.try_recv() else { break };
                let Some(p) = self.drv.pool_mut().alloc(Owner::Pipeline) else { break };
                let _ = self.drv.pool_mut().set_data(p, &h.bytes[..usize::from(h.len)]);
                self.drv.pool_mut().meta_mut(p).in_port = h.port;
                let _ = batch.push(p);
            }
            let now_ns = u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            // Neighbour replies for the node go to the other workers too.
            if !self.share_out.is_empty() {
                for i in 0..batch.len() {
                    let p = batch.pkt(i);
                    let d = self.drv.pool().data(p);
                    if d.len() > SHARED_MAX || !is_neighbour_reply(d, &macs) {
                        continue;
                    }
                    let mut s = Shared { port: self.drv.pool().meta(p).in_port, len: 0, bytes: [0; SHARED_MAX] };
                    s.len = u8::try_from(d.len()).unwrap_or(0);
                    s.bytes[..d.len()].copy_from_slice(d);
                    for out in &self.share_out {
                        match out.try_send(s) {
                            Ok(()) => shared_out += 1,
                            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => shared_dropped += 1,
                        }
                    }
                }
            }
            while !batch.is_full() {
                let Ok(s) = self.share_in.try_recv() else { break };
                let Some(p) = self.drv.pool_mut().alloc(Owner::Pipeline) else { break };
                let _ = self.drv.pool_mut().set_data(p, &s.bytes[..usize::from(s.len)]);
                self.drv.pool_mut().meta_mut(p).in_port = s.port;
                let _ = batch.push(p);
            }
            if !batch.is_empty() {
                let at = Instant::from_nanos(self.epoch_ns + now_ns);
                if !captures.is_empty() {
                    for i in 0..batch.len() {
                        let p = batch.pkt(i);
                        if let Some(w) = captures.get_mut(&self.drv.pool().meta(p).in_port.0) {
                            let _ = w.write(at, self.drv.pool().data(p));
                        }
                    }
                }
                let out = self.dp.pipeline().process(self.drv.pool_mut(), Instant::from_nanos(now_ns), &mut batch);
                tx.clear();
                tx.extend(out.tx());
                host.clear();
                host.extend_from_slice(out.host());
                for &(port, p) in &tx {
                    if let Some(w) = captures.get_mut(&port.0) {
                        let _ = w.write(at, self.drv.pool().data(p));
                    }
                }
                unrouted += self.drv.send(&tx) as u64;
                // No host port yet: what the node's own stack would receive is freed.
                self.drv.free(&host);
            }
            self.drv.take_gone(&mut gone);
            for name in gone.drain(..) {
                let generation = generations.get(&name).copied().unwrap_or(0);
                let _ = self.gone.send(Gone { name, generation });
            }
        }
    }

    /// What arrives encapsulated for the node, for steering by the inner flow.
    fn tunnel(&self) -> Option<podplane::steer::Tunnel> {
        self.dp.setup().overlay.as_ref().map(podplane::steer::Tunnel::of)
    }

    /// This worker's NAT configuration (its slice of the ports), for steering.
    fn nat_config(&self) -> podplane::stage::nat::NatConfig {
        let workers = self.handoff_out.len().max(1);
        podplane::stage::nat::NatConfig { worker: (self.index, workers), ..self.dp.setup().nat.clone() }
    }

    /// Handle the control thread's messages; true when the node setup changed.
    fn control(&mut self, generations: &mut BTreeMap<String, u64>, macs: &mut Vec<[u8; 6]>) -> bool {
        let mut applied = false;
        while let Ok(m) = self.ctl.try_recv() {
            match m {
                Ctl::Apply(setup, done) => {
                    applied = true;
                    if let Err(e) = self.dp.apply(*setup) {
                        eprintln!("podplane run: worker {}: reload refused: {e}", self.index);
                    }
                    *macs = node_macs(self.dp.setup());
                    let _ = done.send(());
                }
                Ctl::Add { name, port, dev, generation } => {
                    if let Err(e) = self.drv.add(dev, port) {
                        eprintln!("podplane run: worker {}: {e}", self.index);
                    }
                    generations.insert(name, generation);
                }
                Ctl::Remove { name } => {
                    self.drv.remove(&name);
                }
                Ctl::SetPort { name, port } => self.drv.set_port(&name, port),
            }
        }
        applied
    }

    fn open_captures(&mut self) -> anyhow::Result<BTreeMap<u16, Capture>> {
        let mut captures = BTreeMap::new();
        let Some(dir) = &self.capture else { return Ok(captures) };
        for p in self.dp.setup().ports.iter().filter(|p| p.kind == PortKind::Tap) {
            let file =
                if self.index == 0 { format!("{}.pcap", p.name) } else { format!("{}.w{}.pcap", p.name, self.index) };
            // Written through at every frame: the capture can be read while it grows.
            captures.insert(p.id.0, Capture::create_buffered(&Path::new(dir).join(file), 0)?);
        }
        Ok(captures)
    }

    fn publish(&mut self, unrouted: u64, shared: (u64, u64), handoff: (u64, u64), last: bool) {
        let counters = self.dp.pipeline().counters().snapshot();
        let tables = self.dp.table_sizes();
        let devices = self.drv.devices().map(|(n, p, s, g)| (n.to_owned(), p, s, g)).collect();
        let trace = if last { self.dp.pipeline().trace().to_string() } else { String::new() };
        if let Ok(mut r) = self.report.lock() {
            *r = Report {
                counters,
                devices,
                tables,
                pool_exhausted: self.drv.pool().exhausted(),
                unrouted,
                shared_out: shared.0,
                shared_dropped: shared.1,
                handoff_out: handoff.0,
                handoff_dropped: handoff.1,
                trace,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_neighbour_replies_to_the_node_are_shared() {
        let node = [2, 0, 0, 0, 0, 1];
        let mut arp = vec![0u8; 42];
        arp[..6].copy_from_slice(&node);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        arp[20..22].copy_from_slice(&[0, 2]);
        assert!(is_neighbour_reply(&arp, &[node]));
        assert!(!is_neighbour_reply(&arp, &[[2, 0, 0, 0, 0, 9]]), "a reply bridged to a pod");
        arp[21] = 1;
        assert!(!is_neighbour_reply(&arp, &[node]), "a request");
        let mut na = vec![0u8; 86];
        na[..6].copy_from_slice(&node);
        na[12..14].copy_from_slice(&[0x86, 0xdd]);
        na[20] = 58;
        na[54] = 136;
        assert!(is_neighbour_reply(&na, &[node]));
        na[54] = 135;
        assert!(!is_neighbour_reply(&na, &[node]), "a solicitation");
        assert!(!is_neighbour_reply(&na[..10], &[node]));
    }
}
