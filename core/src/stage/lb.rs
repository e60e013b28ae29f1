//! Service load balancing with Kubernetes semantics: kube-proxy's job done in the
//! `dnat` stage's decision for a new connection.
//!
//! [`table::ServiceTable`] finds the frontend (ClusterIP, NodePort, external or
//! LoadBalancer IP) of a new connection in O(1), applies the traffic policies and
//! session affinity, and asks the service's [`sched::Scheduler`] for a backend;
//! [`service::ServicePort`] is what a service port is once checked (kube-proxy's
//! endpoint categorisation already applied). Connections already established keep
//! their backend whatever the table becomes: the choice lives in their conntrack
//! entry. Rejects (ICMP port unreachable) are answered by the route stage, where
//! the kernel's `reject` runs (the forward hook), so that they share its rate limit.

pub mod sched;
pub mod service;
pub mod table;

pub use sched::{Pool, SCHEDULER_ANNOTATION, Scheduler};
pub use service::{Backend, ServicePort};
pub use table::{LbSettings, Prefix, Scope, ServiceTable, TableError, Verdict};

#[cfg(test)]
mod tests;
