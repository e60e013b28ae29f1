use std::net::{IpAddr, Ipv4Addr};

use super::sched::{Cursor, Inputs, choose};
use super::*;
use crate::pipeline::DropReason;
use crate::time::{Duration, Instant};
use crate::wire::flow::FlowKey;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn be(a: &str, w: u16) -> Backend {
    Backend { addr: ip(a), port: 8080, weight: w }
}

fn flow(src: &str, sport: u16, dst: &str, dport: u16) -> FlowKey {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else { panic!("v4") };
    FlowKey::v4(s, d, 6, sport, dport)
}

fn picks(backends: Vec<Backend>, sched: Scheduler, n: usize) -> Vec<usize> {
    let pool = Pool::new(backends, sched);
    let mut c = Cursor::default();
    let f = flow("10.244.0.5", 40000, "10.96.0.10", 80);
    let none = |_: &Backend| 0;
    (0..n).map(|_| choose(&pool, sched, &mut c, &Inputs { flow: &f, random: 0, load: &none }).expect("pick")).collect()
}

#[test]
fn round_robin_takes_each_backend_in_turn() {
    let b = vec![be("10.244.1.2", 1), be("10.244.1.3", 1), be("10.244.1.4", 1)];
    let p = picks(b, Scheduler::RoundRobin, 300);
    assert_eq!(&p[..6], &[0, 1, 2, 0, 1, 2]);
    for k in 0..3 {
        assert_eq!(p.iter().filter(|&&x| x == k).count(), 100);
    }
}

#[test]
fn weighted_round_robin_interleaves_as_ipvs() {
    // Weights 4, 3, 2: IPVS's sequence is A A B A B C A B C, then again.
    let b = vec![be("10.244.1.2", 4), be("10.244.1.3", 3), be("10.244.1.4", 2)];
    let p = picks(b, Scheduler::WeightedRoundRobin, 900);
    assert_eq!(&p[..9], &[0, 0, 1, 0, 1, 2, 0, 1, 2]);
    assert_eq!(&p[9..18], &p[..9]);
    let count = |k| p.iter().filter(|&&x| x == k).count();
    assert_eq!((count(0), count(1), count(2)), (400, 300, 200));
    // A backend of weight 0 takes nothing.
    let b = vec![be("10.244.1.2", 0), be("10.244.1.3", 2)];
    assert!(picks(b, Scheduler::WeightedRoundRobin, 10).iter().all(|&x| x == 1));
}

#[test]
fn connection_counting_schedulers_follow_ipvs() {
    let b = vec![be("10.244.1.2", 1), be("10.244.1.3", 3), be("10.244.1.4", 1)];
    let pool = |s| Pool::new(b.clone(), s);
    let f = flow("10.244.0.5", 40000, "10.96.0.10", 80);
    let loads = [4u32, 6, 0];
    let load = |x: &Backend| loads[b.iter().position(|y| y == x).expect("known")];
    let pick = |s| choose(&pool(s), s, &mut Cursor::default(), &Inputs { flow: &f, random: 0, load: &load });
    // lc: least connections.
    assert_eq!(pick(Scheduler::LeastConnection), Some(2));
    // wlc: 4/1, 6/3 = 2, 0/1 = 0 -> the idle one.
    assert_eq!(pick(Scheduler::WeightedLeastConnection), Some(2));
    // nq: an idle backend first.
    assert_eq!(pick(Scheduler::NeverQueue), Some(2));
    // sed: (4+1)/1, (6+1)/3, (0+1)/1 -> 7/3 is not below 1: the idle one still.
    assert_eq!(pick(Scheduler::ShortestExpectedDelay), Some(2));
    let loads = [4u32, 6, 3];
    let load = |x: &Backend| loads[b.iter().position(|y| y == x).expect("known")];
    let pick = |s| choose(&pool(s), s, &mut Cursor::default(), &Inputs { flow: &f, random: 0, load: &load });
    // wlc: 4, 2, 3 -> the weight-3 one; sed: 5, 7/3, 4 -> the weight-3 one; lc: 3.
    assert_eq!(pick(Scheduler::WeightedLeastConnection), Some(1));
    assert_eq!(pick(Scheduler::ShortestExpectedDelay), Some(1));
    assert_eq!(pick(Scheduler::LeastConnection), Some(2));
    assert_eq!(pick(Scheduler::NeverQueue), Some(1));
}

