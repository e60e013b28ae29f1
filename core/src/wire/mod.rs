//! Zero-copy views over packet bytes, and the values they parse into.
//!
//! Each protocol has a view `XxxPacket<T: AsRef<[u8]>>` over a byte buffer (smoltcp's
//! design, `src/wire/mod.rs`) and, where a value is useful, an `XxxRepr` that
//! [`parse`](ipv4::Ipv4Repr::parse)s from a checked view and `emit`s into one.
//!
//! # The `check_len` contract
//! `new_checked` is the only constructor used on received bytes. When it (that is,
//! `check_len`) succeeds, no accessor of the view panics: every field the accessors
//! read lies inside the buffer. The setters that change a length field
//! (`set_header_len`, `set_total_len`, `set_len`, `set_data_offset`) can break that
//! guarantee; call `check_len` again after using them on untrusted bytes. Inside the
//! views `clippy::indexing_slicing` is allowed for exactly this reason.
//!
//! # Why our own views and not etherparse's
//! The parse stage runs on every packet, so its views are ours (written smoltcp-style)
//! and etherparse is the independent oracle in the proptests and the fuzz target.
//! Measured with `cargo bench -p podplane-benches --bench parse` on a 64-byte
//! Ethernet/IPv4/UDP frame (2-core CI-class machine, 2026-11):
//! our views with the IPv4 header-checksum check take 6.3 ns; etherparse's
//! `Ethernet2HeaderSlice` + `Ipv4HeaderSlice` + `UdpHeaderSlice` with the same check
//! (etherparse does not verify it itself) 19 ns; `SlicedPacket` without the check 35 ns.

#![allow(clippy::indexing_slicing)]

/// Declares a `u8`/`u16` protocol-number enum with an `Unknown(n)` variant, so that an
/// unknown value is a value, not an error (smoltcp `enum_with_unknown!`).
macro_rules! enum_with_unknown {
    (
        $(#[$m:meta])* pub enum $name:ident($ty:ty) {
            $( $(#[$vm:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vm])* $variant, )+
            /// A value this crate has no name for.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            #[inline]
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            #[inline]
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

/// Declares a view type over a byte buffer with the constructors every view has:
/// `new_unchecked`, `new_checked` (which runs the type's own `check_len`, see the
/// module docs) and `into_inner`.
macro_rules! view {
    ($(#[doc = $doc:literal])+ $name:ident) => {
        $(#[doc = $doc])+
        #[derive(Clone, Copy, Debug)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wrap without checking: accessors may panic on a short buffer.
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wrap and `check_len`: the only constructor used on received bytes. After
            /// it succeeds no accessor panics.
            ///
            /// # Errors
            /// As the type's `check_len`.
            pub fn new_checked(buffer: T) -> Result<Self> {
                let v = Self::new_unchecked(buffer);
                v.check_len()?;
                Ok(v)
            }

            /// The wrapped buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
}

/// Up to 40 bytes of IPv4 or TCP options held inline in a `Repr` (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderOptions {
    bytes: [u8; 40],
    len: u8,
}

impl HeaderOptions {
    /// No options.
    pub const EMPTY: HeaderOptions = HeaderOptions { bytes: [0; 40], len: 0 };

    /// Options from `opts`, which must be a multiple of 4 bytes long and at most 40.
    ///
    /// # Errors
    /// [`WireError::BadHeaderLen`] otherwise.
    pub fn new(opts: &[u8]) -> Result<Self> {
        if opts.len() > 40 || !opts.len().is_multiple_of(4) {
            return Err(WireError::BadHeaderLen);
        }
        let mut o = Self::EMPTY;
        o.bytes[..opts.len()].copy_from_slice(opts);
        o.len = u8::try_from(opts.len()).map_err(|_| WireError::BadHeaderLen)?;
        Ok(o)
    }

    /// The option bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

pub mod arp;
pub mod checksum;
pub mod cidr;
pub mod display;
pub mod ethernet;
pub mod flow;
pub mod icmp;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vxlan;

pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr};
pub use ip::IpProtocol;
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};

/// Why bytes are not a valid header. Small and `Copy`, no strings, so the packet path
/// can return it by value; the parse stage maps it to a [`DropReason`](crate::DropReason)
/// per layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header (or the length it claims) needs.
    #[error("truncated")]
    Truncated,
    /// The version field is not the protocol's.
    #[error("bad version")]
    BadVersion,
    /// A header-length field is below the minimum or beyond the buffer.
    #[error("bad header length")]
    BadHeaderLen,
    /// A total/payload length field is inconsistent with the header or the buffer.
    #[error("bad length")]
    BadLength,
    /// The checksum does not verify.
    #[error("bad checksum")]
    BadChecksum,
    /// A well-formed header of a variant this crate does not handle.
    #[error("unsupported")]
    Unsupported,
    /// Some other field is invalid (for example a VXLAN header without the I flag).
    #[error("malformed")]
    Malformed,
}

/// Result of a wire operation.
pub type Result<T> = core::result::Result<T, WireError>;

/// Which checksums a receive path verifies: a runtime policy, so TAP frames whose
/// checksums the kernel left partial, replayed captures and fuzz runs take the same
/// code path (smoltcp `ChecksumCapabilities`; we never bypass checks under
/// `cfg(fuzzing)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChecksumPolicy {
    /// Verify the IPv4 header checksum (a router must: RFC 1812 5.2.2).
    pub ipv4: bool,
    /// Verify TCP, UDP and ICMP checksums. Off by default: Linux does not verify them
    /// when it forwards, only conntrack does (`nf_conntrack_checksum`) and only at
    /// PREROUTING for packets it tracks.
    pub l4: bool,
}

impl Default for ChecksumPolicy {
    fn default() -> Self {
        ChecksumPolicy { ipv4: true, l4: false }
    }
}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
