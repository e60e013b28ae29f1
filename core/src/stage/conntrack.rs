//! Connection tracking, as netfilter's conntrack does it for a Kubernetes node.
//!
//! Built in parts: [`tcp`] is the TCP state machine with window tracking, [`proto`]
//! the UDP, ICMP and generic tracking and the per-entry protocol state, and
//! [`crate::table::conntrack`] the connection table, [`state`] a worker's tables with
//! the connections pending in a batch, and the two stages: [`ConntrackStage`]
//! (`conntrack`, lookup and tracking, after the bridge) and [`CommitStage`]
//! (`ct_commit`, before egress). NAT is [`crate::stage::nat`].

mod commit;
pub mod frag;
pub mod listing;
pub(crate) mod lookup;
pub mod proto;
pub mod state;
pub mod tcp;

pub use commit::CommitStage;
pub use listing::{Filter, Listing};
pub use lookup::ConntrackStage;
pub use state::{Conntrack, CtConfig, CtFixes, CtRef, SharedConntrack};

#[cfg(test)]
mod tests;
