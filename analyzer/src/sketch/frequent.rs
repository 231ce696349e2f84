//! Frequent items with a guaranteed error bound: Misra–Gries with batched decrements
//! (the scheme of Apache DataSketches' frequent-items sketch).
//!
//! At most `capacity` keys are tracked in an open-addressing table. When the table is
//! full, the median count is subtracted from every key and keys at or below zero are
//! dropped; the subtracted total is the `offset`. For every key, the true count lies in
//! `[estimate, estimate + offset]`, and any key whose true count exceeds
//! `total / (capacity / 2)` is guaranteed to be tracked. Memory is fixed; updates are
//! amortised O(1).

use super::{mix64, SketchKey};

/// Estimated weight of one tracked key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemEstimate<K> {
    /// The key.
    pub key: K,
    /// Counted weight (a lower bound of the true weight).
    pub count: u64,
    /// Secondary weight (e.g. bytes) counted while the key was tracked (a lower bound).
    pub secondary: u64,
    /// Upper bound of the true weight: `count + offset`.
    pub upper: u64,
}

/// A tracked key and its secondary weight (its count lives in `counts`, beside the tags,
/// so a purge reads two dense arrays and touches the slots of survivors only).
#[derive(Clone, Copy, Debug)]
struct Slot<K> {
    key: K,
    secondary: u64,
}

/// A tracked key with both its weights.
#[derive(Clone, Copy, Debug)]
struct Tracked<K> {
    key: K,
    count: u64,
    secondary: u64,
}

/// The sketch. `K` is small and `Copy` (addresses, flow keys).
#[derive(Clone, Debug)]
pub struct FrequentItems<K> {
    /// One byte per slot: 0 empty, else 7 bits of the key's hash with the high bit set. The
    /// probe walks this small array and touches a slot only on a tag match, so a miss
    /// (a new key, most keys under a flood of random sources) reads no slot at all. Tags are
    /// the only record of occupancy: a slot whose tag is 0 may hold a stale entry.
    tags: Vec<u8>,
    /// Counted weight of each slot, and 0 in every empty one (a purge clears the counts with
    /// the tags): the purge's passes read the counts alone, with no branch on occupancy.
    counts: Vec<u64>,
    slots: Vec<Option<Slot<K>>>,
    mask: usize,
    len: usize,
    /// Tracked keys whose count is 0 and 1, kept as counts change: a purge under a flood
    /// (most keys seen once) finds its median without a pass over the table.
    small: [usize; 2],
    max_len: usize,
    offset: u64,
    total: u64,
    /// A purge's tracked keys as `count << 64 | slot`, selected in place for the median
    /// (see [`FrequentItems::select_above`]): one place per key the table tracks at most,
    /// and one more, as each is written before it is known to be tracked. Empty until the
    /// first purge that needs it; then its length never changes.
    scratch: Vec<u128>,
    /// One bit per slot: the survivors of a purge, so that they are collected in slot
    /// order (the order they went back in before, which merges depend on). Empty until
    /// the first purge that needs it.
    marks: Vec<u64>,
    /// The keys a purge keeps (tag, reduced count, slot), while the table is cleared;
    /// reused from purge to purge.
    survivors: Vec<(u8, u64, Slot<K>)>,
}

/// Slots a purge reads at once (the table has a power-of-two size of at least 32).
const CHUNK: usize = 8;

/// The tag of a hash: 7 high bits (independent of the low bits that pick the slot), never 0.
#[inline]
fn tag_of(h: u64) -> u8 {
    0x80 | (h >> 57) as u8
}

impl<K: SketchKey> FrequentItems<K> {
    /// A sketch tracking at most `capacity` keys (rounded up to a power of two ≥ 16).
    pub fn new(capacity: usize) -> FrequentItems<K> {
        let max_len = capacity.max(16).next_power_of_two();
        // Load factor 3/4 at most.
        let table = (max_len * 4 / 3 + 1).next_power_of_two();
        FrequentItems {
            tags: vec![0; table],
            counts: vec![0; table],
            slots: vec![None; table],
            mask: table - 1,
            len: 0,
            small: [0; 2],
            max_len,
            offset: 0,
            total: 0,
            scratch: Vec::new(),
            marks: Vec::new(),
            survivors: Vec::new(),
        }
    }

