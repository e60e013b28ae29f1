//! Instruction-count harness: pushes batches of frames through one configuration of
//! the dataplane so that `callgrind.sh` can turn callgrind's instruction totals into
//! instructions per packet.
//!
//! `icount <mode> <batches> [--batch N] [--mix udp64|mixed]`
//!
//! Every mode does the same driver work per batch (take slots, copy the frames in,
//! free what comes out); the modes differ only in what runs in between:
//! - `baseline`: nothing (the driver work alone);
//! - `parse_one`: the parse stage's per-packet function, called directly;
//! - `xconnect`: a pipeline with only the `xconnect` stage;
//! - `parse_xconnect`: a pipeline with `parse` then `xconnect`;
//! - `parse_bridge`: `parse → bridge → egress`, the destination MAC learned (warm FDB);
//!   every frame between the same two MACs (one pod pair's flow);
//! - `parse_bridge_pairs`: the same with one pod sending to four others in turn, so
//!   that no frame shares its MACs with the one before (no run, and the memo of the
//!   last destination misses: an FDB lookup per frame);
//! - `parse_route1m`: `parse → route → arp → egress` with 1,000,000 routes (lengths
//!   16..=32) and the next hop resolved (warm neighbour table);
//! - `parse_route`: the same with two routes (the baseline for the overlay figures);
//! - `parse_route_vxlan`: `parse → route → encap → arp → egress`, the traffic routed
//!   into a VXLAN tunnel to one peer (Flannel's path out);
//! - `parse_decap_route`: `parse → decap → route → arp → egress` on VXLAN frames from
//!   the peer (Flannel's path in: `flannel.1` is a layer-3 device, so decapsulated
//!   packets are routed, not bridged).
//! - `node_route`, `node_route1m`, `node_route_vxlan`: `parse_route`, `parse_route1m`
//!   and `parse_route_vxlan` as a node runs them, with conntrack (`conntrack` after
//!   parse, `ct_commit` after route), decap for VXLAN, and the flow fast path
//!   (`fastpath` ahead of parse, `fastpath_tunnel` after decap, `offload` last):
//!   established flows, replayed.
//! - `parse_ct_1m`: `parse → conntrack → ct_commit → xconnect` with a million
//!   connections in the table, every packet a hit on an established one.
//! - `parse_ct_1m_spread`: the same, every packet of the run on a flow of its own
//!   (its UDP source port set to its number after the copy in, and the checksum to
//!   none), all of them among the million: each lookup meets a cold entry, as with a
//!   million active flows, where `parse_ct_1m`'s 2,048 flows stay in cache;
//!   `parse_xconnect_spread` is `parse_xconnect` with the same port rewriting, its
//!   baseline.
//! - `parse_ct_snat_new`: `parse → conntrack → dnat → snat → ct_commit → xconnect`
//!   with a million connections and masquerade of everything: each round of the
//!   2,048 flows comes 31 s after the last, so each packet starts a connection again
//!   in place of its own expired one (found by its look-up). `parse_ct_snat_fresh`:
//!   the same with every packet on a flow of its own (`_spread`'s port rewriting),
//!   never seen before, into the free room of the table: no connection expires, so
//!   the figure holds no removal (the sweep removes a connection once it expires,
//!   later, as `parse_ct_snat_new`'s look-ups would have).
//! - `svc_est_N` / `svc_new_N` (N = 10, 1k, 100k services of 10 endpoints, so up to
//!   a million endpoints): the whole node path of a pod calling a ClusterIP whose
//!   endpoints are behind a VXLAN peer, `parse → source_check → decap → conntrack →
//!   dnat → route → snat → ct_commit → encap → arp → egress`; `est` on established
//!   connections (2,048 flows, each new once, then marked answered and assured as
//!   replies would make them), `new` with every packet a new connection; both with
//!   the flow fast path as a VXLAN node has it (`fastpath` in front of parse,
//!   `fastpath_tunnel` after decap, learned by `offload` at the end); `svc_slow_N` is
//!   `est` without it (every stage per packet).
//!
//! So `parse_xconnect - xconnect` is the parse stage inside a pipeline,
//! `parse_one - baseline` is its per-packet function alone, and `parse_bridge -
//! parse_xconnect` / `parse_route1m - parse_xconnect` are the bridge and route (+
//! neighbour) stages, with egress standing in for xconnect as the last stage. The script runs each mode
//! at two batch counts and divides the difference, which cancels start-up costs.

use std::process::ExitCode;

