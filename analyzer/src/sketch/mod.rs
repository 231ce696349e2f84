//! Bounded-memory sketches: frequent items (heavy hitters) and distinct counts.
mod distinct;
mod frequent;

pub use distinct::{DistinctCounter, HyperLogLog};
pub use frequent::{FrequentItems, ItemEstimate};

/// A 64-bit hash with good mixing in every bit (SplitMix64's finaliser over the key's
/// FxHash), as sketches need: HyperLogLog reads the top bits, tables the low ones.
#[inline]
pub fn mix64<K: std::hash::Hash>(key: &K) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let mut z = BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(key);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
