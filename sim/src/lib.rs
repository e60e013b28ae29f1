//! podplane-sim: drives podplane pipelines deterministically, with no root and no
//! real time.
//!
//! Today it holds the pieces the foundation needs: a [`clock::VirtualClock`], a seeded
//! traffic generator ([`traffic::Traffic`]) that makes a reproducible mix of valid and
//! malformed frames, and [`feed::Feeder`], which runs frames through a pipeline in
//! batches the way a driver does (load into slots, process, transmit and free). The
//! discrete-event engine with links, smoltcp hosts and the cluster builder is the
//! simulator issue's work and builds on these.
//!
//! Everything random comes from one seed: the same seed gives the same frames, the
//! same batches and so the same counters, bit for bit.

#![deny(missing_docs)]

pub mod clock;
pub mod feed;
pub mod traffic;
