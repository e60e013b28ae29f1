//! The driver a worker runs: its TAP devices, its buffer pool, and one I/O backend
//! (io_uring, or `poll(2)` with plain reads and writes).
//!
//! A round is [`Driver::recv`] (wait up to a timeout, then hand the frames that
//! arrived to the caller as a batch), the pipeline, and [`Driver::send`] (queue what
//! the pipeline transmits). Each device contributes at most [`PORT_QUOTA`] frames to
//! one round, so a pod that floods its TAP cannot starve another pod's traffic: both
//! backends keep that bound (io_uring by keeping at most that many reads posted per
//! device, poll by reading at most that many per round).

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use podplane::buf::{Batch, BufPool, Owner, PktId, PortId};

use crate::TapError;
use crate::device::TapDevice;
use crate::poll::PollIo;
use crate::uring::{BigBufs, UringIo};
use crate::vnet::{self, F_NEEDS_CSUM, GSO_NONE, VNET_HDR_LEN, VnetHdr};

/// Frames one device may add to one round (and io_uring reads posted per device).
pub const PORT_QUOTA: usize = 32;

/// Which I/O backend to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring when the kernel allows it, else poll.
    #[default]
    Auto,
    /// io_uring, or fail.
    Uring,
    /// io_uring without registering the pool (plain `READ`/`WRITE`), to measure what
    /// registration gains.
    UringUnregistered,
    /// `poll(2)` + `read(2)`/`write(2)`.
    Poll,
}

/// The backend a driver ended up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    /// io_uring; `fixed` when the pool is registered (`READ_FIXED`/`WRITE_FIXED`).
    Uring {
        /// The pool region is a registered buffer.
        fixed: bool,
    },
    /// `poll(2)` + `read(2)`/`write(2)`.
    Poll,
}

impl core::fmt::Display for IoKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IoKind::Uring { fixed: true } => f.write_str("io_uring (registered buffers)"),
            IoKind::Uring { fixed: false } => f.write_str("io_uring"),
            IoKind::Poll => f.write_str("poll + read/write"),
        }
    }
}

/// What the driver saw on one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames read.
    pub rx: u64,
    /// Bytes read.
    pub rx_bytes: u64,
    /// Frames written.
    pub tx: u64,
    /// Bytes written.
    pub tx_bytes: u64,
    /// Frames the pipeline sent here that could not be written (device gone or a
    /// write error); each was freed.
    pub tx_errors: u64,
    /// Read errors (the device's descriptor failed; no frame was lost to them).
    pub rx_errors: u64,
    /// TCP super-frames (GSO) read and cut into segments (each segment counts in `rx`).
    pub rx_super_frames: u64,
    /// Offloaded frames dropped: a bad `virtio_net_hdr`, an unannounced GSO type, or
    /// no buffer for a segment.
    pub rx_offload_errors: u64,
}

impl core::ops::AddAssign for PortStats {
    /// Sum another queue's (worker's) counters of the same port.
    fn add_assign(&mut self, o: PortStats) {
        self.rx += o.rx;
        self.rx_bytes += o.rx_bytes;
        self.tx += o.tx;
        self.tx_bytes += o.tx_bytes;
        self.tx_errors += o.tx_errors;
        self.rx_errors += o.rx_errors;
        self.rx_super_frames += o.rx_super_frames;
        self.rx_offload_errors += o.rx_offload_errors;
    }
}

/// One device of the driver.
#[derive(Debug)]
pub(crate) struct Dev {
    pub(crate) tap: TapDevice,
    pub(crate) port: PortId,
    pub(crate) stats: PortStats,
    /// The device went away (deleted with its namespace, say): no more reads.
    pub(crate) gone: bool,
    /// Reported through [`Driver::take_gone`] already.
    pub(crate) reported: bool,
    /// Reads posted and not completed (io_uring).
    pub(crate) reads: usize,
    /// Removed, but reads were still in flight: closed once they are back.
    pub(crate) closing: bool,
    /// Opened with `IFF_VNET_HDR` (offloads on): frames carry a `virtio_net_hdr`.
    pub(crate) vnet: bool,
    /// Receive buffers for super-frames (io_uring reads of vnet devices).
    pub(crate) big: Option<BigBufs>,
}

pub(crate) enum Io {
    Uring(Box<UringIo>),
    Poll(PollIo),
}

