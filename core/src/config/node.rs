//! Checking a node file with its objects and turning them into stage configurations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use k8s_openapi::api::core::v1::Node;

use super::ConfigError;
use super::file::{NodeFile, PodNetwork, PortKind, PortRole, RouteKind};
use super::objects::{Located, Object};
use super::overlay::{self as ov, TUNNEL_PORT};
use super::services::NodeView;
use crate::buf::PortId;
use crate::pipeline::{Pipeline, PipelineConfig, Stage};
use crate::stage::arp::{ArpConfig, CALICO_GATEWAY, CALICO_MAC, LocalAddr, ProxyArp};
use crate::stage::bridge::{BridgeConfig, BridgeDomain, BridgePort, cni_mac};
use crate::stage::conntrack::{CommitStage, Conntrack, ConntrackStage, CtConfig, SharedConntrack};
use crate::stage::fastpath::{self, FlowCache};
use crate::stage::lb::{LbSettings, Prefix, ServicePort, ServiceTable};
use crate::stage::nat::NatConfig;
use crate::stage::overlay::{OverlayConfig, OverlayPeer};
use crate::stage::route::{L3If, NextHop, RouteConfig, RouteSpec};
use crate::stage::{
    ArpStage, BridgeStage, DecapStage, EgressStage, EncapStage, FastPathStage, NatStage, OffloadStage, ParseStage,
    RouteStage, SourceCheckStage,
};
use crate::time::Duration;
use crate::wire::EthernetAddress;
use crate::wire::cidr::Cidr;

/// Virtual port of bridge `i`'s own interface (VPP's BVI): above every real port.
pub const BVI_BASE: u16 = 4000;
/// Most ports a node file may declare (real ports sit below [`BVI_BASE`]).
pub const MAX_PORTS: usize = BVI_BASE as usize;
/// The name replay gives the node stack's output (`host.pcap`); no port may take it.
pub const HOST_OUTPUT: &str = "host";

/// A port of the node, as checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    /// Its name.
    pub name: String,
    /// Its pipeline port number (the order in the file).
    pub id: PortId,
    /// What drives it.
    pub kind: PortKind,
    /// What it is for.
    pub role: PortRole,
    /// The node's MAC on it (none for a bridged pod port).
    pub mac: Option<EthernetAddress>,
    /// IP MTU.
    pub mtu: u16,
    /// The node's address on it, with its subnet (uplink and host ports).
    pub address: Option<(Ipv4Addr, Cidr)>,
    /// The node's IPv6 address on it and the prefix length (uplink and host ports).
    pub address6: Option<(std::net::Ipv6Addr, u8)>,
    /// The pod's address (pod ports).
    pub pod_ip: Option<Ipv4Addr>,
}

/// Another node, from its `Node` object: where its pods are and how to reach them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// `metadata.name`.
    pub name: String,
    /// Its IPv4 pod CIDRs (`spec.podCIDRs`, else `spec.podCIDR`).
    pub pod_cidrs: Vec<Cidr>,
    /// Its underlay address (`InternalIP`, or Flannel's `public-ip` annotation): the
    /// next hop for its pods, directly or through the tunnel.
    pub node_ip: Ipv4Addr,
    /// The port its pods are routed to: an uplink (direct routing) or the tunnel port.
    pub port: PortId,
    /// Its VTEP MAC (VXLAN), from Flannel's `backend-data` annotation or the default.
    pub vtep_mac: Option<EthernetAddress>,
    /// Its IPv6 `InternalIP`, the outer destination over an IPv6 underlay (then
    /// `node_ip` is the IPv4 key its routes use: its pod network's `.0`).
    pub node_ip6: Option<std::net::Ipv6Addr>,
}

/// A route the node installs, with where it came from (for `podplane check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// The route.
    pub spec: RouteSpec,
    /// `routes[2]`, `Node/worker-2`, `Port/pod-a`.
    pub origin: String,
}

/// A checked node: its ports and the configuration of every stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSetup {
    /// The node's name.
    pub name: String,
    /// Its own addresses, primary first.
    pub addresses: Vec<Ipv4Addr>,
    /// Its pod CIDR.
    pub pod_cidr: Cidr,
    /// The cluster's pod range.
    pub cluster_cidr: Cidr,
    /// The service range (used when the service stage lands).
    pub service_cidr: Cidr,
    /// The NodePort range (used when the service stage lands).
    pub node_ports: RangeInclusive<u16>,
    /// Pod addressing.
    pub pod_network: PodNetwork,
    /// Ports in pipeline order.
    pub ports: Vec<Port>,
    /// Other nodes.
    pub peers: Vec<Peer>,
    /// Every route beyond the interfaces' own, with its origin.
    pub routes: Vec<RouteEntry>,
    /// The bridge stage's configuration (bridge mode).
    pub bridge: Option<BridgeConfig>,
    /// The route stage's configuration.
    pub route: RouteConfig,
    /// The neighbour stage's configuration.
    pub arp: ArpConfig,
    /// The overlay stages' configuration (VXLAN or IPIP), if any.
    pub overlay: Option<OverlayConfig>,
    /// Connection tracking (capacity for the whole node).
    pub conntrack: CtConfig,
    /// NAT: masquerade, destination NAT, hairpin.
    pub nat: NatConfig,
    /// Service ports from the Service and EndpointSlice objects, by name.
    pub services: BTreeMap<String, ServicePort>,
    /// Put the flow fast path in front (`fastPath`, default true).
    pub fast_path: bool,
    /// What compiling services needs to know about this node (for an agent's
    /// [`super::services::ServiceStore`]).
    pub node_view: NodeView,
    /// Things read but not applied (kinds whose stages do not exist yet, other kinds,
    /// IPv6 pod CIDRs), one line each.
    pub notes: Vec<String>,
}

