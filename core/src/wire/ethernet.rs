//! Ethernet II frames with an optional 802.1Q / 802.1ad tag.
//!
//! ```text
//!  0                   6                   12      14      16      18
//!  +-------------------+-------------------+-------+-------+-------+------
//!  | destination MAC   | source MAC        | type  | payload ...
//!  +-------------------+-------------------+-------+-------+-------+------
//!  tagged:                                 | 8100  | TCI   | type  | payload
//! ```
//! One tag is interpreted (PCP/DEI/VID in the TCI). A second tag (QinQ) is left in the
//! payload: the frame then has EtherType 0x8100 and no network layer for the node,
//! which still bridges it.

use core::fmt;

use super::{Result, WireError, be16, put16};

mod field {
    use core::ops::Range;
    pub(super) const DST: Range<usize> = 0..6;
    pub(super) const SRC: Range<usize> = 6..12;
    pub(super) const ETHERTYPE: usize = 12;
    pub(super) const TCI: usize = 14;
    pub(super) const INNER_ETHERTYPE: usize = 16;
}

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = field::ETHERTYPE + 2;
/// Length of an Ethernet header with one 802.1Q tag.
pub const TAGGED_HEADER_LEN: usize = field::INNER_ETHERTYPE + 2;

enum_with_unknown! {
    /// EtherType values the node looks at.
    pub enum EtherType(u16) {
        /// IPv4.
        Ipv4 = 0x0800,
        /// ARP.
        Arp = 0x0806,
        /// IPv6.
        Ipv6 = 0x86dd,
        /// 802.1Q VLAN tag.
        Vlan = 0x8100,
        /// 802.1ad service tag.
        QinQ = 0x88a8,
    }
}

/// A MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// The address from the first six bytes of `b` (`b.len() >= 6`).
    #[inline]
    pub fn from_bytes(b: &[u8]) -> Self {
        let mut a = [0u8; 6];
        a.copy_from_slice(&b[..6]);
        EthernetAddress(a)
    }

    /// The group bit is set (broadcast is multicast too).
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// ff:ff:ff:ff:ff:ff.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Neither multicast nor broadcast.
    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl core::str::FromStr for EthernetAddress {
    type Err = ();

    /// Six hex bytes separated by `:` or `-` (`02:00:c0:a8:00:0b`), as `ip link` prints.
    fn from_str(s: &str) -> core::result::Result<Self, ()> {
        let mut a = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut a {
            let p = parts.next().ok_or(())?;
            if p.is_empty() || p.len() > 2 {
                return Err(());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| ())?;
        }
        if parts.next().is_some() {
            return Err(());
        }
        Ok(EthernetAddress(a))
    }
}

view! {
/// A view of an Ethernet frame.
    EthernetFrame
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Check the buffer holds the whole header, including an 802.1Q tag if present.
    ///
    /// # Errors
    /// [`WireError::Truncated`] otherwise.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() { Err(WireError::Truncated) } else { Ok(()) }
    }

    /// Destination MAC.
    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::DST])
    }

    /// Source MAC.
    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::SRC])
    }

    /// The EtherType field at offset 12 (0x8100 for a tagged frame).
    #[inline]
    pub fn outer_ethertype(&self) -> EtherType {
        EtherType::from(be16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// True when the frame carries an 802.1Q or 802.1ad tag.
    #[inline]
    pub fn is_tagged(&self) -> bool {
        matches!(self.outer_ethertype(), EtherType::Vlan | EtherType::QinQ)
    }

    /// Header length: 14, or 18 with a tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.is_tagged() { TAGGED_HEADER_LEN } else { HEADER_LEN }
    }

    /// The tag control information of a tagged frame.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        self.is_tagged().then(|| be16(self.buffer.as_ref(), field::TCI))
    }

    /// The EtherType of the payload (after the tag, if any).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        if self.is_tagged() {
            EtherType::from(be16(self.buffer.as_ref(), field::INNER_ETHERTYPE))
        } else {
            self.outer_ethertype()
        }
    }

    /// The payload after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Set the destination MAC.
    #[inline]
    pub fn set_dst_addr(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.0);
    }

    /// Set the source MAC.
    #[inline]
    pub fn set_src_addr(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.0);
    }

    /// Set the payload EtherType (after the tag, if tagged).
    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        let at = if self.is_tagged() { field::INNER_ETHERTYPE } else { field::ETHERTYPE };
        put16(self.buffer.as_mut(), at, t.into());
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

/// The value of an Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Source MAC.
    pub src: EthernetAddress,
    /// Destination MAC.
    pub dst: EthernetAddress,
    /// 802.1Q TCI, if tagged (emitted with TPID 0x8100).
    pub vlan_tci: Option<u16>,
    /// Payload EtherType.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Read the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(f: &EthernetFrame<T>) -> Self {
        EthernetRepr { src: f.src_addr(), dst: f.dst_addr(), vlan_tci: f.vlan_tci(), ethertype: f.ethertype() }
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        if self.vlan_tci.is_some() { TAGGED_HEADER_LEN } else { HEADER_LEN }
    }

    /// Write the header into the first [`buffer_len`](Self::buffer_len) bytes of `buf`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        if buf.len() < self.buffer_len() {
            return Err(WireError::Truncated);
        }
        buf[field::DST].copy_from_slice(&self.dst.0);
        buf[field::SRC].copy_from_slice(&self.src.0);
        match self.vlan_tci {
            Some(tci) => {
                put16(buf, field::ETHERTYPE, EtherType::Vlan.into());
                put16(buf, field::TCI, tci);
                put16(buf, field::INNER_ETHERTYPE, self.ethertype.into());
            }
            None => put16(buf, field::ETHERTYPE, self.ethertype.into()),
        }
        Ok(())
    }
}

impl<T: AsRef<[u8]>> fmt::Display for EthernetFrame<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} > {}", self.src_addr(), self.dst_addr())?;
        if let Some(tci) = self.vlan_tci() {
            write!(f, " vlan {}", tci & 0x0fff)?;
        }
        match self.ethertype() {
            EtherType::Unknown(t) => write!(f, " ethertype 0x{t:04x}"),
            t => write!(f, " {t:?}"),
        }
    }
}

/// The 48 bits of a [`mac64`] word (a frame's first 8 bytes loaded little-endian and
/// masked hold its destination MAC).
pub(crate) const MAC_MASK: u64 = 0xffff_ffff_ffff;

/// A MAC as one word, to compare in one instruction (multicast: bit 0).
#[inline]
pub(crate) fn mac64(m: &[u8; 6]) -> u64 {
    let [a, b, c, d, e, f] = *m;
    u64::from_le_bytes([a, b, c, d, e, f, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tagged ARP frame: dst broadcast, src 02:00:00:00:00:01, 8100, VID 10, 0806.
    static TAGGED: [u8; 18] =
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x06];

    #[test]
    fn tagged_frame_fields() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert!(f.dst_addr().is_broadcast());
        assert_eq!(f.vlan_tci(), Some(10));
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.to_string(), "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff vlan 10 Arp");
        let mut out = [0u8; 18];
        EthernetRepr::parse(&f).emit(&mut out).unwrap();
        assert_eq!(out, TAGGED);
    }

    #[test]
    fn tag_without_room_is_truncated() {
        assert_eq!(EthernetFrame::new_checked(&TAGGED[..16]).unwrap_err(), WireError::Truncated);
        assert_eq!(EthernetFrame::new_checked(&TAGGED[..13]).unwrap_err(), WireError::Truncated);
    }
}
