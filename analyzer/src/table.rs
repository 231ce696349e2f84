//! A hash map for per-flow state whose probe can be prefetched.
//!
//! The per-packet detectors each keep a table keyed by flow, and under traffic of many
//! short flows nearly every probe misses the cache. [`FlowMap`] splits the map in two: a
//! compact index of 8-byte slots (a 32-bit tag of the key's hash and a position) and a dense
//! array of the entries. A probe reads one index line and touches an entry only on a tag
//! match, so the line a packet will probe can be loaded a few packets ahead
//! ([`FlowMap::prefetch`]) and a miss (a new flow) costs no second load. The dense entries
//! also make sweeps a sequential walk.
use crate::sketch::{huge_vec, prefetch, prefetch_bytes, release_spare, HugeTable};

/// A key of a [`FlowMap`] and its 64-bit hash, mixed in every bit (the low bits pick the
/// slot, the high 32 are the tag). TCP connection keys hash with
/// [`tapwatch_classifier::flow_hash`], the hash the dealer picks workers by.
pub(crate) trait TableKey: Copy + Eq {
    /// The key's hash.
    fn table_hash(&self) -> u64;
}

/// One stored entry with its key's hash (kept for moves and rebuilds of the index),
/// aligned as `A` is. In this order: a probe reads the key, then the value's first fields
/// (see [`FlowMap::prefetch_entry_head`]); the hash is read only when entries move.
#[derive(Clone, Debug)]
#[repr(C)]
struct Entry<K, V, A> {
    key: K,
    value: V,
    hash: u64,
    _align: [A; 0],
}

/// A TCP connection by its [`flow_hash`](tapwatch_classifier::flow_hash), the same in
/// both directions: all 64 bits stand for its endpoints, which every packet gives again,
/// so a table keyed by it keeps no addresses (the latency and handshake tables; the
/// retransmission table keeps the same hash in its buckets). Two live connections would
/// have to agree in all 64 bits to be taken for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnHash(pub u64);

impl TableKey for ConnHash {
    #[inline]
    fn table_hash(&self) -> u64 {
        self.0
    }
}

/// An entry alignment for a [`FlowMap`] whose entries are 64 bytes (each then one cache
/// line), or whose first 128 bytes are all a packet reads
/// ([`FlowMap::prefetch_entry_head`]): every entry starts a cache line, and those bytes
/// lie in two lines.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
pub(crate) struct Align64;

/// The map. Open addressing with linear probing over the index, kept at most half full;
/// the index doubles as entries are added. Iteration follows the entries array: insertion
/// order, except that a removal moves the last entry into the hole. `A` aligns the entries
/// (see [`Align64`]).
#[derive(Debug)]
pub(crate) struct FlowMap<K, V, A = ()> {
    /// 0: empty; else `tag << 32 | (position + 1)`.
    index: HugeTable<u64>,
    mask: usize,
    entries: Vec<Entry<K, V, A>>,
}

/// The empty slot a key absent from a [`FlowMap`] would take ([`FlowMap::find`]).
#[derive(Debug)]
pub(crate) struct Vacant {
    slot: usize,
}

/// Slots an index starts with.
const MIN_SLOTS: usize = 64;

/// Bytes of entries a map reserves up front at most ([`FlowMap::with_room`]); a map
/// allowed more grows beyond by doubling.
const MAX_RESERVED_BYTES: usize = 256 << 20;

/// Greatest common divisor (of sizes and alignments).
const fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[inline]
fn tag_of(hash: u64) -> u64 {
    hash >> 32
}

impl<K: TableKey, V, A> FlowMap<K, V, A> {
    /// An empty map.
    pub fn new() -> FlowMap<K, V, A> {
        FlowMap {
            index: HugeTable::new(MIN_SLOTS, 0),
            mask: MIN_SLOTS - 1,
            entries: Vec::new(),
        }
    }

