//! The conntrack stages in a pipeline: parse → conntrack → (a stage that may drop)
//! → ct_commit → xconnect, ports 0 and 1 joined.

use std::net::Ipv4Addr;

use super::proto::ProtoState;
use super::state::{info, unpack};
use super::tcp::TcpState;
use super::*;
use crate::buf::{Batch, BufPool, PktId, PortId};
use crate::pipeline::{Context, DropReason, Pipeline, PipelineConfig, Stage, StageEvent};
use crate::stage::{ParseStage, XconnectStage};
use crate::testutil::{tcp4, udp4};
use crate::time::{Duration, Instant};
use crate::wire::tcp::TcpFlags;

const A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// Drops the packets whose UDP payload starts with `b'X'` (a verdict after lookup).
#[derive(Debug)]
struct DropMarked;
impl Stage for DropMarked {
    fn name(&self) -> &'static str {
        "policy"
    }
    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let d = cx.pool.data(batch.pkt(i));
            if d.len() > 42 && d[23] == 17 && d[42] == b'X' {
                cx.drop(batch, i, DropReason::RouteBlackhole);
            }
        }
    }
}

fn pipeline(cfg: CtConfig) -> (Pipeline, SharedConntrack) {
    let ct = Conntrack::shared(cfg);
    let mut x = XconnectStage::new();
    x.connect(PortId(0), PortId(1)).unwrap();
    let stages: Vec<Box<dyn Stage>> = vec![
        Box::new(ParseStage::new()),
        Box::new(ConntrackStage::new(ct.clone())),
        Box::new(DropMarked),
        Box::new(CommitStage::new(ct.clone())),
        Box::new(x),
    ];
    (Pipeline::new(stages, PipelineConfig::default(), 1), ct)
}

/// Run `frames` (port, bytes) as one batch at `now`; the `(ct, ct_info)` of every
/// packet sent, in input order.
fn run(pl: &mut Pipeline, pool: &mut BufPool, now: Instant, frames: &[(u16, Vec<u8>)]) -> Vec<(u32, u8)> {
    let mut batch = Batch::new();
    for (port, f) in frames {
        let p = pool.alloc(crate::buf::Owner::Pipeline).unwrap();
        pool.set_data(p, f).unwrap();
        pool.meta_mut(p).in_port = PortId(*port);
        batch.push(p).unwrap();
    }
    let mut out: Vec<PktId> = pl.process(pool, now, &mut batch).tx().map(|(_, p)| p).collect();
    // In input order (a fresh batch's slots are handed out in order).
    out.sort_unstable();
    let got = out.iter().map(|&p| (pool.meta(p).ct, pool.meta(p).ct_info)).collect();
    for p in out {
        pool.free(p).unwrap();
    }
    got
}

#[test]
fn a_and_aaaa_and_the_reply_in_one_batch_share_one_entry() {
    // kubernetes#56903: two queries from one socket at once must not race.
    let (mut pl, ct) = pipeline(CtConfig::default());
    let mut pool = BufPool::with_slots(64).unwrap();
    let q_a = udp4(A, DNS, 40000, 53, b"A?");
    let q_aaaa = udp4(A, DNS, 40000, 53, b"AAAA?");
    let answer = udp4(DNS, A, 53, 40000, b"A!");
    let got = run(&mut pl, &mut pool, Instant::ZERO, &[(0, q_a), (0, q_aaaa), (1, answer)]);
    assert_eq!(got.len(), 3, "nothing dropped");
    assert!(got.iter().all(|g| g.0 == got[0].0 && unpack(g.0).is_some()), "one connection: {got:?}");
    assert_eq!(got[0].1 & (info::NEW | info::REPLY), info::NEW);
    assert_eq!(got[1].1 & (info::NEW | info::REPLY), info::NEW);
    assert_eq!(got[2].1 & (info::ESTABLISHED | info::REPLY), info::ESTABLISHED | info::REPLY);
    assert!(got.iter().all(|g| g.1 & info::PENDING == 0), "committed by the end of the batch");
    assert_eq!(ct.lock().unwrap().len(), (1, 0));
    assert_eq!(pl.counters().events("ct_commit", StageEvent::CtNew), 1);
}

