//! The `virtio_net_hdr` a TAP opened with `IFF_VNET_HDR` puts before every frame, and
//! what the driver does with the offloads it announces: complete a partial checksum
//! (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, the pod's stack left it to "hardware") and cut a
//! TCP super-frame (`GSO_TCPV4` / `GSO_TCPV6`, up to 64 KiB) into MTU-sized segments,
//! as the kernel's `tcp_gso_segment` does: the headers copied to every segment, IPv4
//! total length / ID (+1 per segment) / header checksum and IPv6 payload length
//! rewritten, the TCP sequence number advanced, FIN and PSH kept only on the last
//! segment and CWR only on the first, and every TCP checksum computed in full.
//!
//! The layout is `struct virtio_net_hdr` (10 bytes) in the host's byte order (tun's
//! default without `TUNSETVNETLE`/`BE`; little-endian on the machines podplane runs on).

use podplane::buf::{BufPool, Owner, PktId};
use podplane::wire::checksum::{Sum, checksum};

/// Size of `struct virtio_net_hdr` (tun's default `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum holds only the pseudo-header sum.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN` (a flag on the GSO type).
pub const GSO_ECN: u8 = 0x80;
/// Most segments one super-frame may produce (64 KiB at the smallest sane MSS, 1 KiB).
pub const MAX_SEGMENTS: usize = 64;

/// A parsed `virtio_net_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` and friends.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the headers (a hint; recomputed from the packet here).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Read a header from its 10 bytes.
    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr { flags: b[0], gso_type: b[1], hdr_len: u(2), gso_size: u(4), csum_start: u(6), csum_offset: u(8) }
    }

    /// The 10 bytes of this header.
    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// Why an offloaded frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadError {
    /// Too short for its own header fields.
    Malformed,
    /// A GSO type the driver did not announce (UDP, say).
    UnsupportedGso,
    /// More than [`MAX_SEGMENTS`] segments, or a zero segment size.
    BadSegmentSize,
    /// The pool had no slot for a segment (those already made were kept).
    NoBuffer,
}

/// Complete a partial checksum in place: the field at `csum_start + csum_offset` holds
/// the pseudo-header sum; the checksum is the complement of the sum from
/// `csum_start` to the end (the field included).
///
/// # Errors
/// [`OffloadError::Malformed`] when the offsets fall outside the frame.
pub fn complete_checksum(frame: &mut [u8], h: &VnetHdr) -> Result<(), OffloadError> {
    let start = usize::from(h.csum_start);
    let at = start + usize::from(h.csum_offset);
    if at + 2 > frame.len() {
        return Err(OffloadError::Malformed);
    }
    let c = checksum(&frame[start..]);
    // A UDP checksum of zero means "none": send all ones instead (RFC 768).
    let c = if h.csum_offset == 6 && c == 0 { 0xffff } else { c };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Where the network header starts (after Ethernet and one 802.1Q tag), with its
/// EtherType.
fn l3_of(frame: &[u8]) -> Option<(usize, u16)> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if et == 0x8100 {
        return Some((18, u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?])));
    }
    Some((14, et))
}

