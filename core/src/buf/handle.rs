//! Small `Copy` handles: a packet is a slot index, a port is a port index.

use core::fmt;

/// A packet: the index of its slot in the worker's [`BufPool`](super::BufPool).
///
/// Only the pool creates handles, so a handle always names a slot of the pool that
/// made it; using it after [`free`](super::BufPool::free) is caught by the slot's owner
/// state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PktId(pub(super) u32);

impl PktId {
    /// The slot index, for drivers that map slots to io_uring buffer indexes.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A port of a node (a TAP device, a pcap file, a simulator link end, the host port).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u16);

impl PortId {
    /// "No port yet": the egress port of a packet no stage has forwarded.
    pub const NONE: PortId = PortId(u16::MAX);
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == PortId::NONE { f.write_str("-") } else { write!(f, "port{}", self.0) }
    }
}
