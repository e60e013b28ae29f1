//! The header ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) share: type, code, checksum and
//! four bytes whose meaning depends on the type, then the message body. One view and
//! one value type serve both versions; [`icmpv4`](super::icmpv4) and
//! [`icmpv6`](super::icmpv6) name the types and say which checksum applies.
//!
//! ```text
//!  0       8       16              31
//!  +-------+-------+---------------+
//!  | type  | code  |   checksum    |
//!  +-------+-------+---------------+
//!  |  rest of header (echo: id, seq; frag-needed: mtu) |
//!  +-------------------------------+
//!  | body (echo data, or the quoted packet of an error)
//! ```

use core::fmt;

use super::checksum::Sum;
use super::{Result, WireError, be16, put16};

mod field {
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: usize = 2;
    pub(super) const REST: core::ops::Range<usize> = 4..8;
    pub(super) const BODY: usize = 8;
}

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = field::BODY;

view! {
/// A view of an ICMPv4 or ICMPv6 message.
    IcmpPacket
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Check the 8-byte header fits.
    ///
    /// # Errors
    /// [`WireError::Truncated`] under 8 bytes.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN { Err(WireError::Truncated) } else { Ok(()) }
    }

    /// Type byte.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code byte.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The four type-specific bytes.
    #[inline]
    pub fn rest(&self) -> [u8; 4] {
        let b = self.buffer.as_ref();
        [b[4], b[5], b[6], b[7]]
    }

    /// Echo identifier (bytes 4..6): the "port" of an echo flow.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Echo sequence number (bytes 6..8).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    /// The body after the header.
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY..]
    }

    /// Verify the checksum over the whole buffer plus `pseudo` (empty for ICMPv4).
    #[inline]
    pub fn verify_checksum(&self, pseudo: Sum) -> bool {
        let mut s = pseudo;
        s.add_bytes(self.buffer.as_ref());
        s.fold() == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Set type and code.
    #[inline]
    pub fn set_type_code(&mut self, msg_type: u8, code: u8) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = msg_type;
        b[field::CODE] = code;
    }

    /// Set the four type-specific bytes.
    #[inline]
    pub fn set_rest(&mut self, rest: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&rest);
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Compute the checksum over the whole buffer plus `pseudo`.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo: Sum) {
        self.set_checksum(0);
        let mut s = pseudo;
        s.add_bytes(self.buffer.as_ref());
        self.set_checksum(s.checksum());
    }

    /// The body, writable.
    #[inline]
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::BODY..]
    }
}

/// The value of an ICMP header; `K` is [`Icmpv4Type`](super::icmpv4::Icmpv4Type) or
/// [`Icmpv6Type`](super::icmpv6::Icmpv6Type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpRepr<K> {
    /// Message type.
    pub msg_type: K,
    /// Code.
    pub code: u8,
    /// The four type-specific bytes.
    pub rest: [u8; 4],
}

impl<K: From<u8> + Into<u8> + Copy> IcmpRepr<K> {
    /// Read a checked message.
    pub fn parse<T: AsRef<[u8]>>(p: &IcmpPacket<T>) -> Self {
        IcmpRepr { msg_type: K::from(p.msg_type()), code: p.code(), rest: p.rest() }
    }

    /// An echo request or reply header.
    pub fn echo(msg_type: K, ident: u16, seq: u16) -> Self {
        let (i, s) = (ident.to_be_bytes(), seq.to_be_bytes());
        IcmpRepr { msg_type, code: 0, rest: [i[0], i[1], s[0], s[1]] }
    }

    /// Write the header into `buf`, whose length is header plus the body already in
    /// place, and checksum all of it plus `pseudo`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `buf` is shorter than 8 bytes.
    pub fn emit(&self, buf: &mut [u8], pseudo: Sum) -> Result<()> {
        let mut p = IcmpPacket::new_checked(buf)?;
        p.set_type_code(self.msg_type.into(), self.code);
        p.set_rest(self.rest);
        p.fill_checksum(pseudo);
        Ok(())
    }
}

impl<T: AsRef<[u8]>> fmt::Display for IcmpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type {} code {} id {} seq {} len {}",
            self.msg_type(),
            self.code(),
            self.echo_ident(),
            self.echo_seq(),
            self.body().len()
        )
    }
}
