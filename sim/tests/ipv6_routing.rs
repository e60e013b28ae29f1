//! IPv6 across two podplane nodes, routed (the IPv6 half of Flannel host-gw / Calico
//! without encapsulation): each node has one pod on a routed port (fd00:a::/64 and
//! fd00:b::/64, the node's address on it the pod's gateway), an uplink on fd00:ff::/64,
//! and a route to the other node's pod prefix via the other node's link-local address
//! on the underlay, as routing daemons install them. Neighbour discovery resolves every
//! hop; a 1 MiB TCP transfer over IPv6 (with loss on the underlay) and pings both
//! ways. (ICMPv6 errors are checked frame by frame in core/tests/route6.rs.)

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use podplane::pipeline::{DropReason, StageEvent};
use podplane::stage::route::{L3If, NextHop6, RouteSpec6, link_local};
use podplane::wire::EthernetAddress;
use podplane::{Duration, Pipeline, PortId};
use podplane_sim::{HostConfig, LinkConfig, Sim, seed_from_env};

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Node `k` (0 or 1): pod port 0 on fd00:{a,b}::1/64, uplink port 1 on fd00:ff::{1,2}/64.
fn node(k: u8, seed: u64) -> Pipeline {
    let pod_net = if k == 0 { "fd00:a::" } else { "fd00:b::" };
    let other_net = if k == 0 { "fd00:b::" } else { "fd00:a::" };
    let up_mac = EthernetAddress([2, 0xff, 0, 0, 0, k]);
    let other_up = EthernetAddress([2, 0xff, 0, 0, 0, 1 - k]);
    let ifs = vec![
        L3If::routed(PortId(0), EthernetAddress([2, 0xee, 0, 0, 0, k]), Ipv4Addr::new(10, 244, k, 1), 24, 1500)
            .with_ip6(a6(&format!("{pod_net}1")), 64),
        L3If::routed(PortId(1), up_mac, Ipv4Addr::new(192, 168, 0, 10 + k), 24, 1500)
            .with_ip6(a6(&format!("fd00:ff::{}", k + 1)), 64),
    ];
    let routes6 =
        vec![RouteSpec6 { dst: a6(other_net), len: 64, next_hop: NextHop6::Via(link_local(other_up), PortId(1)) }];
    podplane::testutil::routed_pipeline(ifs, vec![], routes6, seed)
}

#[test]
fn tcp_and_ping_over_ipv6_across_two_routed_nodes() {
    let seed = seed_from_env(66);
    let mut sim = Sim::new(seed);
    let n0 = sim.add_node("node-0", &["pod", "uplink"], node(0, seed)).unwrap();
    let n1 = sim.add_node("node-1", &["pod", "uplink"], node(1, seed)).unwrap();
    let mut pods = Vec::new();
    for (k, (n, net)) in [(n0, "fd00:a::"), (n1, "fd00:b::")].into_iter().enumerate() {
        let mut cfg = HostConfig::v4(&format!("pod-{k}"), Ipv4Addr::new(10, 244, u8::try_from(k).unwrap(), 2), 24);
        cfg.ipv6 = Some((a6(&format!("{net}2")), 64));
        cfg.gateway6 = Some(a6(&format!("{net}1")));
        let h = sim.add_host(cfg).unwrap();
        let ends = [sim.host_end(h), sim.node_end(n, "pod").unwrap()];
        sim.link(&format!("pod-{k}"), &ends, LinkConfig::default()).unwrap();
        pods.push(h);
    }
    let ends = [sim.node_end(n0, "uplink").unwrap(), sim.node_end(n1, "uplink").unwrap()];
    let underlay = sim.link("underlay", &ends, LinkConfig { loss: 0.02, ..LinkConfig::default() }).unwrap();
    let to1: IpAddr = "fd00:b::2".parse().unwrap();
    let to0: IpAddr = "fd00:a::2".parse().unwrap();
    sim.ping("ping 0->1", pods[0], to1, 5, Duration::from_millis(200)).unwrap();
    sim.ping("ping 1->0", pods[1], to0, 5, Duration::from_millis(200)).unwrap();
    sim.tcp_bulk6("bulk6", pods[0], pods[1], 5201, 1 << 20).unwrap();
    sim.run_until_done(Duration::from_secs(60)).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let flows = sim.flows();
    let rerun = format!("seed {seed} (PODPLANE_SEED={seed} to re-run)");
    let bulk = &flows[2];
    assert!(bulk.ok && bulk.bytes == 1 << 20, "{rerun}: {bulk:?}");
    // Pings may lose a request or reply to the underlay's 2 % loss, never all of them.
    for f in &flows[..2] {
        assert!(f.bytes >= 8, "{rerun}: {f:?}");
    }
    let lost = sim.link_stats(underlay).unwrap().dropped_loss;
    assert!(lost > 0, "{rerun}: the underlay lost nothing");
    // node-0 solicits node-1's link-local address; node-1 learns node-0's from that
    // solicitation and each node learns its pod from the pod's solicitation of its
    // gateway, so the first solicitation is the only one needed.
    let solicits: u64 =
        [n0, n1].iter().map(|n| sim.nodes()[*n].pipeline().counters().events("arp", StageEvent::NdSolicitSent)).sum();
    assert!(solicits >= 1, "{rerun}");
    for n in [n0, n1] {
        let c = sim.nodes()[n].pipeline().counters();
        assert!(c.events("route", StageEvent::Routed) > 100, "{rerun}");
        assert!(c.events("arp", StageEvent::NdAdvertSent) >= 1, "{rerun}: the pod solicited its gateway");
        assert_eq!(c.drops("route", DropReason::NoRoute), 0, "{rerun}");
        assert_eq!(c.drops("arp", DropReason::NeighFailed), 0, "{rerun}");
        assert!(c.snapshot().balanced(), "{rerun}");
    }
}