use podplane::buf::{Batch, BufPool, Owner, PortId};
use podplane::pipeline::{Pipeline, PipelineConfig, Stage};
use podplane::stage::arp::nd;
use podplane::stage::bridge::{BridgeConfig, BridgeDomain, BridgePort};
use podplane::stage::parse::parse_one;
use podplane::stage::route::{L3If, NextHop, NextHop6, RouteSpec, RouteSpec6};
use podplane::stage::{BridgeStage, EgressStage, ParseStage, XconnectStage};
use podplane::wire::ChecksumPolicy;
use podplane::wire::EthernetAddress;
use podplane_sim::traffic::{Mix, Traffic};
use std::net::{Ipv4Addr, Ipv6Addr};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: icount <baseline|parse_one|xconnect|parse_xconnect|parse_bridge|parse_bridge_pairs|parse_route1m|parse_route|parse_route_vxlan|parse_decap_route|node_route|node_route1m|node_route_vxlan|parse_route6_100k|parse_ct_1m|parse_ct_1m_spread|parse_xconnect_spread|parse_ct_1m_tcp|parse_xconnect_tcp|parse_ct_snat_new|parse_ct_snat_fresh|svc_est_{10,1k,100k}|svc_new_{10,1k,100k}|svc_memory|ct_churn [N]> <batches> [--batch N] [--mix udp64|mixed]";
    if args.get(1).map(String::as_str) == Some("lpm_memory") {
        lpm_memory();
        return ExitCode::SUCCESS;
    }
    if args.get(1).map(String::as_str) == Some("svc_memory") {
        svc_memory();
        return ExitCode::SUCCESS;
    }
    if args.get(1).map(String::as_str) == Some("ct_churn") {
        ct_churn(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000_000));
        return ExitCode::SUCCESS;
    }
    let (Some(mode), Some(batches)) = (args.get(1), args.get(2).and_then(|s| s.parse::<usize>().ok())) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let mut batch_size = 32usize;
    let mut mix = Mix::Udp64;
    let mut i = 3;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1).map(String::as_str)) {
            ("--batch", Some(n)) => batch_size = n.parse().unwrap_or(32).clamp(1, 256),
            ("--mix", Some("mixed")) => mix = Mix::Mixed,
            ("--mix", Some("udp64")) => mix = Mix::Udp64,
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
        i += 2;
    }

    // 64 different batches of frames, reused round-robin: warm tables, varied flows.
    let mut traffic = Traffic::new(1, mix);
    let services = service_count(mode);
    let frames: Vec<Vec<u8>> = if let Some(n) = services {
        (0..64 * batch_size).map(|k| service_frame(k, n)).collect()
    } else if mode == "parse_bridge_pairs" {
        // One pod sending to four others in turn: no two frames in a row share their
        // MACs. (A pod port has one MAC, so the source stays the same.)
        (0..64 * batch_size)
            .map(|k| {
                let mut f = traffic.next_frame();
                let peer = u8::try_from(k % PAIRS).unwrap_or(0);
                f[..6].copy_from_slice(&[2, 0, 0, 0, 1, peer]);
                f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x0a]);
                f
            })
            .collect()
    } else if mode == "parse_decap_route" {
        (0..64 * batch_size).map(|_| vxlan_wrap(&traffic.next_frame())).collect()
    } else if mode.ends_with("_tcp") {
        (0..64 * batch_size).map(|k| tcp_frame(k, TcpStep::Data)).collect()
    } else if mode == "parse_route6_100k" {
        let mut x = 7u64;
        (0..64 * batch_size).map(|_| udp6_frame(&mut x)).collect()
    } else {
        (0..64 * batch_size).map(|_| traffic.next_frame()).collect()
    };
    let mut pool = BufPool::with_slots(4 * 256).expect("pool");
    let mut xconnect = XconnectStage::new();
    xconnect.connect(PortId(0), PortId(1)).expect("ports");
    let mut service_ct = None;
    let stages: Vec<Box<dyn Stage>> = match mode.as_str() {
        "xconnect" => vec![Box::new(xconnect)],
        "parse_xconnect" | "parse_xconnect_spread" | "parse_xconnect_tcp" => {
            vec![Box::new(ParseStage::new()), Box::new(xconnect)]
        }
        "parse_bridge" | "parse_bridge_pairs" => {
            vec![Box::new(ParseStage::new()), Box::new(bridge()), Box::new(EgressStage)]
        }
        "parse_route1m" => route_1m(),
        "parse_route6_100k" => route6_100k(),
        "parse_ct_1m" => conntrack_1m(&frames, false, 0),
        // Established TCP connections (a real handshake each, Linux's options), data
        // segments with timestamps.
        "parse_ct_1m_tcp" => conntrack_1m_tcp(frames.len()),
        // Every port's flow, whatever the run's length, so that runs of different
        // lengths load the same table (the script subtracts them).
        "parse_ct_1m_spread" => conntrack_1m(&frames, false, 65_536),
        "parse_ct_snat_new" | "parse_ct_snat_fresh" => conntrack_1m(&frames, true, 0),
        "parse_route" => route_small(None),
        "parse_route_vxlan" => route_small(Some(vxlan_config(LOCAL, VTEP_LOCAL, PEER, VTEP_PEER))),
        "node_route" => node_path(route_small(None), false),
        "node_route1m" => node_path(route_1m(), false),
        "node_route_vxlan" => node_path(route_small(Some(vxlan_config(LOCAL, VTEP_LOCAL, PEER, VTEP_PEER))), true),
        "parse_decap_route" => route_small(Some(vxlan_config(PEER, VTEP_PEER, LOCAL, VTEP_LOCAL))),
        "baseline" | "parse_one" => vec![],
        _ if services.is_some() => {
            let (stages, ct) = services_path(services.unwrap_or(10), !mode.starts_with("svc_slow_"));
            service_ct = Some(ct);
            stages
        }
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let use_pipeline = !stages.is_empty();
    let mut pipeline = Pipeline::new(stages, PipelineConfig::default(), 1);
    warm_up(&mut pipeline, &mut pool, mode);
    let policy = ChecksumPolicy::default();
    let mut batch = Batch::new();
    let mut out_pkts = Vec::with_capacity(1024);
    let mut sink = 0u64;

    for b in 0..batches {
        // Established service connections: after the first round created them, they
        // are answered and assured, as a client's would be.
        if b == 64
            && !mode.starts_with("svc_new_")
            && let Some(Ok(mut c)) = service_ct.as_ref().map(|c| c.lock())
        {
            c.assure_all();
        }
        let base = (b % 64) * batch_size;
        fill(&mut pool, &mut batch, &frames[base..base + batch_size]);
        if mode.ends_with("_spread") || mode == "parse_ct_snat_fresh" {
            spread(&mut pool, &batch, b * batch_size);
        }
        if mode.ends_with("_tcp") {
            next_segments(&mut pool, &batch, b / 64);
        }
        out_pkts.clear();
        if use_pipeline {
            // New connections: each round of the 64 batches comes 31 s after the last,
            // so every flow's previous entry has expired (UDP: 30 s) and each packet
            // starts a connection again.
            let fresh = mode == "parse_ct_snat_new" || mode.starts_with("svc_new_");
            // Otherwise a batch a microsecond (32 Mpkt/s): the clock-driven work
            // (the conntrack sweep) costs what it would at that rate.
            let t = if fresh { b as u64 / 64 * 31_000_000_000 } else { b as u64 * 1000 };
            let out = pipeline.process(&mut pool, podplane::Instant::from_nanos(t), &mut batch);
            out_pkts.extend(out.tx().map(|(_, p)| p));
            out_pkts.extend_from_slice(out.host());
        } else {
            for k in 0..batch.len() {
                let p = batch.pkt(k);
                if mode == "parse_one" {
                    let (slot, meta) = pool.slot_and_meta_mut(p);
                    sink += u64::from(parse_one(slot, meta, policy).is_ok());
                }
                out_pkts.push(p);
            }
        }
        release(&mut pool, &out_pkts);
    }
    let snap = pipeline.counters().snapshot();
    if std::env::var_os("ICOUNT_COUNTERS").is_some() {
        eprint!("{snap}");
    }
    println!(
        "mode={mode} batches={batches} batch={batch_size} rx={} tx={} dropped={} ok={sink}",
        snap.totals.rx, snap.totals.tx, snap.totals.dropped
    );
    ExitCode::SUCCESS
}