/// Cut the TCP super-frame `frame` (with header `h`) into segments of at most
/// `h.gso_size` payload bytes, each in a fresh slot of `pool` at its default headroom
/// (owned by `owner`), handed to `out` in order. Returns how many were made.
///
/// # Errors
/// See [`OffloadError`]; with `NoBuffer`, the segments made so far were handed out.
pub fn segment_tcp(
    frame: &[u8],
    h: &VnetHdr,
    pool: &mut BufPool,
    owner: Owner,
    mut out: impl FnMut(&mut BufPool, PktId),
) -> Result<usize, OffloadError> {
    let v4 = match h.gso_type & !GSO_ECN {
        GSO_TCPV4 => true,
        GSO_TCPV6 => false,
        _ => return Err(OffloadError::UnsupportedGso),
    };
    let (l3, et) = l3_of(frame).ok_or(OffloadError::Malformed)?;
    if et != if v4 { 0x0800 } else { 0x86dd } {
        return Err(OffloadError::Malformed);
    }
    let l4 = usize::from(h.csum_start);
    let min_l3 = if v4 { 20 } else { 40 };
    if l4 < l3 + min_l3 || l4 + 20 > frame.len() {
        return Err(OffloadError::Malformed);
    }
    if v4 {
        let ihl = usize::from(frame[l3] & 0x0f) * 4;
        if ihl < 20 || l3 + ihl > l4 {
            return Err(OffloadError::Malformed);
        }
    }
    let doff = usize::from(frame[l4 + 12] >> 4) * 4;
    let hdrs = l4 + doff;
    if doff < 20 || hdrs > frame.len() {
        return Err(OffloadError::Malformed);
    }
    let mss = usize::from(h.gso_size);
    let payload = &frame[hdrs..];
    if mss == 0 || payload.len().div_ceil(mss) > MAX_SEGMENTS {
        return Err(OffloadError::BadSegmentSize);
    }
    let seq0 = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let id0 = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
    let flags0 = frame[l4 + 13];
    let n = payload.len().div_ceil(mss).max(1);
    for i in 0..n {
        let chunk = payload.get(i * mss..payload.len().min((i + 1) * mss)).unwrap_or(&[]);
        let Some(pkt) = pool.alloc(owner) else { return Err(OffloadError::NoBuffer) };
        let len = hdrs + chunk.len();
        let (hdr_part, rest) = {
            let room = pool.tailroom(pkt);
            if len > room {
                let _ = pool.free(pkt);
                return Err(OffloadError::BadSegmentSize);
            }
            let b = pool.push_back(pkt, len).map_err(|_| OffloadError::NoBuffer)?;
            b.split_at_mut(hdrs)
        };
        hdr_part.copy_from_slice(&frame[..hdrs]);
        rest.copy_from_slice(chunk);
        let seg = pool.data_mut(pkt);
        let i32_ = u32::try_from(i).unwrap_or(0);
        // TCP: sequence, flags.
        let seq = seq0.wrapping_add(i32_.wrapping_mul(u32::from(h.gso_size)));
        seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut fl = flags0;
        if i + 1 < n {
            fl &= !(0x01 | 0x08); // FIN, PSH: last segment only
        }
        if i > 0 {
            fl &= !0x80; // CWR: first segment only
        }
        seg[l4 + 13] = fl;
        let tcp_len = len - l4;
        let mut sum = if v4 {
            let ihl = usize::from(seg[l3] & 0x0f) * 4;
            let total = u16::try_from(len - l3).unwrap_or(u16::MAX);
            seg[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            seg[l3 + 4..l3 + 6].copy_from_slice(&id0.wrapping_add(u16::try_from(i).unwrap_or(0)).to_be_bytes());
            seg[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let c = checksum(&seg[l3..l3 + ihl]);
            seg[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            let mut s = Sum::new();
            s.add_bytes(&seg[l3 + 12..l3 + 20]);
            s.add_u16(6);
            s.add_u16(u16::try_from(tcp_len).unwrap_or(u16::MAX));
            s
        } else {
            let plen = u16::try_from(len - l3 - 40).unwrap_or(u16::MAX);
            seg[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
            let mut s = Sum::new();
            s.add_bytes(&seg[l3 + 8..l3 + 40]);
            s.add_bytes(&u32::try_from(tcp_len).unwrap_or(0).to_be_bytes());
            s.add_u16(6);
            s
        };
        seg[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        sum.add_bytes(&seg[l4..]);
        seg[l4 + 16..l4 + 18].copy_from_slice(&sum.checksum().to_be_bytes());
        out(pool, pkt);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    /// A TCP frame as a pod's stack hands it over with offloads on: payload `len`
    /// bytes, the TCP checksum field holding only the pseudo-header sum.
    fn super_frame(v4: bool, payload: &[u8], flags_fin_psh_cwr: (bool, bool, bool)) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = if v4 { b.ipv4([10, 244, 1, 2], [10, 244, 1, 3], 64) } else { b.ipv6([0xfd; 16], [0xfe; 16], 64) };
        let mut b = b.tcp(40000, 80, 1_000_000, 65535).ack(77);
        if flags_fin_psh_cwr.0 {
            b = b.fin();
        }
        if flags_fin_psh_cwr.1 {
            b = b.psh();
        }
        if flags_fin_psh_cwr.2 {
            b = b.cwr();
        }
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        // Replace the full checksum with the pseudo-header sum, as CHECKSUM_PARTIAL.
        let (l3, l4) = (14, if v4 { 34 } else { 54 });
        let tcp_len = f.len() - l4;
        let mut s = Sum::new();
        if v4 {
            s.add_bytes(&f[l3 + 12..l3 + 20]);
            s.add_u16(6);
            s.add_u16(u16::try_from(tcp_len).unwrap());
        } else {
            s.add_bytes(&f[l3 + 8..l3 + 40]);
            s.add_bytes(&u32::try_from(tcp_len).unwrap().to_be_bytes());
            s.add_u16(6);
        }
        f[l4 + 16..l4 + 18].copy_from_slice(&s.fold().to_be_bytes());
        f
    }

    fn hdr(v4: bool, mss: u16) -> VnetHdr {
        let l4 = if v4 { 34 } else { 54 };
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v4 { GSO_TCPV4 } else { GSO_TCPV6 },
            hdr_len: l4 + 20,
            gso_size: mss,
            csum_start: l4,
            csum_offset: 16,
        }
    }

    #[test]
    fn header_round_trips_in_host_order() {
        let h = hdr(true, 1448);
        let b = h.emit();
        assert_eq!(b, [1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&b), h);
    }

    #[test]
    fn partial_checksum_is_completed_to_the_full_one() {
        let mut f = super_frame(true, b"hello world", (false, true, false));
        complete_checksum(&mut f, &hdr(true, 0)).unwrap();
        {
            let p = SlicedPacket::from_ethernet(&f).unwrap();
            let Some(TransportSlice::Tcp(t)) = p.transport else { panic!() };
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
            let want = t.to_header().calc_checksum_ipv4(&ip.header().to_header(), t.payload()).unwrap();
            assert_eq!(t.checksum(), want);
        }
        let bad = VnetHdr { csum_start: 60, ..hdr(true, 0) };
        assert_eq!(complete_checksum(&mut f, &bad), Err(OffloadError::Malformed));
    }

    fn segments(frame: &[u8], h: &VnetHdr) -> (BufPool, Vec<PktId>, Result<usize, OffloadError>) {
        let mut pool = BufPool::with_slots(80).unwrap();
        let mut got = Vec::new();
        let r = segment_tcp(frame, h, &mut pool, Owner::Pipeline, |_, p| got.push(p));
        (pool, got, r)
    }

    #[test]
    fn gso_v4_frame_is_cut_as_the_kernel_cuts_it() {
        let payload: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        let f = super_frame(true, &payload, (true, true, true));
        let (pool, segs, r) = segments(&f, &hdr(true, 1448));
        assert_eq!(r, Ok(3));
        let id0 = u16::from_be_bytes([f[18], f[19]]);
        for (i, &p) in segs.iter().enumerate() {
            let d = pool.data(p);
            let s = SlicedPacket::from_ethernet(d).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else { panic!() };
            let Some(TransportSlice::Tcp(t)) = s.transport else { panic!() };
            let want_len = [1448, 1448, 1104][i];
            assert_eq!(t.payload().len(), want_len);
            assert_eq!(ip.header().total_len(), u16::try_from(40 + want_len).unwrap());
            assert_eq!(ip.header().identification(), id0.wrapping_add(u16::try_from(i).unwrap()));
            assert_eq!(ip.header().header_checksum(), ip.header().to_header().calc_header_checksum());
            assert_eq!(t.sequence_number(), 1_000_000 + 1448 * u32::try_from(i).unwrap());
            assert_eq!((t.fin(), t.psh(), t.cwr()), (i == 2, i == 2, i == 0));
            assert!(t.ack() && t.acknowledgment_number() == 77);
            let c = t.to_header().calc_checksum_ipv4(&ip.header().to_header(), t.payload()).unwrap();
            assert_eq!(t.checksum(), c);
        }
    }

    #[test]
    fn bad_offloads_are_refused() {
        let f = super_frame(true, &[7; 3000], (false, false, false));
        assert_eq!(segments(&f, &VnetHdr { gso_type: 3, ..hdr(true, 1448) }).2, Err(OffloadError::UnsupportedGso));
        assert_eq!(segments(&f, &hdr(true, 0)).2, Err(OffloadError::BadSegmentSize));
        assert_eq!(segments(&f, &hdr(true, 10)).2, Err(OffloadError::BadSegmentSize));
        // A segment that cannot fit a slot (2048 - 128 headroom) is refused whole.
        assert_eq!(segments(&f, &hdr(true, 1900)).2, Err(OffloadError::BadSegmentSize));
        assert_eq!(segments(&f, &hdr(false, 1448)).2, Err(OffloadError::Malformed));
        assert_eq!(segments(&f[..40], &hdr(true, 1448)).2, Err(OffloadError::Malformed));
        assert_eq!(segments(&f, &VnetHdr { csum_start: 20, ..hdr(true, 1448) }).2, Err(OffloadError::Malformed));
        // Pool exhaustion: the segments made so far are handed out, then the error.
        let mut pool = BufPool::with_slots(1).unwrap();
        let mut got = 0;
        let r = segment_tcp(&f, &hdr(true, 1448), &mut pool, Owner::Pipeline, |_, _| got += 1);
        assert_eq!((r, got), (Err(OffloadError::NoBuffer), 1));
    }

    proptest! {
        /// Any bytes with any header: an error or segments, never a panic.
        #[test]
        fn any_input_is_safe(
            frame in proptest::collection::vec(any::<u8>(), 0..3000),
            b in any::<[u8; VNET_HDR_LEN]>(),
        ) {
            let h = VnetHdr::parse(&b);
            let mut f = frame.clone();
            let _ = complete_checksum(&mut f, &h);
            let (pool, segs, r) = segments(&frame, &h);
            if let Ok(n) = r {
                prop_assert_eq!(n, segs.len());
            }
            prop_assert!(pool.available() + segs.len() == 80);
        }

        /// A valid super-frame with bytes and header fields changed: never a panic,
        /// and no slot lost.
        #[test]
        fn mutated_super_frames_are_safe(
            v4 in any::<bool>(),
            edits in proptest::collection::vec((0usize..120, any::<u8>()), 0..8),
            cut in 0usize..3100,
            mss in 0u16..3000,
            start in 0u16..120,
        ) {
            let mut f = super_frame(v4, &[5; 3000], (true, false, false));
            for (i, v) in edits {
                if let Some(b) = f.get_mut(i) { *b = v; }
            }
            f.truncate(cut.max(1));
            let h = VnetHdr { gso_size: mss, csum_start: start, ..hdr(v4, mss) };
            let (pool, segs, _) = segments(&f, &h);
            prop_assert!(pool.available() + segs.len() == 80);
            let _ = complete_checksum(&mut f, &h);
        }

        /// Model: the segments' payloads, in order, are the super-frame's payload;
        /// every segment is a valid TCP packet (etherparse as the oracle) whose
        /// sequence number is where its payload starts.
        #[test]
        fn segments_reassemble_to_the_payload(
            v4 in any::<bool>(),
            len in 0usize..20000,
            mss in 536u16..1800,
            seed in any::<u8>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| i.to_le_bytes()[0].wrapping_mul(31).wrapping_add(seed)).collect();
            let f = super_frame(v4, &payload, (true, true, false));
            let (pool, segs, r) = segments(&f, &hdr(v4, mss));
            prop_assert_eq!(r, Ok(segs.len()));
            prop_assert_eq!(segs.len(), len.div_ceil(usize::from(mss)).max(1));
            let mut joined = Vec::new();
            for &p in &segs {
                let s = SlicedPacket::from_ethernet(pool.data(p)).unwrap();
                let Some(TransportSlice::Tcp(t)) = s.transport else { panic!() };
                prop_assert_eq!(t.sequence_number(), 1_000_000u32.wrapping_add(u32::try_from(joined.len()).unwrap()));
                let ok = match &s.net {
                    Some(etherparse::NetSlice::Ipv4(ip)) => t.to_header().calc_checksum_ipv4(&ip.header().to_header(), t.payload()).unwrap(),
                    Some(etherparse::NetSlice::Ipv6(ip)) => t.to_header().calc_checksum_ipv6(&ip.header().to_header(), t.payload()).unwrap(),
                    _ => panic!(),
                };
                prop_assert_eq!(t.checksum(), ok);
                joined.extend_from_slice(t.payload());
            }
            prop_assert_eq!(joined, payload);
        }
    }
}
