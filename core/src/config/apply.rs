//! A running node's pipeline and the configuration it runs, changed between batches.
//!
//! [`Dataplane::apply`] takes a checked [`NodeSetup`] (so an invalid configuration
//! never gets here: [`super::load`] refuses it and the running one stays) and changes
//! only what differs:
//! - routes alone: [`RouteStage::update`] with the difference, O(changed routes);
//! - the interfaces: a new route stage (it holds no learned state);
//! - the bridges: [`BridgeStage::reconfigure`] (the FDB survives unless membership
//!   changed);
//! - the neighbour configuration: [`ArpStage::reconfigure`] (neighbours and the
//!   packets waiting for them survive);
//! - overlay peers: [`EncapStage::set_peer`] / [`DecapStage::add_peer`] and their
//!   removals, O(1) each (their routes change with the routes);
//! - the pod network mode or the overlay's own settings (a stage appears or goes, the
//!   encapsulation changes): a new pipeline, into which the neighbour, conntrack and
//!   NAT stages move with their learned state; counters start again;
//! - services: one [`crate::stage::lb::ServiceTable`] upsert or removal per changed
//!   service port ([`Dataplane::apply_ports`]), the UDP connections to dropped
//!   backends flushed as kube-proxy does;
//! - NAT rules: [`NatStage::reconfigure`] (connections already translated keep their
//!   translation, as in the kernel); conntrack timeouts: [`Conntrack::set_config`]
//!   (the table's capacity stays until a restart).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::services::{PortChange, stale_udp};
use super::{ConfigErrors, NodeSetup, Source};
use crate::pipeline::{Pipeline, PipelineConfig, Stage};
use crate::stage::conntrack::{ConntrackStage, SharedConntrack};
use crate::stage::lb::ServicePort;
use crate::stage::nat::NatConfig;
use crate::stage::overlay::OverlayPeer;
use crate::stage::route::{NextHop, RouteChange, RouteError, RouteSpec};
use crate::stage::{ArpStage, BridgeStage, DecapStage, EncapStage, NatStage, RouteStage};

/// What [`Dataplane::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Stages given a new configuration (`bridge`, `route`, `arp`).
    pub reconfigured: Vec<&'static str>,
    /// Routes added, changed or removed in place.
    pub route_changes: usize,
    /// A new pipeline was built (the stage list changed).
    pub new_pipeline: bool,
    /// Overlay peers added, changed or removed in place.
    pub peer_changes: usize,
    /// Connections flushed (UDP to endpoints that destination NAT no longer uses).
    pub flushed: usize,
    /// Service ports added, changed or removed.
    pub service_changes: usize,
}

impl Applied {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.reconfigured.is_empty()
            && self.route_changes == 0
            && !self.new_pipeline
            && self.peer_changes == 0
            && self.flushed == 0
            && self.service_changes == 0
    }
}

/// A node's pipeline with the configuration in force.
#[derive(Debug)]
pub struct Dataplane {
    setup: NodeSetup,
    pipeline: Pipeline,
    seed: u64,
    /// This pipeline's worker index and the number of workers.
    worker: (usize, usize),
}

impl Dataplane {
    /// A node running `setup`, its RNG seeded with `seed`.
    pub fn new(setup: NodeSetup, seed: u64) -> Self {
        Self::for_worker(setup, seed, 0, 1)
    }

    /// The pipeline of worker `worker` of `workers` (its share of the conntrack table
    /// and its slice of the NAT ports).
    pub fn for_worker(setup: NodeSetup, seed: u64, worker: usize, workers: usize) -> Self {
        let pipeline = Pipeline::new(setup.worker_stages(worker, workers), PipelineConfig::default(), seed);
        Dataplane { setup, pipeline, seed, worker: (worker, workers) }
    }

    /// The worker's connection tracking state (for listing and flushing).
    pub fn conntrack(&mut self) -> Option<SharedConntrack> {
        self.pipeline.stage::<ConntrackStage>().map(|s| s.shared())
    }

    /// The configuration in force.
    pub fn setup(&self) -> &NodeSetup {
        &self.setup
    }

