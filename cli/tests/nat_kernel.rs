//! Root test: conntrack and NAT against the Linux kernel, packet for packet.
//!
//! The same frames go through `podplane replay` (a node with an uplink and one pod
//! on its bridge) and through a kernel network namespace set up as the same node:
//! the pod's gateway address and the uplink address on two TAP devices the test
//! holds, the same routes, static neighbours, and nftables rules written as
//! kube-proxy and Flannel write them (masquerade of pod traffic leaving the cluster,
//! DNAT of a service to an endpoint on another node, hairpin masquerade marked as
//! kube-proxy marks it, `ct state invalid drop`). Masquerade keeps free ports on both
//! sides (no `fully-random`), so the replies can be written in advance and no port
//! needs normalising. The traffic: UDP and a TCP handshake with data through
//! masquerade, an ICMP echo, a router's fragmentation-needed about a masqueraded
//! datagram, DNAT there and back, an endpoint's port-unreachable about a DNATed
//! datagram, the node's own fragmentation-needed about a DNATed datagram too big for
//! the uplink (on an established flow and on a new one whose only packet it was), a
//! hairpin connection, and an out-of-window segment both must drop. The IP
//! identification of the errors the node makes is random on both sides and blanked.
//! Every IPv4 frame each side sends out of each port must be equal byte for byte,
//! and tshark must read every output. The namespace goes even on failure.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(clippy::disallowed_methods)] // a real kernel on real time: waits are bounded
#![allow(unsafe_code)]

mod common;

use std::net::Ipv4Addr;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Guard, can_run, in_ns, ip, skip};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use podplane::testutil::{arp_request, icmp4_echo, tcp4_seq, udp4};
use podplane::wire::checksum::checksum;
use podplane::wire::tcp::TcpFlags;
use podplane_tap::{TapDevice, TapFlags};

const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const NODE2: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 12);
const WORLD: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
const DNS_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const DNS_EP: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
const WEB_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

const POD_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 2];
const GW_MAC: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 1];
const ETH0_MAC: [u8; 6] = [0x02, 0x00, 192, 168, 0, 11];
const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 192, 168, 0, 1];
const NODE2_MAC: [u8; 6] = [0x02, 0x00, 192, 168, 0, 12];

const NODE_FILE: &str = "\
name: worker-1
addresses: [192.168.0.11]
podCIDR: 10.244.1.0/24
ports:
  - {name: eth0, kind: pcap, role: uplink, address: 192.168.0.11/24, mtu: 1400}
  - {name: pod-a, kind: pcap, role: pod, ip: 10.244.1.2}
routes:
  - {dst: 0.0.0.0/0, via: 192.168.0.1}
  - {dst: 10.244.2.0/24, via: 192.168.0.12}
nat:
  fullyRandom: false
  dnat:
    - {protocol: udp, destination: \"10.96.0.10:53\", to: \"10.244.2.5:5353\"}
    - {protocol: tcp, destination: \"10.96.0.20:80\", to: \"10.244.1.2:8080\"}
";

/// kube-proxy's and Flannel's rules for the same node, in nftables.
const RULESET: &str = "\
table ip nat {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.96.0.10 udp dport 53 dnat to 10.244.2.5:5353
    ip daddr 10.96.0.20 tcp dport 80 ip saddr 10.244.1.2 meta mark set 0x4000
    ip daddr 10.96.0.20 tcp dport 80 dnat to 10.244.1.2:8080
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    meta mark 0x4000 masquerade
    ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade
  }
}
table ip filter {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state invalid drop
  }
}
";

fn with_macs(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// An ARP reply from `ip`/`mac` to the node's uplink.
fn arp_reply(ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut f = arp_request(ip, NODE);
    f[..6].copy_from_slice(&ETH0_MAC);
    f[6..12].copy_from_slice(&mac);
    f[21] = 2;
    f[22..28].copy_from_slice(&mac);
    f[32..38].copy_from_slice(&ETH0_MAC);
    f
}

/// `f` (an IPv4 frame) as a router forwarded it: TTL one less.
fn forwarded(mut f: Vec<u8>) -> Vec<u8> {
    f[22] -= 1;
    f[24..26].fill(0);
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// An ICMP error (type, code, the 4 bytes after the checksum) from `from` to `to`
/// quoting the IP packet of frame `quoted`.
fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, kind: u8, code: u8, rest: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(&quoted[14..]);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = udp4(from, to, 1, 1, &[]);
    f.truncate(34);
    f[23] = 1;
    f[16..18].copy_from_slice(&u16::try_from(20 + icmp.len()).unwrap().to_be_bytes());
    f[24..26].fill(0);
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&icmp);
    f
}

