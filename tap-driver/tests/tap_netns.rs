//! Root tests: TAP devices in network namespaces of their own, a real kernel on the
//! other side, on both I/O backends (io_uring and poll).
//!
//! 1. The kernel sends a UDP datagram to 192.0.2.2 out of TAP `pptap0` (192.0.2.1/24,
//!    TEST-NET-1, only inside the test's namespace): it first writes an ARP request
//!    into the TAP, which the driver reads and a podplane parse stage classifies.
//! 2. The driver writes an ARP reply for 192.0.2.2 back; the kernel then sends the
//!    datagram itself to the MAC in the reply, which the driver reads: exact bytes.
//! 3. The device is deleted under the driver (`ip link del`): the driver reports it
//!    gone, once, and keeps running.
//!
//! Each test's namespace dies with its thread, so cleanup happens even on failure.
//! Needs root and `ip` (iproute2): without them the tests fail under `CI=true` and
//! say SKIPPED otherwise.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(unsafe_code)]
// A real kernel on real time: the read loops are bounded by the wall clock.
#![allow(clippy::disallowed_methods)]

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use podplane::buf::{Batch, L3Kind, PortId};
use podplane::pipeline::{Pipeline, PipelineConfig};
use podplane::stage::{ParseStage, XconnectStage};
use podplane::testutil::CounterExpect;
use podplane::wire::arp::{ArpOperation, ArpPacket};
use podplane::wire::ethernet::EthernetFrame;
use podplane_tap::{Driver, IoKind, IoMode, TapDevice, TapFlags};

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

const TAP_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 2, 2];

/// The ARP reply "192.0.2.2 is at PEER_MAC" to the request `req` (an Ethernet frame).
fn arp_reply(req: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&req[6..12]);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[192, 0, 2, 2]);
    f.extend_from_slice(&req[22..28]);
    f.extend_from_slice(&req[28..32]);
    f
}

/// Read frames until `want` says one is it, for at most 5 s and 1000 frames.
fn read_until(drv: &mut Driver, pl: &mut Pipeline, want: impl Fn(&[u8], L3Kind) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut batch = Batch::new();
    let mut frames = 0;
    while Instant::now() < deadline && frames < 1000 {
        batch.clear();
        drv.recv(&mut batch, Duration::from_millis(50)).expect("recv");
        frames += batch.len();
        let out = pl.process(drv.pool_mut(), podplane::Instant::from_nanos(1), &mut batch);
        let sent: Vec<_> = out.tx().map(|(_, p)| p).collect();
        let mut found = None;
        for &p in &sent {
            let (data, kind) = (drv.pool().data(p), drv.pool().meta(p).l3_kind);
            if found.is_none() && want(data, kind) {
                found = Some(data.to_vec());
            }
        }
        drv.free(&sent);
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Run `body` on a thread in a network namespace of its own (gone with the thread),
/// or say why not: a failure under `CI=true`, SKIPPED otherwise.
fn in_fresh_netns(test: &'static str, body: impl FnOnce() + Send + 'static) {
    if let Err(why) = can_run() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "root TAP test {test} cannot run under CI: {why}");
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        body();
    })
    .join()
    .expect("TAP test thread");
}

