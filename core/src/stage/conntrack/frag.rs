//! IPv4 fragments and their connection: the first fragment carries the ports, the
//! later ones only the addresses, protocol and IP identification. Conntrack records
//! the first fragment's tuple under (source, destination, protocol, identification)
//! and tracks the later fragments as packets of that connection, so NAT translates
//! all of them alike (as Cilium's fragment map does; the kernel reassembles before
//! conntrack instead). A later fragment whose first one was not seen is dropped
//! (`ct_fragment_unknown`), as Cilium drops it.
//!
//! The map is direct-mapped and fixed (1,024 entries, each kept 30 s, Linux's
//! `ipfrag_time`): a newer datagram takes the slot of an older one whose hash
//! collides, which only costs that older datagram's remaining fragments.

use crate::time::{Duration, Instant};
use crate::wire::flow::FlowKey;

/// Entries in the map.
pub const FRAG_SLOTS: usize = 1024;
/// How long a datagram's entry lives (`net.ipv4.ipfrag_time`).
pub const FRAG_TIMEOUT: Duration = Duration::from_secs(30);

/// What names a datagram: addresses, protocol, IP identification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragKey {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Protocol.
    pub proto: u8,
    /// IP identification.
    pub id: u16,
}

impl FragKey {
    /// The key of the IPv4 header `h` (at least 20 bytes), `None` when shorter.
    pub fn of(h: &[u8]) -> Option<FragKey> {
        let h = h.first_chunk::<20>()?;
        Some(FragKey {
            src: [h[12], h[13], h[14], h[15]],
            dst: [h[16], h[17], h[18], h[19]],
            proto: h[9],
            id: u16::from_be_bytes([h[4], h[5]]),
        })
    }

    fn slot(&self) -> usize {
        let a = u32::from_be_bytes(self.src) ^ u32::from_be_bytes(self.dst).rotate_left(13);
        let x =
            (u64::from(a) << 24 | u64::from(self.id) << 8 | u64::from(self.proto)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (x >> 54) as usize % FRAG_SLOTS
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    key: FragKey,
    tuple: FlowKey,
    expires: Instant,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct FragMap {
    slots: Vec<Entry>,
}

impl Default for FragMap {
    fn default() -> Self {
        FragMap { slots: vec![Entry::default(); FRAG_SLOTS] }
    }
}

impl FragMap {
    /// Remember that datagram `key`'s first fragment had tuple `tuple`.
    pub fn record(&mut self, key: FragKey, tuple: FlowKey, now: Instant) {
        if let Some(e) = self.slots.get_mut(key.slot()) {
            *e = Entry { key, tuple, expires: now + FRAG_TIMEOUT };
        }
    }

    /// The tuple of datagram `key`'s first fragment, if seen and not expired.
    pub fn lookup(&self, key: &FragKey, now: Instant) -> Option<FlowKey> {
        self.slots.get(key.slot()).filter(|e| e.key == *key && e.expires > now).map(|e| e.tuple)
    }
}