impl NodeSetup {
    /// The port called `name`.
    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The stages of this node, in the node path's order (netfilter's):
    /// `parse → source_check → [decap] → [bridge] → conntrack → dnat → route → snat → ct_commit →
    /// [encap] → arp → egress`, for a node with one worker.
    pub fn stages(&self) -> Vec<Box<dyn Stage>> {
        self.worker_stages(0, 1)
    }

    /// The stages of worker `worker` of `workers`: its own conntrack table, sized
    /// its share of the node's, and its own slice of the NAT port range.
    pub fn worker_stages(&self, worker: usize, workers: usize) -> Vec<Box<dyn Stage>> {
        self.worker_stages_on(worker, workers, None)
    }

    /// [`Self::worker_stages`] over the worker's existing connection tracking state
    /// when given (a new pipeline of another shape keeps the connections, and every
    /// stage must see the same ones: the fast path's too).
    pub(crate) fn worker_stages_on(
        &self,
        worker: usize,
        workers: usize,
        ct: Option<SharedConntrack>,
    ) -> Vec<Box<dyn Stage>> {
        let workers = workers.max(1);
        let ct = ct.unwrap_or_else(|| {
            Conntrack::shared(CtConfig {
                capacity: (self.conntrack.capacity / workers).max(1),
                seed: self.conntrack.seed ^ worker as u64,
                ..self.conntrack.clone()
            })
        });
        let nat = NatConfig { worker: (worker, workers), ..self.nat.clone() };
        let pods: Vec<(PortId, Ipv4Addr)> = self.ports.iter().filter_map(|p| Some((p.id, p.pod_ip?))).collect();
        let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(ParseStage::new()), Box::new(SourceCheckStage::new(&pods))];
        if let Some(o) = &self.overlay {
            stages.push(Box::new(DecapStage::new(o.clone())));
        }
        let flows = self.fast_path.then(|| FlowCache::shared(fastpath::DEFAULT_CAPACITY));
        if let Some(f) = &flows {
            // First, ahead of parse; on a node that decapsulates, a second one after
            // decap for what came out of the tunnel.
            let first = FastPathStage::new(f.clone(), ct.clone()).before_parse();
            match &self.overlay {
                Some(o) => {
                    stages.insert(0, Box::new(first.tunnel(o)));
                    stages.push(Box::new(FastPathStage::new(f.clone(), ct.clone()).tunnel(o)));
                }
                None => stages.insert(0, Box::new(first)),
            }
        }
        if let Some(b) = self.bridge_stage() {
            stages.push(Box::new(b));
        }
        stages.push(Box::new(ConntrackStage::new(ct.clone())));
        stages.push(Box::new(NatStage::dnat(ct.clone(), nat.clone()).with_services(self.service_table())));
        stages.push(Box::new(RouteStage::new(&self.route)));
        stages.push(Box::new(NatStage::snat(ct.clone(), nat)));
        let ct_for_offload = ct.clone();
        stages.push(Box::new(CommitStage::new(ct)));
        if let Some(o) = &self.overlay {
            stages.push(Box::new(EncapStage::new(o.clone())));
        }
        stages.push(Box::new(ArpStage::new(self.arp.clone())));
        stages.push(Box::new(EgressStage));
        if let Some(f) = flows {
            stages.push(Box::new(OffloadStage::new(f, ct_for_offload)));
        }
        stages
    }

    /// The service table of this configuration (every worker builds its own).
    pub fn service_table(&self) -> ServiceTable {
        let mut t = ServiceTable::new(self.node_view.lb.clone());
        for p in self.services.values() {
            // `load` checked that frontends are unique.
            let _ = t.upsert(p.clone());
        }
        t
    }

    /// One line saying what NAT and conntrack do.
    fn nat_summary(&self) -> String {
        let n = &self.nat;
        let list = |v: &[Cidr]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let masq = n.masquerade.as_ref().map_or("masquerade off".into(), |m| {
            format!("masquerade {} except [{}]", list(&m.sources), list(&m.except))
        });
        let mode = match n.mode {
            crate::stage::nat::PortMode::FullyRandom => "fully-random",
            crate::stage::nat::PortMode::KeepPort => "keep-port",
        };
        format!(
            "nat: {masq}, {mode} ports {}-{}, hairpin {}, {} dnat rules; conntrack max {}",
            n.ports.start(),
            n.ports.end(),
            if n.hairpin { "on" } else { "off" },
            n.dnat.len(),
            self.conntrack.capacity
        )
    }

    /// The bridge stage, if the node has bridges. `load` checked the configuration,
    /// so the stage builds.
    pub(crate) fn bridge_stage(&self) -> Option<BridgeStage> {
        self.bridge.as_ref().and_then(|b| BridgeStage::new(b).ok())
    }

    /// A fresh pipeline for this node, its RNG seeded with `seed`.
    pub fn pipeline(&self, seed: u64) -> Pipeline {
        Pipeline::new(self.stages(), PipelineConfig::default(), seed)
    }

    /// A human-readable summary of what would be installed (`podplane check`).
    pub fn summary(&self) -> String {
        use core::fmt::Write as _;
        let mut s = String::new();
        let mode = match self.pod_network {
            PodNetwork::Bridge => "bridge",
            PodNetwork::Routed => "routed /32 with proxy-ARP gateway 169.254.1.1",
        };
        let addrs: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
        let _ =
            writeln!(s, "node {}: addresses [{}], pod CIDR {} ({mode})", self.name, addrs.join(", "), self.pod_cidr);
        let _ = writeln!(
            s,
            "cluster CIDR {}, service CIDR {}, NodePorts {}-{}",
            self.cluster_cidr,
            self.service_cidr,
            self.node_ports.start(),
            self.node_ports.end()
        );
        let names: Vec<&str> = self.stages().iter().map(|st| st.name()).collect();
        let _ = writeln!(s, "pipeline: {}", names.join(" -> "));
        let _ = writeln!(s, "ports ({}):", self.ports.len());
        for p in &self.ports {
            let mut extra = String::new();
            if let Some(m) = p.mac {
                let _ = write!(extra, " mac {m}");
            }
            if let Some((ip, net)) = p.address {
                let _ = write!(extra, " address {ip}/{}", net.prefix);
            }
            if let Some(ip) = p.pod_ip {
                let _ = write!(extra, " pod {ip}");
            }
            let kind = format!("{:?} {:?}", p.kind, p.role).to_lowercase();
            let _ = writeln!(s, "  {:>4} {:<16} {kind:<12} mtu {}{extra}", p.id.0, p.name, p.mtu);
        }
        if let Some(b) = &self.bridge {
            for d in &b.domains {
                let members: Vec<String> = d
                    .ports
                    .iter()
                    .map(|bp| self.ports.iter().find(|p| p.id == bp.port).map_or(String::new(), |p| p.name.clone()))
                    .collect();
                let gw = d.gateway_mac.map_or(String::new(), |m| format!(", interface mac {m}"));
                let _ = writeln!(s, "bridge {}: [{}]{gw}", d.name, members.join(", "));
            }
        }
        if let Some(o) = &self.overlay {
            let how = match &o.encap {
                crate::stage::overlay::Encap::Vxlan { port, vni, .. } => format!("vxlan port {port} vni {vni}"),
                crate::stage::overlay::Encap::Ipip => "ipip".into(),
            };
            let mtu = self.route.interfaces.iter().find(|i| i.port == TUNNEL_PORT).map_or(0, |i| i.mtu);
            let _ = writeln!(s, "overlay: {how}, local {}, VTEP MAC {}, tunnel MTU {mtu}", o.local_ip, o.vtep_mac);
        }
        let _ = writeln!(s, "{}", self.nat_summary());
        if !self.services.is_empty() {
            let eps: usize = self.services.values().map(|p| p.cluster.len()).sum();
            let nps: Vec<String> = self.node_view.lb.node_port_addrs.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                s,
                "services: {} ports, {eps} endpoints; NodePorts on [{}]",
                self.services.len(),
                nps.join(", ")
            );
            for p in self.services.values() {
                let fronts: Vec<String> = p
                    .cluster_ip
                    .iter()
                    .chain(&p.external_ips)
                    .map(|a| format!("{a}:{}", p.port))
                    .chain((p.node_port != 0).then(|| format!("nodePort {}", p.node_port)))
                    .collect();
                let bs: Vec<String> = p.cluster.iter().map(|b| format!("{}:{}", b.addr, b.port)).collect();
                let proto = match p.proto {
                    6 => "tcp",
                    17 => "udp",
                    _ => "sctp",
                };
                let local: Vec<String> = p.local.iter().map(|b| format!("{}:{}", b.addr, b.port)).collect();
                let policy = match (p.internal_local, p.external_local) {
                    (false, false) => String::new(),
                    (i, e) => format!(
                        ", {}Local, this node's [{}]",
                        match (i, e) {
                            (true, true) => "internal and external ",
                            (true, false) => "internal ",
                            _ => "external ",
                        },
                        local.join(", ")
                    ),
                };
                let _ = writeln!(
                    s,
                    "  {} {proto} [{}] -> [{}] {}{}{policy}",
                    p.name,
                    fronts.join(", "),
                    bs.join(", "),
                    p.scheduler,
                    p.affinity.map_or(String::new(), |t| format!(", affinity {t}s"))
                );
            }
        }
        for p in &self.peers {
            let cidrs: Vec<String> = p.pod_cidrs.iter().map(ToString::to_string).collect();
            let how = if p.port == TUNNEL_PORT {
                let outer = self.overlay.as_ref().and_then(|o| o.peers.iter().find(|q| q.node_ip == p.node_ip));
                format!(
                    "through the tunnel to {} (VTEP {}, outer next hop {})",
                    p.node_ip,
                    p.vtep_mac.map_or("-".into(), |m| m.to_string()),
                    outer.map_or("-".into(), |o| o.next_hop.to_string())
                )
            } else {
                format!("via {}", p.node_ip)
            };
            let _ = writeln!(s, "peer {}: pods {} {how}", p.name, cidrs.join(", "));
        }
        let _ = writeln!(s, "routes ({} beyond the interfaces' own):", self.routes.len());
        for r in &self.routes {
            let dev =
                |p: PortId| self.ports.iter().find(|x| x.id == p).map_or_else(|| p.to_string(), |x| x.name.clone());
            let how = match r.spec.next_hop {
                NextHop::Connected(p) => format!("dev {}", dev(p)),
                NextHop::Via(gw, p) => format!("via {gw} dev {}", dev(p)),
                NextHop::Multipath(g) => format!("multipath group {g}"),
                NextHop::Local => "local".into(),
                NextHop::Blackhole => "blackhole".into(),
                NextHop::Unreachable => "unreachable".into(),
                NextHop::Prohibit => "prohibit".into(),
            };
            let _ = writeln!(s, "  {}/{} {how}  ({})", r.spec.dst, r.spec.len, r.origin);
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

/// Collects errors for one file.
struct Errors<'a> {
    file: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn push(&mut self, object: &str, field: &str, value: Option<&str>, problem: impl AsRef<str>) {
        self.list.push(ConfigError::field(self.file, object, field, value, problem.as_ref()));
    }

    /// Parse a prefix (`10.244.0.0/16`), or record why not.
    fn cidr(&mut self, object: &str, field: &str, v: &str) -> Option<Cidr> {
        v.parse::<Cidr>().map_err(|e| self.push(object, field, Some(v), e.to_string())).ok()
    }

    fn ip(&mut self, object: &str, field: &str, v: &str) -> Option<Ipv4Addr> {
        v.parse::<Ipv4Addr>().map_err(|_| self.push(object, field, Some(v), "invalid IPv4 address")).ok()
    }

    fn mac(&mut self, object: &str, field: &str, v: &str) -> Option<EthernetAddress> {
        match v.parse::<EthernetAddress>() {
            Ok(m) if m.is_unicast() && m.0 != [0; 6] => Some(m),
            Ok(_) => {
                self.push(object, field, Some(v), "not a unicast address");
                None
            }
            Err(()) => {
                self.push(object, field, Some(v), "invalid MAC address (expected six hex bytes, aa:bb:cc:dd:ee:ff)");
                None
            }
        }
    }
}

