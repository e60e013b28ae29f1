//! Root tests of `podplane run` with real pods in network namespaces the tests create:
//!
//! - two podplane nodes, each with an uplink TAP on an underlay bridge (in a namespace
//!   of its own) and a pod, joined by VXLAN as Flannel nodes are: ping both ways and
//!   4 MiB of TCP each way, every byte checked;
//! - faults on one node with three pods: while pod A sends 8 MiB of TCP to pod B, pod C
//!   floods its TAP with random frames as fast as it can, then C's namespace is
//!   deleted mid-transfer. A's transfer completes intact; podplane reports C's TAP
//!   gone and creates it again, and a new namespace for C gets its pod back on line.
//!
//! Traffic stays inside the namespaces (and metrics on loopback). Namespaces and the
//! podplane processes are removed by a guard, even when a test fails. Needs root,
//! /dev/net/tun, `ip`, `bridge` and `ping`: without them the tests fail under
//! `CI=true` and say SKIPPED otherwise.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(clippy::disallowed_methods)] // real processes on real time: waits are bounded by the wall clock
#![allow(unsafe_code)] // setns and an AF_PACKET socket for the flooding pod

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Guard, can_run, in_netns, ip, link_exists, metric, ping, skip, tcp_flows, tcp_send, tcp_sink, wait_for};

/// Start `podplane run` with `config` (and `objects`, and `extra` arguments), stderr
/// to `log`.
fn start(g: &mut Guard, config: &Path, objects: Option<&Path>, log: &Path, extra: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podplane"));
    cmd.args(["run", "--config"]).arg(config).args(extra);
    if let Some(o) = objects {
        cmd.arg("--objects").arg(o);
    }
    let child = cmd.stderr(Stdio::from(std::fs::File::create(log).unwrap())).spawn().unwrap();
    g.children.push(child);
}

/// A pod: namespace `ns` gets TAP `tap` with `addr`, default route via `gw`.
fn pod(tap: &str, ns: &str, addr: &str, gw: &str, mtu: &str) {
    ip(&["link", "set", tap, "netns", ns]);
    ip(&["-n", ns, "link", "set", "lo", "up"]);
    ip(&["-n", ns, "link", "set", tap, "mtu", mtu, "up"]);
    ip(&["-n", ns, "addr", "add", addr, "dev", tap]);
    ip(&["-n", ns, "route", "add", "default", "via", gw]);
}