    /// Keys tracked at most.
    pub fn capacity(&self) -> usize {
        self.max_len
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total weight added.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The maximum error of any estimate (0 while nothing was ever evicted).
    pub fn error_bound(&self) -> u64 {
        self.offset
    }

    /// Bytes of memory the sketch holds.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<Slot<K>>>()
            + self.tags.capacity()
            + self.counts.capacity() * 8
            + self.survivors.capacity() * std::mem::size_of::<(u8, u64, Slot<K>)>()
            + self.scratch.capacity() * 16
            + self.marks.capacity() * 8
    }

    /// Adds `weight` (and a secondary weight) to `key`.
    #[inline]
    pub fn add(&mut self, key: K, weight: u64, secondary: u64) {
        self.add_hashed(key, key.sketch_hash(), weight, secondary);
    }

    /// [`FrequentItems::add`] with the key's [`SketchKey::sketch_hash`] already computed
    /// (from address hashes shared with the other sketches fed the same packet).
    #[inline(always)]
    pub fn add_hashed(&mut self, key: K, h: u64, weight: u64, secondary: u64) {
        debug_assert_eq!(h, key.sketch_hash());
        self.total += weight;
        let tag = tag_of(h);
        let mask = self.mask;
        // Cut to `mask + 1` entries once: every index below is `& mask`, so the compiler
        // drops the bounds checks of the probe (the three arrays are that long).
        let tags = &mut self.tags[..=mask];
        let counts = &mut self.counts[..=mask];
        let slots = &mut self.slots[..=mask];
        let mut i = h as usize & mask;
        loop {
            let t = tags[i];
            if t == 0 {
                break;
            }
            if t == tag {
                if let Some(s) = &mut slots[i] {
                    if s.key == key {
                        let before = counts[i];
                        counts[i] = before + weight;
                        s.secondary += secondary;
                        if before <= 1 {
                            self.recount_small(before, before + weight);
                        }
                        return;
                    }
                }
            }
            i = (i + 1) & mask;
        }
        tags[i] = tag;
        counts[i] = weight;
        slots[i] = Some(Slot { key, secondary });
        self.len += 1;
        if weight <= 1 {
            self.small[weight as usize] += 1;
        }
        if self.len >= self.max_len {
            self.purge();
        }
    }

    /// A tracked key's count went from `before` (0 or 1) to `after`.
    #[inline]
    fn recount_small(&mut self, before: u64, after: u64) {
        self.small[before as usize] -= 1;
        if after <= 1 {
            self.small[after as usize] += 1;
        }
    }

    /// Loads the slot a key of hash `h` is looked up in first, a few packets before
    /// [`FrequentItems::add_hashed`] needs it: a hint, nothing is read. (The slots are the
    /// sketch's largest array; loading the tag and count lines too measured no faster.)
    #[inline(always)]
    pub fn prefetch(&self, h: u64) {
        super::prefetch(&self.slots[h as usize & self.mask]);
    }

