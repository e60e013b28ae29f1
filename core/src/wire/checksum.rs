//! Internet checksums (RFC 1071) and incremental updates (RFC 1624).
//!
//! Sums are accumulated in native byte order, four bytes at a time into a `u64`, and
//! converted to network order once at the end: RFC 1071 section 2(B), the sum is
//! independent of byte order up to a final swap. [`Sum`] is the accumulator; the
//! pseudo-header helpers add the IPv4 (RFC 768/793) and IPv6 (RFC 8200 section 8.1)
//! pseudo-headers.
//!
//! Incremental updates follow RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, which never
//! produces the -0 (0x0000 for 0xffff) error of eqn. 2. NAT and TTL rewrites use them;
//! the proptests check them against full recomputation.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A running one's-complement sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum(u64);

impl Sum {
    /// An empty sum.
    pub const fn new() -> Self {
        Sum(0)
    }

    /// Add bytes. An odd trailing byte is padded with zero, as RFC 1071 says; so only
    /// the last call of a sum may have an odd length.
    #[inline]
    pub fn add_bytes(&mut self, data: &[u8]) {
        let mut acc = self.0;
        let mut chunks = data.chunks_exact(4);
        for c in &mut chunks {
            acc += u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
        }
        let rest = chunks.remainder();
        let mut i = 0;
        if rest.len() >= 2 {
            acc += u64::from(u16::from_ne_bytes([rest[0], rest[1]]));
            i = 2;
        }
        if let Some(&b) = rest.get(i) {
            acc += u64::from(u16::from_ne_bytes([b, 0]));
        }
        self.0 = acc;
    }

    /// Add a 16-bit word given in host order (a length, a protocol number).
    #[inline]
    pub fn add_u16(&mut self, v: u16) {
        self.0 += u64::from(u16::from_ne_bytes(v.to_be_bytes()));
    }

    /// The folded sum in host order (not yet complemented).
    #[inline]
    pub fn fold(self) -> u16 {
        let mut s = self.0;
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        // `s` fits 16 bits after the folds above.
        #[allow(clippy::cast_possible_truncation)]
        let native = s as u16;
        u16::from_be_bytes(native.to_ne_bytes())
    }

    /// The checksum field value: the complement of the folded sum.
    #[inline]
    pub fn checksum(self) -> u16 {
        !self.fold()
    }
}

/// Checksum of `data` alone (IPv4 header, ICMPv4 message).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    let mut s = Sum::new();
    s.add_bytes(data);
    s.checksum()
}

/// True when `data`, which contains its own checksum field, sums to 0xffff.
#[inline]
pub fn verify(data: &[u8]) -> bool {
    let mut s = Sum::new();
    s.add_bytes(data);
    s.fold() == 0xffff
}

/// True when a 20-byte IPv4 header (no options) sums to 0xffff. The fixed size lets
/// the compiler unroll it to five loads and four adds; the all-ones test needs no byte
/// swap, since 0xffff reads the same in both orders. The parse stage's hot path:
/// 25 instructions per header against about 75 for the generic [`verify`]
/// (callgrind, `benches/callgrind.sh`). Replacing the folds by `sum % 0xffff == 0`
/// was tried and saved one instruction, not worth the subtler proof.
#[inline]
pub fn verify_ipv4_20(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let mut s = w(0) + w(4) + w(8) + w(12) + w(16);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s == 0xffff
}

/// The IPv4 pseudo-header (source, destination, zero, protocol, transport length).
#[inline]
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> Sum {
    let mut s = Sum::new();
    s.add_bytes(&src.octets());
    s.add_bytes(&dst.octets());
    s.add_u16(u16::from(protocol));
    s.add_u16(len);
    s
}

/// The IPv6 pseudo-header (RFC 8200 8.1): addresses, upper-layer length, next header.
#[inline]
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> Sum {
    let mut s = Sum::new();
    s.add_bytes(&src.octets());
    s.add_bytes(&dst.octets());
    s.add_bytes(&len.to_be_bytes());
    s.add_u16(u16::from(next_header));
    s
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changed from `old` to `new`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!csum) + u32::from(!old) + u32::from(new);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    // folded to 16 bits above
    #[allow(clippy::cast_possible_truncation)]
    let folded = s as u16;
    !folded
}

/// The new checksum after a 32-bit field (an IPv4 address) changed.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    #[allow(clippy::cast_possible_truncation)] // splitting into halves
    let c = update16(csum, (old >> 16) as u16, (new >> 16) as u16);
    #[allow(clippy::cast_possible_truncation)]
    update16(c, old as u16, new as u16)
}

/// The new checksum after an arbitrary even-length byte field changed (an IPv6
/// address, a port pair). `old` and `new` must have the same even length.
#[inline]
pub fn update_bytes(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    let mut c = csum;
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        c = update16(c, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([n[0], n[1]]));
    }
    c
}

/// Fold a 32-bit one's complement sum to 16 bits (two carry steps suffice for any
/// `u32`).
#[inline(always)]
pub fn fold32(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    // Now s <= 0x1fffe: adding the carry to the low half cannot carry again. The
    // mask (not a range check) tells the compiler the result fits: no branch.
    s += s >> 16;
    low16(s)
}

