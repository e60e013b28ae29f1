//! A simulation scenario from a YAML file: the cluster, its links and its flows, run
//! by `podplane sim --scenario FILE`.
//!
//! ```yaml
//! seed: 7                      # every random choice (default 1)
//! mode: bridge                 # bridge (Flannel host-gw), routed (Calico /32), vxlan,
//!                              # ipip or vxlan-crosssubnet
//! nodes:                       # pods are named NODE-pod-0, NODE-pod-1, ...
//!   - {name: node-a, pods: 2}
//!   - {name: node-b, pods: 2}
//! link: {latencyUs: 20, loss: 0.01, mtu: 1500}      # every pod cable (all optional)
//! underlay: {latencyUs: 50}                          # between nodes (default: `link`)
//! flows:
//!   - {kind: ping, from: node-a-pod-0, to: node-b-pod-1, count: 3}
//!   - {kind: tcp, from: node-a-pod-1, to: node-b-pod-0, bytes: 1048576}
//!   - {kind: udp, from: node-a-pod-0, to: node-a-pod-1, count: 5}
//!   - {kind: http, from: node-b-pod-1, to: node-a-pod-0, bytes: 65536}
//!   - {kind: traceroute, from: node-a-pod-0, to: node-b-pod-1}
//! limitSeconds: 300            # virtual time allowed (default 300)
//! ```

use std::net::IpAddr;
use std::path::Path;

use podplane::Duration;
use serde::Deserialize;

use crate::cluster::{ClusterSpec, NetworkMode, build_with};
use crate::engine::Sim;
use crate::error::SimError;
use crate::link::LinkConfig;

/// The file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// Seed of every random choice.
    #[serde(default = "one")]
    pub seed: u64,
    /// `bridge` or `routed`.
    #[serde(default)]
    pub mode: Mode,
    /// Nodes and how many pods each has.
    pub nodes: Vec<NodeLine>,
    /// Every pod's cable.
    #[serde(default)]
    pub link: LinkLine,
    /// The underlay between nodes (default: like `link`).
    #[serde(default)]
    pub underlay: Option<LinkLine>,
    /// What runs.
    #[serde(default)]
    pub flows: Vec<FlowLine>,
    /// Virtual seconds allowed.
    #[serde(default = "limit")]
    pub limit_seconds: u64,
}

fn one() -> u64 {
    1
}

fn limit() -> u64 {
    300
}

/// How pods are wired (see [`NetworkMode`]).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Flannel host-gw style.
    #[default]
    Bridge,
    /// Calico style.
    Routed,
    /// Bridged pods, VXLAN between nodes (Flannel's default).
    Vxlan,
    /// Bridged pods, IP-in-IP between nodes (Calico IPIP).
    Ipip,
    /// VXLAN only across subnets (Calico `CrossSubnet`): nodes on two subnets behind
    /// a router.
    #[serde(rename = "vxlan-crosssubnet")]
    VxlanCrossSubnet,
}

/// A node.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeLine {
    /// Name.
    pub name: String,
    /// Pods on it.
    pub pods: usize,
}

/// A link's behaviour.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkLine {
    /// One-way latency in microseconds (default 20).
    pub latency_us: Option<u64>,
    /// Loss probability 0..1.
    pub loss: Option<f64>,
    /// Bit-corruption probability 0..1.
    pub corrupt: Option<f64>,
    /// MTU (default 1500).
    pub mtu: Option<usize>,
    /// Bandwidth in bits per second (default 10 Gb/s).
    pub bandwidth: Option<u64>,
}

impl LinkLine {
    fn config(&self) -> Result<LinkConfig, SimError> {
        let p = |v: Option<f64>, what: &str| match v {
            Some(x) if !(0.0..=1.0).contains(&x) => {
                Err(SimError::Cluster(format!("link {what} {x}: must be in 0..=1")))
            }
            v => Ok(v.unwrap_or(0.0)),
        };
        let mut c = LinkConfig::default()
            .with_latency(Duration::from_micros(self.latency_us.unwrap_or(20)))
            .with_bandwidth(self.bandwidth.unwrap_or(10_000_000_000))
            .with_faults(p(self.loss, "loss")?, 0.0, 0.0)
            .with_corruption(p(self.corrupt, "corrupt")?);
        if let Some(m) = self.mtu {
            if !(68..=9000).contains(&m) {
                return Err(SimError::Cluster(format!("link mtu {m}: must be in 68..=9000")));
            }
            c = c.with_mtu(m);
        }
        Ok(c)
    }
}

/// A flow between two pods.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FlowLine {
    /// `ping`, `tcp`, `udp`, `http` or `traceroute`.
    pub kind: FlowKindLine,
    /// The client pod's name.
    pub from: String,
    /// The server pod's name.
    pub to: String,
    /// Pings or queries (default 3).
    pub count: Option<u16>,
    /// Bytes for `tcp` (default 1 MiB) and `http` (default 64 KiB).
    pub bytes: Option<u64>,
    /// Server port (default: 5001 tcp, 53 udp, 80 http).
    pub port: Option<u16>,
    /// Flow name (default `KIND FROM->TO`).
    pub name: Option<String>,
}

