//! `podplane::config`: every validation error path with its exact message, Kubernetes
//! objects (lists, several documents, unknown kinds), and reloading a running node.
#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests

use std::net::Ipv4Addr;

use podplane::buf::{BufPool, PortId};
use podplane::config::{ConfigError, Dataplane, NodeSetup, Source, load};
use podplane::stage::nat::PortMode;
use podplane::stage::route::NextHop;
use podplane::testutil::{Run, arp_request, run, udp4};
use podplane::wire::cidr::Cidr;

const NODE: &str = "\
name: worker-1
addresses: [192.168.0.11]
ports:
  - {name: eth0, kind: pcap, role: uplink, address: 192.168.0.11/24}
  - {name: pod-a, kind: pcap, role: pod, ip: 10.244.1.2}
  - {name: pod-b, kind: pcap, role: pod}
routes:
  - {dst: 0.0.0.0/0, via: 192.168.0.1}
";

const NODES: &str = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: worker-1}
  spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, 'fd00:10:244:1::/64']}
  status: {addresses: [{type: InternalIP, address: 192.168.0.11}]}
- apiVersion: v1
  kind: Node
  metadata: {name: worker-2}
  spec: {podCIDR: 10.244.2.0/24}
  status: {addresses: [{type: Hostname, address: worker-2}, {type: InternalIP, address: 192.168.0.12}]}
";

