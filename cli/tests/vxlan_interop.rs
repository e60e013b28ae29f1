//! Root test: a podplane node and a Linux node joined by VXLAN, as Flannel joins them.
//!
//! ```text
//!  netns P (pod)          podplane run                    netns L (Linux node)        netns Q (pod)
//!  10.244.1.2 ── TAP ppp ─ pod port │ uplink ─ TAP ppu ── 192.168.0.12  vxlan0 (VNI 1,   ── veth ── 10.244.2.2
//!  via 10.244.1.1        cni0 10.244.1.1 │ 192.168.0.11     dstport 8472, 10.244.2.0/32)    via 10.244.2.1
//! ```
//!
//! The Linux side is set up as flanneld sets a node up: a `vxlan` device with the VTEP
//! MAC, a route `10.244.1.0/24 via 10.244.1.0 dev vxlan0 onlink`, a permanent neighbour
//! for 10.244.1.0 at podplane's VTEP MAC and an FDB entry sending that MAC to
//! 192.168.0.11. podplane learns the Linux node from its `Node` object (Flannel's
//! annotations). Then ping both ways and a TCP transfer each way, every byte checked.
//! Everything lives in namespaces the test creates; the guard removes them.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(unsafe_code)] // setns in the helpers

mod common;

use std::process::{Command, Stdio};

use common::{Guard, can_run, in_ns, ip, link_exists, metric, ping, skip, tcp_flows, tcp_send, tcp_sink, wait_for};

#[test]
fn podplane_and_a_linux_vxlan_node_exchange_ping_and_tcp() {
    const NAME: &str = "podplane_and_a_linux_vxlan_node_exchange_ping_and_tcp";
    if let Err(why) = can_run(&["ip", "ping", "bridge"]) {
        return skip(NAME, &why);
    }
    interop(false, 1);
}

#[test]
fn podplane_and_a_linux_vxlan_node_over_ipv6_exchange_ping_and_tcp() {
    const NAME: &str = "podplane_and_a_linux_vxlan_node_over_ipv6_exchange_ping_and_tcp";
    if let Err(why) = can_run(&["ip", "ping", "bridge"]) {
        return skip(NAME, &why);
    }
    interop(true, 1);
}

/// With two workers: a Linux VXLAN device spreads its frames by the outer header, and
/// its source port is a hash of one direction of the inner flow only, so the uplink
/// queue a frame arrives on does not tell the worker that owns its connection. Every
/// byte must still arrive and no conntrack drop may show; the share of frames handed
/// from one worker to the other is printed (what steering costs against a Linux peer).
#[test]
fn podplane_with_two_workers_and_a_linux_vxlan_node_exchange_tcp() {
    const NAME: &str = "podplane_with_two_workers_and_a_linux_vxlan_node_exchange_tcp";
    if let Err(why) = can_run(&["ip", "ping", "bridge"]) {
        return skip(NAME, &why);
    }
    interop(false, 2);
}

