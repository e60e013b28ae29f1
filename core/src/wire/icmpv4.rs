//! ICMPv4 (RFC 792): message types, and the checksum over the message alone (no
//! pseudo-header). The view and value are the shared [`IcmpPacket`] and [`IcmpRepr`].

use super::icmp::IcmpRepr;
pub use super::icmp::{HEADER_LEN, IcmpPacket};

enum_with_unknown! {
    /// ICMPv4 message types the node reads or writes.
    pub enum Icmpv4Type(u8) {
        /// Echo reply.
        EchoReply = 0,
        /// Destination unreachable (code 4: fragmentation needed, MTU in bytes 6..8).
        DstUnreachable = 3,
        /// Redirect.
        Redirect = 5,
        /// Echo request.
        EchoRequest = 8,
        /// Time exceeded.
        TimeExceeded = 11,
        /// Parameter problem.
        ParamProblem = 12,
    }
}

impl Icmpv4Type {
    /// Error messages quote the packet that caused them (RFC 1122 3.2.2): conntrack
    /// treats them as RELATED to the quoted connection.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Icmpv4Type::DstUnreachable | Icmpv4Type::Redirect | Icmpv4Type::TimeExceeded | Icmpv4Type::ParamProblem
        )
    }
}

/// An ICMPv4 header value.
pub type Icmpv4Repr = IcmpRepr<Icmpv4Type>;

/// Destination-unreachable codes (RFC 792, RFC 1812 5.2.7.1).
pub mod unreachable {
    /// Net unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Protocol unreachable.
    pub const PROTOCOL: u8 = 2;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set.
    pub const FRAG_NEEDED: u8 = 4;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 13;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::Sum;

    // `ping` echo request id 0x1234 seq 1 with 4 data bytes "abcd"; checksum 0x2104
    // computed independently (Python word sum over the 12 bytes).
    static ECHO: [u8; 12] = [8, 0, 0x21, 0x04, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd'];

    #[test]
    fn golden_echo_request() {
        let p = IcmpPacket::new_checked(&ECHO[..]).unwrap();
        assert!(p.verify_checksum(Sum::new()));
        let r = Icmpv4Repr::parse(&p);
        assert_eq!(r, Icmpv4Repr::echo(Icmpv4Type::EchoRequest, 0x1234, 1));
        assert!(!r.msg_type.is_error());
        let mut out = ECHO;
        out[..8].fill(0);
        r.emit(&mut out, Sum::new()).unwrap();
        assert_eq!(out, ECHO);
    }
}