/// The driver's receive work: a slot per frame, the frame copied in, from port 0.
/// Out of line, so that its code (the baseline) does not change with what the
/// pipeline's code does to the compiler's choices in `main`.
#[inline(never)]
fn fill(pool: &mut BufPool, batch: &mut Batch, frames: &[Vec<u8>]) {
    batch.clear();
    for f in frames {
        let Some(p) = pool.alloc(Owner::Pipeline) else { break };
        let _ = pool.set_data(p, f);
        pool.meta_mut(p).in_port = PortId(0);
        let _ = batch.push(p);
    }
}

/// `parse_ct_1m_spread`'s flows: packet `first + k` of the run gets UDP source port
/// `first + k` (modulo 2^16) and no UDP checksum. The frames are IPv4 UDP with the
/// transport header at byte 34 (checked when the table is loaded).
#[inline(never)]
fn spread(pool: &mut BufPool, batch: &Batch, first: usize) {
    for k in 0..batch.len() {
        let port = spread_port(first + k);
        let l4 = usize::from(pool.meta(batch.pkt(k)).head()) + L4_AT;
        let b = pool.slot_mut(batch.pkt(k));
        if let Some(udp) = b.get_mut(l4..l4 + 8) {
            udp[..2].copy_from_slice(&port.to_be_bytes());
            udp[6..8].copy_from_slice(&[0, 0]);
        }
    }
}

/// Where the transport header of the bench's IPv4 frames starts (Ethernet, then a
/// 20-byte IPv4 header): udp64's UDP header, the TCP modes' TCP header.
const L4_AT: usize = 34;

fn spread_port(n: usize) -> u16 {
    u16::try_from(n % 65_536).unwrap_or(0)
}

/// Random UDP connections (established, assured, never expiring) until the table
/// holds 1,000,000.
fn fill_to_1m(c: &mut podplane::stage::conntrack::Conntrack) {
    let far = podplane::Instant::from_nanos(u64::MAX / 2);
    let mut x = 0x1234_5678_9abc_def0u64;
    while c.len().0 < 1_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let key = podplane::wire::flow::FlowKey::v4(
            Ipv4Addr::new(172, 16 | (b[0] & 15), b[1], b[2]),
            Ipv4Addr::new(10, 96, b[3], b[4]),
            17,
            u16::from_le_bytes([b[5], b[6]]),
            53,
        );
        c.preload(&key, far);
    }
}

/// The segments of the TCP modes' connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TcpStep {
    Syn,
    SynAck,
    Ack,
    /// 10 bytes of data (a 64-byte frame), ACK and PSH.
    Data,
}

/// Client sequence numbers start at 1000, the server's at 5000.
const TCP_ISN: (u32, u32) = (1000, 5000);

/// Segment `step` of TCP connection `k`: client 10.1.x.y, port 20000 + k mod 40000,
/// to 10.2.0.1:80 (the SYN-ACK the other way), with the options a Linux stack sends:
/// MSS, SACK permitted, timestamps and window scale 7 on the SYN and SYN-ACK,
/// timestamps (NOP, NOP, TS) on every other segment. The conntrack window tracker
/// then scales windows and looks for a SACK block in every segment's options.
fn tcp_frame(k: usize, step: TcpStep) -> Vec<u8> {
    use podplane::wire::tcp::TcpFlags;
    let kk = u16::try_from(k % 40_000).unwrap_or(0);
    let [hi, lo] = kk.to_be_bytes();
    let client = (Ipv4Addr::new(10, 1, hi, lo), 20_000 + kk);
    let server = (Ipv4Addr::new(10, 2, 0, 1), 80);
    let (c, s) = TCP_ISN;
    const SYN_OPTS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
    const TS_OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 1];
    let (from, to, flags, seq, ack, opts, data): (_, _, _, _, _, &[u8], &[u8]) = match step {
        TcpStep::Syn => (client, server, TcpFlags::SYN, c, 0, &SYN_OPTS, b""),
        TcpStep::SynAck => (server, client, TcpFlags::SYN | TcpFlags::ACK, s, c + 1, &SYN_OPTS, b""),
        TcpStep::Ack => (client, server, TcpFlags::ACK, c + 1, s + 1, &TS_OPTS, b""),
        TcpStep::Data => (client, server, TcpFlags::ACK | TcpFlags::PSH, c + 1, s + 1, &TS_OPTS, b"0123456789"),
    };
    // The options go in as payload; the data offset then counts them in the header
    // (the TCP checksum is not fixed: nothing verifies it).
    let mut f = podplane::testutil::tcp4_seq(from, to, flags, seq, ack, &[opts, data].concat());
    if let Some(doff) = f.get_mut(L4_AT + 12) {
        *doff = u8::try_from(((20 + opts.len()) / 4) << 4).unwrap_or(0x50);
    }
    f
}

