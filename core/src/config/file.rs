//! The node config file as written (YAML, camelCase keys as in Kubernetes objects).
//! Addresses, prefixes and MACs stay strings here so that [`super::load`] can say which
//! field of which object is wrong in its own words; everything else is typed, and
//! unknown keys are refused.
//!
//! ```yaml
//! name: worker-1
//! addresses: [192.168.0.11]        # the node's addresses, primary first
//! podCIDR: 10.244.1.0/24           # or from the Node object named `worker-1`
//! podNetwork: bridge               # bridge (cni0) or routed (Calico /32 + proxy-ARP)
//! ports:
//!   - {name: eth0, kind: pcap, role: uplink, mac: "02:00:c0:a8:00:0b", address: 192.168.0.11/24}
//!   - {name: pod-a, kind: pcap, role: pod, ip: 10.244.1.2}
//! routes:
//!   - {dst: 0.0.0.0/0, via: 192.168.0.1}
//! ```

use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeFile {
    /// The node's name (its `Node` object's `metadata.name`).
    pub name: String,
    /// The node's own addresses; the first is the primary one.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// This node's pod CIDR; when absent it comes from the node's `Node` object.
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// The cluster's pod range (default 10.244.0.0/16, Flannel's).
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    /// Per-node pod CIDR length inside the cluster range (default 24).
    #[serde(default)]
    pub node_mask: Option<u8>,
    /// The service range (default 10.96.0.0/12, kubeadm's).
    #[serde(default, rename = "serviceCIDR")]
    pub service_cidr: Option<String>,
    /// NodePort range `FIRST-LAST` (default 30000-32767).
    #[serde(default)]
    pub node_port_range: Option<String>,
    /// Where NodePorts answer (kube-proxy `--nodeport-addresses`): `primary` (the
    /// default) or CIDRs choosing among `addresses` (`0.0.0.0/0` for all).
    #[serde(default)]
    pub node_port_addresses: Option<Vec<String>>,
    /// How pods are addressed (default `bridge`).
    #[serde(default)]
    pub pod_network: PodNetwork,
    /// Ports, in order: the first is port 0.
    #[serde(default)]
    pub ports: Vec<PortFile>,
    /// Bridge domains (bridge mode). Default: one bridge `cni0` holding every pod port.
    #[serde(default)]
    pub bridges: Option<Vec<BridgeFile>>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// How traffic reaches other nodes' pods (default: direct routing, no overlay).
    #[serde(default)]
    pub overlay: Option<OverlayFile>,
    /// Other nodes written here rather than given as `Node` objects (a cluster without
    /// an API server to ask, a test).
    #[serde(default)]
    pub peers: Vec<PeerFile>,
    /// Masquerade and destination NAT.
    #[serde(default)]
    pub nat: NatFile,
    /// Connection tracking.
    #[serde(default)]
    pub conntrack: ConntrackFile,
    /// Carry established flows on the flow fast path (`stage::fastpath`, like Linux's
    /// flowtable; default true). Off, every packet takes every stage.
    #[serde(default)]
    pub fast_path: Option<bool>,
}

/// NAT as a Kubernetes node does it.
///
/// ```yaml
/// nat:
///   masquerade: true                 # pod traffic leaving the cluster (Flannel's ip-masq)
///   nonMasqueradeCIDRs: [10.244.0.0/16, 192.168.0.0/16]   # default: the cluster CIDR
///   fullyRandom: true                # --random-fully (default); false keeps free ports
///   portRange: 1024-65535
///   dnat:
///     - {protocol: tcp, destination: "10.96.0.10:80", to: "10.244.2.3:8080"}
/// ```
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatFile {
    /// Masquerade pod traffic leaving the cluster CIDR (default true).
    #[serde(default)]
    pub masquerade: Option<bool>,
    /// Destinations never masqueraded (default: the cluster CIDR), like ip-masq-agent's.
    #[serde(default, rename = "nonMasqueradeCIDRs")]
    pub non_masquerade_cidrs: Option<Vec<String>>,
    /// Random ports always (default true); false keeps a connection's port when free.
    #[serde(default)]
    pub fully_random: Option<bool>,
    /// Translated source ports `FIRST-LAST` (default 1024-65535).
    #[serde(default)]
    pub port_range: Option<String>,
    /// Masquerade a pod reaching itself through destination NAT (default true).
    #[serde(default)]
    pub hairpin: Option<bool>,
    /// Destination NAT rules.
    #[serde(default)]
    pub dnat: Vec<DnatFile>,
}

/// One destination NAT rule.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DnatFile {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `ADDRESS:PORT` new connections go to.
    pub destination: String,
    /// `ADDRESS:PORT` they are sent to instead.
    pub to: String,
}

/// Connection tracking limits and timeouts (seconds); unset ones are as kube-proxy
/// sets them on a node, else Linux's defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConntrackFile {
    /// Most connections per family (default max(32768 x cores, 131072), cores = the
    /// node's workers; at most 134,217,728).
    #[serde(default)]
    pub max: Option<usize>,
    /// `nf_conntrack_tcp_be_liberal` (default false).
    #[serde(default)]
    pub liberal: bool,
    /// Established TCP timeout (default 86400, kube-proxy's).
    #[serde(default)]
    pub tcp_established: Option<u64>,
    /// CLOSE_WAIT timeout (default 3600, kube-proxy's).
    #[serde(default)]
    pub tcp_close_wait: Option<u64>,
    /// UDP timeout (default 30).
    #[serde(default)]
    pub udp: Option<u64>,
    /// UDP stream timeout (default 120).
    #[serde(default)]
    pub udp_stream: Option<u64>,
}

