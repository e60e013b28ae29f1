//! A seeded generator of Ethernet frames: the traffic mixes the demo, the benches and
//! the fuzz seed corpus use.
//!
//! [`Mix::Mixed`] is a node's pod traffic with faults in it: UDP and TCP over IPv4,
//! ICMP echo, UDP over IPv6, ARP, and about one frame in ten broken in one of the ways
//! the parse stage names (truncated, bad checksum, bad version, bad lengths, invalid
//! source MAC). [`Mix::Udp64`] is the 64-byte IPv4/UDP frame of the instruction-count
//! figure.

use std::net::{Ipv4Addr, Ipv6Addr};

use podplane::testutil;
use podplane::wire::tcp::TcpFlags;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Which frames to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// 64-byte Ethernet/IPv4/UDP frames between pods of two nodes.
    Udp64,
    /// Pod traffic with about 10 % malformed frames.
    Mixed,
}

/// The kinds of broken frame [`Mix::Mixed`] makes, one per parse-stage drop reason
/// it exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Cut below the Ethernet header.
    Runt,
    /// Multicast source MAC.
    MulticastSource,
    /// IPv4 header checksum off by one bit.
    Ipv4Checksum,
    /// IPv4 version 5.
    Ipv4Version,
    /// IHL 4.
    Ipv4HeaderLen,
    /// Cut inside the IPv4 header.
    Ipv4Truncated,
    /// UDP length field 7.
    UdpLength,
    /// ARP cut to 20 bytes.
    ArpTruncated,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::Runt,
        Fault::MulticastSource,
        Fault::Ipv4Checksum,
        Fault::Ipv4Version,
        Fault::Ipv4HeaderLen,
        Fault::Ipv4Truncated,
        Fault::UdpLength,
        Fault::ArpTruncated,
    ];
}

/// A seeded frame generator.
#[derive(Debug)]
pub struct Traffic {
    rng: Xoshiro256PlusPlus,
    mix: Mix,
}

impl Traffic {
    /// A generator of `mix` seeded with `seed`.
    pub fn new(seed: u64, mix: Mix) -> Self {
        Traffic { rng: Xoshiro256PlusPlus::seed_from_u64(seed), mix }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }

    fn pod_v4(&mut self) -> Ipv4Addr {
        // Pods of nodes 1..=4 in the default cluster CIDR 10.244.0.0/16.
        let node = u8::try_from(1 + self.below(4)).unwrap_or(1);
        let host = u8::try_from(2 + self.below(30)).unwrap_or(2);
        Ipv4Addr::new(10, 244, node, host)
    }

    fn port(&mut self) -> u16 {
        u16::try_from(32768 + self.below(28232)).unwrap_or(40000)
    }

    /// The next frame.
    pub fn next_frame(&mut self) -> Vec<u8> {
        match self.mix {
            Mix::Udp64 => {
                let (s, d, sp) = (self.pod_v4(), self.pod_v4(), self.port());
                testutil::udp4(s, d, sp, 53, &[0x5a; 22])
            }
            Mix::Mixed => {
                let r = self.below(100);
                if r < 10 {
                    let f = Fault::ALL[usize::try_from(self.below(Fault::ALL.len() as u64)).unwrap_or(0)];
                    self.broken(f)
                } else {
                    self.valid(r)
                }
            }
        }
    }

    fn valid(&mut self, r: u64) -> Vec<u8> {
        let (s, d, sp) = (self.pod_v4(), self.pod_v4(), self.port());
        let len = usize::try_from(self.below(1400)).unwrap_or(0);
        match r {
            10..=44 => testutil::udp4(s, d, sp, 53, &vec![0x11; len]),
            45..=69 => testutil::tcp4(s, d, sp, 80, TcpFlags::ACK | TcpFlags::PSH, &vec![0x22; len]),
            70..=79 => testutil::icmp4_echo(s, d, sp, 1),
            80..=94 => {
                let a = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, sp);
                let b = Ipv6Addr::new(0xfd00, 0x10, 0x244, 2, 0, 0, 0, 0x53);
                testutil::udp6(a, b, sp, 53, &vec![0x33; len])
            }
            _ => testutil::arp_request(s, d),
        }
    }

    /// A frame broken as `f` says.
    pub fn broken(&mut self, f: Fault) -> Vec<u8> {
        let (s, d, sp) = (self.pod_v4(), self.pod_v4(), self.port());
        let mut frame = testutil::udp4(s, d, sp, 53, b"0123456789");
        match f {
            Fault::Runt => frame.truncate(10),
            Fault::MulticastSource => frame[6] |= 1,
            Fault::Ipv4Checksum => frame[14 + 10] ^= 0x01,
            Fault::Ipv4Version => frame[14] = 0x55,
            Fault::Ipv4HeaderLen => frame[14] = 0x44,
            Fault::Ipv4Truncated => frame.truncate(14 + 12),
            Fault::UdpLength => {
                frame[14 + 24] = 0;
                frame[14 + 25] = 7;
            }
            Fault::ArpTruncated => {
                frame = testutil::arp_request(s, d);
                frame.truncate(14 + 20);
            }
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_frames_other_seed_other_frames() {
        let a: Vec<Vec<u8>> = {
            let mut t = Traffic::new(42, Mix::Mixed);
            (0..100).map(|_| t.next_frame()).collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut t = Traffic::new(42, Mix::Mixed);
            (0..100).map(|_| t.next_frame()).collect()
        };
        let c: Vec<Vec<u8>> = {
            let mut t = Traffic::new(43, Mix::Mixed);
            (0..100).map(|_| t.next_frame()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn udp64_frames_are_64_bytes() {
        let mut t = Traffic::new(1, Mix::Udp64);
        for _ in 0..10 {
            assert_eq!(t.next_frame().len(), 64);
        }
    }
}