/// The TCP modes' data segments in round `round` of the 64 batches: each round's
/// segment follows the last (sequence number + 10), as a sender's next would; the
/// checksum is not updated (nothing verifies it).
#[inline(never)]
fn next_segments(pool: &mut BufPool, batch: &Batch, round: usize) {
    let seq = TCP_ISN.0 + 1 + u32::try_from(round * 10).unwrap_or(0);
    for k in 0..batch.len() {
        if let Some(tcp) = pool.slot_mut(batch.pkt(k)).get_mut(L4_AT..L4_AT + 20) {
            tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        }
    }
}

/// `parse → conntrack → ct_commit → xconnect` with 1,000,000 connections: `flows`
/// TCP connections established by a real handshake through the pipeline (SYN,
/// SYN-ACK, ACK), then random UDP ones. Each data segment of the run is a hit that
/// runs the TCP window tracker.
fn conntrack_1m_tcp(flows: usize) -> Vec<Box<dyn Stage>> {
    use podplane::stage::conntrack::{CommitStage, Conntrack, ConntrackStage, CtConfig};
    let ct = Conntrack::shared(CtConfig { capacity: 1 << 20, ..CtConfig::default() });
    let stages = |ct: &podplane::stage::conntrack::SharedConntrack| -> Vec<Box<dyn Stage>> {
        let mut x = XconnectStage::new();
        let _ = x.connect(PortId(0), PortId(1));
        vec![
            Box::new(ParseStage::new()),
            Box::new(ConntrackStage::new(ct.clone())),
            Box::new(CommitStage::new(ct.clone())),
            Box::new(x),
        ]
    };
    let mut handshake = Pipeline::new(stages(&ct), PipelineConfig::default(), 1);
    let mut pool = BufPool::with_slots(256).expect("pool");
    let mut batch = Batch::new();
    for first in (0..flows).step_by(32) {
        for (step, port) in [(TcpStep::Syn, 0), (TcpStep::SynAck, 1), (TcpStep::Ack, 0)] {
            let frames: Vec<Vec<u8>> = (first..(first + 32).min(flows)).map(|k| tcp_frame(k, step)).collect();
            fill(&mut pool, &mut batch, &frames);
            for k in 0..batch.len() {
                pool.meta_mut(batch.pkt(k)).in_port = PortId(port);
            }
            let out: Vec<_> = handshake.process(&mut pool, podplane::Instant::ZERO, &mut batch).tx().collect();
            for (_, p) in out {
                let _ = pool.free(p);
            }
        }
    }
    if let Ok(mut c) = ct.lock() {
        let listed = c.list(podplane::Instant::ZERO);
        let established = listed.iter().filter(|l| l.proto == 6 && l.state == "ESTABLISHED" && l.assured).count();
        if c.len().0 != flows || established != flows {
            eprintln!(
                "parse_ct_1m_tcp: {established} of {} connections established after {flows} handshakes",
                c.len().0
            );
            std::process::exit(2);
        }
        fill_to_1m(&mut c);
    }
    stages(&ct)
}

/// The driver's transmit work: free the slots that came out.
#[inline(never)]
fn release(pool: &mut BufPool, pkts: &[podplane::buf::PktId]) {
    for &p in pkts {
        let _ = pool.free(p);
    }
}

/// `parse → conntrack → ct_commit → xconnect` with 1,000,000 connections in the
/// table: every flow of the test traffic among them (established, assured), plus
/// random others; each packet is a conntrack hit. With `snat_new`, `dnat` and `snat`
/// (masquerade of everything) join the pipeline, the test flows are not preloaded,
/// and each packet starts a new connection that is masqueraded. With `spread` > 0,
/// the flows preloaded are those [`spread`] gives the run's `spread` packets.
fn conntrack_1m(frames: &[Vec<u8>], snat_new: bool, spread: usize) -> Vec<Box<dyn Stage>> {
    use podplane::stage::conntrack::{CommitStage, Conntrack, ConntrackStage, CtConfig};
    let ct = Conntrack::shared(CtConfig { capacity: 1 << 20, ..CtConfig::default() });
    let far = podplane::Instant::from_nanos(u64::MAX / 2);
    if let Ok(mut c) = ct.lock() {
        let mut pool = BufPool::with_slots(1).expect("pool");
        for f in frames.iter().filter(|_| !snat_new) {
            let Some(p) = pool.alloc(Owner::Pipeline) else { break };
            let _ = pool.set_data(p, f);
            let (slot, meta) = pool.slot_and_meta_mut(p);
            if parse_one(slot, meta, ChecksumPolicy::default()).is_ok() {
                let m = pool.meta(p);
                let key = m.flow;
                c.preload(&key, far);
                if spread > 0 && (usize::from(m.l4) != usize::from(m.head()) + L4_AT || key.proto != 17 || key.v6) {
                    eprintln!("parse_ct_1m_spread: the frames must be IPv4 UDP (--mix udp64)");
                    std::process::exit(2);
                }
            }
            let _ = pool.free(p);
        }
        // Packet n of the run is frame n mod frames.len() with source port n.
        for n in 0..spread {
            let Some(f) = frames.get(n % frames.len().max(1)) else { break };
            let Some(p) = pool.alloc(Owner::Pipeline) else { break };
            let _ = pool.set_data(p, f);
            let (slot, meta) = pool.slot_and_meta_mut(p);
            if parse_one(slot, meta, ChecksumPolicy::default()).is_ok() {
                let key = podplane::wire::flow::FlowKey { src_port: spread_port(n), ..pool.meta(p).flow };
                c.preload(&key, far);
            }
            let _ = pool.free(p);
        }
        fill_to_1m(&mut c);
    }
    let mut x = XconnectStage::new();
    let _ = x.connect(PortId(0), PortId(1));
    if snat_new {
        use podplane::stage::NatStage;
        use podplane::stage::nat::{Masquerade, NatConfig};
        let everything = podplane::wire::cidr::Cidr { addr: Ipv4Addr::UNSPECIFIED, prefix: 0 };
        let nat = NatConfig {
            masquerade: Some(Masquerade { sources: vec![everything], except: vec![] }),
            fallback: Some(Ipv4Addr::new(192, 168, 0, 10)),
            ..NatConfig::default()
        };
        return vec![
            Box::new(ParseStage::new()),
            Box::new(ConntrackStage::new(ct.clone())),
            Box::new(NatStage::dnat(ct.clone(), nat.clone())),
            Box::new(NatStage::snat(ct.clone(), nat)),
            Box::new(CommitStage::new(ct)),
            Box::new(x),
        ];
    }
    vec![
        Box::new(ParseStage::new()),
        Box::new(ConntrackStage::new(ct.clone())),
        Box::new(CommitStage::new(ct)),
        Box::new(x),
    ]
}

