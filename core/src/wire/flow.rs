//! The flow key (5-tuple) and a symmetric flow hash.
//!
//! Addresses are stored as 16 bytes for both families (IPv4 in the first four, the
//! rest zero) so that one key type and one hash serve IPv4 and IPv6. For ICMP echo the
//! identifier stands in for both ports (as conntrack keys echo flows on it); for
//! protocols without ports both are zero.
//!
//! [`FlowKey::symmetric_hash`] gives the same value for both directions of a flow: it
//! orders the two (address, port) endpoints before mixing, as the kernel's
//! `__skb_get_hash_symmetric()` does. ECMP, VXLAN source ports and worker steering use
//! it so that both directions land alike.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A connection's 5-tuple as the parse stage reads it from a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    /// Source address (IPv4 in the first four bytes).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port, or ICMP echo identifier.
    pub src_port: u16,
    /// Destination port, or ICMP echo identifier.
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// True for IPv6.
    pub v6: bool,
}

impl FlowKey {
    /// The all-zero key.
    pub const EMPTY: FlowKey = FlowKey { src: [0; 16], dst: [0; 16], src_port: 0, dst_port: 0, proto: 0, v6: false };

    /// An IPv4 key.
    #[inline]
    pub fn v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, src_port: u16, dst_port: u16) -> Self {
        let mut k = FlowKey { proto, src_port, dst_port, ..FlowKey::EMPTY };
        k.src[..4].copy_from_slice(&src.octets());
        k.dst[..4].copy_from_slice(&dst.octets());
        k
    }

    /// An IPv6 key.
    #[inline]
    pub fn v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, src_port: u16, dst_port: u16) -> Self {
        FlowKey { src: src.octets(), dst: dst.octets(), src_port, dst_port, proto, v6: true }
    }

    /// Source address.
    pub fn src_addr(&self) -> IpAddr {
        addr(&self.src, self.v6)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> IpAddr {
        addr(&self.dst, self.v6)
    }

    /// The key of the other direction.
    #[inline]
    pub fn reversed(&self) -> Self {
        FlowKey { src: self.dst, dst: self.src, src_port: self.dst_port, dst_port: self.src_port, ..*self }
    }

    /// A hash equal for a key and its [`reversed`](Self::reversed) key, keyed by `seed`.
    #[inline]
    pub fn symmetric_hash(&self, seed: u64) -> u64 {
        let a = endpoint_word(&self.src, self.src_port);
        let b = endpoint_word(&self.dst, self.dst_port);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = seed ^ (u64::from(self.proto) << 56) ^ u64::from(self.v6);
        for w in [lo.0, lo.1, lo.2, hi.0, hi.1, hi.2] {
            h = mix(h ^ w);
        }
        h
    }
}

impl FlowKey {
    /// A cheap hash, equal for both directions of a flow, to spread flows over a range
    /// (VXLAN source ports): the endpoints folded with XOR, one multiply. About 15
    /// instructions against 70 for [`symmetric_hash`](Self::symmetric_hash); not for
    /// hash tables (flows whose endpoints XOR alike collide).
    #[inline(always)]
    pub fn spread_hash(&self) -> u64 {
        let w = |a: &[u8; 16], i: usize| {
            let mut b = [0u8; 8];
            if let Some(s) = a.get(i..i + 8) {
                b.copy_from_slice(s);
            }
            u64::from_le_bytes(b)
        };
        let x = (w(&self.src, 0) ^ w(&self.dst, 0)) ^ (w(&self.src, 8) ^ w(&self.dst, 8)).rotate_left(29);
        let ports = u64::from(self.src_port ^ self.dst_port) << 40 | u64::from(self.proto) << 32;
        (x ^ ports).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// An endpoint folded into three words (address halves, port), ordered for symmetry.
#[inline]
fn endpoint_word(a: &[u8; 16], port: u16) -> (u64, u64, u64) {
    let mut x = [0u8; 8];
    x.copy_from_slice(&a[..8]);
    let mut y = [0u8; 8];
    y.copy_from_slice(&a[8..]);
    (u64::from_le_bytes(x), u64::from_le_bytes(y), u64::from(port))
}

/// One round of a multiply-xorshift mixer (the finaliser of splitmix64).
#[inline]
const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn addr(b: &[u8; 16], v6: bool) -> IpAddr {
    if v6 { IpAddr::V6(Ipv6Addr::from(*b)) } else { IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])) }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.v6 {
            write!(
                f,
                "[{}]:{} > [{}]:{} proto {}",
                self.src_addr(),
                self.src_port,
                self.dst_addr(),
                self.dst_port,
                self.proto
            )
        } else {
            write!(
                f,
                "{}:{} > {}:{} proto {}",
                self.src_addr(),
                self.src_port,
                self.dst_addr(),
                self.dst_port,
                self.proto
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_hash_alike_and_fields_matter() {
        let k = FlowKey::v4(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 96, 0, 10), 17, 40000, 53);
        assert_eq!(k.symmetric_hash(7), k.reversed().symmetric_hash(7));
        assert_ne!(k.symmetric_hash(7), k.symmetric_hash(8));
        let mut other = k;
        other.src_port = 40001;
        assert_ne!(k.symmetric_hash(7), other.symmetric_hash(7));
        let mut udp_vs_tcp = k;
        udp_vs_tcp.proto = 6;
        assert_ne!(k.symmetric_hash(7), udp_vs_tcp.symmetric_hash(7));
        assert_eq!(k.to_string(), "10.244.1.2:40000 > 10.96.0.10:53 proto 17");
    }

    #[test]
    fn swapping_only_ports_is_a_different_flow() {
        // (a:1 -> b:2) and (a:2 -> b:1) are different connections.
        let a = FlowKey::v4(Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2), 6, 1, 2);
        let b = FlowKey::v4(Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2), 6, 2, 1);
        assert_ne!(a.symmetric_hash(0), b.symmetric_hash(0));
    }
}
