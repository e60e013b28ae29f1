//! Link behaviour end to end: bandwidth bounds transfer time, a link taken down and
//! brought back up lets TCP recover, frames above the MTU are dropped and counted (and
//! the stuck run reports its seed), and a pcap capture holds exactly the frames sent.
//! One more: a 1 MiB transfer through a podplane node (parse + xconnect) with lossy
//! links on both sides.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::Duration;
use podplane::buf::PortId;
use podplane::pipeline::{Pipeline, PipelineConfig};
use podplane::stage::{ParseStage, XconnectStage};
use podplane_sim::{HostConfig, LinkConfig, Sim, SimError, seed_from_env};

fn pair(seed: u64, cfg: LinkConfig) -> (Sim, usize, usize) {
    let mut sim = Sim::new(seed);
    let a = sim.add_host(HostConfig::v4("a", Ipv4Addr::new(10, 0, 0, 1), 24)).unwrap();
    let b = sim.add_host(HostConfig::v4("b", Ipv4Addr::new(10, 0, 0, 2), 24)).unwrap();
    let ends = [sim.host_end(a), sim.host_end(b)];
    sim.link("a-b", &ends, cfg).unwrap();
    (sim, a, b)
}

#[test]
fn bandwidth_bounds_the_transfer_time() {
    let seed = seed_from_env(21);
    let (mut sim, a, b) = pair(seed, LinkConfig::default().with_bandwidth(100_000_000));
    sim.tcp_bulk("bulk", a, b, 5001, 1 << 20).unwrap();
    sim.run_until_done(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let f = &sim.flows()[0];
    assert!(f.ok, "seed {seed}: {f:?}");
    // 1 MiB of payload in 1460-byte segments is 718 frames of 1514 bytes: 87 ms at
    // 100 Mbit/s before any header of the ACKs.
    let d = f.duration().unwrap().as_nanos();
    assert!(d >= 86_900_000, "seed {seed}: {d} ns is faster than the wire allows");
    assert!(d < 1_000_000_000, "seed {seed}: {d} ns, far slower than the wire");
}

#[test]
fn link_down_then_up_and_tcp_recovers() {
    let seed = seed_from_env(22);
    let (mut sim, a, b) = pair(seed, LinkConfig::default().with_bandwidth(100_000_000));
    sim.tcp_bulk("bulk", a, b, 5001, 1 << 20).unwrap();
    let t0 = sim.now();
    sim.set_link_up_at(0, false, t0 + Duration::from_millis(20));
    sim.set_link_up_at(0, true, t0 + Duration::from_millis(1500));
    sim.run_until_done(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    let f = &sim.flows()[0];
    assert!(f.ok, "seed {seed}: {f:?}");
    assert!(f.duration().unwrap() > Duration::from_millis(1500), "seed {seed}: finished while the link was down");
    assert!(sim.link_stats(0).unwrap().dropped_down > 0, "seed {seed}");
    assert!(f.retransmissions > 0, "seed {seed}");
}

#[test]
fn frames_over_the_mtu_drop_and_the_stuck_run_names_its_seed() {
    let seed = seed_from_env(23);
    let (mut sim, a, b) = pair(seed, LinkConfig::default().with_mtu(1400));
    sim.tcp_bulk("bulk", a, b, 5001, 64 * 1024).unwrap();
    let err = sim.run_until_done(Duration::from_secs(5)).unwrap_err();
    let SimError::Unfinished { seed: s, .. } = &err else { panic!("{err}") };
    assert_eq!(*s, seed);
    let msg = err.to_string();
    assert!(msg.contains(&format!("PODPLANE_SEED={seed}")) && msg.contains("bulk"), "{msg}");
    assert!(sim.link_stats(0).unwrap().dropped_mtu > 0, "seed {seed}");
}

#[test]
fn capture_holds_exactly_the_frames_sent() {
    let seed = seed_from_env(24);
    let (mut sim, a, b) = pair(seed, LinkConfig::default());
    let dir = std::env::temp_dir().join(format!("podplane-sim-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a-b.pcap");
    sim.capture(0, &path).unwrap();
    sim.udp_query("dns", a, b, 53, 3).unwrap();
    sim.run_until_done(Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    let sent = sim.link_stats(0).unwrap().sent;
    drop(sim); // flushes the capture
    let file = std::fs::File::open(&path).unwrap();
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    assert_eq!(reader.header().datalink, pcap_file::DataLink::ETHERNET);
    let mut n = 0u64;
    let mut last = std::time::Duration::ZERO;
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        assert!(p.timestamp >= last, "timestamps go back");
        last = p.timestamp;
        n += 1;
    }
    // ARP request + reply, then 3 queries and 3 answers.
    assert_eq!(n, sent);
    assert_eq!(n, 8);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_mib_through_a_podplane_node_over_lossy_links() {
    let seed = seed_from_env(25);
    let mut sim = Sim::new(seed);
    let a = sim.add_host(HostConfig::v4("a", Ipv4Addr::new(10, 244, 0, 2), 24)).unwrap();
    let b = sim.add_host(HostConfig::v4("b", Ipv4Addr::new(10, 244, 0, 3), 24)).unwrap();
    let mut x = XconnectStage::new();
    x.connect(PortId(0), PortId(1)).unwrap();
    let pl = Pipeline::new(vec![Box::new(ParseStage::new()), Box::new(x)], PipelineConfig::default(), seed);
    let n = sim.add_node("node", &["pod0", "pod1"], pl).unwrap();
    let lossy = LinkConfig::default().with_faults(0.01, 0.005, 0.01);
    let e0 = [sim.host_end(a), sim.node_end(n, "pod0").unwrap()];
    sim.link("pod0", &e0, lossy).unwrap();
    let e1 = [sim.host_end(b), sim.node_end(n, "pod1").unwrap()];
    sim.link("pod1", &e1, lossy).unwrap();
    sim.tcp_bulk("bulk", a, b, 5001, 1 << 20).unwrap();
    sim.run_until_done(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    let f = &sim.flows()[0];
    assert!(f.ok && f.bytes == 1 << 20, "seed {seed}: {f:?}");
    let snap = sim.nodes()[0].pipeline().counters().snapshot();
    assert!(snap.balanced(), "seed {seed}");
    assert_eq!(snap.totals.dropped, 0, "seed {seed}: no corruption here, nothing to drop:\n{snap}");
    assert_eq!(snap.totals.rx, snap.totals.tx, "seed {seed}");
    // The node saw at least every data segment once, and no more than the links delivered.
    let delivered = sim.link_stats(0).unwrap().delivered + sim.link_stats(1).unwrap().delivered;
    assert!(
        snap.totals.rx >= 718 && snap.totals.rx <= delivered,
        "seed {seed}: rx {} delivered {delivered}",
        snap.totals.rx
    );
}

#[test]
fn switched_segment_sends_known_unicast_to_one_end_only() {
    let seed = seed_from_env(26);
    for switched in [false, true] {
        let mut sim = Sim::new(seed);
        let hs: Vec<usize> = (1..=3)
            .map(|i| sim.add_host(HostConfig::v4(&format!("h{i}"), Ipv4Addr::new(10, 0, 0, i), 24)).unwrap())
            .collect();
        let ends: Vec<_> = hs.iter().map(|h| sim.host_end(*h)).collect();
        let cfg = if switched { LinkConfig::default().switched() } else { LinkConfig::default() };
        sim.link("segment", &ends, cfg).unwrap();
        sim.ping("ping", hs[0], "10.0.0.2".parse().unwrap(), 3, Duration::from_millis(10)).unwrap();
        sim.run_until_done(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
        // Let copies still in flight at the moment the last reply arrived land.
        sim.run_for(Duration::from_millis(10));
        let s = sim.link_stats(0).unwrap();
        // ARP request (broadcast) + reply + 3 requests + 3 replies = 8 frames sent.
        assert_eq!(s.sent, 8, "seed {seed}");
        // A hub repeats all 8 to both other ends; a switch sends the broadcast to two
        // and the 7 unicast frames (the ARP reply, and all echoes after learning) to one.
        assert_eq!(s.delivered, if switched { 9 } else { 16 }, "seed {seed} switched={switched}");
    }
}
