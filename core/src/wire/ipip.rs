//! IP-in-IP: an IPv4 outer header with protocol 4 carrying IPv4 (RFC 2003, Calico's
//! IPIP mode) or protocol 41 carrying IPv6 (RFC 4213 3.5, "sit"). There is no header
//! of its own: this module finds the inner packet and writes the outer header.
//!
//! The outer header follows Linux's `ipip` device defaults: TTL inherited from the
//! tunnel setting (Calico's `tunl0` uses `ttl inherit` = the inner TTL), DF copied from
//! the inner packet when PMTU discovery is on, TOS copied (`tos inherit`). The caller
//! chooses; [`outer_repr`] takes the values.

use std::net::Ipv4Addr;

use super::ip::IpProtocol;
use super::ipv4::{Ipv4Packet, Ipv4Repr};
use super::ipv6::Ipv6Packet;
use super::{Result, WireError};

/// Bytes IPIP adds in front of the inner packet.
pub const OVERHEAD: usize = super::ipv4::HEADER_LEN;

/// The packet inside an IPIP outer header.
#[derive(Clone, Copy, Debug)]
pub enum InnerPacket<'a> {
    /// Protocol 4.
    V4(Ipv4Packet<&'a [u8]>),
    /// Protocol 41.
    V6(Ipv6Packet<&'a [u8]>),
}

/// The checked inner packet of a checked outer IPv4 packet.
///
/// # Errors
/// [`WireError::Unsupported`] unless the outer protocol is 4 or 41; otherwise the
/// inner header's own `check_len` error. An inner packet whose version does not match
/// the outer protocol is [`WireError::BadVersion`].
pub fn inner<'a>(outer: &Ipv4Packet<&'a [u8]>) -> Result<InnerPacket<'a>> {
    let b: &'a [u8] = outer.into_inner();
    let hl = outer.header_len();
    let payload = b.get(hl..usize::from(outer.total_len())).ok_or(WireError::Truncated)?;
    match outer.protocol() {
        IpProtocol::IpIp => Ipv4Packet::new_checked(payload).map(InnerPacket::V4),
        IpProtocol::Ipv6 => Ipv6Packet::new_checked(payload).map(InnerPacket::V6),
        _ => Err(WireError::Unsupported),
    }
}

/// The outer header for an inner packet of `inner_len` bytes and IP version
/// `inner_v6`, from `src` to `dst` with the given TTL, TOS and DF.
///
/// # Errors
/// [`WireError::BadLength`] if the result would exceed 65535 bytes.
pub fn outer_repr(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    inner_v6: bool,
    inner_len: usize,
    ttl: u8,
    tos: u8,
    dont_frag: bool,
) -> Result<Ipv4Repr> {
    let len = u16::try_from(inner_len).map_err(|_| WireError::BadLength)?;
    if usize::from(len) + OVERHEAD > usize::from(u16::MAX) {
        return Err(WireError::BadLength);
    }
    let proto = if inner_v6 { IpProtocol::Ipv6 } else { IpProtocol::IpIp };
    let mut r = Ipv4Repr::new(src, dst, proto, len, ttl);
    r.dscp_ecn = tos;
    r.dont_frag = dont_frag;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encap_then_find_inner() {
        let inner_repr =
            Ipv4Repr::new(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 3), IpProtocol::Udp, 0, 63);
        let mut b = vec![0u8; 40];
        inner_repr.emit(&mut b[20..]).unwrap();
        let o = outer_repr(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2), false, 20, 63, 0, true).unwrap();
        o.emit(&mut b).unwrap();
        let outer = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(outer.protocol(), IpProtocol::IpIp);
        match inner(&outer).unwrap() {
            InnerPacket::V4(p) => assert_eq!(Ipv4Repr::parse(&p), inner_repr),
            InnerPacket::V6(_) => panic!("expected IPv4 inside"),
        }
        // An IPv4 packet labelled as protocol 41 is rejected by the IPv6 check.
        let o6 = outer_repr(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2), true, 20, 63, 0, true).unwrap();
        o6.emit(&mut b).unwrap();
        assert_eq!(inner(&Ipv4Packet::new_checked(&b[..]).unwrap()).unwrap_err(), WireError::Truncated);
    }
}
