//! ARP for IPv4 over Ethernet (RFC 826): the only hardware/protocol pair a node sees.
//!
//! ```text
//!  0       2       4   5   6       8                14          18                24          28
//!  | htype | ptype |hln|pln|  oper | sender MAC      | sender IP | target MAC      | target IP |
//! ```
//! Other hardware or protocol types parse as [`WireError::Unsupported`].

use core::fmt;
use std::net::Ipv4Addr;

use super::ethernet::EthernetAddress;
use super::{Result, WireError, be16, put16};

mod field {
    pub(super) const HTYPE: usize = 0;
    pub(super) const PTYPE: usize = 2;
    pub(super) const HLEN: usize = 4;
    pub(super) const PLEN: usize = 5;
    pub(super) const OPER: usize = 6;
    pub(super) const SHA: usize = 8;
    pub(super) const SPA: usize = 14;
    pub(super) const THA: usize = 18;
    pub(super) const TPA: usize = 24;
    pub(super) const END: usize = 28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::END;

enum_with_unknown! {
    /// ARP operation.
    pub enum ArpOperation(u16) {
        /// Who has.
        Request = 1,
        /// Is at.
        Reply = 2,
    }
}

view! {
/// A view of an ARP packet.
    ArpPacket
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Check 28 bytes are present and the packet is Ethernet (1) / IPv4 (0x0800) with
    /// address lengths 6 and 4.
    ///
    /// # Errors
    /// [`WireError::Truncated`] under 28 bytes; [`WireError::Unsupported`] for other
    /// hardware or protocol types.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if be16(b, field::HTYPE) != 1 || be16(b, field::PTYPE) != 0x0800 || b[field::HLEN] != 6 || b[field::PLEN] != 4 {
            return Err(WireError::Unsupported);
        }
        Ok(())
    }

    /// Operation.
    #[inline]
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(be16(self.buffer.as_ref(), field::OPER))
    }

    /// Sender hardware address.
    #[inline]
    pub fn sender_mac(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::SHA..])
    }

    /// Sender protocol address.
    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[field::SPA], b[field::SPA + 1], b[field::SPA + 2], b[field::SPA + 3])
    }

    /// Target hardware address.
    #[inline]
    pub fn target_mac(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::THA..])
    }

    /// Target protocol address.
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[field::TPA], b[field::TPA + 1], b[field::TPA + 2], b[field::TPA + 3])
    }
}

/// The value of an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    /// Operation.
    pub operation: ArpOperation,
    /// Sender MAC.
    pub sender_mac: EthernetAddress,
    /// Sender IP.
    pub sender_ip: Ipv4Addr,
    /// Target MAC (zero in a request, as Linux sends it).
    pub target_mac: EthernetAddress,
    /// Target IP.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Read a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Self {
        ArpRepr {
            operation: p.operation(),
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        }
    }

    /// Bytes the packet takes.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Write the packet into the first 28 bytes of `buf`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let b = buf.get_mut(..PACKET_LEN).ok_or(WireError::Truncated)?;
        put16(b, field::HTYPE, 1);
        put16(b, field::PTYPE, 0x0800);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        put16(b, field::OPER, self.operation.into());
        b[field::SHA..field::SHA + 6].copy_from_slice(&self.sender_mac.0);
        b[field::SPA..field::SPA + 4].copy_from_slice(&self.sender_ip.octets());
        b[field::THA..field::THA + 6].copy_from_slice(&self.target_mac.0);
        b[field::TPA..field::TPA + 4].copy_from_slice(&self.target_ip.octets());
        Ok(())
    }
}

impl<T: AsRef<[u8]>> fmt::Display for ArpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operation() {
            ArpOperation::Request => write!(f, "ARP who-has {} tell {}", self.target_ip(), self.sender_ip()),
            ArpOperation::Reply => write!(f, "ARP {} is-at {}", self.sender_ip(), self.sender_mac()),
            ArpOperation::Unknown(op) => write!(f, "ARP op {op} {} > {}", self.sender_ip(), self.target_ip()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Request "who-has 10.0.0.2 tell 10.0.0.1" as RFC 826 lays it out byte by byte.
    static REQUEST: [u8; 28] = [0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2];

    #[test]
    fn golden_request() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        let r = ArpRepr::parse(&p);
        assert_eq!(r.operation, ArpOperation::Request);
        assert_eq!(p.to_string(), "ARP who-has 10.0.0.2 tell 10.0.0.1");
        let mut out = [0u8; 28];
        r.emit(&mut out).unwrap();
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn other_hardware_is_unsupported() {
        let mut b = REQUEST;
        b[1] = 6; // IEEE 802
        assert_eq!(ArpPacket::new_checked(&b[..]).unwrap_err(), WireError::Unsupported);
        assert_eq!(ArpPacket::new_checked(&REQUEST[..27]).unwrap_err(), WireError::Truncated);
    }
}
