//! Test helpers shared by `core`'s tests, the simulator, the TAP driver and the benches
//! (feature `testutils`): frame builders and whole-counter-set assertions.
//!
//! The builders use this crate's own `emit`; tests that check `emit` itself build
//! their expected bytes independently (etherparse, golden captures).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::buf::{Batch, BufPool, Owner, PktId, PortId};
use crate::pipeline::{CounterSnapshot, DropReason};
use crate::wire::arp::{ArpOperation, ArpRepr};
use crate::wire::checksum::{Sum, pseudo_v4, pseudo_v6};
use crate::wire::ethernet::{EtherType, EthernetAddress, EthernetRepr};
use crate::wire::icmpv4::{Icmpv4Repr, Icmpv4Type};
use crate::wire::ip::IpProtocol;
use crate::wire::ipv4::Ipv4Repr;
use crate::wire::ipv6::Ipv6Repr;
use crate::wire::tcp::{TcpFlags, TcpRepr};
use crate::wire::udp::UdpRepr;

/// MAC of the test frames' sender.
pub const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0a]);
/// MAC of the test frames' receiver.
pub const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0b]);

fn eth(ethertype: EtherType) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    EthernetRepr { src: MAC_A, dst: MAC_B, vlan_tci: None, ethertype }.emit(&mut f).unwrap();
    f
}

/// An Ethernet/IPv4/UDP frame with a correct UDP checksum, TTL 64, DF.
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(EtherType::Ipv4);
    let ulen = 8 + payload.len();
    let ip = Ipv4Repr::new(src, dst, IpProtocol::Udp, u16::try_from(ulen).unwrap(), 64);
    let mut ipb = vec![0u8; 20 + ulen];
    ip.emit(&mut ipb).unwrap();
    ipb[28..].copy_from_slice(payload);
    UdpRepr { src_port: sport, dst_port: dport }
        .emit(&mut ipb[20..], payload.len(), Some(pseudo_v4(src, dst, 17, u16::try_from(ulen).unwrap())))
        .unwrap();
    f.extend_from_slice(&ipb);
    f
}

/// An Ethernet/IPv4/UDP frame of exactly `len` bytes (at least 42).
pub fn udp4_sized(len: usize) -> Vec<u8> {
    udp4(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 3), 40000, 53, &vec![0x5a; len.max(42) - 42])
}

/// An Ethernet/IPv4/TCP frame with correct checksums (sequence 1000, no ACK number).
pub fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: TcpFlags, payload: &[u8]) -> Vec<u8> {
    tcp4_seq((src, sport), (dst, dport), flags, 1000, 0, payload)
}

/// An Ethernet/IPv4/TCP frame from `src` to `dst` (address, port) with sequence and
/// acknowledgement numbers `seq` and `ack`, window 65535, correct checksums.
pub fn tcp4_seq(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: TcpFlags,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = eth(EtherType::Ipv4);
    let tlen = 20 + payload.len();
    let ip = Ipv4Repr::new(src.0, dst.0, IpProtocol::Tcp, u16::try_from(tlen).unwrap(), 64);
    let mut ipb = vec![0u8; 20 + tlen];
    ip.emit(&mut ipb).unwrap();
    ipb[40..].copy_from_slice(payload);
    TcpRepr::new(src.1, dst.1, seq, ack, flags, 65535)
        .emit(&mut ipb[20..], pseudo_v4(src.0, dst.0, 6, u16::try_from(tlen).unwrap()))
        .unwrap();
    f.extend_from_slice(&ipb);
    f
}

/// An Ethernet/IPv4/ICMP echo request.
pub fn icmp4_echo(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq: u16) -> Vec<u8> {
    let mut f = eth(EtherType::Ipv4);
    let ip = Ipv4Repr::new(src, dst, IpProtocol::Icmp, 16, 64);
    let mut ipb = vec![0u8; 36];
    ip.emit(&mut ipb).unwrap();
    ipb[28..].copy_from_slice(b"podplane");
    Icmpv4Repr::echo(Icmpv4Type::EchoRequest, ident, seq).emit(&mut ipb[20..], Sum::new()).unwrap();
    f.extend_from_slice(&ipb);
    f
}

/// An Ethernet/IPv4 ICMP "fragmentation needed" (next-hop MTU 1400) from `src` to
/// `dst`, quoting the IPv4 packet of Ethernet frame `quoted` whole. Checksums are
/// not computed: for code that reads headers only (steering).
pub fn icmp4_frag_needed_unchecked(src: Ipv4Addr, dst: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut f = udp4(src, dst, 0, 0, b"");
    f.truncate(34);
    f[23] = 1;
    f.extend_from_slice(&[3, 4, 0, 0, 0, 0, 5, 0x78]);
    f.extend_from_slice(&quoted[14..]);
    let total = u16::try_from(f.len() - 14).unwrap();
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f
}

/// An Ethernet/IPv6/UDP frame with a correct checksum.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(EtherType::Ipv6);
    let ulen = 8 + payload.len();
    let ip = Ipv6Repr {
        src,
        dst,
        next_header: IpProtocol::Udp,
        payload_len: u16::try_from(ulen).unwrap(),
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut ipb = vec![0u8; 40 + ulen];
    ip.emit(&mut ipb).unwrap();
    ipb[48..].copy_from_slice(payload);
    UdpRepr { src_port: sport, dst_port: dport }
        .emit(&mut ipb[40..], payload.len(), Some(pseudo_v6(src, dst, 17, u32::try_from(ulen).unwrap())))
        .unwrap();
    f.extend_from_slice(&ipb);
    f
}

