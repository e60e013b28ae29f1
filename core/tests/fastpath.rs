//! The flow fast path is exact: the same batches through a node with it and through
//! the same node without it (`fastPath: false`) leave byte-identical frames on the
//! same ports and the same connection tables, while most packets of steady flows
//! take it. The scripts cover what
//! must end a replay: a next hop's MAC changing, a connection flushed by an endpoint
//! change, TTL 1, a packet over the path MTU, another TOS, a connection expiring.
#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::buf::BufPool;
use podplane::config::services::ServiceStore;
use podplane::config::{Dataplane, Source, load};
use podplane::pipeline::StageEvent;
use podplane::testutil::{arp_request, run, udp4};

const NODE_ROUTED: &str = "\
name: worker-1
addresses: [192.168.0.11]
ports:
  - {name: eth0, kind: pcap, role: uplink, mac: '02:00:c0:a8:00:0b', address: 192.168.0.11/24}
  - {name: pod-a, kind: pcap, role: pod, ip: 10.244.1.2}
routes:
  - {dst: 0.0.0.0/0, via: 192.168.0.1}
conntrack: {max: 4096}
";

const OBJECTS: &str = "\
apiVersion: v1
kind: Node
metadata: {name: worker-1}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.11}]}
---
apiVersion: v1
kind: Node
metadata:
  name: worker-2
  annotations: {flannel.alpha.coreos.com/backend-data: '{\"VNI\":1,\"VtepMAC\":\"aa:bb:cc:00:00:02\"}', flannel.alpha.coreos.com/public-ip: 192.168.0.12}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.12}]}
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: kube-system}
spec: {clusterIP: 10.96.0.10, ports: [{name: dns, port: 53, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.80, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - {addresses: [10.244.2.7], nodeName: worker-2}
";

fn slice(eps: &[&str]) -> String {
    let eps: String = eps.iter().map(|a| format!("  - {{addresses: ['{a}'], nodeName: worker-2}}\n")).collect();
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: dns-abc, namespace: kube-system, labels: {{kubernetes.io/service-name: dns}}}}\naddressType: IPv4\nports: [{{name: dns, port: 5353, protocol: UDP}}]\nendpoints:\n{eps}"
    )
}

const CNI0: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 1];

/// A UDP frame from pod-a (port 1) to `dst:dport` from `sport`, to cni0's MAC.
fn from_pod(dst: Ipv4Addr, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut f = udp4(Ipv4Addr::new(10, 244, 1, 2), dst, sport, dport, &vec![0x5a; len]);
    f[..6].copy_from_slice(&CNI0);
    f[6..12].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 2]);
    f
}

/// A UDP reply from backend `from:5353` to pod-a's `dport`, as it reaches the node's
/// uplink (see [`from_peer`]).
fn reply(from: Ipv4Addr, dport: u16, vxlan: bool) -> Vec<u8> {
    from_peer(udp4(from, Ipv4Addr::new(10, 244, 1, 2), 5353, dport, b"answer"), vxlan)
}

/// A frame from the backends' side as it reaches the node's uplink (port 0): routed
/// from the peer, or inside VXLAN from its VTEP.
fn from_peer(mut inner: Vec<u8>, vxlan: bool) -> Vec<u8> {
    if !vxlan {
        inner[..6].copy_from_slice(&[0x02, 0x00, 192, 168, 0, 11]);
        inner[6..12].copy_from_slice(&[2, 0, 192, 168, 0, 12]);
        return inner;
    }
    inner[..6].copy_from_slice(&[0x0e, 0x00, 192, 168, 0, 11]);
    inner[6..12].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0, 0, 2]);
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    payload.extend_from_slice(&inner);
    let mut f = udp4(Ipv4Addr::new(192, 168, 0, 12), Ipv4Addr::new(192, 168, 0, 11), 40000, 8472, &payload);
    f[..6].copy_from_slice(&[0x02, 0x00, 192, 168, 0, 11]);
    f[6..12].copy_from_slice(&[2, 0, 192, 168, 0, 12]);
    // No outer UDP checksum, as Linux sends VXLAN.
    f[40] = 0;
    f[41] = 0;
    f
}

