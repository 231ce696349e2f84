//! Distinct counting: exact up to a cap, then HyperLogLog.
use std::hash::Hash;

use super::mix64;

/// HyperLogLog with 2^`P` registers (Flajolet et al. 2007, with linear counting for small
/// cardinalities). Standard error ≈ 1.04 / sqrt(2^P): 0.81 % at P = 14 (16 KiB).
#[derive(Clone, Debug)]
pub struct HyperLogLog {
    registers: Vec<u8>,
    p: u32,
}

impl HyperLogLog {
    /// A sketch with `2^p` registers, `p` in 4..=18.
    pub fn new(p: u32) -> HyperLogLog {
        let p = p.clamp(4, 18);
        HyperLogLog {
            registers: vec![0; 1 << p],
            p,
        }
    }

    /// Adds an item by its 64-bit hash.
    #[inline]
    pub fn add_hash(&mut self, h: u64) {
        let idx = (h >> (64 - self.p)) as usize;
        let rest = (h << self.p) | (1 << (self.p - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        // Stored every time, without a branch (whether a rank is new is random).
        let r = &mut self.registers[idx];
        *r = (*r).max(rank);
    }

    /// Estimated number of distinct items added.
    pub fn estimate(&self) -> f64 {
        let m = self.registers.len() as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &r in &self.registers {
            sum += 1.0 / (1u64 << r) as f64;
            zeros += (r == 0) as usize;
        }
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }

    /// Register-wise maximum with another sketch of the same size.
    pub fn merge(&mut self, other: &HyperLogLog) {
        if other.p == self.p {
            for (a, b) in self.registers.iter_mut().zip(&other.registers) {
                *a = (*a).max(*b);
            }
        }
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.registers.len()
    }
}

/// The exact phase of a [`DistinctCounter`]: the keys, in first-seen order, and an
/// open-addressing index of their [`mix64`] hashes, which the caller has computed already
/// (one hash of a source serves every sketch it feeds). A key is known by its hash: a probe
/// compares 8-byte hashes, never keys. Two keys with one hash would count once; among 65 536
/// keys the odds of that are about one in four billion.
#[derive(Clone, Debug)]
struct ExactSet<K> {
    /// 0: empty; else a key's hash with its lowest bit set (so never 0).
    index: Vec<u64>,
    keys: Vec<K>,
}

impl<K: Copy> ExactSet<K> {
    /// Slots the index starts with.
    const MIN_SLOTS: usize = 16;

    fn new() -> ExactSet<K> {
        ExactSet {
            index: vec![0; Self::MIN_SLOTS],
            keys: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    /// Adds the key of hash `h`; true if it was new.
    #[inline(always)]
    fn insert(&mut self, key: K, h: u64) -> bool {
        let mark = h | 1;
        let mask = self.index.len() - 1;
        let mut i = mark as usize & mask;
        loop {
            match self.index[i] {
                0 => break,
                s if s == mark => return false,
                _ => i = (i + 1) & mask,
            }
        }
        self.index[i] = mark;
        self.keys.push(key);
        // At most half full.
        if self.keys.len() * 2 > self.index.len() {
            self.grow();
        }
        true
    }

    /// Loads the index line a key of hash `h` is looked up in first.
    #[inline(always)]
    fn prefetch(&self, h: u64) {
        super::prefetch(&self.index[(h | 1) as usize & (self.index.len() - 1)]);
    }

    /// Doubles the index, moving the marks (a key's first slot is taken from its mark, so
    /// the index needs no hash recomputed).
    #[cold]
    fn grow(&mut self) {
        let slots = self.index.len() * 2;
        let mut old = std::mem::replace(&mut self.index, super::zeroed_for_writing(slots));
        // The marks are moved to the front of the old index first, each written over the
        // last unless that was a mark: no branch on which slots are empty (half of them, at
        // random). Each then takes its first empty slot in the new index, which is at most
        // a quarter full.
        let mut marks = 0;
        for i in 0..old.len() {
            let mark = old[i];
            old[marks] = mark;
            marks += usize::from(mark != 0);
        }
        let mask = slots - 1;
        for &mark in &old[..marks] {
            let mut i = mark as usize & mask;
            while self.index[i] != 0 {
                i = (i + 1) & mask;
            }
            self.index[i] = mark;
        }
    }
}

/// Counts distinct keys exactly up to `cap`, then switches to a HyperLogLog (P = 14).
#[derive(Clone, Debug)]
pub struct DistinctCounter<K> {
    exact: Option<ExactSet<K>>,
    hll: Option<HyperLogLog>,
    cap: usize,
}

impl<K: Copy + Eq + Hash> DistinctCounter<K> {
    /// Exact up to `cap` distinct keys.
    pub fn new(cap: usize) -> DistinctCounter<K> {
        DistinctCounter {
            exact: Some(ExactSet::new()),
            hll: None,
            cap,
        }
    }

    /// Adds a key.
    #[inline]
    pub fn add(&mut self, key: K) {
        self.add_hashed(key, mix64(&key));
    }

    /// Loads the index line a key of [`mix64`] hash `h` is looked up in, a few packets
    /// before [`DistinctCounter::add_hashed`] needs it (the exact phase only: the estimate's
    /// registers are small enough to stay cached): a hint, nothing is read.
    #[inline(always)]
    pub fn prefetch(&self, h: u64) {
        if let Some(set) = &self.exact {
            set.prefetch(h);
        }
    }

    /// [`DistinctCounter::add`] with the key's [`mix64`] hash already computed.
    #[inline(always)]
    pub fn add_hashed(&mut self, key: K, h: u64) {
        if let Some(set) = &mut self.exact {
            if set.insert(key, h) && set.len() > self.cap {
                self.estimate_from_now_on();
            }
        } else if let Some(hll) = &mut self.hll {
            hll.add_hash(h);
        }
    }

    /// Leaves the exact phase: its keys go into a HyperLogLog. Out of line, so that the
    /// per-packet [`DistinctCounter::add_hashed`] stays small enough to inline (inlined with
    /// it, this made every call save and restore registers: 36 of its 71 instructions per
    /// packet on the bench capture).
    #[cold]
    #[inline(never)]
    fn estimate_from_now_on(&mut self) {
        if let Some(set) = self.exact.take() {
            self.hll = Some(Self::estimated(&set));
        }
    }

    /// A HyperLogLog of the exact phase's keys.
    fn estimated(set: &ExactSet<K>) -> HyperLogLog {
        let mut hll = HyperLogLog::new(14);
        for k in &set.keys {
            hll.add_hash(mix64(k));
        }
        hll
    }

    /// The keys, while the count is still exact (`None` once it is estimated).
    pub fn exact_keys(&self) -> Option<impl Iterator<Item = &K> + '_> {
        self.exact.as_ref().map(|set| set.keys.iter())
    }

    /// The count, and whether it is exact.
    pub fn count(&self) -> (u64, bool) {
        match (&self.exact, &self.hll) {
            (Some(set), _) => (set.len() as u64, true),
            (None, Some(h)) => (h.estimate().round() as u64, false),
            (None, None) => (0, true),
        }
    }

    /// Merges another counter (union of the keys).
    pub fn merge(&mut self, other: &DistinctCounter<K>) {
        match (&other.exact, &other.hll) {
            (Some(set), _) => {
                for k in &set.keys {
                    self.add(*k);
                }
            }
            (None, Some(h)) => {
                self.estimate_from_now_on();
                if let Some(mine) = &mut self.hll {
                    mine.merge(h);
                }
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_the_cap_and_close_above_it() {
        let mut d = DistinctCounter::new(1000);
        for i in 0..1000u32 {
            d.add(i);
            d.add(i);
        }
        assert_eq!(d.count(), (1000, true));
        for i in 0..200_000u32 {
            d.add(i);
        }
        let (n, exact) = d.count();
        assert!(!exact);
        let err = (n as f64 - 200_000.0).abs() / 200_000.0;
        assert!(err < 0.03, "estimate {n} is {:.2}% off", err * 100.0);
    }

    #[test]
    fn the_exact_phase_matches_a_hash_set_through_growth() {
        let mut d = DistinctCounter::new(1 << 20);
        let mut std_set = std::collections::HashSet::new();
        let mut rng = 0x1234_5678_u64;
        for _ in 0..100_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let k = (rng % 30_000) as u32;
            d.add(k);
            std_set.insert(k);
            assert_eq!(d.count(), (std_set.len() as u64, true));
        }
        let mut keys: Vec<u32> = d.exact_keys().unwrap().copied().collect();
        keys.sort_unstable();
        let mut want: Vec<u32> = std_set.into_iter().collect();
        want.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn merge_is_a_union() {
        let mut a = DistinctCounter::new(100_000);
        let mut b = DistinctCounter::new(100_000);
        for i in 0..5000u32 {
            a.add(i);
            b.add(i + 2500);
        }
        a.merge(&b);
        assert_eq!(a.count(), (7500, true));
        let mut big = DistinctCounter::new(10);
        for i in 0..50_000u32 {
            big.add(i);
        }
        a.merge(&big);
        let (n, exact) = a.count();
        assert!(!exact && (n as f64 - 50_000.0).abs() < 1500.0, "{n}");
    }

    #[test]
    fn small_cardinalities_use_linear_counting() {
        let mut h = HyperLogLog::new(14);
        for i in 0..100u64 {
            h.add_hash(super::super::mix64(&i));
        }
        assert!((h.estimate() - 100.0).abs() < 3.0, "{}", h.estimate());
    }
}