/// A broadcast ARP request "who-has `target` tell `sender`" from [`MAC_A`].
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 28];
    EthernetRepr { src: MAC_A, dst: EthernetAddress::BROADCAST, vlan_tci: None, ethertype: EtherType::Arp }
        .emit(&mut f)
        .unwrap();
    ArpRepr {
        operation: ArpOperation::Request,
        sender_mac: MAC_A,
        sender_ip: sender,
        target_mac: EthernetAddress::default(),
        target_ip: target,
    }
    .emit(&mut f[14..])
    .unwrap();
    f
}

/// Load `frames` into fresh slots of `pool` as received on `port`, into `batch`.
pub fn load(pool: &mut BufPool, batch: &mut Batch, port: PortId, frames: &[Vec<u8>]) -> Vec<PktId> {
    frames
        .iter()
        .map(|f| {
            let p = pool.alloc(Owner::Pipeline).expect("pool has room for the test frames");
            pool.set_data(p, f).unwrap();
            pool.meta_mut(p).in_port = port;
            batch.push(p).unwrap();
            p
        })
        .collect()
}

/// The expected non-zero drop counters; [`check`](Self::check) also requires every
/// other drop counter to be zero and the accounting identity to hold (netstack3's
/// `IpCounterExpectations`: assert the whole set).
#[derive(Debug, Default)]
pub struct CounterExpect {
    drops: Vec<(&'static str, DropReason, u64)>,
}

impl CounterExpect {
    /// Expect nothing dropped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expect `n` drops by `stage` for `reason`.
    pub fn drop(mut self, stage: &'static str, reason: DropReason, n: u64) -> Self {
        self.drops.push((stage, reason, n));
        self
    }

    /// Panic with the whole snapshot unless it matches exactly.
    pub fn check(&self, snap: &CounterSnapshot) {
        let mut got: Vec<(&str, DropReason, u64)> = snap.drops.iter().map(|d| (d.stage, d.reason, d.packets)).collect();
        let mut want: Vec<(&str, DropReason, u64)> = self.drops.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "drop counters differ; snapshot:\n{snap}");
        assert!(snap.balanced(), "accounting identity broken:\n{snap}");
    }
}

/// What one [`run`] of a pipeline did: per input frame where it went, every
/// transmitted (port, bytes) in output order, and how many went to the host.
#[derive(Debug)]
pub struct Run {
    /// Disposition of each input frame, in input order.
    pub disp: Vec<crate::pipeline::Disposition>,
    /// Transmitted frames.
    pub tx: Vec<(PortId, Vec<u8>)>,
    /// Frames for the host.
    pub host: usize,
}

/// Load `frames` (each on its port), run the pipeline once at `now`, copy out what it
/// transmitted and free every output slot (held packets stay held).
pub fn run(pl: &mut crate::Pipeline, pool: &mut BufPool, now: crate::Instant, frames: &[(u16, Vec<u8>)]) -> Run {
    let mut batch = Batch::new();
    for (port, f) in frames {
        load(pool, &mut batch, PortId(*port), std::slice::from_ref(f));
    }
    let out = pl.process(pool, now, &mut batch);
    let tx: Vec<(PortId, Vec<u8>)> = out.tx().map(|(p, k)| (p, pool.data(k).to_vec())).collect();
    let freed: Vec<PktId> = out.tx().map(|(_, k)| k).chain(out.host().iter().copied()).collect();
    let host = out.host().len();
    let disp = (0..batch.len()).map(|i| batch.disposition(i)).collect();
    for k in freed {
        pool.free(k).unwrap();
    }
    Run { disp, tx, host }
}

/// Bytes from a hex string (a golden capture).
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// A routing node's stages, `parse → route → arp → egress`, over routed interfaces
/// `ifs` (each answering ARP for its own address on its port) with `routes` and
/// `routes6`.
pub fn routed_stages(
    ifs: Vec<crate::stage::route::L3If>,
    routes: Vec<crate::stage::route::RouteSpec>,
    routes6: Vec<crate::stage::route::RouteSpec6>,
) -> Vec<Box<dyn crate::pipeline::Stage>> {
    use crate::stage::arp::{ArpConfig, LocalAddr};
    use crate::stage::route::RouteConfig;
    use crate::stage::{ArpStage, EgressStage, ParseStage, RouteStage};
    let arp = ArpConfig {
        local: ifs.iter().map(|i| LocalAddr { ip: i.ip, mac: i.mac, ports: vec![i.port] }).collect(),
        proxy: vec![],
        interfaces: ifs.clone(),
    };
    vec![
        Box::new(ParseStage::new()),
        Box::new(RouteStage::new(&RouteConfig { interfaces: ifs, routes, routes6, ..RouteConfig::default() })),
        Box::new(ArpStage::new(arp)),
        Box::new(EgressStage),
    ]
}

/// [`routed_stages`] as a pipeline.
pub fn routed_pipeline(
    ifs: Vec<crate::stage::route::L3If>,
    routes: Vec<crate::stage::route::RouteSpec>,
    routes6: Vec<crate::stage::route::RouteSpec6>,
    seed: u64,
) -> crate::Pipeline {
    crate::Pipeline::new(routed_stages(ifs, routes, routes6), crate::pipeline::PipelineConfig::default(), seed)
}