/// A node port's default MAC: locally administered `02:00:` and the IPv4 address.
fn node_mac(ip: Ipv4Addr) -> EthernetAddress {
    let [a, b, c, d] = ip.octets();
    EthernetAddress([0x02, 0x00, a, b, c, d])
}

/// The port names TAP devices accept (IFNAMSIZ 16 with the NUL) and files like.
fn valid_port_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 15 && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A Node's IPv4 pod CIDRs (`spec.podCIDRs`, else `spec.podCIDR`), and whether all of
/// them parsed; IPv6 ones are noted, not routed.
fn node_cidrs(file: &str, n: &Node, errors: &mut Vec<ConfigError>, notes: &mut Vec<String>) -> (Vec<Cidr>, bool) {
    let label = format!("Node/{}", n.metadata.name.as_deref().unwrap_or(""));
    let spec = n.spec.as_ref();
    let list: Vec<(String, String)> = match spec.and_then(|s| s.pod_cidrs.clone()).filter(|l| !l.is_empty()) {
        Some(l) => l.into_iter().enumerate().map(|(i, c)| (format!("spec.podCIDRs[{i}]"), c)).collect(),
        None => {
            spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![("spec.podCIDR".to_string(), c)]).unwrap_or_default()
        }
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (field, c) in list {
        if c.contains(':') {
            notes.push(format!("{file}: {label}: {field} {c}: IPv6 pod CIDRs are not routed yet"));
            continue;
        }
        match c.parse::<Cidr>() {
            Ok(cidr) => out.push(cidr),
            Err(err) => {
                errors.push(ConfigError::field(file, &label, &field, Some(&c), &err.to_string()));
                ok = false;
            }
        }
    }
    (out, ok)
}