/// Two ports on one bridge; the test frames go from port 0 to the MAC behind port 1.
fn bridge() -> BridgeStage {
    let ports = vec![BridgePort { port: PortId(0), hairpin: false }, BridgePort { port: PortId(1), hairpin: false }];
    let dom = BridgeDomain { name: "br".into(), ports, gateway_mac: None, static_fdb: vec![], bvi: None };
    match BridgeStage::new(&BridgeConfig { domains: vec![dom], ..BridgeConfig::default() }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bridge config: {e}");
            std::process::exit(2);
        }
    }
}

const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);

/// One million routes of lengths 16..=32 over the whole address space (with the
/// test's 10.244/16 among them), all via one gateway on port 1, plus a default.
fn route_1m() -> Vec<Box<dyn Stage>> {
    let ifs = vec![
        L3If::routed(PortId(0), EthernetAddress([2, 0, 0, 0, 0, 0x0b]), Ipv4Addr::new(10, 0, 0, 1), 24, 1500),
        L3If::routed(PortId(1), EthernetAddress([2, 0, 0, 0, 1, 1]), Ipv4Addr::new(192, 168, 0, 10), 24, 1500),
    ];
    let routes = million_routes();
    podplane::testutil::routed_stages(ifs, routes, vec![])
}

/// The bench's routes: a default, 10.244.0.0/16, and random prefixes of lengths
/// 16..=32 over the whole space, 1,000,001 in all (a harsh, not a BGP-like, mix).
/// The bench's million random routes (`podplane_benches::random_routes_1m`), with
/// the test traffic's 10.244/16 and a default, all via one gateway.
fn million_routes() -> Vec<RouteSpec> {
    let mut routes = Vec::with_capacity(1_000_002);
    routes.push(RouteSpec { dst: Ipv4Addr::UNSPECIFIED, len: 0, next_hop: NextHop::Via(GW, PortId(1)) });
    routes.push(RouteSpec { dst: Ipv4Addr::new(10, 244, 0, 0), len: 16, next_hop: NextHop::Via(GW, PortId(1)) });
    routes.extend(podplane_benches::random_routes_1m().into_iter().map(|(a, len)| RouteSpec {
        dst: Ipv4Addr::from(a),
        len,
        next_hop: NextHop::Via(GW, PortId(1)),
    }));
    routes
}

/// Memory of each LPM structure holding each million-route table.
/// A full IPv4 connection table of a million unassured connections, replaced one by
/// one `n` times (each insert early-drops one, as a SYN flood or steady churn at
/// capacity does): the slowest insert and the table's memory per connection before
/// and after. The index must not grow or stop the world (it did when sized for just
/// the handles: hashbrown's tombstones, `docs/design-deltas.md`).
#[allow(clippy::disallowed_methods)] // a wall-clock measurement: the slowest insert
fn ct_churn(n: u64) {
    use podplane::stage::conntrack::proto::ProtoState;
    use podplane::table::conntrack::{CtEntry, CtTable, Tuple};
    let capacity = 1usize << 20;
    let mut t: CtTable<Ipv4Addr, ProtoState> = CtTable::new(capacity, 7);
    let before = t.memory();
    let far = podplane::Instant::from_nanos(u64::MAX / 2);
    let now = podplane::Instant::from_nanos(1);
    let (mut worst, mut worst_at, mut refused) = (std::time::Duration::ZERO, 0, 0u64);
    for k in 0..(capacity as u64 + n) {
        let src = Ipv4Addr::from(0x0a00_0000 | u32::try_from(k >> 16).unwrap_or(0));
        let o = Tuple::new(src, Ipv4Addr::new(192, 168, 0, 1), (k & 0xffff) as u16, 53, 17, 0);
        let proto = ProtoState::Udp { stream_at: now };
        let e = CtEntry { original: o, reply: o.reversed(), expires: far, status: 0, serial: 0, proto };
        let s = std::time::Instant::now();
        refused += u64::from(t.insert(e, now, |_| false).is_err());
        // A batch of 32 new connections, then the commit stage's sweep (which also
        // rebuilds an index shard full of tombstones).
        if k % 32 == 31 {
            t.sweep(now, 8);
        }
        if s.elapsed() > worst {
            (worst, worst_at) = (s.elapsed(), k);
        }
    }
    let per = |m: usize| m as f64 / capacity as f64;
    println!(
        "ct_churn: {n} replacements at a full table of {capacity}: slowest insert (with its sweep) {worst:?} (insert {worst_at}), {refused} refused, {} index shards rebuilt, memory {:.1} -> {:.1} bytes per connection",
        t.index_rebuilds(),
        per(before),
        per(t.memory())
    );
}

fn lpm_memory() {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    for (name, table) in
        [("random", podplane_benches::random_routes_1m()), ("bgp-like", podplane_benches::bgp_like_routes_1m())]
    {
        let mut old: podplane::table::lpm::Lpm4<u32> = podplane::table::lpm::Lpm4::new();
        let mut pop: podplane::table::poptrie::Poptrie4<u32> = podplane::table::poptrie::Poptrie4::new();
        for (i, (a, l)) in table.iter().enumerate() {
            let v = u32::try_from(i % 64).unwrap_or(0);
            old.insert(*a, *l, v);
            pop.insert(*a, *l, v);
        }
        pop.compact();
        let (fib, rib) = pop.memory_bytes();
        let (nodes, leaves, _) = pop.shape();
        println!(
            "{name} 1M table ({} distinct prefixes): Lpm4 {:.1} MiB; Poptrie4 lookup structure {:.1} MiB ({nodes} nodes, {leaves} leaves) + route store {:.1} MiB",
            pop.len(),
            mib(old.memory_bytes()),
            mib(fib),
            mib(rib)
        );
    }
}

