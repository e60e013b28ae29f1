//! Backend choice for a new connection: kube-proxy's random choice, IPVS's
//! schedulers (`rr`, `wrr`, `lc`, `wlc`, `sed`, `nq`, `sh`, `dh`) and Maglev.
//!
//! Each follows the IPVS module of the same name (net/netfilter/ipvs/ip_vs_*.c), with
//! one difference said where it matters: IPVS weighs a server's load as
//! `activeconns * 256 + inactconns`; podplane counts live connections to the backend
//! (its conntrack entries with destination NAT to it, until they are reclaimed) as
//! one class.

use core::fmt;
use core::str::FromStr;

use super::service::Backend;
use crate::table::maglev::{self, Maglev};
use crate::wire::flow::FlowKey;

/// How a service chooses a backend for a new connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheduler {
    /// Uniformly at random (kube-proxy's iptables and nftables modes: `numgen random
    /// mod N`). The default.
    #[default]
    Random,
    /// Round robin (`rr`).
    RoundRobin,
    /// Weighted round robin (`wrr`, IPVS's interleaved gcd stepping).
    WeightedRoundRobin,
    /// Least connections (`lc`).
    LeastConnection,
    /// Weighted least connections (`wlc`, IPVS's default).
    WeightedLeastConnection,
    /// Shortest expected delay (`sed`): least (connections + 1) / weight.
    ShortestExpectedDelay,
    /// Never queue (`nq`): an idle backend if there is one, else `sed`.
    NeverQueue,
    /// Source hashing (`sh`): the client address picks one of 256 buckets.
    SourceHash,
    /// Destination hashing (`dh`): the destination address picks the bucket (every
    /// connection to one frontend address goes to one backend, as in IPVS).
    DestinationHash,
    /// Maglev consistent hashing of the connection's 5-tuple.
    Maglev,
}

/// The annotation that chooses a service's scheduler.
pub const SCHEDULER_ANNOTATION: &str = "podplane.io/lb-scheduler";

impl Scheduler {
    /// The annotation value naming it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheduler::Random => "random",
            Scheduler::RoundRobin => "rr",
            Scheduler::WeightedRoundRobin => "wrr",
            Scheduler::LeastConnection => "lc",
            Scheduler::WeightedLeastConnection => "wlc",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
            Scheduler::SourceHash => "sh",
            Scheduler::DestinationHash => "dh",
            Scheduler::Maglev => "maglev",
        }
    }

    /// Every scheduler, in the order the docs list them.
    pub const ALL: [Scheduler; 10] = [
        Scheduler::Random,
        Scheduler::RoundRobin,
        Scheduler::WeightedRoundRobin,
        Scheduler::LeastConnection,
        Scheduler::WeightedLeastConnection,
        Scheduler::ShortestExpectedDelay,
        Scheduler::NeverQueue,
        Scheduler::SourceHash,
        Scheduler::DestinationHash,
        Scheduler::Maglev,
    ];

    /// True when the choice needs the per-backend connection counts.
    pub const fn counts_connections(self) -> bool {
        matches!(
            self,
            Scheduler::LeastConnection
                | Scheduler::WeightedLeastConnection
                | Scheduler::ShortestExpectedDelay
                | Scheduler::NeverQueue
        )
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheduler {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Scheduler::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

/// IPVS `sh`/`dh` bucket count (`IP_VS_SH_TAB_SIZE`, 2^8).
pub const HASH_BUCKETS: usize = 256;

/// A backend list ready for its scheduler: the backends and, for the hashing
/// schedulers, their lookup table (built once per change of the list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// The backends, sorted (so every node builds the same tables).
    pub backends: Vec<Backend>,
    table: Table,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Table {
    None,
    Buckets(Box<[u16; HASH_BUCKETS]>),
    Maglev(Maglev),
}

impl Pool {
    /// Prepare `backends` for `sched` (sorted; Maglev and bucket tables built).
    pub fn new(mut backends: Vec<Backend>, sched: Scheduler) -> Self {
        backends.sort();
        backends.dedup();
        let table = match sched {
            Scheduler::SourceHash | Scheduler::DestinationHash => {
                buckets(&backends).map_or(Table::None, Table::Buckets)
            }
            Scheduler::Maglev => {
                let names: Vec<[u8; 18]> = backends.iter().map(Backend::name).collect();
                let refs: Vec<&[u8]> = names.iter().map(|n| n.as_slice()).collect();
                let weights: Vec<u16> = backends.iter().map(|b| b.weight).collect();
                Maglev::build(&refs, &weights, maglev::size_for(backends.len())).map_or(Table::None, Table::Maglev)
            }
            _ => Table::None,
        };
        Pool { backends, table }
    }

    /// Bytes its tables take beyond the backend list.
    pub fn table_memory(&self) -> usize {
        match &self.table {
            Table::None => 0,
            Table::Buckets(_) => HASH_BUCKETS * 2,
            Table::Maglev(m) => m.memory(),
        }
    }

    /// True when there is no backend.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }
}

/// IPVS `ip_vs_sh_reassign`: buckets dealt out in turn, each backend taking `weight`
/// consecutive ones (weight 0 takes none).
fn buckets(backends: &[Backend]) -> Option<Box<[u16; HASH_BUCKETS]>> {
    let order: Vec<u16> = backends
        .iter()
        .enumerate()
        .flat_map(|(i, b)| core::iter::repeat_n(u16::try_from(i).unwrap_or(u16::MAX), usize::from(b.weight)))
        .collect();
    if order.is_empty() {
        return None;
    }
    let mut t = Box::new([0u16; HASH_BUCKETS]);
    for (k, slot) in t.iter_mut().enumerate() {
        *slot = order.get(k % order.len()).copied().unwrap_or(0);
    }
    Some(t)
}

/// IPVS's `ip_vs_sh_hashkey` for an address: Knuth's multiplicative hash of the
/// (folded) address, low 8 bits.
fn addr_bucket(a: &[u8; 16], v6: bool) -> usize {
    let w = |i: usize| {
        let mut b = [0u8; 4];
        if let Some(s) = a.get(i..i + 4) {
            b.copy_from_slice(s);
        }
        u32::from_be_bytes(b)
    };
    let folded = if v6 { w(0) ^ w(4) ^ w(8) ^ w(12) } else { w(0) };
    (folded.wrapping_mul(2_654_435_761) as usize) & (HASH_BUCKETS - 1)
}

/// The seed of the Maglev flow hash (fixed: every node and worker maps a flow alike).
const MAGLEV_FLOW_SEED: u64 = 0x4d41_474c_4556_0003;

/// A worker's running state for one service port's scheduler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Last index chosen (`rr`, `wrr`); -1 before the first.
    last: Option<usize>,
    /// `wrr`'s current weight.
    cw: u32,
}

/// What a scheduler may read besides the backends.
pub struct Inputs<'a> {
    /// The connection's original tuple.
    pub flow: &'a FlowKey,
    /// A random number (for `random`).
    pub random: u32,
    /// Live connections per backend (for `lc`, `wlc`, `sed`, `nq`), by index.
    pub load: &'a dyn Fn(&Backend) -> u32,
}

