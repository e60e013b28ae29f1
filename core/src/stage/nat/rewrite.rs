//! Rewriting one side (source or destination) of a packet for NAT, with incremental
//! checksums (RFC 1624): the IPv4 header, TCP and UDP with their pseudo-headers (a
//! zero UDP-over-IPv4 checksum stays zero, a computed zero is sent as 0xffff), ICMP
//! and ICMPv6 echo identifiers, SCTP ports with their CRC32c, and a vnet_hdr partial checksum, which holds only the
//! pseudo-header sum and so changes with the addresses but not the ports. An ICMP
//! error about a translated connection has its quoted packet translated too.

use crate::buf::{CsumState, L3Kind, PktFlags, PktMeta};
use crate::wire::checksum::{Sum, fold32, update_bytes, update_delta, update_delta_udp, update16, update32};
use crate::wire::flow::FlowKey;

/// Which side of a packet NAT changes: the source (POSTROUTING) or the destination
/// (PREROUTING), netfilter's `nf_nat_manip_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manip {
    /// Source address and port.
    Src,
    /// Destination address and port.
    Dst,
}

impl Manip {
    /// The other side.
    pub fn other(self) -> Manip {
        match self {
            Manip::Src => Manip::Dst,
            Manip::Dst => Manip::Src,
        }
    }
}

/// An address (IPv4 in the first four bytes) and a port (ICMP: the echo identifier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The address.
    pub addr: [u8; 16],
    /// The port or identifier.
    pub port: u16,
}

/// The `manip` side of a flow key.
pub fn side(k: &FlowKey, manip: Manip) -> Endpoint {
    match manip {
        Manip::Src => Endpoint { addr: k.src, port: k.src_port },
        Manip::Dst => Endpoint { addr: k.dst, port: k.dst_port },
    }
}

/// True for protocols whose flow key carries the ICMP echo identifier in both port
/// fields.
fn is_icmp(proto: u8) -> bool {
    proto == 1 || proto == 58
}

/// Set the `manip` side of a flow key (both port fields for ICMP, as keys hold the
/// identifier twice).
pub fn set_side(k: &mut FlowKey, manip: Manip, e: Endpoint) {
    match manip {
        Manip::Src => {
            k.src = e.addr;
            k.src_port = e.port;
        }
        Manip::Dst => {
            k.dst = e.addr;
            k.dst_port = e.port;
        }
    }
    if is_icmp(k.proto) {
        k.src_port = e.port;
        k.dst_port = e.port;
    }
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(*b.get(at..)?.first_chunk::<2>()?))
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    b.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

/// Offset of the `manip` address in an IP header and its length.
fn addr_at(v6: bool, manip: Manip) -> (usize, usize) {
    match (v6, manip) {
        (false, Manip::Src) => (12, 4),
        (false, Manip::Dst) => (16, 4),
        (true, Manip::Src) => (8, 16),
        (true, Manip::Dst) => (24, 16),
    }
}

/// A checksum after an address changed from `old` to `new` (4 or 16 bytes): an IPv4
/// address as one 32-bit update (measured: the general byte-pair loop cost about
/// 150 more instructions per translated packet).
fn csum_addr(c: u16, old: &[u8], new: &[u8]) -> u16 {
    match (<[u8; 4]>::try_from(old), <[u8; 4]>::try_from(new)) {
        (Ok(o), Ok(n)) => update32(c, u32::from_be_bytes(o), u32::from_be_bytes(n)),
        _ => update_bytes(c, old, new),
    }
}

/// Write the `manip` address of the IP header at `l3` (fixing the IPv4 header
/// checksum); returns the old and new address bytes and their length.
fn set_addr(b: &mut [u8], l3: usize, v6: bool, manip: Manip, addr: &[u8; 16]) -> Option<([u8; 16], usize)> {
    let (off, n) = addr_at(v6, manip);
    let field = b.get_mut(l3 + off..l3 + off + n)?;
    let mut old = [0u8; 16];
    old.get_mut(..n)?.copy_from_slice(field);
    let new = addr.get(..n)?;
    if field != new {
        field.copy_from_slice(new);
        if !v6 {
            let c = get16(b, l3 + 10)?;
            put16(b, l3 + 10, csum_addr(c, old.get(..n)?, new))?;
        }
    }
    Some((old, n))
}

