//! PMTU signalling through a podplane node (design.md: smoltcp has no PMTU discovery,
//! so the simulator checks the signal on the wire, field by field; end-to-end PMTU
//! discovery with Linux TCP is for the TAP tests):
//! 1. two nodes, underlay MTU 1400, pods with MTU 1500 (as Flannel host-gw with a
//!    mismatched underlay would be);
//! 2. pod A opens TCP to pod B on the other node and sends full-size segments, DF set
//!    (smoltcp sets DF on every IPv4 packet);
//! 3. node-a routes them towards the 1400-byte uplink and answers each with ICMP
//!    destination unreachable / fragmentation needed, next-hop MTU 1400, from the
//!    gateway 10.244.0.1 to pod A, quoting the segment's IP header;
//! 4. the transfer cannot finish (smoltcp ignores the ICMP): the run reports its seed.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use podplane::Duration;
use podplane::pipeline::DropReason;
use podplane::wire::{EthernetFrame, IpProtocol, Ipv4Packet};
use podplane_sim::cluster::{ClusterSpec, NetworkMode, build_with};
use podplane_sim::{LinkConfig, Sim, SimError, seed_from_env};

#[test]
fn fragmentation_needed_reaches_the_pod_with_the_next_hop_mtu() {
    let seed = seed_from_env(61);
    let plan = ClusterSpec::default().with_node("node-a", 1).with_node("node-b", 1).plan().unwrap();
    let mut sim = Sim::new(seed);
    let h =
        build_with(&mut sim, &plan, NetworkMode::Bridge, LinkConfig::default(), LinkConfig::default().with_mtu(1400))
            .unwrap();
    let dir = std::env::temp_dir().join(format!("podplane-pmtu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cap = dir.join("pod-a.pcap");
    let l = sim.link_id("node-a/node-a-pod-0").unwrap();
    sim.capture(l, &cap).unwrap();
    sim.tcp_bulk("bulk", h.pods[0][0], h.pods[1][0], 5001, 64 * 1024).unwrap();
    let err = sim.run_until_done(Duration::from_secs(3)).unwrap_err();
    assert!(matches!(err, SimError::Unfinished { .. }), "seed {seed}: {err}");
    let c = sim.nodes()[h.nodes[0]].pipeline().counters();
    assert!(c.drops("route", DropReason::FragNeeded) > 0, "seed {seed}");
    drop(sim);

    let mut reader = pcap_file::pcap::PcapReader::new(std::fs::File::open(&cap).unwrap()).unwrap();
    let mut found = 0;
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        let Ok(eth) = EthernetFrame::new_checked(&p.data[..]) else { continue };
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { continue };
        if ip.protocol() != IpProtocol::Icmp {
            continue;
        }
        let icmp = ip.payload();
        assert_eq!((icmp[0], icmp[1]), (3, 4), "seed {seed}: destination unreachable, fragmentation needed");
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1400, "seed {seed}: next-hop MTU");
        assert_eq!(ip.src_addr(), plan.nodes[0].gateway, "seed {seed}: from the pod's gateway");
        assert_eq!(ip.dst_addr(), plan.nodes[0].pods[0].ip);
        assert_eq!(ip.dscp_ecn() & 0xc0, 0xc0, "seed {seed}: internetwork-control precedence");
        assert_eq!(ip.ttl(), 64);
        let quoted = Ipv4Packet::new_unchecked(&icmp[8..]);
        assert_eq!(quoted.total_len(), 1500, "seed {seed}: quotes the too-big segment");
        assert!(quoted.dont_frag());
        found += 1;
    }
    assert!(found > 0, "seed {seed}: no ICMP fragmentation-needed reached pod A");
    std::fs::remove_dir_all(&dir).unwrap();
}
