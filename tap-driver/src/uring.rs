//! The io_uring backend: every device keeps [`PORT_QUOTA`] reads posted, each
//! straight into a pool slot lent to the kernel ([`Owner::Driver`]); transmitted
//! frames are queued as writes from their slots. A round is one `io_uring_enter`
//! that submits everything queued and waits (with a timeout) for a completion; the
//! completions are then read from the shared ring without further system calls.
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

use std::io;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, squeue, types};
use podplane::buf::{Batch, BufPool, Owner, PktId};

use crate::driver::{Dev, PORT_QUOTA, deliver, fd, is_gone};

const WRITE: u64 = 1 << 63;
const CANCEL: u64 = 1 << 62;
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
    /// Frames reaped while not in `recv` (removal, shutdown).
    spill: Batch,
}

impl UringIo {
    /// Set up a ring and try to register the pool region.
    pub(crate) fn new(pool: &mut BufPool) -> io::Result<Self> {
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
        let fixed = unsafe { ring.submitter().register_buffers(&[iov]) }.is_ok();
        Ok(UringIo { ring, fixed, writes: 0, spill: Batch::new() })
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
    pub(crate) fn flush(&mut self, pool: &mut BufPool, devs: &mut [Option<Dev>]) {
        let _ = self.ring.submit();
        // Writes to a TAP complete at submission: reap them now so their slots return.
        let mut spill = core::mem::take(&mut self.spill);
        self.reap(pool, devs, &mut spill, true);
        self.spill = spill;
    }

    pub(crate) fn recv(
        &mut self,
        pool: &mut BufPool,
        devs: &mut [Option<Dev>],
        batch: &mut Batch,
        wait: Duration,
    ) -> io::Result<()> {
        // Frames reaped at the last flush come first.
        while !batch.is_full() {
            let Some(p) = self.spill.pop() else { break };
            let _ = batch.push(p);
        }
        self.post_reads(pool, devs);
        let waited = if self.ring.completion().is_empty() && !wait.is_zero() && batch.is_empty() {
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
        self.reap(pool, devs, batch, false);
        Ok(())
    }

    /// Handle completions while `batch` has room (all of them when `writes_only` is
    /// false and the batch is large enough; frames go to `batch`).
    fn reap(&mut self, pool: &mut BufPool, devs: &mut [Option<Dev>], batch: &mut Batch, _writes_only: bool) {
        let mut cq = self.ring.completion();
        while !batch.is_full() {
            let Some(cqe) = cq.next() else { break };
            let (ud, res) = (cqe.user_data(), cqe.result());
            if ud & CANCEL != 0 {
                continue;
            }
            let pkt_index = u32::try_from(ud & 0xffff_ffff).unwrap_or(u32::MAX);
            let di = usize::try_from((ud >> 32) & 0xffff).unwrap_or(usize::MAX);
            let Some(pkt) = pool_pkt(pool, pkt_index) else { continue };
            let dev = devs.get_mut(di).and_then(Option::as_mut);
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
                deliver(pool, dev, pkt, usize::try_from(res).unwrap_or(0), batch);
                continue;
            }
            let _ = pool.free(pkt);
            if res == -libc::ECANCELED || res == -libc::EAGAIN || res == -libc::EINTR {
                continue;
            }
            // A TAP read returns a frame or fails; 0 or an error means the device went
            // away (its namespace was deleted, say).
            dev.stats.rx_errors += 1;
            if res == 0 || is_gone(-res) {
                dev.gone = true;
            }
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
        ready: &mut Vec<PktId>,
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
        let mut frames = Vec::new();
        let writes = self.writes;
        let done = self.drain(pool, devs, &mut frames, |devs| devs.iter().flatten().all(|d| d.reads == 0));
        let done = done && (self.writes == 0 || writes == 0);
        for p in frames {
            let _ = pool.free(p);
        }
        done
    }

    fn drain(
        &mut self,
        pool: &mut BufPool,
        devs: &mut [Option<Dev>],
        ready: &mut Vec<PktId>,
        done: impl Fn(&[Option<Dev>]) -> bool,
    ) -> bool {
        #[allow(clippy::disallowed_methods)] // a bounded wait on the real clock (driver code)
        let end = Instant::now() + Duration::from_secs(1);
        loop {
            let ts = types::Timespec::new().nsec(10_000_000);
            let _ = self.ring.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
            let mut spill = core::mem::take(&mut self.spill);
            self.reap(pool, devs, &mut spill, false);
            for k in 0..spill.len() {
                ready.push(spill.pkt(k));
            }
            spill.clear();
            self.spill = spill;
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

/// The handle of slot `index` of `pool`, if it is one of its slots lent to the kernel.
fn pool_pkt(pool: &BufPool, index: u32) -> Option<PktId> {
    pool.handle_of(index).filter(|p| pool.meta(*p).owner() == Owner::Driver)
}
