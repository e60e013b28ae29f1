//! Arbitrary frames through a whole node pipeline: parse → bridge → route → arp →
//! egress, with three pod ports on a bridge (with its own interface), an uplink and
//! routes to other nodes. Nothing panics; at every batch boundary the accounting
//! identity holds and every slot is either free, or held by a stage (`held -
//! released`), once the output is freed.
//!
//! Input: records of [len_hi, len_lo, port, time_step, bytes[len]...].
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use podplane::buf::PortId;
use podplane::pipeline::{Pipeline, PipelineConfig};
use podplane::stage::arp::{ArpConfig, LocalAddr};
use podplane::stage::bridge::{BridgeConfig, BridgeDomain, BridgePort};
use podplane::stage::route::{L3If, NextHop, RouteConfig, RouteSpec};
use podplane::stage::{ArpStage, BridgeStage, EgressStage, ParseStage, RouteStage};
use podplane::wire::EthernetAddress;

fn node() -> Option<Pipeline> {
    let pods = [PortId(0), PortId(1), PortId(2)];
    let (bvi, up) = (PortId(100), PortId(3));
    let gw_mac = EthernetAddress([0x0a, 0x58, 10, 244, 0, 1]);
    let up_mac = EthernetAddress([0x02, 0, 192, 168, 0, 10]);
    let ifs = vec![
        L3If {
            port: bvi,
            mac: gw_mac,
            ip: Ipv4Addr::new(10, 244, 0, 1),
            prefix: 24,
            mtu: 1500,
            bvi: true,
            ip6: Some(("fd00:10:244::1".parse().unwrap(), 64)),
            ports: pods.to_vec(),
        },
        L3If {
            port: up,
            mac: up_mac,
            ip: Ipv4Addr::new(192, 168, 0, 10),
            prefix: 24,
            mtu: 1400,
            bvi: false,
            ip6: Some(("fd00:ff::10".parse().unwrap(), 64)),
            ports: vec![up],
        },
    ];
    let bridge = BridgeStage::new(&BridgeConfig {
        domains: vec![BridgeDomain {
            name: "cni0".into(),
            ports: pods.iter().map(|p| BridgePort { port: *p, hairpin: p.0 == 0 }).collect(),
            gateway_mac: Some(gw_mac),
            static_fdb: vec![],
            bvi: Some(bvi),
        }],
        fdb_capacity: 8,
        ..BridgeConfig::default()
    })
    .ok()?;
    let routes = vec![
        RouteSpec {
            dst: Ipv4Addr::new(10, 244, 1, 0),
            len: 24,
            next_hop: NextHop::Via(Ipv4Addr::new(192, 168, 0, 11), up),
        },
        RouteSpec { dst: Ipv4Addr::new(10, 9, 0, 0), len: 16, next_hop: NextHop::Prohibit },
        RouteSpec { dst: Ipv4Addr::new(0, 0, 0, 0), len: 0, next_hop: NextHop::Via(Ipv4Addr::new(192, 168, 0, 1), up) },
    ];
    let arp = ArpConfig {
        local: vec![
            LocalAddr { ip: Ipv4Addr::new(10, 244, 0, 1), mac: gw_mac, ports: pods.to_vec() },
            LocalAddr { ip: Ipv4Addr::new(192, 168, 0, 10), mac: up_mac, ports: vec![up] },
        ],
        proxy: vec![],
        interfaces: ifs.clone(),
    };
    Some(Pipeline::new(
        vec![
            Box::new(ParseStage::new()),
            Box::new(bridge),
            Box::new(RouteStage::new(&RouteConfig {
                interfaces: ifs,
                routes,
                multipath: vec![],
                // IPv6 too: a default via a link-local gateway on the uplink, and an
                // ECMP prefix.
                routes6: vec![
                    podplane::stage::route::RouteSpec6 {
                        dst: std::net::Ipv6Addr::UNSPECIFIED,
                        len: 0,
                        next_hop: podplane::stage::route::NextHop6::Via("fe80::1".parse().unwrap(), up),
                    },
                    podplane::stage::route::RouteSpec6 {
                        dst: "fd00:99::".parse().unwrap(),
                        len: 32,
                        next_hop: podplane::stage::route::NextHop6::Multipath(0),
                    },
                ],
                multipath6: vec![vec![("fe80::2".parse().unwrap(), up), ("fe80::3".parse().unwrap(), up)]],
            })),
            Box::new(ArpStage::new(arp)),
            Box::new(EgressStage),
        ],
        PipelineConfig::default(),
        7,
    ))
}

#[path = "drive.rs"]
mod drive;

fuzz_target!(|data: &[u8]| {
    let Some(mut pl) = node() else { return };
    drive::drive(&mut pl, data, 5);
});