fn ok(node: &str, objects: &[&str]) -> NodeSetup {
    let srcs: Vec<Source<'_>> = objects.iter().map(|t| Source { name: "nodes.yaml", text: t }).collect();
    match load(Source { name: "node.yaml", text: node }, &srcs) {
        Ok(s) => s,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn errors(node: &str, objects: &[&str]) -> Vec<String> {
    let srcs: Vec<Source<'_>> = objects.iter().map(|t| Source { name: "nodes.yaml", text: t }).collect();
    match load(Source { name: "node.yaml", text: node }, &srcs) {
        Ok(_) => panic!("accepted:\n{node}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_node_from_its_file_and_node_objects() {
    let s = ok(NODE, &[NODES]);
    assert_eq!(s.pod_cidr.to_string(), "10.244.1.0/24");
    assert_eq!(
        s.ports.iter().map(|p| (p.name.as_str(), p.id)).collect::<Vec<_>>(),
        [("eth0", PortId(0)), ("pod-a", PortId(1)), ("pod-b", PortId(2))]
    );
    // Defaults: Kubernetes' and Flannel's.
    assert_eq!(s.cluster_cidr.to_string(), "10.244.0.0/16");
    assert_eq!(s.service_cidr.to_string(), "10.96.0.0/12");
    assert_eq!(s.node_ports, 30000..=32767);
    // The peer's pod CIDR routed via its InternalIP on the uplink, then the default.
    let routes: Vec<String> =
        s.routes.iter().map(|r| format!("{}/{} {:?} {}", r.spec.dst, r.spec.len, r.spec.next_hop, r.origin)).collect();
    assert_eq!(
        routes,
        ["10.244.2.0/24 Via(192.168.0.12, PortId(0)) Node/worker-2", "0.0.0.0/0 Via(192.168.0.1, PortId(0)) routes[0]"]
    );
    // cni0: both pod ports, .1 of the pod CIDR, the CNI MAC, hairpin on.
    let b = s.bridge.as_ref().unwrap();
    assert_eq!(b.domains.len(), 1);
    let d = &b.domains[0];
    assert_eq!(d.name, "cni0");
    assert_eq!(d.ports.iter().map(|p| (p.port, p.hairpin)).collect::<Vec<_>>(), [(PortId(1), true), (PortId(2), true)]);
    assert_eq!(d.gateway_mac.unwrap().to_string(), "0a:58:0a:f4:01:01");
    assert_eq!(
        s.notes,
        ["nodes.yaml: Node/worker-1: spec.podCIDRs[1] fd00:10:244:1::/64: IPv6 pod CIDRs are not routed yet"]
    );
    assert_eq!(
        s.pipeline(1).stage_names(),
        [
            "fastpath",
            "parse",
            "source_check",
            "bridge",
            "conntrack",
            "dnat",
            "route",
            "snat",
            "ct_commit",
            "arp",
            "egress",
            "offload"
        ],
        "the node path in netfilter's order"
    );
}

#[test]
fn routed_mode_is_calico_style() {
    let node = "\
name: w
podCIDR: 10.244.1.0/24
podNetwork: routed
ports:
  - {name: eth0, kind: tap, role: uplink, address: 192.168.0.11/24}
  - {name: cali1, kind: tap, role: pod, ip: 10.244.1.7}
";
    let s = ok(node, &[]);
    assert!(s.bridge.is_none());
    assert_eq!(
        s.pipeline(1).stage_names(),
        [
            "fastpath",
            "parse",
            "source_check",
            "conntrack",
            "dnat",
            "route",
            "snat",
            "ct_commit",
            "arp",
            "egress",
            "offload"
        ]
    );
    assert_eq!(s.routes[0].spec.next_hop, NextHop::Connected(PortId(1)));
    assert_eq!((s.routes[0].spec.dst, s.routes[0].spec.len), (Ipv4Addr::new(10, 244, 1, 7), 32));
    assert_eq!(s.arp.proxy[0].mac.to_string(), "ee:ee:ee:ee:ee:ee");
    assert_eq!(s.arp.proxy[0].targets, [Ipv4Addr::new(169, 254, 1, 1)]);
}

#[test]
fn every_error_names_file_object_and_field() {
    let base = "name: w\npodCIDR: 10.244.1.0/24\nports:\n  - {name: eth0, kind: pcap, role: uplink, address: 192.168.0.11/24}\n";
    let with = |extra: &str| format!("{base}{extra}");
    let table: Vec<(String, Vec<&str>, &str)> = vec![
        (
            "name: w\nports: []\n".into(),
            vec![],
            r#"node.yaml: NodeConfig/w: podCIDR: missing: give it here or in a Node object named "w""#,
        ),
        (
            "name: w\npodCIDR: 10.244.300.0/24\n".into(),
            vec![],
            r#"node.yaml: NodeConfig/w: podCIDR "10.244.300.0/24": invalid address"#,
        ),
        (
            "name: w\npodCIDR: 10.244.1.1/24\n".into(),
            vec![],
            r#"node.yaml: NodeConfig/w: podCIDR "10.244.1.1/24": host bits set"#,
        ),
        (
            "name: w\npodCIDR: 10.9.1.0/24\n".into(),
            vec![],
            r#"node.yaml: NodeConfig/w: podCIDR "10.9.1.0/24": not inside clusterCIDR 10.244.0.0/16"#,
        ),
        (
            "name: w\npodCIDR: 10.244.1.0/24\nserviceCIDR: 10.0.0.0/8\nclusterCIDR: 10.244.0.0/16\n".into(),
            vec![],
            r#"node.yaml: NodeConfig/w: serviceCIDR "10.0.0.0/8": overlaps clusterCIDR 10.244.0.0/16"#,
        ),
        (
            "name: w\npodCIDR: 10.244.1.0/24\nnodePortRange: 32767-30000\n".into(),
            vec![],
            r#"node.yaml: NodeConfig/w: nodePortRange "32767-30000": expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535"#,
        ),
        (
            with("  - {name: eth0, kind: pcap, role: pod}\n"),
            vec![],
            r#"node.yaml: Port/eth0: name "eth0": a second port with this name"#,
        ),
        (
            with("  - {name: host, kind: pcap, role: pod}\n"),
            vec![],
            r#"node.yaml: Port/host: name "host": reserved: replay writes what the node's stack receives to host.pcap"#,
        ),
        (
            with("  - {name: a-very-long-port-name, kind: tap, role: pod}\n"),
            vec![],
            r#"node.yaml: Port/a-very-long-port-name: name "a-very-long-port-name": must be 1-15 letters, digits, '-', '_' or '.' (a TAP device name)"#,
        ),
        (
            with("  - {name: up2, kind: pcap, role: uplink}\n"),
            vec![],
            "node.yaml: Port/up2: address: missing: an uplink or host port needs the node's address on it (a.b.c.d/len)",
        ),
        (
            with("  - {name: up2, kind: pcap, role: uplink, address: 192.168.0.0/24}\n"),
            vec![],
            r#"node.yaml: Port/up2: address "192.168.0.0/24": the network or broadcast address of its subnet"#,
        ),
        (
            with("  - {name: up2, kind: pcap, role: uplink, address: 192.168.0.12/16}\n"),
            vec![],
            r#"node.yaml: Port/up2: address "192.168.0.0/16": its subnet overlaps Port/eth0's"#,
        ),
        (
            with("  - {name: up2, kind: pcap, role: uplink, address: 172.16.0.1/24, mac: '01:00:5e:00:00:01'}\n"),
            vec![],
            r#"node.yaml: Port/up2: mac "01:00:5e:00:00:01": not a unicast address"#,
        ),
        (
            with("  - {name: up2, kind: pcap, role: uplink, address: 172.16.0.1/24, mac: 'zz'}\n"),
            vec![],
            r#"node.yaml: Port/up2: mac "zz": invalid MAC address (expected six hex bytes, aa:bb:cc:dd:ee:ff)"#,
        ),
        (
            with("  - {name: p, kind: pcap, role: pod, mtu: 9001}\n"),
            vec![],
            r#"node.yaml: Port/p: mtu "9001": must be between 68 and 9000"#,
        ),
        (
            with("  - {name: p, kind: pcap, role: pod, ip: 10.244.2.2}\n"),
            vec![],
            r#"node.yaml: Port/p: ip "10.244.2.2": not inside the node's podCIDR 10.244.1.0/24"#,
        ),
        (
            with(
                "  - {name: p, kind: pcap, role: pod, ip: 10.244.1.2}\n  - {name: q, kind: pcap, role: pod, ip: 10.244.1.2}\n",
            ),
            vec![],
            r#"node.yaml: Port/q: ip "10.244.1.2": a second pod with this address"#,
        ),
        (
            with("  - {name: p, kind: pcap, role: pod, mac: '02:00:00:00:00:01'}\n"),
            vec![],
            r#"node.yaml: Port/p: mac "02:00:00:00:00:01": a bridged pod port has no MAC of the node's (the bridge interface has one)"#,
        ),
        (
            with("  - {name: p, kind: pcap, role: pod}\npodNetwork: routed\n"),
            vec![],
            "node.yaml: Port/p: ip: missing: routed pods need their /32 address",
        ),
        (
            with("  - {name: p, kind: pcap, role: pod}\nbridges:\n  - {name: br0, ports: [p, nope]}\n"),
            vec![],
            r#"node.yaml: Bridge/br0: ports "nope": no such port"#,
        ),
        (
            with("  - {name: p, kind: pcap, role: pod}\nbridges:\n  - {name: br0, ports: [eth0]}\n"),
            vec![],
            r#"node.yaml: Bridge/br0: ports "eth0": not a pod port"#,
        ),
        (
            with("routes:\n  - {dst: 10.0.0.1/8, via: 192.168.0.1}\n"),
            vec![],
            r#"node.yaml: routes[0]: dst "10.0.0.1/8": host bits set"#,
        ),
        (
            with("routes:\n  - {dst: 10.0.0.0/8, via: 172.16.0.1}\n"),
            vec![],
            r#"node.yaml: routes[0]: via "172.16.0.1": not on any subnet of the node's ports; say which `port`"#,
        ),
        (
            with("routes:\n  - {dst: 10.0.0.0/8, via: 192.168.0.1, port: nope}\n"),
            vec![],
            r#"node.yaml: routes[0]: port "nope": no such port"#,
        ),
        (
            with("routes:\n  - {dst: 10.0.0.0/8}\n"),
            vec![],
            "node.yaml: routes[0]: via: missing: a unicast route needs `via` or `port`",
        ),
        (
            with("routes:\n  - {dst: 10.0.0.0/8, type: blackhole, via: 192.168.0.1}\n"),
            vec![],
            r#"node.yaml: routes[0]: via "192.168.0.1": a blackhole, unreachable or prohibit route has no gateway"#,
        ),
        (
            with("routes:\n  - {dst: 10.0.0.0/8, type: blackhole}\n  - {dst: 10.0.0.0/8, type: prohibit}\n"),
            vec![],
            r#"node.yaml: routes[1]: dst "10.0.0.0/8": the same prefix as routes[0]"#,
        ),
        // Node objects.
        (
            base.into(),
            vec!["kind: Node\napiVersion: v1\nmetadata: {name: worker-2}\nspec: {podCIDR: 10.244.300.0/24}\n"],
            r#"nodes.yaml: Node/worker-2: spec.podCIDR "10.244.300.0/24": invalid address"#,
        ),
        (
            base.into(),
            vec!["kind: Node\napiVersion: v1\nmetadata: {name: worker-2}\nspec: {podCIDR: 10.244.2.0/24}\n"],
            "nodes.yaml: Node/worker-2: status.addresses: no IPv4 InternalIP: nowhere to route its pods",
        ),
        (
            base.into(),
            vec![
                "kind: Node\napiVersion: v1\nmetadata: {name: worker-2}\nspec: {podCIDR: 10.244.2.0/24}\nstatus: {addresses: [{type: InternalIP, address: 10.1.1.1}]}\n",
            ],
            r#"nodes.yaml: Node/worker-2: status.addresses[0].address "10.1.1.1": not on any subnet of the node's uplinks: direct routing needs the peer on-link"#,
        ),
        (
            base.into(),
            vec![
                "kind: Node\napiVersion: v1\nmetadata: {name: worker-2}\nspec: {podCIDR: 10.244.1.0/24}\nstatus: {addresses: [{type: InternalIP, address: 192.168.0.12}]}\n",
            ],
            r#"nodes.yaml: Node/worker-2: spec.podCIDRs[0] "10.244.1.0/24": overlaps this node's podCIDR 10.244.1.0/24"#,
        ),
        (
            base.into(),
            vec!["kind: Node\napiVersion: v1\nmetadata: {name: w}\nspec: {podCIDR: 10.244.7.0/24}\n"],
            r#"node.yaml: NodeConfig/w: podCIDR "10.244.1.0/24": differs from Node/w's spec.podCIDR 10.244.7.0/24"#,
        ),
        (
            base.into(),
            vec!["apiVersion: v1\nmetadata: {name: x}\n"],
            "nodes.yaml: document 1: kind: missing: not a Kubernetes object",
        ),
        (
            base.into(),
            vec!["kind: Node\napiVersion: v1\nmetadata: {name: n1}\nspec: {podCIDR: 7}\n"],
            "nodes.yaml: Node/n1: not a valid Node: invalid type: integer `7`, expected a string",
        ),
    ];
    for (node, objects, want) in &table {
        let got = errors(node, objects);
        assert!(got.iter().any(|g| g == want), "for\n{node}{objects:?}\nwant: {want}\ngot:  {got:#?}");
    }
}

#[test]
fn yaml_errors_say_where() {
    let got = errors("name: w\nports:\n  - {name: eth0, kind: pcap, rol: uplink}\n", &[]);
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("node.yaml: line 3 column"), "{got:?}");
    assert!(got[0].contains("unknown field `rol`"), "{got:?}");
    let got = errors("name: w\nports:\n  - {name: eth0, kind: floppy, role: uplink}\n", &[]);
    assert!(got[0].contains("floppy"), "{got:?}");
    let got = errors("name: w\npodCIDR: 10.244.1.0/24\n", &["a: [1,\n"]);
    assert!(got[0].starts_with("nodes.yaml: line 1 column"), "{got:?}");
}

#[test]
fn other_kinds_are_reported_not_ignored() {
    let objects = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: kube-proxy, namespace: kube-system}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80, protocol: TCP}]}