    /// The pipeline, for the driver.
    pub fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// The sizes of the node's tables: `(name, entries)` for the FDB, the neighbour
    /// table and the IPv4 and IPv6 FIBs.
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        // Read-only (`Pipeline::stage`): the worker calls this at every publish, and
        // `stage_mut` would count as a reconfiguration and empty the flow fast path.
        let mut v = Vec::new();
        if let Some(b) = self.pipeline.stage::<BridgeStage>() {
            v.push(("fdb", b.fdb().len()));
        }
        if let Some(a) = self.pipeline.stage::<ArpStage>() {
            v.push(("neighbours", a.neighbours()));
        }
        if let Some(r) = self.pipeline.stage::<RouteStage>() {
            let (v4, v6) = r.fib_len();
            v.push(("fib4", v4));
            v.push(("fib6", v6));
        }
        v
    }

    /// Read and check a new configuration, then apply it.
    ///
    /// # Errors
    /// Every error of the new configuration; the running one stays in force.
    pub fn reload(&mut self, node: Source<'_>, objects: &[Source<'_>]) -> Result<Applied, ConfigErrors> {
        let new = super::load(node, objects)?;
        self.apply(new).map_err(|e| {
            ConfigErrors(vec![super::ConfigError::field(
                node.name,
                &format!("NodeConfig/{}", self.setup.name),
                "routes",
                None,
                &e.to_string(),
            )])
        })
    }

    /// Apply service-port changes (from a [`ServiceStore`]) to this worker's service
    /// table, O(the changed ports), and flush the UDP connections to backends they
    /// drop. Returns (ports changed, connections flushed). A change the table refuses
    /// (a frontend another service has) is skipped; the store's checks prevent it.
    pub fn apply_ports(&mut self, changes: &[PortChange]) -> (usize, usize) {
        let (n, flushed) = apply_port_changes(&mut self.pipeline, changes, self.setup.nat.fixes.flush_stale_udp);
        // Keep the configuration in force in step.
        for c in changes {
            match c {
                PortChange::Upsert(p) => {
                    self.setup.services.insert(p.name.clone(), p.clone());
                }
                PortChange::Remove(name) => {
                    self.setup.services.remove(name);
                }
            }
        }
        (n, flushed)
    }

    /// The service table of this worker (for counters and tests).
    pub fn services(&mut self) -> Option<&crate::stage::lb::ServiceTable> {
        self.pipeline.stage::<NatStage>().map(|d| d.services())
    }

    /// Move to `new`, changing only what differs (see the [module docs](self)).
    ///
    /// # Errors
    /// A route change the route stage refuses (a checked setup does not produce one);
    /// nothing is changed then.
    pub fn apply(&mut self, new: NodeSetup) -> Result<Applied, RouteError> {
        let mut applied = Applied::default();
        let old = &self.setup;
        let overlay_shape = |o: &Option<crate::stage::overlay::OverlayConfig>| {
            o.as_ref().map(|c| crate::stage::overlay::OverlayConfig { peers: Vec::new(), ..c.clone() })
        };
        if old.bridge.is_some() != new.bridge.is_some() || overlay_shape(&old.overlay) != overlay_shape(&new.overlay) {
            let seed = self.seed;
            // The connections stay, for every stage of the new shape.
            let ct = self.conntrack();
            let old_pipeline =
                core::mem::replace(&mut self.pipeline, Pipeline::new(Vec::new(), PipelineConfig::default(), seed));
            let mut arp: Option<Box<dyn Stage>> = None;
            let mut kept: Vec<Box<dyn Stage>> = Vec::new();
            for s in old_pipeline.into_stages() {
                match s.name() {
                    "arp" => arp = Some(s),
                    // Connections and their translations are learned state.
                    "conntrack" | "dnat" | "snat" | "ct_commit" => kept.push(s),
                    _ => {}
                }
            }
            let mut stages = new.worker_stages_on(self.worker.0, self.worker.1, ct);
            for mut k in kept {
                if let Some(n) = (k.as_mut() as &mut dyn core::any::Any).downcast_mut::<NatStage>() {
                    n.reconfigure(NatConfig { worker: self.worker, ..new.nat.clone() });
                }
                if let Some(slot) = stages.iter_mut().find(|s| s.name() == k.name()) {
                    *slot = k;
                }
            }
            if let Some(mut a) = arp {
                if let Some(st) = (a.as_mut() as &mut dyn core::any::Any).downcast_mut::<ArpStage>() {
                    st.reconfigure(new.arp.clone());
                }
                if let Some(slot) = stages.iter_mut().find(|s| s.name() == "arp") {
                    *slot = a;
                }
            }
            self.pipeline = Pipeline::new(stages, PipelineConfig::default(), seed);
            applied.new_pipeline = true;
            self.setup = new;
            return Ok(applied);
        }
        // The route stage first: its update is the only step that can refuse, and it
        // refuses as a whole.
        let interfaces_same = old.route.interfaces == new.route.interfaces
            && old.route.multipath == new.route.multipath
            && old.route.multipath6 == new.route.multipath6
            && old.route.routes6 == new.route.routes6;
        if !interfaces_same {
            self.pipeline.replace_stage(Box::new(RouteStage::new(&new.route)));
            applied.reconfigured.push("route");
        } else if old.route.routes != new.route.routes {
            let changes = route_diff(&old.route.routes, &new.route.routes);
            if let Some(route) = self.pipeline.stage_mut::<RouteStage>() {
                route.update(&changes)?;
            }
            applied.route_changes = changes.len();
        }
        if old.bridge != new.bridge
            && let (Some(o), Some(n), Some(b)) = (&old.bridge, &new.bridge, self.pipeline.stage_mut::<BridgeStage>())
        {
            // `load` built this configuration once already, so it cannot fail here.
            if b.reconfigure(o, n).is_ok() {
                applied.reconfigured.push("bridge");
            }
        }
        if old.arp != new.arp
            && let Some(a) = self.pipeline.stage_mut::<ArpStage>()
        {
            a.reconfigure(new.arp.clone());
            applied.reconfigured.push("arp");
        }
        if old.nat != new.nat {
            let cfg = NatConfig { worker: self.worker, ..new.nat.clone() };
            self.pipeline.each_stage_mut::<NatStage>(|n| n.reconfigure(cfg.clone()));
            applied.reconfigured.push("nat");
            let stale = old.nat.stale_udp(&new.nat);
            if !stale.is_empty()
                && let Some(ct) = self.pipeline.stage::<ConntrackStage>().map(|s| s.shared())
                && let Ok(mut ct) = ct.lock()
            {
                let now = ct.last_seen();
                for f in &stale {
                    applied.flushed += ct.flush(f, now);
                }
            }
        }
        let service_changes = (old.services != new.services || old.node_view != new.node_view).then(|| {
            if old.node_view == new.node_view {
                (port_diff(&old.services, &new.services), false)
            } else {
                // The node's view changed (CIDRs, NodePort addresses): every port again.
                let mut c: Vec<PortChange> = old.services.keys().map(|k| PortChange::Remove(k.clone())).collect();
                c.extend(new.services.values().cloned().map(PortChange::Upsert));
                (c, true)
            }
        });
        if old.conntrack != new.conntrack
            && let Some(ct) = self.pipeline.stage::<ConntrackStage>().map(|s| s.shared())
            && let Ok(mut ct) = ct.lock()
        {
            ct.set_config(&new.conntrack);
            applied.reconfigured.push("conntrack");
        }
        // Overlay peers: one O(1) change per peer in each overlay stage.
        if let (Some(o), Some(n)) = (&old.overlay, &new.overlay)
            && o.peers != n.peers
        {
            let gone: Vec<Ipv4Addr> =
                o.peers.iter().filter(|p| !n.peers.iter().any(|q| q.node_ip == p.node_ip)).map(|p| p.node_ip).collect();
            let set: Vec<OverlayPeer> = n.peers.iter().filter(|p| !o.peers.contains(p)).copied().collect();
            if let Some(enc) = self.pipeline.stage_mut::<EncapStage>() {
                for ip in &gone {
                    enc.remove_peer(*ip);
                }
                for p in &set {
                    enc.set_peer(*p);
                }
            }
            if let Some(dec) = self.pipeline.stage_mut::<DecapStage>() {
                for ip in &gone {
                    dec.remove_peer(*ip);
                }
                for p in &set {
                    dec.add_peer(p.node_ip);
                }
            }
            applied.peer_changes = gone.len() + set.len();
        }
        if let Some((changes, reset)) = service_changes {
            if reset && let Some(d) = self.pipeline.stage_mut::<NatStage>() {
                *d.services_mut() = crate::stage::lb::ServiceTable::new(new.node_view.lb.clone());
            }
            let (n, flushed) = self.apply_ports(&changes);
            applied.service_changes += n;
            applied.flushed += flushed;
            applied.reconfigured.push("services");
        }
        self.setup = new;
        Ok(applied)
    }
}

