//! What detectors report: findings, with the numbers behind them.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::detect::growth::GrowthEvidence;
use crate::detect::heartbeat::HeartbeatEvidence;
use crate::detect::heavy::{HeavyHitterEvidence, HeavyHitterResolvedEvidence};
use crate::detect::latency::{
    LatencyShiftEvidence, LatencyShiftResolvedEvidence, LatencyTenantEvidence,
};
use crate::detect::syn_burst::{SynBurstEvidence, SynBurstResolvedEvidence};
// flow health (issue 14)
use crate::detect::retransmits::{RetransmitEvidence, RetransmitResolvedEvidence};
use crate::detect::traffic_drop::{TrafficDropEvidence, TrafficDropResolvedEvidence};
use crate::detect::upgrade::{UpgradeFailureEvidence, UpgradeFailureResolvedEvidence};

/// Detector that produced a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A source, destination, flow or (source, type, size) key far above share and baseline.
    HeavyHitter,
    /// A tenant whose setups grow at least quadratically with its node count.
    QuadraticSetupGrowth,
    /// A periodic flow or BFD session fell silent past its deadline.
    MissedHeartbeat,
    /// A burst of retransmitted SYNs towards one server.
    SynRetransmits,
    /// A server's latency (handshake, response, echo, TCP RTT or RST) far above its baseline.
    LatencyShift,
    // flow health (issue 14)
    /// A destination or tenant whose steady traffic fell to near zero.
    TrafficDrop,
    /// A server whose TCP data is retransmitted far more than its baseline.
    Retransmits,
    /// A server refusing or not answering HTTP upgrade requests.
    UpgradeFailure,
}

impl FindingKind {
    /// Stable name used in the alert contract.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::HeavyHitter => "heavy_hitter",
            FindingKind::QuadraticSetupGrowth => "quadratic_setup_growth",
            FindingKind::MissedHeartbeat => "missed_heartbeat",
            FindingKind::SynRetransmits => "syn_retransmits",
            FindingKind::LatencyShift => "latency_shift",
            FindingKind::TrafficDrop => "traffic_drop",
            FindingKind::Retransmits => "retransmits",
            FindingKind::UpgradeFailure => "upgrade_failure",
        }
    }
}

/// Severity of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Degradation likely.
    Warning,
    /// Outage or imminent outage.
    Critical,
}

impl Severity {
    /// Its name in the alert contract: `info`, `warning`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One detector's statement about one subject at one moment of event time.
///
/// `active: true` says the condition holds (raise or keep the alert); `active: false` says it
/// cleared (resolve it). The rules layer turns these into alert events.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Detector.
    pub kind: FindingKind,
    /// Whether the condition holds.
    pub active: bool,
    /// Tenant concerned, if any.
    pub tenant: Option<String>,
    /// An address, a service `addr:port/proto`, or a flow `src:port->dst:port/proto`.
    pub subject: String,
    /// Severity.
    pub severity: Severity,
    /// When the condition started (event time, ns).
    pub started_ns: u64,
    /// When it was detected (event time, ns): a deadline, or the end of a window.
    pub detected_ns: u64,
    /// The measured value (its unit depends on the kind; see docs/alerts.md).
    pub value: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
    /// The numbers behind it.
    pub evidence: Evidence,
}

/// The numbers behind a finding: one struct per detector and state. Serialised flat (the
/// struct's own fields, no tag), as `evidence` in the alert contract (docs/alerts.md).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Evidence {
    /// A firing heavy hitter.
    HeavyHitter(HeavyHitterEvidence),
    /// A resolved heavy hitter.
    HeavyHitterResolved(HeavyHitterResolvedEvidence),
    /// Setup growth, firing or resolved.
    Growth(GrowthEvidence),
    /// A missed heartbeat, firing or resolved.
    Heartbeat(HeartbeatEvidence),
    /// A firing SYN-retransmission burst.
    SynBurst(SynBurstEvidence),
    /// A resolved SYN-retransmission burst.
    SynBurstResolved(SynBurstResolvedEvidence),
    /// A firing latency shift.
    LatencyShift(LatencyShiftEvidence),
    /// A resolved latency shift.
    LatencyShiftResolved(LatencyShiftResolvedEvidence),
    /// A tenant-level latency shift, firing or resolved.
    LatencyTenant(LatencyTenantEvidence),
    // flow health (issue 14)
    /// A firing traffic drop.
    TrafficDrop(TrafficDropEvidence),
    /// A resolved traffic drop.
    TrafficDropResolved(TrafficDropResolvedEvidence),
    /// Firing retransmissions.
    Retransmits(RetransmitEvidence),
    /// Resolved retransmissions.
    RetransmitsResolved(RetransmitResolvedEvidence),
    /// Failing HTTP upgrades.
    UpgradeFailure(UpgradeFailureEvidence),
    /// Resolved HTTP upgrade failures.
    UpgradeFailureResolved(UpgradeFailureResolvedEvidence),
}

/// `addr:port` with IPv6 in brackets.
pub fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Conventional short name of a transport protocol number for subjects.
pub fn proto_label(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}
