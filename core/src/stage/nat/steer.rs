//! Which worker a frame from outside belongs to, when it answers a source-NATed
//! connection: the one whose slice of the port range holds its destination port.
//!
//! With several workers, each masquerades to ports of its own slice
//! ([`super::ports`]). An untranslated flow is steered by its endpoints
//! ([`crate::steer`]), the same both ways; but a masqueraded reply carries other
//! addresses and ports than the original, so it goes by its port instead. The driver
//! asks [`owner`] for each frame it receives (these NAT rules first, then the flow)
//! and hands the frame to the owner (VPP nat44-ed's handoff). Looked
//! at: TCP, UDP and SCTP to a masquerade address (destination port), ICMP echo
//! replies (identifier) and ICMP errors quoting a packet from a masquerade address
//! (the quote's source port or identifier). Not by these rules: anything else, and
//! VXLAN to the node (its outer flow is the tunnel's; the inner flow steers it).
//!
//! Destination NAT (services) changes the other end instead: a backend's reply
//! carries the client's own port, which names no worker. So every frame of a
//! service's traffic is steered by its *client* (address and port), as VPP steers
//! nat44-ed's in2out flows by the inside address: a frame to a frontend or to an
//! endpoint goes to the worker of its source, a frame from an endpoint to the
//! worker of its destination. Both directions of a service connection, and of a
//! pod's direct connection to an endpoint, meet on one worker; a masqueraded
//! reply then goes by its port as above, to the same worker, since the port was
//! chosen there. (Two endpoints talking between their service ports both ways are
//! steered by the pair instead; an ICMP error about a destination-NATed
//! connection stays where it lands.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ports::owner as port_owner;
use super::rules::NatConfig;
use crate::stage::lb::ServiceTable;
use crate::steer::{Tunnel, flow_owner};

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

/// The transport endpoints of an IPv4 or IPv6 packet with ports (first fragments
/// only): (source, destination, protocol, source port, destination port).
fn endpoints(ethertype: u16, ip: &[u8]) -> Option<(IpAddr, IpAddr, u8, u16, u16)> {
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match ethertype {
        0x0800 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            if ihl < 20 || be16(ip, 6)? & 0x1fff != 0 {
                return None;
            }
            (addr(ip, 12)?.into(), addr(ip, 16)?.into(), *ip.get(9)?, ip.get(ihl..)?)
        }
        // IPv6 without extension headers (a fragment header or options: not steered).
        0x86dd => {
            let a = |at: usize| Some(IpAddr::V6(Ipv6Addr::from(*ip.get(at..)?.first_chunk::<16>()?)));
            (a(8)?, a(24)?, *ip.get(6)?, ip.get(40..)?)
        }
        _ => return None,
    };
    if !matches!(proto, 6 | 17 | 132) {
        return None;
    }
    Some((src, dst, proto, be16(l4, 0)?, be16(l4, 2)?))
}

/// The worker of a service connection's client `addr:port`: a fixed hash, the same
/// on every worker.
fn client_worker(addr: IpAddr, port: u16, workers: usize) -> usize {
    let bytes: [u8; 16] = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    let h = crate::table::maglev::hash_bytes(&bytes, u64::from(port));
    usize::try_from(h % workers.max(1) as u64).unwrap_or(0)
}

/// The worker a service frame belongs to (see the module docs), if it is one.
/// A frame to one of the node's masquerade addresses that is not a frontend is a
/// masqueraded reply (a NodePort's or a hairpin's): `None`, so that it goes by its
/// port to the worker that chose the port (which is the client's worker).
fn service_owner(
    ethertype: u16,
    ip: &[u8],
    services: &ServiceTable,
    workers: usize,
    ours: &dyn Fn(IpAddr) -> bool,
) -> Option<usize> {
    let (src, dst, proto, sport, dport) = endpoints(ethertype, ip)?;
    if services.is_frontend(dst, proto, dport) {
        return Some(client_worker(src, sport, workers));
    }
    if ours(dst) {
        return None;
    }
    let to_service = services.is_backend(dst, proto, dport);
    let from_backend = services.is_backend(src, proto, sport);
    match (to_service, from_backend) {
        (true, true) => {
            // Both ends endpoints: by the pair, the same both ways.
            let (a, b) =
                if (src, sport) <= (dst, dport) { ((src, sport), (dst, dport)) } else { ((dst, dport), (src, sport)) };
            Some((client_worker(a.0, a.1, workers) + client_worker(b.0, b.1, workers)) % workers.max(1))
        }
        (true, false) => Some(client_worker(src, sport, workers)),
        (false, true) => Some(client_worker(dst, dport, workers)),
        (false, false) => None,
    }
}

