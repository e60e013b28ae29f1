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
use std::path::{Path, PathBuf};

use common::kernel::{
    assert_same_frames, connections, exchange, forwarded, icmp_error, ipv4_only, mac_text, nft_load, node_sysctls,
    replay, with_macs,
};
use common::{Guard, can_run, in_ns, ip, skip};
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

/// podplane's IPv4 output per port (eth0, pod-a).
fn through_podplane(dir: &Path, frames: &[(usize, Vec<u8>)]) -> Vec<Vec<Vec<u8>>> {
    replay(dir, (NODE_FILE, None), &["eth0", "pod-a"], frames, T0).into_iter().map(ipv4_only).collect()
}

/// The kernel's IPv4 output per port, the namespace set up as the node.
fn through_the_kernel(g: &mut Guard, ns: &str, frames: &[(usize, Vec<u8>)]) -> (Vec<Vec<Vec<u8>>>, String) {
    g.netns(ns);
    let tag = std::process::id() % 100_000;
    let names = [format!("ppku{tag}"), format!("ppkp{tag}")];
    let taps: Vec<TapDevice> = names.iter().map(|n| TapDevice::open(n, TapFlags::default()).unwrap()).collect();
    // The uplink, and Flannel's cni0: a bridge with the gateway address, the pod's
    // TAP on it with hairpin on (as kubelet sets it), bridge netfilter on.
    ip(&["-n", ns, "link", "add", "cni0", "type", "bridge"]);
    in_ns(ns, &["sysctl", "-qw", "net.ipv6.conf.cni0.disable_ipv6=1"]);
    for (name, mac, addr, mtu) in
        [(names[0].as_str(), ETH0_MAC, "192.168.0.11/24", "1400"), ("cni0", GW_MAC, "10.244.1.1/24", "1500")]
    {
        if name != "cni0" {
            ip(&["link", "set", name, "netns", ns]);
            in_ns(ns, &["sysctl", "-qw", &format!("net.ipv6.conf.{name}.disable_ipv6=1")]);
        }
        ip(&["-n", ns, "link", "set", name, "address", &mac_text(mac), "mtu", mtu, "up"]);
        ip(&["-n", ns, "addr", "add", addr, "dev", name]);
    }
    ip(&["link", "set", &names[1], "netns", ns]);
    in_ns(ns, &["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", names[1])]);
    ip(&["-n", ns, "link", "set", &names[1], "master", "cni0", "up"]);
    in_ns(ns, &["bridge", "link", "set", "dev", &names[1], "hairpin", "on"]);
    node_sysctls(ns, &[names[0].as_str(), names[1].as_str(), "cni0"]);
    ip(&["-n", ns, "route", "add", "default", "via", "192.168.0.1"]);
    ip(&["-n", ns, "route", "add", "10.244.2.0/24", "via", "192.168.0.12"]);
    for (addr, m, dev) in [
        ("192.168.0.1", ROUTER_MAC, names[0].as_str()),
        ("192.168.0.12", NODE2_MAC, names[0].as_str()),
        ("10.244.1.2", POD_MAC, "cni0"),
    ] {
        ip(&["-n", ns, "neigh", "replace", addr, "lladdr", &mac_text(m), "dev", dev, "nud", "permanent"]);
    }
    nft_load(ns, RULESET);
    let (out, ct) = exchange(&taps, ns, frames);
    (out.into_iter().map(ipv4_only).collect(), ct)
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
    assert_same_frames(&dir, &["eth0", "pod-a"], &pp, &kernel, T0);
    // Every exchange reached the far side: 6 frames out of the uplink, 12 to the pod.
    assert_eq!((pp[0].len(), pp[1].len()), (6, 12));
    // And both ended with the same connections in the same states.
    let ours = std::fs::read_to_string(dir.join("podplane/conntrack.txt")).unwrap();
    assert_eq!(connections(&ours), connections(&kernel_ct), "podplane:\n{ours}\nkernel:\n{kernel_ct}");
}