/// A TCP connection from pod-a to the `web` ClusterIP, played segment by segment:
/// handshake, data both ways (now and then a segment out of the window), FIN, and
/// again from the start on a new port.
struct TcpFlow {
    sport: u16,
    /// Next sequence numbers of client and server, and the step reached.
    c: u32,
    s: u32,
    step: u32,
}

impl TcpFlow {
    fn next(&mut self, vxlan: bool, pick: u64) -> (u16, Vec<u8>) {
        use podplane::testutil::tcp4_seq;
        use podplane::wire::tcp::TcpFlags as F;
        let pod = (Ipv4Addr::new(10, 244, 1, 2), self.sport);
        let svc = (Ipv4Addr::new(10, 96, 0, 80), 80);
        let backend = (Ipv4Addr::new(10, 244, 2, 7), 8080);
        let to_gw = |mut f: Vec<u8>| {
            f[..6].copy_from_slice(&CNI0);
            f[6..12].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 2]);
            (1, f)
        };
        self.step += 1;
        match self.step {
            1 => to_gw(tcp4_seq(pod, svc, F::SYN, self.c - 1, 0, b"")),
            2 => (0, from_peer(tcp4_seq(backend, pod, F::SYN | F::ACK, self.s - 1, self.c, b""), vxlan)),
            3 => to_gw(tcp4_seq(pod, svc, F::ACK, self.c, self.s, b"")),
            60 => to_gw(tcp4_seq(pod, svc, F::FIN | F::ACK, self.c, self.s, b"")),
            61 => (0, from_peer(tcp4_seq(backend, pod, F::FIN | F::ACK, self.s, self.c + 1, b""), vxlan)),
            62 => {
                let f = to_gw(tcp4_seq(pod, svc, F::ACK, self.c + 1, self.s + 1, b""));
                *self = TcpFlow {
                    sport: self.sport.wrapping_add(7),
                    c: self.c.wrapping_add(100_000),
                    s: self.s ^ 0x5555,
                    step: 0,
                };
                f
            }
            _ if pick.is_multiple_of(9) => {
                // Far outside the window: INVALID, dropped by both.
                to_gw(tcp4_seq(pod, svc, F::ACK | F::PSH, self.c.wrapping_add(3_000_000), self.s, b"stale"))
            }
            _ if pick.is_multiple_of(2) => {
                let data = vec![0x61; 10 + usize::try_from(pick % 300).unwrap()];
                let f = to_gw(tcp4_seq(pod, svc, F::ACK | F::PSH, self.c, self.s, &data));
                self.c = self.c.wrapping_add(u32::try_from(data.len()).unwrap());
                f
            }
            _ => {
                let data = vec![0x62; 20 + usize::try_from(pick % 500).unwrap()];
                let f = (0, from_peer(tcp4_seq(backend, pod, F::ACK | F::PSH, self.s, self.c, &data), vxlan));
                self.s = self.s.wrapping_add(u32::try_from(data.len()).unwrap());
                f
            }
        }
    }
}

/// An ARP reply from `ip` with `mac` to the node's uplink (port 0).
fn arp_reply(ip: [u8; 4], mac: [u8; 6]) -> Vec<u8> {
    let mut f = arp_request(Ipv4Addr::from(ip), Ipv4Addr::new(192, 168, 0, 11));
    f[..6].copy_from_slice(&[0x02, 0x00, 192, 168, 0, 11]);
    f[6..12].copy_from_slice(&mac);
    f[21] = 2;
    f[22..28].copy_from_slice(&mac);
    f
}

/// Set an IPv4 header byte of a frame and fix the header checksum.
fn set_ip(mut f: Vec<u8>, at: usize, v: u8) -> Vec<u8> {
    f[14 + at] = v;
    f[24] = 0;
    f[25] = 0;
    let c = podplane::wire::checksum::checksum(&f[14..34]).to_be_bytes();
    f[24] = c[0];
    f[25] = c[1];
    f
}

struct Node {
    dp: Dataplane,
    pool: BufPool,
}

