//! VXLAN headers (RFC 7348 section 5).
//!
//! ```text
//!  0       8                               31
//!  +-------+-------------------------------+
//!  |R|R|R|R|I|R|R|R|     reserved          |
//!  +---------------------------------------+
//!  |     VXLAN network identifier  | rsvd  |
//!  +---------------------------------------+
//! ```
//! The I flag must be set and the other bits are sent as zero. RFC 7348 says to ignore
//! reserved bits on receive; Linux's `vxlan_rcv()` drops a packet with any flag but I
//! or a reserved bit set unless an extension (GBP, GPE, RCO) claims it, and the `decap`
//! stage does as Linux. This view checks only the I flag.

use core::fmt;

use super::{Result, WireError};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// Linux's and Flannel's default UDP port (pre-IANA).
pub const PORT_LINUX: u16 = 8472;
/// IANA's VXLAN port (RFC 7348).
pub const PORT_IANA: u16 = 4789;

view! {
/// A view of a VXLAN header and the inner frame after it.
    VxlanPacket
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Check the header fits and the I flag is set.
    ///
    /// # Errors
    /// [`WireError::Truncated`] under 8 bytes; [`WireError::Malformed`] without the I flag.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] & FLAG_I == 0 {
            return Err(WireError::Malformed);
        }
        Ok(())
    }

    /// The 24-bit VNI.
    #[inline]
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// The value of a VXLAN header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanRepr {
    /// The VNI (24 bits).
    pub vni: u32,
}

impl VxlanRepr {
    /// Read a checked header.
    pub fn parse<T: AsRef<[u8]>>(p: &VxlanPacket<T>) -> Self {
        VxlanRepr { vni: p.vni() }
    }

    /// Write the header (I flag, VNI, reserved bits zero) into the first 8 bytes.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `buf` is shorter; [`WireError::Malformed`] for a VNI
    /// over 24 bits.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        if self.vni > 0x00ff_ffff {
            return Err(WireError::Malformed);
        }
        let b = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        let v = self.vni.to_be_bytes();
        b.copy_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
        Ok(())
    }
}

impl<T: AsRef<[u8]>> fmt::Display for VxlanPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VXLAN vni {}", self.vni())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flannel_vni_1_and_calico_4096() {
        let mut b = [0u8; 8];
        VxlanRepr { vni: 1 }.emit(&mut b).unwrap();
        assert_eq!(b, [0x08, 0, 0, 0, 0, 0, 1, 0]);
        VxlanRepr { vni: 4096 }.emit(&mut b).unwrap();
        assert_eq!(b, [0x08, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(VxlanPacket::new_checked(&b[..]).unwrap().vni(), 4096);
        assert_eq!(VxlanRepr { vni: 1 << 24 }.emit(&mut b), Err(WireError::Malformed));
        b[0] = 0;
        assert_eq!(VxlanPacket::new_checked(&b[..]).unwrap_err(), WireError::Malformed);
    }
}
