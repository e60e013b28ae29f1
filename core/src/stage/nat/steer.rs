//! Which worker a frame from outside belongs to, when it answers a source-NATed
//! connection: the one whose slice of the port range holds its destination port.
//!
//! With several workers, each masquerades to ports of its own slice
//! ([`super::ports`]). The kernel spreads frames over a multiqueue TAP by a flow hash
//! that is the same both ways for an untranslated flow, so both directions of a pod's
//! flow meet on one worker; but a masqueraded reply carries other addresses and ports
//! than the original and may land anywhere. The driver asks [`reply_owner`] for each
//! frame it receives and hands the frame to the owner (VPP nat44-ed's handoff). Looked
//! at: TCP, UDP and SCTP to a masquerade address (destination port), ICMP echo
//! replies (identifier) and ICMP errors quoting a packet from a masquerade address
//! (the quote's source port or identifier). Not steered: anything else, and VXLAN
//! to the node (its outer flow is the tunnel's, not a connection's).

use std::net::Ipv4Addr;

use super::ports::owner;
use super::rules::NatConfig;

/// The VXLAN ports a node listens on (Linux's 8472 and IANA's 4789): never steered.
const VXLAN_PORTS: [u16; 2] = [8472, 4789];

fn addr(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(*b.get(at..)?.first_chunk::<4>()?))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(*b.get(at..)?.first_chunk::<2>()?))
}

/// The (protocol, port) that names the worker for an IPv4 packet `ip` to `to`:
/// `None` when it is not addressed to one of `ours` or carries no port.
fn key(ip: &[u8], ours: &dyn Fn(Ipv4Addr) -> bool) -> Option<(u8, u16)> {
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if *ip.first()? >> 4 != 4 || ihl < 20 {
        return None;
    }
    // Later fragments carry no ports: they stay where they land.
    if be16(ip, 6)? & 0x1fff != 0 {
        return None;
    }
    let proto = *ip.get(9)?;
    let l4 = ip.get(ihl..)?;
    match proto {
        6 | 17 | 132 if ours(addr(ip, 16)?) => {
            let dport = be16(l4, 2)?;
            (!(proto == 17 && VXLAN_PORTS.contains(&dport))).then_some((proto, dport))
        }
        1 => match *l4.first()? {
            // Echo reply, timestamp reply, information reply: the identifier.
            0 | 14 | 16 if ours(addr(ip, 16)?) => Some((1, be16(l4, 4)?)),
            // Errors: the quoted packet went out from a masquerade address.
            3 | 4 | 5 | 11 | 12 => {
                let q = l4.get(8..)?;
                let qihl = usize::from(*q.first()? & 0x0f) * 4;
                if !ours(addr(q, 12)?) || qihl < 20 {
                    return None;
                }
                let qproto = *q.get(9)?;
                let ql4 = q.get(qihl..)?;
                match qproto {
                    6 | 17 | 132 => Some((qproto, be16(ql4, 0)?)),
                    1 => Some((1, be16(ql4, 4)?)),
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    }
}

/// The worker (index) that owns the connection Ethernet frame `frame` answers, when
/// that is not this worker (`cfg.worker`); `None` to keep it here.
pub fn reply_owner(frame: &[u8], cfg: &NatConfig) -> Option<usize> {
    let (me, workers) = cfg.worker;
    if workers < 2 || (cfg.masquerade.is_none() && !cfg.hairpin) {
        return None;
    }
    let (ethertype, ip) = match be16(frame, 12)? {
        0x8100 => (be16(frame, 16)?, frame.get(18..)?),
        t => (t, frame.get(14..)?),
    };
    if ethertype != 0x0800 {
        return None;
    }
    let ours = |a: Ipv4Addr| cfg.addresses.iter().any(|(_, x)| *x == a) || cfg.fallback == Some(a);
    let (proto, port) = key(ip, &ours)?;
    let range = if proto == 1 { 0..=u16::MAX } else { cfg.ports.clone() };
    owner(&range, workers, port).filter(|&w| w != me)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::buf::PortId;
    use crate::testutil::{icmp4_echo, udp4};

    const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);

    fn cfg(worker: usize) -> NatConfig {
        NatConfig {
            masquerade: Some(super::super::Masquerade { sources: vec![], except: vec![] }),
            addresses: vec![(PortId(0), NODE)],
            ports: 1024..=65535,
            worker: (worker, 2),
            ..NatConfig::default()
        }
    }

    #[test]
    fn replies_go_to_the_worker_owning_their_port() {
        let world = Ipv4Addr::new(1, 1, 1, 1);
        // 1024..=33279 is worker 0's, 33280..=65535 worker 1's.
        let low = udp4(world, NODE, 53, 2000, b"a");
        let high = udp4(world, NODE, 53, 40000, b"a");
        assert_eq!((reply_owner(&low, &cfg(0)), reply_owner(&low, &cfg(1))), (None, Some(0)));
        assert_eq!((reply_owner(&high, &cfg(0)), reply_owner(&high, &cfg(1))), (Some(1), None));
        // Not to a masquerade address, or VXLAN: stays.
        assert_eq!(reply_owner(&udp4(world, Ipv4Addr::new(10, 244, 1, 2), 53, 40000, b"a"), &cfg(0)), None);
        assert_eq!(reply_owner(&udp4(Ipv4Addr::new(192, 168, 0, 12), NODE, 4000, 8472, b"a"), &cfg(0)), None);
        // One worker: nothing to steer.
        assert_eq!(reply_owner(&high, &NatConfig { worker: (0, 1), ..cfg(0) }), None);
    }

    #[test]
    fn icmp_goes_by_identifier_or_by_the_quoted_source_port() {
        let world = Ipv4Addr::new(1, 1, 1, 1);
        let mut echo_reply = icmp4_echo(world, NODE, 40000, 1);
        echo_reply[34] = 0;
        assert_eq!(reply_owner(&echo_reply, &cfg(0)), Some(1));
        // A router's frag-needed quoting NODE:40000 -> world:53.
        let quoted = udp4(NODE, world, 40000, 53, b"q");
        let mut err = udp4(Ipv4Addr::new(192, 168, 0, 1), NODE, 0, 0, b"");
        err.truncate(34);
        err[23] = 1;
        err.extend_from_slice(&[3, 4, 0, 0, 0, 0, 5, 0x78]);
        err.extend_from_slice(&quoted[14..]);
        assert_eq!(reply_owner(&err, &cfg(0)), Some(1));
        assert_eq!(reply_owner(&err[..40], &cfg(0)), None, "cut short: stays");
    }
}