fn node(text: &str, eps: &[&str]) -> Node {
    let objects = format!("{OBJECTS}{}", slice(eps));
    let objs = [Source { name: "objects.yaml", text: &objects }];
    let s = match load(Source { name: "node.yaml", text }, &objs) {
        Ok(s) => s,
        Err(e) => panic!("unexpected errors:\n{e}"),
    };
    Node { dp: Dataplane::new(s, 7), pool: BufPool::with_slots(1024).unwrap() }
}

/// What an agent sends when the DNS slice changes to `eps`.
fn change_endpoints(n: &mut Node, text: &str, eps: &[&str]) {
    let view = node(text, eps).dp.setup().node_view.clone();
    let mut store = ServiceStore::new(view);
    for o in
        podplane::config::objects::parse(&Source { name: "api", text: &format!("{OBJECTS}{}", slice(&["10.244.2.5"])) })
            .unwrap()
    {
        match o.object {
            podplane::config::objects::Object::Service(svc) => drop(store.apply_service(*svc).unwrap()),
            podplane::config::objects::Object::EndpointSlice(sl) => drop(store.apply_slice(*sl).unwrap()),
            _ => {}
        }
    }
    let new = podplane::config::objects::parse(&Source { name: "api", text: &slice(eps) }).unwrap();
    for o in new {
        if let podplane::config::objects::Object::EndpointSlice(sl) = o.object {
            let changes = store.apply_slice(*sl).unwrap();
            n.dp.apply_ports(&changes);
        }
    }
}

/// Run one batch; with `partial`, the pods' TCP and UDP frames arrive as a TAP with
/// offloads gives them (vnet_hdr NEEDS_CSUM): the transport checksum field holds the
/// pseudo-header sum and the metadata says so.
fn run_batch(
    n: &mut Node,
    now: podplane::Instant,
    frames: &[(u16, Vec<u8>)],
    partial: bool,
) -> podplane::testutil::Run {
    if !partial {
        return run(n.dp.pipeline(), &mut n.pool, now, frames);
    }
    use podplane::buf::{Batch, CsumState, Owner, PortId};
    let mut batch = Batch::new();
    for (port, f) in frames {
        let mut f = f.clone();
        let mut csum = CsumState::Unverified;
        if *port == 1 && f.len() >= 54 && f[12..14] == [8, 0] && f[14] == 0x45 && matches!(f[23], 6 | 17) {
            let at = if f[23] == 6 { 16 } else { 6 };
            let len = u16::from_be_bytes([f[16], f[17]]) - 20;
            let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
            let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
            let sum = podplane::wire::checksum::pseudo_v4(src, dst, f[23], len).fold();
            f[34 + at..36 + at].copy_from_slice(&sum.to_be_bytes());
            csum = CsumState::Partial { start: 34, offset: u16::try_from(at).unwrap() };
        }
        let p = n.pool.alloc(Owner::Pipeline).unwrap();
        n.pool.set_data(p, &f).unwrap();
        n.pool.meta_mut(p).in_port = PortId(*port);
        n.pool.meta_mut(p).csum = csum;
        batch.push(p).unwrap();
    }
    let out = n.dp.pipeline().process(&mut n.pool, now, &mut batch);
    let tx: Vec<(PortId, Vec<u8>)> = out.tx().map(|(p, k)| (p, n.pool.data(k).to_vec())).collect();
    let freed: Vec<_> = out.tx().map(|(_, k)| k).chain(out.host().iter().copied()).collect();
    let host = out.host().len();
    let disp = (0..batch.len()).map(|i| batch.disposition(i)).collect();
    for k in freed {
        n.pool.free(k).unwrap();
    }
    podplane::testutil::Run { disp, tx, host }
}

/// TCP segments the node's fast path replayed.
fn tcp_hits(n: &mut Node) -> u64 {
    let stage = n.dp.pipeline().stage::<podplane::stage::FastPathStage>().unwrap();
    let flows = stage.flows();
    flows.lock().unwrap().tcp_replayed()
}

