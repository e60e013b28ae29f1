//! Arbitrary packet sequences through parse → conntrack → dnat → snat → ct_commit →
//! xconnect (ports 0 and 1 joined), with a small table (64 connections) so that it
//! fills, a port range of 8 so that masquerade runs out, DNAT rules for the
//! addresses the fuzzer finds first, a service (frontend, endpoints, scheduler, policy
//! and affinity from the input) in the service table, and time steps so that entries expire: TCP flag
//! soup, ICMP errors with any quote (translated inner headers included), fragments,
//! partial checksums. Nothing panics; accounting and slots are checked at every
//! batch boundary (`drive.rs`), and the table never holds more than its capacity.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;

use podplane::buf::PortId;
use podplane::pipeline::{Pipeline, PipelineConfig, Stage};
use podplane::stage::conntrack::{CommitStage, Conntrack, ConntrackStage, CtConfig};
use podplane::stage::lb::{Backend, LbSettings, Prefix, Scheduler, ServicePort, ServiceTable};
use podplane::stage::nat::{DnatRule, Masquerade, NatConfig};
use podplane::stage::{NatStage, ParseStage, XconnectStage};
use podplane::wire::cidr::Cidr;

#[path = "drive.rs"]
mod drive;

fuzz_target!(|data: &[u8]| {
    let ct = Conntrack::shared(CtConfig { capacity: 64, ..CtConfig::default() });
    let mut x = XconnectStage::new();
    let _ = x.connect(PortId(0), PortId(1));
    // Rules from the input's first bytes, so the fuzzer can aim packets at them.
    let b = |i: usize| data.get(i).copied().unwrap_or(0);
    let vip = Ipv4Addr::new(b(0), b(1), b(2), b(3));
    let dnat = [6u8, 17].map(|proto| DnatRule {
        proto,
        dst: IpAddr::V4(vip),
        port: u16::from_be_bytes([b(4), b(5)]),
        to: IpAddr::V4(Ipv4Addr::new(b(6), b(7), b(8), b(9))),
        to_port: u16::from_be_bytes([b(10), b(11)]),
    });
    let nat = NatConfig {
        dnat: dnat.to_vec(),
        masquerade: Some(Masquerade {
            sources: vec![Cidr { addr: Ipv4Addr::UNSPECIFIED, prefix: 1 }],
            except: vec![Cidr { addr: Ipv4Addr::new(10, 244, 0, 0), prefix: 16 }],
        }),
        fallback: Some(Ipv4Addr::new(192, 168, 0, 11)),
        ports: 40000..=40007,
        ..NatConfig::default()
    };
    // A service whose shape comes from the input too.
    let a = |i: usize| IpAddr::V4(Ipv4Addr::new(b(i), b(i + 1), b(i + 2), b(i + 3)));
    let backends: Vec<Backend> = (0..usize::from(b(16) % 5))
        .map(|k| Backend { addr: a(6 + k), port: u16::from(b(17)) + 1, weight: u16::from(b(18 + k % 2) % 4) })
        .collect();
    let mut services = ServiceTable::new(LbSettings {
        service_cidrs: vec![Prefix { addr: a(0), len: b(19) % 33 }],
        node_port_addrs: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 0, 11))],
        cluster_cidrs: vec![Prefix { addr: IpAddr::V4(Ipv4Addr::new(10, 244, 0, 0)), len: 16 }],
        node_addrs: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 0, 11))],
        affinity_max: 8,
    });
    let _ = services.upsert(ServicePort {
        name: "fuzz/svc:p".into(),
        proto: if b(12) & 1 == 0 { 6 } else { 17 },
        cluster_ip: Some(a(12)),
        port: u16::from_be_bytes([b(4), b(5)]).wrapping_add(1),
        node_port: u16::from_be_bytes([b(13), b(14)]),
        external_ips: vec![a(8)],
        cluster: backends.clone(),
        local: backends.iter().copied().take(usize::from(b(15) % 3)).collect(),
        has_endpoints: b(15) & 0x80 == 0,
        internal_local: b(15) & 0x40 != 0,
        external_local: b(15) & 0x20 != 0,
        scheduler: Scheduler::ALL[usize::from(b(16) / 5) % Scheduler::ALL.len()],
        affinity: (b(15) & 0x10 != 0).then_some(u32::from(b(17)) + 1),
        lb_ips: vec![a(8)],
        source_ranges: if b(15) & 0x08 != 0 { vec![Prefix { addr: a(4), len: b(18) % 33 }] } else { vec![] },
    });
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(ParseStage::new()),
        Box::new(ConntrackStage::new(ct.clone())),
        Box::new(NatStage::dnat(ct.clone(), nat.clone()).with_services(services)),
        Box::new(NatStage::snat(ct.clone(), nat)),
        Box::new(CommitStage::new(ct.clone())),
        Box::new(x),
    ];
    let mut pl = Pipeline::new(stages, PipelineConfig::default(), 1);
    drive::drive(&mut pl, data.get(20..).unwrap_or(&[]), 2);
    if let Ok(c) = ct.lock() {
        let (a, b) = c.len();
        assert!(a <= 64 && b <= 64, "table over capacity");
    }
});
