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

use common::{Guard, can_run, in_ns, ip, link_exists, ping, skip, tcp_send, tcp_sink, wait_for};

#[test]
fn podplane_and_a_linux_vxlan_node_exchange_ping_and_tcp() {
    const NAME: &str = "podplane_and_a_linux_vxlan_node_exchange_ping_and_tcp";
    if let Err(why) = can_run(&["ip", "ping", "bridge"]) {
        return skip(NAME, &why);
    }
    let id = std::process::id();
    let (tap_pod, tap_up) = (format!("ppp{id}"), format!("ppu{id}"));
    let (ns_p, ns_l, ns_q) = (format!("pp-vx-{id}-p"), format!("pp-vx-{id}-l"), format!("pp-vx-{id}-q"));
    let mut g = Guard::new(std::env::temp_dir().join(format!("podplane-vxlan-{id}")));
    for ns in [&ns_p, &ns_l, &ns_q] {
        g.netns(ns);
    }
    let linux_vtep = "0e:00:c0:a8:00:0c";
    let node = g.dir.join("node.yaml");
    std::fs::write(
        &node,
        format!(
            "name: podplane-node\npodCIDR: 10.244.1.0/24\nports:\n  - {{name: {tap_up}, kind: tap, role: uplink, address: 192.168.0.11/24}}\n  - {{name: {tap_pod}, kind: tap, role: pod}}\noverlay: {{mode: vxlan}}\n"
        ),
    )
    .unwrap();
    let objects = g.dir.join("nodes.yaml");
    std::fs::write(
        &objects,
        format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: linux-node\n  annotations:\n    flannel.alpha.coreos.com/backend-data: '{{\"VNI\":1,\"VtepMAC\":\"{linux_vtep}\"}}'\n    flannel.alpha.coreos.com/public-ip: 192.168.0.12\nspec: {{podCIDR: 10.244.2.0/24}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.168.0.12}}]}}\n"
        ),
    )
    .unwrap();
    let log = g.dir.join("run.log");
    let child = Command::new(env!("CARGO_BIN_EXE_podplane"))
        .args(["run", "--config"])
        .arg(&node)
        .arg("--objects")
        .arg(&objects)
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    g.children.push(child);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_for(10, || link_exists(&tap_pod) && link_exists(&tap_up)), "no TAPs:\n{}", log_text());

    // The pod behind podplane: the tunnel's MTU, as Flannel gives pods.
    ip(&["link", "set", &tap_pod, "netns", &ns_p]);
    ip(&["-n", &ns_p, "link", "set", &tap_pod, "mtu", "1450", "up"]);
    ip(&["-n", &ns_p, "addr", "add", "10.244.1.2/24", "dev", &tap_pod]);
    ip(&["-n", &ns_p, "route", "add", "default", "via", "10.244.1.1"]);
    // The Linux node: the uplink TAP is its NIC.
    ip(&["link", "set", &tap_up, "netns", &ns_l]);
    ip(&["-n", &ns_l, "addr", "add", "192.168.0.12/24", "dev", &tap_up]);
    ip(&["-n", &ns_l, "link", "set", &tap_up, "up"]);
    ip(&[
        "-n",
        &ns_l,
        "link",
        "add",
        "vxlan0",
        "address",
        linux_vtep,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        "192.168.0.12",
        "dev",
        &tap_up,
        "dstport",
        "8472",
        "nolearning",
    ]);
    ip(&["-n", &ns_l, "addr", "add", "10.244.2.0/32", "dev", "vxlan0"]);
    ip(&["-n", &ns_l, "link", "set", "vxlan0", "up"]);
    let pp_vtep = "0e:00:c0:a8:00:0b";
    ip(&["-n", &ns_l, "neigh", "add", "10.244.1.0", "lladdr", pp_vtep, "dev", "vxlan0", "nud", "permanent"]);
    in_ns(&ns_l, &["bridge", "fdb", "append", pp_vtep, "dev", "vxlan0", "dst", "192.168.0.11"]);
    ip(&["-n", &ns_l, "route", "add", "10.244.1.0/24", "via", "10.244.1.0", "dev", "vxlan0", "onlink"]);
    in_ns(&ns_l, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // The Linux node's pod, on a veth (its cni0 reduced to the veth's address).
    ip(&[
        "-n", &ns_l, "link", "add", "lh0", "mtu", "1450", "type", "veth", "peer", "name", "lp0", "mtu", "1450",
        "netns", &ns_q,
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
}
