//! What becomes of a packet. A packet is `Continue` until one stage makes it final;
//! later stages skip final packets.

use super::drop_reason::DropReason;
use crate::buf::PortId;

/// The fate of one packet in a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Disposition {
    /// Not final yet: the next stage sees it.
    #[default]
    Continue,
    /// Transmit on a port.
    Tx(PortId),
    /// Deliver to the node's host stack (the host port).
    Host,
    /// A stage keeps it (waiting for ARP, reassembly) and will re-inject or drop it.
    Held,
    /// Dropped, counted under the stage that dropped it.
    Drop(DropReason),
}

impl Disposition {
    /// True for every disposition but `Continue`.
    #[inline]
    pub const fn is_final(self) -> bool {
        !matches!(self, Disposition::Continue)
    }
}

impl core::fmt::Display for Disposition {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Disposition::Continue => f.write_str("continue"),
            Disposition::Tx(p) => write!(f, "tx {p}"),
            Disposition::Host => f.write_str("host"),
            Disposition::Held => f.write_str("held"),
            Disposition::Drop(r) => write!(f, "drop {r}"),
        }
    }
}
