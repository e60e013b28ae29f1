//! `podplane replay` end to end: input pcaps made here, the binary run on
//! `examples/replay/node.yaml` with its `nodes.yaml`, the output pcaps read back and
//! checked field by field.
#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use podplane::testutil::{arp_request, icmp4_echo, udp4};
use podplane::wire::ipv4::Ipv4Packet;

const POD_A: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 2];
const POD_B: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 3];
const CNI0: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 1];
const ETH0: [u8; 6] = [0x02, 0x00, 192, 168, 0, 11];
const WORKER2: [u8; 6] = [0x02, 0x00, 192, 168, 0, 12];
const A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
/// 2026-11-25 00:00:00 UTC, in ns: the captures' clock (the input pcaps have
/// microsecond timestamps, so frames are spaced by whole microseconds).
const T0: u64 = 1_795_564_800_000_000_000;

fn example(f: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/replay").join(f)
}

/// A scratch directory unique to this test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("podplane-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn with_macs(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// An ARP frame from `mac`: request (op 1) or reply (op 2, to `to`).
fn arp(op: u8, mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr, to: [u8; 6]) -> Vec<u8> {
    let mut f = arp_request(sender, target);
    f[6..12].copy_from_slice(&mac);
    f[14 + 8..14 + 14].copy_from_slice(&mac);
    f[21] = op;
    if op == 2 {
        f[..6].copy_from_slice(&to);
        f[14 + 18..14 + 24].copy_from_slice(&to);
    }
    f
}

fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (t, f) in frames {
        let ts = std::time::Duration::from_nanos(*t);
        w.write_packet(&PcapPacket::new(ts, u32::try_from(f.len()).unwrap(), f)).unwrap();
    }
}

fn read_pcap(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        out.push((u64::try_from(p.timestamp.as_nanos()).unwrap(), p.data.into_owned()));
    }
    out
}

/// Timestamped frames of one input file.
type Frames = [(u64, Vec<u8>)];

/// Run the replay of the example node; returns the JSON report.
fn replay(dir: &Path, inputs: &[(&str, &Frames)], extra: &[&str]) -> serde_json::Value {
    let objects = example("nodes.yaml");
    let mut args = vec!["--objects", objects.to_str().unwrap()];
    args.extend_from_slice(extra);
    replay_config(dir, &example("node.yaml"), inputs, &args)
}