#[test]
fn hashing_schedulers_keep_a_client_or_a_flow_on_one_backend() {
    let b: Vec<Backend> = (2..12).map(|k| be(&format!("10.244.1.{k}"), 1)).collect();
    let none = |_: &Backend| 0;
    for s in [Scheduler::SourceHash, Scheduler::Maglev] {
        let pool = Pool::new(b.clone(), s);
        let mut seen = std::collections::BTreeSet::new();
        for client in 0..200u16 {
            let f = flow(&format!("10.244.{}.{}", client / 100, client % 100 + 1), 1000 + client, "10.96.0.10", 80);
            let inp = Inputs { flow: &f, random: 0, load: &none };
            let first = choose(&pool, s, &mut Cursor::default(), &inp);
            assert_eq!(first, choose(&pool, s, &mut Cursor::default(), &inp));
            seen.insert(first);
        }
        assert_eq!(seen.len(), 10, "{s}: every backend used");
    }
    // sh ignores the source port; dh sends every client of one address to one backend.
    let pool = Pool::new(b.clone(), Scheduler::SourceHash);
    let at = |sport| {
        let f = flow("10.244.3.3", sport, "10.96.0.10", 80);
        choose(&pool, Scheduler::SourceHash, &mut Cursor::default(), &Inputs { flow: &f, random: 0, load: &none })
    };
    assert_eq!(at(1), at(2));
    let pool = Pool::new(b, Scheduler::DestinationHash);
    let dh: std::collections::BTreeSet<_> = (0..50u16)
        .map(|c| {
            let f = flow(&format!("10.244.0.{}", c + 1), 999, "10.96.0.10", 80);
            choose(
                &pool,
                Scheduler::DestinationHash,
                &mut Cursor::default(),
                &Inputs { flow: &f, random: 0, load: &none },
            )
        })
        .collect();
    assert_eq!(dh.len(), 1);
}

#[test]
fn scheduler_names_round_trip() {
    for s in Scheduler::ALL {
        assert_eq!(s.as_str().parse::<Scheduler>(), Ok(s));
    }
    assert!("wrong".parse::<Scheduler>().is_err());
}

fn settings() -> LbSettings {
    LbSettings {
        service_cidrs: vec![Prefix { addr: ip("10.96.0.0"), len: 12 }],
        node_port_addrs: vec![ip("192.168.1.10")],
        cluster_cidrs: vec![Prefix { addr: ip("10.244.0.0"), len: 16 }],
        node_addrs: vec![ip("192.168.1.10"), ip("10.244.0.1")],
        affinity_max: 4,
    }
}

fn web(cluster: Vec<Backend>, local: Vec<Backend>) -> ServicePort {
    ServicePort {
        name: "default/web:http".into(),
        proto: 6,
        cluster_ip: Some(ip("10.96.0.10")),
        port: 80,
        node_port: 30080,
        external_ips: vec![ip("203.0.113.7")],
        has_endpoints: !cluster.is_empty() || !local.is_empty(),
        cluster,
        local,
        internal_local: false,
        external_local: false,
        scheduler: Scheduler::RoundRobin,
        affinity: None,
        lb_ips: vec![],
        source_ranges: vec![],
    }
}

fn decide(t: &mut ServiceTable, f: &FlowKey) -> Verdict {
    t.decide(f, Instant::ZERO + Duration::from_secs(1), &mut || 7)
}

fn dnat(to: &Backend, masquerade: bool) -> Verdict {
    Verdict::Dnat { to: *to, masquerade, affinity: false }
}

