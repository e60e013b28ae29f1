//! Writes the input pcaps of the replay walk-through in the README: what pod-a sends
//! (an ARP request for its gateway, a ping to the gateway, a UDP query to a pod on
//! worker-2, the same with TTL 1, and a frame with a broken IPv4 checksum) and what
//! worker-2 answers on the uplink (its ARP reply).
//!
//! Run: `cargo run -p podplane-examples --bin replay-inputs -- DIR`, then replay them
//! through `examples/replay/node.yaml` (see the README, "Debugging").

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context as _;
use podplane::Instant;
use podplane::testutil::{arp_request, icmp4_echo, udp4};
use podplane::wire::ipv4::Ipv4Packet;
use podplane_sim::capture::Capture;

const POD_A: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 2];
const CNI0: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 1];
const ETH0: [u8; 6] = [0x02, 0x00, 192, 168, 0, 11];
const WORKER2: [u8; 6] = [0x02, 0x00, 192, 168, 0, 12];
/// 2026-11-25 00:00:00 UTC.
const T0: u64 = 1_795_564_800_000_000_000;
const MS: u64 = 1_000_000;

fn macs(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).context("usage: replay-inputs DIR")?);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let a = Ipv4Addr::new(10, 244, 1, 2);
    let peer_pod = Ipv4Addr::new(10, 244, 2, 5);

    let mut who_has = arp_request(a, Ipv4Addr::new(10, 244, 1, 1));
    who_has[6..12].copy_from_slice(&POD_A);
    who_has[22..28].copy_from_slice(&POD_A);
    let ping = macs(icmp4_echo(a, Ipv4Addr::new(10, 244, 1, 1), 1, 1), CNI0, POD_A);
    let query = macs(udp4(a, peer_pod, 40000, 53, b"query"), CNI0, POD_A);
    let mut ttl1 = query.clone();
    ttl1[14 + 8] = 1;
    Ipv4Packet::new_unchecked(&mut ttl1[14..]).fill_checksum();
    let mut broken = query.clone();
    broken[14 + 10] ^= 0xff;
    let mut w = Capture::create(&dir.join("pod-a.pcap"))?;
    for (k, f) in [who_has, ping, query, ttl1, broken].iter().enumerate() {
        w.write(Instant::from_nanos(T0 + k as u64 * MS), f)?;
    }
    w.finish()?;

    // worker-2 answers the node's ARP request for 192.168.0.12, 5 ms in.
    let mut reply = arp_request(Ipv4Addr::new(192, 168, 0, 12), Ipv4Addr::new(192, 168, 0, 11));
    reply[..6].copy_from_slice(&ETH0);
    reply[6..12].copy_from_slice(&WORKER2);
    reply[21] = 2;
    reply[22..28].copy_from_slice(&WORKER2);
    reply[32..38].copy_from_slice(&ETH0);
    let mut w = Capture::create(&dir.join("eth0.pcap"))?;
    w.write(Instant::from_nanos(T0 + 5 * MS), &reply)?;
    w.finish()?;
    println!("wrote {0}/pod-a.pcap (5 frames) and {0}/eth0.pcap (1 frame)", dir.display());
    Ok(())
}