/// Run the replay of node file `config`; returns the JSON report.
fn replay_config(dir: &Path, config: &Path, inputs: &[(&str, &Frames)], extra: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podplane"));
    cmd.arg("replay").arg("--config").arg(config);
    for (port, frames) in inputs {
        let f = dir.join(format!("in-{port}.pcap"));
        write_pcap(&f, frames);
        cmd.arg("--in").arg(format!("{port}={}", f.display()));
    }
    cmd.arg("--out-dir").arg(dir.join("out")).arg("--json").args(extra);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn out(dir: &Path, port: &str) -> Vec<(u64, Vec<u8>)> {
    read_pcap(&dir.join("out").join(format!("{port}.pcap")))
}

fn drops(report: &serde_json::Value, stage: &str, reason: &str) -> u64 {
    report["drops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["stage"] == stage && d["reason"] == reason)
        .map_or(0, |d| d["packets"].as_u64().unwrap())
}

#[test]
fn bridge_learns_then_forwards_and_floods_unknown_unicast() {
    let dir = scratch("bridge");
    // B speaks first (learned on pod-b); A's frame to B's MAC goes only to pod-b; A's
    // frame to a MAC nobody has shown floods to pod-b (never back to pod-a).
    let b_first = with_macs(udp4(B, A, 5000, 6000, b"hi"), POD_A, POD_B);
    let a_to_b = with_macs(udp4(A, B, 6000, 5000, b"hello"), POD_B, POD_A);
    let a_unknown = with_macs(udp4(A, B, 6000, 5000, b"?"), [0x0a, 0x58, 10, 244, 1, 9], POD_A);
    let rep = replay(
        &dir,
        &[
            ("pod-b", &[(T0, b_first.clone())]),
            ("pod-a", &[(T0 + 1000, a_to_b.clone()), (T0 + 2000, a_unknown.clone())]),
        ],
        &[],
    );
    // b_first floods (A's MAC unknown): out on pod-a only.
    assert_eq!(out(&dir, "pod-a"), vec![(T0, b_first)]);
    assert_eq!(out(&dir, "pod-b"), vec![(T0 + 1000, a_to_b), (T0 + 2000, a_unknown)]);
    assert!(out(&dir, "eth0").is_empty() && out(&dir, "host").is_empty());
    assert_eq!(rep["totals"]["tx"], 3);
    let learned = rep["events"].as_array().unwrap().iter().find(|e| e["event"] == "fdb_learned").unwrap();
    assert_eq!(learned["count"], 2);
}

#[test]
fn arp_for_the_gateway_is_answered_with_the_bridge_mac() {
    let dir = scratch("arp");
    let rep = replay(&dir, &[("pod-a", &[(T0, arp(1, POD_A, A, Ipv4Addr::new(10, 244, 1, 1), [0; 6]))])], &[]);
    let r = out(&dir, "pod-a");
    assert_eq!(r.len(), 1);
    let f = &r[0].1;
    assert_eq!(r[0].0, T0);
    assert_eq!(&f[..6], &POD_A, "to the asker");
    assert_eq!(&f[6..12], &CNI0, "from cni0");
    assert_eq!(&f[12..14], &[0x08, 0x06]);
    assert_eq!(f[21], 2, "a reply");
    assert_eq!(&f[22..28], &CNI0, "sender MAC");
    assert_eq!(&f[28..32], &[10, 244, 1, 1], "sender IP");
    assert_eq!(&f[32..38], &POD_A, "target MAC");
    assert_eq!(&f[38..42], &[10, 244, 1, 2], "target IP");
    assert_eq!(rep["events"].as_array().unwrap().iter().find(|e| e["event"] == "arp_replied").unwrap()["count"], 1);
}

#[test]
fn a_packet_for_another_node_waits_for_arp_then_leaves_routed() {
    let dir = scratch("route");
    let to_peer = with_macs(udp4(A, Ipv4Addr::new(10, 244, 2, 5), 40000, 53, b"query"), CNI0, POD_A);
    // worker-2 answers the node's ARP request 1 ms later.
    let reply = arp(2, WORKER2, Ipv4Addr::new(192, 168, 0, 12), Ipv4Addr::new(192, 168, 0, 11), ETH0);
    let rep = replay(&dir, &[("pod-a", &[(T0, to_peer.clone())]), ("eth0", &[(T0 + 1_000_000, reply)])], &[]);
    let e = out(&dir, "eth0");
    assert_eq!(e.len(), 2, "the ARP request, then the packet");
    // The request: broadcast, who-has 192.168.0.12 tell 192.168.0.11, at the packet's time.
    assert_eq!(e[0].0, T0);
    assert_eq!(&e[0].1[..12], &[[0xff; 6], ETH0].concat()[..]);
    assert_eq!(&e[0].1[28..32], &[192, 168, 0, 11]);
    assert_eq!(&e[0].1[38..42], &[192, 168, 0, 12]);
    // The packet, released when the answer came: worker-2's MAC, TTL 63, checksum fixed.
    assert_eq!(e[1].0, T0 + 1_000_000);
    let f = &e[1].1;
    assert_eq!(&f[..6], &WORKER2);
    assert_eq!(&f[6..12], &ETH0);
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert_eq!(ip.ttl(), 63);
    assert!(ip.verify_checksum());
    assert_eq!(&f[14..14 + 8], &to_peer[14..14 + 8]);
    assert_eq!(&f[14 + 12..], &to_peer[14 + 12..], "the rest unchanged but TTL and checksum");
    assert_eq!(rep["totals"]["held"], 1);
    assert_eq!(rep["totals"]["released"], 1);
}

#[test]
fn ttl_expiry_local_delivery_and_bad_headers() {
    let dir = scratch("errors");
    // A introduces itself (ARP for the gateway), then: a TTL-1 packet for the other
    // node (ICMP time exceeded back to A), a ping to cni0's address (for the host
    // stack), and an IPv4 header with a bad checksum (dropped, counted).
    let mut ttl1 = with_macs(udp4(A, Ipv4Addr::new(10, 244, 2, 5), 40000, 53, b"q"), CNI0, POD_A);
    ttl1[14 + 8] = 1;
    Ipv4Packet::new_unchecked(&mut ttl1[14..]).fill_checksum();
    let ping = with_macs(icmp4_echo(A, Ipv4Addr::new(10, 244, 1, 1), 7, 1), CNI0, POD_A);
    let mut bad = with_macs(udp4(A, B, 1, 2, b"x"), CNI0, POD_A);
    bad[14 + 10] ^= 0xff;
    let frames = [
        (T0, arp(1, POD_A, A, Ipv4Addr::new(10, 244, 1, 1), [0; 6])),
        (T0 + 10_000, ttl1.clone()),
        (T0 + 20_000, ping.clone()),
        (T0 + 30_000, bad),
    ];
    let rep = replay(&dir, &[("pod-a", &frames)], &["--trace", "4"]);
    let a = out(&dir, "pod-a");
    assert_eq!(a.len(), 2, "the ARP reply and the ICMP error");
    let (t, err) = &a[1];
    assert_eq!(*t, T0 + 10_000);
    assert_eq!(&err[..12], &[POD_A, CNI0].concat()[..]);
    let ip = Ipv4Packet::new_checked(&err[14..]).unwrap();
    assert_eq!(
        (ip.src_addr(), ip.dst_addr(), ip.ttl(), ip.protocol().into()),
        (Ipv4Addr::new(10, 244, 1, 1), A, 64, 1u8)
    );
    assert_eq!(err[15], 0xc0, "TOS");
    assert_eq!(&err[34..36], &[11, 0], "time exceeded in transit");
    assert_eq!(&err[42..], &ttl1[14..], "the whole offending packet quoted");
    assert_eq!(out(&dir, "host"), vec![(T0 + 20_000, ping)]);
    assert_eq!(drops(&rep, "parse", "ipv4_bad_checksum"), 1);
    assert_eq!(drops(&rep, "route", "ttl_exceeded"), 1);
    let trace = rep["trace"].as_array().unwrap();
    assert!(trace.iter().any(|l| l.as_str().unwrap().contains("route")), "trace: {trace:?}");
}

/// Calico style: /32 pods on their own ports behind proxy ARP for 169.254.1.1, an
/// uplink with a smaller MTU.
const ROUTED: &str = "\
name: w
podCIDR: 10.244.1.0/24
podNetwork: routed
ports:
  - {name: eth0, kind: pcap, role: uplink, address: 192.168.0.11/24, mtu: 1400}
  - {name: cali-a, kind: pcap, role: pod, ip: 10.244.1.2}
  - {name: cali-b, kind: pcap, role: pod, ip: 10.244.1.3}
routes:
  - {dst: 0.0.0.0/0, via: 192.168.0.1}
";

#[test]
fn routed_pods_behind_proxy_arp_and_frag_needed() {
    let dir = scratch("routed");
    let cfg = dir.join("node.yaml");
    std::fs::write(&cfg, ROUTED).unwrap();
    let gw = Ipv4Addr::new(169, 254, 1, 1);
    let calico = [0xee; 6];
    // Each pod asks for its gateway; A then sends to B, and a 1450-byte DF datagram
    // towards the uplink, whose MTU is 1400.
    let a_to_b = with_macs(udp4(A, B, 7000, 7001, b"routed"), calico, POD_A);
    let big = with_macs(udp4(A, Ipv4Addr::new(203, 0, 113, 5), 7000, 9, &[0x5a; 1450 - 28]), calico, POD_A);
    let rep = replay_config(
        &dir,
        &cfg,
        &[
            ("cali-a", &[(T0, arp(1, POD_A, A, gw, [0; 6])), (T0 + 2000, a_to_b.clone()), (T0 + 3000, big.clone())]),
            ("cali-b", &[(T0 + 1000, arp(1, POD_B, B, gw, [0; 6]))]),
        ],
        &[],
    );
    let a = out(&dir, "cali-a");
    let b = out(&dir, "cali-b");
    // The proxy replies: 169.254.1.1 is at ee:ee:ee:ee:ee:ee, to each asker.
    for (r, mac, ip) in [(&a[0].1, POD_A, A), (&b[0].1, POD_B, B)] {
        assert_eq!(&r[..12], &[mac, calico].concat()[..]);
        assert_eq!((r[21], &r[22..28], &r[28..32]), (2, &calico[..], &[169, 254, 1, 1][..]));
        assert_eq!((&r[32..38], &r[38..42]), (&mac[..], &ip.octets()[..]));
    }
    // A to B: routed by B's /32, B's MAC known from its ARP request (as Linux learns
    // the asker), TTL 63, from Calico's MAC.
    assert_eq!(b.len(), 2, "{b:?}");
    let f = &b[1].1;
    assert_eq!(&f[..12], &[POD_B, calico].concat()[..]);
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert_eq!((ip.ttl(), ip.verify_checksum()), (63, true));
    assert_eq!(&f[14 + 20..], &a_to_b[14 + 20..]);
    // The big one: ICMP fragmentation needed with next-hop MTU 1400, back to A from
    // A's gateway address, quoting the offending header.
    assert_eq!(a.len(), 2, "{a:?}");
    let e = &a[1].1;
    assert_eq!(&e[..12], &[POD_A, calico].concat()[..]);
    let ip = Ipv4Packet::new_checked(&e[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (gw, A));
    assert_eq!(&e[34..36], &[3, 4], "destination unreachable, fragmentation needed");
    assert_eq!(u16::from_be_bytes([e[40], e[41]]), 1400, "next-hop MTU");
    assert_eq!(&e[42..62], &big[14..34], "the offending IP header quoted");
    assert!(out(&dir, "eth0").is_empty(), "nothing too big went out");
    assert_eq!(drops(&rep, "route", "frag_needed"), 1);
    let proxied = rep["events"].as_array().unwrap().iter().find(|e| e["event"] == "proxy_arp_replied").unwrap();
    assert_eq!(proxied["count"], 2);
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let frames: Vec<(u64, Vec<u8>)> = (0..50u64)
        .map(|i| {
            let dst = Ipv4Addr::new(10, 244, 2, u8::try_from(i % 7).unwrap() + 1);
            let mut f = with_macs(udp4(A, dst, 40000 + u16::try_from(i).unwrap(), 53, b"x"), CNI0, POD_A);
            if i % 5 == 0 {
                f[14 + 8] = 1;
                Ipv4Packet::new_unchecked(&mut f[14..]).fill_checksum();
            }
            (T0 + i * 1000, f)
        })
        .collect();
    let reply = arp(2, WORKER2, Ipv4Addr::new(192, 168, 0, 12), Ipv4Addr::new(192, 168, 0, 11), ETH0);
    let mut runs = Vec::new();
    for k in 0..2 {
        let dir = scratch(&format!("determinism{k}"));
        let rep = replay(&dir, &[("pod-a", &frames), ("eth0", &[(T0 + 20_500, reply.clone())])], &["--batch", "8"]);
        let files: Vec<Vec<u8>> = ["eth0", "pod-a", "pod-b", "host"]
            .iter()
            .map(|p| std::fs::read(dir.join("out").join(format!("{p}.pcap"))).unwrap())
            .collect();
        runs.push((rep, files));
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].1[0].len() > 24 * 50, "eth0 carried the packets");
}

#[test]
fn tshark_reads_every_output() {
    let have = Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "tshark is missing (CI installs it)");
        eprintln!("tshark not installed: skipped (set CI=true to make this a failure)");
        return;
    }
    let dir = scratch("tshark");
    let to_peer = with_macs(udp4(A, Ipv4Addr::new(10, 244, 2, 5), 40000, 53, b"query"), CNI0, POD_A);
    let reply = arp(2, WORKER2, Ipv4Addr::new(192, 168, 0, 12), Ipv4Addr::new(192, 168, 0, 11), ETH0);
    let frames = [(T0, arp(1, POD_A, A, Ipv4Addr::new(10, 244, 1, 1), [0; 6])), (T0 + 5, to_peer)];
    replay(&dir, &[("pod-a", &frames), ("eth0", &[(T0 + 9, reply)])], &[]);
    for port in ["eth0", "pod-a", "pod-b", "host"] {
        let f = dir.join("out").join(format!("{port}.pcap"));
        let o = Command::new("tshark").arg("-r").arg(&f).output().unwrap();
        // As root tshark warns that it runs as root; anything else on stderr is a complaint.
        let complaints: Vec<String> = String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("Running as user"))
            .map(str::to_string)
            .collect();
        assert!(o.status.success() && complaints.is_empty(), "{port}: {complaints:?}");
        let text = String::from_utf8_lossy(&o.stdout);
        // eth0: the ARP request and the routed packet; pod-a: the ARP reply; pod-b: pod-a's
        // broadcast ARP request, flooded as a Linux bridge floods it.
        let want = match port {
            "eth0" => 2,
            "pod-a" | "pod-b" => 1,
            _ => 0,
        };
        assert_eq!(text.lines().count(), want, "{port}: {text}");
    }
}