#[test]
fn cluster_ip_and_node_port_follow_kube_proxy_masquerade_rules() {
    let (a, b) = (be("10.244.1.2", 1), be("10.244.0.9", 1));
    let mut t = ServiceTable::new(settings());
    t.upsert(web(vec![a, b], vec![b])).expect("upsert");
    // From a pod to the ClusterIP: no masquerade. Round robin over the sorted pool.
    assert_eq!(decide(&mut t, &flow("10.244.0.5", 1, "10.96.0.10", 80)), dnat(&b, false));
    // From outside the cluster range to the ClusterIP: masqueraded.
    assert_eq!(decide(&mut t, &flow("192.168.1.77", 1, "10.96.0.10", 80)), dnat(&a, true));
    // NodePort and external IP, Cluster policy: masqueraded.
    assert_eq!(decide(&mut t, &flow("198.51.100.1", 1, "192.168.1.10", 30080)), dnat(&b, true));
    assert_eq!(decide(&mut t, &flow("198.51.100.1", 1, "203.0.113.7", 80)), dnat(&a, true));
    // Not a NodePort on another address.
    assert_eq!(decide(&mut t, &flow("198.51.100.1", 1, "192.168.1.11", 30080)), Verdict::Pass);
    // A ClusterIP on a port it does not serve, and an unallocated service address.
    assert_eq!(decide(&mut t, &flow("10.244.0.5", 1, "10.96.0.10", 81)), Verdict::Reject(DropReason::SvcPortUnknown));
    let udp = FlowKey::v4(Ipv4Addr::new(10, 244, 0, 5), Ipv4Addr::new(10, 96, 0, 10), 17, 1, 80);
    assert_eq!(decide(&mut t, &udp), Verdict::Reject(DropReason::SvcPortUnknown));
    assert_eq!(decide(&mut t, &flow("10.244.0.5", 1, "10.96.0.11", 80)), Verdict::Drop(DropReason::SvcUnallocated));
    assert_eq!(decide(&mut t, &flow("10.244.0.5", 1, "8.8.8.8", 80)), Verdict::Pass);
}

#[test]
fn external_traffic_policy_local_keeps_the_client_address() {
    let (remote, here) = (be("10.244.1.2", 1), be("10.244.0.9", 1));
    let mut p = web(vec![remote, here], vec![here]);
    p.external_local = true;
    let mut t = ServiceTable::new(settings());
    t.upsert(p.clone()).expect("upsert");
    // An outside client: a local endpoint, its address kept.
    for _ in 0..4 {
        assert_eq!(decide(&mut t, &flow("198.51.100.1", 1, "192.168.1.10", 30080)), dnat(&here, false));
    }
    // A pod short-circuits to every endpoint; the node itself is masqueraded.
    assert_eq!(decide(&mut t, &flow("10.244.0.5", 1, "192.168.1.10", 30080)), dnat(&here, false));
    assert_eq!(decide(&mut t, &flow("10.244.0.5", 1, "192.168.1.10", 30080)), dnat(&remote, false));
    assert_eq!(decide(&mut t, &flow("192.168.1.10", 1, "203.0.113.7", 80)), dnat(&here, true));
    // No local endpoint: outside clients are dropped, pods still served.
    p.local.clear();
    t.upsert(p).expect("upsert");
    assert_eq!(
        decide(&mut t, &flow("198.51.100.1", 1, "192.168.1.10", 30080)),
        Verdict::Drop(DropReason::SvcNoLocalEndpoints)
    );
    assert!(matches!(decide(&mut t, &flow("10.244.0.5", 1, "192.168.1.10", 30080)), Verdict::Dnat { .. }));
}

