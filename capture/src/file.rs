//! pcap and pcapng file readers over one reused byte window.
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::buffer::{Window, MAX_RECORD};
use crate::{CaptureError, Frame, FrameSource, LinkType, SourceStats};

/// Largest caplen accepted in a classic pcap record header (libpcap's `MAXIMUM_SNAPLEN`).
const PCAP_MAX_CAPLEN: u32 = 262_144;

/// Which container a file turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// Classic pcap with microsecond timestamps.
    PcapMicros,
    /// Classic pcap with nanosecond timestamps.
    PcapNanos,
    /// pcapng.
    PcapNg,
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkType,
    snaplen: u32,
    /// Timestamp units to ns: `units * mul / div`, or `(units * 1e9) >> shift` when `shift > 0`.
    mul: u64,
    div: u64,
    shift: u32,
    offset_ns: u64,
}

impl Interface {
    fn new(link: LinkType, snaplen: u32) -> Interface {
        Interface {
            link,
            snaplen,
            mul: 1000,
            div: 1,
            shift: 0,
            offset_ns: 0,
        }
    }

    #[inline]
    fn ts_ns(&self, units: u64) -> u64 {
        let ns = if self.shift > 0 {
            ((units as u128 * 1_000_000_000u128) >> self.shift) as u64
        } else {
            (units as u128 * self.mul as u128 / self.div as u128) as u64
        };
        ns.wrapping_add(self.offset_ns)
    }

    fn set_tsresol(&mut self, resol: u8) {
        let n = u32::from(resol & 0x7f);
        if resol & 0x80 != 0 {
            self.shift = n.clamp(1, 63);
        } else if n <= 9 {
            self.mul = 10u64.pow(9 - n);
            self.div = 1;
        } else {
            self.mul = 1;
            self.div = 10u64.pow(n.min(19) - 9);
        }
    }
}

/// The frame the reader is positioned on: where its bytes are in the window.
#[derive(Clone, Copy, Debug)]
struct Current {
    ts_ns: u64,
    wire_len: u32,
    link: LinkType,
    interface: u32,
    data_off: usize,
    data_len: usize,
}

/// Reads one pcap or pcapng file (optionally gzip-compressed) frame by frame, in file order.
///
/// Memory stays constant: every input is read through one reused block. Allocation happens only per pcapng interface description, never per frame.
pub struct FileReader {
    path: PathBuf,
    window: Window,
    format: FileFormat,
    big_endian: bool,
    interfaces: Vec<Interface>,
    iface_base: u32,
    pending: usize,
    current: Option<Current>,
    finished: bool,
    lengths_maybe_swapped: bool,
    /// Input size when it is a plain file (for progress).
    size: Option<u64>,
    /// Compressed bytes consumed so far when the input is gzip-compressed.
    gzip: Option<Arc<AtomicU64>>,
    stats: SourceStats,
    warnings: Vec<String>,
}

