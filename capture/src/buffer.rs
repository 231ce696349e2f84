//! A byte window over a file: the whole file memory-mapped, or a large reused block
//! refilled from a stream (gzip, stdin, pipes).
use std::io::Read;

/// Size of one refill from a stream.
const BLOCK: usize = 4 << 20;
/// Largest single record a stream may ask the window to hold.
pub(crate) const MAX_RECORD: usize = 256 << 20;

pub(crate) enum Window {
    Mapped {
        map: memmap2::Mmap,
        pos: usize,
    },
    Stream {
        reader: Box<dyn Read + Send>,
        data: Vec<u8>,
        start: usize,
        end: usize,
        eof: bool,
        consumed: u64,
    },
}

impl Window {
    pub(crate) fn mapped(map: memmap2::Mmap) -> Window {
        Window::Mapped { map, pos: 0 }
    }

    pub(crate) fn stream(reader: Box<dyn Read + Send>) -> Window {
        Window::Stream {
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
        match self {
            Window::Mapped { map, pos } => map.get(*pos..).unwrap_or(&[]),
            Window::Stream {
                data, start, end, ..
            } => &data[*start..*end],
        }
    }

    /// File offset of the cursor.
    pub(crate) fn offset(&self) -> u64 {
        match self {
            Window::Mapped { pos, .. } => *pos as u64,
            Window::Stream { consumed, .. } => *consumed,
        }
    }

    /// Moves the cursor `n` bytes on; `n` must not exceed `bytes().len()`.
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        match self {
            Window::Mapped { pos, map } => *pos = (*pos + n).min(map.len()),
            Window::Stream {
                start,
                end,
                consumed,
                ..
            } => {
                let n = n.min(*end - *start);
                *start += n;
                *consumed += n as u64;
            }
        }
    }

    /// Makes at least `n` bytes available from the cursor if the input has them.
    /// Returns whether they are available; `false` means the input ends sooner.
    #[inline]
    pub(crate) fn ensure(&mut self, n: usize) -> std::io::Result<bool> {
        if self.bytes().len() >= n {
            return Ok(true);
        }
        match self {
            Window::Mapped { .. } => Ok(false),
            Window::Stream {
                reader,
                data,
                start,
                end,
                eof,
                ..
            } => {
                if n > MAX_RECORD {
                    return Ok(false);
                }
                // Compact what is left to the front, grow if one record needs more room.
                data.copy_within(*start..*end, 0);
                *end -= *start;
                *start = 0;
                if data.len() < n {
                    data.resize(n.next_power_of_two().max(BLOCK), 0);
                }
                while *end < n && !*eof {
                    match reader.read(&mut data[*end..]) {
                        Ok(0) => *eof = true,
                        Ok(k) => *end += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(*end >= n)
            }
        }
    }
}