    /// Subtracts the median count from every key and drops those at or below zero.
    #[cold]
    fn purge(&mut self) {
        // The keys above the cut are set aside, the table cleared, and they go back in at
        // their own hash, in slot order (a table cleared in place: nothing is allocated per
        // purge after the first, and a flood of one-off keys leaves few survivors to move).
        let mut keep = std::mem::take(&mut self.survivors);
        keep.clear();
        // At most half the keys are above the median: one allocation per sketch, at most.
        keep.reserve(self.len / 2 + 1);
        // A flood's keys, seen once each, fill most of a full table, and the median is 0
        // or 1: the keys of count 0 and 1 are kept count of as they change, so that case
        // needs no selection.
        let mid = self.len / 2;
        let [zeros, ones] = self.small;
        let cut = if zeros + ones > mid {
            self.keep_above(1, &mut keep);
            1
        } else {
            self.select_above(&mut keep)
        };
        self.offset += cut;
        self.tags.fill(0);
        self.counts.fill(0);
        self.len = keep.len();
        self.small = [0; 2];
        for &(tag, count, s) in &keep {
            if count <= 1 {
                self.small[count as usize] += 1;
            }
            let mut j = s.key.sketch_hash() as usize & self.mask;
            while self.tags[j] != 0 {
                j = (j + 1) & self.mask;
            }
            self.tags[j] = tag;
            self.counts[j] = count;
            self.slots[j] = Some(s);
        }
        self.survivors = keep;
    }

    /// Collects the keys whose count is above `cut` (tag, count less the cut, slot), in
    /// slot order: the purge of a table whose median count is 0 or 1.
    fn keep_above(&self, cut: u64, keep: &mut Vec<(u8, u64, Slot<K>)>) {
        // The counts are read a chunk at a time: one vector compare passes over a chunk with
        // no count above the cut (most of them, under a flood of one-off keys). An empty
        // slot's count is 0, never above the cut (at least 1), so occupancy needs no test.
        debug_assert_eq!(self.counts.len() % CHUNK, 0, "no slot is left out");
        for (c, chunk) in self.counts.chunks_exact(CHUNK).enumerate() {
            if !chunk.iter().fold(false, |any, &count| any | (count > cut)) {
                continue;
            }
            for (k, &count) in chunk.iter().enumerate() {
                let i = c * CHUNK + k;
                if count > cut {
                    if let Some(s) = self.slots[i] {
                        keep.push((self.tags[i], count - cut, s));
                    }
                }
            }
        }
    }

