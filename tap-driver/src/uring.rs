//! The io_uring backend: every device keeps [`PORT_QUOTA`] reads posted, each
//! straight into a pool slot lent to the kernel ([`Owner::Driver`]); transmitted
//! frames are queued as writes from their slots. A round is one `io_uring_enter`
//! that submits everything queued and waits (with a timeout) for a completion; the
//! completions are then read from the shared ring without further system calls.
//!
//! Devices opened with `IFF_VNET_HDR` may hand over 64 KiB TCP super-frames, which
//! do not fit a slot: their reads go into [`BIG_DEPTH`] 64 KiB buffers of the device
//! instead ([`BigBufs`]), and are copied or segmented into slots on completion.
//!
//! The pool region is registered (`IORING_REGISTER_BUFFERS`) when the kernel allows
//! it, and reads and writes then use `READ_FIXED` / `WRITE_FIXED`, which skip
//! pinning the pages on every operation.
//!
//! Memory safety rests on three rules, each kept here: a slot is lent only while its
//! owner is `Driver` and is not touched until its completion is reaped; a device's
//! descriptor is closed only after all its reads have completed or been cancelled
//! (or the device is kept, closed later); and the driver does not free its pool while
//! any operation is in flight (`shutdown`, else the pool is leaked).

use std::alloc::Layout;
use std::collections::VecDeque;
use std::io;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, squeue, types};
use podplane::buf::{BufPool, Owner, PktId};

use crate::driver::{Dev, PORT_QUOTA, deliver, fd, ingest, is_gone};
use crate::vnet::VNET_HDR_LEN;

const WRITE: u64 = 1 << 63;
const CANCEL: u64 = 1 << 62;
const BIG: u64 = 1 << 61;
/// Bytes of one super-frame buffer: a 64 KiB GSO frame, its Ethernet header and the
/// `virtio_net_hdr`, rounded up.
pub(crate) const BIG_LEN: usize = 65536 + 256;
/// Super-frame reads a vnet device keeps posted (16 x 64 KiB of memory per device).
pub(crate) const BIG_DEPTH: usize = 16;

/// The layout of one device's buffers, checked when compiling: no fallback size that
/// `ptr` could overrun.
const BIG_LAYOUT: Layout = match Layout::from_size_align(BIG_LEN * BIG_DEPTH, 4096) {
    Ok(l) => l,
    Err(_) => panic!("BIG_LEN * BIG_DEPTH is a valid layout"),
};

/// A vnet device's super-frame receive buffers: one raw allocation the kernel writes
/// through io_uring. Raw, not a `Vec`, so that no Rust reference spans a buffer while
/// the kernel writes it; a buffer is read only after its completion is reaped.
pub(crate) struct BigBufs {
    base: NonNull<u8>,
    layout: Layout,
    posted: [bool; BIG_DEPTH],
}

impl core::fmt::Debug for BigBufs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BigBufs").field("posted", &self.posted).finish()
    }
}

impl BigBufs {
    pub(crate) fn new() -> Self {
        let layout = BIG_LAYOUT;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(base) = NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        BigBufs { base, layout, posted: [false; BIG_DEPTH] }
    }

    fn ptr(&self, i: usize) -> *mut u8 {
        // SAFETY: `i < BIG_DEPTH` (callers iterate the posted array), so the offset is
        // inside the allocation.
        unsafe { self.base.as_ptr().add(i.min(BIG_DEPTH - 1) * BIG_LEN) }
    }

    /// The first `len` bytes of buffer `i`, once its read has completed.
    fn filled(&self, i: usize, len: usize) -> &[u8] {
        // SAFETY: buffer `i` is not posted (its completion was reaped), so the kernel no
        // longer writes it; `len <= BIG_LEN` and the bytes were zeroed at allocation.
        unsafe { core::slice::from_raw_parts(self.ptr(i), len.min(BIG_LEN)) }
    }
}

