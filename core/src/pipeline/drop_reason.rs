//! The one table of drop reasons for the whole crate (VPP's `foreach_*_error`, Cilium's
//! `drop_reasons.h`). Counters, traces and the CLI all use [`DropReason::as_str`].
//!
//! Codes are stable: a retired code stays reserved and is never reused, so a counter
//! dump from an older build still reads right. Counter arrays are indexed by
//! `code - 1`, so codes are kept dense.

use core::fmt;

/// How bad a drop is, for alerting (VPP `vl_counter_severity_e`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Expected by policy (an ACL said no, a TTL ran out).
    Info,
    /// Bad input from outside (malformed or corrupted packets).
    Warn,
    /// The node itself fell short (out of buffers, queue full, no decision).
    Error,
}

macro_rules! drop_reasons {
    ( $( $(#[doc = $doc:literal])+ $code:literal => $variant:ident, $name:literal, $sev:ident; )+ ) => {
        /// Why a packet was dropped. One enum for the crate; see the module docs.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u16)]
        pub enum DropReason {
            $( $(#[doc = $doc])+ $variant = $code, )+
        }

        impl DropReason {
            /// Every reason, in code order.
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$variant, )+ ];

            /// Size of a counter array indexed by [`index`](Self::index).
            pub const COUNT: usize = max_code(&[ $( $code, )+ ]);

            /// The snake_case name used in counters, traces and the CLI.
            pub const fn as_str(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )+ }
            }

            /// How bad it is.
            pub const fn severity(self) -> Severity {
                match self { $( DropReason::$variant => Severity::$sev, )+ }
            }

            /// One-line description (the variant's doc comment).
            pub fn description(self) -> &'static str {
                let d: &'static str = match self { $( DropReason::$variant => concat!($($doc),+), )+ };
                d.trim()
            }
        }
    };
}

// Const context: `get` is not const-callable on slices here; `i < len` guards the index.
#[allow(clippy::indexing_slicing)]
const fn max_code(codes: &[u16]) -> usize {
    let mut i = 0;
    let mut m = 0;
    while i < codes.len() {
        if codes[i] as usize > m {
            m = codes[i] as usize;
        }
        i += 1;
    }
    m
}