/// The frames, in order: (port, frame). Port 0 is the uplink, 1 the pod.
fn traffic() -> Vec<(usize, Vec<u8>)> {
    let up = |f: Vec<u8>, from: [u8; 6]| (0, with_macs(f, ETH0_MAC, from));
    let pod = |f: Vec<u8>| (1, with_macs(f, GW_MAC, POD_MAC));
    let mut who_has = arp_request(POD, GW);
    who_has[..6].copy_from_slice(&[0xff; 6]);
    who_has[6..12].copy_from_slice(&POD_MAC);
    who_has[22..28].copy_from_slice(&POD_MAC);
    let query = udp4(POD, WORLD, 40000, 53, b"query for a name");
    // What the node sends for it: masqueraded, one hop older.
    let query_out = forwarded(udp4(NODE, WORLD, 40000, 53, b"query for a name"));
    let (c, s) = ((POD, 41000), (WORLD, 80));
    let (cn, sn) = ((NODE, 41000), (WORLD, 80));
    let dns = udp4(POD, DNS_VIP, 42000, 53, b"service query");
    let dns_out = forwarded(udp4(POD, DNS_EP, 42000, 5353, b"service query"));
    let hp = (POD, 43000);
    let mut echo_reply = icmp4_echo(WORLD, NODE, 77, 1);
    echo_reply[34] = 0;
    echo_reply[36..38].fill(0);
    let ck = checksum(&echo_reply[34..]);
    echo_reply[36..38].copy_from_slice(&ck.to_be_bytes());
    vec![
        up(arp_reply(ROUTER, ROUTER_MAC), ROUTER_MAC),
        up(arp_reply(NODE2, NODE2_MAC), NODE2_MAC),
        (1, who_has),
        pod(query),
        up(udp4(WORLD, NODE, 53, 40000, b"the answer"), ROUTER_MAC),
        up(icmp_error(ROUTER, NODE, 3, 4, [0, 0, 0x05, 0x78], &query_out), ROUTER_MAC),
        pod(tcp4_seq(c, s, TcpFlags::SYN, 1000, 0, b"")),
        up(tcp4_seq(s, cn, TcpFlags::SYN | TcpFlags::ACK, 5000, 1001, b""), ROUTER_MAC),
        pod(tcp4_seq(c, s, TcpFlags::ACK, 1001, 5001, b"")),
        pod(tcp4_seq(c, s, TcpFlags::PSH | TcpFlags::ACK, 1001, 5001, b"GET /")),
        up(tcp4_seq(sn, cn, TcpFlags::ACK, 5001, 1006, b""), ROUTER_MAC),
        // Beyond the pod's window by more than a window: INVALID, dropped by both.
        up(tcp4_seq(sn, cn, TcpFlags::ACK, 5001 + 200_000, 1006, b"wild"), ROUTER_MAC),
        // Under the window (data acknowledged long ago): since Linux 6.0 only ignored,
        // so still part of the connection and translated by both.
        up(tcp4_seq(sn, cn, TcpFlags::ACK, 5001 + 3_000_000_000, 1006, b"late"), ROUTER_MAC),
        pod(icmp4_echo(POD, WORLD, 77, 1)),
        up(echo_reply, ROUTER_MAC),
        pod(dns),
        up(udp4(DNS_EP, POD, 5353, 42000, b"service answer"), NODE2_MAC),
        up(icmp_error(DNS_EP, POD, 3, 3, [0; 4], &dns_out), NODE2_MAC),
        // Too big for the uplink (MTU 1400), DF set: the node answers fragmentation-
        // needed about a DNATed packet, on the established flow and on a new one.
        pod(udp4(POD, DNS_VIP, 42000, 53, &[0x5a; 1450])),
        pod(udp4(POD, DNS_VIP, 42001, 53, &[0x5a; 1450])),
        pod(tcp4_seq(hp, (WEB_VIP, 80), TcpFlags::SYN, 7000, 0, b"")),
        pod(tcp4_seq((POD, 8080), (GW, 43000), TcpFlags::SYN | TcpFlags::ACK, 9000, 7001, b"")),
    ]
}

/// 2026-11-25 00:00:00 UTC in ns, 1 ms between frames.
const T0: u64 = 1_795_564_800_000_000_000;

fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (t, f) in frames {
        w.write_packet(&PcapPacket::new(Duration::from_nanos(*t), u32::try_from(f.len()).unwrap(), f)).unwrap();
    }
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

