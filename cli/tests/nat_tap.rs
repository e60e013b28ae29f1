//! Root test: `podplane run` masquerading Linux pods over TAP, with Linux doing
//! TCP path-MTU discovery through the NAT, and a spoofing pod stopped.
//!
//! Namespaces the test creates: two pods on podplane's bridge (TAPs), a Linux
//! router on podplane's uplink TAP (192.168.0.1), and a server behind the router on
//! a veth link whose router side has MTU 1280 (the server's side 1500, so it
//! announces MSS 1460). The pod sends 4 MiB to the server: its full-size
//! segments leave masqueraded as 192.168.0.11, the router answers them with
//! fragmentation-needed (MTU 1280) addressed to 192.168.0.11, and only if podplane
//! translates that error back to the pod, outer and quoted packet both
//! (cilium#47755, calico#8854), does the pod's kernel lower its path MTU and the
//! transfer finish. Then `podplane conntrack list` shows the masqueraded connection
//! and `podplane conntrack flush` clears what the filter names. Finally the second
//! pod pings from an address that is not its own: dropped as `spoofed_source`.
//!
//! Traffic stays inside the namespaces (metrics on loopback); a guard removes them
//! and the podplane process even on failure. Needs root, /dev/net/tun, `ip` and
//! `ping`: without them the test fails under `CI=true` and says SKIPPED otherwise.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(clippy::disallowed_methods)] // a real process on real time: waits are bounded by the wall clock
#![allow(unsafe_code)] // setns in the shared helpers

mod common;

use std::process::Command;

use common::{Guard, can_run, in_ns, ip, metric, ping, skip, start_run, tcp_send, tcp_sink, wait_for};

