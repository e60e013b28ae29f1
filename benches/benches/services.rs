//! Services at scale: 100k services with 10 endpoints each (1M endpoints).
//!
//! - `endpointslice_change`: one EndpointSlice of one service changes (an endpoint
//!   replaced): the agent's [`ServiceStore`] compiles that service again from its
//!   objects and the worker's service table takes the change. Target ≤ 1 ms.
//! - `full_rebuild`: the whole service table built from the 100k compiled service
//!   ports (what a restart or a change of the node's own settings costs). Target ≤ 1 s.
//! - `new_connection_decision`: the table's decision for a new connection to one of
//!   the 100k ClusterIPs (frontend lookup, endpoint choice).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Service, ServicePort as K8sPort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use podplane::config::services::{NodeView, ServiceStore};
use podplane::stage::lb::{LbSettings, Prefix};
use podplane::wire::flow::FlowKey;

const SERVICES: usize = 100_000;
const PER: usize = 10;

fn meta(name: &str, svc: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("bench".into()),
        labels: svc.map(|s| [("kubernetes.io/service-name".to_string(), s.to_string())].into()),
        ..ObjectMeta::default()
    }
}

fn service(k: usize) -> Service {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + u32::try_from(k).unwrap_or(0));
    Service {
        metadata: meta(&format!("svc-{k}"), None),
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.to_string()),
            ports: Some(vec![K8sPort {
                name: Some("dns".into()),
                port: 53,
                protocol: Some("UDP".into()),
                ..K8sPort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn slice(k: usize, salt: u32) -> EndpointSlice {
    let endpoints = (0..PER)
        .map(|e| {
            let a = u32::from(Ipv4Addr::new(10, 244, 0, 0))
                + ((u32::try_from(k * 7 + e * 131).unwrap_or(0) + salt) & 0xffff);
            Endpoint { addresses: vec![Ipv4Addr::from(a).to_string()], ..Endpoint::default() }
        })
        .collect();
    EndpointSlice {
        metadata: meta(&format!("svc-{k}-abc"), Some(&format!("svc-{k}"))),
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ports: Some(vec![EndpointPort {
            name: Some("dns".into()),
            port: Some(5353),
            protocol: Some("UDP".into()),
            ..EndpointPort::default()
        }]),
    }
}

fn node() -> NodeView {
    NodeView {
        name: "bench-node".into(),
        zone: None,
        node_ports: (30000, 32767),
        lb: LbSettings {
            service_cidrs: vec![Prefix { addr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 0)), len: 12 }],
            node_port_addrs: vec![],
            cluster_cidrs: vec![Prefix { addr: IpAddr::V4(Ipv4Addr::new(10, 244, 0, 0)), len: 16 }],
            node_addrs: vec![],
            affinity_max: 65536,
        },
    }
}

fn bench(c: &mut Criterion) {
    let mut store = ServiceStore::new(node());
    for k in 0..SERVICES {
        store.apply_service(service(k)).expect("service");
        store.apply_slice(slice(k, 0)).expect("slice");
    }
    let ports = store.ports();
    assert_eq!(ports.len(), SERVICES);
    let mut table = podplane_benches::service_table(&ports);
    let mut g = c.benchmark_group("services_100k_1m_endpoints");
    g.sample_size(20);
    let mut flip = 0u32;
    g.bench_function("endpointslice_change", |b| {
        b.iter(|| {
            flip ^= 1;
            let changes = store.apply_slice(slice(4242, flip)).expect("slice");
            for ch in changes {
                if let podplane::config::services::PortChange::Upsert(p) = ch {
                    let _ = table.upsert(p);
                }
            }
        });
    });
    g.sample_size(10);
    g.bench_function("full_rebuild", |b| b.iter(|| black_box(podplane_benches::service_table(black_box(&ports)))));
    let mut x = 1u64;
    g.sample_size(50);
    g.bench_function("new_connection_decision", |b| {
        b.iter(|| {
            let k = u32::try_from(podplane_benches::lcg(&mut x) >> 47).unwrap_or(0) % 100_000;
            let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + k);
            let f = FlowKey::v4(Ipv4Addr::new(10, 244, 9, 9), vip, 17, 40000, 53);
            black_box(table.decide(&f, podplane::Instant::ZERO, &mut || 7))
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
