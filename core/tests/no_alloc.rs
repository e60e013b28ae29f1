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