/// Rewrite the transport part of a `manip` change at `l4` (protocol `proto`, the
/// header wholly present for `full`, else only its first 8 bytes): the port or echo
/// identifier, and the checksum for that and for the address change `old` → `new`
/// in the pseudo-header. `partial` when the checksum field holds a vnet_hdr partial
/// sum.
#[allow(clippy::too_many_arguments)]
fn set_l4(
    b: &mut [u8],
    l4: usize,
    proto: u8,
    v6: bool,
    manip: Manip,
    port: u16,
    old: &[u8],
    new: &[u8],
    full: bool,
    partial: bool,
) -> Option<()> {
    match proto {
        6 | 17 => {
            let at = l4 + if manip == Manip::Src { 0 } else { 2 };
            let old_port = get16(b, at)?;
            put16(b, at, port)?;
            let csum_at = l4 + if proto == 6 { 16 } else { 6 };
            if proto == 6 && !full {
                // A quote with 8 bytes of TCP has no checksum to fix (tcp_manip_pkt).
                return Some(());
            }
            let c = get16(b, csum_at)?;
            let c = if partial {
                // The field is the pseudo-header sum, not complemented; ports are not in it.
                !csum_addr(!c, old, new)
            } else if proto == 17 && !v6 && c == 0 {
                0
            } else {
                let c = update16(csum_addr(c, old, new), old_port, port);
                if proto == 17 && c == 0 { 0xffff } else { c }
            };
            put16(b, csum_at, c)
        }
        // Echo request/reply (and the other query types with an identifier): the
        // identifier; ICMPv6 also has the pseudo-header. Errors have no identifier.
        1 if !v6 => {
            if !matches!(b.get(l4)?, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18) {
                return Some(());
            }
            let old_id = get16(b, l4 + 4)?;
            put16(b, l4 + 4, port)?;
            let c = get16(b, l4 + 2)?;
            put16(b, l4 + 2, update16(c, old_id, port))
        }
        // SCTP (nf_nat_proto's sctp_manip_pkt): the port, then the CRC32c over the
        // whole packet again (it has no pseudo-header, so addresses do not enter it);
        // a quote keeps its checksum, as the kernel leaves it.
        132 => {
            let at = l4 + if manip == Manip::Src { 0 } else { 2 };
            put16(b, at, port)?;
            if full {
                let pkt = b.get_mut(l4..)?;
                pkt.get_mut(8..12)?.fill(0);
                let crc = crc32c::crc32c(pkt);
                pkt.get_mut(8..12)?.copy_from_slice(&crc.to_le_bytes());
            }
            Some(())
        }
        58 if v6 => {
            if !matches!(b.get(l4)?, 128 | 129) {
                return Some(());
            }
            let old_id = get16(b, l4 + 4)?;
            put16(b, l4 + 4, port)?;
            let c = get16(b, l4 + 2)?;
            put16(b, l4 + 2, update16(csum_addr(c, old, new), old_id, port))
        }
        _ => Some(()),
    }
}

/// Make the `manip` side of the packet `to`: address, port (or echo identifier) and
/// every checksum that covers them, and the flow key. A later fragment (no transport
/// header) has only its address changed. `None` when the headers are not where the
/// metadata says (nothing is then half-written but the address).
///
/// Inline, with its common case: in the NAT stages' loops, where the side is a
/// constant, the call cost a masqueraded new connection 36 instructions
/// (`benches/callgrind.sh`); the other cases stay out of line.
#[inline(always)]
pub fn rewrite(b: &mut [u8], m: &mut PktMeta, manip: Manip, to: Endpoint) -> Option<()> {
    match rewrite_v4_fast(b, m, manip, to) {
        Some(done) => done,
        None => rewrite_any(b, m, manip, to),
    }
}

/// [`rewrite`] for any packet.
#[inline(never)]
fn rewrite_any(b: &mut [u8], m: &mut PktMeta, manip: Manip, to: Endpoint) -> Option<()> {
    let v6 = m.l3_kind == L3Kind::Ipv6;
    let l3 = usize::from(m.l3);
    let (old, n) = set_addr(b, l3, v6, manip, &to.addr)?;
    if m.flags.contains(PktFlags::HAS_L4) && !m.flags.contains(PktFlags::LATER_FRAGMENT) {
        let partial = matches!(m.csum, CsumState::Partial { .. });
        let (old, new) = (old.get(..n)?, to.addr.get(..n)?);
        // The packet ends where its metadata says (the SCTP checksum covers it all).
        let end = usize::from(m.head()) + usize::from(m.len());
        set_l4(b.get_mut(..end)?, usize::from(m.l4), m.ip_proto, v6, manip, to.port, old, new, true, partial)?;
    }
    let port = if m.flags.contains(PktFlags::LATER_FRAGMENT) { side(&m.flow, manip).port } else { to.port };
    set_side(&mut m.flow, manip, Endpoint { addr: to.addr, port });
    Some(())
}

