//! Root test: podplane's longest-prefix match against the Linux FIB.
//!
//! In a network namespace of its own the test installs the same 10,000 random IPv4
//! routes into the kernel (`ip -batch`, `route replace ... via 192.0.2.N`) and into a
//! podplane [`Poptrie4`] (the route stage's table), then asks the kernel `route get` for 100,000 random destinations
//! (`ip -batch`) and compares the chosen gateway with podplane's answer for each.
//! Prefixes are drawn around 10.0.0.0/8 with lengths 8..=32 so that they nest and
//! overlap; a default route catches the rest. The namespace is deleted even on failure.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(unsafe_code)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use podplane::table::lpm::Key;
use podplane::table::poptrie::Poptrie4;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn batch(ns: &str, input: &str) -> String {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ip -batch");
    // Feed stdin from another thread: ip answers while it reads, and a full stdout
    // pipe would otherwise block both sides.
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("ip -batch");
    writer.join().expect("writer thread").expect("write batch");
    assert!(out.status.success(), "ip -batch: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A small deterministic generator (splitmix64) so the test needs no RNG crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn can_run() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Err("no `ip` command (apt-get install iproute2)".into());
    }
    Ok(())
}

#[test]
fn lpm_agrees_with_the_kernel_fib_on_100k_lookups() {
    if let Err(why) = can_run() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "kernel FIB test cannot run under CI: {why}");
        eprintln!("SKIPPED lpm_agrees_with_the_kernel_fib_on_100k_lookups: {why}");
        return;
    }
    let seed = std::env::var("PODPLANE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xf1b);
    let ns = Netns(format!("ppfib-{}", std::process::id()));
    sh(&["netns", "add", &ns.0]);
    sh(&["-n", &ns.0, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    sh(&["-n", &ns.0, "addr", "add", "192.0.2.1/24", "dev", "v0"]);
    sh(&["-n", &ns.0, "link", "set", "v0", "up"]);
    sh(&["-n", &ns.0, "link", "set", "v1", "up"]);

    let mut rng = Rng(seed);
    let mut lpm: Poptrie4<u8> = Poptrie4::new();
    let mut cmds = String::from("route replace default via 192.0.2.254 dev v0\n");
    lpm.insert(0, 0, 254);
    // The connected /24 of v0 is in the kernel's main table too.
    lpm.insert(u32::from(Ipv4Addr::new(192, 0, 2, 0)), 24, 0);
    // 10,000 distinct routes besides the default and connected ones.
    while lpm.len() < 10_002 {
        let len = 8 + u8::try_from(rng.next() % 25).unwrap_or(8);
        let addr = 0x0a00_0000 | u32::try_from(rng.next() & 0x00ff_ffff).unwrap_or(0);
        let prefix = addr.mask(len);
        let gw = 2 + u8::try_from(rng.next() % 200).unwrap_or(0);
        cmds.push_str(&format!("route replace {}/{len} via 192.0.2.{gw} dev v0\n", Ipv4Addr::from(prefix)));
        lpm.insert(prefix, len, gw);
    }
    batch(&ns.0, &cmds);

    let mut dsts = Vec::with_capacity(100_000);
    let mut gets = String::new();
    let mut k = 0u32;
    while dsts.len() < 100_000 {
        k += 1;
        // Mostly inside 10/8 (where the routes are), some anywhere.
        let d = if k.is_multiple_of(10) {
            u32::try_from(rng.next() & 0xffff_ffff).unwrap_or(0)
        } else {
            0x0a00_0000 | u32::try_from(rng.next() & 0x00ff_ffff).unwrap_or(0)
        };
        let ip = Ipv4Addr::from(d);
        if ip.is_loopback()
            || ip.is_multicast()
            || ip.is_broadcast()
            || ip.is_unspecified()
            || d >> 24 == 0
            || d >> 28 >= 0xe
        {
            continue;
        }
        gets.push_str(&format!("route get {ip}\n"));
        dsts.push(ip);
    }
    let out = batch(&ns.0, &gets);
    let answers: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.trim().is_empty() && !l.trim_start().starts_with("cache"))
        .collect();
    assert_eq!(answers.len(), dsts.len(), "one answer per route get");
    let mut mismatches = Vec::new();
    for (ip, line) in dsts.iter().zip(&answers) {
        let kernel_gw = line
            .split_whitespace()
            .skip_while(|w| *w != "via")
            .nth(1)
            .and_then(|g| g.parse::<Ipv4Addr>().ok())
            .map(|g| g.octets()[3]);
        // No "via": on-link in 192.0.2.0/24 (our value 0).
        let kernel = kernel_gw.unwrap_or(0);
        let ours = lpm.lookup(u32::from(*ip)).map(|(_, v)| v);
        if ours != Some(kernel) {
            mismatches.push(format!("{ip}: kernel {line:?}, podplane {ours:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "seed {seed}: {} of {} lookups differ, first: {:?}",
        mismatches.len(),
        dsts.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    println!("seed {seed}: {} lookups agree with the kernel FIB over {} routes", dsts.len(), lpm.len());
}
