//! Bounded-memory sketches: frequent items (heavy hitters) and distinct counts.
mod distinct;
mod frequent;
mod keys;

pub use distinct::{DistinctCounter, HyperLogLog};
pub use frequent::{FrequentItems, ItemEstimate};
pub use keys::SketchKey;
pub(crate) use keys::{address_word_hash, flow_tuple_hash, service_hash, source_kind_hash};

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
    prefetch_bytes(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values));
}

/// [`prefetch`] of every cache line of the `bytes` bytes from `start` (a hint: the
/// addresses need not be valid, nothing is read).
#[inline(always)]
pub fn prefetch_bytes(start: *const u8, bytes: usize) {
    const LINE: usize = 64;
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

/// Bytes of one huge page (x86-64 and most 64-bit Linux targets).
const HUGE_PAGE: usize = 2 << 20;

/// A vector of at least `capacity` elements whose buffer is asked, before anything is
/// written to it, to be backed by huge pages wherever it covers whole 2 MiB pages (the
/// growable counterpart of [`HugeTable`], for arrays read at random that grow with the
/// traffic). Below 2 MiB it is a plain `Vec`.
pub fn huge_vec<T>(capacity: usize) -> Vec<T> {
    let v = Vec::with_capacity(capacity);
    let start = v.as_ptr() as usize;
    advise_huge_pages(start, start + v.capacity() * std::mem::size_of::<T>());
    v
}

/// `len` zeroes in memory already mapped for writing (`MADV_POPULATE_WRITE` on the whole
/// 4 KiB pages inside, when there are 16 or more): a fresh allocation that large is mapped
/// lazily, and a table probed before it is written would map the shared zero page on the
/// first read of each page, then fault again on the first write, copying the page and
/// flushing the TLB of every core the process runs on. One call maps them all instead.
pub(crate) fn zeroed_for_writing(len: usize) -> Vec<u64> {
    let v = vec![0u64; len];
    if len * 8 >= 17 * PAGE {
        let start = v.as_ptr() as usize;
        // `MADV_POPULATE_WRITE` (Linux 5.14); older kernels refuse it, and the pages are
        // then mapped as they are first touched, as without it.
        // SAFETY: the range is the vector's allocation; populating for writing maps its
        // pages (zeroes, as they are) and changes nothing the program can read.
        unsafe { advise_pages(start, start + len * 8, PAGE, Advice::PopulateWrite) };
    }
    v
}

/// Gives the memory of a vector's unused capacity beyond its first `keep` elements back to
/// the kernel (`MADV_DONTNEED` on the whole 4 KiB pages inside), keeping the capacity: the
/// pages read as zeroes when next written, and the buffer does not move. For vectors that
/// reserved room up front and shrink after a sweep.
pub fn release_spare<T>(v: &mut Vec<T>, keep: usize) {
    let size = std::mem::size_of::<T>();
    let start = v.as_ptr() as usize;
    let from = start + v.len().max(keep).min(v.capacity()) * size;
    // SAFETY: `from..` lies inside the vector's allocation, past its initialised elements;
    // nothing reads spare capacity before writing it, and MADV_DONTNEED on private
    // anonymous memory only makes the pages read as zeroes again.
    unsafe { advise_pages(from, start + v.capacity() * size, PAGE, Advice::DontNeed) };
}

/// Asks the kernel to back the whole 2 MiB pages inside the allocated bytes `start..end`
/// with huge pages (`MADV_HUGEPAGE`); a stretch holding none is left alone.
fn advise_huge_pages(start: usize, end: usize) {
    // SAFETY: the caller's allocation holds `start..end`; MADV_HUGEPAGE only changes how
    // the kernel backs those pages (a failure leaves 4 KiB pages).
    unsafe { advise_pages(start, end, HUGE_PAGE, Advice::HugePage) };
}

/// Bytes of one base page.
const PAGE: usize = 4096;

/// What [`advise_pages`] tells the kernel.
#[derive(Clone, Copy)]
enum Advice {
    /// `MADV_HUGEPAGE`: back with huge pages where whole.
    HugePage,
    /// `MADV_DONTNEED`: give the pages back; they read as zeroes when next touched.
    DontNeed,
    /// `MADV_POPULATE_WRITE`: map the pages for writing now.
    PopulateWrite,
}

/// `madvise` on the whole pages of `page` bytes inside `start..end`, if there are any (on
/// Linux; elsewhere nothing). A failure is ignored: each advice is an optimisation.
///
/// # Safety
/// `start..end` must lie inside one allocation of the caller's, and the advice must not
/// change anything the caller reads before it writes it again.
unsafe fn advise_pages(start: usize, end: usize, page: usize, advice: Advice) {
    let (first, last) = (start.next_multiple_of(page), end & !(page - 1));
    #[cfg(target_os = "linux")]
    if first < last {
        let advice = match advice {
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::DontNeed => libc::MADV_DONTNEED,
            // MADV_POPULATE_WRITE (Linux 5.14), which the libc crate does not name.
            Advice::PopulateWrite => 23,
        };
        // SAFETY: the caller's obligations above.
        unsafe {
            libc::madvise(first as *mut libc::c_void, last - first, advice);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (first, last, advice);
}

/// A fixed-length table whose memory is asked to be backed by huge pages: flow tables are
/// probed at random, and with 4 KiB pages nearly every probe of a large table also misses
/// the TLB. One of 2 MiB or more is allocated on a 2 MiB boundary, its size
/// rounded up to whole 2 MiB pages, and handed to the kernel with `MADV_HUGEPAGE`, so that
/// all of it can be backed by huge pages: a plain allocation of that size starts a few
/// bytes past a page boundary, and the kernel can back only the whole 2 MiB stretches
/// inside it — none at all for a table of exactly 2 MiB.
pub struct HugeTable<T> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
    layout: std::alloc::Layout,
}

// SAFETY: a `HugeTable` owns its elements as a `Vec` would.
unsafe impl<T: Send> Send for HugeTable<T> {}
// SAFETY: shared access only hands out `&[T]`.
unsafe impl<T: Sync> Sync for HugeTable<T> {}

impl<T: Clone> HugeTable<T> {
    /// `len` copies of `value`.
    pub fn new(len: usize, value: T) -> HugeTable<T> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .expect("a table that fits the address space");
        let huge = bytes >= HUGE_PAGE;
        let layout = if huge {
            std::alloc::Layout::from_size_align(bytes.next_multiple_of(HUGE_PAGE), HUGE_PAGE)
        } else {
            std::alloc::Layout::array::<T>(len)
        }
        .expect("a valid table layout");
        let ptr = if layout.size() == 0 {
            std::ptr::NonNull::dangling()
        } else {
            // SAFETY: the layout's size is not zero.
            let raw = unsafe { std::alloc::alloc(layout) }.cast::<T>();
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
        };
        if huge {
            // The whole allocation: 2 MiB-aligned, whole 2 MiB pages.
            let start = ptr.as_ptr() as usize;
            advise_huge_pages(start, start + layout.size());
        }
        for i in 0..len {
            // SAFETY: `i < len` lies inside the allocation, which nothing has read yet.
            unsafe { ptr.as_ptr().add(i).write(value.clone()) };
        }
        HugeTable { ptr, len, layout }
    }
}

impl<T> std::ops::Deref for HugeTable<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `len` elements were written in `new` and live until `drop`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> std::ops::DerefMut for HugeTable<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for HugeTable<T> {
    fn drop(&mut self) {
        // SAFETY: the elements were initialised in `new`; the memory came from `alloc`
        // with this layout (or is dangling when the layout is empty).
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ));
            if self.layout.size() != 0 {
                std::alloc::dealloc(self.ptr.as_ptr().cast(), self.layout);
            }
        }
    }
}

