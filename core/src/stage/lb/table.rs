//! The service table: frontends (ClusterIP, NodePort, external and LoadBalancer IPs)
//! found in O(1) by (address, protocol, port), each naming a service port whose
//! endpoint pools are ready for their scheduler; and the decision for a new
//! connection, as kube-proxy's nftables rules take it.
//!
//! One service port changes in O(its frontends + its endpoints) ([`ServiceTable::upsert`],
//! [`ServiceTable::remove`]); nothing else is touched. What the table learns while
//! packets flow (round-robin cursors, connection counts, session affinity) belongs to
//! the worker and survives every change but the one that replaces its service port.

use hashbrown::HashMap;
use std::net::IpAddr;

use rustc_hash::FxBuildHasher;

use super::sched::{self, Cursor, Inputs, Pool};
use super::service::{Backend, ServicePort};
use crate::pipeline::DropReason;
use crate::time::{Duration, Instant};
use crate::wire::flow::FlowKey;

/// An IP prefix of either family (service and cluster CIDRs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Prefix {
    /// True when `a` is inside.
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len.min(32))).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len.min(128))).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl core::fmt::Display for Prefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Where services live on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbSettings {
    /// The service CIDRs: an address inside that no service has is dropped.
    pub service_cidrs: Vec<Prefix>,
    /// The addresses NodePorts answer on (kube-proxy `--nodeport-addresses`: the
    /// node's primary addresses by default).
    pub node_port_addrs: Vec<IpAddr>,
    /// The cluster's pod range (kube-proxy's `--cluster-cidr` local-traffic detector:
    /// traffic from outside it to a ClusterIP is masqueraded).
    pub cluster_cidrs: Vec<Prefix>,
    /// The node's own addresses (`fib saddr type local`).
    pub node_addrs: Vec<IpAddr>,
    /// Most clients remembered for session affinity per worker.
    pub affinity_max: usize,
}

/// Which kind of frontend a packet reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The ClusterIP (internal traffic policy applies).
    Internal,
    /// A NodePort, external IP or LoadBalancer IP (external traffic policy applies).
    External,
}

type Front = (IpAddr, u8, u16);

/// A service port in the table. Its endpoint lists live once, in the pools (sorted);
/// `port.cluster` and `port.local` stay empty.
#[derive(Clone, Debug)]
struct Slot {
    port: ServicePort,
    cluster: Pool,
    local: Pool,
    /// Worker state for this port's schedulers (cluster pool, local pool).
    cursors: (Cursor, Cursor),
}

impl Slot {
    /// The service port with its endpoint lists put back.
    fn to_port(&self) -> ServicePort {
        ServicePort { cluster: self.cluster.backends.clone(), local: self.local.backends.clone(), ..self.port.clone() }
    }
}

/// What the service stage does with a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a service address: other rules decide.
    Pass,
    /// Destination NAT to `to`, masquerading after routing when `masquerade`.
    Dnat {
        /// The backend.
        to: Backend,
        /// kube-proxy's `mark-for-masquerade`.
        masquerade: bool,
        /// Chosen by session affinity, not by the scheduler.
        affinity: bool,
    },
    /// Answer with ICMP port unreachable and drop (counted with the reason).
    Reject(DropReason),
    /// Drop (counted with the reason).
    Drop(DropReason),
}

/// Why [`ServiceTable::upsert`] refused a service port.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Another service port already has this frontend.
    #[error("{frontend} is already {owner}'s")]
    Taken {
        /// `address:port/protocol`.
        frontend: String,
        /// The service port that has it.
        owner: String,
        /// The frontend is the refused port's NodePort (else its port on an address).
        node_port: bool,
    },
}

/// The service table; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    settings: LbSettings,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    by_name: HashMap<String, u32, FxBuildHasher>,
    fronts: HashMap<Front, (u32, Scope), FxBuildHasher>,
    /// ClusterIPs with the number of service ports on each.
    cluster_ips: HashMap<IpAddr, u32, FxBuildHasher>,
    /// Backends (address, protocol, port) with the number of service ports using
    /// each, for steering between workers.
    backends: HashMap<(IpAddr, u8, u16), u32, FxBuildHasher>,
    /// Live connections per backend (address, port, protocol): this worker's.
    load: HashMap<(IpAddr, u16, u8), u32, FxBuildHasher>,
    /// Session affinity: (slot, client) to backend and expiry.
    affinity: HashMap<(u32, IpAddr), (Backend, Instant), FxBuildHasher>,
    /// When the full affinity table was last swept of expired clients.
    affinity_swept: Instant,
}