/// The node's connections as `conntrack -L` lists them, then as stored.
fn connections(n: &mut Node, now: podplane::Instant) -> Vec<String> {
    let ct = n.dp.conntrack().unwrap();
    let ct = ct.lock().unwrap();
    // The listing, and every entry whole (TCP window tracking included).
    let list = ct.list(now);
    let entries = ct.v4().iter(now).map(|(id, e)| format!("{id:?} {e:?}"));
    list.iter().map(ToString::to_string).chain(entries).collect()
}

/// Run the script through the node with and without the fast path; every batch's
/// frames must be equal. Returns the fast-path hits and flows learned.
fn differential(text: &str, seed: u64, partial: bool) -> (u64, u64) {
    let vxlan = text.contains("vxlan");
    let slow_text = format!("{text}fastPath: false\n");
    let (mut fast, mut slow) =
        (node(text, &["10.244.2.5", "10.244.2.6"]), node(&slow_text, &["10.244.2.5", "10.244.2.6"]));
    assert!(fast.dp.pipeline().stage_index("fastpath").is_some());
    assert!(slow.dp.pipeline().stage_index("fastpath").is_none());
    let svc = Ipv4Addr::new(10, 96, 0, 10);
    let pod_b = Ipv4Addr::new(10, 244, 2, 9);
    let mut x = seed;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut t = 1_000_000_000u64;
    let mut tcp: Vec<TcpFlow> =
        (0..3).map(|k| TcpFlow { sport: 50000 + k * 100, c: 1000 + u32::from(k), s: 900_000, step: 0 }).collect();
    for round in 0..400u32 {
        let mut frames: Vec<(u16, Vec<u8>)> = Vec::new();
        if round == 0 {
            frames.push((0, arp_reply([192, 168, 0, 1], [2, 0, 192, 168, 0, 1])));
            frames.push((0, arp_reply([192, 168, 0, 12], [2, 0, 192, 168, 0, 12])));
            // pod-a asks for its gateway: the node learns pod-a's MAC from it, and
            // the backends' answers reach pod-a through cni0.
            let mut ask = arp_request(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 1));
            ask[6..12].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 2]);
            ask[22..28].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 2]);
            frames.push((1, ask));
        }
        // The peer's MAC changes (a re-created VM) half way, and back.
        if round == 150 || round == 250 {
            let mac = if round == 150 { [2, 0, 0xee, 0, 0, 12] } else { [2, 0, 192, 168, 0, 12] };
            frames.push((0, arp_reply([192, 168, 0, 12], mac)));
        }
        for _ in 0..(1 + rnd(24)) {
            let sport = 40000 + u16::try_from(rnd(6)).unwrap();
            let f = match rnd(40) {
                0 => set_ip(from_pod(svc, sport, 53, 20), 8, 1),    // TTL 1
                1 => from_pod(svc, sport, 53, 1500),                // over the MTU (DF)
                2 => set_ip(from_pod(svc, sport, 53, 20), 1, 0x10), // another TOS
                3 => set_ip(from_pod(svc, sport, 53, 1500), 6, 0),  // over the MTU, no DF
                4..=13 => from_pod(pod_b, sport, 7, usize::try_from(rnd(100)).unwrap()), // pod to pod
                18 => {
                    // A bad IPv4 header checksum on a cached flow: parse drops it.
                    let mut f = from_pod(svc, sport, 53, 20);
                    f[24] ^= 0x40;
                    f
                }
                19 => {
                    // Ethernet padding after the IP packet: trimmed on the way.
                    let mut f = from_pod(svc, sport, 53, 4);
                    f.extend_from_slice(&[0xee; 12]);
                    f
                }
                // The backends answer (one of them holds the connection), from 3 s on:
                // first replies come late, so the packet after one assures its
                // connection, which a replay overtaking the reply would not.
                14..=17 if round >= 60 => {
                    let b = if rnd(2) == 0 { Ipv4Addr::new(10, 244, 2, 5) } else { Ipv4Addr::new(10, 244, 2, 6) };
                    frames.push((0, reply(b, sport, vxlan)));
                    continue;
                }
                20 => {
                    // No DF, with an ID: a tunnel's outer ID follows the inner one.
                    let f = set_ip(from_pod(svc, sport, 53, 30), 6, 0);
                    set_ip(f, 5, u8::try_from(rnd(256)).unwrap())
                }
                // With an ID, as a pod's kernel numbers its packets.
                _ => {
                    let f = from_pod(svc, sport, 53, usize::try_from(rnd(200)).unwrap());
                    let f = set_ip(f, 4, u8::try_from(rnd(256)).unwrap());
                    set_ip(f, 5, u8::try_from(rnd(256)).unwrap())
                }
            };
            frames.push((1, f));
        }
        // TCP segments of three connections, in order within each.
        for _ in 0..(1 + rnd(6)) {
            let k = usize::try_from(rnd(3)).unwrap();
            let pick = rnd(1 << 20);
            frames.push(tcp[k].next(vxlan, pick));
        }
        // An endpoint removed (its UDP connections flushed), later added back.
        if round == 100 {
            change_endpoints(&mut fast, text, &["10.244.2.6"]);
            change_endpoints(&mut slow, &slow_text, &["10.244.2.6"]);
        }
        let now = podplane::Instant::from_nanos(t);
        // A driver reads the table sizes between batches (`podplane run` at every
        // publish): reading must not empty the fast path.
        assert!(fast.dp.table_sizes().iter().any(|&(name, _)| name == "neighbours"));
        let a = run_batch(&mut fast, now, &frames, partial);
        let b = run_batch(&mut slow, now, &frames, partial);
        assert_eq!(a.tx, b.tx, "seed {seed} round {round}: frames differ");
        assert_eq!(a.host, b.host, "seed {seed} round {round}");
        // And the connections: tuples, state, status bits and time left.
        assert_eq!(connections(&mut fast, now), connections(&mut slow, now), "seed {seed} round {round}: conntrack");
        // 50 ms a round, and one 40 s pause: every UDP connection expires.
        t += if round == 300 { 40_000_000_000 } else { 50_000_000 };
    }
    let c = fast.dp.pipeline().counters().snapshot();
    let tcp_hits = tcp_hits(&mut fast);
    assert!(tcp_hits > 100, "seed {seed}: {tcp_hits} TCP segments replayed");
    (c.event_total(StageEvent::FastPathHit), c.event_total(StageEvent::FastPathLearned))
}

