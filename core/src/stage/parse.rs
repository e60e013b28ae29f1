//! The `parse` stage: validates the headers of every received frame, fills the
//! packet metadata (offsets, L3 kind, transport protocol, flow key, flags) and drops
//! malformed frames with a precise reason. Every later stage trusts what it wrote.
//!
//! What it checks, and what Linux does with the same frame:
//! - Ethernet header (and one 802.1Q tag) present, else `runt_frame`. Frames under
//!   the 60-byte Ethernet minimum are accepted: TAP devices deliver them unpadded.
//! - Source MAC not multicast/broadcast/zero, else `invalid_src_mac` (the bridge's
//!   `br_handle_frame()` drops these with `is_valid_ether_addr()`).
//! - ARP: Ethernet/IPv4 and 28 bytes (`arp_truncated`, `arp_unsupported`), as
//!   `arp_rcv()` requires.
//! - IPv4 as `ip_rcv_core()`: version, IHL >= 5, total length >= IHL and within the
//!   frame, header checksum (per [`ChecksumPolicy`]); trailing Ethernet padding is
//!   trimmed (`pskb_trim_rcsum`).
//! - IPv6 as `ipv6_rcv()`: version, payload length within the frame; extension
//!   headers walked to the transport (bounded); padding trimmed.
//! - TCP, UDP, ICMP, ICMPv6 headers complete (UDP length field in 8..=payload; not
//!   trimmed to it: Linux trims in `udp_rcv()` only on local delivery, and a forwarder
//!   passes the bytes on); their checksums only if the policy says so.
//!   Later fragments carry no transport header and get no ports.
//! - Other EtherTypes and IP protocols pass without an L3/L4 view: the bridge still
//!   forwards them, and policy stages decide about unknown protocols.
//!
//! Batch order does not change results: every packet is parsed on its own.

use crate::buf::{Batch, CsumState, L3Kind, PktFlags, PktMeta};
use crate::pipeline::{Context, DropReason, Stage, TraceNote};
use crate::wire::checksum::{Sum, pseudo_v4, pseudo_v6, verify_ipv4_20};
use crate::wire::ethernet::{HEADER_LEN as ETH_LEN, TAGGED_HEADER_LEN};
use crate::wire::flow::FlowKey;
use crate::wire::icmp::IcmpPacket;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::{ChecksumPolicy, WireError, arp};

/// See the [module docs](self).
#[derive(Debug, Default)]
pub struct ParseStage;

impl ParseStage {
    /// A parse stage; the checksum policy comes from the context's config.
    pub const fn new() -> Self {
        ParseStage
    }

    fn run<const TRACE: bool>(cx: &mut Context<'_>, batch: &mut Batch) {
        let policy = cx.config.checksum;
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let pkt = batch.pkt(i);
            let (slot, meta) = cx.pool.slot_and_meta_mut(pkt);
            match parse_one(slot, meta, policy) {
                Ok(()) => {
                    if TRACE {
                        let m = *cx.pool.meta(pkt);
                        let note = match m.l3_kind {
                            L3Kind::None => TraceNote::Msg("no network layer (l2 only)"),
                            L3Kind::Arp => TraceNote::Msg("arp"),
                            L3Kind::Ipv4 | L3Kind::Ipv6 => TraceNote::Flow("flow", m.flow),
                        };
                        cx.trace_note(pkt, note);
                    }
                }
                Err(reason) => cx.drop(batch, i, reason),
            }
        }
    }
}

impl Stage for ParseStage {
    fn name(&self) -> &'static str {
        "parse"
    }

    fn skips_final_batches(&self) -> bool {
        true
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        if cx.tracing() { Self::run::<true>(cx, batch) } else { Self::run::<false>(cx, batch) }
    }
}