---
";
    let s = ok("name: w\npodCIDR: 10.244.1.0/24\n", &[objects]);
    assert_eq!(s.notes, ["nodes.yaml: ConfigMap/kube-proxy: kind ConfigMap is not one podplane reads; ignored"]);
    // The Service is applied (no endpoints yet: it rejects).
    assert_eq!(s.services.len(), 1);
    assert!(!s.services["default/web:80"].has_endpoints);
}

// ---- reload ----

const MAC_B: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 3];

/// A frame from pod-a (port 1) to a pod of worker-2, to cni0's MAC.
fn to_peer(dst: Ipv4Addr) -> Vec<u8> {
    let mut f = udp4(Ipv4Addr::new(10, 244, 1, 2), dst, 1000, 53, b"q");
    f[..6].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 1]);
    f[6..12].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 2]);
    f
}

fn arp_reply_from(ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut f = arp_request(ip, Ipv4Addr::new(192, 168, 0, 11));
    f[..6].copy_from_slice(&[0x02, 0x00, 192, 168, 0, 11]);
    f[6..12].copy_from_slice(&mac);
    f[21] = 2;
    f[22..28].copy_from_slice(&mac);
    f
}

fn send(dp: &mut Dataplane, pool: &mut BufPool, frames: &[(u16, Vec<u8>)]) -> Vec<(PortId, Vec<u8>)> {
    let r: Run = run(dp.pipeline(), pool, podplane::Instant::from_nanos(1_000_000_000), frames);
    r.tx
}