impl<T> std::fmt::Debug for HugeTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HugeTable({} × {} bytes)",
            self.len,
            std::mem::size_of::<T>()
        )
    }
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
        let t = HugeTable::new(3 << 20, 7u8);
        assert_eq!(t.len(), 3 << 20);
        assert!(t.iter().all(|&b| b == 7));
        prefetch(&t[12345]);
        assert_eq!(
            t.as_ptr() as usize % HUGE_PAGE,
            0,
            "a large table starts on a huge page"
        );
        #[cfg(target_os = "linux")]
        assert!(
            vm_flags_at(t.as_ptr() as usize)
                .split_whitespace()
                .any(|f| f == "hg"),
            "a large table is marked for huge pages"
        );
        let mut small = HugeTable::new(10, String::from("x"));
        small[3].push('y');
        assert_eq!(small.concat(), "xxxxyxxxxxx");
        assert!(HugeTable::new(0, 1u64).is_empty());
    }

    /// The kernel's flags of the mapping holding `addr` (`VmFlags` in /proc/self/smaps).
    #[cfg(target_os = "linux")]
    fn vm_flags_at(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = (lo..hi).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}")
    }

    #[test]
    fn a_huge_vec_holds_what_it_was_asked_for_and_asks_for_huge_pages() {
        let mut v: Vec<u64> = huge_vec(1 << 20);
        assert!(v.capacity() >= 1 << 20);
        v.extend(0..1 << 20);
        assert_eq!(v[12345], 12345);
        // The buffer's whole 2 MiB pages are marked for huge pages ("hg"); a small vector
        // is left alone.
        #[cfg(target_os = "linux")]
        {
            let inner = (v.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
            assert!(
                vm_flags_at(inner).split_whitespace().any(|f| f == "hg"),
                "no MADV_HUGEPAGE on the buffer: {}",
                vm_flags_at(inner)
            );
        }
        let small: Vec<u8> = huge_vec(100);
        assert!(small.capacity() >= 100 && small.is_empty());
    }

    /// Pages of `bytes` bytes at `addr` (page-aligned) that are resident.
    #[cfg(target_os = "linux")]
    fn resident_pages(addr: usize, bytes: usize) -> usize {
        let pages = bytes / 4096;
        let mut flags = vec![0u8; pages];
        // SAFETY: `addr..addr + bytes` is mapped (inside a live vector's buffer); mincore
        // only writes one byte per page into `flags`.
        let rc = unsafe { libc::mincore(addr as *mut libc::c_void, bytes, flags.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        flags.iter().filter(|f| **f & 1 != 0).count()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn zeroes_for_writing_are_mapped_before_they_are_touched() {
        let v = zeroed_for_writing(1 << 20);
        let start = (v.as_ptr() as usize).next_multiple_of(4096);
        let pages = (8 << 20) / 4096 - 1;
        assert_eq!(
            resident_pages(start, pages * 4096),
            pages,
            "every page is mapped"
        );
        assert!(v.iter().all(|x| *x == 0));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn released_spare_capacity_leaves_memory_but_keeps_the_buffer_and_its_elements() {
        let mut v: Vec<u64> = Vec::with_capacity(4 << 20);
        v.resize(4 << 20, 7);
        let (ptr, cap) = (v.as_ptr(), v.capacity());
        v.truncate(1000);
        let tail = (ptr as usize + 64 * 4096).next_multiple_of(4096);
        let tail_bytes = 16 << 20;
        assert!(
            resident_pages(tail, tail_bytes) > 0,
            "written pages are resident"
        );
        release_spare(&mut v, 2000);
        assert_eq!(
            resident_pages(tail, tail_bytes),
            0,
            "the spare pages were given back"
        );
        assert_eq!(
            (v.as_ptr(), v.capacity()),
            (ptr, cap),
            "the buffer did not move"
        );
        assert!(v.iter().all(|x| *x == 7), "the elements are untouched");
        // The room is still there: it fills again without moving, reading as written.
        v.resize(4 << 20, 9);
        assert_eq!(v.as_ptr(), ptr);
        assert_eq!((v[999], v[1000], v[(4 << 20) - 1]), (7, 9, 9));
    }
}
