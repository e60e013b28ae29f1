//! Frames, pcaps and listings for the root tests that compare podplane with a
//! kernel namespace packet for packet (`nat_kernel`, `services_kernel`).

use std::net::Ipv4Addr;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use podplane::testutil::udp4;
use podplane::wire::checksum::checksum;
use podplane_tap::TapDevice;

/// `f` with its Ethernet destination and source replaced.
pub fn with_macs(mut f: Vec<u8>, dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// `f` (an IPv4 frame) as a router forwarded it: TTL one less.
pub fn forwarded(mut f: Vec<u8>) -> Vec<u8> {
    f[22] -= 1;
    f[24..26].fill(0);
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// An ICMP error (type, code, the 4 bytes after the checksum) from `from` to `to`
/// quoting the IP packet of frame `quoted`.
pub fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, kind: u8, code: u8, rest: [u8; 4], quoted: &[u8]) -> Vec<u8> {
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

/// Write `frames` (timestamp in ns, bytes) to a pcap file.
pub fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (t, f) in frames {
        w.write_packet(&PcapPacket::new(Duration::from_nanos(*t), u32::try_from(f.len()).unwrap(), f)).unwrap();
    }
}

/// Every frame of a pcap file.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

/// The IPv4 frames, with the IP identification (and so the header checksum) of the
/// ICMP errors the node makes itself (TTL 64) blanked: both sides pick it at random.
pub fn ipv4_only(frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    frames
        .into_iter()
        // IGMP is the kernel's own multicast chatter (a bridge joining groups).
        .filter(|f| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] != 2)
        .map(|mut f| {
            if f.len() >= 34 && f[23] == 1 && f[22] == 64 {
                f[18..20].fill(0);
                f[24..26].fill(0);
            }
            f
        })
        .collect()
}

/// Drain what the kernel sent out of `tap` (non-blocking).
pub fn drain(tap: &TapDevice, into: &mut Vec<Vec<u8>>) {
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

/// The connections of a `conntrack -L` or `/proc/net/nf_conntrack` listing: protocol,
/// TCP state and both tuples (timeouts, counters and ICMP types left out), sorted.
pub fn connections(listing: &str) -> Vec<String> {
    let mut v: Vec<String> = listing
        .lines()
        .filter(|l| !l.trim().is_empty())
        // A bridge's own IGMP joins (protocol 2) are the kernel's, not traffic's.
        .filter(|l| !l.contains(" unknown ") && !l.starts_with("unknown "))
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
pub fn tshark(path: &Path) -> Vec<String> {
    let o = Command::new("tshark").arg("-r").arg(path).output().unwrap();
    assert!(o.status.success(), "tshark -r {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
}

/// Run `frames` ((port index, frame), 1 ms apart from `t0`) through `podplane replay`
/// of `node_file` (and `objects`, if any) in `dir`, with `ports` named in port order;
/// returns every frame each port sent. The replay's own output is in `dir/podplane`.
pub fn replay(
    dir: &Path,
    (node_file, objects): (&str, Option<&str>),
    ports: &[&str],
    frames: &[(usize, Vec<u8>)],
    t0: u64,
) -> Vec<Vec<Vec<u8>>> {
    let node = dir.join("node.yaml");
    std::fs::write(&node, node_file).unwrap();
    let mut inputs: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); ports.len()];
    for (i, (port, f)) in frames.iter().enumerate() {
        inputs[*port].push((t0 + i as u64 * 1_000_000, f.clone()));
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podplane"));
    cmd.arg("replay").arg("--config").arg(&node);
    if let Some(o) = objects {
        let path = dir.join("objects.yaml");
        std::fs::write(&path, o).unwrap();
        cmd.arg("--objects").arg(&path);
    }
    for (name, input) in ports.iter().zip(&inputs) {
        let f = dir.join(format!("in-{name}.pcap"));
        write_pcap(&f, input);
        cmd.arg("--in").arg(format!("{name}={}", f.display()));
    }
    cmd.arg("--out-dir").arg(dir.join("podplane"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "replay: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    ports.iter().map(|n| read_pcap(&dir.join("podplane").join(format!("{n}.pcap")))).collect()
}

/// Load `ruleset` into namespace `ns` with `nft -f -`.
pub fn nft_load(ns: &str, ruleset: &str) {
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), ruleset.as_bytes()).unwrap();
    let o = nft.wait_with_output().unwrap();
    assert!(o.status.success(), "nft -f: {}", String::from_utf8_lossy(&o.stderr));
}

/// Write `frames` ((port index, frame)) into the kernel through `taps`, one at a time
/// with a pause for the kernel to answer, and return what it sent out of each TAP
/// (what came before the first frame is discarded), and its connection table.
pub fn exchange(taps: &[TapDevice], ns: &str, frames: &[(usize, Vec<u8>)]) -> (Vec<Vec<Vec<u8>>>, String) {
    for t in taps {
        t.set_nonblocking(true).unwrap();
    }
    let mut out: Vec<Vec<Vec<u8>>> = vec![Vec::new(); taps.len()];
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
    (out, String::from_utf8_lossy(&ct.stdout).into_owned())
}

/// Require podplane's and the kernel's frames out of each named port to be equal,
/// frame by frame (both written to pcaps in `dir` and printed by tshark).
pub fn assert_same_frames(dir: &Path, names: &[&str], podplane: &[Vec<Vec<u8>>], kernel: &[Vec<Vec<u8>>], t0: u64) {
    for (i, name) in names.iter().enumerate() {
        let pk = dir.join(format!("kernel-{name}.pcap"));
        write_pcap(&pk, &kernel[i].iter().map(|f| (t0, f.clone())).collect::<Vec<_>>());
        let pp_file = dir.join(format!("podplane-{name}.pcap"));
        write_pcap(&pp_file, &podplane[i].iter().map(|f| (t0, f.clone())).collect::<Vec<_>>());
        let (ks, ps) = (tshark(&pk), tshark(&pp_file));
        eprintln!("{name}: kernel\n  {}\n{name}: podplane\n  {}", ks.join("\n  "), ps.join("\n  "));
        for (j, (k, p)) in kernel[i].iter().zip(&podplane[i]).enumerate() {
            assert_eq!(p, k, "{name} frame {j} differs:\n podplane {}\n kernel   {}", ps[j], ks[j]);
        }
        assert_eq!(podplane[i].len(), kernel[i].len(), "{name}: number of IPv4 frames");
    }
}

/// Make namespace `ns` forward as a node does, without the kernel's own extras that
/// podplane does not make: IP forwarding, bridge netfilter, no reverse-path filter
/// and no ICMP redirects on any of `devs`.
pub fn node_sysctls(ns: &str, devs: &[&str]) {
    for s in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.all.send_redirects=0",
        "net.bridge.bridge-nf-call-iptables=1",
    ] {
        super::in_ns(ns, &["sysctl", "-qw", s]);
    }
    for n in devs {
        super::in_ns(ns, &["sysctl", "-qw", &format!("net.ipv4.conf.{n}.send_redirects=0")]);
        super::in_ns(ns, &["sysctl", "-qw", &format!("net.ipv4.conf.{n}.rp_filter=0")]);
    }
}

/// A MAC as `ip` writes it.
pub fn mac_text(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}
