//! What the NAT stages do to new connections: destination NAT rules, masquerade as
//! a Kubernetes cluster sets it up, and hairpin.

use core::ops::RangeInclusive;
use std::net::{IpAddr, Ipv4Addr};

use super::ports::PortMode;
use crate::buf::PortId;
use crate::stage::conntrack::Filter;
use crate::wire::cidr::Cidr;

/// Translate new connections to `dst:port` (protocol `proto`) to `to:to_port`
/// (iptables `-j DNAT --to-destination`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnatRule {
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    /// The address connections are made to.
    pub dst: IpAddr,
    /// The port they are made to.
    pub port: u16,
    /// Where they go instead.
    pub to: IpAddr,
    /// The port there.
    pub to_port: u16,
}

/// Masquerade as Flannel and ip-masq-agent set it up: new IPv4 connections from
/// `sources` (the cluster's pod range) to anywhere but `except` (the cluster's pod
/// range and other non-masquerade CIDRs) and multicast leave with the address of
/// their egress port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masquerade {
    /// Sources to masquerade (the cluster CIDR).
    pub sources: Vec<Cidr>,
    /// Destinations never masqueraded (ip-masq-agent's `nonMasqueradeCIDRs`).
    pub except: Vec<Cidr>,
}

/// Test-only switches that turn one of podplane's fixes off, so that a test can show
/// the kernel bug it prevents. All `true` (fixed) by default; never turn them off
/// outside a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatFixes {
    /// Translate the packet quoted in an ICMP error, not only the outer header
    /// (cilium#47755, calico#8854: PMTU discovery breaks without it).
    pub icmp_inner: bool,
    /// Flush the UDP connections a changed or removed destination NAT rule sent to
    /// its old endpoint, as kube-proxy's conntrack cleanup does (kubernetes#19029,
    /// #126130: without it a client that keeps sending, like a resolver, stays stuck
    /// on the dead endpoint until the entry times out, which it never does while
    /// the client keeps sending).
    pub flush_stale_udp: bool,
}

impl Default for NatFixes {
    fn default() -> Self {
        NatFixes { icmp_inner: true, flush_stale_udp: true }
    }
}

/// The NAT stages' configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// Destination NAT of new connections.
    pub dnat: Vec<DnatRule>,
    /// Masquerade, if on.
    pub masquerade: Option<Masquerade>,
    /// Masquerade a connection that destination NAT sent back to its own source (a
    /// pod reaching itself through a service), as kube-proxy marks it: without it the
    /// pod answers itself directly and the reply misses the reverse translation
    /// (kubernetes#20475).
    pub hairpin: bool,
    /// The node's address on each port, for masquerade (the egress port's address, as
    /// `MASQUERADE` takes the output interface's).
    pub addresses: Vec<(PortId, Ipv4Addr)>,
    /// The address used where the egress port has none (the node's primary address:
    /// `inet_select_addr` falls back to another interface's).
    pub fallback: Option<Ipv4Addr>,
    /// Source ports (and ICMP identifiers within 0..=65535) to translate to.
    pub ports: RangeInclusive<u16>,
    /// How a port is chosen.
    pub mode: PortMode,
    /// This worker's index and the number of workers (each owns a slice of `ports`).
    pub worker: (usize, usize),
    /// Fix switches (tests).
    pub fixes: NatFixes,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            dnat: Vec::new(),
            masquerade: None,
            hairpin: true,
            addresses: Vec::new(),
            fallback: None,
            // Linux's range for unprivileged source ports without `--to-ports`.
            ports: 1024..=65535,
            mode: PortMode::FullyRandom,
            worker: (0, 1),
            fixes: NatFixes::default(),
        }
    }
}

impl NatConfig {
    /// The rule for new connections to `dst:port`.
    pub fn dnat_for(&self, proto: u8, dst: IpAddr, port: u16) -> Option<&DnatRule> {
        self.dnat.iter().find(|r| r.proto == proto && r.dst == dst && r.port == port)
    }

    /// The flushes that moving to `new` calls for: one per UDP rule of this
    /// configuration that `new` drops or points elsewhere (TCP connections stay on
    /// their endpoint until they end, as with kube-proxy, which clears UDP only).
    pub fn stale_udp(&self, new: &NatConfig) -> Vec<Filter> {
        if !new.fixes.flush_stale_udp {
            return Vec::new();
        }
        self.dnat
            .iter()
            .filter(|r| r.proto == 17 && !new.dnat.contains(r))
            .map(|r| Filter {
                proto: Some(17),
                orig_dst: Some(r.dst),
                orig_dport: Some(r.port),
                dst_nat: Some(r.to),
                ..Filter::default()
            })
            .collect()
    }

    /// True when a new connection from `src` to `dst` is masqueraded.
    pub fn masquerades(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.masquerade.as_ref().is_some_and(|m| {
            m.sources.iter().any(|c| c.contains(src))
                && !m.except.iter().any(|c| c.contains(dst))
                && !dst.is_multicast()
                && !dst.is_broadcast()
        })
    }

    /// The address masquerade gives a connection leaving on `port`.
    pub fn address_of(&self, port: PortId) -> Option<Ipv4Addr> {
        self.addresses.iter().find(|(p, _)| *p == port).map(|(_, a)| *a).or(self.fallback)
    }
}