/// The whole scenario over an IPv4 or an IPv6 underlay (`flannel-v6.1` style: VTEP
/// MACs from the IPv6 addresses, routes keyed by the pod networks' .0), on `workers`
/// workers.
fn interop(v6: bool, workers: usize) {
    let id = std::process::id();
    let fam = match (v6, workers) {
        (true, _) => "6",
        (false, 1) => "4",
        _ => "w",
    };
    let (tap_pod, tap_up) = (format!("pp{fam}p{id}"), format!("pp{fam}u{id}"));
    let (ns_p, ns_l, ns_q) = (format!("pp-vx{fam}-{id}-p"), format!("pp-vx{fam}-{id}-l"), format!("pp-vx{fam}-{id}-q"));
    let mut g = Guard::new(std::env::temp_dir().join(format!("podplane-vxlan{fam}-{id}")));
    for ns in [&ns_p, &ns_l, &ns_q] {
        g.netns(ns);
    }
    let linux_vtep = "0e:00:c0:a8:00:0c";
    let (pp_ip, linux_ip) = if v6 { ("fd00:ff::11", "fd00:ff::12") } else { ("192.168.0.11", "192.168.0.12") };
    let node = g.dir.join("node.yaml");
    let (addr6, underlay) = if v6 { (", address6: fd00:ff::11/64", ", underlay: ipv6") } else { ("", "") };
    std::fs::write(
        &node,
        format!(
            "name: podplane-node\npodCIDR: 10.244.1.0/24\nports:\n  - {{name: {tap_up}, kind: tap, role: uplink, address: 192.168.0.11/24{addr6}}}\n  - {{name: {tap_pod}, kind: tap, role: pod}}\noverlay: {{mode: vxlan{underlay}}}\n"
        ),
    )
    .unwrap();
    let objects = g.dir.join("nodes.yaml");
    let public = if v6 { String::new() } else { format!("\n    flannel.alpha.coreos.com/public-ip: {linux_ip}") };
    std::fs::write(
        &objects,
        format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: linux-node\n  annotations:\n    flannel.alpha.coreos.com/backend-data: '{{\"VNI\":1,\"VtepMAC\":\"{linux_vtep}\"}}'{public}\nspec: {{podCIDR: 10.244.2.0/24}}\nstatus: {{addresses: [{{type: InternalIP, address: '{linux_ip}'}}]}}\n"
        ),
    )
    .unwrap();
    let log = g.dir.join("run.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_podplane"))
        .args(["run", "--config"])
        .arg(&node)
        .arg("--objects")
        .arg(&objects)
        .args(["--metrics", &metrics, "--workers", &workers.to_string(), "--capture"])
        .arg(g.dir.join("cap"))
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    g.children.push(child);
    // The log and, when it answers, the counters: what a failure message shows.
    let log_text = || {
        let stats = Command::new(env!("CARGO_BIN_EXE_podplane")).args(["stats", "--metrics", &metrics]).output();
        let stats = stats
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        let cap = g.dir.join("cap").join(format!("{tap_up}.pcap"));
        let wire = Command::new("tshark")
            .arg("-r")
            .arg(&cap)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let linux = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns_l,
                "sh",
                "-c",
                "ip -6 addr; ip -6 neigh; ip -s link show; nstat -az | grep -E 'Icmp6|Ip6In' | grep -v ' 0 '",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!("{}\n{stats}\nuplink:\n{wire}\nlinux node:\n{linux}", std::fs::read_to_string(&log).unwrap_or_default())
    };
    assert!(wait_for(10, || link_exists(&tap_pod) && link_exists(&tap_up)), "no TAPs:\n{}", log_text());

    // The pod behind podplane: the tunnel's MTU, as Flannel gives pods.
    let mtu = if v6 { "1430" } else { "1450" };
    ip(&["link", "set", &tap_pod, "netns", &ns_p]);
    ip(&["-n", &ns_p, "link", "set", &tap_pod, "mtu", mtu, "up"]);
    ip(&["-n", &ns_p, "addr", "add", "10.244.1.2/24", "dev", &tap_pod]);
    ip(&["-n", &ns_p, "route", "add", "default", "via", "10.244.1.1"]);
    // The Linux node: the uplink TAP is its NIC.
    ip(&["link", "set", &tap_up, "netns", &ns_l]);
    ip(&["-n", &ns_l, "addr", "add", "192.168.0.12/24", "dev", &tap_up]);
    if v6 {
        ip(&["-n", &ns_l, "addr", "add", "fd00:ff::12/64", "dev", &tap_up, "nodad"]);
    }
    ip(&["-n", &ns_l, "link", "set", &tap_up, "up"]);
    #[rustfmt::skip]
    ip(&["-n", &ns_l, "link", "add", "vxlan0", "address", linux_vtep, "type", "vxlan", "id", "1", "local", linux_ip,
        "dev", &tap_up, "dstport", "8472", "nolearning"]);
    ip(&["-n", &ns_l, "addr", "add", "10.244.2.0/32", "dev", "vxlan0"]);
    ip(&["-n", &ns_l, "link", "set", "vxlan0", "up"]);
    // podplane's VTEP MAC: its default, 0e:00 + the last four bytes of its underlay address.
    let pp_vtep = if v6 { "0e:00:00:00:00:11" } else { "0e:00:c0:a8:00:0b" };
    ip(&["-n", &ns_l, "neigh", "add", "10.244.1.0", "lladdr", pp_vtep, "dev", "vxlan0", "nud", "permanent"]);
    in_ns(&ns_l, &["bridge", "fdb", "append", pp_vtep, "dev", "vxlan0", "dst", pp_ip]);
    ip(&["-n", &ns_l, "route", "add", "10.244.1.0/24", "via", "10.244.1.0", "dev", "vxlan0", "onlink"]);
    in_ns(&ns_l, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // The Linux node's pod, on a veth (its cni0 reduced to the veth's address).
    ip(&[
        "-n", &ns_l, "link", "add", "lh0", "mtu", mtu, "type", "veth", "peer", "name", "lp0", "mtu", mtu, "netns",
        &ns_q,
    ]);
    ip(&["-n", &ns_l, "addr", "add", "10.244.2.1/24", "dev", "lh0"]);
    ip(&["-n", &ns_l, "link", "set", "lh0", "up"]);
    ip(&["-n", &ns_q, "addr", "add", "10.244.2.2/24", "dev", "lp0"]);
    ip(&["-n", &ns_q, "link", "set", "lp0", "up"]);
    ip(&["-n", &ns_q, "route", "add", "default", "via", "10.244.2.1"]);

    let (ok, out) = ping(&ns_p, "10.244.2.2");
    assert!(ok, "podplane pod -> Linux pod over VXLAN:\n{out}\n{}", log_text());
    let (ok, out) = ping(&ns_q, "10.244.1.2");
    assert!(ok, "Linux pod -> podplane pod over VXLAN:\n{out}\n{}", log_text());

    // TCP each way, 2 MiB, every byte checked.
    const LEN: usize = 2 << 20;
    let sink = tcp_sink(&ns_q, "10.244.2.2:5201".parse().unwrap());
    tcp_send(&ns_p, "10.244.2.2:5201".parse().unwrap(), LEN).join().unwrap().unwrap();
    assert_eq!(sink.join().unwrap(), (LEN, LEN), "podplane pod -> Linux pod");
    let sink = tcp_sink(&ns_p, "10.244.1.2:5202".parse().unwrap());
    tcp_send(&ns_q, "10.244.1.2:5202".parse().unwrap(), LEN).join().unwrap().unwrap();
    assert_eq!(sink.join().unwrap(), (LEN, LEN), "Linux pod -> podplane pod");

    // The Linux vxlan device saw only well-formed tunnel traffic from podplane.
    let o = Command::new("ip").args(["-n", &ns_l, "-s", "link", "show", "vxlan0"]).output().unwrap();
    let stats = String::from_utf8_lossy(&o.stdout);
    let rx: Vec<u64> = stats
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("RX:"))
        .nth(1)
        .map(|l| l.split_whitespace().filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    assert!(rx.first().is_some_and(|p| *p > 1000), "vxlan0 received podplane's packets: {stats}");
    assert_eq!(rx.get(2).copied(), Some(0), "no receive errors on vxlan0: {stats}");
    if workers > 1 {
        two_workers(&ns_p, &ns_q, &metrics, &log_text);
    }
}