/// The IPv4 frames, with the IP identification (and so the header checksum) of the
/// ICMP errors the node makes itself (TTL 64) blanked: both sides pick it at random.
fn ipv4_only(frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    frames
        .into_iter()
        .filter(|f| f.len() > 14 && f[12..14] == [0x08, 0x00])
        .map(|mut f| {
            if f.len() >= 34 && f[23] == 1 && f[22] == 64 {
                f[18..20].fill(0);
                f[24..26].fill(0);
            }
            f
        })
        .collect()
}

/// podplane's IPv4 output per port (eth0, pod-a).
fn through_podplane(dir: &Path, frames: &[(usize, Vec<u8>)]) -> [Vec<Vec<u8>>; 2] {
    let node = dir.join("node.yaml");
    std::fs::write(&node, NODE_FILE).unwrap();
    let mut inputs: [Vec<(u64, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
    for (i, (port, f)) in frames.iter().enumerate() {
        inputs[*port].push((T0 + i as u64 * 1_000_000, f.clone()));
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podplane"));
    cmd.arg("replay").arg("--config").arg(&node);
    for (port, name) in [(0, "eth0"), (1, "pod-a")] {
        let f = dir.join(format!("in-{name}.pcap"));
        write_pcap(&f, &inputs[port]);
        cmd.arg("--in").arg(format!("{name}={}", f.display()));
    }
    cmd.arg("--out-dir").arg(dir.join("podplane"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "replay: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    ["eth0", "pod-a"].map(|n| ipv4_only(read_pcap(&dir.join("podplane").join(format!("{n}.pcap")))))
}

/// Drain what the kernel sent out of `tap` (non-blocking).
fn drain(tap: &TapDevice, into: &mut Vec<Vec<u8>>) {
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: read into a buffer we own, of its length, from a descriptor we own.
        let n = unsafe { libc::read(tap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else { break };
        if n == 0 {
            break;
        }
        into.push(buf[..n].to_vec());
    }
}

/// The kernel's IPv4 output per port, the namespace set up as the node.
fn through_the_kernel(g: &mut Guard, ns: &str, frames: &[(usize, Vec<u8>)]) -> ([Vec<Vec<u8>>; 2], String) {
    g.netns(ns);
    let tag = std::process::id() % 100_000;
    let names = [format!("ppku{tag}"), format!("ppkp{tag}")];
    let taps: Vec<TapDevice> = names.iter().map(|n| TapDevice::open(n, TapFlags::default()).unwrap()).collect();
    for (name, mac, addr, mtu) in
        [(&names[0], ETH0_MAC, "192.168.0.11/24", "1400"), (&names[1], GW_MAC, "10.244.1.1/24", "1500")]
    {
        ip(&["link", "set", name, "netns", ns]);
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        in_ns(ns, &["sysctl", "-qw", &format!("net.ipv6.conf.{name}.disable_ipv6=1")]);
        ip(&["-n", ns, "link", "set", name, "address", &mac, "mtu", mtu, "up"]);
        ip(&["-n", ns, "addr", "add", addr, "dev", name]);
    }
    for s in ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.all.send_redirects=0"] {
        in_ns(ns, &["sysctl", "-qw", s]);
    }
    for n in &names {
        in_ns(ns, &["sysctl", "-qw", &format!("net.ipv4.conf.{n}.send_redirects=0")]);
        in_ns(ns, &["sysctl", "-qw", &format!("net.ipv4.conf.{n}.rp_filter=0")]);
    }
    ip(&["-n", ns, "route", "add", "default", "via", "192.168.0.1"]);
    ip(&["-n", ns, "route", "add", "10.244.2.0/24", "via", "192.168.0.12"]);
    let mac = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
    for (addr, m, dev) in [
        ("192.168.0.1", ROUTER_MAC, &names[0]),
        ("192.168.0.12", NODE2_MAC, &names[0]),
        ("10.244.1.2", POD_MAC, &names[1]),
    ] {
        ip(&["-n", ns, "neigh", "replace", addr, "lladdr", &mac(m), "dev", dev, "nud", "permanent"]);
    }
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), RULESET.as_bytes()).unwrap();
    let o = nft.wait_with_output().unwrap();
    assert!(o.status.success(), "nft -f: {}", String::from_utf8_lossy(&o.stderr));
    for t in &taps {
        t.set_nonblocking(true).unwrap();
    }
    let mut out: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    std::thread::sleep(Duration::from_millis(100));
    for (t, o) in taps.iter().zip(out.iter_mut()) {
        drain(t, o);
        o.clear();
    }
    for (port, f) in frames {
        // SAFETY: write a buffer we own, of its length, to a descriptor we own.
        let n = unsafe { libc::write(taps[*port].as_raw_fd(), f.as_ptr().cast(), f.len()) };
        assert_eq!(usize::try_from(n).ok(), Some(f.len()), "write to the kernel: {}", std::io::Error::last_os_error());
        std::thread::sleep(Duration::from_millis(20));
        for (t, o) in taps.iter().zip(out.iter_mut()) {
            drain(t, o);
        }
    }
    let ct = Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/nf_conntrack"]).output().unwrap();
    (out.map(ipv4_only), String::from_utf8_lossy(&ct.stdout).into_owned())
}

/// The connections of a `conntrack -L` or `/proc/net/nf_conntrack` listing: protocol,
/// TCP state and both tuples (timeouts, counters and ICMP types left out), sorted.
fn connections(listing: &str) -> Vec<String> {
    let mut v: Vec<String> = listing
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().skip_while(|w| *w == "ipv4" || *w == "2").collect();
            let state = w.get(3).filter(|s| s.chars().all(|c| c.is_ascii_uppercase() || c == '_')).copied();
            let tuples =
                w.iter().filter(|t| ["src=", "dst=", "sport=", "dport=", "id="].iter().any(|p| t.starts_with(p)));
            let mut s = format!("{} {}", w[0], state.unwrap_or("-"));
            for t in tuples {
                s.push(' ');
                s.push_str(t);
            }
            s
        })
        .collect();
    v.sort();
    v
}

/// tshark's one-line summaries of a pcap (it must read it).
fn tshark(path: &Path) -> Vec<String> {
    let o = Command::new("tshark").arg("-r").arg(path).output().unwrap();
    assert!(o.status.success(), "tshark -r {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
}

#[test]
fn nat_matches_the_kernel_packet_for_packet() {
    if let Err(why) = can_run(&["ip", "nft", "tshark"]) {
        skip("nat_matches_the_kernel_packet_for_packet", &why);
        return;
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("podplane-nat-kernel-{}", std::process::id()));
    let mut g = Guard::new(dir.clone());
    let frames = traffic();
    let pp = through_podplane(&dir, &frames);
    let (mut kernel, kernel_ct) = through_the_kernel(&mut g, &format!("ppnat{}", std::process::id()), &frames);
    // Where we differ on purpose: the INVALID segment is not un-SNATed by the
    // kernel, so it is addressed to the node itself; kube-proxy's `ct state invalid
    // drop` sits in the forward chain only, and the node's own TCP stack answers it
    // with a RST that resets the server's side of the pod's connection (the
    // kubernetes#74839 pattern). podplane drops it (`ct_invalid`) and sends nothing.
    let rst: Vec<usize> = (0..kernel[0].len())
        .filter(|&j| {
            let f = &kernel[0][j];
            f[23] == 6 && f[22] == 64 && f[26..30] == NODE.octets() && f[47] & 0x04 != 0
        })
        .collect();
    assert_eq!(rst.len(), 1, "the kernel's own RST for the invalid segment");
    assert_eq!(&kernel[0][rst[0]][38..42], &1006u32.to_be_bytes(), "it answers the invalid segment's ACK");
    kernel[0].remove(rst[0]);
    for (i, name) in ["eth0", "pod-a"].iter().enumerate() {
        let pk = dir.join(format!("kernel-{name}.pcap"));
        write_pcap(&pk, &kernel[i].iter().map(|f| (T0, f.clone())).collect::<Vec<_>>());
        let pp_file = dir.join(format!("podplane-{name}.pcap"));
        write_pcap(&pp_file, &pp[i].iter().map(|f| (T0, f.clone())).collect::<Vec<_>>());
        let (ks, ps) = (tshark(&pk), tshark(&pp_file));
        eprintln!("{name}: kernel\n  {}\n{name}: podplane\n  {}", ks.join("\n  "), ps.join("\n  "));
        for (j, (k, p)) in kernel[i].iter().zip(&pp[i]).enumerate() {
            assert_eq!(p, k, "{name} frame {j} differs:\n podplane {}\n kernel   {}", ps[j], ks[j]);
        }
        assert_eq!(pp[i].len(), kernel[i].len(), "{name}: number of IPv4 frames");
    }
    // Every exchange reached the far side: 6 frames out of the uplink, 12 to the pod.
    assert_eq!((pp[0].len(), pp[1].len()), (6, 12));
    // And both ended with the same connections in the same states.
    let ours = std::fs::read_to_string(dir.join("podplane/conntrack.txt")).unwrap();
    assert_eq!(connections(&ours), connections(&kernel_ct), "podplane:\n{ours}\nkernel:\n{kernel_ct}");
}
