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

/// Asks the CPU to load the cache line holding `value` ahead of its use: a batch of packets
/// is walked with the tables of a packet a few places ahead loaded this way, so the misses
/// of random flows overlap instead of stalling one after another. A hint only: it reads
/// nothing into the program and never faults.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    prefetch_line((value as *const T).cast());
}

/// [`prefetch`] of every cache line a slice covers (a bucket of entries larger than one
/// line), from the line of its first byte to the line of its last.
#[inline(always)]
pub fn prefetch_all<T>(values: &[T]) {
    const LINE: usize = 64;
    let start = values.as_ptr().cast::<u8>();
    let bytes = std::mem::size_of_val(values);
    if bytes == 0 {
        return;
    }
    // Offsets from the start to each line's first byte: only addresses are formed, with
    // `wrapping_add`, and nothing is read through them.
    let first = start as usize & !(LINE - 1);
    let last = (start as usize + bytes - 1) & !(LINE - 1);
    let mut line = first;
    while line <= last {
        prefetch_line(start.wrapping_add(line.wrapping_sub(start as usize)));
        line += LINE;
    }
}

/// The prefetch instruction itself (a no-op where there is none).
#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache: it never dereferences `p` in the
    // program's sense and cannot fault, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A table of `len` copies of `value` whose memory is asked to be backed by huge pages (on
/// Linux, for the whole 2 MiB-aligned stretches it contains: a table of a few MiB gets one
/// or two): flow tables are probed at random, and with 4 KiB pages nearly every probe of a
/// large table also misses the TLB.
pub fn huge_table<T: Clone>(len: usize, value: T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = len * std::mem::size_of::<T>();
        let base = v.as_mut_ptr().cast::<u8>();
        let skip = (base as usize).next_multiple_of(HUGE) - base as usize;
        if bytes >= skip + HUGE {
            let span = (bytes - skip) / HUGE * HUGE;
            // SAFETY: `skip..skip + span` lies inside the vector's allocation; MADV_HUGEPAGE
            // only changes how the kernel backs those pages (their contents are kept, and a
            // failure leaves 4 KiB pages).
            unsafe {
                libc::madvise(base.add(skip).cast(), span, libc::MADV_HUGEPAGE);
            }
        }
    }
    v.resize(len, value);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_any_slice_is_harmless() {
        let v: Vec<Option<(u64, u8)>> = vec![None; 1000];
        for start in 0..40 {
            for len in [0, 1, 2, 5, 17] {
                prefetch_all(&v[start..start + len]);
            }
        }
        prefetch_all::<()>(&[(), ()]);
        let t = huge_table(3 << 20, 7u8);
        assert_eq!(t.len(), 3 << 20);
        assert!(t.iter().all(|&b| b == 7));
        prefetch(&t[12345]);
    }
}