#[test]
fn two_podplane_nodes_over_vxlan_exchange_ping_and_tcp() {
    const NAME: &str = "two_podplane_nodes_over_vxlan_exchange_ping_and_tcp";
    if let Err(why) = can_run(&["ip", "ping", "bridge"]) {
        return skip(NAME, &why);
    }
    let id = std::process::id();
    let ns_u = format!("pp-2n-{id}-u");
    let (ns_1, ns_2) = (format!("pp-2n-{id}-1"), format!("pp-2n-{id}-2"));
    let mut g = Guard::new(std::env::temp_dir().join(format!("podplane-2n-{id}")));
    for ns in [&ns_u, &ns_1, &ns_2] {
        g.netns(ns);
    }
    ip(&["-n", &ns_u, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &ns_u, "link", "set", "br0", "up"]);
    let mut logs = Vec::new();
    let mport = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{mport}");
    for (n, peer) in [(1u8, 2u8), (2, 1)] {
        let (up, p) = (format!("pp2u{n}{id}"), format!("pp2p{n}{id}"));
        let cfg = g.dir.join(format!("node{n}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "name: node-{n}\npodCIDR: 10.244.{n}.0/24\nports:\n  - {{name: {up}, kind: tap, role: uplink, address: 192.168.0.1{n}/24}}\n  - {{name: {p}, kind: tap, role: pod}}\noverlay: {{mode: vxlan}}\n"
            ),
        )
        .unwrap();
        let objs = g.dir.join(format!("peer{n}.yaml"));
        // The peer's VTEP MAC as podplane derives it: 0e:00 and its underlay address.
        let vtep = 10 + peer;
        std::fs::write(
            &objs,
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-{peer}\n  annotations:\n    flannel.alpha.coreos.com/backend-data: '{{\"VNI\":1,\"VtepMAC\":\"0e:00:c0:a8:00:{vtep:02x}\"}}'\n    flannel.alpha.coreos.com/public-ip: 192.168.0.1{peer}\nspec: {{podCIDR: 10.244.{peer}.0/24}}\nstatus: {{addresses: [{{type: InternalIP, address: '192.168.0.1{peer}'}}]}}\n"
            ),
        )
        .unwrap();
        let log = g.dir.join(format!("node{n}.log"));
        // Node 1 runs two workers (multiqueue TAPs): the ARP reply for node 2's
        // underlay address may reach either, and both must learn it.
        let extra: Vec<&str> = if n == 1 { vec!["--workers", "2", "--metrics", &metrics] } else { vec![] };
        start(&mut g, &cfg, Some(&objs), &log, &extra);
        logs.push(log);
        assert!(wait_for(10, || link_exists(&up) && link_exists(&p)), "no TAPs for node {n}");
        ip(&["link", "set", &up, "netns", &ns_u]);
        ip(&["-n", &ns_u, "link", "set", &up, "master", "br0", "up"]);
        let ns = if n == 1 { &ns_1 } else { &ns_2 };
        pod(&p, ns, &format!("10.244.{n}.2/24"), &format!("10.244.{n}.1"), "1450");
    }
    let logs_text =
        || logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect::<Vec<_>>().join("\n");
    let (ok, out) = ping(&ns_1, "10.244.2.2");
    assert!(ok, "node-1 pod -> node-2 pod:\n{out}\n{}", logs_text());
    let (ok, out) = ping(&ns_2, "10.244.1.2");
    assert!(ok, "node-2 pod -> node-1 pod:\n{out}\n{}", logs_text());
    const LEN: usize = 4 << 20;
    for (from, to, dst) in [(&ns_1, &ns_2, "10.244.2.2:5301"), (&ns_2, &ns_1, "10.244.1.2:5302")] {
        let sink = tcp_sink(to, dst.parse().unwrap());
        let sent = tcp_send(from, dst.parse().unwrap(), LEN).join().unwrap();
        assert!(sent.is_ok(), "{sent:?}\n{}", logs_text());
        assert_eq!(sink.join().unwrap(), (LEN, LEN), "{from} -> {dst}: every byte, in order");
    }
    // Sixteen flows at once from node 2's pod: the kernel spreads them over node 1's
    // two TAP queues, so both workers carry traffic.
    tcp_flows(&ns_2, &ns_1, "10.244.1.2", 5400, 16, &logs_text);
    assert!(std::fs::read_to_string(&logs[0]).unwrap().contains("2 workers"), "{}", logs_text());
    // Both of node 1's workers carried packets (counters are published every 100 ms).
    std::thread::sleep(Duration::from_millis(300));
    let o = Command::new(env!("CARGO_BIN_EXE_podplane")).args(["stats", "--metrics", &metrics]).output().unwrap();
    let m = String::from_utf8_lossy(&o.stdout).into_owned();
    for k in 0..2 {
        let rx = metric(&m, &format!("podplane_worker_rx_packets_total{{worker=\"{k}\"}}"));
        assert!(rx > 100, "worker {k} carried {rx} packets:\n{m}");
    }
    // Both directions of every connection met on one worker: no reply reached a
    // worker without its connection (a SYN-ACK there is INVALID). Without steering
    // by the inner flow, VXLAN frames and the pod's first replies are spread over
    // the queues apart, and about half the connections lost their SYN-ACK here.
    assert_eq!(metric(&m, "podplane_drops_total{stage=\"conntrack\",reason=\"ct_invalid\"}"), 0, "{m}");
}