fn in_own_netns(mode: IoMode, test: &'static str) {
    in_fresh_netns(test, move || {
        let mut drv = Driver::new(mode, 256).expect("driver");
        match mode {
            IoMode::Uring => assert!(matches!(drv.kind(), IoKind::Uring { .. }), "{}", drv.kind()),
            _ => assert_eq!(drv.kind(), IoKind::Poll),
        }
        let tap = TapDevice::open("pptap0", TapFlags::default()).expect("open TAP");
        let name = tap.name().to_owned();
        drv.add(tap, PortId(0)).unwrap();
        ip(&["link", "set", "lo", "up"]);
        ip(&["addr", "add", "192.0.2.1/24", "dev", &name]);
        ip(&["link", "set", &name, "address", "02:00:00:00:01:01", "up"]);

        let sock = UdpSocket::bind("192.0.2.1:5000").expect("bind in the test namespace");
        sock.send_to(b"hello", (Ipv4Addr::new(192, 0, 2, 2), 9)).expect("send");

        let mut x = XconnectStage::new();
        x.connect(PortId(0), PortId(0)).unwrap();
        let mut pl = Pipeline::new(vec![Box::new(ParseStage::new()), Box::new(x)], PipelineConfig::default(), 1);
        // The kernel may also send IPv6 router/neighbour solicitations: skip them.
        let req = read_until(&mut drv, &mut pl, |_, k| k == L3Kind::Arp).expect("the kernel's ARP request");
        let f = EthernetFrame::new_checked(&req[..]).unwrap();
        assert_eq!(f.src_addr().0, TAP_MAC);
        let a = ArpPacket::new_checked(f.payload()).unwrap();
        assert_eq!(a.operation(), ArpOperation::Request);
        assert_eq!((a.sender_ip(), a.target_ip()), (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)));

        // Write the reply through the driver; the kernel then sends the datagram.
        let mut batch = Batch::new();
        let p = drv.pool_mut().alloc(podplane::buf::Owner::Pipeline).unwrap();
        drv.pool_mut().set_data(p, &arp_reply(&req)).unwrap();
        batch.push(p).unwrap();
        assert_eq!(drv.send(&[(PortId(0), p)]), 0);
        let udp = read_until(&mut drv, &mut pl, |d, k| k == L3Kind::Ipv4 && d.get(23) == Some(&17))
            .expect("the datagram, once the kernel has our ARP reply");
        assert_eq!(&udp[0..6], &PEER_MAC, "sent to the MAC in our reply");
        assert_eq!(&udp[34..36], &5000u16.to_be_bytes());
        assert_eq!(&udp[42..47], b"hello");
        CounterExpect::new().check(&pl.counters().snapshot());
        let (_, port, stats, gone) = drv.devices().next().unwrap();
        assert_eq!(
            (port, gone, stats.tx, stats.tx_bytes, stats.tx_errors, stats.rx_errors),
            (PortId(0), false, 1, 42, 0, 0)
        );
        assert!(stats.rx >= 2, "{stats:?}");

        // The device goes away under the driver: reported once, no panic, no spin.
        ip(&["link", "del", &name]);
        let mut gone = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while gone.is_empty() && Instant::now() < deadline {
            batch.clear();
            drv.recv(&mut batch, Duration::from_millis(50)).expect("recv");
            let pkts: Vec<_> = (0..batch.len()).map(|i| batch.pkt(i)).collect();
            drv.free(&pkts);
            drv.take_gone(&mut gone);
        }
        assert_eq!(gone, vec![name.clone()]);
        drv.take_gone(&mut gone);
        assert_eq!(gone.len(), 1, "reported once");
        assert!(drv.remove(&name));
        assert_eq!(drv.devices().count(), 0);
        // Every slot is back once the device is removed.
        assert_eq!(drv.pool().available(), 256);
    });
}

/// A pool of 64 slots and 400 datagrams from the kernel, none freed at first: the
/// driver stops posting reads when the pool is empty (counted), the frames wait in
/// the TAP's queue (txqueuelen 1000), and once the slots come back every datagram is
/// read, in order.
fn pool_exhaustion(mode: IoMode, test: &'static str) {
    in_fresh_netns(test, move || {
        let mut drv = Driver::new(mode, 64).expect("driver");
        let tap = TapDevice::open("pptap1", TapFlags::default()).expect("open TAP");
        drv.add(tap, PortId(0)).unwrap();
        ip(&["link", "set", "lo", "up"]);
        ip(&["addr", "add", "192.0.2.1/24", "dev", "pptap1"]);
        ip(&["link", "set", "pptap1", "up"]);
        ip(&["neigh", "add", "192.0.2.2", "lladdr", "02:00:00:00:02:02", "dev", "pptap1"]);
        let sock = UdpSocket::bind("192.0.2.1:5001").unwrap();
        for k in 0..400u32 {
            sock.send_to(&k.to_be_bytes(), (Ipv4Addr::new(192, 0, 2, 2), 9)).unwrap();
        }
        let (mut held, mut seen) = (Vec::new(), Vec::new());
        let mut batch = Batch::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.len() < 400 && Instant::now() < deadline {
            batch.clear();
            drv.recv(&mut batch, Duration::from_millis(20)).unwrap();
            for i in 0..batch.len() {
                let d = drv.pool().data(batch.pkt(i));
                if d.len() >= 46 && d[12..14] == [0x08, 0x00] && d[23] == 17 {
                    seen.push(u32::from_be_bytes([d[42], d[43], d[44], d[45]]));
                }
                held.push(batch.pkt(i));
            }
            // Hold everything until the pool has run dry once, then free as we go.
            if drv.pool().exhausted() > 0 {
                drv.free(&held);
                held.clear();
            }
        }
        assert!(drv.pool().exhausted() > 0, "the pool ran dry");
        assert_eq!(seen, (0..400).collect::<Vec<_>>(), "every datagram, in order, none lost");
        drv.free(&held);
    });
}

#[test]
fn pool_exhaustion_waits_in_the_kernel_queue_on_io_uring() {
    pool_exhaustion(IoMode::Uring, "pool_exhaustion_waits_in_the_kernel_queue_on_io_uring");
}

#[test]
fn pool_exhaustion_waits_in_the_kernel_queue_on_poll() {
    pool_exhaustion(IoMode::Poll, "pool_exhaustion_waits_in_the_kernel_queue_on_poll");
}

#[test]
fn tap_frames_both_ways_on_io_uring() {
    in_own_netns(IoMode::Uring, "tap_frames_both_ways_on_io_uring");
}

#[test]
fn tap_frames_both_ways_on_poll() {
    in_own_netns(IoMode::Poll, "tap_frames_both_ways_on_poll");
}