/// The low 16 bits of `s`, without a branch.
#[inline(always)]
fn low16(s: u32) -> u16 {
    u16::try_from(s & 0xffff).unwrap_or(0)
}

/// RFC 1624 eqn. 3 for many changed words at once: `delta` is the sum of (~old + new)
/// over them, folded with [`fold32`]. The same result as [`update16`] word by word
/// (tested), in one step: what a cached rewrite (the flow fast path) applies.
#[inline(always)]
pub fn update_delta(csum: u16, delta: u32) -> u16 {
    // A folded delta and a 16-bit field sum to 17 bits: one carry step folds them.
    let s = u32::from(!csum) + delta;
    !low16(s + (s >> 16))
}

/// [`update_delta`] for a partial checksum (vnet_hdr NEEDS_CSUM), whose field holds
/// the pseudo-header sum not complemented: `delta` covers the address changes only.
#[inline(always)]
pub fn update_delta_partial(csum: u16, delta: u32) -> u16 {
    let s = u32::from(csum) + delta;
    low16(s + (s >> 16))
}

/// [`update_delta`] for a UDP-over-IPv4 checksum: 0 (none) stays 0, a computed 0 is
/// sent as 0xffff, as [`update16_udp`].
#[inline(always)]
pub fn update_delta_udp(csum: u16, delta: u32) -> u16 {
    if csum == 0 {
        return 0;
    }
    match update_delta(csum, delta) {
        0 => 0xffff,
        c => c,
    }
}

/// Like [`update16`] for a UDP-over-IPv4 checksum, where 0 means "no checksum" and must
/// stay 0, and a computed 0 is sent as 0xffff (RFC 768).
#[inline]
pub fn update16_udp(csum: u16, old: u16, new: u16) -> u16 {
    if csum == 0 {
        return 0;
    }
    match update16(csum, old, new) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::cast_possible_truncation)] // random words cut from a random u64
    fn a_precomputed_delta_equals_word_by_word_updates() {
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let c = (x >> 48) as u16;
            let words = [(x as u16, (x >> 16) as u16), ((x >> 32) as u16, (x >> 8) as u16), ((x >> 24) as u16, 0)];
            let (mut seq, mut seq_udp, mut delta) = (c, c, 0u32);
            for (old, new) in words {
                seq = update16(seq, old, new);
                seq_udp = update16_udp(seq_udp, old, new);
                delta += u32::from(!old) + u32::from(new);
            }
            let delta = u32::from(fold32(delta));
            assert_eq!(update_delta(c, delta), seq, "csum {c:#06x} words {words:?}");
            assert_eq!(update_delta_udp(c, delta), seq_udp, "udp csum {c:#06x} words {words:?}");
            // A partial field is the complement's view of the same update.
            assert_eq!(update_delta_partial(!c, delta), !update_delta(c, delta), "partial {c:#06x}");
        }
    }

    // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
    #[test]
    fn rfc1071_example() {
        let mut s = Sum::new();
        s.add_bytes(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
        assert_eq!(s.fold(), 0xddf2);
        assert_eq!(s.checksum(), 0x220d);
    }

    // An ICMP echo IPv4 header 10.0.0.1 > 10.0.0.2; checksum 0xec4a computed
    // independently with a Python one-liner summing big-endian words.
    const IPV4_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x54, 0x3a, 0x5c, 0x40, 0x00, 0x40, 0x01, 0xec, 0x4a, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00,
        0x00, 0x02,
    ];

    #[test]
    fn ipv4_header_checksum_verifies_and_recomputes() {
        assert!(verify(&IPV4_HDR));
        let mut h = IPV4_HDR;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xec4a);
    }

    #[test]
    fn fixed_size_verify_matches_generic() {
        assert!(verify_ipv4_20(&IPV4_HDR));
        let mut h = IPV4_HDR;
        h[10] ^= 0x80;
        assert!(!verify_ipv4_20(&h));
        assert_eq!(verify_ipv4_20(&h), verify(&h));
        assert!(!verify_ipv4_20(&[0; 20]), "an all-zero header does not verify");
    }

    #[test]
    fn odd_length_pads_with_zero() {
        let mut a = Sum::new();
        a.add_bytes(&[0x12, 0x34, 0x56]);
        let mut b = Sum::new();
        b.add_bytes(&[0x12, 0x34, 0x56, 0x00]);
        assert_eq!(a.fold(), b.fold());
        assert_eq!(a.fold(), 0x1234 + 0x5600);
    }

    #[test]
    fn incremental_ttl_decrement_matches_recompute() {
        let mut h = IPV4_HDR;
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let c = update16(0xec4a, old, new);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(c, checksum(&h));
    }

    #[test]
    fn udp_zero_checksum_stays_zero_and_zero_result_becomes_ffff() {
        assert_eq!(update16_udp(0, 1, 2), 0);
        // ~(~0xffff + ~0x0001 + 0x0001) = ~(0x0000 + 0xfffe + 0x0001) = 0x0000
        assert_eq!(update16(0xffff, 1, 1), 0);
        assert_eq!(update16_udp(0xffff, 1, 1), 0xffff);
        assert_eq!(update16(0xfffe, 0x0000, 0x0001), 0xfffd);
    }
}
