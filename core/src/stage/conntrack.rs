//! Connection tracking, as netfilter's conntrack does it for a Kubernetes node.
//!
//! Built in parts: [`tcp`] is the TCP state machine with window tracking; the
//! connection table and the stage come next.

pub mod tcp;