/// Parse one frame in `slot` (whole slot; the packet is at `meta.head`) and fill `meta`.
///
/// # Errors
/// The drop reason for the first layer that fails.
#[inline]
pub fn parse_one(slot: &[u8], meta: &mut PktMeta, policy: ChecksumPolicy) -> Result<(), DropReason> {
    let head = usize::from(meta.head());
    let end = head + usize::from(meta.len());
    let frame = slot.get(head..end).ok_or(DropReason::RuntFrame)?;
    let Some(eth) = frame.first_chunk::<ETH_LEN>() else {
        return Err(DropReason::RuntFrame);
    };
    // Source MAC: group bit set, or all zero (Linux `is_valid_ether_addr`).
    if eth[6] & 1 != 0 || eth[6..12] == [0; 6] {
        return Err(DropReason::InvalidSrcMac);
    }
    let mut flags = PktFlags::PARSED;
    if eth[0] & 1 != 0 {
        flags |= PktFlags::L2_MULTI;
    }
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut l3 = ETH_LEN;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        let Some(tag) = frame.first_chunk::<TAGGED_HEADER_LEN>() else {
            return Err(DropReason::RuntFrame);
        };
        meta.vlan_tci = u16::from_be_bytes([tag[14], tag[15]]);
        ethertype = u16::from_be_bytes([tag[16], tag[17]]);
        flags |= PktFlags::VLAN;
        l3 = TAGGED_HEADER_LEN;
    }
    meta.l2 = meta.head();
    // l3 <= 18 and head + l3 <= end <= slot size, so these fit u16.
    meta.l3 = meta.head() + l3_u16(l3);
    // Keep what the pipeline and the fast path set before parsing (trace flag,
    // generated, the fast path's snapshot).
    meta.flags = flags | (meta.flags & (PktFlags::TRACE | PktFlags::GENERATED | PktFlags::OFFLOAD));
    let l3_bytes = frame.get(l3..).unwrap_or(&[]);
    match ethertype {
        0x0800 => parse_ipv4(l3_bytes, meta, l3, policy),
        0x86dd => parse_ipv6(l3_bytes, meta, l3, policy),
        0x0806 => {
            arp::ArpPacket::new_checked(l3_bytes).map_err(|e| match e {
                WireError::Truncated => DropReason::ArpTruncated,
                _ => DropReason::ArpUnsupported,
            })?;
            meta.l3_kind = L3Kind::Arp;
            Ok(())
        }
        _ => {
            meta.l3_kind = L3Kind::None;
            Ok(())
        }
    }
}

