//! Errors of the capture layer.
use std::path::PathBuf;

/// What went wrong while opening or reading a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start like any capture format tapwatch reads.
    #[error("{path}: not a capture file: expected a pcap magic (a1b2c3d4 or a1b23c4d, either byte order), a pcapng section header (0a0d0d0a) or gzip (1f8b), found {found}")]
    NotACapture {
        /// The file.
        path: PathBuf,
        /// A description of the first bytes found.
        found: String,
    },
    /// The file header is present but inconsistent.
    #[error("{path}: bad {format} header at byte {offset}: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// "pcap" or "pcapng".
        format: &'static str,
        /// Byte offset of the header.
        offset: u64,
        /// What was expected and what was found.
        reason: String,
    },
    /// A live capture socket or ring could not be set up.
    #[error("interface {interface}: {what}: {source}")]
    Live {
        /// Interface name.
        interface: String,
        /// The step that failed.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A BPF filter program could not be parsed.
    #[error("BPF program {path}: line {line}: {reason}")]
    Bpf {
        /// The program file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What was expected.
        reason: String,
    },
}
