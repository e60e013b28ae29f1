//! Services from Service and EndpointSlice objects on one node: the checks (errors
//! naming object and field, nothing applied), the packets (ClusterIP, NodePort,
//! rejects with the kernel's ICMP fields), and changes applied one service at a time.
#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::buf::{BufPool, PortId};
use podplane::config::services::{PortChange, ServiceStore};
use podplane::config::{Dataplane, NodeSetup, Source, load};
use podplane::pipeline::DropReason;
use podplane::testutil::{arp_request, run, udp4};

const NODE: &str = "\
name: worker-1
addresses: [192.168.0.11]
ports:
  - {name: eth0, kind: pcap, role: uplink, mac: '02:00:c0:a8:00:0b', address: 192.168.0.11/24}
  - {name: pod-a, kind: pcap, role: pod, ip: 10.244.1.2}
  - {name: pod-b, kind: pcap, role: pod, ip: 10.244.1.3}
routes:
  - {dst: 0.0.0.0/0, via: 192.168.0.1}
nat: {fullyRandom: false}
";

const NODES: &str = "\
apiVersion: v1
kind: Node
metadata: {name: worker-1}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: worker-2}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.12}]}
";

/// `dns` (UDP 53, endpoints given), `web` (TCP 80, NodePort 30080, one endpoint on
/// each node), `empty` (no endpoints).
fn services(dns_endpoints: &[&str]) -> String {
    let eps: String = dns_endpoints
        .iter()
        .map(|a| format!("  - {{addresses: ['{a}'], conditions: {{ready: true}}, nodeName: worker-2}}\n"))
        .collect();
    format!(
        "\
apiVersion: v1
kind: Service
metadata: {{name: dns, namespace: kube-system}}
spec: {{clusterIP: 10.96.0.10, ports: [{{name: dns, port: 53, protocol: UDP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: dns-abc, namespace: kube-system, labels: {{kubernetes.io/service-name: dns}}}}
addressType: IPv4
ports: [{{name: dns, port: 5353, protocol: UDP}}]
endpoints:
{eps}---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec: {{type: NodePort, clusterIP: 10.96.0.80, ports: [{{name: http, port: 80, nodePort: 30080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
  - {{addresses: [10.244.2.7], nodeName: worker-2}}
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: default}}
spec: {{clusterIP: 10.96.0.99, ports: [{{port: 443, protocol: UDP}}]}}
"
    )
}

fn setup(svcs: &str) -> NodeSetup {
    let objs = [Source { name: "nodes.yaml", text: NODES }, Source { name: "services.yaml", text: svcs }];
    match load(Source { name: "node.yaml", text: NODE }, &objs) {
        Ok(s) => s,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn errors(svcs: &str) -> Vec<String> {
    let objs = [Source { name: "nodes.yaml", text: NODES }, Source { name: "services.yaml", text: svcs }];
    match load(Source { name: "node.yaml", text: NODE }, &objs) {
        Ok(_) => panic!("accepted:\n{svcs}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn services_are_compiled_as_kube_proxy_categorises_endpoints() {
    let s = setup(&services(&["10.244.2.5"]));
    let summary = s.summary();
    let lines: Vec<&str> = summary.lines().filter(|l| l.starts_with("services") || l.starts_with("  ")).collect();
    assert!(summary.contains("services: 3 ports, 2 endpoints; NodePorts on [192.168.0.11]"), "{summary}");
    assert!(lines.contains(&"  default/empty:443 udp [10.96.0.99:443] -> [] random"), "{lines:?}");
    assert!(lines.contains(&"  default/web:http tcp [10.96.0.80:80, nodePort 30080] -> [10.244.2.7:8080] random"));
    assert!(lines.contains(&"  kube-system/dns:dns udp [10.96.0.10:53] -> [10.244.2.5:5353] random"));
}

#[test]
fn terminating_endpoints_serve_only_when_none_is_ready() {
    let svc = services(&[]).replace(
        "endpoints:\n---",
        "endpoints:\n  - {addresses: [10.244.2.5], conditions: {ready: false, serving: true, terminating: true}}\n  - {addresses: [10.244.2.6], conditions: {ready: false, serving: false, terminating: true}}\n---",
    );
    let s = setup(&svc);
    let dns = &s.services["kube-system/dns:dns"];
    assert_eq!(dns.cluster.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(), ["10.244.2.5"]);
    let svc = svc.replace("endpoints:\n  -", "endpoints:\n  - {addresses: [10.244.2.8]}\n  -");
    let s = setup(&svc);
    let dns = &s.services["kube-system/dns:dns"];
    assert_eq!(dns.cluster.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(), ["10.244.2.8"]);
}

#[test]
fn bad_services_and_slices_are_refused_naming_object_and_field() {
    let base = services(&["10.244.2.5"]);
    let cases: [(String, &str); 6] = [
        (
            base.replace("port: 443", "port: 70000"),
            "services.yaml: Service/default/empty: spec.ports[0].port \"70000\": must be between 1 and 65535",
        ),
        (
            base + "---\napiVersion: v1\nkind: Service\nmetadata: {name: web2}\nspec: {type: NodePort, clusterIP: 10.96.0.81, ports: [{port: 80, nodePort: 30080}]}\n",
            "services.yaml: Service/default/web2: spec.ports.nodePort: 192.168.0.11:30080/tcp is already default/web:http's",
        ),
        (
            services(&["10.244.2.5"]).replace("kubernetes.io/service-name: web}", "kubernetes.io/service-name: nope}"),
            "services.yaml: EndpointSlice/default/web-1: metadata.labels[\"kubernetes.io/service-name\"] \"default/nope\": no such Service",
        ),
        (
            services(&["fd00::5"]),
            "services.yaml: EndpointSlice/kube-system/dns-abc: endpoints[0].addresses[0] \"fd00::5\": does not match addressType IPv4",
        ),
        (
            services(&["10.244.2.5"]).replace("clusterIP: 10.96.0.10,", "clusterIP: 10.96.0.10, ipFamilies: [IPv6],"),
            "services.yaml: Service/kube-system/dns: spec.ipFamilies[0] \"IPv6\": does not match spec.clusterIPs[0] 10.96.0.10",
        ),
        (
            services(&["10.244.2.5"]).replace("nodePort: 30080", "nodePort: 40000"),
            "services.yaml: Service/default/web: spec.ports[0].nodePort \"40000\": outside the NodePort range 30000-32767",
        ),
    ];
    for (svc, want) in cases {
        let got = errors(&svc);
        assert!(got.iter().any(|g| g == want), "want {want}\ngot {got:#?}");
    }
    let got = errors(&services(&[]).replace(
        "name: dns, namespace: kube-system}",
        "name: dns, namespace: kube-system, annotations: {podplane.io/lb-scheduler: fastest}}",
    ));
    assert_eq!(
        got,
        [
            "services.yaml: Service/kube-system/dns: metadata.annotations[\"podplane.io/lb-scheduler\"] \"fastest\": expected one of random, rr, wrr, lc, wlc, sed, nq, sh, dh, maglev"
        ]
    );
}

const CNI0: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 1];

/// A UDP frame from pod-a to `dst:dport`, to cni0's MAC.
fn from_pod_a(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut f = udp4(Ipv4Addr::new(10, 244, 1, 2), dst, 40000, dport, b"query");
    f[..6].copy_from_slice(&CNI0);
    f[6..12].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 2]);
    f
}

fn gateway_arp_reply() -> Vec<u8> {
    let mac = [2, 0, 192, 168, 0, 1];
    let mut f = arp_request(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 11));
    f[..6].copy_from_slice(&[0x02, 0x00, 192, 168, 0, 11]);
    f[6..12].copy_from_slice(&mac);
    f[21] = 2;
    f[22..28].copy_from_slice(&mac);
    f
}

fn peer_arp_reply() -> Vec<u8> {
    let mut f = gateway_arp_reply();
    f[11] = 12;
    f[27] = 12;
    f[31] = 12;
    f
}

fn send(dp: &mut Dataplane, pool: &mut BufPool, frames: &[(u16, Vec<u8>)]) -> Vec<(PortId, Vec<u8>)> {
    run(dp.pipeline(), pool, podplane::Instant::from_nanos(1_000_000_000), frames).tx
}

fn node(svcs: &str) -> (Dataplane, BufPool) {
    let mut dp = Dataplane::new(setup(svcs), 7);
    let mut pool = BufPool::with_slots(128).unwrap();
    // pod-a answers the node's ARP for it, so the way back is known.
    let mac = [0x0a, 0x58, 10, 244, 1, 2];
    let mut pod_a = arp_request(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 1));
    pod_a[..6].copy_from_slice(&CNI0);
    pod_a[6..12].copy_from_slice(&mac);
    pod_a[21] = 2;
    pod_a[22..28].copy_from_slice(&mac);
    pod_a[32..38].copy_from_slice(&CNI0);
    send(&mut dp, &mut pool, &[(0, gateway_arp_reply()), (0, peer_arp_reply()), (1, pod_a)]);
    (dp, pool)
}

fn ip_at(f: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[off], f[off + 1], f[off + 2], f[off + 3])
}

#[test]
fn a_pod_reaches_a_cluster_ip_and_the_reply_comes_from_the_service() {
    let (mut dp, mut pool) = node(&services(&["10.244.2.5"]));
    let out = send(&mut dp, &mut pool, &[(1, from_pod_a(Ipv4Addr::new(10, 96, 0, 10), 53))]);
    assert_eq!(out.len(), 1, "{}", dp.pipeline().counters().snapshot());
    let (port, f) = &out[0];
    assert_eq!(*port, PortId(0), "routed to worker-2 over the uplink");
    assert_eq!(&f[..6], &[2, 0, 192, 168, 0, 12]);
    assert_eq!(ip_at(f, 26), Ipv4Addr::new(10, 244, 1, 2), "a pod's address is kept");
    assert_eq!(ip_at(f, 30), Ipv4Addr::new(10, 244, 2, 5));
    assert_eq!(u16::from_be_bytes([f[36], f[37]]), 5353);
    // The endpoint answers; the pod sees the service.
    let mut reply = udp4(Ipv4Addr::new(10, 244, 2, 5), Ipv4Addr::new(10, 244, 1, 2), 5353, 40000, b"answer");
    reply[..6].copy_from_slice(&[0x02, 0x00, 192, 168, 0, 11]);
    reply[6..12].copy_from_slice(&[2, 0, 192, 168, 0, 12]);
    let back = send(&mut dp, &mut pool, &[(0, reply)]);
    assert_eq!(back.len(), 1, "{:02x?}", back);
    assert_eq!(back[0].0, PortId(1));
    assert_eq!(ip_at(&back[0].1, 26), Ipv4Addr::new(10, 96, 0, 10));
    assert_eq!(u16::from_be_bytes([back[0].1[34], back[0].1[35]]), 53);
}

#[test]
fn no_endpoints_and_unserved_ports_are_rejected_like_the_kernel_unallocated_dropped() {
    let (mut dp, mut pool) = node(&services(&["10.244.2.5"]));
    for (dst, port, reason) in [
        (Ipv4Addr::new(10, 96, 0, 99), 443, DropReason::SvcNoEndpoints),
        (Ipv4Addr::new(10, 96, 0, 10), 54, DropReason::SvcPortUnknown),
    ] {
        let sent = from_pod_a(dst, port);
        let out = send(&mut dp, &mut pool, &[(1, sent.clone())]);
        assert_eq!(out.len(), 1, "{}", dp.pipeline().counters().snapshot());
        let (p, e) = &out[0];
        assert_eq!(*p, PortId(1));
        // The kernel's icmp_send: TOS 0xc0, TTL 64, DF clear, from the address of the
        // interface towards the pod (cni0), port unreachable, the datagram quoted.
        assert_eq!(e[15], 0xc0);
        assert_eq!(e[22], 64);
        assert_eq!(e[20] & 0x40, 0);
        assert_eq!(ip_at(e, 26), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(ip_at(e, 30), Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(&e[34..36], &[3, 3]);
        // The quote: the untranslated datagram one hop older, as the kernel's reject
        // in the forward hook sees it after ip_forward().
        let mut older = sent[14..].to_vec();
        podplane::wire::ipv4::Ipv4Packet::new_unchecked(&mut older[..20]).decrement_ttl();
        assert_eq!(&e[42..], &older[..], "quote");
        assert_eq!(dp.pipeline().counters().drops("route", reason), 1, "{}", dp.pipeline().counters().snapshot());
    }
    let out = send(&mut dp, &mut pool, &[(1, from_pod_a(Ipv4Addr::new(10, 96, 0, 11), 53))]);
    assert!(out.is_empty());
    assert_eq!(dp.pipeline().counters().drops("dnat", DropReason::SvcUnallocated), 1);
}

#[test]
fn an_outside_client_reaches_a_node_port_masqueraded_to_the_node() {
    let (mut dp, mut pool) = node(&services(&["10.244.2.5"]));
    let mut syn = podplane::testutil::tcp4_seq(
        (Ipv4Addr::new(198, 51, 100, 9), 51000),
        (Ipv4Addr::new(192, 168, 0, 11), 30080),
        podplane::wire::tcp::TcpFlags::SYN,
        1000,
        0,
        b"",
    );
    syn[..6].copy_from_slice(&[0x02, 0x00, 192, 168, 0, 11]);
    syn[6..12].copy_from_slice(&[2, 0, 192, 168, 0, 1]);
    let out = send(&mut dp, &mut pool, &[(0, syn)]);
    assert_eq!(out.len(), 1, "{}", dp.pipeline().counters().snapshot());
    let f = &out[0].1;
    assert_eq!(ip_at(f, 26), Ipv4Addr::new(192, 168, 0, 11), "masqueraded to the egress address");
    assert_eq!(ip_at(f, 30), Ipv4Addr::new(10, 244, 2, 7));
    assert_eq!(u16::from_be_bytes([f[34], f[35]]), 51000, "keep-port masquerade keeps a free port");
    assert_eq!(u16::from_be_bytes([f[36], f[37]]), 8080);
}

#[test]
fn an_endpoint_change_through_the_store_costs_one_service_and_flushes_its_udp() {
    let s = setup(&services(&["10.244.2.5"]));
    let (mut dp, mut pool) = node(&services(&["10.244.2.5"]));
    let query = || from_pod_a(Ipv4Addr::new(10, 96, 0, 10), 53);
    let dst = |o: &[(PortId, Vec<u8>)]| ip_at(&o[0].1, 30);
    assert_eq!(dst(&send(&mut dp, &mut pool, &[(1, query())])), Ipv4Addr::new(10, 244, 2, 5));
    // An agent holds the running objects; then the DNS slice changes (endpoint replaced).
    let objects =
        |eps: &[&str]| podplane::config::objects::parse(&Source { name: "api", text: &services(eps) }).unwrap();
    let mut store = ServiceStore::new(s.node_view.clone());
    let mut slices = Vec::new();
    for o in objects(&["10.244.2.5"]) {
        match o.object {
            podplane::config::objects::Object::Service(svc) => {
                store.apply_service(*svc).unwrap();
            }
            podplane::config::objects::Object::EndpointSlice(sl) => slices.push(*sl),
            _ => {}
        }
    }
    for sl in slices {
        store.apply_slice(sl).unwrap();
    }
    let new_slice = objects(&["10.244.2.6"])
        .into_iter()
        .find_map(|o| match o.object {
            podplane::config::objects::Object::EndpointSlice(sl) if sl.metadata.name.as_deref() == Some("dns-abc") => {
                Some(*sl)
            }
            _ => None,
        })
        .unwrap();
    let changes = store.apply_slice(new_slice).unwrap();
    assert!(matches!(&changes[..], [PortChange::Upsert(p)] if p.name == "kube-system/dns:dns"), "{changes:?}");
    assert_eq!(dp.apply_ports(&changes), (1, 1), "one port changed, the stale UDP entry flushed");
    assert_eq!(dst(&send(&mut dp, &mut pool, &[(1, query())])), Ipv4Addr::new(10, 244, 2, 6));
    // Deleting the slice leaves the service with no endpoints: rejected.
    let gone = store.delete_slice("kube-system/dns-abc");
    assert!(matches!(&gone[..], [PortChange::Upsert(p)] if p.cluster.is_empty() && !p.has_endpoints));
    dp.apply_ports(&gone);
    let out = send(&mut dp, &mut pool, &[(1, query())]);
    assert_eq!(&out[0].1[34..36], &[3, 3]);
}

/// An SCTP packet (common header and one DATA-like chunk) from pod-a to `dst:dport`
/// with a correct CRC32c.
fn sctp_from_pod_a(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut f = udp4(Ipv4Addr::new(10, 244, 1, 2), dst, 40000, dport, &[0u8; 16 + 4]);
    f[..6].copy_from_slice(&CNI0);
    f[6..12].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 2]);
    f[23] = 132;
    f[24..26].fill(0);
    let c = podplane::wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    // Verification tag, then a chunk: type 0, flags, length 16, payload.
    f[38..42].copy_from_slice(&[1, 2, 3, 4]);
    f[46..50].copy_from_slice(&[0, 3, 0, 16]);
    f[50..62].copy_from_slice(b"sctp payload");
    let crc = crc32c::crc32c(&f[34..]);
    f[42..46].copy_from_slice(&crc.to_le_bytes());
    f
}

#[test]
fn sctp_is_balanced_with_its_crc32c_recomputed() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: sig, namespace: default}\nspec: {clusterIP: 10.96.0.70, ports: [{name: s, port: 3868, protocol: SCTP}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: sig-1, namespace: default, labels: {kubernetes.io/service-name: sig}}\naddressType: IPv4\nports: [{name: s, port: 3869, protocol: SCTP}]\nendpoints: [{addresses: [10.244.2.8]}]\n";
    let (mut dp, mut pool) = node(svc);
    let out = send(&mut dp, &mut pool, &[(1, sctp_from_pod_a(Ipv4Addr::new(10, 96, 0, 70), 3868))]);
    assert_eq!(out.len(), 1, "{}", dp.pipeline().counters().snapshot());
    let f = &out[0].1;
    assert_eq!(ip_at(f, 30), Ipv4Addr::new(10, 244, 2, 8));
    assert_eq!(u16::from_be_bytes([f[36], f[37]]), 3869);
    let mut z = f[34..].to_vec();
    let got = u32::from_le_bytes([z[8], z[9], z[10], z[11]]);
    z[8..12].fill(0);
    assert_eq!(got, crc32c::crc32c(&z), "CRC32c of the translated packet");
}

#[test]
fn a_dual_stack_service_is_one_table_entry_per_family() {
    let svc = "\
apiVersion: v1
kind: Service
metadata: {name: web6, namespace: default}
spec:
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIPs: [10.96.0.60, 'fd00:10:96::60']
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web6-v4, namespace: default, labels: {kubernetes.io/service-name: web6}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.244.2.6]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web6-v6, namespace: default, labels: {kubernetes.io/service-name: web6}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ['fd00:10:244:2::6']}]
";
    let s = setup(svc);
    let v4 = &s.services["default/web6:http"];
    let v6 = &s.services["default/web6:http/ipv6"];
    assert_eq!(v4.cluster_ip, Some("10.96.0.60".parse().unwrap()));
    assert_eq!(v4.cluster.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(), ["10.244.2.6"]);
    assert_eq!(v6.cluster_ip, Some("fd00:10:96::60".parse().unwrap()));
    assert_eq!(v6.cluster.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(), ["fd00:10:244:2::6"]);
    let mut t = s.service_table();
    let f = podplane::wire::flow::FlowKey::v6(
        "fd00:10:244:1::2".parse().unwrap(),
        "fd00:10:96::60".parse().unwrap(),
        6,
        40000,
        80,
    );
    match t.decide(&f, podplane::Instant::ZERO, &mut || 0) {
        podplane::stage::lb::Verdict::Dnat { to, .. } => assert_eq!(to.addr.to_string(), "fd00:10:244:2::6"),
        v => panic!("{v:?}"),
    }
}

