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
use crate::wire::checksum::{Sum, pseudo_v4, pseudo_v6};
use crate::wire::ethernet::{HEADER_LEN as ETH_LEN, TAGGED_HEADER_LEN};
use crate::wire::flow::FlowKey;
use crate::wire::icmp::IcmpPacket;
use crate::wire::ip::IpProtocol;
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
    // Keep what the pipeline set before parsing (trace flag, generated).
    meta.flags = flags | (meta.flags & (PktFlags::TRACE | PktFlags::GENERATED));
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

#[inline]
fn parse_ipv4(b: &[u8], meta: &mut PktMeta, l3: usize, policy: ChecksumPolicy) -> Result<(), DropReason> {
    let ip = Ipv4Packet::new_checked(b).map_err(|e| match e {
        WireError::BadVersion => DropReason::Ipv4BadVersion,
        WireError::BadHeaderLen => DropReason::Ipv4BadHeaderLen,
        WireError::BadLength => DropReason::Ipv4BadTotalLen,
        _ => DropReason::Ipv4Truncated,
    })?;
    if policy.ipv4 && !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    let total = usize::from(ip.total_len());
    let hlen = ip.header_len();
    // Trim Ethernet padding: the packet ends where the IPv4 total length says.
    meta.trim(l3_u16(l3 + total));
    meta.l3_kind = L3Kind::Ipv4;
    let proto = ip.protocol();
    meta.ip_proto = proto.into();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let mut flow = FlowKey::v4(src, dst, meta.ip_proto, 0, 0);
    if ip.is_fragment() {
        meta.flags |= PktFlags::FRAGMENT;
        if ip.frag_offset() != 0 {
            meta.flags |= PktFlags::LATER_FRAGMENT | PktFlags::HAS_FLOW;
            meta.flow = flow;
            return Ok(());
        }
    }
    let payload = b.get(hlen..total).unwrap_or(&[]);
    let pseudo = if policy.l4 { pseudo_v4(src, dst, meta.ip_proto, l3_u16(payload.len())) } else { Sum::new() };
    let ports = parse_l4(payload, proto, IpProtocol::Icmp, pseudo, policy.l4, true)?;
    finish_l4(meta, l3 + hlen, ports, &mut flow, policy.l4);
    meta.flow = flow;
    Ok(())
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
    meta.ip_proto = t.protocol.into();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let mut flow = FlowKey::v6(src, dst, meta.ip_proto, 0, 0);
    if t.fragment {
        meta.flags |= PktFlags::FRAGMENT;
        if t.later_fragment {
            meta.flags |= PktFlags::LATER_FRAGMENT | PktFlags::HAS_FLOW;
            meta.flow = flow;
            return Ok(());
        }
    }
    let payload = b.get(t.offset..total).unwrap_or(&[]);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let pseudo = if policy.l4 { pseudo_v6(src, dst, meta.ip_proto, len) } else { Sum::new() };
    let ports = parse_l4(payload, t.protocol, IpProtocol::Icmpv6, pseudo, policy.l4, false)?;
    finish_l4(meta, l3 + t.offset, ports, &mut flow, policy.l4);
    meta.flow = flow;
    Ok(())
}

/// What the transport parse found: ports (or echo id), and whether there was a
/// transport header we understand.
#[derive(Clone, Copy)]
struct L4 {
    ports: Option<(u16, u16)>,
    known: bool,
}

#[inline]
fn finish_l4(meta: &mut PktMeta, l4_off: usize, l4: L4, flow: &mut FlowKey, verified: bool) {
    meta.flags |= PktFlags::HAS_FLOW;
    if l4.known {
        meta.flags |= PktFlags::HAS_L4;
        meta.l4 = meta.head() + l3_u16(l4_off);
        if verified {
            meta.csum = CsumState::Verified;
        }
    }
    if let Some((s, d)) = l4.ports {
        flow.src_port = s;
        flow.dst_port = d;
    }
}

/// Parse the transport header of `proto` in `b`. `icmp` is the ICMP protocol of this
/// IP version; `v4` selects the UDP zero-checksum rule.
#[inline]
fn parse_l4(
    b: &[u8],
    proto: IpProtocol,
    icmp: IpProtocol,
    pseudo: Sum,
    verify: bool,
    v4: bool,
) -> Result<L4, DropReason> {
    match proto {
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(b).map_err(|e| match e {
                WireError::BadLength => DropReason::UdpBadLength,
                _ => DropReason::UdpTruncated,
            })?;
            if verify && !u.verify_checksum(pseudo, v4) {
                return Err(DropReason::UdpBadChecksum);
            }
            Ok(L4 { ports: Some((u.src_port(), u.dst_port())), known: true })
        }
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(b).map_err(|e| match e {
                WireError::BadHeaderLen => DropReason::TcpBadHeaderLen,
                _ => DropReason::TcpTruncated,
            })?;
            if verify && !t.verify_checksum(pseudo) {
                return Err(DropReason::TcpBadChecksum);
            }
            Ok(L4 { ports: Some((t.src_port(), t.dst_port())), known: true })
        }
        p if p == icmp => {
            let m = IcmpPacket::new_checked(b).map_err(|_| DropReason::IcmpTruncated)?;
            // ICMPv4 has no pseudo-header; `pseudo` is empty for it when v4.
            let ps = if v4 { Sum::new() } else { pseudo };
            if verify && !m.verify_checksum(ps) {
                return Err(DropReason::IcmpBadChecksum);
            }
            // Echo request/reply (v4: 8/0, v6: 128/129): the identifier is the flow's
            // "port" in both directions, as conntrack keys ICMP echo.
            let t = m.msg_type();
            let echo = if v4 { t == 8 || t == 0 } else { t == 128 || t == 129 };
            let id = m.echo_ident();
            Ok(L4 { ports: echo.then_some((id, id)), known: true })
        }
        IpProtocol::Sctp => {
            // SCTP common header: ports in the first four bytes (RFC 9260 3.1).
            // Shorter than that: no ports (no service or policy port can match it).
            let ports =
                b.first_chunk::<4>().map(|h| (u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]])));
            Ok(L4 { ports, known: false })
        }
        _ => Ok(L4 { ports: None, known: false }),
    }
}