#[test]
fn reload_applies_a_valid_change_in_place_and_refuses_an_invalid_one() {
    let mut dp = Dataplane::new(ok(NODE, &[NODES]), 1);
    let mut pool = BufPool::with_slots(64).unwrap();
    let w2 = [0x02, 0x00, 192, 168, 0, 12];
    let w3 = [0x02, 0x00, 192, 168, 0, 13];
    send(&mut dp, &mut pool, &[(0, arp_reply_from(Ipv4Addr::new(192, 168, 0, 12), w2))]);
    send(&mut dp, &mut pool, &[(0, arp_reply_from(Ipv4Addr::new(192, 168, 0, 13), w3))]);
    let r = send(&mut dp, &mut pool, &[(1, to_peer(Ipv4Addr::new(10, 244, 2, 5)))]);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].0, &r[0].1[..6]), (PortId(0), &w2[..]), "to worker-2");

    // worker-3 joins: one route added in place, nothing rebuilt, neighbours kept.
    let nodes3 = format!(
        "{NODES}- apiVersion: v1\n  kind: Node\n  metadata: {{name: worker-3}}\n  spec: {{podCIDR: 10.244.3.0/24}}\n  status: {{addresses: [{{type: InternalIP, address: 192.168.0.13}}]}}\n"
    );
    let node_src = Source { name: "node.yaml", text: NODE };
    let applied = dp.reload(node_src, &[Source { name: "nodes.yaml", text: &nodes3 }]).unwrap();
    assert_eq!((applied.route_changes, applied.reconfigured.len(), applied.new_pipeline), (1, 0, false));
    let r = send(&mut dp, &mut pool, &[(1, to_peer(Ipv4Addr::new(10, 244, 3, 9)))]);
    assert_eq!((r[0].0, &r[0].1[..6]), (PortId(0), &w3[..]), "to worker-3, its MAC still known");

    // An invalid change (worker-3's CIDR garbled): refused with the field named, and
    // the node keeps forwarding with the configuration in force.
    let garbled = nodes3.replace("10.244.3.0/24", "10.244.3.0/33");
    let err = dp.reload(node_src, &[Source { name: "nodes.yaml", text: &garbled }]).unwrap_err();
    assert_eq!(
        err.0,
        [ConfigError::Field {
            file: "nodes.yaml".into(),
            object: "Node/worker-3".into(),
            field: "spec.podCIDR".into(),
            value: Some("10.244.3.0/33".into()),
            problem: "prefix length over 32".into(),
        }]
    );
    let r = send(&mut dp, &mut pool, &[(1, to_peer(Ipv4Addr::new(10, 244, 3, 9)))]);
    assert_eq!((r[0].0, &r[0].1[..6]), (PortId(0), &w3[..]), "still routed to worker-3");
    assert!(dp.setup().peers.iter().any(|p| p.name == "worker-3"));

    // worker-3 leaves again: its route goes; its pods are now the default route's.
    let applied = dp.reload(node_src, &[Source { name: "nodes.yaml", text: NODES }]).unwrap();
    assert_eq!(applied.route_changes, 1);
    let r = send(&mut dp, &mut pool, &[(1, to_peer(Ipv4Addr::new(10, 244, 3, 9)))]);
    assert_eq!(r[0].0, PortId(0));
    assert_eq!(&r[0].1[12..14], &[0x08, 0x06], "ARP for the default gateway 192.168.0.1");

    // A bridge change (hairpin off): only the bridge stage is reconfigured.
    let node_nohairpin = format!("{NODE}bridges:\n  - {{name: cni0, hairpin: false}}\n");
    let applied = dp
        .reload(Source { name: "node.yaml", text: &node_nohairpin }, &[Source { name: "nodes.yaml", text: NODES }])
        .unwrap();
    assert_eq!(applied.reconfigured, ["bridge"]);
    let _ = MAC_B;
    let snap = dp.pipeline().counters().snapshot();
    assert!(snap.balanced());
}

// ---- overlay ----

fn vxlan_node(name: &str, ip: &str, pod_cidr: &str, extra: &str) -> String {
    format!(
        "name: {name}\npodCIDR: {pod_cidr}\nports:\n  - {{name: eth0, kind: pcap, role: uplink, address: {ip}/24}}\n  - {{name: pod-a, kind: pcap, role: pod}}\nroutes:\n  - {{dst: 0.0.0.0/0, via: 192.168.0.1}}\noverlay: {{mode: vxlan{extra}}}\n"
    )
}

fn node_obj(name: &str, ip: &str, cidr: &str, annotations: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec: {{podCIDR: {cidr}}}\nstatus: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n"
    )
}

#[test]
fn vxlan_peers_from_flannel_annotations() {
    let objects = node_obj(
        "worker-2",
        "192.168.0.12",
        "10.244.2.0/24",
        r#"flannel.alpha.coreos.com/backend-data: '{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:02"}', flannel.alpha.coreos.com/public-ip: 192.168.0.12"#,
    ) + &node_obj("worker-3", "10.1.0.13", "10.244.3.0/24", "");
    let s = ok(&vxlan_node("worker-1", "192.168.0.11", "10.244.1.0/24", ""), &[&objects]);
    assert_eq!(
        s.pipeline(1).stage_names(),
        [
            "fastpath",
            "parse",
            "source_check",
            "decap",
            "fastpath_tunnel",
            "bridge",
            "conntrack",
            "dnat",
            "route",
            "snat",
            "ct_commit",
            "encap",
            "arp",
            "egress",
            "offload"
        ]
    );
    let o = s.overlay.as_ref().unwrap();
    assert_eq!(o.local_ip, Ipv4Addr::new(192, 168, 0, 11));
    assert_eq!(o.vtep_mac.to_string(), "0e:00:c0:a8:00:0b");
    let peers: Vec<String> = o.peers.iter().map(|p| format!("{} {} {}", p.node_ip, p.vtep_mac, p.next_hop)).collect();
    assert_eq!(
        peers,
        ["192.168.0.12 aa:bb:cc:00:00:02 192.168.0.12", "10.1.0.13 0e:00:0a:01:00:0d 192.168.0.1",],
        "on-link peer directly, the other through the default gateway"
    );
    // Routes into the tunnel; the tunnel interface is flannel.1's: .0/32, MTU 1450.
    let tunnel = s.route.interfaces.iter().find(|i| i.port == podplane::config::overlay::TUNNEL_PORT).unwrap();
    assert_eq!((tunnel.ip, tunnel.prefix, tunnel.mtu), (Ipv4Addr::new(10, 244, 1, 0), 32, 1450));
    assert_eq!(s.port("pod-a").unwrap().mtu, 1450, "pods get the tunnel's MTU");
    let r = &s.routes[0];
    assert_eq!((r.spec.dst, r.spec.len), (Ipv4Addr::new(10, 244, 2, 0), 24));
    assert_eq!(r.spec.next_hop, NextHop::Via(Ipv4Addr::new(192, 168, 0, 12), podplane::config::overlay::TUNNEL_PORT));
}

