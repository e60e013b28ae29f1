//! One-line, tcpdump-like rendering of a whole Ethernet frame, for traces, the CLI and
//! test failures. It parses with the checked views and prints what it can: a
//! malformed layer is printed as `[<layer>: <error>]` instead of failing.

use core::fmt;

use super::arp::ArpPacket;
use super::ethernet::{EtherType, EthernetFrame};
use super::icmp::IcmpPacket;
use super::ip::IpProtocol;
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::tcp::TcpPacket;
use super::udp::UdpPacket;

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
        match eth.ethertype() {
            EtherType::Arp => match ArpPacket::new_checked(eth.payload()) {
                Ok(a) => write!(f, ", {a}"),
                Err(e) => write!(f, ", [arp: {e}]"),
            },
            EtherType::Ipv4 => match Ipv4Packet::new_checked(eth.payload()) {
                Ok(ip) => {
                    write!(f, ", {ip}")?;
                    if ip.is_fragment() && ip.frag_offset() != 0 {
                        return Ok(());
                    }
                    transport(f, ip.protocol(), ip.payload())
                }
                Err(e) => write!(f, ", [ipv4: {e}]"),
            },
            EtherType::Ipv6 => match Ipv6Packet::new_checked(eth.payload()) {
                Ok(ip) => {
                    write!(f, ", {ip}")?;
                    match ip.transport() {
                        Ok(t) if !t.later_fragment => {
                            let rest = eth
                                .payload()
                                .get(t.offset..super::ipv6::HEADER_LEN + usize::from(ip.payload_len()))
                                .unwrap_or(&[]);
                            transport(f, t.protocol, rest)
                        }
                        Ok(_) => Ok(()),
                        Err(e) => write!(f, ", [ipv6 ext: {e}]"),
                    }
                }
                Err(e) => write!(f, ", [ipv6: {e}]"),
            },
            _ => write!(f, ", {} bytes", eth.payload().len()),
        }
    }
}

fn transport(f: &mut fmt::Formatter<'_>, proto: IpProtocol, bytes: &[u8]) -> fmt::Result {
    match proto {
        IpProtocol::Udp => match UdpPacket::new_checked(bytes) {
            Ok(u) => write!(f, ", {u}"),
            Err(e) => write!(f, ", [udp: {e}]"),
        },
        IpProtocol::Tcp => match TcpPacket::new_checked(bytes) {
            Ok(t) => write!(f, ", {t}"),
            Err(e) => write!(f, ", [tcp: {e}]"),
        },
        IpProtocol::Icmp | IpProtocol::Icmpv6 => match IcmpPacket::new_checked(bytes) {
            Ok(i) => write!(f, ", ICMP {i}"),
            Err(e) => write!(f, ", [icmp: {e}]"),
        },
        _ => Ok(()),
    }
}
