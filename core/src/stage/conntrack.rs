//! Connection tracking, as netfilter's conntrack does it for a Kubernetes node.
//!
//! Built in parts: [`tcp`] is the TCP state machine with window tracking, [`proto`]
//! the UDP, ICMP and generic tracking and the per-entry protocol state, and
//! [`crate::table::conntrack`] the connection table. The lookup and commit stages
//! (with entries pending within a batch) and NAT come next.

pub mod proto;
pub mod tcp;