/// [`rewrite`] for the common case, a whole IPv4 TCP or UDP packet with a complete
/// checksum: both headers taken as one slice each, the address as a 32-bit word.
/// `None` when the case does not apply (the general path runs instead). Measured on
/// the service path: 341 -> about 100 instructions per translated packet.
#[inline(always)]
fn rewrite_v4_fast(b: &mut [u8], m: &mut PktMeta, manip: Manip, to: Endpoint) -> Option<Option<()>> {
    let proto = m.ip_proto;
    if m.l3_kind != L3Kind::Ipv4
        || !matches!(proto, 6 | 17)
        || !m.flags.contains(PktFlags::HAS_L4)
        || m.flags.contains(PktFlags::LATER_FRAGMENT)
        || matches!(m.csum, CsumState::Partial { .. })
    {
        return None;
    }
    let (l3, l4) = (usize::from(m.l3), usize::from(m.l4));
    let (a_off, p_off) = if manip == Manip::Src { (12, 0) } else { (16, 2) };
    let c_off = if proto == 6 { 16 } else { 6 };
    let new_a = u32::from_be_bytes(*to.addr.first_chunk::<4>()?);
    let Some(ip) = b.get_mut(l3..l3 + 20) else { return Some(None) };
    let old_a = u32::from_be_bytes(*ip.get(a_off..)?.first_chunk::<4>()?);
    ip.get_mut(a_off..a_off + 4)?.copy_from_slice(&new_a.to_be_bytes());
    // One delta (RFC 1624 eqn. 3 summed over the changed words) for the address,
    // which both checksums cover: against `update32` and `update16` word by word, 17
    // instructions less per packet (`benches/callgrind.sh`, new connections).
    let (old_hi, old_lo) = (old_a >> 16, old_a & 0xffff);
    let (new_hi, new_lo) = (new_a >> 16, new_a & 0xffff);
    let d_addr = (old_hi ^ 0xffff) + (old_lo ^ 0xffff) + new_hi + new_lo;
    let ipc = u16::from_be_bytes(*ip.get(10..)?.first_chunk::<2>()?);
    ip.get_mut(10..12)?.copy_from_slice(&update_delta(ipc, u32::from(fold32(d_addr))).to_be_bytes());
    let Some(t) = b.get_mut(l4..l4 + c_off + 2) else { return Some(None) };
    let old_p = u16::from_be_bytes(*t.get(p_off..)?.first_chunk::<2>()?);
    t.get_mut(p_off..p_off + 2)?.copy_from_slice(&to.port.to_be_bytes());
    let c = u16::from_be_bytes(*t.get(c_off..)?.first_chunk::<2>()?);
    let d = u32::from(fold32(d_addr + u32::from(!old_p) + u32::from(to.port)));
    // A zero UDP-over-IPv4 checksum stays zero; a computed zero is sent as 0xffff.
    let c = if proto == 17 { update_delta_udp(c, d) } else { update_delta(c, d) };
    t.get_mut(c_off..c_off + 2)?.copy_from_slice(&c.to_be_bytes());
    set_side(&mut m.flow, manip, to);
    Some(Some(()))
}

/// Translate an ICMP error about a NATed connection, as `nf_nat_icmp_reply_translation`
/// does: the quoted packet's `manip.other()` side becomes `inner` (its IP header
/// checksum and, where the quote holds it, its transport checksum fixed), the outer
/// `manip` address becomes `outer`, and the ICMP checksum is computed again over the
/// whole message (ICMPv6 with its pseudo-header).
pub fn rewrite_icmp_error(b: &mut [u8], m: &mut PktMeta, manip: Manip, outer: [u8; 16], inner: Endpoint) -> Option<()> {
    let v6 = m.l3_kind == L3Kind::Ipv6;
    let (l3, l4) = (usize::from(m.l3), usize::from(m.l4));
    let end = usize::from(m.head()) + usize::from(m.len());
    let q = l4 + 8;
    let (qproto, ql4) = if v6 {
        (*b.get(q + 6)?, q + 40)
    } else {
        let vihl = *b.get(q)?;
        (*b.get(q + 9)?, q + usize::from(vihl & 0x0f) * 4)
    };
    let im = manip.other();
    let (old, n) = set_addr(b, q, v6, im, &inner.addr)?;
    // The quoted transport header: its first 8 bytes at least (conntrack checked);
    // TCP's checksum only when all 20 are there.
    let full = end >= ql4 + 20;
    let (old_s, new_s) = (old.get(..n)?, inner.addr.get(..n)?);
    set_l4(b.get_mut(..end)?, ql4, qproto, v6, im, inner.port, old_s, new_s, full, false)?;
    set_addr(b, l3, v6, manip, &outer)?;
    put16(b, l4 + 2, 0)?;
    let msg = b.get(l4..end)?;
    let mut sum = Sum::new();
    if v6 {
        sum.add_bytes(b.get(l3 + 8..l3 + 40)?);
        sum.add_bytes(&u32::try_from(msg.len()).ok()?.to_be_bytes());
        sum.add_u16(58);
    }
    sum.add_bytes(msg);
    put16(b, l4 + 2, sum.checksum())?;
    let port = side(&m.flow, manip).port;
    set_side(&mut m.flow, manip, Endpoint { addr: outer, port });
    Some(())
}
