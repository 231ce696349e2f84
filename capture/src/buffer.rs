//! A byte window over a capture: one reused block refilled with `read()` from a file, a gzip
//! decoder, stdin or a pipe.
//!
//! Plain files are read too rather than memory-mapped: records are parsed one after the
//! other, each header's address depending on the previous record's length, so over a
//! mapping every cache miss and every new page stalls the loop for a full memory round trip
//! (measured: 3 M packets in 0.24 s mapped, with or without prefetching, against 0.11 s
//! through a 1 MiB block the kernel copies into cache-warm memory). It also leaves no
//! SIGBUS to fear when another process truncates the file being read.
use std::io::Read;

/// Size of the block: large enough that one `read()` serves hundreds of packets, small
/// enough to stay in a core's L2 cache while they are parsed, so the kernel's copy lands
/// where the parser reads it (a 1 MiB block spilled out of a 512 KiB L2: the kernel's copy
/// took 11 % of a one-worker replay's time, 6 % with this one).
const BLOCK: usize = 1 << 18;
/// Largest single record a stream may ask the window to hold.
pub(crate) const MAX_RECORD: usize = 256 << 20;

pub(crate) struct Window {
    reader: Box<dyn Read + Send>,
    data: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    consumed: u64,
}

impl Window {
    pub(crate) fn stream(reader: Box<dyn Read + Send>) -> Window {
        Window {
            reader,
            data: vec![0; BLOCK],
            start: 0,
            end: 0,
            eof: false,
            consumed: 0,
        }
    }

    /// The bytes available from the cursor on.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Input offset of the cursor.
    pub(crate) fn offset(&self) -> u64 {
        self.consumed
    }

    /// Moves the cursor `n` bytes on; `n` must not exceed `bytes().len()`.
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.consumed += n as u64;
    }

    /// Makes at least `n` bytes available from the cursor if the input has them.
    /// Returns whether they are available; `false` means the input ends sooner.
    #[inline]
    pub(crate) fn ensure(&mut self, n: usize) -> std::io::Result<bool> {
        if self.end - self.start >= n {
            return Ok(true);
        }
        self.refill(n)
    }

    #[cold]
    fn refill(&mut self, n: usize) -> std::io::Result<bool> {
        if n > MAX_RECORD {
            return Ok(false);
        }
        // Compact what is left to the front, grow if one record needs more room.
        self.data.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.data.len() < n {
            self.data.resize(n.next_power_of_two().max(BLOCK), 0);
        }
        while self.end < n && !self.eof {
            match self.reader.read(&mut self.data[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end >= n)
    }
}