#[test]
fn cross_subnet_routes_on_link_peers_directly() {
    let objects = node_obj("worker-2", "192.168.0.12", "10.244.2.0/24", "")
        + &node_obj("worker-3", "10.1.0.13", "10.244.3.0/24", "");
    let s = ok(&vxlan_node("worker-1", "192.168.0.11", "10.244.1.0/24", ", crossSubnet: true"), &[&objects]);
    let hops: Vec<NextHop> = s.routes.iter().take(2).map(|r| r.spec.next_hop).collect();
    assert_eq!(
        hops,
        [
            NextHop::Via(Ipv4Addr::new(192, 168, 0, 12), PortId(0)),
            NextHop::Via(Ipv4Addr::new(10, 1, 0, 13), podplane::config::overlay::TUNNEL_PORT),
        ]
    );
    assert_eq!(s.overlay.as_ref().unwrap().peers.len(), 1);
}

#[test]
fn overlay_errors_name_the_field() {
    let objects =
        node_obj("worker-2", "192.168.0.12", "10.244.2.0/24", r#"flannel.alpha.coreos.com/backend-data: 'nonsense'"#);
    let got = errors(&vxlan_node("worker-1", "192.168.0.11", "10.244.1.0/24", ""), &[&objects]);
    assert_eq!(
        got,
        [
            r#"nodes.yaml: Node/worker-2: metadata.annotations[flannel.alpha.coreos.com/backend-data] "nonsense": expected {"VNI":N,"VtepMAC":"aa:bb:cc:dd:ee:ff"}"#
        ]
    );
    let got = errors(&vxlan_node("w", "192.168.0.11", "10.244.1.0/24", ", vni: 16777216"), &[]);
    assert_eq!(got, [r#"node.yaml: NodeConfig/w: overlay.vni "16777216": must fit 24 bits (0-16777215)"#]);
    let ipip = vxlan_node("w", "192.168.0.11", "10.244.1.0/24", "").replace("mode: vxlan", "mode: ipip, port: 4789");
    assert_eq!(
        errors(&ipip, &[]),
        [r#"node.yaml: NodeConfig/w: overlay.mode "ipip": port, vni, vtepMAC and udpChecksum are VXLAN settings"#]
    );
    let noroute = vxlan_node("worker-1", "192.168.0.11", "10.244.1.0/24", "")
        .replace("routes:\n  - {dst: 0.0.0.0/0, via: 192.168.0.1}\n", "");
    let far = node_obj("worker-3", "10.1.0.13", "10.244.3.0/24", "");
    assert_eq!(
        errors(&noroute, &[&far]),
        [
            r#"node.yaml: Node/worker-3: status.addresses "10.1.0.13": not on the uplink's subnet and no route covers it: the tunnel cannot reach it"#
        ]
    );
}

/// Carry one frame from node A's pod through A's pipeline, B's pipeline, and out to B's
/// pod; returns what B's pod port sent, and each node's dataplane for counters.
#[test]
fn vxlan_between_two_nodes_and_peer_changes_in_place() {
    let objs = node_obj("worker-1", "192.168.0.11", "10.244.1.0/24", "")
        + &node_obj("worker-2", "192.168.0.12", "10.244.2.0/24", "");
    let mut a = Dataplane::new(ok(&vxlan_node("worker-1", "192.168.0.11", "10.244.1.0/24", ""), &[&objs]), 1);
    let mut b = Dataplane::new(ok(&vxlan_node("worker-2", "192.168.0.12", "10.244.2.0/24", ""), &[&objs]), 2);
    let mut pool = BufPool::with_slots(64).unwrap();
    let mac = |ip: [u8; 4]| [0x02, 0x00, ip[0], ip[1], ip[2], ip[3]];
    // Each node learns the other's uplink MAC and its own pod's.
    send(&mut a, &mut pool, &[(0, arp_reply_from(Ipv4Addr::new(192, 168, 0, 12), mac([192, 168, 0, 12])))]);
    let mut r = arp_reply_from(Ipv4Addr::new(192, 168, 0, 11), mac([192, 168, 0, 11]));
    r[..6].copy_from_slice(&mac([192, 168, 0, 12]));
    r[38..42].copy_from_slice(&[192, 168, 0, 12]);
    send(&mut b, &mut pool, &[(0, r)]);
    let pod_b_mac = [0x0a, 0x58, 10, 244, 2, 7];
    let mut hello = arp_request(Ipv4Addr::new(10, 244, 2, 7), Ipv4Addr::new(10, 244, 2, 1));
    hello[6..12].copy_from_slice(&pod_b_mac);
    hello[22..28].copy_from_slice(&pod_b_mac);
    send(&mut b, &mut pool, &[(1, hello)]);

    let mut f = udp4(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 7), 1000, 53, b"through the tunnel");
    f[..6].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 1]);
    f[6..12].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 2]);
    let out = send(&mut a, &mut pool, &[(1, f.clone())]);
    assert_eq!(out.len(), 1);
    let (port, wire) = &out[0];
    assert_eq!(*port, PortId(0));
    assert_eq!(
        &wire[..12],
        &[mac([192, 168, 0, 12]), mac([192, 168, 0, 11])].concat()[..],
        "outer MACs by the neighbour stage"
    );
    assert_eq!(&wire[36..38], &8472u16.to_be_bytes());
    let delivered = send(&mut b, &mut pool, &[(0, wire.clone())]);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let (port, g) = &delivered[0];
    assert_eq!(*port, PortId(1));
    assert_eq!(&g[..12], &[pod_b_mac, [0x0a, 0x58, 10, 244, 2, 1]].concat()[..]);
    assert_eq!(g[22], 62, "two routers: A and B");
    assert_eq!(&g[26..], &f[26..], "addresses, ports and payload as sent");
    assert!(a.pipeline().counters().snapshot().balanced() && b.pipeline().counters().snapshot().balanced());

    // worker-2 leaves: A's route and peer go, in place; the pod's packets for it now
    // take the default route.
    let node_a = vxlan_node("worker-1", "192.168.0.11", "10.244.1.0/24", "");
    let only_a = node_obj("worker-1", "192.168.0.11", "10.244.1.0/24", "");
    let applied =
        a.reload(Source { name: "node.yaml", text: &node_a }, &[Source { name: "nodes.yaml", text: &only_a }]).unwrap();
    assert_eq!((applied.route_changes, applied.peer_changes, applied.new_pipeline), (1, 1, false));
    let out = send(&mut a, &mut pool, &[(1, f)]);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].1[12..14], &[0x08, 0x06], "ARP for the default gateway, no tunnel");
}