drop_reasons! {
    /// A packet was still undecided after the last stage.
    1 => NoDisposition, "no_disposition", Error;
    /// No free buffer for a packet the node had to create or receive.
    2 => PoolExhausted, "pool_exhausted", Error;
    /// Frame shorter than an Ethernet header (or its 802.1Q tag).
    3 => RuntFrame, "runt_frame", Warn;
    /// Source MAC is multicast, broadcast or zero (Linux's bridge drops these too).
    4 => InvalidSrcMac, "invalid_src_mac", Warn;
    /// ARP packet shorter than 28 bytes.
    5 => ArpTruncated, "arp_truncated", Warn;
    /// ARP for a hardware or protocol type other than Ethernet/IPv4.
    6 => ArpUnsupported, "arp_unsupported", Warn;
    /// IPv4 packet shorter than its header or its total length.
    7 => Ipv4Truncated, "ipv4_truncated", Warn;
    /// IPv4 version field is not 4.
    8 => Ipv4BadVersion, "ipv4_bad_version", Warn;
    /// IPv4 header length (IHL) below 5.
    9 => Ipv4BadHeaderLen, "ipv4_bad_header_len", Warn;
    /// IPv4 total length smaller than the header.
    10 => Ipv4BadTotalLen, "ipv4_bad_total_len", Warn;
    /// IPv4 header checksum does not verify.
    11 => Ipv4BadChecksum, "ipv4_bad_checksum", Warn;
    /// IPv6 packet shorter than 40 bytes or its payload length.
    12 => Ipv6Truncated, "ipv6_truncated", Warn;
    /// IPv6 version field is not 6.
    13 => Ipv6BadVersion, "ipv6_bad_version", Warn;
    /// An IPv6 extension header runs past the packet.
    14 => Ipv6BadExtHeader, "ipv6_bad_ext_header", Warn;
    /// More IPv6 extension headers than the node walks.
    15 => Ipv6TooManyExtHeaders, "ipv6_too_many_ext_headers", Warn;
    /// TCP segment shorter than its header.
    16 => TcpTruncated, "tcp_truncated", Warn;
    /// TCP data offset below 5.
    17 => TcpBadHeaderLen, "tcp_bad_header_len", Warn;
    /// TCP checksum does not verify (when the policy checks it).
    18 => TcpBadChecksum, "tcp_bad_checksum", Warn;
    /// UDP datagram shorter than 8 bytes or its length field.
    19 => UdpTruncated, "udp_truncated", Warn;
    /// UDP length field below 8.
    20 => UdpBadLength, "udp_bad_length", Warn;
    /// UDP checksum does not verify, or is zero over IPv6.
    21 => UdpBadChecksum, "udp_bad_checksum", Warn;
    /// ICMP or ICMPv6 message shorter than 8 bytes.
    22 => IcmpTruncated, "icmp_truncated", Warn;
    /// ICMP or ICMPv6 checksum does not verify (when the policy checks it).
    23 => IcmpBadChecksum, "icmp_bad_checksum", Warn;
    /// Packets generated by stages kept generating packets past the round limit.
    24 => GenerateLoop, "generate_loop", Error;
    /// More packets generated in one batch than the generated queue holds.
    25 => GenerateOverflow, "generate_overflow", Error;
    /// Arrived on a port the cross-connect does not connect.
    26 => NoXconnect, "no_xconnect", Info;
    /// Unicast for the port it came in on, and that port is not in hairpin mode
    /// (Linux `br_forward`: `should_deliver()` is false).
    27 => BridgeSamePort, "bridge_same_port", Info;
    /// A flood found no port to go to: the ingress port is alone in its domain.
    28 => BridgeNoPort, "bridge_no_port", Info;
    /// An ARP request for an address the node does not own or proxy.
    29 => ArpNotForUs, "arp_not_for_us", Info;
    /// An ARP reply or announcement addressed to the node: consumed (VPP counts these
    /// as "ARP replies received" the same way).
    30 => ArpProcessed, "arp_processed", Info;
    /// No route to the destination (ICMP net unreachable sent).
    31 => NoRoute, "no_route", Info;
    /// TTL would reach zero (ICMP time exceeded sent).
    32 => TtlExceeded, "ttl_exceeded", Info;
    /// A blackhole route.
    33 => RouteBlackhole, "route_blackhole", Info;
    /// An unreachable route (ICMP host unreachable sent).
    34 => RouteUnreachable, "route_unreachable", Info;
    /// A prohibit route (ICMP administratively prohibited sent).
    35 => RouteProhibit, "route_prohibit", Info;
    /// Larger than the egress MTU with DF set (ICMP fragmentation needed sent).
    36 => FragNeeded, "frag_needed", Info;
    /// Larger than the egress MTU without DF, and it could not be fragmented (no
    /// buffers, or more fragments than the node makes).
    37 => FragFailed, "frag_failed", Warn;
    /// The next hop did not answer ARP or neighbour solicitations, or the neighbour
    /// table was full, or the egress interface is unknown.
    38 => NeighFailed, "neigh_failed", Warn;
    /// Waiting for ARP or neighbour discovery with the per-neighbour queue full.
    39 => NeighQueueFull, "neigh_queue_full", Warn;
    /// IPv6 with a source that must never be forwarded (unspecified, multicast,
    /// loopback), as Linux's `ip6_forward()` drops it.
    40 => Ipv6BadSource, "ipv6_bad_source", Warn;
    /// IPv6 that would leave the scope of its link-local source or destination
    /// (ICMPv6 "beyond scope of source address" sent for a link-local source).
    41 => BeyondScope, "beyond_scope", Info;
    /// IPv6 larger than the egress MTU (ICMPv6 packet too big sent; IPv6 routers never
    /// fragment).
    42 => PacketTooBig, "packet_too_big", Info;
    /// A neighbour solicitation or advertisement consumed by the neighbour stage.
    43 => NdProcessed, "nd_processed", Info;
    /// A neighbour discovery message that fails RFC 4861's checks (hop limit not 255,
    /// code not 0, too short, multicast target, bad checksum, bad option).
    44 => NdInvalid, "nd_invalid", Warn;
    /// A neighbour solicitation for an address the node does not have.
    45 => NdNotForUs, "nd_not_for_us", Info;
    /// A frame longer than the driver's buffers hold (a pcap record, a TAP read): it
    /// never reached the pipeline.
    46 => FrameTooLong, "frame_too_long", Warn;
    /// VXLAN: the outer UDP or VXLAN header, or the inner Ethernet header, is cut short.
    47 => VxlanTruncated, "vxlan_truncated", Warn;
    /// VXLAN header flags other than exactly the I flag, or reserved bits set (Linux's
    /// `vxlan_rcv()` drops these when no extension is configured).
    48 => VxlanBadFlags, "vxlan_bad_flags", Warn;
    /// VXLAN with a VNI the node does not use.
    49 => VxlanUnknownVni, "vxlan_unknown_vni", Warn;
    /// Encapsulated traffic (IP-in-IP) from an address that is not a peer node (Calico
    /// accepts IPIP only from node addresses).
    50 => OverlayUnknownPeer, "overlay_unknown_peer", Warn;
    /// Routed into the tunnel towards a next hop that is not in the peer table.
    51 => OverlayNoPeer, "overlay_no_peer", Warn;
    /// Would be encapsulated to the node's own underlay address (a loop).
    52 => OverlayLoop, "overlay_loop", Error;
    /// An outer packet that is a fragment: the node does not reassemble tunnels.
    53 => OverlayFragment, "overlay_fragment", Warn;
    /// A decapsulated frame whose destination MAC is not the node's tunnel MAC (the
    /// kernel's vxlan device drops it as PACKET_OTHERHOST before IP).
    54 => OverlayNotForUs, "overlay_not_for_us", Info;
    /// No room in front of the packet for the outer headers.
    55 => EncapNoHeadroom, "encap_no_headroom", Error;
    /// Conntrack: INVALID (an impossible TCP transition, out of window, a flag
    /// combination Linux rejects, a TCP segment that cannot start a connection).
    /// kube-proxy drops `ctstate INVALID` so that such packets never leave
    /// untranslated (kubernetes#74839).
    56 => CtInvalid, "ct_invalid", Warn;
    /// Conntrack: a new connection with the table full of connections that may not be
    /// dropped early (established ones are never evicted).
    57 => CtTableFull, "ct_table_full", Warn;
    /// Conntrack: a new connection whose tuple a live connection already has.
    58 => CtClash, "ct_clash", Warn;
    /// NAT: no free port (or identifier) for a new connection's translated tuple
    /// (cilium#23604's SNAT exhaustion); a live tuple is never reused.
    59 => NatPortExhausted, "nat_port_exhausted", Warn;
    /// NAT: masquerade with no address to translate to on the egress port.
    60 => NatNoAddress, "nat_no_address", Warn;
    /// NAT: the headers to rewrite are not where parsing left them (a quoted packet
    /// cut short).
    61 => NatMalformed, "nat_malformed", Warn;
    /// A pod port's packet from an address that is not the pod's (an IPv4 source, an
    /// ARP sender).
    62 => SpoofedSource, "spoofed_source", Warn;
    /// Conntrack: a later IPv4 fragment whose first fragment was not seen (its ports,
    /// and so its connection, are unknown).
    63 => CtFragmentUnknown, "ct_fragment_unknown", Warn;
    /// Services: a new connection to a service with no ready or serving endpoints,
    /// rejected with ICMP port unreachable (kube-proxy's `no-endpoint-services` map and
    /// `reject-chain`).
    64 => SvcNoEndpoints, "svc_no_endpoints", Info;
    /// Services: a new connection to a ClusterIP on a port or protocol it does not
    /// serve, rejected with ICMP port unreachable (kube-proxy's `cluster-ips-check`).
    65 => SvcPortUnknown, "svc_port_unknown", Info;
    /// Services: a new connection to an address of the service CIDR that no service
    /// has (kube-proxy's `cluster-ips-check` drop).
    66 => SvcUnallocated, "svc_unallocated", Info;
    /// Services: traffic policy `Local` and no endpoint on this node (kube-proxy
    /// drops it; the client is expected to try another node).
    67 => SvcNoLocalEndpoints, "svc_no_local_endpoints", Info;
    /// A unicast frame on a routed port addressed to another host's MAC (a shared
    /// segment's traffic): the kernel's `PACKET_OTHERHOST` drop in `ip_rcv()`.
    68 => OtherHost, "other_host", Info;
    /// Services: a new connection to a LoadBalancer IP from a source outside its
    /// `loadBalancerSourceRanges` (kube-proxy's `firewall-ips` drop).
    69 => SvcSourceRange, "svc_source_range", Info;
}

impl DropReason {
    /// The stable numeric code.
    #[inline]
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// Dense index into counter arrays (`code - 1`).
    #[inline]
    pub const fn index(self) -> usize {
        self as usize - 1
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_unique_and_names_snake_case() {
        assert_eq!(DropReason::COUNT, DropReason::ALL.len());
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r} is out of order");
            assert!(r.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(!r.description().is_empty() && !r.description().starts_with(' '));
        }
        assert_eq!(DropReason::Ipv4BadChecksum.as_str(), "ipv4_bad_checksum");
        assert_eq!(DropReason::Ipv4BadChecksum.code(), 11);
    }
}
