//! `Service` and `EndpointSlice` objects, as the API server serves them, turned into
//! the service stage's [`ServicePort`]s, one service at a time.
//!
//! Endpoint choice follows kube-proxy's `CategorizeEndpoints`
//! (pkg/proxy/topology.go): for `Cluster` policy the ready endpoints (only those
//! whose topology hints name this node's zone, when every ready endpoint has hints
//! and one names it), else the serving and terminating ones; for `Local` policy this
//! node's ready endpoints, else its serving and terminating ones. An endpoint's
//! `ready` and `serving` default to true and `terminating` to false, as kube-proxy
//! reads them. Its port is the EndpointSlice port whose name and protocol are the
//! service port's (the endpoints controller has resolved `targetPort`).
//!
//! [`ServiceStore`] keeps the objects an agent has applied and gives, for one
//! changed object, the changes to the service table: O(that service).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::ConfigError;
use crate::stage::conntrack::Filter;
use crate::stage::lb::{Backend, LbSettings, Prefix, SCHEDULER_ANNOTATION, Scheduler, ServicePort};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The Node label naming its zone (topology hints).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` default (3 hours) and maximum.
pub const AFFINITY_DEFAULT: u32 = 10800;
/// Longest session affinity timeout the API server accepts (one day).
pub const AFFINITY_MAX: u32 = 86400;

/// What compiling services needs to know about the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// This node's name (endpoints with this `nodeName` are local).
    pub name: String,
    /// This node's zone (its `topology.kubernetes.io/zone` label), for hints.
    pub zone: Option<String>,
    /// The NodePort range.
    pub node_ports: (u16, u16),
    /// Where services are found (CIDRs, NodePort addresses, the pod range).
    pub lb: LbSettings,
}

/// A change to the service table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortChange {
    /// Add or replace this service port.
    Upsert(ServicePort),
    /// Remove the service port of this name.
    Remove(String),
}

/// A `namespace/name` key.
fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or("default"), meta.name.as_deref().unwrap_or(""))
}

/// Errors of one object, with the file they came from.
struct Errs<'a> {
    file: &'a str,
    object: String,
    list: Vec<ConfigError>,
}

impl Errs<'_> {
    fn push(&mut self, field: &str, value: Option<&str>, problem: &str) {
        self.list.push(ConfigError::field(self.file, &self.object, field, value, problem));
    }
}

fn protocol(p: Option<&str>) -> Option<u8> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

/// An endpoint as kube-proxy reads it.
#[derive(Clone, Debug)]
struct Ep {
    backend: Backend,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    zones: Option<Vec<String>>,
}

/// Check `svc` and compile its ports against `slices` (the EndpointSlices naming it).
///
/// # Errors
/// Every problem of the service or its slices, naming object and field.
pub fn compile(
    node: &NodeView,
    (file, svc): (&str, &Service),
    slices: &[(&str, &EndpointSlice)],
) -> Result<Vec<ServicePort>, Vec<ConfigError>> {
    let name = key(&svc.metadata);
    let mut e = Errs { file, object: format!("Service/{name}"), list: Vec::new() };
    let Some(spec) = &svc.spec else {
        e.push("spec", None, "missing");
        return Err(e.list);
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !matches!(kind, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        e.push("spec.type", Some(kind), "expected ClusterIP, NodePort, LoadBalancer or ExternalName");
    }
    if kind == "ExternalName" {
        return if e.list.is_empty() { Ok(Vec::new()) } else { Err(e.list) };
    }
    // Cluster IPs, by family (`None` is a headless service: nothing to balance).
    let mut ips: Vec<IpAddr> = Vec::new();
    let given: Vec<String> = spec.cluster_ips.clone().unwrap_or_else(|| spec.cluster_ip.iter().cloned().collect());
    let headless = given.iter().any(|s| s == "None");
    if !headless {
        for (i, s) in given.iter().enumerate() {
            match s.parse::<IpAddr>() {
                Ok(a) => {
                    if ips.iter().any(|b| b.is_ipv6() == a.is_ipv6()) {
                        e.push(&format!("spec.clusterIPs[{i}]"), Some(s), "a second address of the same family");
                    }
                    if !node.lb.service_cidrs.iter().filter(|c| c.addr.is_ipv6() == a.is_ipv6()).any(|c| c.contains(a))
                        && node.lb.service_cidrs.iter().any(|c| c.addr.is_ipv6() == a.is_ipv6())
                    {
                        e.push(&format!("spec.clusterIPs[{i}]"), Some(s), "outside the service CIDR");
                    }
                    ips.push(a);
                }
                Err(_) => e.push(&format!("spec.clusterIPs[{i}]"), Some(s), "not an IP address"),
            }
        }
    }
    if let Some(fams) = &spec.ip_families {
        for (i, f) in fams.iter().enumerate() {
            let v6 = match f.as_str() {
                "IPv4" => false,
                "IPv6" => true,
                _ => {
                    e.push(&format!("spec.ipFamilies[{i}]"), Some(f), "expected IPv4 or IPv6");
                    continue;
                }
            };
            if let Some(a) = ips.get(i)
                && a.is_ipv6() != v6
            {
                e.push(&format!("spec.ipFamilies[{i}]"), Some(f), &format!("does not match spec.clusterIPs[{i}] {a}"));
            }
        }
    }
    let mut external: Vec<IpAddr> = Vec::new();
    for (i, s) in spec.external_ips.iter().flatten().enumerate() {
        match s.parse() {
            Ok(a) => external.push(a),
            Err(_) => e.push(&format!("spec.externalIPs[{i}]"), Some(s), "not an IP address"),
        }
    }
    let mut lb_ips: Vec<IpAddr> = Vec::new();
    if kind == "LoadBalancer" {
        let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
        for (i, ing) in ingress.into_iter().flatten().enumerate() {
            // `ipMode: Proxy`: the load balancer rewrites the destination itself, and
            // kube-proxy does not capture the address.
            if ing.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            if let Some(s) = &ing.ip {
                match s.parse() {
                    Ok(a) => {
                        external.push(a);
                        lb_ips.push(a);
                    }
                    Err(_) => e.push(&format!("status.loadBalancer.ingress[{i}].ip"), Some(s), "not an IP address"),
                }
            }
        }
    }
    // kube-proxy trims the ranges (a value with spaces around it is accepted).
    let mut source_ranges: Vec<Prefix> = Vec::new();
    for (i, r) in spec.load_balancer_source_ranges.iter().flatten().enumerate() {
        match parse_prefix(r.trim()) {
            Some(p) => source_ranges.push(p),
            None => e.push(&format!("spec.loadBalancerSourceRanges[{i}]"), Some(r), "not a CIDR"),
        }
    }
    let scheduler = match svc.metadata.annotations.as_ref().and_then(|a| a.get(SCHEDULER_ANNOTATION)) {
        None => Scheduler::default(),
        Some(v) => v.parse().unwrap_or_else(|()| {
            let all: Vec<&str> = Scheduler::ALL.iter().map(|s| s.as_str()).collect();
            e.push(
                &format!("metadata.annotations[{SCHEDULER_ANNOTATION:?}]"),
                Some(v),
                &format!("expected one of {}", all.join(", ")),
            );
            Scheduler::default()
        }),
    };
    let affinity = match spec.session_affinity.as_deref().unwrap_or("None") {
        "None" => None,
        "ClientIP" => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(AFFINITY_DEFAULT.cast_signed());
            match u32::try_from(t) {
                Ok(t) if (1..=AFFINITY_MAX).contains(&t) => Some(t),
                _ => {
                    e.push(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        Some(&t.to_string()),
                        "must be between 1 and 86400",
                    );
                    None
                }
            }
        }
        other => {
            e.push("spec.sessionAffinity", Some(other), "expected None or ClientIP");
            None
        }
    };
    let policy = |field: &str, v: Option<&String>, e: &mut Errs<'_>| match v.map(String::as_str) {
        None | Some("Cluster") => false,
        Some("Local") => true,
        Some(other) => {
            e.push(field, Some(other), "expected Cluster or Local");
            false
        }
    };
    let internal_local = policy("spec.internalTrafficPolicy", spec.internal_traffic_policy.as_ref(), &mut e);
    let external_local = policy("spec.externalTrafficPolicy", spec.external_traffic_policy.as_ref(), &mut e);

    // Endpoints of the slices, by family, with their named ports.
    let mut eps: Vec<(Ep, String, u8)> = Vec::new();
    for (sfile, slice) in slices {
        let label = format!("EndpointSlice/{}", key(&slice.metadata));
        let mut se = Errs { file: sfile, object: label, list: Vec::new() };
        let v6 = match slice.address_type.as_str() {
            "IPv4" => false,
            "IPv6" => true,
            "FQDN" => continue, // kube-proxy ignores FQDN slices
            other => {
                se.push("addressType", Some(other), "expected IPv4, IPv6 or FQDN");
                e.list.append(&mut se.list);
                continue;
            }
        };
        let ports: Vec<(String, u8, u16)> = slice
            .ports
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, p)| {
                let proto = protocol(p.protocol.as_deref());
                let port = p.port.and_then(|n| u16::try_from(n).ok()).filter(|&n| n > 0);
                match (proto, port) {
                    (Some(pr), Some(po)) => Some((p.name.clone().unwrap_or_default(), pr, po)),
                    (None, _) => {
                        se.push(&format!("ports[{i}].protocol"), p.protocol.as_deref(), "expected TCP, UDP or SCTP");
                        None
                    }
                    (_, None) => {
                        let v = p.port.map(|n| n.to_string());
                        se.push(&format!("ports[{i}].port"), v.as_deref(), "must be between 1 and 65535");
                        None
                    }
                }
            })
            .collect();
        for (i, ep) in slice.endpoints.iter().flatten().enumerate() {
            let c = ep.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let zones = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .map(|z| z.iter().map(|z| z.name.clone()).collect());
            let local = ep.node_name.as_deref() == Some(node.name.as_str());
            // kube-proxy uses the first address of an endpoint.
            let Some(a) = ep.addresses.first() else { continue };
            let addr = match a.parse::<IpAddr>() {
                Ok(addr) if addr.is_ipv6() == v6 => addr,
                Ok(_) => {
                    se.push(
                        &format!("endpoints[{i}].addresses[0]"),
                        Some(a),
                        &format!("does not match addressType {}", slice.address_type),
                    );
                    continue;
                }
                Err(_) => {
                    se.push(&format!("endpoints[{i}].addresses[0]"), Some(a), "not an IP address");
                    continue;
                }
            };
            for (pname, proto, port) in &ports {
                let backend = Backend { addr, port: *port, weight: 1 };
                eps.push((
                    Ep { backend, ready, serving, terminating, local, zones: zones.clone() },
                    pname.clone(),
                    *proto,
                ));
            }
        }
        e.list.append(&mut se.list);
    }

    let mut out = Vec::new();
    let mut seen: Vec<(u8, u16)> = Vec::new();
    let families: Vec<bool> = if ips.is_empty() {
        // No ClusterIP (headless) but external addresses: serve their families.
        let mut f: Vec<bool> = external.iter().map(IpAddr::is_ipv6).collect();
        f.sort_unstable();
        f.dedup();
        if headless { Vec::new() } else { f }
    } else {
        ips.iter().map(IpAddr::is_ipv6).collect()
    };
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let Some(proto) = protocol(p.protocol.as_deref()) else {
            e.push(&format!("spec.ports[{i}].protocol"), p.protocol.as_deref(), "expected TCP, UDP or SCTP");
            continue;
        };
        let Some(port) = u16::try_from(p.port).ok().filter(|&n| n > 0) else {
            e.push(&format!("spec.ports[{i}].port"), Some(&p.port.to_string()), "must be between 1 and 65535");
            continue;
        };
        if seen.contains(&(proto, port)) {
            e.push(
                &format!("spec.ports[{i}].port"),
                Some(&port.to_string()),
                "a second port with this number and protocol",
            );
        }
        seen.push((proto, port));
        let node_port = match p.node_port {
            None | Some(0) => 0,
            Some(n) if kind == "ClusterIP" => {
                e.push(
                    &format!("spec.ports[{i}].nodePort"),
                    Some(&n.to_string()),
                    "a ClusterIP service has no NodePort",
                );
                0
            }
            Some(n) => match u16::try_from(n) {
                Ok(n) if (node.node_ports.0..=node.node_ports.1).contains(&n) => n,
                _ => {
                    e.push(
                        &format!("spec.ports[{i}].nodePort"),
                        Some(&n.to_string()),
                        &format!("outside the NodePort range {}-{}", node.node_ports.0, node.node_ports.1),
                    );
                    0
                }
            },
        };
        let pname = p.name.clone().unwrap_or_default();
        for &v6 in &families {
            let mine: Vec<&Ep> = eps
                .iter()
                .filter(|(ep, n, pr)| *n == pname && *pr == proto && ep.backend.addr.is_ipv6() == v6)
                .map(|(ep, _, _)| ep)
                .collect();
            let (cluster, local, has) = categorize(
                &mine,
                node.zone.as_deref(),
                internal_local,
                external_local,
                !external.is_empty() || node_port != 0,
            );
            let label = if pname.is_empty() { port.to_string() } else { pname.clone() };
            out.push(ServicePort {
                name: format!("{name}:{label}{}", if v6 { "/ipv6" } else { "" }),
                proto,
                cluster_ip: ips.iter().copied().find(|a| a.is_ipv6() == v6),
                port,
                node_port,
                external_ips: external.iter().copied().filter(|a| a.is_ipv6() == v6).collect(),
                cluster,
                local,
                has_endpoints: has,
                internal_local,
                external_local,
                scheduler,
                affinity,
                lb_ips: lb_ips.iter().copied().filter(|a| a.is_ipv6() == v6).collect(),
                source_ranges: source_ranges.iter().copied().filter(|r| r.addr.is_ipv6() == v6).collect(),
            });
        }
    }
    if e.list.is_empty() { Ok(out) } else { Err(e.list) }
}

/// `ADDRESS/LEN` of either family, host bits cleared.
fn parse_prefix(s: &str) -> Option<Prefix> {
    let (a, l) = s.split_once('/')?;
    let addr: IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    let max = if addr.is_ipv6() { 128 } else { 32 };
    (len <= max).then_some(Prefix { addr, len })
}

/// kube-proxy's `CategorizeEndpoints`: (cluster endpoints, local endpoints, whether
/// the service has any usable endpoint).
fn categorize(
    eps: &[&Ep],
    zone: Option<&str>,
    internal_local: bool,
    external_local: bool,
    externally_accessible: bool,
) -> (Vec<Backend>, Vec<Backend>, bool) {
    let pick = |f: &dyn Fn(&Ep) -> bool| -> Vec<Backend> {
        let mut v: Vec<Backend> = eps.iter().filter(|e| f(e)).map(|e| e.backend).collect();
        v.sort();
        v.dedup();
        v
    };
    // Topology: usable when every ready endpoint has zone hints and one names ours.
    let topology = zone.is_some_and(|z| {
        let ready: Vec<&&Ep> = eps.iter().filter(|e| e.ready).collect();
        !ready.is_empty()
            && ready.iter().all(|e| e.zones.is_some())
            && ready.iter().any(|e| e.zones.as_ref().is_some_and(|zs| zs.iter().any(|x| x == z)))
    });
    let in_zone = |e: &Ep| !topology || e.zones.as_ref().is_some_and(|zs| zs.iter().any(|x| Some(x.as_str()) == zone));
    let mut cluster = pick(&|e| e.ready && in_zone(e));
    if cluster.is_empty() {
        cluster = pick(&|e| e.serving && e.terminating);
    }
    let mut local = pick(&|e| e.local && e.ready);
    if local.is_empty() {
        local = pick(&|e| e.local && e.serving && e.terminating);
    }
    let uses_local = internal_local || (externally_accessible && external_local);
    let any = !cluster.is_empty() || (uses_local && eps.iter().any(|e| e.ready || (e.serving && e.terminating)));
    (cluster, local, any)
}

/// The conntrack flushes that replacing `old` with `new` calls for: UDP connections
/// to backends `new` no longer has, per frontend, as kube-proxy's
/// `CleanStaleEntries` deletes them (`conntrack -D -p udp --orig-dst FRONTEND
/// --dst-nat ENDPOINT`, and `--orig-port-dst NODEPORT` for NodePorts). TCP
/// connections stay on their backend until they end, as with kube-proxy.
pub fn stale_udp(old: &ServicePort, new: Option<&ServicePort>, node_port_addrs: &[IpAddr]) -> Vec<Filter> {
    if old.proto != 17 {
        return Vec::new();
    }
    let mut gone: Vec<Backend> = old.cluster.iter().chain(&old.local).copied().collect();
    if let Some(n) = new {
        gone.retain(|b| !n.cluster.iter().chain(&n.local).any(|x| x.addr == b.addr && x.port == b.port));
    }
    gone.sort();
    gone.dedup_by(|a, b| a.addr == b.addr);
    let mut fronts: Vec<(IpAddr, u16)> =
        old.cluster_ip.iter().chain(&old.external_ips).map(|&a| (a, old.port)).collect();
    if old.node_port != 0 {
        fronts.extend(node_port_addrs.iter().filter(|a| a.is_ipv6() == old.v6()).map(|&a| (a, old.node_port)));
    }
    let mut out = Vec::new();
    for b in &gone {
        for &(addr, port) in &fronts {
            out.push(Filter {
                proto: Some(17),
                orig_dst: Some(addr),
                orig_dport: Some(port),
                dst_nat: Some(b.addr),
                ..Filter::default()
            });
        }
    }
    out
}

