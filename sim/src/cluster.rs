//! Kubernetes-style address plans for simulated clusters.
//!
//! A [`ClusterSpec`] names nodes and pods; [`ClusterSpec::plan`] carves node pod CIDRs
//! out of the cluster CIDR the way kube-controller-manager's range allocator does
//! (`--cluster-cidr`, `--node-cidr-mask-size`: the first free subnet, in order), gives
//! each pod the next free address of its node's CIDR from `.2` (host-local IPAM, with
//! `.1` the node's gateway, as Flannel's `cni0` has it), and hands out ClusterIPs from
//! the service range (kubeadm's `10.96.0.0/12`; `.1` is the `kubernetes` service, as
//! the API server reserves it). Anything inconsistent is an error that names the item.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::error::SimError;

pub use podplane::wire::cidr::Cidr;

/// A pod to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    /// Unique name in the cluster.
    pub name: String,
    /// A fixed address, or `None` for the next free one.
    pub ip: Option<Ipv4Addr>,
}

/// A node and its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// Unique node name.
    pub name: String,
    /// A fixed pod CIDR (`spec.podCIDR`), or `None` to allocate.
    pub pod_cidr: Option<Cidr>,
    /// Its pods.
    pub pods: Vec<PodSpec>,
}

/// What a cluster should look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// `--cluster-cidr` (default 10.244.0.0/16, Flannel's).
    pub cluster_cidr: Cidr,
    /// `--node-cidr-mask-size` (default 24).
    pub node_mask: u8,
    /// `--service-cluster-ip-range` (default 10.96.0.0/12, kubeadm's).
    pub service_cidr: Cidr,
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            cluster_cidr: Cidr { addr: Ipv4Addr::new(10, 244, 0, 0), prefix: 16 },
            node_mask: 24,
            service_cidr: Cidr { addr: Ipv4Addr::new(10, 96, 0, 0), prefix: 12 },
            nodes: Vec::new(),
        }
    }
}

/// A placed pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    /// Name.
    pub name: String,
    /// Address.
    pub ip: Ipv4Addr,
    /// MAC (locally administered, derived from the address).
    pub mac: [u8; 6],
}

/// A placed node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// Name.
    pub name: String,
    /// Its pod CIDR.
    pub pod_cidr: Cidr,
    /// The pods' gateway: the first address (`cni0`'s).
    pub gateway: Ipv4Addr,
    /// Its pods.
    pub pods: Vec<PodPlan>,
}

/// The addresses of a whole cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPlan {
    /// Cluster CIDR.
    pub cluster_cidr: Cidr,
    /// Service range.
    pub service_cidr: Cidr,
    /// Nodes in spec order.
    pub nodes: Vec<NodePlan>,
    next_service: u64,
}

impl ClusterSpec {
    /// Add a node with `pods` pods named `<node>-pod-<i>`.
    pub fn with_node(mut self, name: &str, pods: usize) -> Self {
        let pods = (0..pods).map(|i| PodSpec { name: format!("{name}-pod-{i}"), ip: None }).collect();
        self.nodes.push(NodeSpec { name: name.to_owned(), pod_cidr: None, pods });
        self
    }