/// Send random frames out of `dev` inside `ns` until `stop` (at most 30 s and
/// 3,000,000 frames); returns how many were sent.
fn flood(ns: &str, dev: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    in_netns(ns, move || {
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex > 0, "no flooding device");
        // SAFETY: plain socket creation; the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: sockaddr_ll is plain data; zero is a valid value for every field.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
        sa.sll_ifindex = i32::try_from(ifindex).unwrap();
        sa.sll_halen = 6;
        let (mut sent, mut x) = (0u64, 0x9e37_79b9_7f4a_7c15u64);
        let mut frame = [0u8; 1514];
        let end = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::Relaxed) && sent < 3_000_000 && Instant::now() < end {
            for b in frame.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[0];
            }
            let len = 60 + usize::try_from(x % (1514 - 60)).unwrap();
            // SAFETY: `frame` and `sa` live across the call; lengths are theirs.
            let n = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    len,
                    0,
                    (&sa as *const libc::sockaddr_ll).cast(),
                    u32::try_from(size_of::<libc::sockaddr_ll>()).unwrap(),
                )
            };
            if n < 0 {
                // The namespace (and the device) is being deleted: done.
                break;
            }
            sent += 1;
        }
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(fd) };
        sent
    })
}

#[test]
fn pods_keep_their_transfer_through_a_flood_and_a_deleted_namespace() {
    const NAME: &str = "pods_keep_their_transfer_through_a_flood_and_a_deleted_namespace";
    if let Err(why) = can_run(&["ip", "ping"]) {
        return skip(NAME, &why);
    }
    let id = std::process::id();
    let taps: Vec<String> = ["a", "b", "c"].iter().map(|t| format!("ppf{t}{id}")).collect();
    let nss: Vec<String> = ["a", "b", "c"].iter().map(|t| format!("pp-flood-{id}-{t}")).collect();
    let mut g = Guard::new(std::env::temp_dir().join(format!("podplane-flood-{id}")));
    for ns in &nss {
        g.netns(ns);
    }
    let cfg = g.dir.join("node.yaml");
    let ports: String = taps.iter().map(|t| format!("  - {{name: {t}, kind: tap, role: pod}}\n")).collect();
    std::fs::write(&cfg, format!("name: flood\npodCIDR: 10.244.1.0/24\nports:\n{ports}")).unwrap();
    let log = g.dir.join("run.log");
    start(&mut g, &cfg, None, &log, &[]);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_for(10, || taps.iter().all(|t| link_exists(t))), "no TAPs:\n{}", log_text());
    for (k, (t, ns)) in taps.iter().zip(&nss).enumerate() {
        pod(t, ns, &format!("10.244.1.{}/24", k + 2), "10.244.1.1", "1500");
    }
    assert!(ping(&nss[0], "10.244.1.3").0, "A -> B before the flood:\n{}", log_text());

    // A sends 128 MiB to B while C floods; C's namespace is deleted mid-transfer (it
    // dies when the flooding thread, the last thing in it, leaves).
    const LEN: usize = 128 << 20;
    let dst = "10.244.1.3:5400".parse().unwrap();
    let sink = tcp_sink(&nss[1], dst);
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = flood(&nss[2], taps[2].clone(), Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let sender = tcp_send(&nss[0], dst, LEN);
    std::thread::sleep(Duration::from_millis(200));
    let o = Command::new("ip").args(["netns", "del", &nss[2]]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stop.store(true, Ordering::Relaxed);
    let flooded = flooder.join().unwrap();
    assert!(!sender.is_finished(), "the transfer was still running when C's namespace went");
    let sent = sender.join().unwrap();
    eprintln!("flood: {flooded} frames; transfer: {LEN} bytes in {:?}", t0.elapsed());
    assert!(sent.is_ok(), "{sent:?}\n{}", log_text());
    assert_eq!(sink.join().unwrap(), (LEN, LEN), "A -> B intact through the flood and C's deletion");
    assert!(flooded > 1000, "the flood ran: {flooded} frames");

    // podplane saw C's TAP go and made it again; a new namespace brings C back.
    assert!(wait_for(5, || log_text().contains(&format!("TAP {} created again", taps[2]))), "{}", log_text());
    assert!(log_text().contains(&format!("TAP {} went away", taps[2])), "{}", log_text());
    assert!(wait_for(5, || link_exists(&taps[2])), "C's TAP is back in the root namespace");
    g.netns(&format!("{}-new", nss[2]));
    pod(&taps[2], &format!("{}-new", nss[2]), "10.244.1.4/24", "10.244.1.1", "1500");
    let (ok, out) = ping(&format!("{}-new", nss[2]), "10.244.1.2");
    assert!(ok, "the re-created pod C reaches A:\n{out}\n{}", log_text());
    assert!(ping(&nss[0], "10.244.1.3").0, "A -> B still");
}
