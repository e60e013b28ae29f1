//! IPv6 headers (RFC 8200) and the walk over extension headers to the transport.
//!
//! ```text
//!  0       4               12      16              24              31
//!  +-------+---------------+-------------------------------+-------+
//!  |version| traffic class |          flow label                   |
//!  +-------+---------------+---------------+---------------+-------+
//!  |        payload length         |  next header  |   hop limit   |
//!  +-------------------------------+---------------+---------------+
//!  |                 source address (16 bytes)                      |
//!  |               destination address (16 bytes)                   |
//!  +----------------------------------------------------------------+
//! ```
//! [`Ipv6Packet::transport`] skips hop-by-hop, routing, fragment, destination-options
//! and AH headers (at most [`MAX_EXT_HEADERS`] of them, so a crafted chain cannot make
//! the walk long) and stops at a later fragment, which has no transport header.
//! Jumbograms (payload length 0 with a jumbo option) are not supported: Linux accepts
//! them only with BIG TCP on the receiving device.

use core::fmt;
use std::net::Ipv6Addr;

use super::ip::IpProtocol;
use super::{Result, WireError, be16, put16};

mod field {
    pub(super) const VER_TC_FL: usize = 0;
    pub(super) const LENGTH: usize = 4;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: usize = 8;
    pub(super) const DST: usize = 24;
    pub(super) const PAYLOAD: usize = 40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Most extension headers [`Ipv6Packet::transport`] will skip.
pub const MAX_EXT_HEADERS: usize = 8;

/// Where the transport header is, as found by [`Ipv6Packet::transport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Transport {
    /// The upper-layer protocol (after the extension headers).
    pub protocol: IpProtocol,
    /// Offset of the transport header from the start of the IPv6 header.
    pub offset: usize,
    /// A fragment header was present.
    pub fragment: bool,
    /// The fragment offset was non-zero: the transport header is in another fragment.
    pub later_fragment: bool,
}

view! {
/// A view of an IPv6 packet.
    Ipv6Packet
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Check the fixed header and the payload length against the buffer.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than 40 bytes plus the payload
    /// length; [`WireError::BadVersion`] unless version 6.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_TC_FL] >> 4 != 6 {
            return Err(WireError::BadVersion);
        }
        if b.len() < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        let b = self.buffer.as_ref();
        (u32::from(b[1] & 0x0f) << 16) | u32::from(be16(b, 2))
    }

    /// Payload length field (everything after the fixed header).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header of the fixed header.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC..field::SRC + 16]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST..field::DST + 16]);
        Ipv6Addr::from(a)
    }

    /// The payload after the fixed header, up to the payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }

    /// Walk the extension headers to the transport header.
    ///
    /// # Errors
    /// [`WireError::Truncated`] when an extension header runs past the payload;
    /// [`WireError::Unsupported`] after [`MAX_EXT_HEADERS`] extension headers.
    pub fn transport(&self) -> Result<Ipv6Transport> {
        // Bounded by the buffer too, so that a capture cut short (a trace snapshot,
        // pcap snaplen) can be walked as far as it goes without the full check_len.
        let b = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(b.len());
        let payload = b.get(HEADER_LEN..end).unwrap_or(&[]);
        let mut proto = self.next_header();
        let mut off = 0usize;
        let mut fragment = false;
        for _ in 0..=MAX_EXT_HEADERS {
            let len = match proto {
                IpProtocol::HopByHop | IpProtocol::Routing | IpProtocol::DstOpts => {
                    let l = payload.get(off + 1).ok_or(WireError::Truncated)?;
                    (usize::from(*l) + 1) * 8
                }
                // RFC 4302 2.2: AH length is in 4-byte units, minus 2.
                IpProtocol::Ah => {
                    let l = payload.get(off + 1).ok_or(WireError::Truncated)?;
                    (usize::from(*l) + 2) * 4
                }
                IpProtocol::Fragment => {
                    let h = payload.get(off..off + 8).ok_or(WireError::Truncated)?;
                    fragment = true;
                    let offset_mf = be16(h, 2);
                    if offset_mf & 0xfff8 != 0 {
                        return Ok(Ipv6Transport {
                            protocol: IpProtocol::from(h[0]),
                            offset: HEADER_LEN + off + 8,
                            fragment,
                            later_fragment: true,
                        });
                    }
                    8
                }
                _ => {
                    return Ok(Ipv6Transport {
                        protocol: proto,
                        offset: HEADER_LEN + off,
                        fragment,
                        later_fragment: false,
                    });
                }
            };
            let next = *payload.get(off).ok_or(WireError::Truncated)?;
            if off + len > payload.len() {
                return Err(WireError::Truncated);
            }
            proto = IpProtocol::from(next);
            off += len;
        }
        Err(WireError::Unsupported)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Set version 6, traffic class and flow label.
    #[inline]
    pub fn set_version_tc_flow(&mut self, tc: u8, flow: u32) {
        let v = (6u32 << 28) | (u32::from(tc) << 20) | (flow & 0x000f_ffff);
        self.buffer.as_mut()[..4].copy_from_slice(&v.to_be_bytes());
    }

    /// Set the payload length. Invalidates the `check_len` guarantee.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Set the next header.
    #[inline]
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = p.into();
    }

    /// Set the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Set the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&a.octets());
    }

    /// Set the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 16].copy_from_slice(&a.octets());
    }
}