const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xff, 0, 0, 0, 0, 0, 1);
const UP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xff, 0, 0, 0, 0, 0, 10);
const UP_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 1]);
const GW_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 9, 9]);
const POD_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x0b]);

/// 100,000 IPv6 routes of lengths 32..=64 (allocation and subnet sizes) in 2000::/4,
/// via the gateway on port 1, plus a default.
fn route6_100k() -> Vec<Box<dyn Stage>> {
    let ifs = vec![
        L3If::routed(PortId(0), POD_MAC, Ipv4Addr::new(10, 0, 0, 1), 24, 1500)
            .with_ip6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1), 64),
        L3If::routed(PortId(1), UP_MAC, Ipv4Addr::new(192, 168, 0, 10), 24, 1500).with_ip6(UP6, 64),
    ];
    let mut routes6 = vec![RouteSpec6 { dst: Ipv6Addr::UNSPECIFIED, len: 0, next_hop: NextHop6::Via(GW6, PortId(1)) }];
    routes6.extend(podplane_benches::random_routes6_100k().into_iter().map(|(a, len)| RouteSpec6 {
        dst: Ipv6Addr::from(a),
        len,
        next_hop: NextHop6::Via(GW6, PortId(1)),
    }));
    podplane::testutil::routed_stages(ifs, vec![], routes6)
}

/// A 64-byte UDP frame over IPv6 from a pod to a random address in 2000::/4, to the
/// node's pod-side MAC, with a valid checksum.
fn udp6_frame(x: &mut u64) -> Vec<u8> {
    use podplane::wire::checksum::pseudo_v6;
    let src = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
    let dst = Ipv6Addr::from(
        (0x2u128 << 124) | (u128::from(podplane_benches::lcg(x)) << 60 >> 4) | u128::from(podplane_benches::lcg(x)),
    );
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&POD_MAC.0);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x86, 0xdd, 0x60, 0, 0, 0, 0, 10, 17, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let mut u = [0x9c, 0x40, 0x00, 0x35, 0, 10, 0, 0, 0xab, 0xcd];
    let mut sum = pseudo_v6(src, dst, 17, 10);
    sum.add_bytes(&u);
    let c = !sum.fold();
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    f.extend_from_slice(&u);
    f
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
const PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 20);
const VTEP_LOCAL: EthernetAddress = EthernetAddress([0x0e, 0, 192, 168, 0, 10]);
const VTEP_PEER: EthernetAddress = EthernetAddress([0x0e, 0, 192, 168, 0, 20]);
const TUNNEL: PortId = PortId(9);

/// A Flannel-style VXLAN overlay for the node at `local` with one peer.
fn vxlan_config(
    local: Ipv4Addr,
    vtep: EthernetAddress,
    peer: Ipv4Addr,
    peer_vtep: EthernetAddress,
) -> podplane::stage::overlay::OverlayConfig {
    use podplane::stage::overlay::{Encap, OverlayConfig, OverlayPeer};
    OverlayConfig {
        encap: Encap::flannel(),
        tunnel_port: TUNNEL,
        vtep_mac: vtep,
        local_ip: local,
        local_ip6: None,
        // The sender's uplink is port 1, the receiver's port 0 (see `route_small`).
        uplinks: vec![if local == PEER { PortId(0) } else { PortId(1) }],
        ttl: 64,
        dont_fragment: false,
        peers: vec![OverlayPeer {
            node_ip: peer,
            underlay6: None,
            vtep_mac: peer_vtep,
            next_hop: peer,
            port: PortId(1),
        }],
    }
}

/// `parse → route → arp → egress` with a default and 10.244.0.0/16, via the gateway on
/// port 1; with an overlay, 10.244.0.0/16 goes into the tunnel to its peer instead and
/// the overlay stages join (decap after parse, encap after route).
fn route_small(overlay: Option<podplane::stage::overlay::OverlayConfig>) -> Vec<Box<dyn Stage>> {
    use podplane::stage::arp::{ArpConfig, LocalAddr};
    use podplane::stage::route::RouteConfig;
    use podplane::stage::{ArpStage, DecapStage, EncapStage, RouteStage};
    // The frames arrive on port 0: the pod side when sending, the uplink when
    // receiving (`parse_decap_route`, whose overlay is at `PEER`).
    let receiving = overlay.as_ref().is_some_and(|o| o.local_ip == PEER);
    let (pod_port, up_port) = if receiving { (PortId(1), PortId(0)) } else { (PortId(0), PortId(1)) };
    let local = overlay.as_ref().map_or(LOCAL, |o| o.local_ip);
    let mut ifs = vec![
        L3If::routed(pod_port, EthernetAddress([2, 0, 0, 0, 0, 0x0b]), Ipv4Addr::new(10, 0, 0, 1), 24, 1500),
        L3If::routed(up_port, EthernetAddress([2, 0, 0, 0, 1, 1]), local, 24, 1500),
    ];
    let mut routes = vec![RouteSpec { dst: Ipv4Addr::UNSPECIFIED, len: 0, next_hop: NextHop::Via(GW, PortId(1)) }];
    let pods = Ipv4Addr::new(10, 244, 0, 0);
    match &overlay {
        Some(o) if o.local_ip == LOCAL => {
            ifs.push(L3If::routed(TUNNEL, o.vtep_mac, Ipv4Addr::new(10, 245, 0, 0), 32, 1450));
            routes.push(RouteSpec { dst: pods, len: 16, next_hop: NextHop::Via(PEER, TUNNEL) });
        }
        Some(o) => {
            // The receiving side: decapsulated packets for 10.244/16 leave on port 0.
            ifs.push(L3If::routed(TUNNEL, o.vtep_mac, Ipv4Addr::new(10, 246, 0, 0), 32, 1450));
            routes.push(RouteSpec { dst: pods, len: 16, next_hop: NextHop::Via(Ipv4Addr::new(10, 0, 0, 2), pod_port) });
        }
        None => routes.push(RouteSpec { dst: pods, len: 16, next_hop: NextHop::Via(GW, PortId(1)) }),
    }
    let arp = ArpConfig {
        local: ifs.iter().map(|i| LocalAddr { ip: i.ip, mac: i.mac, ports: vec![i.port] }).collect(),
        proxy: vec![],
        interfaces: ifs.clone(),
    };
    let route = RouteStage::new(&RouteConfig { interfaces: ifs, routes, ..RouteConfig::default() });
    let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(ParseStage::new())];
    let decap = overlay.as_ref().filter(|o| o.local_ip == PEER).cloned();
    let encap = overlay.filter(|o| o.local_ip == LOCAL);
    if let Some(o) = decap {
        stages.push(Box::new(DecapStage::new(o)));
    }
    stages.push(Box::new(route));
    if let Some(o) = encap {
        stages.push(Box::new(EncapStage::new(o)));
    }
    stages.push(Box::new(ArpStage::new(arp)));
    stages.push(Box::new(EgressStage));
    stages
}