#[test]
fn routed_node_gives_the_same_frames_with_and_without_the_fast_path() {
    for seed in [1, 0x9e37_79b9, 12345] {
        let (hits, learned) = differential(NODE_ROUTED, seed, false);
        assert!(hits > 500 && learned > 10, "seed {seed}: {hits} hits, {learned} learned");
    }
}

#[test]
fn vxlan_node_gives_the_same_frames_with_and_without_the_fast_path() {
    let text = format!("{NODE_ROUTED}overlay: {{mode: vxlan}}\n");
    for seed in [2, 0x7f4a_7c15, 777] {
        let (hits, learned) = differential(&text, seed, false);
        assert!(hits > 500 && learned > 10, "seed {seed}: {hits} hits, {learned} learned");
    }
}

#[test]
fn ipip_node_gives_the_same_frames_with_and_without_the_fast_path() {
    let text = format!("{NODE_ROUTED}overlay: {{mode: ipip}}\n");
    for seed in [5, 0x1234_5678] {
        let (hits, learned) = differential(&text, seed, false);
        assert!(hits > 500 && learned > 10, "seed {seed}: {hits} hits, {learned} learned");
    }
}

#[test]
fn partial_checksums_from_a_tap_give_the_same_frames_with_and_without_the_fast_path() {
    let vxlan = format!("{NODE_ROUTED}overlay: {{mode: vxlan}}\n");
    for (text, seed) in [(NODE_ROUTED, 3), (vxlan.as_str(), 4)] {
        let (hits, learned) = differential(text, seed, true);
        assert!(hits > 500 && learned > 10, "seed {seed}: {hits} hits, {learned} learned");
    }
}

