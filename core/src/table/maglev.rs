//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4): a lookup
//! table of prime size `M` in which every backend owns about `M / N` entries, filled
//! from per-backend permutations so that removing one backend moves little more than
//! its own share of flows.
//!
//! Each backend's permutation is `(offset + j * skip) mod M` with `offset` and `skip`
//! from two hashes of its name (address and port), so the table depends only on the
//! backend set, not on the order the endpoints arrive in (they are sorted first).
//! Weights are honoured as turns per round (a backend of weight 2 claims two entries
//! per round), as IPVS's `mh` scheduler does.
//!
//! Size: the smallest prime of [`SIZES`] that is at least 100 x the backends (the
//! paper's and the M >= 100 N), never below the default 16381 that Cilium and
//! IPVS use; past the list, the next prime found by trial division. Entries are `u16`
//! backend indices, so a table is 2 M bytes: bounded per service by its backend count.

/// Prime table sizes (Cilium's `bpf-lb-maglev-table-size` choices, then larger).
pub const SIZES: [u32; 10] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131_071];

/// The default (and smallest used) table size.
pub const DEFAULT_SIZE: u32 = 16381;

/// Most backends one table indexes (entries are `u16`).
pub const MAX_BACKENDS: usize = 65535;

/// A built Maglev table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maglev {
    table: Box<[u16]>,
}