/// A flow's kind.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FlowKindLine {
    /// ICMP echo.
    Ping,
    /// A bulk TCP transfer, every byte checked.
    Tcp,
    /// UDP queries and answers.
    Udp,
    /// An HTTP-like GET.
    Http,
    /// Traceroute (UDP with rising TTL).
    Traceroute,
}

impl Scenario {
    /// Parse `text` (named `file` in errors).
    ///
    /// # Errors
    /// The YAML error, with line and column.
    pub fn parse(file: &str, text: &str) -> Result<Self, SimError> {
        serde_saphyr::from_str(text).map_err(|e| SimError::Cluster(format!("{file}: {e}")))
    }

    /// The virtual time the flows are given.
    pub fn limit(&self) -> Duration {
        Duration::from_secs(self.limit_seconds)
    }

    /// Build the cluster into a fresh simulator and start the flows; run it with
    /// `sim.run_until_done(scenario.limit())`. With `capture`, every link is written to
    /// `DIR/LINK.pcap` (`/` in link names becomes `_`).
    ///
    /// # Errors
    /// A bad node or pod name, link setting or flow, or a simulator error.
    pub fn start(&self, capture: Option<&Path>) -> Result<Sim, SimError> {
        let mut spec = ClusterSpec::default();
        for n in &self.nodes {
            spec = spec.with_node(&n.name, n.pods);
        }
        let plan = spec.plan()?;
        let mut sim = Sim::new(self.seed);
        let link = self.link.config()?;
        let underlay = self.underlay.map_or(Ok(link), |u| u.config())?;
        let mode = match self.mode {
            Mode::Bridge => NetworkMode::Bridge,
            Mode::Routed => NetworkMode::Routed,
            Mode::Vxlan => NetworkMode::Vxlan,
            Mode::Ipip => NetworkMode::Ipip,
            Mode::VxlanCrossSubnet => NetworkMode::VxlanCrossSubnet,
        };
        let h = build_with(&mut sim, &plan, mode, link, underlay)?;
        if let Some(dir) = capture {
            std::fs::create_dir_all(dir)
                .map_err(|e| SimError::Capture { path: dir.display().to_string(), reason: e.to_string() })?;
            let mut names: Vec<String> =
                plan.nodes.iter().flat_map(|n| n.pods.iter().map(move |p| format!("{}/{}", n.name, p.name))).collect();
            names.extend(["underlay", "underlay-0", "underlay-1"].map(String::from));
            for name in names {
                if let Some(l) = sim.link_id(&name) {
                    sim.capture(l, &dir.join(format!("{}.pcap", name.replace('/', "_"))))?;
                }
            }
        }
        // Pod name -> (host index, address).
        let pod = |name: &str| -> Result<(usize, IpAddr), SimError> {
            for (ni, n) in plan.nodes.iter().enumerate() {
                for (pi, p) in n.pods.iter().enumerate() {
                    if p.name == name {
                        let host = h.pods.get(ni).and_then(|v| v.get(pi)).copied();
                        return host
                            .map(|x| (x, IpAddr::V4(p.ip)))
                            .ok_or_else(|| SimError::Cluster(format!("pod {name}: not built")));
                    }
                }
            }
            Err(SimError::Cluster(format!("flow: no pod named {name:?} (pods are NODE-pod-0, NODE-pod-1, ...)")))
        };
        for f in &self.flows {
            let (from, _) = pod(&f.from)?;
            let (to, to_ip) = pod(&f.to)?;
            let kind = format!("{:?}", f.kind).to_lowercase();
            let name = f.name.clone().unwrap_or_else(|| format!("{kind} {}->{}", f.from, f.to));
            let count = f.count.unwrap_or(3);
            match f.kind {
                FlowKindLine::Ping => sim.ping(&name, from, to_ip, count, Duration::from_millis(100)).map(|_| ())?,
                FlowKindLine::Tcp => {
                    sim.tcp_bulk(&name, from, to, f.port.unwrap_or(5001), f.bytes.unwrap_or(1 << 20)).map(|_| ())?;
                }
                FlowKindLine::Udp => sim.udp_query(&name, from, to, f.port.unwrap_or(53), count).map(|_| ())?,
                FlowKindLine::Http => {
                    sim.http(&name, from, to, f.port.unwrap_or(80), f.bytes.unwrap_or(64 * 1024)).map(|_| ())?;
                }
                FlowKindLine::Traceroute => sim.traceroute(&name, from, to_ip, 16).map(|_| ())?,
            }
        }
        Ok(sim)
    }
}