impl FileReader {
    /// Opens a capture file, detecting pcap, pcapng and gzip by their magic numbers.
    pub fn open(path: impl AsRef<Path>) -> Result<FileReader, CaptureError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| CaptureError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        let size = meta.is_file().then_some(meta.len());
        let mut reader = FileReader::from_reader(path, file)?;
        if reader.gzip.is_none() {
            reader.size = size;
        }
        Ok(reader)
    }

    /// Reads a capture from any byte stream (stdin, a pipe); `name` is used in messages.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        reader: impl Read + Send + 'static,
    ) -> Result<FileReader, CaptureError> {
        let path = name.into();
        let mut window = Window::stream(Box::new(reader));
        window.ensure(2).map_err(|source| CaptureError::Io {
            path: path.clone(),
            source,
        })?;
        if window.bytes().starts_with(&[0x1f, 0x8b]) {
            let consumed = Arc::new(AtomicU64::new(0));
            let rest = StreamRest(window, Arc::clone(&consumed));
            let gz = flate2::read::MultiGzDecoder::new(rest);
            let mut r = FileReader::with_window(path, Window::stream(Box::new(gz)))?;
            r.gzip = Some(consumed);
            return Ok(r);
        }
        FileReader::with_window(path, window)
    }

    fn with_window(path: PathBuf, mut window: Window) -> Result<FileReader, CaptureError> {
        let io = |source| CaptureError::Io {
            path: path.clone(),
            source,
        };
        window.ensure(24).map_err(io)?;
        let head = window.bytes();
        let magic = head.get(..4).unwrap_or(head);
        let (format, big_endian) = match magic {
            [0xd4, 0xc3, 0xb2, 0xa1] => (FileFormat::PcapMicros, false),
            [0xa1, 0xb2, 0xc3, 0xd4] => (FileFormat::PcapMicros, true),
            [0x4d, 0x3c, 0xb2, 0xa1] => (FileFormat::PcapNanos, false),
            [0xa1, 0xb2, 0x3c, 0x4d] => (FileFormat::PcapNanos, true),
            [0x0a, 0x0d, 0x0d, 0x0a] => (FileFormat::PcapNg, false),
            _ => {
                return Err(CaptureError::NotACapture {
                    found: describe(head),
                    path,
                })
            }
        };
        let mut reader = FileReader {
            path,
            window,
            size: None,
            gzip: None,
            format,
            big_endian,
            interfaces: Vec::new(),
            iface_base: 0,
            pending: 0,
            current: None,
            finished: false,
            lengths_maybe_swapped: false,
            stats: SourceStats::default(),
            warnings: Vec::new(),
        };
        if format != FileFormat::PcapNg {
            reader.read_pcap_header()?;
        }
        Ok(reader)
    }

    fn read_pcap_header(&mut self) -> Result<(), CaptureError> {
        let h = self.window.bytes();
        if h.len() < 24 {
            return Err(self.bad_header(
                "pcap",
                0,
                format!(
                    "the 24-byte file header is cut short after {} bytes",
                    h.len()
                ),
            ));
        }
        let major = self.u16_at(h, 4);
        let minor = self.u16_at(h, 6);
        let snaplen = self.u32_at(h, 16);
        let linktype = self.u32_at(h, 20);
        if major != 2 {
            return Err(self.bad_header("pcap", 4, format!("version {major}, expected 2")));
        }
        let mut iface = Interface::new(LinkType::from_linktype(linktype), snaplen);
        if self.format == FileFormat::PcapNanos {
            iface.mul = 1;
        }
        self.interfaces.push(iface);
        // Writers before format 2.3 could swap the two lengths; libpcap swaps them back.
        self.lengths_maybe_swapped = minor < 3;
        self.window.consume(24);
        Ok(())
    }

    fn bad_header(&self, format: &'static str, offset: u64, reason: String) -> CaptureError {
        CaptureError::BadHeader {
            path: self.path.clone(),
            format,
            offset,
            reason,
        }
    }

    /// Size of the input in bytes when it is a plain file (not gzip, not a stream).
    pub fn size_hint(&self) -> Option<u64> {
        self.size
    }

    /// The file's container format.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The file's path (or the name given to [`FileReader::from_reader`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Link type of the first interface (the only one for classic pcap), if known yet.
    pub fn link_type(&self) -> Option<LinkType> {
        self.interfaces.first().map(|i| i.link)
    }

    /// Problems met so far (truncation, corrupt blocks), each naming the file and offset.
    /// Each kind is reported once per file.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    #[inline]
    fn u16_at(&self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        if self.big_endian {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    }

    #[inline]
    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        self.u32_of([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// A 32-bit word in the file's byte order.
    #[inline]
    fn u32_of(&self, v: [u8; 4]) -> u32 {
        if self.big_endian {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }

    fn warn(&mut self, what: String) {
        if self.warnings.len() < 8 {
            self.warnings
                .push(format!("{}: {what}", self.path.display()));
        }
    }

    fn truncated(&mut self, need: usize) {
        if self.finished {
            return; // already reported (a damaged gzip stream)
        }
        let offset = self.window.offset();
        let have = self.window.bytes().len();
        self.stats.truncated_records += 1;
        self.warn(format!(
            "last record at byte {offset} is cut short: it needs {need} bytes, the file has {have}; the {} frames before it are kept",
            self.stats.frames
        ));
        self.finished = true;
    }

    fn corrupt(&mut self, reason: String) {
        let offset = self.window.offset();
        self.stats.corrupt_records += 1;
        self.warn(format!(
            "corrupt record at byte {offset}: {reason}; reading stops here, the {} frames before it are kept",
            self.stats.frames
        ));
        self.finished = true;
    }

    /// Makes `n` bytes available (see `Window::ensure`). A gzip stream that fails to
    /// decode (damaged, or cut before its trailer) ends this file like a truncated one:
    /// counted, reported with both offsets, every frame before it kept.
    #[inline]
    fn fill(&mut self, n: usize) -> Result<bool, CaptureError> {
        match self.window.ensure(n) {
            // The common case, twice per record: the block holds the bytes already.
            Ok(true) => Ok(true),
            other => self.filled(other),
        }
    }

    /// The rarer outcomes of [`FileReader::fill`]: the input ends sooner, or reading failed.
    #[cold]
    fn filled(&mut self, result: std::io::Result<bool>) -> Result<bool, CaptureError> {
        match result {
            Ok(have) => Ok(have),
            Err(e) => match &self.gzip {
                Some(consumed) => {
                    let compressed = consumed.load(Ordering::Relaxed);
                    let offset = self.window.offset();
                    self.stats.truncated_records += 1;
                    self.warn(format!(
                        "gzip stream damaged near compressed byte {compressed} (decompressed byte {offset}): {e}; the {} frames before it are kept",
                        self.stats.frames
                    ));
                    self.finished = true;
                    Ok(false)
                }
                None => Err(self.io(e)),
            },
        }
    }

    fn io(&self, source: std::io::Error) -> CaptureError {
        CaptureError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Moves to the next frame; `false` at the end of the file (or at the first corrupt or
    /// truncated record, which is counted and reported through [`FileReader::take_warnings`]).
    pub fn advance(&mut self) -> Result<bool, CaptureError> {
        loop {
            self.window.consume(self.pending);
            self.pending = 0;
            self.current = None;
            if self.finished {
                return Ok(false);
            }
            let found = match self.format {
                FileFormat::PcapNg => self.advance_pcapng()?,
                _ => self.advance_pcap()?,
            };
            if found {
                if let Some(c) = &self.current {
                    self.stats.frames += 1;
                    self.stats.bytes += c.data_len as u64;
                }
                return Ok(true);
            }
        }
    }

    /// The frame the reader is positioned on, after [`FileReader::advance`] returned `true`.
    #[inline]
    pub fn current(&self) -> Option<Frame<'_>> {
        let c = self.current?;
        let data = self
            .window
            .bytes()
            .get(c.data_off..c.data_off + c.data_len)?;
        Some(Frame {
            ts_ns: c.ts_ns,
            wire_len: c.wire_len,
            link: c.link,
            interface: c.interface,
            data,
        })
    }

    /// Timestamp of the frame the reader is positioned on.
    pub fn current_ts(&self) -> Option<u64> {
        self.current.map(|c| c.ts_ns)
    }

    fn advance_pcap(&mut self) -> Result<bool, CaptureError> {
        if !self.fill(16)? {
            if !self.window.bytes().is_empty() {
                self.truncated(16);
            }
            self.finished = true;
            return Ok(false);
        }
        // The record header as one array: its four words are read with no bounds checks.
        let h: [u8; 16] = self.window.bytes()[..16]
            .try_into()
            .expect("16 bytes were filled");
        let word = |i: usize| self.u32_of([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let sec = u64::from(word(0));
        let frac = u64::from(word(4));
        let mut caplen = word(8);
        let mut origlen = word(12);
        if self.lengths_maybe_swapped && caplen > origlen {
            std::mem::swap(&mut caplen, &mut origlen);
        }
        let iface = self.interfaces[0];
        let limit = iface.snaplen.max(PCAP_MAX_CAPLEN);
        if caplen > limit {
            self.corrupt(format!(
                "captured length {caplen} is larger than the snapshot length allows ({limit})"
            ));
            return Ok(false);
        }
        let total = 16 + caplen as usize;
        if !self.fill(total)? {
            self.truncated(total);
            return Ok(false);
        }
        let ts_ns = sec * 1_000_000_000 + frac * iface.mul;
        self.current = Some(Current {
            ts_ns,
            wire_len: origlen.max(caplen),
            link: iface.link,
            interface: 0,
            data_off: 16,
            data_len: caplen as usize,
        });
        self.pending = total;
        Ok(true)
    }

    fn advance_pcapng(&mut self) -> Result<bool, CaptureError> {
        if !self.fill(12)? {
            if !self.window.bytes().is_empty() {
                self.truncated(12);
            }
            self.finished = true;
            return Ok(false);
        }
        let h = self.window.bytes();
        let raw_type = [h[0], h[1], h[2], h[3]];
        if raw_type == [0x0a, 0x0d, 0x0d, 0x0a] {
            // Section header: its byte-order magic decides how everything after it is read.
            self.big_endian = match &h[8..12] {
                [0x1a, 0x2b, 0x3c, 0x4d] => true,
                [0x4d, 0x3c, 0x2b, 0x1a] => false,
                other => {
                    let found = format!("{other:02x?}");
                    self.corrupt(format!(
                        "section header byte-order magic is {found}, expected 1a2b3c4d"
                    ));
                    return Ok(false);
                }
            };
            self.iface_base += self.interfaces.len() as u32;
            self.interfaces.clear();
        }
        let block_type = self.u32_at(h, 0);
        let total = self.u32_at(h, 4) as usize;
        if total < 12 || !total.is_multiple_of(4) || total > MAX_RECORD {
            self.corrupt(format!(
                "block type {block_type:#x} has total length {total}; expected a multiple of 4 from 12 to {MAX_RECORD}"
            ));
            return Ok(false);
        }
        if !self.fill(total)? {
            self.truncated(total);
            return Ok(false);
        }
        let b = &self.window.bytes()[..total];
        let trailer = self.u32_at(b, total - 4) as usize;
        if trailer != total {
            self.corrupt(format!(
                "block type {block_type:#x} starts with length {total} but ends with {trailer}"
            ));
            return Ok(false);
        }
        self.pending = total;
        let body = &b[8..total - 4];
        match block_type {
            0x0A0D_0D0A => {}
            1 => {
                if body.len() < 8 {
                    self.corrupt("interface description block shorter than 20 bytes".into());
                    return Ok(false);
                }
                let link = LinkType::from_linktype(u32::from(self.u16_at(body, 0)));
                let mut iface = Interface::new(link, self.u32_at(body, 4));
                let mut opts = &body[8..];
                while opts.len() >= 4 {
                    let code = self.u16_at(opts, 0);
                    let len = self.u16_at(opts, 2) as usize;
                    let padded = (len + 3) & !3;
                    let Some(value) = opts.get(4..4 + len) else {
                        break;
                    };
                    match (code, len) {
                        (0, _) => break,
                        (9, 1) => iface.set_tsresol(value[0]),
                        (14, 8) => {
                            let hi = u64::from(self.u32_at(value, 0));
                            let lo = u64::from(self.u32_at(value, 4));
                            let secs = if self.big_endian {
                                (hi << 32) | lo
                            } else {
                                (lo << 32) | hi
                            };
                            iface.offset_ns = secs.wrapping_mul(1_000_000_000);
                        }
                        _ => {}
                    }
                    opts = opts.get(4 + padded..).unwrap_or(&[]);
                }
                self.interfaces.push(iface);
            }
            6 | 2 => {
                let (id, caplen, origlen) = if block_type == 6 {
                    if body.len() < 20 {
                        self.corrupt("enhanced packet block shorter than 32 bytes".into());
                        return Ok(false);
                    }
                    (
                        self.u32_at(body, 0),
                        self.u32_at(body, 12),
                        self.u32_at(body, 16),
                    )
                } else {
                    if body.len() < 20 {
                        self.corrupt("packet block shorter than 32 bytes".into());
                        return Ok(false);
                    }
                    (
                        u32::from(self.u16_at(body, 0)),
                        self.u32_at(body, 12),
                        self.u32_at(body, 16),
                    )
                };
                let units =
                    (u64::from(self.u32_at(body, 4)) << 32) | u64::from(self.u32_at(body, 8));
                if caplen as usize > body.len() - 20 {
                    self.corrupt(format!(
                        "packet block claims {caplen} captured bytes but holds {}",
                        body.len() - 20
                    ));
                    return Ok(false);
                }
                let Some(iface) = self.interfaces.get(id as usize).copied() else {
                    self.stats.corrupt_records += 1;
                    let n = self.interfaces.len();
                    self.warn(format!(
                        "packet block at byte {} names interface {id} but the section describes {n}; skipped",
                        self.window.offset()
                    ));
                    return Ok(false);
                };
                self.current = Some(Current {
                    ts_ns: iface.ts_ns(units),
                    wire_len: origlen.max(caplen),
                    link: iface.link,
                    interface: self.iface_base + id,
                    data_off: 28,
                    data_len: caplen as usize,
                });
                return Ok(true);
            }
            3 => {
                let Some(iface) = self.interfaces.first().copied() else {
                    self.corrupt("simple packet block before any interface description".into());
                    return Ok(false);
                };
                if body.len() < 4 {
                    self.corrupt("simple packet block shorter than 16 bytes".into());
                    return Ok(false);
                }
                let origlen = self.u32_at(body, 0);
                let mut caplen = (origlen as usize).min(body.len() - 4);
                if iface.snaplen > 0 {
                    caplen = caplen.min(iface.snaplen as usize);
                }
                self.current = Some(Current {
                    ts_ns: 0,
                    wire_len: origlen.max(caplen as u32),
                    link: iface.link,
                    interface: self.iface_base,
                    data_off: 12,
                    data_len: caplen,
                });
                return Ok(true);
            }
            _ => self.stats.skipped_blocks += 1,
        }
        Ok(false)
    }
}

impl FrameSource for FileReader {
    #[inline]
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.advance()? {
            Ok(self.current())
        } else {
            Ok(None)
        }
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    fn position(&self) -> u64 {
        self.window.offset()
    }
}

/// What a file that is not a capture starts with, for the error message.
fn describe(head: &[u8]) -> String {
    if head.is_empty() {
        return "an empty file".into();
    }
    let shown = &head[..head.len().min(8)];
    let hex: Vec<String> = shown.iter().map(|b| format!("{b:02x}")).collect();
    let text = head
        .iter()
        .take(16)
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if text {
        let s = String::from_utf8_lossy(&head[..head.len().min(16)]);
        format!("text starting {:?} (bytes {})", s.trim_end(), hex.join(" "))
    } else {
        format!("bytes {}", hex.join(" "))
    }
}

/// The unread rest of a stream window, as a reader (used to unwrap gzip from a stream),
/// publishing how many bytes of the stream have been read.
struct StreamRest(Window, Arc<AtomicU64>);

impl Read for StreamRest {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.bytes().is_empty() && !self.0.ensure(1)? {
            return Ok(0);
        }
        let src = self.0.bytes();
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        self.0.consume(n);
        self.1.store(self.0.offset(), Ordering::Relaxed);
        Ok(n)
    }
}
