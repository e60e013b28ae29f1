//! Choosing the port (or ICMP identifier) of a source-NATed connection.
//!
//! As `nf_nat_l4proto_unique_tuple` does: probe consecutive ports from a random
//! offset, at most 128, then rounds of 64, 32 and 16 from fresh random offsets; a
//! port is free when no live connection holds the reply tuple it would give, so
//! uniqueness is per (protocol, translated address, destination address, destination
//! port) and one port serves many destinations. `fully-random` (kube-proxy's and
//! Flannel's `--random-fully`) starts from a random offset always; keep-the-port
//! (Linux's plain masquerade) first tries the connection's own source port. When
//! every probe fails, the connection is dropped and counted (`nat_port_exhausted`),
//! where the kernel goes on with a clashing tuple that its confirm step then drops.
//!
//! Each worker owns an equal slice of the range, so that the worker owning a reply's
//! destination port is known from the port alone (`owner`).

use core::ops::RangeInclusive;

use rand_core::RngCore;

/// How a port is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PortMode {
    /// A random port of the range (`--random-fully`), the Kubernetes profile's default.
    #[default]
    FullyRandom,
    /// The connection's own source port when it is free, else a random one.
    KeepPort,
}

/// Probes per round: 128, then halved while at least 16 (the kernel's schedule).
const FIRST_ROUND: u32 = 128;
const LAST_ROUND: u32 = 16;

/// A worker's port allocator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortAlloc {
    lo: u16,
    hi: u16,
    mode: PortMode,
    /// The identifier range for ICMP echo (all of 0..=65535, sliced the same way).
    icmp_lo: u16,
    icmp_hi: u16,
}

/// Slice `index` of `count` equal slices of `range` (the last takes the rest).
pub(crate) fn slice(range: &RangeInclusive<u16>, index: usize, count: usize) -> (u16, u16) {
    let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
    let count = u32::try_from(count.max(1)).unwrap_or(1);
    let index = u32::try_from(index).unwrap_or(0).min(count - 1);
    let size = (hi - lo + 1) / count;
    let a = lo + index * size;
    let b = if index + 1 == count { hi } else { a + size.max(1) - 1 };
    (u16::try_from(a).unwrap_or(u16::MAX), u16::try_from(b.max(a)).unwrap_or(u16::MAX))
}

/// The worker (of `count`) whose slice of `range` holds `port`; `None` outside it.
pub fn owner(range: &RangeInclusive<u16>, count: usize, port: u16) -> Option<usize> {
    if !range.contains(&port) {
        return None;
    }
    (0..count.max(1)).find(|&w| {
        let (a, b) = slice(range, w, count);
        (a..=b).contains(&port)
    })
}

impl PortAlloc {
    /// The allocator of worker `worker` of `workers` over `range`.
    pub fn new(range: RangeInclusive<u16>, mode: PortMode, worker: usize, workers: usize) -> Self {
        let (lo, hi) = slice(&range, worker, workers);
        let (icmp_lo, icmp_hi) = slice(&(0..=u16::MAX), worker, workers);
        PortAlloc { lo, hi, mode, icmp_lo, icmp_hi }
    }

    /// This worker's ports for protocol `proto`.
    pub fn range(&self, proto: u8) -> RangeInclusive<u16> {
        if proto == 1 || proto == 58 { self.icmp_lo..=self.icmp_hi } else { self.lo..=self.hi }
    }

    /// A free port for a connection whose own source port is `orig`, `taken(p)` telling
    /// whether port `p` would clash; `None` when none was found.
    pub fn choose(
        &self,
        proto: u8,
        orig: u16,
        rng: &mut impl RngCore,
        mut taken: impl FnMut(u16) -> bool,
    ) -> Option<u16> {
        let r = self.range(proto);
        let (lo, size) = (u32::from(*r.start()), u32::from(*r.end()) - u32::from(*r.start()) + 1);
        if self.mode == PortMode::KeepPort && r.contains(&orig) && !taken(orig) {
            return Some(orig);
        }
        let mut attempts = size.min(FIRST_ROUND);
        loop {
            let mut off = rng.next_u32() % size;
            for _ in 0..attempts {
                let p = u16::try_from(lo + off).unwrap_or(u16::MAX);
                if !taken(p) {
                    return Some(p);
                }
                off = if off + 1 == size { 0 } else { off + 1 };
            }
            if attempts >= size || attempts < LAST_ROUND * 2 {
                return None;
            }
            attempts /= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn slices_cover_the_range_once_and_name_their_owner() {
        let range = 1024..=65535;
        for workers in [1, 2, 3, 7] {
            let mut next = 1024u32;
            for w in 0..workers {
                let (a, b) = slice(&range, w, workers);
                assert_eq!(u32::from(a), next, "workers {workers} slice {w}");
                next = u32::from(b) + 1;
                assert_eq!(owner(&range, workers, a), Some(w));
                assert_eq!(owner(&range, workers, b), Some(w));
            }
            assert_eq!(next, 65536);
        }
        assert_eq!(owner(&range, 2, 80), None);
    }

    #[test]
    fn keep_port_keeps_a_free_port_and_random_does_not_look_at_it() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let keep = PortAlloc::new(1024..=65535, PortMode::KeepPort, 0, 1);
        assert_eq!(keep.choose(6, 40000, &mut rng, |_| false), Some(40000));
        let p = keep.choose(6, 40000, &mut rng, |p| p == 40000).unwrap();
        assert_ne!(p, 40000);
        let random = PortAlloc::new(1024..=65535, PortMode::FullyRandom, 0, 1);
        let picks: Vec<u16> = (0..8).map(|_| random.choose(6, 40000, &mut rng, |_| false).unwrap()).collect();
        assert!(picks.iter().all(|&p| p != 40000 && p >= 1024));
        assert!(picks.windows(2).any(|w| w[0] != w[1]), "{picks:?}");
    }

    #[test]
    fn a_full_range_gives_none_after_the_kernels_probe_schedule() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(2);
        let a = PortAlloc::new(1024..=65535, PortMode::FullyRandom, 0, 1);
        let mut probes = 0;
        assert_eq!(
            a.choose(17, 5000, &mut rng, |_| {
                probes += 1;
                true
            }),
            None
        );
        assert_eq!(probes, 128 + 64 + 32 + 16);
        // A small range is probed whole, once.
        let small = PortAlloc::new(2000..=2009, PortMode::FullyRandom, 0, 1);
        let mut seen = Vec::new();
        assert_eq!(
            small.choose(17, 5000, &mut rng, |p| {
                seen.push(p);
                p != 2007
            }),
            Some(2007)
        );
        let mut probes = 0;
        assert_eq!(
            small.choose(17, 5000, &mut rng, |_| {
                probes += 1;
                true
            }),
            None
        );
        assert_eq!(probes, 10);
    }

    #[test]
    fn icmp_identifiers_use_the_whole_space_sliced() {
        let a = PortAlloc::new(30000..=30009, PortMode::FullyRandom, 1, 2);
        assert_eq!(a.range(1), 32768..=65535);
        assert_eq!(a.range(6), 30005..=30009);
    }
}