#[inline]
fn l3_u16(v: usize) -> u16 {
    // Callers pass offsets inside a slot, which is at most 65472 bytes.
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// IPv4. The common header (version 4, IHL 5) is checked through a fixed-size array,
/// which the compiler reads without bounds checks; anything else (options, a bad
/// version or IHL) takes the general view, which also names the error.
#[inline]
fn parse_ipv4(b: &[u8], meta: &mut PktMeta, l3: usize, policy: ChecksumPolicy) -> Result<(), DropReason> {
    let Some(h) = b.first_chunk::<20>() else {
        return Err(DropReason::Ipv4Truncated);
    };
    if h[0] != 0x45 {
        return parse_ipv4_general(b, meta, l3, policy);
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if total < 20 {
        return Err(DropReason::Ipv4BadTotalLen);
    }
    if total > b.len() {
        return Err(DropReason::Ipv4Truncated);
    }
    if policy.ipv4 && !verify_ipv4_20(h) {
        return Err(DropReason::Ipv4BadChecksum);
    }
    ipv4_rest(b, h, 20, total, meta, l3, policy)
}

#[cold]
fn parse_ipv4_general(b: &[u8], meta: &mut PktMeta, l3: usize, policy: ChecksumPolicy) -> Result<(), DropReason> {
    let ip = Ipv4Packet::new_checked(b).map_err(|e| match e {
        WireError::BadVersion => DropReason::Ipv4BadVersion,
        WireError::BadHeaderLen => DropReason::Ipv4BadHeaderLen,
        WireError::BadLength => DropReason::Ipv4BadTotalLen,
        _ => DropReason::Ipv4Truncated,
    })?;
    if policy.ipv4 && !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    let h = b.first_chunk::<20>().ok_or(DropReason::Ipv4Truncated)?;
    ipv4_rest(b, h, ip.header_len(), usize::from(ip.total_len()), meta, l3, policy)
}

/// After the IPv4 header checks: metadata, fragments, transport. `hlen <= total <=
/// b.len()` holds.
#[inline(always)]
fn ipv4_rest(
    b: &[u8],
    h: &[u8; 20],
    hlen: usize,
    total: usize,
    meta: &mut PktMeta,
    l3: usize,
    policy: ChecksumPolicy,
) -> Result<(), DropReason> {
    // Trim Ethernet padding: the packet ends where the IPv4 total length says.
    meta.trim(l3_u16(l3 + total));
    meta.l3_kind = L3Kind::Ipv4;
    let proto = h[9];
    meta.ip_proto = proto;
    // Written field by field into the metadata: building a FlowKey and copying it
    // cost 15 more instructions per packet (callgrind).
    meta.flow.src = v4_in_16([h[12], h[13], h[14], h[15]]);
    meta.flow.dst = v4_in_16([h[16], h[17], h[18], h[19]]);
    meta.flow.proto = proto;
    meta.flow.v6 = false;
    meta.flow.src_port = 0;
    meta.flow.dst_port = 0;
    meta.flags |= PktFlags::HAS_FLOW;
    let frag = u16::from_be_bytes([h[6], h[7]]);
    // MF set or a non-zero offset (RFC 791).
    if frag & 0x3fff != 0 {
        meta.flags |= PktFlags::FRAGMENT;
        if frag & 0x1fff != 0 {
            meta.flags |= PktFlags::LATER_FRAGMENT;
            return Ok(());
        }
    }
    let payload = b.get(hlen..total).unwrap_or(&[]);
    let pseudo = if policy.l4 {
        let src = std::net::Ipv4Addr::new(h[12], h[13], h[14], h[15]);
        let dst = std::net::Ipv4Addr::new(h[16], h[17], h[18], h[19]);
        pseudo_v4(src, dst, proto, l3_u16(payload.len()))
    } else {
        Sum::new()
    };
    parse_l4(payload, proto, pseudo, policy.l4, true, meta, l3 + hlen)
}

/// IPv4 address bytes in the 16-byte flow-key form.
#[inline(always)]
fn v4_in_16(a: [u8; 4]) -> [u8; 16] {
    [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

#[inline]
fn parse_ipv6(b: &[u8], meta: &mut PktMeta, l3: usize, policy: ChecksumPolicy) -> Result<(), DropReason> {
    let ip = Ipv6Packet::new_checked(b).map_err(|e| match e {
        WireError::BadVersion => DropReason::Ipv6BadVersion,
        _ => DropReason::Ipv6Truncated,
    })?;
    let total = crate::wire::ipv6::HEADER_LEN + usize::from(ip.payload_len());
    meta.trim(l3_u16(l3 + total));
    meta.l3_kind = L3Kind::Ipv6;
    let t = ip.transport().map_err(|e| match e {
        WireError::Unsupported => DropReason::Ipv6TooManyExtHeaders,
        _ => DropReason::Ipv6BadExtHeader,
    })?;
    let proto: u8 = t.protocol.into();
    meta.ip_proto = proto;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    meta.flow = FlowKey::v6(src, dst, proto, 0, 0);
    meta.flags |= PktFlags::HAS_FLOW;
    if t.fragment {
        meta.flags |= PktFlags::FRAGMENT;
        if t.later_fragment {
            meta.flags |= PktFlags::LATER_FRAGMENT;
            return Ok(());
        }
    }
    let payload = b.get(t.offset..total).unwrap_or(&[]);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let pseudo = if policy.l4 { pseudo_v6(src, dst, proto, len) } else { Sum::new() };
    parse_l4(payload, proto, pseudo, policy.l4, false, meta, l3 + t.offset)
}

/// Source and destination port from the first four bytes of a transport header.
#[inline(always)]
fn ports(p: &[u8; 4]) -> (u16, u16) {
    (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]))
}

/// Record a transport header at `l4_off` (from the packet start) with these ports.
#[inline(always)]
fn set_l4(meta: &mut PktMeta, l4_off: usize, (sport, dport): (u16, u16), verified: bool) {
    meta.flags |= PktFlags::HAS_L4;
    meta.l4 = meta.head() + l3_u16(l4_off);
    meta.flow.src_port = sport;
    meta.flow.dst_port = dport;
    if verified {
        meta.csum = CsumState::Verified;
    }
}

/// Parse the transport header of protocol `proto` in `b` (at `l4_off` from the packet
/// start) into `meta`. `v4` selects ICMP vs ICMPv6 and the UDP zero-checksum rule;
/// `pseudo` is the pseudo-header sum when `verify` is set.
#[inline(always)]
fn parse_l4(
    b: &[u8],
    proto: u8,
    pseudo: Sum,
    verify: bool,
    v4: bool,
    meta: &mut PktMeta,
    l4_off: usize,
) -> Result<(), DropReason> {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;
    const ICMPV6: u8 = 58;
    const SCTP: u8 = 132;
    match proto {
        UDP => {
            let Some(u) = b.first_chunk::<8>() else {
                return Err(DropReason::UdpTruncated);
            };
            let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
            if ulen < 8 {
                return Err(DropReason::UdpBadLength);
            }
            // A first fragment holds only part of the datagram: its length and
            // checksum cover the rest too, checked by whoever reassembles.
            let first_fragment = meta.flags.contains(PktFlags::FRAGMENT);
            if ulen > b.len() && !first_fragment {
                return Err(DropReason::UdpTruncated);
            }
            if verify && !first_fragment && !UdpPacket::new_unchecked(b).verify_checksum(pseudo, v4) {
                return Err(DropReason::UdpBadChecksum);
            }
            set_l4(meta, l4_off, ports(&[u[0], u[1], u[2], u[3]]), verify);
            Ok(())
        }
        TCP => {
            let Some(t) = b.first_chunk::<20>() else {
                return Err(DropReason::TcpTruncated);
            };
            let hl = usize::from(t[12] >> 4) * 4;
            if hl < 20 {
                return Err(DropReason::TcpBadHeaderLen);
            }
            if hl > b.len() {
                return Err(DropReason::TcpTruncated);
            }
            if verify && !TcpPacket::new_unchecked(b).verify_checksum(pseudo) {
                return Err(DropReason::TcpBadChecksum);
            }
            set_l4(meta, l4_off, ports(&[t[0], t[1], t[2], t[3]]), verify);
            Ok(())
        }
        ICMP | ICMPV6 if (proto == ICMP) == v4 => {
            let m = IcmpPacket::new_checked(b).map_err(|_| DropReason::IcmpTruncated)?;
            // ICMPv4 has no pseudo-header (RFC 792); ICMPv6 has (RFC 4443 2.3).
            let ps = if v4 { Sum::new() } else { pseudo };
            if verify && !m.verify_checksum(ps) {
                return Err(DropReason::IcmpBadChecksum);
            }
            // Echo request/reply (v4: 8/0, v6: 128/129): the identifier is the flow's
            // "port" in both directions, as conntrack keys ICMP echo.
            let t = m.msg_type();
            let echo = if v4 { t == 8 || t == 0 } else { t == 128 || t == 129 };
            let id = if echo { m.echo_ident() } else { 0 };
            set_l4(meta, l4_off, (id, id), verify);
            Ok(())
        }
        SCTP => {
            // SCTP common header (RFC 9260 3.1): ports in the first four bytes, the
            // CRC32c in bytes 8..12 (not verified here). A whole common header makes
            // the ports NAT can rewrite (HAS_L4); shorter, ports only if there.
            if let Some(h) = b.first_chunk::<12>() {
                set_l4(meta, l4_off, ports(&[h[0], h[1], h[2], h[3]]), false);
            } else if let Some(p) = b.first_chunk::<4>() {
                (meta.flow.src_port, meta.flow.dst_port) = ports(p);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
