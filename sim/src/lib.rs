//! podplane-sim: a deterministic network simulator for podplane.
//!
//! Pods and other hosts are smoltcp interfaces with real TCP, UDP and ICMP sockets;
//! nodes run real podplane pipelines; links between them lose, delay, reorder and
//! duplicate frames; everything happens on a virtual clock and every random choice
//! comes from one seed. The same seed and scenario give the same event log, bit for
//! bit ([`engine::Sim::event_log_hash`]).
//!
//! - [`engine`]: the event loop, hosts, nodes, links and workloads ([`engine::Sim`]);
//! - [`link`]: link behaviour and faults; [`host`]: smoltcp hosts;
//!   [`node`]: pipelines as nodes; [`workload`]: TCP bulk, HTTP-like, UDP, ping;
//! - [`cluster`]: Kubernetes-style address plans (cluster CIDR, node pod CIDRs,
//!   service range) with validation;
//! - [`scenario`]: a cluster, its links and its flows from a YAML file (`podplane sim
//!   --scenario`); [`report`]: the text summaries;
//! - [`traffic`] and [`feed`]: seeded frame mixes and batch feeding, for the parse
//!   demo, the benches and the fuzz corpus.
//!
//! Nothing here reads a wall clock.

#![deny(missing_docs)]

pub mod capture;
pub mod clock;
pub mod cluster;
pub mod engine;
pub mod error;
pub mod feed;
pub mod host;
pub mod k8s;
pub mod link;
pub mod node;
pub mod report;
pub mod scenario;
pub mod traffic;
pub mod workload;

pub use engine::{FlowId, Sim, seed_from_env};
pub use error::SimError;
pub use host::HostConfig;
pub use link::{Endpoint, EntityId, LinkConfig, LinkStats};
pub use workload::{FlowKind, FlowResult};
