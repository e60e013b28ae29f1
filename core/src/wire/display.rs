//! One-line, tcpdump-like rendering of an Ethernet frame, for traces, the CLI and test
//! failures. It reads header fields only and tolerates a frame cut short (a trace
//! snapshot, a pcap snaplen): lengths shown are the headers' own. A layer too short
//! or malformed to read is printed as `[<layer>: <error>]` instead of failing.

use core::fmt;

use super::arp::ArpPacket;
use super::ethernet::{EtherType, EthernetFrame};
use super::ip::IpProtocol;
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::tcp::TcpFlags;
use super::{WireError, be16, be32};

/// Displays an Ethernet frame as one line.
#[derive(Clone, Copy, Debug)]
pub struct PrettyFrame<'a>(pub &'a [u8]);

impl fmt::Display for PrettyFrame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let eth = match EthernetFrame::new_checked(self.0) {
            Ok(e) => e,
            Err(e) => return write!(f, "[ethernet: {e}] {} bytes", self.0.len()),
        };
        write!(f, "{eth}")?;
        let l3 = eth.payload();
        match eth.ethertype() {
            EtherType::Arp => match ArpPacket::new_checked(l3) {
                Ok(a) => write!(f, ", {a}"),
                Err(e) => write!(f, ", [arp: {e}]"),
            },
            EtherType::Ipv4 => ipv4(f, l3),
            EtherType::Ipv6 => ipv6(f, l3),
            _ => write!(f, ", {} bytes", l3.len()),
        }
    }
}

fn ipv4(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    let ihl = usize::from(b.first().map_or(0, |v| v & 0x0f)) * 4;
    match Ipv4Packet::new_checked(b) {
        // Cut short but the header is whole: show it.
        Ok(_) | Err(WireError::Truncated) if b.len() >= ihl && ihl >= 20 && b[0] >> 4 == 4 => {
            let ip = Ipv4Packet::new_unchecked(b);
            write!(f, ", {ip}")?;
            if ip.frag_offset() != 0 {
                return Ok(());
            }
            let end = usize::from(ip.total_len()).clamp(ihl, b.len());
            let l4_len = usize::from(ip.total_len()).saturating_sub(ihl);
            transport(f, ip.protocol(), &b[ihl..end], l4_len)
        }
        Ok(_) => Ok(()),
        Err(e) => write!(f, ", [ipv4: {e}]"),
    }
}

fn ipv6(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
    match Ipv6Packet::new_checked(b) {
        Ok(_) | Err(WireError::Truncated) if b.len() >= 40 && b[0] >> 4 == 6 => {
            let ip = Ipv6Packet::new_unchecked(b);
            write!(f, ", {ip}")?;
            match ip.transport() {
                Ok(t) if !t.later_fragment => {
                    let full = super::ipv6::HEADER_LEN + usize::from(ip.payload_len());
                    let end = full.clamp(t.offset.min(b.len()), b.len());
                    transport(f, t.protocol, b.get(t.offset..end).unwrap_or(&[]), full.saturating_sub(t.offset))
                }
                Ok(_) => Ok(()),
                Err(e) => write!(f, ", [ipv6 ext: {e}]"),
            }
        }
        Ok(_) => Ok(()),
        Err(e) => write!(f, ", [ipv6: {e}]"),
    }
}

/// Print the transport header in `b` (possibly cut short); `len` is its length
/// according to the IP header.
fn transport(f: &mut fmt::Formatter<'_>, proto: IpProtocol, b: &[u8], len: usize) -> fmt::Result {
    match proto {
        IpProtocol::Udp if b.len() >= 8 => write!(f, ", UDP {} > {} len {}", be16(b, 0), be16(b, 2), be16(b, 4)),
        IpProtocol::Tcp if b.len() >= 20 => {
            let hl = usize::from(b[12] >> 4) * 4;
            let flags = TcpFlags::from_bits_truncate(be16(b, 12) & 0x01ff);
            write!(
                f,
                ", TCP {} > {} [{flags}] seq {} ack {} win {} len {}",
                be16(b, 0),
                be16(b, 2),
                be32(b, 4),
                be32(b, 8),
                be16(b, 14),
                len.saturating_sub(hl)
            )
        }
        IpProtocol::Icmp | IpProtocol::Icmpv6 if b.len() >= 8 => {
            write!(
                f,
                ", ICMP type {} code {} id {} seq {} len {}",
                b[0],
                b[1],
                be16(b, 4),
                be16(b, 6),
                len.saturating_sub(8)
            )
        }
        IpProtocol::Udp | IpProtocol::Tcp | IpProtocol::Icmp | IpProtocol::Icmpv6 => {
            write!(f, ", [{proto:?}: {}]", WireError::Truncated)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;
    use std::net::Ipv4Addr;

    #[test]
    fn snapshot_cut_inside_the_payload_still_prints_headers() {
        let f = testutil::tcp4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 1, 80, TcpFlags::ACK, &[0; 500]);
        let full = PrettyFrame(&f).to_string();
        let cut = PrettyFrame(&f[..100]).to_string();
        assert_eq!(full, cut);
        assert_eq!(
            full,
            "02:00:00:00:00:0a > 02:00:00:00:00:0b Ipv4, IP 10.0.0.1 > 10.0.0.2 Tcp ttl 64 len 540, \
             TCP 1 > 80 [.] seq 1000 ack 0 win 65535 len 500"
        );
        assert_eq!(
            PrettyFrame(&f[..14 + 30]).to_string(),
            "02:00:00:00:00:0a > 02:00:00:00:00:0b Ipv4, IP 10.0.0.1 > 10.0.0.2 Tcp ttl 64 len 540, [Tcp: truncated]"
        );
        assert_eq!(PrettyFrame(&f[..10]).to_string(), "[ethernet: truncated] 10 bytes");
    }
}