/// Apply service-port changes to `pipeline`'s service table (its `dnat` stage),
/// O(the changed ports), and, when `flush`, flush the UDP connections to backends
/// they drop (kube-proxy's conntrack cleanup). Returns (ports changed, connections
/// flushed). For drivers that hold a bare [`Pipeline`] (the simulator); a
/// [`Dataplane`] does this in [`Dataplane::apply_ports`].
pub fn apply_port_changes(pipeline: &mut Pipeline, changes: &[PortChange], flush: bool) -> (usize, usize) {
    let mut stale = Vec::new();
    let mut n = 0;
    if let Some(d) = pipeline.stage_mut::<NatStage>() {
        let addrs = d.services().settings().node_port_addrs.clone();
        for c in changes {
            match c {
                PortChange::Upsert(p) => {
                    let old = d.services().get(&p.name);
                    if d.services_mut().upsert(p.clone()).is_ok() {
                        n += 1;
                        if let Some(o) = old {
                            stale.extend(stale_udp(&o, Some(p), &addrs));
                        }
                    }
                }
                PortChange::Remove(name) => {
                    if let Some(o) = d.services().get(name) {
                        d.services_mut().remove(name);
                        n += 1;
                        stale.extend(stale_udp(&o, None, &addrs));
                    }
                }
            }
        }
    }
    let mut flushed = 0;
    if flush
        && !stale.is_empty()
        && let Some(ct) = pipeline.stage::<ConntrackStage>().map(|s| s.shared())
        && let Ok(mut ct) = ct.lock()
    {
        let now = ct.last_seen();
        for f in &stale {
            flushed += ct.flush(f, now);
        }
    }
    (n, flushed)
}