/// Pod-a (port 1) makes itself known to the node, then a 1500-byte datagram with DF
/// to `dst:port` through its gateway: the frame (sent by the caller).
fn pod_a_sends_too_big(dp: &mut Dataplane, pool: &mut BufPool, dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let pod = [0x0a, 0x58, 10, 244, 1, 2];
    let mut hello = arp_request(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 1));
    hello[6..12].copy_from_slice(&pod);
    hello[22..28].copy_from_slice(&pod);
    send(dp, pool, &[(1, hello)]);
    let mut big = udp4(Ipv4Addr::new(10, 244, 1, 2), dst, 1000, port, &[0x5a; 1500 - 28]);
    big[..6].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 1]);
    big[6..12].copy_from_slice(&pod);
    big
}

#[test]
fn a_too_big_packet_for_the_tunnel_gets_frag_needed_with_the_inner_mtu() {
    // The pod port keeps MTU 1500 (a pod that was not told the tunnel's), the tunnel
    // carries 1450: PMTU discovery must learn 1450 from the node.
    let node = vxlan_node("worker-1", "192.168.0.11", "10.244.1.0/24", "")
        .replace("{name: pod-a, kind: pcap, role: pod}", "{name: pod-a, kind: pcap, role: pod, mtu: 1500}");
    let objs = node_obj("worker-2", "192.168.0.12", "10.244.2.0/24", "");
    let mut dp = Dataplane::new(ok(&node, &[&objs]), 1);
    let mut pool = BufPool::with_slots(64).unwrap();
    let pod = [0x0a, 0x58, 10, 244, 1, 2];
    let big = pod_a_sends_too_big(&mut dp, &mut pool, Ipv4Addr::new(10, 244, 2, 9), 9);
    let out = send(&mut dp, &mut pool, &[(1, big.clone())]);
    assert_eq!(out.len(), 1);
    let (port, e) = &out[0];
    assert_eq!(*port, PortId(1), "back to the pod, not into the tunnel");
    assert_eq!(&e[..6], &pod);
    assert_eq!(&e[34..36], &[3, 4], "fragmentation needed");
    assert_eq!(u16::from_be_bytes([e[40], e[41]]), 1450, "the tunnel's MTU");
    assert_eq!(&e[26..30], &[10, 244, 1, 1], "from the pod's gateway");
    assert_eq!(&e[42..62], &big[14..34], "quoting the too-big header");
    assert_eq!(dp.pipeline().counters().drops("route", podplane::pipeline::DropReason::FragNeeded), 1);
}

/// A neighbour advertisement from `ip` at `mac` answering `asker` (at `asker_mac`).
fn na(ip: std::net::Ipv6Addr, mac: [u8; 6], asker: std::net::Ipv6Addr, asker_mac: [u8; 6]) -> Vec<u8> {
    use podplane::stage::arp::nd;
    let (group, _) = nd::solicited_node(ip);
    let ns = nd::NdMsg {
        kind: nd::NS,
        src: asker,
        dst: group,
        target: ip,
        lladdr: Some(podplane::wire::EthernetAddress(asker_mac)),
        flags: 0,
    };
    let mut f = vec![0u8; nd::frame_len(true)];
    nd::write_advert(&mut f, &ns, podplane::wire::EthernetAddress(mac), podplane::wire::EthernetAddress(mac)).unwrap();
    f
}

