//! Live capture from a network interface (Linux AF_PACKET).
//!
//! Two back ends share one interface:
//! - [`Backend::Ring`]: a memory-mapped `TPACKET_V3` ring per worker, joined into one
//!   `PACKET_FANOUT` group so the kernel spreads flows across workers by flow hash.
//!   No system call per frame: a worker walks whole blocks the kernel hands over.
//! - [`Backend::Pnet`]: the portable `pnet` datalink path, one `recvfrom` per frame.
//!
//! Both can carry a classic BPF filter and report the kernel's counters
//! (`PACKET_STATISTICS`): packets seen by the socket, and drops when user space fell behind.
use std::time::Duration;

use crate::{CaptureError, Frame, LinkType, SourceStats};

mod bpf;
mod pnet;
mod ring;
mod sys;

pub use bpf::{parse_bpf_program, sample_one_in, BpfInstruction};

/// Which capture path a live source uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Memory-mapped `TPACKET_V3` ring with fan-out (the fast path).
    Ring,
    /// The `pnet` datalink channel (the portable path).
    Pnet,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "ring" | "tpacket" | "tpacket-v3" => Ok(Backend::Ring),
            "pnet" | "portable" => Ok(Backend::Pnet),
            _ => Err(format!(
                "capture backend {s:?}: expected \"ring\" or \"pnet\""
            )),
        }
    }
}

/// Settings of one live capture worker.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// Interface name, e.g. `eth1`.
    pub interface: String,
    /// Capture path.
    pub backend: Backend,
    /// Put the interface in promiscuous mode (a mirror port needs it).
    pub promiscuous: bool,
    /// Classic BPF program applied in the kernel, if any.
    pub filter: Option<Vec<BpfInstruction>>,
    /// `PACKET_FANOUT` group id shared by the workers of one interface.
    pub fanout_group: Option<u16>,
    /// Ring size per worker in MiB (ring back end).
    pub ring_mib: u32,
    /// How long the kernel may hold a partly filled ring block before handing it over.
    pub block_timeout: Duration,
}

impl LiveConfig {
    /// Defaults for `interface`: ring back end, promiscuous, 64 MiB ring, 10 ms block timeout.
    pub fn new(interface: impl Into<String>) -> LiveConfig {
        LiveConfig {
            interface: interface.into(),
            backend: Backend::Ring,
            promiscuous: true,
            filter: None,
            fanout_group: None,
            ring_mib: 64,
            block_timeout: Duration::from_millis(10),
        }
    }
}

/// One live capture worker's source of frames.
pub enum LiveCapture {
    /// `TPACKET_V3` ring.
    Ring(ring::RingCapture),
    /// `pnet` channel.
    Pnet(pnet::PnetCapture),
}

impl LiveCapture {
    /// Opens the interface as configured.
    pub fn open(config: &LiveConfig) -> Result<LiveCapture, CaptureError> {
        Ok(match config.backend {
            Backend::Ring => LiveCapture::Ring(ring::RingCapture::open(config)?),
            Backend::Pnet => LiveCapture::Pnet(pnet::PnetCapture::open(config)?),
        })
    }

    /// The next frame, or `None` if none arrived within `timeout`.
    #[inline]
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame<'_>>, CaptureError> {
        match self {
            LiveCapture::Ring(r) => r.next_frame(timeout),
            LiveCapture::Pnet(p) => p.next_frame(timeout),
        }
    }

    /// Counters so far, with the kernel's read now (they are cumulative).
    pub fn stats(&mut self) -> SourceStats {
        match self {
            LiveCapture::Ring(r) => r.stats(),
            LiveCapture::Pnet(p) => p.stats(),
        }
    }
}

/// The link type frames of an interface carry, from `/sys/class/net/IFACE/type` (ARPHRD).
fn interface_link_type(interface: &str) -> LinkType {
    let path = format!("/sys/class/net/{interface}/type");
    match std::fs::read_to_string(path).map(|s| s.trim().parse::<u32>()) {
        // ARPHRD_NONE (tun), ARPHRD_RAWIP: bare IP packets.
        Ok(Ok(65534)) | Ok(Ok(519)) => LinkType::RawIp,
        _ => LinkType::Ethernet,
    }
}

fn live_err(interface: &str, what: &'static str) -> CaptureError {
    CaptureError::Live {
        interface: interface.to_string(),
        what,
        source: std::io::Error::last_os_error(),
    }
}