/// The changes that turn service port list `old` into `new` (both in name order).
fn port_diff(old: &BTreeMap<String, ServicePort>, new: &BTreeMap<String, ServicePort>) -> Vec<PortChange> {
    let mut c: Vec<PortChange> =
        old.keys().filter(|k| !new.contains_key(*k)).map(|k| PortChange::Remove(k.clone())).collect();
    c.extend(new.iter().filter(|(k, n)| old.get(*k) != Some(n)).map(|(_, n)| PortChange::Upsert(n.clone())));
    c
}

/// The changes that turn route list `old` into `new`: removals, then additions and
/// replacements, in address order.
fn route_diff(old: &[RouteSpec], new: &[RouteSpec]) -> Vec<RouteChange> {
    let key = |r: &RouteSpec| (u32::from(r.dst), r.len);
    let before: BTreeMap<(u32, u8), NextHop> = old.iter().map(|r| (key(r), r.next_hop)).collect();
    let after: BTreeMap<(u32, u8), NextHop> = new.iter().map(|r| (key(r), r.next_hop)).collect();
    let mut changes: Vec<RouteChange> = before
        .keys()
        .filter(|k| !after.contains_key(k))
        .map(|&(dst, len)| RouteChange::Remove { dst: Ipv4Addr::from(dst), len })
        .collect();
    changes.extend(
        after
            .iter()
            .filter(|(k, h)| before.get(k) != Some(h))
            .map(|(&(dst, len), &next_hop)| RouteChange::Add(RouteSpec { dst: Ipv4Addr::from(dst), len, next_hop })),
    );
    changes
}