#[test]
fn vxlan_output_decodes_in_tshark_with_the_inner_packet() {
    let dir = scratch("vxlan");
    let cfg = dir.join("node.yaml");
    let node = std::fs::read_to_string(example("node.yaml")).unwrap() + "overlay: {mode: vxlan}\n";
    std::fs::write(&cfg, node).unwrap();
    let to_peer = with_macs(udp4(A, Ipv4Addr::new(10, 244, 2, 5), 40000, 53, b"over vxlan"), CNI0, POD_A);
    let reply = arp(2, WORKER2, Ipv4Addr::new(192, 168, 0, 12), Ipv4Addr::new(192, 168, 0, 11), ETH0);
    let objects = example("nodes.yaml");
    let rep = replay_config(
        &dir,
        &cfg,
        &[("pod-a", &[(T0, to_peer.clone())]), ("eth0", &[(T0 + 1000, reply)])],
        &["--objects", objects.to_str().unwrap()],
    );
    let e = out(&dir, "eth0");
    assert_eq!(e.len(), 2, "ARP for worker-2, then the encapsulated packet");
    let f = &e[1].1;
    assert_eq!(f.len(), to_peer.len() + 50);
    assert_eq!(&f[..6], &WORKER2);
    assert_eq!(&f[36..38], &8472u16.to_be_bytes());
    let learned = rep["events"].as_array().unwrap().iter().find(|e| e["event"] == "encapsulated").unwrap();
    assert_eq!(learned["count"], 1);
    if Command::new("tshark").arg("-v").output().is_ok_and(|o| o.status.success()) {
        let o = Command::new("tshark")
            .arg("-r")
            .arg(dir.join("out").join("eth0.pcap"))
            .args([
                "-d",
                "udp.port==8472,vxlan",
                "-Y",
                "vxlan",
                "-T",
                "fields",
                "-e",
                "vxlan.vni",
                "-e",
                "ip.src",
                "-e",
                "ip.dst",
                "-e",
                "udp.dstport",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(text.trim(), "1\t192.168.0.11,10.244.1.2\t192.168.0.12,10.244.2.5\t8472,53", "{text}");
    } else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "tshark is missing (CI installs it)");
    }
}