/// Default [`LbSettings::affinity_max`].
pub const AFFINITY_MAX: usize = 65536;

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        132 => "sctp",
        _ => "ip",
    }
}

impl ServiceTable {
    /// An empty table.
    pub fn new(settings: LbSettings) -> Self {
        ServiceTable { settings, ..ServiceTable::default() }
    }

    /// The settings.
    pub fn settings(&self) -> &LbSettings {
        &self.settings
    }

    /// Service ports in the table.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The service port called `name` (its endpoints sorted).
    pub fn get(&self, name: &str) -> Option<ServicePort> {
        let i = *self.by_name.get(name)?;
        self.slots.get(i as usize)?.as_ref().map(Slot::to_port)
    }

    /// Every service port, in name order.
    pub fn ports(&self) -> Vec<ServicePort> {
        let mut v: Vec<ServicePort> = self.slots.iter().flatten().map(Slot::to_port).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn frontends(&self, p: &ServicePort) -> Vec<(Front, Scope)> {
        let mut v = Vec::new();
        if let Some(ip) = p.cluster_ip {
            v.push(((ip, p.proto, p.port), Scope::Internal));
        }
        for &ip in &p.external_ips {
            v.push(((ip, p.proto, p.port), Scope::External));
        }
        if p.node_port != 0 {
            for &a in self.settings.node_port_addrs.iter().filter(|a| a.is_ipv6() == p.v6()) {
                v.push(((a, p.proto, p.node_port), Scope::External));
            }
        }
        v
    }

    /// Add or replace the service port `p.name`: O(its frontends and endpoints).
    /// Its scheduler's cursors start again when its endpoints or scheduler changed;
    /// session affinity stays for clients whose endpoint remains.
    ///
    /// # Errors
    /// A frontend another service port has; nothing is changed then.
    pub fn upsert(&mut self, mut p: ServicePort) -> Result<(), TableError> {
        let fronts = self.frontends(&p);
        let me = self.by_name.get(&p.name).copied();
        for (f, _) in &fronts {
            if let Some(&(owner, _)) = self.fronts.get(f)
                && Some(owner) != me
            {
                let owner = self.slots.get(owner as usize).and_then(Option::as_ref).map(|s| s.port.name.clone());
                return Err(TableError::Taken {
                    frontend: format!("{}:{}/{}", f.0, f.2, proto_name(f.1)),
                    owner: owner.unwrap_or_default(),
                    node_port: p.node_port != 0 && f.2 == p.node_port && self.settings.node_port_addrs.contains(&f.0),
                });
            }
        }
        let cluster = Pool::new(core::mem::take(&mut p.cluster), p.scheduler);
        let local = Pool::new(core::mem::take(&mut p.local), p.scheduler);
        let keep_cursors = me
            .and_then(|i| self.slots.get(i as usize)?.as_ref())
            .filter(|s| s.cluster == cluster && s.local == local && s.port.scheduler == p.scheduler)
            .map(|s| s.cursors);
        if let Some(i) = me {
            self.unlink(i);
        }
        let i = match me.or_else(|| self.free.pop()) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        // Session affinity survives an endpoint change: a client keeps its endpoint
        // while that endpoint is still in the pool (checked at each use), as
        // kube-proxy's per-endpoint affinity sets do.
        for (f, scope) in fronts {
            self.fronts.insert(f, (i, scope));
        }
        if let Some(ip) = p.cluster_ip {
            *self.cluster_ips.entry(ip).or_insert(0) += 1;
        }
        for b in cluster.backends.iter().chain(&local.backends) {
            *self.backends.entry((b.addr, p.proto, b.port)).or_insert(0) += 1;
        }
        let slot = Slot { cluster, local, cursors: keep_cursors.unwrap_or_default(), port: p };
        self.by_name.insert(slot.port.name.clone(), i);
        if let Some(s) = self.slots.get_mut(i as usize) {
            *s = Some(slot);
        }
        Ok(())
    }

    /// Remove service port `name`: O(its frontends). True when it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(i) = self.by_name.remove(name) else { return false };
        self.unlink(i);
        self.affinity.retain(|(s, _), _| *s != i);
        if let Some(s) = self.slots.get_mut(i as usize) {
            *s = None;
        }
        self.free.push(i);
        true
    }

