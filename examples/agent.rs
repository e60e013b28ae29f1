//! A node agent embedding podplane: it feeds the dataplane Kubernetes objects as a
//! watch would deliver them (a Service, its EndpointSlice changing while traffic
//! flows, a Node joining) and reads the counters, with no files involved.
//!
//! Run: `cargo run -p podplane-examples --bin agent`
//!
//! The node `worker-1` has one pod (10.244.1.2) and an uplink; the service
//! `default/dns` (10.96.0.10:53/UDP) has endpoints on `worker-2`. Every round the pod
//! sends 30 new queries (new source ports) and one from its long-lived resolver
//! socket; between rounds the EndpointSlice changes: an endpoint added, one replaced,
//! the service emptied (rejected with port unreachable), endpoints back. The table
//! shows where the queries went, and that the resolver's connection follows its
//! endpoint when that endpoint goes (its UDP entry flushed, as kube-proxy does).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::Context as _;
use podplane::buf::{BufPool, PortId};
use podplane::config::objects::{Object, parse};
use podplane::config::{Agent, Source};
use podplane::pipeline::{DropReason, StageEvent};
use podplane::testutil::{arp_request, run, udp4};

const NODE_FILE: &str = "\
name: worker-1
addresses: [192.168.0.11]
podCIDR: 10.244.1.0/24
ports:
  - {name: eth0, kind: pcap, role: uplink, mac: '02:00:c0:a8:00:0b', address: 192.168.0.11/24}
  - {name: pod-a, kind: pcap, role: pod, ip: 10.244.1.2}
routes:
  - {dst: 0.0.0.0/0, via: 192.168.0.1}
";

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default, annotations: {podplane.io/lb-scheduler: rr}}
spec: {clusterIP: 10.96.0.10, ports: [{name: dns, port: 53, protocol: UDP}]}
";

const WORKER2: &str = "\
apiVersion: v1
kind: Node
metadata: {name: worker-2}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.0.12}]}
";

fn slice(endpoints: &[&str]) -> String {
    let eps: String = endpoints.iter().map(|a| format!("  - {{addresses: ['{a}'], nodeName: worker-2}}\n")).collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: dns-1, namespace: default, labels: {{kubernetes.io/service-name: dns}}}}\naddressType: IPv4\nports: [{{name: dns, port: 5353, protocol: UDP}}]\nendpoints:\n{eps}{}",
        if endpoints.is_empty() { "  []\n" } else { "" }
    )
}

fn object(text: &str) -> anyhow::Result<Object> {
    let mut v = parse(&Source { name: "watch", text }).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(v.pop().context("no object")?.object)
}

const CNI0: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 1];
const POD: [u8; 6] = [0x0a, 0x58, 10, 244, 1, 2];

fn query(sport: u16) -> Vec<u8> {
    let mut f = udp4(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 96, 0, 10), sport, 53, b"query");
    f[..6].copy_from_slice(&CNI0);
    f[6..12].copy_from_slice(&POD);
    f
}

fn main() -> anyhow::Result<()> {
    let mut agent = Agent::new(Source { name: "node.yaml", text: NODE_FILE }, Vec::new(), 1)?;
    let mut pool = BufPool::with_slots(512).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    // The watch's first events: the other node, then the service and its endpoints.
    agent.apply(object(WORKER2)?)?;
    agent.apply(object(SERVICE)?)?;
    agent.apply(object(&slice(&["10.244.2.5", "10.244.2.6"]))?)?;
    let t = podplane::Instant::from_nanos(1_000_000_000);
    // worker-2 answers ARP; the pod introduces itself.
    let mut peer = arp_request(Ipv4Addr::new(192, 168, 0, 12), Ipv4Addr::new(192, 168, 0, 11));
    peer[..6].copy_from_slice(&[2, 0, 192, 168, 0, 11]);
    peer[6..12].copy_from_slice(&[2, 0, 192, 168, 0, 12]);
    peer[21] = 2;
    peer[22..28].copy_from_slice(&[2, 0, 192, 168, 0, 12]);
    let mut hello = arp_request(Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 1));
    hello[6..12].copy_from_slice(&POD);
    hello[22..28].copy_from_slice(&POD);
    run(agent.dataplane().pipeline(), &mut pool, t, &[(0, peer), (1, hello)]);

    let events: [(&str, Vec<&str>); 5] = [
        ("two endpoints", vec!["10.244.2.5", "10.244.2.6"]),
        ("scaled up to three", vec!["10.244.2.5", "10.244.2.6", "10.244.2.7"]),
        ("10.244.2.5 replaced by 10.244.2.8", vec!["10.244.2.6", "10.244.2.7", "10.244.2.8"]),
        ("no endpoints", vec![]),
        ("back to one", vec!["10.244.2.9"]),
    ];
    println!("podplane agent example: a pod querying default/dns (10.96.0.10:53) while its endpoints change\n");
    println!(
        "{:<36} {:>8} {:>9}  {:<40} resolver socket went to",
        "event", "changes", "flushed", "30 new queries went to"
    );
    let mut sport = 20_000u16;
    for (round, (what, eps)) in events.iter().enumerate() {
        let applied = if round == 0 { Default::default() } else { agent.apply(object(&slice(eps))?)? };
        let mut frames: Vec<(u16, Vec<u8>)> = (0..30)
            .map(|_| {
                sport += 1;
                (1, query(sport))
            })
            .collect();
        frames.push((1, query(5353)));
        let out = run(agent.dataplane().pipeline(), &mut pool, t, &frames);
        let mut spread: BTreeMap<String, usize> = BTreeMap::new();
        let mut resolver = String::from("rejected (over the ICMP limit)");
        for (port, f) in &out.tx {
            let sp = u16::from_be_bytes([f[34], f[35]]);
            let to = if *port == PortId(0) {
                Ipv4Addr::new(f[30], f[31], f[32], f[33]).to_string()
            } else {
                "rejected".to_string()
            };
            // Port unreachable back to the pod quotes the query: its source port is there.
            let sp = if *port == PortId(0) { sp } else { u16::from_be_bytes([f[62], f[63]]) };
            if sp == 5353 {
                resolver.clone_from(&to);
            } else {
                *spread.entry(to).or_default() += 1;
            }
        }
        if let Some(n) = spread.remove("rejected") {
            // Linux's per-destination ICMP limit: a burst of 6, then one a second.
            let dropped = 31 - n;
            spread.insert(format!("rejected (port unreachable x{n}, {dropped} over the ICMP limit)"), 31);
        }
        let spread: Vec<String> = spread
            .iter()
            .map(|(a, n)| if a.starts_with("rejected") { a.clone() } else { format!("{a} x{n}") })
            .collect();
        println!(
            "{what:<36} {:>8} {:>9}  {:<40} {resolver}",
            applied.service_changes,
            applied.flushed,
            spread.join(", ")
        );
    }
    let c = agent.counters();
    println!(
        "\ncounters: svc_new {} (new connections given a backend), svc_rejected {}, dropped svc_no_endpoints {}",
        c.event_total(StageEvent::SvcNew),
        c.event_total(StageEvent::SvcRejected),
        c.drop_total(DropReason::SvcNoEndpoints)
    );
    Ok(())
}