/// The table size for `n` backends: prime, at least `100 n` and at least
/// [`DEFAULT_SIZE`].
pub fn size_for(n: usize) -> u32 {
    let want = u64::try_from(n).unwrap_or(u64::MAX).saturating_mul(100).max(u64::from(DEFAULT_SIZE));
    if let Some(&s) = SIZES.iter().find(|&&s| u64::from(s) >= want) {
        return s;
    }
    let mut c = want | 1;
    while !is_prime(c) {
        c += 2;
    }
    u32::try_from(c).unwrap_or(u32::MAX)
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// A 64-bit hash of `bytes` under `seed` (FNV-1a folded through splitmix64's
/// finaliser: stable across runs and platforms, which a table built on two nodes
/// must be).
pub fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Maglev {
    /// Build a table of size `m` (prime) for backends named by `names` (any stable
    /// bytes: address and port) with `weights` (0 takes no entries). `None` when there
    /// is no backend of positive weight, more than [`MAX_BACKENDS`], or `m` is too
    /// small to be prime-sized for them.
    pub fn build(names: &[&[u8]], weights: &[u16], m: u32) -> Option<Self> {
        let n = names.len();
        if n == 0 || n > MAX_BACKENDS || weights.len() != n || m < 2 || !weights.iter().any(|&w| w > 0) {
            return None;
        }
        let m64 = u64::from(m);
        let perm: Vec<(u64, u64)> = names
            .iter()
            .map(|name| {
                (hash_bytes(name, 0x6d61_676c_6576_0001) % m64, hash_bytes(name, 0x6d61_676c_6576_0002) % (m64 - 1) + 1)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u16::MAX; m as usize];
        let mut filled = 0usize;
        let size = m as usize;
        'outer: loop {
            for (i, &(offset, skip)) in perm.iter().enumerate() {
                for _ in 0..weights.get(i).copied().unwrap_or(0) {
                    // The next entry of i's permutation that is still free.
                    loop {
                        let j = next.get(i).copied().unwrap_or(0);
                        let c = usize::try_from((offset + j % m64 * skip) % m64).unwrap_or(0);
                        if let Some(n) = next.get_mut(i) {
                            *n += 1;
                        }
                        if let Some(e) = table.get_mut(c)
                            && *e == u16::MAX
                        {
                            *e = u16::try_from(i).unwrap_or(u16::MAX);
                            filled += 1;
                            break;
                        }
                    }
                    if filled == size {
                        break 'outer;
                    }
                }
            }
        }
        Some(Maglev { table: table.into_boxed_slice() })
    }

    /// The backend index for a flow of hash `h`.
    #[inline]
    pub fn lookup(&self, h: u64) -> u16 {
        let n = self.table.len() as u64;
        self.table.get(usize::try_from(h % n.max(1)).unwrap_or(0)).copied().unwrap_or(0)
    }

    /// The table size `M`.
    pub fn size(&self) -> usize {
        self.table.len()
    }

    /// Entries owned by each of `n` backends.
    pub fn counts(&self, n: usize) -> Vec<usize> {
        let mut c = vec![0usize; n];
        for &e in &*self.table {
            if let Some(x) = c.get_mut(usize::from(e)) {
                *x += 1;
            }
        }
        c
    }

    /// Bytes this table takes.
    pub fn memory(&self) -> usize {
        self.table.len() * size_of::<u16>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("10.244.{}.{}:8080", i / 250, i % 250 + 1).into_bytes()).collect()
    }

    fn build(names: &[Vec<u8>], m: u32) -> Maglev {
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        Maglev::build(&refs, &vec![1; refs.len()], m).expect("table")
    }

    #[test]
    fn sizes_are_prime_and_at_least_a_hundred_per_backend() {
        assert_eq!(size_for(1), 16381);
        assert_eq!(size_for(163), 16381);
        assert_eq!(size_for(164), 32749);
        assert_eq!(size_for(1310), 131_071);
        let big = size_for(5000);
        assert!(big >= 500_000 && is_prime(u64::from(big)), "{big}");
        assert!(SIZES.iter().all(|&s| is_prime(u64::from(s))));
    }

    #[test]
    fn entries_per_backend_differ_by_at_most_one() {
        for n in [1, 2, 3, 7, 100, 163] {
            let t = build(&names(n), size_for(n));
            let c = t.counts(n);
            let (lo, hi) = (c.iter().min().copied().unwrap_or(0), c.iter().max().copied().unwrap_or(0));
            assert!(hi - lo <= 1, "n={n}: {lo}..{hi}");
            assert_eq!(c.iter().sum::<usize>(), t.size());
        }
    }

    #[test]
    fn removing_one_of_a_hundred_moves_few_flows() {
        let all = names(100);
        let before = build(&all, DEFAULT_SIZE);
        let mut fewer = all.clone();
        let gone = fewer.remove(37);
        let after = build(&fewer, DEFAULT_SIZE);
        // Entries whose backend changed, besides those of the removed one.
        let (mut moved, mut total) = (0usize, 0usize);
        for h in 0..u64::from(DEFAULT_SIZE) {
            let b = &all[usize::from(before.lookup(h))];
            let a = &fewer[usize::from(after.lookup(h))];
            if b != a {
                total += 1;
                if *b != gone {
                    moved += 1;
                }
            }
        }
        let share = moved as f64 / f64::from(DEFAULT_SIZE);
        eprintln!(
            "maglev M={DEFAULT_SIZE} N=100, one backend removed: {:.2} % of flows moved in all, {:.2} % beyond the removed one's",
            total as f64 * 100.0 / f64::from(DEFAULT_SIZE),
            share * 100.0
        );
        // The paper and the issue: <= 2.5 / N of flows moved beyond the lost share.
        assert!(share <= 2.5 / 100.0, "moved {share}");
    }

    #[test]
    fn order_of_endpoints_does_not_matter_once_sorted_and_weights_count() {
        let mut v = names(5);
        v.sort();
        let a = build(&v, 251);
        assert_eq!(a, build(&v, 251));
        let refs: Vec<&[u8]> = v.iter().map(Vec::as_slice).collect();
        let w = Maglev::build(&refs, &[2, 1, 1, 1, 1], 251).expect("table");
        let c = w.counts(5);
        assert!(c[0] >= 2 * c[1] - 2 && c[0] <= 2 * c[1] + 2, "{c:?}");
        assert!(Maglev::build(&refs, &[0; 5], 251).is_none());
        assert!(Maglev::build(&[], &[], 251).is_none());
    }
}
