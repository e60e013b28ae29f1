//! The fallback backend: `poll(2)` over the devices, then plain `read(2)` of each
//! ready one (non-blocking, at most [`PORT_QUOTA`] per device per round) and a
//! `write(2)` per transmitted frame. One system call per frame, plus one `poll` per
//! round: what io_uring saves. Plain devices are read straight into pool slots; vnet
//! devices into one 64 KiB buffer (a super-frame does not fit a slot), then copied or
//! segmented into slots.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use podplane::buf::{BufPool, Owner, PktId};

use crate::driver::{Dev, PORT_QUOTA, deliver, fd, ingest, is_gone, last_errno};
use crate::uring::BIG_LEN;

/// State of the poll backend: the `pollfd` array and the super-frame buffer, both
/// made once and reused every round.
#[derive(Debug)]
pub(crate) struct PollIo {
    fds: Vec<libc::pollfd>,
    which: Vec<usize>,
    big: Vec<u8>,
}

impl PollIo {
    pub(crate) fn new() -> Self {
        PollIo { fds: Vec::new(), which: Vec::new(), big: vec![0; BIG_LEN] }
    }

    pub(crate) fn recv(
        &mut self,
        pool: &mut BufPool,
        devs: &mut [Option<Dev>],
        ready: &mut VecDeque<PktId>,
        wait: Duration,
    ) -> io::Result<()> {
        self.fds.clear();
        self.which.clear();
        for (i, d) in devs.iter().enumerate() {
            if let Some(d) = d.as_ref().filter(|d| !d.gone) {
                self.fds.push(libc::pollfd { fd: fd(d), events: libc::POLLIN, revents: 0 });
                self.which.push(i);
            }
        }
        let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structures.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        for (pfd, &i) in self.fds.iter().zip(&self.which) {
            let Some(dev) = devs.get_mut(i).and_then(Option::as_mut) else { continue };
            if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 && pfd.revents & libc::POLLIN == 0 {
                dev.gone = true;
                continue;
            }
            if pfd.revents & libc::POLLIN != 0 {
                read_some(pool, dev, ready, &mut self.big);
            }
        }
        Ok(())
    }
}

/// `read(2)` into `buf`: the byte count, or the errno.
fn read_into(dev: &Dev, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: `buf` is a live, writable slice; read writes at most `buf.len()` bytes.
    let n = unsafe { libc::read(fd(dev), buf.as_mut_ptr().cast(), buf.len()) };
    match usize::try_from(n) {
        Ok(0) => Err(libc::EBADFD),
        Ok(n) => Ok(n),
        Err(_) => Err(last_errno()),
    }
}

/// Read up to [`PORT_QUOTA`] frames from `dev`.
fn read_some(pool: &mut BufPool, dev: &mut Dev, ready: &mut VecDeque<PktId>, big: &mut [u8]) {
    for _ in 0..PORT_QUOTA {
        let r = if dev.vnet {
            read_into(dev, big).map(|n| ingest(pool, dev, big.get(..n).unwrap_or(&[]), ready))
        } else {
            // Pool exhaustion leaves the frame in the kernel's queue (the kernel counts
            // its own drops when that overflows); the pool counts the failed allocation.
            let Some(pkt) = pool.alloc(Owner::Driver) else { return };
            match read_into(dev, pool.rx_buffer(pkt)) {
                Ok(n) => {
                    deliver(pool, dev, pkt, n, ready);
                    Ok(())
                }
                Err(e) => {
                    let _ = pool.free(pkt);
                    Err(e)
                }
            }
        };
        let Err(errno) = r else { continue };
        if errno == libc::EAGAIN || errno == libc::EINTR {
            return;
        }
        dev.stats.rx_errors += 1;
        if is_gone(errno) {
            dev.gone = true;
        }
        return;
    }
}

/// Write one frame now and free its slot.
pub(crate) fn write_now(pool: &mut BufPool, dev: &mut Dev, pkt: PktId) {
    let data = pool.data(pkt);
    // SAFETY: `data` is a live slice; write reads at most `data.len()` bytes from it.
    let n = unsafe { libc::write(fd(dev), data.as_ptr().cast(), data.len()) };
    if usize::try_from(n).is_ok_and(|n| n == data.len()) {
        dev.stats.tx += 1;
        dev.stats.tx_bytes += data.len() as u64;
    } else {
        dev.stats.tx_errors += 1;
        if n < 0 && is_gone(last_errno()) {
            dev.gone = true;
        }
    }
    let _ = pool.free(pkt);
}
