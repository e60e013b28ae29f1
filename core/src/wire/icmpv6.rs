//! ICMPv6 (RFC 4443) and the neighbour-discovery types (RFC 4861); the checksum
//! covers the IPv6 pseudo-header. The view and value are the shared [`IcmpPacket`]
//! and [`IcmpRepr`].

use super::icmp::IcmpRepr;
pub use super::icmp::{HEADER_LEN, IcmpPacket};

enum_with_unknown! {
    /// ICMPv6 message types the node reads or writes.
    pub enum Icmpv6Type(u8) {
        /// Destination unreachable.
        DstUnreachable = 1,
        /// Packet too big (MTU in bytes 4..8).
        PacketTooBig = 2,
        /// Time exceeded.
        TimeExceeded = 3,
        /// Parameter problem.
        ParamProblem = 4,
        /// Echo request.
        EchoRequest = 128,
        /// Echo reply.
        EchoReply = 129,
        /// Router solicitation.
        RouterSolicit = 133,
        /// Router advertisement.
        RouterAdvert = 134,
        /// Neighbour solicitation.
        NeighborSolicit = 135,
        /// Neighbour advertisement.
        NeighborAdvert = 136,
        /// Redirect.
        Redirect = 137,
    }
}

impl Icmpv6Type {
    /// Types below 128 are errors (RFC 4443 2.1) and quote the offending packet.
    pub fn is_error(self) -> bool {
        u8::from(self) < 128
    }
}

/// An ICMPv6 header value.
pub type Icmpv6Repr = IcmpRepr<Icmpv6Type>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::pseudo_v6;
    use std::net::Ipv6Addr;

    #[test]
    fn echo_checksum_covers_the_pseudo_header() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let pseudo = pseudo_v6(s, d, 58, 12);
        let mut b = [0u8; 12];
        b[8..].copy_from_slice(b"abcd");
        Icmpv6Repr::echo(Icmpv6Type::EchoRequest, 7, 9).emit(&mut b, pseudo).unwrap();
        let p = IcmpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(pseudo));
        assert!(!p.verify_checksum(pseudo_v6(d, d, 58, 12)));
        assert_eq!((p.echo_ident(), p.echo_seq()), (7, 9));
        assert!(Icmpv6Type::PacketTooBig.is_error() && !Icmpv6Type::NeighborSolicit.is_error());
    }
}