#[allow(clippy::too_many_lines)]
pub(crate) fn build(file_name: &str, f: &NodeFile, objects: &[Located]) -> Result<NodeSetup, Vec<ConfigError>> {
    let mut e = Errors { file: file_name, list: Vec::new() };
    let me = format!("NodeConfig/{}", f.name);
    if f.name.is_empty() {
        e.push("NodeConfig", "name", None, "missing: the node's name (its Node object's metadata.name)");
    }
    let addresses: Vec<Ipv4Addr> =
        f.addresses.iter().enumerate().filter_map(|(i, a)| e.ip(&me, &format!("addresses[{i}]"), a)).collect();
    let cluster_cidr = match &f.cluster_cidr {
        Some(c) => e.cidr(&me, "clusterCIDR", c),
        None => Some(Cidr { addr: Ipv4Addr::new(10, 244, 0, 0), prefix: 16 }),
    };
    let service_cidr = match &f.service_cidr {
        Some(c) => e.cidr(&me, "serviceCIDR", c),
        None => Some(Cidr { addr: Ipv4Addr::new(10, 96, 0, 0), prefix: 12 }),
    };
    let node_mask = f.node_mask.unwrap_or(24);
    if let Some(c) = cluster_cidr
        && !(c.prefix..=30).contains(&node_mask)
    {
        e.push(&me, "nodeMask", Some(&node_mask.to_string()), format!("must be between {} and 30", c.prefix));
    }
    let node_ports = match f.node_port_range.as_deref() {
        None => Some(30000..=32767),
        Some(r) => {
            let parsed = super::nat::range(r);
            if parsed.is_none() {
                e.push(&me, "nodePortRange", Some(r), "expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535");
            }
            parsed
        }
    };
    if let (Some(c), Some(s)) = (cluster_cidr, service_cidr)
        && c.overlaps(&s)
    {
        e.push(&me, "serviceCIDR", Some(&s.to_string()), format!("overlaps clusterCIDR {c}"));
    }

    // Nodes from the objects: ours gives the pod CIDR, the others become peers.
    let mut notes = Vec::new();
    let mut services = Vec::new();
    let mut slices = Vec::new();
    // Peers written in the node file: checked field by field here, then treated as the
    // Node objects they stand for.
    let file_peers: Vec<Node> = f
        .peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let obj = format!("peers[{i}]");
            if p.name.is_empty() {
                e.push(&obj, "name", None, "missing");
                return None;
            }
            if p.address.parse::<std::net::IpAddr>().is_err() {
                e.push(&obj, "address", Some(&p.address), "invalid IP address");
                return None;
            }
            e.cidr(&obj, "podCIDR", &p.pod_cidr)?;
            let mut annotations = BTreeMap::new();
            if let Some(m) = &p.vtep_mac {
                e.mac(&obj, "vtepMAC", m)?;
                annotations.insert(ov::FLANNEL_BACKEND_DATA.to_string(), format!("{{\"VtepMAC\":\"{m}\"}}"));
            }
            Some(Node {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some(p.name.clone()),
                    annotations: Some(annotations),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                    pod_cidr: Some(p.pod_cidr.clone()),
                    ..Default::default()
                }),
                status: Some(k8s_openapi::api::core::v1::NodeStatus {
                    addresses: Some(vec![k8s_openapi::api::core::v1::NodeAddress {
                        type_: "InternalIP".into(),
                        address: p.address.clone(),
                    }]),
                    ..Default::default()
                }),
            })
        })
        .collect();
    let mut nodes: BTreeMap<String, (&str, &Node)> = BTreeMap::new();
    for n in &file_peers {
        let name = n.metadata.name.clone().unwrap_or_default();
        if nodes.insert(name.clone(), (file_name, n)).is_some() {
            e.push(&format!("Node/{name}"), "name", None, "a second peer with this name");
        }
    }
    for o in objects {
        match &o.object {
            Object::Node(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                if name.is_empty() {
                    e.list.push(ConfigError::field(&o.file, "Node/", "metadata.name", None, "missing"));
                } else if nodes.insert(name.clone(), (o.file.as_str(), n)).is_some() {
                    e.list.push(ConfigError::field(
                        &o.file,
                        &format!("Node/{name}"),
                        "metadata.name",
                        None,
                        "a second Node with this name",
                    ));
                }
            }
            Object::Service(svc) => services.push((o.file.as_str(), svc.as_ref())),
            Object::EndpointSlice(slice) => slices.push((o.file.as_str(), slice.as_ref())),
            Object::NetworkPolicy(_) => {
                notes.push(format!(
                    "{}: {}: read, not applied (the policy stage is not built yet)",
                    o.file,
                    o.object.label()
                ));
            }
            Object::Other { kind, .. } => {
                notes.push(format!("{}: {}: kind {kind} is not one podplane reads; ignored", o.file, o.object.label()));
            }
        }
    }
    let own = nodes.get(&f.name).copied();
    let own_cidrs = own.map(|(file, n)| node_cidrs(file, n, &mut e.list, &mut notes));
    let pod_cidr = match (&f.pod_cidr, own_cidrs.as_ref().and_then(|(c, _)| c.first().copied())) {
        (Some(c), from_obj) => {
            let c = e.cidr(&me, "podCIDR", c);
            if let (Some(c), Some(o)) = (c, from_obj)
                && c != o
            {
                e.push(
                    &me,
                    "podCIDR",
                    Some(&c.to_string()),
                    format!("differs from Node/{}'s spec.podCIDR {o}", f.name),
                );
            }
            c
        }
        (None, Some(o)) => Some(o),
        (None, None) => {
            if own_cidrs.as_ref().is_none_or(|(_, ok)| *ok) {
                e.push(&me, "podCIDR", None, format!("missing: give it here or in a Node object named {:?}", f.name));
            }
            None
        }
    };
    if let (Some(p), Some(c)) = (pod_cidr, cluster_cidr)
        && !c.covers(&p)
    {
        e.push(&me, "podCIDR", Some(&p.to_string()), format!("not inside clusterCIDR {c}"));
    }

    // Ports.
    if f.ports.len() > MAX_PORTS {
        e.push(&me, "ports", None, format!("{} ports: at most {MAX_PORTS}", f.ports.len()));
    }
    let mut ports: Vec<Port> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut pod_ips = BTreeSet::new();
    for (i, p) in f.ports.iter().enumerate().take(MAX_PORTS) {
        let obj = format!("Port/{}", p.name);
        if !valid_port_name(&p.name) {
            e.push(&obj, "name", Some(&p.name), "must be 1-15 letters, digits, '-', '_' or '.' (a TAP device name)");
        } else if p.name == HOST_OUTPUT {
            e.push(&obj, "name", Some(&p.name), "reserved: replay writes what the node's stack receives to host.pcap");
        } else if !seen.insert(p.name.as_str()) {
            e.push(&obj, "name", Some(&p.name), "a second port with this name");
        }
        let mtu = p.mtu.unwrap_or(1500);
        if !(68..=9000).contains(&mtu) {
            e.push(&obj, "mtu", Some(&mtu.to_string()), "must be between 68 and 9000");
        }
        let address = match (p.role, &p.address) {
            (PortRole::Pod, Some(a)) => {
                e.push(&obj, "address", Some(a), "pod ports take the pod's address in `ip`, not `address`");
                None
            }
            (_, Some(a)) => match Cidr::parse_host(a) {
                Ok((ip, net)) if net.prefix <= 30 && (ip == net.addr || ip == net.last()) => {
                    e.push(&obj, "address", Some(a), "the network or broadcast address of its subnet");
                    None
                }
                Ok(v) => Some(v),
                Err(err) => {
                    e.push(&obj, "address", Some(a), err.to_string());
                    None
                }
            },
            (PortRole::Uplink | PortRole::Host, None) => {
                e.push(
                    &obj,
                    "address",
                    None,
                    "missing: an uplink or host port needs the node's address on it (a.b.c.d/len)",
                );
                None
            }
            (PortRole::Pod, None) => None,
        };
        let pod_ip = match (p.role, &p.ip) {
            (PortRole::Pod, Some(ip)) => {
                let v = e.ip(&obj, "ip", ip);
                if let (Some(v), Some(c)) = (v, pod_cidr)
                    && !c.contains(v)
                {
                    e.push(&obj, "ip", Some(ip), format!("not inside the node's podCIDR {c}"));
                }
                if let Some(v) = v
                    && !pod_ips.insert(v)
                {
                    e.push(&obj, "ip", Some(ip), "a second pod with this address");
                }
                v
            }
            (PortRole::Pod, None) if f.pod_network == PodNetwork::Routed => {
                e.push(&obj, "ip", None, "missing: routed pods need their /32 address");
                None
            }
            (_, Some(ip)) => {
                e.push(&obj, "ip", Some(ip), "only pod ports have a pod address");
                None
            }
            _ => None,
        };
        let mac = match (&p.mac, p.role, f.pod_network) {
            (Some(m), PortRole::Pod, PodNetwork::Bridge) => {
                e.push(
                    &obj,
                    "mac",
                    Some(m),
                    "a bridged pod port has no MAC of the node's (the bridge interface has one)",
                );
                None
            }
            (Some(m), _, _) => e.mac(&obj, "mac", m),
            (None, PortRole::Pod, PodNetwork::Bridge) => None,
            (None, PortRole::Pod, PodNetwork::Routed) => Some(CALICO_MAC),
            (None, _, _) => address.map(|(ip, _)| node_mac(ip)),
        };
        let address6 = match (&p.address6, p.role) {
            (None, _) => None,
            (Some(a), PortRole::Pod) => {
                e.push(&obj, "address6", Some(a), "pod ports have no node address");
                None
            }
            (Some(a), _) => {
                let parsed = a
                    .split_once('/')
                    .and_then(|(ip, len)| Some((ip.parse::<std::net::Ipv6Addr>().ok()?, len.parse::<u8>().ok()?)));
                match parsed {
                    Some((ip, len)) if len <= 128 && !ip.is_unspecified() && !ip.is_multicast() => Some((ip, len)),
                    _ => {
                        e.push(&obj, "address6", Some(a), "expected an IPv6 address/prefix (fd00::11/64)");
                        None
                    }
                }
            }
        };
        ports.push(Port {
            name: p.name.clone(),
            id: PortId(u16::try_from(i).unwrap_or(u16::MAX)),
            kind: p.kind,
            role: p.role,
            mac,
            mtu,
            address,
            address6,
            pod_ip,
        });
    }
    // Subnets of the node's own interfaces must not overlap (each is a connected route).
    let mut subnets: Vec<(String, Cidr)> =
        ports.iter().filter_map(|p| p.address.map(|(_, n)| (format!("Port/{}", p.name), n))).collect();
    for (k, (obj, n)) in subnets.iter().enumerate() {
        if let Some((other, _)) = subnets.iter().take(k).find(|(_, m)| m.overlaps(n)) {
            e.push(obj, "address", Some(&n.to_string()), format!("its subnet overlaps {other}'s"));
        }
    }

    // The overlay: a tunnel interface, pods' default MTU inside it.
    let plan = ov::plan(f, &ports, |field, value, problem| e.push(&me, field, value, problem));
    if let Some(pl) = &plan {
        for (p, pf) in ports.iter_mut().zip(&f.ports) {
            if p.role == PortRole::Pod && pf.mtu.is_none() {
                p.mtu = pl.tunnel_mtu;
            }
        }
    }

    // Bridges.
    let mut interfaces: Vec<L3If> = Vec::new();
    let mut local: Vec<LocalAddr> = Vec::new();
    let mut proxy: Vec<ProxyArp> = Vec::new();
    let mut route_list: Vec<RouteEntry> = Vec::new();
    for p in &ports {
        if let (Some((ip, net)), Some(mac)) = (p.address, p.mac) {
            let mut i = L3If::routed(p.id, mac, ip, net.prefix, p.mtu);
            if let Some((ip6, len)) = p.address6 {
                i = i.with_ip6(ip6, len);
            }
            interfaces.push(i);
            local.push(LocalAddr { ip, mac, ports: vec![p.id] });
        }
    }
    let pod_ports: Vec<&Port> = ports.iter().filter(|p| p.role == PortRole::Pod).collect();
    let bridge = match f.pod_network {
        PodNetwork::Routed => {
            if f.bridges.as_ref().is_some_and(|b| !b.is_empty()) {
                e.push(&me, "bridges", None, "podNetwork routed has no bridges");
            }
            for p in &pod_ports {
                let mac = p.mac.unwrap_or(CALICO_MAC);
                interfaces.push(L3If::routed(p.id, mac, CALICO_GATEWAY, 32, p.mtu));
                proxy.push(ProxyArp { port: p.id, mac, targets: vec![CALICO_GATEWAY] });
                if let Some(ip) = p.pod_ip {
                    route_list.push(RouteEntry {
                        spec: RouteSpec { dst: ip, len: 32, next_hop: NextHop::Connected(p.id) },
                        origin: format!("Port/{}", p.name),
                    });
                }
            }
            None
        }
        PodNetwork::Bridge => {
            let files = f.bridges.clone().unwrap_or_else(|| {
                vec![super::file::BridgeFile {
                    name: "cni0".into(),
                    ports: None,
                    address: None,
                    mac: None,
                    hairpin: None,
                    ageing: None,
                }]
            });
            let mut domains = Vec::new();
            let mut member_of: BTreeMap<u16, &str> = BTreeMap::new();
            let mut ageing = None;
            for (bi, b) in files.iter().enumerate() {
                let obj = format!("Bridge/{}", b.name);
                let members: Vec<&Port> = match &b.ports {
                    None if files.len() == 1 => pod_ports.clone(),
                    None => {
                        e.push(&obj, "ports", None, "missing: with several bridges each names its ports");
                        Vec::new()
                    }
                    Some(names) => names
                        .iter()
                        .filter_map(|n| match ports.iter().find(|p| &p.name == n) {
                            Some(p) if p.role == PortRole::Pod => Some(p),
                            Some(_) => {
                                e.push(&obj, "ports", Some(n), "not a pod port");
                                None
                            }
                            None => {
                                e.push(&obj, "ports", Some(n), "no such port");
                                None
                            }
                        })
                        .collect(),
                };
                for m in &members {
                    if let Some(other) = member_of.insert(m.id.0, b.name.as_str()) {
                        e.push(&obj, "ports", Some(&m.name), format!("already in Bridge/{other}"));
                    }
                }
                let address = match (&b.address, pod_cidr) {
                    (Some(a), _) => match Cidr::parse_host(a) {
                        Ok(v) => Some(v),
                        Err(err) => {
                            e.push(&obj, "address", Some(a), err.to_string());
                            None
                        }
                    },
                    (None, Some(c)) if bi == 0 => c.nth(1).map(|ip| (ip, c)),
                    (None, _) => {
                        if pod_cidr.is_some() {
                            e.push(
                                &obj,
                                "address",
                                None,
                                "missing: only the first bridge defaults to the pod CIDR's .1",
                            );
                        }
                        None
                    }
                };
                if let Some((_, net)) = address {
                    if let Some((other, _)) = subnets.iter().find(|(_, m)| m.overlaps(&net)) {
                        e.push(&obj, "address", Some(&net.to_string()), format!("its subnet overlaps {other}'s"));
                    }
                    subnets.push((obj.clone(), net));
                }
                let mac = match &b.mac {
                    Some(m) => e.mac(&obj, "mac", m),
                    None => address.map(|(ip, _)| cni_mac(ip)),
                };
                if let Some(a) = b.ageing {
                    if !(10..=1_000_000).contains(&a) {
                        e.push(&obj, "ageing", Some(&a.to_string()), "must be between 10 and 1000000 seconds");
                    }
                    match ageing {
                        Some(prev) if prev != a => {
                            e.push(&obj, "ageing", Some(&a.to_string()), "all bridges share one ageing time")
                        }
                        _ => ageing = Some(a),
                    }
                }
                let hairpin = b.hairpin.unwrap_or(true);
                let bvi = PortId(BVI_BASE + u16::try_from(bi).unwrap_or(0));
                let member_ids: Vec<PortId> = members.iter().map(|p| p.id).collect();
                if let (Some((ip, net)), Some(mac)) = (address, mac) {
                    let mtu = members.iter().map(|p| p.mtu).min().unwrap_or(1500);
                    interfaces.push(L3If {
                        port: bvi,
                        mac,
                        ip,
                        prefix: net.prefix,
                        mtu,
                        bvi: true,
                        ip6: None,
                        ports: member_ids.clone(),
                    });
                    local.push(LocalAddr { ip, mac, ports: member_ids.clone() });
                }
                domains.push(BridgeDomain {
                    name: b.name.clone(),
                    ports: member_ids.iter().map(|p| BridgePort { port: *p, hairpin }).collect(),
                    gateway_mac: mac,
                    static_fdb: Vec::new(),
                    bvi: Some(bvi),
                });
            }
            let mut cfg = BridgeConfig { domains, ..BridgeConfig::default() };
            if let Some(a) = ageing {
                cfg.ageing = Duration::from_secs(u64::from(a));
            }
            if let Err(err) = BridgeStage::new(&cfg) {
                e.push(&me, "bridges", None, err.to_string());
            }
            Some(cfg)
        }
    };

    // Which L3 port reaches an address on-link.
    if let (Some(pl), Some(pc)) = (&plan, pod_cidr) {
        // As Flannel's flannel.1: the VTEP MAC and the pod network's .0 as a /32.
        interfaces.push(L3If::routed(TUNNEL_PORT, pl.vtep_mac, pc.addr, 32, pl.tunnel_mtu));
    }
    let on_link = |ip: Ipv4Addr| -> Option<PortId> {
        interfaces.iter().find(|i| !i.bvi && i.prefix < 32 && Cidr::of(i.ip, i.prefix).contains(ip)).map(|i| i.port)
    };

    // Peers: every other Node.
    let mut peers = Vec::new();
    for (name, (file, n)) in &nodes {
        if *name == f.name {
            continue;
        }
        let label = format!("Node/{name}");
        let (cidrs, _) = node_cidrs(file, n, &mut e.list, &mut notes);
        if plan.as_ref().is_some_and(|pl| pl.local6.is_some()) {
            // An IPv6 underlay: the peer's IPv6 InternalIP, its routes keyed by its pod
            // network's .0 (as flannel-v6.1's `POD_CIDR via POD_NET.0 onlink`).
            let internal6 =
                n.status.as_ref().and_then(|s| s.addresses.as_ref()).and_then(|a| {
                    a.iter().enumerate().find(|(_, x)| x.type_ == "InternalIP" && x.address.contains(':'))
                });
            let Some((k, addr)) = internal6 else {
                e.list.push(ConfigError::field(
                    file,
                    &label,
                    "status.addresses",
                    None,
                    "no IPv6 InternalIP for the IPv6 underlay",
                ));
                continue;
            };
            let Ok(ip6) = addr.address.parse::<std::net::Ipv6Addr>() else {
                let f = format!("status.addresses[{k}].address");
                e.list.push(ConfigError::field(file, &label, &f, Some(&addr.address), "invalid IPv6 address"));
                continue;
            };
            let Some(key) = cidrs.first().map(|c| c.addr) else {
                notes.push(format!("{file}: {label}: no IPv4 pod CIDR yet; nothing routed to it"));
                continue;
            };
            let mac = match ov::flannel_details(n) {
                Ok((_, mac)) => mac,
                Err((fld, v, problem)) => {
                    e.list.push(ConfigError::field(file, &label, &fld, Some(&v), &problem));
                    continue;
                }
            };
            let vtep_mac = Some(mac.unwrap_or_else(|| ov::default_vtep_mac6(ip6)));
            for c in &cidrs {
                route_list.push(RouteEntry {
                    spec: RouteSpec { dst: c.addr, len: c.prefix, next_hop: NextHop::Via(key, TUNNEL_PORT) },
                    origin: label.clone(),
                });
            }
            peers.push(Peer {
                name: name.clone(),
                pod_cidrs: cidrs,
                node_ip: key,
                port: TUNNEL_PORT,
                vtep_mac,
                node_ip6: Some(ip6),
            });
            continue;
        }
        let internal = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().enumerate().find(|(_, x)| x.type_ == "InternalIP" && !x.address.contains(':')));
        let Some((k, addr)) = internal else {
            e.list.push(ConfigError::field(
                file,
                &label,
                "status.addresses",
                None,
                "no IPv4 InternalIP: nowhere to route its pods",
            ));
            continue;
        };
        let mut field = format!("status.addresses[{k}].address");
        let Ok(mut ip) = addr.address.parse::<Ipv4Addr>() else {
            e.list.push(ConfigError::field(file, &label, &field, Some(&addr.address), "invalid IPv4 address"));
            continue;
        };
        let mut vtep_mac = None;
        if plan.is_some() {
            match ov::flannel_details(n) {
                Ok((public, mac)) => {
                    if let Some(p) = public {
                        ip = p;
                        field = format!("metadata.annotations[{}]", ov::FLANNEL_PUBLIC_IP);
                    }
                    vtep_mac = mac;
                }
                Err((fld, v, problem)) => {
                    e.list.push(ConfigError::field(file, &label, &fld, Some(&v), &problem));
                    continue;
                }
            }
        }
        if cidrs.is_empty() {
            notes.push(format!("{file}: {label}: no IPv4 pod CIDR yet; nothing routed to it"));
            continue;
        }
        if let Some(pl) = &plan {
            if ip == pl.local_ip {
                e.list.push(ConfigError::field(
                    file,
                    &label,
                    &field,
                    Some(&ip.to_string()),
                    "this node's own address: the overlay would loop",
                ));
                continue;
            }
            if !pl.cross_subnet || !pl.uplink_net.contains(ip) {
                let vtep_mac = Some(vtep_mac.unwrap_or_else(|| ov::default_vtep_mac(ip)));
                for c in &cidrs {
                    route_list.push(RouteEntry {
                        spec: RouteSpec { dst: c.addr, len: c.prefix, next_hop: NextHop::Via(ip, TUNNEL_PORT) },
                        origin: label.clone(),
                    });
                }
                peers.push(Peer {
                    name: name.clone(),
                    pod_cidrs: cidrs,
                    node_ip: ip,
                    port: TUNNEL_PORT,
                    vtep_mac,
                    node_ip6: None,
                });
                continue;
            }
        }
        let Some(port) = on_link(ip) else {
            e.list.push(ConfigError::field(
                file,
                &label,
                &field,
                Some(&addr.address),
                "not on any subnet of the node's uplinks: direct routing needs the peer on-link",
            ));
            continue;
        };
        for (ci, c) in cidrs.iter().enumerate() {
            let clash =
                pod_cidr.filter(|p| p.overlaps(c)).map(|p| format!("overlaps this node's podCIDR {p}")).or_else(|| {
                    peers
                        .iter()
                        .find(|q: &&Peer| q.pod_cidrs.iter().any(|d| d.overlaps(c)))
                        .map(|q| format!("overlaps Node/{}'s pod CIDR", q.name))
                });
            if let Some(problem) = clash {
                e.list.push(ConfigError::field(
                    file,
                    &label,
                    &format!("spec.podCIDRs[{ci}]"),
                    Some(&c.to_string()),
                    &problem,
                ));
            }
            route_list.push(RouteEntry {
                spec: RouteSpec { dst: c.addr, len: c.prefix, next_hop: NextHop::Via(ip, port) },
                origin: label.clone(),
            });
        }
        peers.push(Peer { name: name.clone(), pod_cidrs: cidrs, node_ip: ip, port, vtep_mac, node_ip6: None });
    }

    // Static routes.
    for (i, r) in f.routes.iter().enumerate() {
        let obj = format!("routes[{i}]");
        let Some(dst) = e.cidr(&obj, "dst", &r.dst) else { continue };
        let port = match &r.port {
            Some(n) => match ports.iter().find(|p| &p.name == n) {
                Some(p) if interfaces.iter().any(|i| i.port == p.id) => Some(p.id),
                Some(_) => {
                    e.push(&obj, "port", Some(n), "not a layer-3 port (an uplink, a host port or a routed pod port)");
                    continue;
                }
                None => {
                    e.push(&obj, "port", Some(n), "no such port");
                    continue;
                }
            },
            None => None,
        };
        let next_hop = match (r.kind, &r.via) {
            (RouteKind::Blackhole, None) => NextHop::Blackhole,
            (RouteKind::Unreachable, None) => NextHop::Unreachable,
            (RouteKind::Prohibit, None) => NextHop::Prohibit,
            (RouteKind::Unicast, Some(v)) => {
                let Some(gw) = e.ip(&obj, "via", v) else { continue };
                match port.or_else(|| on_link(gw)) {
                    Some(p) => NextHop::Via(gw, p),
                    None => {
                        e.push(&obj, "via", Some(v), "not on any subnet of the node's ports; say which `port`");
                        continue;
                    }
                }
            }
            (RouteKind::Unicast, None) => match port {
                Some(p) => NextHop::Connected(p),
                None => {
                    e.push(&obj, "via", None, "missing: a unicast route needs `via` or `port`");
                    continue;
                }
            },
            (_, Some(v)) => {
                e.push(&obj, "via", Some(v), "a blackhole, unreachable or prohibit route has no gateway");
                continue;
            }
        };
        if let Some(prev) = route_list.iter().find(|x| x.spec.dst == dst.addr && x.spec.len == dst.prefix) {
            e.push(&obj, "dst", Some(&r.dst), format!("the same prefix as {}", prev.origin));
            continue;
        }
        route_list.push(RouteEntry { spec: RouteSpec { dst: dst.addr, len: dst.prefix, next_hop }, origin: obj });
    }

    // The overlay's peers, each with the outer next hop: the peer itself on the
    // uplink's subnet, else the gateway of the static route that covers it.
    let overlay = plan.map(|pl| {
        let mut ops = Vec::new();
        for p in peers.iter().filter(|p| p.port == TUNNEL_PORT) {
            if let (Some(ip6), Some((local6, len))) = (p.node_ip6, pl.local6) {
                // On the uplink's IPv6 subnet: the peer is its own outer next hop.
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                if u128::from(ip6) & mask == u128::from(local6) & mask {
                    ops.push(OverlayPeer {
                        node_ip: p.node_ip,
                        underlay6: Some((ip6, ip6)),
                        vtep_mac: p.vtep_mac.unwrap_or_else(|| ov::default_vtep_mac(p.node_ip)),
                        next_hop: p.node_ip,
                        port: pl.uplink,
                    });
                } else {
                    e.list.push(ConfigError::field(
                        file_name,
                        &format!("Node/{}", p.name),
                        "status.addresses",
                        Some(&ip6.to_string()),
                        "not on the uplink's IPv6 subnet: IPv6 underlay peers must be on-link",
                    ));
                }
                continue;
            }
            let outer = if pl.uplink_net.contains(p.node_ip) {
                Some((p.node_ip, pl.uplink))
            } else {
                route_list
                    .iter()
                    .filter(|r| Cidr { addr: r.spec.dst, prefix: r.spec.len }.contains(p.node_ip))
                    .filter_map(|r| match r.spec.next_hop {
                        NextHop::Via(gw, port) if port != TUNNEL_PORT => Some((r.spec.len, gw, port)),
                        _ => None,
                    })
                    .max_by_key(|x| x.0)
                    .map(|(_, gw, port)| (gw, port))
            };
            match outer {
                Some((next_hop, port)) => ops.push(OverlayPeer {
                    node_ip: p.node_ip,
                    underlay6: None,
                    vtep_mac: p.vtep_mac.unwrap_or_else(|| ov::default_vtep_mac(p.node_ip)),
                    next_hop,
                    port,
                }),
                None => e.list.push(ConfigError::field(
                    file_name,
                    &format!("Node/{}", p.name),
                    "status.addresses",
                    Some(&p.node_ip.to_string()),
                    "not on the uplink's subnet and no route covers it: the tunnel cannot reach it",
                )),
            }
        }
        OverlayConfig {
            encap: pl.encap,
            tunnel_port: TUNNEL_PORT,
            vtep_mac: pl.vtep_mac,
            local_ip: pl.local_ip,
            local_ip6: pl.local6.map(|(a, _)| a),
            uplinks: ports.iter().filter(|p| p.role == PortRole::Uplink).map(|p| p.id).collect(),
            ttl: 64,
            dont_fragment: pl.dont_fragment,
            peers: ops,
        }
    });

    if !e.list.is_empty() {
        return Err(e.list);
    }
    let (Some(pod_cidr), Some(cluster_cidr), Some(service_cidr), Some(node_ports)) =
        (pod_cidr, cluster_cidr, service_cidr, node_ports)
    else {
        return Err(vec![ConfigError::field(file_name, &me, "", None, "incomplete")]);
    };
    let route = RouteConfig {
        interfaces: interfaces.clone(),
        routes: route_list.iter().map(|r| r.spec).collect(),
        ..RouteConfig::default()
    };
    // Masquerade takes the egress interface's address; a link-local one (Calico's
    // 169.254.1.1 gateway) is not one the kernel would pick.
    let if_addrs: Vec<(PortId, Ipv4Addr)> =
        interfaces.iter().filter(|i| !i.ip.is_link_local()).map(|i| (i.port, i.ip)).collect();
    let nat = super::nat::nat(file_name, &me, &f.nat, cluster_cidr, &if_addrs, addresses.first().copied(), &mut e.list);
    let conntrack = super::nat::conntrack(file_name, &me, &f.conntrack, &mut e.list);
    if !e.list.is_empty() {
        return Err(e.list);
    }
    let zone = own.and_then(|(_, n)| n.metadata.labels.as_ref()?.get(super::services::ZONE_LABEL).cloned());
    let node_port_addrs =
        node_port_addresses(file_name, &me, f.node_port_addresses.as_deref(), &addresses, &mut e.list);
    let lb = LbSettings {
        service_cidrs: vec![Prefix { addr: service_cidr.addr.into(), len: service_cidr.prefix }],
        node_port_addrs,
        cluster_cidrs: vec![Prefix { addr: cluster_cidr.addr.into(), len: cluster_cidr.prefix }],
        node_addrs: addresses.iter().map(|&a| a.into()).chain(interfaces.iter().map(|i| i.ip.into())).collect(),
        affinity_max: crate::stage::lb::table::AFFINITY_MAX,
    };
    let view = NodeView { name: f.name.clone(), zone, node_ports: (*node_ports.start(), *node_ports.end()), lb };
    let service_ports = match super::services::compile_all(&view, &services, &slices) {
        Ok(p) => p,
        Err(errs) => {
            e.list.extend(errs);
            Vec::new()
        }
    };
    if !e.list.is_empty() {
        return Err(e.list);
    }
    let arp = ArpConfig { local, proxy, interfaces };
    Ok(NodeSetup {
        name: f.name.clone(),
        addresses,
        pod_cidr,
        cluster_cidr,
        service_cidr,
        node_ports,
        pod_network: f.pod_network,
        ports,
        peers,
        routes: route_list,
        bridge,
        route,
        arp,
        overlay,
        conntrack,
        nat,
        services: service_ports.into_iter().map(|p| (p.name.clone(), p)).collect(),
        fast_path: f.fast_path.unwrap_or(true),
        node_view: view,
        notes,
    })
}

/// The addresses NodePorts answer on: kube-proxy's `--nodeport-addresses`, `primary`
/// (the default: the node's primary address) or CIDRs selecting among the node's
/// addresses (`0.0.0.0/0` for all).
fn node_port_addresses(
    file: &str,
    me: &str,
    given: Option<&[String]>,
    addresses: &[Ipv4Addr],
    errors: &mut Vec<ConfigError>,
) -> Vec<std::net::IpAddr> {
    let Some(given) = given else {
        return addresses.first().map(|&a| a.into()).into_iter().collect();
    };
    let mut out: Vec<std::net::IpAddr> = Vec::new();
    for (i, g) in given.iter().enumerate() {
        if g == "primary" {
            out.extend(addresses.first().map(|&a| std::net::IpAddr::from(a)));
            continue;
        }
        match g.parse::<Cidr>() {
            Ok(c) => out.extend(addresses.iter().filter(|a| c.contains(**a)).map(|&a| std::net::IpAddr::from(a))),
            Err(err) => errors.push(ConfigError::field(
                file,
                me,
                &format!("nodePortAddresses[{i}]"),
                Some(g),
                &format!("expected primary or a CIDR: {err}"),
            )),
        }
    }
    out.sort();
    out.dedup();
    out
}
