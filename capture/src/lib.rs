//! Frames off the wire or out of capture files.
//!
//! `tapwatch-capture` is the bottom of tapwatch's pipeline. It turns pcap and pcapng
//! files (plain or gzip-compressed), and live interfaces (an AF_PACKET `TPACKET_V3`
//! ring with fan-out, or the portable `pnet` path), into [`Frame`]s: a timestamp, the
//! wire length, the link type and a borrowed slice of the captured bytes.
//!
//! ```no_run
//! use tapwatch_capture::{FileReader, FrameSource};
//!
//! let mut reader = FileReader::open("trace.pcap")?;
//! let mut packets = 0u64;
//! while let Some(frame) = reader.next_frame()? {
//!     packets += 1;
//!     let _ = frame.data; // headers only; nothing is copied
//! }
//! println!("{packets} packets, {} corrupt records", reader.stats().corrupt_records);
//! # Ok::<(), tapwatch_capture::CaptureError>(())
//! ```
//!
//! # No-panic guarantee
//! Every read of file bytes is bounds-checked against the buffer it comes from; lengths
//! taken from a file are validated before they are used. Malformed input surfaces as a
//! counted, reported [`CaptureError`] or a stop with the records read so far kept, never
//! a panic. The property tests in `tests` and the fuzz targets in `fuzz/` hold this to
//! account.
#![deny(missing_docs)]

mod buffer;
mod error;
mod file;
mod frame;
pub mod live;
mod merge;
mod pace;
pub mod sflow;
mod writer;

pub use error::CaptureError;
pub use file::{FileFormat, FileReader};
pub use frame::{Frame, LinkType};
pub use merge::MergedReader;
pub use pace::{Pace, Pacer};
pub use writer::PcapWriter;

/// Counters every frame source keeps about itself and, for live sources, the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Frames handed out.
    pub frames: u64,
    /// Captured bytes handed out.
    pub bytes: u64,
    /// Records cut short by the end of the file (at most one per file).
    pub truncated_records: u64,
    /// Records or blocks whose framing was invalid; reading stops at the first one.
    pub corrupt_records: u64,
    /// pcapng blocks of types tapwatch does not use, skipped.
    pub skipped_blocks: u64,
    /// Frames the kernel received for this socket (live only).
    pub kernel_packets: u64,
    /// Frames the kernel dropped because the ring was full (live only).
    pub kernel_drops: u64,
    /// Times the kernel froze the ring queue (live only).
    pub kernel_freezes: u64,
}

impl SourceStats {
    /// Adds another source's counters into this one.
    pub fn add(&mut self, other: &SourceStats) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.truncated_records += other.truncated_records;
        self.corrupt_records += other.corrupt_records;
        self.skipped_blocks += other.skipped_blocks;
        self.kernel_packets += other.kernel_packets;
        self.kernel_drops += other.kernel_drops;
        self.kernel_freezes += other.kernel_freezes;
    }
}

/// A lending source of frames: each frame borrows the source's buffer until the next call.
pub trait FrameSource {
    /// The next frame, `None` at the end of the input.
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError>;
    /// Counters so far.
    fn stats(&self) -> SourceStats;
    /// Bytes of input consumed so far (for progress), where the source knows.
    fn position(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests;
