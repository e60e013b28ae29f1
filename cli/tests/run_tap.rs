//! Root test, once per I/O backend (`--io uring`, `--io poll`): `podplane run` on two
//! TAP devices moved into two network namespaces the test creates (Linux pods), then:
//! ping between the pods through podplane's bridge; 4 MiB of TCP from one pod to the
//! other, every byte checked; the counters over `--metrics` and `podplane stats`; an
//! invalid config change refused
//! while forwarding goes on; a valid change (a blackhole route) applied in place; a
//! clean exit on SIGTERM.
//!
//! Traffic stays between the two namespaces (and metrics on loopback). Namespaces and
//! the podplane process are removed by a guard, even when the test fails. Needs root,
//! /dev/net/tun, `ip` and `ping`: without them the test fails under `CI=true` and says
//! SKIPPED otherwise.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(clippy::disallowed_methods)] // a real process on real time: waits are bounded by the wall clock
#![allow(unsafe_code)] // setns in the shared helpers

mod common;

use std::process::Command;

use common::{Guard, can_run, ip, metric, ping, skip, start_run, tcp_send, tcp_sink, wait_for};

fn stats(addr: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_podplane")).args(["stats", "--metrics", addr]).output().unwrap();
    assert!(o.status.success(), "stats: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn podplane_run_forwards_on_io_uring() {
    forwards_reloads_and_stops("uring", "on", 'u');
}

#[test]
fn podplane_run_forwards_on_poll() {
    forwards_reloads_and_stops("poll", "on", 'p');
}

#[test]
fn podplane_run_forwards_on_io_uring_without_offloads() {
    forwards_reloads_and_stops("uring", "off", 'n');
}

fn forwards_reloads_and_stops(io: &str, offload: &str, tag: char) {
    if let Err(why) = can_run(&["ip", "ping"]) {
        return skip(&format!("podplane_run_forwards_on_{io}"), &why);
    }
    let id = std::process::id();
    let (tap_a, tap_b) = (format!("pp{tag}a{id}"), format!("pp{tag}b{id}"));
    let (ns_a, ns_b) = (format!("pp-run{tag}-{id}-a"), format!("pp-run{tag}-{id}-b"));
    let dir = std::env::temp_dir().join(format!("podplane-run-{io}-{id}"));
    let mut g = Guard::new(dir.clone());
    for ns in [&ns_a, &ns_b] {
        g.netns(ns);
    }
    let node = dir.join("node.yaml");
    let base = format!(
        "name: tapnode\npodCIDR: 10.244.1.0/24\nports:\n  - {{name: {tap_a}, kind: tap, role: pod}}\n  - {{name: {tap_b}, kind: tap, role: pod}}\n"
    );
    std::fs::write(&node, &base).unwrap();
    let cap = dir.join("cap");
    let args = ["--io", io, "--offload", offload, "--trace", "2", "--capture", cap.to_str().unwrap()];
    let (addr, log) = start_run(&mut g, &node, &args, &[&tap_a, &tap_b]);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // The pods: each TAP moved into its namespace (podplane's descriptor stays valid).
    for (tap, ns, ip4) in [(&tap_a, &ns_a, "10.244.1.2/24"), (&tap_b, &ns_b, "10.244.1.3/24")] {
        ip(&["link", "set", tap, "netns", ns]);
        ip(&["-n", ns, "addr", "add", ip4, "dev", tap]);
        ip(&["-n", ns, "link", "set", tap, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "route", "add", "default", "via", "10.244.1.1"]);
    }
    let want = if io == "uring" { "running on io_uring" } else { "running on poll + read/write" };
    assert!(log_text().contains(want), "{}", log_text());
    let (ok, out) = ping(&ns_a, "10.244.1.3");
    assert!(ok, "pod A cannot ping pod B through podplane:\n{out}\n{}", log_text());
    assert!(out.contains("3 received"), "{out}");

    // 4 MiB of TCP from A to B through podplane, every byte checked.
    let len = 4 << 20;
    let to_b: std::net::SocketAddr = "10.244.1.3:7000".parse().unwrap();
    let sink = tcp_sink(&ns_b, to_b);
    let sent = tcp_send(&ns_a, to_b, len).join().unwrap();
    assert!(sent.is_ok(), "{sent:?}\n{}", log_text());
    assert_eq!(sink.join().unwrap(), (len, len), "bytes in order and intact");
    // With offloads, A's stack hands over TCP super-frames that podplane segments.
    // (Workers publish their counters every 100 ms.)
    let supers_line = format!("podplane_port_rx_super_frames_total{{port=\"{tap_a}\"}}");
    let mut m = String::new();
    let settled = wait_for(2, || {
        m = stats(&addr);
        metric(&m, &format!("podplane_port_rx_bytes_total{{port=\"{tap_a}\"}}")) > len as u64
    });
    assert!(settled, "{m}");
    let supers = metric(&m, &supers_line);
    if offload == "on" {
        assert!(supers > 10, "{m}");
    } else {
        assert_eq!(supers, 0, "{m}");
    }
    assert_eq!(metric(&m, &format!("podplane_port_rx_offload_errors_total{{port=\"{tap_a}\"}}")), 0, "{m}");

    let m = stats(&addr);
    assert!(metric(&m, &format!("podplane_port_rx_packets_total{{port=\"{tap_a}\"}}")) >= 3, "{m}");
    assert!(metric(&m, &format!("podplane_port_tx_packets_total{{port=\"{tap_b}\"}}")) >= 3, "{m}");
    assert_eq!(metric(&m, "podplane_events_total{stage=\"bridge\",event=\"fdb_learned\"}"), 2, "{m}");
    // No route for 10.9.0.0/16 yet: the node answers net unreachable (ping fails).
    let (ok, out) = ping(&ns_a, "10.9.0.1");
    assert!(!ok && out.contains("Unreachable"), "{out}");

    // An invalid change: refused, and the pods still talk.
    std::fs::write(&node, base.replace("role: pod}\n", "role: pod, mtu: 5}\n")).unwrap();
    assert!(wait_for(5, || log_text().contains("reload refused")), "{}", log_text());
    assert!(log_text().contains("mtu \"5\": must be between 68 and 9000"), "{}", log_text());
    assert!(ping(&ns_a, "10.244.1.3").0, "forwarding stopped after a refused reload");

    // A valid change: a blackhole route, applied in place.
    std::fs::write(&node, format!("{base}routes:\n  - {{dst: 10.9.0.0/16, type: blackhole}}\n")).unwrap();
    assert!(wait_for(5, || log_text().contains("reload applied: 1 route change(s)")), "{}", log_text());
    let (ok, out) = ping(&ns_a, "10.9.0.1");
    assert!(!ok && !out.contains("Unreachable"), "blackholed: silently dropped\n{out}");
    let m = stats(&addr);
    assert_eq!(metric(&m, "podplane_drops_total{stage=\"route\",reason=\"route_blackhole\"}"), 3, "{m}");
    assert!(ping(&ns_a, "10.244.1.3").0);

    // SIGTERM: a clean exit with the counters printed.
    let mut child = g.children.pop().unwrap();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let mut status = None;
    assert!(
        wait_for(5, || {
            status = child.try_wait().unwrap();
            status.is_some()
        }),
        "no exit after SIGTERM"
    );
    assert!(status.unwrap().success(), "{}", log_text());
    assert!(log_text().contains("podplane run: stopping"), "{}", log_text());
    assert!(log_text().contains("trace:\nPacket 1"), "{}", log_text());
    // The capture of pod A's port: its pings in, the replies out, readable as pcap.
    let cap = std::fs::read(dir.join("cap").join(format!("{tap_a}.pcap"))).unwrap();
    assert!(cap.len() > 24 + 10 * (16 + 98), "{} bytes", cap.len());
    if Command::new("tshark").arg("-v").output().is_ok_and(|o| o.status.success()) {
        let o = Command::new("tshark").arg("-r").arg(dir.join("cap").join(format!("{tap_a}.pcap"))).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Echo (ping) request") && text.contains("Echo (ping) reply"), "{text}");
    }
}
