//! The `xconnect` stage: a port-to-port cross-connect, VPP's `l2-patch` (Linux: a tc
//! `mirred egress redirect` from one device to another). Every live packet that
//! arrived on a connected port is transmitted, unchanged, on its peer port; packets
//! from other ports are dropped as `no_xconnect`.
//!
//! It is the smallest forwarding stage: the foundation's demo and the instruction-count
//! harness use it to give parsed packets a disposition, and it stays useful to wire a
//! TAP to a pcap or a test port straight through. Batch order does not matter.

use crate::buf::{Batch, PortId};
use crate::pipeline::{Context, DropReason, Stage};

/// Most ports a cross-connect table covers (port numbers 0..MAX_PORTS).
pub const MAX_PORTS: usize = 256;

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct XconnectStage {
    peer: [PortId; MAX_PORTS],
}

impl Default for XconnectStage {
    fn default() -> Self {
        Self::new()
    }
}

impl XconnectStage {
    /// A cross-connect with no ports connected.
    pub const fn new() -> Self {
        XconnectStage { peer: [PortId::NONE; MAX_PORTS] }
    }

    /// Connect `a` and `b` both ways (or a port to itself, a hairpin).
    ///
    /// # Errors
    /// Returns the offending port when either is `>= MAX_PORTS`; nothing changes then.
    pub fn connect(&mut self, a: PortId, b: PortId) -> Result<(), PortId> {
        let (ia, ib) = (usize::from(a.0), usize::from(b.0));
        if ia >= MAX_PORTS {
            return Err(a);
        }
        if ib >= MAX_PORTS {
            return Err(b);
        }
        if let Some(p) = self.peer.get_mut(ia) {
            *p = b;
        }
        if let Some(p) = self.peer.get_mut(ib) {
            *p = a;
        }
        Ok(())
    }

    /// The port connected to `p`, if any.
    pub fn peer(&self, p: PortId) -> Option<PortId> {
        self.peer.get(usize::from(p.0)).copied().filter(|q| *q != PortId::NONE)
    }
}

impl Stage for XconnectStage {
    fn name(&self) -> &'static str {
        "xconnect"
    }

    fn skips_final_batches(&self) -> bool {
        true
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        for i in 0..batch.len() {
            if !batch.is_live(i) {
                continue;
            }
            let in_port = cx.pool.meta(batch.pkt(i)).in_port;
            match self.peer(in_port) {
                Some(out) => batch.transmit(i, out),
                None => cx.drop(batch, i, DropReason::NoXconnect),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_checks_ports_and_is_symmetric() {
        let mut x = XconnectStage::new();
        x.connect(PortId(0), PortId(1)).unwrap();
        assert_eq!(x.peer(PortId(0)), Some(PortId(1)));
        assert_eq!(x.peer(PortId(1)), Some(PortId(0)));
        assert_eq!(x.peer(PortId(2)), None);
        assert_eq!(x.connect(PortId(0), PortId(300)), Err(PortId(300)));
        assert_eq!(x.peer(PortId(0)), Some(PortId(1)), "failed connect changed nothing");
    }
}
