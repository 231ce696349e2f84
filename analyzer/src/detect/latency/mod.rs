//! Latency measured passively at the mirror, and `latency_shift` judged on it.
//!
//! On each worker's shard ([`LatencyTracker`], a packet detector) samples are taken per
//! server and measure and recorded into the open window's [`LatencyWindow`]:
//! - `handshake_server` (SYN → SYN-ACK) and `handshake_client` (SYN-ACK → ACK), from the
//!   [handshake tracker](super::handshake), which records them here too;
//! - `response`: a connection's first client payload → the server's first payload, and for
//!   plain HTTP each request line → its status line ([`flows`]);
//! - `rst`: the peer's last packet → a RST that answers it ([`flows`]);
//! - `tcp_rtt`: a server segment's TCP timestamp → the client's echo of it, first packet per
//!   TSval only and one sample per flow in flight, as `pping` does ([`timestamps`]);
//! - `echo`: ICMP / ICMPv6 echo request → reply by identifier and sequence ([`echo`]).
//!
//! On the merger, [`shift::LatencyShift`] rolls base windows up to `latency.window_s`, keeps
//! a baseline per (subject, measure) and fires `latency_shift` on a sustained shift of the
//! median or on an extreme single sample; [`tenant`] fires for a tenant when most of its
//! servers shift together.
use serde::{Deserialize, Serialize};
use tapwatch_classifier::setting::{f64_in, f64_positive, int_in};
use tapwatch_classifier::{PacketMeta, ProtocolType, SettingError, SettingPath};

use super::{PacketDetector, PacketHashes};
use crate::finding::Finding;
use crate::labels::Labels;
use crate::window::WindowStats;

pub(crate) mod cells;
pub(crate) mod echo;
pub(crate) mod flows;
pub(crate) mod shift;
pub(crate) mod tenant;
pub(crate) mod timestamps;

pub use cells::{LatencyCell, LatencySubject, LatencyWindow, WorstSample};
pub use shift::{LatencyShiftEvidence, LatencyShiftResolvedEvidence, WorstFlow};
pub use tenant::LatencyTenantEvidence;

/// What a latency sample measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// SYN → SYN-ACK (the server's side of the handshake).
    HandshakeServer,
    /// SYN-ACK → ACK (the client's side).
    HandshakeClient,
    /// First request payload → first response payload; HTTP request line → status line.
    Response,
    /// ICMP / ICMPv6 echo request → reply.
    Echo,
    /// Server segment → the client's echo of its TCP timestamp.
    TcpRtt,
    /// The peer's last packet → the RST that answers it.
    Rst,
}

impl Measure {
    /// Every measure, in index order.
    pub const ALL: [Measure; 6] = [
        Measure::HandshakeServer,
        Measure::HandshakeClient,
        Measure::Response,
        Measure::Echo,
        Measure::TcpRtt,
        Measure::Rst,
    ];

    /// Whether one extreme sample of it is worth an alert: a server's own delays, not the
    /// path to one client (a lost SYN-ACK or a client's late ACK says little of a server).
    pub fn spikes(self) -> bool {
        !matches!(self, Measure::HandshakeClient | Measure::TcpRtt)
    }

    /// Its name in evidence and storage rows.
    pub fn name(self) -> &'static str {
        match self {
            Measure::HandshakeServer => "handshake_server",
            Measure::HandshakeClient => "handshake_client",
            Measure::Response => "response",
            Measure::Echo => "echo",
            Measure::TcpRtt => "tcp_rtt",
            Measure::Rst => "rst",
        }
    }
}

/// Latency measurement and `latency_shift` (the `[analyzer.latency]` section).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// TCP flows tracked per worker for response, RST and timestamp samples.
    pub max_flows: usize,
    /// Seconds without a packet after which a flow is forgotten.
    pub flow_idle_s: f64,
    /// Outstanding echo requests tracked per worker.
    pub max_echo: usize,
    /// Seconds after which an unanswered echo request is forgotten.
    pub echo_timeout_s: f64,
    /// A RST later than this after the peer's last packet is not a sample (an idle close).
    pub rst_max_s: f64,
    /// (subject, measure) histograms per window and worker; samples beyond are counted.
    pub max_subjects: usize,
    /// Width of the judgement, seconds (a rollup of the base windows).
    pub window_s: f64,
    /// Trailing horizon of the baseline, seconds.
    pub baseline_s: f64,
    /// Judgement windows with samples a baseline needs before anything is judged.
    pub min_baseline_windows: usize,
    /// Samples a baseline needs before anything is judged.
    pub min_baseline_samples: u64,
    /// Samples a window needs for its median to count (fewer: neither shift nor clear).
    pub min_samples: u64,
    /// A window's median at least this many times the baseline median is shifted …
    pub factor: f64,
    /// … and at least this many milliseconds above it.
    pub min_delta_ms: f64,
    /// Consecutive shifted windows that fire.
    pub windows: usize,
    /// A firing measure clears when its median is below this many times the baseline.
    pub clear_factor: f64,
    /// A single sample at least this many milliseconds …
    pub spike_min_ms: f64,
    /// … and at least this many times the baseline p99 fires at once.
    pub spike_factor: f64,
    /// A sustained shift with a median at least this many milliseconds is critical.
    pub critical_ms: f64,
    /// Windows without enough samples after which a firing measure clears.
    pub idle_windows: usize,
    /// Servers of one tenant judged in a window for a tenant-level shift (0: never).
    pub tenant_min_servers: usize,
    /// Share of them with a sustained shift that makes a tenant-level shift.
    pub tenant_share: f64,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        LatencyConfig {
            max_flows: 1 << 18,
            flow_idle_s: 120.0,
            max_echo: 1 << 16,
            echo_timeout_s: 30.0,
            rst_max_s: 10.0,
            max_subjects: 1024,
            window_s: 10.0,
            baseline_s: 600.0,
            min_baseline_windows: 6,
            min_baseline_samples: 30,
            min_samples: 5,
            factor: 3.0,
            min_delta_ms: 20.0,
            windows: 3,
            clear_factor: 1.5,
            spike_min_ms: 1000.0,
            spike_factor: 20.0,
            critical_ms: 1000.0,
            idle_windows: 6,
            tenant_min_servers: 3,
            tenant_share: 0.5,
        }
    }
}

