//! Root test: podplane's longest-prefix match against the Linux FIB.
//!
//! In a network namespace of its own the test installs the same 10,000 random IPv4
//! routes into the kernel (`ip -batch`, `route replace ... via 192.0.2.N`) and into a
//! podplane [`Poptrie4`] (the route stage's table), then asks the kernel `route get` for 100,000 random destinations
//! (`ip -batch`) and compares the chosen gateway with podplane's answer for each.
//! Prefixes are drawn around 10.0.0.0/8 with lengths 8..=32 so that they nest and
//! overlap; a default route catches the rest. The IPv6 test does the same for the
//! route stage's IPv6 table ([`Lpm6`]): 10,000 routes of lengths 16..=128 nested
//! under fd00::/16, 100,000 `route get`s. The namespaces are deleted even on failure.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(unsafe_code)]

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use podplane::table::lpm::{Key, Lpm6};
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

/// Skip (outside CI) or fail (under CI) when the test cannot run; else a namespace
/// named for `tag` with a veth pair `v0`/`v1`, `v0` holding `addr`.
fn setup(test: &str, tag: &str, addr: &[&str]) -> Option<Netns> {
    if let Err(why) = can_run() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "kernel FIB test cannot run under CI: {why}");
        eprintln!("SKIPPED {test}: {why}");
        return None;
    }
    let ns = Netns(format!("{tag}-{}", std::process::id()));
    sh(&["netns", "add", &ns.0]);
    sh(&["-n", &ns.0, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    let mut a = vec!["-n", &ns.0];
    a.extend_from_slice(addr);
    a.extend_from_slice(&["dev", "v0"]);
    sh(&a);
    sh(&["-n", &ns.0, "link", "set", "v0", "up"]);
    sh(&["-n", &ns.0, "link", "set", "v1", "up"]);
    Some(ns)
}

/// The kernel's answers to `route get`s: one line each (continuation lines start
/// with a space).
fn answers(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| !l.starts_with(' ') && !l.trim().is_empty() && !l.trim_start().starts_with("cache"))
        .collect()
}

/// The address after `via` in a `route get` answer.
fn via<A: std::str::FromStr>(line: &str) -> Option<A> {
    line.split_whitespace().skip_while(|w| *w != "via").nth(1).and_then(|g| g.parse::<A>().ok())
}

/// Fail with the seed and the first differences, or say how many agreed.
fn report(seed: u64, mismatches: &[String], lookups: usize, routes: usize) {
    assert!(
        mismatches.is_empty(),
        "seed {seed} (PODPLANE_SEED={seed} to re-run): {} of {lookups} lookups differ, first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    println!("seed {seed}: {lookups} lookups agree with the kernel FIB over {routes} routes");
}

#[test]
fn lpm_agrees_with_the_kernel_fib_on_100k_lookups() {
    let seed = std::env::var("PODPLANE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xf1b);
    let Some(ns) = setup("lpm_agrees_with_the_kernel_fib_on_100k_lookups", "ppfib", &["addr", "add", "192.0.2.1/24"])
    else {
        return;
    };

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
    let answers = answers(&out);
    assert_eq!(answers.len(), dsts.len(), "one answer per route get");
    let mut mismatches = Vec::new();
    for (ip, line) in dsts.iter().zip(&answers) {
        let kernel_gw = via::<Ipv4Addr>(line).map(|g| g.octets()[3]);
        // No "via": on-link in 192.0.2.0/24 (our value 0).
        let kernel = kernel_gw.unwrap_or(0);
        let ours = lpm.lookup(u32::from(*ip)).map(|(_, v)| v);
        if ours != Some(kernel) {
            mismatches.push(format!("{ip}: kernel {line:?}, podplane {ours:?}"));
        }
    }
    report(seed, &mismatches, dsts.len(), lpm.len());
}

#[test]
fn lpm6_agrees_with_the_kernel_fib_on_100k_lookups() {
    let seed = std::env::var("PODPLANE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xf1b6);
    let Some(ns) = setup(
        "lpm6_agrees_with_the_kernel_fib_on_100k_lookups",
        "ppfib6",
        &["-6", "addr", "add", "fd00:2::1/64", "nodad"],
    ) else {
        return;
    };
    let gw = |n: u16| Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, n);
    let mut rng = Rng(seed);
    let mut lpm: Lpm6<u16> = Lpm6::new();
    let mut cmds = format!("route replace default via {} dev v0\n", gw(0xffff));
    lpm.insert(0, 0, 0xffff);
    // The connected /64 of v0 (no gateway: our value 0).
    lpm.insert(u128::from(gw(0)), 64, 0);
    // Under fd00::/16 with lengths 16..=128, nesting: the top 32 bits from a few
    // values, the rest random.
    let base = |r: &mut Rng| {
        (0xfd00u128 << 112)
            | (u128::from(r.next() % 4) << 96)
            | (u128::from(r.next()) << 32)
            | u128::from(r.next() & 0xffff_ffff)
    };
    while lpm.len() < 10_002 {
        let len = 16 + u8::try_from(rng.next() % 113).unwrap_or(16);
        let prefix = base(&mut rng).mask(len);
        if prefix >> 64 == u128::from(gw(0)) >> 64 {
            continue; // not over the connected /64
        }
        let n = 2 + u16::try_from(rng.next() % 200).unwrap_or(0);
        cmds.push_str(&format!("route replace {}/{len} via {} dev v0\n", Ipv6Addr::from(prefix), gw(n)));
        lpm.insert(prefix, len, n);
    }
    batch(&ns.0, &cmds);
    let mut dsts = Vec::with_capacity(100_000);
    let mut gets = String::new();
    while dsts.len() < 100_000 {
        let d = Ipv6Addr::from(base(&mut rng));
        gets.push_str(&format!("route get {d}\n"));
        dsts.push(d);
    }
    let out = batch(&ns.0, &gets);
    let answers = answers(&out);
    assert_eq!(answers.len(), dsts.len(), "one answer per route get");
    let mut mismatches = Vec::new();
    for (ip, line) in dsts.iter().zip(&answers) {
        let kernel = via::<Ipv6Addr>(line).map_or(0, |g| g.segments()[7]);
        let ours = lpm.lookup(u128::from(*ip)).map(|(_, v)| v);
        if ours != Some(kernel) {
            mismatches.push(format!("{ip}: kernel {line:?}, podplane {ours:?}"));
        }
    }
    report(seed, &mismatches, dsts.len(), lpm.len());
}
