//! IP protocol numbers (IANA "Assigned Internet Protocol Numbers"), shared by the
//! IPv4 protocol field and the IPv6 next-header chain.

enum_with_unknown! {
    /// An IP protocol / IPv6 next-header value.
    pub enum IpProtocol(u8) {
        /// IPv6 hop-by-hop options.
        HopByHop = 0,
        /// ICMP.
        Icmp = 1,
        /// IPv4 in IP (IPIP, RFC 2003).
        IpIp = 4,
        /// TCP.
        Tcp = 6,
        /// UDP.
        Udp = 17,
        /// IPv6 in IP (RFC 4213 section 3.5).
        Ipv6 = 41,
        /// IPv6 routing header.
        Routing = 43,
        /// IPv6 fragment header.
        Fragment = 44,
        /// GRE.
        Gre = 47,
        /// IPsec ESP.
        Esp = 50,
        /// IPsec AH.
        Ah = 51,
        /// ICMPv6.
        Icmpv6 = 58,
        /// IPv6 no next header.
        NoNext = 59,
        /// IPv6 destination options.
        DstOpts = 60,
        /// SCTP.
        Sctp = 132,
    }
}

impl IpProtocol {
    /// The transport protocols whose first four bytes are source and destination ports.
    #[inline]
    pub fn has_ports(self) -> bool {
        matches!(self, IpProtocol::Tcp | IpProtocol::Udp | IpProtocol::Sctp)
    }
}
