//! What one `tapwatch run` worker reads: a live ring (one of the interface's fan-out group)
//! or an sFlow socket. Both hand out frames with the number of packets each stands for.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use tapwatch_capture::live::LiveCapture;
use tapwatch_capture::sflow::{InterfaceCounters, SflowSource, SflowStats};
use tapwatch_capture::{Frame, SourceStats};

/// One worker's source.
pub enum Source {
    /// A ring of the interface, and the packets each frame stands for (`--sample`).
    Ring(LiveCapture, u32),
    /// An sFlow socket.
    Sflow {
        /// Where it listens.
        addr: SocketAddr,
        /// The socket and its decoder.
        source: Box<SflowSource>,
        /// Whether the log said that sampled input turns the per-flow detectors off.
        said_sampled: bool,
    },
}

/// A snapshot of an sFlow source for `/metrics` and the summary.
#[derive(Clone, Debug, Default)]
pub struct SflowView {
    /// Where it listens.
    pub listen: String,
    /// Its decoder's counters.
    pub stats: SflowStats,
    /// Latest generic interface counters per (agent, data source index).
    pub interfaces: Vec<(IpAddr, u32, InterfaceCounters)>,
}

impl Source {
    /// An sFlow socket bound to `addr`.
    pub fn sflow(addr: SocketAddr) -> anyhow::Result<Source> {
        let source = SflowSource::bind(addr).with_context(|| format!("--sflow {addr}: binding"))?;
        // The port the kernel chose when `addr` asked for port 0.
        let addr = source.socket().local_addr().unwrap_or(addr);
        Ok(Source::Sflow {
            addr,
            source: Box::new(source),
            said_sampled: false,
        })
    }

    /// The next frame and the packets it stands for, `None` after `timeout` of quiet.
    #[inline]
    pub fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<(Frame<'_>, u32)>> {
        match self {
            Source::Ring(cap, weight) => Ok(cap.next_frame(timeout)?.map(|f| (f, *weight))),
            Source::Sflow {
                addr,
                source,
                said_sampled,
            } => {
                let Some(f) = source
                    .next_frame(timeout)
                    .with_context(|| format!("--sflow {addr}: receiving"))?
                else {
                    return Ok(None);
                };
                if f.weight > 1 && !*said_sampled {
                    *said_sampled = true;
                    tracing::info!(
                        "sFlow from {} on {addr} samples 1 in {}: counts are estimates; missed heartbeats, handshake and per-flow detectors stay off for sampled packets",
                        f.agent,
                        f.weight
                    );
                }
                Ok(Some((f.frame, f.weight)))
            }
        }
    }

    /// Capture counters (kernel counters for rings; frames for sFlow).
    pub fn stats(&mut self) -> SourceStats {
        match self {
            Source::Ring(cap, _) => cap.stats(),
            Source::Sflow { source, .. } => {
                let s = source.stats();
                SourceStats {
                    frames: s.frames,
                    corrupt_records: s.malformed_total(),
                    ..SourceStats::default()
                }
            }
        }
    }

    /// The address an sFlow source listens on.
    pub fn sflow_addr(&self) -> Option<SocketAddr> {
        match self {
            Source::Sflow { addr, .. } => Some(*addr),
            Source::Ring(..) => None,
        }
    }

    /// The sFlow snapshot, for sFlow sources.
    pub fn sflow_view(&self) -> Option<SflowView> {
        let Source::Sflow { addr, source, .. } = self else {
            return None;
        };
        let interfaces = source
            .interfaces()
            .iter()
            .map(|((agent, id), c)| (*agent, id.index, *c))
            .collect();
        Some(SflowView {
            listen: addr.to_string(),
            stats: source.stats(),
            interfaces,
        })
    }
}
