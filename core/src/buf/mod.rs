//! Packet buffers: one pool of fixed-size slots per worker, `Copy` handles into it,
//! metadata beside each slot, and batches of up to [`BATCH_MAX`] handles.
//!
//! ```text
//!  pool region (one contiguous, page-aligned allocation; registrable with io_uring)
//!  +-----------------+-----------------+-----------------+----
//!  | slot 0          | slot 1          | slot 2          | ...
//!  +-----------------+-----------------+-----------------+----
//!
//!  one slot (2048 bytes by default)
//!  +------------------+--------------------------+-------------------+
//!  | headroom (>=128) | packet data              | tailroom          |
//!  +------------------+--------------------------+-------------------+
//!  0                  head                head + len          slot_size
//!                     <- push_front grows        push_back grows ->
//!                     -> pull_front shrinks      truncate shrinks <-
//! ```
//!
//! The packet start moves both ways inside the slot (VPP `vlib_buffer_advance` over
//! `pre_data`; netstack3's prefix/body/suffix): an overlay prepends its outer headers
//! into the headroom without copying the inner frame, and decapsulation just pulls
//! the start forward. Header offsets in [`PktMeta`] are absolute slot offsets, so they
//! stay valid while the start moves.
//!
//! Every slot has an explicit [`Owner`]: free, driver (the kernel may be writing it
//! through io_uring) or pipeline. Freeing a slot twice is an error, not corruption.

mod batch;
mod handle;
mod meta;
mod pool;

pub use batch::{BATCH_MAX, Batch};
pub use handle::{PktId, PortId};
pub use meta::{CsumState, L3Kind, Owner, PktFlags, PktMeta};
pub use pool::{BufError, BufPool, DEFAULT_HEADROOM, DEFAULT_SLOT_SIZE, PAGE_SIZE};
