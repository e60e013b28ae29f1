//! The `ct_commit` stage, last before egress: connections created in this batch go
//! into the table if a packet of theirs survived every verdict, and are forgotten
//! otherwise (netfilter confirms entries at the end of POSTROUTING). Packets are
//! pointed at the committed entries. A full table (nothing that may be dropped
//! early) or a tuple a live connection holds drops the packets of that connection
//! (`ct_table_full`, `ct_clash`). Then a bounded sweep reclaims expired entries.

use super::lookup::{track_packet, track_state_only};
use super::state::{CtRef, SharedConntrack, info, pack, unpack};
use crate::buf::Batch;
use crate::pipeline::Disposition;
use crate::pipeline::{Context, DropReason, Stage, StageEvent};
use crate::table::conntrack::{InsertError, status};

/// The status bits that record NAT decisions.
const NAT_BITS: u8 = status::SRC_NAT | status::DST_NAT | status::SRC_NAT_DONE | status::DST_NAT_DONE;

/// See the [module docs](self).
#[derive(Debug)]
pub struct CommitStage {
    ct: SharedConntrack,
    /// Per pending index: where it went (reused every batch).
    outcome: Vec<Option<Result<Option<CtRef>, InsertError>>>,
}

impl CommitStage {
    /// The commit stage over the worker's shared state (the same as its
    /// [`ConntrackStage`](super::ConntrackStage)'s).
    pub fn new(ct: SharedConntrack) -> Self {
        CommitStage { ct, outcome: Vec::with_capacity(super::state::PENDING_MAX) }
    }
}

/// Dropped, or held by a stage (its holder decides; it is not committed now).
fn dropped(batch: &Batch, i: usize) -> bool {
    matches!(batch.disposition(i), Disposition::Drop(_) | Disposition::Held)
}

impl Stage for CommitStage {
    fn name(&self) -> &'static str {
        "ct_commit"
    }

    fn process(&mut self, cx: &mut Context<'_>, batch: &mut Batch) {
        let now = cx.now;
        let Ok(mut ct) = self.ct.lock() else { return };
        // The clock of the last batch, for listings: this stage runs on every batch
        // (the lookup stage skips those the fast path finished).
        ct.last = now;
        let early = ct.early_drops();
        // A pending connection whose first packet was dropped after the lookup never
        // existed for the packets after it (per packet, as the kernel sees them, the
        // first one's unconfirmed entry died with it): track its surviving packets
        // again, in batch order, from nothing. Output then does not depend on how
        // packets were batched.
        let n = ct.pending.len();
        let cfg = if n > 0 { Some(ct.cfg.clone()) } else { None };
        for k in 0..n {
            // Looked at in place: a copy of every pending connection per batch shows.
            let first = match ct.pending.get(k) {
                Some(p) if !p.dead => usize::from(p.first),
                _ => continue,
            };
            if !matches!(batch.disposition(first), Disposition::Drop(_)) {
                continue;
            }
            let Some(cfg) = &cfg else { continue };
            let Some(p) = ct.pending.get_mut(k).map(|p| {
                p.dead = true;
                *p
            }) else {
                continue;
            };
            // The connections the replay starts were looked up after the others'
            // tuples were settled: the commit checks every tuple in the table.
            ct.mark_unchecked();
            let tag = pack(CtRef::Pending(u16::try_from(k).unwrap_or(u16::MAX)));
            for i in 0..batch.len() {
                let pkt = batch.pkt(i);
                let m = cx.pool.meta(pkt);
                if i == first || m.ct != tag {
                    continue;
                }
                // The tuple the packet arrived with (NAT may have changed it).
                let reply_dir = m.ct_info & info::REPLY != 0;
                let key = if reply_dir { p.reply } else { p.key };
                match batch.disposition(i) {
                    Disposition::Held => {}
                    // Dropped after its lookup too: its effect on an existing
                    // connection stays, it creates nothing.
                    Disposition::Drop(_) => track_state_only(&mut ct, cfg, cx, pkt, i, key),
                    _ => {
                        let before = ct.pending.len();
                        track_packet(&mut ct, cfg, cx, batch, i, Some(key));
                        // It starts a connection of its own, already translated as
                        // the dead one was: that translation stays.
                        if let Some(CtRef::Pending(j)) = unpack(cx.pool.meta(pkt).ct)
                            && usize::from(j) >= before
                            && !reply_dir
                        {
                            ct.set_reply(j, p.reply, p.status & NAT_BITS);
                        }
                    }
                }
            }
        }
        if ct.pending.is_empty() {
            // Nothing was created in this batch: no packet to point anywhere new.
            for _ in 0..ct.sweep(now) {
                cx.count(StageEvent::CtExpired);
            }
            return;
        }
        self.outcome.clear();
        self.outcome.resize(ct.pending.len(), None);
        // Every packet not dropped counts: one delivered to the node (the kernel
        // confirms at the end of INPUT too) or already decided, as well as one still
        // going on.
        for i in 0..batch.len() {
            if dropped(batch, i) {
                continue;
            }
            let pkt = batch.pkt(i);
            let m = cx.pool.meta(pkt);
            let Some(CtRef::Pending(k)) = unpack(m.ct) else { continue };
            let k = usize::from(k);
            let outcome = match self.outcome.get(k).copied().flatten() {
                Some(o) => o,
                None => {
                    let o = ct.commit(k, now);
                    if matches!(o, Ok(Some(_))) {
                        cx.count(StageEvent::CtNew);
                    }
                    if let Some(slot) = self.outcome.get_mut(k) {
                        *slot = Some(o);
                    }
                    o
                }
            };
            match outcome {
                Ok(r) => {
                    let meta = cx.pool.meta_mut(pkt);
                    meta.ct = r.map_or(0, pack);
                    meta.ct_info &= !info::PENDING;
                }
                Err(InsertError::Full) => cx.drop(batch, i, DropReason::CtTableFull),
                Err(InsertError::Clash) => cx.drop(batch, i, DropReason::CtClash),
            }
        }
        for _ in early..ct.early_drops() {
            cx.count(StageEvent::CtEarlyDrop);
        }
        let outcome = &self.outcome;
        ct.keep_dropped(|k| matches!(outcome.get(k), Some(Some(Ok(Some(_))))));
        ct.clear_pending();
        for _ in 0..ct.sweep(now) {
            cx.count(StageEvent::CtExpired);
        }
    }
}