impl LatencyConfig {
    /// Checks every setting against its documented range (`docs/usage.md`).
    pub(crate) fn check(&self, p: &SettingPath, base_window_s: f64) -> Result<(), SettingError> {
        int_in(p, "max_flows", self.max_flows, 1, 1 << 26)?;
        f64_positive(p, "flow_idle_s", self.flow_idle_s, 86_400.0)?;
        int_in(p, "max_echo", self.max_echo, 1, 1 << 24)?;
        f64_positive(p, "echo_timeout_s", self.echo_timeout_s, 3600.0)?;
        f64_positive(p, "rst_max_s", self.rst_max_s, 3600.0)?;
        int_in(p, "max_subjects", self.max_subjects, 1, 1 << 20)?;
        f64_in(p, "window_s", self.window_s, base_window_s, 3600.0)?;
        f64_in(
            p,
            "baseline_s",
            self.baseline_s,
            self.window_s,
            7.0 * 86_400.0,
        )?;
        int_in(
            p,
            "min_baseline_windows",
            self.min_baseline_windows,
            1,
            100_000,
        )?;
        int_in(
            p,
            "min_baseline_samples",
            self.min_baseline_samples,
            1,
            1 << 32,
        )?;
        int_in(p, "min_samples", self.min_samples, 1, 1 << 32)?;
        f64_in(p, "factor", self.factor, 1.0, 1e6)?;
        f64_in(p, "min_delta_ms", self.min_delta_ms, 0.0, 3.6e6)?;
        int_in(p, "windows", self.windows, 1, 10_000)?;
        f64_in(p, "clear_factor", self.clear_factor, 1.0, self.factor)?;
        f64_in(p, "spike_min_ms", self.spike_min_ms, 0.0, 3.6e6)?;
        f64_in(p, "spike_factor", self.spike_factor, 1.0, 1e6)?;
        f64_in(p, "critical_ms", self.critical_ms, 0.0, 3.6e6)?;
        int_in(p, "idle_windows", self.idle_windows, 1, 100_000)?;
        int_in(p, "tenant_min_servers", self.tenant_min_servers, 0, 1 << 20)?;
        f64_positive(p, "tenant_share", self.tenant_share, 1.0)
    }

    /// Judgement windows the baseline spans.
    pub(crate) fn horizon(&self) -> usize {
        ((self.baseline_s / self.window_s).round() as usize).max(1)
    }
}

/// Whether a packet probes the TCP flow table. A SYN only opens the handshake: the table
/// is probed from the SYN-ACK on.
#[inline]
fn probes_flows(m: &PacketMeta) -> bool {
    m.ip_proto == 6 && m.malformed.is_none() && m.kind != ProtocolType::TcpSyn && m.src.is_some()
}

/// The per-packet half: flows, timestamps and echo probes of one worker.
pub(crate) struct LatencyTracker {
    flows: flows::FlowTable,
    echo: echo::EchoTable,
    /// Samples whose (subject, measure) found no room in the window.
    pub subjects_untracked: u64,
}

impl LatencyTracker {
    /// A tracker with these settings.
    pub fn new(cfg: &LatencyConfig) -> LatencyTracker {
        LatencyTracker {
            flows: flows::FlowTable::new(cfg),
            echo: echo::EchoTable::new(cfg),
            subjects_untracked: 0,
        }
    }

    /// Flows the table had no room for.
    pub fn flows_untracked(&self) -> u64 {
        self.flows.untracked
    }

    /// Echo requests the table had no room for.
    pub fn echo_untracked(&self) -> u64 {
        self.echo.untracked
    }
}

impl PacketDetector for LatencyTracker {
    #[inline]
    fn packet(
        &mut self,
        m: &PacketMeta,
        h: &PacketHashes,
        window: Option<&mut WindowStats>,
        _labels: &Labels,
        _out: &mut Vec<Finding>,
    ) {
        if m.malformed.is_some() {
            return;
        }
        let sample = match m.ip_proto {
            6 => self.flows.observe(m, h.flow),
            1 | 58 => self.echo.observe(m),
            _ => None,
        };
        if let (Some(s), Some(w)) = (sample, window) {
            if !w.latency.record(s) {
                self.subjects_untracked += 1;
            }
        }
    }

    #[inline]
    fn prefetch(&self, m: &PacketMeta, h: &PacketHashes) {
        if probes_flows(m) {
            self.flows.prefetch(h.flow);
        }
    }

    #[inline]
    fn prefetch_entries(&self, m: &PacketMeta, h: &PacketHashes) {
        if probes_flows(m) {
            self.flows.prefetch_entry(h.flow);
        }
    }

    fn sweep(&mut self, now: u64) {
        self.flows.sweep(now);
        self.echo.sweep(now);
    }
}
