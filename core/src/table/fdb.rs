//! The bridge forwarding database: (bridge domain, MAC) → port, learned from source
//! addresses, aged, bounded, with static entries.
//!
//! # Linux behaviour it follows (net/bridge/br_fdb.c)
//! - Entries not refreshed for the ageing time (default 300 s, `ageing_time`) are
//!   expired: a lookup treats them as absent (`has_expired()`), and a periodic sweep
//!   removes them (`br_fdb_cleanup`).
//! - A MAC seen on another port moves there (`br_fdb_update`); static entries never
//!   move or age (`fdb->flags & BR_FDB_STATIC`).
//! - When the table is full (`fdb_max_learned`), new MACs are not learned; frames to
//!   them flood. Linux's default is no limit; ours is a bound, because the packet path
//!   never allocates.
//!
//! # Design
//! One `hashbrown` table sized at construction (twice the bound, so inserts below the
//! bound never grow it), keyed with the seedless Fx hash: the same operations give the
//! same iteration order in every run. Lookups hash once and probe a few slots.

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

use crate::buf::PortId;
use crate::time::{Duration, Instant};

/// Linux's default bridge ageing time.
pub const DEFAULT_AGEING: Duration = Duration::from_secs(300);

/// One FDB entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// Port the MAC was last seen on.
    pub port: PortId,
    /// When it was last seen (learned entries).
    pub last_seen: Instant,
    /// Configured, never learned over, never aged.
    pub is_static: bool,
}

/// What [`Fdb::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port; refreshed.
    Refreshed,
    /// A new entry.
    Learned,
    /// Known on another port; moved.
    Moved,
    /// Not learned: the table is full.
    Full,
    /// A static entry for this MAC exists; left alone.
    Static,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct Fdb {
    map: HashMap<u64, FdbEntry, FxBuildHasher>,
    capacity: usize,
    ageing: Duration,
}

impl Fdb {
    /// An empty table for at most `capacity` entries that age after `ageing`.
    pub fn new(capacity: usize, ageing: Duration) -> Self {
        Fdb { map: HashMap::with_capacity_and_hasher(capacity.saturating_mul(2), FxBuildHasher), capacity, ageing }
    }

    /// Entries held (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Domain and MAC packed in one word: one multiply to hash instead of hashing a
    /// tuple and an array (`benches/callgrind.sh`: 253 → 239 instructions per packet for the
    /// bridge stage).
    #[inline]
    fn key(domain: u16, mac: [u8; 6]) -> u64 {
        let [a, b, c, d, e, f] = mac;
        let [x, y] = domain.to_le_bytes();
        u64::from_le_bytes([a, b, c, d, e, f, x, y])
    }

    fn expired(&self, e: &FdbEntry, now: Instant) -> bool {
        !e.is_static && now.saturating_since(e.last_seen) > self.ageing
    }

    /// Learn that `mac` is behind `port` in `domain` at `now`. Never allocates.
    #[inline]
    pub fn learn(&mut self, domain: u16, mac: [u8; 6], port: PortId, now: Instant) -> Learn {
        let ageing = self.ageing;
        if let Some(e) = self.map.get_mut(&Self::key(domain, mac)) {
            if e.is_static {
                return Learn::Static;
            }
            let was_expired = now.saturating_since(e.last_seen) > ageing;
            e.last_seen = now;
            if e.port != port {
                e.port = port;
                return if was_expired { Learn::Learned } else { Learn::Moved };
            }
            return if was_expired { Learn::Learned } else { Learn::Refreshed };
        }
        if self.map.len() >= self.capacity {
            return Learn::Full;
        }
        self.map.insert(Self::key(domain, mac), FdbEntry { port, last_seen: now, is_static: false });
        Learn::Learned
    }

    /// The port for `mac` in `domain`, unless unknown or expired.
    #[inline]
    pub fn lookup(&self, domain: u16, mac: [u8; 6], now: Instant) -> Option<PortId> {
        self.map.get(&Self::key(domain, mac)).filter(|e| !self.expired(e, now)).map(|e| e.port)
    }

    /// The entry for `mac`, expired or not (for inspection).
    pub fn entry(&self, domain: u16, mac: [u8; 6]) -> Option<FdbEntry> {
        self.map.get(&Self::key(domain, mac)).copied()
    }

    /// Add or replace a static entry. Control path: may allocate.
    pub fn add_static(&mut self, domain: u16, mac: [u8; 6], port: PortId) {
        self.map.insert(Self::key(domain, mac), FdbEntry { port, last_seen: Instant::ZERO, is_static: true });
    }

    /// Remove expired learned entries; returns how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let before = self.map.len();
        let ageing = self.ageing;
        self.map.retain(|_, e| e.is_static || now.saturating_since(e.last_seen) <= ageing);
        before - self.map.len()
    }

    /// Forget every learned entry on `port` (the port went away), as Linux's
    /// `br_fdb_delete_by_port`.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.is_static || e.port != port);
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn t(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    #[test]
    fn learn_move_age_and_static() {
        let mut f = Fdb::new(2, DEFAULT_AGEING);
        assert_eq!(f.learn(0, A, PortId(1), t(0)), Learn::Learned);
        assert_eq!(f.learn(0, A, PortId(1), t(10)), Learn::Refreshed);
        assert_eq!(f.learn(0, A, PortId(2), t(20)), Learn::Moved);
        assert_eq!(f.lookup(0, A, t(20)), Some(PortId(2)));
        assert_eq!(f.lookup(1, A, t(20)), None, "domains are separate");
        // 300 s after the last sighting it is still valid; one nanosecond later not.
        assert_eq!(f.lookup(0, A, t(320)), Some(PortId(2)));
        assert_eq!(f.lookup(0, A, t(320) + Duration::from_nanos(1)), None);
        f.add_static(0, B, PortId(3));
        assert_eq!(f.learn(0, B, PortId(1), t(30)), Learn::Static);
        assert_eq!(f.lookup(0, B, t(100_000)), Some(PortId(3)), "static entries never age");
        assert_eq!(f.learn(0, [2, 0, 0, 0, 0, 9], PortId(1), t(30)), Learn::Full);
        assert_eq!(f.sweep(t(1000)), 1);
        assert_eq!(f.len(), 1);
        assert_eq!(f.learn(0, [2, 0, 0, 0, 0, 9], PortId(1), t(1000)), Learn::Learned);
        assert_eq!(f.flush_port(PortId(1)), 1);
        assert_eq!(f.flush_port(PortId(3)), 0, "static entries stay");
    }
}
