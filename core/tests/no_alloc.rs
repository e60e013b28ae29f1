//! The packet path allocates nothing: a counting global allocator (per thread, so
//! tests running in parallel do not disturb each other) watches `Pipeline::process`
//! over valid and malformed frames, traced and untraced, and over generated packets.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv4Addr;

use podplane::buf::{Batch, BufPool, PortId};
use podplane::pipeline::{Pipeline, PipelineConfig, Stage};
use podplane::stage::ParseStage;
use podplane::testutil;
use podplane::wire::ChecksumPolicy;
use podplane::wire::tcp::TcpFlags;
use podplane::{Context, Instant};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counter is a
// const-initialised thread-local `Cell`, whose access never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Transmits parsed packets and generates one packet per batch (as an ARP stage
/// would), which enters at this same stage (it transmits it).
struct TxAndGenerate;
impl Stage for TxAndGenerate {
    fn name(&self) -> &'static str {
        "tx"
    }
    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        let mut made = false;
        for i in 0..batch.len() {
            if batch.is_live(i) {
                if !made && cx.pool.meta(batch.pkt(i)).flags.contains(podplane::buf::PktFlags::HAS_L4) {
                    if let Some(p) = cx.alloc() {
                        let _ = cx.pool.push_back(p, 60);
                        let here = cx.stage_index();
                        cx.inject(p, here);
                    }
                    made = true;
                }
                batch.transmit(i, PortId(1));
            }
        }
    }
}

fn frames() -> Vec<Vec<u8>> {
    let (a, b) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 3));
    let mut bad_csum = testutil::udp4(a, b, 1, 2, b"x");
    bad_csum[14 + 8] = 1;
    vec![
        testutil::udp4(a, b, 1, 2, b"payload"),
        testutil::tcp4(a, b, 3, 4, TcpFlags::SYN, b""),
        testutil::icmp4_echo(a, b, 5, 6),
        testutil::udp6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 7, 8, b"v6"),
        testutil::arp_request(a, b),
        vec![0u8; 10],
        bad_csum,
    ]
}

#[test]
fn process_never_allocates() {
    let mut pool = BufPool::with_slots(256).unwrap();
    let mut pl = Pipeline::new(
        vec![Box::new(ParseStage::new()), Box::new(TxAndGenerate)],
        PipelineConfig { checksum: ChecksumPolicy { ipv4: true, l4: true } },
        1,
    );
    pl.trace_add(5);
    let frames = frames();
    let mut batch = Batch::new();
    for round in 0..20 {
        batch.clear();
        testutil::load(&mut pool, &mut batch, PortId(0), &frames);
        let before = allocs();
        let out = pl.process(&mut pool, Instant::from_nanos(round), &mut batch);
        let n_tx = out.tx().len();
        let after = allocs();
        assert_eq!(after - before, 0, "round {round}: process() allocated");
        // 7 frames - runt - bad checksum + 1 generated
        assert_eq!(n_tx, frames.len() - 2 + 1, "round {round}");
        // The driver frees what it transmitted.
        let sent: Vec<_> = out.tx().map(|(_, p)| p).collect();
        for p in sent {
            pool.free(p).unwrap();
        }
        assert_eq!(pool.available(), pool.capacity(), "round {round}: a slot leaked");
    }
    assert!(pl.counters().snapshot().balanced());
    assert!(pl.trace().records().len() > 5, "tracing ran inside the measured window");
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocs();
    let v = std::hint::black_box(vec![1u8; 16]);
    assert_eq!(allocs() - before, 1);
    drop(v);
}

mod node_path {
    use super::*;
    use podplane::stage::arp::{ArpConfig, LocalAddr};
    use podplane::stage::route::{L3If, RouteConfig};
    use podplane::stage::{ArpStage, EgressStage, RouteStage};
    use podplane::wire::EthernetAddress;
    use podplane::wire::ipv4::Ipv4Packet;