#[test]
fn pcapng_input_replays_like_pcap() {
    let have = Command::new("editcap").arg("-h").output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "editcap (with tshark) is missing");
        return;
    }
    let frames = [
        (T0, arp(1, POD_A, A, Ipv4Addr::new(10, 244, 1, 1), [0; 6])),
        (T0 + 7000, with_macs(udp4(A, Ipv4Addr::new(10, 244, 2, 5), 40000, 53, b"ng"), CNI0, POD_A)),
    ];
    let dir = scratch("pcapng");
    let rep_pcap = replay(&dir, &[("pod-a", &frames)], &[]);
    let want: Vec<Vec<u8>> =
        ["eth0", "pod-a"].iter().map(|p| std::fs::read(dir.join("out").join(format!("{p}.pcap"))).unwrap()).collect();
    // The same input as pcapng (written by Wireshark's editcap), replayed again.
    let ng = dir.join("in.pcapng");
    let o = Command::new("editcap").args(["-F", "pcapng"]).arg(dir.join("in-pod-a.pcap")).arg(&ng).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&ng).unwrap()[..4], [0x0a, 0x0d, 0x0d, 0x0a], "a pcapng file");
    let out = Command::new(env!("CARGO_BIN_EXE_podplane"))
        .args(["replay", "--config"])
        .arg(example("node.yaml"))
        .arg("--objects")
        .arg(example("nodes.yaml"))
        .arg("--in")
        .arg(format!("pod-a={}", ng.display()))
        .arg("--out-dir")
        .arg(dir.join("out-ng"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rep_ng: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep_ng, rep_pcap);
    for (p, w) in ["eth0", "pod-a"].iter().zip(&want) {
        assert_eq!(
            &std::fs::read(dir.join("out-ng").join(format!("{p}.pcap"))).unwrap(),
            w,
            "{p}: same bytes, same timestamps"
        );
    }
}
