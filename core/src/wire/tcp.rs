//! TCP headers (RFC 9293): ports, sequence numbers, flags, window, options length.
//!
//! ```text
//!  0              16             31
//!  +--------------+--------------+
//!  | source port  |  dest port   |
//!  |        sequence number      |
//!  |     acknowledgment number   |
//!  |off|rsvd|flags|   window     |
//!  |   checksum   | urgent ptr   |
//!  |   options (off > 5) ...     |
//!  +-----------------------------+
//! ```

use core::fmt;

use super::checksum::Sum;
use super::{HeaderOptions, Result, WireError, be16, be32, put16, put32};

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const SEQ: usize = 4;
    pub(super) const ACK: usize = 8;
    pub(super) const OFF_FLAGS: usize = 12;
    pub(super) const WINDOW: usize = 14;
    pub(super) const CHECKSUM: usize = 16;
    pub(super) const URGENT: usize = 18;
    pub(super) const OPTIONS: usize = 20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::OPTIONS;
/// Most option bytes (data offset 15).
pub const MAX_OPTIONS_LEN: usize = 40;

bitflags::bitflags! {
    /// TCP control flags (the low 9 bits of bytes 12..14; NS is the old ECN nonce).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TcpFlags: u16 {
        /// No more data from sender.
        const FIN = 0x001;
        /// Synchronise sequence numbers.
        const SYN = 0x002;
        /// Reset the connection.
        const RST = 0x004;
        /// Push.
        const PSH = 0x008;
        /// Acknowledgment field is significant.
        const ACK = 0x010;
        /// Urgent pointer is significant.
        const URG = 0x020;
        /// ECN echo.
        const ECE = 0x040;
        /// Congestion window reduced.
        const CWR = 0x080;
        /// ECN nonce (RFC 3540, historic).
        const NS = 0x100;
    }
}