/// Sixteen flows at once from the Linux pod, then the counters: no conntrack drop,
/// every byte there, and the handoff share printed.
fn two_workers(ns_p: &str, ns_q: &str, metrics: &str, log_text: &dyn Fn() -> String) {
    tcp_flows(ns_q, ns_p, "10.244.1.2", 5400, 16, log_text);
    // Counters are published every 100 ms.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = Command::new(env!("CARGO_BIN_EXE_podplane")).args(["stats", "--metrics", metrics]).output().unwrap();
    let m = String::from_utf8_lossy(&o.stdout).into_owned();
    let rx: Vec<u64> =
        (0..2).map(|k| metric(&m, &format!("podplane_worker_rx_packets_total{{worker=\"{k}\"}}"))).collect();
    let (handed, lost) =
        (metric(&m, "podplane_workers_handoff_total"), metric(&m, "podplane_workers_handoff_dropped_total"));
    // A full handoff queue is a counted drop that TCP recovers from (every byte
    // arrived, above), not a wrong decision: printed, not asserted (on a loaded CI
    // machine a run lost 177 of 3,137).
    assert_eq!(metric(&m, "podplane_drops_total{stage=\"conntrack\",reason=\"ct_invalid\"}"), 0, "{m}");
    let total: u64 = rx.iter().sum();
    assert!(total > 1000, "{m}");
    eprintln!(
        "two workers against a Linux VXLAN node: rx {rx:?}, {handed} of {total} frames handed over ({:.1} %), {lost} not (queue full)",
        100.0 * handed as f64 / total as f64
    );
}