/// Another node, as a `Node` object would describe it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerFile {
    /// Its name.
    pub name: String,
    /// Its underlay address (its `InternalIP`), IPv4 or IPv6.
    pub address: String,
    /// Its pod CIDR.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    /// Its VTEP MAC (VXLAN; default `0e:00` + its address).
    #[serde(default, rename = "vtepMAC")]
    pub vtep_mac: Option<String>,
}

/// The overlay between nodes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OverlayFile {
    /// `vxlan`, `ipip` or `none` (direct routing: Flannel host-gw, Calico without
    /// encapsulation).
    pub mode: OverlayMode,
    /// Encapsulate only towards peers outside the uplink's subnet (Calico
    /// `CrossSubnet`); route directly to the others.
    #[serde(default)]
    pub cross_subnet: bool,
    /// VXLAN UDP port (default 8472, Linux's and Flannel's; IANA's is 4789).
    #[serde(default)]
    pub port: Option<u16>,
    /// VXLAN network identifier (default 1, Flannel's; Calico uses 4096).
    #[serde(default)]
    pub vni: Option<u32>,
    /// This node's VTEP MAC (default: 0e:00 + the uplink address).
    #[serde(default, rename = "vtepMAC")]
    pub vtep_mac: Option<String>,
    /// Compute the outer UDP checksum (default false, as Linux over IPv4).
    #[serde(default)]
    pub udp_checksum: bool,
    /// Set DF on outer VXLAN packets (default false, as Linux).
    #[serde(default)]
    pub dont_fragment: bool,
    /// The underlay's family (default `ipv4`; `ipv6` needs the uplink's `address6` and
    /// the peers' IPv6 `InternalIP`s; VXLAN only, as Flannel's `flannel-v6.1`).
    #[serde(default)]
    pub underlay: Underlay,
}

/// The underlay's address family.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Underlay {
    /// IPv4.
    #[default]
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// The overlay mode.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OverlayMode {
    /// No encapsulation.
    #[default]
    None,
    /// VXLAN (Flannel's default backend, Calico VXLAN).
    Vxlan,
    /// IP-in-IP (Calico IPIP).
    Ipip,
}

/// How pods get their addresses and reach the node.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PodNetwork {
    /// Pods on a Linux-bridge-like domain with the node's gateway address on it
    /// (Flannel's cni0, the CNI bridge plugin).
    #[default]
    Bridge,
    /// Each pod a /32 on its own port with a default route via 169.254.1.1, which the
    /// node answers by proxy ARP with ee:ee:ee:ee:ee:ee (Calico).
    Routed,
}

/// What drives a port.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A TAP device (`podplane run`).
    Tap,
    /// A pcap file (`podplane replay`).
    Pcap,
    /// A simulator link.
    Sim,
}

/// What a port is for.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PortRole {
    /// A pod's interface.
    Pod,
    /// The node's link to the underlay (other nodes, the outside).
    Uplink,
    /// The node's own stack (a TAP in the root namespace).
    Host,
}

/// One port.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortFile {
    /// Name, unique on the node (the pcap file and TAP device are named after it).
    pub name: String,
    /// What drives it.
    pub kind: PortKind,
    /// What it is for.
    pub role: PortRole,
    /// The node's MAC on this port. Default: uplink and host ports derive one from
    /// their address (02:00 + IPv4); routed pod ports use Calico's ee:ee:ee:ee:ee:ee.
    #[serde(default)]
    pub mac: Option<String>,
    /// IP MTU (default 1500).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// The node's address on an uplink or host port, with its prefix length.
    #[serde(default)]
    pub address: Option<String>,
    /// The node's IPv6 address on an uplink or host port, with its prefix length (an
    /// IPv6 underlay for the overlay).
    #[serde(default)]
    pub address6: Option<String>,
    /// The pod's address on a pod port (required in routed mode).
    #[serde(default)]
    pub ip: Option<String>,
}

/// One bridge domain.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BridgeFile {
    /// Name (`cni0`).
    pub name: String,
    /// Member pod ports, by name (default: every pod port).
    #[serde(default)]
    pub ports: Option<Vec<String>>,
    /// The node's address on the bridge with its prefix (default: the first address
    /// of the pod CIDR, as Flannel gives cni0).
    #[serde(default)]
    pub address: Option<String>,
    /// The bridge interface's MAC (default: the CNI plugins' 0a:58 + address).
    #[serde(default)]
    pub mac: Option<String>,
    /// Hairpin on every member port (default true: kubelet sets it for bridge CNIs so
    /// that a pod reaches itself through a service).
    #[serde(default)]
    pub hairpin: Option<bool>,
    /// FDB ageing in seconds (default 300, Linux's).
    #[serde(default)]
    pub ageing: Option<u32>,
}

/// One static route, in `ip route` terms.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteFile {
    /// Destination prefix (`0.0.0.0/0`, `10.9.0.0/16`).
    pub dst: String,
    /// Gateway (omit for an on-link route or a route type).
    #[serde(default)]
    pub via: Option<String>,
    /// Egress port by name (default: the port whose subnet holds `via`).
    #[serde(default)]
    pub port: Option<String>,
    /// `unicast` (default), `blackhole`, `unreachable` or `prohibit`.
    #[serde(default, rename = "type")]
    pub kind: RouteKind,
}

/// A route's type, as `ip route`'s.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// Forward via a gateway or on-link.
    #[default]
    Unicast,
    /// Drop silently.
    Blackhole,
    /// Drop with ICMP host unreachable.
    Unreachable,
    /// Drop with ICMP administratively prohibited.
    Prohibit,
}
