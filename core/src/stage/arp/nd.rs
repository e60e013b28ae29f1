//! IPv6 neighbour discovery messages (RFC 4861) for the neighbour stage: checking a
//! received solicitation or advertisement, and building the advertisement and
//! solicitation the node sends, field by field as Linux 6.18 does (checked in a
//! network namespace):
//!
//! - An advertisement answering a solicitation: source = the target address, hop
//!   limit 255, traffic class and flow label 0; flags Router (the node forwards),
//!   Solicited (unless the solicitation came from ::, DAD, which is answered to
//!   ff02::1), Override and a target link-layer address option only when the
//!   solicitation was multicast (`ndisc_recv_ns()`: `override = inc_opt = multicast`).
//! - A solicitation resolving a next hop: to the target's solicited-node group
//!   ff02::1:ffXX:XXXX (Ethernet 33:33:ff:XX:XX:XX), source = the interface's address
//!   of the target's scope (link-local for a link-local target), hop limit 255, with a
//!   source link-layer address option (`ndisc_solicit()`).

use std::net::Ipv6Addr;

use crate::pipeline::DropReason;
use crate::wire::EthernetAddress;
use crate::wire::checksum::{Sum, pseudo_v6};
use crate::wire::ethernet::{EtherType, EthernetRepr};
use crate::wire::ip::IpProtocol;
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};

/// ICMPv6 type of a neighbour solicitation.
pub const NS: u8 = 135;
/// ICMPv6 type of a neighbour advertisement.
pub const NA: u8 = 136;
/// NA flags (the first byte after the checksum).
const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;
/// Option types: source and target link-layer address.
const OPT_SLLA: u8 = 1;
const OPT_TLLA: u8 = 2;

/// A checked NS or NA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdMsg {
    /// 135 or 136.
    pub kind: u8,
    /// IPv6 source and destination.
    pub src: Ipv6Addr,
    /// Destination.
    pub dst: Ipv6Addr,
    /// The target address.
    pub target: Ipv6Addr,
    /// The link-layer address option (source for NS, target for NA), if any.
    pub lladdr: Option<EthernetAddress>,
    /// NA flags byte.
    pub flags: u8,
}

/// Check `ip` (an IPv6 packet whose payload is ICMPv6 type 135 or 136, no extension
/// headers) as RFC 4861 7.1.1 / 7.1.2 ask.
///
/// # Errors
/// [`DropReason::NdInvalid`] for a message a node must silently discard.
pub fn check(ip: &[u8]) -> Result<NdMsg, DropReason> {
    let bad = DropReason::NdInvalid;
    let p = Ipv6Packet::new_checked(ip).map_err(|_| bad)?;
    if p.next_header() != IpProtocol::Icmpv6 || p.hop_limit() != 255 {
        return Err(bad);
    }
    let icmp = p.payload();
    let kind = *icmp.first().ok_or(bad)?;
    if !(kind == NS || kind == NA) || icmp.get(1) != Some(&0) || icmp.len() < 24 {
        return Err(bad);
    }
    let (src, dst) = (p.src_addr(), p.dst_addr());
    let len = u32::try_from(icmp.len()).map_err(|_| bad)?;
    let mut sum = pseudo_v6(src, dst, 58, len);
    sum.add_bytes(icmp);
    if sum.fold() != 0xffff {
        return Err(bad);
    }
    let t: [u8; 16] = icmp.get(8..24).and_then(|b| b.try_into().ok()).ok_or(bad)?;
    let target = Ipv6Addr::from(t);
    if target.is_multicast() {
        return Err(bad);
    }
    let flags = icmp.get(4).copied().unwrap_or(0);
    // Options: (type, length in 8-byte units, data); a zero length is invalid.
    let want = if kind == NS { OPT_SLLA } else { OPT_TLLA };
    let mut lladdr = None;
    let mut opts = icmp.get(24..).unwrap_or(&[]);
    while !opts.is_empty() {
        let n = usize::from(*opts.get(1).ok_or(bad)?) * 8;
        let opt = opts.get(..n).filter(|_| n > 0).ok_or(bad)?;
        if opt.first() == Some(&want) && n == 8 {
            lladdr = opt.get(2..8).map(EthernetAddress::from_bytes);
        }
        opts = opts.get(n..).unwrap_or(&[]);
    }
    if kind == NS && src.is_unspecified() && (!is_solicited_node(dst) || lladdr.is_some()) {
        return Err(bad);
    }
    if kind == NA && dst.is_multicast() && flags & FLAG_SOLICITED != 0 {
        return Err(bad);
    }
    Ok(NdMsg { kind, src, dst, target, lladdr, flags })
}

