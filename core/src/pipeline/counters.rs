//! Per-worker counters: totals of what entered and left the pipeline, and drops by
//! stage × reason (packets and bytes), as dense arrays of plain integers.
//!
//! A worker owns its `Counters` and nobody else writes them, so increments are plain
//! adds; readers take a [`CounterSnapshot`] at a batch boundary and sum snapshots
//! across workers. Stage index 0 is the pipeline itself (`no_disposition`,
//! `generate_loop`, drops a driver reports).
//!
//! The accounting identity, checked at every batch boundary in tests and fuzzing:
//! `rx + generated + released = tx + host + dropped + held`.

use core::fmt;

use super::drop_reason::DropReason;
use super::event::StageEvent;

/// Name of stage index 0: drops decided by the pipeline or reported by the driver.
pub const PIPELINE_STAGE: &str = "pipeline";

/// Totals of packets through a pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Packets handed in by the driver.
    pub rx: u64,
    /// Bytes handed in by the driver.
    pub rx_bytes: u64,
    /// Packets created by stages (ARP requests, ICMP errors, ...).
    pub generated: u64,
    /// Packets given back to the driver to transmit.
    pub tx: u64,
    /// Bytes given back to transmit.
    pub tx_bytes: u64,
    /// Packets delivered to the host stack.
    pub host: u64,
    /// Packets dropped (sum over every stage and reason).
    pub dropped: u64,
    /// Times a stage took a packet to hold (waiting for ARP, say).
    pub held: u64,
    /// Held packets that left the hold: put back into the pipeline, or dropped.
    /// `held - released` is how many packets stages hold right now.
    pub released: u64,
}

/// The counters of one pipeline (one worker).
#[derive(Debug)]
pub struct Counters {
    stages: Vec<&'static str>,
    drops: Vec<[u64; DropReason::COUNT]>,
    drop_bytes: Vec<[u64; DropReason::COUNT]>,
    events: Vec<[u64; StageEvent::COUNT]>,
    /// Totals.
    pub totals: Totals,
}

impl Counters {
    /// Counters for the named stages (index 0, the pipeline, is added in front).
    pub fn new(stage_names: &[&'static str]) -> Self {
        let mut stages = vec![PIPELINE_STAGE];
        stages.extend_from_slice(stage_names);
        let n = stages.len();
        Counters {
            stages,
            drops: vec![[0; DropReason::COUNT]; n],
            drop_bytes: vec![[0; DropReason::COUNT]; n],
            events: vec![[0; StageEvent::COUNT]; n],
            totals: Totals::default(),
        }
    }

    /// Count one dropped packet of `bytes` bytes under `stage` and `reason`.
    #[inline]
    pub fn count_drop(&mut self, stage: usize, reason: DropReason, bytes: usize) {
        let i = reason.index();
        if let Some(c) = self.drops.get_mut(stage).and_then(|row| row.get_mut(i)) {
            *c += 1;
        }
        if let Some(c) = self.drop_bytes.get_mut(stage).and_then(|row| row.get_mut(i)) {
            *c += bytes as u64;
        }
        self.totals.dropped += 1;
    }

    /// Count one `event` under `stage`.
    #[inline]
    pub fn count_event(&mut self, stage: usize, event: StageEvent) {
        self.count_event_n(stage, event, 1);
    }

    /// Count `event` `n` times for `stage`.
    #[inline]
    pub fn count_event_n(&mut self, stage: usize, event: StageEvent, n: u64) {
        if let Some(c) = self.events.get_mut(stage).and_then(|row| row.get_mut(event.index())) {
            *c += n;
        }
    }

    /// How many times `stage` (by name) counted `event`.
    pub fn events(&self, stage: &str, event: StageEvent) -> u64 {
        self.stages
            .iter()
            .position(|s| *s == stage)
            .and_then(|i| self.events.get(i))
            .and_then(|row| row.get(event.index()))
            .copied()
            .unwrap_or(0)
    }

    /// Stage names, index 0 first.
    pub fn stage_names(&self) -> &[&'static str] {
        &self.stages
    }

    /// Packets dropped by `stage` (by name) for `reason`.
    pub fn drops(&self, stage: &str, reason: DropReason) -> u64 {
        self.stages
            .iter()
            .position(|s| *s == stage)
            .and_then(|i| self.drops.get(i))
            .and_then(|row| row.get(reason.index()))
            .copied()
            .unwrap_or(0)
    }

    /// A copy of every non-zero counter, for reading and summing across workers.
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut drops = Vec::new();
        for (s, (row, brow)) in self.drops.iter().zip(&self.drop_bytes).enumerate() {
            for r in DropReason::ALL {
                let n = row.get(r.index()).copied().unwrap_or(0);
                if n > 0 {
                    let bytes = brow.get(r.index()).copied().unwrap_or(0);
                    drops.push(DropCount {
                        stage: self.stages.get(s).copied().unwrap_or("?"),
                        reason: *r,
                        packets: n,
                        bytes,
                    });
                }
            }
        }
        let mut events = Vec::new();
        for (s, row) in self.events.iter().enumerate() {
            for e in StageEvent::ALL {
                let n = row.get(e.index()).copied().unwrap_or(0);
                if n > 0 {
                    events.push(EventCount { stage: self.stages.get(s).copied().unwrap_or("?"), event: *e, count: n });
                }
            }
        }
        CounterSnapshot { totals: self.totals, drops, events }
    }
}

