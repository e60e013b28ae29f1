//! Overlays: VXLAN (RFC 7348; Flannel's and Calico's VXLAN modes) and IP-in-IP
//! (RFC 2003; Calico's IPIP mode) between nodes, as two stages sharing one
//! configuration and peer table.
//!
//! ```text
//!  parse ─▶ decap ─▶ bridge ─▶ route ─▶ encap ─▶ arp ─▶ egress
//!           │                          │
//!           │ uplink, to the node's    │ routed to the tunnel port (a route
//!           │ address, UDP port/VNI or │ `POD_CIDR via PEER_NODE_IP dev tunnel`):
//!           │ IPIP from a peer: strip  │ prepend the outer headers for that peer
//!           │ in place, re-parse, the  │ in the headroom, the outer next hop and
//!           ▼ inner frame enters from  ▼ uplink set; `arp` writes the outer MACs
//!             the tunnel port
//! ```
//!
//! The tunnel port is a virtual port with a layer-3 interface, like Flannel's
//! `flannel.1` (a VXLAN device with the node's VTEP MAC and `POD_NET.0/32`) or Calico's
//! `tunl0`: its MTU is the uplink's minus the overhead (50 for VXLAN over IPv4, 70 over
//! IPv6, 20 for IPIP), so the route stage sends ICMP fragmentation-needed with the inner path MTU
//! and PMTU discovery works through the tunnel.
//!
//! Outer headers as Linux's `vxlan` and `ipip` devices write them by default: TTL 64
//! (`ip4_dst_hoplimit`), TOS 0 with the inner ECN bits copied (`ip_tunnel_ecn_encap`),
//! DF clear unless configured, IP ID from the RNG (`ip_select_ident` on DF-clear
//! packets), VXLAN's UDP checksum zero over IPv4 (`udpcsum` off) and its source port
//! from the inner flow's hash spread over the local port range 32768-60999
//! (`udp_flow_src_port`). Over IPv6 the outer header has hop limit 64, the inner ECN
//! in its traffic class, flow label 0 (Linux hashes one with `auto_flowlabels`), and
//! the UDP checksum is always computed (`udp6zerocsumtx` off). VXLAN is accepted from any sender, as the kernel's device
//! accepts it; IPIP only from peer nodes, as Calico allows it.

pub mod decap;
pub mod encap;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use crate::buf::PortId;
use crate::wire::EthernetAddress;

pub use decap::DecapStage;
pub use encap::EncapStage;

/// The encapsulation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encap {
    /// VXLAN over UDP/IPv4.
    Vxlan {
        /// UDP destination port (Linux/Flannel 8472; IANA 4789).
        port: u16,
        /// The VNI (Flannel 1; Calico 4096).
        vni: u32,
        /// Source ports, chosen by the inner flow's hash.
        src_ports: RangeInclusive<u16>,
        /// Compute the outer UDP checksum (Linux leaves it zero over IPv4 by default).
        udp_checksum: bool,
    },
    /// IPv4 in IPv4 (protocol 4).
    Ipip,
}

impl Encap {
    /// Flannel's VXLAN: port 8472, VNI 1.
    pub fn flannel() -> Self {
        Encap::Vxlan { port: crate::wire::vxlan::PORT_LINUX, vni: 1, src_ports: 32768..=60999, udp_checksum: false }
    }

    /// What the tunnel's MTU is smaller than the uplink's by: VXLAN adds outer IPv4 +
    /// UDP + VXLAN + inner Ethernet = 50 bytes (70 over IPv6), IPIP an IPv4 header (20).
    pub fn overhead(&self, ipv6_underlay: bool) -> u16 {
        match (self, ipv6_underlay) {
            (Encap::Vxlan { .. }, false) => 50,
            (Encap::Vxlan { .. }, true) => 70,
            (Encap::Ipip, _) => 20,
        }
    }
}

/// A peer node as the overlay sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverlayPeer {
    /// The key routes use (`POD_CIDR via KEY dev tunnel`): over an IPv4 underlay the
    /// peer's underlay address, which is also the outer destination; over an IPv6
    /// underlay an IPv4 address standing for the peer (its pod network's `.0`, as
    /// Flannel's `flannel-v6.1` routes name it).
    pub node_ip: Ipv4Addr,
    /// Over an IPv6 underlay: the peer's IPv6 address (outer destination) and the
    /// outer next hop. `None` over IPv4.
    pub underlay6: Option<(Ipv6Addr, Ipv6Addr)>,
    /// Its VTEP MAC (VXLAN): the inner destination MAC, as Flannel's neighbour entry
    /// on `flannel.1` gives it.
    pub vtep_mac: EthernetAddress,
    /// The outer next hop (the peer itself when on-link, else the underlay gateway).
    pub next_hop: Ipv4Addr,
    /// The port the outer packet leaves by.
    pub port: PortId,
}

/// The overlay's configuration, for both stages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayConfig {
    /// VXLAN or IPIP.
    pub encap: Encap,
    /// The tunnel's virtual port (its layer-3 interface is in the route and neighbour
    /// stages' interface lists).
    pub tunnel_port: PortId,
    /// This node's VTEP MAC (VXLAN): the inner source MAC, and the inner destination
    /// decapsulated frames must carry.
    pub vtep_mac: EthernetAddress,
    /// This node's underlay address: the outer source, and where encapsulated traffic
    /// for the node arrives.
    pub local_ip: Ipv4Addr,
    /// This node's IPv6 underlay address, for peers over IPv6 (VXLAN only).
    pub local_ip6: Option<Ipv6Addr>,
    /// The uplink ports encapsulated traffic may arrive on.
    pub uplinks: Vec<PortId>,
    /// Outer TTL (Linux default 64).
    pub ttl: u8,
    /// Set DF on outer packets (Linux default: clear).
    pub dont_fragment: bool,
    /// The peer nodes.
    pub peers: Vec<OverlayPeer>,
}

/// Bytes of an outer Ethernet + IPv4 header.
pub(crate) const OUTER_ETH_IP: usize = 14 + 20;