#[test]
fn vxlan_over_an_ipv6_underlay_between_two_nodes() {
    let node6 = |name: &str, v4: &str, v6: &str, cidr: &str| {
        format!(
            "name: {name}\npodCIDR: {cidr}\nports:\n  - {{name: eth0, kind: pcap, role: uplink, address: {v4}/24, address6: {v6}/64}}\n  - {{name: pod-a, kind: pcap, role: pod}}\noverlay: {{mode: vxlan, underlay: ipv6}}\n"
        )
    };
    let obj6 = |name: &str, v6: &str, cidr: &str| {
        format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: {cidr}}}\nstatus: {{addresses: [{{type: InternalIP, address: '{v6}'}}]}}\n"
        )
    };
    let objs = obj6("w1", "fd00:ff::11", "10.244.1.0/24") + &obj6("w2", "fd00:ff::12", "10.244.2.0/24");
    let a_setup = ok(&node6("w1", "192.168.0.11", "fd00:ff::11", "10.244.1.0/24"), &[&objs]);
    assert_eq!(a_setup.port("pod-a").unwrap().mtu, 1430, "IPv6 VXLAN takes 70 bytes");
    let o = a_setup.overlay.as_ref().unwrap();
    assert_eq!(o.peers[0].node_ip, Ipv4Addr::new(10, 244, 2, 0), "routes key the peer by its pod network's .0");
    assert_eq!(o.peers[0].underlay6.map(|u| u.0.to_string()), Some("fd00:ff::12".into()));
    let mut a = Dataplane::new(a_setup, 1);
    let mut b = Dataplane::new(ok(&node6("w2", "192.168.0.12", "fd00:ff::12", "10.244.2.0/24"), &[&objs]), 2);
    let mut pool = BufPool::with_slots(64).unwrap();
    let (a6, b6): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
        ("fd00:ff::11".parse().unwrap(), "fd00:ff::12".parse().unwrap());
    let (a_mac, b_mac) = ([0x02, 0x00, 192, 168, 0, 11], [0x02, 0x00, 192, 168, 0, 12]);
    send(&mut a, &mut pool, &[(0, na(b6, b_mac, a6, a_mac))]);
    let pod_b_mac = [0x0a, 0x58, 10, 244, 2, 7];
    let mut hello = arp_request(Ipv4Addr::new(10, 244, 2, 7), Ipv4Addr::new(10, 244, 2, 1));
    hello[6..12].copy_from_slice(&pod_b_mac);
    hello[22..28].copy_from_slice(&pod_b_mac);
    send(&mut b, &mut pool, &[(1, hello)]);

    let mut f = udp4(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 7), 1000, 53, b"over an ipv6 underlay");
    f[..6].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 1]);
    f[6..12].copy_from_slice(&[0x0a, 0x58, 10, 244, 1, 2]);
    let out = send(&mut a, &mut pool, &[(1, f.clone())]);
    assert_eq!(out.len(), 1, "{}", a.pipeline().counters().snapshot());
    let wire = &out[0].1;
    assert_eq!(
        &wire[..14],
        &[&b_mac[..], &a_mac[..], &[0x86, 0xdd]].concat()[..],
        "outer MACs from neighbour discovery"
    );
    assert_eq!(wire.len(), f.len() + 70);
    let delivered = send(&mut b, &mut pool, &[(0, wire.clone())]);
    assert_eq!(delivered.len(), 1, "{}", b.pipeline().counters().snapshot());
    assert_eq!(delivered[0].0, PortId(1));
    assert_eq!(&delivered[0].1[26..], &f[26..]);
    let errs =
        errors(&node6("w1", "192.168.0.11", "fd00:ff::11", "10.244.1.0/24").replace("mode: vxlan", "mode: ipip"), &[]);
    assert_eq!(
        errs,
        [r#"node.yaml: NodeConfig/w1: overlay.underlay "ipv6": IP-in-IP runs over IPv4 only; use mode vxlan"#]
    );
}

#[test]
fn peers_written_in_the_node_file() {
    let node = vxlan_node("worker-1", "192.168.0.11", "10.244.1.0/24", "")
        + "peers:\n  - {name: worker-2, address: 192.168.0.12, podCIDR: 10.244.2.0/24, vtepMAC: 'aa:bb:cc:00:00:02'}\n";
    let s = ok(&node, &[]);
    let o = s.overlay.as_ref().unwrap();
    assert_eq!(o.peers.len(), 1);
    assert_eq!(
        (o.peers[0].node_ip, o.peers[0].vtep_mac.to_string()),
        (Ipv4Addr::new(192, 168, 0, 12), "aa:bb:cc:00:00:02".into())
    );
    assert_eq!(s.routes[0].origin, "Node/worker-2");
    let bad = vxlan_node("worker-1", "192.168.0.11", "10.244.1.0/24", "")
        + "peers:\n  - {name: worker-2, address: 192.168.0.12, podCIDR: 10.244.2.0/33}\n  - {name: worker-3, address: nowhere, podCIDR: 10.244.3.0/24}\n";
    assert_eq!(
        errors(&bad, &[]),
        [
            r#"node.yaml: peers[0]: podCIDR "10.244.2.0/33": prefix length over 32"#,
            r#"node.yaml: peers[1]: address "nowhere": invalid IP address"#,
        ]
    );
}

#[test]
fn nat_section_defaults_to_the_kubernetes_profile() {
    let s = ok("name: w\npodCIDR: 10.244.1.0/24\naddresses: [192.168.0.11]\n", &[]);
    let m = s.nat.masquerade.as_ref().unwrap();
    assert_eq!(m.sources, [Cidr::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap()]);
    assert_eq!(m.except, m.sources, "the cluster CIDR is never masqueraded");
    assert_eq!(s.nat.mode, PortMode::FullyRandom);
    assert_eq!(s.nat.ports, 1024..=65535);
    assert!(s.nat.hairpin);
    assert_eq!(s.nat.fallback, Some(Ipv4Addr::new(192, 168, 0, 11)));
    assert_eq!(s.conntrack.capacity, 131_072);
    assert_eq!(s.conntrack.tcp.timeouts.established, podplane::Duration::from_secs(86_400));
}

#[test]
fn nat_section_is_read_and_checked_field_by_field() {
    let s = ok(
        "name: w\npodCIDR: 10.244.1.0/24\nnat:\n  fullyRandom: false\n  portRange: 20000-20999\n  \
         nonMasqueradeCIDRs: [10.0.0.0/8]\n  dnat:\n    - {protocol: udp, destination: \"10.96.0.10:53\", to: \"10.244.2.3:5353\"}\n\
         conntrack:\n  max: 4096\n  liberal: true\n  udp: 10\n",
        &[],
    );
    assert_eq!(s.nat.mode, PortMode::KeepPort);
    assert_eq!(s.nat.ports, 20000..=20999);
    assert_eq!(s.nat.masquerade.as_ref().unwrap().except, [Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap()]);
    assert_eq!(s.nat.dnat.len(), 1);
    assert_eq!((s.nat.dnat[0].proto, s.nat.dnat[0].to_port), (17, 5353));
    assert_eq!(s.conntrack.capacity, 4096);
    assert!(s.conntrack.tcp.liberal);
    assert_eq!(s.conntrack.other.udp, podplane::Duration::from_secs(10));
    let e = errors(
        "name: w\npodCIDR: 10.244.1.0/24\nnat:\n  portRange: 9-1\n  nonMasqueradeCIDRs: [10.0.0.0/33]\n  dnat:\n    \
         - {protocol: sctp, destination: \"10.96.0.10:53\", to: \"10.244.2.3:53\"}\n    \
         - {protocol: tcp, destination: \"10.96.0.10\", to: \"[fd00::1]:80\"}\n    \
         - {protocol: tcp, destination: \"10.96.0.10:80\", to: \"[fd00::1]:80\"}\n\
         conntrack:\n  max: 134217729\n",
        &[],
    );
    assert_eq!(
        e,
        [
            r#"node.yaml: NodeConfig/w: nat.nonMasqueradeCIDRs[0] "10.0.0.0/33": prefix length over 32"#,
            r#"node.yaml: NodeConfig/w: nat.portRange "9-1": expected FIRST-LAST with 1 <= FIRST <= LAST <= 65535"#,
            r#"node.yaml: NodeConfig/w: nat.dnat[0].protocol "sctp": expected tcp or udp"#,
            r#"node.yaml: NodeConfig/w: nat.dnat[1].destination "10.96.0.10": expected ADDRESS:PORT"#,
            r#"node.yaml: NodeConfig/w: nat.dnat[2].to "[fd00::1]:80": not the destination's address family"#,
            r#"node.yaml: NodeConfig/w: conntrack.max "134217729": at most 134217728"#,
        ]
    );
}