#[test]
fn topology_hints_narrow_the_endpoints_when_every_ready_one_has_them() {
    let nodes_with_zone = NODES.replace(
        "metadata: {name: worker-1}",
        "metadata: {name: worker-1, labels: {topology.kubernetes.io/zone: zone-a}}",
    );
    let svc = |hints_on_all: bool| {
        let last = if hints_on_all { ", hints: {forZones: [{name: zone-b}]}" } else { "" };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec: {{clusterIP: 10.96.0.80, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n  - {{addresses: [10.244.2.5], hints: {{forZones: [{{name: zone-a}}]}}}}\n  - {{addresses: [10.244.2.6]{last}}}\n"
        )
    };
    let load_with = |text: &str| {
        let objs = [Source { name: "nodes.yaml", text: &nodes_with_zone }, Source { name: "services.yaml", text }];
        load(Source { name: "node.yaml", text: NODE }, &objs).expect("loads")
    };
    let eps =
        |s: &NodeSetup| s.services["default/web:http"].cluster.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>();
    // Every ready endpoint has hints and one names zone-a: only that one.
    assert_eq!(eps(&load_with(&svc(true))), ["10.244.2.5"]);
    // One without hints: hints are ignored, as kube-proxy's canUseTopology says.
    assert_eq!(eps(&load_with(&svc(false))), ["10.244.2.5", "10.244.2.6"]);
}