/// Services and EndpointSlices an agent has applied, and the service ports they
/// make: one object's change gives the changes of its service alone.
#[derive(Clone, Debug, Default)]
pub struct ServiceStore {
    node: NodeView,
    services: BTreeMap<String, Service>,
    /// Slices by their service's key, then by their own name.
    slices: BTreeMap<String, BTreeMap<String, EndpointSlice>>,
    /// Ports each service made last time.
    ports: BTreeMap<String, Vec<ServicePort>>,
}

/// What an EndpointSlice belongs to: its service's key.
fn owner(slice: &EndpointSlice) -> Option<String> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(format!("{}/{svc}", slice.metadata.namespace.as_deref().unwrap_or("default")))
}

impl ServiceStore {
    /// An empty store for `node`.
    pub fn new(node: NodeView) -> Self {
        ServiceStore { node, ..ServiceStore::default() }
    }

    /// The node's view.
    pub fn node(&self) -> &NodeView {
        &self.node
    }

    /// Every service port, in name order.
    pub fn ports(&self) -> Vec<ServicePort> {
        self.ports.values().flatten().cloned().collect()
    }

    /// Service ports made by the store so far, per service.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    fn recompile(&mut self, svc: &str, file: &str) -> Result<Vec<PortChange>, Vec<ConfigError>> {
        let old = self.ports.get(svc).cloned().unwrap_or_default();
        let new = match self.services.get(svc) {
            None => Vec::new(),
            Some(s) => {
                let slices: Vec<(&str, &EndpointSlice)> =
                    self.slices.get(svc).into_iter().flat_map(|m| m.values()).map(|s| (file, s)).collect();
                compile(&self.node, (file, s), &slices)?
            }
        };
        let mut changes: Vec<PortChange> = old
            .iter()
            .filter(|o| !new.iter().any(|n| n.name == o.name))
            .map(|o| PortChange::Remove(o.name.clone()))
            .collect();
        changes.extend(new.iter().filter(|n| !old.contains(n)).cloned().map(PortChange::Upsert));
        if new.is_empty() {
            self.ports.remove(svc);
        } else {
            self.ports.insert(svc.to_string(), new);
        }
        Ok(changes)
    }

    /// The service port `name` as last compiled.
    pub fn port(&self, name: &str) -> Option<&ServicePort> {
        self.ports.values().flatten().find(|p| p.name == name)
    }

    /// Add or replace a Service. Returns the changes to the service table.
    ///
    /// # Errors
    /// Every problem of the service (and its slices), naming object and field; the
    /// store keeps the service's previous version then.
    pub fn apply_service(&mut self, svc: Service) -> Result<Vec<PortChange>, Vec<ConfigError>> {
        let k = key(&svc.metadata);
        let before = self.services.insert(k.clone(), svc);
        self.recompile(&k, "api").inspect_err(|_| {
            match before {
                Some(b) => self.services.insert(k.clone(), b),
                None => self.services.remove(&k),
            };
        })
    }

    /// Take every Service and EndpointSlice of `other`, compiled for this store's
    /// node (an agent whose node's own settings changed).
    ///
    /// # Errors
    /// A service that no longer compiles for this node.
    pub fn copy_objects_from(&mut self, other: &ServiceStore) -> Result<(), Vec<ConfigError>> {
        self.services = other.services.clone();
        self.slices = other.slices.clone();
        self.ports.clear();
        let keys: Vec<String> = self.services.keys().cloned().collect();
        for k in keys {
            self.recompile(&k, "api")?;
        }
        Ok(())
    }

    /// Remove a Service (`namespace/name`); its slices stay until removed.
    pub fn delete_service(&mut self, key: &str) -> Vec<PortChange> {
        self.services.remove(key);
        self.recompile(key, "api").unwrap_or_default()
    }

    /// Add or replace an EndpointSlice.
    ///
    /// # Errors
    /// A slice without the `kubernetes.io/service-name` label, for a service the
    /// store does not have, or with a wrong field; nothing changes then.
    pub fn apply_slice(&mut self, slice: EndpointSlice) -> Result<Vec<PortChange>, Vec<ConfigError>> {
        let label = format!("EndpointSlice/{}", key(&slice.metadata));
        let field = format!("metadata.labels[{SERVICE_NAME_LABEL:?}]");
        let Some(svc) = owner(&slice) else {
            return Err(vec![ConfigError::field("api", &label, &field, None, "missing: the slice names no Service")]);
        };
        if !self.services.contains_key(&svc) {
            return Err(vec![ConfigError::field("api", &label, &field, Some(&svc), "no such Service")]);
        }
        let name = slice.metadata.name.clone().unwrap_or_default();
        let before = self.slices.entry(svc.clone()).or_default().insert(name.clone(), slice);
        self.recompile(&svc, "api").inspect_err(|_| {
            let m = self.slices.entry(svc.clone()).or_default();
            match before {
                Some(b) => m.insert(name.clone(), b),
                None => m.remove(&name),
            };
        })
    }

    /// Remove an EndpointSlice (`namespace/name`).
    pub fn delete_slice(&mut self, key: &str) -> Vec<PortChange> {
        let (ns, name) = key.split_once('/').unwrap_or(("default", key));
        let svc = self
            .slices
            .iter()
            .find(|(s, m)| s.starts_with(&format!("{ns}/")) && m.contains_key(name))
            .map(|(s, _)| s.clone());
        let Some(svc) = svc else { return Vec::new() };
        if let Some(m) = self.slices.get_mut(&svc) {
            m.remove(name);
        }
        self.recompile(&svc, "api").unwrap_or_default()
    }
}

