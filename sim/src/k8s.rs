//! Simulated Kubernetes nodes built the way `podplane run` builds a real one: from a
//! node file and the cluster's objects (`Node`, `Service`, `EndpointSlice`), so every
//! node runs the whole node path (`parse → source_check → decap → bridge →
//! conntrack → dnat → route → snat → ct_commit → encap → arp → egress`).
//!
//! Node `worker-i` (i = 1..) has underlay address 192.168.0.1i (so at most 9 nodes),
//! pod CIDR 10.244.i.0/24 with pods at .2, .3, ... on its bridge, and VXLAN to the
//! others (Flannel's defaults: port 8472, VNI 1, pods given the tunnel's 1450 MTU).
//! An outside `client` (192.168.0.200) sits on the underlay. Service changes reach
//! the nodes through [`K8sCluster::apply`], as an agent's watch would.

use std::net::Ipv4Addr;

use podplane::Duration;
use podplane::config::services::{PortChange, ServiceStore};
use podplane::config::{NodeSetup, Source, load};

use crate::error::SimError;
use crate::{HostConfig, LinkConfig, Sim};

/// What [`build`] made.
#[derive(Debug)]
pub struct K8sCluster {
    /// Node index per worker.
    pub nodes: Vec<usize>,
    /// Host index per pod, per worker.
    pub pods: Vec<Vec<usize>>,
    /// The outside client on the underlay.
    pub client: usize,
    /// Each worker's configuration.
    pub setups: Vec<NodeSetup>,
    /// The services as an agent sees them (worker-1's view).
    pub store: ServiceStore,
}

/// The node file of worker `i` with `pods` pods.
pub fn node_file(i: u8, pods: u8) -> String {
    let mut f = format!(
        "name: worker-{i}\naddresses: [192.168.0.1{i}]\nports:\n  - {{name: eth0, kind: pcap, role: uplink, address: 192.168.0.1{i}/24}}\n"
    );
    for k in 0..pods {
        f.push_str(&format!("  - {{name: pod-{k}, kind: pcap, role: pod, ip: 10.244.{i}.{}}}\n", k + 2));
    }
    f.push_str("overlay: {mode: vxlan}\nconntrack:\n  max: 8192\n");
    f
}

/// The `Node` objects of workers 1..=n.
pub fn nodes_yaml(n: u8) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Node\nmetadata: {{name: worker-{i}}}\nspec: {{podCIDR: 10.244.{i}.0/24}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.168.0.1{i}}}]}}\n"
            )
        })
        .collect()
}