    /// An empty map with room for `entries` entries (at most [`MAX_RESERVED_BYTES`]) set
    /// aside: address space only, whose pages the kernel backs (with huge pages where they
    /// are whole) as entries are written. A map of a table with a cap never moves its
    /// entries as it fills: no copy, and each page is zeroed once.
    pub fn with_room(entries: usize) -> FlowMap<K, V, A> {
        let most = MAX_RESERVED_BYTES / std::mem::size_of::<Entry<K, V, A>>().max(1);
        FlowMap {
            entries: huge_vec(entries.min(most)),
            ..FlowMap::new()
        }
    }

    /// Bytes one entry takes in the entries array (its key, value and hash): the lines a
    /// probe of a known flow loads.
    pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry<K, V, A>>();

    /// Where an entry's value starts in it (its key comes first).
    pub const VALUE_OFFSET: usize = std::mem::offset_of!(Entry<K, V, A>, value);

    /// Cache lines the first `bytes` bytes of an entry span at most, wherever the entries
    /// array puts it: entries lie at multiples of their size from a start aligned as an
    /// entry is, so an entry starts a multiple of gcd(alignment, size, 64) bytes into a
    /// line, at most 64 less that. For the layout checks of the tables, at compile time.
    pub const fn lines_spanned(bytes: usize) -> usize {
        let step = gcd(
            gcd(std::mem::align_of::<Entry<K, V, A>>(), Self::ENTRY_BYTES),
            64,
        );
        (64 - step + bytes).div_ceil(64)
    }

