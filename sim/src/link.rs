//! Simulated links: point-to-point cables and shared segments (hubs), with latency,
//! jitter, bandwidth, loss, duplication, reordering, an MTU and an up/down state, all
//! drawn from the simulator's one seeded RNG.
//!
//! # Fault order
//! Each frame put on a link meets the faults in a fixed order, and the first that
//! decides its fate wins (turmoil-net's ordered rules): link down → drop; larger than
//! the MTU → drop; loss → drop; duplication → a second copy; reordering → extra delay.
//! Then corruption; a frame that survives is serialised at the link's bandwidth behind earlier frames
//! from the same sender (FIFO), then propagates for the latency plus jitter. Jitter
//! never reorders by itself: a frame is not delivered before the previous frame of the
//! same sender on the same link unless the reorder fault picked it. Corruption (one
//! random bit flipped) comes after loss and does not stop the frame: the receiver's
//! checks must catch it.

use podplane::{Duration, Instant};

/// Which entity a link end belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityId {
    /// A smoltcp host (a pod, an external client).
    Host(usize),
    /// A node running a podplane pipeline.
    Node(usize),
}

/// One end of a link: an entity's port (hosts have port 0 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The entity.
    pub entity: EntityId,
    /// Its port number.
    pub port: u16,
}

/// How a link behaves. Probabilities are in 0.0..=1.0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from 0..=jitter per frame.
    pub jitter: Duration,
    /// Bits per second; `None` serialises instantly.
    pub bandwidth_bps: Option<u64>,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability one random bit of a frame is flipped.
    pub corrupt: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Probability a frame is held back by `reorder_delay` (so later frames pass it).
    pub reorder: f64,
    /// How long a reordered frame is held back.
    pub reorder_delay: Duration,
    /// Largest IP packet the link carries (the Ethernet payload); larger frames drop.
    pub mtu: usize,
    /// Whether the link passes frames.
    pub up: bool,
    /// A shared segment that switches instead of repeating: unicast frames go only to
    /// the end that sent from that MAC before (learned per segment, never aged),
    /// broadcast, multicast and unknown unicast go to every other end. Models the
    /// physical switch of an underlay; a two-end link ignores it.
    pub switched: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_nanos(50_000),
            jitter: Duration::ZERO,
            bandwidth_bps: None,
            loss: 0.0,
            corrupt: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(1),
            mtu: 1500,
            up: true,
            switched: false,
        }
    }
}

impl LinkConfig {
    /// A link with `latency`.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Add loss, duplication and reordering probabilities.
    pub fn with_faults(mut self, loss: f64, duplicate: f64, reorder: f64) -> Self {
        self.loss = loss;
        self.duplicate = duplicate;
        self.reorder = reorder;
        self
    }

    /// Flip one random bit in a fraction `p` of frames.
    pub fn with_corruption(mut self, p: f64) -> Self {
        self.corrupt = p;
        self
    }

    /// Set the bandwidth.
    pub fn with_bandwidth(mut self, bps: u64) -> Self {
        self.bandwidth_bps = Some(bps);
        self
    }

    /// Set the MTU.
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    /// Make a shared segment a learning switch instead of a hub.
    pub fn switched(mut self) -> Self {
        self.switched = true;
        self
    }

    /// Set the jitter.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }
}

/// What happened on a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames put on the link by a sender.
    pub sent: u64,
    /// Frame copies delivered to a receiver.
    pub delivered: u64,
    /// Bytes delivered.
    pub delivered_bytes: u64,
    /// Dropped because the link was down.
    pub dropped_down: u64,
    /// Dropped for exceeding the MTU.
    pub dropped_mtu: u64,
    /// Dropped by the loss fault.
    pub dropped_loss: u64,
    /// Frames with one bit flipped by the corruption fault.
    pub corrupted: u64,
    /// Extra copies made by the duplication fault.
    pub duplicated: u64,
    /// Frames held back by the reorder fault.
    pub reordered: u64,
}

/// A link's state inside the simulator.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) name: String,
    pub(crate) config: LinkConfig,
    pub(crate) ends: Vec<Endpoint>,
    pub(crate) stats: LinkStats,
    /// Per sending end: when its transmitter is free again.
    pub(crate) busy_until: Vec<Instant>,
    /// Per sending end: the latest delivery time scheduled (FIFO under jitter).
    pub(crate) last_delivery: Vec<Instant>,
    /// Switched segments: which end each source MAC was seen on.
    pub(crate) macs: std::collections::BTreeMap<[u8; 6], usize>,
}

impl Link {
    pub(crate) fn new(name: String, config: LinkConfig, ends: Vec<Endpoint>) -> Self {
        let n = ends.len();
        Link {
            name,
            config,
            ends,
            stats: LinkStats::default(),
            busy_until: vec![Instant::ZERO; n],
            last_delivery: vec![Instant::ZERO; n],
            macs: std::collections::BTreeMap::new(),
        }
    }

    /// Serialisation time of `bytes` at the link's bandwidth.
    pub(crate) fn serialisation(&self, bytes: usize) -> Duration {
        match self.config.bandwidth_bps {
            Some(bps) if bps > 0 => Duration::from_nanos((bytes as u64 * 8).saturating_mul(1_000_000_000) / bps),
            _ => Duration::ZERO,
        }
    }
}