/// A DNS client that keeps one socket sends to a service whose only endpoint is
/// replaced; returns where its three queries went (before, then two after) and the
/// connections the reload flushed.
fn dns_through_an_endpoint_change(flush: bool) -> (Vec<Ipv4Addr>, usize) {
    let rule =
        |to: &str| format!("nat:\n  dnat:\n    - {{protocol: udp, destination: \"10.96.0.10:53\", to: \"{to}:53\"}}\n");
    let node = |to: &str| format!("{NODE}{}", rule(to));
    let setup = |to: &str| {
        let mut s = ok(&node(to), &[NODES]);
        s.nat.fixes.flush_stale_udp = flush;
        s
    };
    let mut dp = Dataplane::new(setup("10.244.2.5"), 1);
    let mut pool = BufPool::with_slots(64).unwrap();
    send(&mut dp, &mut pool, &[(0, arp_reply_from(Ipv4Addr::new(192, 168, 0, 12), [2, 0, 192, 168, 0, 12]))]);
    let query = || to_peer(Ipv4Addr::new(10, 96, 0, 10));
    let dst = |r: &[(PortId, Vec<u8>)]| Ipv4Addr::new(r[0].1[30], r[0].1[31], r[0].1[32], r[0].1[33]);
    let mut went = vec![dst(&send(&mut dp, &mut pool, &[(1, query())]))];
    let applied = dp.apply(setup("10.244.2.6")).unwrap();
    assert_eq!(applied.reconfigured, ["nat"]);
    for _ in 0..2 {
        went.push(dst(&send(&mut dp, &mut pool, &[(1, query())])));
    }
    (went, applied.flushed)
}

#[test]
fn udp_entries_to_a_replaced_endpoint_are_flushed() {
    let (went, flushed) = dns_through_an_endpoint_change(true);
    let (old, new) = (Ipv4Addr::new(10, 244, 2, 5), Ipv4Addr::new(10, 244, 2, 6));
    assert_eq!(went, [old, new, new]);
    assert_eq!(flushed, 1);
}

#[test]
fn without_the_flush_a_busy_udp_client_stays_on_the_dead_endpoint() {
    // kubernetes#19029 / #126130: the entry never times out while the client keeps
    // sending, so every query goes to the endpoint that is gone.
    let (went, flushed) = dns_through_an_endpoint_change(false);
    let old = Ipv4Addr::new(10, 244, 2, 5);
    assert_eq!(went, [old, old, old]);
    assert_eq!(flushed, 0);
}

#[test]
fn the_nodes_own_frag_needed_about_a_dnat_packet_names_the_service() {
    // A pod sends a too-big datagram to a service whose endpoint is behind the VXLAN
    // tunnel (MTU 1450). The route stage answers with fragmentation-needed quoting
    // the packet as it routed it (to the endpoint); as in the kernel, whose error
    // passes POSTROUTING as RELATED, the quote is put back to the service address
    // and port and the error comes from the service, so the pod's stack finds its
    // socket and learns the path MTU of the address it talks to.
    let node = vxlan_node("worker-1", "192.168.0.11", "10.244.1.0/24", "")
        .replace("{name: pod-a, kind: pcap, role: pod}", "{name: pod-a, kind: pcap, role: pod, mtu: 1500}")
        + "nat:\n  dnat:\n    - {protocol: udp, destination: \"10.96.0.10:53\", to: \"10.244.2.9:5353\"}\n";
    let objs = node_obj("worker-2", "192.168.0.12", "10.244.2.0/24", "");
    let mut dp = Dataplane::new(ok(&node, &[&objs]), 1);
    let mut pool = BufPool::with_slots(64).unwrap();
    let big = pod_a_sends_too_big(&mut dp, &mut pool, Ipv4Addr::new(10, 96, 0, 10), 53);
    let out = send(&mut dp, &mut pool, &[(1, big.clone())]);
    assert_eq!(out.len(), 1, "{}", dp.pipeline().counters().snapshot());
    let (port, e) = &out[0];
    assert_eq!(*port, PortId(1));
    assert_eq!(&e[34..36], &[3, 4], "fragmentation needed");
    assert_eq!(u16::from_be_bytes([e[40], e[41]]), 1450);
    assert_eq!(&e[26..30], &[10, 96, 0, 10], "from the service, as the kernel's RELATED translation makes it");
    assert_eq!(&e[42 + 16..42 + 20], &[10, 96, 0, 10], "the quote names the service");
    assert_eq!(&e[42 + 22..42 + 24], &53u16.to_be_bytes(), "and its port");
    assert_eq!(podplane::wire::checksum::checksum(&e[34..]), 0, "ICMP checksum");
    assert_eq!(podplane::wire::checksum::checksum(&e[42..62]), 0, "quoted IPv4 header checksum");
}
