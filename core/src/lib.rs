//! podplane: a userspace packet dataplane for Kubernetes nodes.
//!
//! The crate holds everything that does not do I/O: packet buffers ([`buf`]), zero-copy
//! wire formats ([`wire`]), the stage pipeline with its drop reasons, counters and trace
//! ([`pipeline`]), and the stages themselves ([`stage`]). Drivers (TAP, the simulator,
//! pcap replay) own the clock and the devices and hand batches to a [`pipeline::Pipeline`].
//!
//! Invariants the whole crate keeps (see `shared/design.md`):
//! - no panic, no unbounded allocation and no undefined behaviour whatever the packet
//!   bytes; every dropped packet is counted with a [`pipeline::DropReason`];
//! - no clock reads: time comes in through [`pipeline::Context`];
//! - no randomness but the seeded RNG in the context, and no iteration order that
//!   varies between runs.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod buf;
#[cfg(feature = "config")]
pub mod config;
pub mod pipeline;
pub mod stage;
pub mod steer;
pub mod table;
#[cfg(any(test, feature = "testutils"))]
pub mod testutil;
pub mod time;
pub mod wire;

pub use buf::{Batch, BufPool, PktId, PktMeta, PortId};
pub use pipeline::{Context, Disposition, DropReason, Pipeline, Stage};
pub use time::{Duration, Instant};