    const A_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
    const R0: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 0]);
    const R1: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 1]);

    fn router() -> Pipeline {
        let ifs = vec![
            L3If {
                port: PortId(0),
                mac: R0,
                ip: Ipv4Addr::new(10, 98, 0, 1),
                prefix: 24,
                mtu: 1500,
                bvi: false,
                ip6: None,
                ports: vec![PortId(0)],
            },
            L3If {
                port: PortId(1),
                mac: R1,
                ip: Ipv4Addr::new(10, 97, 0, 1),
                prefix: 24,
                mtu: 576,
                bvi: false,
                ip6: None,
                ports: vec![PortId(1)],
            },
        ];
        let arp = ArpConfig {
            local: ifs.iter().map(|i| LocalAddr { ip: i.ip, mac: i.mac, ports: vec![i.port] }).collect(),
            proxy: vec![],
            interfaces: ifs.clone(),
        };
        Pipeline::new(
            vec![
                Box::new(ParseStage::new()),
                Box::new(RouteStage::new(&RouteConfig {
                    interfaces: ifs,
                    routes: vec![],
                    multipath: vec![],
                    routes6: vec![],
                    multipath6: vec![],
                })),
                Box::new(ArpStage::new(arp)),
                Box::new(EgressStage),
            ],
            PipelineConfig::default(),
            3,
        )
    }

    fn udp(dst: Ipv4Addr, ttl: u8, len: usize, df: bool) -> Vec<u8> {
        let mut f = testutil::udp4(Ipv4Addr::new(10, 98, 0, 2), dst, 1, 2, &vec![9; len]);
        f[..6].copy_from_slice(&R0.0);
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_ttl(ttl);
        ip.set_flags_offset(df, false, 0);
        ip.fill_checksum();
        f
    }

    fn arp(from_port_b: bool) -> Vec<u8> {
        if from_port_b {
            let mut r = testutil::arp_request(Ipv4Addr::new(10, 97, 0, 2), Ipv4Addr::new(10, 97, 0, 1));
            r[21] = 2;
            r
        } else {
            let mut r = testutil::arp_request(Ipv4Addr::new(10, 98, 0, 2), Ipv4Addr::new(10, 98, 0, 1));
            r[6..12].copy_from_slice(&A_MAC);
            r
        }
    }

    fn send(pl: &mut Pipeline, pool: &mut BufPool, frames: &[(u16, Vec<u8>)], at_secs: u64) -> (u64, usize) {
        let mut batch = Batch::new();
        for (p, f) in frames {
            testutil::load(pool, &mut batch, PortId(*p), std::slice::from_ref(f));
        }
        let before = allocs();
        let out = pl.process(pool, Instant::from_nanos(at_secs * 1_000_000_000), &mut batch);
        let n = out.tx().len() + out.host().len();
        let used = allocs() - before;
        let sent: Vec<_> = out.tx().map(|(_, p)| p).chain(out.host().iter().copied()).collect();
        for p in sent {
            pool.free(p).unwrap();
        }
        (used, n)
    }

    #[test]
    fn routing_icmp_errors_fragments_and_arp_never_allocate() {
        let mut pl = router();
        let mut pool = BufPool::with_slots(512).unwrap();
        // Warm up: both neighbours known.
        send(&mut pl, &mut pool, &[(0, arp(false)), (1, arp(true))], 1);
        for round in 0..10 {
            let frames = vec![
                (0, udp(Ipv4Addr::new(10, 97, 0, 2), 64, 100, true)),
                (0, udp(Ipv4Addr::new(10, 97, 0, 2), 1, 100, true)),
                (0, udp(Ipv4Addr::new(10, 97, 0, 2), 64, 1400, false)),
                (0, udp(Ipv4Addr::new(10, 97, 0, 2), 64, 1400, true)),
                (0, udp(Ipv4Addr::new(8, 8, 8, 8), 64, 10, true)),
                (0, udp(Ipv4Addr::new(10, 98, 0, 1), 64, 10, true)),
                (0, arp(false)),
            ];
            // Two seconds a round: the per-destination ICMP limit (1/s) refills for the
            // round's two rate-limited errors.
            let (used, n) = send(&mut pl, &mut pool, &frames, 2 + 2 * round);
            assert_eq!(used, 0, "round {round}: the node path allocated");
            // forwarded 1 + time exceeded 1 + 3 fragments + frag needed 1 + net unreachable 1
            // + to host 1 + ARP reply 1
            assert_eq!(n, 9, "round {round}");
            assert_eq!(pool.available(), pool.capacity(), "round {round}: a slot leaked");
        }
        assert!(pl.counters().snapshot().balanced());
    }
}
