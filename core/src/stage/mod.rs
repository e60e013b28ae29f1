//! The stages, one module each. The node path follows netfilter's order (design.md):
//! parse → source check → decap → bridge → conntrack → DNAT/LB → policy → route →
//! SNAT → commit → encap → L2 rewrite → egress. Stages land one issue at a time.

pub mod arp;
pub mod bridge;
pub mod conntrack;
pub mod egress;
pub mod fastpath;
pub mod lb;
pub mod nat;
pub mod overlay;
pub mod parse;
pub mod route;
pub mod source_check;
pub mod xconnect;

pub use arp::ArpStage;
pub use bridge::BridgeStage;
pub use egress::EgressStage;
pub use fastpath::{FastPathStage, OffloadStage};
pub use nat::NatStage;
pub use overlay::{DecapStage, EncapStage};
pub use parse::ParseStage;
pub use route::RouteStage;
pub use source_check::SourceCheckStage;
pub use xconnect::XconnectStage;