    /// Place every node and pod.
    ///
    /// # Errors
    /// [`SimError::Cluster`] naming the item: overlapping cluster and service ranges, a
    /// bad node mask, too many nodes or pods for the ranges, duplicate names, a node
    /// CIDR outside the cluster CIDR or overlapping another node's, a pod address
    /// outside its node's CIDR, reserved or taken.
    pub fn plan(&self) -> Result<ClusterPlan, SimError> {
        let err = |m: String| Err(SimError::Cluster(m));
        let (cc, sc) = (self.cluster_cidr, self.service_cidr);
        if cc.overlaps(&sc) {
            return err(format!("service CIDR {sc} overlaps cluster CIDR {cc}"));
        }
        if self.node_mask < cc.prefix || self.node_mask > 30 {
            return err(format!(
                "node mask /{} must be between the cluster prefix /{} and /30",
                self.node_mask, cc.prefix
            ));
        }
        let mut names = BTreeSet::new();
        for n in &self.nodes {
            if !names.insert(("node", n.name.as_str())) {
                return err(format!("duplicate node name {:?}", n.name));
            }
            for p in &n.pods {
                if !names.insert(("pod", p.name.as_str())) {
                    return err(format!("duplicate pod name {:?} (on node {:?})", p.name, n.name));
                }
            }
        }
        // Fixed node CIDRs first, then the range allocator fills the rest in order.
        let mut taken: Vec<Cidr> = Vec::new();
        for n in &self.nodes {
            if let Some(c) = n.pod_cidr {
                if !cc.contains(c.addr) || c.prefix < cc.prefix {
                    return err(format!("node {:?}: pod CIDR {c} is outside the cluster CIDR {cc}", n.name));
                }
                if c.prefix > 30 {
                    return err(format!("node {:?}: pod CIDR {c} is too small for a gateway and pods", n.name));
                }
                if let Some(o) = taken.iter().find(|o| o.overlaps(&c)) {
                    return err(format!("node {:?}: pod CIDR {c} overlaps {o}, already given to another node", n.name));
                }
                taken.push(c);
            }
        }
        let capacity = 1u64 << (self.node_mask - cc.prefix);
        let mut next = 0u64;
        let mut nodes = Vec::new();
        for n in &self.nodes {
            let cidr = match n.pod_cidr {
                Some(c) => c,
                None => loop {
                    let Some(c) = cc.subnet(self.node_mask, next) else {
                        return err(format!(
                            "cluster CIDR {cc} with /{} per node has room for {capacity} nodes: no pod CIDR left for node {:?}",
                            self.node_mask, n.name
                        ));
                    };
                    next += 1;
                    if !taken.iter().any(|t| t.overlaps(&c)) {
                        taken.push(c);
                        break c;
                    }
                },
            };
            nodes.push(place_pods(n, cidr)?);
        }
        Ok(ClusterPlan { cluster_cidr: cc, service_cidr: sc, nodes, next_service: 2 })
    }
}

fn place_pods(n: &NodeSpec, cidr: Cidr) -> Result<NodePlan, SimError> {
    let err = |m: String| Err(SimError::Cluster(m));
    let gateway = cidr.nth(1).unwrap_or(cidr.addr);
    let broadcast = cidr.nth(cidr.size() - 1).unwrap_or(cidr.addr);
    let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for p in &n.pods {
        if let Some(ip) = p.ip {
            if !cidr.contains(ip) {
                return err(format!(
                    "pod {:?} on node {:?}: {ip} is outside the node's pod CIDR {cidr}",
                    p.name, n.name
                ));
            }
            if ip == cidr.addr || ip == gateway || ip == broadcast {
                return err(format!(
                    "pod {:?} on node {:?}: {ip} is reserved in {cidr} (network, gateway or broadcast)",
                    p.name, n.name
                ));
            }
            if !used.insert(ip) {
                return err(format!("pod {:?} on node {:?}: {ip} is already taken", p.name, n.name));
            }
        }
    }
    let mut cursor = 2u64;
    let mut pods = Vec::new();
    for p in &n.pods {
        let ip = match p.ip {
            Some(ip) => ip,
            None => loop {
                let Some(ip) = cidr.nth(cursor).filter(|ip| *ip != broadcast) else {
                    return err(format!("node {:?}: pod CIDR {cidr} has no address left for pod {:?}", n.name, p.name));
                };
                cursor += 1;
                if used.insert(ip) {
                    break ip;
                }
            },
        };
        let o = ip.octets();
        pods.push(PodPlan { name: p.name.clone(), ip, mac: [0x0a, 0x58, o[0], o[1], o[2], o[3]] });
    }
    Ok(NodePlan { name: n.name.clone(), pod_cidr: cidr, gateway, pods })
}

impl ClusterPlan {
    /// The next free ClusterIP (from `.2`: `.1` is the `kubernetes` service).
    ///
    /// # Errors
    /// [`SimError::Cluster`] when the service range is used up.
    pub fn allocate_service_ip(&mut self) -> Result<Ipv4Addr, SimError> {
        let ip = self
            .service_cidr
            .nth(self.next_service)
            .filter(|_| self.next_service + 1 < self.service_cidr.size())
            .ok_or_else(|| SimError::Cluster(format!("service CIDR {} is full", self.service_cidr)))?;
        self.next_service += 1;
        Ok(ip)
    }