    /// Take slot `i`'s frontends and ClusterIP out of the indexes.
    fn unlink(&mut self, i: u32) {
        let Some(Some(old)) = self.slots.get(i as usize) else { return };
        let fronts = self.frontends(&old.port);
        let cip = old.port.cluster_ip;
        let bs: Vec<(IpAddr, u8, u16)> =
            old.cluster.backends.iter().chain(&old.local.backends).map(|b| (b.addr, old.port.proto, b.port)).collect();
        for k in bs {
            if let Some(n) = self.backends.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.backends.remove(&k);
                }
            }
        }
        for (f, _) in fronts {
            if self.fronts.get(&f).is_some_and(|&(o, _)| o == i) {
                self.fronts.remove(&f);
            }
        }
        if let Some(ip) = cip
            && let Some(n) = self.cluster_ips.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.cluster_ips.remove(&ip);
            }
        }
    }

    /// True when `addr:port` (protocol `proto`) is a service frontend.
    pub fn is_frontend(&self, addr: IpAddr, proto: u8, port: u16) -> bool {
        self.fronts.contains_key(&(addr, proto, port))
    }

    /// True when `addr:port` (protocol `proto`) is an endpoint of some service.
    pub fn is_backend(&self, addr: IpAddr, proto: u8, port: u16) -> bool {
        self.backends.contains_key(&(addr, proto, port))
    }

    /// A connection to `backend` (protocol `proto`) ended: one fewer for the
    /// connection-counting schedulers.
    pub fn connection_ended(&mut self, backend: (IpAddr, u16), proto: u8) {
        if let Some(n) = self.load.get_mut(&(backend.0, backend.1, proto)) {
            *n -= 1;
            if *n == 0 {
                self.load.remove(&(backend.0, backend.1, proto));
            }
        }
    }

    /// Live connections this worker sent to `backend`.
    pub fn load_of(&self, backend: (IpAddr, u16), proto: u8) -> u32 {
        self.load.get(&(backend.0, backend.1, proto)).copied().unwrap_or(0)
    }

    /// The decision for a new connection `flow` (its first packet, before routing),
    /// kube-proxy's nftables rules in one lookup: the frontend by (destination,
    /// protocol, port); then the traffic policy's endpoints, masquerade marking,
    /// session affinity and the scheduler; rejects and drops for what has no
    /// endpoint.
    pub fn decide(&mut self, flow: &FlowKey, now: Instant, random: &mut dyn FnMut() -> u32) -> Verdict {
        let dst = flow.dst_addr();
        let Some(&(i, scope)) = self.fronts.get(&(dst, flow.proto, flow.dst_port)) else {
            if self.cluster_ips.contains_key(&dst) {
                return Verdict::Reject(DropReason::SvcPortUnknown);
            }
            if self.settings.service_cidrs.iter().any(|c| c.contains(dst)) {
                return Verdict::Drop(DropReason::SvcUnallocated);
            }
            return Verdict::Pass;
        };
        let src = flow.src_addr();
        let from_pod = self.settings.cluster_cidrs.iter().any(|c| c.contains(src));
        let from_node = self.settings.node_addrs.contains(&src);
        let Some(Some(slot)) = self.slots.get_mut(i as usize) else { return Verdict::Pass };
        let p = &slot.port;
        // loadBalancerSourceRanges, checked before anything else as kube-proxy's
        // `firewall-check` runs before DNAT; the node may also come from the LB IP
        // itself when a range holds one of its addresses (`allowFromNode`).
        let in_ranges = |a: IpAddr| p.source_ranges.iter().any(|r| r.contains(a));
        let from_node_via_lb = p.lb_ips.contains(&src) && self.settings.node_addrs.iter().any(|a| in_ranges(*a));
        if !p.source_ranges.is_empty() && p.lb_ips.contains(&dst) && !in_ranges(src) && !from_node_via_lb {
            return Verdict::Drop(DropReason::SvcSourceRange);
        }
        if !p.has_endpoints {
            return Verdict::Reject(DropReason::SvcNoEndpoints);
        }
        // Which pool, and whether to masquerade (the nftables chains in order).
        let (local, masquerade) = match scope {
            // Off-cluster traffic to a ClusterIP is masqueraded (it may have been
            // routed here by a static route for the service range).
            Scope::Internal => (p.internal_local, !from_pod),
            Scope::External if !p.external_local => (false, true),
            // Local policy: pods short-circuit to the cluster endpoints, the node's
            // own traffic is masqueraded and goes to them too; the rest keeps its
            // source address and needs a local endpoint.
            Scope::External if from_pod => (false, false),
            Scope::External if from_node => (false, true),
            Scope::External => (true, false),
        };
        let (pool, cursor) =
            if local { (&slot.local, &mut slot.cursors.1) } else { (&slot.cluster, &mut slot.cursors.0) };
        if pool.is_empty() {
            return Verdict::Drop(DropReason::SvcNoLocalEndpoints);
        }
        // Session affinity: the client's backend while it is still one of the pool's.
        if let Some(secs) = p.affinity {
            let key = (i, src);
            if let Some(&(b, exp)) = self.affinity.get(&key)
                && exp > now
                && pool.backends.contains(&b)
            {
                self.affinity.insert(key, (b, now + Duration::from_secs(u64::from(secs))));
                *self.load.entry((b.addr, b.port, flow.proto)).or_insert(0) += 1;
                return Verdict::Dnat { to: b, masquerade, affinity: true };
            }
        }
        let load = &self.load;
        let proto = flow.proto;
        let load_of = |b: &Backend| load.get(&(b.addr, b.port, proto)).copied().unwrap_or(0);
        let random = if p.scheduler == super::Scheduler::Random { random() } else { 0 };
        let inputs = Inputs { flow, random, load: &load_of };
        let Some(b) = sched::choose(pool, p.scheduler, cursor, &inputs).and_then(|k| pool.backends.get(k).copied())
        else {
            return Verdict::Drop(DropReason::SvcNoLocalEndpoints);
        };
        if let Some(secs) = p.affinity {
            // A full table is swept of expired clients at most once a second, so a
            // flood of new clients does not scan it on every connection.
            let full = self.affinity.len() >= self.settings.affinity_max.max(1);
            if full && now >= self.affinity_swept + Duration::from_secs(1) {
                self.affinity.retain(|_, (_, exp)| *exp > now);
                self.affinity_swept = now;
            }
            if self.affinity.len() < self.settings.affinity_max.max(1) {
                self.affinity.insert((i, src), (b, now + Duration::from_secs(u64::from(secs))));
            }
        }
        *self.load.entry((b.addr, b.port, flow.proto)).or_insert(0) += 1;
        Verdict::Dnat { to: b, masquerade, affinity: false }
    }

    /// Bytes the table takes (frontends, ports, pools and their hash tables), for
    /// the memory report; learned state not included.
    pub fn memory(&self) -> usize {
        let front = self.fronts.capacity() * (size_of::<Front>() + size_of::<(u32, Scope)>() + 1);
        let names = self.by_name.capacity() * (size_of::<String>() + 4 + 1);
        let slots: usize = self
            .slots
            .iter()
            .flatten()
            .map(|s| {
                size_of::<Slot>()
                    + s.port.name.capacity() * 2
                    + (s.cluster.backends.capacity() + s.local.backends.capacity()) * size_of::<Backend>()
                    + s.port.external_ips.capacity() * size_of::<IpAddr>()
                    + s.cluster.table_memory()
                    + s.local.table_memory()
            })
            .sum();
        let backends = self.backends.capacity() * (size_of::<(IpAddr, u8, u16)>() + size_of::<u32>() + 1);
        let cips = self.cluster_ips.capacity() * (size_of::<IpAddr>() + size_of::<u32>() + 1);
        front + names + slots + backends + cips + self.slots.capacity() * size_of::<Option<Slot>>()
    }
}