/// Build `workers` nodes of `pods` pods each into `sim` with the services of
/// `objects` (Service and EndpointSlice YAML), links as `link`.
///
/// # Errors
/// A node file or object the configuration refuses (the message names the field),
/// or what the simulator refuses.
pub fn build(sim: &mut Sim, workers: u8, pods: u8, objects: &str, link: LinkConfig) -> Result<K8sCluster, SimError> {
    if !(1..=9).contains(&workers) {
        return Err(SimError::Cluster(format!("{workers} workers: 1 to 9 fit the address plan")));
    }
    let nodes_text = nodes_yaml(workers);
    let mut c = K8sCluster {
        nodes: Vec::new(),
        pods: Vec::new(),
        client: 0,
        setups: Vec::new(),
        store: ServiceStore::default(),
    };
    let mut underlay = Vec::new();
    for i in 1..=workers {
        let file = node_file(i, pods);
        let objs = [Source { name: "nodes.yaml", text: &nodes_text }, Source { name: "services.yaml", text: objects }];
        let setup =
            load(Source { name: "node.yaml", text: &file }, &objs).map_err(|e| SimError::Cluster(e.to_string()))?;
        let mut names = vec!["eth0".to_string()];
        names.extend((0..pods).map(|k| format!("pod-{k}")));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let n = sim.add_node(&setup.name, &refs, setup.pipeline(sim.seed() ^ u64::from(i)))?;
        let mut hosts = Vec::new();
        for k in 0..pods {
            let ip = Ipv4Addr::new(10, 244, i, k + 2);
            let mut cfg =
                HostConfig::v4(&format!("worker-{i}/pod-{k}"), ip, 24).gateway(Ipv4Addr::new(10, 244, i, 1)).mtu(1450);
            cfg.mac = [0x0a, 0x58, 10, 244, i, k + 2];
            let h = sim.add_host(cfg)?;
            let ends = [sim.host_end(h), sim.node_end(n, &format!("pod-{k}"))?];
            sim.link(&format!("worker-{i}/pod-{k}"), &ends, link)?;
            hosts.push(h);
        }
        underlay.push(sim.node_end(n, "eth0")?);
        c.nodes.push(n);
        c.pods.push(hosts);
        c.setups.push(setup);
    }
    c.client = sim.add_host(HostConfig::v4("client", Ipv4Addr::new(192, 168, 0, 200), 24))?;
    underlay.push(sim.host_end(c.client));
    sim.link("underlay", &underlay, link.switched())?;
    c.store = ServiceStore::new(c.setups.first().map(|s| s.node_view.clone()).unwrap_or_default());
    for o in podplane::config::objects::parse(&Source { name: "services.yaml", text: objects })
        .map_err(|e| SimError::Cluster(format!("{e:?}")))?
    {
        let done = match o.object {
            podplane::config::objects::Object::Service(s) => c.store.apply_service(*s).map(|_| ()),
            podplane::config::objects::Object::EndpointSlice(s) => c.store.apply_slice(*s).map(|_| ()),
            _ => Ok(()),
        };
        done.map_err(|e| SimError::Cluster(format!("{e:?}")))?;
    }
    Ok(c)
}

impl K8sCluster {
    /// Give every node the service changes (an agent's watch event), flushing the UDP
    /// connections to endpoints they drop. Returns the connections flushed.
    pub fn apply(&self, sim: &mut Sim, changes: &[PortChange]) -> usize {
        let mut flushed = 0;
        for &n in &self.nodes {
            if let Some(node) = sim.node_mut(n) {
                flushed += podplane::config::apply::apply_port_changes(node.pipeline_mut(), changes, true).1;
            }
        }
        flushed
    }

    /// Change objects through the agent's store (Services first, then slices) and
    /// give every node the result. Returns the connections flushed.
    ///
    /// # Errors
    /// An object the store refuses (nothing is applied then).
    pub fn update(&mut self, sim: &mut Sim, objects: &str) -> Result<usize, SimError> {
        let parsed = podplane::config::objects::parse(&Source { name: "update.yaml", text: objects })
            .map_err(|e| SimError::Cluster(format!("{e:?}")))?;
        let mut changes = Vec::new();
        for o in parsed {
            let c = match o.object {
                podplane::config::objects::Object::Service(s) => self.store.apply_service(*s),
                podplane::config::objects::Object::EndpointSlice(s) => self.store.apply_slice(*s),
                _ => continue,
            };
            changes.extend(c.map_err(|e| SimError::Cluster(format!("{e:?}")))?);
        }
        Ok(self.apply(sim, &changes))
    }

    /// The conntrack listing of worker `k` (0-based).
    pub fn conntrack(&self, sim: &mut Sim, k: usize) -> Vec<podplane::stage::conntrack::Listing> {
        let now = sim.now();
        let Some(node) = self.nodes.get(k).and_then(|&n| sim.node_mut(n)) else { return Vec::new() };
        let Some(ct) = node.pipeline_mut().stage::<podplane::stage::conntrack::ConntrackStage>().map(|s| s.shared())
        else {
            return Vec::new();
        };
        ct.lock().map(|c| c.list(now)).unwrap_or_default()
    }
}

/// A link setting for simulated clusters: 50 µs, 1 Gbit/s.
pub fn default_link() -> LinkConfig {
    LinkConfig::default().with_latency(Duration::from_nanos(50_000)).with_bandwidth(1_000_000_000)
}