    /// Every pod with its node, in order.
    pub fn pods(&self) -> impl Iterator<Item = (&NodePlan, &PodPlan)> {
        self.nodes.iter().flat_map(|n| n.pods.iter().map(move |p| (n, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_carve_like_kube_controller_manager_and_host_local() {
        let mut plan = ClusterSpec::default().with_node("a", 2).with_node("b", 1).plan().unwrap();
        assert_eq!(plan.nodes[0].pod_cidr.to_string(), "10.244.0.0/24");
        assert_eq!(plan.nodes[1].pod_cidr.to_string(), "10.244.1.0/24");
        assert_eq!(plan.nodes[0].gateway, ip("10.244.0.1"));
        let ips: Vec<_> = plan.pods().map(|(_, p)| p.ip).collect();
        assert_eq!(ips, vec![ip("10.244.0.2"), ip("10.244.0.3"), ip("10.244.1.2")]);
        assert_eq!(plan.nodes[0].pods[0].mac, [0x0a, 0x58, 10, 244, 0, 2]);
        assert_eq!(plan.allocate_service_ip().unwrap(), ip("10.96.0.2"));
        assert_eq!(plan.allocate_service_ip().unwrap(), ip("10.96.0.3"));
    }

    #[test]
    fn fixed_node_cidr_is_skipped_by_the_allocator() {
        let mut spec = ClusterSpec::default().with_node("a", 1).with_node("b", 1);
        spec.nodes[1].pod_cidr = Some("10.244.0.0/24".parse().unwrap());
        let plan = spec.plan().unwrap();
        assert_eq!(plan.nodes[0].pod_cidr.to_string(), "10.244.1.0/24");
        assert_eq!(plan.nodes[1].pod_cidr.to_string(), "10.244.0.0/24");
    }

    fn err(spec: &ClusterSpec) -> String {
        spec.plan().unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_item() {
        let mut s = ClusterSpec::default().with_node("a", 1);
        s.service_cidr = "10.240.0.0/12".parse().unwrap();
        assert_eq!(err(&s), "cluster: service CIDR 10.240.0.0/12 overlaps cluster CIDR 10.244.0.0/16");

        let s = ClusterSpec::default().with_node("a", 1).with_node("a", 1);
        assert_eq!(err(&s), "cluster: duplicate node name \"a\"");

        let mut s = ClusterSpec::default().with_node("a", 1).with_node("b", 1);
        s.nodes[1].pods[0].name = "a-pod-0".into();
        assert_eq!(err(&s), "cluster: duplicate pod name \"a-pod-0\" (on node \"b\")");

        let mut s = ClusterSpec::default().with_node("n2", 1);
        s.nodes[0].pods[0] = PodSpec { name: "web-1".into(), ip: Some(ip("10.244.5.3")) };
        assert_eq!(
            err(&s),
            "cluster: pod \"web-1\" on node \"n2\": 10.244.5.3 is outside the node's pod CIDR 10.244.0.0/24"
        );

        let mut s = ClusterSpec::default().with_node("a", 1);
        s.nodes[0].pods[0].ip = Some(ip("10.244.0.1"));
        assert!(err(&s).contains("is reserved in 10.244.0.0/24"));

        let mut s = ClusterSpec::default().with_node("a", 1).with_node("b", 1);
        s.nodes[0].pod_cidr = Some("10.244.7.0/24".parse().unwrap());
        s.nodes[1].pod_cidr = Some("10.244.7.0/25".parse().unwrap());
        assert_eq!(
            err(&s),
            "cluster: node \"b\": pod CIDR 10.244.7.0/25 overlaps 10.244.7.0/24, already given to another node"
        );

        let mut s = ClusterSpec::default().with_node("a", 1);
        s.nodes[0].pod_cidr = Some("10.0.0.0/24".parse().unwrap());
        assert_eq!(err(&s), "cluster: node \"a\": pod CIDR 10.0.0.0/24 is outside the cluster CIDR 10.244.0.0/16");

        let s = ClusterSpec { node_mask: 30, cluster_cidr: "10.244.0.0/29".parse().unwrap(), ..ClusterSpec::default() };
        let s = s.with_node("a", 0).with_node("b", 0).with_node("c", 0);
        assert!(err(&s).contains("has room for 2 nodes: no pod CIDR left for node \"c\""), "{}", err(&s));

        let mut s = ClusterSpec::default().with_node("a", 62);
        s.node_mask = 26;
        assert!(err(&s).contains("has no address left for pod \"a-pod-61\""), "{}", err(&s));
    }

    #[test]
    fn cidr_parsing_rejects_host_bits() {
        assert_eq!("10.244.0.1/16".parse::<Cidr>().unwrap_err().to_string(), "host bits set");
        assert!("10.244.0.0".parse::<Cidr>().is_err());
        assert!("10.244.300.0/24".parse::<Cidr>().is_err());
    }
}

/// How a cluster's pods are wired. Modes arrive with the stages they need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Linux-bridge style with direct routing between nodes (Flannel's `host-gw`,
    /// Calico without encapsulation): a node's pods on one bridge domain with the
    /// node's gateway address (`.1`) on it, and each node routing every other node's
    /// pod CIDR via that node's underlay address. Node pipeline:
    /// `parse → bridge → route → arp → egress`.
    Bridge,
    /// Calico style: every pod has a /32 and a default route via 169.254.1.1 on its own
    /// point-to-point port; the node answers ARP for 169.254.1.1 on every pod port with
    /// ee:ee:ee:ee:ee:ee (proxy ARP), routes each pod address to its port, and routes
    /// other nodes' pod CIDRs via their underlay addresses. No bridge:
    /// `parse → route → arp → egress`.
    Routed,
    /// Flannel's VXLAN backend: pods bridged as in [`Bridge`](Self::Bridge), other
    /// nodes' pod CIDRs routed into a VXLAN tunnel (port 8472, VNI 1; each node's VTEP
    /// MAC the default `0e:00` + its underlay address):
    /// `parse → decap → bridge → route → encap → arp → egress`.
    Vxlan,
    /// Calico's IPIP mode over bridged pods: as [`Vxlan`](Self::Vxlan) with IP-in-IP.
    Ipip,
    /// Calico's `CrossSubnet`: the nodes alternate between two underlay subnets
    /// (192.168.0.0/24 and 192.168.1.0/24) joined by a router (a podplane node, `.1` on
    /// each); peers on the node's own subnet are routed to directly, the others
    /// through VXLAN via the router.
    VxlanCrossSubnet,
}

/// What [`build`] made: indexes into the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterHandles {
    /// Node index per plan node.
    pub nodes: Vec<usize>,
    /// Host index per pod, per node, in plan order.
    pub pods: Vec<Vec<usize>>,
    /// Underlay address per node.
    pub node_ips: Vec<Ipv4Addr>,
}

pub use podplane::stage::bridge::cni_mac;

/// The virtual port number of a node's bridge interface (its BVI).
pub const BVI_PORT: u16 = 4000;

/// The underlay network nodes sit on (a switched segment): node `i` is `.10 + i`.
pub const UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 0);

/// Build `plan` into `sim` in `mode`: a node per plan node with one port per pod
/// (`pod0`, `pod1`, ...) and an `uplink`, a smoltcp host per pod on its own link to its
/// port, and the nodes' uplinks on one switched `underlay` segment.
///
/// # Errors
/// Whatever the simulator rejects (duplicate names), a bridge configuration error, or
/// more than 240 nodes (the underlay is one /24).
pub fn build(
    sim: &mut crate::Sim,
    plan: &ClusterPlan,
    mode: NetworkMode,
    link: crate::LinkConfig,
) -> Result<ClusterHandles, SimError> {
    build_with(sim, plan, mode, link, link)
}

/// Like [`build`], with the underlay's own link settings: its MTU is also the nodes'
/// uplink MTU, so a smaller one makes the nodes send ICMP fragmentation-needed.
///
/// # Errors
/// As [`build`].
pub fn build_with(
    sim: &mut crate::Sim,
    plan: &ClusterPlan,
    mode: NetworkMode,
    link: crate::LinkConfig,
    underlay: crate::LinkConfig,
) -> Result<ClusterHandles, SimError> {
    use podplane::PortId;
    use podplane::pipeline::{Pipeline, PipelineConfig};
    use podplane::stage::arp::{ArpConfig, LocalAddr};
    use podplane::stage::bridge::{BridgeConfig, BridgeDomain, BridgePort};
    use podplane::stage::route::{L3If, NextHop, RouteConfig, RouteSpec};
    use podplane::stage::{ArpStage, BridgeStage, DecapStage, EgressStage, EncapStage, ParseStage, RouteStage};

    if plan.nodes.len() > 240 {
        return Err(SimError::Cluster(format!(
            "{} nodes: the simulated underlay {UNDERLAY}/24 holds 240",
            plan.nodes.len()
        )));
    }
    let cross = mode == NetworkMode::VxlanCrossSubnet;
    // Cross-subnet: node i on 192.168.(i % 2).0/24.
    let subnet_of = |i: usize| if cross { u32::try_from(i % 2).unwrap_or(0) } else { 0 };
    let node_ip =
        |i: usize| Ipv4Addr::from(u32::from(UNDERLAY) + (subnet_of(i) << 8) + 10 + u32::try_from(i).unwrap_or(0));
    let up_mtu = u16::try_from(underlay.mtu).unwrap_or(1500);
    let mut handles = ClusterHandles::default();
    let mut uplinks = Vec::new();
    for (ni, node) in plan.nodes.iter().enumerate() {
        let npods = node.pods.len();
        let ports: Vec<PortId> = (0..npods).map(|i| PortId(u16::try_from(i).unwrap_or(u16::MAX))).collect();
        let uplink = PortId(u16::try_from(npods).unwrap_or(u16::MAX));
        let bvi = PortId(BVI_PORT);
        let gw_mac = cni_mac(node.gateway);
        let my_ip = node_ip(ni);
        let up_mac = podplane::wire::EthernetAddress([0x02, 0x00, 192, 168, 0, my_ip.octets()[3]]);
        let interfaces = vec![
            L3If {
                port: bvi,
                mac: gw_mac,
                ip: node.gateway,
                prefix: node.pod_cidr.prefix,
                mtu: 1500,
                bvi: true,
                ip6: None,
                ports: ports.clone(),
            },
            L3If::routed(uplink, up_mac, my_ip, 24, up_mtu),
        ];
        let overlay = overlay_config(mode, plan, ni, my_ip, uplink, &node_ip, &|oi| subnet_of(oi) == subnet_of(ni));
        // Other nodes' pod CIDRs: via their underlay address, directly (direct routing,
        // or a peer on the same subnet in cross-subnet mode) or into the tunnel.
        let mut routes: Vec<RouteSpec> = plan
            .nodes
            .iter()
            .enumerate()
            .filter(|(oi, _)| *oi != ni)
            .map(|(oi, o)| {
                let tunnel = overlay.as_ref().filter(|_| !cross || subnet_of(oi) != subnet_of(ni));
                RouteSpec {
                    dst: o.pod_cidr.addr,
                    len: o.pod_cidr.prefix,
                    next_hop: NextHop::Via(node_ip(oi), tunnel.map_or(uplink, |o| o.tunnel_port)),
                }
            })
            .collect();
        if mode == NetworkMode::Routed {
            let pipeline =
                routed_node(node, &ports, (uplink, up_mtu), my_ip, up_mac, &mut routes, sim.seed() ^ ni as u64);
            add_pods(sim, node, pipeline, &mut handles, &mut uplinks, my_ip, true, link, 1500)?;
            continue;
        }
        let bridge = BridgeStage::new(&BridgeConfig {
            domains: vec![BridgeDomain {
                name: format!("{}/cni0", node.name),
                ports: ports.iter().map(|p| BridgePort { port: *p, hairpin: true }).collect(),
                gateway_mac: Some(gw_mac),
                static_fdb: Vec::new(),
                bvi: Some(bvi),
            }],
            ..BridgeConfig::default()
        })
        .map_err(|e| SimError::Cluster(e.to_string()))?;
        let mut interfaces = interfaces;
        if let Some(o) = &overlay {
            // flannel.1: the VTEP MAC, the pod network's .0/32, the overhead off the MTU.
            let mtu = up_mtu.saturating_sub(o.encap.overhead(false));
            interfaces.push(L3If::routed(o.tunnel_port, o.vtep_mac, node.pod_cidr.addr, 32, mtu));
        }
        let route = RouteStage::new(&RouteConfig {
            interfaces: interfaces.clone(),
            routes,
            multipath: vec![],
            routes6: vec![],
            multipath6: vec![],
        });
        let arp = ArpStage::new(ArpConfig {
            local: vec![
                LocalAddr { ip: node.gateway, mac: gw_mac, ports: ports.clone() },
                LocalAddr { ip: my_ip, mac: up_mac, ports: vec![uplink] },
            ],
            proxy: Vec::new(),
            interfaces,
        });
        let seed = sim.seed() ^ (ni as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // As Flannel's CNI gives pods the tunnel's MTU.
        let pod_mtu = overlay.as_ref().map_or(1500, |o| usize::from(up_mtu.saturating_sub(o.encap.overhead(false))));
        let stages: Vec<Box<dyn podplane::Stage>> = match overlay {
            Some(o) => vec![
                Box::new(ParseStage::new()),
                Box::new(DecapStage::new(o.clone())),
                Box::new(bridge),
                Box::new(route),
                Box::new(EncapStage::new(o)),
                Box::new(arp),
                Box::new(EgressStage),
            ],
            None => {
                vec![
                    Box::new(ParseStage::new()),
                    Box::new(bridge),
                    Box::new(route),
                    Box::new(arp),
                    Box::new(EgressStage),
                ]
            }
        };
        let pipeline = Pipeline::new(stages, PipelineConfig::default(), seed);
        add_pods(sim, node, pipeline, &mut handles, &mut uplinks, my_ip, false, link, pod_mtu)?;
    }
    if cross {
        // Two segments and a podplane router between them.
        let router_ifs = vec![
            L3If::routed(
                PortId(0),
                podplane::wire::EthernetAddress([0x02, 0xee, 192, 168, 0, 1]),
                Ipv4Addr::new(192, 168, 0, 1),
                24,
                up_mtu,
            ),
            L3If::routed(
                PortId(1),
                podplane::wire::EthernetAddress([0x02, 0xee, 192, 168, 1, 1]),
                Ipv4Addr::new(192, 168, 1, 1),
                24,
                up_mtu,
            ),
        ];
        let router = Pipeline::new(
            podplane::testutil::routed_stages(router_ifs, vec![], vec![]),
            PipelineConfig::default(),
            sim.seed() ^ 0x726f_7574,
        );
        let r = sim.add_node("router", &["u0", "u1"], router)?;
        for s in 0..2usize {
            let mut ends: Vec<crate::Endpoint> =
                uplinks.iter().enumerate().filter(|(i, _)| i % 2 == s).map(|(_, e)| *e).collect();
            ends.push(sim.node_end(r, if s == 0 { "u0" } else { "u1" })?);
            sim.link(&format!("underlay-{s}"), &ends, underlay.switched())?;
        }
    } else if uplinks.len() >= 2 {
        sim.link("underlay", &uplinks, underlay.switched())?;
    }
    Ok(handles)
}

/// The tunnel's virtual port on simulated nodes (as `podplane::config`'s).
pub const TUNNEL_PORT: u16 = 4095;

/// The overlay of node `ni` in `mode` (none for direct routing): every other node a
/// peer, reached on-link over the switched underlay, or in cross-subnet mode the nodes
/// of the other subnet, through the router (`.1` of the node's subnet).
fn overlay_config(
    mode: NetworkMode,
    plan: &ClusterPlan,
    ni: usize,
    my_ip: Ipv4Addr,
    uplink: podplane::PortId,
    node_ip: &dyn Fn(usize) -> Ipv4Addr,
    same_subnet: &dyn Fn(usize) -> bool,
) -> Option<podplane::stage::overlay::OverlayConfig> {
    use podplane::stage::overlay::{Encap, OverlayConfig, OverlayPeer};
    let encap = match mode {
        NetworkMode::Vxlan | NetworkMode::VxlanCrossSubnet => Encap::flannel(),
        NetworkMode::Ipip => Encap::Ipip,
        NetworkMode::Bridge | NetworkMode::Routed => return None,
    };
    let cross = mode == NetworkMode::VxlanCrossSubnet;
    let [a, b, c, _] = my_ip.octets();
    let router = Ipv4Addr::new(a, b, c, 1);
    let vtep = |ip: Ipv4Addr| {
        let [a, b, c, d] = ip.octets();
        podplane::wire::EthernetAddress([0x0e, 0x00, a, b, c, d])
    };
    let peers = (0..plan.nodes.len())
        .filter(|oi| *oi != ni && !(cross && same_subnet(*oi)))
        .map(|oi| OverlayPeer {
            node_ip: node_ip(oi),
            underlay6: None,
            vtep_mac: vtep(node_ip(oi)),
            next_hop: if cross { router } else { node_ip(oi) },
            port: uplink,
        })
        .collect();
    Some(OverlayConfig {
        encap,
        tunnel_port: podplane::PortId(TUNNEL_PORT),
        vtep_mac: vtep(my_ip),
        local_ip: my_ip,
        local_ip6: None,
        uplinks: vec![uplink],
        ttl: 64,
        dont_fragment: false,
        peers,
    })
}

/// The node pipeline of [`NetworkMode::Routed`] (Calico without encapsulation).
fn routed_node(
    node: &NodePlan,
    ports: &[podplane::PortId],
    (uplink, up_mtu): (podplane::PortId, u16),
    my_ip: Ipv4Addr,
    up_mac: podplane::wire::EthernetAddress,
    routes: &mut Vec<podplane::stage::route::RouteSpec>,
    seed: u64,
) -> podplane::pipeline::Pipeline {
    use podplane::pipeline::{Pipeline, PipelineConfig};
    use podplane::stage::arp::{ArpConfig, CALICO_GATEWAY, CALICO_MAC, LocalAddr, ProxyArp};
    use podplane::stage::route::{L3If, NextHop, RouteConfig, RouteSpec};
    use podplane::stage::{ArpStage, EgressStage, ParseStage, RouteStage};

    // Each pod port is a point-to-point L3 interface with Calico's MAC. Linux's caliX
    // has no address and asks ARP from the node's primary address (inet_select_addr);
    // smoltcp ignores ARP from outside its subnets, so here the pod ports speak as
    // 169.254.1.1, the gateway the pods know. (ICMP errors to pods come from it too.)
    let mut interfaces: Vec<L3If> =
        ports.iter().map(|p| L3If::routed(*p, CALICO_MAC, CALICO_GATEWAY, 32, 1500)).collect();
    interfaces.push(L3If::routed(uplink, up_mac, my_ip, 24, up_mtu));
    for (pod, port) in node.pods.iter().zip(ports) {
        routes.push(RouteSpec { dst: pod.ip, len: 32, next_hop: NextHop::Connected(*port) });
    }
    let route = RouteStage::new(&RouteConfig {
        interfaces: interfaces.clone(),
        routes: routes.clone(),
        multipath: vec![],
        routes6: vec![],
        multipath6: vec![],
    });
    let arp = ArpStage::new(ArpConfig {
        local: vec![LocalAddr { ip: my_ip, mac: up_mac, ports: vec![uplink] }],
        proxy: ports.iter().map(|p| ProxyArp { port: *p, mac: CALICO_MAC, targets: vec![CALICO_GATEWAY] }).collect(),
        interfaces,
    });
    Pipeline::new(
        vec![Box::new(ParseStage::new()), Box::new(route), Box::new(arp), Box::new(EgressStage)],
        PipelineConfig::default(),
        seed,
    )
}

/// Add a node with its pods (and their links) to the simulation.
#[allow(clippy::too_many_arguments)]
fn add_pods(
    sim: &mut crate::Sim,
    node: &NodePlan,
    pipeline: podplane::pipeline::Pipeline,
    handles: &mut ClusterHandles,
    uplinks: &mut Vec<crate::Endpoint>,
    my_ip: Ipv4Addr,
    routed: bool,
    link: crate::LinkConfig,
    pod_mtu: usize,
) -> Result<usize, SimError> {
    let mut names: Vec<String> = (0..node.pods.len()).map(|i| format!("pod{i}")).collect();
    names.push("uplink".into());
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let n = sim.add_node(&node.name, &name_refs, pipeline)?;
    let mut hosts = Vec::new();
    for (i, pod) in node.pods.iter().enumerate() {
        let cfg = if routed {
            let mut c = crate::HostConfig::v4(&pod.name, pod.ip, 32).gateway(podplane::stage::arp::CALICO_GATEWAY);
            c.mac = pod.mac;
            // Linux pods reach 169.254.1.1 through `169.254.1.1 dev eth0 scope link`;
            // smoltcp only takes ARP replies from its own subnets, so the pod also
            // carries a link-local /16 (never used as a source towards other pods).
            let o = pod.ip.octets();
            c.ipv4_extra = Some((Ipv4Addr::new(169, 254, o[2].max(2), o[3]), 16));
            c
        } else {
            let mut c = crate::HostConfig::v4(&pod.name, pod.ip, node.pod_cidr.prefix).gateway(node.gateway);
            c.mac = pod.mac;
            c
        };
        let h = sim.add_host(cfg.mtu(pod_mtu))?;
        let ends = [sim.host_end(h), sim.node_end(n, &names[i])?];
        sim.link(&format!("{}/{}", node.name, pod.name), &ends, link)?;
        hosts.push(h);
    }
    uplinks.push(sim.node_end(n, "uplink")?);
    handles.nodes.push(n);
    handles.pods.push(hosts);
    handles.node_ips.push(my_ip);
    Ok(n)
}