#[test]
fn internal_traffic_policy_local_and_no_endpoints() {
    let (remote, here) = (be("10.244.1.2", 1), be("10.244.0.9", 1));
    let mut p = web(vec![remote, here], vec![]);
    p.internal_local = true;
    let mut t = ServiceTable::new(settings());
    t.upsert(p.clone()).expect("upsert");
    assert_eq!(
        decide(&mut t, &flow("10.244.0.5", 1, "10.96.0.10", 80)),
        Verdict::Drop(DropReason::SvcNoLocalEndpoints)
    );
    p.local = vec![here];
    t.upsert(p).expect("upsert");
    assert_eq!(decide(&mut t, &flow("10.244.0.5", 1, "10.96.0.10", 80)), dnat(&here, false));
    // No endpoints anywhere: every frontend rejects.
    t.upsert(web(vec![], vec![])).expect("upsert");
    for f in [flow("10.244.0.5", 1, "10.96.0.10", 80), flow("198.51.100.1", 1, "192.168.1.10", 30080)] {
        assert_eq!(decide(&mut t, &f), Verdict::Reject(DropReason::SvcNoEndpoints));
    }
}

#[test]
fn session_affinity_keeps_a_client_until_timeout_or_its_backend_goes() {
    let bs: Vec<Backend> = (2..6).map(|k| be(&format!("10.244.1.{k}"), 1)).collect();
    let mut p = web(bs.clone(), vec![]);
    p.affinity = Some(10);
    let mut t = ServiceTable::new(settings());
    t.upsert(p.clone()).expect("upsert");
    let at = |t: &mut ServiceTable, client: &str, s: u64| match t.decide(
        &flow(client, 1, "10.96.0.10", 80),
        Instant::ZERO + Duration::from_secs(s),
        &mut || 0,
    ) {
        Verdict::Dnat { to, affinity, .. } => (to, affinity),
        v => panic!("{v:?}"),
    };
    let (first, _) = at(&mut t, "10.244.0.5", 1);
    for s in 2..20 {
        // Each new connection refreshes the timeout (nftables `update @set`).
        assert_eq!(at(&mut t, "10.244.0.5", s), (first, true));
    }
    // Another client takes the next backend; after 10 s of silence the first starts over.
    let (other, aff) = at(&mut t, "10.244.0.6", 20);
    assert!(!aff && other != first);
    let (_, aff) = at(&mut t, "10.244.0.5", 31);
    assert!(!aff);
    // Its backend removed: chosen anew.
    let (now_on, _) = at(&mut t, "10.244.0.5", 32);
    p.cluster.retain(|b| *b != now_on);
    t.upsert(p).expect("upsert");
    let (after, aff) = at(&mut t, "10.244.0.5", 33);
    assert!(!aff && after != now_on);
}

#[test]
fn frontends_are_owned_by_one_service_and_removal_frees_them() {
    let a = be("10.244.1.2", 1);
    let mut t = ServiceTable::new(settings());
    t.upsert(web(vec![a], vec![])).expect("upsert");
    let mut other = web(vec![a], vec![]);
    other.name = "default/other:http".into();
    other.cluster_ip = Some(ip("10.96.0.20"));
    other.external_ips.clear();
    // Same NodePort: refused, nothing changed.
    let err = t.upsert(other.clone()).expect_err("duplicate NodePort");
    assert_eq!(err.to_string(), "192.168.1.10:30080/tcp is already default/web:http's");
    assert_eq!(t.len(), 1);
    assert_eq!(decide(&mut t, &flow("10.244.0.5", 1, "10.96.0.20", 80)), Verdict::Drop(DropReason::SvcUnallocated));
    other.node_port = 30081;
    t.upsert(other).expect("upsert");
    assert!(t.remove("default/web:http"));
    assert!(!t.remove("default/web:http"));
    assert_eq!(decide(&mut t, &flow("10.244.0.5", 1, "10.96.0.10", 80)), Verdict::Drop(DropReason::SvcUnallocated));
    assert_eq!(decide(&mut t, &flow("9.9.9.9", 1, "192.168.1.10", 30080)), Verdict::Pass);
    assert_eq!(decide(&mut t, &flow("9.9.9.9", 1, "192.168.1.10", 30081)), dnat(&a, true));
}

