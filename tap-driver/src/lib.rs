//! podplane-tap: moves frames between Linux TAP devices and podplane buffers.
//!
//! Today: a [`TapPort`] opens a TAP device (plain, no `IFF_VNET_HDR`, through the
//! tun-tap crate), receives frames straight into pool slots at the default headroom
//! (no copy) in non-blocking batches, and transmits packets from their slots. The
//! io_uring path, vnet_hdr offloads, multiqueue, namespace moves and workers are the
//! TAP-driver issue's work and build on this.
//!
//! Opening a TAP needs `CAP_NET_ADMIN` (root): the error says so.

#![deny(missing_docs)]

use std::io;

use podplane::buf::{Batch, BufPool, Owner, PktId, PortId};
use thiserror::Error;

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
    /// Switching the descriptor to non-blocking failed.
    #[error("couldn't make TAP device {name:?} non-blocking: {source}")]
    NonBlocking {
        /// Device name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// A write to the device failed.
    #[error("write to TAP device {name:?} failed: {source}")]
    Write {
        /// Device name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
}

impl std::os::unix::io::AsRawFd for TapPort {
    /// The device's descriptor, for `poll(2)`.
    fn as_raw_fd(&self) -> std::os::unix::io::RawFd {
        self.iface.as_raw_fd()
    }
}

/// One TAP device bound to a pipeline port.
#[derive(Debug)]
pub struct TapPort {
    iface: tun_tap::Iface,
    port: PortId,
    /// Read errors other than "would block" (each dropped nothing: no frame was read).
    pub read_errors: u64,
}

impl TapPort {
    /// Create (or attach to) TAP device `name` for pipeline port `port`, non-blocking.
    ///
    /// # Errors
    /// [`TapError::Open`] without `CAP_NET_ADMIN` or `/dev/net/tun`;
    /// [`TapError::NonBlocking`] if the descriptor cannot be switched.
    pub fn open(name: &str, port: PortId) -> Result<Self, TapError> {
        let iface = tun_tap::Iface::without_packet_info(name, tun_tap::Mode::Tap)
            .map_err(|source| TapError::Open { name: name.to_owned(), source })?;
        iface.set_non_blocking().map_err(|source| TapError::NonBlocking { name: name.to_owned(), source })?;
        Ok(TapPort { iface, port, read_errors: 0 })
    }

    /// The kernel's name of the device.
    pub fn name(&self) -> &str {
        self.iface.name()
    }

    /// The pipeline port.
    pub fn port(&self) -> PortId {
        self.port
    }

    /// Point the device at another pipeline port (the node's configuration renumbered
    /// its ports).
    pub fn set_port(&mut self, port: PortId) {
        self.port = port;
    }

    /// Read frames until the device has none left or `batch` is full. Each frame lands
    /// in a fresh slot at the default headroom; pool exhaustion leaves the frame in the
    /// kernel's queue (the kernel counts its own drops when that queue overflows) and
    /// is counted in [`BufPool::exhausted`]. Returns the number read.
    pub fn recv_batch(&mut self, pool: &mut BufPool, batch: &mut Batch) -> usize {
        let mut n = 0;
        while !batch.is_full() {
            let Some(pkt) = pool.alloc(Owner::Driver) else { break };
            match self.iface.recv(pool.rx_buffer(pkt)) {
                Ok(len) if pool.set_rx_len(pkt, len).is_ok() => {
                    let _ = pool.set_owner(pkt, Owner::Pipeline);
                    pool.meta_mut(pkt).in_port = self.port;
                    let _ = batch.push(pkt);
                    n += 1;
                }
                Ok(_) => {
                    let _ = pool.free(pkt);
                }
                Err(e) => {
                    let _ = pool.free(pkt);
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.read_errors += 1;
                    }
                    break;
                }
            }
        }
        n
    }

    /// Write one packet to the device.
    ///
    /// # Errors
    /// [`TapError::Write`] with the OS error; the packet is not freed (the caller
    /// owns it).
    pub fn send(&self, pool: &BufPool, pkt: PktId) -> Result<(), TapError> {
        self.iface
            .send(pool.data(pkt))
            .map(|_| ())
            .map_err(|source| TapError::Write { name: self.name().to_owned(), source })
    }
}