impl Drop for BigBufs {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the device owning these buffers
        // is dropped only once none of its reads is in flight (see the module docs).
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

// SAFETY: the buffers are owned by their device alone, as a `Box<[u8]>` would be.
unsafe impl Send for BigBufs {}
/// Ring size: reads for 32 devices at the quota, plus a batch of writes.
const ENTRIES: u32 = 2048;

fn user_data(kind: u64, dev: u16, pkt: PktId) -> u64 {
    kind | (u64::from(dev) << 32) | pkt.index() as u64
}

/// State of the io_uring backend.
pub(crate) struct UringIo {
    ring: IoUring,
    fixed: bool,
    /// Writes queued or in flight.
    writes: usize,
}

impl UringIo {
    /// Set up a ring and try to register the pool region.
    pub(crate) fn new(pool: &mut BufPool, register: bool) -> io::Result<Self> {
        let ring = IoUring::builder().setup_cqsize(ENTRIES * 2).build(ENTRIES)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG (kernel < 5.11)",
            ));
        }
        let (base, len) = pool.region_raw();
        let iov = libc::iovec { iov_base: base.cast(), iov_len: len };
        // SAFETY: the region is one live allocation of `len` bytes that outlives the
        // ring (the driver shuts the ring down before the pool is dropped).
        let fixed = register && unsafe { ring.submitter().register_buffers(&[iov]) }.is_ok();
        Ok(UringIo { ring, fixed, writes: 0 })
    }

    pub(crate) fn fixed(&self) -> bool {
        self.fixed
    }

    /// Push one entry, submitting first if the submission queue is full.
    fn push(&mut self, e: &squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: every entry built here points into a slot lent to the kernel
            // (owner `Driver`) of the pool that outlives the ring, or is a cancel.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return true;
            }
            let _ = self.ring.submit();
        }
        false
    }

    /// Post reads until every live device has its quota in flight.
    fn post_reads(&mut self, pool: &mut BufPool, devs: &mut [Option<Dev>]) {
        let headroom = pool.default_headroom();
        for (i, d) in devs.iter_mut().enumerate() {
            let Some(dev) = d.as_mut().filter(|d| !d.gone) else { continue };
            let di = u16::try_from(i).unwrap_or(u16::MAX);
            if dev.vnet {
                self.post_big(dev, di);
                continue;
            }
            while dev.reads < PORT_QUOTA {
                let Some(pkt) = pool.alloc(Owner::Driver) else { return };
                let Some((ptr, room)) = pool.io_buffer(pkt, headroom) else {
                    let _ = pool.free(pkt);
                    return;
                };
                let len = u32::try_from(room).unwrap_or(u32::MAX);
                let target = types::Fd(fd(dev));
                let e = if self.fixed {
                    opcode::ReadFixed::new(target, ptr, len, 0).build()
                } else {
                    opcode::Read::new(target, ptr, len).build()
                };
                if !self.push(&e.user_data(user_data(0, di, pkt))) {
                    let _ = pool.free(pkt);
                    return;
                }
                dev.reads += 1;
            }
        }
    }

    /// Post a read into every free super-frame buffer of `dev`.
    fn post_big(&mut self, dev: &mut Dev, di: u16) {
        let target = types::Fd(fd(dev));
        for k in 0..BIG_DEPTH {
            let Some(big) = dev.big.as_mut() else { return };
            if big.posted[k] {
                continue;
            }
            let len = u32::try_from(BIG_LEN).unwrap_or(u32::MAX);
            let e = opcode::Read::new(target, big.ptr(k), len).build();
            let ud = BIG | (u64::from(di) << 32) | k as u64;
            if !self.push(&e.user_data(ud)) {
                return;
            }
            big.posted[k] = true;
            dev.reads += 1;
        }
    }

    /// Queue a write of `pkt` to `dev` (index `di`); submitted at `flush`.
    pub(crate) fn queue_write(&mut self, pool: &mut BufPool, dev: &mut Dev, di: u16, pkt: PktId) {
        let (head, len) = {
            let m = pool.meta(pkt);
            (usize::from(m.head()), u32::from(m.len()))
        };
        let buf = if pool.set_owner(pkt, Owner::Driver).is_ok() { pool.io_buffer(pkt, head) } else { None };
        let Some((ptr, _)) = buf else {
            dev.stats.tx_errors += 1;
            let _ = pool.free(pkt);
            return;
        };
        let target = types::Fd(fd(dev));
        let e = if self.fixed {
            opcode::WriteFixed::new(target, ptr.cast_const(), len, 0).build()
        } else {
            opcode::Write::new(target, ptr.cast_const(), len).build()
        };
        if self.push(&e.user_data(user_data(WRITE, di, pkt))) {
            self.writes += 1;
        } else {
            dev.stats.tx_errors += 1;
            let _ = pool.free(pkt);
        }
    }

    /// Submit the queued writes (one system call for the batch).
    pub(crate) fn flush(&mut self, pool: &mut BufPool, devs: &mut [Option<Dev>], ready: &mut VecDeque<PktId>) {
        let _ = self.ring.submit();
        // Writes to a TAP complete at submission: reap them now so their slots return.
        self.reap(pool, devs, ready);
    }

    pub(crate) fn recv(
        &mut self,
        pool: &mut BufPool,
        devs: &mut [Option<Dev>],
        ready: &mut VecDeque<PktId>,
        wait: Duration,
    ) -> io::Result<()> {
        self.post_reads(pool, devs);
        let waited = if self.ring.completion().is_empty() && !wait.is_zero() {
            let ts = types::Timespec::new().sec(wait.as_secs()).nsec(wait.subsec_nanos());
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        } else {
            self.ring.submit()
        };
        match waited {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {}
            Err(e) => return Err(e),
        }
        self.reap(pool, devs, ready);
        Ok(())
    }

    /// Handle every completion; frames go to `ready` in completion order.
    fn reap(&mut self, pool: &mut BufPool, devs: &mut [Option<Dev>], ready: &mut VecDeque<PktId>) {
        let mut cq = self.ring.completion();
        for cqe in &mut cq {
            let (ud, res) = (cqe.user_data(), cqe.result());
            if ud & CANCEL != 0 {
                continue;
            }
            let low = u32::try_from(ud & 0xffff_ffff).unwrap_or(u32::MAX);
            let di = usize::try_from((ud >> 32) & 0xffff).unwrap_or(usize::MAX);
            let dev = devs.get_mut(di).and_then(Option::as_mut);
            if ud & BIG != 0 {
                let Some(dev) = dev else { continue };
                let k = usize::try_from(low).unwrap_or(usize::MAX);
                dev.reads = dev.reads.saturating_sub(1);
                let Some(big) = dev.big.take() else { continue };
                if let Some(p) = big_posted(&big, k) {
                    let mut big = big;
                    big.posted[p] = false;
                    if res > 0 {
                        let n = usize::try_from(res).unwrap_or(0);
                        ingest(pool, dev, big.filled(p, n.max(VNET_HDR_LEN)).get(..n).unwrap_or(&[]), ready);
                    } else {
                        read_failed(dev, res);
                    }
                    dev.big = Some(big);
                } else {
                    dev.big = Some(big);
                }
                continue;
            }
            let Some(pkt) = pool_pkt(pool, low) else { continue };
            if ud & WRITE != 0 {
                self.writes = self.writes.saturating_sub(1);
                if let Some(dev) = dev {
                    if res >= 0 {
                        dev.stats.tx += 1;
                        dev.stats.tx_bytes += u64::try_from(res).unwrap_or(0);
                    } else {
                        dev.stats.tx_errors += 1;
                        dev.gone |= is_gone(-res);
                    }
                }
                let _ = pool.free(pkt);
                continue;
            }
            let Some(dev) = dev else {
                let _ = pool.free(pkt);
                continue;
            };
            dev.reads = dev.reads.saturating_sub(1);
            if res > 0 {
                deliver(pool, dev, pkt, usize::try_from(res).unwrap_or(0), ready);
                continue;
            }
            let _ = pool.free(pkt);
            read_failed(dev, res);
        }
        cq.sync();
    }

    /// Cancel device `i`'s reads and wait (at most a second) for them to come back;
    /// other devices' frames that complete meanwhile go to `ready`. Returns whether
    /// every read came back (else the caller must keep the device open).
    pub(crate) fn cancel_dev(
        &mut self,
        pool: &mut BufPool,
        devs: &mut [Option<Dev>],
        ready: &mut VecDeque<PktId>,
        i: usize,
    ) -> bool {
        let Some(target) = devs.get(i).and_then(Option::as_ref).map(fd) else { return true };
        if let Some(d) = devs.get_mut(i).and_then(Option::as_mut) {
            d.gone = true;
        }
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(target)).all()).build().user_data(CANCEL);
        self.push(&e);
        self.drain(pool, devs, ready, |devs| devs.get(i).and_then(Option::as_ref).is_none_or(|d| d.reads == 0))
    }

    /// Cancel everything and wait for every operation (at most a second). Returns
    /// whether nothing is left in flight.
    pub(crate) fn shutdown(&mut self, pool: &mut BufPool, devs: &mut [Option<Dev>]) -> bool {
        for d in devs.iter_mut().flatten() {
            d.gone = true;
        }
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(CANCEL);
        self.push(&e);
        let mut frames = VecDeque::new();
        let done = self.drain(pool, devs, &mut frames, |devs| devs.iter().flatten().all(|d| d.reads == 0));

        for p in frames {
            let _ = pool.free(p);
        }
        done
    }

    fn drain(
        &mut self,
        pool: &mut BufPool,
        devs: &mut [Option<Dev>],
        ready: &mut VecDeque<PktId>,
        done: impl Fn(&[Option<Dev>]) -> bool,
    ) -> bool {
        #[allow(clippy::disallowed_methods)] // a bounded wait on the real clock (driver code)
        let end = Instant::now() + Duration::from_secs(1);
        loop {
            let ts = types::Timespec::new().nsec(10_000_000);
            let _ = self.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
            self.reap(pool, devs, ready);
            if done(devs) && self.writes == 0 {
                return true;
            }
            #[allow(clippy::disallowed_methods)]
            if Instant::now() >= end {
                return done(devs);
            }
        }
    }
}

/// A failed or empty read: the device went away, or a transient error.
fn read_failed(dev: &mut Dev, res: i32) {
    if res == -libc::ECANCELED || res == -libc::EAGAIN || res == -libc::EINTR {
        return;
    }
    // A TAP read returns a frame or fails; 0 or EBADFD means the device went away (its
    // namespace was deleted, say).
    dev.stats.rx_errors += 1;
    if res == 0 || is_gone(-res) {
        dev.gone = true;
    }
}

/// `k` if it names a posted buffer.
fn big_posted(big: &BigBufs, k: usize) -> Option<usize> {
    big.posted.get(k).copied().unwrap_or(false).then_some(k)
}

/// The handle of slot `index` of `pool`, if it is one of its slots lent to the kernel.
fn pool_pkt(pool: &BufPool, index: u32) -> Option<PktId> {
    pool.handle_of(index).filter(|p| pool.meta(*p).owner() == Owner::Driver)
}