/// ff02::1:ff00:0/104.
fn is_solicited_node(a: Ipv6Addr) -> bool {
    let o = a.octets();
    o[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

/// The solicited-node multicast group of `a`, and its Ethernet address.
pub fn solicited_node(a: Ipv6Addr) -> (Ipv6Addr, EthernetAddress) {
    let o = a.octets();
    let g = Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]]);
    (g, EthernetAddress([0x33, 0x33, 0xff, o[13], o[14], o[15]]))
}

/// The Ethernet address of IPv6 multicast group `g` (RFC 2464 7).
fn multicast_mac(g: Ipv6Addr) -> EthernetAddress {
    let o = g.octets();
    EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// Write an Ethernet + IPv6 + ICMPv6 ND frame into `buf` (exactly
/// [`frame_len`]`(opt)` bytes): `body` is the 4 bytes after the checksum, then the
/// target, then one link-layer option of type `opt.0` when given.
#[allow(clippy::too_many_arguments)]
fn emit(
    buf: &mut [u8],
    eth_src: EthernetAddress,
    eth_dst: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    kind: u8,
    flags: u8,
    target: Ipv6Addr,
    opt: Option<(u8, EthernetAddress)>,
) -> Option<()> {
    let icmp_len = 24 + if opt.is_some() { 8 } else { 0 };
    EthernetRepr { src: eth_src, dst: eth_dst, vlan_tci: None, ethertype: EtherType::Ipv6 }.emit(buf).ok()?;
    let ip = buf.get_mut(14..)?;
    Ipv6Repr {
        src,
        dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: u16::try_from(icmp_len).ok()?,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(ip)
    .ok()?;
    let icmp = ip.get_mut(ipv6::HEADER_LEN..ipv6::HEADER_LEN + icmp_len)?;
    icmp.fill(0);
    *icmp.first_mut()? = kind;
    *icmp.get_mut(4)? = flags;
    icmp.get_mut(8..24)?.copy_from_slice(&target.octets());
    if let Some((t, mac)) = opt {
        let o = icmp.get_mut(24..32)?;
        o.copy_from_slice(&[t, 1, mac.0[0], mac.0[1], mac.0[2], mac.0[3], mac.0[4], mac.0[5]]);
    }
    let mut sum: Sum = pseudo_v6(src, dst, 58, u32::try_from(icmp_len).ok()?);
    sum.add_bytes(icmp);
    let c = !sum.fold();
    icmp.get_mut(2..4)?.copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// Length of an ND frame with or without a link-layer option.
pub const fn frame_len(with_option: bool) -> usize {
    14 + ipv6::HEADER_LEN + 24 + if with_option { 8 } else { 0 }
}

/// The advertisement answering solicitation `ns` for our address `ns.target`, from
/// interface MAC `mac`, to the requester at Ethernet `eth_src`. Returns whether the
/// frame carries the option (its length is [`frame_len`] of that).
pub fn write_advert(buf: &mut [u8], ns: &NdMsg, mac: EthernetAddress, eth_src: EthernetAddress) -> Option<bool> {
    let multicast = ns.dst.is_multicast();
    let dad = ns.src.is_unspecified();
    let (dst, eth_dst) = if dad {
        let all = Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        (all, multicast_mac(all))
    } else {
        (ns.src, ns.lladdr.unwrap_or(eth_src))
    };
    let mut flags = FLAG_ROUTER;
    if !dad {
        flags |= FLAG_SOLICITED;
    }
    if multicast {
        flags |= FLAG_OVERRIDE;
    }
    let opt = multicast.then_some((OPT_TLLA, mac));
    emit(buf.get_mut(..frame_len(multicast))?, mac, eth_dst, ns.target, dst, NA, flags, ns.target, opt)?;
    Some(multicast)
}

/// A solicitation for `target` from interface (`mac`, `src`).
pub fn write_solicit(buf: &mut [u8], mac: EthernetAddress, src: Ipv6Addr, target: Ipv6Addr) -> Option<()> {
    let (group, eth) = solicited_node(target);
    emit(buf.get_mut(..frame_len(true))?, mac, eth, src, group, NS, 0, target, Some((OPT_SLLA, mac)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::hex;

    const A_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x0a]);
    const R_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 1]);

    /// Frames captured from Linux 6.18 (router `ra` = 02:00:00:00:01:01, fd00:1::1/64,
    /// forwarding on) answering solicitations from fd00:1::2 at 02:00:00:00:00:0a.
    const LINUX_NA_MULTICAST: &str = "02000000000a02000000010186dd6000000000203afffd000001000000000000000000000001fd00000100000000000000000000000288009b98e0000000fd0000010000000000000000000000010201020000000101";
    const LINUX_NA_UNICAST: &str = "02000000000a02000000010186dd6000000000183afffd000001000000000000000000000001fd0000010000000000000000000000028800c0a2c0000000fd000001000000000000000000000001";
    /// Linux soliciting fe80::a from fe80::ff:fe00:101.
    const LINUX_NS: &str = "3333ff00000a02000000010186dd6000000000203afffe80000000000000000000fffe000101ff0200000000000000000001ff00000a8700798700000000fe80000000000000000000000000000a0101020000000101";

    #[test]
    fn advertisements_match_linux() {
        let a: Ipv6Addr = "fd00:1::2".parse().unwrap();
        let t: Ipv6Addr = "fd00:1::1".parse().unwrap();
        let (group, _) = solicited_node(t);
        let ns = NdMsg { kind: NS, src: a, dst: group, target: t, lladdr: Some(A_MAC), flags: 0 };
        let mut b = [0u8; 128];
        assert_eq!(write_advert(&mut b, &ns, R_MAC, A_MAC), Some(true));
        assert_eq!(&b[..frame_len(true)], &hex(LINUX_NA_MULTICAST)[..]);
        let ns = NdMsg { dst: t, lladdr: None, ..ns };
        assert_eq!(write_advert(&mut b, &ns, R_MAC, A_MAC), Some(false));
        assert_eq!(&b[..frame_len(false)], &hex(LINUX_NA_UNICAST)[..]);
    }

    #[test]
    fn solicitation_matches_linux_and_checks() {
        let mut b = [0u8; 128];
        let src: Ipv6Addr = "fe80::ff:fe00:101".parse().unwrap();
        write_solicit(&mut b, R_MAC, src, "fe80::a".parse().unwrap()).unwrap();
        let f = hex(LINUX_NS);
        assert_eq!(&b[..frame_len(true)], &f[..]);
        let m = check(&f[14..]).unwrap();
        assert_eq!((m.kind, m.target, m.lladdr), (NS, "fe80::a".parse().unwrap(), Some(R_MAC)));
        // Hop limit not 255, a bad checksum, a zero-length option: all discarded.
        let mut g = f.clone();
        g[21] = 254;
        assert_eq!(check(&g[14..]), Err(DropReason::NdInvalid));
        let mut g = f.clone();
        g[60] ^= 1;
        assert_eq!(check(&g[14..]), Err(DropReason::NdInvalid));
        let mut g = f.clone();
        g[79] = 0;
        assert_eq!(check(&g[14..]), Err(DropReason::NdInvalid));
        assert_eq!(check(&f[14..40]), Err(DropReason::NdInvalid));
    }
}
