//! What a service port is once checked: its frontends, the endpoints each kind of
//! traffic may use (kube-proxy's `CategorizeEndpoints` already applied), its traffic
//! policies, scheduler and session affinity.

use std::net::IpAddr;

use super::sched::Scheduler;

/// One endpoint a service may send a connection to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// The endpoint's address (same family as the frontend).
    pub addr: IpAddr,
    /// The target port.
    pub port: u16,
    /// Weight for the weighted schedulers (1 unless an annotation says otherwise; 0
    /// takes no new connections, as IPVS's quiescent servers).
    pub weight: u16,
}

impl Backend {
    /// The bytes that name it for hashing (address then port), stable across nodes.
    pub fn name(&self) -> [u8; 18] {
        let mut b = [0u8; 18];
        match self.addr {
            IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => b[..16].copy_from_slice(&a.octets()),
        }
        b[16..].copy_from_slice(&self.port.to_be_bytes());
        b
    }
}

/// A service port of one address family, as the service stage uses it: kube-proxy's
/// `servicePortInfo` with its endpoints already categorised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port` (the port's name, or its number when unnamed), with
    /// `/ipv6` appended for the IPv6 half of a dual-stack service.
    pub name: String,
    /// IP protocol (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
    /// The ClusterIP of this family, if any (`None` for headless services).
    pub cluster_ip: Option<IpAddr>,
    /// The service port.
    pub port: u16,
    /// The NodePort, 0 when none.
    pub node_port: u16,
    /// External IPs and LoadBalancer ingress IPs of this family (external traffic).
    pub external_ips: Vec<IpAddr>,
    /// Endpoints for `Cluster` traffic policy: ready ones (narrowed by topology hints
    /// when they apply), else serving and terminating ones.
    pub cluster: Vec<Backend>,
    /// Endpoints on this node for `Local` traffic policy: ready ones, else serving and
    /// terminating ones.
    pub local: Vec<Backend>,
    /// Whether the service has any usable endpoint on any node (kube-proxy's
    /// `hasEndpoints`): without, connections are rejected.
    pub has_endpoints: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// How a backend is chosen.
    pub scheduler: Scheduler,
    /// `sessionAffinity: ClientIP` with its timeout in seconds.
    pub affinity: Option<u32>,
    /// The LoadBalancer ingress IPs among `external_ips` (`loadBalancerSourceRanges`
    /// applies to them only).
    pub lb_ips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges`: when not empty, only these sources reach the
    /// LoadBalancer IPs (kube-proxy's `firewall-ips` drop).
    pub source_ranges: Vec<super::table::Prefix>,
}

impl ServicePort {
    /// The address family (true for IPv6).
    pub fn v6(&self) -> bool {
        self.cluster_ip.or_else(|| self.external_ips.first().copied()).is_some_and(|a| a.is_ipv6())
    }
}