#[test]
fn least_connection_counts_follow_ended_connections() {
    let bs = vec![be("10.244.1.2", 1), be("10.244.1.3", 1)];
    let mut p = web(bs.clone(), vec![]);
    p.scheduler = Scheduler::LeastConnection;
    let mut t = ServiceTable::new(settings());
    t.upsert(p).expect("upsert");
    let f = flow("10.244.0.5", 1, "10.96.0.10", 80);
    assert_eq!(decide(&mut t, &f), dnat(&bs[0], false));
    assert_eq!(decide(&mut t, &f), dnat(&bs[1], false));
    assert_eq!(decide(&mut t, &f), dnat(&bs[0], false));
    assert_eq!(t.load_of((bs[0].addr, 8080), 6), 2);
    t.connection_ended((bs[0].addr, 8080), 6);
    t.connection_ended((bs[0].addr, 8080), 6);
    assert_eq!(decide(&mut t, &f), dnat(&bs[0], false));
    assert_eq!(t.load_of((bs[0].addr, 8080), 6), 1);
}

#[test]
fn load_balancer_source_ranges_drop_other_sources_on_the_lb_ip_only() {
    let a = be("10.244.1.2", 1);
    let mut p = web(vec![a], vec![]);
    p.external_ips.push(ip("5.6.7.8"));
    p.lb_ips = vec![ip("5.6.7.8")];
    p.source_ranges = vec![Prefix { addr: ip("203.0.113.0"), len: 25 }];
    let mut t = ServiceTable::new(settings());
    t.upsert(p.clone()).expect("upsert");
    assert_eq!(decide(&mut t, &flow("203.0.113.9", 1, "5.6.7.8", 80)), dnat(&a, true));
    assert_eq!(decide(&mut t, &flow("203.0.113.200", 1, "5.6.7.8", 80)), Verdict::Drop(DropReason::SvcSourceRange));
    // A pod is outside the ranges too; the NodePort and the external IP are not subject to them.
    assert_eq!(decide(&mut t, &flow("10.244.0.5", 1, "5.6.7.8", 80)), Verdict::Drop(DropReason::SvcSourceRange));
    assert_eq!(decide(&mut t, &flow("203.0.113.200", 1, "192.168.1.10", 30080)), dnat(&a, true));
    assert_eq!(decide(&mut t, &flow("203.0.113.200", 1, "203.0.113.7", 80)), dnat(&a, true));
    // A range holding the node's address lets traffic from the LB IP itself in.
    assert_eq!(decide(&mut t, &flow("5.6.7.8", 1, "5.6.7.8", 80)), Verdict::Drop(DropReason::SvcSourceRange));
    p.source_ranges.push(Prefix { addr: ip("192.168.1.0"), len: 24 });
    t.upsert(p).expect("upsert");
    assert_eq!(decide(&mut t, &flow("5.6.7.8", 1, "5.6.7.8", 80)), dnat(&a, true));
}

#[test]
fn a_full_affinity_table_remembers_no_more_clients_until_a_sweep_frees_room() {
    let bs: Vec<Backend> = (2..6).map(|k| be(&format!("10.244.1.{k}"), 1)).collect();
    let mut p = web(bs, vec![]);
    p.affinity = Some(10);
    let mut t = ServiceTable::new(settings()); // room for 4 clients
    t.upsert(p).expect("upsert");
    let at = |t: &mut ServiceTable, client: &str, s: u64| match t.decide(
        &flow(client, 1, "10.96.0.10", 80),
        Instant::ZERO + Duration::from_secs(s),
        &mut || 0,
    ) {
        Verdict::Dnat { affinity, .. } => affinity,
        v => panic!("{v:?}"),
    };
    for k in 1..=5 {
        assert!(!at(&mut t, &format!("10.244.0.{k}"), 1));
    }
    // The first four are remembered; the fifth found the table full.
    assert!(at(&mut t, "10.244.0.1", 2));
    assert!(!at(&mut t, "10.244.0.5", 2));
    // After every entry expired, a sweep makes room for a new client.
    assert!(!at(&mut t, "10.244.0.9", 20));
    assert!(at(&mut t, "10.244.0.9", 21));
}