/// The number of services of a `svc_est_N` / `svc_new_N` mode (N = 10, 1k, 100k).
fn service_count(mode: &str) -> Option<usize> {
    let n = mode
        .strip_prefix("svc_est_")
        .or_else(|| mode.strip_prefix("svc_new_"))
        .or_else(|| mode.strip_prefix("svc_slow_"))?;
    match n {
        "10" => Some(10),
        "1k" => Some(1000),
        "100k" => Some(100_000),
        _ => None,
    }
}

/// Frame `k` of the service modes: a 64-byte UDP datagram from a pod on port 0
/// (10.0.0.2, its own source port) to the ClusterIP of service `k % n`, port 53.
fn service_frame(k: usize, n: usize) -> Vec<u8> {
    let svc = u32::try_from(k % n).unwrap_or(0);
    let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + svc);
    let sport = 10_000 + u16::try_from(k % 50_000).unwrap_or(0);
    let mut f = podplane::testutil::udp4(Ipv4Addr::new(10, 0, 0, 2), vip, sport, 53, &[0u8; 64 - 42]);
    f[..6].copy_from_slice(&POD_MAC.0);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f
}

/// `fastpath → parse → source_check → decap → fastpath_tunnel → conntrack → dnat →
/// route → snat → ct_commit → encap → arp → egress → offload`, the node path of a pod
/// calling a ClusterIP whose endpoints are behind a VXLAN peer (`NodeSetup::worker_stages`
/// on a VXLAN node, without a bridge), with `n` services of 10 endpoints each.
fn services_path(n: usize, fast_path: bool) -> (Vec<Box<dyn Stage>>, podplane::stage::conntrack::SharedConntrack) {
    use podplane::stage::conntrack::{CommitStage, Conntrack, ConntrackStage, CtConfig};
    use podplane::stage::nat::NatConfig;
    use podplane::stage::{DecapStage, NatStage, SourceCheckStage};
    let ct = Conntrack::shared(CtConfig { capacity: 1 << 20, ..CtConfig::default() });
    let table = podplane_benches::service_table(&podplane_benches::service_ports(n, 10));
    let overlay = vxlan_config(LOCAL, VTEP_LOCAL, PEER, VTEP_PEER);
    let mut stages = route_small(Some(overlay.clone()));
    let decap = Box::new(DecapStage::new(overlay.clone()));
    // [parse, route, encap, arp, egress] -> with the source check and decap after
    // parse, conntrack and NAT around routing, and the flow fast path as the node
    // path has it.
    stages.insert(1, Box::new(SourceCheckStage::new(&[(PortId(0), Ipv4Addr::new(10, 0, 0, 2))])));
    stages.insert(2, decap);
    stages.insert(3, Box::new(ConntrackStage::new(ct.clone())));
    stages.insert(4, Box::new(NatStage::dnat(ct.clone(), NatConfig::default()).with_services(table)));
    stages.insert(6, Box::new(NatStage::snat(ct.clone(), NatConfig::default())));
    stages.insert(7, Box::new(CommitStage::new(ct.clone())));
    let stages = if fast_path { with_fast_path(stages, &ct, Some(&overlay), 3) } else { stages };
    (stages, ct)
}

/// `stages` (parse, route, [encap,] arp, egress) as a node runs them: conntrack
/// around routing, decap with VXLAN, and the flow fast path, which replays
/// established flows (no source check: the bench's traffic comes from many pod
/// addresses on one port).
fn node_path(stages: Vec<Box<dyn Stage>>, vxlan: bool) -> Vec<Box<dyn Stage>> {
    use podplane::stage::conntrack::{CommitStage, Conntrack, ConntrackStage, CtConfig};
    let ct = Conntrack::shared(CtConfig { capacity: 1 << 20, ..CtConfig::default() });
    let mut stages = stages;
    stages.insert(1, Box::new(ConntrackStage::new(ct.clone())));
    stages.insert(3, Box::new(CommitStage::new(ct.clone())));
    if vxlan {
        let overlay = vxlan_config(LOCAL, VTEP_LOCAL, PEER, VTEP_PEER);
        stages.insert(1, Box::new(podplane::stage::DecapStage::new(overlay.clone())));
        with_fast_path(stages, &ct, Some(&overlay), 2)
    } else {
        with_fast_path(stages, &ct, None, 0)
    }
}