    /// Finds the median count of the tracked keys (the one at position `len / 2` in
    /// ascending order) and collects the keys above it as [`FrequentItems::keep_above`]
    /// does; returns the cut (the median, at least 1). One pass gathers the tracked keys'
    /// counts with their slots, a selection puts the median in its place with every
    /// larger count after it, and only those are looked at again: the purge of a table
    /// counted by bytes, whose median is large.
    fn select_above(&mut self, keep: &mut Vec<(u8, u64, Slot<K>)>) -> u64 {
        let slots = self.counts.len();
        if self.scratch.is_empty() {
            self.scratch = vec![0; self.max_len + 1];
            self.marks = vec![0; slots.div_ceil(64)];
        }
        // Every slot is written, and kept (the next one written after it) when it is
        // tracked: no branch on the random occupancy. At most `max_len` slots are tracked,
        // so `max_len + 1` places hold every write.
        let gathered = &mut self.scratch;
        let mut n = 0;
        for (i, (&tag, &count)) in self.tags.iter().zip(&self.counts).enumerate() {
            gathered[n] = (u128::from(count) << 64) | i as u128;
            n += usize::from(tag != 0);
        }
        debug_assert_eq!(n, self.len, "every tracked key is gathered");
        // Ordered by count, then slot: the median count is the one at `n / 2` either way.
        let (_, median, above) = gathered[..n].select_nth_unstable(n / 2);
        let cut = ((*median >> 64) as u64).max(1);
        // Only keys after the median can be above the cut; they are marked by slot, and
        // collected in slot order.
        let marks = &mut self.marks;
        marks.fill(0);
        for &g in above.iter() {
            if (g >> 64) as u64 > cut {
                let i = g as u64 as usize;
                marks[i / 64] |= 1 << (i % 64);
            }
        }
        for (w, &word) in marks.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(s) = self.slots[i] {
                    keep.push((self.tags[i], self.counts[i] - cut, s));
                }
            }
        }
        cut
    }

    /// Entries in use.
    fn occupied(&self) -> impl Iterator<Item = Tracked<K>> + '_ {
        self.tags
            .iter()
            .zip(&self.slots)
            .zip(&self.counts)
            .filter(|((t, _), _)| **t != 0)
            .filter_map(|((_, s), &count)| {
                s.map(|s| Tracked {
                    key: s.key,
                    count,
                    secondary: s.secondary,
                })
            })
    }

    /// The estimate for one key (`None` if not tracked: its true weight is at most the error bound).
    pub fn get(&self, key: &K) -> Option<ItemEstimate<K>> {
        let h = key.sketch_hash();
        let tag = tag_of(h);
        let mut i = h as usize & self.mask;
        while self.tags[i] != 0 {
            if self.tags[i] == tag {
                if let Some(s) = &self.slots[i] {
                    if s.key == *key {
                        return Some(self.estimate(Tracked {
                            key: s.key,
                            count: self.counts[i],
                            secondary: s.secondary,
                        }));
                    }
                }
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    fn estimate(&self, s: Tracked<K>) -> ItemEstimate<K> {
        ItemEstimate {
            key: s.key,
            count: s.count,
            secondary: s.secondary,
            upper: s.count + self.offset,
        }
    }

    /// The `n` heaviest tracked keys, heaviest first; ties in a fixed order (by key hash).
    pub fn top(&self, n: usize) -> Vec<ItemEstimate<K>> {
        let mut all: Vec<ItemEstimate<K>> = self.occupied().map(|s| self.estimate(s)).collect();
        let n = n.min(all.len());
        if n == 0 {
            return Vec::new();
        }
        // Ties are broken by a hash of the key, so the top n never depend on slot order
        // (which depends on the order shards were merged in).
        let order = |a: &ItemEstimate<K>, b: &ItemEstimate<K>| {
            b.count
                .cmp(&a.count)
                .then_with(|| mix64(&a.key).cmp(&mix64(&b.key)))
        };
        if n < all.len() {
            all.select_nth_unstable_by(n - 1, order);
            all.truncate(n);
        }
        all.sort_by(order);
        all
    }

    /// Adds another sketch's counts into this one (shards merged at window ends).
    pub fn merge(&mut self, other: &FrequentItems<K>) {
        for s in other.occupied() {
            self.add(s.key, s.count, s.secondary);
        }
        // `add` counted the other's tracked weight; its evicted weight is in its offset.
        self.total += other.total - other.occupied().map(|s| s.count).sum::<u64>();
        self.offset += other.offset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapwatch_synth::Rng;

    #[test]
    fn exact_while_it_fits() {
        let mut f = FrequentItems::new(64);
        for k in 0..40u32 {
            for _ in 0..=k {
                f.add(k, 1, 10);
            }
        }
        assert_eq!(f.error_bound(), 0);
        let top = f.top(3);
        assert_eq!(
            top.iter()
                .map(|e| (e.key, e.count, e.secondary))
                .collect::<Vec<_>>(),
            vec![(39, 40, 400), (38, 39, 390), (37, 38, 380)]
        );
        assert_eq!(f.total(), (1..=40).sum::<u64>());
    }

    #[test]
    fn bounds_hold_on_a_skewed_stream_with_many_keys() {
        let mut rng = Rng::new(3);
        let mut f = FrequentItems::new(256);
        let mut exact = std::collections::HashMap::new();
        for _ in 0..200_000 {
            // Zipf-like: key k with probability ~ 1/k over 50 000 keys.
            let k = (50_000f64.powf(rng.unit())) as u32;
            f.add(k, 1, 0);
            *exact.entry(k).or_insert(0u64) += 1;
        }
        assert!(
            f.error_bound() > 0,
            "the stream must overflow the sketch for this test"
        );
        assert!(
            f.error_bound() <= f.total() / 128,
            "bound {} too loose",
            f.error_bound()
        );
        for (k, n) in &exact {
            match f.get(k) {
                Some(e) => assert!(
                    e.count <= *n && *n <= e.upper,
                    "key {k}: {n} not in [{}, {}]",
                    e.count,
                    e.upper
                ),
                None => assert!(
                    *n <= f.error_bound(),
                    "key {k} with {n} dropped, bound {}",
                    f.error_bound()
                ),
            }
        }
        // The ten heaviest keys are found, in order.
        let mut truth: Vec<_> = exact.into_iter().collect();
        truth.sort_by_key(|t| std::cmp::Reverse(t.1));
        let top: Vec<u32> = f.top(5).iter().map(|e| e.key).collect();
        assert_eq!(top, truth.iter().take(5).map(|t| t.0).collect::<Vec<_>>());
    }

    /// A purge subtracts the median count (the middle of the sorted counts, at least 1)
    /// and keeps exactly the keys above it, with their counts less the median: byte-like
    /// counts (the selection) and packet-like ones (the keys of count 0 and 1) alike.
    #[test]
    fn a_purge_cuts_at_the_middle_of_the_sorted_counts() {
        let mut rng = Rng::new(9);
        for round in 0..300 {
            let mut f = FrequentItems::new(64);
            // Packet counts, byte counts of single packets, of windows, of long runs.
            let spread = [2, 70, 1_500, 10_000, 1 << 40, 1 << 50][round % 6];
            // Zero weights in every other round (a key counted by bytes of empty frames).
            let least = u64::from(round % 2 == 0);
            let mut counts = Vec::new();
            for k in 0..63u32 {
                let c = least + rng.below(spread);
                f.add(k, c, 0);
                counts.push((k, c));
            }
            let mut sorted: Vec<u64> = counts.iter().map(|c| c.1).collect();
            sorted.sort_unstable();
            // The 64th key fills the table: the purge sees every key but it counted too.
            let last = least + rng.below(spread);
            f.add(63, last, 0);
            counts.push((63, last));
            sorted.push(last);
            sorted.sort_unstable();
            let cut = sorted[sorted.len() / 2].max(1);
            assert_eq!(f.error_bound(), cut, "round {round}");
            for &(k, c) in &counts {
                let kept = f.get(&k).map(|e| e.count);
                assert_eq!(kept, (c > cut).then(|| c - cut), "round {round} key {k}");
            }
        }
    }

    /// The purge's passes read counts alone: every empty slot must hold 0, after purges
    /// of floods and of tables with heavy keys alike; and the keys of count 0 and 1 the
    /// median is found by are counted right as counts change (zero weights included).
    #[test]
    fn empty_slots_hold_no_count_after_purges() {
        let mut rng = Rng::new(3);
        let mut f = FrequentItems::new(64);
        for i in 0..50_000u32 {
            let key = if i % 3 == 0 { rng.below(8) as u32 } else { i };
            f.add(key, rng.below(5), 0);
            let tracked = |c: u64| {
                f.tags
                    .iter()
                    .zip(&f.counts)
                    .filter(|&(&t, &n)| t != 0 && n == c)
                    .count()
            };
            assert_eq!(f.small, [tracked(0), tracked(1)], "after {i} adds");
            if i % 997 == 0 {
                assert!(f
                    .tags
                    .iter()
                    .zip(&f.counts)
                    .all(|(&t, &c)| t != 0 || c == 0));
                assert_eq!(f.tags.iter().filter(|&&t| t != 0).count(), f.len());
            }
        }
        assert!(f.error_bound() > 0, "the flood purged");
    }

    #[test]
    fn merging_shards_keeps_the_bounds() {
        let mut a = FrequentItems::new(32);
        let mut b = FrequentItems::new(32);
        for i in 0..10_000u32 {
            a.add(i % 500, 1, 0);
            b.add(7, 1, 0);
        }
        a.merge(&b);
        assert_eq!(a.total(), 20_000);
        let e = a.get(&7).expect("heavy key survives the merge");
        assert!(e.count <= 10_020 && 10_020 <= e.upper, "{e:?}");
        assert_eq!(a.top(1)[0].key, 7);
    }
}
