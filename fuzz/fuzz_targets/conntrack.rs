//! Arbitrary packet sequences through parse → conntrack → dnat → snat → ct_commit →
//! xconnect (ports 0 and 1 joined), with a small table (64 connections) so that it
//! fills, a port range of 8 so that masquerade runs out, DNAT rules for the
//! addresses the fuzzer finds first, and time steps so that entries expire: TCP flag
//! soup, ICMP errors with any quote (translated inner headers included), fragments,
//! partial checksums. Nothing panics; accounting and slots are checked at every
//! batch boundary (`drive.rs`), and the table never holds more than its capacity.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;

use podplane::buf::PortId;
use podplane::pipeline::{Pipeline, PipelineConfig, Stage};
use podplane::stage::conntrack::{CommitStage, Conntrack, ConntrackStage, CtConfig};
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
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(ParseStage::new()),
        Box::new(ConntrackStage::new(ct.clone())),
        Box::new(NatStage::dnat(ct.clone(), nat.clone())),
        Box::new(NatStage::snat(ct.clone(), nat)),
        Box::new(CommitStage::new(ct.clone())),
        Box::new(x),
    ];
    let mut pl = Pipeline::new(stages, PipelineConfig::default(), 1);
    drive::drive(&mut pl, data.get(12..).unwrap_or(&[]), 2);
    if let Ok(c) = ct.lock() {
        let (a, b) = c.len();
        assert!(a <= 64 && b <= 64, "table over capacity");
    }
});