#[test]
fn a_packet_dropped_after_lookup_leaves_no_entry() {
    let (mut pl, ct) = pipeline(CtConfig::default());
    let mut pool = BufPool::with_slots(64).unwrap();
    let got = run(&mut pl, &mut pool, Instant::ZERO, &[(0, udp4(A, DNS, 40001, 53, b"X-dropped"))]);
    assert!(got.is_empty());
    assert_eq!(ct.lock().unwrap().len(), (0, 0));
    // The same flow with a surviving second packet in the batch: committed once.
    let frames = [(0, udp4(A, DNS, 40001, 53, b"X-dropped")), (0, udp4(A, DNS, 40001, 53, b"kept"))];
    assert_eq!(run(&mut pl, &mut pool, Instant::ZERO, &frames).len(), 1);
    assert_eq!(ct.lock().unwrap().len(), (1, 0));
}

#[test]
fn output_does_not_depend_on_the_batch_size() {
    let frames = [
        (0, udp4(A, DNS, 1000, 53, b"q1")),
        (0, udp4(A, DNS, 1001, 53, b"X")),
        (1, udp4(DNS, A, 53, 1000, b"r1")),
        (0, udp4(A, DNS, 1000, 53, b"q2")),
        (1, udp4(DNS, A, 53, 1001, b"orphan reply")),
    ];
    let mut results = Vec::new();
    for per_batch in [1usize, 5] {
        let (mut pl, ct) = pipeline(CtConfig::default());
        let mut pool = BufPool::with_slots(64).unwrap();
        let mut infos = Vec::new();
        for chunk in frames.chunks(per_batch) {
            infos.extend(run(&mut pl, &mut pool, Instant::ZERO, chunk).into_iter().map(|g| g.1));
        }
        let n = ct.lock().unwrap().len();
        results.push((infos, n));
    }
    assert_eq!(results[0], results[1]);
    // The orphan reply (its query was dropped) starts a connection of its own.
    assert_eq!(results[0].1, (2, 0));
}

fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: TcpFlags, seq: u32, ack: u32) -> Vec<u8> {
    let mut f = tcp4(src, dst, sport, dport, flags, &[]);
    // Sequence and acknowledgment numbers, then the TCP checksum again.
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[42..46].copy_from_slice(&ack.to_be_bytes());
    f[50..52].copy_from_slice(&[0, 0]);
    let mut s = crate::wire::checksum::pseudo_v4(src, dst, 6, 20);
    s.add_bytes(&f[34..54]);
    let c = s.checksum();
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn tcp_handshake_across_batches_and_out_of_window_dropped() {
    let (mut pl, ct) = pipeline(CtConfig::default());
    let mut pool = BufPool::with_slots(64).unwrap();
    let web = Ipv4Addr::new(10, 244, 2, 7);
    let t0 = Instant::ZERO;
    assert_eq!(run(&mut pl, &mut pool, t0, &[(0, tcp(A, web, 5555, 80, TcpFlags::SYN, 100, 0))]).len(), 1);
    let synack = TcpFlags::SYN | TcpFlags::ACK;
    assert_eq!(run(&mut pl, &mut pool, t0, &[(1, tcp(web, A, 80, 5555, synack, 900, 101))]).len(), 1);
    assert_eq!(run(&mut pl, &mut pool, t0, &[(0, tcp(A, web, 5555, 80, TcpFlags::ACK, 101, 901))]).len(), 1);
    {
        let c = ct.lock().unwrap();
        let (_, e) = c.v4().iter(t0).next().unwrap();
        let ProtoState::Tcp(t) = e.proto else { panic!() };
        assert_eq!(t.state, TcpState::Established);
        assert!(e.has(crate::table::conntrack::status::ASSURED));
    }
    // An ACK for data the server never sent: INVALID, dropped (never leaves
    // untranslated, kubernetes#74839).
    let wild = tcp(A, web, 5555, 80, TcpFlags::ACK, 101, 901 + 5_000_000);
    assert!(run(&mut pl, &mut pool, t0, &[(0, wild)]).is_empty());
    assert_eq!(pl.counters().drops("conntrack", DropReason::CtInvalid), 1);
    // SYN+FIN can start nothing.
    let bad = tcp(A, web, 6000, 80, TcpFlags::SYN | TcpFlags::FIN, 1, 0);
    assert!(run(&mut pl, &mut pool, t0, &[(0, bad)]).is_empty());
    assert_eq!(pl.counters().drops("conntrack", DropReason::CtInvalid), 2);
}

#[test]
fn a_full_table_refuses_new_connections_but_keeps_established_ones() {
    let cfg = CtConfig { capacity: 4, ..CtConfig::default() };
    let (mut pl, ct) = pipeline(cfg);
    let mut pool = BufPool::with_slots(64).unwrap();
    let t0 = Instant::ZERO;
    let later = Instant::ZERO + Duration::from_secs(3);
    // Four UDP streams, answered and alive past two seconds: assured.
    for k in 0..4u16 {
        run(&mut pl, &mut pool, t0, &[(0, udp4(A, DNS, 2000 + k, 53, b"q")), (1, udp4(DNS, A, 53, 2000 + k, b"r"))]);
        run(&mut pl, &mut pool, later, &[(0, udp4(A, DNS, 2000 + k, 53, b"q"))]);
    }
    assert_eq!(ct.lock().unwrap().len(), (4, 0));
    // A flood of new flows: each refused, counted; no established flow evicted.
    for k in 0..50u16 {
        assert!(run(&mut pl, &mut pool, later, &[(0, udp4(A, DNS, 9000 + k, 53, b"new"))]).is_empty());
    }
    assert_eq!(pl.counters().drops("ct_commit", DropReason::CtTableFull), 50);
    for k in 0..4u16 {
        assert_eq!(run(&mut pl, &mut pool, later, &[(1, udp4(DNS, A, 53, 2000 + k, b"r"))]).len(), 1);
    }
    assert_eq!(pl.counters().events("ct_commit", StageEvent::CtEarlyDrop), 0);
}

#[test]
fn udp_entries_expire_and_are_swept() {
    let (mut pl, ct) = pipeline(CtConfig::default());
    let mut pool = BufPool::with_slots(64).unwrap();
    run(&mut pl, &mut pool, Instant::ZERO, &[(0, udp4(A, DNS, 3000, 53, b"q"))]);
    assert_eq!(ct.lock().unwrap().len(), (1, 0));
    // 31 s later (UDP's 30 s): gone, and the same query starts a new connection.
    let later = Instant::ZERO + Duration::from_secs(31);
    let got = run(&mut pl, &mut pool, later, &[(0, udp4(A, DNS, 3000, 53, b"q"))]);
    assert_eq!(got[0].1 & info::NEW, info::NEW);
    assert_eq!(pl.counters().events("ct_commit", StageEvent::CtNew), 2);
    assert_eq!(ct.lock().unwrap().len(), (1, 0));
}

#[test]
fn a_new_connection_takes_the_slot_of_the_expired_one_it_meets_unless_dropped() {
    use crate::table::conntrack::CtId;
    // No sweep in this test: what is reclaimed, the new connections reclaim.
    let cfg = CtConfig { sweep_per_batch: 0, ..CtConfig::default() };
    let (mut pl, ct) = pipeline(cfg);
    let mut pool = BufPool::with_slots(64).unwrap();
    let q = |p: &[u8]| udp4(A, DNS, 3000, 53, p);
    let first = run(&mut pl, &mut pool, Instant::ZERO, &[(0, q(b"q")), (0, udp4(A, DNS, 3001, 53, b"q"))]);
    let Some(CtRef::V4(id)) = unpack(first[0].0) else { panic!("{first:?}") };
    let serial = ct.lock().unwrap().v4().serial(id);
    // 31 s later (UDP's 30 s) both have expired. The query's first packet is dropped
    // after the look-up: nothing is created, and the expired connection stays (a
    // look-up sees it as gone).
    let later = Instant::ZERO + Duration::from_secs(31);
    assert!(run(&mut pl, &mut pool, later, &[(0, q(b"X-dropped"))]).is_empty());
    {
        let c = ct.lock().unwrap();
        assert_eq!((c.len(), c.v4().serial(id)), ((2, 0), serial));
        assert_eq!(c.v4().iter(later).count(), 0);
    }
    // The next one starts the connection again, in the slot of the expired one,
    // under a new serial (a fast-path cache of the old one no longer matches).
    let got = run(&mut pl, &mut pool, later, &[(0, q(b"q"))]);
    assert_eq!(got, vec![(first[0].0, info::NEW)]);
    let c = ct.lock().unwrap();
    assert_eq!(c.len(), (2, 0), "the other expired connection still waits for the sweep");
    assert_ne!(c.v4().serial(id), serial);
    assert_eq!(c.v4().iter(later).map(|(i, _)| i).collect::<Vec<CtId>>(), vec![id]);
    assert_eq!(pl.counters().events("ct_commit", StageEvent::CtNew), 3);
}

#[test]
fn the_sweep_keeps_pace_with_the_clock_not_with_the_batches() {
    let mut ct = Conntrack::new(CtConfig { capacity: 1024, ..CtConfig::default() });
    let at = |ms: u64, us: u64| Instant::ZERO + Duration::from_millis(ms) + Duration::from_micros(us);
    assert_eq!(ct.sweep_budget(at(0, 0)), 0);
    // Idle for 10 s: one pass is owed (not ten), 32 slots a batch.
    let idle: Vec<usize> = (0..33).map(|_| ct.sweep_budget(at(10_000, 0))).collect();
    assert_eq!(idle[..32], [32; 32]);
    assert_eq!(idle[32], 0, "1,024 slots: one pass");
    // At load, batches 1 ms apart: 1.024 slots each, swept eight at a time, the
    // fraction carried over.
    let load: Vec<usize> = (1..=16).map(|ms| ct.sweep_budget(at(10_000 + ms, 0))).collect();
    assert_eq!(load, [0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 8]);
    // A clock that goes back owes nothing.
    assert_eq!(ct.sweep_budget(at(9_000, 0)), 0);
    assert_eq!(ct.sweep_budget(at(10_023, 0)), 0);
    assert_eq!(ct.sweep_budget(at(10_024, 0)), 8);
}

#[test]
fn a_rst_as_the_only_answer_leaves_no_connection() {
    let web = Ipv4Addr::new(10, 244, 2, 8);
    let rst = TcpFlags::RST | TcpFlags::ACK;
    let t0 = Instant::ZERO;
    // In one batch and in two: both packets pass, and no entry stays.
    for split in [false, true] {
        let (mut pl, ct) = pipeline(CtConfig::default());
        let mut pool = BufPool::with_slots(64).unwrap();
        let syn = (0, tcp(A, web, 7000, 81, TcpFlags::SYN, 10, 0));
        let reset = (1, tcp(web, A, 81, 7000, rst, 0, 11));
        let sent = if split {
            run(&mut pl, &mut pool, t0, &[syn]).len() + run(&mut pl, &mut pool, t0, &[reset]).len()
        } else {
            run(&mut pl, &mut pool, t0, &[syn, reset]).len()
        };
        assert_eq!(sent, 2, "split {split}");
        assert_eq!(ct.lock().unwrap().len(), (0, 0), "split {split}");
        assert_eq!(pl.counters().snapshot().totals.dropped, 0);
    }
}

/// An ICMPv4 error from `src` to `dst` quoting `quote` (an IP packet's first bytes).
fn icmp4_error(src: Ipv4Addr, dst: Ipv4Addr, typ: u8, code: u8, quote: &[u8]) -> Vec<u8> {
    let mut f = udp4(src, dst, 1, 1, &[]);
    f.truncate(14);
    let total = 20 + 8 + quote.len();
    let mut ip = vec![0x45, 0xc0];
    ip.extend_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = crate::wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut icmp = vec![typ, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quote);
    let c = crate::wire::checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

#[test]
fn icmp_errors_are_related_to_the_connection_they_quote() {
    let (mut pl, ct) = pipeline(CtConfig::default());
    let mut pool = BufPool::with_slots(64).unwrap();
    let t0 = Instant::ZERO;
    let query = udp4(A, DNS, 4000, 53, b"q");
    let got = run(&mut pl, &mut pool, t0, &[(0, query.clone())]);
    let conn = got[0].0;
    // Port unreachable from the server, quoting the query: RELATED, going back.
    let err = icmp4_error(DNS, A, 3, 3, &query[14..14 + 28]);
    let got = run(&mut pl, &mut pool, t0, &[(1, err)]);
    assert_eq!(got, vec![(conn, info::RELATED | info::REPLY)]);
    // In the same batch as the query it quotes: found pending, related all the same.
    let q2 = udp4(A, DNS, 4001, 53, b"q");
    let err2 = icmp4_error(DNS, A, 3, 3, &q2[14..14 + 28]);
    let got = run(&mut pl, &mut pool, t0, &[(0, q2), (1, err2)]);
    assert_eq!(got.len(), 2);
    assert_eq!((got[1].0, got[1].1), (got[0].0, info::RELATED | info::REPLY));
    // Quoting no connection, or quoting too little: INVALID, dropped.
    let stray = udp4(A, DNS, 4999, 53, b"q");
    assert!(run(&mut pl, &mut pool, t0, &[(1, icmp4_error(DNS, A, 3, 3, &stray[14..14 + 28]))]).is_empty());
    assert!(run(&mut pl, &mut pool, t0, &[(1, icmp4_error(DNS, A, 11, 0, &query[14..14 + 24]))]).is_empty());
    assert_eq!(pl.counters().drops("conntrack", DropReason::CtInvalid), 2);
    // Errors create nothing.
    assert_eq!(ct.lock().unwrap().len(), (2, 0));
}

mod batch_independence {
    use super::*;
    use proptest::prelude::*;

    /// One packet of a small universe: UDP or TCP between two pods and two servers,
    /// either way, with a few sequence numbers and flag sets, some marked to be
    /// dropped after the lookup, and ICMP errors quoting any of them.
    fn frame() -> impl Strategy<Value = (u16, Vec<u8>)> {
        let host = |k: u8| Ipv4Addr::new(10, 244, 1, 2 + k);
        (0u8..2, 0u8..2, 0u16..2, any::<bool>(), 0u8..4, 0u8..5, 0u32..3, any::<bool>()).prop_map(
            move |(a, b, port, reply, kind, flags, seq, mark)| {
                let (c, s) = (host(a), Ipv4Addr::new(10, 96, 0, 10 + b));
                let (src, dst, sp, dp) = if reply { (s, c, 53, 4000 + port) } else { (c, s, 4000 + port, 53) };
                let f = match kind {
                    0 | 1 => udp4(src, dst, sp, dp, if mark { b"X" } else { b"ok" }),
                    2 => {
                        let fl = [
                            TcpFlags::SYN,
                            TcpFlags::SYN | TcpFlags::ACK,
                            TcpFlags::ACK,
                            TcpFlags::FIN | TcpFlags::ACK,
                            TcpFlags::RST,
                        ][usize::from(flags)];
                        tcp(src, dst, sp, dp, fl, 1000 * seq, 1000 * seq + 1)
                    }
                    _ => {
                        let quoted = udp4(dst, src, dp, sp, b"q");
                        icmp4_error(src, dst, 3, 3, &quoted[14..14 + 28])
                    }
                };
                (if reply { 1 } else { 0 }, f)
            },
        )
    }

    proptest! {
        /// Batch 1 (the kernel's packet at a time) and larger batches give the same
        /// fate and `ct_info` to every packet and leave the same connections (all
        /// batches at one instant, so only the batching differs).
        #[test]
        fn batching_changes_nothing(frames in proptest::collection::vec(frame(), 1..40), k in 2usize..40) {
            prop_assert_eq!(outcome_at_once(&frames, 1), outcome_at_once(&frames, k));
        }
    }

    /// What a run leaves: each packet's fate (sent with its `ct_info`, or not) and the
    /// table's connections (tuples, status, protocol state), whatever their slots.
    fn outcome_at_once(frames: &[(u16, Vec<u8>)], per_batch: usize) -> (Vec<Option<u8>>, Vec<String>) {
        let (mut pl, ct) = pipeline(CtConfig::default());
        let mut pool = BufPool::with_slots(256).unwrap();
        let mut fates = Vec::new();
        for chunk in frames.chunks(per_batch) {
            let mut batch = Batch::new();
            for (port, f) in chunk {
                let p = pool.alloc(crate::buf::Owner::Pipeline).unwrap();
                pool.set_data(p, f).unwrap();
                pool.meta_mut(p).in_port = PortId(*port);
                batch.push(p).unwrap();
            }
            let ids: Vec<PktId> = (0..batch.len()).map(|i| batch.pkt(i)).collect();
            let sent: Vec<PktId> = pl.process(&mut pool, Instant::ZERO, &mut batch).tx().map(|(_, p)| p).collect();
            for id in ids {
                fates.push(sent.contains(&id).then(|| pool.meta(id).ct_info));
            }
            for p in sent {
                pool.free(p).unwrap();
            }
        }
        let c = ct.lock().unwrap();
        let mut table: Vec<String> =
            c.v4().iter(Instant::ZERO).map(|(_, e)| format!("{:?} {} {:?}", e.original, e.status, e.proto)).collect();
        table.sort();
        (fates, table)
    }
}

#[test]
fn ipv6_connections_go_to_their_own_table() {
    use crate::testutil::udp6;
    use std::net::Ipv6Addr;
    let (mut pl, ct) = pipeline(CtConfig::default());
    let mut pool = BufPool::with_slots(64).unwrap();
    let (c, s) = ("fd00:10:244:1::2".parse::<Ipv6Addr>().unwrap(), "fd00:10:96::a".parse::<Ipv6Addr>().unwrap());
    let got =
        run(&mut pl, &mut pool, Instant::ZERO, &[(0, udp6(c, s, 5353, 53, b"q")), (1, udp6(s, c, 53, 5353, b"r"))]);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, got[1].0);
    assert!(matches!(unpack(got[0].0), Some(CtRef::V6(_))));
    assert_eq!((got[0].1, got[1].1), (info::NEW, info::REPLY | info::ESTABLISHED));
    assert_eq!(ct.lock().unwrap().len(), (0, 1));
}