fn podplane(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_podplane")).args(args).output().unwrap();
    assert!(o.status.success(), "podplane {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pmtu_discovery_through_masquerade_and_a_spoofing_pod_dropped() {
    masquerade_over_tap(1);
}

/// The same on two workers: masquerade replies that the kernel's queue choice brings
/// to the worker that did not translate them are handed to the one that did.
#[test]
fn pmtu_discovery_through_masquerade_on_two_workers() {
    masquerade_over_tap(2);
}

fn masquerade_over_tap(workers: usize) {
    if let Err(why) = can_run(&["ip", "ping"]) {
        return skip(&format!("pmtu_discovery_through_masquerade ({workers} workers)"), &why);
    }
    let id = std::process::id();
    let w = workers;
    let (tap_up, tap_a, tap_b) = (format!("ppm{w}u{id}"), format!("ppm{w}a{id}"), format!("ppm{w}b{id}"));
    let (ns_a, ns_b, ns_r, ns_s) = (
        format!("pp-nat{w}-{id}-a"),
        format!("pp-nat{w}-{id}-b"),
        format!("pp-nat{w}-{id}-r"),
        format!("pp-nat{w}-{id}-s"),
    );
    let dir = std::env::temp_dir().join(format!("podplane-nat-tap{w}-{id}"));
    let mut g = Guard::new(dir.clone());
    for ns in [&ns_a, &ns_b, &ns_r, &ns_s] {
        g.netns(ns);
    }
    let node = dir.join("node.yaml");
    std::fs::write(
        &node,
        format!(
            "name: natnode\naddresses: [192.168.0.11]\npodCIDR: 10.244.1.0/24\nports:\n  \
             - {{name: {tap_up}, kind: tap, role: uplink, address: 192.168.0.11/24}}\n  \
             - {{name: {tap_a}, kind: tap, role: pod, ip: 10.244.1.2}}\n  \
             - {{name: {tap_b}, kind: tap, role: pod, ip: 10.244.1.3}}\n\
             routes:\n  - {{dst: 0.0.0.0/0, via: 192.168.0.1}}\n"
        ),
    )
    .unwrap();
    let (addr, log) = start_run(&mut g, &node, &["--workers", &workers.to_string()], &[&tap_up, &tap_a, &tap_b]);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    for (tap, ns, ip4) in [(&tap_a, &ns_a, "10.244.1.2/24"), (&tap_b, &ns_b, "10.244.1.3/24")] {
        ip(&["link", "set", tap, "netns", ns]);
        ip(&["-n", ns, "addr", "add", ip4, "dev", tap]);
        ip(&["-n", ns, "link", "set", tap, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "route", "add", "default", "via", "10.244.1.1"]);
    }
    // The router: podplane's uplink on one side, the server's 1280-byte link on the other.
    ip(&["link", "set", &tap_up, "netns", &ns_r]);
    ip(&["-n", &ns_r, "addr", "add", "192.168.0.1/24", "dev", &tap_up]);
    ip(&["-n", &ns_r, "link", "set", &tap_up, "up"]);
    // The server's side keeps 1500, so it announces MSS 1460 and the pod sends
    // full-size segments; only the router's side is 1280.
    ip(&["-n", &ns_r, "link", "add", "to-srv", "mtu", "1280", "type", "veth", "peer", "name", "to-rtr", "mtu", "1500"]);
    ip(&["-n", &ns_r, "link", "set", "to-rtr", "netns", &ns_s]);
    ip(&["-n", &ns_r, "addr", "add", "203.0.113.1/24", "dev", "to-srv"]);
    ip(&["-n", &ns_r, "link", "set", "to-srv", "up"]);
    in_ns(&ns_r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    ip(&["-n", &ns_s, "addr", "add", "203.0.113.2/24", "dev", "to-rtr"]);
    ip(&["-n", &ns_s, "link", "set", "to-rtr", "up"]);
    ip(&["-n", &ns_s, "link", "set", "lo", "up"]);
    ip(&["-n", &ns_s, "route", "add", "default", "via", "203.0.113.1"]);
    // The router knows only the node's address: everything from the pods must come
    // masqueraded to reach the server at all.
    let (ok, out) = ping(&ns_a, "203.0.113.2");
    assert!(ok, "pod A cannot reach the server through masquerade:\n{out}\n{}", log_text());

    // 4 MiB, pod to server, each byte checked; full-size segments meet the 1280 link.
    let len = 4 << 20;
    let to_s: std::net::SocketAddr = "203.0.113.2:7000".parse().unwrap();
    let sink = tcp_sink(&ns_s, to_s);
    let sent = tcp_send(&ns_a, to_s, len).join().unwrap();
    assert!(sent.is_ok(), "{sent:?}\n{}", log_text());
    assert_eq!(sink.join().unwrap(), (len, len), "bytes in order and intact");
    // The pod's kernel learned the path MTU from the translated error.
    let route = Command::new("ip").args(["-n", &ns_a, "route", "get", "203.0.113.2"]).output().unwrap();
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(route.contains("mtu 1280"), "no PMTU learned by the pod:\n{route}");

    // The operator's view of it, then a flush that matches nothing and one that does.
    let list = podplane(&["conntrack", "list", "--metrics", &addr]);
    let conn = list.lines().find(|l| l.contains("dport=7000")).unwrap_or_else(|| panic!("{list}"));
    assert!(conn.starts_with("tcp      6 "), "{conn}");
    assert!(conn.contains("src=10.244.1.2 dst=203.0.113.2"), "{conn}");
    assert!(conn.contains("src=203.0.113.2 dst=192.168.0.11 sport=7000"), "masqueraded: {conn}");
    let json: serde_json::Value =
        serde_json::from_str(&podplane(&["conntrack", "list", "--json", "--metrics", &addr])).unwrap();
    assert!(json.as_array().unwrap().iter().any(|c| c["src_nat"] == true && c["original"]["dport"] == 7000));
    assert_eq!(
        podplane(&["conntrack", "flush", "--metrics", &addr, "-p", "udp"]),
        "0 flow entries have been deleted.\n"
    );
    let out = podplane(&["conntrack", "flush", "--metrics", &addr, "-p", "tcp", "--orig-dst", "203.0.113.2"]);
    assert_eq!(out, "1 flow entries have been deleted.\n");
    assert!(!podplane(&["conntrack", "list", "--metrics", &addr]).contains("dport=7000"));

    // Pod B: its own address works, another one is dropped at its port.
    assert!(ping(&ns_b, "10.244.1.2").0, "pod B cannot reach pod A:\n{}", log_text());
    ip(&["-n", &ns_b, "addr", "add", "10.244.1.77/24", "dev", &tap_b]);
    let spoofed = Command::new("ip")
        .args(["netns", "exec", &ns_b, "ping", "-c", "2", "-W", "1", "-I", "10.244.1.77", "10.244.1.2"])
        .output()
        .unwrap();
    assert!(!spoofed.status.success(), "a ping from a spoofed source got an answer");
    let m = podplane(&["stats", "--metrics", &addr]);
    let line = "podplane_drops_total{stage=\"source_check\",reason=\"spoofed_source\"}";
    let settled = wait_for(2, || metric(&podplane(&["stats", "--metrics", &addr]), line) >= 2);
    assert!(settled, "{m}");
    let m = podplane(&["stats", "--metrics", &addr]);
    eprintln!(
        "{workers} worker(s): {} frames handed to their connection's worker, {} not; {} packets on the fast path",
        metric(&m, "podplane_workers_handoff_total"),
        metric(&m, "podplane_workers_handoff_dropped_total"),
        metric(&m, "podplane_events_total{stage=\"fastpath\",event=\"fastpath_hit\"}")
    );
    assert_eq!(metric(&m, "podplane_workers_handoff_dropped_total"), 0, "{m}");
    // Both directions of every connection met on one worker (see `podplane::steer`):
    // no packet reached a worker without its connection.
    assert_eq!(metric(&m, "podplane_drops_total{stage=\"conntrack\",reason=\"ct_invalid\"}"), 0, "{m}");
    // Linux TCP's segments (partial checksums from the TAP) were carried by the flow
    // fast path, and the bytes above still arrived intact.
    assert!(metric(&m, "podplane_events_total{stage=\"fastpath\",event=\"fastpath_hit\"}") > 100, "{m}");
}
