//! Packet trace, as VPP's `trace add <input> N`: the first N packets a pipeline
//! receives after [`Pipeline::trace_add`](super::Pipeline::trace_add) are flagged at
//! ingress, and every stage that sees them leaves a fixed-size record. Records go into
//! a buffer reserved when tracing is armed, so tracing allocates nothing per packet.
//!
//! Printed, a packet's records read top to bottom like VPP's `show trace`:
//! ```text
//! Packet 1
//!   ingress port0 64 bytes: 02:00:00:00:00:01 > 02:00:00:00:00:02 Ipv4, IP 10.0.0.1 > ...
//!   parse: udp 10.0.0.1:1234 > 10.0.0.2:53 proto 17
//!   parse -> continue
//! ```

use core::fmt;

use super::disposition::Disposition;
use crate::buf::PortId;
use crate::time::Instant;
use crate::wire::display::PrettyFrame;
use crate::wire::flow::FlowKey;

/// Bytes of each traced frame kept for printing (headers, not payload).
pub const SNAP_LEN: usize = 128;
/// Records reserved per traced packet.
const RECORDS_PER_PACKET: usize = 24;

/// A stage's own note about a packet (fixed size; each stage picks the variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceNote {
    /// A fixed message.
    Msg(&'static str),
    /// A message and a flow key.
    Flow(&'static str, FlowKey),
    /// A message and a port.
    Port(&'static str, PortId),
    /// A message and a number.
    Value(&'static str, u64),
}

impl fmt::Display for TraceNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceNote::Msg(m) => f.write_str(m),
            TraceNote::Flow(m, k) => write!(f, "{m} {k}"),
            TraceNote::Port(m, p) => write!(f, "{m} {p}"),
            TraceNote::Value(m, v) => write!(f, "{m} {v}"),
        }
    }
}

/// One trace record.
#[derive(Clone, Copy, Debug)]
pub enum TraceRecord {
    /// The packet as it entered.
    Ingress {
        /// Trace id (1-based order of tracing).
        id: u32,
        /// Port it came in on.
        port: PortId,
        /// Time of the batch.
        at: Instant,
        /// Full length.
        len: u16,
        /// Bytes kept.
        snap_len: u16,
        /// The first bytes.
        snap: [u8; SNAP_LEN],
    },
    /// A stage's note.
    Note {
        /// Trace id.
        id: u32,
        /// Stage name.
        stage: &'static str,
        /// The note.
        note: TraceNote,
    },
    /// The disposition a stage left.
    Verdict {
        /// Trace id.
        id: u32,
        /// Stage name.
        stage: &'static str,
        /// Disposition after the stage.
        disposition: Disposition,
    },
}

impl TraceRecord {
    fn id(&self) -> u32 {
        match self {
            TraceRecord::Ingress { id, .. } | TraceRecord::Note { id, .. } | TraceRecord::Verdict { id, .. } => *id,
        }
    }
}

/// The trace buffer of one pipeline.
#[derive(Debug, Default)]
pub struct Trace {
    budget: u32,
    next_id: u32,
    records: Vec<TraceRecord>,
    lost: u64,
}

impl Trace {
    /// Arm tracing for the next `n` packets, reserving their record space now.
    pub fn add(&mut self, n: u32) {
        self.budget = self.budget.saturating_add(n);
        self.records.reserve(n as usize * RECORDS_PER_PACKET);
    }

    /// Forget every record (the budget stays).
    pub fn clear(&mut self) {
        self.records.clear();
        self.lost = 0;
    }

    /// Packets still to be flagged.
    pub fn budget(&self) -> u32 {
        self.budget
    }

    /// Records kept, in order.
    pub fn records(&self) -> &[TraceRecord] {
        &self.records
    }

    /// Take one packet of the budget: its trace id, or `None` when the budget is spent.
    #[inline]
    pub(crate) fn take(&mut self) -> Option<u32> {
        if self.budget == 0 {
            return None;
        }
        self.budget -= 1;
        self.next_id += 1;
        Some(self.next_id)
    }

    /// Append a record if the reserved space has room (never grows on the packet path).
    #[inline]
    pub(crate) fn push(&mut self, r: TraceRecord) {
        if self.records.len() < self.records.capacity() {
            self.records.push(r);
        } else {
            self.lost += 1;
        }
    }

    /// Records that did not fit the reserved space.
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<u32> = self.records.iter().map(TraceRecord::id).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            writeln!(f, "Packet {id}")?;
            for r in self.records.iter().filter(|r| r.id() == id) {
                match r {
                    TraceRecord::Ingress { port, at, len, snap_len, snap, .. } => {
                        let s = snap.get(..usize::from(*snap_len)).unwrap_or(&[]);
                        writeln!(f, "  {at} ingress {port} {len} bytes: {}", PrettyFrame(s))?;
                    }
                    TraceRecord::Note { stage, note, .. } => writeln!(f, "  {stage}: {note}")?,
                    TraceRecord::Verdict { stage, disposition, .. } => writeln!(f, "  {stage} -> {disposition}")?,
                }
            }
        }
        if self.lost > 0 {
            writeln!(f, "({} trace records lost: reserved space full)", self.lost)?;
        }
        Ok(())
    }
}
