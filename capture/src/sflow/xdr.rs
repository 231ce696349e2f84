//! Bounds-checked reading of XDR (RFC 4506) fields: big-endian 32- and 64-bit words and
//! opaque data padded to four bytes, as sFlow encodes everything.

/// A cursor over a byte slice; every read checks the bytes are there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Xdr<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Xdr<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Xdr<'a> {
        Xdr { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next 32-bit word.
    pub fn u32(&mut self) -> Option<u32> {
        let b = self.buf.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next 64-bit word.
    pub fn u64(&mut self) -> Option<u64> {
        let hi = self.u32()?;
        let lo = self.u32()?;
        Some(u64::from(hi) << 32 | u64::from(lo))
    }

    /// The next `n` bytes, then the padding that rounds them up to four.
    pub fn opaque(&mut self, n: usize) -> Option<&'a [u8]> {
        let padded = n.checked_add(3)? & !3;
        let end = self.pos.checked_add(padded)?;
        if end > self.buf.len() {
            return None;
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos = end;
        Some(b)
    }
}