/// The flow fast path added to `stages` as `NodeSetup::worker_stages` adds it: first,
/// ahead of parse; with an `overlay` a second one at `after_decap`.
fn with_fast_path(
    mut stages: Vec<Box<dyn Stage>>,
    ct: &podplane::stage::conntrack::SharedConntrack,
    overlay: Option<&podplane::stage::overlay::OverlayConfig>,
    after_decap: usize,
) -> Vec<Box<dyn Stage>> {
    use podplane::stage::fastpath::{DEFAULT_CAPACITY, FlowCache};
    use podplane::stage::{FastPathStage, OffloadStage};
    let flows = FlowCache::shared(DEFAULT_CAPACITY);
    let first = FastPathStage::new(flows.clone(), ct.clone()).before_parse();
    match overlay {
        Some(o) => {
            stages.insert(after_decap, Box::new(FastPathStage::new(flows.clone(), ct.clone()).tunnel(o)));
            stages.insert(0, Box::new(first.tunnel(o)));
        }
        None => stages.insert(0, Box::new(first)),
    }
    stages.push(Box::new(OffloadStage::new(flows, ct.clone())));
    stages
}

/// Memory of the service table at 10, 1k and 100k services with 10 endpoints each,
/// split into what a service costs (measured with no endpoints) and what each
/// endpoint adds.
fn svc_memory() {
    for n in [10, 1000, 100_000] {
        let bare = podplane_benches::service_table(&podplane_benches::service_ports(n, 0)).memory();
        let full = podplane_benches::service_table(&podplane_benches::service_ports(n, 10)).memory();
        println!(
            "service table: {n} services, {} endpoints: {:.1} MiB; {} B per service, {} B per endpoint",
            n * 10,
            full as f64 / f64::from(1u32 << 20),
            bare / n,
            (full - bare) / (n * 10)
        );
    }
}

/// A traffic frame as the peer sends it over VXLAN to [`PEER`]... the node under test
/// (the receiving side of `parse_decap_route` is at `PEER`, its peer at `LOCAL`).
fn vxlan_wrap(inner: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(inner.len() + 50);
    f.extend_from_slice(&[2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 9, 9, 0x08, 0x00]);
    let total = u16::try_from(inner.len() + 36).unwrap_or(u16::MAX).to_be_bytes();
    let mut ip = [0x45, 0, total[0], total[1], 0, 0, 0, 0, 64, 17, 0, 0, 192, 168, 0, 10, 192, 168, 0, 20];
    let c = podplane::wire::checksum::checksum(&ip).to_be_bytes();
    ip[10] = c[0];
    ip[11] = c[1];
    f.extend_from_slice(&ip);
    let ulen = u16::try_from(inner.len() + 16).unwrap_or(u16::MAX).to_be_bytes();
    f.extend_from_slice(&[0x9c, 0x40, 0x21, 0x18, ulen[0], ulen[1], 0, 0]);
    f.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]);
    f.extend_from_slice(&VTEP_PEER.0);
    f.extend_from_slice(&VTEP_LOCAL.0);
    f.extend_from_slice(inner.get(12..).unwrap_or(&[]));
    f
}

/// The destination pods of `parse_bridge_pairs`.
const PAIRS: usize = 4;

/// Teach the bridge the destination MAC, or the neighbour table the gateway's MAC.
fn warm_up(pipeline: &mut Pipeline, pool: &mut BufPool, mode: &str) {
    if mode == "parse_bridge_pairs" {
        // Each destination pod, from port 1.
        for pair in 0..PAIRS {
            let mut f = podplane::testutil::udp4_sized(64);
            f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x0c]);
            f[6..12].copy_from_slice(&[2, 0, 0, 0, 1, u8::try_from(pair).unwrap_or(0)]);
            warm_with(pipeline, pool, &f);
        }
        return;
    }
    let frame = match mode {
        // A frame from the test traffic's destination MAC, on port 1.
        "parse_bridge" => {
            let mut f = podplane::testutil::udp4_sized(64);
            f.copy_within(..6, 6);
            f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x0c]);
            f
        }
        // An ARP reply from the peer node to the uplink.
        m if m == "parse_route_vxlan" || m == "node_route_vxlan" || m.starts_with("svc_") => {
            let mut f = podplane::testutil::arp_request(PEER, LOCAL);
            f[21] = 2;
            f[..6].copy_from_slice(&[2, 0, 0, 0, 1, 1]);
            f
        }
        // An ARP reply from the pod-side neighbour 10.0.0.2 (on port 1 there).
        "parse_decap_route" => {
            let mut f = podplane::testutil::arp_request(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
            f[21] = 2;
            f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x0b]);
            f
        }
        // An ARP reply from the gateway to the uplink.
        "parse_route1m" | "parse_route" | "node_route" | "node_route1m" => {
            let mut f = podplane::testutil::arp_request(GW, Ipv4Addr::new(192, 168, 0, 10));
            f[21] = 2;
            f[..6].copy_from_slice(&[2, 0, 0, 0, 1, 1]);
            f
        }
        // A neighbour advertisement from the IPv6 gateway to the uplink.
        "parse_route6_100k" => {
            let (group, _) = nd::solicited_node(GW6);
            let ns = nd::NdMsg { kind: nd::NS, src: UP6, dst: group, target: GW6, lladdr: Some(UP_MAC), flags: 0 };
            let mut f = vec![0u8; nd::frame_len(true)];
            let _ = nd::write_advert(&mut f, &ns, GW_MAC, UP_MAC);
            f
        }
        _ => return,
    };
    warm_with(pipeline, pool, &frame);
}

/// Run one frame through the pipeline from port 1 and free what comes out.
fn warm_with(pipeline: &mut Pipeline, pool: &mut BufPool, frame: &[u8]) {
    let Some(p) = pool.alloc(Owner::Pipeline) else { return };
    let _ = pool.set_data(p, frame);
    pool.meta_mut(p).in_port = PortId(1);
    let mut b = Batch::new();
    let _ = b.push(p);
    let out = pipeline.process(pool, podplane::Instant::ZERO, &mut b);
    let sent: Vec<_> = out.tx().map(|(_, p)| p).collect();
    for p in sent {
        let _ = pool.free(p);
    }
}
