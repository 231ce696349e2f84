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
pub fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; the address comes from a reference.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// A table of `len` copies of `value` whose memory is asked to be backed by huge pages (on
/// Linux, when it spans at least one): flow tables are probed at random, and with 4 KiB
/// pages nearly every probe of a large table also misses the TLB.
pub fn huge_table<T: Clone>(len: usize, value: T) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = len * std::mem::size_of::<T>();
        let start = v.as_ptr() as usize;
        let aligned = start.next_multiple_of(HUGE);
        if bytes >= HUGE && aligned < start + bytes {
            let span = (start + bytes - aligned) / HUGE * HUGE;
            // SAFETY: the range lies inside the vector's own, still untouched, allocation;
            // madvise only changes how the kernel backs it (failure leaves 4 KiB pages).
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, span, libc::MADV_HUGEPAGE);
            }
        }
    }
    v.resize(len, value);
    v
}

/// [`prefetch`] of every cache line of a slice (a bucket of entries larger than one line).
#[inline(always)]
pub fn prefetch_all<T>(values: &[T]) {
    let bytes: &[u8] = {
        let len = std::mem::size_of_val(values);
        // SAFETY: the bytes of a live slice, only used for their addresses.
        unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), len) }
    };
    for line in bytes.chunks(64) {
        prefetch(&line[0]);
    }
}
