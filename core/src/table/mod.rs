//! Data structures the stages share: the bridge FDB today; the LPM, flow table,
//! Maglev and port allocator as their stages land.

pub mod conntrack;
pub mod fdb;
pub mod interner;
pub mod lpm;
pub mod maglev;
pub mod poptrie;
