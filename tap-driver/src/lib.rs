//! podplane-tap: runs podplane pipelines on Linux TAP devices.
//!
//! A [`TapDevice`] is one TAP (plain through the tun-tap crate; multiqueue or
//! vnet-header devices through the `TUNSETIFF` ioctl, which tun-tap cannot ask
//! for). A [`Driver`] owns a worker's devices and its buffer pool and moves frames
//! between them in rounds: [`Driver::recv`] waits for frames and hands them over as a
//! batch, the caller runs its pipeline on [`Driver::pool_mut`], and [`Driver::send`]
//! writes what the pipeline transmits. Two backends do the I/O:
//!
//! - io_uring (`IoKind::Uring`): reads posted ahead into pool slots (no copy), writes
//!   from the slots, one `io_uring_enter` per round, the pool registered as a fixed
//!   buffer where the kernel allows;
//! - `poll(2)` + `read(2)`/`write(2)` (`IoKind::Poll`): the fallback, chosen
//!   automatically when io_uring is unavailable (`kernel.io_uring_disabled`, seccomp).
//!
//! Each device adds at most [`PORT_QUOTA`] frames to a round, so a pod flooding its
//! TAP cannot starve the others. A device that disappears (its namespace deleted) is
//! marked gone and reported by [`Driver::take_gone`]; the others go on.
//!
//! Opening a TAP needs `CAP_NET_ADMIN` (root): the error says so.

#![deny(missing_docs)]

mod device;
mod driver;
mod poll;
mod uring;
pub mod vnet;

use std::io;

use thiserror::Error;

pub use device::{TapDevice, TapFlags};
pub use driver::{Driver, IoKind, IoMode, PORT_QUOTA, PortStats};

/// Why a TAP operation failed.
#[derive(Debug, Error)]
pub enum TapError {
    /// `/dev/net/tun` could not be opened or the device could not be created.
    #[error(
        "couldn't create TAP device {name:?} via /dev/net/tun (needs root / CAP_NET_ADMIN and the tun module): {source}"
    )]
    Open {
        /// Requested device name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// Switching the descriptor's blocking mode failed.
    #[error("couldn't set the blocking mode of TAP device {name:?}: {source}")]
    NonBlocking {
        /// Device name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// The device is already driven by this driver.
    #[error("TAP device {name:?} is already driven")]
    Duplicate {
        /// Device name.
        name: String,
    },
    /// The buffer pool could not be made.
    #[error("buffer pool: {0}")]
    Pool(podplane::buf::BufError),
    /// io_uring could not be set up (asked for explicitly).
    #[error("io_uring is not available here (kernel.io_uring_disabled, seccomp or an old kernel): {0}")]
    Uring(io::Error),
    /// Waiting for frames failed.
    #[error("waiting for TAP frames failed: {0}")]
    Wait(io::Error),
}