view! {
/// A view of a TCP segment.
    TcpPacket
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Check the fixed header fits and the data offset is in 20..=buffer length.
    ///
    /// # Errors
    /// [`WireError::Truncated`] under 20 bytes or when the options run past the buffer;
    /// [`WireError::BadHeaderLen`] for a data offset under 5.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let h = self.header_len();
        if h < HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if h > b.len() {
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

    /// Sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_FLAGS] >> 4) * 4
    }

    /// Option bytes.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Control flags.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_bits_truncate(be16(self.buffer.as_ref(), field::OFF_FLAGS) & 0x01ff)
    }

    /// Window.
    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// Payload: everything after the header (the IP layer bounds the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Verify the checksum over the whole buffer given the pseudo-header sum.
    #[inline]
    pub fn verify_checksum(&self, pseudo: Sum) -> bool {
        let mut s = pseudo;
        s.add_bytes(self.buffer.as_ref());
        s.fold() == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Set the sequence number.
    #[inline]
    pub fn set_seq(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Set the acknowledgment number.
    #[inline]
    pub fn set_ack(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Set data offset (header length in bytes, multiple of 4) and flags together.
    /// Invalidates the `check_len` guarantee.
    #[inline]
    pub fn set_header_len_flags(&mut self, header_len: usize, flags: TcpFlags) {
        // header_len / 4 <= 15 for valid input; masked to the 4-bit field.
        #[allow(clippy::cast_possible_truncation)]
        let off = ((header_len / 4) & 0x0f) as u16;
        put16(self.buffer.as_mut(), field::OFF_FLAGS, (off << 12) | flags.bits());
    }

    /// Set the window.
    #[inline]
    pub fn set_window(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, v);
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Set the urgent pointer.
    #[inline]
    pub fn set_urgent(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Compute and set the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: Sum) {
        self.set_checksum(0);
        let mut s = pseudo;
        s.add_bytes(self.buffer.as_ref());
        self.set_checksum(s.checksum());
    }
}

/// The value of a TCP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Window.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    options: HeaderOptions,
}

impl TcpRepr {
    /// A header without options.
    pub const fn new(src_port: u16, dst_port: u16, seq: u32, ack: u32, flags: TcpFlags, window: u16) -> Self {
        TcpRepr { src_port, dst_port, seq, ack, flags, window, urgent: 0, options: HeaderOptions::EMPTY }
    }

    /// Set option bytes (a multiple of 4, at most 40).
    ///
    /// # Errors
    /// [`WireError::BadHeaderLen`] otherwise.
    pub fn set_options(&mut self, opts: &[u8]) -> Result<()> {
        self.options = HeaderOptions::new(opts)?;
        Ok(())
    }

    /// Option bytes.
    pub fn options(&self) -> &[u8] {
        self.options.as_slice()
    }

    /// Read a checked segment.
    pub fn parse<T: AsRef<[u8]>>(p: &TcpPacket<T>) -> Self {
        let mut r = TcpRepr::new(p.src_port(), p.dst_port(), p.seq(), p.ack(), p.flags(), p.window());
        r.urgent = p.urgent();
        // check_len guarantees a data offset in 5..=15: at most 40 option bytes.
        r.options = HeaderOptions::new(p.options()).unwrap_or(HeaderOptions::EMPTY);
        r
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.as_slice().len()
    }

    /// Write the header into `buf`, whose length must be header plus the payload
    /// already in place; the checksum covers all of `buf` plus `pseudo`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `buf` is shorter than the header.
    pub fn emit(&self, buf: &mut [u8], pseudo: Sum) -> Result<()> {
        let h = self.header_len();
        if buf.len() < h {
            return Err(WireError::Truncated);
        }
        let mut p = TcpPacket::new_unchecked(buf);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq(self.seq);
        p.set_ack(self.ack);
        p.set_header_len_flags(h, self.flags);
        p.set_window(self.window);
        p.set_urgent(self.urgent);
        p.buffer[HEADER_LEN..h].copy_from_slice(self.options());
        p.fill_checksum(pseudo);
        Ok(())
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tcpdump's letters: S F R P . (ACK) U E W
        for (flag, c) in [
            (TcpFlags::SYN, 'S'),
            (TcpFlags::FIN, 'F'),
            (TcpFlags::RST, 'R'),
            (TcpFlags::PSH, 'P'),
            (TcpFlags::ACK, '.'),
            (TcpFlags::URG, 'U'),
            (TcpFlags::ECE, 'E'),
            (TcpFlags::CWR, 'W'),
        ] {
            if self.contains(flag) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl<T: AsRef<[u8]>> fmt::Display for TcpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TCP {} > {} [{}] seq {} ack {} win {} len {}",
            self.src_port(),
            self.dst_port(),
            self.flags(),
            self.seq(),
            self.ack(),
            self.window(),
            self.payload().len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::pseudo_v4;
    use std::net::Ipv4Addr;

    #[test]
    fn syn_with_mss_option_round_trips_and_verifies() {
        let mut r = TcpRepr::new(40000, 80, 1, 0, TcpFlags::SYN, 64240);
        r.set_options(&[2, 4, 0x05, 0xb4]).unwrap();
        let pseudo = pseudo_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 6, 24);
        let mut b = [0u8; 24];
        r.emit(&mut b, pseudo).unwrap();
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(pseudo));
        assert_eq!(p.header_len(), 24);
        assert_eq!(TcpRepr::parse(&p), r);
        assert_eq!(p.to_string(), "TCP 40000 > 80 [S] seq 1 ack 0 win 64240 len 0");
    }

    #[test]
    fn data_offset_is_checked() {
        let mut b = [0u8; 20];
        b[12] = 0x40;
        assert_eq!(TcpPacket::new_checked(&b[..]).unwrap_err(), WireError::BadHeaderLen);
        b[12] = 0x60;
        assert_eq!(TcpPacket::new_checked(&b[..]).unwrap_err(), WireError::Truncated);
        assert_eq!(TcpPacket::new_checked(&b[..19]).unwrap_err(), WireError::Truncated);
    }
}
