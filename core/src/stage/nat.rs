//! Network address translation over conntrack, as netfilter's NAT does it on a
//! Kubernetes node: [`NatStage::dnat`] before routing and [`NatStage::snat`] after it,
//! both over the worker's [`crate::stage::conntrack::Conntrack`]; [`rewrite`] changes
//! packets with incremental checksums; [`ports`] chooses translated ports; [`rules`]
//! says what new connections get; [`steer`] names the worker a reply belongs to.

pub mod ports;
pub mod rewrite;
pub mod rules;
mod stage;
pub mod steer;

pub use ports::{PortAlloc, PortMode};
pub use rules::{DnatRule, Masquerade, NatConfig, NatFixes};
pub use stage::NatStage;

#[cfg(test)]
mod tests;