/// The worker (index) that owns the connection Ethernet frame `frame` belongs to by
/// the NAT rules above, when that is not this worker (`cfg.worker`); `None` to keep
/// it here. `services` is the worker's service table (empty: no destination NAT
/// steering).
pub fn reply_owner(frame: &[u8], cfg: &NatConfig, services: &ServiceTable) -> Option<usize> {
    let (me, workers) = cfg.worker;
    if workers < 2 {
        return None;
    }
    nat_owner(frame, cfg, services, workers).filter(|&w| w != me)
}

/// The worker (index) a frame belongs to, when that is not this worker: by the NAT
/// rules of [`reply_owner`] first, otherwise by its flow ([`flow_owner`]). The
/// driver asks this for every frame when there are several workers.
pub fn owner(frame: &[u8], cfg: &NatConfig, services: &ServiceTable, tunnel: Option<&Tunnel>) -> Option<usize> {
    let (me, workers) = cfg.worker;
    if workers < 2 {
        return None;
    }
    nat_owner(frame, cfg, services, workers).or_else(|| flow_owner(frame, tunnel, workers)).filter(|&w| w != me)
}

/// The worker a frame belongs to by the NAT rules (any worker, this one included).
fn nat_owner(frame: &[u8], cfg: &NatConfig, services: &ServiceTable, workers: usize) -> Option<usize> {
    let (ethertype, ip) = match be16(frame, 12)? {
        0x8100 => (be16(frame, 16)?, frame.get(18..)?),
        t => (t, frame.get(14..)?),
    };
    let ours = |a: Ipv4Addr| cfg.addresses.iter().any(|(_, x)| *x == a) || cfg.fallback == Some(a);
    let ours_ip = |a: IpAddr| matches!(a, IpAddr::V4(a) if ours(a));
    if !services.is_empty()
        && let Some(w) = service_owner(ethertype, ip, services, workers, &ours_ip)
    {
        return Some(w);
    }
    if ethertype != 0x0800 || (cfg.masquerade.is_none() && !cfg.hairpin) {
        return None;
    }
    let (proto, port) = key(ip, &ours)?;
    let range = if proto == 1 { 0..=u16::MAX } else { cfg.ports.clone() };
    port_owner(&range, workers, port)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::buf::PortId;
    use crate::testutil::{icmp4_echo, icmp4_frag_needed_unchecked, udp4};

    const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);

    fn none() -> ServiceTable {
        ServiceTable::default()
    }

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
        assert_eq!((reply_owner(&low, &cfg(0), &none()), reply_owner(&low, &cfg(1), &none())), (None, Some(0)));
        assert_eq!((reply_owner(&high, &cfg(0), &none()), reply_owner(&high, &cfg(1), &none())), (Some(1), None));
        // Not to a masquerade address, or VXLAN: stays.
        assert_eq!(reply_owner(&udp4(world, Ipv4Addr::new(10, 244, 1, 2), 53, 40000, b"a"), &cfg(0), &none()), None);
        assert_eq!(reply_owner(&udp4(Ipv4Addr::new(192, 168, 0, 12), NODE, 4000, 8472, b"a"), &cfg(0), &none()), None);
        // One worker: nothing to steer.
        assert_eq!(reply_owner(&high, &NatConfig { worker: (0, 1), ..cfg(0) }, &none()), None);
    }

    #[test]
    fn the_nat_rules_come_first_and_every_other_flow_goes_by_its_endpoints() {
        let world = Ipv4Addr::new(1, 1, 1, 1);
        let pod = Ipv4Addr::new(10, 244, 1, 2);
        // Masqueraded replies go by port even where the flow's hash says otherwise.
        let (mut by_port, mut by_flow) = (0, 0);
        for port in (2000..64000u16).step_by(997) {
            let reply = udp4(world, NODE, 53, port, b"a");
            let port_w = reply_owner(&reply, &cfg(0), &none()).unwrap_or(0);
            assert_eq!(owner(&reply, &cfg(0), &none(), None).unwrap_or(0), port_w);
            if flow_owner(&reply, None, 2) == Some(port_w) { by_flow += 1 } else { by_port += 1 }
        }
        assert!(by_port > 0 && by_flow > 0, "the two rules disagree sometimes: {by_port} / {by_flow}");
        // A pod's own flow: no NAT rule, its endpoints decide, alike from both workers
        // and both ways.
        for sport in 40000..40016u16 {
            let out = udp4(pod, world, sport, 53, b"q");
            let back = udp4(world, pod, 53, sport, b"a");
            let w = flow_owner(&out, None, 2).unwrap();
            for me in 0..2 {
                assert_eq!(owner(&out, &cfg(me), &none(), None).unwrap_or(me), w);
                assert_eq!(owner(&back, &cfg(me), &none(), None).unwrap_or(me), w);
            }
        }
        // One worker: nothing to steer.
        let out = udp4(pod, world, 40000, 53, b"q");
        assert_eq!(owner(&out, &NatConfig { worker: (0, 1), ..cfg(0) }, &none(), None), None);
    }

    #[test]
    fn icmp_goes_by_identifier_or_by_the_quoted_source_port() {
        let world = Ipv4Addr::new(1, 1, 1, 1);
        let mut echo_reply = icmp4_echo(world, NODE, 40000, 1);
        echo_reply[34] = 0;
        assert_eq!(reply_owner(&echo_reply, &cfg(0), &none()), Some(1));
        // A router's frag-needed quoting NODE:40000 -> world:53.
        let quoted = udp4(NODE, world, 40000, 53, b"q");
        let err = icmp4_frag_needed_unchecked(Ipv4Addr::new(192, 168, 0, 1), NODE, &quoted);
        assert_eq!(reply_owner(&err, &cfg(0), &none()), Some(1));
        assert_eq!(reply_owner(&err[..40], &cfg(0), &none()), None, "cut short: stays");
    }

    #[test]
    fn both_directions_of_a_service_connection_meet_on_the_clients_worker() {
        use crate::stage::lb::{Backend, LbSettings, Scheduler, ServicePort};
        let vip = Ipv4Addr::new(10, 96, 0, 10);
        let ep = Ipv4Addr::new(10, 244, 2, 5);
        let mut t = ServiceTable::new(LbSettings::default());
        t.upsert(ServicePort {
            name: "default/dns:53".into(),
            proto: 17,
            cluster_ip: Some(vip.into()),
            port: 53,
            node_port: 0,
            external_ips: vec![],
            cluster: vec![Backend { addr: ep.into(), port: 5353, weight: 1 }],
            local: vec![],
            has_endpoints: true,
            internal_local: false,
            external_local: false,
            scheduler: Scheduler::Random,
            affinity: None,
            lb_ips: vec![],
            source_ranges: vec![],
        })
        .unwrap();
        let workers = 4;
        let cfg = |w: usize| NatConfig { worker: (w, workers), ..NatConfig::default() };
        let mut seen = [0usize; 4];
        for k in 0..64u16 {
            let client = Ipv4Addr::new(10, 244, 1, 2 + u8::try_from(k % 8).unwrap());
            let port = 40000 + k;
            let query = udp4(client, vip, port, 53, b"q");
            let reply = udp4(ep, client, 5353, port, b"a");
            let direct = udp4(client, ep, port, 5353, b"q");
            // The owner as seen from worker 0 (None: worker 0 itself).
            let owner = |f: &[u8]| reply_owner(f, &cfg(0), &t).unwrap_or(0);
            let w = owner(&query);
            assert_eq!(owner(&reply), w, "the reply meets the query");
            assert_eq!(owner(&direct), w, "a direct connection to the endpoint too");
            // Every worker agrees, and the owner keeps its own frames.
            for me in 0..workers {
                let got = reply_owner(&query, &cfg(me), &t);
                assert_eq!(got.unwrap_or(me), w);
            }
            seen[w] += 1;
        }
        assert!(seen.iter().all(|&n| n > 4), "clients spread over the workers: {seen:?}");
        // A NodePort connection masqueraded to the node: its SYN goes by the client,
        // which chose the port from its slice; the reply to the node's address goes
        // by that port, to the same worker.
        let node = Ipv4Addr::new(192, 168, 0, 11);
        let masq = |w: usize| NatConfig {
            worker: (w, workers),
            addresses: vec![(PortId(0), node)],
            masquerade: Some(super::super::Masquerade { sources: vec![], except: vec![] }),
            ..NatConfig::default()
        };
        let mut np = t.get("default/dns:53").unwrap();
        np.node_port = 30053;
        let mut t2 = ServiceTable::new(LbSettings { node_port_addrs: vec![node.into()], ..LbSettings::default() });
        t2.upsert(np).unwrap();
        let client = Ipv4Addr::new(198, 51, 100, 7);
        // A client port whose worker differs from the one the reply's own endpoints
        // would hash to, so that steering the reply as a service frame would miss.
        let (w, lo) = (40001..41000u16)
            .find_map(|cport| {
                let w = client_worker(client.into(), cport, workers);
                let (lo, _) = super::super::ports::slice(&(1024..=65535), w, workers);
                (client_worker(node.into(), lo, workers) != w).then_some((w, lo))
            })
            .unwrap();
        let cport = (40001..41000u16).find(|&p| client_worker(client.into(), p, workers) == w).unwrap();
        let syn = udp4(client, node, cport, 30053, b"q");
        assert_eq!(reply_owner(&syn, &masq(0), &t2).unwrap_or(0), w, "the SYN goes by its client");
        // The owner's choice: the first port of its slice.
        let reply = udp4(ep, node, 5353, lo, b"a");
        assert_eq!(reply_owner(&reply, &masq(0), &t2).unwrap_or(0), w, "the reply meets the NodePort connection");
        // Not a service frame: no opinion here.
        let other = udp4(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 3, 3), 1000, 2000, b"x");
        assert_eq!(reply_owner(&other, &cfg(0), &t), None);
    }
}
