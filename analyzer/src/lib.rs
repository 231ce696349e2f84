//! Windowed aggregates and detectors over classified packets.
//!
//! Packets are fed to a [`Shard`] (one per capture worker): it keeps tumbling windows in
//! event time, heartbeat deadlines and pending handshakes, and hands closed windows to the
//! [`Merger`], which merges shards and runs the window-level detectors. [`Analyzer`] wires
//! one shard to a merger in one thread, for benchmarks and in-process tests (the binary's
//! engine, which orders findings for any number of workers, lives in `tapwatch`).
//! Detectors report [`Finding`]s; the rules crate turns them into alerts. [`Totals`] are
//! the whole-run counters of the replay summary. Labelled scenario captures for tests live
//! in the `tapwatch-synth` crate.
//!
//! ```
//! use tapwatch_analyzer::Totals;
//! use tapwatch_classifier::{Classifier, PacketMeta};
//!
//! let classifier = Classifier::default();
//! let mut totals = Totals::new(16);
//! totals.add(&PacketMeta::empty(0, 60, 60, 0));
//! assert_eq!(totals.packets, 1);
//! let report = totals.report(&classifier, 10);
//! assert_eq!(report.by_size_class["0-64"], 1);
//! ```
#![deny(missing_docs)]

mod config;
mod detect;
mod finding;
mod health;
mod labels;
mod merger;
mod sampling;
mod shard;
pub mod sketch;
mod table;
#[cfg(test)]
mod testkit;
mod thresholds;
mod totals;
mod window;

pub use config::{
    AnalyzerConfig, HandshakeConfig, HeartbeatConfig, HeavyHitterConfig, LatencyConfig,
    SetupGrowthConfig, TenantOverride,
};
// flow health (issue 14)
pub use config::{DropGroup, RetransmitConfig, TrafficDropConfig, UpgradeConfig};
pub use detect::growth;
pub use detect::growth::GrowthEvidence;
pub use detect::heartbeat::{BfdEvidence, HeartbeatEvidence, Resolution};
pub use detect::heavy::{
    HeavyDimension, HeavyHitterEvidence, HeavyHitterResolvedEvidence, HeavyUnit, ServicePackets,
    SourcePackets,
};
pub use detect::latency::{
    LatencyCell, LatencyShiftEvidence, LatencyShiftResolvedEvidence, LatencySubject,
    LatencyTenantEvidence, LatencyWindow, Measure, WorstFlow, WorstSample,
};
pub use detect::retransmits::{RetransmitEvidence, RetransmitResolvedEvidence, RetransmittingFlow};
pub use detect::syn_burst::{LatencyQuantiles, SynBurstEvidence, SynBurstResolvedEvidence};
pub use detect::traffic_drop::{DropRate, TrafficDropEvidence, TrafficDropResolvedEvidence};
pub use detect::upgrade::{UpgradeFailureEvidence, UpgradeFailureResolvedEvidence};
pub use detect::PacketHashes;
pub use finding::{Evidence, Finding, FindingKind, Severity};
pub use growth::GrowthSample;
pub use health::ServerHealth;
pub use labels::Labels;
pub use merger::{Merger, TenantLatency, ROLLUP_LEVELS_S};
pub use sampling::SampledEstimate;
pub use shard::{LostWork, Shard, ShardCounters};
/// Setting checks shared by every crate's config (ranges named by their path in the
/// file), so crates above the analyzer need not depend on the classifier for them.
pub use tapwatch_classifier::{setting, SettingError, SettingPath};
pub use thresholds::{TenantThresholds, Thresholds};
pub use totals::{Report, SourceReport, TenantReport, Totals};
pub use window::{SourceClass, Traffic, WindowStats};

use tapwatch_classifier::{Classifier, PacketMeta};

/// One shard and the merger in one thread: the analyzer of a replay.
pub struct Analyzer {
    shard: Shard,
    merger: Merger,
    findings: Vec<Finding>,
    closed: Vec<WindowStats>,
}

impl Analyzer {
    /// An analyzer for packets labelled by `classifier`.
    pub fn new(cfg: &AnalyzerConfig, classifier: &Classifier) -> Analyzer {
        Analyzer {
            shard: Shard::new(cfg, classifier),
            merger: Merger::new(cfg, classifier, 1),
            findings: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// Feeds one packet. Findings it causes are available from [`Analyzer::take_findings`].
    #[inline]
    pub fn observe(&mut self, m: &PacketMeta) {
        self.shard.observe(m, &mut self.findings, &mut self.closed);
        if !self.closed.is_empty() {
            for w in self.closed.drain(..) {
                self.merger.push(0, w, &mut self.findings);
            }
        }
    }

    /// Whether findings are waiting.
    #[inline]
    pub fn has_findings(&self) -> bool {
        !self.findings.is_empty()
    }

    /// Takes the findings so far, in the order they were made.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// Closes every window and runs the window-level detectors on them (end of input).
    pub fn finish(&mut self) {
        self.shard.finish(&mut self.closed);
        for w in self.closed.drain(..) {
            self.merger.push(0, w, &mut self.findings);
        }
        self.merger.finish(&mut self.findings);
    }

    /// The shard (its counters and tracker sizes).
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// The merger (window counts, latency, fits).
    pub fn merger(&self) -> &Merger {
        &self.merger
    }

    /// The merger, to record or take window summaries.
    pub fn merger_mut(&mut self) -> &mut Merger {
        &mut self.merger
    }
}