/// One non-zero drop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropCount {
    /// Stage name.
    pub stage: &'static str,
    /// Reason.
    pub reason: DropReason,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One non-zero event counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventCount {
    /// Stage name.
    pub stage: &'static str,
    /// Event.
    pub event: StageEvent,
    /// How many.
    pub count: u64,
}

/// Counters read at a batch boundary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Totals.
    pub totals: Totals,
    /// Non-zero drop counters, by stage order then reason code.
    pub drops: Vec<DropCount>,
    /// Non-zero event counters, by stage order then event code.
    pub events: Vec<EventCount>,
}

impl CounterSnapshot {
    /// Add `other` (another worker's snapshot) into this one: totals summed, drop
    /// and event counters summed by stage and reason, new ones appended in `other`'s
    /// order. Workers run the same stages, so the order stays the stage order.
    pub fn merge(&mut self, other: &CounterSnapshot) {
        let (t, o) = (&mut self.totals, &other.totals);
        t.rx += o.rx;
        t.rx_bytes += o.rx_bytes;
        t.generated += o.generated;
        t.tx += o.tx;
        t.tx_bytes += o.tx_bytes;
        t.host += o.host;
        t.dropped += o.dropped;
        t.held += o.held;
        t.released += o.released;
        for d in &other.drops {
            match self.drops.iter_mut().find(|m| m.stage == d.stage && m.reason == d.reason) {
                Some(m) => {
                    m.packets += d.packets;
                    m.bytes += d.bytes;
                }
                None => self.drops.push(*d),
            }
        }
        for e in &other.events {
            match self.events.iter_mut().find(|m| m.stage == e.stage && m.event == e.event) {
                Some(m) => m.count += e.count,
                None => self.events.push(*e),
            }
        }
    }

    /// Packets dropped for `reason`, summed over the stages.
    pub fn drop_total(&self, reason: DropReason) -> u64 {
        self.drops.iter().filter(|d| d.reason == reason).map(|d| d.packets).sum()
    }

    /// Occurrences of `event`, summed over the stages.
    pub fn event_total(&self, event: StageEvent) -> u64 {
        self.events.iter().filter(|e| e.event == event).map(|e| e.count).sum()
    }

    /// True when `rx + generated + released = tx + host + dropped + held`.
    pub fn balanced(&self) -> bool {
        let t = &self.totals;
        t.rx + t.generated + t.released == t.tx + t.host + t.dropped + t.held
    }
}

impl fmt::Display for CounterSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        writeln!(f, "{:<28} {:>12} {:>14}", "counter", "packets", "bytes")?;
        writeln!(f, "{:<28} {:>12} {:>14}", "rx", t.rx, t.rx_bytes)?;
        writeln!(f, "{:<28} {:>12}", "generated", t.generated)?;
        writeln!(f, "{:<28} {:>12} {:>14}", "tx", t.tx, t.tx_bytes)?;
        writeln!(f, "{:<28} {:>12}", "host", t.host)?;
        writeln!(f, "{:<28} {:>12}", "held", t.held)?;
        writeln!(f, "{:<28} {:>12}", "released", t.released)?;
        writeln!(f, "{:<28} {:>12}", "dropped", t.dropped)?;
        for d in &self.drops {
            writeln!(f, "  {:<26} {:>12} {:>14}", format!("{}/{}", d.stage, d.reason), d.packets, d.bytes)?;
        }
        for e in &self.events {
            writeln!(f, "{:<28} {:>12}", format!("{}/{}", e.stage, e.event), e.count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_of_workers_merge_by_stage_and_reason() {
        let mut a = Counters::new(&["parse", "route"]);
        let mut b = Counters::new(&["parse", "route"]);
        a.totals.rx = 5;
        a.count_drop(1, DropReason::RuntFrame, 60);
        a.count_drop(2, DropReason::NoRoute, 100);
        a.count_drop(2, DropReason::NoRoute, 100);
        b.totals.rx = 7;
        b.count_drop(2, DropReason::NoRoute, 50);
        b.count_drop(2, DropReason::TtlExceeded, 40);
        a.count_event(2, StageEvent::Routed);
        b.count_event_n(2, StageEvent::Routed, 4);
        let mut m = a.snapshot();
        m.merge(&b.snapshot());
        assert_eq!((m.totals.rx, m.totals.dropped), (12, 5));
        let drops: Vec<_> = m.drops.iter().map(|d| (d.stage, d.reason, d.packets, d.bytes)).collect();
        assert_eq!(
            drops,
            vec![
                ("parse", DropReason::RuntFrame, 1, 60),
                ("route", DropReason::NoRoute, 3, 250),
                ("route", DropReason::TtlExceeded, 1, 40)
            ]
        );
        assert_eq!(m.events, vec![EventCount { stage: "route", event: StageEvent::Routed, count: 5 }]);
    }
}
