//! Root test: a TAP device in a network namespace of its own, a real kernel sending
//! into it, and the frame parsed by a podplane pipeline.
//!
//! Flow:
//! 1. a thread unshares into a new network namespace (nothing outside it is touched);
//! 2. it creates TAP `pptap0`, brings it up with 192.0.2.1/24 (TEST-NET-1, only
//!    inside this namespace) using `ip`, run from the same thread so it inherits the
//!    namespace;
//! 3. it sends one UDP datagram to 192.0.2.2: the kernel must resolve it and writes an
//!    ARP request into the TAP;
//! 4. podplane reads it into a pool slot and the parse stage classifies it: exactly
//!    one ARP "who-has 192.0.2.2 tell 192.0.2.1", nothing dropped.
//!
//! The namespace dies with the thread, so cleanup happens even on failure. Needs root
//! and `ip` (iproute2): without them the test fails under `CI=true` and says it skipped
//! otherwise.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(unsafe_code)]
// A real kernel on real time: the read loop is bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use podplane::buf::{Batch, BufPool, L3Kind, PortId};
use podplane::pipeline::{Pipeline, PipelineConfig};
use podplane::stage::{ParseStage, XconnectStage};
use podplane::testutil::CounterExpect;
use podplane::wire::arp::{ArpOperation, ArpPacket};
use podplane::wire::ethernet::EthernetFrame;
use podplane_tap::TapPort;

fn can_run() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("no /dev/net/tun".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Err("no `ip` command (apt-get install iproute2)".into());
    }
    Ok(())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn kernel_arp_request_from_a_tap_is_parsed() {
    if let Err(why) = can_run() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "root TAP test cannot run under CI: {why}");
        eprintln!("SKIPPED kernel_arp_request_from_a_tap_is_parsed: {why}");
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare only changes this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        let mut tap = TapPort::open("pptap0", PortId(0)).expect("open TAP");
        ip(&["link", "set", "lo", "up"]);
        ip(&["addr", "add", "192.0.2.1/24", "dev", tap.name()]);
        ip(&["link", "set", tap.name(), "address", "02:00:00:00:01:01", "up"]);

        let sock = UdpSocket::bind("192.0.2.1:0").expect("bind in the test namespace");
        sock.send_to(b"hello", (Ipv4Addr::new(192, 0, 2, 2), 9)).expect("send");

        let mut pool = BufPool::with_slots(64).unwrap();
        let mut batch = Batch::new();
        let mut x = XconnectStage::new();
        x.connect(PortId(0), PortId(0)).unwrap();
        let mut pl = Pipeline::new(vec![Box::new(ParseStage::new()), Box::new(x)], PipelineConfig::default(), 1);
        // The kernel may also send IPv6 router/neighbour solicitations: read until the
        // ARP request shows up, for at most 5 s and 1000 frames.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut frames = 0;
        let mut found = None;
        while found.is_none() && Instant::now() < deadline && frames < 1000 {
            batch.clear();
            if tap.recv_batch(&mut pool, &mut batch) == 0 {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            frames += batch.len();
            let out = pl.process(&mut pool, podplane::Instant::from_nanos(1), &mut batch);
            let sent: Vec<_> = out.tx().map(|(_, p)| p).collect();
            for p in sent {
                if pool.meta(p).l3_kind == L3Kind::Arp {
                    let f = EthernetFrame::new_checked(pool.data(p)).unwrap();
                    let a = ArpPacket::new_checked(f.payload()).unwrap();
                    found = Some((f.src_addr().to_string(), a.operation(), a.sender_ip(), a.target_ip()));
                }
                pool.free(p).unwrap();
            }
        }
        let (src_mac, op, sender, target) = found.expect("the kernel's ARP request arrived on the TAP");
        assert_eq!(src_mac, "02:00:00:00:01:01");
        assert_eq!(op, ArpOperation::Request);
        assert_eq!((sender, target), (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)));
        CounterExpect::new().check(&pl.counters().snapshot());
        assert_eq!(tap.read_errors, 0);
    })
    .join()
    .expect("TAP test thread");
}