impl fmt::Debug for Inputs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inputs").field("flow", self.flow).field("random", &self.random).finish_non_exhaustive()
    }
}

/// Choose a backend index of `pool` with `sched`; `None` when the pool is empty or
/// every backend has weight 0 where weights count.
pub fn choose(pool: &Pool, sched: Scheduler, cursor: &mut Cursor, inp: &Inputs<'_>) -> Option<usize> {
    let b = &pool.backends;
    let n = b.len();
    if n == 0 {
        return None;
    }
    match sched {
        Scheduler::Random => Some(inp.random as usize % n),
        Scheduler::RoundRobin => {
            let i = cursor.last.map_or(0, |l| (l + 1) % n);
            cursor.last = Some(i);
            Some(i)
        }
        Scheduler::WeightedRoundRobin => wrr(b, cursor),
        Scheduler::LeastConnection => least(b, inp, |load, _w| u64::from(load), true),
        Scheduler::WeightedLeastConnection => weighted_least(b, inp, 0),
        Scheduler::ShortestExpectedDelay => weighted_least(b, inp, 1),
        Scheduler::NeverQueue => {
            b.iter().position(|x| x.weight > 0 && (inp.load)(x) == 0).or_else(|| weighted_least(b, inp, 1))
        }
        Scheduler::SourceHash | Scheduler::DestinationHash => {
            let Table::Buckets(t) = &pool.table else { return None };
            let a = if sched == Scheduler::SourceHash { &inp.flow.src } else { &inp.flow.dst };
            t.get(addr_bucket(a, inp.flow.v6)).map(|&i| usize::from(i))
        }
        Scheduler::Maglev => {
            let Table::Maglev(m) = &pool.table else { return None };
            Some(usize::from(m.lookup(inp.flow.symmetric_hash(MAGLEV_FLOW_SEED))))
        }
    }
}

/// IPVS `ip_vs_wrr_schedule`: step through the backends, lowering the current weight
/// by the weights' gcd at each wrap; take the first whose weight reaches it.
fn wrr(b: &[Backend], c: &mut Cursor) -> Option<usize> {
    let max = b.iter().map(|x| u32::from(x.weight)).max().unwrap_or(0);
    if max == 0 {
        return None;
    }
    let step = b.iter().map(|x| u32::from(x.weight)).filter(|&w| w > 0).fold(0, gcd).max(1);
    let n = b.len();
    // At most one full sweep of weights: n * (max / step) + n steps.
    for _ in 0..=n * (max / step) as usize + n {
        let i = c.last.map_or(0, |l| (l + 1) % n);
        c.last = Some(i);
        if i == 0 {
            c.cw = c.cw.saturating_sub(step);
            if c.cw == 0 {
                c.cw = max;
            }
        }
        if b.get(i).is_some_and(|x| u32::from(x.weight) >= c.cw) {
            return Some(i);
        }
    }
    None
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The first backend of least `cost(load, weight)`, skipping weight 0 when `skip0`.
fn least(b: &[Backend], inp: &Inputs<'_>, cost: impl Fn(u32, u16) -> u64, skip0: bool) -> Option<usize> {
    b.iter()
        .enumerate()
        .filter(|(_, x)| !skip0 || x.weight > 0)
        .min_by_key(|(_, x)| cost((inp.load)(x), x.weight))
        .map(|(i, _)| i)
}

/// `wlc` (`extra` 0) and `sed` (`extra` 1): least `(load + extra) / weight`, compared
/// by cross-multiplication as IPVS does (`loh * dw > doh * lw`), first wins ties.
fn weighted_least(b: &[Backend], inp: &Inputs<'_>, extra: u64) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for (i, x) in b.iter().enumerate() {
        if x.weight == 0 {
            continue;
        }
        let (oh, w) = (u64::from((inp.load)(x)) + extra, u64::from(x.weight));
        match best {
            Some((_, boh, bw)) if boh * w <= oh * bw => {}
            _ => best = Some((i, oh, w)),
        }
    }
    best.map(|(i, _, _)| i)
}