/// A reload that changes the node's shape (an overlay where there was none) builds a
/// new pipeline around the connections it had: the new fast path stages must track
/// the same connections as the conntrack stages, or nothing is ever learned again.
#[test]
fn a_new_shape_keeps_one_conntrack_state_for_every_stage() {
    let mut n = node(NODE_ROUTED, &["10.244.2.5"]);
    let svc = Ipv4Addr::new(10, 96, 0, 10);
    let setup = |n: &mut Node, at: u64| {
        let frames = vec![
            (0, arp_reply([192, 168, 0, 1], [2, 0, 192, 168, 0, 1])),
            (0, arp_reply([192, 168, 0, 12], [2, 0, 192, 168, 0, 12])),
        ];
        run_batch(n, podplane::Instant::from_nanos(at), &frames, false);
    };
    setup(&mut n, 1_000_000_000);
    let flow = |k: u16| (1, from_pod(svc, 40000 + k, 53, 20));
    run_batch(&mut n, podplane::Instant::from_nanos(1_010_000_000), &[flow(0)], false);
    let vxlan = format!("{NODE_ROUTED}overlay: {{mode: vxlan}}\n");
    let objects = format!("{OBJECTS}{}", slice(&["10.244.2.5"]));
    let applied =
        n.dp.reload(Source { name: "node.yaml", text: &vxlan }, &[Source { name: "objects.yaml", text: &objects }])
            .unwrap();
    assert!(applied.new_pipeline);
    setup(&mut n, 1_020_000_000);
    // The first round after the change fills the new bridge's FDB (a learned change:
    // nothing of that round is learned); the second is learned, the next ones are
    // replayed, the flow from before the change too. (With a conntrack state of its
    // own the fast path learned nothing: 0 hits throughout.)
    let mut hits = Vec::new();
    for (r, t) in (0..4u64).map(|r| (r, 1_030_000_000 + r * 10_000_000)) {
        let got = run_batch(&mut n, podplane::Instant::from_nanos(t), &[flow(0), flow(1)], false);
        assert_eq!(got.tx.len(), 2, "round {r}");
        hits.push(n.dp.pipeline().counters().events("fastpath", StageEvent::FastPathHit));
    }
    assert_eq!(hits, [0, 0, 2, 4]);
}

/// With transport checksums verified (`PipelineConfig::checksum.l4`, an embedder's
/// choice), every packet is parse's to check: the fast path ahead of it replays
/// nothing, so a packet of a steady flow with a broken UDP checksum is dropped as
/// parse drops it, never forwarded from the cache.
#[test]
fn with_transport_checksums_verified_nothing_is_replayed_before_parse() {
    use podplane::pipeline::{DropReason, Pipeline, PipelineConfig};
    use podplane::wire::ChecksumPolicy;
    let n = node(NODE_ROUTED, &["10.244.2.5"]);
    let cfg = PipelineConfig { checksum: ChecksumPolicy { ipv4: true, l4: true } };
    let mut pl = Pipeline::new(n.dp.setup().worker_stages(0, 1), cfg, 7);
    let mut pool = BufPool::with_slots(256).unwrap();
    let at = |ms: u64| podplane::Instant::from_nanos(1_000_000_000 + ms * 1_000_000);
    let svc = Ipv4Addr::new(10, 96, 0, 10);
    let flows = [(1, from_pod(svc, 40000, 53, 20)), (1, from_pod(svc, 40001, 53, 20))];
    // The first packets wait for the MAC of the backend's node (host-gw routing),
    // which the reply brings.
    run(&mut pl, &mut pool, at(0), &flows);
    run(&mut pl, &mut pool, at(1), &[(0, arp_reply([192, 168, 0, 12], [2, 0, 192, 168, 0, 12]))]);
    for r in 2..=7 {
        assert_eq!(run(&mut pl, &mut pool, at(r), &flows).tx.len(), 2, "round {r}");
    }
    // The same flow, its UDP checksum broken: parse's drop, not a replay.
    let mut bad = from_pod(svc, 40000, 53, 20);
    bad[41] ^= 0x55;
    let got = run(&mut pl, &mut pool, at(8), &[(1, bad)]);
    assert!(got.tx.is_empty());
    assert_eq!(pl.counters().drops("parse", DropReason::UdpBadChecksum), 1);
    assert_eq!(pl.counters().events("fastpath", StageEvent::FastPathHit), 0);
}