/// See the [module docs](self).
pub struct Driver {
    pub(crate) pool: BufPool,
    /// Devices by driver index (stable while the device is open; `None` once removed).
    pub(crate) devs: Vec<Option<Dev>>,
    /// Driver index of each pipeline port (`u16::MAX`: none).
    by_port: Vec<u16>,
    pub(crate) io: Io,
    /// Frames read and not yet handed out, in arrival order (a super-frame's
    /// segments can outnumber a batch). Its capacity is the pool's size, so it never
    /// grows.
    pub(crate) ready: VecDeque<PktId>,
}

impl core::fmt::Debug for Driver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Driver").field("kind", &self.kind()).field("devs", &self.devs).finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver with a pool of `slots` default-size slots and the backend `mode`
    /// asks for.
    ///
    /// # Errors
    /// [`TapError::Pool`] for a bad pool size; [`TapError::Uring`] when `mode` is
    /// [`IoMode::Uring`] and io_uring cannot be set up (disabled by
    /// `kernel.io_uring_disabled`, seccomp, an old kernel).
    pub fn new(mode: IoMode, slots: usize) -> Result<Self, TapError> {
        let mut pool = BufPool::with_slots(slots).map_err(TapError::Pool)?;
        let io = match mode {
            IoMode::Poll => Io::Poll(PollIo::new()),
            IoMode::Uring => Io::Uring(Box::new(UringIo::new(&mut pool, true).map_err(TapError::Uring)?)),
            IoMode::UringUnregistered => Io::Uring(Box::new(UringIo::new(&mut pool, false).map_err(TapError::Uring)?)),
            IoMode::Auto => match UringIo::new(&mut pool, true) {
                Ok(u) => Io::Uring(Box::new(u)),
                Err(_) => Io::Poll(PollIo::new()),
            },
        };
        let ready = VecDeque::with_capacity(pool.capacity());
        Ok(Driver { pool, devs: Vec::new(), by_port: Vec::new(), io, ready })
    }

    /// The backend in use.
    pub fn kind(&self) -> IoKind {
        match &self.io {
            Io::Uring(u) => IoKind::Uring { fixed: u.fixed() },
            Io::Poll(_) => IoKind::Poll,
        }
    }

    /// The pool the driver reads into; the pipeline runs on it between `recv` and
    /// `send`.
    pub fn pool(&self) -> &BufPool {
        &self.pool
    }

    /// The pool, writable.
    pub fn pool_mut(&mut self) -> &mut BufPool {
        &mut self.pool
    }

    /// Drive device `tap` as pipeline port `port`.
    ///
    /// # Errors
    /// [`TapError::NonBlocking`] when the descriptor mode cannot be set;
    /// [`TapError::Duplicate`] when a device of that name is already driven.
    pub fn add(&mut self, tap: TapDevice, port: PortId) -> Result<(), TapError> {
        if self.devs.iter().flatten().any(|d| !d.closing && d.tap.name() == tap.name()) {
            return Err(TapError::Duplicate { name: tap.name().to_owned() });
        }
        let blocking = matches!(self.io, Io::Uring(_));
        tap.set_nonblocking(!blocking)
            .map_err(|source| TapError::NonBlocking { name: tap.name().to_owned(), source })?;
        let vnet = tap.flags().vnet_hdr;
        let big = if vnet && blocking { Some(BigBufs::new()) } else { None };
        let dev = Dev {
            tap,
            port,
            stats: PortStats::default(),
            gone: false,
            reported: false,
            reads: 0,
            closing: false,
            vnet,
            big,
        };
        match self.devs.iter().position(Option::is_none) {
            Some(i) => self.devs[i] = Some(dev),
            None => self.devs.push(Some(dev)),
        }
        self.reindex();
        Ok(())
    }

    /// Stop driving the device named `name`: its posted reads are cancelled (their
    /// slots come back) and the descriptor is closed, which deletes a TAP nobody else
    /// holds. Other devices' frames are kept. Returns whether it was driven.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(i) = self.devs.iter().position(|d| d.as_ref().is_some_and(|d| !d.closing && d.tap.name() == name))
        else {
            return false;
        };
        let drained = match &mut self.io {
            Io::Uring(u) => u.cancel_dev(&mut self.pool, &mut self.devs, &mut self.ready, i),
            Io::Poll(_) => true,
        };
        if let Some(slot) = self.devs.get_mut(i) {
            if drained {
                *slot = None;
            } else if let Some(d) = slot {
                // The kernel still holds reads into our slots on this descriptor: keep
                // it (and its index) until they complete.
                d.closing = true;
                d.port = PortId::NONE;
            }
        }
        self.reindex();
        true
    }

    /// Point device `name` at another pipeline port (the configuration renumbered
    /// its ports).
    pub fn set_port(&mut self, name: &str, port: PortId) {
        if let Some(d) = self.devs.iter_mut().flatten().find(|d| d.tap.name() == name) {
            d.port = port;
        }
        self.reindex();
    }

    fn reindex(&mut self) {
        self.by_port.clear();
        for (i, d) in self.devs.iter().enumerate() {
            let Some(d) = d.as_ref().filter(|d| !d.closing) else { continue };
            let p = usize::from(d.port.0);
            if self.by_port.len() <= p {
                self.by_port.resize(p + 1, u16::MAX);
            }
            self.by_port[p] = u16::try_from(i).unwrap_or(u16::MAX);
        }
    }

    /// The devices: name, pipeline port, counters, and whether it went away.
    pub fn devices(&self) -> impl Iterator<Item = (&str, PortId, PortStats, bool)> + '_ {
        self.devs.iter().flatten().filter(|d| !d.closing).map(|d| (d.tap.name(), d.port, d.stats, d.gone))
    }

    /// Names of devices that went away since the last call (each reported once).
    pub fn take_gone(&mut self, out: &mut Vec<String>) {
        for d in self.devs.iter_mut().flatten() {
            if d.gone && !d.reported {
                d.reported = true;
                out.push(d.tap.name().to_owned());
            }
        }
    }

    /// Wait up to `timeout` for frames, then append what arrived to `batch` (each
    /// with its `in_port`, owned by the pipeline), at most [`PORT_QUOTA`] per device.
    /// Also reaps finished writes. Returns the number of frames added.
    ///
    /// # Errors
    /// [`TapError::Wait`] when the wait itself fails (not for a signal: that returns
    /// early with what is there).
    pub fn recv(&mut self, batch: &mut Batch, timeout: Duration) -> Result<usize, TapError> {
        let before = batch.len();
        let wait = if self.ready.is_empty() { timeout } else { Duration::ZERO };
        // Read only when what is waiting does not fill the batch already.
        if self.ready.len() < batch_room(batch) {
            match &mut self.io {
                Io::Uring(u) => u.recv(&mut self.pool, &mut self.devs, &mut self.ready, wait),
                Io::Poll(p) => p.recv(&mut self.pool, &mut self.devs, &mut self.ready, wait),
            }
            .map_err(TapError::Wait)?;
        }
        while !batch.is_full() {
            let Some(p) = self.ready.pop_front() else { break };
            let _ = batch.push(p);
        }
        for slot in &mut self.devs {
            if slot.as_ref().is_some_and(|d| d.closing && d.reads == 0) {
                *slot = None;
            }
        }
        Ok(batch.len() - before)
    }

    /// Transmit `tx` (pipeline port, packet): the driver owns the packets from here
    /// and frees each when its write is done (io_uring: at a later `recv`). A packet
    /// for a port with no device, or a device that went away, is counted in that
    /// device's `tx_errors` (or lost silently if no device has the port: the caller
    /// counts those by the return value) and freed. Returns the packets not queued.
    pub fn send(&mut self, tx: &[(PortId, PktId)]) -> usize {
        let mut unrouted = 0;
        for &(port, pkt) in tx {
            let di = self.by_port.get(usize::from(port.0)).copied().unwrap_or(u16::MAX);
            let Some(dev) = self.devs.get_mut(usize::from(di)).and_then(Option::as_mut) else {
                unrouted += 1;
                let _ = self.pool.free(pkt);
                continue;
            };
            if dev.gone || (dev.vnet && !push_vnet_hdr(&mut self.pool, pkt)) {
                dev.stats.tx_errors += 1;
                let _ = self.pool.free(pkt);
                continue;
            }
            match &mut self.io {
                Io::Uring(u) => u.queue_write(&mut self.pool, dev, di, pkt),
                Io::Poll(_) => crate::poll::write_now(&mut self.pool, dev, pkt),
            }
        }
        if let Io::Uring(u) = &mut self.io {
            u.flush(&mut self.pool, &mut self.devs, &mut self.ready);
        }
        unrouted
    }

    /// Free packets the caller is done with (host-bound packets today).
    pub fn free(&mut self, pkts: &[PktId]) {
        for &p in pkts {
            let _ = self.pool.free(p);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Io::Uring(u) = &mut self.io
            && !u.shutdown(&mut self.pool, &mut self.devs)
        {
            // The kernel may still write into slots it holds: never free memory it
            // could write to. Leak the region instead (a bounded, one-off cost at exit).
            let dummy = BufPool::with_slots(1);
            if let Ok(d) = dummy {
                std::mem::forget(std::mem::replace(&mut self.pool, d));
            }
        }
    }
}

