//! Root test: the node's own processes reach a ClusterIP and a NodePort through
//! podplane's host port, over TAP, with Linux TCP at both ends; on one worker and on
//! two (where the service connections' frames are steered to their client's worker).
//!
//! Namespaces the test creates: `host` stands for the node's root namespace (its end
//! of the host port is 169.254.42.2/30, with routes for the pod and service CIDRs and
//! the node's NodePort address through podplane, as the design's host port has them),
//! and a pod (10.244.1.2) serving TCP on 8080 behind the service `default/web`
//! (ClusterIP 10.96.0.50:80, NodePort 30080). The host sends 1 MiB to each frontend;
//! the pod checks every byte. podplane's connection table shows both connections
//! destination-NATed to the pod and masqueraded to the bridge's address (traffic from
//! outside the cluster CIDR, as kube-proxy marks it). Traffic stays inside the
//! namespaces; a guard removes them and the podplane process even on failure.

#![allow(clippy::tests_outside_test_module)] // an integration-test crate is all tests
#![allow(clippy::disallowed_methods)] // a real process on real time: waits are bounded by the wall clock
#![allow(unsafe_code)] // setns in the shared helpers

mod common;

use std::process::Command;

use common::{Guard, can_run, ip, metric, skip, start_run, tcp_send, tcp_sink};

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: NodePort, clusterIP: 10.96.0.50, ports: [{name: http, port: 80, protocol: TCP, nodePort: 30080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.244.1.2], nodeName: svcnode}]
";

#[test]
fn host_reaches_a_cluster_ip_and_a_node_port_through_the_host_port() {
    host_to_services(1);
}

#[test]
fn host_reaches_services_on_two_workers() {
    host_to_services(2);
}

fn host_to_services(workers: usize) {
    if let Err(why) = can_run(&["ip"]) {
        return skip(&format!("host_to_services ({workers} workers)"), &why);
    }
    let id = std::process::id();
    let w = workers;
    let (tap_h, tap_p) = (format!("pps{w}h{id}"), format!("pps{w}p{id}"));
    let (ns_h, ns_p) = (format!("pp-svc{w}-{id}-h"), format!("pp-svc{w}-{id}-p"));
    let dir = std::env::temp_dir().join(format!("podplane-svc-tap{w}-{id}"));
    let mut g = Guard::new(dir.clone());
    for ns in [&ns_h, &ns_p] {
        g.netns(ns);
    }
    let node = dir.join("node.yaml");
    std::fs::write(
        &node,
        format!(
            "name: svcnode\naddresses: [192.168.0.11]\npodCIDR: 10.244.1.0/24\nports:\n  \
             - {{name: {tap_h}, kind: tap, role: host, address: 169.254.42.1/30}}\n  \
             - {{name: {tap_p}, kind: tap, role: pod, ip: 10.244.1.2}}\n"
        ),
    )
    .unwrap();
    let objects = dir.join("services.yaml");
    std::fs::write(&objects, SERVICES).unwrap();
    let args = ["--objects", objects.to_str().unwrap(), "--workers", &workers.to_string()];
    let (addr, log) = start_run(&mut g, &node, &args, &[&tap_h, &tap_p]);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    ip(&["link", "set", &tap_p, "netns", &ns_p]);
    ip(&["-n", &ns_p, "addr", "add", "10.244.1.2/24", "dev", &tap_p]);
    ip(&["-n", &ns_p, "link", "set", &tap_p, "up"]);
    ip(&["-n", &ns_p, "link", "set", "lo", "up"]);
    ip(&["-n", &ns_p, "route", "add", "default", "via", "10.244.1.1"]);
    // The node's side of the host port: pods, services and the NodePort address
    // through podplane.
    ip(&["link", "set", &tap_h, "netns", &ns_h]);
    ip(&["-n", &ns_h, "addr", "add", "169.254.42.2/30", "dev", &tap_h]);
    ip(&["-n", &ns_h, "link", "set", &tap_h, "up"]);
    ip(&["-n", &ns_h, "link", "set", "lo", "up"]);
    for dst in ["10.244.0.0/16", "10.96.0.0/12", "192.168.0.11/32"] {
        ip(&["-n", &ns_h, "route", "add", dst, "via", "169.254.42.1"]);
    }
    let len = 1 << 20;
    for (frontend, name) in [("10.96.0.50:80", "ClusterIP"), ("192.168.0.11:30080", "NodePort")] {
        let sink = tcp_sink(&ns_p, "10.244.1.2:8080".parse().unwrap());
        let sent = tcp_send(&ns_h, frontend.parse().unwrap(), len).join().unwrap();
        assert!(sent.is_ok(), "host to {name} {frontend}: {sent:?}\n{}", log_text());
        assert_eq!(sink.join().unwrap(), (len, len), "{name}: every byte, in order");
    }
    let list =
        Command::new(env!("CARGO_BIN_EXE_podplane")).args(["conntrack", "list", "--metrics", &addr]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for frontend in ["dst=10.96.0.50 sport", "dst=192.168.0.11 sport"] {
        let line = list.lines().find(|l| l.contains(frontend)).unwrap_or_else(|| panic!("{frontend}:\n{list}"));
        assert!(line.contains("src=10.244.1.2 dst=10.244.1.1 sport=8080"), "DNAT and masquerade: {line}");
    }
    let stats = Command::new(env!("CARGO_BIN_EXE_podplane")).args(["stats", "--metrics", &addr]).output().unwrap();
    let m = String::from_utf8_lossy(&stats.stdout);
    eprintln!(
        "{workers} worker(s): {} frames handed to their connection's worker, {} not",
        metric(&m, "podplane_workers_handoff_total"),
        metric(&m, "podplane_workers_handoff_dropped_total")
    );
    assert_eq!(metric(&m, "podplane_workers_handoff_dropped_total"), 0, "{m}");
    // Both directions of every connection met on one worker (see `podplane::steer`):
    // no packet reached a worker without its connection.
    assert_eq!(metric(&m, "podplane_drops_total{stage=\"conntrack\",reason=\"ct_invalid\"}"), 0, "{m}");
}