    /// Entries stored.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Loads the index line a key of hash `hash` will probe into the cache (a hint: see
    /// [`crate::sketch::prefetch`]).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        prefetch(&self.index[hash as usize & self.mask]);
    }

    /// Loads the entry a key of hash `hash` will be found in, if the index (loaded by
    /// [`FlowMap::prefetch`] a few packets before) has a slot with its tag: the second stage
    /// of a probe, for keys that are there (a packet of a known flow). Reads the index, so
    /// it runs closer to the probe than the first stage; a hint, nothing else is read.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) {
        self.prefetch_entry_head(hash, Self::ENTRY_BYTES);
    }

    /// [`FlowMap::prefetch_entry`] of an entry's first `bytes` bytes only (its key and the
    /// value's fields a packet reads, when the rest is read rarely).
    #[inline]
    pub fn prefetch_entry_head(&self, hash: u64, bytes: usize) {
        let tag = tag_of(hash);
        let mut i = hash as usize & self.mask;
        loop {
            let s = self.index[i];
            if s == 0 {
                return;
            }
            if s >> 32 == tag {
                if let Some(e) = self.entries.get((s as u32 - 1) as usize) {
                    let start = (e as *const Entry<K, V, A>).cast::<u8>();
                    prefetch_bytes(start, bytes.min(Self::ENTRY_BYTES));
                }
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The slot of `key` and its entry's position, or the empty slot where it would go.
    /// `hash` is the key's [`TableKey::table_hash`]: every method takes it from the caller,
    /// which computes it once per packet for every table.
    #[inline]
    fn probe(&self, key: &K, hash: u64) -> Result<(usize, usize), usize> {
        debug_assert_eq!(hash, key.table_hash());
        let tag = tag_of(hash);
        let mut i = hash as usize & self.mask;
        loop {
            let s = self.index[i];
            if s == 0 {
                return Err(i);
            }
            if s >> 32 == tag {
                let pos = (s as u32 - 1) as usize;
                if self.entries[pos].key == *key {
                    return Ok((i, pos));
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The value of `key` (whose hash is `hash`).
    #[inline]
    pub fn get(&self, key: &K, hash: u64) -> Option<&V> {
        let (_, pos) = self.probe(key, hash).ok()?;
        Some(&self.entries[pos].value)
    }

    /// The value of `key` (whose hash is `hash`), to change.
    #[inline]
    pub fn get_mut(&mut self, key: &K, hash: u64) -> Option<&mut V> {
        let (_, pos) = self.probe(key, hash).ok()?;
        Some(&mut self.entries[pos].value)
    }

    /// Stores `value` under `key` (whose hash is `hash`); returns the value it replaced.
    #[inline]
    pub fn insert(&mut self, key: K, hash: u64, value: V) -> Option<V> {
        match self.probe(&key, hash) {
            Ok((_, pos)) => Some(std::mem::replace(&mut self.entries[pos].value, value)),
            Err(slot) => {
                self.push(slot, hash, key, value);
                None
            }
        }
    }

    /// Where `key` (whose hash is `hash`) is: its entry's position, or the slot it would
    /// take. One probe, for a caller that decides between the two (a position or a slot is
    /// good until the map next changes).
    #[inline]
    pub fn find(&self, key: &K, hash: u64) -> Result<usize, Vacant> {
        self.probe(key, hash)
            .map(|(_, pos)| pos)
            .map_err(|slot| Vacant { slot })
    }

    /// The value at a position [`FlowMap::find`] gave.
    #[inline]
    pub fn at_mut(&mut self, pos: usize) -> &mut V {
        &mut self.entries[pos].value
    }

    /// Stores `key` (whose hash is `hash`, absent) in the slot [`FlowMap::find`] gave, with
    /// no change to the map since; returns its position.
    #[inline]
    pub fn insert_vacant(&mut self, vacant: Vacant, hash: u64, key: K, value: V) -> usize {
        debug_assert_eq!(self.index[vacant.slot], 0, "the slot is still empty");
        self.push(vacant.slot, hash, key, value)
    }

    /// Adds an entry at an empty slot; returns its position.
    fn push(&mut self, slot: usize, hash: u64, key: K, value: V) -> usize {
        let pos = self.entries.len();
        assert!(
            pos < u32::MAX as usize,
            "a flow map holds fewer than 2^32 entries"
        );
        if pos == self.entries.capacity() {
            // Grown here rather than by `push`: the new buffer is asked for huge pages before
            // the entries are moved in (entries are read at random, one per packet of a
            // known flow, and a table of many flows spans more 4 KiB pages than the TLB
            // holds).
            let mut grown = huge_vec((pos * 2).max(MIN_SLOTS / 2));
            grown.append(&mut self.entries);
            self.entries = grown;
        }
        self.entries.push(Entry {
            hash,
            key,
            value,
            _align: [],
        });
        self.index[slot] = tag_of(hash) << 32 | (pos as u64 + 1);
        if (pos + 1) * 2 > self.index.len() {
            self.rebuild(self.index.len() * 2);
        }
        pos
    }

    /// Removes `key` (whose hash is `hash`); returns its value.
    pub fn remove(&mut self, key: &K, hash: u64) -> Option<V> {
        let (slot, pos) = self.probe(key, hash).ok()?;
        self.unlink(slot);
        let last = self.entries.len() - 1;
        if pos != last {
            // The last entry moves into the hole: its slot is pointed at the new position.
            let moved = self.slot_of_position(self.entries[last].hash, last);
            self.index[moved] = tag_of(self.entries[last].hash) << 32 | (pos as u64 + 1);
        }
        Some(self.entries.swap_remove(pos).value)
    }

    /// The slot that holds position `pos` (whose key hashes to `hash`).
    fn slot_of_position(&self, hash: u64, pos: usize) -> usize {
        let want = tag_of(hash) << 32 | (pos as u64 + 1);
        let mut i = hash as usize & self.mask;
        while self.index[i] != want {
            debug_assert_ne!(self.index[i], 0, "every entry has a slot");
            i = (i + 1) & self.mask;
        }
        i
    }

    /// Empties a slot and shifts back the slots after it that would no longer be found
    /// (deletion without tombstones for linear probing).
    fn unlink(&mut self, mut hole: usize) {
        let mut i = hole;
        loop {
            i = (i + 1) & self.mask;
            let s = self.index[i];
            if s == 0 {
                break;
            }
            let pos = (s as u32 - 1) as usize;
            let home = self.entries[pos].hash as usize & self.mask;
            // The entry at `i` may fill the hole unless its home lies cyclically in (hole, i].
            let stays = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !stays {
                self.index[hole] = s;
                hole = i;
            }
        }
        self.index[hole] = 0;
    }

    /// Keeps the entries for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.retain_hashed(|_, k, v| keep(k, v));
    }

    /// [`FlowMap::retain`] with each key's hash given to `keep` too.
    pub fn retain_hashed(&mut self, mut keep: impl FnMut(u64, &K, &mut V) -> bool) {
        let before = self.entries.len();
        self.entries
            .retain_mut(|e| keep(e.hash, &e.key, &mut e.value));
        if self.entries.len() != before {
            let mut slots = MIN_SLOTS;
            while self.entries.len() * 2 > slots {
                slots *= 2;
            }
            // A table emptied by a sweep gives back its memory, down to twice what it holds
            // (the entries keep their room: they do not move when the table fills again).
            if slots * 4 <= self.index.len() {
                let keep = self.entries.len() * 2;
                release_spare(&mut self.entries, keep);
            } else {
                slots = self.index.len();
            }
            self.rebuild(slots);
        }
    }

    /// Makes a fresh index of `slots` slots over the entries.
    fn rebuild(&mut self, slots: usize) {
        if slots == self.index.len() {
            self.index.fill(0);
        } else {
            self.index = HugeTable::new(slots, 0);
        }
        self.mask = slots - 1;
        // Entries are placed in their order, at random slots: each slot's line is loaded
        // a few entries ahead so the misses of a large index overlap.
        const AHEAD: usize = 16;
        for (pos, e) in self.entries.iter().enumerate() {
            if let Some(next) = self.entries.get(pos + AHEAD) {
                prefetch(&self.index[next.hash as usize & self.mask]);
            }
            let mut i = e.hash as usize & self.mask;
            while self.index[i] != 0 {
                i = (i + 1) & self.mask;
            }
            self.index[i] = tag_of(e.hash) << 32 | (pos as u64 + 1);
        }
    }

    /// Removes every entry (the index keeps its size).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.index.fill(0);
    }

    /// Every entry, in the entries' order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.entries.iter().map(|e| (&e.key, &e.value))
    }

    /// Every value, in the entries' order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.iter().map(|e| &e.value)
    }
}

impl<K: TableKey, V, A> Default for FlowMap<K, V, A> {
    fn default() -> Self {
        FlowMap::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    impl TableKey for u16 {
        fn table_hash(&self) -> u64 {
            crate::sketch::mix64(self)
        }
    }

    impl TableKey for u32 {
        fn table_hash(&self) -> u64 {
            crate::sketch::mix64(self)
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Retain(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            400 => (0u16..600, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            200 => (0u16..600).prop_map(Op::Remove),
            100 => (2u8..9).prop_map(Op::Retain),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Any sequence of inserts, removals and sweeps leaves the same contents as std's map.
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec(op(), 1..3000)) {
            let mut ours: FlowMap<u16, u32> = FlowMap::new();
            let mut std: HashMap<u16, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(ours.insert(k, k.table_hash(), v), std.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(ours.remove(&k, k.table_hash()), std.remove(&k)),
                    Op::Retain(m) => {
                        let mut hashes_right = true;
                        ours.retain_hashed(|h, k, _| {
                            hashes_right &= h == k.table_hash();
                            k % u16::from(m) != 0
                        });
                        prop_assert!(hashes_right);
                        std.retain(|k, _| k % u16::from(m) != 0);
                    }
                    Op::Clear => {
                        ours.clear();
                        std.clear();
                    }
                }
                prop_assert_eq!(ours.len(), std.len());
            }
            for k in 0..600u16 {
                prop_assert_eq!(ours.get(&k, k.table_hash()), std.get(&k));
                prop_assert_eq!(ours.find(&k, k.table_hash()).is_ok(), std.contains_key(&k));
            }
            let mut listed: Vec<_> = ours.iter().map(|(k, v)| (*k, *v)).collect();
            listed.sort_unstable();
            let mut expected: Vec<_> = std.into_iter().collect();
            expected.sort_unstable();
            prop_assert_eq!(listed, expected);
        }
    }

    #[test]
    fn a_map_with_room_fills_it_without_moving_its_entries() {
        let mut m: FlowMap<u32, u64> = FlowMap::with_room(50_000);
        let buffer = m.entries.as_ptr();
        for k in 0..50_000u32 {
            m.insert(k, k.table_hash(), u64::from(k));
        }
        assert_eq!(m.entries.as_ptr(), buffer, "no entry moved to a new buffer");
        m.retain(|k, _| *k % 100 == 0);
        assert_eq!(m.len(), 500);
        assert_eq!(m.entries.as_ptr(), buffer, "a sweep keeps the room");
        for k in 50_000..99_000u32 {
            m.insert(k, k.table_hash(), u64::from(k));
        }
        assert_eq!(m.entries.as_ptr(), buffer);
        assert_eq!(m.get(&98_765, 98_765u32.table_hash()), Some(&98_765));
        assert_eq!(m.get(&4_200, 4_200u32.table_hash()), Some(&4_200));
        assert!(m.get(&4_201, 4_201u32.table_hash()).is_none());
        // Past its room a map still grows.
        for k in 99_000..120_000u32 {
            m.insert(k, k.table_hash(), u64::from(k));
        }
        assert_eq!(m.len(), 500 + 49_000 + 21_000);
        assert_eq!(m.get(&119_999, 119_999u32.table_hash()), Some(&119_999));
    }

    #[test]
    fn aligned_entries_lie_in_as_few_lines_as_they_can() {
        // At the allocator's 16-byte boundary, an entry of 160 bytes may span four lines.
        assert_eq!(FlowMap::<u32, [u8; 148]>::lines_spanned(160), 4);

        // Aligned to lines, an entry's first 128 bytes lie in two of them.
        let mut m: FlowMap<u32, [u8; 148], Align64> = FlowMap::with_room(100_000);
        assert_eq!(FlowMap::<u32, [u8; 148], Align64>::ENTRY_BYTES, 192);
        assert_eq!(FlowMap::<u32, [u8; 148], Align64>::VALUE_OFFSET, 4);
        for k in 0..1000u32 {
            m.insert(k, k.table_hash(), [k as u8; 148]);
        }
        assert_eq!(m.entries.as_ptr() as usize % 64, 0);
        assert_eq!(m.get(&998, 998u32.table_hash()), Some(&[230; 148]));

        // An entry of 64 bytes aligned to lines is one line.
        assert_eq!(FlowMap::<u32, [u8; 52], Align64>::ENTRY_BYTES, 64);
        assert_eq!(FlowMap::<u32, [u8; 52], Align64>::lines_spanned(64), 1);
        assert_eq!(FlowMap::<u32, [u8; 52]>::lines_spanned(64), 2);
    }

    #[test]
    fn grows_and_shrinks_with_its_contents() {
        let mut m: FlowMap<u32, u64> = FlowMap::new();
        for k in 0..100_000u32 {
            let pos = match m.find(&k, k.table_hash()) {
                Ok(pos) => pos,
                Err(vacant) => m.insert_vacant(vacant, k.table_hash(), k, 0),
            };
            *m.at_mut(pos) += u64::from(k);
            m.prefetch(k.table_hash());
            m.prefetch_entry(k.table_hash());
            m.prefetch_entry((k + 1).table_hash());
        }
        assert_eq!(m.len(), 100_000);
        assert!(m.index.len() >= 200_000);
        assert_eq!(m.get(&77_777, 77_777u32.table_hash()), Some(&77_777));
        m.retain(|k, _| *k < 10);
        assert_eq!(m.len(), 10);
        assert!(m.index.len() <= 64, "the index shrinks after a sweep");
        assert_eq!(m.values().sum::<u64>(), 45);
        assert!(m.get_mut(&50_000, 50_000u32.table_hash()).is_none());
    }
}
