//! Root test: `podplane run` on two TAP devices moved into two network namespaces the
//! test creates (Linux pods), then: ping between the pods through podplane's bridge;
//! the counters over `--metrics` and `podplane stats`; an invalid config change refused
//! while forwarding goes on; a valid change (a blackhole route) applied in place; a
//! clean exit on SIGTERM.
//!
//! Traffic stays between the two namespaces (and metrics on loopback). Namespaces and
//! the podplane process are removed by a guard, even when the test fails. Needs root,
//! /dev/net/tun, `ip` and `ping`: without them the test fails under `CI=true` and says
//! SKIPPED otherwise.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(clippy::disallowed_methods)] // a real process on real time: waits are bounded by the wall clock

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn can_run() -> Result<(), String> {
    let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun".into());
    }
    for tool in [["ip", "-V"], ["ping", "-V"]] {
        if Command::new(tool[0]).arg(tool[1]).output().is_err() {
            return Err(format!("no `{}` command (apt-get install iproute2 iputils-ping)", tool[0]));
        }
    }
    Ok(())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Deletes the namespaces and stops podplane, whatever happens.
struct Guard {
    netns: Vec<String>,
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ping(ns: &str, dst: &str) -> (bool, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "1", dst])
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
}

fn stats(addr: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_podplane")).args(["stats", "--metrics", addr]).output().unwrap();
    assert!(o.status.success(), "stats: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Wait (at most `secs`) until `f` holds.
fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn podplane_run_forwards_between_netns_pods_reloads_and_stops_on_sigterm() {
    if let Err(why) = can_run() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "root TAP test cannot run under CI: {why}");
        eprintln!("SKIPPED podplane_run_forwards_between_netns_pods_reloads_and_stops_on_sigterm: {why}");
        return;
    }
    let id = std::process::id();
    let (tap_a, tap_b) = (format!("ppa{id}"), format!("ppb{id}"));
    let (ns_a, ns_b) = (format!("pp-run-{id}-a"), format!("pp-run-{id}-b"));
    let dir = std::env::temp_dir().join(format!("podplane-run-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut g = Guard { netns: vec![], child: None, dir: dir.clone() };
    for ns in [&ns_a, &ns_b] {
        ip(&["netns", "add", ns]);
        g.netns.push(ns.clone());
    }
    let node = dir.join("node.yaml");
    let base = format!(
        "name: tapnode\npodCIDR: 10.244.1.0/24\nports:\n  - {{name: {tap_a}, kind: tap, role: pod}}\n  - {{name: {tap_b}, kind: tap, role: pod}}\n"
    );
    std::fs::write(&node, &base).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.join("run.log");
    let child = Command::new(env!("CARGO_BIN_EXE_podplane"))
        .args(["run", "--config"])
        .arg(&node)
        .args(["--metrics", &addr, "--trace", "2", "--capture"])
        .arg(dir.join("cap"))
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    g.child = Some(child);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let tap_exists = |t: &str| Command::new("ip").args(["link", "show", t]).output().is_ok_and(|o| o.status.success());
    assert!(wait_for(10, || tap_exists(&tap_a) && tap_exists(&tap_b)), "TAPs not created:\n{}", log_text());

    // The pods: each TAP moved into its namespace (podplane's descriptor stays valid).
    for (tap, ns, ip4) in [(&tap_a, &ns_a, "10.244.1.2/24"), (&tap_b, &ns_b, "10.244.1.3/24")] {
        ip(&["link", "set", tap, "netns", ns]);
        ip(&["-n", ns, "addr", "add", ip4, "dev", tap]);
        ip(&["-n", ns, "link", "set", tap, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "route", "add", "default", "via", "10.244.1.1"]);
    }
    let (ok, out) = ping(&ns_a, "10.244.1.3");
    assert!(ok, "pod A cannot ping pod B through podplane:\n{out}\n{}", log_text());
    assert!(out.contains("3 received"), "{out}");

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
    let mut child = g.child.take().unwrap();
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