/// The value of an IPv6 fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: IpProtocol,
    /// Payload length.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Read a checked packet's fixed header.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Self {
        Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        }
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize
    }

    /// Write the fixed header into the start of `buf`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `buf` is shorter than 40 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        let b = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        let mut p = Ipv6Packet::new_unchecked(b);
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        Ok(())
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Ipv6Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IP6 {} > {} {:?} hlim {} plen {}",
            self.src_addr(),
            self.dst_addr(),
            self.next_header(),
            self.hop_limit(),
            self.payload_len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, ext: &[u8], transport: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        let repr = Ipv6Repr {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            next_header: IpProtocol::from(next),
            payload_len: u16::try_from(ext.len() + transport.len()).unwrap(),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0x12345,
        };
        repr.emit(&mut b).unwrap();
        b.extend_from_slice(ext);
        b.extend_from_slice(transport);
        b
    }

    #[test]
    fn walks_hop_by_hop_and_dst_opts_to_udp() {
        // hop-by-hop (next 60, len 0 = 8 bytes), dst opts (next 17, len 1 = 16 bytes).
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let b = packet(0, &ext, &[0u8; 8]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.flow_label(), 0x12345);
        let t = p.transport().unwrap();
        assert_eq!(t, Ipv6Transport { protocol: IpProtocol::Udp, offset: 64, fragment: false, later_fragment: false });
    }

    #[test]
    fn later_fragment_has_no_transport() {
        // fragment header: next 6 (TCP), offset 8 bytes (field 0x0008 << 0 = 1 unit)
        let ext = [6, 0, 0x00, 0x08, 0, 0, 0, 1];
        let b = packet(44, &ext, &[0u8; 16]);
        let t = Ipv6Packet::new_checked(&b[..]).unwrap().transport().unwrap();
        assert!(t.fragment && t.later_fragment);
        assert_eq!(t.protocol, IpProtocol::Tcp);
    }

    #[test]
    fn truncated_or_endless_chains_are_errors() {
        let b = packet(0, &[60, 5, 0, 0], &[]);
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().transport(), Err(WireError::Truncated));
        let mut ext = Vec::new();
        for _ in 0..=MAX_EXT_HEADERS {
            ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let b = packet(60, &ext, &[]);
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap().transport(), Err(WireError::Unsupported));
        let b = packet(17, &[], &[0; 8]);
        assert_eq!(Ipv6Packet::new_checked(&b[..b.len() - 1]).unwrap_err(), WireError::Truncated);
    }
}