fn batch_room(batch: &Batch) -> usize {
    podplane::buf::BATCH_MAX - batch.len()
}

/// Prepend an empty `virtio_net_hdr` (no offload: the frame is complete) for a vnet
/// device. False when the packet has no headroom left.
fn push_vnet_hdr(pool: &mut BufPool, pkt: PktId) -> bool {
    match pool.push_front(pkt, VNET_HDR_LEN) {
        Ok(h) => {
            h.copy_from_slice(&VnetHdr::default().emit());
            true
        }
        Err(_) => false,
    }
}

/// Give a read's slot to the pipeline as a frame of `len` bytes from `dev`.
pub(crate) fn deliver(pool: &mut BufPool, dev: &mut Dev, pkt: PktId, len: usize, ready: &mut VecDeque<PktId>) {
    if len == 0 || pool.set_owner(pkt, Owner::Pipeline).is_err() || pool.set_rx_len(pkt, len).is_err() {
        let _ = pool.free(pkt);
        return;
    }
    pool.meta_mut(pkt).in_port = dev.port;
    dev.stats.rx += 1;
    dev.stats.rx_bytes += len as u64;
    // Cannot be full: it holds at most every slot of the pool.
    ready.push_back(pkt);
}

/// Take a frame read from a vnet device (`virtio_net_hdr` first): complete its
/// checksum, or cut a super-frame into segments, into fresh slots on `ready`.
pub(crate) fn ingest(pool: &mut BufPool, dev: &mut Dev, bytes: &[u8], ready: &mut VecDeque<PktId>) {
    let Some((h, frame)) = bytes.split_first_chunk::<VNET_HDR_LEN>() else {
        dev.stats.rx_offload_errors += 1;
        return;
    };
    let h = VnetHdr::parse(h);
    let port = dev.port;
    if h.gso_type == GSO_NONE {
        let Some(pkt) = pool.alloc(Owner::Pipeline) else {
            dev.stats.rx_offload_errors += 1;
            return;
        };
        let ok = pool.set_data(pkt, frame).is_ok()
            && (h.flags & F_NEEDS_CSUM == 0 || vnet::complete_checksum(pool.data_mut(pkt), &h).is_ok());
        if !ok || frame.is_empty() {
            let _ = pool.free(pkt);
            dev.stats.rx_offload_errors += 1;
            return;
        }
        pool.meta_mut(pkt).in_port = port;
        dev.stats.rx += 1;
        dev.stats.rx_bytes += frame.len() as u64;
        ready.push_back(pkt);
        return;
    }
    let (mut n, mut b) = (0u64, 0u64);
    let r = vnet::segment_tcp(frame, &h, pool, Owner::Pipeline, |pool, pkt| {
        pool.meta_mut(pkt).in_port = port;
        n += 1;
        b += u64::from(pool.meta(pkt).len());
        ready.push_back(pkt);
    });
    dev.stats.rx += n;
    dev.stats.rx_bytes += b;
    match r {
        Ok(_) => dev.stats.rx_super_frames += 1,
        Err(_) => dev.stats.rx_offload_errors += 1,
    }
}

/// Errors a read or write may return that mean the device is gone (deleted, or
/// deleted with its namespace), not a transient failure: tun answers `EBADFD` once
/// its descriptor is detached (`tun_get` fails). `EIO` is not one of them: a write
/// to a TAP whose interface is down fails with `EIO` (`tun_get_user`), and comes
/// back once the pod brings it up.
pub(crate) fn is_gone(errno: i32) -> bool {
    matches!(errno, libc::EBADFD | libc::ENODEV | libc::EBADF)
}

/// The descriptor of a device.
pub(crate) fn fd(dev: &Dev) -> i32 {
    dev.tap.as_raw_fd()
}

pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
