//! UDP (RFC 768) with the checksum rules of both IP versions.
//!
//! ```text
//!  0              16             31
//!  +--------------+--------------+
//!  | source port  |  dest port   |
//!  +--------------+--------------+
//!  |   length     |  checksum    |
//!  +--------------+--------------+
//! ```
//! Over IPv4 a zero checksum means "none" (RFC 768) and a computed zero is sent as
//! 0xffff. Over IPv6 a zero checksum is invalid (RFC 8200 8.1; the RFC 6935 tunnel
//! exception is not taken, as Linux does not take it by default).

use core::fmt;

use super::checksum::Sum;
use super::{Result, WireError, be16, put16};

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const LENGTH: usize = 4;
    pub(super) const CHECKSUM: usize = 6;
    pub(super) const PAYLOAD: usize = 8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

view! {
/// A view of a UDP datagram.
    UdpPacket
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Check the header fits and the length field is in 8..=buffer length.
    ///
    /// # Errors
    /// [`WireError::Truncated`] under 8 bytes or when the buffer is shorter than the
    /// length field; [`WireError::BadLength`] when the length field is under 8.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let l = usize::from(self.len());
        if l < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if l > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header plus payload).
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True when the length field says no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Verify the checksum given the pseudo-header sum. `ipv4` applies the zero rule.
    #[inline]
    pub fn verify_checksum(&self, pseudo: Sum, ipv4: bool) -> bool {
        if self.checksum() == 0 {
            return ipv4;
        }
        let mut s = pseudo;
        s.add_bytes(&self.buffer.as_ref()[..usize::from(self.len())]);
        s.fold() == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Set the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Set the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Set the length field. Invalidates the `check_len` guarantee.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Compute and set the checksum given the pseudo-header sum (a zero result is sent
    /// as 0xffff, valid for both IP versions).
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: Sum) {
        self.set_checksum(0);
        let mut s = pseudo;
        let l = usize::from(self.len()).min(self.buffer.as_ref().len());
        s.add_bytes(&self.buffer.as_ref()[..l]);
        let c = match s.checksum() {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let l = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..l]
    }
}

/// The value of a UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Read a checked datagram.
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> Self {
        UdpRepr { src_port: p.src_port(), dst_port: p.dst_port() }
    }

    /// Write the header for `payload_len` bytes of payload, which must already be in
    /// place after the header, and the checksum over the pseudo-header `pseudo`
    /// (`None` leaves it 0: allowed only over IPv4).
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `buf` is shorter than header plus payload;
    /// [`WireError::BadLength`] above 65535 bytes.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize, pseudo: Option<Sum>) -> Result<()> {
        let total = HEADER_LEN + payload_len;
        let len = u16::try_from(total).map_err(|_| WireError::BadLength)?;
        let b = buf.get_mut(..total).ok_or(WireError::Truncated)?;
        let mut p = UdpPacket::new_unchecked(b);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len);
        match pseudo {
            Some(s) => p.fill_checksum(s),
            None => p.set_checksum(0),
        }
        Ok(())
    }
}

impl<T: AsRef<[u8]>> fmt::Display for UdpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UDP {} > {} len {}", self.src_port(), self.dst_port(), self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::pseudo_v4;
    use std::net::Ipv4Addr;

    // UDP 1234 > 53, payload "hi", between 10.0.0.1 and 10.0.0.2. Checksum 0x7e67
    // computed independently (Python: pseudo-header + header + payload word sum).
    static DGRAM: [u8; 10] = [0x04, 0xd2, 0x00, 0x35, 0x00, 0x0a, 0x7e, 0x67, b'h', b'i'];

    fn pseudo() -> Sum {
        pseudo_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, 10)
    }

    #[test]
    fn golden_datagram_verifies_and_reemits() {
        let p = UdpPacket::new_checked(&DGRAM[..]).unwrap();
        assert!(p.verify_checksum(pseudo(), true));
        assert_eq!(p.payload(), b"hi");
        let mut out = [0u8; 10];
        out[8..].copy_from_slice(b"hi");
        UdpRepr::parse(&p).emit(&mut out, 2, Some(pseudo())).unwrap();
        assert_eq!(out, DGRAM);
    }

    #[test]
    fn zero_checksum_rule_depends_on_ip_version() {
        let mut d = DGRAM;
        d[6] = 0;
        d[7] = 0;
        let p = UdpPacket::new_checked(&d[..]).unwrap();
        assert!(p.verify_checksum(pseudo(), true));
        assert!(!p.verify_checksum(pseudo(), false));
    }

    #[test]
    fn length_field_is_checked() {
        let mut d = DGRAM;
        d[5] = 7;
        assert_eq!(UdpPacket::new_checked(&d[..]).unwrap_err(), WireError::BadLength);
        d[5] = 11;
        assert_eq!(UdpPacket::new_checked(&d[..]).unwrap_err(), WireError::Truncated);
    }
}
