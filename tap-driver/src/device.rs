//! Opening a TAP device: plain through the tun-tap crate, with the flags it lacks
//! through the `TUNSETIFF` ioctl.
//!
//! tun-tap (the design card's crate) opens a plain single-queue TAP without packet
//! info and covers the default device. It has no way to ask for `IFF_MULTI_QUEUE` (one
//! descriptor per worker queue) or `IFF_VNET_HDR` (offload headers), so those devices
//! are opened here with `open("/dev/net/tun")` + `ioctl(TUNSETIFF)` through libc, as
//! tun-tap itself does underneath.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::TapError;

/// How to open a TAP device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapFlags {
    /// `IFF_MULTI_QUEUE`: the device may be opened again (one descriptor per queue;
    /// the kernel spreads flows over the queues by a symmetric flow hash).
    pub multi_queue: bool,
    /// `IFF_VNET_HDR` with offloads on (`TUNSETOFFLOAD`: checksum, TSO over IPv4 and
    /// IPv6): every frame is preceded by a 10-byte `virtio_net_hdr`, and the pod's
    /// stack may hand over frames with a partial checksum and TCP super-frames of up
    /// to 64 KiB, which the driver completes and segments. One read then carries what
    /// would otherwise take up to 45.
    pub vnet_hdr: bool,
}

enum Handle {
    /// Opened by tun-tap (the plain device).
    Crate(tun_tap::Iface),
    /// Opened here (flags tun-tap lacks).
    Ioctl(OwnedFd),
}

impl core::fmt::Debug for Handle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Handle::Crate(_) => f.write_str("tun-tap"),
            Handle::Ioctl(fd) => write!(f, "fd {}", fd.as_raw_fd()),
        }
    }
}

/// An open TAP device (one queue of it). The device lives while a descriptor of it is
/// open; moving its network interface into another namespace keeps the descriptor
/// valid (`ip link set NAME netns POD`).
#[derive(Debug)]
pub struct TapDevice {
    handle: Handle,
    name: String,
    flags: TapFlags,
}

/// `struct ifreq` as `TUNSETIFF` reads it: the name and the flags (40 bytes).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl TapDevice {
    /// Create (or attach to) TAP device `name`, blocking descriptor.
    ///
    /// # Errors
    /// [`TapError::Open`] without `CAP_NET_ADMIN` or `/dev/net/tun`, or for a name
    /// longer than 15 bytes.
    pub fn open(name: &str, flags: TapFlags) -> Result<Self, TapError> {
        let err = |source| TapError::Open { name: name.to_owned(), source };
        let handle = if flags == TapFlags::default() {
            Handle::Crate(tun_tap::Iface::without_packet_info(name, tun_tap::Mode::Tap).map_err(err)?)
        } else {
            Handle::Ioctl(open_ioctl(name, flags).map_err(err)?)
        };
        let mut dev = TapDevice { handle, name: String::new(), flags };
        dev.name = match &dev.handle {
            Handle::Crate(i) => i.name().to_owned(),
            Handle::Ioctl(_) => name.to_owned(),
        };
        dev.set_nonblocking(false).map_err(|source| TapError::NonBlocking { name: dev.name.clone(), source })?;
        Ok(dev)
    }

    /// The kernel's name of the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The flags it was opened with.
    pub fn flags(&self) -> TapFlags {
        self.flags
    }

    /// Switch `O_NONBLOCK` on or off (the poll driver wants it on; io_uring wants it
    /// off, since it arms its own poll and would otherwise see `EAGAIN`).
    ///
    /// # Errors
    /// The OS error of `fcntl`.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        let fd = self.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL take no pointers.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if fl < 0 {
            return Err(io::Error::last_os_error());
        }
        let want = if on { fl | libc::O_NONBLOCK } else { fl & !libc::O_NONBLOCK };
        // SAFETY: as above.
        if want != fl && unsafe { libc::fcntl(fd, libc::F_SETFL, want) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> RawFd {
        match &self.handle {
            Handle::Crate(i) => i.as_raw_fd(),
            Handle::Ioctl(fd) => fd.as_raw_fd(),
        }
    }
}

/// `open("/dev/net/tun")` + `TUNSETIFF` with `IFF_TAP | IFF_NO_PI` and the flags.
fn open_ioctl(name: &str, flags: TapFlags) -> io::Result<OwnedFd> {
    if name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface names are 1-15 bytes without '/', NUL or spaces",
        ));
    }
    let path = CString::new("/dev/net/tun").map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated path; the returned descriptor is checked below.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut bits = libc::IFF_TAP | libc::IFF_NO_PI;
    if flags.multi_queue {
        bits |= libc::IFF_MULTI_QUEUE;
    }
    if flags.vnet_hdr {
        bits |= libc::IFF_VNET_HDR;
    }
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s;
    }
    req.flags = libc::c_short::try_from(bits).map_err(io::Error::other)?;
    // SAFETY: TUNSETIFF reads (and writes back) a `struct ifreq`; `IfReq` has its
    // layout and size (name[16], short flags, padding to 40 bytes) and lives across
    // the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags.vnet_hdr {
        // What the reader (podplane) accepts: TSO needs checksum offload too. UDP
        // segmentation (USO) is not announced, so the kernel segments UDP itself.
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, libc::c_ulong::from(offloads)) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}