/// Compile every Service of a configuration with its slices: the service ports in
/// name order, or every error (slices for unknown services, duplicate frontends).
pub(crate) fn compile_all(
    node: &NodeView,
    services: &[(&str, &Service)],
    slices: &[(&str, &EndpointSlice)],
) -> Result<Vec<ServicePort>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut by_svc: BTreeMap<String, Vec<(&str, &EndpointSlice)>> = BTreeMap::new();
    let known: BTreeMap<String, &str> = services.iter().map(|(f, s)| (key(&s.metadata), *f)).collect();
    for &(file, s) in slices {
        let label = format!("EndpointSlice/{}", key(&s.metadata));
        let field = format!("metadata.labels[{SERVICE_NAME_LABEL:?}]");
        match owner(s) {
            None => errors.push(ConfigError::field(file, &label, &field, None, "missing: the slice names no Service")),
            Some(k) if !known.contains_key(&k) => {
                errors.push(ConfigError::field(file, &label, &field, Some(&k), "no such Service"));
            }
            Some(k) => by_svc.entry(k).or_default().push((file, s)),
        }
    }
    let mut ports = Vec::new();
    for &(file, s) in services {
        let k = key(&s.metadata);
        match compile(node, (file, s), by_svc.get(&k).map_or(&[], Vec::as_slice)) {
            Ok(p) => ports.extend(p),
            Err(e) => errors.extend(e),
        }
    }
    // Frontends must be unique (the API server allocates them so; files may not).
    let mut table = crate::stage::lb::ServiceTable::new(node.lb.clone());
    for p in &ports {
        if let Err(err) = table.upsert(p.clone()) {
            let svc = p.name.split(':').next().unwrap_or(&p.name);
            let file = known.get(svc).copied().unwrap_or("");
            let crate::stage::lb::TableError::Taken { node_port, .. } = &err;
            let field = if *node_port { "spec.ports.nodePort" } else { "spec.ports.port" };
            errors.push(ConfigError::field(file, &format!("Service/{svc}"), field, None, &err.to_string()));
        }
    }
    ports.sort_by(|a, b| a.name.cmp(&b.name));
    if errors.is_empty() { Ok(ports) } else { Err(errors) }
}
